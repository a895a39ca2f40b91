"""One (model, fold) task: train the model on the other folds (unless it is a matcher), then embed."""

from __future__ import annotations

from dataclasses import dataclass

from compkit.config import CompetitionConfig, is_trained
from compkit.embeddings.cache import EmbeddingResult, embed_model_fold
from compkit.progress import NO_PROGRESS, Progress
from compkit.training.loop import FoldResult, train_model_fold
from compkit.workspace import Workspace


@dataclass(frozen=True)
class TaskOutcome:
    model: str
    fold: int
    trained: FoldResult | None
    embedded: EmbeddingResult


def run_model_fold(
    config: CompetitionConfig,
    model_name: str,
    fold: int,
    workspace: Workspace,
    *,
    device: str = "auto",
    threads: int | None = None,
    embed_only: bool = False,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> TaskOutcome:
    """Train (unless it is a matcher, or embed_only) then embed one model on one fold; `force`: even when fresh."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    model = config.model(model_name)
    trained = None
    if is_trained(model) and not embed_only:
        trained = train_model_fold(config, model, fold, workspace, device=device, force=force, progress=progress)
    embedded = embed_model_fold(config, model, fold, workspace, device=device, force=force, progress=progress)
    return TaskOutcome(model.name, fold, trained, embedded)

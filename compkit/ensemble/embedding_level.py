"""`compkit ensemble --method concat|score`: an embedding-level ensemble of models named on the command line.

It is the concat or score model `ensemble-<method>` over those models (default: every embedding model),
tuned and predicted like a model declared in [[models]]: its parameters in tuning/ensemble-<method>.json,
its CSVs in submissions/ and oof/ under that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from compkit.config import CombinedModel, CompetitionConfig, ConcatModel, ScoreModel
from compkit.ensemble.vote import ensemble_csv_inputs
from compkit.errors import ParameterError
from compkit.predict import PredictResult, predict_model
from compkit.progress import NO_PROGRESS, Progress
from compkit.tuning.study import TuneResult, tune_model
from compkit.workspace import Workspace, file_sha256, write_bytes, write_manifest

EMBEDDING_METHODS = {"concat": ConcatModel, "score": ScoreModel}


@dataclass(frozen=True)
class EmbeddingEnsembleResult:
    model: CombinedModel
    tuned: TuneResult
    predicted: PredictResult
    path: Path | None = None  # where write_embedding_ensemble copied its test CSV


def ensemble_model(
    config: CompetitionConfig, method: str, members: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
) -> CombinedModel:
    """Return the concat/score model `ensemble-<method>` over `members`, checked like a declared one."""
    if method not in EMBEDDING_METHODS:
        raise ParameterError("method", method, "is not an embedding-level method (choose concat or score)")
    names = tuple(members) if members else tuple(m.name for m in config.embedding_models)
    model = EMBEDDING_METHODS[method](name=f"ensemble-{method}", kind=method, members=names,
                                      weights=tuple(weights or ()))
    problem = dataclasses.replace(config, models=(*config.models, model)).check()
    if problem:
        raise ParameterError("method", method, problem)
    return model


def write_embedding_ensemble(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    method: str,
    members: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    trials: int = 50,
    seed: int = 0,
    output: Path | None = None,
    storage: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> EmbeddingEnsembleResult:
    """Tune (its study up to `trials` in all) and predict `ensemble-<method>`, then copy its test CSV to `output`
    (default submissions/ensemble.csv).

    The copy's manifest records the model's test CSV (by hash) as its one input, with weights given by hand.
    """
    model = ensemble_model(config, method, members, weights)
    tuned = tune_model(config, workspace, model, trials=trials, seed=seed, storage=storage, progress=progress)
    made = EmbeddingEnsembleResult(model, tuned, predict_model(config, workspace, model))
    target = Path(output) if output is not None else workspace.submission_csv("ensemble")
    source = made.predicted.submission
    write_bytes(target, source.read_bytes())
    write_manifest(target, ensemble_csv_inputs(workspace, [source], {"method": method}), sha256=file_sha256(target))
    return dataclasses.replace(made, path=target)

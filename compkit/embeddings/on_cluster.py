"""(model, fold) tasks on a Dask cluster: training, the test set's shards, embedding.

Tasks carry the submitting machine's workspace path, which each worker maps to its own mount
(compkit.cluster). A task whose worker dies is rerun on another by the scheduler: training resumes from the
fold's last checkpoint and a shard already written is kept, both in the shared workspace.
"""

from __future__ import annotations

import dataclasses
import uuid

from compkit.cluster import client_for, on_this_machine, task_threads
from compkit.config import CompetitionConfig, is_trained
from compkit.data.tables import load_test
from compkit.embeddings.cache import embed_model_fold, fold_dir_inputs
from compkit.embeddings.fold_task import TaskOutcome, run_model_fold
from compkit.embeddings.shards import embed_test_shard, shard_ranges
from compkit.progress import NO_PROGRESS, ProgressTask
from compkit.training.loop import FoldResult, train_model_fold
from compkit.workspace import Workspace, is_fresh


def run_on_cluster(config: CompetitionConfig, workspace: Workspace, tasks: list[tuple[str, int]], *, device: str,
                   scheduler, embed_only: bool, force: bool, overall: ProgressTask | None = None
                   ) -> list[TaskOutcome]:
    """Run each (model, fold) of `tasks` on the cluster at `scheduler`; return the outcomes as they finish."""
    from distributed import as_completed

    client = client_for(scheduler)
    overall = overall or NO_PROGRESS.task("models x folds")
    run = uuid.uuid4().hex[:8]
    test_rows = len(load_test(config, workspace)) if config.embeddings.test_shard_rows else 0
    futures = [_submit(client, config, name, fold, str(workspace.root), device, embed_only, force, run, test_rows)
               for name, fold in tasks]
    outcomes = []
    try:
        for future in as_completed(futures, loop=client.loop):
            outcomes.append(_as_seen_here(future.result(), workspace))
            overall.advance(1)
    finally:
        client.cancel(futures)
    return outcomes


def _submit(client, config, name: str, fold: int, root: str, device, embed_only, force, run: str, test_rows: int):
    """Submit one (model, fold): a single task, or training, then the test shards, then the embedding."""
    key = f"compkit-{config.slug}-{name}-fold{fold}-{run}"
    ranges = shard_ranges(config, config.model(name), test_rows)
    if not ranges:
        return client.submit(fold_task, config, name, fold, root, device=device, embed_only=embed_only,
                             force=force, key=key, pure=False)
    trained = None
    if is_trained(config.model(name)) and not embed_only:
        trained = client.submit(train_task, config, name, fold, root, device=device, force=force,
                                key=f"{key}-train", pure=False)
    shards = [client.submit(shard_task, config, name, fold, root, start, stop, device=device, after=trained,
                            key=f"{key}-test-{start}", pure=False)
              for start, stop in ranges]
    return client.submit(embed_task, config, name, fold, root, device=device, force=force, trained=trained,
                         after=shards, key=key, pure=False)


def _workspace(root: str) -> Workspace:
    """The workspace as this worker's machine reaches it; the task's torch threads set for this worker."""
    threads = task_threads()
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Workspace(on_this_machine(root))


def fold_task(config, model_name: str, fold: int, root: str, *, device: str, embed_only: bool,
              force: bool) -> TaskOutcome:
    """Train (unless embed_only or a matcher) and embed one (model, fold)."""
    return run_model_fold(config, model_name, fold, _workspace(root), device=device, embed_only=embed_only,
                          force=force)


def train_task(config, model_name: str, fold: int, root: str, *, device: str, force: bool) -> FoldResult:
    return train_model_fold(config, config.model(model_name), fold, _workspace(root), device=device, force=force)


def shard_task(config, model_name: str, fold: int, root: str, start: int, stop: int, *, device: str,
                    after=None) -> str | None:
    """Embed test rows [start, stop) with the fold's model, after its training (`after`); None when the fold's
    embeddings are fresh already."""
    workspace, model = _workspace(root), config.model(model_name)
    inputs = fold_dir_inputs(config, model, fold, workspace)
    if is_fresh(workspace.embeddings_dir(model.name, fold), inputs):
        return None
    return str(embed_test_shard(config, model, fold, workspace, inputs, start, stop, device=device))


def embed_task(config, model_name: str, fold: int, root: str, *, device: str, force: bool,
               trained: FoldResult | None, after=()) -> TaskOutcome:
    """Embed one (model, fold), its test matrix taken from the shards (`after`) that are on disk."""
    embedded = embed_model_fold(config, config.model(model_name), fold, _workspace(root), device=device,
                                force=force)
    return TaskOutcome(model_name, fold, trained, embedded)


def _as_seen_here(outcome: TaskOutcome, workspace: Workspace) -> TaskOutcome:
    """Return a worker's outcome with its paths as this machine sees them."""
    trained = outcome.trained
    if trained is not None:
        trained = dataclasses.replace(trained, run_dir=workspace.model_dir(outcome.model, outcome.fold))
    embedded = dataclasses.replace(outcome.embedded,
                                   directory=workspace.embeddings_dir(outcome.model, outcome.fold))
    return dataclasses.replace(outcome, trained=trained, embedded=embedded)

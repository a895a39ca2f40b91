"""`compkit run`: every stage in order, each skipped while its artifacts are fresh."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compkit.config import CompetitionConfig
from compkit.progress import NO_PROGRESS, Progress
from compkit.workspace import Workspace

# An Optuna study of the weights and the vote threshold (200 seeded trials). On demo-match its fractional
# weights beat Caruana's greedy vote counts (OOF 0.928 vs 0.924, test 0.882 vs 0.872: greedy kept only
# concat-all); on demo-identify the two tied (OOF 0.609 both, test 0.431 vs 0.432). See README, Ensembling.
ENSEMBLE_SELECT = "optuna"


@dataclass
class PipelineReport:
    """What each stage did, and the scores a person wants to see at the end."""

    stages: list[tuple[str, str]] = field(default_factory=list)
    oof_scores: dict[str, float] = field(default_factory=dict)
    test_scores: dict[str, float] = field(default_factory=dict)
    ensemble: Path | None = None


def run_pipeline(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    trials: int = 50,
    device: str = "auto",
    jobs: int = 1,
    progress: Progress = NO_PROGRESS,
    on_stage: Callable[[str, str], None] = lambda stage, outcome: None,
) -> PipelineReport:
    """Run fetch, folds, train, tune, predict and ensemble; score against the solution when there is one."""
    from compkit.data.fetch import fetch_competition
    from compkit.data.folds import build_folds, fold_settings, folds_inputs
    from compkit.embeddings.runner import run_models
    from compkit.ensemble.vote import ensemble, write_ensemble
    from compkit.ensemble.weights import fresh_or_tuned
    from compkit.predict import predict_model
    from compkit.tuning.study import tune_model
    from compkit.workspace import is_fresh

    report = PipelineReport()

    def record(stage: str, outcome: str) -> None:
        report.stages.append((stage, outcome))
        on_stage(stage, outcome)

    fetched = fetch_competition(config, workspace, progress=progress)
    record("fetch", "fresh, skipped" if fetched.skipped else fetched.message)
    if is_fresh(workspace.folds_path, folds_inputs(config, workspace, fold_settings(config))):
        record("folds", "fresh, skipped")
    else:
        record("folds", f"{build_folds(config, workspace).n_splits} folds written")
    outcomes = run_models(config, workspace, folds=list(range(config.folds.n_splits)), jobs=jobs, device=device,
                          progress=progress)
    trained = sum(1 for o in outcomes if o.trained is not None and not o.trained.skipped)
    embedded = sum(1 for o in outcomes if not o.embedded.skipped)
    record("train", f"{trained} model-folds trained, {embedded} embedded, the rest fresh")
    for model in config.models:
        tuned = tune_model(config, workspace, model, trials=trials, progress=progress)
        report.oof_scores[model.name] = tuned.oof_score
        predict_model(config, workspace, model)
    record("tune + predict", f"{len(config.models)} models")
    if len(config.models) >= 2:
        test_ids = _test_ids(config, workspace)
        names = [m.name for m in config.models]
        tuned, reused = fresh_or_tuned(config, workspace, names, select=ENSEMBLE_SELECT, progress=progress)
        report.oof_scores["ensemble"] = tuned.score
        paths = [workspace.submission_csv(name) for name in names]
        result = ensemble(config, paths, expected_ids=test_ids, **tuned.ensemble_options())
        report.ensemble = workspace.submission_csv("ensemble")
        write_ensemble(report.ensemble, result, paths)
        weights = ", ".join(f"{weight:.3g}" for weight in result.weights)
        record("ensemble", f"{result.method} of {len(paths)} models, {tuned.select}-tuned weights ({weights}), "
               f"OOF {tuned.score:.6f}" + (" (fresh, reused)" if reused else ""))
    if config.data.solution and (workspace.data_dir / config.data.solution).is_file():
        report.test_scores = _score_all(config, workspace, report)
    return report


def _test_ids(config: CompetitionConfig, workspace: Workspace) -> list[str]:
    from compkit.data.tables import load_test

    return load_test(config, workspace)[config.columns.id].tolist()


def _score_all(config: CompetitionConfig, workspace: Workspace, report: PipelineReport) -> dict[str, float]:
    from compkit.scoring import score_submission

    names = [m.name for m in config.models] + (["ensemble"] if report.ensemble else [])
    return {name: score_submission(config, workspace, workspace.submission_csv(name)).score for name in names}

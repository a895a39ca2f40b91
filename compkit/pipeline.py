"""`compkit run`: every stage of the one stage list in order, each made only when it is not fresh."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compkit.config import CompetitionConfig
from compkit.data.folds import default_scheme_unseen_share
from compkit.ensemble.weights import read_tuned_ensemble
from compkit.errors import ParameterError
from compkit.oof_gap import GapRow, gap_rows
from compkit.progress import NO_PROGRESS, Progress
from compkit.scoring import Difference, paired_difference, score_submission
from compkit.stages import ENSEMBLE_SELECT, RunOptions, pipeline_stages
from compkit.tuning.tuned import load_tuned
from compkit.workspace import Workspace, damaged_outputs, set_aside

FRESH = "fresh, skipped"


@dataclass
class PipelineReport:
    """What each stage did, and the scores a person wants to see at the end."""

    stages: list[tuple[str, str]] = field(default_factory=list)
    oof_scores: dict[str, float] = field(default_factory=dict)
    cross_fitted_scores: dict[str, float] = field(default_factory=dict)  # the ensemble's, tuned out of sample
    test_scores: dict[str, float] = field(default_factory=dict)
    test_errors: dict[str, float] = field(default_factory=dict)  # each test score's standard error over rows
    ensemble_margin: Difference | None = None  # test: the ensemble minus the best single model, paired
    ensemble: Path | None = None
    by_kind: list[GapRow] = field(default_factory=list)  # identify: scores on seen and new_individual queries
    default_new_share: float | None = None  # identify: the new_individual share of OOF in the default scheme
    set_aside: list[tuple[Path, str]] = field(default_factory=list)  # damaged files found by `verify`

    @property
    def made(self) -> list[str]:
        """Return the stages this run made (the others were fresh)."""
        return [stage for stage, outcome in self.stages if outcome != FRESH]


def run_pipeline(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    trials: int = 50,
    device: str = "auto",
    jobs: int = 1,
    select: str = ENSEMBLE_SELECT,
    train_models: bool = True,
    verify: bool = False,
    scheduler: str | None = None,
    storage: str | None = None,
    progress: Progress = NO_PROGRESS,
    on_stage: Callable[[str, str], None] = lambda stage, outcome: None,
) -> PipelineReport:
    """Make every stage that is not fresh, in order; score against the solution when there is one.

    A stage is judged just before it would be made, after the stages before it, so a stage made stale by an
    earlier one in this run is made too. A second run of a fresh workspace makes nothing and writes nothing.
    With `verify`, every artifact's files are first hashed against their manifests, and a changed file is
    set aside (renamed `<name>.damaged`) so that its stage sees it missing and makes it again.
    """
    if jobs < 1:
        raise ParameterError("jobs", jobs, "must be >= 1")
    if trials < 0:
        raise ParameterError("trials", trials, "must be >= 0")
    report = PipelineReport()
    if verify:
        for path, reason in damaged_outputs(workspace.root, verify=True):
            report.set_aside.append((set_aside(path), reason))
    options = RunOptions(trials=trials, device=device, jobs=jobs, select=select, train_models=train_models,
                         scheduler=scheduler, storage=storage, progress=progress)
    for stage in pipeline_stages(config, workspace):
        outcome = FRESH if stage.state().fresh else stage.make(options)
        report.stages.append((stage.name, outcome))
        on_stage(stage.name, outcome)
    report.oof_scores, report.cross_fitted_scores = _oof_scores(config, workspace)
    if len(config.models) >= 2:
        report.ensemble = workspace.submission_csv("ensemble")
    if config.data.solution and (workspace.data_dir / config.data.solution).is_file():
        names = [m.name for m in config.models] + (["ensemble"] if report.ensemble else [])
        results = {name: score_submission(config, workspace, workspace.submission_csv(name)) for name in names}
        report.test_scores = {name: result.score for name, result in results.items()}
        report.test_errors = {name: result.standard_error for name, result in results.items()}
        report.ensemble_margin = _ensemble_margin(results)
    if config.task == "identify":
        report.by_kind = gap_rows(config, workspace, [m.name for m in config.models], ensemble_csv=report.ensemble)
        report.default_new_share = default_scheme_unseen_share(config, workspace)
    return report


def _ensemble_margin(results: dict) -> Difference | None:
    """Return the ensemble's test score minus the best single model's, with its paired standard error."""
    singles = {name: result for name, result in results.items() if name != "ensemble"}
    if "ensemble" not in results or not singles:
        return None
    best = max(singles, key=lambda name: singles[name].score)
    return paired_difference("ensemble", results["ensemble"], best, singles[best])


def _oof_scores(config: CompetitionConfig, workspace: Workspace) -> tuple[dict[str, float], dict[str, float]]:
    """Return each model's tuned OOF score and the tuned ensemble's, as their files record them, and the
    ensemble's cross-fitted OOF score where its file has one."""
    scores = {m.name: load_tuned(workspace.tuned_params(m.name)).oof_score for m in config.models}
    tuned = read_tuned_ensemble(config, workspace, list(scores)) if len(scores) >= 2 else None
    cross_fitted = {}
    if tuned is not None:
        scores["ensemble"] = tuned.score
        if tuned.cross_fitted_score is not None:
            cross_fitted["ensemble"] = tuned.cross_fitted_score
    return scores, cross_fitted

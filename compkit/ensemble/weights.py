"""Tuning an ensemble on the models' OOF CSVs: an Optuna study, or Caruana's greedy forward selection.

The OOF CSVs (`oof/<model>.csv`, written by `compkit predict`) are in the submission format with one row per
training row. They are validated against the training ids and scored against the training truth: label
groups (match), or individual ids with `new_individual` where no other fold holds the individual (identify,
the truth the per-model tuning uses). The tuned weights, vote threshold and scores go to
tuning/ensemble.json with a manifest of the OOF CSVs' hashes: `compkit ensemble` applies them while fresh
and refuses them once an OOF CSV changed. Beside the tuned OOF score (that of the weights chosen on those very
rows) it records the cross-fitted one, each fold's rows scored at weights tuned on the other folds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig
from compkit.data.folds import FOLD_COLUMN, load_folds
from compkit.ensemble.ballots import MatchVotes, RankVotes
from compkit.ensemble.objective import RankMAP, VoteF1
from compkit.ensemble.vote import load_inputs
from compkit.errors import ConfigError, DataError, ParameterError, StaleArtifactError
from compkit.history import record_result
from compkit.metrics import encode_ids, map_at_5, mean_row_f1
from compkit.postprocess.top5 import NEW_INDIVIDUAL
from compkit.progress import NO_PROGRESS, Progress
from compkit.retrieval.layout import identify_truth
from compkit.scoring import score_submission
from compkit.tuning.budget import optimize_to_total
from compkit.tuning.study import complete_trials, open_study, storage_url
from compkit.workspace import Workspace, file_sha256, fingerprint, is_fresh, read_json, write_json, write_manifest

TUNED_METHODS = {"match": "vote", "identify": "rank"}
SELECTIONS = ("optuna", "greedy")
VOTE_THRESHOLD_RANGE = (0.01, 1.0)
METRICS = {"match": "mean_row_f1", "identify": "map_at_5"}


@dataclass(frozen=True)
class TunedEnsemble:
    """Tuned weights (one per model, in `models` order), with every model's OOF score and the ensemble's."""

    method: str
    select: str
    models: tuple[str, ...]
    weights: tuple[float, ...]
    vote_threshold: float | None
    model_scores: dict[str, float]
    score: float
    metric: str
    path: Path
    choice: TuningChoice | None = field(default=None, compare=False)  # set by a tuning that met a fresh one
    cross_fitted_score: float | None = None  # each fold's rows scored at weights tuned on the other folds' rows

    def ensemble_options(self) -> dict:
        """Return the keyword arguments of `compkit.ensemble.ensemble` that apply these weights."""
        options: dict = {"method": self.method, "weights": list(self.weights)}
        if self.vote_threshold is not None:
            options["vote_threshold"] = self.vote_threshold
        return options


@dataclass(frozen=True)
class TuningChoice:
    """Which of two fresh tunings of the same models and OOF CSVs tuning/ensemble.json keeps: the better one."""

    kept: str  # "new" (this tuning, written) or "previous" (the earlier one, left as it was)
    new_select: str
    new_score: float
    previous_select: str
    previous_score: float

    def summary(self) -> str:
        """Return one line saying which was kept, with both OOF scores."""
        new = f"this {self.new_select} one (OOF {self.new_score:.6f})"
        previous = f"the earlier {self.previous_select} result (OOF {self.previous_score:.6f})"
        if self.kept == "previous":
            return f"kept {previous} over {new}: tuning/ensemble.json is unchanged"
        return f"replaced {previous} with {new}"


def ensemble_models(config: CompetitionConfig, workspace: Workspace) -> list[str]:
    """Return the models that have a test CSV (submissions/<model>.csv), in the config's order."""
    return [m.name for m in config.models if workspace.submission_csv(m.name).is_file()]


def oof_truth(config: CompetitionConfig, workspace: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Return (training ids, truth): label codes (match), or labels with new_individual (identify)."""
    folds = load_folds(config, workspace)
    ids = folds[config.columns.id].to_numpy(dtype=object)
    labels = folds[config.columns.label].to_numpy(dtype=object)
    codes = pd.factorize(labels)[0].astype(np.int64)
    if config.task == "match":
        return ids, codes
    unseen = identify_truth(codes, folds[FOLD_COLUMN].to_numpy()) == NEW_INDIVIDUAL
    return ids, np.where(unseen, config.submission.new_individual, labels).astype(object)


def oof_paths(config: CompetitionConfig, workspace: Workspace, models: Sequence[str]) -> list[Path]:
    """Return each model's OOF CSV, refusing a missing one with the command that writes it."""
    paths = [workspace.oof_csv(name) for name in models]
    for name, path in zip(models, paths, strict=True):
        if not path.is_file():
            raise StaleArtifactError(f"{path}: missing (run: compkit predict -c {config.slug} --model {name})")
    return paths


def tune_ensemble(
    config: CompetitionConfig,
    workspace: Workspace,
    models: Sequence[str] | None = None,
    *,
    select: str = "optuna",
    trials: int = 200,
    rounds: int = 25,
    seed: int = 0,
    storage: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> TunedEnsemble:
    """Tune the ensemble of `models` (default: every model with a test CSV) on their OOF CSVs; write the result.

    select="optuna" runs a seeded study up to `trials` COMPLETE trials in all (weights in [0, 1] and, for
    match, the vote threshold); select="greedy" runs `rounds` rounds of forward selection with replacement
    (weights = counts).
    When tuning/ensemble.json already holds a fresh tuning of the same models and OOF CSVs that scores better,
    it is kept (not rewritten) and returned; `choice` on the result says which was kept, with both scores.
    """
    if select not in SELECTIONS:
        raise ParameterError("select", select, f"must be one of {', '.join(SELECTIONS)}")
    if trials < 1:
        raise ParameterError("trials", trials, "must be >= 1")
    if rounds < 1:
        raise ParameterError("rounds", rounds, "must be >= 1")
    models = list(models) if models is not None else ensemble_models(config, workspace)
    if len(models) < 2:
        raise ConfigError(f"ensemble tuning needs at least two models with CSVs, got {len(models)} "
                          f"(run: compkit predict -c {config.slug})")
    method = TUNED_METHODS[config.task]
    ids, truth = oof_truth(config, workspace)
    submissions = load_inputs(config, oof_paths(config, workspace, models), expected_ids=ids)
    model_scores = dict(zip(models, _model_scores(config, submissions, truth), strict=True))
    objective = _objective(config, submissions, truth)
    inputs = ensemble_inputs(workspace, models, method)
    if select == "greedy":
        weights, threshold, detail = greedy_selection(objective, len(models), rounds=rounds, progress=progress)
    else:
        name = f"{config.slug}.ensemble.{method}.{fingerprint({**inputs, 'range': VOTE_THRESHOLD_RANGE})[:8]}"
        study = open_study(storage_url(workspace, storage), name, seed=seed)
        weights, threshold, detail = optuna_selection(objective, models, study, task=config.task, trials=trials,
                                                      progress=progress)
    tuned = TunedEnsemble(method, select, tuple(models), tuple(float(w) for w in weights), threshold, model_scores,
                          objective.score(weights, threshold), METRICS[config.task], workspace.tuned_ensemble)
    previous = _fresh_tuning(config, workspace, models)
    if previous is not None:
        kept = "previous" if previous.score > tuned.score else "new"
        choice = TuningChoice(kept, tuned.select, tuned.score, previous.select, previous.score)
        if kept == "previous":
            _record_history(config, workspace, tuned, inputs, detail, kept_score=previous.score)
            return dataclasses.replace(previous, choice=choice)
        tuned = dataclasses.replace(tuned, choice=choice)
    folds = load_folds(config, workspace)[FOLD_COLUMN].to_numpy()
    tuned = dataclasses.replace(tuned, cross_fitted_score=cross_fitted_score(
        objective, folds, models, task=config.task, select=select, trials=trials, rounds=rounds, seed=seed,
        progress=progress))
    _record_history(config, workspace, tuned, inputs, detail)
    write_json(tuned.path, {
        "method": method, "select": select, "models": models, "weights": list(tuned.weights),
        "vote_threshold": threshold, "oof_scores": model_scores, "ensemble_oof_score": tuned.score,
        "metric": tuned.metric, "cross_fitted_oof_score": tuned.cross_fitted_score, "oof_sha256": inputs["oof"],
        **detail,
    })
    write_manifest(tuned.path, inputs)
    return tuned


def _record_history(config: CompetitionConfig, workspace: Workspace, tuned: TunedEnsemble, inputs: dict,
                    detail: dict, *, kept_score: float | None = None) -> None:
    """Append this tuning to the results history (compkit.history), kept or not; it warns when it is worse."""
    settings = {"select": tuned.select, "models": list(tuned.models),
                **{key: detail[key] for key in ("n_trials", "rounds") if key in detail}}
    result = {"weights": dict(zip(tuned.models, tuned.weights, strict=True)), "vote_threshold": tuned.vote_threshold}
    record_result(workspace, "ensemble", "ensemble", tuned.score, task=config.task, inputs=inputs,
                  settings=settings, result=result, kept_score=kept_score)


def _fresh_tuning(config: CompetitionConfig, workspace: Workspace, models: Sequence[str]) -> TunedEnsemble | None:
    """Return the fresh tuning of these models on these OOF CSVs already in tuning/ensemble.json, if any."""
    try:
        return read_tuned_ensemble(config, workspace, models)
    except (StaleArtifactError, DataError, KeyError):
        return None


def _objective(config: CompetitionConfig, submissions, truth: np.ndarray) -> VoteF1 | RankMAP:
    if config.task == "match":
        return VoteF1(MatchVotes.from_submissions(submissions), truth)
    return RankMAP(RankVotes.from_submissions(submissions), truth, top=config.submission.max_predictions)


def _model_scores(config: CompetitionConfig, submissions, truth: np.ndarray) -> list[float]:
    """Return each OOF CSV's own score, as the competition's metric scores it."""
    if config.task == "match":
        return [mean_row_f1(truth, s.indptr, s.indices) for s in submissions]
    return [map_at_5(*encode_ids(truth, s.predictions)) for s in submissions]


def greedy_selection(
    objective: VoteF1 | RankMAP, n_inputs: int, *, rounds: int, progress: Progress = NO_PROGRESS,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None, dict]:
    """Return (weights, vote threshold, detail) of Caruana's forward selection with replacement.

    It starts from the best "sorted initialization" (the N best single inputs, N = 1..n, one vote each), since
    a vote of two rarely beats its better member (it can only take their union or intersection) and a greedy
    step from one input would stop there. Each round then adds the input whose extra vote gives the best
    score (at its best vote threshold for match); the weights are the counts of the best ensemble seen.
    """
    task = progress.task("ensemble: greedy selection", total=rounds)
    one_vote = np.eye(n_inputs)
    single_scores = [objective.best(one_vote[i], rows)[0] for i in range(n_inputs)]
    by_score = np.argsort(single_scores, kind="stable")[::-1]
    starts = [one_vote[by_score[: n + 1]].sum(axis=0) for n in range(n_inputs)]
    start_scores = [objective.best(counts, rows) for counts in starts]
    first = max(range(n_inputs), key=lambda n: start_scores[n][0])  # the fewest of equals
    counts = starts[first]
    best: tuple[float, np.ndarray, float | None] = (start_scores[first][0], counts, start_scores[first][1])
    trajectory = []
    for _ in range(rounds):
        tried = [objective.best(counts + one_vote[i], rows) for i in range(n_inputs)]
        chosen = max(range(n_inputs), key=lambda i: tried[i][0])  # the first of equals
        counts = counts + one_vote[chosen]
        score, threshold = tried[chosen]
        trajectory.append({"added": chosen, "score": score})
        if score > best[0]:
            best = (score, counts, threshold)
        task.advance(1)
    initial = [int(i) for i in by_score[: first + 1]]
    return best[1], best[2], {"rounds": rounds, "initial": initial, "initial_score": start_scores[first][0],
                              "trajectory": trajectory}


def optuna_selection(
    objective: VoteF1 | RankMAP, models: Sequence[str], study, *, task: str, trials: int,
    progress: Progress = NO_PROGRESS, rows: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None, dict]:
    """Return (weights, vote threshold, detail) of the study's best trial once it holds `trials` COMPLETE
    trials in all (the study's total, shared by every process that tunes it: `compkit.tuning.budget`).

    A new study first tries equal weights and each model alone, so the best is never below the best model.
    With `rows` (a boolean mask over the OOF rows), trials are scored on those rows only.
    """
    names = [f"weight_{model}" for model in models]
    if not study.trials:
        for chosen in [None, *range(len(models))]:
            params = {name: float(chosen is None or i == chosen) for i, name in enumerate(names)}
            study.enqueue_trial(params | ({"vote_threshold": 0.5} if task == "match" else {}), skip_if_exists=True)
    bar = progress.task("ensemble: optuna", total=trials)
    bar.advance(min(complete_trials(study), trials))

    def score(trial) -> float:
        weights = np.array([trial.suggest_float(name, 0.0, 1.0) for name in names])
        threshold = trial.suggest_float("vote_threshold", *VOTE_THRESHOLD_RANGE) if task == "match" else None
        return objective.score(weights, threshold, rows) if weights.any() else 0.0

    optimize_to_total(study, score, total=trials, on_complete=lambda: bar.advance(1))
    params = study.best_params
    weights = np.array([params[name] for name in names])
    return weights, params.get("vote_threshold"), {"study": study.study_name, "n_trials": complete_trials(study)}


def cross_fitted_score(
    objective: VoteF1 | RankMAP, folds: np.ndarray, models: Sequence[str], *, task: str, select: str, trials: int,
    rounds: int, seed: int = 0, progress: Progress = NO_PROGRESS,
) -> float:
    """Return the ensemble's OOF score with its weights tuned out of sample: each fold's rows scored at the
    weights (and vote threshold) tuned, the same way, on the other folds' rows only.

    The tuned OOF score is the best of many weight vectors on the rows that chose it, so it runs high; this
    one has no such selection in it, which makes it the estimate of the test score. Each fold's study is in
    memory (seeded `seed`): a few seconds, redone whole if interrupted.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as open_study does: no line per trial
    held_out = np.zeros(len(folds), dtype=np.float64)
    bar = progress.task("ensemble: cross-fitting, one tuning per fold", total=len(np.unique(folds)))
    for fold in np.unique(folds):
        tuning_rows = folds != fold
        if select == "greedy":
            weights, threshold, _ = greedy_selection(objective, len(models), rounds=rounds, rows=tuning_rows)
        else:
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
            weights, threshold, _ = optuna_selection(objective, models, study, task=task, trials=trials,
                                                     rows=tuning_rows)
        held_out[~tuning_rows] = objective.row_scores(weights, threshold)[~tuning_rows]
        bar.advance(1)
    return float(held_out.mean())


def ensemble_inputs(workspace: Workspace, models: Sequence[str], method: str) -> dict:
    """Return what a tuned ensemble is made from: each model's OOF CSV (by hash) and the method."""
    oof = {name: file_sha256(path) if (path := workspace.oof_csv(name)).is_file() else None for name in models}
    return {"oof": oof, "method": method}


def read_tuned_ensemble(config: CompetitionConfig, workspace: Workspace, models: Sequence[str]) -> TunedEnsemble | None:
    """Return the tuned ensemble of `models`, None when there is none, refusing a stale one."""
    path = workspace.tuned_ensemble
    if not path.is_file():
        return None
    stored = read_json(path)
    hint = f"(run: compkit ensemble -c {config.slug} --tune, or pass --weights)"
    if list(stored.get("models", [])) != list(models):
        raise StaleArtifactError(f"{path}: tuned for the models {', '.join(stored.get('models', []))}, "
                                 f"not {', '.join(models)} {hint}")
    inputs = ensemble_inputs(workspace, models, stored.get("method", ""))
    if not is_fresh(path, inputs):
        changed = [str(workspace.oof_csv(m)) for m in models if stored.get("oof_sha256", {}).get(m) != inputs["oof"][m]]
        what = f"{', '.join(changed)} changed since it was tuned" if changed else "made from other inputs"
        raise StaleArtifactError(f"{path}: stale, {what} {hint}")
    return TunedEnsemble(stored["method"], stored["select"], tuple(stored["models"]), tuple(stored["weights"]),
                         stored["vote_threshold"], stored["oof_scores"], stored["ensemble_oof_score"],
                         stored["metric"], path, cross_fitted_score=stored.get("cross_fitted_oof_score"))


def fresh_or_tuned(
    config: CompetitionConfig, workspace: Workspace, models: Sequence[str], *, select: str, **tune_options
) -> tuple[TunedEnsemble, bool]:
    """Return (tuned ensemble, reused): the fresh tuning of `models` (however it was tuned), else a new one."""
    try:
        tuned = read_tuned_ensemble(config, workspace, models)
    except StaleArtifactError:
        tuned = None
    if tuned is not None:
        return tuned, True
    return tune_ensemble(config, workspace, models, select=select, **tune_options), False


def solution_scores(config: CompetitionConfig, workspace: Workspace, paths: Mapping[str, Path]) -> dict[str, float]:
    """Return each CSV's test score against the competition's solution file, {} when it has none."""
    if not config.data.solution or not (workspace.data_dir / config.data.solution).is_file():
        return {}
    return {name: score_submission(config, workspace, path).score for name, path in paths.items()}

"""The final CSV, made and judged here only: what `compkit run`, `compkit ensemble`, `submit` and the kernel submit.

With two or more models it is submissions/ensemble.csv: the vote (match) or rank (identify) ensemble of every
model's test CSV with the tuned weights of tuning/ensemble.json (`weights_from = "tuned"`), or with weights
given by hand through `compkit ensemble --weights` (`"given"`). With one model it is that model's test CSV.

Its manifest records each input CSV's hash under its workspace-relative path, the options, where the weights
came from and the CSV's own hash, so it is judged from hashes alone (never file times) and a copied or moved
workspace against its own files. A tuned one is fresh while its inputs and the CSV are unchanged and the
tuned ensemble is fresh and is what made it; a given one while its inputs and the CSV are unchanged. A fresh
one is never rewritten, so making it twice leaves every file byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compkit.config import CompetitionConfig
from compkit.data.tables import load_test
from compkit.ensemble.embedding_level import EMBEDDING_METHODS, EmbeddingEnsembleResult, write_embedding_ensemble
from compkit.ensemble.vote import METHODS, ensemble, ensemble_csv_inputs, recorded_ensemble_inputs, write_ensemble
from compkit.ensemble.weights import (
    TUNED_METHODS,
    TunedEnsemble,
    ensemble_models,
    fresh_or_tuned,
    read_tuned_ensemble,
    tune_ensemble,
)
from compkit.errors import ConfigError, ParameterError, StaleArtifactError
from compkit.predict import prediction_inputs
from compkit.progress import NO_PROGRESS, Progress
from compkit.tuning.tuned import load_tuned
from compkit.workspace import Workspace, file_sha256, fingerprint, is_fresh, read_manifest, stage_inputs

ENSEMBLE = "ensemble"

# An Optuna study of the weights and the vote threshold (200 seeded trials). On demo-match its fractional
# weights beat Caruana's greedy vote counts (OOF 0.928 vs 0.924, test 0.882 vs 0.872: greedy kept only
# concat-all); on demo-identify the two tied (OOF 0.609 both, test 0.431 vs 0.432). See README, Ensembling.
ENSEMBLE_SELECT = "optuna"

GIVEN = "weights given by hand: kept while its input CSVs are unchanged"

FinalStateName = Literal["fresh", "stale", "missing"]


@dataclass(frozen=True)
class FinalState:
    """The final CSV's state, judged without writing anything; `reason` says why (and what to run)."""

    state: FinalStateName
    path: Path
    source: str  # "ensemble" or the only model's name
    reason: str
    tuned: bool = False  # made with the weights of tuning/ensemble.json

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


@dataclass(frozen=True)
class FinalCSV:
    """A final (or `compkit ensemble`) CSV as it now is: what it is made of and whether this call wrote it."""

    path: Path
    source: str  # "ensemble" or the only model's name
    reused: bool  # it was fresh and left as it was
    models: tuple[str, ...]  # the combined CSVs (model names, or file names of CSVs given by hand)
    weights: tuple[float, ...]  # one per model
    method: str | None  # vote, rank, concat or score; None for a single model's CSV
    vote_threshold: float | None
    oof_scores: dict[str, float]  # each model's OOF score and the ensemble's ("ensemble"), where known
    tuned: TunedEnsemble | None = None  # the tuned ensemble it applies
    tuned_reused: bool = False  # the tuned ensemble was fresh and reused, not tuned by this call
    embedding: EmbeddingEnsembleResult | None = None  # --method concat|score: the model behind it

    @property
    def weight_of(self) -> dict[str, float]:
        return dict(zip(self.models, self.weights, strict=True))

    def summary(self) -> str:
        """Return one line: how it is combined, from which weights, its OOF score, whether it was reused."""
        if self.method is None:
            return f"{self.path.name}: the only model's CSV"
        weights = ", ".join(f"{weight:.3g}" for weight in self.weights)
        origin = f"{self.tuned.select}-tuned weights" if self.tuned is not None else "weights given"
        score = f", OOF {self.oof_scores[ENSEMBLE]:.6f}" if ENSEMBLE in self.oof_scores else ""
        if self.tuned is not None and self.tuned.cross_fitted_score is not None:
            score += f" (cross-fitted {self.tuned.cross_fitted_score:.6f})"
        return (f"{self.method} of {len(self.models)} models, {origin} ({weights}){score}"
                + (" (fresh, reused)" if self.reused else ""))


def final_csv_path(config: CompetitionConfig, workspace: Workspace) -> tuple[Path, str]:
    """Return (the final CSV's path, what it is): submissions/ensemble.csv, or the only model's test CSV."""
    if len(config.models) == 1:
        name = config.models[0].name
        return workspace.submission_csv(name), name
    return workspace.submission_csv(ENSEMBLE), ENSEMBLE


def final_csv_state(config: CompetitionConfig, workspace: Workspace) -> FinalState:
    """Return the final CSV's state (fresh, stale or missing, with the reason), writing nothing."""
    path, source = final_csv_path(config, workspace)
    if not config.models:
        return FinalState("missing", path, source, f"{config.slug} declares no models")
    if len(config.models) == 1:
        return _model_csv_state(workspace, source)
    if not path.is_file():
        return FinalState("missing", path, source, f"not made yet (run: compkit run -c {config.slug}, or compkit "
                                                   f"ensemble -c {config.slug})")
    problem = _changed_since_written(workspace, path)
    if problem:
        return FinalState("stale", path, source, problem)
    names = [model.name for model in config.models]
    given = read_manifest(path)["inputs"].get("weights_from") != "tuned"
    try:
        tuned = read_tuned_ensemble(config, workspace, names)
    except StaleArtifactError as error:
        if given:
            return FinalState("fresh", path, source, GIVEN)
        return FinalState("stale", path, source, f"its tuned ensemble is not fresh: {error}", tuned=True)
    if tuned is not None and _made_by(workspace, path, names, tuned):
        return FinalState("fresh", path, source, f"the {tuned.select}-tuned {tuned.method} of {len(names)} models, "
                                                 f"OOF {tuned.score:.6f}", tuned=True)
    if given:
        return FinalState("fresh", path, source, GIVEN)
    if tuned is None:
        return FinalState("stale", path, source, f"{workspace.relative(workspace.tuned_ensemble)} is gone (run: "
                                                 f"compkit ensemble -c {config.slug} --tune)", tuned=True)
    return FinalState("stale", path, source, f"made with other weights or CSVs than those of "
                                             f"{workspace.relative(tuned.path)}", tuned=True)


def write_final_csv(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    select: str = ENSEMBLE_SELECT,
    retune: bool = False,
    models: Sequence[str] | None = None,
    trials: int = 200,
    rounds: int = 25,
    seed: int = 0,
    storage: str | None = None,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> FinalCSV:
    """Return the final CSV, writing it only when it is not fresh (or `force`): the tuned ensemble of `models`' CSVs.

    `models` defaults to every model of the config; a single model's CSV is returned as it is. The tuned
    ensemble is reused while fresh (however it was tuned) and tuned with `select` otherwise; `retune` tunes
    again anyway (the study up to `trials` in all, or `rounds` of greedy selection), keeping the better result.
    """
    names = list(models) if models is not None else [model.name for model in config.models]
    if not names:
        raise ConfigError(f"{config.slug} declares no models: there is no final CSV to make")
    if len(names) == 1:
        return _single_model(config, workspace, names[0])
    options = {"trials": trials, "rounds": rounds, "seed": seed, "storage": storage, "progress": progress}
    if retune:
        tuned = tune_ensemble(config, workspace, names, select=select, **options)
        tuned_reused = tuned.choice is not None and tuned.choice.kept == "previous"
    else:
        tuned, tuned_reused = fresh_or_tuned(config, workspace, names, select=select, **options)
    target = workspace.submission_csv(ENSEMBLE)
    paths = [workspace.submission_csv(name) for name in names]
    reused = not force and not _changed_since_written(workspace, target) and _made_by(workspace, target, names, tuned)
    if not reused:
        result = ensemble(config, paths, expected_ids=_test_ids(config, workspace), **tuned.ensemble_options())
        write_ensemble(target, result, paths, workspace=workspace, weights_from="tuned")
    return FinalCSV(target, ENSEMBLE, reused, tuple(names), tuned.weights, tuned.method, _threshold(config, tuned),
                    {**tuned.model_scores, ENSEMBLE: tuned.score}, tuned, tuned_reused)


def make_ensemble(
    config: CompetitionConfig,
    workspace: Workspace,
    csvs: Sequence[Path] | None = None,
    *,
    method: str | None = None,
    weights: Sequence[float] | None = None,
    vote_threshold: float | None = None,
    tune: bool = False,
    select: str = ENSEMBLE_SELECT,
    trials: int = 200,
    rounds: int = 25,
    members: Sequence[str] | None = None,
    output: Path | None = None,
    storage: str | None = None,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> FinalCSV:
    """Return the CSV `compkit ensemble` makes (default: the final CSV, submissions/ensemble.csv).

    A fresh final CSV is kept, unless `force`; a CSV of given weights or CSVs is always written.

    - method concat|score: the embedding-level ensemble of `members` (tuned and predicted like a model).
    - `tune`: the tuned ensemble of the models' own CSVs, tuned again first (the better result is kept).
    - no `csvs`, `weights` or `vote_threshold`: the fresh tuned weights when there are any (stale ones are
      refused), else equal weights; otherwise the weights given (default: equal) of `csvs` (default: every
      model's test CSV).
    """
    if method in EMBEDDING_METHODS:
        if csvs or tune or vote_threshold is not None:
            raise ParameterError("method", method, "combines the models' embeddings (named by members), always "
                                 "tuned on OOF: CSVs, tune and vote_threshold do not apply")
        made = write_embedding_ensemble(config, workspace, method=method, members=members, weights=weights,
                                        trials=trials, output=output, storage=storage, progress=progress)
        return FinalCSV(made.path, ENSEMBLE, False, made.model.members, made.model.weights or (),
                        method, None, {ENSEMBLE: made.tuned.oof_score}, embedding=made)
    if members:
        raise ParameterError("members", _shown(members), "only name the models of method='concat' or 'score'")
    tunable = method in (None, TUNED_METHODS[config.task])
    if tune:
        for parameter, value in (("csvs", csvs), ("weights", weights), ("vote_threshold", vote_threshold)):
            if value is not None and value != [] and value != ():
                raise ParameterError(parameter, _shown(value), "cannot be given with tune=True, which chooses the "
                                     f"weights and threshold of the models' own CSVs ({TUNED_METHODS[config.task]})")
        if not tunable:
            raise ParameterError("method", method, f"cannot be tuned: tuning makes the {TUNED_METHODS[config.task]} "
                                 "ensemble")
        names = _model_names(config, workspace)
        if output is None:
            return write_final_csv(config, workspace, select=select, retune=True, models=names, trials=trials,
                                   rounds=rounds, storage=storage, force=force, progress=progress)
        tuned = tune_ensemble(config, workspace, names, select=select, trials=trials, rounds=rounds,
                              storage=storage, progress=progress)
        return _combine(config, workspace, names, None, tuned, output)
    names = [Path(path).name for path in csvs] if csvs else _model_names(config, workspace)
    tuned = None
    if not csvs and weights is None and vote_threshold is None and tunable:
        tuned = read_tuned_ensemble(config, workspace, names)
        if tuned is not None and output is None:
            return write_final_csv(config, workspace, models=names, force=force)
    given = {"method": method, "weights": None if weights is None else list(weights)}
    if vote_threshold is not None:
        given["vote_threshold"] = vote_threshold
    return _combine(config, workspace, names, list(csvs) if csvs else None, tuned, output, given)


def _combine(config, workspace: Workspace, names: list[str], csvs: list[Path] | None, tuned: TunedEnsemble | None,
             output: Path | None, given: dict | None = None) -> FinalCSV:
    """Write the ensemble of `csvs` (default: the models' test CSVs) with the tuned or the given options."""
    paths = csvs or [workspace.submission_csv(name) for name in names]
    options = tuned.ensemble_options() if tuned is not None else given
    result = ensemble(config, paths, expected_ids=_test_ids(config, workspace), **options)
    target = output or workspace.submission_csv(ENSEMBLE)
    write_ensemble(target, result, paths, workspace=workspace, weights_from="tuned" if tuned else "given")
    scores = {**tuned.model_scores, ENSEMBLE: tuned.score} if tuned is not None else {}
    return FinalCSV(target, ENSEMBLE, False, tuple(names), result.weights, result.method, result.vote_threshold,
                    scores, tuned, tuned is not None)


def _model_names(config: CompetitionConfig, workspace: Workspace) -> list[str]:
    """Return the models whose test CSVs are ensembled; ConfigError, saying what to do, when fewer than two."""
    found = ensemble_models(config, workspace)
    if len(found) >= 2:
        return found
    if len(config.models) == 1 and found:
        raise ConfigError(f"with one model ({found[0]}), its CSV {workspace.submission_csv(found[0])} is the final "
                          "CSV itself (what compkit submit uploads): there is nothing to ensemble; to combine CSVs, "
                          "declare another model or pass two or more CSVs")
    missing = [model.name for model in config.models if model.name not in found]
    raise ConfigError(f"found {len(found)} of {len(config.models)} model CSVs in {workspace.root / 'submissions'} "
                      f"(missing: {', '.join(missing)}): run compkit predict -c {config.slug} first, or pass the "
                      "CSVs to combine")


def _single_model(config: CompetitionConfig, workspace: Workspace, name: str) -> FinalCSV:
    path = workspace.submission_csv(name)
    if not path.is_file():
        raise StaleArtifactError(f"{path}: missing (run: compkit predict -c {config.slug} --model {name})")
    scores = {}
    if workspace.tuned_params(name).is_file():
        scores[name] = load_tuned(workspace.tuned_params(name)).oof_score
    return FinalCSV(path, name, True, (name,), (1.0,), None, None, scores)


def _model_csv_state(workspace: Workspace, name: str) -> FinalState:
    path = workspace.submission_csv(name)
    if not path.is_file():
        return FinalState("missing", path, name, f"not predicted yet (run: compkit predict --model {name})")
    if not workspace.tuned_params(name).is_file() or not is_fresh(path, prediction_inputs(workspace, name)):
        return FinalState("stale", path, name, f"not predicted from the tuned parameters of "
                                               f"{workspace.relative(workspace.tuned_params(name))} as they are now")
    return FinalState("fresh", path, name, "the only model's CSV, predicted from its tuned parameters")


def _changed_since_written(workspace: Workspace, path: Path) -> str | None:
    """Return why the ensemble CSV at `path` is no longer what its manifest records, None when it still is."""
    manifest = read_manifest(path)
    recorded = recorded_ensemble_inputs(path, workspace)
    if manifest is None or recorded is None:
        return "missing" if not path.is_file() else "it has no manifest: not written by compkit ensemble"
    if manifest.get("sha256") != file_sha256(path):
        return "edited since it was written" if manifest.get("sha256") else "written by an older compkit"
    if manifest.get("fingerprint") == fingerprint(stage_inputs(recorded)):
        return None
    then = manifest["inputs"].get("csvs", {})
    changed = [name for name, sha in recorded["csvs"].items() if then.get(name) != sha]
    if changed:
        gone = recorded["csvs"][changed[0]] is None
        return f"{changed[0]} {'is gone' if gone else 'changed since it was written'}"
    return "written by another compkit version or from other inputs"


def _made_by(workspace: Workspace, path: Path, names: Sequence[str], tuned: TunedEnsemble) -> bool:
    """Return True when the ensemble CSV's manifest records what `tuned` makes of the models' CSVs as they are now.

    It compares the input CSVs' hashes and the options, however the weights were labelled when it was written.
    """
    manifest = read_manifest(path)
    if manifest is None or "csvs" not in manifest.get("inputs", {}):
        return False
    paths = [workspace.submission_csv(name) for name in names]
    options = {"method": tuned.method, "weights": list(tuned.weights),
               "vote_threshold": tuned.ensemble_options().get("vote_threshold", _default_threshold(tuned.method))}
    expected = ensemble_csv_inputs(workspace, paths, options)
    recorded = manifest["inputs"]
    return (fingerprint({"csvs": recorded["csvs"], "options": recorded.get("options")})
            == fingerprint({"csvs": expected["csvs"], "options": expected["options"]}))


def _default_threshold(method: str) -> float | None:
    return 0.5 if method == METHODS["match"][0] else None


def _threshold(config: CompetitionConfig, tuned: TunedEnsemble) -> float | None:
    return tuned.vote_threshold if config.task == "match" else None


def _test_ids(config: CompetitionConfig, workspace: Workspace) -> list[str]:
    return load_test(config, workspace)[config.columns.id].tolist()


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    return str(value)

"""The one stage list: every stage of the pipeline, its artifact, what it is made from, whether it is fresh.

`compkit run` (pipeline.py) makes every stage that is not fresh, in this order; `compkit status` (status.py)
shows each stage's state; `submit` and the kernel refuse a final CSV that its stage does not judge fresh.
They all read this list, so they cannot disagree. A stage is judged from its artifact's manifest alone
(the fingerprint of what it was made from), never from file times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compkit.config import CompetitionConfig, ModelConfig, is_trained
from compkit.data.fetch import fetch_competition, origin_change
from compkit.data.folds import build_folds, fold_settings, folds_inputs, recorded_settings
from compkit.data.tables import data_inputs
from compkit.embeddings.cache import fold_dir_inputs
from compkit.ensemble.final import ENSEMBLE_SELECT, final_csv_path, final_csv_state, write_final_csv
from compkit.ensemble.weights import ensemble_inputs, tune_ensemble
from compkit.errors import CompkitError, ConfigError
from compkit.predict import predict_model, prediction_inputs
from compkit.progress import NO_PROGRESS, Progress
from compkit.training.rows import model_fold_inputs
from compkit.tuning.study import tune_model, tuned_inputs
from compkit.tuning.tuned import TunedModel, load_tuned
from compkit.workspace import (
    Workspace,
    fingerprint,
    manifest_is_unreadable,
    manifest_path,
    output_damage,
    read_json,
    read_manifest,
    stage_inputs,
)

State = Literal["fresh", "stale", "present", "missing", "damaged"]


@dataclass(frozen=True)
class StageState:
    """One stage's state: fresh, stale (inputs changed), present (not judged) or missing; why, in `detail`."""

    stage: str
    artifact: Path
    state: State
    detail: str = ""

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


@dataclass(frozen=True)
class RunOptions:
    """How `compkit run` makes the stages it makes."""

    trials: int = 50  # each model's study's total; 0 re-reads the parameters from the recorded study
    device: str = "auto"
    jobs: int = 1
    select: str = ENSEMBLE_SELECT
    train_models: bool = True  # False (the kernel): embed with the trained checkpoints as they are
    scheduler: str | None = None  # a Dask scheduler: training and embedding run as tasks on its cluster
    storage: str | None = None  # the studies' SQLAlchemy URL (default: the workspace's SQLite file)
    progress: Progress = NO_PROGRESS


@dataclass(frozen=True)
class Stage:
    """A stage: `judge()` -> (state, detail) without writing anything; `make(options)` -> what it did."""

    name: str
    artifact: Path
    judge: Callable[[], tuple[State, str]]
    make: Callable[[RunOptions], str]
    model: str | None = None

    def state(self) -> StageState:
        """Return the stage's state; an artifact too damaged to judge is "damaged" (remade by `run`)."""
        try:
            state, detail = self.judge()
        except CompkitError as error:
            state, detail = "damaged", str(error)
        return StageState(self.name, self.artifact, state, detail)


COMMANDS = {"data": "fetch", "folds": "folds", "train": "train", "embed": "embed", "tune": "tune-threshold",
            "predict": "predict", "tune ensemble": "ensemble --tune", "ensemble": "ensemble"}


def next_command(config: CompetitionConfig, states: list[StageState]) -> str | None:
    """Return the command that makes the first stage that is not fresh, as a person would type it (None: none)."""
    waiting = next((state for state in states if not state.fresh), None)
    if waiting is None:
        return None
    kind, _, model = waiting.stage.partition(" ")
    if waiting.stage in COMMANDS:
        kind, model = waiting.stage, ""
    return f"compkit {COMMANDS[kind]} -c {config.slug}" + (f" --model {model}" if model else "")


def artifact_state(artifact: Path, inputs: dict | None, *, verify: bool = False) -> tuple[State, str]:
    """Return the state of `artifact` against the inputs it should have been made from (None: unknown).

    An artifact whose files no longer have the sizes its manifest recorded (with `verify`, the hashes) is
    "damaged", and so is one whose manifest cannot be read.
    """
    if not artifact.exists():
        return "missing", ""
    manifest = read_manifest(artifact)
    if manifest is None:
        return ("damaged", f"{manifest_path(artifact)} is unreadable") if manifest_is_unreadable(artifact) else (
            "present", "no manifest")
    damage = output_damage(artifact, manifest, verify=verify)
    if damage:
        return "damaged", damage
    if inputs is None:
        return "present", f"made {manifest.get('created_at', '?')}"
    if manifest.get("fingerprint") == fingerprint(stage_inputs(inputs)):
        return "fresh", f"made {manifest.get('created_at', '?')}"
    return "stale", "inputs changed since " + str(manifest.get("created_at", "?"))


def pipeline_stages(config: CompetitionConfig, workspace: Workspace, *, verify: bool = False) -> list[Stage]:
    """Return every stage of the competition's pipeline, in the order `compkit run` makes them.

    With `verify`, the stages judge their artifacts' contents by hash, not only their sizes.
    """
    stages = [_data_stage(config, workspace, verify), _folds_stage(config, workspace, verify)]
    for round_models in _pseudo_label_rounds(config):
        for model in config.embedding_models:
            if model.name not in round_models:
                continue
            if is_trained(model):
                stages.append(_train_stage(config, workspace, model, verify))
            stages.append(_embed_stage(config, workspace, model, verify))
        for model in config.models:
            if model.name in round_models:
                stages += [_tune_stage(config, workspace, model, verify),
                           _predict_stage(config, workspace, model, verify)]
    if len(config.models) >= 2:
        stages += [_tune_ensemble_stage(config, workspace, verify), _final_stage(config, workspace, verify)]
    return stages


def _pseudo_label_rounds(config: CompetitionConfig) -> list[set[str]]:
    """Return the model names of each round: first every model that trains on no pseudo-labels (and the
    combinations of those), then the pseudo-labelled ones and the rest, since they train on the first round's
    test predictions (`pseudo_label`)."""
    later = {model.name for model in config.embedding_models if getattr(model, "pseudo_label", None) is not None}
    later |= {model.name for model in config.models if set(getattr(model, "members", ())) & later}
    first = {model.name for model in config.models} - later
    return [first, later] if later else [first]


def _data_stage(config: CompetitionConfig, workspace: Workspace, verify: bool = False) -> Stage:
    def judge() -> tuple[State, str]:
        state, detail = artifact_state(workspace.data_dir, data_inputs(config, workspace), verify=verify)
        change = origin_change(config, workspace) if state == "fresh" else None
        return ("stale", change) if change else (state, detail)

    def make(options: RunOptions) -> str:
        return fetch_competition(config, workspace, progress=options.progress).message

    return Stage("data", workspace.data_dir, judge, make)


def _folds_stage(config: CompetitionConfig, workspace: Workspace, verify: bool = False) -> Stage:
    def judge() -> tuple[State, str]:
        manifest = read_manifest(workspace.folds_path) or {}
        recorded = manifest.get("inputs", {}).get("folds")
        kept = recorded and manifest.get("chosen_by_options", True)  # `compkit folds --n-splits` outlives the config
        settings = recorded_settings(config, recorded) if kept else fold_settings(config)
        try:
            state, detail = artifact_state(workspace.folds_path, folds_inputs(config, workspace, settings),
                                           verify=verify)
        except CompkitError:
            state, detail = ("stale", "its data is missing") if workspace.folds_path.exists() else ("missing", "")
        if state == "fresh" and artifact_state(workspace.data_dir, data_inputs(config, workspace))[0] != "fresh":
            return "stale", "data is not fresh"
        return state, detail

    def make(options: RunOptions) -> str:
        return f"{build_folds(config, workspace).n_splits} folds written"

    return Stage("folds", workspace.folds_path, judge, make)


def _per_fold(workspace: Workspace, artifact_of, inputs_of, verify: bool) -> tuple[State, str]:
    """Return one state for all folds of a model's stage: fresh only when every fold is."""
    try:
        folds = workspace.fold_range()
    except CompkitError:
        return ("stale", "no folds") if artifact_of(0).parent.exists() else ("missing", "")
    states, damage = [], []
    for fold in folds:
        try:
            state, detail = artifact_state(artifact_of(fold), inputs_of(fold), verify=verify)
        except CompkitError:  # an upstream artifact is missing, so this one cannot be fresh
            state, detail = "stale" if artifact_of(fold).exists() else "missing", ""
        states.append(state)
        if state == "damaged":
            damage.append(detail)
    n_fresh = states.count("fresh")
    if n_fresh == len(states):
        return "fresh", f"{len(states)} folds"
    if damage:
        return "damaged", damage[0] + (f" (and {len(damage) - 1} more folds)" if len(damage) > 1 else "")
    if "stale" in states:
        return "stale", f"{states.count('stale')} of {len(states)} folds stale"
    if n_fresh:
        return "present", f"{n_fresh} of {len(states)} folds fresh"
    return "missing", ""


def _train_stage(config: CompetitionConfig, workspace: Workspace, model: ModelConfig, verify: bool = False) -> Stage:
    def judge() -> tuple[State, str]:
        return _per_fold(workspace, lambda fold: workspace.model_dir(model.name, fold),
                         lambda fold: model_fold_inputs(config, model, fold, workspace), verify)

    def make(options: RunOptions) -> str:
        from compkit.embeddings.runner import run_models  # torch

        if not options.train_models:
            return "not trained: its checkpoints are used as they are"
        outcomes = run_models(config, workspace, folds=workspace.fold_range(), models=[model.name],
                              jobs=options.jobs, device=options.device, scheduler=options.scheduler,
                              progress=options.progress)
        trained = sum(1 for o in outcomes if o.trained is not None and not o.trained.skipped)
        return f"{trained} of {len(outcomes)} folds trained, the rest fresh"

    return Stage(f"train {model.name}", workspace.model_dir(model.name, 0).parent, judge, make, model.name)


def _embed_stage(config: CompetitionConfig, workspace: Workspace, model: ModelConfig, verify: bool = False) -> Stage:
    def judge() -> tuple[State, str]:
        return _per_fold(workspace, lambda fold: workspace.embeddings_dir(model.name, fold),
                         lambda fold: fold_dir_inputs(config, model, fold, workspace), verify)

    def make(options: RunOptions) -> str:
        from compkit.embeddings.runner import run_models  # torch

        outcomes = run_models(config, workspace, folds=workspace.fold_range(), models=[model.name],
                              jobs=options.jobs, device=options.device, scheduler=options.scheduler,
                              embed_only=True, progress=options.progress)
        embedded = sum(1 for o in outcomes if not o.embedded.skipped)
        return f"{embedded} of {len(outcomes)} folds embedded, the rest fresh"

    return Stage(f"embed {model.name}", workspace.embeddings_dir(model.name, 0).parent, judge, make, model.name)


def _tune_stage(config: CompetitionConfig, workspace: Workspace, model: ModelConfig, verify: bool = False) -> Stage:
    path = workspace.tuned_params(model.name)

    def judge() -> tuple[State, str]:
        if path.is_file() and (own := artifact_state(path, None, verify=verify))[0] == "damaged":
            return own
        try:
            tuned = load_tuned(path) if path.is_file() else None
            state = artifact_state(path, tuned_inputs(config, model, workspace, tuned.candidates if tuned else "all"),
                                   verify=verify)
            if state[0] == "fresh":
                trivial = "" if tuned.trivial_score is None else f", trivial answer {tuned.trivial_score:.4f}"
                return "fresh", f"OOF {tuned.oof_score:.4f} after {tuned.n_trials} trials ({tuned.candidates}){trivial}"
            return state
        except (CompkitError, KeyError):  # embeddings missing, or an unreadable file: it cannot be fresh
            return ("stale", "its inputs are missing or unreadable") if path.exists() else ("missing", "")

    def make(options: RunOptions) -> str:
        """Tune up to the total; with no trials, or when the tuned file is damaged, re-read the study's best."""
        damaged = judge()[0] == "damaged"
        if options.trials == 0 or damaged:
            recorded = _readable_tuned(path)
            try:
                tuned = tune_model(config, workspace, model, trials=0, storage=options.storage,
                                   progress=options.progress, study_name=recorded.study if recorded else None,
                                   candidates=recorded.candidates if recorded else "all")
                return f"OOF {tuned.oof_score:.6f}, parameters re-read from study {tuned.study}"
            except ConfigError:  # the study has no finished trial: a damaged file is tuned again
                if not damaged:
                    raise
        tuned = tune_model(config, workspace, model, trials=options.trials, storage=options.storage,
                           progress=options.progress)
        return f"OOF {tuned.oof_score:.6f} after {tuned.n_trials} trials"

    return Stage(f"tune {model.name}", path, judge, make, model.name)


def _readable_tuned(path: Path) -> TunedModel | None:
    try:
        return load_tuned(path) if path.is_file() else None
    except CompkitError:
        return None


def _predict_stage(config: CompetitionConfig, workspace: Workspace, model: ModelConfig, verify: bool = False) -> Stage:
    path = workspace.submission_csv(model.name)
    tune = _tune_stage(config, workspace, model, verify)

    def judge() -> tuple[State, str]:
        """Fresh when both CSVs were predicted from the tuned parameters as they are now, and those are fresh."""
        if not workspace.tuned_params(model.name).is_file():
            return artifact_state(path, None)
        inputs = prediction_inputs(workspace, model.name)
        states = [artifact_state(csv, inputs, verify=verify) for csv in (path, workspace.oof_csv(model.name))]
        state, detail = next((s for s in states if s[0] != "fresh"), states[0])
        if state == "fresh" and not tune.state().fresh:
            return "stale", "its tuned parameters are not fresh"
        return state, detail

    def make(options: RunOptions) -> str:
        predicted = predict_model(config, workspace, model)
        return f"{predicted.test_rows} test rows, {predicted.oof_rows} OOF rows"

    return Stage(f"predict {model.name}", path, judge, make, model.name)


def _tune_ensemble_stage(config: CompetitionConfig, workspace: Workspace, verify: bool = False) -> Stage:
    path = workspace.tuned_ensemble
    models = [m.name for m in config.models]

    def judge() -> tuple[State, str]:
        if path.is_file() and (own := artifact_state(path, None, verify=verify))[0] == "damaged":
            return own
        try:
            stored = read_json(path) if path.is_file() else None
        except CompkitError:
            return "damaged", f"{path} is unreadable"
        if stored is None:
            return "missing", ""
        if stored.get("models") != models:
            return "stale", f"tuned for other models ({', '.join(stored.get('models') or [])})"
        state = artifact_state(path, ensemble_inputs(workspace, models, stored.get("method", "")), verify=verify)
        if state[0] == "fresh" and isinstance(stored.get("ensemble_oof_score"), float):
            cross = stored.get("cross_fitted_oof_score")
            return "fresh", (f"OOF {stored['ensemble_oof_score']:.4f} ({stored.get('select')}-tuned "
                             f"{stored.get('method')}" + ("" if cross is None else f", cross-fitted {cross:.4f}") + ")")
        return state

    def make(options: RunOptions) -> str:
        tuned = tune_ensemble(config, workspace, models, select=options.select, storage=options.storage,
                              trials=ensemble_trials(options.trials, len(models)), progress=options.progress)
        return f"{tuned.select}-tuned weights, OOF {tuned.score:.6f}{_cross_fitted(tuned.cross_fitted_score)}"

    return Stage("tune ensemble", path, judge, make)


def ensemble_trials(model_trials: int, n_models: int) -> int:
    """Return the ensemble study's total for `compkit run --trials model_trials`: four times a model's (200 at
    the default 50), and never fewer than the equal-weights and single-model trials every new study starts with."""
    return max(4 * model_trials, n_models + 1)


def _cross_fitted(score: float | None) -> str:
    return "" if score is None else f" (cross-fitted {score:.6f})"


def _final_stage(config: CompetitionConfig, workspace: Workspace, verify: bool = False) -> Stage:
    path, _ = final_csv_path(config, workspace)

    def judge() -> tuple[State, str]:
        state = final_csv_state(config, workspace)
        return state.state, state.reason

    def make(options: RunOptions) -> str:
        return write_final_csv(config, workspace, select=options.select, progress=options.progress).summary()

    return Stage("ensemble", path, judge, make)

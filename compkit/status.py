"""The state of each pipeline stage's artifacts: fresh, stale, present (unjudged) or missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compkit.config import CompetitionConfig
from compkit.data.tables import data_inputs
from compkit.errors import CompkitError
from compkit.workspace import Workspace, fingerprint, read_manifest, stage_inputs

State = Literal["fresh", "stale", "present", "missing"]


@dataclass(frozen=True)
class StageStatus:
    stage: str
    artifact: Path
    state: State
    detail: str = ""


def artifact_state(artifact: Path, inputs: dict | None) -> tuple[State, str]:
    """Return the state of `artifact` against the inputs it should have been made from (None: unknown)."""
    if not artifact.exists():
        return "missing", ""
    manifest = read_manifest(artifact)
    if manifest is None:
        return "present", "no manifest"
    if inputs is None:
        return "present", f"made {manifest.get('created_at', '?')}"
    if manifest.get("fingerprint") == fingerprint(stage_inputs(inputs)):
        return "fresh", f"made {manifest.get('created_at', '?')}"
    return "stale", "inputs changed since " + str(manifest.get("created_at", "?"))


def stage_statuses(config: CompetitionConfig, workspace: Workspace) -> list[StageStatus]:
    """Return the status of every stage of the pipeline for this competition."""
    from compkit.config import FoldSettings
    from compkit.data.folds import fold_settings, folds_inputs

    statuses = []
    data_state, detail = artifact_state(workspace.data_dir, data_inputs(config, workspace))
    statuses.append(StageStatus("data", workspace.data_dir, data_state, detail))

    recorded = (read_manifest(workspace.folds_path) or {}).get("inputs", {}).get("folds")
    settings = FoldSettings(**recorded) if recorded else fold_settings(config)
    folds_state, detail = artifact_state(workspace.folds_path, folds_inputs(config, workspace, settings))
    if folds_state == "fresh" and data_state != "fresh":
        folds_state, detail = "stale", "data is not fresh"
    statuses.append(StageStatus("folds", workspace.folds_path, folds_state, detail))

    for model in config.models:
        if model.kind in ("image", "text"):
            statuses.append(_folds_stage(f"train {model.name}", config, workspace, model, _train_inputs))
        if model in config.embedding_models:  # a union/concat/score model reuses its members' embeddings
            statuses.append(_folds_stage(f"embed {model.name}", config, workspace, model, _embedding_inputs))
        tuned = _tune_stage(config, workspace, model)
        statuses.append(tuned)
        statuses.append(_predict_stage(workspace, model.name, upstream_fresh=tuned.state == "fresh"))
    if len(config.models) >= 2:
        statuses.extend(_ensemble_stages(config, workspace))
    return statuses


def _tune_stage(config: CompetitionConfig, workspace: Workspace, model) -> StageStatus:
    from compkit.tuning.study import tuned_inputs
    from compkit.workspace import read_json

    path = workspace.tuned_params(model.name)
    try:
        candidates = read_json(path)["candidates"] if path.is_file() else "all"
        state, detail = artifact_state(path, tuned_inputs(config, model, workspace, candidates))
    except (CompkitError, KeyError):  # embeddings missing, or an unreadable file: it cannot be fresh
        state, detail = ("stale", "its inputs are missing or unreadable") if path.exists() else ("missing", "")
    return StageStatus(f"tune {model.name}", path, state, detail)


def _predict_stage(workspace: Workspace, name: str, *, upstream_fresh: bool) -> StageStatus:
    """Fresh when both CSVs were predicted from the tuned parameters as they are now, and those are fresh."""
    from compkit.predict import prediction_inputs

    path = workspace.submission_csv(name)
    if not workspace.tuned_params(name).is_file():
        return StageStatus(f"predict {name}", path, *artifact_state(path, None))
    inputs = prediction_inputs(workspace, name)
    states = [artifact_state(csv, inputs) for csv in (path, workspace.oof_csv(name))]
    state, detail = next((s for s in states if s[0] != "fresh"), states[0])
    if state == "fresh" and not upstream_fresh:
        state, detail = "stale", "its tuned parameters are not fresh"
    return StageStatus(f"predict {name}", path, state, detail)


def _ensemble_stages(config: CompetitionConfig, workspace: Workspace) -> list[StageStatus]:
    """The tuned ensemble (fresh while every model's OOF CSV is unchanged) and the ensemble CSV (unjudged)."""
    from compkit.ensemble.vote import recorded_ensemble_inputs
    from compkit.ensemble.weights import ensemble_inputs
    from compkit.workspace import read_json

    path = workspace.tuned_ensemble
    models = [m.name for m in config.models]
    stored = read_json(path) if path.is_file() else None
    if stored is None:
        state, detail = "missing", ""
    elif stored.get("models") != models:
        state, detail = "stale", "tuned for other models"
    else:
        state, detail = artifact_state(path, ensemble_inputs(workspace, models, stored.get("method", "")))
    csv = workspace.submission_csv("ensemble")
    csv_state, csv_detail = artifact_state(csv, recorded_ensemble_inputs(csv))
    if csv_state == "stale":
        csv_detail = "an input CSV changed since it was written"
    return [StageStatus("tune ensemble", path, state, detail), StageStatus("ensemble", csv, csv_state, csv_detail)]


def _train_inputs(config, model, fold, workspace):
    from compkit.training.rows import model_fold_inputs

    return workspace.model_dir(model.name, fold), lambda: model_fold_inputs(config, model, fold, workspace)


def _embedding_inputs(config, model, fold, workspace):
    from compkit.embeddings.cache import fold_dir_inputs

    return workspace.embeddings_dir(model.name, fold), lambda: fold_dir_inputs(config, model, fold, workspace)


def _folds_stage(stage: str, config, workspace: Workspace, model, artifact_and_inputs) -> StageStatus:
    """Return one status for all folds of a model's stage: fresh only when every fold is."""
    states = []
    for fold in range(config.folds.n_splits):
        artifact, inputs = artifact_and_inputs(config, model, fold, workspace)
        try:
            states.append(artifact_state(artifact, inputs())[0])
        except CompkitError:  # an upstream artifact is missing, so this one cannot be fresh
            states.append("stale" if artifact.exists() else "missing")
    folder = artifact.parent
    n_fresh = states.count("fresh")
    if n_fresh == len(states):
        return StageStatus(stage, folder, "fresh", f"{len(states)} folds")
    if "stale" in states:
        return StageStatus(stage, folder, "stale", f"{states.count('stale')} of {len(states)} folds stale")
    if n_fresh:
        return StageStatus(stage, folder, "present", f"{n_fresh} of {len(states)} folds fresh")
    return StageStatus(stage, folder, "missing", "")


def _file_stage(stage: str, artifact: Path) -> StageStatus:
    return StageStatus(stage, artifact, *artifact_state(artifact, None))

"""The state of each pipeline stage's artifacts: fresh, stale, present (unjudged) or missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compkit.config import CompetitionConfig
from compkit.data import data_inputs
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
    from compkit.folds import folds_inputs

    statuses = []
    data_state, detail = artifact_state(workspace.data_dir, data_inputs(config, workspace))
    statuses.append(StageStatus("data", workspace.data_dir, data_state, detail))

    folds_state, detail = artifact_state(workspace.folds_path, folds_inputs(config, workspace, config.folds))
    if folds_state == "fresh" and data_state != "fresh":
        folds_state, detail = "stale", "data is not fresh"
    statuses.append(StageStatus("folds", workspace.folds_path, folds_state, detail))

    for model in config.models:
        for fold in range(config.folds.n_splits):
            directory = workspace.model_dir(model.name, fold)
            statuses.append(StageStatus(f"train {model.name} fold {fold}", directory, *artifact_state(directory, None)))
        statuses.append(_file_stage(f"tune {model.name}", workspace.tuned_params(model.name)))
        statuses.append(_file_stage(f"predict {model.name}", workspace.submission_csv(model.name)))
    statuses.append(_file_stage("ensemble", workspace.submission_csv("ensemble")))
    return statuses


def _file_stage(stage: str, artifact: Path) -> StageStatus:
    return StageStatus(stage, artifact, *artifact_state(artifact, None))

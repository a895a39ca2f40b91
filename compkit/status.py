"""`compkit status`: the state of every stage of the one stage list, judged without writing anything."""

from __future__ import annotations

from compkit.config import CompetitionConfig
from compkit.stages import StageState, pipeline_stages
from compkit.workspace import Workspace


def stage_statuses(config: CompetitionConfig, workspace: Workspace, *, verify: bool = False) -> list[StageState]:
    """Return the state of every stage of the pipeline for this competition, in pipeline order.

    Artifacts are judged by their files' sizes; with `verify`, by their contents' hashes too (reads them all).
    """
    return [stage.state() for stage in pipeline_stages(config, workspace, verify=verify)]

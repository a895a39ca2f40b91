"""Ensembling submission-format CSVs: weighted votes for match lists, reciprocal-rank votes for identify.

Every input is validated (same id set, well-formed rows) before anything is combined; the votes are gathered
and counted over all rows at once (`compkit.ensemble.ballots`), never in a Python loop over postings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig
from compkit.ensemble.ballots import MatchVotes, RankVotes
from compkit.errors import ConfigError, ParameterError
from compkit.submission import (
    IdentifySubmission,
    MatchSubmission,
    format_identify_rows,
    format_match_rows,
    load_submission,
)
from compkit.workspace import Workspace, file_sha256, read_manifest, write_csv, write_manifest

METHODS = {"match": ("vote",), "identify": ("rank",)}


@dataclass(frozen=True)
class EnsembleResult:
    frame: pd.DataFrame
    method: str
    weights: tuple[float, ...]
    vote_threshold: float | None


def load_inputs(config: CompetitionConfig, paths: Sequence[Path], *, expected_ids: Sequence[str]):
    """Return every input validated against one id set, in the order of `expected_ids`."""
    if len(paths) < 2:
        raise ConfigError(f"ensemble needs at least two CSVs, got {len(paths)}")
    return [load_submission(Path(path), config, expected_ids=expected_ids) for path in paths]


def check_weights(weights: Sequence[float] | None, n_inputs: int) -> np.ndarray:
    """Return the weights as an array (default: all 1), refusing a count that does not match the inputs."""
    if weights is None:
        return np.ones(n_inputs)
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != n_inputs:
        raise ParameterError("weights", _listed(weights), f"has {len(weights)} values for {n_inputs} CSVs")
    if (weights < 0).any() or not weights.any():
        raise ParameterError("weights", _listed(weights), "must be non-negative and not all zero")
    return weights


def _listed(weights: np.ndarray) -> str:
    return ",".join(f"{weight:g}" for weight in weights)


def vote_matches(
    submissions: Sequence[MatchSubmission], weights: np.ndarray, vote_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return CSR match lists keeping each (posting, match) whose summed weight reaches `vote_threshold`.

    A posting always matches itself. `vote_threshold` is a fraction of the total weight (0 < t <= 1).
    """
    return MatchVotes.from_submissions(submissions).match_lists(weights, vote_threshold)


def rank_votes(submissions: Sequence[IdentifySubmission], weights: np.ndarray, *, top: int = 5) -> np.ndarray:
    """Return (n, top) ids ranked by weighted reciprocal-rank votes: an id at rank r earns weight / (r + 1).

    `new_individual` is a candidate like any id; ties are broken deterministically (by first appearance in
    the stacked inputs).
    """
    return RankVotes.from_submissions(submissions).top(weights, top)


def ensemble(
    config: CompetitionConfig,
    paths: Sequence[Path],
    *,
    expected_ids: Sequence[str],
    method: str | None = None,
    weights: Sequence[float] | None = None,
    vote_threshold: float = 0.5,
) -> EnsembleResult:
    """Return the combined submission of the CSVs at `paths` (validated first)."""
    method = method or METHODS[config.task][0]
    if method not in METHODS[config.task]:
        raise ParameterError("method", method, f"does not apply to a {config.task} competition "
                             f"(choose {', '.join(METHODS[config.task])})")
    if not 0 < vote_threshold <= 1:
        raise ParameterError("vote_threshold", vote_threshold, "must be in (0, 1]")
    submissions = load_inputs(config, paths, expected_ids=expected_ids)
    weight_array = check_weights(weights, len(submissions))
    ids = submissions[0].ids
    if config.task == "match":
        indptr, indices = vote_matches(submissions, weight_array, vote_threshold)
        frame = format_match_rows(ids, indptr, indices, config=config)
        return EnsembleResult(frame, method, tuple(weight_array), vote_threshold)
    predictions = rank_votes(submissions, weight_array, top=config.submission.max_predictions)
    return EnsembleResult(format_identify_rows(ids, predictions, config=config), method, tuple(weight_array), None)


def write_ensemble(
    target: Path, result: EnsembleResult, paths: Sequence[Path], *, workspace: Workspace, weights_from: str,
) -> None:
    """Write the ensemble CSV with a manifest: its input CSVs (by hash, workspace-relative), how they were combined.

    `weights_from`: "tuned" (the weights of tuning/ensemble.json) or "given" (chosen by hand). The manifest also
    records the CSV's own hash, so an edited CSV is not taken for the one compkit wrote.
    """
    write_csv(target, result.frame)
    options = {"method": result.method, "weights": list(result.weights), "vote_threshold": result.vote_threshold}
    write_manifest(target, ensemble_csv_inputs(workspace, paths, options, weights_from=weights_from),
                   sha256=file_sha256(target))


def ensemble_csv_inputs(workspace: Workspace, paths: Sequence[Path], options: dict, *,
                        weights_from: str = "given") -> dict:
    """Return what an ensemble CSV is made from: each input CSV's hash (None once it is gone) by its
    workspace-relative path, the options, and where the weights came from."""
    csvs = {workspace.relative(path): file_sha256(path) if Path(path).is_file() else None for path in paths}
    return {"csvs": csvs, "options": options, "weights_from": weights_from}


def recorded_ensemble_inputs(target: Path, workspace: Workspace) -> dict | None:
    """Return the inputs an ensemble CSV's manifest recorded, re-hashed as the files are now (None: no manifest).

    The recorded paths are resolved in `workspace`, so a copied or moved workspace is judged against its own
    files.
    """
    manifest = read_manifest(target)
    if manifest is None or "csvs" not in manifest.get("inputs", {}):
        return None
    recorded = manifest["inputs"]
    csvs = {name: file_sha256(path) if (path := workspace.resolve(name)).is_file() else None
            for name in recorded["csvs"]}
    return {"csvs": csvs, "options": recorded["options"], "weights_from": recorded.get("weights_from", "given")}


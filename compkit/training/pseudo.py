"""identify: a pseudo-labelling round: test images another model predicts confidently join the training rows.

As the Happywhale winners did (+0.011 private LB): a model whose table has `pseudo_label = { source = "M",
threshold = T }` trains, on every fold, also on the test images whose top-1 score in `submissions/top1/M.csv`
(written by `compkit predict` for M) is above T, labelled as that top-1 individual. They join a fold's
training rows (`compkit.training.rows.with_pseudo_labels`), never its validation rows, and only for the
individuals that fold trains on: a pseudo-label naming an individual of the held-out fold alone would make it a
seen class there and the held-out score optimistic. The top-1 file's sha256 and T enter the fold's
fingerprint, so new predictions of M make the round stale. The round is its own model (its own name and
artifacts), tuned, predicted and ensembled like any other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig, PseudoLabel
from compkit.errors import StaleArtifactError
from compkit.workspace import Workspace, file_sha256

TOP1_LABEL, TOP1_SCORE = "top1", "score"  # the columns of submissions/top1/<model>.csv beside the id


def top1_frame(config: CompetitionConfig, ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Return the top-1 file's rows: each test id, its top-ranked individual and that score (before
    new_individual is inserted; "" where the search found none)."""
    return pd.DataFrame({config.columns.id: ids, TOP1_LABEL: labels, TOP1_SCORE: np.round(scores, 6)})


def _source_path(config: CompetitionConfig, workspace: Workspace, settings: PseudoLabel):
    path = workspace.top1_csv(settings.source)
    if not path.is_file():
        raise StaleArtifactError(f"{path}: missing, the pseudo-labels' source (run: compkit predict -c {config.slug} "
                                 f"--model {settings.source})")
    return path


def pseudo_label_inputs(config: CompetitionConfig, workspace: Workspace, settings: PseudoLabel | None) -> dict | None:
    """Return what a model's pseudo-labels are made from (the top-1 file by hash, the threshold), or None."""
    if settings is None:
        return None
    path = _source_path(config, workspace, settings)
    return {"source": settings.source, "sha256": file_sha256(path), "threshold": settings.threshold}


def pseudo_labels(config: CompetitionConfig, workspace: Workspace, settings: PseudoLabel) -> pd.DataFrame:
    """Return the confident test rows: the test table's rows whose top-1 score is above the threshold, with
    the label column set to that individual and the image column to the image's absolute path."""
    from compkit.data.tables import load_test

    top1 = pd.read_csv(_source_path(config, workspace, settings), dtype={config.columns.id: str, TOP1_LABEL: str},
                       keep_default_na=False)
    confident = top1[(top1[TOP1_SCORE] > settings.threshold) & (top1[TOP1_LABEL] != "")]
    test = load_test(config, workspace)
    rows = test[test[config.columns.id].astype(str).isin(confident[config.columns.id])].copy()
    rows[config.columns.label] = rows[config.columns.id].astype(str).map(
        confident.set_index(config.columns.id)[TOP1_LABEL])
    if config.columns.image:
        images = workspace.data_dir / config.data.test_images
        rows[config.columns.image] = [str(images / name) for name in rows[config.columns.image]]
    return rows.reset_index(drop=True)

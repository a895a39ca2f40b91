"""Neighbour lists (or their top-5 labels) -> rows of the competition's submission format, tuned parameters applied."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit.metrics import PAD_ID
from compkit.postprocess.matches import match_mask
from compkit.postprocess.new_individual import LabelSpecies, query_thresholds
from compkit.postprocess.top5 import NEW_INDIVIDUAL, insert_new_individual, neighbour_top5
from compkit.submission import format_identify_rows, format_match_rows


def match_rows(config, ids, similarities, indices, params: dict) -> pd.DataFrame:
    """Return the submission rows of neighbour lists thresholded (and min2-completed) as `params` say."""
    keep = match_mask(similarities, indices, params["threshold"], max_matches=config.postprocess.max_matches,
                      min2_threshold=params.get("min2_threshold"))
    return match_rows_kept(config, ids, indices, keep)


def match_rows_kept(config, ids, indices: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Return the submission rows of the neighbours `keep` marks."""
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return format_match_rows(ids, indptr, indices[keep], config=config)


def neighbour_identify_rows(
    config, ids, similarities, indices, label_codes, classes, params: dict, species: LabelSpecies | None
) -> pd.DataFrame:
    """Return the submission rows of neighbour lists: their top-5 individuals, new_individual inserted."""
    labels, scores = neighbour_top5(similarities, indices, label_codes)
    return identify_rows(config, ids, labels, scores, classes, params, species)


def identify_rows(config, ids, labels, scores, classes, params: dict, species: LabelSpecies | None) -> pd.DataFrame:
    """Return the submission rows of top-5 label codes and scores, new_individual inserted as `params` say."""
    thresholds = query_thresholds(params, labels, scores, species)
    codes = insert_new_individual(labels, scores, thresholds, NEW_INDIVIDUAL)
    names = np.where(codes >= 0, classes[np.clip(codes, 0, None)], PAD_ID).astype(object)
    names[codes == NEW_INDIVIDUAL] = config.submission.new_individual
    return format_identify_rows(ids, names, config=config)

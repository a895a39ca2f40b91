"""Neighbour lists (or their top-5 labels) -> rows of the competition's submission format, tuned parameters applied."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit.metrics import PAD_ID
from compkit.postprocess.clusters import CLUSTER_SIZE, ClusterMatches
from compkit.postprocess.group_sizes import GROUP_SIZE_WEIGHT, calibrated_keep
from compkit.postprocess.matches import match_mask
from compkit.postprocess.mutual import MUTUAL_TOP, mutual_filter
from compkit.postprocess.new_individual import LabelSpecies, query_thresholds
from compkit.postprocess.top5 import NEW_INDIVIDUAL, insert_new_individual
from compkit.submission import format_identify_rows, format_match_rows


def match_rows(config, ids, similarities, indices, params: dict, *, train_sizes=None) -> pd.DataFrame:
    """Return the submission rows of neighbour lists thresholded (and min2-completed) as `params` say.

    Parameters with a `cluster_size` (agglomeration) say instead: each row matches its cluster. With
    `mutual_top` the lists are mutual-filtered first; with `group_size_weight` the kept lists are calibrated to
    `train_sizes` (each training row's group size) afterwards."""
    if CLUSTER_SIZE in params:
        clusters = ClusterMatches(similarities, indices, max_size=config.postprocess.max_matches)
        return format_match_rows(ids, *clusters.keep_lists(params), config=config)
    if MUTUAL_TOP in params:
        similarities, indices = mutual_filter(similarities, indices, int(round(params[MUTUAL_TOP])))
    max_matches = config.postprocess.max_matches
    keep = match_mask(similarities, indices, params["threshold"], max_matches=max_matches,
                      min2_threshold=params.get("min2_threshold"))
    if GROUP_SIZE_WEIGHT in params:
        if train_sizes is None:
            raise ValueError("group_size_weight needs train_sizes, the training rows' group sizes")
        keep = calibrated_keep(similarities, indices, keep, train_sizes, params[GROUP_SIZE_WEIGHT],
                               max_matches=max_matches)
    return match_rows_kept(config, ids, indices, keep)


def match_rows_kept(config, ids, indices: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Return the submission rows of the neighbours `keep` marks."""
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return format_match_rows(ids, indptr, indices[keep], config=config)


def identify_rows(config, ids, labels, scores, classes, params: dict, species: LabelSpecies | None) -> pd.DataFrame:
    """Return the submission rows of top-5 label codes and scores, new_individual inserted as `params` say."""
    thresholds = query_thresholds(params, labels, scores, species)
    codes = insert_new_individual(labels, scores, thresholds, NEW_INDIVIDUAL)
    names = np.where(codes >= 0, classes[np.clip(codes, 0, None)], PAD_ID).astype(object)
    names[codes == NEW_INDIVIDUAL] = config.submission.new_individual
    return format_identify_rows(ids, names, config=config)

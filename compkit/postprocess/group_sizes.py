"""Group-size calibration (match): each row's match list trimmed or grown towards the training set's group sizes.

Shopee's 18th place matched the distribution of predicted group sizes to the training set's (0.739 to 0.759).
Here, by quantile matching on the rows' own similarity-sorted lists, the same on OOF and test:

1. The threshold rule (and min2) keeps a prefix of each row's other postings: `kept` of them. Rows are ranked
   by how large their group looks: by `kept`, ties broken by the similarity of the next other posting (the
   one the rule just left out).
2. The row at quantile q of that ranking gets the q-quantile of the training rows' true group sizes (a row's
   group size: the rows sharing its label, itself included), so the predicted sizes follow the training
   distribution exactly (OOF) or by quantiles (test, whatever its number of rows).
3. Each row keeps its `round((1 - w) * kept + w * (target - 1))` most similar other postings (at most as many
   as it lists). `w` (`group_size_weight`) is tuned in [0, 1]: 0 is the plain rule, 1 the full matching.

Everything stays a prefix of each row, so the tuning objective scores it from prefix counts (no loop).
"""

from __future__ import annotations

import numpy as np

GROUP_SIZE_WEIGHT = "group_size_weight"


def target_sizes(n_rows: int, train_sizes: np.ndarray) -> np.ndarray:
    """Return the ascending group sizes of `n_rows` rows spread over the training rows' sizes by quantile.

    With as many rows as training rows this is the training sizes sorted.
    """
    ordered = np.sort(np.asarray(train_sizes, dtype=np.int64))
    quantiles = (np.arange(n_rows) + 0.5) / max(n_rows, 1)
    # the inverted CDF (np.quantile's "inverted_cdf", without its partition per quantile): the smallest size
    # whose share of the training rows reaches q
    return ordered[np.clip(np.ceil(quantiles * len(ordered)).astype(np.int64) - 1, 0, len(ordered) - 1)]


def calibrated_other_counts(
    kept: np.ndarray, next_similarity: np.ndarray, listed: np.ndarray, targets: np.ndarray, weight: float
) -> np.ndarray:
    """Return how many other postings each row keeps after calibration (see the module docstring).

    `kept`: the rule's other postings kept per row; `next_similarity`: the similarity of the first other
    posting left out (-inf when none); `listed`: how many other postings each row lists; `targets`:
    `target_sizes(len(kept), train_sizes)`, which a study computes once.
    """
    order = np.lexsort((next_similarity, kept))  # ascending: by kept, then by the next one's similarity
    target = np.empty(len(kept), dtype=np.int64)
    target[order] = targets - 1
    blended = np.rint((1.0 - weight) * kept + weight * target).astype(np.int64)
    return np.clip(blended, 0, listed)


def calibrated_keep(
    similarities: np.ndarray, indices: np.ndarray, keep: np.ndarray, train_sizes: np.ndarray, weight: float, *,
    max_matches: int = 50,
) -> np.ndarray:
    """Return the (n, k) mask of a match mask (a prefix of each row's others, self kept) calibrated."""
    rows = np.arange(len(indices))[:, None]
    other = (indices >= 0) & (indices != rows)
    rank = np.cumsum(other, axis=1) - 1  # each other posting's rank among its row's others
    kept = (keep & other).sum(axis=1)
    next_similarity = np.where(other & (rank == kept[:, None]), similarities.astype(np.float32), -np.inf).max(axis=1)
    targets = target_sizes(len(indices), train_sizes)
    counts = calibrated_other_counts(kept, next_similarity, other.sum(axis=1), targets, weight)
    calibrated = (other & (rank < counts[:, None])) | (keep & ~other)
    if max_matches and calibrated.shape[1] > max_matches:
        calibrated &= np.cumsum(calibrated, axis=1) <= max_matches
    return calibrated

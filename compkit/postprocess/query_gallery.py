"""identify: confident queries join the gallery as their predicted individual, and every query searches again.

The cheap half of the Happywhale winners' pseudo-labelling. A query whose top-1 individual scores above
`gallery_threshold` is added to the gallery labelled as that individual; each query's second search is its
first one plus its nearest other queries among those confident ones ("peers", found once by a search of the
query set within itself). Test queries search the test set, and an OOF query the other OOF queries of its own
fold (they are each other's test set: the gallery of other folds holds none of them), so OOF and test are
treated alike and the threshold can be tuned on OOF.

Only the first pass's top 5 and the peers are needed: a label outside the first top 5 that no confident peer
shows cannot rise into the second one. A peer enters with its kNN cosine (it has no head score, as a fused
neighbour without one keeps its kNN score). A trial re-ranks (n, 5 + peers) arrays: no search per trial.
"""

from __future__ import annotations

import numpy as np

from compkit.postprocess.top5 import NO_LABEL, top_labels

GALLERY_THRESHOLD = "gallery_threshold"  # the tuned parameter
PEER_DEPTH = 20  # how many nearest other queries each query keeps for the second search


def peers_without_self(similarities: np.ndarray, indices: np.ndarray, depth: int = PEER_DEPTH):
    """Return (similarities, indices) of each query's `depth` nearest other queries, from a self-search one deeper.

    A query is dropped from its own list wherever a tie put it (duplicates); -1 / -inf pad short rows.
    """
    is_self = indices == np.arange(len(indices))[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :depth]  # self last, the others in their order
    peer_similarities = np.take_along_axis(similarities, order, axis=1).astype(np.float32)
    peer_indices = np.take_along_axis(indices, order, axis=1)
    peer_similarities[np.take_along_axis(is_self, order, axis=1)] = -np.inf
    peer_indices = np.where(np.isfinite(peer_similarities), peer_indices, -1)
    width = min(depth, peer_indices.shape[1])
    padded = (np.full((len(indices), depth), -np.inf, np.float32), np.full((len(indices), depth), -1, np.int64))
    padded[0][:, :width], padded[1][:, :width] = peer_similarities[:, :width], peer_indices[:, :width]
    return padded


def confident_labels(labels: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Return each query's predicted individual where its top-1 score is above `threshold`, else NO_LABEL."""
    return np.where((scores[:, 0] > threshold) & (labels[:, 0] >= 0), labels[:, 0], NO_LABEL)


def with_query_gallery(
    labels: np.ndarray, scores: np.ndarray, peer_similarities: np.ndarray, peer_indices: np.ndarray,
    threshold: float, *, top: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the top-`top` individuals and scores after confident queries joined the gallery.

    `labels`, `scores`: the first search's top individuals (descending); `peer_*`: each query's nearest other
    queries (indices into the same query set). A query keeps its own first answer and gains each confident
    peer as one more gallery image of the peer's predicted individual.
    """
    joined = confident_labels(labels, scores, threshold)
    peer_labels = np.where(peer_indices >= 0, joined[np.clip(peer_indices, 0, None)], NO_LABEL)
    peer_scores = np.where(peer_labels != NO_LABEL, peer_similarities, -np.inf).astype(np.float32)
    all_labels = np.concatenate([labels, peer_labels], axis=1)
    all_scores = np.concatenate([scores, peer_scores], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")  # ties: the first search's answer first
    return top_labels(np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_labels, order, axis=1),
                      top)


def gallery_top5(labels: np.ndarray, scores: np.ndarray, peers, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return the top 5 with the query gallery applied when `params` tune it (and peers exist), else as given."""
    if peers is None or GALLERY_THRESHOLD not in params:
        return labels, scores
    return with_query_gallery(labels, scores, *peers, params[GALLERY_THRESHOLD])

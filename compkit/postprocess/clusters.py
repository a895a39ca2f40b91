"""Agglomerative merging of the kNN graph to a target mean cluster size; a posting matches its cluster.

The Shopee 3rd place merged postings into clusters until their mean size reached a target, then attached the
postings left alone to their nearest cluster. Here, on the sparse kNN graph (each row's top-k; no n x n
matrix):

- The linkage of two clusters A and B is the average linkage over the listed pairs, an unlisted pair counting
  as similarity 0: sum(s_ab) / (|A| |B|), each pair's similarity the larger of its two listed directions. Two
  big clusters joined by one strong pair therefore do not chain, as they would under single linkage.
- Merging goes in rounds, vectorised over clusters: each cluster finds its best-linked partner among those it
  can join without exceeding `max_size` (the submission's limit), and every mutually-best pair merges
  (reciprocal nearest neighbours). The rounds stop when no pair that may merge has a positive linkage. The
  merges are kept in round order, by descending linkage within a round: the first round pairs every posting
  with its mutual nearest one wherever it is, before any pair grows. Sorting all merges by linkage instead
  (the sequential greedy order, UPGMA) scored lower on OOF in 4 of 5 models measured (real-match
  lite0-arcface 0.584 against 0.608 at the best grid point), as it completes the tight big groups before the
  many loose pairs, where Shopee-like data has mostly pairs.
- The sequence of merges (the hierarchy) depends on no tuned parameter, so it is built once per neighbour
  table; a target mean size m keeps its first n - ceil(n / m) merges (connected components of those merge
  edges), which is what a trial costs, plus the attachment and the F1 sums.
- Postings still alone then join the cluster of their nearest other posting when that similarity reaches
  `attach_threshold` (at most `max_size` a cluster: attachments that would overfill one are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from compkit.metrics import label_sizes

CLUSTER_SIZE = "cluster_size"
ATTACH_THRESHOLD = "attach_threshold"


@dataclass(frozen=True)
class MergeHierarchy:
    """The merges of agglomerative clustering, in order: merge i joins the clusters of rows left[i], right[i]."""

    n_rows: int
    left: np.ndarray
    right: np.ndarray
    linkage: np.ndarray

    def labels(self, target_size: float) -> np.ndarray:
        """Return each row's cluster id after the merges that bring the mean cluster size to `target_size`."""
        wanted = self.n_rows - math.ceil(self.n_rows / max(float(target_size), 1.0))
        return _components(self.n_rows, self.left[:wanted], self.right[:wanted])


def _components(n_rows: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = sp.coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n_rows, n_rows))
    return connected_components(graph, directed=False)[1]


def pair_graph(similarities: np.ndarray, indices: np.ndarray) -> sp.csr_matrix:
    """Return the symmetric sparse graph of the listed pairs (no self pairs), each the larger of its directions."""
    n_rows = len(indices)
    rows = np.repeat(np.arange(n_rows), indices.shape[1])
    columns = indices.reshape(-1)
    values = np.asarray(similarities, dtype=np.float32).reshape(-1)
    keep = (columns >= 0) & (columns != rows) & np.isfinite(values) & (values > 0)
    graph = sp.csr_matrix((values[keep], (rows[keep], columns[keep])), shape=(n_rows, n_rows))
    graph = graph.maximum(graph.T).tocsr()  # a pair listed both ways is kept once, at its larger similarity
    graph.sum_duplicates()
    return graph


def merge_hierarchy(similarities: np.ndarray, indices: np.ndarray, *, max_size: int) -> MergeHierarchy:
    """Return the merge sequence of average-linkage agglomeration of the kNN graph (see the module's doc)."""
    n_rows = len(indices)
    graph = pair_graph(similarities, indices).tocoo()
    # Cluster-level edges: (a, b, summed similarity) with a < b; cluster ids are the rows that represent them.
    a, b, total = graph.row, graph.col, graph.data.astype(np.float64)
    upper = a < b
    a, b, total = a[upper].astype(np.int64), b[upper].astype(np.int64), total[upper]
    size = np.ones(n_rows, dtype=np.int64)
    lefts, rights, linkages = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    while len(a):
        linkage = total / (size[a] * size[b])
        allowed = size[a] + size[b] <= max_size
        a, b, total, linkage = a[allowed], b[allowed], total[allowed], linkage[allowed]
        if not len(a):
            break
        best_of = _best_partner(n_rows, a, b, linkage)
        mutual = (best_of[a] == b) & (best_of[b] == a)
        if not mutual.any():
            break
        order = np.argsort(-linkage[mutual], kind="stable")
        merged_a, merged_b = a[mutual][order], b[mutual][order]
        lefts.append(merged_a)
        rights.append(merged_b)
        linkages.append(linkage[mutual][order])
        # b joins a: relabel the edges that touch a merged cluster and re-sum those between the same two
        # clusters (an edge touching none cannot meet another: it stays as it is).
        new_id = np.arange(n_rows)
        new_id[merged_b] = merged_a
        size[merged_a] += size[merged_b]
        touches = np.zeros(n_rows, dtype=bool)
        touches[merged_a] = touches[merged_b] = True
        touched = touches[a] | touches[b]
        low, high = new_id[a[touched]], new_id[b[touched]]
        low, high = np.minimum(low, high), np.maximum(low, high)
        outside = low != high
        summed = sp.csr_matrix((total[touched][outside], (low[outside], high[outside])), shape=(n_rows, n_rows))
        summed.sum_duplicates()
        summed = summed.tocoo()
        a = np.concatenate([a[~touched], summed.row.astype(np.int64)])
        b = np.concatenate([b[~touched], summed.col.astype(np.int64)])
        total = np.concatenate([total[~touched], summed.data])
    left, right, linkage = np.concatenate(lefts), np.concatenate(rights), np.concatenate(linkages)
    return MergeHierarchy(n_rows, left, right, linkage)


def _best_partner(n_rows: int, a: np.ndarray, b: np.ndarray, linkage: np.ndarray) -> np.ndarray:
    """Return each cluster's best-linked partner over the edges (a, b) taken both ways (-1: none); ties: the
    smaller partner id. Two unbuffered reductions over the edges, no sort."""
    source, target, both = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([linkage, linkage])
    best_linkage = np.full(n_rows, -np.inf)
    np.maximum.at(best_linkage, source, both)
    at_best = both == best_linkage[source]
    best = np.full(n_rows, n_rows, dtype=np.int64)
    np.minimum.at(best, source[at_best], target[at_best])
    return np.where(best < n_rows, best, -1)


class ClusterMatches:
    """Cluster labels of fixed neighbour lists for any (cluster_size, attach_threshold), and their row-F1.

    The hierarchy is built once; a call costs one connected-components pass over the kept merges, one over the
    attachments, and counting.
    """

    def __init__(self, similarities: np.ndarray, indices: np.ndarray, *, max_size: int) -> None:
        self.max_size = max_size
        self.n_rows = len(indices)
        self.hierarchy = merge_hierarchy(similarities, indices, max_size=max_size)
        rows = np.arange(self.n_rows)
        other = (indices >= 0) & (indices != rows[:, None]) & np.isfinite(similarities)
        first = np.where(other, similarities, -np.inf).argmax(axis=1)
        self.has_other = other[rows, first]
        self.nearest_other = np.where(self.has_other, indices[rows, first], -1)
        self.nearest_similarity = np.where(self.has_other, similarities[rows, first], -np.inf)

    def labels(self, params: dict) -> np.ndarray:
        """Return each row's cluster id for `params` (cluster_size; attach_threshold, absent: no attachment)."""
        labels = self.hierarchy.labels(params[CLUSTER_SIZE])
        threshold = params.get(ATTACH_THRESHOLD)
        if threshold is None:
            return labels
        sizes = np.bincount(labels, minlength=self.n_rows)
        alone = np.flatnonzero((sizes[labels] == 1) & self.has_other & (self.nearest_similarity >= threshold))
        if not len(alone):
            return labels
        targets = self.nearest_other[alone]
        attached = _components(self.n_rows, np.concatenate([np.arange(self.n_rows), alone]),
                               np.concatenate([_first_row_of(labels)[labels], targets]))
        overfull = np.bincount(attached, minlength=self.n_rows)[attached] > self.max_size
        if overfull.any():  # drop the attachments into overfilled clusters: those postings stay alone
            kept = ~overfull[alone]
            attached = _components(self.n_rows, np.concatenate([np.arange(self.n_rows), alone[kept]]),
                                   np.concatenate([_first_row_of(labels)[labels], targets[kept]]))
        return attached

    def row_f1(self, params: dict, labels_true: np.ndarray) -> np.ndarray:
        """Return each row's F1 when it matches exactly its cluster (itself included)."""
        return cluster_row_f1(self.labels(params), labels_true)

    def keep_lists(self, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """Return (indptr, indices) CSR lists of each row's matches: itself first, then its cluster's other rows."""
        return cluster_lists(self.labels(params))


def _first_row_of(labels: np.ndarray) -> np.ndarray:
    """Return, for each cluster id, one row carrying it (arbitrary for ids no row carries)."""
    first = np.zeros(labels.max() + 1 if len(labels) else 0, dtype=np.int64)
    first[labels[::-1]] = np.arange(len(labels))[::-1]
    return first


def cluster_row_f1(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each row's F1 when its predicted matches are its cluster: 2 |C ∩ G| / (|C| + |G|)."""
    _, pair, pair_counts = np.unique(clusters.astype(np.int64) * (labels.max() + 1) + labels, return_inverse=True,
                                     return_counts=True)
    hits = pair_counts[pair.reshape(-1)]
    cluster_sizes = np.bincount(clusters)[clusters]
    return 2.0 * hits / (cluster_sizes + label_sizes(labels))


def cluster_lists(clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (indptr, indices): each row's cluster, itself first, then the others in row order."""
    order = np.argsort(clusters, kind="stable")
    sizes = np.bincount(clusters)
    start = np.concatenate([[0], np.cumsum(sizes)])
    row_sizes = sizes[clusters]
    indptr = np.concatenate([[0], np.cumsum(row_sizes)])
    # Row r's list: the rows of its cluster (a slice of `order`), r moved to the front.
    offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], row_sizes)
    members = order[np.repeat(start[clusters], row_sizes) + offsets]
    rows = np.repeat(np.arange(len(clusters)), row_sizes)
    is_self = members == rows
    rank = np.where(is_self, -1, offsets)
    resort = np.lexsort((rank, rows))
    return indptr, members[resort]

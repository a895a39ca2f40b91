"""Concat (weighted mean of cosine similarities) and score (per-individual score averaging) combinations."""

import numpy as np
import scipy.sparse as sp

from compkit.postprocess.combined import (
    CandidateTable,
    individual_scores,
    member_weights,
    top_individuals,
    weighted_lists,
)
from compkit.postprocess.top5 import NO_LABEL
from compkit.retrieval.search import MemberSearch, combined_search, pair_similarities


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def members(n_rows: int = 60, seed: int = 0):
    """Return two dense members and a sparse (TF-IDF-like) one, every row of unit length."""
    rng = np.random.default_rng(seed)
    sparse = sp.random(n_rows, 40, density=0.15, random_state=seed, format="csr", dtype=np.float32)
    sparse = sp.csr_matrix(sparse + sp.eye(n_rows, 40, dtype=np.float32))  # no empty row
    sparse = sp.csr_matrix(sparse.multiply(1.0 / np.sqrt(sparse.multiply(sparse).sum(axis=1))))
    return [unit_rows(rng.normal(size=(n_rows, 8))), unit_rows(rng.normal(size=(n_rows, 5))), sparse]


def weighted_concatenation(matrices, weights: np.ndarray) -> np.ndarray:
    dense = [m.toarray() if sp.issparse(m) else m for m in matrices]
    return np.hstack([np.sqrt(w) * m for w, m in zip(weights, dense, strict=True)])


def test_concat_similarity_is_the_cosine_of_the_weighted_concatenation_of_dense_and_sparse_members():
    matrices = members()
    weights = member_weights(["a", "b", "c"], (), {"weight:a": 0.5, "weight:b": 0.2, "weight:c": 0.3})
    concatenated = weighted_concatenation(matrices, weights)
    np.testing.assert_allclose(np.linalg.norm(concatenated, axis=1), 1.0, atol=1e-5)  # a unit vector again
    cosine = concatenated @ concatenated.T
    n_rows = len(cosine)

    everything = combined_search([MemberSearch(m) for m in matrices], n_rows, exact=True, backend="auto")
    similarities, indices = weighted_lists(everything, weights, n_rows)
    order = np.argsort(-cosine, axis=1, kind="stable")
    np.testing.assert_allclose(similarities, np.take_along_axis(cosine, order, axis=1), atol=1e-5)
    assert (indices[:, :5] == order[:, :5]).mean() > 0.99  # equal up to float ties

    shallow = combined_search([MemberSearch(m) for m in matrices], 6, exact=True, backend="auto")
    similarities, indices = weighted_lists(shallow, weights, 6)
    assert (shallow.ranks < 0).any()  # candidates one member did not list: their similarity was computed
    np.testing.assert_allclose(similarities, cosine[np.arange(n_rows)[:, None], indices], atol=1e-5)


def test_a_member_weighted_zero_is_left_out_not_allowed_to_drop_candidates_it_does_not_know():
    table = CandidateTable(indices=np.array([[0, 1, 2, -1]]),
                           similarities=np.array([[[1.0, 0.8, 0.5, -np.inf]], [[1.0, -np.inf, 0.9, -np.inf]]],
                                                 dtype=np.float32),
                           ranks=np.array([[[0, 1, 2, -1]], [[0, -1, 1, -1]]], dtype=np.int32))

    similarities, indices = weighted_lists(table, np.array([1.0, 0.0]), 4)

    np.testing.assert_array_equal(indices, [[0, 1, 2, -1]])  # row 1, unknown to the 0-weight member, stays
    np.testing.assert_allclose(similarities[:, :3], [[1.0, 0.8, 0.5]])
    both, _ = weighted_lists(table, np.array([0.5, 0.5]), 4)
    assert both[0, 2] == -np.inf  # weighted in, the unknown similarity still counts as -inf


def test_concat_queries_search_a_reference_set_and_pair_similarities_match_dot_products():
    rng = np.random.default_rng(3)
    queries, reference = unit_rows(rng.normal(size=(20, 16))), unit_rows(rng.normal(size=(50, 16)))
    table = combined_search([MemberSearch(queries, reference), MemberSearch(queries[:, :8] * 2, reference[:, :8])],
                            7, exact=True, backend="auto")
    rows, columns = np.nonzero(table.indices >= 0)
    expected = np.einsum("ij,ij->i", queries[rows], reference[table.indices[rows, columns]])
    np.testing.assert_allclose(table.similarities[0, rows, columns], expected, atol=1e-6)
    pairs = pair_similarities(sp.csr_matrix(queries), sp.csr_matrix(reference), rows, table.indices[rows, columns])
    np.testing.assert_allclose(pairs, expected, atol=1e-6)


def slow_score_top5(queries, galleries, gallery_labels, depth: int, weights):
    """Reference: per query, each member's best similarity per retrieved individual (absent: its lowest)."""
    out_labels, out_scores = [], []
    for q in range(len(queries[0])):
        per_member, floors = [], []
        for query, gallery in zip(queries, galleries, strict=True):
            similarities = gallery @ query[q]
            nearest = np.argsort(-similarities, kind="stable")[:depth]
            best = {}
            for image in nearest:
                label = int(gallery_labels[image])
                best[label] = max(best.get(label, -np.inf), float(similarities[image]))
            per_member.append(best)
            floors.append(float(similarities[nearest].min()))
        individuals = set().union(*per_member)
        combined = {i: sum(w * m.get(i, f) for w, m, f in zip(weights, per_member, floors, strict=True))
                    for i in individuals}
        ranked = sorted(combined.items(), key=lambda item: (-item[1], item[0]))[:5]  # ties: smaller label first
        ranked += [(NO_LABEL, -np.inf)] * (5 - len(ranked))
        out_labels.append([label for label, _ in ranked])
        out_scores.append([score for _, score in ranked])
    return np.array(out_labels), np.array(out_scores)


def test_score_method_equals_a_slow_reference():
    rng = np.random.default_rng(7)
    gallery_labels = rng.integers(0, 15, size=80)
    queries = [unit_rows(rng.normal(size=(25, 6))), unit_rows(rng.normal(size=(25, 4)))]
    galleries = [unit_rows(rng.normal(size=(80, 6))), unit_rows(rng.normal(size=(80, 4)))]
    weights = np.array([0.7, 0.3])
    for depth in (2, 9):  # 2: fewer than five individuals, so the top 5 is padded
        table = combined_search([MemberSearch(q, g) for q, g in zip(queries, galleries, strict=True)], depth,
                                exact=False, backend="auto")
        labels, scores = top_individuals(*individual_scores(table, gallery_labels), weights)
        expected_labels, expected_scores = slow_score_top5(queries, galleries, gallery_labels, depth, weights)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_member_weights_are_normalised_and_fixed_weights_win_over_params():
    np.testing.assert_allclose(member_weights(["a", "b"], (), {"weight:a": 1.0, "weight:b": 3.0}), [0.25, 0.75])
    np.testing.assert_allclose(member_weights(["a", "b"], (2.0, 2.0), {"weight:a": 1.0, "weight:b": 0.0}), [0.5, 0.5])
    np.testing.assert_allclose(member_weights(["a", "b"], (), {"weight:a": 0.0, "weight:b": 0.0}), [0.5, 0.5])

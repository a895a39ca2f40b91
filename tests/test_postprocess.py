import numpy as np
import pytest

from compkit.postprocess.matches import blend_embeddings, match_f1, match_mask
from compkit.postprocess.top5 import NO_LABEL, first_occurrences, insert_new_individual, top_labels
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.objectives import PrefixMatchF1


def brute_neighbours(embeddings: np.ndarray, k: int):
    similarities = embeddings @ embeddings.T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarities, order, axis=1), order


def reference_f1(labels, similarities, indices, threshold, max_matches):
    scores = []
    for row in range(len(labels)):
        predicted = [j for j, s in zip(indices[row], similarities[row], strict=True) if s >= threshold or j == row]
        predicted = set(predicted[:max_matches]) | {row}
        truth = set(np.flatnonzero(labels == labels[row]))
        scores.append(2 * len(truth & predicted) / (len(truth) + len(predicted)))
    return np.array(scores)


def test_match_f1_equals_set_based_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, size=300)
    centres = rng.normal(size=(40, 16))
    embeddings = centres[labels] + rng.normal(scale=0.8, size=(300, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities, indices = brute_neighbours(embeddings, 30)
    for threshold in (0.3, 0.6, 0.9):
        keep = match_mask(similarities, indices, threshold, max_matches=20)
        got = match_f1(labels, indices, keep)
        np.testing.assert_allclose(got, reference_f1(labels, similarities, indices, threshold, 20), atol=1e-12)


def test_match_mask_always_keeps_self_and_caps():
    similarities = np.array([[1.0, 0.9, 0.8, 0.1]])
    indices = np.array([[0, 3, 2, 1]])
    assert match_mask(similarities, indices, 0.85).tolist() == [[True, True, False, False]]
    assert match_mask(similarities, indices, 0.0, max_matches=2).tolist() == [[True, True, False, False]]


def test_top_labels_keeps_best_score_of_each_distinct_label():
    similarities = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    neighbour_labels = np.array([[4, 4, 2, 4, 7]])
    assert first_occurrences(neighbour_labels).tolist() == [[True, False, True, False, True]]
    labels, scores = top_labels(similarities, neighbour_labels, top=5)
    assert labels.tolist() == [[4, 2, 7, NO_LABEL, NO_LABEL]]
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.7, 0.5])


def test_insert_new_individual_at_threshold():
    labels = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    scores = np.array([[0.9, 0.8, 0.4, 0.3, 0.2], [0.1] * 5, [0.99] * 5], dtype=np.float32)
    out = insert_new_individual(labels, scores, 0.5, new_individual=-7)
    assert out.tolist() == [[1, 2, -7, 3, 4], [-7, 1, 2, 3, 4], [1, 2, 3, 4, 5]]


def test_min2_keeps_the_nearest_other_posting_above_the_lower_threshold():
    similarities = np.array([[1.0, 0.55, 0.5], [1.0, 0.3, 0.2], [0.9, 1.0, 0.1]])
    indices = np.array([[0, 1, 2], [1, 0, 2], [1, 2, 0]])
    keep = match_mask(similarities, indices, 0.8, min2_threshold=0.4)
    assert keep.tolist() == [[True, True, False], [True, False, False], [True, True, False]]


def test_prefix_f1_equals_masking_then_the_metric_with_min2_ties_and_padding():
    from compkit.metrics import row_f1
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 30, size=200)
    centres = rng.normal(size=(30, 8))
    embeddings = centres[labels] + rng.normal(scale=0.9, size=(200, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities, indices = brute_neighbours(embeddings, 20)
    similarities = np.round(similarities, 2).astype(np.float32)  # ties
    similarities[:7, -5:], indices[:7, -5:] = -np.inf, -1  # padded rows, as short neighbour lists are
    neighbors = OOFNeighbors(np.arange(200).astype(str), labels, np.zeros(200, dtype=np.int64),
                             similarities, indices, "fold")
    prefix = PrefixMatchF1(neighbors, max_matches=20)
    for threshold, min2 in [(0.3, None), (0.6, 0.2), (0.85, 0.5), (0.999, None), (-1.0, 0.0)]:
        keep = match_mask(similarities, indices, threshold, max_matches=20, min2_threshold=min2)
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        expected = row_f1(labels, indptr, indices[keep], assume_unique=True)
        np.testing.assert_allclose(prefix.row_scores(threshold, min2), expected, atol=1e-12)
        assert prefix({"threshold": threshold, "min2_threshold": min2}) == pytest.approx(expected.mean(), abs=1e-12)


def test_mean_f1_from_sums_equals_the_row_scores_for_any_thresholds_padding_anywhere():
    from compkit.metrics import row_f1
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 40, size=300)
    embeddings = rng.normal(size=(40, 8))[labels] + rng.normal(scale=1.0, size=(300, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities, indices = brute_neighbours(embeddings, 25)
    similarities = np.round(similarities, 2).astype(np.float32)
    indices[::5, 3] = -1  # a dropped repeat in the middle of a row, its similarity left in place
    neighbors = OOFNeighbors(np.arange(300).astype(str), labels, np.zeros(300, dtype=np.int64),
                             similarities, indices, "fold")
    prefix = PrefixMatchF1(neighbors, max_matches=50)
    for threshold, min2 in zip(rng.uniform(-0.2, 1.05, 200), [None, *rng.uniform(-0.2, 1.05, 199)], strict=True):
        keep = match_mask(similarities, indices, threshold, max_matches=50, min2_threshold=min2)
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        expected = row_f1(labels, indptr, indices[keep], assume_unique=True).mean()
        assert prefix.row_scores(threshold, min2).mean() == pytest.approx(expected, abs=1e-12)
        assert prefix({"threshold": threshold, "min2_threshold": min2}) == pytest.approx(expected, abs=1e-12)


def test_blending_is_the_weighted_sum_of_thresholded_neighbours():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(40, 6)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities, indices = brute_neighbours(embeddings, 10)
    blended = blend_embeddings(embeddings, similarities, indices, 0.3)
    for row in (0, 17, 39):
        kept = (similarities[row] >= 0.3) | (indices[row] == row)
        expected = (similarities[row, kept, None] * embeddings[indices[row, kept]]).sum(axis=0)
        np.testing.assert_allclose(blended[row], expected / np.linalg.norm(expected), atol=1e-5)
    import scipy.sparse as sp

    sparse = blend_embeddings(sp.csr_matrix(embeddings), similarities, indices, 0.3)
    np.testing.assert_allclose(sparse.toarray(), blended, atol=1e-5)

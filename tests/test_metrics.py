import numpy as np
import pytest

from compkit import metrics
from compkit.metrics import (
    PAD_CODE,
    PAD_ID,
    average_precision_at_5,
    dedupe_rows,
    encode_ids,
    map_at_5,
    mean_row_f1,
    row_f1,
)


def reference_row_f1(labels, indptr, indices):
    """The set-based definition, one Python row at a time."""
    scores = []
    for row, label in enumerate(labels):
        truth = {j for j, other in enumerate(labels) if other == label}
        predicted = set(indices[indptr[row] : indptr[row + 1]].tolist())
        scores.append(2 * len(truth & predicted) / (len(truth) + len(predicted)))
    return np.array(scores)


def reference_average_precision(truth, predictions):
    scores = []
    for label, row in zip(truth, predictions, strict=True):
        ranked = list(row)[:5]
        scores.append(1 / (ranked.index(label) + 1) if label in ranked else 0.0)
    return np.array(scores)


def random_match_rows(rng, n_rows, n_labels, max_predictions):
    """Random CSR rows: empty rows, rows without themselves and repeated predictions all occur."""
    labels = rng.integers(0, n_labels, n_rows)
    lengths = rng.integers(0, max_predictions + 1, n_rows)
    lengths[rng.random(n_rows) < 0.2] = 0
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    same_label_bias = rng.random(indptr[-1]) < 0.5
    row_of = np.repeat(np.arange(n_rows), lengths)
    indices = rng.integers(0, n_rows, indptr[-1])
    # Bias half the predictions towards a row of the same label so that scores are not all near zero.
    by_label = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    for position in np.flatnonzero(same_label_bias):
        indices[position] = rng.choice(by_label[labels[row_of[position]]])
    return labels, indptr, indices


@pytest.mark.parametrize("seed", range(6))
def test_row_f1_equals_set_reference_on_random_rows_with_duplicates_and_empty_rows(seed):
    rng = np.random.default_rng(seed)
    labels, indptr, indices = random_match_rows(rng, n_rows=200, n_labels=40, max_predictions=12)
    assert (np.diff(indptr) == 0).any()
    np.testing.assert_allclose(row_f1(labels, indptr, indices), reference_row_f1(labels, indptr, indices), atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_row_f1_assume_unique_equals_reference_when_rows_are_unique(seed):
    rng = np.random.default_rng(seed)
    labels, indptr, indices = random_match_rows(rng, n_rows=150, n_labels=30, max_predictions=10)
    indptr, indices = dedupe_rows(indptr, indices, n_columns=len(labels))
    fast = row_f1(labels, indptr, indices, assume_unique=True)
    np.testing.assert_allclose(fast, reference_row_f1(labels, indptr, indices), atol=1e-12)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_row_f1_does_not_depend_on_how_rows_are_split_into_blocks(monkeypatch, block):
    labels, indptr, indices = random_match_rows(np.random.default_rng(9), n_rows=120, n_labels=25, max_predictions=9)
    expected = reference_row_f1(labels, indptr, indices)
    monkeypatch.setattr(metrics, "BLOCK_PREDICTIONS", block)
    np.testing.assert_allclose(row_f1(labels, indptr, indices), expected, atol=1e-12)
    unique_indptr, unique_indices = dedupe_rows(indptr, indices, n_columns=len(labels))
    np.testing.assert_allclose(row_f1(labels, unique_indptr, unique_indices, assume_unique=True), expected, atol=1e-12)


def test_row_f1_counts_a_repeated_prediction_once():
    labels = np.array([7, 7, 8])
    indptr = np.array([0, 4, 5, 5])
    indices = np.array([1, 1, 0, 1, 1])
    # Row 0 predicts {0, 1} = its true set; row 1 predicts {1}: 2*1/(2+1); row 2 predicts nothing: 2*0/(1+0).
    np.testing.assert_allclose(row_f1(labels, indptr, indices), [1.0, 2 / 3, 0.0], atol=1e-12)


def test_row_f1_without_self_in_the_prediction_misses_it():
    labels = np.array([1, 1])
    indptr = np.array([0, 1, 2])
    indices = np.array([1, 1])
    np.testing.assert_allclose(row_f1(labels, indptr, indices), [2 / 3, 2 / 3], atol=1e-12)


@pytest.mark.parametrize(
    "labels", [np.array(["x", "x", "y", "z"]), np.array([249114794, 249114794, 5, 2**40])], ids=["str", "large-int"]
)
def test_row_f1_accepts_string_and_large_integer_labels(labels):
    indptr = np.array([0, 2, 3, 4, 6])
    indices = np.array([0, 1, 0, 2, 3, 0])
    expected = reference_row_f1(labels.tolist(), indptr, indices)
    np.testing.assert_allclose(row_f1(labels, indptr, indices), expected, atol=1e-12)


def test_row_f1_with_no_predictions_at_all_is_zero():
    labels = np.array([0, 0, 1])
    assert mean_row_f1(labels, np.zeros(4, dtype=np.int64), np.array([])) == 0.0


@pytest.mark.parametrize(
    ("indptr", "indices", "message"),
    [
        (np.array([0, 1]), np.array([0]), "indptr must have shape"),
        (np.array([0, 2, 1]), np.array([0]), "never decrease"),
        (np.array([0, 1, 2]), np.array([0, 5]), r"indices must be row numbers in \[0, 2\)"),
        (np.array([0, 1, 2]), np.array([0.0, 1.0]), "must be integers"),
    ],
)
def test_row_f1_rejects_malformed_rows(indptr, indices, message):
    with pytest.raises(ValueError, match=message):
        row_f1(np.array([0, 1]), indptr, indices)


def test_dedupe_rows_sorts_each_row_and_lists_each_index_once():
    indptr, indices = dedupe_rows(np.array([0, 3, 3, 6]), np.array([2, 0, 2, 1, 1, 1]), n_columns=3)
    assert indptr.tolist() == [0, 2, 2, 3]
    assert indices.tolist() == [0, 2, 1]


@pytest.mark.parametrize("seed", range(4))
def test_map_at_5_equals_per_row_reference_on_random_codes_with_padding(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 8, 300)
    predictions = rng.integers(0, 8, (300, 5))
    predictions[rng.random((300, 5)) < 0.2] = PAD_CODE
    expected = reference_average_precision(truth, predictions)
    np.testing.assert_allclose(average_precision_at_5(truth, predictions), expected, atol=1e-12)
    assert map_at_5(truth, predictions) == pytest.approx(expected.mean(), abs=1e-12)


def test_map_at_5_on_string_ids_scores_first_occurrence_and_ignores_padding():
    truth = np.array(["a", "b", "new_individual", "d"], dtype=object)
    predictions = np.array(
        [
            ["a", "x", "y", "z", "w"],
            ["x", "b", "b", PAD_ID, PAD_ID],
            ["x", "y", "z", "w", "new_individual"],
            ["x", PAD_ID, PAD_ID, PAD_ID, PAD_ID],
        ],
        dtype=object,
    )
    np.testing.assert_allclose(average_precision_at_5(truth, predictions), [1.0, 0.5, 0.2, 0.0])
    assert map_at_5(truth, predictions) == pytest.approx((1 + 0.5 + 0.2) / 4)


def test_map_at_5_accepts_fewer_than_five_columns():
    assert map_at_5(np.array([3, 4]), np.array([[1, 3], [4, 1]])) == pytest.approx((0.5 + 1.0) / 2)


def test_map_at_5_rejects_more_than_five_columns_and_misaligned_rows():
    with pytest.raises(ValueError, match="at most 5 columns, got 6"):
        map_at_5(np.array([1]), np.zeros((1, 6), dtype=int))
    with pytest.raises(ValueError, match="must have shape"):
        map_at_5(np.array([1, 2]), np.zeros((3, 5), dtype=int))


def test_encode_ids_keeps_scores_and_maps_padding_to_pad_code():
    truth = np.array(["a", "b", "c"], dtype=object)
    predictions = np.array([["b", "a", PAD_ID], ["b", PAD_ID, PAD_ID], ["x", "y", "z"]], dtype=object)
    truth_codes, prediction_codes = encode_ids(truth, predictions)
    assert prediction_codes.dtype.kind == "i" and (prediction_codes[predictions == PAD_ID] == PAD_CODE).all()
    assert map_at_5(truth_codes, prediction_codes) == map_at_5(truth, predictions) == pytest.approx(0.5)

"""Union models: merged candidate lists, the union of the members' match lists, and its joint tuning."""

import numpy as np
import optuna
import pytest

from compkit.config import parse_config
from compkit.errors import ConfigError
from compkit.metrics import row_f1
from compkit.postprocess.combined import UnionMatches, UnionMatchF1, merge_lists
from compkit.postprocess.matches import match_mask
from compkit.retrieval.search import MemberSearch, combined_search
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.combined import suggest_combined
from compkit.tuning.objectives import match_evaluator
from compkit.tuning.problem import suggest_params

CONFIG = """
slug = "union-test"
task = "match"
source = "local"

[columns]
id = "posting_id"
label = "label_group"
text = "title"
phash = "image_phash"

[[models]]
name = "words"
kind = "tfidf"

[[models]]
name = "hash"
kind = "phash"

[[models]]
name = "both"
kind = "union"
members = ["words", "hash"]

[postprocess]
min2 = {min2}

[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
"""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def complementary_embeddings(n_groups: int = 80, size: int = 3, seed: int = 0):
    """Return labels and two embeddings: the first separates the first half of the groups, the second the rest."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups), size)
    embeddings = []
    for half in (0, 1):
        vectors = rng.normal(size=(len(labels), 32))
        clustered = (labels < n_groups // 2) == (half == 0)
        centres = rng.normal(size=(n_groups, 32))
        vectors[clustered] = 3.0 * centres[labels[clustered]] + 0.5 * rng.normal(size=(clustered.sum(), 32))
        embeddings.append(unit_rows(vectors))
    return labels, embeddings


def self_search(embeddings: list[np.ndarray], depth: int):
    return combined_search([MemberSearch(matrix) for matrix in embeddings], depth, exact=False, backend="auto")


def test_merged_candidates_are_ordered_by_best_rank_and_keep_each_members_rank():
    first = np.array([[0, 4, 2, -1], [1, 3, 0, 2]])
    second = np.array([[0, 2, 5, 3], [1, 0, -1, -1]])
    similarities = [np.linspace(1, 0.4, 4, dtype=np.float32)[None].repeat(2, 0),
                    np.linspace(0.9, 0.3, 4, dtype=np.float32)[None].repeat(2, 0)]
    table = merge_lists([first, second], similarities)
    assert table.indices.tolist() == [[0, 4, 2, 5, 3], [1, 3, 0, 2, -1]]
    assert table.ranks[0].tolist() == [[0, 1, 2, -1, -1], [0, 1, 2, 3, -1]]
    assert table.ranks[1].tolist() == [[0, -1, 1, 2, 3], [0, -1, 1, -1, -1]]
    np.testing.assert_allclose(table.similarities[1, 0, [0, 2, 3, 4]], similarities[1][0])
    assert np.isneginf(table.similarities[1, 0, 1])


def test_union_keeps_exactly_the_union_of_the_members_match_lists():
    labels, embeddings = complementary_embeddings()
    table = self_search(embeddings, depth=20)
    members = [OOFNeighbors(np.arange(len(labels)), labels, np.zeros(len(labels)), *_brute(matrix, 20), "all")
               for matrix in embeddings]
    union = UnionMatches(table, ["a", "b"], max_matches=50)
    for thresholds in ((0.5, 0.9), (0.8, 0.3), (0.99, 0.99)):
        keep = union.keep({"threshold:a": thresholds[0], "threshold:b": thresholds[1]})
        masks = [match_mask(m.similarities, m.indices, t, max_matches=50)
                 for m, t in zip(members, thresholds, strict=True)]
        for row in range(len(labels)):
            expected = set().union(*(m.indices[row][mask[row]] for m, mask in zip(members, masks, strict=True)))
            assert set(table.indices[row][keep[row]]) == expected


def test_union_f1_equals_row_f1_of_the_kept_lists():
    labels, embeddings = complementary_embeddings(seed=1)
    table = self_search(embeddings, depth=10)
    evaluate = UnionMatchF1(table, ["a", "b"], labels, max_matches=12)
    for params in ({"threshold:a": 0.4, "threshold:b": 0.6},
                   {"threshold:a": 0.9, "threshold:b": 0.95, "min2_threshold:a": 0.2, "min2_threshold:b": 0.5}):
        keep = UnionMatches(table, ["a", "b"], max_matches=12).keep(params)
        assert keep.sum(axis=1).max() <= 12
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        np.testing.assert_allclose(evaluate.row_scores(params), row_f1(labels, indptr, table.indices[keep]))


def test_union_min2_adds_each_members_nearest_other_only_to_postings_left_alone():
    indices = [np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]]), np.array([[0, 2, 1], [1, 2, 0], [2, 1, 0]])]
    similarities = [np.array([[1.0, 0.9, 0.1], [1.0, 0.9, 0.2], [1.0, 0.3, 0.2]], dtype=np.float32),
                    np.array([[1.0, 0.6, 0.1], [1.0, 0.5, 0.4], [1.0, 0.45, 0.2]], dtype=np.float32)]
    table = merge_lists(indices, similarities)
    params = {"threshold:a": 0.8, "threshold:b": 0.8, "min2_threshold:a": 0.25, "min2_threshold:b": 0.4}
    keep = UnionMatches(table, ["a", "b"], max_matches=50).keep(params)
    kept = [sorted(table.indices[row][keep[row]].tolist()) for row in range(3)]
    assert kept == [[0, 1], [0, 1], [0, 1, 2]]  # row 2 alone: a's nearest (0, 0.3) and b's nearest (1, 0.45)


def test_jointly_tuned_union_beats_each_member_alone_on_complementary_embeddings():
    config = parse_config(CONFIG.format(min2="true"), source="union-test.toml")
    labels, embeddings = complementary_embeddings(seed=2)
    depth = config.postprocess.max_matches
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def best(evaluate, suggest) -> float:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        study.optimize(lambda trial: evaluate(suggest(trial)), n_trials=60)
        return study.best_value

    alone = []
    for matrix in embeddings:
        neighbors = OOFNeighbors(np.arange(len(labels)), labels, np.zeros(len(labels)), *_brute(matrix, depth), "all")
        alone.append(best(match_evaluator(neighbors, max_matches=depth), lambda t: suggest_params(t, config)))
    union = UnionMatchF1(self_search(embeddings, depth), ["words", "hash"], labels, max_matches=depth)
    together = best(union, lambda trial: suggest_combined(trial, config, config.model("both")))
    assert max(alone) < 0.85 and together > max(alone) + 0.1


def test_config_refuses_a_union_of_unknown_members_or_for_identify():
    with pytest.raises(ConfigError, match="member 'nope' is not an embedding model"):
        parse_config(CONFIG.format(min2="false").replace('["words", "hash"]', '["words", "nope"]'), source="c.toml")
    with pytest.raises(ConfigError, match="needs at least two distinct members"):
        parse_config(CONFIG.format(min2="false").replace('["words", "hash"]', '["words", "words"]'), source="c.toml")


def _brute(matrix: np.ndarray, depth: int):
    similarities = matrix @ matrix.T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(similarities, order, axis=1), order

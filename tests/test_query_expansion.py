"""alpha-QE and alpha-DBA before the search (compkit.retrieval.expansion)."""

import numpy as np
import pytest
import scipy.sparse as sp

from compkit.config import PostprocessSpace, load_config
from compkit.errors import ConfigError
from compkit.predict import predict_model
from compkit.retrieval.expansion import expanded_rows, search_expanded
from compkit.retrieval.single import single_inputs
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace, read_manifest


def unit_rows(seed: int, n_rows: int = 80, dim: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n_rows // 4, dim))[np.arange(n_rows) // 4] + rng.normal(scale=0.8, size=(n_rows, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_a_row_is_expanded_by_its_top_k_others_weighted_by_similarity_to_the_power_alpha():
    rows = unit_rows(0, n_rows=12)
    similarities = rows @ rows.T
    indices = np.argsort(-similarities, axis=1, kind="stable")[:, :5]
    listed = np.take_along_axis(similarities, indices, axis=1)
    got = expanded_rows(rows, listed, indices, k=2, alpha=3.0)
    for row in range(len(rows)):
        others = [j for j in indices[row] if j != row][:2]
        expected = rows[row] + sum(max(similarities[row, j], 0) ** 3 * rows[j] for j in others)
        np.testing.assert_allclose(got[row], expected / np.linalg.norm(expected), atol=1e-5)


@pytest.mark.parametrize("space", [PostprocessSpace(qe_k=2), PostprocessSpace(dba_k=3, dba_alpha=1.0),
                                   PostprocessSpace(qe_k=2, dba_k=2, blend_stages=1)])
def test_sparse_rows_are_expanded_and_searched_like_the_same_dense_rows(space):
    dense = unit_rows(1)
    dense_lists = search_expanded(dense, 10, space=space, backend="torch")
    sparse_lists = search_expanded(sp.csr_matrix(dense), 10, space=space, backend="torch")
    np.testing.assert_allclose(sparse_lists[0], dense_lists[0], atol=1e-5)
    assert (sparse_lists[1] == dense_lists[1]).mean() > 0.98  # ties may swap


def test_expansion_changes_the_lists_and_without_it_the_search_is_the_plain_one():
    rows = unit_rows(2)
    plain = search_expanded(rows, 10, space=PostprocessSpace(), backend="torch")
    expanded = search_expanded(rows, 10, space=PostprocessSpace(qe_k=3), backend="torch")
    exact = np.sort(rows @ rows.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(plain[0], exact, atol=1e-5)
    assert plain[1].shape == expanded[1].shape == (len(rows), 10)
    assert not np.allclose(plain[0], expanded[0])


def test_qe_and_dba_enter_the_oof_neighbours_fingerprint_only_when_on(tuned_workspace):
    folder, base = tuned_workspace
    plain = load_config(str(folder))
    workspace = Workspace.for_competition(plain.slug, base)
    model = plain.model("tfidf-word")
    inputs = single_inputs(plain, model, workspace, "all")
    assert "qe" not in inputs and "dba" not in inputs  # caches made before the option stay fresh
    expanded = load_config(str(folder), overrides=["postprocess.qe_k=2", "postprocess.dba_k=1"])
    assert single_inputs(expanded, expanded.model("tfidf-word"), workspace, "all") == {
        **inputs, "qe": [2, 3.0], "dba": [1, 3.0]}
    tune_model(expanded, workspace, model, trials=5)
    assert read_manifest(workspace.neighbors_cache("tfidf-word", "all"))["inputs"]["qe"] == [2, 3.0]
    predicted = predict_model(expanded, workspace, expanded.model("tfidf-word"))
    assert predicted.test_rows > 0


def test_a_negative_expansion_depth_is_refused(tuned_workspace):
    folder, _ = tuned_workspace
    with pytest.raises(ConfigError, match="qe_k"):
        load_config(str(folder), overrides=["postprocess.qe_k=-1"])

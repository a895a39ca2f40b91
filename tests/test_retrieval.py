"""OOF neighbour lists: one search for dense and sparse rows, the kNN backend a choice, the folds artifact's count."""

import ast
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from test_training import tiny_match

from compkit.config import load_config, with_knn_backend
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.data.tables import load_train
from compkit.embeddings.runner import run_models
from compkit.neighbors import l2_normalize
from compkit.retrieval.search import search
from compkit.retrieval.single import oof_neighbors, single_inputs
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace, is_fresh

PACKAGE = Path(__file__).resolve().parents[1] / "compkit"


def embedded(tmp_path, model: str, **kwargs):
    """Return a tiny match config and its workspace with `model` embedded on both folds."""
    config = load_config(str(tiny_match(tmp_path, **kwargs)))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    run_models(config, workspace, folds=[0, 1], models=[model], device="cpu")
    return config, workspace


def test_search_gives_the_same_neighbours_with_torch_and_faiss():
    rng = np.random.default_rng(0)
    query, reference = l2_normalize(rng.normal(size=(30, 16))), l2_normalize(rng.normal(size=(50, 16)))
    by_torch = search(query, reference, 7, backend="torch")
    by_faiss = search(query, reference, 7, backend="faiss")
    np.testing.assert_array_equal(by_torch[1], by_faiss[1])
    np.testing.assert_allclose(by_torch[0], by_faiss[0], atol=1e-6)


def test_search_sends_sparse_rows_to_the_sparse_search_and_caps_the_depth_at_the_reference_rows():
    rng = np.random.default_rng(1)
    dense = l2_normalize(rng.random(size=(12, 9)) * (rng.random(size=(12, 9)) < 0.4))
    similarities, indices = search(sp.csr_matrix(dense), sp.csr_matrix(dense[:5]), 8, backend="faiss")
    assert indices.shape == (12, 5)
    expected = np.sort(dense @ dense[:5].T, axis=1)[:, ::-1]
    np.testing.assert_allclose(similarities, expected, atol=1e-6)


def test_oof_neighbours_and_tuned_scores_are_equal_with_torch_and_faiss(tmp_path):
    config, workspace = embedded(tmp_path, "cnn", epochs=1)
    by_torch, by_faiss = with_knn_backend(config, "torch"), with_knn_backend(config, "faiss")
    model = config.model("cnn")
    assert single_inputs(by_torch, model, workspace, "all") == single_inputs(by_faiss, model, workspace, "all")
    torch_lists = oof_neighbors(by_torch, model, workspace)
    torch_tuned = tune_model(by_torch, workspace, model, trials=4, study_name="torch")
    workspace.neighbors_cache(model.name, "all").unlink()
    faiss_lists = oof_neighbors(by_faiss, model, workspace)
    faiss_tuned = tune_model(by_faiss, workspace, model, trials=4, study_name="faiss")
    np.testing.assert_array_equal(torch_lists.ids, faiss_lists.ids)
    # both are exact searches: equal up to float rounding, which may swap two neighbours of (almost) equal similarity
    np.testing.assert_allclose(torch_lists.similarities, faiss_lists.similarities, atol=1e-6)
    assert faiss_tuned.params == torch_tuned.params
    assert faiss_tuned.oof_score == pytest.approx(torch_tuned.oof_score, abs=1e-9)
    assert faiss_tuned.default_score == pytest.approx(torch_tuned.default_score, abs=1e-9)
    assert is_fresh(workspace.neighbors_cache(model.name, "all"), single_inputs(by_torch, model, workspace, "all"))


def test_oof_neighbours_use_every_fold_of_the_folds_artifact_not_the_configs_count(tmp_path):
    config, workspace = embedded(tmp_path, "phash")
    assert config.folds.n_splits == 2
    build_folds(config, workspace, n_splits=3)
    run_models(config, workspace, folds=[0, 1, 2], models=["phash"])
    neighbors = oof_neighbors(config, config.model("phash"), workspace)
    assert sorted(set(neighbors.folds.tolist())) == [0, 1, 2]
    assert len(neighbors.ids) == len(load_train(config, workspace))  # no training row left without its OOF list
    assert len(single_inputs(config, config.model("phash"), workspace, "all")["embeddings"]) == 3


def _function_level_compkit_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compkit"):
                    found.append(f"{path.name}:{node.lineno} {node.module}")
                if isinstance(node, ast.Import) and any(a.name.startswith("compkit") for a in node.names):
                    found.append(f"{path.name}:{node.lineno}")
    return found


@pytest.mark.parametrize("part", ["retrieval", "postprocess", "tuning", "predict.py"])
def test_retrieval_postprocess_tuning_and_predict_import_compkit_at_module_level_only(part):
    paths = [PACKAGE / part] if part.endswith(".py") else sorted((PACKAGE / part).glob("*.py"))
    assert [hit for path in paths for hit in _function_level_compkit_imports(path)] == []

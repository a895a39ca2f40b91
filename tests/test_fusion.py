"""identify: the margin head's score of each retrieved individual fused with the kNN score, r tuned on OOF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_cli_pipeline import tiny_competition

from compkit.config import load_config
from compkit.retrieval.head_scores import KNN_WEIGHT, centre_rows, fused_lists, head_similarities


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_head_similarity_is_the_cosine_to_the_nearest_subcentre_of_each_neighbours_individual():
    rng = np.random.default_rng(0)
    queries, centres = unit(rng.normal(size=(300, 8))), unit(rng.normal(size=(6, 3, 8)))
    codes = rng.integers(-1, 7, size=(300, 5))  # code 6 has no centre, -1 is padding
    row_of_code = centre_rows(np.array(["a", "b", "c", "d", "e", "f"]), np.array(["b", "a", "c", "d", "e", "f", "g"]))
    assert row_of_code.tolist() == [1, 0, 2, 3, 4, 5, -1]
    scores = head_similarities(queries, codes, centres, row_of_code)
    for query, neighbour in [(0, 0), (17, 3), (299, 4), (140, 2)]:
        code = codes[query, neighbour]
        if code < 0 or code == 6:
            assert np.isnan(scores[query, neighbour])
        else:
            expected = (centres[row_of_code[code]] @ queries[query]).max()
            assert scores[query, neighbour] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(scores[codes == 6]).all() and np.isnan(scores[codes == -1]).all()
    assert not np.isnan(scores[(codes >= 0) & (codes < 6)]).any()


def test_fused_lists_rerank_by_the_weighted_score_and_keep_padding_last():
    similarities = np.array([[0.9, 0.8, 0.7, -np.inf]], dtype=np.float32)
    indices = np.array([[10, 11, 12, -1]])
    head = np.array([[0.1, 0.3, 0.9, np.nan]], dtype=np.float32)
    same, same_indices = fused_lists(similarities, indices, head, 1.0)
    assert same_indices.tolist() == indices.tolist() and np.array_equal(same, similarities)
    fused, order = fused_lists(similarities, indices, head, 0.5)
    assert order.tolist() == [[12, 11, 10, -1]]
    assert fused[0, :3] == pytest.approx([0.8, 0.55, 0.5]) and fused[0, 3] == -np.inf
    no_head, _ = fused_lists(similarities, indices, np.full_like(head, np.nan), 0.2)
    assert np.array_equal(no_head, similarities)  # without head scores the kNN score stands


ARCFACE_ONLY = '''
[[models]]
name = "arc"
kind = "image"
backbone = "test_resnet"
image_size = 32
embedding_dim = 32
head = { type = "subcenter_arcface", subcenters = 2, scale = 16.0, margin = 0.2 }
train = { epochs = 2, batch_size = 32, lr = 3e-3, score_from_epoch = 1 }
'''


def test_an_identify_margin_model_tunes_the_fusion_weight_and_predicts_with_it(tmp_path):
    from compkit.pipeline import run_pipeline
    from compkit.retrieval.single import oof_neighbors
    from compkit.tuning.objectives import evaluator
    from compkit.tuning.study import read_tuned
    from compkit.workspace import Workspace

    folder = tiny_competition(tmp_path, "demo-identify")
    toml = folder / "competition.toml"
    text = re.sub(r"\[\[models\]\].*?(?=\n\[postprocess\])", "", toml.read_text(), flags=re.S)
    toml.write_text(text.replace("[postprocess]", ARCFACE_ONLY + "\n[postprocess]"))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")

    report = run_pipeline(config, workspace, trials=12, device="cpu")

    model = config.model("arc")
    for fold in workspace.fold_range():
        labels = np.load(workspace.embedding_file("arc", fold, "centre_labels").with_suffix(".npy"))
        centres = np.load(workspace.embedding_file("arc", fold, "centres").with_suffix(".npy"))
        assert centres.shape[:2] == (len(labels), 2) and np.allclose(np.linalg.norm(centres, axis=2), 1, atol=1e-5)
    neighbors = oof_neighbors(config, model, workspace)
    assert neighbors.head_similarities is not None
    assert neighbors.head_similarities.shape == neighbors.similarities.shape
    tuned = read_tuned(config, model, workspace)
    assert KNN_WEIGHT in tuned.params and 0.0 <= tuned.params[KNN_WEIGHT] <= 1.0
    score_at = evaluator(config, neighbors)
    assert score_at(tuned.params) == pytest.approx(report.oof_scores["arc"], abs=1e-6)
    assert report.test_scores["arc"] is not None

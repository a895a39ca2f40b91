"""Zero-shot models (`epochs = 0`): the backbone's pooled features as the embedding, no training stage."""

from __future__ import annotations

import numpy as np
import torch
from test_training import prepared

from compkit.config import is_trained, is_zero_shot
from compkit.data.tables import load_train
from compkit.embeddings.cache import load_fold_embeddings
from compkit.models.factory import build_embedder
from compkit.pipeline import run_pipeline
from compkit.stages import pipeline_stages
from compkit.training.evaluate import embed_dataset


def test_epochs_zero_is_a_zero_shot_model_without_a_training_stage(tmp_path):
    config, workspace = prepared(tmp_path, epochs=0)
    cnn = config.model("cnn")
    assert is_zero_shot(cnn) and not is_trained(cnn)
    names = [stage.name for stage in pipeline_stages(config, workspace)]
    assert "train cnn" not in names and "embed cnn" in names


def test_zero_shot_embeddings_are_the_backbones_pooled_features(tmp_path):
    config, workspace = prepared(tmp_path, epochs=0)
    cnn = config.model("cnn")
    report = run_pipeline(config, workspace, trials=3)
    assert "predict cnn" in report.made and not (workspace.model_dir("cnn", 0)).exists()
    ids, oof, test = load_fold_embeddings(config, cnn, 0, workspace)
    torch.manual_seed(cnn.train.seed)
    build = build_embedder(cnn, config.columns)
    width = build.embedder.backbone.num_features
    assert oof.shape[1] == width and test.shape[1] == width  # no neck: the backbone's width, not embedding_dim
    frame = load_train(config, workspace)
    rows = frame.index[frame[config.columns.id].isin(ids[:5])].to_numpy()
    inputs = build.inputs(frame, workspace.data_dir / config.data.train_images)
    expected = embed_dataset(build.embedder, inputs.dataset(rows, np.zeros(len(rows), dtype=np.int64), train=False),
                             device=torch.device("cpu"), batch_size=8)
    position = {row_id: i for i, row_id in enumerate(ids)}
    found = np.asarray(oof)[[position[row_id] for row_id in frame[config.columns.id].to_numpy()[rows]]]
    np.testing.assert_allclose(found, expected, atol=1e-5)
    again = run_pipeline(config, workspace, trials=3)
    assert again.made == []

"""identify: the fold models' test and gallery embeddings are joined, so a dot product is their mean cosine."""

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_identify, tiny_image_models
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.embeddings.cache import (
    combined_gallery_embeddings,
    combined_test_embeddings,
    load_fold_embeddings,
    load_gallery,
)
from compkit.workspace import Workspace

runner = CliRunner()


def _unit(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore:.*fewer than n_splits")
def test_identify_test_similarities_are_the_mean_of_each_fold_models_cosines(tmp_path: Path):
    zero_shot = '[[models]]\nname = "zs"\nkind = "image"\nbackbone = "test_resnet"\nimage_size = 32\n' \
                'train = { epochs = 0 }\n\n'
    folder = tiny_identify(tmp_path, "tiny-join", tiny_image_models(("cnn", "test_resnet")) + zero_shot)
    work = tmp_path / "work"
    result = runner.invoke(app, ["run", "-c", str(folder), "--workspace", str(work), "--trials", "2"])
    assert result.exit_code == 0, result.output
    config, workspace = load_config(str(folder)), Workspace.for_competition("tiny-join", work)
    cnn, zs = config.model("cnn"), config.model("zs")
    folds = workspace.fold_range()
    assert len(folds) == 2

    test = combined_test_embeddings(config, cnn, workspace, folds)
    gallery = combined_gallery_embeddings(config, cnn, workspace, folds)

    per_fold = [_unit(load_fold_embeddings(config, cnn, fold, workspace)[2])
                @ _unit(load_gallery(config, cnn, fold, workspace)).T for fold in folds]
    assert test @ gallery.T == pytest.approx(np.mean(per_fold, axis=0), abs=1e-5)
    assert np.linalg.norm(test, axis=1) == pytest.approx(1.0, abs=1e-5)
    # a model that trains nothing embeds alike in every fold: one fold's rows, not copies of them
    zs_test = combined_test_embeddings(config, zs, workspace, folds)
    assert zs_test == pytest.approx(_unit(load_fold_embeddings(config, zs, folds[0], workspace)[2]), abs=1e-6)

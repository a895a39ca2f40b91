"""`fetch --source synthetic`: a demo competition generated on this machine, skipped when already there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compkit.config import CompetitionConfig, parse_config
from compkit.data.fetch import fetch_competition
from compkit.data.tables import data_inputs, load_test, load_train
from compkit.workspace import Workspace, is_fresh, read_manifest

MATCH_CONFIG = """
slug = "tiny-demo-match"
task = "match"
source = "synthetic"

[synthetic]
seed = 7
n_train_groups = 3
n_test_groups = 2
image_size = 32

[data]
train = "train.csv"
test = "test.csv"
solution = "solution.csv"

[columns]
id = "posting_id"
label = "label_group"
image = "image"
text = "title"
phash = "image_phash"

[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
"""

IDENTIFY_CONFIG = """
slug = "tiny-demo-identify"
task = "identify"
source = "synthetic"

[synthetic]
seed = 7
n_train_groups = 3
n_test_groups = 2
image_size = 32

[data]
solution = "solution.csv"

[columns]
id = "image"
label = "individual_id"
image = "image"
species = "species"

[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
"""


@pytest.fixture(params=[MATCH_CONFIG, IDENTIFY_CONFIG], ids=["match", "identify"])
def config(request) -> CompetitionConfig:
    return parse_config(request.param, source="competition.toml")


def test_synthetic_fetch_writes_the_expected_files(config, tmp_path: Path):
    workspace = Workspace(tmp_path / config.slug)

    result = fetch_competition(config, workspace)

    assert result.source == "synthetic" and not result.skipped
    assert is_fresh(workspace.data_dir, data_inputs(config, workspace))
    assert len(load_train(config, workspace)) > 0 and len(load_test(config, workspace)) > 0
    assert (workspace.data_dir / "solution.csv").is_file()
    assert any((workspace.data_dir / "train_images").iterdir())
    assert read_manifest(workspace.data_dir)["origin"]["seed"] == 7
    assert sorted(p.name for p in workspace.root.iterdir()) == ["data", "data.manifest.json"]


def test_second_synthetic_fetch_is_skipped_and_new_settings_regenerate(config, tmp_path: Path):
    workspace = Workspace(tmp_path / config.slug)
    fetch_competition(config, workspace)

    again = fetch_competition(config, workspace)
    reseeded = dataclasses.replace(config, synthetic=dataclasses.replace(config.synthetic, seed=8))
    regenerated = fetch_competition(reseeded, workspace)

    assert again.skipped and not regenerated.skipped
    assert read_manifest(workspace.data_dir)["origin"]["seed"] == 8

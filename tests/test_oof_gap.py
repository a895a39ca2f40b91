"""identify: MAP@5 split into seen and new_individual queries, OOF and test, and the OOF mixed at test's share."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_identify, tiny_image_models
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.data.folds import default_scheme_unseen_share
from compkit.ensemble.weights import oof_truth
from compkit.metrics import average_precision_at_5
from compkit.oof_gap import by_kind, gap_rows, new_share_of_test
from compkit.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_by_kind_means_each_kind_and_mixes_them_at_any_share():
    truth = np.array(["a", "new_individual", "b", "new_individual", "c"], dtype=object)
    scores = np.array([1.0, 0.5, 0.0, 1.0, 0.5])

    split = by_kind(scores, truth, "new_individual")

    assert split.seen == pytest.approx(0.5) and split.new == pytest.approx(0.75)
    assert split.new_share == pytest.approx(0.4)
    assert split.score == pytest.approx(scores.mean())
    assert split.at_share(0.0) == pytest.approx(0.5) and split.at_share(1.0) == pytest.approx(0.75)
    only_seen = by_kind(scores[[0, 2]], truth[[0, 2]], "new_individual")
    assert only_seen.new is None and only_seen.score == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:.*fewer than n_splits")
def test_run_prints_each_models_seen_and_new_scores_on_oof_and_test(tmp_path):
    folder = tiny_identify(tmp_path, "tiny-gap", tiny_image_models(("cnn", "lcnet_050"), ("resnet", "test_resnet")))
    work = tmp_path / "work"

    result = runner.invoke(app, ["run", "-c", str(folder), "--workspace", str(work), "--trials", "4"])

    assert result.exit_code == 0, result.output
    config, workspace = load_config(str(folder)), Workspace.for_competition("tiny-gap", work)
    rows = {row.model: row for row in gap_rows(config, workspace, ["cnn", "resnet"],
                                               ensemble_csv=workspace.submission_csv("ensemble"))}
    assert set(rows) == {"cnn", "resnet", "ensemble"}
    ids, truth = oof_truth(config, workspace)
    oof = pd.read_csv(workspace.oof_csv("cnn"), dtype=str).set_index("image").loc[ids, "predictions"]
    predictions = np.array([(row.split() + [""] * 5)[:5] for row in oof], dtype=object)
    own = average_precision_at_5(truth, predictions)
    new = truth == "new_individual"
    assert rows["cnn"].oof.seen == pytest.approx(own[~new].mean()) and rows["cnn"].oof.new == pytest.approx(
        own[new].mean())
    tuned = json.loads((workspace.tuning_dir / "ensemble.json").read_text())  # the rank ensemble's OOF lists
    assert rows["ensemble"].oof.score == pytest.approx(tuned["ensemble_oof_score"], abs=1e-9)
    solution = pd.read_csv(workspace.data_dir / "solution.csv", dtype=str)
    share = (solution["individual_id"] == "new_individual").mean()
    assert all(row.test.new_share == pytest.approx(share) for row in rows.values())
    assert new_share_of_test(config, list(rows.values())) == pytest.approx(share)
    for name, row in rows.items():  # the test side adds up to the test score run printed
        assert f"{row.test.score:.6f}" in result.stdout, name
    table = result.stdout[result.stdout.index("MAP@5 on seen and new_individual queries"):]
    assert f"test {share:.1%}" in table and f"OOF {rows['cnn'].oof.new_share:.1%}" in table
    default = default_scheme_unseen_share(config, workspace)  # the demo keeps encounters whole
    assert default is not None and f"default folds {default:.1%}" in table
    for name in ("cnn", "resnet", "ensemble"):  # whole names, in an 80-column console
        line = next(line for line in table.splitlines() if line.strip("│ ").startswith(name + " "))
        assert f"{rows[name].oof_at(share):.4f}" in line and f"{rows[name].test.seen:.4f}" in line
        assert line.rstrip(" │").endswith(f"{rows[name].oof_at(default):.4f}")

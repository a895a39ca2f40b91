"""`submit --kernel`: the offline kernel folder, its push with the real kaggle client over loopback, and its run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import TUNED_SLUG
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.submission import load_submission
from compkit.submit.kernel_run import run_kernel
from compkit.submit.ledger import read_ledger
from compkit.workspace import Workspace, read_json

runner = CliRunner()
OWNER = "compkit-tester"  # the loopback server's username
KERNEL_ID = f"{OWNER}/compkit-{TUNED_SLUG}"
WHEELS = f"{OWNER}/compkit-wheels"
WEIGHTS = f"{OWNER}/compkit-{TUNED_SLUG}-weights"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def push(folder: Path, base: Path, *extra: object):
    return invoke("submit", "-c", folder, "--workspace", base, "--kernel", "--kernel-id", KERNEL_ID, *extra)


def test_kernel_folder_holds_the_script_its_metadata_the_wheels_and_the_weights(tuned_workspace, kaggle_home):
    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    config = load_config(str(folder))

    result = push(folder, base, "--dry-run")

    assert result.exit_code == 0, result.output
    kernel = space.kernel_folder
    assert f"would push {kernel.notebook} as kernel {KERNEL_ID}" in result.stdout
    metadata = json.loads((kernel.notebook / "kernel-metadata.json").read_text())
    assert metadata["id"] == KERNEL_ID and metadata["title"] == f"compkit {TUNED_SLUG.replace('-', ' ')}"
    assert metadata["enable_internet"] is False and metadata["enable_gpu"] is True
    assert metadata["competition_sources"] == [TUNED_SLUG] and metadata["dataset_sources"] == [WHEELS, WEIGHTS]
    script = (kernel.notebook / metadata["code_file"]).read_text()
    compile(script, metadata["code_file"], "exec")
    assert "WHEELS = 'compkit-wheels'" in script and f"WEIGHTS = 'compkit-{TUNED_SLUG}-weights'" in script
    assert f"COMPETITION = '{TUNED_SLUG}'" in script and "PLACEHOLDER_ROWS = 3" in script
    assert '"--no-index"' in script and "run_kernel(" in script
    [wheel] = kernel.wheels.glob("*.whl")
    assert wheel.name.startswith("compkit-") and "compkit/submit/kernel_run.py" in zipfile.ZipFile(wheel).namelist()
    assert json.loads((kernel.wheels / "dataset-metadata.json").read_text())["id"] == WHEELS
    assert json.loads((kernel.weights / "dataset-metadata.json").read_text())["id"] == WEIGHTS
    assert (kernel.weights / "competition.toml").read_text() == (folder / "competition.toml").read_text()
    stored = {str(p.relative_to(kernel.weights / "workspace")) for p in (kernel.weights / "workspace").rglob("*")
              if p.is_file()}
    assert {"folds.csv", "tuning/optuna.sqlite3", "tuning/ensemble.json"} <= stored
    assert {f"tuning/{m.name}.json" for m in config.models} <= stored
    assert not any(p.startswith(("data/", "embeddings/", "submissions/", "oof/")) for p in stored)
    assert not space.ledger_path.exists()


def test_kernel_push_sends_the_notebook_with_the_real_client_and_records_it(tuned_workspace, kaggle_server,
                                                                           kaggle_credentials):
    folder, base = tuned_workspace
    kaggle_server.add_competition(TUNED_SLUG, {})
    kaggle_server.datasets.update({WHEELS, WEIGHTS})
    space = Workspace(base / TUNED_SLUG)

    result = push(folder, base, "-m", "offline kernel")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"https://www.kaggle.com/code/{KERNEL_ID}"
    [body] = kaggle_server.kernels[KERNEL_ID]
    script = (space.kernel_folder.notebook / "compkit_kernel.py").read_text()
    assert body["text"] == script and body["language"] == "python" and body["kernelType"] == "script"
    assert body["enableInternet"] is False and body["enableGpu"] is True and body["isPrivate"] is True
    assert body["datasetDataSources"] == [WHEELS, WEIGHTS] and body["competitionDataSources"] == [TUNED_SLUG]
    [row] = read_ledger(space).to_dict(orient="records")
    assert row["kind"] == "kernel" and row["status"] == "pushed" and row["ref"] == "1"
    assert row["file"] == KERNEL_ID and row["message"] == "offline kernel" and row["model"] == "ensemble"
    assert float(row["cv_score"]) == pytest.approx(read_json(space.tuned_ensemble)["cross_fitted_oof_score"])


def test_kernel_push_refuses_while_kaggle_cannot_attach_the_datasets(tuned_workspace, kaggle_server,
                                                                     kaggle_credentials):
    folder, base = tuned_workspace
    kaggle_server.add_competition(TUNED_SLUG, {})

    result = push(folder, base)

    assert result.exit_code == 1
    assert f"cannot attach {WHEELS}, {WEIGHTS}: upload the datasets (kaggle datasets create -p" in result.stderr
    [row] = read_ledger(Workspace(base / TUNED_SLUG)).to_dict(orient="records")
    assert row["status"] == "failed" and "cannot attach" in row["error"]


def test_kernel_push_under_another_owner_is_refused_with_403(tuned_workspace, kaggle_server, kaggle_credentials):
    folder, base = tuned_workspace
    kaggle_server.add_competition(TUNED_SLUG, {})

    result = invoke("submit", "-c", folder, "--workspace", base, "--kernel", "--kernel-id", "someone-else/compkit-x")

    assert result.exit_code == 1
    assert "refused to push kernel someone-else/compkit-x (HTTP 403): its owner must be the account" in result.stderr


def test_kernel_options_are_checked_before_anything_is_written(tuned_workspace):
    folder, base = tuned_workspace

    missing = invoke("submit", "-c", folder, "--workspace", base, "--kernel", "--dry-run")
    malformed = invoke("submit", "-c", folder, "--workspace", base, "--kernel", "--kernel-id", "no-owner", "--dry-run")

    assert missing.exit_code == 1 and "--kernel needs --kernel-id OWNER/SLUG" in missing.stderr
    assert malformed.exit_code == 1 and "--kernel-id must be OWNER/SLUG" in malformed.stderr
    assert not Workspace(base / TUNED_SLUG).kernel_dir.exists()


@pytest.fixture
def weights(tuned_workspace, kaggle_home) -> tuple[Path, Workspace]:
    folder, base = tuned_workspace
    assert push(folder, base, "--dry-run").exit_code == 0
    space = Workspace(base / TUNED_SLUG)
    return space.kernel_folder.weights, space


def test_kernel_run_predicts_the_attached_test_set_offline(weights, tmp_path):
    weights_dir, space = weights
    config = load_config(str(weights_dir / "competition.toml"))

    result = run_kernel(weights_dir=weights_dir, competition_dir=space.data_dir, working_dir=tmp_path / "working")

    assert result.submission == tmp_path / "working" / "submission.csv" and not result.placeholder
    assert result.submission.read_bytes() == space.submission_csv("ensemble").read_bytes()
    assert result.oof_scores["ensemble"] == pytest.approx(read_json(space.tuned_ensemble)["ensemble_oof_score"])
    test_ids = pd.read_csv(space.data_dir / "test.csv", dtype=str)[config.columns.id]
    assert len(load_submission(result.submission, config, expected_ids=test_ids).ids) == result.test_rows


def test_kernel_run_scores_the_training_set_in_place_of_a_placeholder_test_set(weights, tmp_path):
    import shutil

    weights_dir, space = weights
    config = load_config(str(weights_dir / "competition.toml"))
    attached = tmp_path / "input" / TUNED_SLUG
    shutil.copytree(space.data_dir, attached)
    test = pd.read_csv(attached / "test.csv", dtype=str, keep_default_na=False)
    test.head(3).to_csv(attached / "test.csv", index=False)

    result = run_kernel(weights_dir=weights_dir, competition_dir=attached, working_dir=tmp_path / "working")

    train_ids = pd.read_csv(attached / "train.csv", dtype=str)[config.columns.id]
    assert result.placeholder and result.test_rows == len(train_ids)
    assert len(load_submission(result.submission, config, expected_ids=train_ids).ids) == len(train_ids)
    # The matchers are not trained, so predicting the training rows as a test set must reproduce the OOF score.
    assert result.train_as_test_score == pytest.approx(result.oof_scores["ensemble"])
    assert "the training set stood in for it" in result.summary()

"""Offline and in a notebook: `run` on a local Kaggle-format folder, a config's local `path`, code competitions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import TUNED_SLUG
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.workspace import read_manifest

runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(arg) for arg in args])


def kaggle_folder(base: Path, tmp_path: Path) -> Path:
    """Return a Kaggle-format folder holding the same files as the tuned workspace's data (as /kaggle/input)."""
    return Path(shutil.copytree(base / TUNED_SLUG / "data", tmp_path / "kaggle" / "input" / TUNED_SLUG))


def config_copy(folder: Path, tmp_path: Path, **settings: str) -> Path:
    """Return a copy of the tuned competition's folder whose config has `settings` as top-level TOML lines."""
    text = (folder / "competition.toml").read_text().replace('source = "synthetic"\n', "")
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    copy = tmp_path / "competitions" / TUNED_SLUG
    copy.mkdir(parents=True)
    (copy / "competition.toml").write_text(lines + text)
    return copy


def test_run_takes_source_and_path_and_intact_data_never_asks_kaggle(tuned_workspace, tmp_path, kaggle_home):
    folder, base = tuned_workspace
    local = kaggle_folder(base, tmp_path)
    competition = config_copy(folder, tmp_path, source='"kaggle"')  # no credentials in kaggle_home

    first = invoke("run", "-c", competition, "--workspace", base, "--trials", 0, "--source", "local", "--path", local)
    again = invoke("run", "-c", competition, "--workspace", base, "--trials", 0)

    assert first.exit_code == 0, first.output
    assert f"from {local}" in first.output.replace("\n", "")
    manifest = read_manifest(base / TUNED_SLUG / "data")
    assert manifest["source"] == "local" and manifest["origin"]["path"] == str(local.resolve())
    assert again.exit_code == 0, again.output  # the config says kaggle: intact data is used without asking it
    assert "nothing to do: every stage is fresh" in again.output


def test_run_fetches_from_the_configs_relative_local_path(tuned_workspace, tmp_path, kaggle_home):
    folder, base = tuned_workspace
    local = kaggle_folder(base, tmp_path)
    competition = config_copy(folder, tmp_path, source='"local"', path=f'"../../kaggle/input/{TUNED_SLUG}"')

    result = invoke("run", "-c", competition, "--workspace", base, "--trials", 0)

    assert result.exit_code == 0, result.output
    manifest = read_manifest(base / TUNED_SLUG / "data")
    assert manifest["source"] == "local" and manifest["origin"]["path"] == str(local.resolve())
    assert invoke("run", "-c", competition, "--workspace", base, "--trials", 0).output.count("fresh, skipped") > 3


def test_run_in_place_links_the_folder_and_keeps_every_later_stage_fresh(tuned_workspace, tmp_path, kaggle_home):
    folder, base = tuned_workspace
    local = kaggle_folder(base, tmp_path)
    competition = config_copy(folder, tmp_path, source='"kaggle"')

    result = invoke("run", "-c", competition, "--workspace", base, "--trials", 0, "--source", "local", "--path",
                    local, "--in-place")

    assert result.exit_code == 0, result.output
    assert (base / TUNED_SLUG / "data" / "train_images").is_symlink()
    assert result.output.count("fresh, skipped") >= 4  # same files, same fingerprint: nothing after data is remade


def test_run_fetches_data_from_the_local_folder_it_came_from_not_from_kaggle(tuned_workspace, tmp_path, kaggle_home):
    folder, base = tuned_workspace
    local = kaggle_folder(base, tmp_path)
    competition = config_copy(folder, tmp_path, source='"kaggle"')  # no credentials in kaggle_home
    fetched = invoke("fetch", "-c", competition, "--workspace", base, "--source", "local", "--path", local,
                     "--in-place")
    image = sorted((local / "train_images").iterdir())[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # the original changed

    result = invoke("run", "-c", competition, "--workspace", base, "--trials", 0)

    assert fetched.exit_code == 0 and result.exit_code == 0, fetched.output + result.output
    manifest = read_manifest(base / TUNED_SLUG / "data")
    assert manifest["origin"]["path"] == str(local.resolve()) and manifest["origin"]["in_place"] is True
    assert manifest["outputs"][f"data/train_images/{image.name}"]["mtime_ns"] == image.stat().st_mtime_ns


def test_run_refuses_path_without_a_local_source(tuned_workspace, tmp_path):
    folder, base = tuned_workspace

    result = invoke("run", "-c", folder, "--workspace", base, "--path", tmp_path)

    assert result.exit_code == 1
    assert "--path is for --source local" in result.output


def test_submit_of_a_code_competition_refuses_a_csv_and_points_at_the_kernel(tuned_workspace, tmp_path):
    folder, base = tuned_workspace
    competition = config_copy(folder, tmp_path, code_competition="true")

    result = invoke("submit", "-c", competition, "--workspace", base, "--dry-run")

    assert result.exit_code == 1
    assert "is a code competition" in result.output and "--kernel" in result.output
    assert invoke("submit", "-c", folder, "--workspace", base, "--dry-run").exit_code == 0
    before_run = invoke("run", "-c", competition, "--workspace", base, "--trials", 0, "--submit")
    assert before_run.exit_code == 1 and "is a code competition" in before_run.output
    assert "fresh, skipped" not in before_run.output  # refused before any stage


def test_the_shipped_shopee_config_is_a_code_competition():
    from compkit.config import load_config

    assert load_config("shopee-product-matching").code_competition
    assert not load_config("happy-whale-and-dolphin").code_competition

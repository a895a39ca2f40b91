"""Data checks: the tables and images validated against the config at fetch and by `compkit check`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import RecordingProgress
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.data import checks
from compkit.data.checks import check_data
from compkit.data.fetch import fetch_competition
from compkit.data.sources.synthetic.identify import generate_identify
from compkit.data.sources.synthetic.match import generate_match
from compkit.errors import DataError
from compkit.workspace import Workspace

MATCH = load_config("demo-match")  # image, text, TF-IDF and pHash models: every check applies
IDENTIFY = load_config("demo-identify")


def generated(folder: Path, task: str = "match") -> Path:
    generate = generate_match if task == "match" else generate_identify
    generate(folder, seed=3, n_train_groups=4, n_test_groups=2, image_size=32)
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return generated(tmp_path / "data")


def set_values(path: Path, values: dict[tuple[int, str], str]) -> pd.DataFrame:
    """Return the table at `path` after writing `values` ({(row index, column): value}) into it."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (row, column), value in values.items():
        frame.loc[row, column] = value
    frame.to_csv(path, index=False)
    return frame


def problems(config, data_dir: Path) -> list[str]:
    """Return the problem lines of the DataError the check raises (the heading line left out)."""
    with pytest.raises(DataError) as caught:
        check_data(config, data_dir)
    heading, *lines = str(caught.value).splitlines()
    assert heading.startswith(f"{data_dir}: {len(lines)} problem")
    return [line.strip() for line in lines]


def test_generated_demo_data_passes_for_both_tasks(tmp_path):
    for config, task in ((MATCH, "match"), (IDENTIFY, "identify")):
        folder = generated(tmp_path / task, task)
        n_rows = sum(len(pd.read_csv(folder / name)) for name in ("train.csv", "test.csv" if config.data.test
                                                                   else "sample_submission.csv"))
        n_images = sum(1 for path in folder.rglob("*.jpg"))

        result = check_data(config, folder)

        assert (result.n_rows, result.n_images) == (n_rows, n_images)
        assert result.message.startswith(f"ok: {n_rows} rows, {n_images} images checked in ")


def test_missing_column_is_named(data_dir):
    frame = pd.read_csv(data_dir / "train.csv", dtype=str)
    frame.drop(columns="title").to_csv(data_dir / "train.csv", index=False)

    assert problems(MATCH, data_dir) == [
        "train.csv: missing column 'title' (columns: posting_id, image, image_phash, label_group)"]


def test_duplicate_id_names_its_row_and_the_first(data_dir):
    first = pd.read_csv(data_dir / "train.csv", dtype=str).loc[0, "posting_id"]
    frame = set_values(data_dir / "train.csv", {(2, "posting_id"): first})

    assert problems(MATCH, data_dir) == [
        f"train.csv: row 3 (id {first!r}), column 'posting_id': duplicate id, first at row 1 (1 of {len(frame)} rows)"]


@pytest.mark.parametrize(("bad_id", "problem"), [("train 12", "id contains whitespace"), ("", "empty id"),
                                                  (" ", "empty id")])
def test_bad_id_in_test_table_is_named(data_dir, bad_id, problem):
    frame = set_values(data_dir / "test.csv", {(1, "posting_id"): bad_id})

    assert problems(MATCH, data_dir) == [
        f"test.csv: row 2 (id {bad_id!r}), column 'posting_id': {problem} (1 of {len(frame)} rows)"]


def test_empty_and_nan_labels_are_counted_together(data_dir):
    frame = set_values(data_dir / "train.csv", {(1, "label_group"): "", (4, "label_group"): "NaN"})

    assert problems(MATCH, data_dir) == [
        f"train.csv: row 2 (id {frame.loc[1, 'posting_id']!r}), column 'label_group' = '': empty or NaN label "
        f"(such rows would form one group) (2 of {len(frame)} rows)"]


def test_malformed_phash_is_named(data_dir):
    frame = set_values(data_dir / "train.csv", {(0, "image_phash"): "94974f93"})

    assert problems(MATCH, data_dir) == [
        f"train.csv: row 1 (id {frame.loc[0, 'posting_id']!r}), column 'image_phash' = '94974f93': "
        f"not a pHash of 16 hex characters (1 of {len(frame)} rows)"]


def test_empty_title_is_named_with_the_models_that_read_it(data_dir):
    frame = set_values(data_dir / "train.csv", {(3, "title"): ""})

    assert problems(MATCH, data_dir) == [
        f"train.csv: row 4 (id {frame.loc[3, 'posting_id']!r}), column 'title' = '': "
        f"empty text, which tfidf-word, tfidf-char, minilm read (1 of {len(frame)} rows)"]


def test_missing_image_names_every_row_that_needs_it(data_dir):
    frame = pd.read_csv(data_dir / "train.csv", dtype=str)
    name = frame.loc[0, "image"]
    (data_dir / "train_images" / name).unlink()
    sharing = int((frame["image"] == name).sum())

    assert problems(MATCH, data_dir) == [
        f"train.csv: row 1 (id {frame.loc[0, 'posting_id']!r}), column 'image' = {name!r}: not found in "
        f"train_images/ ({sharing} of {len(frame)} rows)"]


@pytest.mark.parametrize(("damage", "reason"), [(lambda data: data[: len(data) // 2], "truncated"),
                                                (lambda data: b"\xff\xd8 not a jpeg", "not an image file pil")])
def test_undecodable_image_is_named(data_dir, damage, reason):
    frame = pd.read_csv(data_dir / "test.csv", dtype=str)
    image = data_dir / "test_images" / frame.loc[0, "image"]
    image.write_bytes(damage(image.read_bytes()))

    [line] = problems(MATCH, data_dir)

    assert line.startswith(f"test.csv: row 1 (id {frame.loc[0, 'posting_id']!r}), column 'image' = "
                           f"{image.name!r}: cannot be decoded (")
    assert reason in line.lower() and line.endswith(f" (1 of {len(frame)} rows)")


def test_identify_test_images_are_those_the_sample_submission_lists(tmp_path):
    folder = generated(tmp_path / "data", "identify")
    sample = pd.read_csv(folder / "sample_submission.csv", dtype=str)
    (folder / "test_images" / sample.loc[1, "image"]).unlink()

    assert problems(IDENTIFY, folder) == [
        f"sample_submission.csv: row 2 (id {sample.loc[1, 'image']!r}), column 'image': not found in "
        f"test_images/ (1 of {len(sample)} rows)"]


def test_every_problem_is_reported_at_once(data_dir):
    set_values(data_dir / "train.csv", {(0, "posting_id"): "a b", (1, "label_group"): ""})
    (data_dir / "test.csv").write_text("posting_id\n")

    lines = problems(MATCH, data_dir)

    assert [line.split(":")[0] for line in lines] == ["train.csv"] * 2 + ["test.csv"] * 3
    assert "'posting_id': id contains whitespace" in lines[0] and "'label_group'" in lines[1]
    assert sorted(line.split("'")[1] for line in lines[2:]) == ["image", "image_phash", "title"]


def test_images_are_decoded_over_a_process_pool_with_progress(data_dir, monkeypatch):
    monkeypatch.setattr(checks, "POOL_FROM", 1)
    monkeypatch.setattr(checks, "CHUNK", 3)
    image = next((data_dir / "train_images").iterdir())
    image.write_bytes(image.read_bytes()[:100])
    progress = RecordingProgress()

    with pytest.raises(DataError, match=f"{image.name}.*cannot be decoded"):
        check_data(MATCH, data_dir, n_jobs=2, progress=progress)

    task = progress.tasks["checking train_images"]
    assert task.completed == task.total == len(list((data_dir / "train_images").iterdir()))


def test_fetch_of_bad_local_data_leaves_the_old_data_untouched(tmp_path):
    source = generated(tmp_path / "input")
    workspace = Workspace(tmp_path / "work" / MATCH.slug)
    fetch_competition(MATCH, workspace, source="local", path=source)
    before = {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()}
    set_values(source / "train.csv", {(0, "posting_id"): "a b"})

    with pytest.raises(DataError, match=f"^{source}: 1 problem with demo-match's data:\n  train.csv: row 1 "):
        fetch_competition(MATCH, workspace, source="local", path=source)

    assert {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()} == before


def test_check_command_prints_ok_or_the_problems(tmp_path):
    work = tmp_path / "work"
    data_dir = generated(work / MATCH.slug / "data")
    runner = CliRunner()

    ok = runner.invoke(app, ["check", "-c", "demo-match", "--workspace", str(work)])
    set_values(data_dir / "train.csv", {(0, "image_phash"): "?"})
    bad = runner.invoke(app, ["check", "-c", "demo-match", "--workspace", str(work)])

    assert ok.exit_code == 0 and ok.stdout.startswith("ok: ") and " images checked in " in ok.stdout
    assert bad.exit_code == 1 and "train.csv: row 1 " in bad.stderr and "column 'image_phash' = '?'" in bad.stderr


def test_check_before_fetch_says_what_to_run(tmp_path):
    result = CliRunner().invoke(app, ["check", "-c", "demo-match", "--workspace", str(tmp_path)])

    assert result.exit_code == 1 and "run: compkit fetch -c demo-match" in result.stderr


def broken_competition(root: Path) -> Path:
    path = root / "competitions" / "broken-one" / "competition.toml"
    path.parent.mkdir(parents=True)
    path.write_text('slug = "broken-one"\ntask = "rank"\n')
    return path


def test_competitions_lists_the_valid_configs_and_names_the_broken_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = broken_competition(tmp_path)

    result = CliRunner().invoke(app, ["competitions"])

    assert result.exit_code == 0 and "demo-match" in result.stdout and "broken-one" not in result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"broken: {path}: ") and "task" in line


def test_competitions_fails_when_no_config_loads(tmp_path, monkeypatch):
    broken_competition(tmp_path)
    monkeypatch.setattr("compkit.config.search_dirs", lambda: [tmp_path / "competitions"])

    result = CliRunner().invoke(app, ["competitions"])

    assert result.exit_code == 1 and "none of the 1 competition configs found loads" in result.stderr

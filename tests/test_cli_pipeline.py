"""The issue-2 commands end to end through the CLI, on tiny generated competitions."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compkit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def tiny_competition(tmp_path: Path, demo: str) -> Path:
    text = (ROOT / "competitions" / demo / "competition.toml").read_text()
    text = re.sub(r"n_train_groups = \d+", "n_train_groups = 24", text)
    text = re.sub(r"n_test_groups = \d+", "n_test_groups = 8", text)
    text = re.sub(r"image_size = \d+", "image_size = 32", text)
    text = text.replace("n_splits = 4", "n_splits = 3")
    folder = tmp_path / "competitions" / f"tiny-{demo}"
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(text.replace(f'slug = "{demo}"', f'slug = "tiny-{demo}"'))
    return folder


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("demo", ["demo-match", "demo-identify"])
def test_fetch_folds_status_score_through_the_cli(tmp_path, demo):
    competition = tiny_competition(tmp_path, demo)
    work = tmp_path / "work"
    fetched = invoke("fetch", "-c", competition, "--workspace", work)
    assert fetched.exit_code == 0, fetched.output
    data_dir = work / f"tiny-{demo}" / "data"
    assert (data_dir / "train.csv").is_file() and (data_dir / "solution.csv").is_file()

    again = invoke("fetch", "-c", competition, "--workspace", work)
    assert again.exit_code == 0 and "already" in again.stderr.lower()

    folds = invoke("folds", "-c", competition, "--workspace", work)
    assert folds.exit_code == 0, folds.output
    assert (work / f"tiny-{demo}" / "folds.csv").is_file()
    if demo == "demo-identify":  # the share of OOF queries that are new individuals, next to its target
        assert re.search(r"new_individual OOF queries: \d+\.\d% of rows \(folds.unseen_fraction 30.0%; "
                         r"default folds \d+\.\d%\)", folds.stderr)
        assert re.search(r"seen OOF queries with no row of their encounter in another fold: \d+\.\d% "
                         r"\(folds.unseen_group_fraction 35.0%\)", folds.stderr)

    status = invoke("status", "-c", competition, "--workspace", work)
    assert status.exit_code == 0
    assert re.search(r"data\s+│\s+fresh", status.stdout) and re.search(r"folds\s+│\s+fresh", status.stdout)

    scored = invoke("score", "-c", competition, "--workspace", work, data_dir / "sample_submission.csv")
    assert scored.exit_code == 0, scored.output
    last_line = scored.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d\.\d{6}", last_line)

    as_json = invoke("score", "-c", competition, "--workspace", work, "--json", data_dir / "sample_submission.csv")
    payload = json.loads(as_json.stdout)
    assert payload["score"] == pytest.approx(float(last_line), abs=1e-6)
    assert payload["metric"] == ("mean_row_f1" if demo == "demo-match" else "map_at_5")


def test_score_of_the_solution_itself_is_perfect(tmp_path):
    competition = tiny_competition(tmp_path, "demo-match")
    work = tmp_path / "work"
    assert invoke("fetch", "-c", competition, "--workspace", work).exit_code == 0
    data_dir = work / "tiny-demo-match" / "data"
    import pandas as pd

    solution = pd.read_csv(data_dir / "solution.csv", dtype=str)
    groups = solution.groupby("label_group")["posting_id"].agg(" ".join)
    perfect = solution.assign(matches=solution["label_group"].map(groups))[["posting_id", "matches"]]
    perfect.to_csv(tmp_path / "perfect.csv", index=False)
    scored = invoke("score", "-c", competition, "--workspace", work, tmp_path / "perfect.csv")
    assert scored.stdout.strip().splitlines()[-1] == "1.000000"


def test_invalid_submission_is_one_line_error_naming_file_and_row(tmp_path):
    competition = tiny_competition(tmp_path, "demo-match")
    work = tmp_path / "work"
    assert invoke("fetch", "-c", competition, "--workspace", work).exit_code == 0
    sample = (work / "tiny-demo-match" / "data" / "sample_submission.csv").read_text().splitlines()
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([sample[0], sample[1], sample[1], *sample[3:]]) + "\n")
    result = invoke("score", "-c", competition, "--workspace", work, broken)
    assert result.exit_code == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1
    assert str(broken) in error and "row 2: duplicate id" in error
    assert "Traceback" not in result.output


def test_folds_before_fetch_says_what_to_run(tmp_path):
    competition = tiny_competition(tmp_path, "demo-match")
    result = invoke("folds", "-c", competition, "--workspace", tmp_path / "work")
    assert result.exit_code == 1
    assert "run: compkit fetch -c tiny-demo-match" in result.stderr


def test_fetch_rejects_unknown_source_and_path_without_local(tmp_path):
    competition = tiny_competition(tmp_path, "demo-match")
    unknown = invoke("fetch", "-c", competition, "--workspace", tmp_path / "work", "--source", "s3")
    assert unknown.exit_code == 1 and "s3" in unknown.stderr
    stray_path = invoke("fetch", "-c", competition, "--workspace", tmp_path / "work", "--path", tmp_path)
    assert stray_path.exit_code == 1 and "--path" in stray_path.stderr
    assert not (tmp_path / "work" / "tiny-demo-match" / "data").exists()


def test_status_marks_folds_stale_after_train_csv_changes(tmp_path):
    competition = tiny_competition(tmp_path, "demo-match")
    work = tmp_path / "work"
    invoke("fetch", "-c", competition, "--workspace", work)
    invoke("folds", "-c", competition, "--workspace", work)
    train = work / "tiny-demo-match" / "data" / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:-1]) + "\n")
    status = invoke("status", "-c", competition, "--workspace", work)
    assert re.search(r"data\s+│\s+damaged", status.stdout)  # not the size its manifest recorded
    assert re.search(r"folds\s+│\s+stale", status.stdout)


def test_status_follows_each_artifact_of_a_run(tuned_workspace):
    competition, work = tuned_workspace
    status = invoke("status", "-c", competition, "--workspace", work)
    stages = dict(re.findall(r"│ ((?:tune|predict|ensemble)[\w -]*?)\s+│ (\w+)", status.stdout))
    assert stages and set(stages.values()) == {"fresh"}, status.stdout
    assert {"tune ensemble", "ensemble", "tune phash", "predict phash"} <= set(stages)

    tuned = work / "tiny-demo-match" / "tuning" / "phash.json"
    tuned.write_text(tuned.read_text().replace('"model"', '"model" ', 1))  # same params, other bytes
    status = invoke("status", "-c", competition, "--workspace", work)
    stages = dict(re.findall(r"│ ((?:tune|predict|ensemble)[\w -]*?)\s+│ (\w+)", status.stdout))
    assert stages["tune phash"] == "damaged" and stages["predict phash"] == "stale"  # not the bytes it wrote
    csv = work / "tiny-demo-match" / "submissions" / "phash.csv"
    csv.write_text(csv.read_text() + "\n")
    status = invoke("status", "-c", competition, "--workspace", work)
    stages = dict(re.findall(r"│ ((?:tune|predict|ensemble)[\w -]*?)\s+│ (\w+)", status.stdout))
    assert stages["ensemble"] == "stale" and stages["tune ensemble"] == "fresh"  # tuned on OOF CSVs, not test

"""`submit` and `submissions` with the real kaggle client, talking to the loopback server in kaggle_server.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_SLUG, TUNED_SLUG
from kaggle_server import UPLOAD_PREFIX, KaggleTestServer, Reply, create_submission, receive_upload
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import CompetitionConfig, load_config
from compkit.errors import KaggleError
from compkit.kaggle_client import RetryPolicy
from compkit.scoring import score_submission
from compkit.status import stage_statuses
from compkit.submit.ledger import read_ledger
from compkit.submit.upload import PollPolicy, plan_submission, submit, wait_for_score
from compkit.workspace import Workspace, file_sha256, read_json

runner = CliRunner()
TEST_CSV = "posting_id,image,title\nt1,1.jpg,a\nt2,2.jpg,b\nt3,3.jpg,c\nt4,4.jpg,d\n"
SOLUTION_CSV = "posting_id,label_group\nt1,A\nt2,A\nt3,B\nt4,B\n"
GOOD_CSV = "posting_id,matches\nt1,t1 t2\nt2,t2 t1\nt3,t3\nt4,t4\n"  # mean row-F1 0.833333


@pytest.fixture
def workspace(tmp_path: Path, tiny_files: dict[str, bytes]) -> Workspace:
    space = Workspace(tmp_path / "work" / TINY_SLUG)
    space.data_dir.mkdir(parents=True)
    for name, content in {**tiny_files, "test.csv": TEST_CSV.encode(), "solution.csv": SOLUTION_CSV.encode()}.items():
        (space.data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (space.data_dir / name).write_bytes(content)
    return space


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text(GOOD_CSV)
    return path


@pytest.fixture
def served(kaggle_server, kaggle_credentials, tiny_files, tiny_config, workspace, tmp_path) -> KaggleTestServer:
    """The tiny competition on the loopback server, scoring uploads with compkit's own metric (as Kaggle would)."""
    competition = kaggle_server.add_competition(TINY_SLUG, tiny_files)

    def score(content: bytes) -> str:
        upload = tmp_path / "received.csv"
        upload.write_bytes(content)
        solution = workspace.data_dir / "solution.csv"
        return f"{score_submission(tiny_config, workspace, upload, solution_path=solution).score:.6f}"

    competition.scorer = score
    return kaggle_server


def no_waits(sleeps: list[float], attempts: int = 5) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, sleep=sleeps.append)


def cli_config(tmp_path: Path, tiny_config_text: str) -> Path:
    folder = tmp_path / "competitions" / TINY_SLUG
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(tiny_config_text)
    return folder


@pytest.fixture
def competition_dir(tmp_path: Path) -> Path:
    from conftest import TINY_CONFIG

    return cli_config(tmp_path, TINY_CONFIG)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def ledger_rows(workspace: Workspace) -> list[dict]:
    return read_ledger(workspace).to_dict(orient="records")


def test_submit_uploads_the_file_and_wait_prints_the_public_score(served, workspace, good_csv, competition_dir):
    served.competitions[TINY_SLUG].polls_until_scored = 0

    result = invoke("submit", "-c", competition_dir, "--workspace", workspace.root.parent, "-f", good_csv,
                    "-m", "first try", "--wait")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "0.833333"
    assert list(served.uploads.values()) == [good_csv.read_bytes()]
    create = served.calls("CreateSubmission")[0].body
    assert create["competitionName"] == TINY_SLUG and create["submissionDescription"] == "first try"
    assert "4 submissions left today" in result.stderr
    [row] = ledger_rows(workspace)
    assert row["status"] == "complete" and row["public_score"] == "0.833333"
    assert row["sha256"] == file_sha256(good_csv) and row["file"] == str(good_csv) and row["message"] == "first try"
    assert row["ref"] == str(served.competitions[TINY_SLUG].submissions[0].ref)
    assert row["cv_score"] == "" and row["error"] == ""


def test_wait_polls_with_backoff_until_kaggle_has_scored(served, tiny_config, workspace, good_csv):
    served.competitions[TINY_SLUG].polls_until_scored = 2
    sleeps: list[float] = []
    submitted = submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)
    assert submitted.status == "pending" and ledger_rows(workspace)[0]["status"] == "pending"

    scored = wait_for_score(submitted, workspace, poll=PollPolicy(sleep=sleeps.append))

    assert scored.public_score == "0.833333"
    assert sleeps == [5.0, 7.5]
    assert len(served.calls("ListSubmissions")) == 3
    assert ledger_rows(workspace)[0]["status"] == "complete"


def test_wait_timeout_keeps_the_row_pending_and_refresh_picks_the_score_up(
    served, tiny_config, workspace, good_csv, competition_dir
):
    served.competitions[TINY_SLUG].polls_until_scored = 3
    clock = iter([0.0, 5.0, 10.0, 61.0])
    poll = PollPolicy(timeout=60, sleep=lambda seconds: None, clock=lambda: next(clock))
    submitted = submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)

    with pytest.raises(KaggleError, match=r"had not scored submission \d+ .* after 60 s; it stays pending"):
        wait_for_score(submitted, workspace, poll=poll)

    assert ledger_rows(workspace)[0]["status"] == "pending"
    shown = invoke("submissions", "-c", competition_dir, "--workspace", workspace.root.parent, "--refresh")
    assert shown.exit_code == 0, shown.output
    assert "1 pending submissions updated" in shown.stderr
    row = ledger_rows(workspace)[0]
    assert row["status"] == "complete" and row["public_score"] == "0.833333"


def stalled(handler, release: threading.Event):
    """Return `handler` that never answers: it acts at once, then drops the connection once `release` is set."""
    def answer(server, request):
        handler(server, request)
        release.wait(timeout=60)
        return Reply(drop=True)
    return answer


def submit_killed_at(served: KaggleTestServer, method: str, command: list[str]) -> subprocess.Popen:
    """Run `command` (a compkit submit) until the server receives `method`, and return it still running."""
    before = len(served.calls(method))
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(served.calls(method)) == before and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.poll() is None and len(served.calls(method)) > before, f"compkit submit never sent {method}"
    return worker


def test_refresh_settles_uploads_that_a_kill_9_cut_off(served, workspace, good_csv, competition_dir):
    competition = served.competitions[TINY_SLUG]
    competition.polls_until_scored = 0
    release = threading.Event()
    served.routes["CreateSubmission"] = stalled(create_submission, release)  # Kaggle takes it, its answer is late
    command = [sys.executable, "-m", "compkit.cli", "submit", "-c", str(competition_dir), "--workspace",
               str(workspace.root.parent), "-f", str(good_csv)]
    refresh = ["submissions", "-c", competition_dir, "--workspace", workspace.root.parent, "--refresh"]
    try:
        arrived = submit_killed_at(served, "CreateSubmission", command)
        while_running = invoke(*refresh)
        arrived.kill()
        arrived.wait()
        served.storage_routes[UPLOAD_PREFIX] = stalled(receive_upload, release)  # the upload never completes
        cut_off = submit_killed_at(served, UPLOAD_PREFIX, command)
        cut_off.kill()
        cut_off.wait()
    finally:
        release.set()

    assert while_running.exit_code == 0 and "a submit is running" in while_running.stderr
    assert [row["status"] for row in ledger_rows(workspace)] == ["uploading", "uploading"]
    refreshed = invoke(*refresh)

    assert refreshed.exit_code == 0, refreshed.output
    [submission] = competition.submissions
    first, second = ledger_rows(workspace)
    assert first["message"] == second["message"] == submission.description == "compkit good.csv"
    assert (first["status"], first["ref"], first["public_score"]) == ("complete", str(submission.ref), "0.833333")
    assert second["status"] == "unknown" and "Kaggle lists no such submission" in second["error"]
    assert "unknown" in invoke("submissions", "-c", competition_dir, "--workspace", workspace.root.parent).stdout


def test_invalid_file_is_refused_before_any_network_call(served, workspace, competition_dir, tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text("posting_id,matches\nt1,t1\nt2,t2\nt2,t2\nt4,t4\n")

    result = invoke("submit", "-c", competition_dir, "--workspace", workspace.root.parent, "-f", broken)

    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert str(broken) in result.stderr and "row 3: duplicate id 't2'" in result.stderr
    assert served.requests == [] and not workspace.ledger_path.exists()


def test_dry_run_validates_and_shows_the_upload_without_network(workspace, good_csv, competition_dir, kaggle_home):
    result = invoke("submit", "-c", competition_dir, "--workspace", workspace.root.parent, "-f", good_csv, "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"would submit {good_csv} (4 rows, sha256 {file_sha256(good_csv)[:12]}, CV -)" in result.stdout
    assert f"Kaggle competition '{TINY_SLUG}' with message 'compkit good.csv'" in result.stdout
    assert not workspace.ledger_path.exists()


def test_wrong_credentials_are_refused_with_401_and_recorded(served, tiny_config, workspace, good_csv,
                                                             kaggle_credentials):
    kaggle_credentials.write_text(json.dumps({"username": served.username, "key": "not-the-key"}))

    with pytest.raises(KaggleError, match=r"rejected the credentials from .*kaggle.json \(HTTP 401\)"):
        submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)

    [row] = ledger_rows(workspace)
    assert row["status"] == "failed" and "HTTP 401" in row["error"] and "not-the-key" not in row["error"]
    assert served.uploads == {}


def test_rules_not_accepted_is_refused_with_403_and_recorded(served, tiny_config, workspace, good_csv):
    served.deny(TINY_SLUG, 403)

    with pytest.raises(KaggleError, match=f"https://www.kaggle.com/competitions/{TINY_SLUG}/rules"):
        submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)

    [row] = ledger_rows(workspace)
    assert row["status"] == "failed" and "HTTP 403" in row["error"] and "accept its rules" in row["error"]


def test_daily_limit_is_shown_and_recorded_without_a_retry(served, tiny_config, workspace, good_csv):
    served.competitions[TINY_SLUG].daily_limit = 1
    sleeps: list[float] = []
    submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)

    with pytest.raises(KaggleError, match=r"daily submission limit for 'tiny-match' is reached \(HTTP 400: "
                                          r"Submission not allowed: .*allowance \(1\)"):
        submit(plan_submission(tiny_config, workspace, path=good_csv, message="second"), workspace,
               retry=no_waits(sleeps))

    assert sleeps == [] and len(served.calls("CreateSubmission")) == 2
    first, second = ledger_rows(workspace)
    assert first["status"] == "pending"
    assert second["status"] == "failed" and second["message"] == "second"
    assert "daily Submission allowance" in second["error"]


def test_429_and_5xx_are_retried_with_backoff_then_the_submission_goes_through(served, tiny_config, workspace,
                                                                               good_csv):
    served.script("StartSubmissionUpload", Reply(status=429, headers={"Retry-After": "3"}, json={}))
    served.script("CreateSubmission", Reply(status=503, json={"code": 503, "message": "Unavailable"}))
    sleeps: list[float] = []

    result = submit(plan_submission(tiny_config, workspace, path=good_csv), workspace, retry=no_waits(sleeps))

    assert sleeps == [3.0, 2.0]
    assert len(served.calls("StartSubmissionUpload")) == 3
    assert len(served.competitions[TINY_SLUG].submissions) == 1
    [row] = ledger_rows(workspace)
    assert row["status"] == "pending" and row["ref"] == str(result.ref)


def test_a_failed_upload_to_storage_is_retried(served, tiny_config, workspace, good_csv):
    served.script(UPLOAD_PREFIX, Reply(status=500, json={"code": 500, "message": "backend error"}))
    sleeps: list[float] = []

    submit(plan_submission(tiny_config, workspace, path=good_csv), workspace, retry=no_waits(sleeps))

    assert len(sleeps) == 1 and len(served.calls(UPLOAD_PREFIX)) == 2
    assert [s.content for s in served.competitions[TINY_SLUG].submissions] == [good_csv.read_bytes()]


def test_network_down_fails_clearly_and_is_recorded(served, tiny_config, workspace, good_csv):
    served.stop()

    with pytest.raises(KaggleError, match="cannot reach Kaggle at localhost via the proxy: connection refused after 2"):
        submit(plan_submission(tiny_config, workspace, path=good_csv), workspace, retry=no_waits([], attempts=2))

    [row] = ledger_rows(workspace)
    assert row["status"] == "failed" and "cannot reach Kaggle" in row["error"]


def test_a_scoring_error_on_kaggle_is_shown_and_recorded(served, tiny_config, workspace, good_csv):
    def refuse(content: bytes) -> str:
        raise ValueError("Evaluation Exception: Submission must have 70000 rows")

    served.competitions[TINY_SLUG].scorer = refuse
    served.competitions[TINY_SLUG].polls_until_scored = 0
    submitted = submit(plan_submission(tiny_config, workspace, path=good_csv), workspace)

    with pytest.raises(KaggleError, match="could not score submission .*: Evaluation Exception: Submission must"):
        wait_for_score(submitted, workspace)

    [row] = ledger_rows(workspace)
    assert row["status"] == "error" and row["error"].startswith("Evaluation Exception")


def test_submissions_table_lists_every_attempt(served, tiny_config, workspace, good_csv, competition_dir):
    served.competitions[TINY_SLUG].polls_until_scored = 0
    wait_for_score(submit(plan_submission(tiny_config, workspace, path=good_csv, message="scored"), workspace),
                   workspace)
    served.stop()
    with pytest.raises(KaggleError):
        submit(plan_submission(tiny_config, workspace, path=good_csv, message="offline"), workspace,
               retry=no_waits([], attempts=1))

    table = invoke("submissions", "-c", competition_dir, "--workspace", workspace.root.parent)
    as_json = invoke("submissions", "-c", competition_dir, "--workspace", workspace.root.parent, "--json")

    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if "good.csv" in line]
    assert len(lines) == 2
    assert "0.833333" in lines[0] and "complete" in lines[0] and "scored" in lines[0]
    assert "failed" in lines[1] and "offline" in lines[1]
    assert [row["status"] for row in json.loads(as_json.stdout)] == ["complete", "failed"]


def test_submit_without_a_kaggle_competition_says_what_to_set(workspace, good_csv, tiny_config: CompetitionConfig):
    import dataclasses

    from compkit.errors import ConfigError

    with pytest.raises(ConfigError, match='set kaggle = "<name in its Kaggle URL>"'):
        plan_submission(dataclasses.replace(tiny_config, kaggle=None), workspace, path=good_csv)


def test_a_model_csv_is_submitted_with_its_tuned_oof_score(tuned_workspace, kaggle_server, kaggle_credentials):
    folder, base = tuned_workspace
    kaggle_server.add_competition(TUNED_SLUG, {})
    space = Workspace(base / TUNED_SLUG)
    model_csv = space.submission_csv("tfidf-word")

    result = invoke("submit", "-c", folder, "--workspace", base, "-f", model_csv)

    assert result.exit_code == 0, result.output
    [row] = ledger_rows(space)
    oof_score = read_json(space.tuned_params("tfidf-word"))["oof_score"]
    assert row["model"] == "tfidf-word" and float(row["cv_score"]) == pytest.approx(oof_score)
    assert row["message"] == f"compkit tfidf-word CV {oof_score:.6f}"
    assert kaggle_server.calls("CreateSubmission")[0].body["submissionDescription"] == row["message"]


def test_a_model_csv_with_the_ensembles_bytes_is_submitted_as_that_model(tuned_workspace):
    # As with Shopee's 3-row visible test, where every CSV can hold the same bytes: the file named is what it is.
    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    model_csv, ensemble_csv = space.submission_csv("tfidf-char"), space.submission_csv("ensemble")
    ensemble_csv.write_bytes(model_csv.read_bytes())
    oof_score = read_json(space.tuned_params("tfidf-char"))["oof_score"]

    as_model = invoke("submit", "-c", folder, "--workspace", base, "-f", model_csv, "--dry-run")
    as_ensemble = invoke("submit", "-c", folder, "--workspace", base, "-f", ensemble_csv, "--dry-run")

    assert as_model.exit_code == 0 and as_ensemble.exit_code == 0, as_model.output + as_ensemble.output
    assert f"CV {oof_score:.6f}) to Kaggle" in as_model.stdout.replace("\n", "")
    assert f"with message 'compkit tfidf-char CV {oof_score:.6f}'" in as_model.stdout.replace("\n", "")
    assert "with message 'compkit ensemble'" in as_ensemble.stdout.replace("\n", "")  # edited: no CV


def test_run_with_submit_uploads_the_ensemble_at_the_end(tuned_workspace, kaggle_server, kaggle_credentials):
    folder, base = tuned_workspace
    competition = kaggle_server.add_competition(TUNED_SLUG, {})
    competition.polls_until_scored = 0
    space = Workspace(base / TUNED_SLUG)

    result = invoke("run", "-c", folder, "--workspace", base, "--trials", "0", "--submit", "--wait")

    assert result.exit_code == 0, result.output
    [submitted] = competition.submissions
    assert submitted.content == space.submission_csv("ensemble").read_bytes()
    [row] = ledger_rows(space)
    assert row["model"] == "ensemble" and row["status"] == "complete" and row["public_score"] == "0.5"
    assert float(row["cv_score"]) == pytest.approx(read_json(space.tuned_ensemble)["cross_fitted_oof_score"])
    assert result.stdout.strip().splitlines()[-1] == "0.5"
    table = invoke("submissions", "-c", folder, "--workspace", base)
    assert "public - CV" in table.stdout
    assert f"{0.5 - float(row['cv_score']):+.4f}" in table.stdout  # how far CV misjudged the public score


def test_submit_without_a_file_takes_a_fresh_ensemble_older_than_a_model_csv(tuned_workspace):
    # A model CSV rewritten with the same bytes is newer than the ensemble, which is still fresh: status
    # says so, and submit must agree (it judges the recorded hashes, never file times).
    import os

    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    ensemble = space.submission_csv("ensemble")
    os.utime(ensemble, ns=(0, 0))
    model_csv = space.submission_csv("tfidf-word")
    model_csv.write_bytes(model_csv.read_bytes())

    [status] = [s for s in stage_statuses(load_config(str(folder)), space) if s.stage == "ensemble"]
    assert status.state == "fresh"

    result = invoke("submit", "-c", folder, "--workspace", base, "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"would submit {ensemble}" in result.stdout.replace("\n", "")


def test_submit_without_a_file_refuses_an_ensemble_whose_model_csv_changed(tuned_workspace):
    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    model_csv = space.submission_csv("tfidf-word")
    frame = pd.read_csv(model_csv, dtype=str, keep_default_na=False)
    frame.iloc[::-1].to_csv(model_csv, index=False)  # the same rows in another order: other bytes

    result = invoke("submit", "-c", folder, "--workspace", base, "--dry-run")

    assert result.exit_code == 1
    assert "submissions/tfidf-word.csv changed since it was written" in result.stderr
    assert "run compkit ensemble" in result.stderr and "-f FILE" in result.stderr


def test_ledger_keeps_every_row_when_writers_race(workspace):
    from concurrent.futures import ThreadPoolExecutor

    from compkit.submit.ledger import add_row, update_row

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda i: add_row(workspace, competition="c", kind="file", message=f"m{i}",
                                              status="uploading"), range(24)))
    update_row(workspace, ids[3], status="pending", ref=7)

    ledger = pd.read_csv(workspace.ledger_path, dtype=str, keep_default_na=False)
    assert sorted(ledger["id"]) == sorted(ids) and sorted(ledger["message"]) == sorted(f"m{i}" for i in range(24))
    assert ledger.set_index("id").loc[ids[3], ["status", "ref"]].tolist() == ["pending", "7"]
    assert (ledger["status"] == "uploading").sum() == 23


def test_status_warns_when_cv_and_the_public_leaderboard_rank_two_models_apart(tuned_workspace):
    from compkit.submit.ledger import add_row, ranking_disagreements, read_ledger

    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    for model, cv, public in [("tfidf-word", 0.70, 0.61), ("phash", 0.60, 0.66), ("tfidf-char", 0.65, 0.64),
                              ("tfidf-word", 0.70, 0.62), ("elsewhere", 0.9, 0.1)]:
        add_row(space, model=model, cv_score=cv, public_score=public, status="complete")
    add_row(space, model="phash", cv_score=0.6, status="pending")  # no public score yet: not counted

    pairs = ranking_disagreements(read_ledger(space), ["tfidf-word", "phash", "tfidf-char"])
    assert {(a["model"], b["model"]) for a, b in pairs} == {("tfidf-word", "phash"), ("tfidf-word", "tfidf-char"),
                                                            ("tfidf-char", "phash")}
    assert next(a for a, b in pairs if b["model"] == "phash" and a["model"] == "tfidf-word")["public"] == 0.62
    result = invoke("status", "-c", folder, "--workspace", base)
    assert result.exit_code == 0
    assert "OOF ranks tfidf-word above phash (CV 0.7000 > 0.6000) but the public leaderboard the other way" in \
        " ".join(result.stderr.split())
    assert "elsewhere" not in result.stderr  # not a model of this config

    space.ledger_path.write_text("not,a\nledger\n")
    assert invoke("status", "-c", folder, "--workspace", base).exit_code == 0  # status reports, never fails

"""The results history (tuning/history.jsonl, `compkit history`): every tuning and ensemble result kept."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
from test_ensemble_weights import invoke, match_workspace
from test_final import UNEQUAL

from compkit.config import load_config
from compkit.history import read_history, record_result
from compkit.workspace import Workspace


def record(workspace, score, *, settings=None, inputs=None, kept_score=None, subject="m"):
    return record_result(workspace, "tune", subject, score, task="match", inputs=inputs or {"embeddings": 1},
                         settings=settings or {"study": "s", "n_trials": 5}, kept_score=kept_score)


def test_each_result_is_appended_with_what_changed_and_a_worse_one_warns(tmp_path):
    workspace = Workspace(tmp_path / "work")
    first = record(workspace, 0.5)
    better = record(workspace, 0.6, settings={"study": "s", "n_trials": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a better or equal result says nothing
        same = record(workspace, 0.6, settings={"study": "s", "n_trials": 8})
    with pytest.warns(UserWarning, match=r"m's tuning: this result \(OOF 0\.400000; inputs changed\) is worse than "
                                         r"the current one \(OOF 0\.600000, .*\); it replaced the current one"):
        worse = record(workspace, 0.4, inputs={"embeddings": 2}, settings={"study": "s", "n_trials": 8})
    other = record(workspace, 0.1, subject="other")

    assert [e.verdict for e in (first, better, same, worse, other)] == ["first", "better", "same", "worse", "first"]
    assert first.changed == "first result" and better.changed == "+3 trials (8 in all)"
    assert same.changed == "nothing (same inputs and settings)" and worse.changed == "inputs changed"
    assert [e.score for e in read_history(workspace, subject="m")] == [0.5, 0.6, 0.6, 0.4]
    assert len(workspace.history_path.read_text().splitlines()) == 5


def test_a_kept_previous_result_is_recorded_with_both_scores(tmp_path):
    workspace = Workspace(tmp_path / "work")
    record_result(workspace, "ensemble", "ensemble", 0.9, task="match", inputs={"oof": 1},
                  settings={"select": "optuna", "n_trials": 200})
    with pytest.warns(UserWarning, match=r"the ensemble: this result \(OOF 0\.800000; select greedy \(was optuna\)\)"
                                         r" is worse .*; the current one is kept"):
        kept = record_result(workspace, "ensemble", "ensemble", 0.8, task="match", inputs={"oof": 1},
                             settings={"select": "greedy", "rounds": 25}, kept_score=0.9)
    assert (kept.score, kept.current, kept.kept, kept.verdict) == (0.8, 0.9, "previous", "worse")
    assert kept.metric == "mean_row_f1"


def test_a_damaged_line_is_skipped_and_appends_go_on(tmp_path):
    workspace = Workspace(tmp_path / "work")
    record(workspace, 0.5)
    with workspace.history_path.open("a") as handle:
        handle.write('{"time": "cut short')  # edited by hand, no newline
    record(workspace, 0.7)
    assert [e.score for e in read_history(workspace)] == [0.5, 0.7]


def test_processes_appending_at_once_keep_every_entry(tmp_path):
    script = ("import sys\nfrom pathlib import Path\n"
              "from compkit.history import record_result\nfrom compkit.workspace import Workspace\n"
              "for i in range(15):\n"
              "    record_result(Workspace(Path(sys.argv[1])), 'tune', sys.argv[2], i / 100, task='match', inputs={},"
              " settings={})\n")
    root = tmp_path / "work"
    writers = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", script, str(root), name]) for name in "ab"]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    entries = read_history(Workspace(root))
    assert sorted((e.subject, e.score) for e in entries) == sorted((s, i / 100) for s in "ab" for i in range(15))


def test_tune_threshold_appends_its_result_and_compkit_history_shows_it(tuned_workspace):
    folder, base = tuned_workspace
    workspace = Workspace.for_competition(load_config(str(folder)).slug, base)
    before = read_history(workspace, subject="phash")
    assert [e.verdict for e in before] == ["first"]  # the pipeline's tuning

    more = before[0].settings["n_trials"] + 2  # --trials is the study's total: two more than the pipeline's
    tuned = invoke("tune-threshold", "-c", folder, "--workspace", base, "--model", "phash", "--trials", more,
                   "--force")

    assert tuned.exit_code == 0, tuned.output
    entries = read_history(workspace, subject="phash")
    assert len(entries) == 2 and entries[1].changed == f"+2 trials ({before[0].settings['n_trials'] + 2} in all)"
    assert entries[1].score >= entries[0].score and entries[1].score == json.loads(
        workspace.tuned_params("phash").read_text())["oof_score"]
    shown = invoke("history", "-c", folder, "--workspace", base, "--model", "phash")
    assert shown.exit_code == 0, shown.output
    assert all(word in shown.stdout for word in ("phash", "+2", "first", f"{entries[1].score:.6f}"))
    every = json.loads(invoke("history", "-c", folder, "--workspace", base, "--json").stdout)
    assert {"phash", "ensemble"} <= {entry["subject"] for entry in every}


def test_a_worse_ensemble_tuning_is_recorded_beside_the_kept_one_with_a_yellow_warning(tmp_path):
    folder, _, workspace = match_workspace(tmp_path, quality=UNEQUAL)
    base = tmp_path / "work"
    greedy = invoke("ensemble", "-c", folder, "--workspace", base, "--tune", "--select", "greedy", "--rounds", "6")
    assert greedy.exit_code == 0, greedy.output

    optuna = invoke("ensemble", "-c", folder, "--workspace", base, "--tune", "--trials", "1")

    assert optuna.exit_code == 0, optuna.output
    warned = [line for line in optuna.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "is worse than the current one" in warned[0] and "is kept" in warned[0]
    first, second = read_history(workspace, subject="ensemble")
    assert (first.settings["select"], first.verdict) == ("greedy", "first")
    assert (second.settings["select"], second.kept, second.verdict) == ("optuna", "previous", "worse")
    assert second.current == first.score > second.score
    assert json.loads(workspace.tuned_ensemble.read_text())["select"] == "greedy"
    assert second.changed.startswith("select optuna (was greedy)")
    shown = invoke("history", "-c", folder, "--workspace", base)
    assert shown.exit_code == 0 and "worse" in shown.stdout and "(optuna)" in shown.stdout

"""The final CSV (ensemble/final.py): made in one place, judged by hashes of workspace-relative inputs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from test_ensemble_weights import invoke, match_workspace

from compkit.ensemble.final import final_csv_state, write_final_csv
from compkit.ensemble.weights import tune_ensemble
from compkit.workspace import Workspace

# precise: every kept pair true, half of them missed; noisy_*: more found, many false. Greedy's vote counts
# (2, 1, 1) beat a single Optuna trial (equal weights) here.
UNEQUAL = {"precise": (0.5, 0), "noisy_a": (0.8, 4), "noisy_b": (0.8, 4)}


def workspace_files(root) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_a_worse_tuning_keeps_the_better_fresh_result_and_the_cli_says_so(tmp_path):
    folder, config, workspace = match_workspace(tmp_path, quality=UNEQUAL)
    base = tmp_path / "work"
    greedy = invoke("ensemble", "-c", folder, "--workspace", base, "--tune", "--select", "greedy", "--rounds", "6")
    assert greedy.exit_code == 0, greedy.output
    kept = workspace.tuned_ensemble.read_bytes()
    greedy_score = json.loads(kept)["ensemble_oof_score"]

    optuna = invoke("ensemble", "-c", folder, "--workspace", base, "--tune", "--trials", "1")

    assert optuna.exit_code == 0, optuna.output
    assert workspace.tuned_ensemble.read_bytes() == kept
    assert f"kept the earlier greedy result (OOF {greedy_score:.6f})" in optuna.stderr
    assert "over this optuna one (OOF 0." in optuna.stderr
    again = tune_ensemble(config, workspace, select="optuna", trials=1)
    assert again.select == "greedy" and again.score == greedy_score
    assert again.choice.kept == "previous" and again.choice.new_score < again.choice.previous_score == greedy_score


def test_a_better_tuning_replaces_a_worse_fresh_one_and_says_so(tmp_path):
    _, config, workspace = match_workspace(tmp_path, quality=UNEQUAL)
    optuna = tune_ensemble(config, workspace, select="optuna", trials=1)
    assert optuna.choice is None

    greedy = tune_ensemble(config, workspace, select="greedy", rounds=6)

    assert greedy.select == "greedy" and greedy.score > optuna.score
    assert greedy.choice.kept == "new" and greedy.choice.previous_score == optuna.score
    assert json.loads(workspace.tuned_ensemble.read_text())["select"] == "greedy"
    assert "replaced the earlier optuna result" in greedy.choice.summary()


def test_a_copied_workspace_is_judged_against_its_own_files(tmp_path):
    folder, config, workspace = match_workspace(tmp_path)
    final = write_final_csv(config, workspace, select="greedy", rounds=2)
    assert final.source == "ensemble" and not final.reused
    assert final_csv_state(config, workspace).state == "fresh"
    manifest = json.loads((workspace.submission_csv("ensemble").with_name("ensemble.csv.manifest.json")).read_text())
    assert set(manifest["inputs"]["csvs"]) == {f"submissions/{name}.csv" for name in final.models}

    shutil.copytree(tmp_path / "work", tmp_path / "copy")
    copy = Workspace(tmp_path / "copy" / config.slug)
    assert final_csv_state(config, copy).state == "fresh"
    model_csv = copy.submission_csv("loose")
    pd.read_csv(model_csv).iloc[::-1].to_csv(model_csv, index=False)  # the same rows in another order

    state = final_csv_state(config, copy)
    assert state.state == "stale" and "submissions/loose.csv changed" in state.reason
    assert final_csv_state(config, workspace).state == "fresh"


def test_a_second_write_of_a_fresh_final_csv_changes_no_file(tmp_path):
    _, config, workspace = match_workspace(tmp_path)
    first = write_final_csv(config, workspace, select="greedy", rounds=2)
    before = workspace_files(workspace.root)

    second = write_final_csv(config, workspace, select="greedy", rounds=2)

    assert second.reused and second.tuned_reused and not first.reused
    assert workspace_files(workspace.root) == before
    assert second.weights == first.weights and second.oof_scores == first.oof_scores
    assert set(second.oof_scores) == {*first.models, "ensemble"}


def test_final_csv_state_says_why_it_is_stale_or_missing(tmp_path):
    _, config, workspace = match_workspace(tmp_path)
    missing = final_csv_state(config, workspace)
    assert missing.state == "missing" and missing.path == workspace.submission_csv("ensemble")
    write_final_csv(config, workspace, select="greedy", rounds=2)

    oof = workspace.oof_csv("strict")
    pd.read_csv(oof).iloc[::-1].to_csv(oof, index=False)
    state = final_csv_state(config, workspace)
    assert state.state == "stale" and "strict.csv changed since it was tuned" in state.reason

    retuned = write_final_csv(config, workspace, select="greedy", rounds=2)
    assert not retuned.tuned_reused
    assert retuned.reused  # the same lists in another order tune to the same weights: the CSV stays as it is
    assert final_csv_state(config, workspace).state == "fresh"
    csv = workspace.submission_csv("ensemble")
    csv.write_bytes(csv.read_bytes() + b"")  # same bytes: still fresh
    assert final_csv_state(config, workspace).state == "fresh"
    csv.write_text(csv.read_text().replace("test", "Test", 1))
    assert "edited since it was written" in final_csv_state(config, workspace).reason


def test_weights_given_by_hand_stay_fresh_while_their_inputs_are_unchanged(tmp_path):
    folder, config, workspace = match_workspace(tmp_path)
    result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", "--weights", "1,2,1")
    assert result.exit_code == 0, result.output

    state = final_csv_state(config, workspace)
    assert state.state == "fresh" and "given" in state.reason and not state.tuned


def test_cli_shows_library_parameter_errors_as_its_flags(tmp_path):
    folder, _, _ = match_workspace(tmp_path)
    base = tmp_path / "work"
    cases = {("--tune", "--trials", "0"): "--trials 0: must be >= 1",
             ("--tune", "--select", "greedy", "--rounds", "0"): "--rounds 0: must be >= 1",
             ("--tune", "--select", "x"): "--select x: must be one of optuna, greedy",
             ("--weights", "1,1"): "--weights 1,1: has 2 values for 3 CSVs",
             ("--weights", "a,b"): "--weights a,b: must be comma-separated numbers",
             ("--tune", "--weights", "1,1,1"): "--weights 1,1,1: cannot be given with tune=True",
             ("--model", "strict"): "--model strict: only name the models of method='concat' or 'score'"}
    for args, message in cases.items():
        result = invoke("ensemble", "-c", folder, "--workspace", base, *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)


def test_ensemble_of_one_model_says_its_csv_is_the_final_csv(tmp_path):
    folder, _, workspace = match_workspace(tmp_path, quality={"only": (0.6, 2)})
    for args in ((), ("--tune",)):
        result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", *args)

        assert result.exit_code == 1
        assert (f"with one model (only), its CSV {workspace.submission_csv('only')} is the final CSV itself"
                in result.stderr), result.stderr
        assert "run compkit predict" not in result.stderr


def test_ensemble_with_model_csvs_missing_names_them_and_says_to_predict(tmp_path):
    folder, _, workspace = match_workspace(tmp_path)
    for name in ("loose", "other"):
        workspace.submission_csv(name).unlink()

    result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work")

    assert result.exit_code == 1
    assert "found 1 of 3 model CSVs" in result.stderr, result.stderr
    assert "(missing: loose, other): run compkit predict -c ens-tune first" in result.stderr

"""Choosing what runs: --model (repeated or comma-separated) on every command, enabled = false, --fold 0,1,
--set KEY=VALUE overrides, a default competition, and `init --from`."""

import re
import shutil

import pytest
from conftest import TUNED_SLUG, matcher_competition
from test_cli_pipeline import invoke

from compkit.config import load_config, model_names, parse_config, resolve_config_path
from compkit.errors import ConfigError, ParameterError
from compkit.status import stage_statuses
from compkit.submit.kernel_run import WEIGHTS_MARKER
from compkit.workspace import Workspace, read_json


def states(output: str) -> dict[str, str]:
    return dict(re.findall(r"│ ((?:data|folds|train|embed|tune|predict|ensemble)[\w -]*?)\s+│ "
                           r"(fresh|stale|present|missing|damaged)\b", output))


def test_model_names_take_repeats_and_commas_in_order_once():
    assert model_names(["phash,tfidf-word", " tfidf-char ", "phash"]) == ["phash", "tfidf-word", "tfidf-char"]


def test_a_combination_brings_its_members_and_an_unknown_model_is_refused():
    config = load_config("demo-match", models=["union-image-text"])
    assert [m.name for m in config.models] == ["convnext-64", "minilm", "union-image-text"]
    with pytest.raises(ParameterError, match=r"model='nope': is not a model of demo-match \(declared: tfidf-word"):
        load_config("demo-match", models=["phash,nope"])


def test_a_disabled_model_is_checked_then_left_out():
    text = resolve_config_path("demo-match").read_text()
    disabled = text.replace('name = "minilm"\n', 'name = "minilm"\nenabled = false\n')
    with pytest.raises(ConfigError, match="'union-image-text' combines 'minilm', which has enabled = false"):
        parse_config(disabled, source="x.toml")
    also = disabled.replace('name = "union-image-text"\n', 'name = "union-image-text"\nenabled = false\n')
    also = re.sub(r'(name = "concat-all"\n)', r"\1enabled = false\n", also)
    names = [m.name for m in parse_config(also, source="x.toml").models]
    assert "minilm" not in names and "union-image-text" not in names and "phash" in names
    typo = also.replace('name = "minilm"\nenabled = false\n', 'name = "minilm"\nenabled = false\nepoch = 3\n')
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(typo, source="x.toml")
    with pytest.raises(ConfigError, match=r"models\[\d\]\.enabled: expected true or false"):
        parse_config(also.replace("enabled = false", 'enabled = "no"', 1), source="x.toml")


def test_set_overrides_enter_the_fingerprints_and_bad_ones_are_one_line(tuned_workspace):
    folder, base = tuned_workspace
    plain = invoke("status", "-c", folder, "--workspace", base)
    assert states(plain.output)["embed tfidf-word"] == "fresh"
    changed = invoke("status", "-c", folder, "--workspace", base, "--set", "models.tfidf-word.min_df=2")
    assert states(changed.output)["embed tfidf-word"] == "stale"
    assert states(changed.output)["embed phash"] == "fresh"
    refolded = invoke("status", "-c", folder, "--workspace", base, "--set", "folds.n_splits=4")
    assert states(refolded.output)["folds"] == "stale"  # made from the config's 3
    bad = invoke("status", "-c", folder, "--workspace", base, "--set", "models.tfidf-word.min_df=many")
    assert bad.exit_code == 1 and "with --set models.tfidf-word.min_df=many" in bad.output and "min_df" in bad.output
    unknown = invoke("fetch", "-c", folder, "--workspace", base, "--set", "models.nope.min_df=2")
    assert unknown.exit_code == 1 and "--set models.nope.min_df=2: no model named 'nope'" in unknown.output
    shapeless = invoke("folds", "-c", folder, "--workspace", base, "--set", "n_splits")
    assert shapeless.exit_code == 1 and "--set n_splits: must be KEY=VALUE" in shapeless.output


def test_run_status_and_tuning_judge_the_selected_models_only(tmp_path):
    folder = matcher_competition(tmp_path, "chosen")
    work = tmp_path / "work"
    ran = invoke("run", "-c", folder, "--workspace", work, "--trials", "2", "--model", "phash,tfidf-word")
    assert ran.exit_code == 0, ran.output
    chosen = states(invoke("status", "-c", folder, "--workspace", work, "--model", "tfidf-word",
                           "--model", "phash").output)
    assert set(chosen.values()) == {"fresh"} and "tune tfidf-char" not in chosen
    everything = invoke("status", "-c", folder, "--workspace", work)
    every = states(everything.output)
    assert every["tune tfidf-char"] == "missing" and every["tune ensemble"] == "stale"
    detail = {s.stage: s.detail for s in stage_statuses(load_config(str(folder)), Workspace(work / "chosen"))}
    assert detail["tune ensemble"] == "tuned for other models (tfidf-word, phash)"
    assert "next: compkit embed -c chosen --model tfidf-char" in everything.output
    assert re.fullmatch(r"OOF 0\.\d{4} after 2 trials \(all\), trivial answer 0\.\d{4}", detail["tune phash"])


def test_fold_lists_repeat_or_separate_with_commas(tuned_workspace):
    folder, base = tuned_workspace
    space = Workspace(base / TUNED_SLUG)
    shutil.rmtree(space.root / "embeddings" / "phash")
    embedded = invoke("embed", "-c", folder, "--workspace", base, "--model", "phash", "--fold", "0,2")
    assert embedded.exit_code == 0, embedded.output
    assert sorted(p.name for p in (space.root / "embeddings" / "phash").iterdir() if p.is_dir()) == ["fold0", "fold2"]
    again = invoke("embed", "-c", folder, "--workspace", base, "--model", "phash", "--fold", "1", "--fold", "2")
    assert again.exit_code == 0 and (space.root / "embeddings" / "phash" / "fold1").is_dir()
    bad = invoke("embed", "-c", folder, "--workspace", base, "--fold", "0,7")
    assert bad.exit_code == 1 and "--fold 7: must be between 0 and 2" in bad.output


def test_the_default_competition_comes_from_the_environment_or_compkit_toml(tuned_workspace, tmp_path, monkeypatch):
    folder, base = tuned_workspace
    monkeypatch.chdir(tmp_path)
    missing = invoke("status", "--workspace", base)
    assert missing.exit_code == 1 and "no competition given: pass -c SLUG" in missing.output
    monkeypatch.setenv("COMPKIT_COMPETITION", str(folder))
    assert set(states(invoke("status", "--workspace", base).output).values()) == {"fresh"}
    monkeypatch.delenv("COMPKIT_COMPETITION")
    (tmp_path / "compkit.toml").write_text(f'competition = "{folder}"\n')
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # found in a folder above too
    assert set(states(invoke("status", "--workspace", base).output).values()) == {"fresh"}


def test_init_from_copies_a_shipped_config_under_the_new_slug(tmp_path):
    made = invoke("init", "my-shopee", "--from", "demo-match", "--dir", tmp_path)
    assert made.exit_code == 0, made.output
    config = load_config(str(tmp_path / "my-shopee"))
    assert config.slug == "my-shopee" and [m.name for m in config.models] == [
        m.name for m in load_config("demo-match").models]
    both = invoke("init", "other", "--from", "demo-match", "--task", "match", "--dir", tmp_path)
    assert both.exit_code == 1 and "give exactly one of" in both.output


def test_the_kernel_runs_the_selected_models_with_the_same_overrides(tuned_workspace, kaggle_home):
    folder, base = tuned_workspace
    pushed = invoke("submit", "-c", folder, "--workspace", base, "--kernel", "--kernel-id",
                    "compkit-tester/compkit-chosen", "--dry-run", "--model", "phash,tfidf-word",
                    "--set", "title=chosen")
    assert pushed.exit_code == 0, pushed.output
    marker = read_json(Workspace(base / TUNED_SLUG).kernel_folder.weights / WEIGHTS_MARKER)
    assert marker["models"] == ["tfidf-word", "phash"] and marker["overrides"] == ["title=chosen"]


def test_folds_chosen_by_options_outlive_the_config_until_folds_runs_plainly(tuned_workspace):
    folder, base = tuned_workspace
    assert invoke("folds", "-c", folder, "--workspace", base, "--n-splits", "4").exit_code == 0
    assert states(invoke("status", "-c", folder, "--workspace", base).output)["folds"] == "fresh"
    assert invoke("folds", "-c", folder, "--workspace", base).exit_code == 0  # the config's 3 again
    assert Workspace(base / TUNED_SLUG).fold_count() == 3

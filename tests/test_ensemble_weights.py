"""Ensemble tuning on OOF CSVs: exact objectives, greedy (with replacement) and Optuna, the tuned JSON's life."""

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from test_ensemble_vote import IDENTIFY, MATCH, random_match_files, write
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.data.folds import build_folds
from compkit.ensemble.ballots import MatchVotes, RankVotes
from compkit.ensemble.objective import RankMAP, VoteF1
from compkit.ensemble.vote import ensemble, load_inputs, rank_votes, vote_matches
from compkit.ensemble.weights import (
    cross_fitted_score,
    greedy_selection,
    oof_truth,
    optuna_selection,
    read_tuned_ensemble,
    tune_ensemble,
)
from compkit.errors import DataError, StaleArtifactError
from compkit.metrics import map_at_5, mean_row_f1
from compkit.workspace import Workspace

runner = CliRunner()
MODELS = ("strict", "loose", "other")

CONFIG = """
slug = "{slug}"
task = "{task}"
source = "local"
[data]
train = "train.csv"
test = "test.csv"
solution = "solution.csv"
[columns]
id = "{id}"
label = "{label}"
text = "title"
[folds]
n_splits = 2
seed = 0
{models}
[submission]
id_column = "{id}"
prediction_column = "{column}"
max_predictions = {max_predictions}
"""


def pair_lists(groups: np.ndarray, rng, *, recall: float, false_pairs: int, self_pairs: bool = True) -> list[list[int]]:
    """Return each row's predicted rows: each true partner with probability `recall`, plus random false ones."""
    order = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[order], groups)
    ends = np.searchsorted(groups[order], groups, side="right")
    rows = []
    for row in range(len(groups)):  # test data, not library code
        partners = [j for j in order[starts[row] : ends[row]] if j != row and rng.random() < recall]
        strangers = rng.choice(len(groups), size=rng.poisson(false_pairs), replace=True).tolist()
        rows.append(sorted({*partners, *strangers, *([row] if self_pairs else [])}))
    return rows


def match_frame(ids, rows) -> pd.DataFrame:
    return pd.DataFrame({"posting_id": ids, "matches": [" ".join(ids[j] for j in row) for row in rows]})


def complementary_match_inputs(tmp_path, n_groups=150, seed=0):
    """Three models that each miss different true pairs and add different false ones."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), rng.integers(2, 7, size=n_groups))
    ids = np.array([f"p{i}" for i in range(len(groups))], dtype=object)
    paths = [write(tmp_path, name, match_frame(ids, pair_lists(groups, rng, recall=0.6, false_pairs=2)))
             for name in MODELS]
    return ids, groups, load_inputs(MATCH, paths, expected_ids=ids)


def test_vote_objective_is_the_f1_of_the_written_vote_for_any_weights_and_threshold(tmp_path):
    rng = np.random.default_rng(3)
    ids, paths, _ = random_match_files(tmp_path, rng, n_rows=200)
    submissions = load_inputs(MATCH, paths, expected_ids=ids)
    labels = rng.integers(0, 40, size=len(ids))
    objective = VoteF1(MatchVotes.from_submissions(submissions), labels)
    for weights, threshold in [(np.ones(6), 0.5), (np.array([3.0, 0, 1, 1, 0, 2]), 3 / 7), *(
            (rng.random(6), rng.uniform(0.01, 1)) for _ in range(10))]:
        written = mean_row_f1(labels, *vote_matches(submissions, weights, threshold))
        assert objective.score(weights, threshold) == pytest.approx(written, abs=1e-12)
    weights = np.array([2.0, 1, 1, 0, 1, 1])
    score, threshold = objective.best(weights)
    every_level = [mean_row_f1(labels, *vote_matches(submissions, weights, t)) for t in np.arange(1, 7) / 6]
    assert score == pytest.approx(max(every_level), abs=1e-12)
    assert mean_row_f1(labels, *vote_matches(submissions, weights, threshold)) == pytest.approx(score, abs=1e-12)


def test_rank_objective_is_the_map_of_the_written_vote_ties_included(tmp_path):
    rng = np.random.default_rng(4)
    ids = [f"i{n}.jpg" for n in range(300)]
    pool = [f"w{n}" for n in range(15)] + ["new_individual"]
    paths = [write(tmp_path, f"m{k}", pd.DataFrame({"image": ids, "predictions": [
        " ".join(rng.choice(pool, size=rng.integers(1, 6), replace=False)) for _ in ids]})) for k in range(4)]
    submissions = load_inputs(IDENTIFY, paths, expected_ids=ids)
    truth = rng.choice([*pool, "never-predicted"], size=len(ids))
    objective = RankMAP(RankVotes.from_submissions(submissions), truth)
    for weights in [np.ones(4), np.array([1.0, 2, 1, 2]), np.array([0.0, 1, 0, 0]), *rng.random((10, 4))]:
        assert objective.score(weights) == pytest.approx(map_at_5(truth, rank_votes(submissions, weights)), abs=1e-12)


def test_both_objectives_score_a_subset_of_rows_as_the_mean_of_its_row_scores(tmp_path):
    rng = np.random.default_rng(8)
    _, groups, submissions = complementary_match_inputs(tmp_path)
    vote = VoteF1(MatchVotes.from_submissions(submissions), groups)
    rows = rng.random(len(groups)) < 0.4
    weights = np.array([1.0, 0.5, 0.2])
    assert vote.score(weights, 0.3, rows) == pytest.approx(vote.row_scores(weights, 0.3)[rows].mean(), abs=1e-12)
    score, threshold = vote.best(weights, rows)
    assert score == pytest.approx(vote.score(weights, threshold, rows), abs=1e-12)
    assert score >= max(vote.score(weights, level, rows) for level in vote.votes.vote_levels(weights))
    ids, truth = identify_rows(tmp_path, rng)
    rank = RankMAP(RankVotes.from_submissions(ids), truth)
    rows = rng.random(len(truth)) < 0.4
    assert rank.score(weights[:2], rows=rows) == pytest.approx(rank.row_scores(weights[:2])[rows].mean(), abs=1e-12)


def identify_rows(tmp_path, rng, n_rows=120):
    """Return (two identify submissions of random lists, a random truth)."""
    ids = [f"i{n}.jpg" for n in range(n_rows)]
    pool = [f"w{n}" for n in range(10)] + ["new_individual"]
    paths = [write(tmp_path, f"r{k}", pd.DataFrame({"image": ids, "predictions": [
        " ".join(rng.choice(pool, size=rng.integers(1, 6), replace=False)) for _ in ids]})) for k in range(2)]
    return load_inputs(IDENTIFY, paths, expected_ids=ids), rng.choice(pool, size=n_rows)


def test_cross_fitted_score_scores_each_fold_at_weights_tuned_on_the_other_folds(tmp_path):
    # m0 lists the truth first on fold 0's rows and five wrong ids on fold 1's; m1 the reverse. Tuned on all
    # rows the ensemble scores at least a single model's 0.5; tuned on one fold it picks that fold's model
    # alone, whose five wrong ids push the truth out of the other fold's top 5: out of sample it scores 0.
    ids = [f"i{n}.jpg" for n in range(100)]
    folds = np.arange(100) % 2
    truth = np.array([f"w{n}" for n in range(100)], dtype=object)
    def lists(model: int) -> list[str]:
        return [f"w{n} a{model}{n}" if fold == model else " ".join(f"{c}{model}.{n}" for c in "abcde")
                for n, fold in enumerate(folds)]

    paths = [write(tmp_path, f"m{m}", pd.DataFrame({"image": ids, "predictions": lists(m)})) for m in (0, 1)]
    objective = RankMAP(RankVotes.from_submissions(load_inputs(IDENTIFY, paths, expected_ids=ids)), truth)
    weights, threshold, _ = greedy_selection(objective, 2, rounds=3)
    assert objective.score(weights) >= 0.5
    assert cross_fitted_score(objective, folds, ["m0", "m1"], task="identify", select="greedy", trials=1,
                              rounds=3) == 0.0


@pytest.mark.parametrize("select", ["greedy", "optuna"])
def test_cross_fitted_score_is_the_tuned_score_when_every_fold_holds_the_same_rows(tmp_path, select):
    (tmp_path / "once").mkdir()
    _, groups, submissions = complementary_match_inputs(tmp_path / "once")
    twice = np.concatenate([groups, groups + groups.max() + 1])  # a second copy of every row, in other groups
    ids = np.array([f"p{i}" for i in range(len(twice))], dtype=object)
    rows = [[*s.indices[s.indptr[r]:s.indptr[r + 1]]] for s in submissions for r in range(len(groups))]
    paths = []
    for k, name in enumerate(MODELS):
        own = rows[k * len(groups):(k + 1) * len(groups)]
        copied = own + [[j + len(groups) for j in row] for row in own]
        paths.append(write(tmp_path, name, match_frame(ids, copied)))
    objective = VoteF1(MatchVotes.from_submissions(load_inputs(MATCH, paths, expected_ids=ids)), twice)
    folds = np.repeat([0, 1], len(groups))
    if select == "greedy":
        weights, threshold, _ = greedy_selection(objective, 3, rounds=5)
    else:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        weights, threshold, _ = optuna_selection(objective, MODELS, study, task="match", trials=15)
    held_out = cross_fitted_score(objective, folds, MODELS, task="match", select=select, trials=15, rounds=5)
    assert held_out == pytest.approx(objective.score(weights, threshold), abs=1e-12)


def test_greedy_and_optuna_beat_every_single_model_on_complementary_models(tmp_path):
    _, groups, submissions = complementary_match_inputs(tmp_path)
    objective = VoteF1(MatchVotes.from_submissions(submissions), groups)
    best_single = max(mean_row_f1(groups, s.indptr, s.indices) for s in submissions)
    weights, threshold, detail = greedy_selection(objective, 3, rounds=8)
    assert objective.score(weights, threshold) > best_single + 0.03
    assert len(detail["trajectory"]) == 8 and weights.sum() <= len(detail["initial"]) + 8
    assert (weights == weights.round()).all()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    weights, threshold, _ = optuna_selection(objective, MODELS, study, task="match", trials=40)
    assert objective.score(weights, threshold) > best_single + 0.03


def test_rank_weights_tuned_both_ways_beat_every_single_model_on_complementary_lists(tmp_path):
    # Each model ranks the true individual first on its own half of the images and fourth elsewhere, behind
    # wrong ids that the other model does not share: their reciprocal-rank sum puts the truth first.
    rng = np.random.default_rng(6)
    ids = [f"i{n}.jpg" for n in range(200)]
    truth = rng.choice([f"w{n}" for n in range(40)], size=len(ids))
    paths = []
    for model in range(2):
        strong = (np.arange(len(ids)) % 2) == model
        rows = [f"{t} x{model}{n} y{model}{n} z{model}{n}" if good else f"x{model}{n} y{model}{n} z{model}{n} {t}"
                for n, (t, good) in enumerate(zip(truth, strong, strict=True))]
        paths.append(write(tmp_path, f"m{model}", pd.DataFrame({"image": ids, "predictions": rows})))
    submissions = load_inputs(IDENTIFY, paths, expected_ids=ids)
    objective = RankMAP(RankVotes.from_submissions(submissions), truth)
    best_single = max(map_at_5(truth, s.predictions) for s in submissions)
    assert best_single == pytest.approx(0.5 + 0.5 / 4)
    weights, threshold, _ = greedy_selection(objective, 2, rounds=4)
    assert threshold is None and objective.score(weights) == pytest.approx(1.0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    weights, _, _ = optuna_selection(objective, ["m0", "m1"], study, task="identify", trials=10)
    assert objective.score(weights) == pytest.approx(1.0)


def test_greedy_starts_from_the_best_models_together_when_no_pair_beats_the_best_one(tmp_path):
    # strong alone beats its union and its intersection with either weak model, so a greedy step from strong
    # alone finds nothing; the three together (a majority vote) beat it clearly.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(150), rng.integers(2, 7, size=150))
    ids = np.array([f"p{i}" for i in range(len(groups))], dtype=object)
    quality = {"weak_a": (0.8, 3), "weak_b": (0.8, 3), "strong": (0.95, 0.3)}
    paths = [write(tmp_path, name, match_frame(ids, pair_lists(groups, rng, recall=recall, false_pairs=false)))
             for name, (recall, false) in quality.items()]
    objective = VoteF1(MatchVotes.from_submissions(load_inputs(MATCH, paths, expected_ids=ids)), groups)
    strong = objective.best(np.array([0.0, 0, 1]))[0]
    assert all(objective.best(np.array([1.0, 0, 1]) if weak == 0 else np.array([0.0, 1, 1]))[0] < strong
               for weak in (0, 1))
    weights, threshold, detail = greedy_selection(objective, 3, rounds=4)
    assert detail["initial"] == [2, 1, 0]
    assert objective.score(weights, threshold) > strong + 0.02


def test_greedy_selects_with_replacement_when_one_model_deserves_two_votes(tmp_path):
    # precise: every kept pair true but half the pairs missed; noisy_a/noisy_b: find more, with many false
    # pairs each, but rarely the same false pair. Best: precise OR (noisy_a AND noisy_b) = weights 2, 1, 1
    # at a vote threshold of one half, which only adding `precise` twice reaches.
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(200), rng.integers(2, 8, size=200))
    ids = np.array([f"p{i}" for i in range(len(groups))], dtype=object)
    frames = {"noisy_a": pair_lists(groups, rng, recall=0.8, false_pairs=4),
              "noisy_b": pair_lists(groups, rng, recall=0.8, false_pairs=4),
              "precise": pair_lists(groups, rng, recall=0.5, false_pairs=0)}
    paths = [write(tmp_path, name, match_frame(ids, rows)) for name, rows in frames.items()]
    objective = VoteF1(MatchVotes.from_submissions(load_inputs(MATCH, paths, expected_ids=ids)), groups)
    weights, threshold, detail = greedy_selection(objective, 3, rounds=6)
    assert weights.tolist() == [1.0, 1.0, 2.0] and threshold == 0.5
    added = [step["added"] for step in detail["trajectory"]]
    assert added.count(2) >= 2
    equal_weights = objective.best(np.ones(3))[0]
    assert objective.score(weights, threshold) > equal_weights


def match_workspace(tmp_path: Path, *, seed: int = 0, quality: dict[str, tuple[float, float]] | None = None):
    """Return (folder, config, workspace) of a match competition with folds, and OOF and test CSVs of its models.

    `quality` gives each model's (recall, false pairs per row); default: MODELS, each (0.6, 2).
    """
    rng = np.random.default_rng(seed)
    quality = quality or {name: (0.6, 2) for name in MODELS}
    models = "".join(f'[[models]]\nname = "{name}"\nkind = "tfidf"\n' for name in quality)
    folder = tmp_path / "competitions" / "ens-tune"
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(CONFIG.format(
        slug="ens-tune", task="match", id="posting_id", label="label_group", column="matches", max_predictions=50,
        models=models))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    for table, n_groups in (("train", 80), ("test", 30)):
        groups = np.repeat(np.arange(n_groups), rng.integers(2, 6, size=n_groups))
        ids = np.array([f"{table}{i}" for i in range(len(groups))], dtype=object)
        frame = pd.DataFrame({"posting_id": ids, "label_group": [f"g{table}{g}" for g in groups], "title": "x"})
        workspace.data_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(workspace.data_dir / ("train.csv" if table == "train" else "solution.csv"), index=False)
        if table == "test":
            frame[["posting_id", "title"]].to_csv(workspace.data_dir / "test.csv", index=False)
        for name, (recall, false_pairs) in quality.items():
            lists = pair_lists(groups, rng, recall=recall, false_pairs=false_pairs)
            target = workspace.oof_csv(name) if table == "train" else workspace.submission_csv(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            match_frame(ids, lists).to_csv(target, index=False)
    build_folds(config, workspace)
    return folder, config, workspace


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_tuned_weights_are_saved_applied_by_ensemble_and_refused_once_an_oof_csv_changes(tmp_path):
    folder, config, workspace = match_workspace(tmp_path)
    tuned = tune_ensemble(config, workspace, select="greedy", rounds=6)
    stored = json.loads(workspace.tuned_ensemble.read_text())
    assert stored["weights"] == list(tuned.weights) and stored["vote_threshold"] == tuned.vote_threshold
    assert stored["ensemble_oof_score"] == tuned.score >= max(stored["oof_scores"].values())
    assert stored["cross_fitted_oof_score"] == tuned.cross_fitted_score <= tuned.score
    assert read_tuned_ensemble(config, workspace, list(MODELS)).cross_fitted_score == tuned.cross_fitted_score
    assert set(stored["oof_sha256"]) == set(MODELS)

    result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work")
    assert result.exit_code == 0, result.output
    assert "using the tuned weights" in result.stderr
    expected = ensemble(config, [workspace.submission_csv(m) for m in MODELS],
                        expected_ids=pd.read_csv(workspace.data_dir / "test.csv")["posting_id"].tolist(),
                        **tuned.ensemble_options())
    written = pd.read_csv(workspace.submission_csv("ensemble"), dtype=str, keep_default_na=False)
    assert written.equals(expected.frame.astype(str))
    assert re.search(r"ensemble\s+│\s+vote >= [\d.]+\s+│\s+\d\.\d{6}\s+│\s+\d\.\d{6}", result.stdout)

    oof = workspace.oof_csv("loose")
    pd.read_csv(oof).iloc[::-1].to_csv(oof, index=False)  # the same lists in another order: other bytes
    with pytest.raises(StaleArtifactError, match=r"stale, .*loose\.csv changed since it was tuned"):
        read_tuned_ensemble(config, workspace, list(MODELS))
    refused = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work")
    assert refused.exit_code == 1 and "loose.csv changed since it was tuned" in refused.stderr
    assert "Traceback" not in refused.output
    explicit = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", "--weights", "1,1,1")
    assert explicit.exit_code == 0, explicit.output


def test_cli_tune_prints_every_model_next_to_the_ensemble_with_test_scores(tmp_path):
    folder, _, workspace = match_workspace(tmp_path, seed=1)
    result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", "--tune", "--trials", "30")
    assert result.exit_code == 0, result.output
    rows = {m: re.search(rf"{m}\s+│\s+\S+\s+│\s+(\d\.\d{{6}})\s+│\s+(\d\.\d{{6}})", result.stdout) for m in MODELS}
    assert all(rows.values()), result.stdout
    ensemble_row = re.search(r"ensemble\s+│\s+vote >= [\d.]+\s+│\s+(\d\.\d{6})\s+│\s+(\d\.\d{6})", result.stdout)
    assert float(ensemble_row.group(1)) >= max(float(row.group(1)) for row in rows.values())
    assert json.loads(workspace.tuned_ensemble.read_text())["select"] == "optuna"
    assert result.stdout.strip().splitlines()[-1].endswith("ensemble.csv")

    again = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", "--tune", "--trials", "40")
    assert json.loads(workspace.tuned_ensemble.read_text())["n_trials"] == 40  # the same study, topped up
    assert again.exit_code == 0


def test_oof_csv_missing_a_training_id_is_refused_naming_the_file(tmp_path):
    _, config, workspace = match_workspace(tmp_path)
    oof = workspace.oof_csv("other")
    lines = oof.read_text().splitlines()
    oof.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"other\.csv: 1 of \d+ .*missing"):
        tune_ensemble(config, workspace, select="greedy")
    assert not workspace.tuned_ensemble.exists()


def test_oof_csv_listing_an_unknown_id_is_refused_naming_file_and_row(tmp_path):
    folder, _, workspace = match_workspace(tmp_path)
    oof = workspace.oof_csv("strict")
    lines = oof.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",test0"
    oof.write_text("\n".join(lines) + "\n")
    result = invoke("ensemble", "-c", folder, "--workspace", tmp_path / "work", "--tune", "--select", "greedy")
    assert result.exit_code == 1
    assert re.search(r"strict\.csv: row 2: matches lists 'test0'", result.stderr)


def test_identify_oof_truth_is_new_individual_for_individuals_of_one_fold(tmp_path):
    folder = tmp_path / "competitions" / "ens-id"
    folder.mkdir(parents=True)
    models = "".join(f'[[models]]\nname = "{name}"\nkind = "tfidf"\n' for name in MODELS[:2])
    (folder / "competition.toml").write_text(CONFIG.format(
        slug="ens-id", task="identify", id="image", label="individual_id", column="predictions", max_predictions=5,
        models=models).replace('test = "test.csv"\n', ""))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    individuals = ["a"] * 4 + ["b"] * 2 + ["c", "d", "e"]
    workspace.data_dir.mkdir(parents=True)
    pd.DataFrame({"image": [f"{i}.jpg" for i in range(9)], "individual_id": individuals, "title": "x"}).to_csv(
        workspace.data_dir / "train.csv", index=False)
    with pytest.warns(UserWarning):
        folds = build_folds(config, workspace).folds
    ids, truth = oof_truth(config, workspace)
    assert list(ids) == list(folds["image"])
    single = np.isin(individuals, ["c", "d", "e"])
    assert (truth[single] == "new_individual").all()
    assert (truth[~single] == np.array(individuals)[~single]).all()  # a and b are dealt to both folds


def test_pipeline_tunes_the_ensemble_and_reports_its_oof_score(tmp_path):
    from test_cli_pipeline import tiny_competition

    from compkit.pipeline import ENSEMBLE_SELECT, run_pipeline

    competition = tiny_competition(tmp_path, "demo-match")
    toml = competition / "competition.toml"  # the matchers only: no training, so the test stays fast
    toml.write_text(re.sub(r'\[\[models\]\]\nname = "[^"]+"\nkind = "(?!tfidf|phash)\w+".*?(?=\n\[|\Z)', "",
                           toml.read_text(), flags=re.S))
    config = load_config(str(competition))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    report = run_pipeline(config, workspace, trials=5)
    singles = [report.oof_scores[m.name] for m in config.models]
    assert report.oof_scores["ensemble"] >= max(singles) - 1e-9
    tuned = json.loads(workspace.tuned_ensemble.read_text())
    assert tuned["select"] == ENSEMBLE_SELECT
    assert tuned["n_trials"] == 20  # four times each model's 5
    stage, outcome = report.stages[-1]
    assert stage == "ensemble" and f"{ENSEMBLE_SELECT}-tuned" in outcome
    again = run_pipeline(config, workspace, trials=0)
    assert "fresh" in again.stages[-1][1]

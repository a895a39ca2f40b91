"""Ensembling submission CSVs: weighted votes (match), reciprocal-rank votes (identify), validation first."""

import numpy as np
import pandas as pd
import pytest

from compkit.config import parse_config
from compkit.ensemble.vote import ensemble
from compkit.errors import ConfigError, DataError, ParameterError

BASE = """
slug = "ens"
task = "{task}"
source = "synthetic"
[synthetic]
[columns]
id = "{id}"
label = "label"
[submission]
id_column = "{id}"
prediction_column = "{column}"
max_predictions = {max_predictions}
"""
MATCH = parse_config(BASE.format(task="match", id="posting_id", column="matches", max_predictions=50), source="m")
IDENTIFY = parse_config(BASE.format(task="identify", id="image", column="predictions", max_predictions=5), source="i")


def write(tmp_path, name, frame):
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def random_match_files(tmp_path, rng, n_rows=60, n_models=6):
    ids = [f"p{i}" for i in range(n_rows)]
    paths, lists = [], []
    for model in range(n_models):
        rows = [sorted({i, *rng.choice(n_rows, size=rng.integers(0, 5), replace=False)}) for i in range(n_rows)]
        lists.append(rows)
        frame = pd.DataFrame({"posting_id": ids, "matches": [" ".join(ids[j] for j in row) for row in rows]})
        paths.append(write(tmp_path, f"model{model}", frame.sample(frac=1, random_state=model)))
    return ids, paths, lists


def test_vote_keeps_pairs_with_enough_weight_and_always_self(tmp_path):
    rng = np.random.default_rng(0)
    ids, paths, lists = random_match_files(tmp_path, rng)
    weights = [1.0, 2.0, 0.5, 1.0, 1.5, 1.0]
    result = ensemble(MATCH, paths, expected_ids=ids, weights=weights, vote_threshold=0.4)
    got = dict(zip(result.frame["posting_id"], result.frame["matches"], strict=True))
    for row in range(len(ids)):
        votes = {}
        for weight, rows in zip(weights, lists, strict=True):
            for j in rows[row]:
                votes[j] = votes.get(j, 0) + weight
        expected = {ids[j] for j, v in votes.items() if v >= 0.4 * sum(weights)} | {ids[row]}
        assert set(got[ids[row]].split()) == expected


def test_rank_votes_are_weighted_reciprocal_ranks_with_new_individual(tmp_path):
    ids = ["a.jpg", "b.jpg"]
    first = pd.DataFrame({"image": ids, "predictions": ["w1 w2 new_individual", "w3 w4 w5 w6 w7"]})
    second = pd.DataFrame({"image": ids[::-1], "predictions": ["w7 w3", "new_individual w2 w1"]})
    result = ensemble(IDENTIFY, [write(tmp_path, "m1", first), write(tmp_path, "m2", second)],
                      expected_ids=ids, weights=[1.0, 3.0])
    rows = dict(zip(result.frame["image"], result.frame["predictions"], strict=True))
    # a: w1 1+3/3=2, w2 1/2+3/2=2... new_individual 1/3+3=3.33 first; b: w7 1/5+3=3.2, w3 1+1.5=2.5
    assert rows["a.jpg"].split()[0] == "new_individual"
    assert rows["b.jpg"].split()[:2] == ["w7", "w3"]
    assert all(len(value.split()) <= 5 for value in rows.values())


def test_rank_scores_match_a_brute_force_reference(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"i{n}.jpg" for n in range(40)]
    pool = [f"w{n}" for n in range(12)] + ["new_individual"]
    tables = [[list(rng.choice(pool, size=rng.integers(1, 6), replace=False)) for _ in ids] for _ in range(4)]
    paths = [write(tmp_path, f"m{k}", pd.DataFrame({"image": ids, "predictions": [" ".join(t) for t in table]}))
             for k, table in enumerate(tables)]
    weights = [1.0, 0.5, 2.0, 1.0]
    result = ensemble(IDENTIFY, paths, expected_ids=ids, weights=weights)
    for row, predicted in enumerate(result.frame["predictions"]):
        scores = {}
        for weight, table in zip(weights, tables, strict=True):
            for rank, name in enumerate(table[row]):
                scores[name] = scores.get(name, 0) + weight / (rank + 1)
        got = predicted.split()
        assert [scores[name] for name in got] == sorted((scores[n] for n in got), reverse=True)
        best_left_out = max((v for k, v in scores.items() if k not in got), default=-1)
        assert min(scores[name] for name in got) >= best_left_out - 1e-12


def test_inputs_with_different_id_sets_are_refused_naming_the_file(tmp_path):
    ids = ["p0", "p1", "p2"]
    good = write(tmp_path, "good", pd.DataFrame({"posting_id": ids, "matches": ids}))
    other = write(tmp_path, "other", pd.DataFrame({"posting_id": ["p0", "p1", "p9"], "matches": ["p0", "p1", "p9"]}))
    with pytest.raises(DataError, match=r"other\.csv: row 3: unknown id 'p9'"):
        ensemble(MATCH, [good, other], expected_ids=ids)


def test_malformed_row_is_refused_before_combining(tmp_path):
    ids = ["a.jpg", "b.jpg"]
    good = write(tmp_path, "good", pd.DataFrame({"image": ids, "predictions": ["w1", "w2"]}))
    bad = write(tmp_path, "bad", pd.DataFrame({"image": ids, "predictions": ["w1 w2 w3 w4 w5 w6", "w2"]}))
    with pytest.raises(DataError, match=r"bad\.csv: row 1: 6 ids"):
        ensemble(IDENTIFY, [good, bad], expected_ids=ids)


def test_option_errors_are_clear(tmp_path):
    ids = ["p0", "p1"]
    paths = [write(tmp_path, f"m{k}", pd.DataFrame({"posting_id": ids, "matches": ids})) for k in range(2)]
    with pytest.raises(ConfigError, match="at least two CSVs"):
        ensemble(MATCH, paths[:1], expected_ids=ids)
    with pytest.raises(ParameterError, match="weights='1,1,1': has 3 values for 2 CSVs"):
        ensemble(MATCH, paths, expected_ids=ids, weights=[1, 1, 1])
    with pytest.raises(ParameterError, match="weights='0,0': must be non-negative and not all zero"):
        ensemble(MATCH, paths, expected_ids=ids, weights=[0, 0])
    with pytest.raises(ParameterError, match="method='rank': does not apply to a match competition"):
        ensemble(MATCH, paths, expected_ids=ids, method="rank")
    with pytest.raises(ParameterError, match=r"vote_threshold=0: must be in \(0, 1\]"):
        ensemble(MATCH, paths, expected_ids=ids, vote_threshold=0)


def test_six_models_unanimous_pairs_survive_any_threshold(tmp_path):
    rng = np.random.default_rng(2)
    ids, paths, lists = random_match_files(tmp_path, rng)
    result = ensemble(MATCH, paths, expected_ids=ids, vote_threshold=1.0)
    got = dict(zip(result.frame["posting_id"], result.frame["matches"], strict=True))
    for row in range(len(ids)):
        unanimous = set.intersection(*(set(rows[row]) for rows in lists))
        assert set(got[ids[row]].split()) == {ids[j] for j in unanimous} | {ids[row]}

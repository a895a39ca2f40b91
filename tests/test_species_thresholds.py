"""Per-species new_individual thresholds: exact per-species choice, fallback for rare species, config checks."""

import numpy as np
import pandas as pd
import pytest

from compkit.config import parse_config
from compkit.errors import ConfigError
from compkit.metrics import average_precision_at_5
from compkit.postprocess.new_individual import (
    LabelSpecies,
    Top5Objective,
    label_species,
    precision_by_threshold,
    query_thresholds,
)
from compkit.postprocess.top5 import NO_LABEL, insert_new_individual

NEW = -2
SPECIES = {"beluga": (0.8, 0.6), "humpback": (0.5, 0.3), "narwhal": (0.9, 0.1)}  # top score: known, new


def top5_queries(rng, counts: dict[str, int]):
    """Return top-5 labels and scores per query, its truth, and the labels' species (20 labels per species).

    Half the queries of a species are known individuals found first, half new ones; known queries' best
    score is near the species' first value, new ones' near its second.
    """
    labels, scores, truth, query_names = [], [], [], []
    for code, (name, count) in enumerate(counts.items()):
        known_score, new_score = SPECIES[name]
        for query in range(count):
            own = rng.choice(20, size=5, replace=False) + 20 * code
            top = (known_score if query % 2 else new_score) + rng.uniform(-0.04, 0.04)
            labels.append(own)
            scores.append(top - np.concatenate([[0.0], np.sort(rng.uniform(0.05, 0.3, size=4))]))
            truth.append(own[0] if query % 2 else NEW)
            query_names.append(name)
    species = LabelSpecies(np.repeat(np.arange(len(counts)), 20), np.array(list(counts)))
    return np.array(labels), np.array(scores, np.float32), np.array(truth), species, np.array(query_names)


def test_precision_by_threshold_equals_inserting_new_individual_then_map_at_5():
    rng = np.random.default_rng(0)
    labels = np.array([rng.choice(30, size=5, replace=False) for _ in range(300)])
    scores = -np.sort(-rng.uniform(0, 1, size=(300, 5)), axis=1).astype(np.float32)
    labels[:40, 3:], scores[:40, 3:] = NO_LABEL, -np.inf  # fewer than five individuals found
    truth = np.where(rng.random(300) < 0.3, NEW, np.where(rng.random(300) < 0.8, labels[:, 2], 99))
    grid = np.linspace(0, 1, 23, dtype=np.float32)
    got = precision_by_threshold(labels, scores, truth, NEW, grid)
    for column, threshold in enumerate(grid):
        expected = average_precision_at_5(truth, insert_new_individual(labels, scores, threshold, NEW))
        np.testing.assert_allclose(got[:, column], expected)


def test_per_species_thresholds_differ_per_species_and_rare_species_fall_back_to_the_global_one():
    rng = np.random.default_rng(1)
    labels, scores, truth, species, names = top5_queries(rng, {"beluga": 120, "humpback": 120, "narwhal": 12})
    objective = Top5Objective(lambda params: (labels, scores), truth, NEW, species)
    global_only = {"threshold": 0.55}
    refined = objective.with_species_thresholds(global_only, bounds=(0.2, 0.9), min_queries=50)

    assert set(refined) == {"threshold", "species_threshold:beluga", "species_threshold:humpback"}
    assert 0.64 < refined["species_threshold:beluga"] <= 0.76  # between its new and known queries' scores
    assert 0.34 < refined["species_threshold:humpback"] <= 0.46
    thresholds = query_thresholds(refined, labels, scores, species)
    np.testing.assert_allclose(thresholds[names == "narwhal"], 0.55)  # too few queries: the global threshold
    np.testing.assert_allclose(thresholds[names == "beluga"], refined["species_threshold:beluga"])
    assert objective(refined) > objective(global_only)
    by_species = pd.Series(average_precision_at_5(
        truth, insert_new_individual(labels, scores, thresholds, NEW))).groupby(names).mean()
    assert by_species["beluga"] == by_species["humpback"] == 1.0


def test_queries_without_any_individual_keep_the_global_threshold():
    species = LabelSpecies(np.array([0, 1]), np.array(["beluga", "humpback"]))
    labels = np.array([[1, 0, NO_LABEL, NO_LABEL, NO_LABEL], [NO_LABEL] * 5])
    scores = np.array([[0.9, 0.2] + [-np.inf] * 3, [-np.inf] * 5], dtype=np.float32)
    params = {"threshold": 0.5, "species_threshold:humpback": 0.95}
    np.testing.assert_allclose(query_thresholds(params, labels, scores, species), [0.95, 0.5])


def test_label_species_takes_each_individuals_species_in_factorize_order():
    found = label_species(pd.Series(["w2", "w1", "w2", "w3"]), pd.Series(["orca", "beluga", "orca", "orca"]))
    assert found.codes.tolist() == [0, 1, 0] and found.names.tolist() == ["orca", "beluga"]


IDENTIFY = """
slug = "species-test"
task = "{task}"
source = "local"

[columns]
id = "image"
label = "individual_id"
{species}

[postprocess]
new_individual_per_species = true
{mode}

[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
"""


@pytest.mark.parametrize(("task", "species", "mode", "message"), [
    ("identify", "", "", "needs task = 'identify' and columns.species"),
    ("match", 'species = "species"', "", "needs task = 'identify' and columns.species"),
    ("identify", 'species = "species"', 'new_individual = "fraction"', "needs new_individual = 'threshold'"),
])
def test_config_refuses_per_species_thresholds_it_cannot_apply(task, species, mode, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(IDENTIFY.format(task=task, species=species, mode=mode), source="species-test.toml")

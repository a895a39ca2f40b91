import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import lock_held_elsewhere

from compkit.config import parse_config
from compkit.data.folds import (
    build_folds,
    default_scheme_unseen_share,
    fold_settings,
    folds_inputs,
    load_folds,
    make_folds,
)
from compkit.errors import CompkitError, ConfigError, DataError, StaleArtifactError
from compkit.workspace import Workspace, is_fresh, manifest_path, read_manifest

IDENTIFY_TOML = """
slug = "tiny-identify"
task = "identify"
source = "local"
[columns]
id = "image"
label = "individual_id"
species = "species"
[folds]
n_splits = 3
seed = 7
[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
"""


def labelled_frame(sizes, *, seed=0):
    """Rows of labels L0, L1, ... with the given number of rows each, shuffled."""
    labels = np.repeat([f"L{i}" for i in range(len(sizes))], sizes)
    labels = np.random.default_rng(seed).permutation(labels)
    return pd.DataFrame({"id": [f"row{i}" for i in range(len(labels))], "label": labels})


def folds_per_label(frame, folds):
    return frame.assign(fold=folds).groupby("label")["fold"]


def test_group_folds_never_split_a_group():
    frame = labelled_frame(np.random.default_rng(1).integers(2, 9, 60))
    folds = make_folds(frame, strategy="group", n_splits=5, seed=0, label_column="label")
    assert (folds_per_label(frame, folds).nunique() == 1).all()
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]


def test_folds_are_deterministic_for_a_seed_and_change_with_it():
    frame = labelled_frame(np.random.default_rng(2).integers(2, 9, 60))
    first = make_folds(frame, strategy="group", n_splits=4, seed=3, label_column="label")
    again = make_folds(frame, strategy="group", n_splits=4, seed=3, label_column="label")
    other = make_folds(frame, strategy="group", n_splits=4, seed=4, label_column="label")
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_stratified_folds_spread_each_common_label_evenly():
    frame = labelled_frame([10, 7, 5, 12, 6])
    folds = make_folds(frame, strategy="stratified", n_splits=5, seed=0, label_column="label")
    counts = pd.crosstab(frame["label"], folds)
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()


def test_stratified_folds_put_rare_labels_in_distinct_folds_balance_sizes_and_warn():
    sizes = [8] * 10 + [3] * 7 + [2] * 9 + [1] * 23
    frame = labelled_frame(sizes)
    with pytest.warns(
        UserWarning, match=r"39 of 49 label values have fewer than n_splits=4 rows \(23 have one; 62 rows"
    ):
        folds = make_folds(frame, strategy="stratified", n_splits=4, seed=0, label_column="label")
    per_label = folds_per_label(frame, folds)
    assert (per_label.nunique() == per_label.size()).loc[per_label.size() < 4].all()
    fold_sizes = np.bincount(folds)
    assert fold_sizes.max() - fold_sizes.min() <= 1


def test_stratified_folds_of_frequent_labels_do_not_warn():
    frame = labelled_frame([6, 9, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_folds(frame, strategy="stratified", n_splits=5, seed=0, label_column="label")


def test_stratified_group_folds_keep_groups_whole():
    frame = labelled_frame([4] * 30).assign(
        species=lambda f: np.where(f["label"].str[-1].isin(list("02468")), "a", "b")
    )
    folds = make_folds(
        frame, strategy="stratified-group", n_splits=3, seed=0, label_column="species", group_column="label"
    )
    assert (folds_per_label(frame, folds).nunique() == 1).all()


@pytest.mark.parametrize("n_splits", [1, 0])
def test_fewer_than_two_splits_is_refused_like_sklearn(n_splits):
    with pytest.raises(ConfigError, match=f"requires n_splits >= 2, got n_splits={n_splits}"):
        make_folds(labelled_frame([3, 3]), strategy="stratified", n_splits=n_splits, seed=0, label_column="label")


def test_more_splits_than_groups_is_refused():
    with pytest.raises(DataError, match="need at least n_splits groups, got n_splits=5 with 3 distinct label values"):
        make_folds(labelled_frame([4, 4, 4]), strategy="group", n_splits=5, seed=0, label_column="label")


def test_stratified_group_without_group_column_and_unknown_strategy_are_refused():
    frame = labelled_frame([4, 4, 4])
    with pytest.raises(ConfigError, match="needs a group column"):
        make_folds(frame, strategy="stratified-group", n_splits=2, seed=0, label_column="label")
    with pytest.raises(ConfigError, match="unknown fold strategy 'random'"):
        make_folds(frame, strategy="random", n_splits=2, seed=0, label_column="label")


@pytest.fixture
def identify_workspace(tmp_path):
    config = parse_config(IDENTIFY_TOML, source="identify.toml")
    workspace = Workspace(tmp_path / "work")
    workspace.data_dir.mkdir(parents=True)
    frame = labelled_frame([5] * 6 + [2] * 3 + [1] * 4).rename(columns={"id": "image", "label": "individual_id"})
    frame["species"] = "beluga"
    frame.to_csv(workspace.data_dir / "train.csv", index=False)
    return config, workspace


def test_build_folds_writes_the_table_and_a_manifest_of_the_settings_used(identify_workspace):
    config, workspace = identify_workspace
    with pytest.warns(UserWarning):
        result = build_folds(config, workspace, n_splits=4)
    written = pd.read_csv(workspace.folds_path)
    assert list(written.columns) == ["image", "individual_id", "fold"]
    assert written["fold"].tolist() == result.folds["fold"].tolist()
    manifest = read_manifest(workspace.folds_path)
    assert manifest["inputs"]["folds"] == {"n_splits": 4, "strategy": "stratified", "seed": 7, "group": None,
                                          "unseen_fraction": None}
    assert result.summary["rows"].sum() == len(written) and len(result.summary) == 4
    assert result.summary["unseen_labels"].sum() == 4  # the four single-image individuals
    assert is_fresh(workspace.folds_path, folds_inputs(config, workspace, fold_settings(config, n_splits=4)))
    assert load_folds(config, workspace)["fold"].dtype == np.int64


def test_folds_become_stale_when_train_csv_changes(identify_workspace):
    config, workspace = identify_workspace
    with pytest.warns(UserWarning):
        build_folds(config, workspace)
    settings = fold_settings(config)
    assert is_fresh(workspace.folds_path, folds_inputs(config, workspace, settings))
    assert is_fresh(workspace.folds_path, folds_inputs(config, workspace, config.folds))  # as `status` asks
    with open(workspace.data_dir / "train.csv", "a") as train:
        train.write("extra.jpg,L0,beluga\n")
    assert not is_fresh(workspace.folds_path, folds_inputs(config, workspace, settings))
    with pytest.raises(StaleArtifactError, match="stale.*run: compkit folds -c tiny-identify"):
        load_folds(config, workspace)


def test_load_folds_without_folds_says_which_command_to_run(identify_workspace):
    config, workspace = identify_workspace
    with pytest.raises(StaleArtifactError, match=r"no folds yet \(run: compkit folds -c tiny-identify\)"):
        load_folds(config, workspace)
    workspace.folds_path.write_text("image,individual_id,fold\n")
    assert not manifest_path(workspace.folds_path).exists()
    with pytest.raises(StaleArtifactError, match="no readable manifest"):
        load_folds(config, workspace)


def test_build_folds_refuses_while_another_folds_runs_and_writes_nothing(identify_workspace):
    config, workspace = identify_workspace
    lock = workspace.stage_lock("folds")

    with lock_held_elsewhere(lock) as holder, pytest.raises(
        CompkitError, match=rf"^another compkit folds is running \(pid {holder.pid}\); it holds {lock}$"
    ):
        build_folds(config, workspace)

    assert not workspace.folds_path.exists() and not manifest_path(workspace.folds_path).exists()
    with pytest.warns(UserWarning):
        build_folds(config, workspace)
    assert load_folds(config, workspace)["fold"].nunique() == 3 and not lock.exists()


def test_build_folds_refuses_one_split(identify_workspace):
    config, workspace = identify_workspace
    with pytest.raises(ConfigError, match="n_splits=1"):
        build_folds(config, workspace, n_splits=1)


def happywhale_like_frame(seed=0):
    """About 1,500 individuals: many with one image, most with 2-6, a few with 20-40 (as in Happywhale)."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([np.ones(300, int), rng.integers(2, 7, 1100), rng.integers(20, 41, 40)])
    return labelled_frame(sizes, seed=seed)


def encounters(frame, *, seed):
    """An encounter per row: each individual's rows split over two encounters, each shared by 3 individuals."""
    codes = pd.factorize(frame["label"])[0]
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(codes.max() + 1)[codes]
    return (shuffled // 3) * 2 + rng.integers(0, 2, len(frame))


def test_a_group_tying_most_rows_together_warns_that_folds_are_unbalanced():
    frame = happywhale_like_frame(1)
    frame["encounter"] = np.random.default_rng(0).integers(0, 900, len(frame))  # links nearly everything
    with pytest.warns(UserWarning, match="one component of .* rows"):
        make_folds(frame, strategy="group", n_splits=4, seed=0, label_column="label", together_column="encounter")


@pytest.mark.parametrize("fraction", [0.15, 0.25, 0.4])
def test_unseen_fraction_makes_that_share_of_oof_queries_new_individuals(fraction):
    frame = happywhale_like_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        natural = make_folds(frame, strategy="stratified", n_splits=5, seed=0, label_column="label")
        folds = make_folds(frame, strategy="stratified", n_splits=5, seed=0, label_column="label",
                           unseen_fraction=fraction)
    unseen = (folds_per_label(frame, folds).transform("nunique") == 1).mean()
    assert abs(unseen - fraction) <= 0.02
    assert (folds_per_label(frame, natural).transform("nunique") == 1).mean() < 0.15
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 0.05 * len(frame)  # the folds stay balanced


def test_a_group_column_never_crosses_folds_in_either_task():
    frame = happywhale_like_frame(1)
    frame["encounter"] = encounters(frame, seed=3)
    for strategy in ("stratified", "group"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folds = make_folds(frame, strategy=strategy, n_splits=4, seed=0, label_column="label",
                               together_column="encounter")
        assert (frame.assign(fold=folds).groupby("encounter")["fold"].nunique() == 1).all()
        if strategy == "group":
            assert (folds_per_label(frame, folds).nunique() == 1).all()
        assert set(np.unique(folds)) == {0, 1, 2, 3}


def encounter_folds(frame, **options) -> np.ndarray:
    """Return 4 stratified folds (seed 0) that keep `frame`'s encounters whole, with the folds' warnings off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_folds(frame, strategy="stratified", n_splits=4, seed=0, label_column="label",
                          together_column="encounter", **options)


def test_unseen_fraction_with_a_group_keeps_both_promises():
    frame = happywhale_like_frame(2)
    frame["encounter"] = encounters(frame, seed=4)
    folds = encounter_folds(frame, unseen_fraction=0.3)
    assert (frame.assign(fold=folds).groupby("encounter")["fold"].nunique() == 1).all()
    assert (folds_per_label(frame, folds).transform("nunique") == 1).mean() >= 0.28


def test_unseen_fraction_counts_the_individuals_a_group_already_keeps_in_one_fold():
    frame = happywhale_like_frame(3)
    codes = pd.factorize(frame["label"])[0]
    rng = np.random.default_rng(5)
    own = rng.random(codes.max() + 1) < 0.3  # these individuals were photographed on one outing only
    frame["encounter"] = np.where(own[codes], codes * 10, codes * 10 + rng.integers(1, 4, len(frame)))
    folds = encounter_folds(frame, unseen_fraction=0.35)
    assert (frame.assign(fold=folds).groupby("encounter")["fold"].nunique() == 1).all()
    assert abs((folds_per_label(frame, folds).transform("nunique") == 1).mean() - 0.35) <= 0.02


def test_a_group_that_alone_makes_more_individuals_unseen_than_asked_is_warned_of():
    frame = happywhale_like_frame(3)
    frame["encounter"] = pd.factorize(frame["label"])[0] // 2  # an outing per two individuals: all unseen
    with pytest.warns(UserWarning, match=r"folds.group keeps 100.0% of the rows' individuals in one fold"):
        make_folds(frame, strategy="stratified", n_splits=4, seed=0, label_column="label",
                   together_column="encounter", unseen_fraction=0.3)


def test_unseen_fraction_defaults_to_the_expected_share_and_is_recorded(identify_workspace, tmp_path):
    _, workspace = identify_workspace
    config = parse_config(IDENTIFY_TOML.replace('source = "local"', 'source = "local"\nexpected_new_fraction = 0.4'),
                          source="identify.toml")
    assert fold_settings(config).unseen_fraction == 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build_folds(config, workspace)
    assert read_manifest(workspace.folds_path)["inputs"]["folds"]["unseen_fraction"] == 0.4
    assert result.unseen_share >= 0.3
    explicit = parse_config(IDENTIFY_TOML.replace("seed = 7", "seed = 7\nunseen_fraction = 0.1"), source="x.toml")
    assert fold_settings(explicit).unseen_fraction == 0.1
    with pytest.raises(StaleArtifactError):  # the config's fraction changed: folds.csv no longer fits it
        load_folds(explicit, workspace)


def test_the_default_schemes_unseen_share_is_that_of_plain_stratified_folds(identify_workspace):
    _, workspace = identify_workspace
    held = parse_config(IDENTIFY_TOML.replace("seed = 7", "seed = 7\nunseen_fraction = 0.4"), source="x.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build_folds(held, workspace)
        folds = load_folds(held, workspace)
        plain = make_folds(folds, strategy="stratified", n_splits=3, seed=7, label_column="individual_id")
    expected = (folds.assign(fold=plain).groupby("individual_id")["fold"].transform("nunique") == 1).mean()

    share = default_scheme_unseen_share(held, workspace)

    assert share == pytest.approx(expected) and share < result.unseen_share - 0.1
    default = parse_config(IDENTIFY_TOML, source="identify.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_folds(default, workspace)
    assert default_scheme_unseen_share(default, workspace) is None  # its folds are the default scheme's


@pytest.mark.parametrize(
    "text, message",
    [
        ("[folds]\nunseen_fraction = 1.5", "unseen_fraction must be in [0, 1)"),
        ("expected_new_fraction = -0.1", "expected_new_fraction must be in [0, 1)"),
    ],
)
def test_bad_unseen_fractions_are_refused_naming_the_key(text, message):
    toml = IDENTIFY_TOML.replace("[folds]\nn_splits = 3\nseed = 7\n", "")
    head, rest = toml.split("[columns]")
    toml = head + (text + "\n" if text.startswith("expected") else "") + "[columns]" + rest
    if text.startswith("[folds]"):
        toml += text + "\n"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        parse_config(toml, source="x.toml")


def test_unseen_fraction_is_refused_for_match():
    toml = IDENTIFY_TOML.replace('task = "identify"', 'task = "match"')
    toml = toml.replace("seed = 7", "seed = 7\nunseen_fraction = 0.2")
    with pytest.raises(ConfigError, match="unseen_fraction needs task = 'identify'"):
        parse_config(toml, source="x.toml")


def outings(frame, *, seed):
    """Each individual's own outings (encounters): a new one for about 30% of its photos, as the demo draws."""
    codes = pd.factorize(frame["label"])[0]
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    new = rng.random(len(frame)) < 0.3
    first = np.r_[True, codes[order][1:] != codes[order][:-1]]
    outing = np.empty(len(frame), dtype=np.int64)
    outing[order] = np.cumsum(first | new[order])  # numbered over all individuals: never shared
    return outing


@pytest.mark.parametrize("fraction", [0.2, 0.35, 0.5])
def test_unseen_group_fraction_makes_that_share_of_seen_queries_miss_their_group(fraction):
    from compkit.data.folds import unseen_group_share

    frame = happywhale_like_frame(4)
    frame["encounter"] = outings(frame, seed=6)
    whole = encounter_folds(frame, unseen_fraction=0.25)
    partly = encounter_folds(frame, unseen_fraction=0.25, unseen_group_fraction=fraction)
    labels, groups = frame["label"].to_numpy(), frame["encounter"].to_numpy()
    assert abs(unseen_group_share(partly, labels, groups) - fraction) <= 0.02
    assert unseen_group_share(whole, labels, groups) > 0.9  # every outing whole: no seen query meets its own
    assert abs((folds_per_label(frame, partly).transform("nunique") == 1).mean() - 0.25) <= 0.02
    kept = frame.assign(fold=partly).groupby("encounter")["fold"].nunique() == 1
    assert kept.mean() < 1.0  # some outings are split over folds, not all
    sizes = np.bincount(partly)
    assert sizes.max() - sizes.min() <= 0.05 * len(frame)


def test_unseen_group_share_counts_seen_rows_whose_group_no_other_fold_holds():
    from compkit.data.folds import unseen_group_share

    folds = np.array([0, 1, 0, 1, 0, 1])
    labels = np.array(["a", "a", "a", "b", "b", "c"])  # c is unseen: not counted
    groups = np.array(["x", "x", "y", "z", None, "w"], dtype=object)  # b's second row has no group
    # a@0 (x also in fold 1): has its group; a@1: has; a@0 (y only here): misses; b@1 (z only here): misses
    assert unseen_group_share(folds, labels, groups) == 0.5


def test_unseen_group_fraction_needs_a_group_and_stratified_folds():
    frame = happywhale_like_frame(1)
    frame["encounter"] = outings(frame, seed=1)
    with pytest.raises(ConfigError, match="unseen_group_fraction needs folds.group"):
        make_folds(frame, strategy="stratified", n_splits=4, seed=0, label_column="label", unseen_group_fraction=0.3)
    with pytest.raises(ConfigError, match="unseen_group_fraction needs strategy 'stratified'"):
        make_folds(frame, strategy="group", n_splits=4, seed=0, label_column="label", together_column="encounter",
                   unseen_group_fraction=0.3)
    toml = IDENTIFY_TOML.replace("seed = 7", "seed = 7\nunseen_group_fraction = 0.3")
    with pytest.raises(ConfigError, match=r"unseen_group_fraction needs group"):
        parse_config(toml, source="x.toml")
    with pytest.raises(ConfigError, match=r"unseen_group_fraction must be in \[0, 1\]"):
        parse_config(toml.replace("0.3", '1.5\ngroup = "encounter"'), source="x.toml")

"""Cross-validation folds built on scikit-learn's splitters, and the workspace's folds.csv.

`make_folds` returns a fold number per row, deterministic for a seed:

- "group": GroupKFold(shuffle=True) over `group_column` (default `label_column`): no group crosses folds. The
  match default groups by label_group, so a validation fold's products are unseen in training, as in the test.
- "stratified": StratifiedKFold(shuffle=True) by `label_column`, the identify default. Labels with fewer rows
  than n_splits cannot be stratified and are handled explicitly, with a warning giving their counts: their
  rows are dealt round-robin over the folds, smallest fold first, each label's rows consecutively. So a label
  with c < n_splits rows lands in c distinct folds (each of its rows keeps c - 1 training rows of the same
  label), and the single-row labels even out the fold sizes. A single-row label is absent from the training
  folds when its fold is validated: it scores as `new_individual`, which mirrors the test set.
- "stratified-group": StratifiedGroupKFold(shuffle=True): stratified by `label_column`, no `group_column`
  value crosses folds. `build_folds` uses it to keep each label (individual) in one fold, stratified by
  species (columns.species).

Two settings add rows that must share a fold (`_kept_together`), in every strategy:

- `group` (a column): rows with the same value never cross folds, so OOF sees the shift test will (an
  encounter, a camera, a seller). In "group" folds the column joins the label: rows linked by either share
  a fold.
- `unseen_fraction` (identify): whole individuals are held out in one fold each, drawn at random from those
  with several rows until, with the single-row ones and those `group` already keeps in one fold (all their
  rows in one component), about that share of the rows are unseen in the other folds, i.e. score as
  `new_individual` when their fold is validated. A group that alone makes more of them unseen is warned of.
- `unseen_group_fraction` (stratified, with `group`): only some groups are kept whole, drawn at random from
  those whose individuals all have rows outside them (so they stay seen) until, with the rows whose group
  value no other row holds, about that share of the seen individuals' rows have no row of their group in
  another fold. The individuals `unseen_fraction` holds out are drawn first and their groups are left alone.

Rows tied together form components (scipy's connected components over the tying values; a value only one
row holds ties nothing); the untied rows are stratified as above, then the components are dealt whole,
largest first, each to the fold that holds the fewest rows of its labels among the folds within its size of
the emptiest, and the emptiest of those: an individual whose rows lie in several components (encounters)
is spread over folds, so it stays seen.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig, FoldSettings, FoldStrategy
from compkit.data.tables import load_train, read_table
from compkit.errors import ConfigError, DataError, StaleArtifactError
from compkit.locking import exclusive_lock
from compkit.workspace import Workspace, file_sha256, is_fresh, read_manifest, write_csv, write_manifest

STRATEGIES: tuple[str, ...] = get_args(FoldStrategy)
FOLD_COLUMN = "fold"


@dataclass(frozen=True)
class FoldsResult:
    """What `build_folds` wrote: the folds table and a per-fold summary for display."""

    path: Path
    strategy: FoldStrategy
    n_splits: int
    seed: int
    folds: pd.DataFrame
    summary: pd.DataFrame
    unseen_fraction: float | None = None
    written: bool = True  # False: folds.csv was fresh and was read back
    unseen_group_share: float | None = None  # with a group: the seen rows' share whose group no other fold has

    @property
    def unseen_share(self) -> float:
        """Return the share of rows whose label no other fold holds: identify's new_individual OOF queries."""
        return float(self.summary["unseen_rows"].sum() / max(1, self.summary["rows"].sum()))


def make_folds(
    frame: pd.DataFrame,
    *,
    strategy: FoldStrategy,
    n_splits: int,
    seed: int,
    label_column: str,
    group_column: str | None = None,
    together_column: str | None = None,
    unseen_fraction: float | None = None,
    unseen_group_fraction: float | None = None,
) -> np.ndarray:
    """Return the fold number (0 to n_splits - 1) of each row of `frame`.

    `together_column` (the config's `folds.group`), `unseen_fraction` and `unseen_group_fraction` tie rows
    together as the module docstring says; `unseen_fraction` holds out values of `label_column` (stratified
    folds).
    """
    _check_split_request(frame, strategy=strategy, n_splits=n_splits,
                         columns=[label_column, group_column, together_column])
    if unseen_group_fraction is not None and together_column is None:
        raise ConfigError("folds.unseen_group_fraction needs folds.group (the column whose values are kept whole)")
    labels = frame[label_column].to_numpy()
    if together_column is not None or unseen_fraction is not None:
        return _folds_with_ties(frame, labels, strategy=strategy, n_splits=n_splits, seed=seed,
                                label_column=label_column, group_column=group_column,
                                together_column=together_column, unseen_fraction=unseen_fraction,
                                unseen_group_fraction=unseen_group_fraction)
    if strategy == "stratified":
        return _stratified_folds(labels, n_splits=n_splits, seed=seed, label_column=label_column)
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if strategy == "stratified-group" and group_column is None:
        raise ConfigError("strategy 'stratified-group' needs a group column")
    group_column = group_column or label_column
    groups = frame[group_column].to_numpy()
    n_groups = len(pd.unique(groups))
    if n_groups < n_splits:
        raise DataError(
            f"{strategy} folds need at least n_splits groups, got n_splits={n_splits} "
            f"with {n_groups} distinct {group_column} values"
        )
    if strategy == "group":
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return _folds_from_splits(splitter.split(np.zeros(len(frame)), labels, groups), len(frame))


def _folds_with_ties(frame, labels, *, strategy, n_splits, seed, label_column, group_column, together_column,
                     unseen_fraction, unseen_group_fraction) -> np.ndarray:
    """Return folds where the rows `_kept_together` share a fold, the other rows split by `strategy`."""
    for name, value in (("unseen_fraction", unseen_fraction), ("unseen_group_fraction", unseen_group_fraction)):
        if value is not None and strategy != "stratified":
            raise ConfigError(f"folds.{name} needs strategy 'stratified' (got {strategy!r}, which already "
                              "keeps each individual in one fold)")
    keys = []
    if together_column is not None and unseen_group_fraction is None:
        keys.append(frame[together_column].to_numpy())
    if strategy != "stratified":
        keys.append(frame[group_column or label_column].to_numpy())
    held = None
    if unseen_fraction is not None:
        whole = _whole_in_one_group(labels, keys[0]) if keys else None
        held = _held_out_labels(labels, unseen_fraction, n_splits=n_splits, seed=seed, already=whole)
        keys.append(np.where(held, labels, None))
    if unseen_group_fraction is not None:
        keys.append(_partly_kept_groups(frame[together_column].to_numpy(), labels, unseen_group_fraction,
                                        held=held, seed=seed))
    component = _kept_together(keys, len(frame))
    tied = component >= 0
    folds = np.full(len(frame), -1, dtype=np.int64)
    if (~tied).any():
        folds[~tied] = _stratified_folds(labels[~tied], n_splits=n_splits, seed=seed, label_column=label_column,
                                         among=" not held out or grouped")
    if tied.any():
        codes = pd.factorize(labels, use_na_sentinel=False)[0]
        folds[tied] = _deal_components(component[tied], codes[tied], folds[~tied], codes[~tied],
                                       n_splits=n_splits, seed=seed)
    return folds


def _whole_in_one_group(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Return a row mask of the labels whose rows the `groups` ties all join into one component: one fold
    holds each of them whole, so they are unseen when it is validated."""
    codes = pd.factorize(labels, use_na_sentinel=False)[0]
    component = _kept_together([groups], len(labels))
    frame = pd.DataFrame({"label": codes, "component": component})
    spread = frame.groupby("label")["component"].agg(["nunique", "min"])
    whole = (spread["nunique"] == 1) & (spread["min"] >= 0)
    return whole.to_numpy()[codes]


def _held_out_labels(labels: np.ndarray, fraction: float, *, n_splits: int, seed: int,
                     already: np.ndarray | None = None) -> np.ndarray:
    """Return a row mask of the individuals held out whole: with the single-row ones and those `already`
    unseen (rows of a label the group ties keep in one fold), about `fraction` of rows.

    Labels with fewer than n_splits rows go first (they would otherwise be spread thinly), in random order.
    """
    codes = pd.factorize(labels, use_na_sentinel=False)[0]
    sizes = np.bincount(codes)
    unseen = sizes[codes] == 1
    if already is not None:
        unseen |= already
    wanted = round(fraction * len(labels)) - int(unseen.sum())
    if already is not None and wanted < 0:
        warnings.warn(f"folds.group keeps {unseen.mean():.1%} of the rows' individuals in one fold (with the "
                      f"single-row ones): more than unseen_fraction={fraction}, so that many OOF queries are "
                      "new_individual", UserWarning, stacklevel=4)
    rng = np.random.default_rng(seed)
    candidates = np.setdiff1d(np.flatnonzero(sizes > 1), codes[unseen])
    candidates = candidates[rng.permutation(len(candidates))]
    candidates = candidates[np.argsort(sizes[candidates] >= n_splits, kind="stable")]
    taken = candidates[: int(np.searchsorted(np.cumsum(sizes[candidates]), wanted, side="right"))]
    return np.isin(codes, taken)


def _partly_kept_groups(groups: np.ndarray, labels: np.ndarray, fraction: float, *, held: np.ndarray | None,
                        seed: int) -> np.ndarray:
    """Return `groups` with None for every group left free: the ones kept whole are drawn at random among those
    whose individuals all have rows outside them (and none held out) until, with the rows whose group value
    only they hold, about `fraction` of the seen individuals' rows are in a group no other fold has."""
    codes = pd.factorize(labels, use_na_sentinel=False)[0]
    group_codes = pd.factorize(groups)[0]
    label_sizes = np.bincount(codes)
    seen = (label_sizes[codes] > 1) & (group_codes >= 0)
    if held is not None:
        seen &= ~held
    group_sizes = np.bincount(group_codes[group_codes >= 0], minlength=int(group_codes.max(initial=-1)) + 1)
    alone = seen & (group_sizes[np.clip(group_codes, 0, None)] == 1)
    pairs = pd.DataFrame({"group": group_codes, "label": codes, "seen": seen})[group_codes >= 0]
    in_group = pairs.groupby(["group", "label"])["seen"].transform("size").to_numpy()
    pairs = pairs.assign(keeps_seen=pairs["seen"].to_numpy() & (label_sizes[pairs["label"].to_numpy()] > in_group))
    eligible = pairs.groupby("group")["keeps_seen"].all()
    eligible = eligible.index.to_numpy()[eligible.to_numpy() & (group_sizes[eligible.index.to_numpy()] > 1)]
    rng = np.random.default_rng(seed)
    eligible = eligible[rng.permutation(len(eligible))]
    wanted = round(fraction * int(seen.sum())) - int(alone.sum())
    taken = eligible[: int(np.searchsorted(np.cumsum(group_sizes[eligible]), wanted, side="right"))]
    return np.where(np.isin(group_codes, taken) & (group_codes >= 0), groups, None)


def unseen_group_share(folds: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float | None:
    """Return the share of the seen rows (their label in another fold) whose group value no other fold holds;
    None when no row is seen with a group value."""
    frame = pd.DataFrame({"fold": folds, "label": labels, "group": groups})
    in_other_fold = {}
    for column in ("label", "group"):  # a row's value is in another fold when its rows span two folds or more
        spans = frame.dropna(subset=[column]).groupby(column)["fold"].nunique()
        in_other_fold[column] = frame[column].map(spans).fillna(0).to_numpy() > 1
    seen = in_other_fold["label"] & frame["group"].notna().to_numpy()
    return float((~in_other_fold["group"][seen]).mean()) if seen.any() else None


def _kept_together(keys: list[np.ndarray], n_rows: int) -> np.ndarray:
    """Return each row's component id (-1 for a row no key ties): rows sharing any key's value are one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, nodes, offset = [], [], 0
    for values in keys:  # a value held by one row ties nothing
        present = np.flatnonzero(pd.notna(values))
        codes = pd.factorize(values[present])[0]
        shared = np.bincount(codes)[codes] > 1 if len(codes) else np.zeros(0, dtype=bool)
        present, codes = present[shared], pd.factorize(codes[shared])[0]
        rows.append(present)
        nodes.append(codes + offset)
        offset += int(codes.max()) + 1 if len(codes) else 0
    rows, nodes = np.concatenate(rows), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, n_rows + nodes)), shape=(n_rows + offset,) * 2)
    _, component = connected_components(graph, directed=False)
    row_component = component[:n_rows]
    tied = np.zeros(n_rows, dtype=bool)
    tied[rows] = True
    return np.where(tied, pd.factorize(row_component)[0], -1) if tied.any() else np.full(n_rows, -1)


def _deal_components(component: np.ndarray, labels: np.ndarray, other_folds: np.ndarray, other_labels: np.ndarray,
                     *, n_splits: int, seed: int) -> np.ndarray:
    """Return a fold per row: components whole, largest first (random among equals), each to the fold that
    holds the fewest rows of its labels among those within a component's size of the emptiest, so that an
    individual whose rows are tied in several components stays seen; then the emptiest of those."""
    sizes = np.bincount(component)
    total = len(component) + len(other_folds)
    if sizes.max() > total / n_splits:
        warnings.warn(f"the fold ties (folds.group, label, held-out individuals) make one component of "
                      f"{sizes.max()} of {total} rows: more than a fold's share, so the folds are unbalanced",
                      UserWarning, stacklevel=4)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.bincount(other_folds, minlength=n_splits).astype(np.int64)
    n_labels = int(max(labels.max(initial=-1), other_labels.max(initial=-1))) + 1
    held = np.zeros((n_labels, n_splits), dtype=np.int64)  # rows of each label in each fold so far
    np.add.at(held, (other_labels, other_folds), 1)
    by_component = np.argsort(component, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)]
    fold_of_component = np.empty(len(sizes), dtype=np.int64)
    for index in order:  # one step per component (a group or held-out individual), not per row
        own = labels[by_component[starts[index]:starts[index + 1]]]
        near = load <= load.min() + sizes[index]
        overlap = np.where(near, held[own].sum(axis=0), np.iinfo(np.int64).max)
        fold = int(np.lexsort((load, overlap))[0])
        fold_of_component[index] = fold
        load[fold] += sizes[index]
        np.add.at(held[:, fold], own, 1)
    return fold_of_component[component]


def _check_split_request(frame: pd.DataFrame, *, strategy: str, n_splits: int, columns: list[str | None]) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown fold strategy {strategy!r} (choose {', '.join(STRATEGIES)})")
    _check_n_splits(n_splits)
    for column in columns:
        if column is not None and column not in frame.columns:
            raise ConfigError(f"fold column {column!r} is not in the table (columns: {', '.join(frame.columns)})")
    if len(frame) < n_splits:
        raise DataError(f"cannot split {len(frame)} rows into n_splits={n_splits} folds")


def _check_n_splits(n_splits: Any) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise ConfigError(f"k-fold cross-validation requires n_splits >= 2, got n_splits={n_splits!r}")


def _folds_from_splits(splits: Any, n_rows: int) -> np.ndarray:
    folds = np.full(n_rows, -1, dtype=np.int64)
    for fold, (_, validation_rows) in enumerate(splits):
        folds[validation_rows] = fold
    return folds


def _stratified_folds(labels: np.ndarray, *, n_splits: int, seed: int, label_column: str,
                      among: str = "") -> np.ndarray:
    """Return StratifiedKFold folds for labels with >= n_splits rows, rarer labels dealt as the docstring says."""
    from sklearn.model_selection import StratifiedKFold

    codes, uniques = pd.factorize(labels, use_na_sentinel=False)
    sizes = np.bincount(codes)
    row_is_common = sizes[codes] >= n_splits
    folds = np.full(len(labels), -1, dtype=np.int64)
    common_rows = np.flatnonzero(row_is_common)
    if len(common_rows):
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(common_rows)), codes[common_rows])
        folds[common_rows] = _folds_from_splits(splits, len(common_rows))
    rare_rows = np.flatnonzero(~row_is_common)
    if len(rare_rows):
        rare_labels = int((sizes < n_splits).sum())
        singletons = int((sizes == 1).sum())
        warnings.warn(
            f"{rare_labels} of {len(uniques)} {label_column} values{among} have fewer than n_splits={n_splits} rows "
            f"({singletons} have one; {len(rare_rows)} rows in all): they are spread over distinct folds instead "
            "of stratified, and single-row ones are unseen in training when their fold is validated",
            UserWarning,
            stacklevel=3,
        )
        folds[rare_rows] = _deal_rare_rows(codes[rare_rows], folds[common_rows], n_splits=n_splits, seed=seed)
    return folds


def _deal_rare_rows(rare_codes: np.ndarray, common_folds: np.ndarray, *, n_splits: int, seed: int) -> np.ndarray:
    """Return folds for rare rows: dealt round-robin, smallest folds first, each label's rows consecutively."""
    rng = np.random.default_rng(seed)
    label_order = rng.permutation(rare_codes.max() + 1)
    # Sort rows by the shuffled rank of their label; stable, so a label's rows stay together and in file order.
    deal_order = np.argsort(label_order[rare_codes], kind="stable")
    fold_order = np.argsort(np.bincount(common_folds, minlength=n_splits), kind="stable")
    folds = np.empty(len(rare_codes), dtype=np.int64)
    folds[deal_order] = fold_order[np.arange(len(rare_codes)) % n_splits]
    return folds


def fold_settings(
    config: CompetitionConfig, *, n_splits: int | None = None, strategy: str | None = None, seed: int | None = None
) -> FoldSettings:
    """Return the fold settings to use: the given overrides, else the config's (strategy defaulting by task).

    `unseen_fraction` defaults to the competition's `expected_new_fraction` in stratified identify folds.
    """
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"unknown fold strategy {strategy!r} (choose {', '.join(STRATEGIES)})")
    n_splits = config.folds.n_splits if n_splits is None else n_splits
    _check_n_splits(n_splits)
    seed = config.folds.seed if seed is None else seed
    strategy = strategy or config.fold_strategy
    unseen = config.folds.unseen_fraction
    if unseen is None and config.task == "identify" and strategy == "stratified":
        unseen = config.expected_new_fraction
    return FoldSettings(n_splits=n_splits, strategy=strategy, seed=seed, group=config.folds.group,
                        unseen_fraction=unseen, unseen_group_fraction=config.folds.unseen_group_fraction)


def recorded_settings(config: CompetitionConfig, recorded: dict[str, Any]) -> FoldSettings:
    """Return the settings folds.csv must have been made with: its recorded n_splits, strategy and seed (which
    `compkit folds` options may override) with the config's group and unseen fraction (which they may not)."""
    settings = FoldSettings(**recorded)
    return fold_settings(config, n_splits=settings.n_splits, strategy=settings.strategy, seed=settings.seed)


def folds_inputs(config: CompetitionConfig, workspace: Workspace, settings: FoldSettings) -> dict[str, Any]:
    """Return what folds.csv is made from: the training table's hash, the fixes, columns and fold settings.

    The hash is the one `compkit.data.data_inputs` records for the train table, computed alone so that a
    freshness check does not hash the other tables nor list the image folders. `settings` may be the config's
    own (strategy None: the task's default), as `status` passes them.
    """
    settings = replace(settings, strategy=settings.strategy or config.fold_strategy)
    train_path = workspace.data_dir / config.data.train
    return {
        "train": {"file": config.data.train, "sha256": file_sha256(train_path) if train_path.is_file() else None},
        "fixes": config.fixes,
        "columns": {"id": config.columns.id, "label": config.columns.label},
        "split_by": dict(zip(("stratify", "group"), _split_columns(config, settings), strict=True)),
        "folds": _recorded(settings),
    }


def _recorded(settings: FoldSettings) -> dict[str, Any]:
    """Return the settings as folds' fingerprints hold them: a key added later only when it is set, so the
    folds made before it existed stay fresh."""
    plain = asdict(settings)
    if plain["unseen_group_fraction"] is None:
        del plain["unseen_group_fraction"]
    return plain


def _split_columns(config: CompetitionConfig, settings: FoldSettings) -> tuple[str | None, str | None]:
    """Return (stratify-by, group-by) columns: stratified-group stratifies by species, grouping by label."""
    if settings.strategy == "stratified-group":
        return config.columns.species, config.columns.label
    if settings.strategy == "group":
        return None, config.columns.label
    return config.columns.label, None


def build_folds(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    n_splits: int | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> FoldsResult:
    """Return the folds of the training table, written to workspace.folds_path with its manifest.

    Folds already made from this table with these settings are read back, not written again, unless `force`.
    One `build_folds` runs at a time per workspace (CompkitError naming the other's pid), so folds.csv and its
    manifest always come from the same run.
    """
    settings = fold_settings(config, n_splits=n_splits, strategy=strategy, seed=seed)
    with exclusive_lock(workspace.stage_lock("folds"), holder="compkit folds"):
        if not force and is_fresh(workspace.folds_path, folds_inputs(config, workspace, settings)):
            folds = load_folds(config, workspace)
            groups = None
            if settings.group is not None:
                groups = load_train(config, workspace).set_index(config.columns.id)[settings.group]
                groups = groups.loc[folds[config.columns.id]].to_numpy()
            return _result(workspace, settings, folds, config.columns.label, groups=groups, written=False)
        chosen = any(value is not None for value in (n_splits, strategy, seed))
        return _build_folds(config, workspace, settings, chosen=chosen)


def _build_folds(
    config: CompetitionConfig, workspace: Workspace, settings: FoldSettings, *, chosen: bool
) -> FoldsResult:
    """Return the folds made with `settings`, written with their manifest (the caller holds the folds lock)."""
    train = load_train(config, workspace)
    id_column, label_column = config.columns.id, config.columns.label
    stratify_by, group_by = _split_columns(config, settings)
    if settings.strategy == "stratified-group" and stratify_by is None:
        raise ConfigError(f"{config.slug}: strategy 'stratified-group' stratifies by columns.species, which is unset")
    fold = make_folds(
        train,
        strategy=settings.strategy,
        n_splits=settings.n_splits,
        seed=settings.seed,
        label_column=stratify_by or label_column,
        group_column=group_by,
        together_column=settings.group,
        unseen_fraction=settings.unseen_fraction,
        unseen_group_fraction=settings.unseen_group_fraction,
    )
    folds = pd.DataFrame({id_column: train[id_column], label_column: train[label_column], FOLD_COLUMN: fold})
    write_csv(workspace.folds_path, folds)
    write_manifest(workspace.folds_path, folds_inputs(config, workspace, settings), rows=len(folds),
                   chosen_by_options=chosen)
    groups = None if settings.group is None else train[settings.group].to_numpy()
    return _result(workspace, settings, folds, label_column, groups=groups, written=True)


def _result(workspace: Workspace, settings: FoldSettings, folds: pd.DataFrame, label_column: str, *,
            groups: np.ndarray | None, written: bool) -> FoldsResult:
    return FoldsResult(
        path=workspace.folds_path,
        strategy=settings.strategy,
        n_splits=settings.n_splits,
        seed=settings.seed,
        folds=folds,
        summary=summarize_folds(folds, label_column=label_column),
        unseen_fraction=settings.unseen_fraction,
        written=written,
        unseen_group_share=None if groups is None else unseen_group_share(
            folds[FOLD_COLUMN].to_numpy(), folds[label_column].to_numpy(), groups),
    )


def summarize_folds(folds: pd.DataFrame, *, label_column: str) -> pd.DataFrame:
    """Return one row per fold: rows, labels, and labels (and their rows) found in no other fold."""
    folds_per_label = folds.groupby(label_column)[FOLD_COLUMN].nunique()
    only_here = folds[label_column].map(folds_per_label).to_numpy() == 1
    marked = folds.assign(_only_here=only_here)
    by_fold = marked.groupby(FOLD_COLUMN)
    summary = pd.DataFrame(
        {
            "rows": by_fold.size(),
            "labels": by_fold[label_column].nunique(),
            "unseen_labels": marked[only_here].groupby(FOLD_COLUMN)[label_column].nunique(),
            "unseen_rows": by_fold["_only_here"].sum(),
        }
    )
    return summary.fillna(0).astype(int).rename_axis(FOLD_COLUMN).reset_index()


def load_folds(config: CompetitionConfig, workspace: Workspace) -> pd.DataFrame:
    """Return folds.csv (id, label, fold as int), raising StaleArtifactError when it is missing or stale."""
    path = workspace.folds_path
    hint = f"(run: compkit folds -c {config.slug})"
    manifest = read_manifest(path)
    if manifest is None:
        state = "no folds yet" if not path.exists() else "no readable manifest beside it"
        raise StaleArtifactError(f"{path}: {state} {hint}")
    try:
        settings = recorded_settings(config, manifest["inputs"]["folds"])
    except (KeyError, TypeError):
        raise StaleArtifactError(f"{path}: manifest without fold settings {hint}") from None
    if not is_fresh(path, folds_inputs(config, workspace, settings)):
        raise StaleArtifactError(f"{path}: stale, the training data or config changed since it was made {hint}")
    folds = read_table(path, required=[config.columns.id, config.columns.label, FOLD_COLUMN])
    fold = pd.to_numeric(folds[FOLD_COLUMN], errors="coerce")
    if fold.isna().any() or (fold < 0).any() or (fold >= settings.n_splits).any():
        row = int((fold.isna() | (fold < 0) | (fold >= settings.n_splits)).to_numpy().argmax())
        raise DataError(f"{path}: row {row + 1}: bad fold {folds[FOLD_COLUMN].iloc[row]!r} {hint}")
    return folds.assign(**{FOLD_COLUMN: fold.astype(np.int64)})


def default_scheme_unseen_share(config: CompetitionConfig, workspace: Workspace) -> float | None:
    """Return the share of rows whose label no other fold would hold in the default scheme (stratified folds
    of folds.csv's n_splits and seed, with no group and no unseen_fraction): identify's new_individual share of
    OOF queries had the folds been made that way. None when folds.csv is made that way, or is not identify's
    stratified kind."""
    folds = load_folds(config, workspace)
    settings = recorded_settings(config, read_manifest(workspace.folds_path)["inputs"]["folds"])
    if (config.task != "identify" or settings.strategy != "stratified"
            or (settings.group is None and settings.unseen_fraction is None)):
        return None
    labels = folds[config.columns.label].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rare labels' warning was given when folds.csv was made
        default = _stratified_folds(labels, n_splits=settings.n_splits, seed=settings.seed,
                                    label_column=config.columns.label)
    in_folds = pd.Series(default).groupby(pd.factorize(labels)[0]).transform("nunique").to_numpy()
    return float((in_folds == 1).mean())

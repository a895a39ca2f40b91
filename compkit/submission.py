"""The submission format: reading and validating a submission CSV, and building one from predictions.

A valid submission has exactly the columns [submission.id_column, submission.prediction_column], every
expected (test) id exactly once and no other. Match rows list known test ids, space-separated (an empty list
is valid and scores 0; a repeated id counts once). Identify rows list 1 to submission.max_predictions distinct
ids. Every check is vectorised (pandas for the id column, pyarrow's string kernels to split the prediction
cells and look their ids up) and the whole file is validated before anything is scored; an error is one line
naming the file and the first bad row (`row N` = N-th data row, 1-based) with the value quoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig
from compkit.errors import DataError
from compkit.metrics import PAD_ID

MISSING_SHOWN = 3


@dataclass(frozen=True)
class MatchSubmission:
    """A valid match submission, rows in the order of the expected ids; predictions index those rows."""

    path: Path
    ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class IdentifySubmission:
    """A valid identify submission, rows in the order of the expected ids, padded with PAD_ID."""

    path: Path
    ids: np.ndarray
    predictions: np.ndarray


ParsedSubmission = MatchSubmission | IdentifySubmission


def read_submission(path: Path, config: CompetitionConfig) -> pd.DataFrame:
    """Return a submission CSV read as strings, raising DataError when it is missing, empty or not a CSV."""
    path = Path(path)
    expected = f"{config.submission.id_column},{config.submission.prediction_column}"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        # header=None: a row with more fields than the header is a parse error, never a silent index column.
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (expected a header {expected} and one row per test id)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a readable CSV ({reason})") from None
    header = [str(name) for name in table.iloc[0]]
    return table.iloc[1:].set_axis(header, axis=1).reset_index(drop=True)


def load_submission(
    path: Path,
    config: CompetitionConfig,
    *,
    expected_ids: Sequence[str],
    known_labels: Sequence[str] | None = None,
) -> ParsedSubmission:
    """Return the submission at `path`, read and validated against `expected_ids`."""
    frame = read_submission(path, config)
    return validate_submission(frame, config, expected_ids=expected_ids, path=path, known_labels=known_labels)


def validate_submission(
    frame: pd.DataFrame,
    config: CompetitionConfig,
    *,
    expected_ids: Sequence[str],
    path: Path | str,
    known_labels: Sequence[str] | None = None,
) -> ParsedSubmission:
    """Return the parsed submission, or raise DataError naming `path` and the first bad row.

    `known_labels` (identify only, optional) restricts predicted ids to those labels plus new_individual.
    """
    path = Path(path)
    fmt = config.submission
    expected_columns = [fmt.id_column, fmt.prediction_column]
    if [str(c) for c in frame.columns] != expected_columns:
        got = ",".join(map(str, frame.columns)) or "no columns"
        raise DataError(f"{path}: expected columns {','.join(expected_columns)} (in that order), got {got}")
    expected_index = pd.Index(np.asarray(expected_ids, dtype=object).astype(str))
    if not expected_index.is_unique:
        raise ValueError("expected_ids must be unique")
    if frame.empty:
        raise DataError(f"{path}: no rows (expected {len(expected_index)}, one per test id)")
    ids = frame[fmt.id_column].fillna("").astype(str).reset_index(drop=True)
    positions = _check_ids(ids, expected_index, path)
    cells = frame[fmt.prediction_column].fillna("").astype(str).reset_index(drop=True)
    counts, token_rows, tokens = _split_cells(cells)
    if config.task == "match":
        token_positions = _positions_in(tokens, expected_index)
        if (token_positions < 0).any():
            unknown = f"{fmt.prediction_column} lists {{value}}, which is not a test id"
            _fail_at(path, token_rows, token_positions < 0, tokens.to_numpy(zero_copy_only=False), unknown)
        indptr, indices = _reorder_rows(positions, counts, token_positions)
        return MatchSubmission(path=path, ids=expected_index.to_numpy(), indptr=indptr, indices=indices)
    token_values = tokens.to_numpy(zero_copy_only=False).astype(object)
    _check_identify_rows(path, config, cells, counts, token_rows, token_values, known_labels)
    starts = np.cumsum(counts) - counts
    rank_in_row = np.arange(len(token_rows)) - np.repeat(starts, counts)
    predictions = np.full((len(expected_index), fmt.max_predictions), PAD_ID, dtype=object)
    predictions[positions[token_rows], rank_in_row] = token_values
    return IdentifySubmission(path=path, ids=expected_index.to_numpy(), predictions=predictions)


def _split_cells(cells: pd.Series) -> tuple[np.ndarray, np.ndarray, Any]:
    """Return (ids per row, each id's row, the ids as an Arrow array) of whitespace-separated cells.

    pyarrow's string kernels split and look up millions of ids about ten times faster than object-dtype
    pandas (a 70,000-row match file lists up to 3.5 million ids).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(pa.array(cells.tolist(), type=pa.large_string()))
    lists = pc.utf8_split_whitespace(text)
    tokens = pc.list_flatten(lists)
    token_rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    nonempty = pc.not_equal(tokens, "")  # an empty cell splits into one empty string
    tokens = tokens.filter(nonempty)
    token_rows = token_rows[nonempty.to_numpy(zero_copy_only=False)]
    return np.bincount(token_rows, minlength=len(cells)), token_rows, tokens


def _positions_in(tokens: Any, index: pd.Index) -> np.ndarray:
    """Return each token's position in `index`, -1 where it is absent."""
    import pyarrow as pa
    import pyarrow.compute as pc

    positions = pc.index_in(tokens, value_set=pa.array(index.tolist(), type=pa.large_string()))
    return pc.fill_null(positions, -1).to_numpy().astype(np.int64)


def _check_ids(ids: pd.Series, expected_index: pd.Index, path: Path) -> np.ndarray:
    """Return each row's position among the expected ids, after checking duplicates, unknown and missing ids."""
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        row = int(duplicated.argmax())
        first = int((ids == ids.iloc[row]).to_numpy().argmax())
        raise DataError(f"{path}: row {row + 1}: duplicate id {ids.iloc[row]!r} (first at row {first + 1})")
    positions = expected_index.get_indexer(ids)
    _fail_at(path, np.arange(len(ids)), positions < 0, ids.to_numpy(dtype=object), "unknown id {value} (not a test id)")
    if len(positions) < len(expected_index):
        present = np.zeros(len(expected_index), dtype=bool)
        present[positions] = True
        missing = expected_index[~present]
        shown = ", ".join(repr(i) for i in missing[:MISSING_SHOWN])
        more = ", ..." if len(missing) > MISSING_SHOWN else ""
        raise DataError(f"{path}: {len(missing)} of {len(expected_index)} test ids missing ({shown}{more})")
    return positions


def _check_identify_rows(
    path: Path,
    config: CompetitionConfig,
    cells: pd.Series,
    counts: np.ndarray,
    token_rows: np.ndarray,
    token_values: np.ndarray,
    known_labels: Sequence[str] | None,
) -> None:
    fmt = config.submission
    bad_count = (counts < 1) | (counts > fmt.max_predictions)
    if bad_count.any():
        row = int(bad_count.argmax())
        raise DataError(
            f"{path}: row {row + 1}: {counts[row]} ids in {fmt.prediction_column}, expected 1 to "
            f"{fmt.max_predictions}: {cells.iloc[row]!r}"
        )
    repeated = pd.DataFrame({"row": token_rows, "id": token_values}).duplicated().to_numpy()
    _fail_at(path, token_rows, repeated, token_values, f"{fmt.prediction_column} lists {{value}} twice")
    if known_labels is not None:
        allowed = pd.Index([*map(str, known_labels), fmt.new_individual])
        unknown = ~pd.Index(token_values).isin(allowed)
        what = f"{fmt.prediction_column} lists {{value}}, which is neither a training label nor {fmt.new_individual!r}"
        _fail_at(path, token_rows, unknown, token_values, what)


def _fail_at(path: Path, rows: np.ndarray, bad: np.ndarray, values: np.ndarray, message: str) -> None:
    """Raise DataError for the first True in `bad` (rows ascend): `message` with {value} quoted."""
    if bad.any():
        first = int(np.asarray(bad).argmax())
        raise DataError(f"{path}: row {rows[first] + 1}: " + message.replace("{value}", repr(values[first])))


def _reorder_rows(
    positions: np.ndarray, counts: np.ndarray, token_positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the CSR (indptr, indices) of the file's rows moved to their expected positions."""
    file_starts = np.cumsum(counts) - counts
    file_row = np.empty(len(positions), dtype=np.int64)
    file_row[positions] = np.arange(len(positions))
    lengths = counts[file_row]
    indptr = np.zeros(len(positions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    source = np.repeat(file_starts[file_row] - indptr[:-1], lengths) + np.arange(indptr[-1])
    return indptr, token_positions[source].astype(np.int64)


def format_match_rows(
    ids: Sequence[str], indptr: np.ndarray, indices: np.ndarray, *, config: CompetitionConfig
) -> pd.DataFrame:
    """Return a submission frame: row i lists the ids of `indices[indptr[i]:indptr[i + 1]]`, space-separated."""
    ids = _check_plain_ids(ids)
    indptr = np.asarray(indptr, dtype=np.int64)
    if indptr.shape != (len(ids) + 1,):
        raise ValueError(f"indptr must have shape ({len(ids) + 1},) for {len(ids)} ids, got {indptr.shape}")
    names = ids[np.asarray(indices, dtype=np.int64)]
    lengths = np.diff(indptr)
    # One join for the whole file: a space after each id, a newline after each row's last id.
    separators = np.full(len(names), " ", dtype=object)
    separators[indptr[1:][lengths > 0] - 1] = "\n"
    pieces = np.empty(2 * len(names), dtype=object)
    pieces[0::2], pieces[1::2] = names, separators
    matches = np.full(len(ids), "", dtype=object)
    matches[lengths > 0] = "".join(pieces).split("\n")[:-1]
    fmt = config.submission
    return pd.DataFrame({fmt.id_column: ids, fmt.prediction_column: matches})


def format_identify_rows(ids: Sequence[str], predictions: np.ndarray, *, config: CompetitionConfig) -> pd.DataFrame:
    """Return a submission frame: row i lists the non-padding ids of `predictions[i]`, in rank order."""
    ids = _check_plain_ids(ids)
    predictions = np.asarray(predictions, dtype=object)
    if predictions.ndim != 2 or predictions.shape[0] != len(ids):
        raise ValueError(f"predictions must have shape ({len(ids)}, k), got {predictions.shape}")
    ranked = pd.DataFrame(predictions).fillna(PAD_ID).astype(str)
    joined = pd.Series("", index=ranked.index, dtype=object)
    for column in ranked.columns:  # at most max_predictions columns; each step is vectorised over rows
        value = ranked[column]
        joined = joined + np.where(value != PAD_ID, " " + value, "")
    fmt = config.submission
    return pd.DataFrame({fmt.id_column: ids, fmt.prediction_column: joined.str.strip().to_numpy(dtype=object)})


def _check_plain_ids(ids: Sequence[str]) -> np.ndarray:
    ids = np.asarray(ids, dtype=object).astype(str).astype(object)
    if pd.Series(ids, dtype=object).str.contains(r"\s|^$", regex=True).any():
        raise ValueError("ids must be non-empty and contain no whitespace to be written space-separated")
    return ids

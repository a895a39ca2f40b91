import re

import numpy as np
import pandas as pd
import pytest

from compkit.config import parse_config
from compkit.errors import DataError
from compkit.metrics import PAD_ID
from compkit.submission import (
    IdentifySubmission,
    MatchSubmission,
    format_identify_rows,
    format_match_rows,
    load_submission,
    read_submission,
    validate_submission,
)

MATCH_CONFIG = parse_config(
    """
slug = "tiny-match"
task = "match"
source = "local"
[columns]
id = "posting_id"
label = "label_group"
[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
""",
    source="match.toml",
)
IDENTIFY_CONFIG = parse_config(
    """
slug = "tiny-identify"
task = "identify"
source = "local"
[columns]
id = "image"
label = "individual_id"
[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
""",
    source="identify.toml",
)
POSTINGS = ["p1", "p2", "p3", "p4"]
IMAGES = ["a.jpg", "b.jpg", "c.jpg"]


def write(tmp_path, text, name="submission.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def match_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        load_submission(path, MATCH_CONFIG, expected_ids=POSTINGS)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


def identify_error(tmp_path, text, **kwargs):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        load_submission(path, IDENTIFY_CONFIG, expected_ids=IMAGES, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


def test_match_submission_rows_are_reordered_to_the_expected_ids(tmp_path):
    path = write(tmp_path, "posting_id,matches\np3,p3 p1\np1,p1\np4,\np2,p2 p4 p2\n")
    parsed = load_submission(path, MATCH_CONFIG, expected_ids=POSTINGS)
    assert isinstance(parsed, MatchSubmission)
    assert parsed.ids.tolist() == POSTINGS
    rows = [parsed.indices[parsed.indptr[i] : parsed.indptr[i + 1]].tolist() for i in range(4)]
    assert rows == [[0], [1, 3, 1], [2, 0], []]


def test_identify_submission_is_padded_and_reordered(tmp_path):
    path = write(tmp_path, "image,predictions\nc.jpg,w1 new_individual\na.jpg,w1 w2 w3 w4 w5\nb.jpg,w9\n")
    parsed = load_submission(path, IDENTIFY_CONFIG, expected_ids=IMAGES)
    assert isinstance(parsed, IdentifySubmission)
    assert parsed.predictions.tolist() == [
        ["w1", "w2", "w3", "w4", "w5"],
        ["w9", PAD_ID, PAD_ID, PAD_ID, PAD_ID],
        ["w1", "new_individual", PAD_ID, PAD_ID, PAD_ID],
    ]


def test_wrong_columns_are_named_with_the_expected_ones(tmp_path):
    message = match_error(tmp_path, "matches,posting_id\np1,p1\n")
    assert message == "expected columns posting_id,matches (in that order), got matches,posting_id"


def test_empty_file_is_refused(tmp_path):
    assert match_error(tmp_path, "").startswith("empty file")


def test_header_without_rows_is_refused(tmp_path):
    assert match_error(tmp_path, "posting_id,matches\n") == "no rows (expected 4, one per test id)"


def test_file_that_is_not_a_csv_is_refused(tmp_path):
    message = match_error(tmp_path, "posting_id,matches\np1,p1,p2\n")
    assert message.startswith("not a readable CSV (")


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable CSV (")):
        load_submission(path, MATCH_CONFIG, expected_ids=POSTINGS)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_submission(tmp_path / "nope.csv", MATCH_CONFIG)


def test_duplicate_id_names_its_row_and_first_row(tmp_path):
    message = match_error(tmp_path, "posting_id,matches\np1,p1\np2,p2\np1,p1\np3,\np4,\n")
    assert message == "row 3: duplicate id 'p1' (first at row 1)"


def test_unknown_id_names_its_row(tmp_path):
    message = match_error(tmp_path, "posting_id,matches\np1,p1\npX,p2\np3,\np4,\n")
    assert message == "row 2: unknown id 'pX' (not a test id)"


def test_missing_ids_are_counted_and_the_first_few_named(tmp_path):
    assert match_error(tmp_path, "posting_id,matches\np2,p2\n") == "3 of 4 test ids missing ('p1', 'p3', 'p4')"


def test_match_list_naming_an_unknown_posting_is_refused(tmp_path):
    message = match_error(tmp_path, "posting_id,matches\np1,p1\np2,p2 p1\np3,p3 p9\np4,\n")
    assert message == "row 3: matches lists 'p9', which is not a test id"


def test_identify_row_without_ids_is_refused(tmp_path):
    message = identify_error(tmp_path, "image,predictions\na.jpg,w1\nb.jpg,\nc.jpg,w2\n")
    assert message == "row 2: 0 ids in predictions, expected 1 to 5: ''"


def test_identify_row_with_six_ids_is_refused(tmp_path):
    message = identify_error(tmp_path, "image,predictions\na.jpg,w1\nb.jpg,w1\nc.jpg,w1 w2 w3 w4 w5 w6\n")
    assert message == "row 3: 6 ids in predictions, expected 1 to 5: 'w1 w2 w3 w4 w5 w6'"


def test_identify_row_repeating_an_id_is_refused(tmp_path):
    message = identify_error(tmp_path, "image,predictions\na.jpg,w1\nb.jpg,w1 w2 w1\nc.jpg,w3\n")
    assert message == "row 2: predictions lists 'w1' twice"


def test_identify_ids_outside_known_labels_are_refused_when_labels_are_given(tmp_path):
    text = "image,predictions\na.jpg,w1 new_individual\nb.jpg,w2\nc.jpg,w7\n"
    message = identify_error(tmp_path, text, known_labels=["w1", "w2"])
    assert message == "row 3: predictions lists 'w7', which is neither a training label nor 'new_individual'"


def test_validate_accepts_a_frame_built_elsewhere():
    frame = pd.DataFrame({"posting_id": ["p2", "p1"], "matches": ["p2", "p1 p2"]})
    parsed = validate_submission(frame, MATCH_CONFIG, expected_ids=["p1", "p2"], path="memory.csv")
    assert parsed.indptr.tolist() == [0, 2, 3]


def test_format_match_rows_round_trips_through_the_validator(tmp_path):
    indptr = np.array([0, 2, 2, 5, 6])
    indices = np.array([0, 1, 2, 3, 0, 3])
    frame = format_match_rows(POSTINGS, indptr, indices, config=MATCH_CONFIG)
    assert frame.to_dict("list") == {"posting_id": POSTINGS, "matches": ["p1 p2", "", "p3 p4 p1", "p4"]}
    path = tmp_path / "out.csv"
    frame.to_csv(path, index=False)
    parsed = load_submission(path, MATCH_CONFIG, expected_ids=POSTINGS)
    assert parsed.indptr.tolist() == indptr.tolist() and parsed.indices.tolist() == indices.tolist()


def test_format_identify_rows_skips_padding_and_round_trips(tmp_path):
    predictions = np.array([["w1", "w2", PAD_ID], ["new_individual", PAD_ID, PAD_ID], ["w3", "w1", "w2"]])
    frame = format_identify_rows(IMAGES, predictions, config=IDENTIFY_CONFIG)
    assert frame["predictions"].tolist() == ["w1 w2", "new_individual", "w3 w1 w2"]
    path = tmp_path / "out.csv"
    frame.to_csv(path, index=False)
    parsed = load_submission(path, IDENTIFY_CONFIG, expected_ids=IMAGES)
    assert parsed.predictions[:, :3].tolist() == predictions.tolist()


def test_format_match_rows_refuses_ids_with_whitespace():
    with pytest.raises(ValueError, match="whitespace"):
        format_match_rows(["a b", "c"], np.array([0, 0, 0]), np.array([], dtype=int), config=MATCH_CONFIG)

import pytest

from compkit.config import parse_config
from compkit.errors import DataError
from compkit.scoring import paired_difference, score_submission
from compkit.workspace import Workspace

MATCH_CONFIG = parse_config(
    """
slug = "tiny-match"
task = "match"
source = "local"
[data]
solution = "solution.csv"
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
[data]
solution = "solution.csv"
[columns]
id = "image"
label = "individual_id"
species = "species"
[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
""",
    source="identify.toml",
)


@pytest.fixture
def workspace(tmp_path):
    space = Workspace(tmp_path / "work")
    space.data_dir.mkdir(parents=True)
    return space


def test_match_score_is_the_hand_computed_mean_row_f1(workspace, tmp_path):
    (workspace.data_dir / "solution.csv").write_text("posting_id,label_group,title\np1,A,x\np2,A,y\np3,B,z\np4,C,w\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("posting_id,matches\np4,\np2,p2\np1,p1 p2\np3,p3 p4\n")
    result = score_submission(MATCH_CONFIG, workspace, submission)
    # p1: {p1,p2} vs {p1,p2} = 1; p2: 2*1/(2+1); p3: 2*1/(1+2); p4: nothing predicted = 0.
    assert result.metric == "mean_row_f1"
    assert result.n_rows == 4
    assert result.score == pytest.approx(7 / 12, abs=1e-12)
    assert result.row_scores.tolist() == pytest.approx([1, 2 / 3, 2 / 3, 0])


def test_identify_score_is_the_hand_computed_map_at_5(workspace, tmp_path):
    solution = tmp_path / "truth.csv"
    solution.write_text("image,individual_id,species\na.jpg,w1,beluga\nb.jpg,new_individual,orca\nc.jpg,w2,orca\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("image,predictions\na.jpg,w3 w1\nb.jpg,w1 w2 new_individual\nc.jpg,w5\n")
    result = score_submission(IDENTIFY_CONFIG, workspace, submission, solution_path=solution)
    assert result.metric == "map_at_5"
    assert result.score == pytest.approx((1 / 2 + 1 / 3 + 0) / 3, abs=1e-12)


def test_standard_error_and_paired_difference_are_the_hand_computed_ones(workspace, tmp_path):
    (workspace.data_dir / "solution.csv").write_text("posting_id,label_group\np1,A\np2,A\np3,B\np4,C\n")
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("posting_id,matches\np1,p1 p2\np2,p1 p2\np3,p3\np4,p4\n")  # rows 1, 1, 1, 1
    bad.write_text("posting_id,matches\np1,p1\np2,p2\np3,p3\np4,p4\n")  # rows 2/3, 2/3, 1, 1
    a, b = score_submission(MATCH_CONFIG, workspace, good), score_submission(MATCH_CONFIG, workspace, bad)
    assert a.standard_error == 0.0
    # bad's rows: mean 5/6, sample variance ((1/6)^2 * 4) / 3 = 1/27, so the error is sqrt(1/27 / 4).
    assert b.standard_error == pytest.approx((1 / 27 / 4) ** 0.5, abs=1e-12)
    difference = paired_difference("good", a, "bad", b)
    assert difference.difference == pytest.approx(1 / 6, abs=1e-12)
    assert difference.standard_error == pytest.approx(b.standard_error, abs=1e-12)  # a's rows are constant
    assert difference.n_rows == 4


def test_invalid_submission_is_refused_before_scoring_and_named(workspace, tmp_path):
    (workspace.data_dir / "solution.csv").write_text("posting_id,label_group\np1,A\np2,A\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("posting_id,matches\np1,p1\np2,p2 p7\n")
    with pytest.raises(DataError, match=f"^{submission}: row 2: matches lists 'p7', which is not a test id$"):
        score_submission(MATCH_CONFIG, workspace, submission)


def test_missing_solution_file_is_named_with_its_path(workspace, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("posting_id,matches\np1,p1\n")
    with pytest.raises(DataError, match="solution.csv: file not found"):
        score_submission(MATCH_CONFIG, workspace, submission)


def test_solution_with_a_repeated_id_is_refused(workspace, tmp_path):
    (workspace.data_dir / "solution.csv").write_text("posting_id,label_group\np1,A\np1,B\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("posting_id,matches\np1,p1\n")
    with pytest.raises(DataError, match="solution.csv: row 2: duplicate id 'p1'"):
        score_submission(MATCH_CONFIG, workspace, submission)

from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import KNN_BACKENDS, Task, load_config

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("competitions", "init", "fetch", "folds", "status", "score"):
        assert command in result.stdout


COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=["compkit", *COMMANDS])
def test_help_shows_flags_bare_values_by_their_type_and_takes_h(command):
    long = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    short = runner.invoke(app, [*command, "-h"], env={"COLUMNS": "250"})
    assert long.exit_code == 0 and short.exit_code == 0, long.output
    assert short.stdout == long.stdout
    assert "<bool>" not in long.stdout and "list[" not in long.stdout, long.stdout


def test_help_lists_the_choices_the_library_accepts():
    from compkit.data.fetch import SOURCES
    from compkit.data.folds import STRATEGIES
    from compkit.embeddings.runner import BACKENDS
    from compkit.ensemble.embedding_level import EMBEDDING_METHODS
    from compkit.ensemble.vote import METHODS
    from compkit.ensemble.weights import SELECTIONS
    from compkit.retrieval.layout import CANDIDATES

    devices = ("auto", "cpu", "cuda")  # resolve_device
    choices = {
        "init": {"--task": get_args(Task)},
        "fetch": {"--source": SOURCES},
        "folds": {"--strategy": STRATEGIES},
        "train": {"--device": devices, "--backend": BACKENDS, "--knn": KNN_BACKENDS},
        "embed": {"--device": devices},
        "tune-threshold": {"--candidates": CANDIDATES, "--knn": KNN_BACKENDS},
        "predict": {"--knn": KNN_BACKENDS},
        "ensemble": {"--method": (*METHODS["match"], *METHODS["identify"], *EMBEDDING_METHODS),
                     "--select": SELECTIONS},
        "run": {"--device": devices, "--knn": KNN_BACKENDS, "--source": SOURCES},
    }
    for command, options in choices.items():
        lines = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).stdout.splitlines()
        for option, accepted in options.items():
            [line] = [line for line in lines if line.startswith("│") and line[1:].split()[:1] == [option]]
            assert f"<{'|'.join(accepted)}>" in line, (command, option, line)


def test_ensemble_help_says_concat_combines_match_models_too():
    help_text = " ".join(runner.invoke(app, ["ensemble", "--help"], env={"COLUMNS": "250"}).stdout.split())
    assert "concat (match or identify)" in help_text and "score (identify)" in help_text


def test_competitions_lists_shipped_ones():
    result = invoke("competitions")
    assert result.exit_code == 0
    assert "demo-match" in result.stdout and "happy-whale-and-dolphin" in result.stdout


def test_init_scaffolds_a_loadable_config_per_task(tmp_path: Path):
    for task in ("match", "identify"):
        slug = f"my-{task}"
        result = invoke("init", slug, "--task", task, "--dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        config = load_config(str(tmp_path / slug))
        assert config.task == task
        assert config.kaggle == slug
    assert load_config(str(tmp_path / "my-match")).columns.id == "posting_id"
    assert load_config(str(tmp_path / "my-identify")).submission.prediction_column == "predictions"


def test_init_refuses_to_overwrite_with_one_line_error(tmp_path: Path):
    assert invoke("init", "comp", "--task", "match", "--dir", str(tmp_path)).exit_code == 0
    result = invoke("init", "comp", "--task", "match", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "already exists (use --force to overwrite)" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_init_rejects_bad_task_and_slug(tmp_path: Path):
    bad_task = invoke("init", "comp", "--task", "rank", "--dir", str(tmp_path))
    assert bad_task.exit_code == 1 and "--task must be 'match' or 'identify'" in bad_task.stderr
    bad_slug = invoke("init", "My Comp", "--task", "match", "--dir", str(tmp_path))
    assert bad_slug.exit_code == 1 and "lower-case letters" in bad_slug.stderr
    assert not (tmp_path / "comp").exists()


def test_unknown_competition_is_one_red_line_and_exit_1():
    result = invoke("status", "-c", "no-such-competition")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown competition 'no-such-competition'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_config_error_names_file_and_key(tmp_path: Path):
    folder = tmp_path / "broken"
    folder.mkdir()
    text = (Path(__file__).parents[1] / "competitions" / "demo-match" / "competition.toml").read_text()
    (folder / "competition.toml").write_text(text.replace("n_splits = 4", "n_splits = 'four'"))
    result = invoke("status", "-c", str(folder))
    assert result.exit_code == 1
    assert "competition.toml: folds.n_splits: expected an integer, got 'four'" in result.stderr


def test_a_warning_inside_a_command_is_one_line_without_its_source_location(capsys):
    import warnings

    from compkit.cli.console import handle_errors

    @handle_errors
    def command() -> str:
        warnings.warn("254 of 300 individual_id values have fewer than n_splits=4 rows", UserWarning, stacklevel=1)
        return "done"

    assert command() == "done"
    err = capsys.readouterr().err
    assert err.strip() == "warning: 254 of 300 individual_id values have fewer than n_splits=4 rows"

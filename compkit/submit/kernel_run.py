"""What a compkit kernel runs inside Kaggle, offline: the trained workspace applied to the attached test set.

The weights dataset holds the workspace's folds, trained checkpoints and tuned parameters (with their Optuna
study). The competition's files are fetched from /kaggle/input (`--source local`); every model's embeddings
are rebuilt from its checkpoints (no training: the new test files make the cached ones stale), its tuned
parameters re-read from its study, and the CSVs predicted and ensembled as `compkit run` does. The OOF (CV)
scores are those of this run's own OOF predictions.

While the visible test set is Kaggle's placeholder (a few rows: the hidden one only appears when Kaggle reruns
the notebook to score it), the training set stands in for the test set, as competitors' notebooks do: the
whole test path runs at full scale, its run time shows whether the hidden set will fit the time limit, and
its predictions are scored against the training labels. That score checks the test path; it is no estimate
of the leaderboard (the models saw most of those rows): the OOF scores are.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compkit.config import CompetitionConfig, load_config
from compkit.data.fetch import fetch_competition
from compkit.data.tables import load_test, read_table
from compkit.ensemble.final import final_csv_path
from compkit.errors import DataError
from compkit.pipeline import run_pipeline
from compkit.progress import NO_PROGRESS, Progress
from compkit.scoring import score_submission
from compkit.workspace import Workspace, read_json, remove_path, write_bytes, write_csv

WEIGHTS_CONFIG = "competition.toml"
WEIGHTS_MARKER = "compkit-kernel.json"
WEIGHTS_WORKSPACE = "workspace"
SUBMISSION_FILE = "submission.csv"
TRAIN_AS_TEST_DIR = "train-as-test"


@dataclass(frozen=True)
class KernelRunResult:
    """The kernel's submission file and the scores it can tell before Kaggle scores it."""

    submission: Path
    source: str  # "ensemble" or the only model's name
    test_rows: int
    placeholder: bool  # the visible test set was the placeholder: the training set stood in for it
    oof_scores: dict[str, float]
    train_as_test_score: float | None

    def summary(self) -> str:
        """Return a few lines for the kernel's log."""
        lines = [f"{self.submission}: {self.test_rows} rows from {self.source}"]
        lines += [f"CV (OOF) {name}: {score:.6f}" for name, score in self.oof_scores.items()]
        if self.train_as_test_score is not None:
            lines.append(f"placeholder test set: the training set stood in for it; {self.source} scores "
                         f"{self.train_as_test_score:.6f} on it (a check of the test path, not an estimate: the "
                         "models saw most of these rows)")
        return "\n".join(lines)


def run_kernel(
    *,
    weights_dir: Path,
    competition_dir: Path,
    working_dir: Path,
    placeholder_rows: int = 3,
    device: str = "auto",
    progress: Progress = NO_PROGRESS,
    log: Callable[[str], None] = lambda message: None,
) -> KernelRunResult:
    """Predict the competition's test set with the weights dataset's models; write working_dir/submission.csv."""
    weights_dir, working_dir = Path(weights_dir), Path(working_dir)
    marker = read_json(weights_dir / WEIGHTS_MARKER)
    config = load_config(str(weights_dir / WEIGHTS_CONFIG), overrides=marker.get("overrides", ()),
                         models=marker.get("models"))
    workspace = Workspace.for_competition(config.slug, working_dir / "work")
    restore_weights(weights_dir / WEIGHTS_WORKSPACE, workspace.root)
    visible_rows = count_test_rows(config, Path(competition_dir))
    placeholder = visible_rows <= placeholder_rows
    source_dir = Path(competition_dir)
    if placeholder:
        log(f"the visible test set has {visible_rows} rows (a placeholder): the training set stands in for it")
        source_dir = train_as_test_view(config, source_dir, working_dir / TRAIN_AS_TEST_DIR)
    # in place: /kaggle/input is not copied, and the train-as-test view does not copy train_images twice
    log(fetch_competition(config, workspace, source="local", path=source_dir, in_place=True, progress=progress).message)
    report = run_pipeline(config, workspace, trials=0, train_models=False, device=device, progress=progress,
                          on_stage=lambda stage, outcome: log(f"{stage}: {outcome}"))
    final_path, source = final_csv_path(config, workspace)
    write_bytes(working_dir / SUBMISSION_FILE, final_path.read_bytes())
    train_as_test = None
    if placeholder:
        truth = workspace.data_dir / config.data.train
        train_as_test = score_submission(config, workspace, final_path, solution_path=truth).score
    return KernelRunResult(working_dir / SUBMISSION_FILE, source, len(load_test(config, workspace)),
                           placeholder, report.oof_scores, train_as_test)


def restore_weights(source: Path, target: Path) -> None:
    """Copy the weights dataset's workspace files to `target` as plain writable files (inputs are read-only)."""
    if not source.is_dir():
        raise DataError(f"{source}: not found: attach the weights dataset written by `compkit submit --kernel`")
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def count_test_rows(config: CompetitionConfig, competition_dir: Path) -> int:
    """Return how many rows the competition's visible test table lists (test.csv, or sample_submission.csv)."""
    if config.data.test:
        return len(read_table(competition_dir / config.data.test, required=[config.columns.id]))
    sample = competition_dir / config.data.sample_submission
    return len(read_table(sample, required=[config.submission.id_column]))


def train_as_test_view(config: CompetitionConfig, competition_dir: Path, view_dir: Path) -> Path:
    """Return a folder that shows the competition's files with the training set as its test set.

    Everything is linked to the originals except the test table (written from the training table, labels
    dropped) and the test images (linked to the training images); a solution file, if the config names one,
    is the training table.
    """
    remove_path(view_dir)
    view_dir.mkdir(parents=True)
    train_path = competition_dir / config.data.train
    train = read_table(train_path, required=[config.columns.id, config.columns.label])
    replaced = {config.data.test, config.data.sample_submission, config.data.solution}
    if config.columns.image:
        replaced.add(config.data.test_images)
        os.symlink(competition_dir / config.data.train_images, view_dir / config.data.test_images)
    for entry in competition_dir.iterdir():
        if entry.name not in replaced:
            os.symlink(entry, view_dir / entry.name)
    ids = train[config.columns.id]
    if config.data.test:
        write_csv(view_dir / config.data.test, train.drop(columns=[config.columns.label]))
    fmt = config.submission
    write_csv(view_dir / config.data.sample_submission, train[[config.columns.id]].set_axis([fmt.id_column], axis=1)
              .assign(**{fmt.prediction_column: ids}))
    if config.data.solution:
        os.symlink(train_path, view_dir / config.data.solution)
    return view_dir

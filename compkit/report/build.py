"""`compkit inspect`: a model's error report, built from its artifacts alone, written as one static folder.

It reads the model's OOF CSV (`oof/<model>.csv`, what `compkit predict` wrote with the tuned parameters), its
cached OOF neighbour lists or candidate table (for the similarities; made again only when stale), folds.csv
and the training table and images; never a model. The folder `reports/<model>/` (index.html and thumbs/,
small JPEGs) is written aside and swapped in whole.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig, ModelConfig
from compkit.data.folds import FOLD_COLUMN, load_folds
from compkit.data.tables import load_train
from compkit.ensemble.weights import oof_truth
from compkit.errors import ParameterError, StaleArtifactError
from compkit.report.content import Report, Shown
from compkit.report.identify import IdentifyRows, identify_sections
from compkit.report.match import MatchRows, match_sections
from compkit.report.page import render_page
from compkit.report.retrieved import retrieved_lists
from compkit.submission import load_submission
from compkit.tuning.study import read_tuned
from compkit.tuning.tuned import TunedModel, load_tuned
from compkit.workspace import Workspace, atomic_path

REPORT_PAGE = "index.html"
THUMBNAILS = "thumbs"
THUMBNAIL_PIXELS = 128
TITLE_CHARACTERS = 90


@dataclass(frozen=True)
class ReportResult:
    model: str
    path: Path  # the report's index.html
    sections: tuple[str, ...]
    images: int  # thumbnails written
    missing_images: int  # shown rows whose image could not be read
    seconds: float


def write_report(
    config: CompetitionConfig, workspace: Workspace, *, model: str | None = None, examples: int = 24
) -> ReportResult:
    """Write the error report of `model` (default: the tuned model with the best OOF score); return where."""
    started = time.perf_counter()
    if examples < 1:
        raise ParameterError("examples", examples, "must be >= 1")
    chosen = config.model(model) if model else best_model(config, workspace)
    tuned = _tuned(config, workspace, chosen)
    oof_path = workspace.oof_csv(chosen.name)
    if not oof_path.is_file():
        raise StaleArtifactError(f"{oof_path}: missing (run: compkit predict -c {config.slug} --model {chosen.name})")
    ids, truth = oof_truth(config, workspace)
    folds = load_folds(config, workspace)[FOLD_COLUMN].to_numpy()
    train = load_train(config, workspace)
    train = train.iloc[pd.Index(train[config.columns.id].astype(str)).get_indexer(ids.astype(str))].reset_index(
        drop=True)
    submission = load_submission(oof_path, config, expected_ids=ids)
    lists = retrieved_lists(config, workspace, chosen, tuned, ids)
    show = _card_maker(config, workspace, train, folds)
    if config.task == "match":
        rows = MatchRows(truth, folds, submission.indptr, submission.indices)
        facts, sections = match_sections(rows, lists, show, examples=examples)
    else:
        species = train[config.columns.species].to_numpy(dtype=object) if config.columns.species else None
        rows = IdentifyRows(truth, submission.predictions, train[config.columns.label].to_numpy(dtype=object), folds,
                            species, config.submission.new_individual)
        facts, sections = identify_sections(rows, lists, tuned.params, show, examples=examples)
    facts = [("competition", config.slug), ("model", chosen.name), *facts,
             ("tuned parameters", ", ".join(f"{k} = {_value(v)}" for k, v in sorted(tuned.params.items())))]
    report = Report(f"{config.slug}: where {chosen.name} is wrong (OOF)", tuple(facts), tuple(sections))
    folder = workspace.report_dir(chosen.name)
    with atomic_path(folder) as staging:
        written = write_thumbnails(report.images, staging / THUMBNAILS)
        thumbnails = {row: f"{THUMBNAILS}/{name}" for row, name in written.items()}
        (staging / REPORT_PAGE).write_text(render_page(report, thumbnails), encoding="utf-8")
    return ReportResult(chosen.name, folder / REPORT_PAGE, tuple(s.key for s in sections), len(written),
                        len(report.images) - len(written), time.perf_counter() - started)


def _tuned(config: CompetitionConfig, workspace: Workspace, model: ModelConfig) -> TunedModel:
    """Return the model's tuned parameters; stale ones (the OOF CSV was made from them) with a warning."""
    try:
        return read_tuned(config, model, workspace)
    except StaleArtifactError as error:
        if not workspace.tuned_params(model.name).is_file():
            raise
        warnings.warn(f"reporting on stale artifacts: {error}", UserWarning, stacklevel=3)
        return load_tuned(workspace.tuned_params(model.name))


def best_model(config: CompetitionConfig, workspace: Workspace) -> ModelConfig:
    """Return the model with an OOF CSV whose tuned OOF score is the best (the first of equals)."""
    scored = []
    for model in config.models:
        path = workspace.tuned_params(model.name)
        if path.is_file() and workspace.oof_csv(model.name).is_file():
            scored.append((load_tuned(path).oof_score, model))
    if not scored:
        raise StaleArtifactError(f"no model of {config.slug} has OOF predictions yet "
                                 f"(run: compkit tune-threshold -c {config.slug}, then compkit predict)")
    return max(scored, key=lambda pair: pair[0])[1]


def write_thumbnails(images: dict[int, Path], folder: Path, *, pixels: int = THUMBNAIL_PIXELS) -> dict[int, str]:
    """Write a small JPEG of each row's image into `folder`; return {row: file name} of those that could be read."""
    from PIL import Image, UnidentifiedImageError

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for row, source in sorted(images.items()):
        name = f"{row}.jpg"
        try:
            with Image.open(source) as image:
                image.draft("RGB", (pixels, pixels))  # JPEG: decode at a reduced scale
                small = image.convert("RGB")
                small.thumbnail((pixels, pixels))
                small.save(folder / name, "JPEG", quality=85)
        except (OSError, UnidentifiedImageError, ValueError):
            continue
        written[row] = name
    return written


def _card_maker(config: CompetitionConfig, workspace: Workspace, train: pd.DataFrame, folds: np.ndarray):
    """Return show(role, row, extra lines) -> Shown: a row's id, title, label, species and fold, and its image."""
    columns = config.columns
    image_folder = workspace.data_dir / config.data.train_images

    def show(role: str, row: int, extra: tuple[str, ...] = ()) -> Shown:
        record = train.iloc[row]
        lines = [str(record[columns.id])]
        if columns.text and columns.text in train.columns:
            title = str(record[columns.text])
            lines.append(title if len(title) <= TITLE_CHARACTERS else title[: TITLE_CHARACTERS - 1] + "…")
        lines.append(f"{columns.label} {record[columns.label]}")
        if columns.species and columns.species in train.columns:
            lines.append(f"{record[columns.species]}")
        lines.append(f"fold {int(folds[row])}")
        image = image_folder / str(record[columns.image]) if columns.image else None
        return Shown(role, row, image, (*lines, *extra))

    return show


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""`compkit init`: a new competition folder with the task's standard Kaggle column names."""

from __future__ import annotations

import re
from pathlib import Path

from compkit.config import CONFIG_FILE, load_config, parse_config, resolve_config_path
from compkit.errors import ConfigError, ParameterError
from compkit.workspace import write_text

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")

MATCH_TEMPLATE = """\
# {slug}: task `match` (Shopee-style match lists, scored by mean row-wise F1).
slug = "{slug}"
title = "{slug}"
task = "match"
kaggle = "{slug}"  # the competition's slug on Kaggle
source = "kaggle"  # or "local" with `compkit fetch --path`

[data]
train = "train.csv"
test = "test.csv"
sample_submission = "sample_submission.csv"
train_images = "train_images"
test_images = "test_images"

[columns]
id = "posting_id"
label = "label_group"
image = "image"
text = "title"
phash = "image_phash"

[folds]
n_splits = 5
strategy = "group"  # no label group crosses folds
seed = 42

[[models]]
name = "tfidf-word"
kind = "tfidf"
analyzer = "word"

[[models]]
name = "effnet-b0"
kind = "image"
backbone = "efficientnet_b0"
pretrained = true
image_size = 384
embedding_dim = 512

[postprocess]
threshold = [0.2, 0.95]
default_threshold = 0.5
max_matches = 50

[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
"""

IDENTIFY_TEMPLATE = """\
# {slug}: task `identify` (Happywhale-style top-5 ids with new_individual, scored by MAP@5).
slug = "{slug}"
title = "{slug}"
task = "identify"
kaggle = "{slug}"  # the competition's slug on Kaggle
source = "kaggle"  # or "local" with `compkit fetch --path`

[data]
train = "train.csv"
# No test.csv: sample_submission.csv lists the test images (set `test` if the competition has one).
sample_submission = "sample_submission.csv"
train_images = "train_images"
test_images = "test_images"

[columns]
id = "image"
label = "individual_id"
image = "image"
species = "species"

# Value fixes applied on load, per column: [fixes.species] typo = "right_name"
[fixes.species]

[folds]
n_splits = 5
strategy = "stratified"  # by individual
seed = 42

[[models]]
name = "effnet-b0"
kind = "image"
backbone = "efficientnet_b0"
pretrained = true
image_size = 384
embedding_dim = 512
head = {{ type = "subcenter_arcface", scale = 30.0, margin = 0.3 }}

[postprocess]
threshold = [0.2, 0.9]
default_threshold = 0.5
top_n = 100

[submission]
id_column = "image"
prediction_column = "predictions"
max_predictions = 5
new_individual = "new_individual"
"""


def render_config(slug: str, task: str) -> str:
    """Return the text of a new competition.toml for `slug` and `task`."""
    templates = {"match": MATCH_TEMPLATE, "identify": IDENTIFY_TEMPLATE}
    if task not in templates:
        raise ConfigError(f"--task must be 'match' or 'identify', got {task!r}")
    if not SLUG_PATTERN.match(slug):
        raise ConfigError(f"slug {slug!r} must be lower-case letters, digits and dashes (as on Kaggle)")
    return templates[task].format(slug=slug)


def init_competition(
    slug: str, task: str | None = None, *, directory: Path, force: bool = False, copy_of: str | None = None
) -> Path:
    """Write `directory/slug/competition.toml` and return its path; refuse to overwrite without force.

    The config is the task's template, or with `copy_of` a copy of that competition's config (a slug or a
    path, e.g. a shipped one) under the new slug, every comment kept.
    """
    if (task is None) == (copy_of is None):
        raise ParameterError("task", task, "give exactly one of task ('match' or 'identify') and copy_of")
    text = render_config(slug, task) if copy_of is None else _copied_config(copy_of, slug)
    path = Path(directory) / slug / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite)")
    parse_config(text, source=path)
    write_text(path, text)
    return path


def _copied_config(competition: str, slug: str) -> str:
    """Return the config text of `competition` with its slug line set to `slug`."""
    source = resolve_config_path(competition)
    text = source.read_text(encoding="utf-8")
    original = load_config(str(source)).slug
    line = re.compile(rf"""^slug\s*=\s*["']{re.escape(original)}["']\s*$""", re.M)
    if not line.search(text):
        raise ConfigError(f"{source}: no `slug = \"{original}\"` line to rename")
    return line.sub(f'slug = "{slug}"', text, count=1)

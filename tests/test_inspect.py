"""`compkit inspect`: the static error report, checked as HTML and as a page headless Chromium renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_pipeline import invoke, tiny_competition

from compkit.config import load_config
from compkit.report.identify import IdentifyRows, identify_sections
from compkit.report.match import MatchRows, match_sections
from compkit.report.retrieved import RetrievedLists
from compkit.workspace import Workspace, temp_siblings

MATCH_SECTIONS = ["per-fold", "group-size", "false-matches", "missed-matches"]
IDENTIFY_SECTIONS = ["species", "new-individual", "per-fold", "top1-errors"]
# A zero-shot CNN of random weights: nothing to train, and errors enough to show.
ZERO_SHOT = '''
[[models]]
name = "cnn"
kind = "image"
backbone = "test_resnet"
image_size = 32
pooling = "avg"
train = { epochs = 0 }
'''


class Page(HTMLParser):
    """The parts of a report page the tests read: section ids, image sources, the text of each card."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(attributes["id"])
        elif tag == "img":
            self.images.append(attributes["src"])
        self._in_heading = tag == "h3"

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def shown(example):
    return [(s.role, s.row) for s in example.shown]


def show(role, row, extra=()):
    from compkit.report.content import Shown

    return Shown(role, row, None, extra)


def test_match_sections_find_every_false_and_missed_pair_with_its_similarity():
    # labels: rows 0-2 one product, 3-4 another, 5 alone. Row 0 predicts 1 and 3 (false); row 3 predicts 0
    # (false, the same pair) and 5 (false); nobody predicts 2, and 4 predicts only itself.
    codes = np.array([0, 0, 0, 1, 1, 2])
    predicted = [[0, 1, 3], [1, 0], [2], [3, 0, 5], [4], [5]]
    indptr = np.cumsum([0, *map(len, predicted)])
    indices = np.concatenate(predicted)
    neighbours = np.array([[1, 3, 2], [0, 2, -1], [0, 1, -1], [0, 5, -1], [-1, -1, -1], [3, -1, -1]])
    similarity = np.array([[0.9, 0.8, 0.3], [0.9, 0.2, -np.inf], [0.3, 0.2, -np.inf], [0.85, 0.7, -np.inf],
                           [-np.inf] * 3, [0.7, -np.inf, -np.inf]], dtype=np.float32)
    lists = RetrievedLists(neighbours, similarity, "cosine similarity")
    rows = MatchRows(codes, np.array([0, 0, 0, 1, 1, 1]), indptr, indices)

    facts, sections = match_sections(rows, lists, show, examples=10)

    by_key = {section.key: section for section in sections}
    assert list(by_key) == MATCH_SECTIONS
    false = by_key["false-matches"].examples
    assert [shown(e) for e in false] == [[("posting", 0), ("posting", 3)], [("posting", 3), ("posting", 5)]]
    assert "similarity 0.8500" in false[0].heading  # the larger of 0 -> 3 (0.8) and 3 -> 0 (0.85)
    missed = by_key["missed-matches"].examples
    # (3, 4) was never retrieved: shown first; then (1, 2) at 0.2 and (0, 2) at 0.3
    assert [shown(e)[0][1:] + shown(e)[1][1:] for e in missed] == [(3, 4), (1, 2), (0, 2)]
    assert "not retrieved" in missed[0].heading and "similarity 0.2000" in missed[1].heading
    assert dict(facts)["false matches (pairs)"] == "2" and dict(facts)["missed matches (pairs)"] == "3"
    sizes = by_key["group-size"].table.set_index("group_size")
    assert sizes.loc["3", "rows"] == 3 and sizes.loc["1", "mean_row_f1"] == 1.0
    folds = by_key["per-fold"].table.set_index("fold")
    expected_f1 = [2 * 2 / (3 + 3), 2 * 2 / (3 + 2), 2 * 1 / (3 + 1), 2 * 1 / (2 + 3), 2 * 1 / (2 + 1), 1.0]
    assert folds.loc[0, "mean_row_f1"] == pytest.approx(np.mean(expected_f1[:3]))
    assert folds.loc[1, "mean_row_f1"] == pytest.approx(np.mean(expected_f1[3:]))


def test_identify_sections_score_species_and_new_individual_at_the_tuned_threshold():
    new = "new_individual"
    truth = np.array(["a", "a", new, new, "b"], dtype=object)
    predictions = np.array([["a", "b", new, "", ""], ["b", "a", "", "", ""], [new, "a", "", "", ""],
                            ["a", new, "", "", ""], [new, "b", "", "", ""]], dtype=object)
    individuals = np.array(["a", "a", "c", "d", "b"], dtype=object)
    neighbours = np.array([[1, 4, -1], [4, 0, -1], [0, -1, -1], [0, 2, -1], [3, -1, -1]])
    similarity = np.where(neighbours >= 0, 0.5, -np.inf).astype(np.float32)
    similarity[1, 0] = 0.9
    rows = IdentifyRows(truth, predictions, individuals, np.array([0, 1, 0, 1, 0]),
                        np.array(["whale", "whale", "whale", "dolphin", "dolphin"], dtype=object), new)

    facts, sections = identify_sections(rows, RetrievedLists(neighbours, similarity, "cosine"), {"threshold": 0.6},
                                        show, examples=10)

    by_key = {section.key: section for section in sections}
    assert list(by_key) == IDENTIFY_SECTIONS
    species = by_key["species"].table.set_index("species")
    assert species.loc["whale", "map_at_5"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert species.loc["dolphin", "map_at_5"] == pytest.approx((0.5 + 0.5) / 2)
    new_individual = by_key["new-individual"].table.iloc[0]
    assert new_individual["predicted new (top 1)"] == 2 and new_individual["truly new"] == 2
    assert new_individual["precision"] == 0.5 and new_individual["recall"] == 0.5
    assert "0.6000" in by_key["new-individual"].text
    errors = by_key["top1-errors"].examples
    assert len(errors) == 3 and errors[0].heading.startswith("a answered as b")  # the most similar error first
    assert shown(errors[0]) == [("query", 1), ("answer", 4), ("truth", 0)]
    assert dict(facts)["MAP@5 (OOF)"] == f"{(1 + 0.5 + 1 + 0.5 + 0.5) / 5:.6f}"


def report_of(result) -> tuple[Path, Page]:
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    return path, Page(path.read_text(encoding="utf-8"))


def check_thumbnails(path: Path, page: Page) -> None:
    assert page.images, "the report shows no image"
    for source in page.images:
        assert not source.startswith(("/", "http", "file:")), source  # beside the page, so the folder can move
        with Image.open(path.parent / source) as image:
            assert image.format == "JPEG" and max(image.size) <= 128


def test_inspect_writes_a_static_match_report_of_the_best_model_with_thumbnails(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, base)
    scores = {m.name: json.loads(workspace.tuned_params(m.name).read_text())["oof_score"]
              for m in config.models}

    path, page = report_of(invoke("inspect", "-c", folder, "--workspace", base, "--examples", "5"))

    best = max(scores, key=scores.get)
    assert path == workspace.report_dir(best) / "index.html"
    assert page.sections == MATCH_SECTIONS
    check_thumbnails(path, page)
    assert sum(h.startswith("false match") for h in page.headings) == 5
    assert sum(h.startswith("missed match") for h in page.headings) == 5
    text = path.read_text(encoding="utf-8")
    assert f"{scores[best]:.6f}" in text  # the OOF CSV scores what tuning found
    assert "<script src" not in text and "http" not in text  # nothing fetched: it opens offline


def test_inspect_replaces_its_report_whole_and_refuses_a_model_without_oof_predictions(tuned_workspace):
    folder, base = tuned_workspace
    workspace = Workspace.for_competition(load_config(str(folder)).slug, base)
    first, _ = report_of(invoke("inspect", "-c", folder, "--workspace", base, "--model", "phash"))
    stray = first.parent / "thumbs" / "stray.jpg"
    stray.write_bytes(b"old")

    again, page = report_of(invoke("inspect", "-c", folder, "--workspace", base, "--model", "phash"))

    assert again == first and not stray.exists()
    assert temp_siblings(first.parent) == []
    workspace.oof_csv("phash").unlink()
    refused = invoke("inspect", "-c", folder, "--workspace", base, "--model", "phash")
    assert refused.exit_code == 1 and "oof/phash.csv: missing (run: compkit predict" in refused.stderr
    assert "Traceback" not in refused.output


@pytest.fixture(scope="module")
def identify_report(tmp_path_factory) -> tuple[Path, Page]:
    """A tiny demo-identify with one zero-shot CNN, run through predict, then inspected."""
    from compkit.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("inspect-identify")
    folder = tiny_competition(root, "demo-identify")
    toml = folder / "competition.toml"
    text = re.sub(r"\[\[models\]\].*?(?=\n\[postprocess\])", "", toml.read_text(), flags=re.S)
    toml.write_text(text.replace("[postprocess]", ZERO_SHOT + "\n[postprocess]"))
    config = load_config(str(folder))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*fewer than n_splits")  # the tiny demo's many one-image individuals
        run_pipeline(config, Workspace.for_competition(config.slug, root / "work"), trials=5, device="cpu")
    return report_of(invoke("inspect", "-c", folder, "--workspace", root / "work", "--model", "cnn"))


def test_inspect_writes_an_identify_report_per_species_with_query_and_gallery_thumbnails(identify_report):
    path, page = identify_report
    assert page.sections == IDENTIFY_SECTIONS
    check_thumbnails(path, page)
    text = path.read_text(encoding="utf-8")
    assert re.search(r"<th>precision</th><th>recall</th>", text)
    errors = [h for h in page.headings if " answered as " in h]
    assert errors, page.headings
    assert '<div class="role">query</div>' in text and '<div class="role">truth</div>' in text


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: .ci/run installs it (make chromium)")
        pytest.skip("chromium is not installed here (`make chromium` installs Debian's; CI does)")
    return found


def rendered(page: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("task", ["match", "identify"])
def test_the_report_renders_in_headless_chromium_with_every_section_and_image(task, tuned_workspace,
                                                                                identify_report, tmp_path):
    if task == "match":
        folder, base = tuned_workspace
        path, _ = report_of(invoke("inspect", "-c", folder, "--workspace", base))
        sections = MATCH_SECTIONS
    else:
        (path, _), sections = identify_report, IDENTIFY_SECTIONS
    dom = rendered(path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-images="loaded"' in body, body  # every <img> decoded, none broken
    assert re.findall(r'<section id="([\w-]+)"', dom.stdout) == sections
    screenshot = tmp_path / "report.png"
    shot = rendered(path, f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # drawn, not blank


def test_a_broken_thumbnail_is_what_the_browser_check_catches(tuned_workspace, tmp_path):
    folder, base = tuned_workspace
    path, page = report_of(invoke("inspect", "-c", folder, "--workspace", base, "--examples", "2"))
    (path.parent / page.images[0]).write_bytes(b"not a jpeg")
    dom = rendered(path, "--dump-dom")
    assert re.search(r'<body[^>]*data-images="broken \d+"', dom.stdout), dom.stdout[:500]

"""benchmarks/real_images.py's builder, on a tiny fake vendor tree generated here (never the real images)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from compkit.cli.app import app

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_images.py"
CATEGORIES = ("Smileys & Emotion", "Animals & Nature", "Flags", "Objects")
N_EMOJI = 48


@pytest.fixture(scope="module")
def real_images():
    spec = importlib.util.spec_from_file_location("real_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _fake_tree(root: Path, vendors) -> Path:
    """Write <vendor>/emoji.json and <vendor>/img/<vendor>/64/*.png as the npm packages lay them out."""
    rng = np.random.default_rng(0)
    entries = []
    for index in range(N_EMOJI):
        unified = f"1F{index + 300:03X}"
        entries.append({"name": f"Fake Thing Number {index}", "unified": unified, "image": f"{unified.lower()}.png",
                        "short_names": [f"thing_{index}"], "category": CATEGORIES[index % len(CATEGORIES)]})
    entries.append({"name": "Skin Tone", "unified": "1F3FB", "image": "1f3fb.png", "short_names": ["skin"],
                    "category": "Component"})
    for number, vendor in enumerate(vendors):
        folder = root / vendor / "img" / vendor / "64"
        folder.mkdir(parents=True)
        (root / vendor / "emoji.json").write_text(json.dumps(entries))
        for index, entry in enumerate(entries):
            if index % 7 == number and index < N_EMOJI:
                continue  # this vendor does not draw it
            sprite = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3)) + (255,)
            ImageDraw.Draw(sprite).ellipse((2, 2 + index % 5, 14, 14), fill=colour)
            sprite.save(folder / entry["image"])
    return root


@pytest.fixture(scope="module")
def built(real_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    tree = _fake_tree(root / "vendors", real_images.VENDORS)
    counts = real_images.build(tree, root / "out", seed=7, n_match_train=12, n_match_test=6, n_identify_train=28,
                               image_size=32)
    return real_images, tree, root / "out", counts


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_match_folder_has_shopee_files_and_columns(built):
    _, _, out, counts = built
    match = out / "real-match"
    train, test = pd.read_csv(match / "train.csv"), pd.read_csv(match / "test.csv")
    assert list(train.columns) == ["posting_id", "image", "image_phash", "title", "label_group"]
    assert list(test.columns) == ["posting_id", "image", "image_phash", "title"]
    assert list(pd.read_csv(match / "sample_submission.csv").columns) == ["posting_id", "matches"]
    solution = pd.read_csv(match / "solution.csv")
    assert list(solution.columns) == ["posting_id", "label_group"]
    assert solution["posting_id"].tolist() == test["posting_id"].tolist()
    assert train["image_phash"].str.fullmatch("[0-9a-f]{16}").all()
    assert train.groupby("label_group").size().min() >= 2
    for split, frame in (("train", train), ("test", test)):
        assert all((match / f"{split}_images" / name).is_file() for name in frame["image"])
    with Image.open(match / "train_images" / train["image"][0]) as image:
        assert (image.format, image.size) == ("JPEG", (32, 32))
    assert counts["real-match"]["train rows"] == len(train)


def test_match_test_products_are_unseen_in_train(built):
    _, _, out, _ = built
    train = pd.read_csv(out / "real-match" / "train.csv")
    solution = pd.read_csv(out / "real-match" / "solution.csv")
    assert train["label_group"].nunique() == 12 and solution["label_group"].nunique() == 6
    assert not set(train["label_group"]) & set(solution["label_group"])


def test_identify_folder_has_happywhale_files_and_a_quarter_new_individuals(built):
    _, _, out, _ = built
    identify = out / "real-identify"
    train = pd.read_csv(identify / "train.csv")
    solution = pd.read_csv(identify / "solution.csv")
    assert list(train.columns) == ["image", "species", "individual_id", "drawing"]
    assert list(solution.columns) == ["image", "individual_id", "species"]
    assert list(pd.read_csv(identify / "sample_submission.csv").columns) == ["image", "predictions"]
    assert not (identify / "test.csv").exists()
    assert set(train["species"]) <= {"smileys_and_emotion", "animals_and_nature", "flags", "objects"}
    new = solution["individual_id"] == "new_individual"
    assert 0.2 <= new.mean() <= 0.3
    assert set(solution.loc[~new, "individual_id"]) <= set(train["individual_id"])
    assert (train["individual_id"].value_counts() == 1).any()  # singletons, as in Happywhale
    assert (train.groupby("drawing")["individual_id"].nunique() == 1).all()  # a drawing is one individual's
    assert all((identify / "test_images" / name).is_file() for name in solution["image"])


def test_build_is_deterministic_for_a_seed(built, tmp_path):
    real_images, tree, out, _ = built
    real_images.build(tree, tmp_path / "again", seed=7, n_match_train=12, n_match_test=6, n_identify_train=28,
                      image_size=32)
    assert _listing(tmp_path / "again") == _listing(out)
    real_images.build(tree, tmp_path / "other", seed=8, n_match_train=12, n_match_test=6, n_identify_train=28,
                      image_size=32)
    assert _listing(tmp_path / "other") != _listing(out)


def test_build_skips_component_emoji_and_refuses_too_many_products(built, tmp_path):
    real_images, tree, _, _ = built
    emoji = real_images.load_emoji(tree)
    assert len(emoji) == N_EMOJI and all(e.category != "Component" for e in emoji)
    with pytest.raises(SystemExit, match="match needs"):
        real_images.build_match(emoji, tmp_path, seed=0, n_train=40, n_test=20)


def test_fetch_vendors_reuses_the_cache_without_npm(built, tmp_path, monkeypatch):
    real_images, tree, _, _ = built
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: a fetch would fail
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "vendors").symlink_to(tree, target_is_directory=True)
    assert real_images.fetch_vendors(cache) == cache / "vendors"


@pytest.mark.parametrize("slug", ["real-match", "real-identify"])
def test_compkit_fetch_local_and_folds_accept_the_folders(built, tmp_path, slug):
    real_images, _, out, _ = built
    config = str(real_images.CONFIG_DIR / slug / "competition.toml")
    runner = CliRunner()
    fetched = runner.invoke(app, ["fetch", "-c", config, "--source", "local", "--path", str(out / slug),
                                  "--workspace", str(tmp_path)])
    assert fetched.exit_code == 0, fetched.output
    folds = runner.invoke(app, ["folds", "-c", config, "--n-splits", "2", "--workspace", str(tmp_path)])
    assert folds.exit_code == 0, folds.output
    assert (tmp_path / slug / "folds.csv").is_file()


def test_build_skips_a_folder_built_with_the_same_settings(built):
    real_images, tree, out, counts = built
    before = (out / "real-match" / "train.csv").stat().st_mtime_ns
    again = real_images.build(tree, out, seed=7, n_match_train=12, n_match_test=6, n_identify_train=28,
                              image_size=32)
    assert again == counts
    assert (out / "real-match" / "train.csv").stat().st_mtime_ns == before

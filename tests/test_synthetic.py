"""The synthetic demo competitions: deterministic, shaped like Kaggle's files, with a real but imperfect signal."""

import hashlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer

from compkit.data.sources.synthetic import generate_identify, generate_match
from compkit.errors import ConfigError, DataError
from compkit.models.phash import phash_bits, phash_hex

MATCH_SIZES = {"n_train_groups": 100, "n_test_groups": 30, "image_size": 64}
IDENTIFY_SIZES = {"n_train_groups": 100, "n_test_groups": 20, "image_size": 64}
TINY_SIZES = {"n_train_groups": 12, "n_test_groups": 4, "image_size": 32}
HAPPYWHALE_PLACEHOLDER = "37c7aba965a5 114207cab555 a6e325d8e924 19fbb960f07d new_individual"


@pytest.fixture(scope="module")
def match_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("demo-match")
    generate_match(out_dir, seed=3, **MATCH_SIZES)
    return out_dir


@pytest.fixture(scope="module")
def identify_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("demo-identify")
    generate_identify(out_dir, seed=3, **IDENTIFY_SIZES)
    return out_dir


def file_digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def generated(generate, folder: Path, seed: int) -> dict[str, str]:
    folder.mkdir()
    generate(folder, seed=seed, **TINY_SIZES)
    return file_digests(folder)


@pytest.mark.parametrize("generate", [generate_match, generate_identify])
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(generate, tmp_path: Path) -> None:
    first = generated(generate, tmp_path / "first", seed=7)
    again = generated(generate, tmp_path / "again", seed=7)
    other = generated(generate, tmp_path / "other", seed=8)
    assert first == again
    assert len(first) > 20
    assert first["train.csv"] != other["train.csv"]
    assert set(first.values()).isdisjoint(other.values())


def test_generation_does_not_depend_on_python_hash_seed(tmp_path: Path) -> None:
    in_process = generated(generate_match, tmp_path / "here", seed=5)
    script = (
        "import sys; from pathlib import Path; from compkit.data.sources.synthetic import generate_match; "
        f"generate_match(Path(sys.argv[1]), seed=5, **{TINY_SIZES!r})"
    )
    (tmp_path / "there").mkdir()
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], check=True, env=environment)
    assert file_digests(tmp_path / "there") == in_process


@pytest.mark.parametrize("generate", [generate_match, generate_identify])
def test_generation_rejects_sizes_too_small_for_a_competition(generate, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_train_groups >= 2, got n_train_groups=1"):
        generate(tmp_path, seed=0, n_train_groups=1, n_test_groups=3, image_size=64)
    with pytest.raises(ConfigError, match="image_size >= 32"):
        generate(tmp_path, seed=0, n_train_groups=5, n_test_groups=3, image_size=16)


def test_match_files_have_shopee_columns_and_dtypes(match_dir: Path) -> None:
    assert sorted(path.name for path in match_dir.iterdir()) == [
        "sample_submission.csv",
        "solution.csv",
        "test.csv",
        "test_images",
        "train.csv",
        "train_images",
    ]
    train, test = pd.read_csv(match_dir / "train.csv"), pd.read_csv(match_dir / "test.csv")
    submission, solution = pd.read_csv(match_dir / "sample_submission.csv"), pd.read_csv(match_dir / "solution.csv")
    assert list(train.columns) == ["posting_id", "image", "image_phash", "title", "label_group"]
    assert list(test.columns) == ["posting_id", "image", "image_phash", "title"]
    assert list(submission.columns) == ["posting_id", "matches"]
    assert list(solution.columns) == ["posting_id", "label_group"]
    assert train["label_group"].dtype == np.int64 and solution["label_group"].dtype == np.int64
    for frame, split in ((train, "train"), (test, "test")):
        assert frame["posting_id"].str.fullmatch(rf"{split}_\d+").all() and frame["posting_id"].is_unique
        assert frame["image"].str.fullmatch(r"[0-9a-f]{32}\.jpg").all()
        assert frame["image_phash"].str.fullmatch(r"[0-9a-f]{16}").all()
        assert (frame["title"].str.len() > 5).all()
        assert sorted(path.name for path in (match_dir / f"{split}_images").iterdir()) == sorted(set(frame["image"]))
    assert (submission["posting_id"] == test["posting_id"]).all()
    assert (submission["matches"] == submission["posting_id"]).all()
    assert (solution["posting_id"] == test["posting_id"]).all()


def test_match_phash_column_is_the_phash_of_each_jpeg(match_dir: Path) -> None:
    train = pd.read_csv(match_dir / "train.csv")
    for image_name, expected in train[["image", "image_phash"]].head(60).itertuples(index=False):
        with Image.open(match_dir / "train_images" / image_name) as image:
            assert image.format == "JPEG" and image.size == (64, 64) and image.mode == "RGB"
            assert phash_hex(image) == expected


def test_match_groups_are_heavy_tailed_from_2_to_50_and_test_products_are_unseen(match_dir: Path) -> None:
    train, solution = pd.read_csv(match_dir / "train.csv"), pd.read_csv(match_dir / "solution.csv")
    sizes = train["label_group"].value_counts()
    assert len(sizes) == MATCH_SIZES["n_train_groups"]
    assert solution["label_group"].nunique() == MATCH_SIZES["n_test_groups"]
    assert sizes.min() >= 2 and sizes.max() <= 50
    assert (sizes == 2).mean() > 0.4 and 2.3 < sizes.mean() < 4.5 and sizes.max() >= 6
    assert set(train["label_group"]).isdisjoint(solution["label_group"])


def test_match_postings_sometimes_share_one_image_within_a_group(match_dir: Path) -> None:
    train = pd.read_csv(match_dir / "train.csv")
    shared = train[train["image"].duplicated(keep=False)]
    assert 0.03 < len(shared) / len(train) < 0.4
    per_image = shared.groupby("image").agg(groups=("label_group", "nunique"), hashes=("image_phash", "nunique"))
    assert (per_image["groups"] == 1).all() and (per_image["hashes"] == 1).all()


def test_match_titles_spell_one_product_many_ways() -> None:
    from compkit.data.sources.synthetic.match import make_title
    from compkit.data.sources.synthetic.products import sample_products

    rng = np.random.default_rng(0)
    product = next(p for p in sample_products(rng, 40) if p.category.unit == "ml" and p.size >= 250)
    titles = [make_title(rng, product) for _ in range(200)]
    assert len(set(titles)) > 150
    size_spellings = {f"{product.size}ml", f"{product.size} ML", f"{product.size / 1000:g}L"}
    assert all(any(spelling in title for title in titles) for spelling in size_spellings)
    assert any(title.isupper() for title in titles) and any(title.islower() for title in titles)
    assert any(re.search(r"READY STOCK|ORI|PROMO|murah|COD", title, re.IGNORECASE) for title in titles)


def test_identify_files_have_happywhale_columns_and_no_test_csv(identify_dir: Path) -> None:
    assert sorted(path.name for path in identify_dir.iterdir()) == [
        "sample_submission.csv",
        "solution.csv",
        "test_images",
        "train.csv",
        "train_images",
    ]
    train = pd.read_csv(identify_dir / "train.csv")
    submission, solution = (
        pd.read_csv(identify_dir / "sample_submission.csv"),
        pd.read_csv(identify_dir / "solution.csv"),
    )
    assert list(train.columns) == ["image", "species", "individual_id", "encounter"]  # Happywhale's, and the outing
    assert train["encounter"].str.fullmatch(r"e\d{4}").all()
    assert (train.groupby("encounter")["individual_id"].nunique() == 1).all()  # an outing photographs one animal
    assert train.groupby("individual_id")["encounter"].nunique().max() > 1
    assert list(submission.columns) == ["image", "predictions"]
    assert list(solution.columns) == ["image", "individual_id", "species"]
    assert train["image"].is_monotonic_increasing and submission["image"].is_monotonic_increasing
    assert train["individual_id"].str.fullmatch(r"[0-9a-f]{12}").all()
    for frame, folder in ((train, "train_images"), (submission, "test_images")):
        assert frame["image"].str.fullmatch(r"[0-9a-f]{14}\.jpg").all() and frame["image"].is_unique
        assert sorted(path.name for path in (identify_dir / folder).iterdir()) == list(frame["image"])
    assert set(train["image"]).isdisjoint(submission["image"])
    assert (submission["image"] == solution["image"]).all()
    assert (submission["predictions"] == HAPPYWHALE_PLACEHOLDER).all()  # no test truth leaks
    with Image.open(identify_dir / "test_images" / submission["image"].iloc[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 64)


def test_identify_counts_are_heavy_tailed_and_test_mixes_seen_and_new_individuals(identify_dir: Path) -> None:
    train, solution = pd.read_csv(identify_dir / "train.csv"), pd.read_csv(identify_dir / "solution.csv")
    counts = train["individual_id"].value_counts()
    assert len(counts) == IDENTIFY_SIZES["n_train_groups"]
    assert (counts == 1).mean() > 0.35 and counts.max() >= 8
    is_new = solution["individual_id"] == "new_individual"
    assert 0.1 < is_new.mean() < 0.6
    assert set(solution.loc[~is_new, "individual_id"]) <= set(counts.index)
    species_of = dict(zip(train["individual_id"], train["species"], strict=False))
    seen = solution[~is_new]
    assert (seen["species"] == seen["individual_id"].map(species_of)).all()


def test_identify_raw_species_keep_happywhale_misspellings(identify_dir: Path) -> None:
    species = set(pd.read_csv(identify_dir / "train.csv")["species"])
    assert {"bottlenose_dolpin", "kiler_whale", "globis", "pilot_whale"} <= species
    assert {"bottlenose_dolphin", "killer_whale", "short_finned_pilot_whale", "humpback_whale", "beluga"} <= species


def reference_phash(image: Image.Image) -> str:
    """pHash spelled out: unnormalised 2-D DCT-II of the 32x32 greyscale, top-left 8x8, bits above the median."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    coefficients = np.zeros((8, 8))
    for u in range(8):
        for v in range(8):
            total = 0.0
            for x in range(32):
                for y in range(32):
                    total += (
                        pixels[x, y]
                        * math.cos(math.pi * (2 * x + 1) * u / 64)
                        * math.cos(math.pi * (2 * y + 1) * v / 64)
                    )
            coefficients[u, v] = 4 * total
    bits = "".join("1" if c > np.median(coefficients) else "0" for c in coefficients.ravel())
    return f"{int(bits, 2):016x}"


def test_phash_matches_a_reference_implementation(match_dir: Path) -> None:
    train = pd.read_csv(match_dir / "train.csv")
    rng = np.random.default_rng(0)
    images = [Image.open(match_dir / "train_images" / name) for name in train["image"].head(2)]
    images.append(Image.fromarray((rng.random((50, 70, 3)) * 255).astype(np.uint8)))
    rows, columns = np.mgrid[0:40, 0:90]
    waves = 128 + 60 * np.sin(rows / 7) * np.cos(columns / 5) + 30 * rng.random((40, 90))
    images.append(Image.fromarray(waves.astype(np.uint8)))
    for image in images:
        assert phash_hex(image) == reference_phash(image)


def test_phash_of_identical_images_is_identical_and_bits_round_trip() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    assert phash_hex(image) == phash_hex(image.copy()) == phash_hex(image.convert("RGBA"))
    hashes = [phash_hex(image), "94974f937d4c2433", "0000000000000000", "ffffffffffffffff"]
    bits = phash_bits(hashes)
    assert bits.shape == (4, 64) and bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
    assert [np.packbits(row).tobytes().hex() for row in bits] == hashes
    assert bits[2].sum() == 0 and bits[3].sum() == 64
    assert (bits[0] != bits[0]).sum() == 0 and (bits[2] != bits[3]).sum() == 64
    assert phash_bits([]).shape == (0, 64)
    with pytest.raises(DataError, match="16 hex characters"):
        phash_bits(["94974f937d4c24"])
    with pytest.raises(DataError, match="16 hex characters"):
        phash_bits(["94974f937d4c243z"])


def row_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    truth = labels[:, None] == labels[None, :]
    return float(np.mean(2 * (predicted & truth).sum(1) / (predicted.sum(1) + truth.sum(1))))


def test_match_titles_carry_a_real_but_imperfect_text_signal(match_dir: Path) -> None:
    train = pd.read_csv(match_dir / "train.csv")
    labels = train["label_group"].to_numpy()
    self_only = row_f1(np.eye(len(train), dtype=bool), labels)
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(train["title"])
    tfidf = row_f1((vectors @ vectors.T).toarray() >= 0.6, labels)
    assert tfidf > self_only + 0.05
    assert tfidf < 0.95


def pixel_features(folder: Path, names: pd.Series) -> np.ndarray:
    features = np.stack([np.asarray(Image.open(folder / name).resize((16, 16)), np.float32).ravel() for name in names])
    features -= features.mean(0)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_match_images_carry_a_real_but_imperfect_visual_signal(match_dir: Path) -> None:
    train = pd.read_csv(match_dir / "train.csv")
    labels = train["label_group"].to_numpy()
    features = pixel_features(match_dir / "train_images", train["image"])
    similarities = features @ features.T
    np.fill_diagonal(similarities, -np.inf)
    top1 = np.mean(labels[similarities.argmax(1)] == labels)
    chance = np.mean((pd.Series(labels).map(pd.Series(labels).value_counts()) - 1) / (len(labels) - 1))
    assert top1 > 10 * chance
    assert top1 < 0.6


def colour_histograms(folder: Path, names: pd.Series) -> np.ndarray:
    """Return centred, L2-normalised square-rooted 4x4x4-bin RGB histograms, one row per image."""
    pixels = np.stack([np.asarray(Image.open(folder / name), np.uint8).reshape(-1, 3) // 64 for name in names])
    codes = pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]
    features = np.sqrt(np.stack([np.bincount(row, minlength=64) for row in codes]).astype(np.float32))
    features -= features.mean(0)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_identify_images_carry_a_real_but_imperfect_visual_signal(identify_dir: Path) -> None:
    train, solution = pd.read_csv(identify_dir / "train.csv"), pd.read_csv(identify_dir / "solution.csv")
    seen = solution[solution["individual_id"] != "new_individual"]
    queries = colour_histograms(identify_dir / "test_images", seen["image"])
    references = colour_histograms(identify_dir / "train_images", train["image"])
    nearest = train["individual_id"].to_numpy()[(queries @ references.T).argmax(1)]
    top1 = np.mean(nearest == seen["individual_id"].to_numpy())
    # chance = a random train image's individual, which favours the few individuals with many images
    random_neighbour = seen["individual_id"].map(train["individual_id"].value_counts(normalize=True)).mean()
    assert top1 > 2 * random_neighbour
    assert top1 < 0.5

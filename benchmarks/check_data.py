"""Benchmark the data check (`compkit check`, and fetch before it swaps data in) at Shopee's size, in one process.

The data: a train.csv of 34,250 postings in 11,014 label groups naming 32,412 distinct 640x640 JPEGs (Shopee's
counts), written to a temporary folder. The JPEGs are copies of a pool of distinct gradient-and-noise images
(each file is still opened and decoded on its own), so writing them takes seconds, not the minutes of encoding
each. The files are read from the page cache, as just after a fetch; a cold disk adds its read time.

References, in this process: reading train.csv with pandas (what every stage does first), and a full PIL decode
of every image in one process, timed on a sample and scaled up (what a check without draft mode and without a
pool would cost).

Run: .venv/bin/python benchmarks/check_data.py [--rows 34250]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compkit.config import load_config
from compkit.data.checks import check_data

SHOPEE_ROWS, SHOPEE_IMAGES, SHOPEE_GROUPS = 34_250, 32_412, 11_014
POOL = 64
SIDE = 640
REFERENCE_SAMPLE = 300


def pool_of_jpegs(rng: np.random.Generator) -> list[bytes]:
    """Return POOL distinct SIDE x SIDE JPEGs: colour gradients under mild noise, about 50-60 KB each."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    pool = []
    for _ in range(POOL):
        slopes = rng.uniform(0.05, 0.4, (3, 2))
        base = np.stack([(x * sx + y * sy + rng.uniform(0, 255)) % 256 for sx, sy in slopes], axis=-1)
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        pool.append(buffer.getvalue())
    return pool


def write_competition(folder: Path, n_rows: int, rng: np.random.Generator) -> tuple[int, int]:
    """Write a Shopee-shaped data folder; return (distinct train images, their total bytes)."""
    n_images = max(1, round(n_rows * SHOPEE_IMAGES / SHOPEE_ROWS))
    n_groups = max(1, round(n_rows * SHOPEE_GROUPS / SHOPEE_ROWS))
    pool = pool_of_jpegs(rng)
    names = [rng.bytes(16).hex() + ".jpg" for _ in range(n_images + 3)]
    for folder_name, chosen in (("train_images", names[:n_images]), ("test_images", names[n_images:])):
        (folder / folder_name).mkdir(parents=True)
        for index, name in enumerate(chosen):
            (folder / folder_name / name).write_bytes(pool[index % POOL])
    words = np.array(["tas", "wanita", "sepatu", "kaos", "murah", "original", "premium", "import", "anak", "baju"])
    image_of_row = np.concatenate([np.arange(n_images), rng.integers(0, n_images, n_rows - n_images)])
    train = pd.DataFrame({
        "posting_id": [f"train_{number}" for number in rng.choice(10**9, n_rows, replace=False)],
        "image": np.array(names)[image_of_row],
        "image_phash": [f"{value:016x}" for value in rng.integers(0, 2**63, n_rows)],
        "title": [" ".join(row) for row in words[rng.integers(0, len(words), (n_rows, 6))]],
        "label_group": rng.integers(0, n_groups, n_rows).astype(str),
    })
    train.to_csv(folder / "train.csv", index=False)
    test = pd.DataFrame({"posting_id": ["test_1", "test_2", "test_3"], "image": names[n_images:],
                         "image_phash": ["0" * 16] * 3, "title": ["tas", "kaos", "baju"]})
    test.to_csv(folder / "test.csv", index=False)
    test[["posting_id"]].assign(matches=test["posting_id"]).to_csv(folder / "sample_submission.csv", index=False)
    return n_images, sum(len(pool[i % POOL]) for i in range(n_images))


def full_decode_seconds(folder: Path, names: list[str]) -> float:
    """Return the time to fully decode `names` with PIL in this process, one after the other."""
    start = time.perf_counter()
    for name in names:
        with Image.open(folder / name) as image:
            image.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=SHOPEE_ROWS, help="train.csv rows (default: Shopee's)")
    n_rows = parser.parse_args().rows
    config = load_config("shopee-product-matching")
    tables_only = dataclasses.replace(config, models=tuple(m for m in config.models if m.kind != "image"))
    root = Path(tempfile.mkdtemp(prefix="compkit-check-bench-"))
    try:
        start = time.perf_counter()
        n_images, n_bytes = write_competition(root, n_rows, np.random.default_rng(0))
        print(f"wrote {n_rows:,} rows and {n_images:,} {SIDE}px JPEGs ({n_bytes / 2**30:.2f} GiB, "
              f"{n_bytes / n_images / 1024:.0f} KB each) in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
        read_csv = time.perf_counter() - start
        tables = check_data(tables_only, root).seconds
        result = check_data(config, root)
        sample = sorted(p.name for p in (root / "train_images").iterdir())[:REFERENCE_SAMPLE]
        full_decode = full_decode_seconds(root / "train_images", sample) * n_images / len(sample)

        print(f"compkit check (tables and images): {result.seconds:.1f} s for {result.n_rows:,} rows and "
              f"{result.n_images:,} images ({result.n_images / result.seconds:,.0f} images/s)")
        print(f"  of which the tables' checks alone: {tables:.2f} s")
        print(f"reference, pandas read of train.csv: {read_csv:.3f} s; check / read = "
              f"{result.seconds / read_csv:.0f}x, tables' checks / read = {tables / read_csv:.1f}x")
        print(f"reference, full PIL decode in one process (timed on {len(sample)}, scaled up): {full_decode:.1f} s; "
              f"check / full decode = {result.seconds / full_decode:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

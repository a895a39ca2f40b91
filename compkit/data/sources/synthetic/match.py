"""demo-match: a Shopee-shaped product-matching competition, generated deterministically from a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compkit.data.sources.synthetic.images import (
    SUPERSAMPLING,
    check_sizes,
    encode_jpeg,
    gradient,
    heavy_tailed_counts,
    hsv,
    photo_finish,
    smooth_noise,
    to_image,
    transform_sprite,
    unique_hex_ids,
    unique_integers,
    write_jpeg,
)
from compkit.data.sources.synthetic.packshots import render_product
from compkit.data.sources.synthetic.products import Product, sample_products


def _phrases(text: str) -> tuple[str, ...]:
    return tuple(text.split("|"))


_PROMO_PREFIXES = _phrases("READY STOCK|[READY]|PROMO|COD|ORI|BPOM|TERMURAH|FLASH SALE|HOT ITEM|NEW|[COD]|SALE!!|Ready")
_PROMO_SUFFIXES = _phrases(
    "murah|ORIGINAL 100%|COD|bisa COD|grosir|best seller|free bubble wrap|ready stock|termurah|ORI|100% ASLI|promo|"
    "murah meriah|✅|⭐"
)
_BUNDLES = _phrases("PAKET 2 PCS|BUNDLE 3 pcs|1 DUS|Beli 2 Gratis 1|(isi 2)|Paket Hemat|2in1|COMBO")
_SEPARATORS = (" ", " ", " ", " - ", " | ", " / ")


def _size_text(rng: np.random.Generator, size: int | str, unit: str) -> str:
    if unit == "ml":
        options = [f"{size}ml", f"{size} ml", f"{size} ML", f"{size}mL", f"{size}ML"]
        if size >= 250:
            litres = f"{size / 1000:g}"
            options += [f"{litres}L", f"{litres} liter", f"{litres.replace('.', ',')} L", f"{litres}ltr"]
    elif unit == "g":
        options = [f"{size}gr", f"{size} gram", f"{size}g", f"{size} GR", f"{size}gram"]
        if size >= 250:
            kilos = f"{size / 1000:g}"
            options += [f"{kilos}kg", f"{kilos} KG", f"{kilos.replace('.', ',')}kg"]
    elif unit == "pcs":
        options = [f"{size}pcs", f"isi {size}", f"{size} pcs", f"{size} lembar", f"{size}'s", f"isi {size} pcs"]
    elif size == "All size":
        options = ["all size", "ALLSIZE", "allsize fit L", "All Size"]
    else:
        options = [f"size {size}", f"uk {size}", str(size), f"({size})", f"ukuran {size}"]
    return options[int(rng.integers(len(options)))]


def _typo(rng: np.random.Generator, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def make_title(rng: np.random.Generator, product: Product) -> str:
    """Return one seller's title for the product: reordered, respelt, abbreviated, with promo noise."""
    noun = product.noun[0] if rng.random() < 0.5 else str(rng.choice(product.noun))
    variant = product.variant if rng.random() > 0.12 else ("all varian" if rng.random() < 0.4 else None)
    chunks = {
        "brand": product.brand if rng.random() > 0.12 else None,
        "noun": noun,
        "variant": variant,
        "size": _size_text(rng, product.size, product.category.unit) if rng.random() > 0.12 else None,
        "descriptors": " ".join(d for d in product.descriptors if rng.random() < 0.6) or None,
    }
    order = ["brand", "noun", "variant", "size", "descriptors"]
    if rng.random() < 0.35:
        order = [order[i] for i in rng.permutation(len(order))]
    parts = [chunks[key] for key in order if chunks[key]]
    if rng.random() < 0.35:
        parts.insert(0, str(rng.choice(_PROMO_PREFIXES)))
    if rng.random() < 0.1:
        parts.insert(0, str(rng.choice(_BUNDLES)))
    if rng.random() < 0.35:
        parts.append(str(rng.choice(_PROMO_SUFFIXES)))
    title = str(rng.choice(_SEPARATORS)).join(parts)
    title = " ".join(_typo(rng, word) if rng.random() < 0.05 else word for word in title.split(" "))
    casing = rng.random()
    if casing < 0.25:
        return title.upper()
    if casing < 0.5:
        return title.title()
    return title.lower() if casing < 0.65 else title


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Return a seller's packshot backdrop: a white studio sweep or a plain pastel sheet, lit unevenly."""
    if rng.random() < 0.6:
        white = rng.uniform(225, 255)
        pixels = gradient(side, side, (white,) * 3, (white * rng.uniform(0.8, 0.95),) * 3)
    else:
        pastel = hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.4), rng.uniform(0.75, 0.98))
        pixels = np.full((side, side, 3), pastel, np.float32)
    lighting = 0.85 + 0.3 * smooth_noise(rng, side, side, cells=3)
    return pixels * lighting


def _place_product(rng: np.random.Generator, canvas: Image.Image, sprite: Image.Image) -> None:
    """Paste the product upright near the centre, filling about three quarters of the frame's height."""
    side = canvas.width
    placed = transform_sprite(sprite, height=round(side * rng.uniform(0.7, 0.8)), angle=rng.normal(0, 2))
    left = side / 2 - placed.width / 2 + rng.normal(0, 0.02 * side)
    top = side / 2 - placed.height / 2 + rng.normal(0, 0.02 * side)
    canvas.paste(placed, (round(left), round(top)), placed)


def _render_posting(rng: np.random.Generator, sprite: Image.Image, image_size: int) -> Image.Image:
    canvas = to_image(_background(rng, SUPERSAMPLING * image_size))
    _place_product(rng, canvas, sprite)
    return photo_finish(canvas, rng, out_size=image_size, min_crop_area=0.85, jitter=0.3)


def _render_split(
    rng: np.random.Generator,
    products: list[Product],
    label_groups: list[int],
    folder: Path,
    *,
    image_size: int,
    image_names: set[str],
    same_image_rate: float = 0.12,
    reupload_rate: float = 0.06,
) -> list[dict]:
    """Write every posting's JPEG into ``folder``; return the postings' rows (posting_id still missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    group_sizes = heavy_tailed_counts(rng, len(products), low=2, high=50, exponent=3.0)
    rows = []
    for product, label_group, group_size in zip(products, label_groups, group_sizes, strict=True):
        sprite = render_product(product.design, SUPERSAMPLING * image_size)
        photos: list[tuple[str, str, Image.Image]] = []
        for _ in range(group_size):
            roll = rng.random()
            if photos and roll < same_image_rate:
                name, phash, _ = photos[int(rng.integers(len(photos)))]
            else:
                if photos and roll < same_image_rate + reupload_rate:
                    photo = photos[int(rng.integers(len(photos)))][2]
                else:
                    photo = _render_posting(rng, sprite, image_size)
                name = unique_hex_ids(rng, 1, n_chars=32, taken=image_names)[0] + ".jpg"
                phash = write_jpeg(folder, name, encode_jpeg(photo, quality=int(rng.integers(60, 96))))
                photos.append((name, phash, photo))
            rows.append(
                {"image": name, "image_phash": phash, "title": make_title(rng, product), "label_group": label_group}
            )
    return [rows[i] for i in rng.permutation(len(rows))]


def generate_match(out_dir: Path, *, seed: int, n_train_groups: int, n_test_groups: int, image_size: int) -> None:
    """Write a Shopee-shaped competition into ``out_dir``: CSVs, train_images/ and test_images/, plus solution.csv."""
    check_sizes(n_train_groups=n_train_groups, n_test_groups=n_test_groups, image_size=image_size)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    products = sample_products(rng, n_train_groups + n_test_groups)
    label_groups = unique_integers(rng, len(products), low=10**6, high=2**32)
    image_names: set[str] = set()
    frames = {}
    for split, chosen in (("train", slice(0, n_train_groups)), ("test", slice(n_train_groups, None))):
        rows = _render_split(
            rng,
            products[chosen],
            label_groups[chosen],
            out_dir / f"{split}_images",
            image_size=image_size,
            image_names=image_names,
        )
        posting_numbers = unique_integers(rng, len(rows), low=10**8, high=2**32)
        frame = pd.DataFrame(rows)
        frame.insert(0, "posting_id", [f"{split}_{number}" for number in posting_numbers])
        frames[split] = frame
    train, test = frames["train"], frames["test"]
    train.to_csv(out_dir / "train.csv", index=False)
    test.drop(columns="label_group").to_csv(out_dir / "test.csv", index=False)
    pd.DataFrame({"posting_id": test["posting_id"], "matches": test["posting_id"]}).to_csv(
        out_dir / "sample_submission.csv", index=False
    )
    test[["posting_id", "label_group"]].to_csv(out_dir / "solution.csv", index=False)

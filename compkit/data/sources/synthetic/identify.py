"""demo-identify: a Happywhale-shaped individual-identification competition, generated deterministically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

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
    upsample_grid,
)
from compkit.data.sources.synthetic.whales import SPECIES, Species, render_individual

NEW_INDIVIDUAL = "new_individual"
# Kaggle's sample_submission.csv gives every test image this same placeholder
SAMPLE_PREDICTIONS = "37c7aba965a5 114207cab555 a6e325d8e924 19fbb960f07d new_individual"


def _assign_species(rng: np.random.Generator, count: int) -> list[tuple[Species, str]]:
    """Return (species, raw species name) per individual; every raw spelling occurs once the count allows."""
    spellings = [(species, raw) for species in SPECIES for raw in species.raw_names]
    frequencies = np.array([species.frequency for species in SPECIES])
    assigned = []
    for index in range(count):
        if index < len(spellings):
            assigned.append(spellings[index])
            continue
        species = SPECIES[int(rng.choice(len(SPECIES), p=frequencies / frequencies.sum()))]
        raw = species.raw_names[int(rng.choice(len(species.raw_names), p=species.raw_weights))]
        assigned.append((species, raw))
    return [assigned[i] for i in rng.permutation(count)]


@dataclass(frozen=True)
class _Encounter:
    """One outing: the day's sky, sea and light, and where the photographer stood; photos of it look alike."""

    sky_hue: float
    sky_top: tuple[float, float]  # saturation, value
    sky_bottom: tuple[float, float]
    sea: tuple[float, float, float]  # hue, saturation, value
    horizon: float  # as a fraction of the frame's height
    wave_length: float
    chop: float
    mirrored: bool  # which side of the animal faced the boat


def _new_encounter(rng: np.random.Generator) -> _Encounter:
    return _Encounter(
        sky_hue=rng.uniform(195, 225),
        sky_top=(rng.uniform(0.15, 0.5), rng.uniform(0.65, 0.95)),
        sky_bottom=(rng.uniform(0.0, 0.25), rng.uniform(0.85, 1.0)),
        sea=(rng.uniform(180, 225), rng.uniform(0.4, 0.85), rng.uniform(0.2, 0.55)),
        horizon=rng.uniform(-0.3, 0.45),
        wave_length=rng.uniform(0.02, 0.05),
        chop=rng.uniform(0.15, 0.4),
        mirrored=bool(rng.random() < 0.5),
    )


def _sea_and_sky(rng: np.random.Generator, side: int, horizon: float, encounter: _Encounter) -> np.ndarray:
    """Return a (side, side, 3) seascape: cloudy sky above ``horizon``, choppy sea with glints below it."""
    split = int(np.clip(round(horizon), 0, side))
    hue_shift, brightness = rng.normal(0, 3), rng.normal(1, 0.04)
    sky_top = hsv(encounter.sky_hue + hue_shift, encounter.sky_top[0], encounter.sky_top[1] * brightness)
    sky_bottom = hsv(encounter.sky_hue + hue_shift, encounter.sky_bottom[0], encounter.sky_bottom[1] * brightness)
    noise = upsample_grid(rng.random((5, 5, 2)), side, side)
    chop = upsample_grid(rng.random((int(rng.integers(14, 28)), int(rng.integers(3, 7)))), side, side)[..., 0]
    rows = np.arange(side, dtype=np.float32)[:, None]
    sky = gradient(side, 1, sky_top, sky_bottom)[:split] + 50 * noise[:split, :, :1] ** 2  # clouds
    distance = (rows[split:] - horizon) / side + 0.08  # wave length shrinks toward the horizon
    near_horizon = np.exp(-4 * distance)[..., None]
    sea_hue, sea_saturation, sea_value = encounter.sea
    deep = np.asarray(hsv(sea_hue + hue_shift, sea_saturation, sea_value * brightness), np.float32)
    sea_column = deep * (1 - 0.5 * near_horizon) + np.asarray(sky_bottom, np.float32) * 0.5 * near_horizon
    wave_length = side * encounter.wave_length * rng.normal(1, 0.1) * distance
    phase = rows[split:] / wave_length + rng.uniform(0.5, 1.5) * noise[split:, :, 1]
    shade = 1 + rng.uniform(0.03, 0.1) * np.sin(2 * np.pi * phase) + encounter.chop * (chop[split:] - 0.5)
    glints = np.clip((chop[split:] - rng.uniform(0.8, 0.95)) / 0.06, 0, 1) * rng.uniform(20, 70)
    sea = sea_column * shade[..., None] + glints[..., None]
    return np.concatenate([np.broadcast_to(sky, (split, side, 3)), sea], axis=0)


def _render_photo(
    rng: np.random.Generator, species: Species, sprite: Image.Image, encounter: _Encounter, image_size: int
) -> Image.Image:
    """Return one photo of the individual at an encounter: sea and sky, pose, waterline, spray, light and camera."""
    side = SUPERSAMPLING * image_size
    horizon = side * (encounter.horizon + rng.normal(0, 0.06))
    zoom = np.clip(1 + rng.normal(0, 0.15), 0, 1)  # close-ups, as photo-ID pictures are: 0 = far, 1 = close
    if species.view == "fin":
        height = side * np.interp(zoom, (0, 1), (0.25, 0.6))
        width_scale = rng.uniform(0.75, 1.1)
    else:
        width = side * np.interp(
            zoom, (0, 1), {"fluke": (0.5, 0.95), "back": (0.85, 1.5), "head": (0.6, 1.3)}[species.view]
        )
        height = width / sprite.width * sprite.height
        width_scale = rng.uniform(0.8, 1.1)
    submerged = rng.uniform(0.0, 0.25)
    sprite = sprite.crop((0, 0, sprite.width, round(sprite.height * (1 - submerged))))
    lit = np.asarray(sprite, np.float32)
    lit[..., :3] *= np.linspace(*rng.uniform(0.7, 1.2, size=2), sprite.width, dtype=np.float32)[None, :, None]
    placed = transform_sprite(
        Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)),
        height=max(4, round(height * (1 - submerged))),
        width_scale=width_scale,
        angle=rng.normal(0, 4),
        mirror=species.view != "fluke" and encounter.mirrored != (rng.random() < 0.15),
    )
    lowest = min(max(horizon + 0.05 * side, placed.height * 0.75), side * 0.95)
    waterline = rng.uniform(lowest, side * 0.95)
    left = side / 2 - placed.width / 2 + rng.normal(0, 0.12 * side)
    canvas = to_image(_sea_and_sky(rng, side, horizon, encounter))
    canvas.paste(placed, (round(left), round(waterline - placed.height)), placed)
    pixels = np.asarray(canvas, np.float32).copy()
    top, bottom = max(0, int(waterline - 0.05 * side)), min(side, int(waterline + 0.05 * side) + 1)
    if bottom > top:  # foam where the body cuts the surface
        band = np.exp(-(((np.arange(top, bottom)[:, None] - waterline) / (0.02 * side)) ** 2))
        columns = np.arange(side)[None, :]
        within = (columns > left - 0.1 * side) & (columns < left + placed.width + 0.1 * side)
        foam = band * within * smooth_noise(rng, bottom - top, side, cells=12)[..., 0] ** 2 * rng.uniform(0.5, 1.5)
        pixels[top:bottom] += (235 - pixels[top:bottom]) * np.clip(foam, 0, 1)[..., None]
    photo = to_image(pixels)
    if rng.random() < 0.2:  # spray droplets
        draw = ImageDraw.Draw(photo)
        for x, y, radius in zip(
            rng.normal(left + placed.width / 2, placed.width / 3, 40),
            rng.normal(waterline - 0.05 * side, 0.08 * side, 40),
            rng.uniform(0.3, 0.9, 40) * SUPERSAMPLING,
            strict=True,
        ):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(238, 240, 242))
    return photo_finish(photo, rng, out_size=image_size, min_crop_area=0.85, jitter=0.3)


def _write_images(
    rng: np.random.Generator,
    folder: Path,
    sprites: list[tuple[Species, Image.Image]],
    counts: np.ndarray,
    *,
    encounters: list[list[_Encounter]],
    new_encounter_rate: float,
    image_size: int,
    taken: set[str],
) -> list[tuple[str, int, int]]:
    """Write ``counts[i]`` photos of individual i into ``folder``; return (image name, individual index,
    encounter index) triples, the encounter's index in the individual's list of encounters.

    A photo comes from one of the individual's past ``encounters`` or, at ``new_encounter_rate``, from a new one
    (appended), so that like on Happywhale several photos of an individual often share a day's sea and light.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, ((species, sprite), count) in enumerate(zip(sprites, counts, strict=True)):
        known = encounters[index]
        for _ in range(count):
            if not known or rng.random() < new_encounter_rate:
                known.append(_new_encounter(rng))
            encounter = known[int(rng.integers(len(known)))]
            photo = _render_photo(rng, species, sprite, encounter, image_size)
            name = unique_hex_ids(rng, 1, n_chars=14, taken=taken)[0] + ".jpg"
            (folder / name).write_bytes(encode_jpeg(photo, quality=int(rng.integers(70, 96))))
            written.append((name, index, known.index(encounter)))
    return written


def generate_identify(out_dir: Path, *, seed: int, n_train_groups: int, n_test_groups: int, image_size: int) -> None:
    """Write a Happywhale-shaped competition into ``out_dir``: CSVs, train_images/ and test_images/, solution.csv."""
    check_sizes(n_train_groups=n_train_groups, n_test_groups=n_test_groups, image_size=image_size)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_individuals = n_train_groups + n_test_groups
    assigned = _assign_species(rng, n_individuals)
    individual_ids = unique_hex_ids(rng, n_individuals, n_chars=12)
    sprites = [(species, render_individual(rng, species, 2 * SUPERSAMPLING * image_size)) for species, _ in assigned]
    train_counts = heavy_tailed_counts(rng, n_train_groups, low=1, high=60, exponent=2.0)
    seen_test_counts = rng.poisson(0.23 * train_counts)
    if seen_test_counts.sum() == 0:
        seen_test_counts[int(np.argmax(train_counts))] = 1
    test_counts = np.concatenate(
        [seen_test_counts, heavy_tailed_counts(rng, n_test_groups, low=1, high=6, exponent=2.2)]
    )
    image_names: set[str] = set()
    encounters: list[list[_Encounter]] = [[] for _ in range(n_individuals)]
    train = _write_images(
        rng,
        out_dir / "train_images",
        sprites[:n_train_groups],
        train_counts,
        encounters=encounters,
        new_encounter_rate=0.3,
        image_size=image_size,
        taken=image_names,
    )
    test = _write_images(
        rng,
        out_dir / "test_images",
        sprites,
        test_counts,
        encounters=encounters,
        new_encounter_rate=0.5,
        image_size=image_size,
        taken=image_names,
    )
    raw_species = [raw for _, raw in assigned]
    answers = individual_ids[:n_train_groups] + [NEW_INDIVIDUAL] * n_test_groups
    train_frame = pd.DataFrame(
        {
            "image": [name for name, _, _ in train],
            "species": [raw_species[i] for _, i, _ in train],
            "individual_id": [individual_ids[i] for _, i, _ in train],
            # the outing a photo was taken on, numbered in order of appearance (the test photos' are hidden)
            "encounter": [f"e{n:04d}" for n in pd.factorize(pd.Series([(i, e) for _, i, e in train]))[0]],
        }
    )
    train_frame.sort_values("image").to_csv(out_dir / "train.csv", index=False)
    solution = pd.DataFrame(
        {
            "image": [name for name, _, _ in test],
            "individual_id": [answers[i] for _, i, _ in test],
            "species": [raw_species[i] for _, i, _ in test],
        }
    ).sort_values("image")
    solution.to_csv(out_dir / "solution.csv", index=False)
    pd.DataFrame({"image": solution["image"], "predictions": SAMPLE_PREDICTIONS}).to_csv(
        out_dir / "sample_submission.csv", index=False
    )

"""Cetaceans of demo-identify: species (with Happywhale's raw misspellings) and each individual's marked sprite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from compkit.data.sources.synthetic.images import RGB, to_image, upsample_grid


@dataclass(frozen=True)
class Species:
    name: str
    raw_names: tuple[str, ...]  # spellings found in the raw train.csv, the correct one first
    raw_weights: tuple[float, ...]
    frequency: float
    view: str  # "fin" (dorsal fin at the surface), "fluke", "back" or "head"
    colour: RGB
    fin_height: float = 0.8
    fin_sweep: float = 1.0  # how far back the tip leans, in base widths
    fin_concavity: float = 0.3  # how falcate (hooked) the trailing edge is
    fin_base: float = 1.0
    notch_rate: float = 2.0
    saddle: RGB | None = None


SPECIES = (
    Species(
        "bottlenose_dolphin",
        ("bottlenose_dolphin", "bottlenose_dolpin"),
        (0.88, 0.12),
        0.22,
        "fin",
        (128, 132, 138),
        notch_rate=2.5,
    ),
    Species("beluga", ("beluga",), (1.0,), 0.14, "head", (222, 225, 228)),
    Species("humpback_whale", ("humpback_whale",), (1.0,), 0.15, "fluke", (38, 38, 44)),
    Species("blue_whale", ("blue_whale",), (1.0,), 0.09, "back", (98, 114, 132), fin_height=0.12),
    Species("gray_whale", ("gray_whale",), (1.0,), 0.05, "back", (118, 118, 116), fin_height=0.0),
    Species(
        "false_killer_whale",
        ("false_killer_whale",),
        (1.0,),
        0.07,
        "fin",
        (46, 46, 52),
        fin_height=0.7,
        fin_sweep=1.15,
        fin_concavity=0.45,
    ),
    Species(
        "melon_headed_whale",
        ("melon_headed_whale",),
        (1.0,),
        0.05,
        "fin",
        (58, 60, 66),
        fin_height=0.65,
        fin_concavity=0.35,
    ),
    Species(
        "killer_whale",
        ("killer_whale", "kiler_whale"),
        (0.6, 0.4),
        0.08,
        "fin",
        (24, 24, 28),
        fin_height=1.5,
        fin_sweep=0.55,
        fin_concavity=0.05,
        notch_rate=1.5,
        saddle=(175, 175, 180),
    ),
    Species(
        "short_finned_pilot_whale",
        ("short_finned_pilot_whale", "pilot_whale", "globis"),
        (0.6, 0.25, 0.15),
        0.08,
        "fin",
        (36, 36, 40),
        fin_height=0.5,
        fin_sweep=1.25,
        fin_concavity=0.35,
        fin_base=1.4,
        saddle=(88, 88, 92),
    ),
    Species(
        "spinner_dolphin",
        ("spinner_dolphin",),
        (1.0,),
        0.07,
        "fin",
        (92, 97, 108),
        fin_height=0.85,
        fin_sweep=0.7,
        fin_concavity=0.1,
        notch_rate=1.0,
    ),
)


def _bezier(start: np.ndarray, control: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


def _half_ellipse(centre_x: float, radius_x: float, height: float, n: int = 40) -> np.ndarray:
    angles = np.linspace(np.pi, 0, n)
    return np.stack([centre_x + radius_x * np.cos(angles), height * np.sin(angles) ** 0.8], axis=1)


def _fin_outline(rng: np.random.Generator, species: Species, base_y: float) -> np.ndarray:
    """Return the dorsal fin's outline (unit coordinates, y up) with this individual's shape and notches."""
    height = species.fin_height * rng.normal(1, 0.08)
    base = species.fin_base * rng.normal(1, 0.06)
    sweep = species.fin_sweep + rng.normal(0, 0.08)
    concavity = species.fin_concavity + rng.normal(0, 0.06)
    front, tip, rear = (
        np.array([0.0, base_y]),
        np.array([sweep * base, base_y + height]),
        np.array([0.85 * base, base_y]),
    )
    tip_cut = rng.uniform(0, 0.08) if rng.random() < 0.4 else 0.0
    t = np.linspace(0, 1, 60)
    leading = _bezier(front, np.array([0.15 * base, base_y + 0.8 * height]), tip, t * (1 - tip_cut))
    control = (tip + rear) / 2 + np.array([-concavity * base, -0.1 * height])
    trailing = _bezier(tip, control, rear, tip_cut + t * (1 - tip_cut))
    # Notches: bites cut into the trailing edge, pushed along its inward normal
    tangent = np.gradient(trailing, axis=0)
    inward = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * -1
    inward /= np.linalg.norm(inward, axis=1, keepdims=True) + 1e-9
    depth = np.zeros(len(t))
    for _ in range(rng.poisson(species.notch_rate)):
        centre, width = rng.uniform(0.1, 0.9), rng.uniform(0.015, 0.05)
        depth = np.maximum(depth, rng.uniform(0.02, 0.09) * height * np.clip(1 - np.abs(t - centre) / width, 0, 1))
    trailing = trailing + inward * depth[:, None]
    return np.concatenate([leading, trailing, [[0.85 * base, 0.0], [0.0, 0.0]]])


def _fluke_outline(rng: np.random.Generator) -> np.ndarray:
    """Return a humpback's raised fluke (unit coordinates, y up): serrated trailing edge, notch, peduncle."""
    x = np.linspace(-1, 1, 121)
    tips = 0.55 + rng.normal(0, 0.04, size=2)
    tip_height = np.where(x < 0, tips[0], tips[1])
    serration = sum(
        rng.uniform(0.005, 0.03) * np.clip(1 - np.abs(x - rng.uniform(-1, 1)) / 0.05, 0, 1)
        for _ in range(rng.integers(3, 12))
    )
    notch = rng.uniform(0.03, 0.07) * np.clip(1 - np.abs(x) / 0.05, 0, 1)
    top = 0.38 + (tip_height - 0.38) * np.abs(x) ** rng.uniform(1.1, 1.6) - serration - notch
    bottom = tip_height - tip_height * (1 - np.abs(x)) ** rng.uniform(0.5, 0.8)
    stem = [[0.14, 0.02], [0.22, -0.45], [-0.22, -0.45], [-0.14, 0.02]]
    right = x >= 0
    return np.concatenate(
        [np.stack([x, top], 1), np.stack([x, bottom], 1)[right][::-1], stem, np.stack([x, bottom], 1)[~right][::-1]]
    )


def _back_outline(rng: np.random.Generator, species: Species) -> np.ndarray:
    """Return a long surfacing back (blue or gray whale), with a small fin or dorsal knuckles."""
    back = _half_ellipse(1.5, 1.5, 0.5 * rng.normal(1, 0.06), n=80)
    if species.fin_height > 0:
        position = rng.uniform(2.1, 2.4)
        height = species.fin_height * rng.normal(1, 0.2)
        fin = np.array([[position - 0.12, 0.0], [position + 0.05 + rng.normal(0, 0.03), height], [position + 0.1, 0.0]])
        fin[:, 1] += np.interp(fin[:, 0], back[:, 0], back[:, 1])
        return np.concatenate([back[back[:, 0] < fin[0, 0]], fin, back[back[:, 0] > fin[2, 0]]])
    knuckles = rng.uniform(0.01, 0.04, size=len(back)) * (back[:, 0] > 2.2) * (np.arange(len(back)) % 3 == 0)
    return back + np.stack([np.zeros(len(back)), knuckles], 1)


def _head_outline(rng: np.random.Generator) -> np.ndarray:
    """Return a beluga's melon and back at the surface (unit coordinates, y up)."""
    melon = _half_ellipse(0.38, 0.38, 0.42 * rng.normal(1, 0.05), n=30)
    back = _half_ellipse(1.3, 1.0, 0.32 * rng.normal(1, 0.06), n=50)
    ridge = rng.uniform(0, 0.025, size=len(back)) * (back[:, 0] > 1.2)
    back[:, 1] += ridge
    return np.concatenate([melon[melon[:, 0] < 0.55], back[back[:, 0] > 0.55]])


def render_individual(rng: np.random.Generator, species: Species, size: int) -> Image.Image:
    """Return a new individual of ``species`` as an RGBA sprite ``size`` pixels long, waterline at its bottom."""
    if species.view == "fin":
        back = _half_ellipse(0.5 * species.fin_base, 1.6 * species.fin_base, 0.25)
        outline = np.concatenate([back, [[back[-1, 0], 0.0]]])
        fin = _fin_outline(rng, species, base_y=0.2)
        extra = [fin]
    elif species.view == "fluke":
        outline, extra = _fluke_outline(rng), []
    elif species.view == "back":
        outline, extra = _back_outline(rng, species), []
    else:
        outline, extra = _head_outline(rng), []
    every = np.concatenate([outline, *extra])
    (x_min, y_min), (x_max, y_max) = every.min(0), every.max(0)
    scale = (size - 1) / max(x_max - x_min, y_max - y_min)
    width, height = max(4, round((x_max - x_min) * scale) + 1), max(4, round((y_max - y_min) * scale) + 1)

    def to_pixels(points: np.ndarray) -> list[tuple[float, float]]:
        return [((x - x_min) * scale, (y_max - y) * scale) for x, y in points]

    alpha = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(alpha)
    for polygon in (outline, *extra):
        mask_draw.polygon(to_pixels(polygon), fill=255)
    skin = _skin(rng, species, width, height)
    image = to_image(skin)
    _draw_markings(rng, species, ImageDraw.Draw(image), width, height, to_pixels)
    image = image.convert("RGBA")
    image.putalpha(alpha)
    return image


def _skin(rng: np.random.Generator, species: Species, width: int, height: int) -> np.ndarray:
    """Return the body's colouring: the species' tone, sunlit from above, with this individual's pigmentation."""
    colour = np.asarray(species.colour, np.float32) * rng.normal(1, 0.05)
    from_top = np.linspace(1.15, 0.8, height, dtype=np.float32)[:, None, None]
    if species.view == "fluke":
        pattern = upsample_grid(rng.random((5, 9)), height, width)[..., 0]
        white_share = rng.uniform(0.05, 0.95)
        underside = pattern > np.quantile(pattern, 1 - white_share)
        rows = np.linspace(0, 1, height)[:, None]
        edge = (rows < rng.uniform(0.08, 0.18)) | (rows > 0.6)  # dark trailing edge and peduncle
        white = np.asarray((226, 226, 222), np.float32)
        return np.where((underside & ~edge)[..., None], white, colour) * (0.9 + 0.1 * from_top)
    mottling = upsample_grid(rng.random((4, 16)) if species.view == "back" else rng.random((3, 6)), height, width)
    strength = {"back": 0.7, "head": 0.12}.get(species.view, 0.2)
    skin = colour * from_top * (1 - strength / 2 + strength * mottling)
    if species.name == "spinner_dolphin":  # dark cape over the back
        skin *= np.linspace(0.55, 1.1, height, dtype=np.float32)[:, None, None]
    if species.name == "beluga":  # older belugas yellow
        skin *= np.asarray((1.0, 1.0, rng.uniform(0.85, 1.0)), np.float32)
    return skin


def _draw_markings(
    rng: np.random.Generator, species: Species, draw: ImageDraw.ImageDraw, width: int, height: int, to_pixels
) -> None:
    """Draw this individual's saddle patch, scars, rake marks and spots (clipped to the body by its alpha later)."""
    body = np.asarray(species.colour, np.float32)
    light = tuple(int(c) for c in np.clip(body + (255 - body) * 0.6, 0, 255))
    dark = tuple(int(c) for c in body * 0.45)
    if species.saddle is not None and rng.random() < 0.85:
        centre, radius = rng.uniform(1.0, 1.3) * species.fin_base, rng.uniform(0.35, 0.6) * species.fin_base
        (x0, y0), (x1, y1) = to_pixels(np.array([[centre - radius, 0.3], [centre + radius, 0.0]]))
        draw.ellipse((x0, y0, x1, y1 + (y1 - y0)), fill=species.saddle)
        if rng.random() < 0.4:  # "open" saddle: a dark intrusion
            draw.ellipse((x0 + (x1 - x0) * rng.uniform(0.2, 0.5), y0, x1, y1), fill=species.colour)
    span = max(width, height)
    for _ in range(rng.poisson(3.0)):  # scars and rake marks
        x, y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3) * span
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        colour = light if rng.random() < 0.75 else dark
        for k in range(int(rng.choice((1, 1, 2, 3)))):
            offset = k * 0.03 * span
            draw.line(
                (x + offset, y + offset, x + dx + offset, y + dy + offset),
                fill=colour,
                width=max(1, round(span * rng.uniform(0.008, 0.018))),
            )
    for _ in range(rng.poisson(4.0)):  # spots
        x, y, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.01, 0.035) * span
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=light if rng.random() < 0.5 else dark)

"""Packshots of demo-match products: a design (shape, palette, pattern, logo, label) drawn as an RGBA sprite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from compkit.data.sources.synthetic.images import RGB, to_image

SHAPE_ASPECTS = {
    "bottle": (2.0, 2.9),
    "jar": (0.95, 1.35),
    "tube": (2.4, 3.2),
    "box": (1.1, 1.7),
    "pouch": (1.2, 1.5),
    "shirt": (0.95, 1.1),
}
PATTERNS = ("solid", "stripes", "dots", "gradient", "band", "check", "waves")
LOGOS = ("circle", "ring", "triangle", "star", "diamond", "leaf", "square")


@dataclass(frozen=True)
class Design:
    shape: str
    aspect: float  # height / width
    body: RGB
    accent: RGB
    label: RGB
    cap: RGB
    ink: RGB
    pattern: str
    pattern_period: float
    pattern_angle: float
    logo: str
    logo_colour: RGB
    logo_left: bool
    text_widths: tuple[float, ...]
    label_top: float
    long_sleeves: bool


def _pattern_fill(design: Design, width: int, height: int) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32) / height
    body, accent = np.asarray(design.body, np.float32), np.asarray(design.accent, np.float32)
    period, angle = design.pattern_period, np.deg2rad(design.pattern_angle)
    along = (columns * np.cos(angle) + rows * np.sin(angle)) / period
    if design.pattern == "gradient":
        weight = (rows / rows.max()) ** 1.5
        return (1 - weight[..., None]) * body + weight[..., None] * accent
    masks = {
        "solid": np.zeros_like(rows, dtype=bool),
        "stripes": along % 1 < 0.4,
        "dots": ((columns / period) % 1 - 0.5) ** 2 + ((rows / period) % 1 - 0.5) ** 2 < 0.09,
        "band": np.abs(rows - 0.3) < period,
        "check": (columns / period % 1 < 0.5) ^ (rows / period % 1 < 0.5),
        "waves": np.sin(along * 2 * np.pi + 2 * np.sin(rows * 25)) > 0.5,
    }
    return np.where(masks[design.pattern][..., None], accent, body)


def _draw_logo(draw: ImageDraw.ImageDraw, kind: str, centre: tuple[float, float], radius: float, colour: RGB) -> None:
    x, y = centre
    bounds = (x - radius, y - radius, x + radius, y + radius)
    if kind == "circle":
        draw.ellipse(bounds, fill=colour)
    elif kind == "ring":
        draw.ellipse(bounds, outline=colour, width=max(1, round(radius * 0.35)))
    elif kind == "square":
        draw.rounded_rectangle(bounds, radius=radius * 0.3, fill=colour)
    elif kind == "leaf":
        draw.ellipse((x - radius, y - radius * 0.5, x + radius, y + radius * 0.5), fill=colour)
        draw.line((x - radius, y + radius * 0.5, x + radius, y - radius * 0.5), fill=(255, 255, 255), width=1)
    else:
        n_points = {"triangle": 3, "diamond": 4, "star": 10}[kind]
        angles = np.pi / 2 + np.arange(n_points) * 2 * np.pi / n_points
        radii = (
            np.where(np.arange(n_points) % 2, 0.45 * radius, radius) if kind == "star" else np.full(n_points, radius)
        )
        draw.polygon([(x + r * np.cos(a), y - r * np.sin(a)) for r, a in zip(radii, angles, strict=True)], fill=colour)


def _draw_shape(
    design: Design,
    draw: ImageDraw.ImageDraw,
    mask: ImageDraw.ImageDraw,
    shade: ImageDraw.ImageDraw,
    width: int,
    height: int,
) -> tuple[float, float, float, float]:
    """Draw the silhouette, caps and faces; return the label's box in unit coordinates."""

    def at(*points: float) -> list[float]:
        return [p * ((width - 1) if i % 2 == 0 else (height - 1)) for i, p in enumerate(points)]

    cap, dark = design.cap, tuple(round(c * 0.7) for c in design.body)
    if design.shape == "bottle":
        mask.rounded_rectangle(at(0.0, 0.2, 1.0, 1.0), radius=0.3 * width, fill=255)
        mask.rectangle(at(0.34, 0.08, 0.66, 0.25), fill=255)
        draw.rounded_rectangle(at(0.3, 0.0, 0.7, 0.1), radius=0.05 * width, fill=cap)
        mask.rounded_rectangle(at(0.3, 0.0, 0.7, 0.1), radius=0.05 * width, fill=255)
        return 0.0, 0.45, 1.0, 0.86
    if design.shape == "jar":
        mask.rounded_rectangle(at(0.04, 0.15, 0.96, 1.0), radius=0.12 * width, fill=255)
        mask.rounded_rectangle(at(0.0, 0.0, 1.0, 0.2), radius=0.04 * width, fill=255)
        draw.rounded_rectangle(at(0.0, 0.0, 1.0, 0.2), radius=0.04 * width, fill=cap)
        for u in np.linspace(0.05, 0.95, 12):
            draw.line(at(u, 0.02, u, 0.18), fill=tuple(round(c * 0.8) for c in cap), width=1)
        return 0.04, 0.35, 0.96, 0.85
    if design.shape == "tube":
        mask.polygon(at(0.0, 0.05, 1.0, 0.05, 0.74, 0.87, 0.26, 0.87), fill=255)
        mask.rectangle(at(0.0, 0.0, 1.0, 0.06), fill=255)
        draw.rectangle(at(0.0, 0.0, 1.0, 0.06), fill=dark)
        mask.rounded_rectangle(at(0.3, 0.85, 0.7, 1.0), radius=0.04 * width, fill=255)
        draw.rounded_rectangle(at(0.3, 0.85, 0.7, 1.0), radius=0.04 * width, fill=cap)
        return 0.1, 0.15, 0.9, 0.55
    if design.shape == "box":
        mask.polygon(at(0.0, 0.1, 0.18, 0.0, 1.0, 0.0, 1.0, 0.9, 0.82, 1.0, 0.0, 1.0), fill=255)
        shade.polygon(at(0.0, 0.1, 0.18, 0.0, 1.0, 0.0, 0.82, 0.1), fill=150)
        shade.polygon(at(0.82, 0.1, 1.0, 0.0, 1.0, 0.9, 0.82, 1.0), fill=90)
        return 0.05, 0.33, 0.77, 0.8
    if design.shape == "pouch":
        teeth = np.linspace(0, 1, 15)
        zigzag = [v for i, u in enumerate(teeth) for v in (u, 0.0 if i % 2 else 0.025)]
        mask.polygon(at(*zigzag, 1.0, 0.9, 0.92, 1.0, 0.08, 1.0, 0.0, 0.9), fill=255)
        shade.rectangle(at(0.0, 0.0, 1.0, 0.1), fill=95)
        return 0.1, 0.28, 0.9, 0.8
    sleeve = 0.8 if design.long_sleeves else 0.4
    mask.polygon(
        at(
            0.35,
            0.02,
            0.65,
            0.02,
            0.9,
            0.12,
            1.0,
            sleeve,
            0.85,
            sleeve + 0.04,
            0.8,
            0.42,
            0.8,
            1.0,
            0.2,
            1.0,
            0.2,
            0.42,
            0.15,
            sleeve + 0.04,
            0.0,
            sleeve,
            0.1,
            0.12,
        ),
        fill=255,
    )
    draw.chord(at(0.35, -0.08, 0.65, 0.12), 0, 180, fill=dark)
    return 0.3, 0.22, 0.7, 0.5


def render_product(design: Design, height: int) -> Image.Image:
    """Return the product's packshot as an RGBA sprite ``height`` pixels tall, transparent around it."""
    width = max(8, round(height / design.aspect))
    image = to_image(_pattern_fill(design, width, height))
    draw = ImageDraw.Draw(image)
    alpha, shade_map = Image.new("L", (width, height), 0), Image.new("L", (width, height), 120)
    left, top, right, bottom = _draw_shape(
        design, draw, ImageDraw.Draw(alpha), ImageDraw.Draw(shade_map), width, height
    )
    top, bottom = top + design.label_top, bottom + design.label_top
    box_w, box_h = (right - left) * width, (bottom - top) * height
    if design.shape != "shirt":
        draw.rectangle((left * width, top * height, right * width, bottom * height), fill=design.label)
    logo_radius = 0.22 * min(box_w, box_h)
    logo_x = left * width + (logo_radius * 1.4 if design.logo_left else box_w / 2)
    logo_y = top * height + logo_radius * 1.3
    _draw_logo(draw, design.logo, (logo_x, logo_y), logo_radius, design.logo_colour)
    line_y, line_h = logo_y + logo_radius * 1.5, max(1.0, box_h * 0.09)
    for index, fraction in enumerate(design.text_widths):
        thickness = line_h * (1.6 if index == 0 else 1.0)
        x0 = left * width + box_w * (0.08 if design.logo_left else (1 - fraction) / 2)
        draw.rectangle((x0, line_y, x0 + box_w * fraction, line_y + thickness), fill=design.ink)
        line_y += thickness + line_h * 0.9
    pixels = np.asarray(image, np.float32) * (np.asarray(shade_map, np.float32)[..., None] / 120)
    if design.shape in ("bottle", "jar", "tube"):
        across = np.linspace(0, 1, width, dtype=np.float32)
        pixels = pixels * (0.7 + 0.38 * np.sqrt(np.clip(np.sin(np.pi * across), 0, 1)))[None, :, None]
        pixels += (70 * np.exp(-(((across - 0.27) / 0.06) ** 2)))[None, :, None]
    edge = np.asarray(alpha, np.float32) - np.asarray(alpha.filter(ImageFilter.MinFilter(3)), np.float32)
    pixels *= 1 - 0.35 * (edge / 255)[..., None]
    sprite = to_image(pixels).convert("RGBA")
    sprite.putalpha(alpha)
    return sprite

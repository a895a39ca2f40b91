"""Products of the demo-match catalogue: brands, categories, and families of look-alike variants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from compkit.data.sources.synthetic.images import RGB, hsv
from compkit.data.sources.synthetic.packshots import LOGOS, PATTERNS, SHAPE_ASPECTS, Design


@dataclass(frozen=True)
class Category:
    unit: str  # "ml", "g", "pcs" or "size": how a posting spells the size
    brands: tuple[str, ...]
    nouns: tuple[tuple[str, ...], ...]  # each product noun with its synonyms (sellers mix Indonesian and English)
    variants: tuple[str, ...]
    sizes: tuple[int | str, ...]
    shapes: tuple[str, ...]
    descriptors: tuple[str, ...]


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split(", "))


def _nouns(text: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(synonyms.split("/")) for synonyms in text.split("; "))


CATEGORIES = (
    Category(
        unit="ml",
        brands=_names("Glowra, Ocean Fresh, Purela, Skinlab, Dermia, Vitalis, Melati, Everfresh, Hanami, Aromatik"),
        nouns=_nouns(
            "shampoo/sampo/shampo; sabun cair/body wash/sabun mandi cair; hand sanitizer/handsanitizer/hand sanitiser "
            "gel; serum wajah/face serum/serum; toner wajah/face toner/toner; susu UHT/uht milk/susu cair; "
            "sabun cuci piring/dish soap/pencuci piring; pewangi pakaian/softener/pelembut pakaian"
        ),
        variants=_names(
            "original, strawberry, aloe vera, anti dandruff, lavender, lemon, green tea, charcoal, vanilla, rose, "
            "coconut, mint"
        ),
        sizes=(60, 100, 170, 250, 330, 400, 500, 750, 1000),
        shapes=("bottle", "bottle", "tube", "jar"),
        descriptors=_names(
            "kemasan baru, refill, pump, travel size, BPOM, halal, non alkohol, kulit sensitif, anti bakteri, "
            "extra fresh"
        ),
    ),
    Category(
        unit="g",
        brands=_names("Nutrisia, Dapur Ibu, Bumi Rasa, Rasa Nusa, Tropica, Segar Alami, Naturo, Kokoro, Sweety"),
        nouns=_nouns(
            "kopi bubuk/ground coffee/kopi; keripik pedas/keripik/kripik; gula aren/palm sugar/gula semut; "
            "bedak tabur/loose powder/bedak; masker bubuk/powder mask/masker organik; sereal/cereal/granola; "
            "coklat bubuk/cocoa powder/bubuk coklat; kacang mete/cashew/mete"
        ),
        variants=_names("original, pedas, balado, coklat, keju, matcha, madu, jagung bakar, rumput laut, vanilla"),
        sizes=(50, 100, 150, 250, 500, 1000),
        shapes=("pouch", "pouch", "box", "jar"),
        descriptors=_names("homemade, fresh, halal MUI, tanpa pengawet, oleh oleh, kiloan, premium, asli"),
    ),
    Category(
        unit="pcs",
        brands=_names("Mamy Care, Babyku, Kidsy, Cozy, Maxima, Ceria, Wangi, Sari Murni"),
        nouns=_nouns(
            "masker medis/masker 3 ply/face mask; tisu basah/wet tissue/tissue basah; kapas wajah/cotton pad/kapas; "
            "popok bayi/diapers/popok; kantong plastik/plastic bag/kresek; sedotan/straw/sedotan plastik"
        ),
        variants=_names("putih, hijau, biru, pink, hitam, non parfum, aloe vera, baby"),
        sizes=(10, 20, 30, 50, 100),
        shapes=("box", "box", "pouch"),
        descriptors=_names("earloop, 1 box, grosir, hypoallergenic, non woven, tebal, lembut"),
    ),
    Category(
        unit="size",
        brands=_names("Kaosku, Urban Kid, Distro Lokal, Hijabku, Nusantara, Bambu, Brightly, Zenbi"),
        nouns=_nouns(
            "kaos polos/t-shirt polos/kaos oblong; hijab instan/jilbab instan/kerudung; "
            "celana jogger/jogger pants/celana training; kemeja flanel/flannel shirt/kemeja; "
            "hoodie/sweater hoodie/jaket hoodie"
        ),
        variants=_names("hitam, putih, navy, maroon, abu misty, mustard, sage, pink, army, cream"),
        sizes=("S", "M", "L", "XL", "XXL", "All size"),
        shapes=("shirt",),
        descriptors=_names("cotton combed 30s, unisex, pria wanita, premium, distro, oversize, bahan adem"),
    ),
)

# A flavour or colour name sets the label (or garment) colour, so "strawberry" packs of any brand look alike.
VARIANT_COLOURS: dict[str, tuple[float, float, float]] = {
    "strawberry": (350, 0.55, 0.95),
    "aloe vera": (110, 0.5, 0.75),
    "anti dandruff": (210, 0.6, 0.85),
    "lavender": (270, 0.4, 0.85),
    "lemon": (55, 0.7, 0.95),
    "green tea": (95, 0.55, 0.65),
    "charcoal": (0, 0, 0.2),
    "vanilla": (45, 0.25, 0.95),
    "rose": (335, 0.45, 0.9),
    "coconut": (30, 0.15, 0.9),
    "mint": (160, 0.45, 0.85),
    "pedas": (5, 0.85, 0.85),
    "balado": (15, 0.8, 0.8),
    "coklat": (25, 0.7, 0.4),
    "keju": (45, 0.8, 0.95),
    "matcha": (100, 0.5, 0.6),
    "madu": (38, 0.85, 0.85),
    "jagung bakar": (48, 0.75, 0.9),
    "rumput laut": (130, 0.6, 0.4),
    "hitam": (0, 0, 0.12),
    "putih": (0, 0, 0.95),
    "navy": (225, 0.7, 0.35),
    "maroon": (350, 0.75, 0.45),
    "abu misty": (210, 0.08, 0.65),
    "mustard": (45, 0.8, 0.8),
    "sage": (100, 0.25, 0.6),
    "pink": (340, 0.35, 0.95),
    "army": (80, 0.45, 0.35),
    "cream": (40, 0.2, 0.93),
    "hijau": (120, 0.55, 0.6),
    "biru": (210, 0.65, 0.8),
    "non parfum": (0, 0, 0.9),
    "baby": (200, 0.3, 0.95),
}


@dataclass(frozen=True)
class Product:
    brand: str
    category: Category
    noun: tuple[str, ...]
    variant: str
    size: int | str
    descriptors: tuple[str, ...]
    design: Design


def _random_colour(rng: np.random.Generator, *, light: bool = False) -> RGB:
    if light:
        return hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.85, 1.0))
    return hsv(rng.uniform(0, 360), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))


def _variant_colour(rng: np.random.Generator, variant: str) -> RGB:
    if variant not in VARIANT_COLOURS:
        return _random_colour(rng, light=rng.random() < 0.6)
    hue, saturation, value = VARIANT_COLOURS[variant]
    return hsv(hue + rng.normal(0, 6), saturation * rng.uniform(0.85, 1.1), value * rng.uniform(0.9, 1.05))


def _sample_design(rng: np.random.Generator, category: Category, variant: str, brand_style: dict) -> Design:
    shape = str(rng.choice(category.shapes))
    body = brand_style["colour"] if rng.random() < 0.5 else _random_colour(rng, light=rng.random() < 0.35)
    if shape == "shirt":
        body = _variant_colour(rng, variant)
    n_lines = int(rng.integers(1, 5))
    return Design(
        shape=shape,
        aspect=float(rng.uniform(*SHAPE_ASPECTS[shape])),
        body=body,
        accent=_random_colour(rng),
        label=_variant_colour(rng, variant),
        cap=_random_colour(rng, light=rng.random() < 0.4),
        ink=hsv(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.05, 0.35)),
        pattern=str(rng.choice(PATTERNS, p=(0.3, 0.2, 0.1, 0.15, 0.1, 0.05, 0.1))),
        pattern_period=float(rng.uniform(0.05, 0.16)),
        pattern_angle=float(rng.choice((0.0, 90.0, 45.0, -45.0, float(rng.uniform(-60, 60))))),
        logo=brand_style["logo"],
        logo_colour=brand_style["logo_colour"],
        logo_left=bool(rng.random() < 0.5),
        text_widths=tuple(float(w) for w in rng.uniform(0.3, 0.9, size=n_lines)),
        label_top=float(rng.uniform(-0.05, 0.05)),
        long_sleeves=bool(rng.random() < 0.3),
    )


def _family_member(rng: np.random.Generator, base: Product, taken: set) -> Product | None:
    """Return a look-alike of ``base`` that differs in variant (and colour) or in size only; None if none is free."""
    category = base.category
    for _ in range(6):
        if rng.random() < 0.6:
            variant, size = str(rng.choice(category.variants)), base.size
        else:
            variant, size = base.variant, rng.choice(np.array(category.sizes, dtype=object))
        if (variant, size) in taken:
            continue
        taken.add((variant, size))
        design = base.design
        if variant != base.variant:
            label = _variant_colour(rng, variant)
            body = label if design.shape == "shirt" else design.body
            design = dataclasses.replace(design, label=label, body=body, accent=_random_colour(rng))
        if size != base.size and design.shape != "shirt":
            design = dataclasses.replace(design, aspect=design.aspect * float(rng.uniform(0.8, 1.25)))
        return dataclasses.replace(base, variant=variant, size=size, design=design)
    return None


def sample_products(rng: np.random.Generator, count: int) -> list[Product]:
    """Return ``count`` distinct products in shuffled order, many in families of same-brand look-alikes."""
    brand_styles = {
        brand: {"colour": _random_colour(rng), "logo": str(rng.choice(LOGOS)), "logo_colour": _random_colour(rng)}
        for category in CATEGORIES
        for brand in category.brands
    }
    products: list[Product] = []
    while len(products) < count:
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=(0.35, 0.25, 0.15, 0.25)))]
        brand = str(rng.choice(category.brands))
        variant = str(rng.choice(category.variants))
        size = rng.choice(np.array(category.sizes, dtype=object))
        base = Product(
            brand=brand,
            category=category,
            noun=category.nouns[int(rng.integers(len(category.nouns)))],
            variant=variant,
            size=size,
            descriptors=tuple(
                str(d) for d in rng.choice(category.descriptors, size=int(rng.integers(0, 3)), replace=False)
            ),
            design=_sample_design(rng, category, variant, brand_styles[brand]),
        )
        family, taken = [base], {(variant, size)}
        for _ in range(int(rng.choice(4, p=(0.45, 0.3, 0.15, 0.1)))):
            member = _family_member(rng, base, taken)
            if member is not None:
                family.append(member)
        products.extend(family)
    products = products[:count]
    return [products[i] for i in rng.permutation(len(products))]

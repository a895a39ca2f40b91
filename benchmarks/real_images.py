"""Benchmark: compkit on real pictures, two Kaggle-format competitions built from vendors' emoji artwork.

    .venv/bin/python benchmarks/real_images.py build     # npm pack (cached), then both competition folders
    .venv/bin/python benchmarks/real_images.py run       # compkit on both: per-model OOF and test scores
    .venv/bin/python benchmarks/real_images.py run --models tfidf-char,phash --trials 20   # a reduced run
    make bench-real                                      # build + run

The demos are generated, so they cannot tell whether compkit works on pictures nobody here made. These are
the emoji drawn by four vendors (Google, Twitter, Apple, Facebook), as the npm packages
`emoji-datasource-<vendor>` ship them: about 3,800 PNGs of 64 px each under img/<vendor>/64/, and one
emoji.json (name, short names, category, unified code) shared by all four.

- real-match (Shopee-shaped): one emoji is one product (label_group); one vendor's drawing, lightly varied
  (background colour, scale, small rotation, offset, JPEG quality), is one posting; the title is the emoji's
  name with noise (shuffled words, filler words, typos, sometimes its short name); image_phash is the
  decoded JPEG's 64-bit pHash. Test products are unseen in train.
- real-identify (Happywhale-shaped): one emoji is one individual, its category the species. A test row of a
  seen individual shows a vendor's drawing that is not in train; a quarter of the test rows are emoji
  unseen in train, whose truth is `new_individual`. train.csv names each image's `drawing` (individual and
  vendor), as a competition may name an encounter: some train individuals show one drawing twice, and the
  config's folds keep a drawing in one fold (`folds.group`), so that OOF queries, like test images, never
  find their own drawing in the gallery.

Both are deterministic from the seed (same seed and Pillow, same bytes). The vendors' images are not ours
(each vendor's copyright and licence apply; the packages' own code is MIT): they are fetched into a cache
outside git (default ~/.cache/compkit/real-images, or $COMPKIT_REAL_IMAGES_CACHE) and must never be
committed, nor the competition folders built from them. The two configs live in benchmarks/real_images/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

VENDORS = ("google", "twitter", "apple", "facebook")
CONFIG_DIR = Path(__file__).resolve().parent / "real_images"
MATCH_SLUG, IDENTIFY_SLUG = "real-match", "real-identify"
NEW_INDIVIDUAL = "new_individual"
SAMPLE_PREDICTIONS = "37c7aba965a5 114207cab555 a6e325d8e924 19fbb960f07d new_individual"
_FILLERS = ("emoji", "sticker", "icon", "cute", "new", "hd", "png", "vector", "murah", "ready stock",
            "original", "promo", "lucu", "aesthetic", "COD", "free ongkir", "set", "[READY]")


def default_cache() -> Path:
    """Return the cache folder for the npm packages, their unpacked images and the built competitions."""
    return Path(os.environ.get("COMPKIT_REAL_IMAGES_CACHE", "~/.cache/compkit/real-images")).expanduser()


# ---- vendor artwork --------------------------------------------------------------------------------------

def fetch_vendors(cache: Path, vendors: tuple[str, ...] = VENDORS) -> Path:
    """Return the vendor tree (<vendor>/emoji.json, <vendor>/img/<vendor>/64/*.png), npm-packing what is missing."""
    tree = cache / "vendors"
    for vendor in vendors:
        target = tree / vendor
        if (target / "emoji.json").is_file() and (target / "img" / vendor / "64").is_dir():
            continue
        packed = cache / "npm"
        packed.mkdir(parents=True, exist_ok=True)
        archives = sorted(packed.glob(f"emoji-datasource-{vendor}-*.tgz"))
        if not archives:
            print(f"npm pack emoji-datasource-{vendor} -> {packed}", flush=True)
            subprocess.run(["npm", "pack", f"emoji-datasource-{vendor}", "--silent"], cwd=packed, check=True,
                           stdout=subprocess.DEVNULL)
            archives = sorted(packed.glob(f"emoji-datasource-{vendor}-*.tgz"))
        _unpack(archives[-1], target, vendor)
    return tree


def _unpack(archive: Path, target: Path, vendor: str) -> None:
    """Unpack emoji.json and the 64 px PNGs of one npm package into `target`, atomically."""
    staging = target.with_name(target.name + ".partial")
    wanted = ("package/emoji.json", f"package/img/{vendor}/64/")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(wanted)]
        for member in members:
            member.name = member.name.removeprefix("package/")
        tar.extractall(staging, members=members, filter="data")
    staging.rename(target)


@dataclass(frozen=True)
class Emoji:
    """One emoji: its names, category, and the vendors that draw it (their PNG paths)."""

    unified: str
    name: str
    short_names: tuple[str, ...]
    category: str
    drawings: dict[str, Path]


def load_emoji(tree: Path, vendors: tuple[str, ...] = VENDORS) -> list[Emoji]:
    """Return every emoji drawn by at least two of the vendors, sorted by unified code (skin tones left out)."""
    entries = {e["unified"]: e for e in json.loads((tree / vendors[0] / "emoji.json").read_text("utf-8"))}
    emoji = []
    for unified in sorted(entries):
        entry = entries[unified]
        if not entry.get("name") or entry.get("category") == "Component":
            continue
        drawings = {v: tree / v / "img" / v / "64" / entry["image"] for v in vendors}
        drawings = {v: path for v, path in drawings.items() if path.is_file()}
        if len(drawings) >= 2:
            emoji.append(Emoji(unified, entry["name"], tuple(entry.get("short_names") or ()), entry["category"],
                               drawings))
    return emoji


# ---- one posting: a drawing, lightly varied, and a noisy title -------------------------------------------

def render_posting(rng: np.random.Generator, drawing: Path, *, image_size: int) -> bytes:
    """Return a JPEG of the drawing on a random background, scaled, rotated and shifted a little."""
    side = 2 * image_size
    with Image.open(drawing) as opened:
        sprite = opened.convert("RGBA")
    top, bottom = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    if rng.random() < 0.5:
        bottom = top
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).repeat(side, axis=1).astype(np.uint8)
    canvas = Image.fromarray(background, "RGB")
    height = round(side * rng.uniform(0.6, 0.95))
    sprite = sprite.resize((height, height), Image.Resampling.LANCZOS)
    sprite = sprite.rotate(float(np.clip(rng.normal(0, 6), -12, 12)), Image.Resampling.BICUBIC, expand=True)
    left = round((side - sprite.width) / 2 + rng.normal(0, 0.04 * side))
    upper = round((side - sprite.height) / 2 + rng.normal(0, 0.04 * side))
    canvas.paste(sprite, (left, upper), sprite)
    canvas = canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=int(rng.integers(55, 96)))
    return buffer.getvalue()


def _typo(rng: np.random.Generator, word: str) -> str:
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:] if kind == 1 else word[:i] + word[i] + word[i:]


def make_title(rng: np.random.Generator, emoji: Emoji) -> str:
    """Return one seller's title for the emoji: its name (or short name) reordered, respelt, padded with filler."""
    if emoji.short_names and rng.random() < 0.2:
        words = str(rng.choice(emoji.short_names)).replace("-", " ").replace("_", " ").split()
    else:
        words = emoji.name.split()
    if len(words) >= 3 and rng.random() < 0.15:
        words.pop(int(rng.integers(len(words))))
    if rng.random() < 0.4:
        words = [words[i] for i in rng.permutation(len(words))]
    words = [_typo(rng, w) if len(w) >= 4 and w.isalpha() and rng.random() < 0.12 else w for w in words]
    for _ in range(int(rng.choice(3, p=[0.35, 0.45, 0.2]))):
        filler = str(rng.choice(_FILLERS))
        words = [filler, *words] if rng.random() < 0.5 else [*words, filler]
    title = " ".join(words)
    case = rng.random()
    return title.lower() if case < 0.4 else title.upper() if case < 0.55 else title.title() if case < 0.8 else title


# ---- the two competitions --------------------------------------------------------------------------------

def _write_image(rng: np.random.Generator, folder: Path, drawing: Path, taken: set[str], *, n_chars: int,
                 image_size: int) -> tuple[str, str]:
    """Write one varied drawing into `folder`; return (file name, pHash of the decoded JPEG)."""
    from compkit.data.sources.synthetic.images import unique_hex_ids, write_jpeg

    name = unique_hex_ids(rng, 1, n_chars=n_chars, taken=taken)[0] + ".jpg"
    return name, write_jpeg(folder, name, render_posting(rng, drawing, image_size=image_size))


def _postings(rng: np.random.Generator, emoji: Emoji, *, extra_rate: float) -> list[str]:
    """Return the vendors of one product's postings: 2 to all of its vendors, sometimes one of them twice."""
    vendors = sorted(emoji.drawings)
    chosen = [vendors[i] for i in rng.permutation(len(vendors))[: int(rng.integers(2, len(vendors) + 1))]]
    if rng.random() < extra_rate:
        chosen.append(chosen[int(rng.integers(len(chosen)))])
    return chosen


def build_match(emoji: list[Emoji], out_dir: Path, *, seed: int, n_train: int, n_test: int,
                image_size: int = 64) -> dict[str, int]:
    """Write the Shopee-shaped competition into `out_dir`; return its row counts."""
    from compkit.data.sources.synthetic.images import unique_integers

    rng = np.random.default_rng(seed)
    if n_train + n_test > len(emoji):
        raise SystemExit(f"match needs {n_train + n_test} emoji, the vendors draw {len(emoji)}")
    picked = [emoji[i] for i in rng.permutation(len(emoji))[: n_train + n_test]]
    label_groups = unique_integers(rng, len(picked), low=10**6, high=2**32)
    taken: set[str] = set()
    frames = {}
    for split, chosen in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        folder = out_dir / f"{split}_images"
        folder.mkdir(parents=True)
        rows = []
        for product, label_group in zip(picked[chosen], label_groups[chosen], strict=True):
            for vendor in _postings(rng, product, extra_rate=0.2):
                name, phash = _write_image(rng, folder, product.drawings[vendor], taken, n_chars=32,
                                           image_size=image_size)
                rows.append({"image": name, "image_phash": phash, "title": make_title(rng, product),
                             "label_group": label_group})
        frame = pd.DataFrame([rows[i] for i in rng.permutation(len(rows))])
        numbers = unique_integers(rng, len(frame), low=10**8, high=2**32)
        frame.insert(0, "posting_id", [f"{split}_{number}" for number in numbers])
        frames[split] = frame
    train, test = frames["train"], frames["test"]
    train.to_csv(out_dir / "train.csv", index=False)
    test.drop(columns="label_group").to_csv(out_dir / "test.csv", index=False)
    pd.DataFrame({"posting_id": test["posting_id"], "matches": test["posting_id"]}).to_csv(
        out_dir / "sample_submission.csv", index=False)
    test[["posting_id", "label_group"]].to_csv(out_dir / "solution.csv", index=False)
    return {"train rows": len(train), "test rows": len(test), "train products": n_train, "test products": n_test}


def species_of(category: str) -> str:
    """Return the category as a Happywhale-style species name: 'Smileys & Emotion' -> 'smileys_and_emotion'."""
    return category.lower().replace("&", "and").replace(" ", "_")


def build_identify(emoji: list[Emoji], out_dir: Path, *, seed: int, n_train: int, test_rate: float = 0.6,
                   image_size: int = 64) -> dict[str, int]:
    """Write the Happywhale-shaped competition into `out_dir`; return its row counts.

    Each of `n_train` individuals keeps a random subset of its vendors' drawings in train (one image for
    some); with probability `test_rate` one more vendor's drawing goes to test. New individuals, one image
    each, are then a third as many as those test rows: a quarter of the test set. 15% of the individuals
    show one drawing twice in train (two variations of it); every row names its `drawing`.
    """
    from compkit.data.sources.synthetic.images import unique_hex_ids

    rng = np.random.default_rng(seed)
    order = [emoji[i] for i in rng.permutation(len(emoji))]
    seen, rest = order[:n_train], order[n_train:]
    individual_ids = unique_hex_ids(rng, len(order), n_chars=12)
    train_plan, test_plan = [], []  # (emoji index in order, vendor)
    for index, individual in enumerate(seen):
        vendors = [sorted(individual.drawings)[i] for i in rng.permutation(len(individual.drawings))]
        if rng.random() < test_rate:
            test_plan.append((index, vendors.pop()))
        kept = vendors[: int(rng.integers(1, len(vendors) + 1))]
        if rng.random() < 0.15:
            kept.append(kept[0])
        train_plan += [(index, vendor) for vendor in kept]
    n_new = round(len(test_plan) / 3)
    if n_new > len(rest):
        raise SystemExit(f"identify needs {n_train + n_new} emoji, the vendors draw {len(emoji)}")
    for offset, individual in enumerate(rest[:n_new]):
        test_plan.append((n_train + offset, sorted(individual.drawings)[int(rng.integers(len(individual.drawings)))]))
    taken: set[str] = set()
    frames = {}
    for split, plan in (("train", train_plan), ("test", test_plan)):
        folder = out_dir / f"{split}_images"
        folder.mkdir(parents=True)
        rows = []
        for index in rng.permutation(len(plan)):
            position, vendor = plan[index]
            name, _ = _write_image(rng, folder, order[position].drawings[vendor], taken, n_chars=14,
                                   image_size=image_size)
            answer = individual_ids[position] if position < n_train else NEW_INDIVIDUAL
            rows.append({"image": name, "individual_id": answer, "species": species_of(order[position].category),
                         "drawing": f"{individual_ids[position]}-{vendor}"})
        frames[split] = pd.DataFrame(rows).sort_values("image")
    frames["train"][["image", "species", "individual_id", "drawing"]].to_csv(out_dir / "train.csv", index=False)
    solution = frames["test"][["image", "individual_id", "species"]]
    solution.to_csv(out_dir / "solution.csv", index=False)
    pd.DataFrame({"image": solution["image"], "predictions": SAMPLE_PREDICTIONS}).to_csv(
        out_dir / "sample_submission.csv", index=False)
    return {"train rows": len(frames["train"]), "test rows": len(solution), "new_individual test rows": n_new,
            "train individuals": n_train}


def build(tree: Path, out_root: Path, *, seed: int, n_match_train: int, n_match_test: int, n_identify_train: int,
          image_size: int = 64, vendors: tuple[str, ...] = VENDORS) -> dict[str, dict[str, int]]:
    """Write out_root/real-match and out_root/real-identify (replacing them); return each one's row counts.

    Skipped when out_root/build.json records the same settings and both folders are there.
    """
    import shutil

    settings = {"layout": 2, "seed": seed, "match": [n_match_train, n_match_test], "identify": n_identify_train,
                "image_size": image_size, "vendors": list(vendors), "tree": str(tree.resolve())}
    record = out_root / "build.json"
    if record.is_file() and all((out_root / slug).is_dir() for slug in (MATCH_SLUG, IDENTIFY_SLUG)):
        recorded = json.loads(record.read_text("utf-8"))
        if recorded["settings"] == settings:
            return recorded["counts"]
    record.unlink(missing_ok=True)
    emoji = load_emoji(tree, vendors)
    counts = {}
    for slug, make in ((MATCH_SLUG, lambda out: build_match(emoji, out, seed=seed, n_train=n_match_train,
                                                            n_test=n_match_test, image_size=image_size)),
                       (IDENTIFY_SLUG, lambda out: build_identify(emoji, out, seed=seed + 1,
                                                                  n_train=n_identify_train,
                                                                  image_size=image_size))):
        out = out_root / slug
        staging = out.with_name(slug + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        counts[slug] = make(staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    record.write_text(json.dumps({"settings": settings, "counts": counts}, indent=1), "utf-8")
    return counts


# ---- running compkit on them -----------------------------------------------------------------------------

def load_benchmark_config(slug: str, models: list[str] | None = None, *, epochs: int | None = None):
    """Return the shipped config of `slug`, keeping only `models` (and combinations of kept members).

    `epochs` caps every trained model's epochs (a reduced run); it enters the fingerprints as any change does.
    """
    import dataclasses

    from compkit.config import COMBINED_KINDS, load_config

    config = load_config(str(CONFIG_DIR / slug / "competition.toml"))
    if epochs is not None:
        capped = []
        for model in config.models:
            train = getattr(model, "train", None)
            if train is not None and train.epochs > epochs:
                train = dataclasses.replace(train, epochs=epochs, score_from_epoch=min(train.score_from_epoch, epochs))
                model = dataclasses.replace(model, train=train)
            capped.append(model)
        config = dataclasses.replace(config, models=tuple(capped))
    if not models:
        return config
    unknown = sorted(set(models) - {m.name for m in config.models})
    if unknown:
        raise SystemExit(f"{slug}: no model {', '.join(unknown)} (has {', '.join(m.name for m in config.models)})")
    kept = [m for m in config.models if m.name in models and m.kind not in COMBINED_KINDS]
    names = {m.name for m in kept}
    kept += [m for m in config.models if m.name in models and m.kind in COMBINED_KINDS
             and set(m.members) <= names]
    return dataclasses.replace(config, models=tuple(m for m in config.models if m in kept))


def trivial_scores(config, workspace) -> tuple[float, float]:
    """Return (OOF, test) of the trivial answer: each posting matches only itself / every image new_individual."""
    from compkit.scoring import score_submission

    train = pd.read_csv(workspace.data_dir / config.data.train)
    folds = pd.read_csv(workspace.folds_path)
    label, id_column = config.columns.label, config.columns.id
    if config.task == "match":
        oof = float((2.0 / (1.0 + train.groupby(label)[label].transform("size"))).mean())
        ids = pd.read_csv(workspace.data_dir / config.data.test)[id_column]
        answer = pd.DataFrame({id_column: ids, config.submission.prediction_column: ids})
    else:
        rows = train[[id_column, label]].merge(folds[[id_column, "fold"]], on=id_column)
        oof = float((rows.groupby(label)["fold"].transform("nunique") == 1).mean())
        ids = pd.read_csv(workspace.data_dir / config.data.sample_submission)[id_column]
        answer = pd.DataFrame({id_column: ids, config.submission.prediction_column: NEW_INDIVIDUAL})
    path = workspace.root / "trivial.csv"
    answer.to_csv(path, index=False)
    return oof, score_submission(config, workspace, path).score


def run(out_root: Path, workspace_root: Path, *, slugs: list[str], models: list[str] | None, trials: int,
        jobs: int, epochs: int | None = None) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """Fetch each built competition with --source local, run compkit's pipeline; return (slug, model, OOF, test,
    test's standard error)."""
    from compkit.data.fetch import fetch_competition
    from compkit.pipeline import run_pipeline
    from compkit.workspace import Workspace

    results = []
    for slug in slugs:
        config = load_benchmark_config(slug, [m for m in models or [] if m in _model_names(slug)] or None,
                                       epochs=epochs)
        workspace = Workspace.for_competition(config.slug, workspace_root)
        fetch_competition(config, workspace, source="local", path=out_root / slug)
        report = run_pipeline(config, workspace, trials=trials, jobs=jobs, device="cpu",
                              on_stage=lambda stage, outcome, slug=slug: print(f"{slug} {stage}: {outcome}",
                                                                              flush=True))
        for name in [m.name for m in config.models] + (["ensemble"] if report.ensemble else []):
            results.append((slug, name, report.oof_scores.get(name), report.test_scores.get(name),
                            report.test_errors.get(name)))
        if report.by_kind:
            print_by_kind(config, report.by_kind, report.default_new_share)
        if "ensemble" in report.cross_fitted_scores:
            print(f"{slug} ensemble OOF cross-fitted (weights tuned on the other folds): "
                  f"{report.cross_fitted_scores['ensemble']:.4f}", flush=True)
        if report.ensemble_margin is not None:
            margin = report.ensemble_margin
            print(f"{slug} test: ensemble - best single model ({margin.b}) = {margin.difference:+.4f}, standard "
                  f"error {margin.standard_error:.4f} (paired over {margin.n_rows} rows)", flush=True)
        oof, test = trivial_scores(config, workspace)
        baseline = "self only (trivial)" if config.task == "match" else "all new_individual (trivial)"
        results.append((slug, baseline, oof, test, None))
    return results


def _model_names(slug: str) -> set[str]:
    return {m.name for m in load_benchmark_config(slug).models}


def print_by_kind(config, rows, default_share: float | None = None) -> None:
    """Print identify's MAP@5 on seen and new_individual queries, OOF and test, as a Markdown table; with
    `default_share`, also OOF mixed at the default folds' share of new queries."""
    from compkit.oof_gap import new_share_of_test

    share = new_share_of_test(config, rows)

    def cells(kind) -> str:
        if kind is None:
            return "- | - | -"
        return " | ".join(["-" if v is None else f"{v:.4f}" for v in (kind.seen, kind.new)] + [f"{kind.new_share:.1%}"])

    def mixed(row, at) -> str:
        value = row.oof_at(at)
        return "-" if value is None else f"{value:.4f}"

    default = "" if default_share is None else f" OOF at default folds' share ({default_share:.1%}) |"
    print(f"\n{config.slug}: MAP@5 by query kind\n| model | OOF seen | OOF new | OOF new share | test seen | test new "
          f"| test new share | OOF at test's share |{default}\n|---|---|---|---|---|---|---|---|"
          + ("---|" if default else ""))
    for row in rows:
        extra = "" if default_share is None else f" {mixed(row, default_share)} |"
        print(f"| {row.model} | {cells(row.oof)} | {cells(row.test)} | {mixed(row, share)} |{extra}")
    print(flush=True)


def print_table(results) -> None:
    """Print the scores as a Markdown table on stdout."""
    print("| competition | model | OOF (tuned) | test | test SE |\n|---|---|---|---|---|")
    for slug, name, oof, test, error in results:
        metric = "F1" if slug == MATCH_SLUG else "MAP@5"
        cells = ["-" if value is None else f"{value:.4f}" for value in (oof, test, error)]
        print(f"| {slug} ({metric}) | {name} | {' | '.join(cells)} |")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "run"])
    parser.add_argument("--cache", type=Path, default=default_cache(), help="npm packages and unpacked images")
    parser.add_argument("--out", type=Path, help="where the competitions are built (default: CACHE/competitions)")
    parser.add_argument("--workspace", type=Path, help="compkit workspace root (default: CACHE/work)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--match-train", type=int, default=600, help="products (emoji) in match's train")
    parser.add_argument("--match-test", type=int, default=200, help="products (emoji) in match's test")
    parser.add_argument("--identify-train", type=int, default=700, help="individuals (emoji) in identify's train")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--competition", action="append", choices=[MATCH_SLUG, IDENTIFY_SLUG],
                        help="run only this one (repeat; default: both)")
    parser.add_argument("--models", help="comma-separated model names to run (default: every model of the config)")
    parser.add_argument("--trials", type=int, default=50, help="Optuna trials per model")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="cap every trained model's epochs (a reduced run)")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    out_root = args.out or args.cache / "competitions"
    if args.command == "build":
        tree = fetch_vendors(args.cache)
        counts = build(tree, out_root, seed=args.seed, n_match_train=args.match_train, n_match_test=args.match_test,
                       n_identify_train=args.identify_train, image_size=args.image_size)
        for slug, numbers in counts.items():
            print(f"{out_root / slug}: " + ", ".join(f"{value} {key}" for key, value in numbers.items()))
        return
    models = [name.strip() for name in args.models.split(",")] if args.models else None
    results = run(out_root, args.workspace or args.cache / "work", slugs=args.competition or [MATCH_SLUG,
                  IDENTIFY_SLUG], models=models, trials=args.trials, jobs=args.jobs, epochs=args.epochs)
    print_table(results)


if __name__ == "__main__":
    main()

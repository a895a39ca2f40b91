"""Benchmark: does training help? OOF score of each demo image model, trained vs the same backbone untrained.

    .venv/bin/python benchmarks/demo_quality.py                          # both demos, workspace ./work
    .venv/bin/python benchmarks/demo_quality.py -c demo-match --workspace /tmp/ws --threads 2

For each bundled demo it fetches the data and folds when missing, then, for every `kind = "image"` model,
trains and embeds all folds through `run_models` (what `compkit train --fold all` runs; fresh runs are reused,
and their time is then not measured) and scores the out-of-fold embeddings at the best threshold of the
sweep that training uses, all folds' rows pooled: mean row F1 (match: kNN within each held-out fold) or
MAP@5 (identify: held-out queries against the other folds, unseen individuals = new_individual).

The reference is the same embedder (backbone, pooling, neck) with its seeded random initial weights, scored
the same way, twice: with BatchNorm statistics re-estimated on the fold's training rows (as training scores
every epoch) and with the initial statistics. The gain is measured against the better of the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

REQUIRED_GAIN = 0.15


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--competition", action="append", help="demo slug (repeat; default: both demos)")
    parser.add_argument("--workspace", default="work", help="workspace root (trained models there are reused)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", action="append", help="image model name (repeat; default: every image model)")
    return parser.parse_args()


def _ensure_data(config, workspace) -> None:
    from compkit.data.fetch import fetch_competition
    from compkit.data.folds import build_folds
    from compkit.workspace import read_manifest

    if read_manifest(workspace.data_dir) is None:
        fetch_competition(config, workspace)
    if read_manifest(workspace.folds_path) is None:
        build_folds(config, workspace)


def _sweep(config, knn, query, query_labels, gallery=None, gallery_labels=None) -> np.ndarray:
    """Return (thresholds, rows) scores of one fold's held-out rows."""
    from compkit.training.evaluate import identify_sweep_scores, match_sweep_scores

    if config.task == "match":
        return match_sweep_scores(query, query_labels, max_matches=config.postprocess.max_matches, knn=knn)
    return identify_sweep_scores(query, query_labels, gallery, gallery_labels, top_n=config.postprocess.top_n,
                                 knn=knn)


def _thresholds(config) -> np.ndarray:
    from compkit.training.evaluate import IDENTIFY_SWEEP, MATCH_SWEEP

    return MATCH_SWEEP if config.task == "match" else IDENTIFY_SWEEP


def trained_oof_score(config, model, workspace, folds, knn):
    """Return the pooled OOF FoldScore of the cached embeddings of `model`'s fold models."""
    from compkit.embeddings.cache import load_fold_embeddings, load_gallery
    from compkit.training.evaluate import best_of_sweep
    from compkit.training.rows import fold_rows

    pooled = []
    for fold in folds:
        rows = fold_rows(config, workspace, fold)
        ids, oof, _ = load_fold_embeddings(config, model, fold, workspace)
        expected = rows.frame[config.columns.id].to_numpy(dtype=str)[rows.valid]
        assert list(ids) == list(expected), "OOF ids are not in the fold's row order"
        gallery = None
        if config.task == "identify":
            gallery = np.asarray(load_gallery(config, model, fold, workspace))[rows.train]
        pooled.append(_sweep(config, knn, np.asarray(oof), rows.valid_labels, gallery, rows.train_labels))
    return best_of_sweep(np.concatenate(pooled, axis=1), _thresholds(config))


def random_oof_scores(config, model, workspace, folds, knn):
    """Return pooled OOF FoldScores of the seeded random-weight embedder: (BN re-estimated, BN as initialised)."""
    import torch

    from compkit.models.factory import build_embedder
    from compkit.training.evaluate import best_of_sweep, embed_dataset
    from compkit.training.loop import recalibrate_batchnorm
    from compkit.training.rows import fold_rows

    device = torch.device("cpu")
    untrained = dataclasses.replace(model, pretrained=False, pretrained_path=None)
    pooled = {"recalibrated": [], "initial": []}
    for fold in folds:
        rows = fold_rows(config, workspace, fold)
        torch.manual_seed(model.train.seed)  # the initial weights training starts from
        build = build_embedder(untrained, config.columns)
        data = build.inputs(rows.frame, workspace.data_dir / config.data.train_images)
        valid_set = data.dataset(rows.valid, rows.valid_labels, train=False)
        train_set = data.dataset(rows.train, rows.train_labels, train=False)
        batch_size = model.train.batch_size * 2
        for variant in ("initial", "recalibrated"):
            if variant == "recalibrated":
                recalibrate_batchnorm(build.embedder, train_set, device, batch_size=batch_size)
            query = embed_dataset(build.embedder, valid_set, device=device, batch_size=batch_size)
            gallery = None
            if config.task == "identify":
                gallery = embed_dataset(build.embedder, train_set, device=device, batch_size=batch_size)
            pooled[variant].append(_sweep(config, knn, query, rows.valid_labels, gallery, rows.train_labels))
    thresholds = _thresholds(config)
    return (best_of_sweep(np.concatenate(pooled["recalibrated"], axis=1), thresholds),
            best_of_sweep(np.concatenate(pooled["initial"], axis=1), thresholds))


def main() -> None:
    args = _arguments()
    import torch

    from compkit.config import load_config
    from compkit.embeddings.runner import run_models
    from compkit.neighbors import get_backend
    from compkit.workspace import Workspace

    torch.set_num_threads(args.threads)
    knn = get_backend("auto")
    metric = {"match": "mean row F1", "identify": "MAP@5"}
    all_met = True
    for slug in args.competition or ["demo-match", "demo-identify"]:
        config = load_config(slug)
        workspace = Workspace.for_competition(config.slug, args.workspace)
        _ensure_data(config, workspace)
        folds = list(range(config.folds.n_splits))
        models = [m for m in config.models if m.kind == "image" and (not args.model or m.name in args.model)]
        print(f"{config.slug}: OOF {metric[config.task]} at the best threshold, {len(folds)} folds pooled, "
              f"{args.threads} threads")
        print(f"  {'model':<14} {'backbone':<24} {'trained':>8} {'random':>8} {'rand/BN0':>8} {'gain':>7} "
              f"{'train+embed wall (CPU)':>22}")
        for model in models:
            started, cpu_started = time.perf_counter(), time.process_time()
            outcomes = run_models(config, workspace, folds=folds, models=[model.name])
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            reused = all(o.trained is not None and o.trained.skipped for o in outcomes)
            trained = trained_oof_score(config, model, workspace, folds, knn)
            recalibrated, initial = random_oof_scores(config, model, workspace, folds, knn)
            gain = trained.score - max(recalibrated.score, initial.score)
            all_met &= gain >= REQUIRED_GAIN
            backbone = f"{model.backbone} @{model.image_size}px"
            timing = "reused" if reused else f"{seconds:.0f} s ({cpu_seconds:.0f} CPU s)"
            print(f"  {model.name:<14} {backbone:<24} {trained.score:8.4f} {recalibrated.score:8.4f} "
                  f"{initial.score:8.4f} {gain:+7.4f} {timing:>22}", flush=True)
    print(f"trained - max(random) >= {REQUIRED_GAIN} for every image model: {'yes' if all_met else 'NO'}")


if __name__ == "__main__":
    main()

"""Embedding rows with a trained embedder, and the competition metric on a held-out fold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from compkit.metrics import average_precision_at_5
from compkit.models.heads import ArcMarginHead
from compkit.postprocess.matches import match_f1, match_mask
from compkit.postprocess.top5 import insert_new_individual, top_labels
from compkit.progress import NO_PROGRESS, Progress

MATCH_SWEEP = np.round(np.arange(0.10, 0.96, 0.05), 2)
IDENTIFY_SWEEP = np.round(np.arange(0.05, 0.96, 0.05), 2)
NEW_INDIVIDUAL = -2


class ForwardCounter:
    """Counts embedder forward batches, so tests can prove a cache hit runs no model at all."""

    batches = 0


def move_to(batch, device: torch.device, *, channels_last: bool = False):
    if isinstance(batch, dict):
        return {name: value.to(device, non_blocking=True) for name, value in batch.items()}
    batch = batch.to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch


@torch.no_grad()
def embed_dataset(
    embedder: nn.Module,
    dataset,
    *,
    device: torch.device,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    num_workers: int = 0,
    progress: Progress = NO_PROGRESS,
    description: str = "embedding",
) -> np.ndarray:
    """Return the L2-normalised float32 embeddings of every row of `dataset`, in order."""
    embedder.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    task = progress.task(description, total=len(dataset))
    chunks = []
    for inputs, _ in loader:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            embeddings = embedder(move_to(inputs, device, channels_last=channels_last))
        chunks.append(torch.nn.functional.normalize(embeddings.float(), dim=1).cpu().numpy())
        ForwardCounter.batches += 1
        task.advance(len(embeddings))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


@dataclass(frozen=True)
class FoldScore:
    score: float
    threshold: float


def match_sweep_scores(embeddings: np.ndarray, labels: np.ndarray, *, max_matches: int, knn) -> np.ndarray:
    """Return each row's F1 at every MATCH_SWEEP threshold, shape (thresholds, rows); kNN within `embeddings`."""
    similarities, indices = knn.search(embeddings, embeddings, min(max_matches, len(embeddings)))
    return np.stack([match_f1(labels, indices, match_mask(similarities, indices, t, max_matches=max_matches))
                     for t in MATCH_SWEEP])


def identify_sweep_scores(
    query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, *, top_n: int, knn
) -> np.ndarray:
    """Return each query's AP@5 at every IDENTIFY_SWEEP new_individual threshold, shape (thresholds, queries).

    Query labels absent from the gallery count as new_individual.
    """
    similarities, indices = knn.search(query, gallery, min(top_n, len(gallery)))
    labels, scores = top_labels(similarities, gallery_labels[indices], 5)
    truth = np.where(np.isin(query_labels, gallery_labels), query_labels, NEW_INDIVIDUAL)
    return np.stack([average_precision_at_5(truth, insert_new_individual(labels, scores, t, NEW_INDIVIDUAL))
                     for t in IDENTIFY_SWEEP])


def best_of_sweep(row_scores: np.ndarray, thresholds: np.ndarray) -> FoldScore:
    """Return the best mean score over a sweep's (thresholds, rows) scores, and its threshold."""
    means = row_scores.mean(axis=1)
    best = int(np.argmax(means))
    return FoldScore(float(means[best]), float(thresholds[best]))


def match_fold_score(embeddings: np.ndarray, labels: np.ndarray, *, max_matches: int, knn) -> FoldScore:
    """Return the best mean row-F1 over a threshold sweep, kNN within the held-out fold."""
    return best_of_sweep(match_sweep_scores(embeddings, labels, max_matches=max_matches, knn=knn), MATCH_SWEEP)


def identify_fold_score(
    query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, *, top_n: int, knn
) -> FoldScore:
    """Return the best MAP@5 over a new_individual threshold sweep, fold queries against the other folds."""
    row_scores = identify_sweep_scores(query, query_labels, gallery, gallery_labels, top_n=top_n, knn=knn)
    return best_of_sweep(row_scores, IDENTIFY_SWEEP)


@torch.no_grad()
def held_out_loss(head: nn.Module, embeddings: np.ndarray, labels: np.ndarray, n_classes: int, *,
                  chunk_rows: int = 1024) -> float:
    """Return a margin head's training loss (cross-entropy with the epoch's margins) on the held-out rows of
    classes it was trained on; NaN where there are none.

    Match folds hold out whole products, so none of their classes is known and the loss is NaN; so it is for
    the supervised contrastive head, whose loss depends on which rows share a batch (no held-out counterpart
    to compare with its training loss).
    """
    known = np.flatnonzero(np.asarray(labels) < n_classes)
    if not isinstance(head, ArcMarginHead) or len(known) == 0:
        return float("nan")
    device = head.weight.device
    total = 0.0
    for start in range(0, len(known), chunk_rows):
        rows = known[start : start + chunk_rows]
        batch = torch.as_tensor(np.asarray(embeddings[rows], dtype=np.float32), device=device)
        batch_labels = torch.as_tensor(np.asarray(labels)[rows], device=device)
        total += float(torch.nn.functional.cross_entropy(head(batch, batch_labels).float(), batch_labels,
                                                         reduction="sum"))
    return total / len(known)

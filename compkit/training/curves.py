"""The training curves of one model-fold: losses and held-out score per epoch, as `curves.png`."""

from __future__ import annotations

import math
from pathlib import Path

from compkit.plots import pyplot, save_png


def write_training_curves(path: Path, history: list[dict], *, title: str, metric: str) -> None:
    """Write a PNG of the training and held-out losses (left) and the held-out score (right) per epoch."""
    plt = pyplot()
    epochs = [record["epoch"] for record in history]
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    losses.plot(epochs, [record["loss"] for record in history], marker="o", label="training loss")
    held_out = [record.get("held_out_loss", math.nan) for record in history]
    if any(not math.isnan(value) for value in held_out):
        losses.plot(epochs, held_out, marker="o", label="held-out loss (known classes)")
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    losses.legend()
    scored = [(record["epoch"], record["score"]) for record in history if not math.isnan(record["score"])]
    if scored:
        scores.plot(*zip(*scored, strict=True), marker="o", color="tab:green")
        best_epoch, best_score = max(scored, key=lambda item: item[1])
        scores.axvline(best_epoch, color="tab:red", linestyle="--", label=f"best {best_score:.4f} (epoch {best_epoch})")
        scores.legend()
    scores.set(xlabel="epoch", ylabel=f"held-out {metric}", title=f"held-out {metric}")
    for axis in (losses, scores):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    save_png(figure, path)

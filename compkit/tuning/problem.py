"""A study's problem: the OOF score of a parameter dict, how a trial draws one, and the score plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compkit.config import CompetitionConfig
from compkit.retrieval.head_scores import KNN_WEIGHT, KNN_WEIGHT_STEP
from compkit.workspace import atomic_path


@dataclass(frozen=True)
class TuningProblem:
    """What one model's study maximises: the OOF score of a parameter dict, and how a trial draws one.

    `refine` completes the study's best parameters with those chosen exactly rather than by trials
    (per-species new_individual thresholds); `plot_parameter` is the one the score plot sweeps.
    """

    evaluate: Callable[[dict], float]
    suggest: Callable[[Any], dict]
    default_params: dict
    candidates: str
    plot_parameter: str
    plot_bounds: tuple[float, float]
    refine: Callable[[dict], dict] | None = None
    other_candidates_score: Callable[[dict], float] | None = None


def suggest_params(trial, config: CompetitionConfig, *, fusion: bool = False) -> dict:
    """Return one trial's post-processing parameters from the config's search space.

    `fusion` (identify neighbours with head scores) adds r of r * kNN + (1 - r) * head, on a 0.05 grid.
    """
    space = config.postprocess
    params = {}
    if fusion and space.knn_weight[0] < space.knn_weight[1]:
        params[KNN_WEIGHT] = trial.suggest_float(KNN_WEIGHT, *space.knn_weight, step=KNN_WEIGHT_STEP)
    if config.task == "identify" and space.new_individual == "fraction":
        fraction = trial.suggest_float("new_individual_fraction", *space.new_individual_fraction)
        return {**params, "new_individual_fraction": fraction}
    params["threshold"] = trial.suggest_float("threshold", *space.threshold)
    if config.task == "match" and space.min2:
        low, high = space.min2_threshold
        params["min2_threshold"] = trial.suggest_float("min2_threshold", low, min(high, params["threshold"]))
    return params


def plot_parameter(config: CompetitionConfig) -> tuple[str, tuple[float, float]]:
    """Return the parameter the score plot sweeps (new_individual_fraction or threshold) and its range."""
    space = config.postprocess
    if config.task == "identify" and space.new_individual == "fraction":
        return "new_individual_fraction", space.new_individual_fraction
    return "threshold", space.threshold


def species_refinement(config: CompetitionConfig, evaluate) -> Callable[[dict], dict] | None:
    """Return params -> params with per-species thresholds when the config asks for them, else None."""
    space = config.postprocess
    if not space.new_individual_per_species:
        return None
    return lambda params: evaluate.with_species_thresholds(params, bounds=space.threshold,
                                                           min_queries=space.species_min_queries)


def write_score_plot(
    path: Path, score_at: Callable[[float], float], bounds: tuple[float, float], best: float, *, parameter: str,
    title: str,
) -> None:
    """Write a PNG of the OOF score against one tuned parameter over its search range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.linspace(bounds[0], bounds[1], 60)
    scores = [score_at(float(value)) for value in values]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.plot(values, scores, color="tab:blue")
    axis.axvline(best, color="tab:red", linestyle="--", label=f"tuned {best:.3f}")
    axis.set(xlabel=parameter, ylabel="OOF score", title=title)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)

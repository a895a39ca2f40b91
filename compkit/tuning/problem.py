"""A study's problem: the OOF score of a parameter dict, how a trial draws one, and the score plot."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compkit.config import CompetitionConfig
from compkit.metrics import label_sizes
from compkit.plots import pyplot, save_png
from compkit.postprocess.clusters import CLUSTER_SIZE
from compkit.postprocess.group_sizes import GROUP_SIZE_WEIGHT
from compkit.postprocess.mutual import MUTUAL_TOP
from compkit.postprocess.query_gallery import GALLERY_THRESHOLD
from compkit.postprocess.top5 import NEW_INDIVIDUAL
from compkit.retrieval.head_scores import KNN_WEIGHT, KNN_WEIGHT_STEP


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
    trivial_score: float | None = None  # the trivial submission's OOF score (see `trivial_answer_score`)


def suggest_params(trial, config: CompetitionConfig, *, fusion: bool = False, query_gallery: bool = False) -> dict:
    """Return one trial's post-processing parameters from the config's search space.

    `fusion` (identify neighbours with head scores) adds r of r * kNN + (1 - r) * head, on a 0.05 grid;
    `query_gallery` (identify neighbours with peers, `test_in_gallery`) the confident queries' gallery_threshold.
    """
    space = config.postprocess
    params = {}
    if fusion and space.knn_weight[0] < space.knn_weight[1]:
        params[KNN_WEIGHT] = trial.suggest_float(KNN_WEIGHT, *space.knn_weight, step=KNN_WEIGHT_STEP)
    if query_gallery:
        params[GALLERY_THRESHOLD] = trial.suggest_float(GALLERY_THRESHOLD, *space.gallery_threshold)
    if config.task == "identify" and space.new_individual == "fraction":
        fraction = trial.suggest_float("new_individual_fraction", *space.new_individual_fraction)
        return {**params, "new_individual_fraction": fraction}
    params["threshold"] = trial.suggest_float("threshold", *space.threshold)
    if config.task != "match":
        return params
    if space.min2 and trial.suggest_categorical(MIN2_SWITCH, [True, False]):  # off: the trivial answer stays reachable
        low, high = space.min2_threshold
        params["min2_threshold"] = trial.suggest_float("min2_threshold", low, min(high, params["threshold"]))
    if space.mutual_top is not None:
        params[MUTUAL_TOP] = trial.suggest_int(MUTUAL_TOP, *space.mutual_top)
    if space.calibrate_group_sizes:
        params[GROUP_SIZE_WEIGHT] = trial.suggest_float(GROUP_SIZE_WEIGHT, 0.0, 1.0)
    return params


# A threshold above every cosine similarity: nothing reaches it (match: each posting matches only itself;
# identify: every query's first guess is new_individual).
SELF_ONLY_THRESHOLD = 1.01
MIN2_SWITCH = "min2"  # the tuner's choice of min2 on or off, where the config allows min2
TRIVIAL_ANSWER = {"match": "each posting matches only itself", "identify": "every image new_individual"}


def trivial_answer_score(task: str, labels: np.ndarray, query_truth: np.ndarray | None = None) -> float:
    """Return the OOF score of the trivial submission: match, each posting matching only itself (row F1
    2 / (group size + 1)); identify, every image `new_individual` alone (1 where the OOF truth is new)."""
    if task == "match":
        return float(np.mean(2.0 / (label_sizes(labels) + 1.0)))
    return float(np.mean(np.asarray(query_truth) == NEW_INDIVIDUAL))


def trivial_params(default_params: dict) -> dict:
    """Return the parameters of the trivial answer: every threshold above every similarity, nothing else on.

    Other defaults (a combined model's member weights) are kept: they only scale similarities.
    """
    trivial = {name: SELF_ONLY_THRESHOLD if _kind(name) == "threshold" else value
               for name, value in default_params.items()}
    if CLUSTER_SIZE in trivial:  # agglomeration: no merge, no singleton attached
        trivial[CLUSTER_SIZE] = 1.0
    return trivial


def plot_parameter(config: CompetitionConfig) -> tuple[str, tuple[float, float]]:
    """Return the parameter the score plot sweeps (new_individual_fraction or threshold) and its range."""
    space = config.postprocess
    if config.task == "identify" and space.new_individual == "fraction":
        return "new_individual_fraction", space.new_individual_fraction
    return "threshold", space.threshold


MIN2_GRID_POINTS = 10


def with_min2_polished(config: CompetitionConfig, params: dict, evaluate: Callable[[dict], float]) -> dict:
    """Return the better of `params` and `params` with min2 switched the other way (on: at the best of a grid
    of min2 thresholds up to the threshold), by OOF score; a tie keeps `params`.

    TPE with one categorical switch among several continuous parameters can leave the better side of it
    unexplored in a few dozen trials (demo-match concat-all, 50 trials: min2 off at OOF 0.9331; the same
    parameters with min2 on, 0.9389)."""
    space = config.postprocess
    if config.task != "match" or not space.min2 or "threshold" not in params:
        return params
    if "min2_threshold" in params:
        flipped = [{**{k: v for k, v in params.items() if k != "min2_threshold"}, MIN2_SWITCH: False}]
    else:
        low, high = space.min2_threshold
        top = min(high, params["threshold"])
        grid = np.linspace(low, top, MIN2_GRID_POINTS) if top >= low else []
        flipped = [{**params, MIN2_SWITCH: True, "min2_threshold": float(value)} for value in grid]
    best, best_score = params, evaluate(params)
    for candidate in flipped:
        score = evaluate(candidate)
        if score > best_score + 1e-12:
            best, best_score = candidate, score
    return best


GALLERY_GRID_POINTS = 41


def gallery_refinement(config: CompetitionConfig, evaluate) -> Callable[[dict], dict] | None:
    """Return params -> params with the best gallery_threshold of a grid over its range, the others as tuned
    (ties: the highest, which adds the fewest queries; its top value adds none when it is 1), else None.

    A trial costs no search (compkit.postprocess.query_gallery), so the grid is exact where TPE, with one more
    dimension and few trials, can end below the study that does not tune it."""
    space = config.postprocess
    if config.task != "identify" or not space.test_in_gallery:
        return None

    def refine(params: dict) -> dict:
        grid = np.linspace(*space.gallery_threshold, GALLERY_GRID_POINTS)[::-1]
        scores = [evaluate({**params, GALLERY_THRESHOLD: float(value)}) for value in grid]
        return {**params, GALLERY_THRESHOLD: float(grid[int(np.argmax(scores))])}

    return refine


def refinements(*steps: Callable[[dict], dict] | None) -> Callable[[dict], dict] | None:
    """Return the refinements that are not None applied in order, or None when there is none."""
    chosen = [step for step in steps if step is not None]
    if not chosen:
        return None

    def refine(params: dict) -> dict:
        for step in chosen:
            params = step(params)
        return params

    return refine


def species_refinement(config: CompetitionConfig, evaluate) -> Callable[[dict], dict] | None:
    """Return params -> params with per-species thresholds when the config asks for them, else None."""
    space = config.postprocess
    if not space.new_individual_per_species:
        return None
    return lambda params: evaluate.with_species_thresholds(params, bounds=space.threshold,
                                                           min_queries=space.species_min_queries)


# The bounds a parameter cannot pass whatever its range says (cosines, shares): an optimum there is no sign of
# a range too narrow.
NATURAL_LIMITS = {"threshold": (-1.0, 1.0), "min2_threshold": (-1.0, 1.0), "new_individual_fraction": (0.0, 1.0),
                  KNN_WEIGHT: (0.0, 1.0), "weight": (0.0, 1.0), GALLERY_THRESHOLD: (-1.0, 1.0),
                  GROUP_SIZE_WEIGHT: (0.0, 1.0), MUTUAL_TOP: (1.0, 1.0)}
INTEGER_PARAMS = {MUTUAL_TOP}  # compared with the next integer inside an edge
EDGE_TOLERANCE = 0.02  # of the range's width: a value this close to an edge lies at it
EDGE_STEP = 0.05  # of the range's width: where "inside" the edge the score is compared
PLOT_POINTS = 40


def search_ranges(space, names) -> dict[str, tuple[float, float]]:
    """Return the configured search range of each tuned parameter in `names` (a member's `threshold:<member>`
    has the range of `threshold`); per-species thresholds, chosen on a grid after the study, are not among them."""
    ranges = {"threshold": space.threshold, "min2_threshold": space.min2_threshold,
              "new_individual_fraction": space.new_individual_fraction, KNN_WEIGHT: space.knn_weight,
              GALLERY_THRESHOLD: space.gallery_threshold, GROUP_SIZE_WEIGHT: (0.0, 1.0),
              MUTUAL_TOP: space.mutual_top or (1, 1),
              "weight": (0.0, 1.0)}
    return {name: tuple(map(float, ranges[_kind(name)])) for name in names if _kind(name) in ranges}


def _kind(name: str) -> str:
    return name.split(":", 1)[0]


def edge_warnings(problem: TuningProblem, params: dict, ranges: dict[str, tuple[float, float]]) -> list[str]:
    """Return one message per tuned parameter whose value lies at an edge of its search range with the OOF
    score not falling towards it (the best value may lie beyond); edges at a natural limit are not reported."""
    messages = []
    for name, (low, high) in ranges.items():
        width, value = high - low, params.get(name)
        if value is None or width <= 0:
            continue
        natural_low, natural_high = NATURAL_LIMITS[_kind(name)]
        for edge, side, limit, inward in ((low, "lower", natural_low, 1), (high, "upper", natural_high, -1)):
            if abs(value - edge) > EDGE_TOLERANCE * width or abs(edge - limit) < 1e-9:
                continue
            step = max(EDGE_STEP * width, 1.0) if _kind(name) in INTEGER_PARAMS else EDGE_STEP * width
            inside = edge + inward * step
            at_edge, at_inside = problem.evaluate({**params, name: edge}), problem.evaluate({**params, name: inside})
            if at_edge >= at_inside:
                messages.append(
                    f"{name} = {value:.3f} lies at the {side} edge of its search range [{low:g}, {high:g}] and the "
                    f"OOF score still rises towards it ({at_inside:.4f} at {inside:.3f}, {at_edge:.4f} at {edge:g}): "
                    f"widen postprocess.{_kind(name)}")
    return messages


def warn_at_edges(problem: TuningProblem, params: dict, ranges: dict[str, tuple[float, float]]) -> None:
    """Warn (one line each) about the tuned parameters that lie at an edge of their search range."""
    for message in edge_warnings(problem, params, ranges):
        warnings.warn(message, stacklevel=2)


def sweep_range(name: str, bounds: tuple[float, float], params: dict) -> tuple[float, float]:
    """Return the values a parameter's plot sweeps: its range, a min2 threshold's capped by its threshold."""
    low, high = bounds
    if _kind(name) == "min2_threshold":
        threshold = params.get(name.replace("min2_threshold", "threshold", 1))
        high = min(high, threshold) if threshold is not None else high
    return low, max(low, high)


def score_figure(problem: TuningProblem, params: dict, ranges: dict[str, tuple[float, float]], *,
                 oof_score: float, default_score: float, metric: str, title: str,
                 trivial_score: float | None = None):
    """Return a figure of the OOF score against each tuned parameter over its range (the others at their tuned
    values), with the tuned value, the default threshold's score and the trivial answer's score marked."""
    plt = pyplot()
    ranges = ranges or {problem.plot_parameter: problem.plot_bounds}
    defaults = sorted({value for name, value in problem.default_params.items() if _kind(name) == "threshold"})
    default = f"default threshold {', '.join(f'{value:g}' for value in defaults)}".rstrip()
    columns = min(3, len(ranges))
    rows = math.ceil(len(ranges) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), dpi=100, squeeze=False)
    for axis, (name, bounds) in zip(axes.flat, ranges.items(), strict=False):
        values = np.linspace(*sweep_range(name, bounds, params), PLOT_POINTS)
        axis.plot(values, [problem.evaluate({**params, name: float(value)}) for value in values], color="tab:blue")
        axis.axvline(params[name], color="tab:red", linestyle="--", label=f"tuned {params[name]:.3f}")
        axis.axhline(default_score, color="tab:gray", linestyle=":", label=f"{default}: {default_score:.4f}")
        if trivial_score is not None:
            axis.axhline(trivial_score, color="tab:orange", linestyle="-.", label=f"trivial: {trivial_score:.4f}")
        axis.set(xlabel=name, ylabel=f"OOF {metric}")
        axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(ranges):]:
        axis.set_visible(False)
    figure.suptitle(f"{title}: OOF {metric} {oof_score:.4f} tuned, {default_score:.4f} at the {default}")
    return figure


def write_score_plot(path: Path, problem: TuningProblem, params: dict, ranges: dict[str, tuple[float, float]], *,
                     oof_score: float, default_score: float, metric: str, title: str,
                     trivial_score: float | None = None) -> None:
    """Write `score_figure` as a PNG."""
    save_png(score_figure(problem, params, ranges, oof_score=oof_score, default_score=default_score, metric=metric,
                          title=title, trivial_score=trivial_score), path)

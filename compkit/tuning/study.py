"""Optuna studies over cached OOF neighbours: the post-processing parameters that maximise the metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compkit.config import COMBINED_KINDS, CompetitionConfig, ModelConfig
from compkit.errors import ConfigError
from compkit.postprocess.new_individual import LabelSpecies, Top5Objective, training_label_species
from compkit.postprocess.rules import NO_LABEL, top_labels
from compkit.progress import NO_PROGRESS, Progress
from compkit.retrieval.single import NEW_INDIVIDUAL, OOFNeighbors, neighbors_inputs, oof_neighbors
from compkit.tuning.objectives import PrefixMatchF1
from compkit.workspace import Workspace, read_json, write_json, write_manifest

SQLITE_LOCK_TIMEOUT_S = 60


@dataclass(frozen=True)
class TuneResult:
    model: str
    params: dict
    oof_score: float
    default_score: float
    other_candidates_score: float | None
    n_trials: int
    study: str
    path: Path
    plot: Path


def match_evaluator(neighbors: OOFNeighbors, *, max_matches: int) -> Callable[[dict], float]:
    """Return params -> mean row-F1 of the OOF match lists those parameters give."""
    return PrefixMatchF1(neighbors, max_matches=max_matches)


def neighbour_top5(
    similarities: np.ndarray, indices: np.ndarray, label_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each query's top-5 individuals (label codes) by best similarity among its neighbours, and those."""
    neighbour_labels = np.where(indices >= 0, label_codes[np.clip(indices, 0, None)], NO_LABEL)
    return top_labels(similarities, neighbour_labels, 5)


def identify_evaluator(neighbors: OOFNeighbors, species: LabelSpecies | None = None) -> Top5Objective:
    """Return params -> MAP@5 of the OOF top-5 lists with new_individual inserted."""
    top5 = neighbour_top5(neighbors.similarities, neighbors.indices, neighbors.labels)
    return Top5Objective(lambda params: top5, neighbors.query_truth, NEW_INDIVIDUAL, species)


def evaluator(
    config: CompetitionConfig, neighbors: OOFNeighbors, species: LabelSpecies | None = None
) -> Callable[[dict], float]:
    if config.task == "match":
        return match_evaluator(neighbors, max_matches=config.postprocess.max_matches)
    return identify_evaluator(neighbors, species)


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


def tuning_problem(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, candidates: str
) -> TuningProblem:
    """Return the study's problem for `model`: its cached OOF neighbours and the config's search space."""
    if model.kind in COMBINED_KINDS:
        from compkit.tuning.combined import combined_problem

        return combined_problem(config, workspace, model, candidates)
    neighbors = oof_neighbors(config, model, workspace, candidates=candidates)
    evaluate = evaluator(config, neighbors, training_label_species(config, workspace))
    other = None
    if config.task == "match":
        def other(params: dict) -> float:
            return _other_candidates_score(config, model, workspace, neighbors.candidates, params)
    return TuningProblem(
        evaluate, lambda trial: suggest_params(trial, config), {"threshold": config.postprocess.default_threshold},
        neighbors.candidates, *plot_parameter(config), refine=species_refinement(config, evaluate),
        other_candidates_score=other,
    )


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


def storage_url(workspace: Workspace, storage: str | None) -> str:
    """Return the study's storage: the given SQLAlchemy URL, or a SQLite file in the workspace."""
    if storage:
        return storage
    workspace.tuning_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workspace.study_storage}"


def open_study(url: str, name: str, *, seed: int):
    """Return the named study from an RDB storage, created on first use; several processes may share it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if url.startswith("sqlite") else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
        raise ConfigError(f"--storage {url!r}: cannot open ({str(error).splitlines()[0][:160]})") from None
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(
        storage=storage, study_name=name, direction="maximize", sampler=sampler, load_if_exists=True
    )


def suggest_params(trial, config: CompetitionConfig) -> dict:
    """Return one trial's post-processing parameters from the config's search space."""
    space = config.postprocess
    if config.task == "identify" and space.new_individual == "fraction":
        fraction = trial.suggest_float("new_individual_fraction", *space.new_individual_fraction)
        return {"new_individual_fraction": fraction}
    params = {"threshold": trial.suggest_float("threshold", *space.threshold)}
    if config.task == "match" and space.min2:
        low, high = space.min2_threshold
        params["min2_threshold"] = trial.suggest_float("min2_threshold", low, min(high, params["threshold"]))
    return params


def default_study_name(config: CompetitionConfig, model: ModelConfig, candidates: str) -> str:
    """Return <slug>.<model>.<candidates>.<search space hash>: trials of another search space are another study."""
    from compkit.schema import to_plain
    from compkit.workspace import fingerprint

    space = to_plain(config.postprocess)
    if model.kind in COMBINED_KINDS:  # its members and weights shape the search space too
        space = {"postprocess": space, "model": to_plain(model)}
    return f"{config.slug}.{model.name}.{candidates}.{fingerprint(space)[:8]}"


def tune_model(
    config: CompetitionConfig,
    workspace: Workspace,
    model: ModelConfig,
    *,
    trials: int = 50,
    storage: str | None = None,
    study_name: str | None = None,
    candidates: str = "all",
    seed: int = 0,
    progress: Progress = NO_PROGRESS,
) -> TuneResult:
    """Add `trials` trials to the model's study and write its best parameters to tuning/<model>.json."""
    if trials < 0:
        raise ConfigError(f"--trials must be >= 0, got {trials}")
    problem = tuning_problem(config, workspace, model, candidates)
    name = study_name or default_study_name(config, model, problem.candidates)
    study = open_study(storage_url(workspace, storage), name, seed=seed)
    task = progress.task(f"tuning {model.name}", total=trials)

    def objective(trial) -> float:
        return problem.evaluate(problem.suggest(trial))

    study.optimize(objective, n_trials=trials, callbacks=[lambda study, trial: task.advance(1)])
    if not study.best_trials:
        raise ConfigError(f"study {name!r} has no finished trial yet: run with --trials >= 1")
    params, oof_score = dict(study.best_params), study.best_value
    if problem.refine is not None:
        params = problem.refine(params)
        oof_score = problem.evaluate(params)
    other = problem.other_candidates_score(params) if problem.other_candidates_score else None
    default_score = problem.evaluate(problem.default_params)  # no min2: the naive baseline
    path = workspace.tuned_params(model.name)
    plot = path.with_suffix(".png")
    primary = problem.plot_parameter
    write_score_plot(plot, lambda value: problem.evaluate({**params, primary: value}), problem.plot_bounds,
                     params[primary], parameter=primary, title=f"{config.slug} {model.name}")
    result = {
        "model": model.name, "params": params, "oof_score": oof_score, "default_score": default_score,
        "candidates": problem.candidates, "other_candidates_score": other, "study": name,
        "n_trials": len(study.trials), "plot": plot.name,
    }
    write_json(path, result)
    write_manifest(path, tuned_inputs(config, model, workspace, problem.candidates))
    return TuneResult(model.name, params, oof_score, default_score, other, len(study.trials), name, path, plot)


def tuned_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    from compkit.schema import to_plain

    return {"neighbors": neighbors_inputs(config, model, workspace, candidates),
            "postprocess": to_plain(config.postprocess)}


def _other_candidates_score(config, model, workspace, candidates: str, params: dict) -> float:
    """Return the tuned parameters' match score with the other candidate set (both OOF scores are reported)."""
    other = "fold" if candidates == "all" else "all"
    return evaluator(config, oof_neighbors(config, model, workspace, candidates=other))(params)


def write_score_plot(
    path: Path, score_at: Callable[[float], float], bounds: tuple[float, float], best: float, *, parameter: str,
    title: str,
) -> None:
    """Write a PNG of the OOF score against one tuned parameter over its search range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compkit.workspace import atomic_path

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


def read_tuned(config: CompetitionConfig, model: ModelConfig, workspace: Workspace) -> dict:
    """Return the tuned parameters of `model`, refusing missing or stale ones with the command to run."""
    from compkit.errors import StaleArtifactError
    from compkit.workspace import is_fresh

    path = workspace.tuned_params(model.name)
    hint = f"run: compkit tune-threshold -c {config.slug} --model {model.name}"
    if not path.is_file():
        raise StaleArtifactError(f"{model.name} is not tuned yet ({hint})")
    tuned = read_json(path)
    if not is_fresh(path, tuned_inputs(config, model, workspace, tuned["candidates"])):
        raise StaleArtifactError(f"{path}: tuned on embeddings or settings that changed since ({hint})")
    return tuned

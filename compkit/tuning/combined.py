"""The tuning problem of combined (union, concat and score) models, over their cached OOF candidate tables.

Their parameters are tuned on OOF by the same Optuna study as any model's (`compkit.tuning.study.tune_model`):
union, one `threshold:<member>` per member (and `min2_threshold:<member>` with min2); concat and score, the
single-model parameters plus one `weight:<member>` in [0, 1] per member when the config fixes no weights
(weights are normalised to sum 1, so only their ratios matter).
"""

from __future__ import annotations

import numpy as np

from compkit.config import CombinedModel, CompetitionConfig
from compkit.postprocess.combined import (
    MIN2_PARAM,
    THRESHOLD_PARAM,
    WEIGHT_PARAM,
    CandidateTable,
    UnionMatchF1,
    individual_scores,
    member_weights,
    top_individuals,
    weighted_lists,
)
from compkit.postprocess.new_individual import Top5Objective, training_label_species
from compkit.postprocess.top5 import NEW_INDIVIDUAL, neighbour_top5
from compkit.retrieval.combined import CandidateNeighbors, oof_candidates
from compkit.retrieval.layout import other_candidates, search_depth
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.objectives import match_evaluator
from compkit.tuning.problem import (
    MIN2_SWITCH,
    TuningProblem,
    plot_parameter,
    species_refinement,
    suggest_params,
    trivial_answer_score,
)
from compkit.workspace import Workspace


def combined_problem(
    config: CompetitionConfig, workspace: Workspace, model: CombinedModel, candidates: str
) -> TuningProblem:
    """Return the tuning problem of a union/concat/score model over its cached OOF candidate table."""
    neighbors = oof_candidates(config, model, workspace, candidates=candidates)
    evaluate = combined_evaluator(config, workspace, model, neighbors)
    other = None
    if config.task == "match":
        def other(params: dict) -> float:
            other_set = other_candidates(neighbors.candidates)
            other_neighbors = oof_candidates(config, model, workspace, candidates=other_set)
            return combined_evaluator(config, workspace, model, other_neighbors)(params)

    default = {"threshold": config.postprocess.default_threshold}
    if model.kind == "union":
        default = {THRESHOLD_PARAM.format(name): config.postprocess.default_threshold for name in model.members}
        parameter, bounds = THRESHOLD_PARAM.format(model.members[0]), config.postprocess.threshold
    else:
        default.update({WEIGHT_PARAM.format(name): 1.0 for name in model.members if not model.weights})
        parameter, bounds = plot_parameter(config)
    return TuningProblem(
        evaluate, lambda trial: suggest_combined(trial, config, model), default, neighbors.candidates, parameter,
        bounds, refine=species_refinement(config, evaluate) if config.task == "identify" else None,
        other_candidates_score=other,
        trivial_score=trivial_answer_score(config.task, neighbors.labels, neighbors.query_truth),
    )


def suggest_combined(trial, config: CompetitionConfig, model: CombinedModel) -> dict:
    """Return one trial's parameters: per-member thresholds (union), or weights and the single-model ones."""
    if model.kind != "union":
        weights = {} if model.weights else {
            WEIGHT_PARAM.format(name): trial.suggest_float(WEIGHT_PARAM.format(name), 0.0, 1.0)
            for name in model.members
        }
        return {**weights, **suggest_params(trial, config)}
    space, params = config.postprocess, {}
    for name in model.members:
        threshold = params[THRESHOLD_PARAM.format(name)] = trial.suggest_float(
            THRESHOLD_PARAM.format(name), *space.threshold
        )
        if space.min2 and trial.suggest_categorical(MIN2_SWITCH, [True, False]):
            low, high = space.min2_threshold
            params[MIN2_PARAM.format(name)] = trial.suggest_float(MIN2_PARAM.format(name), low, min(high, threshold))
    return params


def combined_evaluator(config: CompetitionConfig, workspace: Workspace, model: CombinedModel,
                      neighbors: CandidateNeighbors):
    """Return params -> OOF score of the model's post-processing over its candidate table."""
    max_matches = config.postprocess.max_matches
    if model.kind == "union":
        return UnionMatchF1(neighbors.table, model.members, neighbors.labels, max_matches=max_matches)
    if config.task == "match":
        evaluator_for = _last_by_weights(lambda weights: match_evaluator(
            _as_oof_neighbors(neighbors, weights, search_depth(config)), max_matches=max_matches,
            postprocess=config.postprocess))
        return lambda params: evaluator_for(combined_weights(model, params))(params)
    top5 = _last_by_weights(top5_ranker(config, model, neighbors.table, neighbors.labels))
    return Top5Objective(lambda params: top5(combined_weights(model, params)), neighbors.query_truth, NEW_INDIVIDUAL,
                         training_label_species(config, workspace))


def combined_weights(model: CombinedModel, params: dict) -> np.ndarray:
    """Return the members' weights of a concat or score model: fixed by the config, else tuned."""
    return member_weights(model.members, model.weights, params)


def top5_ranker(config: CompetitionConfig, model: CombinedModel, table: CandidateTable, label_codes: np.ndarray):
    """Return weights -> (top-5 individuals, their scores) of a concat or score model's candidate table."""
    if model.kind == "score":
        individuals, scores = individual_scores(table, label_codes)
        return lambda weights: top_individuals(individuals, scores, weights)
    depth = search_depth(config)
    return lambda weights: neighbour_top5(*weighted_lists(table, weights, depth), label_codes)


def _as_oof_neighbors(neighbors: CandidateNeighbors, weights: np.ndarray, depth: int) -> OOFNeighbors:
    similarities, indices = weighted_lists(neighbors.table, weights, depth)
    return OOFNeighbors(neighbors.ids, neighbors.labels, neighbors.folds, similarities, indices, neighbors.candidates)


def _last_by_weights(compute):
    """Return compute(weights), remembering the last result: the trials of fixed weights reuse it."""
    last: dict = {}

    def cached(weights: np.ndarray):
        key = weights.tobytes()
        if key not in last:
            last.clear()
            last[key] = compute(weights)
        return last[key]

    return cached

"""The tuning problem of a single model: its post-processing parameters over its cached OOF neighbour lists."""

from __future__ import annotations

import dataclasses

from compkit.config import CompetitionConfig, ModelConfig
from compkit.postprocess.new_individual import training_label_species
from compkit.retrieval.layout import other_candidates
from compkit.retrieval.single import oof_neighbors
from compkit.tuning.clusters import cluster_evaluator, cluster_problem
from compkit.tuning.objectives import evaluator
from compkit.tuning.problem import (
    TuningProblem,
    gallery_refinement,
    plot_parameter,
    refinements,
    species_refinement,
    suggest_params,
    trivial_answer_score,
)
from compkit.workspace import Workspace


def single_problem(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, candidates: str
) -> TuningProblem:
    """Return the study's problem for a single model: its cached OOF neighbours and the config's search space."""
    neighbors = oof_neighbors(config, model, workspace, candidates=candidates)
    trivial = trivial_answer_score(config.task, neighbors.labels, neighbors.query_truth)
    if config.task == "match" and config.postprocess.agglomerate:  # clusters replace the threshold rule
        return dataclasses.replace(cluster_problem(config, neighbors, other=lambda params: cluster_evaluator(
            config, oof_neighbors(config, model, workspace, candidates=other_candidates(neighbors.candidates)))(
            params)), trivial_score=trivial)
    evaluate = evaluator(config, neighbors, training_label_species(config, workspace))
    other = None
    if config.task == "match":
        def other(params: dict) -> float:
            other_set = other_candidates(neighbors.candidates)
            return evaluator(config, oof_neighbors(config, model, workspace, candidates=other_set))(params)
    fusion = neighbors.head_similarities is not None
    return TuningProblem(
        evaluate, lambda trial: suggest_params(trial, config, fusion=fusion, query_gallery=neighbors.peers is not None),
        {"threshold": config.postprocess.default_threshold},
        neighbors.candidates, *plot_parameter(config),
        refine=refinements(gallery_refinement(config, evaluate), species_refinement(config, evaluate)),
        other_candidates_score=other, trivial_score=trivial,
    )

"""The tuning problem of a single model: its post-processing parameters over its cached OOF neighbour lists."""

from __future__ import annotations

from compkit.config import CompetitionConfig, ModelConfig
from compkit.postprocess.new_individual import training_label_species
from compkit.retrieval.layout import other_candidates
from compkit.retrieval.single import oof_neighbors
from compkit.tuning.objectives import evaluator
from compkit.tuning.problem import TuningProblem, plot_parameter, species_refinement, suggest_params
from compkit.workspace import Workspace


def single_problem(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, candidates: str
) -> TuningProblem:
    """Return the study's problem for a single model: its cached OOF neighbours and the config's search space."""
    neighbors = oof_neighbors(config, model, workspace, candidates=candidates)
    evaluate = evaluator(config, neighbors, training_label_species(config, workspace))
    other = None
    if config.task == "match":
        def other(params: dict) -> float:
            other_set = other_candidates(neighbors.candidates)
            return evaluator(config, oof_neighbors(config, model, workspace, candidates=other_set))(params)
    fusion = neighbors.head_similarities is not None
    return TuningProblem(
        evaluate, lambda trial: suggest_params(trial, config, fusion=fusion),
        {"threshold": config.postprocess.default_threshold},
        neighbors.candidates, *plot_parameter(config), refine=species_refinement(config, evaluate),
        other_candidates_score=other,
    )

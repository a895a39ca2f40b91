"""The tuning problem of agglomerative merging (`agglomerate = true`): a single model's OOF neighbour lists cut
into clusters of a tuned mean size, singletons attached above a tuned similarity (compkit.postprocess.clusters).

The merge hierarchy is built once per study; a trial is a cut of it, an attachment pass and the F1 sums.
"""

from __future__ import annotations

from compkit.config import CompetitionConfig
from compkit.metrics import label_sizes
from compkit.postprocess.clusters import ATTACH_THRESHOLD, CLUSTER_SIZE, ClusterMatches
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.problem import TuningProblem


def cluster_evaluator(config: CompetitionConfig, neighbors: OOFNeighbors) -> ClusterEvaluator:
    """Return params -> mean row-F1 of the OOF rows each matching its cluster."""
    return ClusterEvaluator(config, neighbors)


class ClusterEvaluator:
    """Mean OOF row-F1 for any (cluster_size, attach_threshold); the hierarchy is built on first use."""

    def __init__(self, config: CompetitionConfig, neighbors: OOFNeighbors) -> None:
        space = config.postprocess
        self.labels = neighbors.labels
        self.clusters = ClusterMatches(neighbors.similarities, neighbors.indices, max_size=space.max_matches)

    def __call__(self, params: dict) -> float:
        return float(self.clusters.row_f1(params, self.labels).mean())


def training_mean_group_size(neighbors: OOFNeighbors) -> float:
    """Return the OOF rows' mean label-group size as a cluster count sees it: rows / groups."""
    return float(len(neighbors.labels) / (1.0 / label_sizes(neighbors.labels)).sum())


def cluster_problem(config: CompetitionConfig, neighbors: OOFNeighbors, other=None) -> TuningProblem:
    """Return the study's problem for agglomerative merging; the default is the training groups' mean size."""
    space = config.postprocess
    evaluate = cluster_evaluator(config, neighbors)
    default_size = min(max(training_mean_group_size(neighbors), space.cluster_size[0]), space.cluster_size[1])

    def suggest(trial) -> dict:
        return {CLUSTER_SIZE: trial.suggest_float(CLUSTER_SIZE, *space.cluster_size),
                ATTACH_THRESHOLD: trial.suggest_float(ATTACH_THRESHOLD, *space.attach_threshold)}

    return TuningProblem(evaluate, suggest, {CLUSTER_SIZE: default_size}, neighbors.candidates, CLUSTER_SIZE,
                         space.cluster_size, other_candidates_score=other)

"""`compkit ensemble --method concat|score`: an embedding-level ensemble of models named on the command line.

It is the concat or score model `ensemble-<method>` over those models (default: every embedding model),
tuned and predicted like a model declared in [[models]]: its parameters in tuning/ensemble-<method>.json,
its CSVs in submissions/ and oof/ under that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from compkit.config import CombinedModel, CompetitionConfig, ConcatModel, ScoreModel
from compkit.errors import ConfigError
from compkit.predict import PredictResult, predict_model
from compkit.progress import NO_PROGRESS, Progress
from compkit.tuning.study import TuneResult, tune_model
from compkit.workspace import Workspace

EMBEDDING_METHODS = {"concat": ConcatModel, "score": ScoreModel}


@dataclass(frozen=True)
class EmbeddingEnsembleResult:
    model: CombinedModel
    tuned: TuneResult
    predicted: PredictResult


def ensemble_model(
    config: CompetitionConfig, method: str, members: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
) -> CombinedModel:
    """Return the concat/score model `ensemble-<method>` over `members`, checked like a declared one."""
    if method not in EMBEDDING_METHODS:
        raise ConfigError(f"--method {method!r} is not an embedding-level method (choose concat or score)")
    names = tuple(members) if members else tuple(m.name for m in config.embedding_models)
    model = EMBEDDING_METHODS[method](name=f"ensemble-{method}", kind=method, members=names,
                                      weights=tuple(weights or ()))
    problem = dataclasses.replace(config, models=(*config.models, model)).check()
    if problem:
        raise ConfigError(f"--method {method}: {problem}")
    return model


def embedding_ensemble(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    method: str,
    members: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    trials: int = 50,
    seed: int = 0,
    progress: Progress = NO_PROGRESS,
) -> EmbeddingEnsembleResult:
    """Tune (adding `trials` to its study) and predict the `ensemble-<method>` model; return both results."""
    model = ensemble_model(config, method, members, weights)
    tuned = tune_model(config, workspace, model, trials=trials, seed=seed, progress=progress)
    return EmbeddingEnsembleResult(model, tuned, predict_model(config, workspace, model))

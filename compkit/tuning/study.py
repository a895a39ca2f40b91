"""Optuna studies over cached OOF neighbours: the post-processing parameters that maximise the metric.

This module is where the two model families meet: a single model's problem is `compkit.tuning.single`'s,
a combined model's `compkit.tuning.combined`'s, and `neighbors_inputs` / `tuning_problem` pick one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compkit.config import COMBINED_KINDS, CompetitionConfig, ModelConfig
from compkit.errors import CompkitError, ConfigError, ParameterError, StaleArtifactError
from compkit.history import record_result
from compkit.locking import exclusive_lock
from compkit.metrics import metric_name
from compkit.progress import NO_PROGRESS, Progress
from compkit.retrieval.combined import combined_inputs
from compkit.retrieval.layout import resolve_candidates
from compkit.retrieval.single import single_inputs
from compkit.schema import to_plain
from compkit.tuning.budget import optimize_to_total
from compkit.tuning.combined import combined_problem
from compkit.tuning.problem import (
    TRIVIAL_ANSWER,
    TuningProblem,
    search_ranges,
    trivial_params,
    warn_at_edges,
    with_min2_polished,
    write_score_plot,
)
from compkit.tuning.single import single_problem
from compkit.tuning.tuned import TunedModel, load_tuned, write_tuned
from compkit.workspace import Workspace, fingerprint, is_fresh, write_manifest

SQLITE_LOCK_TIMEOUT_S = 60
# A trial whose process died (kill -9, a lost machine) stops beating; the next trial of any process fails it
# after the grace period and runs its parameters again. The environment can shorten both (tests do).
HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S = "COMPKIT_TRIAL_HEARTBEAT_S", 10
GRACE_ENV, HEARTBEAT_GRACE_S = "COMPKIT_TRIAL_GRACE_S", 60
POSTGRES_HINT = "needs psycopg2: pip install 'compkit[postgres]'"


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
    skipped: bool = False  # fresh parameters were kept and no trial was added (skip_fresh)
    trivial_score: float | None = None  # the OOF score of the trivial answer (see tuning.problem.trivial_params)
    trials_run: int = 0  # of the study's n_trials, those this process ran


def neighbors_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    """Return what a model's OOF neighbour lists (single) or candidate table (combined) are made from."""
    if model.kind in COMBINED_KINDS:
        return combined_inputs(config, model, workspace, candidates)
    return single_inputs(config, model, workspace, candidates)


def tuning_problem(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, candidates: str
) -> TuningProblem:
    """Return the study's problem for `model`: its cached OOF neighbours and the config's search space."""
    if model.kind in COMBINED_KINDS:
        return combined_problem(config, workspace, model, candidates)
    return single_problem(config, workspace, model, candidates)


def storage_url(workspace: Workspace, storage: str | None) -> str:
    """Return the study's storage: the given SQLAlchemy URL, or a SQLite file in the workspace."""
    if storage:
        return storage
    workspace.tuning_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workspace.study_storage}"


def open_study(url: str, name: str, *, seed: int):
    """Return the named study from an RDB storage, created on first use; several processes may share it.

    A SQLite storage is created under an exclusive lock on a file beside it: processes racing to create the
    same fresh database would otherwise collide on its schema. Trials left RUNNING by a dead process are
    failed on open (once their heartbeat is stale) and retried once.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    interval, grace = heartbeat_settings()
    shown = masked_url(url)
    driver_url = _with_driver(url)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if url.startswith("sqlite") else {}
    sampler = optuna.samplers.TPESampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental"
        try:
            with _creation_lock(driver_url):
                storage = optuna.storages.RDBStorage(
                    driver_url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
                study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                            load_if_exists=True)
            optuna.storages.fail_stale_trials(study)
        except Exception as error:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
            cause = _hide_password(url, _root_cause(error))
            raise ConfigError(f"--storage {shown}: cannot open ({cause[:160]})") from None
    return study


def heartbeat_settings() -> tuple[int, int]:
    """Return (heartbeat interval, grace period) in seconds: the defaults, or the environment's."""
    interval = _whole_seconds(HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S)
    grace = _whole_seconds(GRACE_ENV, HEARTBEAT_GRACE_S)
    if grace <= interval:
        raise ConfigError(f"{GRACE_ENV}={grace} must exceed {HEARTBEAT_ENV}={interval}: a live trial beats only "
                          "once an interval")
    return interval, grace


def _whole_seconds(variable: str, default: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{variable}={value!r}: must be a whole number of seconds >= 1")
    return int(value)


def masked_url(url: str) -> str:
    """Return the storage URL as it may be printed: its password, if any, as ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: hide whatever stands where a password would
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def _hide_password(url: str, text: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


def _with_driver(url: str) -> str:
    """Return a postgresql:// URL with its driver named (psycopg2), refusing it where psycopg2 is missing.

    SQLAlchemy's default PostgreSQL driver differs between its versions; naming it keeps one install working.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url  # open_study reports it as a storage it cannot open
    if parsed.get_backend_name() != "postgresql" or parsed.drivername not in ("postgresql", "postgresql+psycopg2"):
        return url
    if importlib.util.find_spec("psycopg2") is None:
        raise ConfigError(f"--storage {masked_url(url)}: {POSTGRES_HINT}")
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _root_cause(error: BaseException) -> str:
    """Return the first line of the innermost cause (optuna wraps SQLAlchemy's "readonly database" in its own)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return (str(error).splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """Hold a lock while the storage's tables and the study are created: processes racing to create them in a
    fresh database collide. SQLite: an exclusive lock on `<database>.lock` beside its file; PostgreSQL: a
    session advisory lock of the server's; other storages: none."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        with _postgres_advisory_lock(url):
            yield
        return
    database = parsed.database if url.startswith("sqlite") else None
    if database and database.startswith("file:") and parsed.query.get("uri") == "true":
        from urllib.parse import urlparse  # a URI filename (sqlite:///file:/path?mode=ro&uri=true)

        database = urlparse(database).path or None
    if not database or database == ":memory:":
        yield
        return
    with exclusive_lock(Path(f"{database}.lock"), holder="tuner creating the study storage", wait=True):
        yield


POSTGRES_LOCK_KEY = 0x636F6D706B6974  # "compkit": one lock per database, taken only while creating


@contextlib.contextmanager
def _postgres_advisory_lock(url: str) -> Iterator[None]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:  # the lock is the session's: it ends with the connection
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": POSTGRES_LOCK_KEY})
    finally:
        engine.dispose()


def complete_trials(study) -> int:
    """Return the number of the study's COMPLETE trials (failed, pruned and still running ones do not count)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def default_study_name(config: CompetitionConfig, workspace: Workspace, model: ModelConfig, candidates: str) -> str:
    """Return <slug>.<model>.<candidates>.<hash>, the hash of the search space and the OOF neighbours' inputs.

    Trials of another search space, or scored on other neighbours (a retrained model), are another study's.
    """
    space = to_plain(config.postprocess)
    if model.kind in COMBINED_KINDS:  # its members and weights shape the search space too
        space = {"postprocess": space, "model": to_plain(model)}
    neighbors = neighbors_inputs(config, model, workspace, candidates)
    return f"{config.slug}.{model.name}.{candidates}.{fingerprint({'space': space, 'neighbors': neighbors})[:8]}"


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
    skip_fresh: bool = False,
    progress: Progress = NO_PROGRESS,
) -> TuneResult:
    """Run the model's study up to `trials` COMPLETE trials in all and write its best parameters to
    tuning/<model>.json.

    `trials` is the study's total, shared by every process that tunes it (`compkit.tuning.budget`); a study
    that already holds them is only re-read. With `skip_fresh`, parameters already tuned on these neighbours
    (same candidates, same study, at least `trials` trials) are kept.
    """
    if trials < 0:
        raise ParameterError("trials", trials, "must be >= 0")
    kept = None if storage or not skip_fresh else _fresh_tuned(config, workspace, model, candidates, study_name, trials)
    if kept is not None:
        return kept
    problem = tuning_problem(config, workspace, model, candidates)
    name = study_name or default_study_name(config, workspace, model, problem.candidates)
    study = open_study(storage_url(workspace, storage), name, seed=seed)
    task = progress.task(f"tuning {model.name}", total=trials)
    task.advance(min(complete_trials(study), trials))

    def objective(trial) -> float:
        return problem.evaluate(problem.suggest(trial))

    ran_here = optimize_to_total(study, objective, total=trials, on_complete=lambda: task.advance(1))
    if not study.best_trials:
        raise ConfigError(f"study {name!r} has no finished trial yet: run with --trials >= 1")
    params, oof_score = dict(study.best_params), study.best_value
    polished = with_min2_polished(config, params, problem.evaluate)
    if polished is not params:  # the best trial's min2 switch flipped scores higher
        params, oof_score = polished, problem.evaluate(polished)
    if problem.refine is not None:
        params = problem.refine(params)
        oof_score = problem.evaluate(params)
    trials_params, trials_score = params, oof_score
    trivial = trivial_params(problem.default_params)
    trivial_score = problem.evaluate(trivial) if problem.trivial_score is None else problem.trivial_score
    if oof_score < trivial_score:  # tuning never ends below the trivial answer: answer it (identify: put
        params = trivial  # new_individual first everywhere, the model's guesses after it, >= the trivial score)
        oof_score = trivial_score if config.task == "match" else problem.evaluate(trivial)
    other = problem.other_candidates_score(params) if problem.other_candidates_score else None
    default_score = problem.evaluate(problem.default_params)  # no min2: the naive baseline
    path, plot = workspace.tuned_params(model.name), workspace.score_plot(model.name)
    ranges = search_ranges(config.postprocess, trials_params)
    warn_at_edges(problem, trials_params, ranges)
    write_score_plot(plot, problem, trials_params, ranges, oof_score=trials_score, default_score=default_score,
                     trivial_score=trivial_score, metric=metric_name(config.task), title=f"{config.slug} {model.name}")
    if trials_score <= trivial_score + 1e-12:
        warnings.warn(trivial_warning(config, model.name, trials_score, trivial_score), stacklevel=2)
    inputs = tuned_inputs(config, model, workspace, problem.candidates)
    record_result(workspace, "tune", model.name, oof_score, task=config.task, inputs=inputs, result=params,
                  settings={"study": name, "candidates": problem.candidates, "n_trials": complete_trials(study)})
    write_tuned(path, TunedModel(model.name, params, oof_score, default_score, problem.candidates, other, name,
                                 complete_trials(study), plot.name, trivial_score))
    write_manifest(path, inputs)
    return TuneResult(model.name, params, oof_score, default_score, other, complete_trials(study), name, path, plot,
                      trivial_score=trivial_score, trials_run=ran_here)


def trivial_warning(config: CompetitionConfig, model: str, tuned_score: float, trivial_score: float) -> str:
    """Return the one-line warning of a model whose tuned OOF score does not beat the trivial answer's."""
    replaced = {"match": "; its parameters are now the trivial answer's",
                "identify": "; it now puts new_individual first for every image"}
    kept = replaced[config.task] if tuned_score < trivial_score else ""
    return (f"{model}: tuned OOF {metric_name(config.task)} {tuned_score:.4f} does not beat the trivial answer "
            f"({TRIVIAL_ANSWER[config.task]}: {trivial_score:.4f}){kept}")


def _fresh_tuned(config, workspace: Workspace, model: ModelConfig, candidates: str, study_name: str | None,
                 trials: int):
    """Return the model's recorded tuning as a skipped TuneResult when it is fresh for this request (and has
    at least `trials` trials), else None."""
    path = workspace.tuned_params(model.name)
    try:
        recorded = load_tuned(path) if path.is_file() else None
    except CompkitError:
        return None
    if (recorded is None or recorded.candidates != resolve_candidates(config, candidates)
            or study_name not in (None, recorded.study) or recorded.n_trials < trials
            or not is_fresh(path, tuned_inputs(config, model, workspace, recorded.candidates))):
        return None
    return TuneResult(model.name, recorded.params, recorded.oof_score, recorded.default_score,
                      recorded.other_candidates_score, recorded.n_trials, recorded.study, path,
                      path.with_name(recorded.plot), skipped=True, trivial_score=recorded.trivial_score)


def tuned_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    """Return what a model's tuned parameters are made from: its OOF neighbours and the search space."""
    return {"neighbors": neighbors_inputs(config, model, workspace, candidates),
            "postprocess": to_plain(config.postprocess)}


def read_tuned(config: CompetitionConfig, model: ModelConfig, workspace: Workspace) -> TunedModel:
    """Return the tuned parameters of `model`, refusing missing or stale ones with the command to run."""
    path = workspace.tuned_params(model.name)
    hint = f"run: compkit tune-threshold -c {config.slug} --model {model.name}"
    if not path.is_file():
        raise StaleArtifactError(f"{model.name} is not tuned yet ({hint})")
    tuned = load_tuned(path)
    if not is_fresh(path, tuned_inputs(config, model, workspace, tuned.candidates)):
        raise StaleArtifactError(f"{path}: tuned on embeddings or settings that changed since ({hint})")
    return tuned

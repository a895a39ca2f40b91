"""Submitting a CSV to Kaggle: validated first, recorded in the ledger, optionally waited on for its score.

Every call goes through the official client (`KaggleApi.competition_submit`, `competition_submissions`,
`competition_get_submission_limits`) wrapped by compkit.kaggle_client, which retries 429/5xx and dropped
connections with backoff and turns every other failure into one line. The ledger row is written before
the upload and updated after, so a refused, failed or interrupted submission is recorded too.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from compkit.config import CompetitionConfig
from compkit.data.tables import load_test
from compkit.ensemble.final import ENSEMBLE, final_csv_state
from compkit.ensemble.weights import read_tuned_ensemble
from compkit.errors import ConfigError, DataError, KaggleError, StaleArtifactError
from compkit.kaggle_client import KaggleConnection, RetryPolicy, TransientKaggleFailure, connect
from compkit.predict import prediction_inputs
from compkit.submission import load_submission
from compkit.submit.ledger import abandoned_uploads, add_row, read_ledger, submitting, update_row
from compkit.tuning.tuned import load_tuned
from compkit.workspace import Workspace, file_sha256, is_fresh

LIST_PAGE_SIZE = 20
MAX_LIST_PAGES = 10  # a pending submission is among the newest; older rows are looked up this far back
# When Kaggle may have dated an upload, from its ledger row's time (written just before it; clocks differ).
UPLOAD_MATCH_WINDOW = (timedelta(minutes=-5), timedelta(hours=1))


@dataclass(frozen=True)
class SubmissionPlan:
    """What `submit` would upload: a validated file, its hash, and the OOF (CV) score of what it is."""

    competition: str  # the competition's name on Kaggle
    path: Path
    rows: int
    sha256: str
    model: str | None  # "ensemble" or a model name when the file is that workspace CSV, else None
    cv_score: float | None
    message: str


@dataclass(frozen=True)
class PollPolicy:
    """How long and how often `--wait` asks Kaggle whether a submission is scored."""

    timeout: float = 900.0
    initial_delay: float = 5.0
    multiplier: float = 1.5
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait after the `attempt`-th poll (1-based)."""
        return min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)


@dataclass(frozen=True)
class SubmissionResult:
    """A submission as the ledger now records it."""

    row_id: str
    plan: SubmissionPlan
    ref: int | None
    status: str  # pending, complete or error (ledger statuses)
    kaggle_message: str
    public_score: str | None = None
    error: str | None = None
    remaining_today: int | None = None


def kaggle_name(config: CompetitionConfig) -> str:
    """Return the competition's name on Kaggle, or raise ConfigError when the config has none."""
    if not config.kaggle:
        raise ConfigError(f"{config.slug} has no Kaggle competition: set kaggle = \"<name in its Kaggle URL>\" in "
                          "its competition.toml")
    return config.kaggle


def default_submission(config: CompetitionConfig, workspace: Workspace) -> Path:
    """Return the file to submit when none is named: the final CSV (the ensemble, or the only model's CSV).

    It is refused unless fresh, by the rule `compkit status` applies (`compkit.ensemble.final.final_csv_state`:
    the recorded hashes of its inputs, never file times).
    """
    state = final_csv_state(config, workspace)
    if state.state == "fresh":
        return state.path
    if state.state == "stale":
        raise StaleArtifactError(f"{state.path}: stale, {state.reason}: run compkit ensemble -c {config.slug} "
                                 "(or compkit run) again, or pass -f FILE")
    model_csvs = [m.name for m in config.models if workspace.submission_csv(m.name).is_file()]
    raise DataError(f"nothing to submit in {workspace.submission_csv(ENSEMBLE).parent} ({len(model_csvs)} model "
                    f"CSVs, no {state.path.name}): run compkit predict / compkit ensemble -c {config.slug} first, "
                    "or pass -f FILE")


def refuse_code_competition(config: CompetitionConfig) -> None:
    """Raise ConfigError pointing at `submit --kernel` when the config says `code_competition = true`."""
    if config.code_competition:
        raise ConfigError(f"{config.slug} is a code competition: Kaggle scores a notebook's output, not an uploaded "
                          f"CSV; push the offline kernel with compkit submit -c {config.slug} --kernel "
                          "--kernel-id OWNER/SLUG (validate a CSV with compkit score)")


def plan_submission(
    config: CompetitionConfig, workspace: Workspace, *, path: Path | None = None, message: str | None = None
) -> SubmissionPlan:
    """Return what would be submitted, after validating the file against the test set in full.

    A code competition (`code_competition = true`) takes no CSV: ConfigError pointing at `submit --kernel`.
    """
    competition = kaggle_name(config)
    refuse_code_competition(config)
    path = Path(path) if path is not None else default_submission(config, workspace)
    expected_ids = load_test(config, workspace)[config.columns.id].tolist()
    parsed = load_submission(path, config, expected_ids=expected_ids)
    sha256 = file_sha256(path)
    model, cv_score = workspace_artifact(config, workspace, sha256, path=path)
    if message is None:
        message = f"compkit {model or path.name}" + (f" CV {cv_score:.6f}" if cv_score is not None else "")
    return SubmissionPlan(competition, path, len(parsed.ids), sha256, model, cv_score, message)


def workspace_artifact(config: CompetitionConfig, workspace: Workspace, sha256: str, *,
                       path: Path | None = None) -> tuple[str | None, float | None]:
    """Return (name, OOF score) of the workspace CSV holding exactly these bytes, or (None, None).

    `path`, when it is one of the workspace's CSVs, is that CSV, even when another holds the same bytes (with
    Shopee's 3-row visible test every model's CSV and the ensemble's can be identical).
    A model CSV's score is its tuned OOF score when the CSV was predicted from the current tuned parameters;
    the ensemble's is the tuned ensemble's OOF score when the CSV is exactly what its tuned weights make.
    """
    names = [ENSEMBLE, *(m.name for m in config.models)]
    if path is not None:
        own = [name for name in names if workspace.submission_csv(name).resolve() == Path(path).resolve()]
        names = own or names
    for name in names:
        csv = workspace.submission_csv(name)
        if csv.is_file() and file_sha256(csv) == sha256:
            return name, artifact_cv(config, workspace, name)
    return None, None


def artifact_cv(config: CompetitionConfig, workspace: Workspace, name: str) -> float | None:
    """Return the OOF score of submissions/<name>.csv ("ensemble" or a model), None when none applies to it."""
    return ensemble_cv(config, workspace) if name == ENSEMBLE else model_cv(workspace, name)


def model_cv(workspace: Workspace, model: str) -> float | None:
    """Return the tuned OOF score behind submissions/<model>.csv, or None when the CSV is not from it."""
    tuned = workspace.tuned_params(model)
    if not tuned.is_file() or not is_fresh(workspace.submission_csv(model), prediction_inputs(workspace, model)):
        return None
    return float(load_tuned(tuned).oof_score)


def ensemble_cv(config: CompetitionConfig, workspace: Workspace) -> float | None:
    """Return the tuned ensemble's OOF score when submissions/ensemble.csv is fresh and made from its weights:
    its cross-fitted score where tuning/ensemble.json has one (the estimate of a score on unseen rows, free
    of the weights' selection on OOF), else its tuned one.

    The final CSV's judgement (`final_csv_state`) decides, so a CSV combined by hand (--weights, other CSVs),
    edited, or made from since-changed inputs gets no score.
    """
    state = final_csv_state(config, workspace)
    if len(config.models) < 2 or not state.fresh or not state.tuned:
        return None
    tuned = read_tuned_ensemble(config, workspace, [m.name for m in config.models])
    if tuned is None:
        return None
    return tuned.cross_fitted_score if tuned.cross_fitted_score is not None else tuned.score


def submit(
    plan: SubmissionPlan,
    workspace: Workspace,
    *,
    retry: RetryPolicy | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> SubmissionResult:
    """Upload the planned file and return the new ledger row (status pending); failures are recorded, then raised."""
    with submitting(workspace):  # until the row leaves `uploading`
        row_id = add_row(workspace, competition=plan.competition, kind="file", model=plan.model or "",
                         file=plan.path.resolve(), sha256=plan.sha256, message=plan.message, cv_score=plan.cv_score,
                         status="uploading")
        try:
            connection = connect(slug=plan.competition, retry=retry, log=log)
            response = connection.call(functools.partial(_upload, connection.api, plan), slug=plan.competition)
        except KeyboardInterrupt:
            update_row(workspace, row_id, status="interrupted",
                       error="interrupted during the upload: Kaggle may or may not have it, see its submissions page")
            raise
        except Exception as error:
            update_row(workspace, row_id, status="failed", error=str(error) or type(error).__name__)
            raise
        ref = int(response.ref or 0) or None
        update_row(workspace, row_id, status="pending", ref=ref or "")
    return SubmissionResult(row_id, plan, ref, "pending", response.message or "",
                            remaining_today=_remaining_today(connection, plan.competition))


def wait_for_score(
    result: SubmissionResult,
    workspace: Workspace,
    *,
    poll: PollPolicy | None = None,
    retry: RetryPolicy | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> SubmissionResult:
    """Poll Kaggle until the submission is scored; return it with its public score (recorded in the ledger).

    Raises KaggleError when Kaggle could not score it (the ledger says why) or when `poll.timeout` passes
    (the row stays pending; `compkit submissions --refresh` picks the score up later).
    """
    poll = poll or PollPolicy()
    competition = result.plan.competition
    if result.ref is None:
        raise KaggleError(f"Kaggle returned no reference for the submission to {competition!r}, so its score cannot "
                          f"be followed: see https://www.kaggle.com/competitions/{competition}/submissions")
    connection = connect(slug=competition, retry=retry, log=log)
    deadline = poll.clock() + poll.timeout
    attempt = 0
    while True:
        attempt += 1
        found = list_submissions(connection, competition, refs={result.ref})
        submission = found.get(result.ref)
        if submission is not None and submission["status"] != "pending":
            update_row(workspace, result.row_id, status=submission["status"], public_score=submission["public_score"],
                       error=submission["error"])
            if submission["status"] == "error":
                raise KaggleError(f"Kaggle could not score submission {result.ref} to {competition!r}: "
                                  f"{submission['error'] or 'no reason given'}")
            return SubmissionResult(result.row_id, result.plan, result.ref, "complete", result.kaggle_message,
                                    public_score=submission["public_score"], remaining_today=result.remaining_today)
        remaining = deadline - poll.clock()
        if remaining <= 0:
            raise KaggleError(f"Kaggle had not scored submission {result.ref} to {competition!r} after "
                              f"{poll.timeout:g} s; it stays pending in {workspace.ledger_path}: run compkit "
                              "submissions --refresh later")
        delay = min(poll.delay(attempt), remaining)
        log(f"Kaggle is scoring submission {result.ref}; asking again in {delay:.0f} s")
        poll.sleep(delay)


def refresh_ledger(
    workspace: Workspace,
    *,
    retry: RetryPolicy | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> int:
    """Ask Kaggle about every pending ledger row and every upload a killed submit left; return how many changed.

    A row left `uploading` takes the ref and status of the submission Kaggle lists for it (`match_uploads`),
    or becomes `unknown` when Kaggle lists none.
    """
    abandoned = abandoned_uploads(workspace)
    if abandoned is None:
        log("a submit is running: rows left uploading are settled by a later refresh")
    ledger = read_ledger(workspace)
    abandoned = ledger.iloc[:0] if abandoned is None else abandoned
    files = ledger[(ledger["kind"] == "file") & (ledger["ref"] != "")]
    pending = files[files["status"] == "pending"]
    changed = 0
    for competition in sorted(set(pending["competition"]) | set(abandoned["competition"])):
        rows, lost = pending[pending["competition"] == competition], abandoned[abandoned["competition"] == competition]
        times = [at for at in map(_utc, lost["submitted_at"]) if at is not None]
        connection = connect(slug=competition, retry=retry, log=log)
        found = list_submissions(connection, competition, refs={int(ref) for ref in rows["ref"]},
                                 since=min(times) + UPLOAD_MATCH_WINDOW[0] if times else None)
        for row_id, ref in zip(rows["id"], rows["ref"], strict=True):
            submission = found.get(int(ref))
            if submission is not None and submission["status"] != "pending":
                update_row(workspace, row_id, **_verdict(submission))
                changed += 1
        claimed = {int(ref) for ref in files.loc[files["competition"] == competition, "ref"]}
        for row_id, ref in match_uploads(lost, found, claimed=claimed).items():
            if ref is None:
                update_row(workspace, row_id, status="unknown", error="its submit stopped before Kaggle confirmed "
                           "it and Kaggle lists no such submission: it most likely never arrived, see "
                           f"https://www.kaggle.com/competitions/{competition}/submissions")
            else:
                update_row(workspace, row_id, ref=ref, **_verdict(found[ref]))
            changed += 1
    return changed


def match_uploads(abandoned: pd.DataFrame, listed: dict[int, dict[str, Any]], *,
                  claimed: set[int]) -> dict[str, int | None]:
    """Return the Kaggle ref of each abandoned ledger row (None where Kaggle lists none for it).

    A row's submission is the oldest one, not yet another row's, whose description is the row's message and
    whose date is within UPLOAD_MATCH_WINDOW of the row's time; rows are matched oldest first.
    """
    earliest, latest = UPLOAD_MATCH_WINDOW
    by_date = sorted((s["date"], ref, s["description"]) for ref, s in listed.items() if s["date"] is not None)
    taken, matches = set(claimed), {}
    for row in abandoned.sort_values("submitted_at").itertuples(index=False):
        at = _utc(row.submitted_at)
        matches[row.id] = next((ref for date, ref, description in by_date if ref not in taken and at is not None
                                and description == row.message and earliest <= date - at <= latest), None)
        taken.add(matches[row.id])
    return matches


def list_submissions(
    connection: KaggleConnection, competition: str, *, refs: set[int], since: datetime | None = None
) -> dict[int, dict[str, Any]]:
    """Return Kaggle's submissions by ref, newest pages first (up to MAX_LIST_PAGES pages).

    Paging stops once every ref in `refs` is listed and, with `since`, a submission older than `since` too.
    """
    found: dict[int, dict[str, Any]] = {}
    for page in range(1, MAX_LIST_PAGES + 1):
        listed = connection.call(
            functools.partial(connection.api.competition_submissions, competition, page_number=page,
                              page_size=LIST_PAGE_SIZE),
            slug=competition,
        ) or []
        listed = [submission for submission in listed if submission is not None]
        for submission in listed:
            found[submission.ref] = {
                "status": submission.status.name.lower(),
                "public_score": submission.public_score or "",
                "error": submission.error_description or "",
                "description": " ".join((submission.description or "").split()),  # as the ledger keeps a message
                "date": submission.date.replace(tzinfo=UTC) if submission.date else None,  # the client's is naive UTC
            }
        dates = [found[submission.ref]["date"] for submission in listed if submission.date]
        reached = since is None or (dates and min(dates) < since)
        if (refs <= found.keys() and reached) or len(listed) < LIST_PAGE_SIZE:
            break
    return found


def _verdict(submission: dict[str, Any]) -> dict[str, str]:
    """Return the ledger fields of Kaggle's word on a submission: status, public score, error."""
    return {name: submission[name] for name in ("status", "public_score", "error")}


def _utc(text: str) -> datetime | None:
    """Return a ledger time as an aware datetime, None when the cell is not one."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _upload(api: Any, plan: SubmissionPlan) -> Any:
    response = api.competition_submit(str(plan.path), plan.message, plan.competition, quiet=True)
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:  # the client prints why, returns this
        raise TransientKaggleFailure(f"the upload of {plan.path.name} to Kaggle's storage failed")
    return response


def _remaining_today(connection: KaggleConnection, competition: str) -> int | None:
    """Return how many submissions Kaggle still allows today, or None if it would not say (never fatal)."""
    try:
        limits = connection.api.competition_get_submission_limits(competition)
    except Exception as error:  # like the official CLI, a limits-endpoint blip never fails a submission
        connection.log(f"Kaggle did not report the submissions left today ({type(error).__name__})")
        return None
    return int(limits.num_allowed_now)

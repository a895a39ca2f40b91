"""A thin wrapper around the official kaggle client: credentials, late import, retries, one-line errors.

The client reads its configuration (config folder, API environment) when `kaggle` is first imported; compkit
re-reads it on every `connect()` so a long-lived process, or a test, sees the current environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from compkit.errors import KaggleError

T = TypeVar("T")

RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"
NO_CREDENTIALS = (
    "no Kaggle credentials found: create an API token at " + TOKEN_URL + " and save kaggle.json in ~/.kaggle/ "
    "(or $KAGGLE_CONFIG_DIR), or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait when Kaggle answers 429/5xx or the connection fails."""

    attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    max_retry_after: float = 600.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Return the seconds to wait before attempt `attempt + 1`: Retry-After when given, else backoff."""
        if retry_after is not None:
            seconds = _parse_retry_after(retry_after)
            if seconds is not None:
                return min(seconds, self.max_retry_after)
        return min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)


@dataclass
class KaggleConnection:
    """An authenticated official client plus the policy used to call it."""

    api: Any  # kaggle.api.kaggle_api_extended.KaggleApi, imported late
    credentials: str
    retry: RetryPolicy
    log: Callable[[str], None]

    def call(self, action: Callable[[], T], *, slug: str) -> T:
        """Return `action()`, retried on 429/5xx/connection errors; raise KaggleError otherwise.

        What the client prints (upload errors, warnings) goes to `log`, never to stdout.
        """

        def quietly() -> T:
            with _quiet(self.log):
                return action()

        return call_with_retries(quietly, slug=slug, credentials=self.credentials, retry=self.retry, log=self.log)


class TransientKaggleFailure(Exception):
    """A failure without an HTTP error that is worth retrying (e.g. the client reports a failed upload)."""


def connect(
    *, slug: str, retry: RetryPolicy | None = None, log: Callable[[str], None] | None = None
) -> KaggleConnection:
    """Return a connection using the credentials the official client finds; KaggleError if there are none."""
    retry = retry or RetryPolicy()
    log = log or _ignore
    environ = dict(os.environ)
    credentials = credentials_source(environ)
    if credentials is None:
        raise KaggleError(kaggle_json_problem(environ) or NO_CREDENTIALS)
    # `import kaggle` authenticates at import time (printing help when it finds no credentials), then
    # `authenticate()` again: what both print (the permission warning of kaggle.json) is said once.
    client_log = _said_once(log)
    with _quiet(client_log):
        from kaggle.api.kaggle_api_extended import KaggleApi
    api = KaggleApi()
    api.config_dir = str(config_dir(environ))
    api.config = os.path.join(api.config_dir, KaggleApi.config_file)
    api.args = ["--local"] if environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []

    def authenticate() -> None:
        with _quiet(client_log):
            try:
                api.authenticate()
            except SystemExit:
                raise KaggleError(
                    f"Kaggle did not accept the credentials from {credentials}: create a new API token at {TOKEN_URL}"
                ) from None

    call_with_retries(authenticate, slug=slug, credentials=credentials, retry=retry, log=log)
    return KaggleConnection(api=api, credentials=credentials, retry=retry, log=log)


def config_dir(environ: dict[str, str]) -> Path:
    """Return the folder where the official client looks for kaggle.json."""
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    home = Path(environ.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def credentials_source(environ: dict[str, str]) -> str | None:
    """Return where the official client will take credentials from (never the secret), or None."""
    home = Path(environ.get("HOME") or Path.home())
    notebook_token = environ.get("KAGGLE_API_V1_TOKEN")
    in_notebook = environ.get("KAGGLE_KERNEL_RUN_TYPE") is not None and environ.get("KAGGLE_DATA_PROXY_URL")
    if in_notebook and notebook_token and Path(notebook_token).is_file():
        return "KAGGLE_API_V1_TOKEN"
    if environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        token_file = home / ".kaggle" / name
        if token_file.is_file() and token_file.read_text(errors="replace").strip():
            return str(token_file)
    kaggle_json = config_dir(environ) / "kaggle.json"
    from_file = _read_json(kaggle_json)
    username = environ.get("KAGGLE_USERNAME") or from_file.get("username")
    key = environ.get("KAGGLE_KEY") or from_file.get("key")
    if username and key:
        return "KAGGLE_USERNAME/KAGGLE_KEY" if environ.get("KAGGLE_KEY") else str(kaggle_json)
    oauth_file = home / ".kaggle" / "credentials.json"
    if _read_json(oauth_file).get("refresh_token"):
        return str(oauth_file)
    return None


def kaggle_json_problem(environ: dict[str, str]) -> str | None:
    """Return why kaggle.json gives no credentials (naming the file, never its key), None when there is none."""
    path = config_dir(environ) / "kaggle.json"
    if not path.exists():
        return None
    fix = f'it should hold {{"username": ..., "key": ...}}, as the token downloaded from {TOKEN_URL} does'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        return f"cannot read the Kaggle credentials in {path}: {error.strerror or error}"
    except UnicodeDecodeError:
        return f"the Kaggle credentials in {path} are not UTF-8 text: {fix}"
    except json.JSONDecodeError as error:  # its message names the position, never the text
        return (f"the Kaggle credentials in {path} are not valid JSON ({error.msg}: line {error.lineno}, "
                f"column {error.colno}): {fix}")
    if not isinstance(data, dict):
        return f"the Kaggle credentials in {path} are not a JSON object: {fix}"
    missing = [name for name in ("username", "key")
               if not data.get(name) and not environ.get(f"KAGGLE_{name.upper()}")]
    if not missing:
        return None
    return f"the Kaggle credentials in {path} have no {' and no '.join(repr(name) for name in missing)}: {fix}"


def call_with_retries(
    action: Callable[[], T], *, slug: str, credentials: str, retry: RetryPolicy, log: Callable[[str], None]
) -> T:
    """Return `action()`, retrying transient failures per `retry`; other failures raise KaggleError."""
    for attempt in range(1, retry.attempts + 1):
        try:
            return action()
        except KaggleError:
            raise
        except Exception as error:
            status = _status(error)
            transient = (
                status == 429
                or (status or 0) >= 500
                or (status is None and (_is_connection_error(error) or isinstance(error, TransientKaggleFailure)))
            )
            if not transient or attempt == retry.attempts:
                raise kaggle_error(error, slug=slug, credentials=credentials, attempts=attempt) from error
            response = getattr(error, "response", None)
            retry_after = response.headers.get("Retry-After") if response is not None else None
            delay = retry.delay(attempt, retry_after)
            what = f"HTTP {status}" if status else "connection failed"
            log(f"Kaggle: {what}; retrying in {delay:.1f} s (attempt {attempt + 1} of {retry.attempts})")
            retry.sleep(delay)
    raise AssertionError("unreachable")


def kaggle_error(error: Exception, *, slug: str, credentials: str, attempts: int = 1) -> KaggleError:
    """Return the one-line KaggleError for an exception raised by the official client."""
    status = _status(error)
    after = f" after {attempts} attempts" if attempts > 1 else ""
    if status == 401:
        return KaggleError(
            f"Kaggle rejected the credentials from {credentials} (HTTP 401): create a new API token at {TOKEN_URL}"
        )
    if status == 403:
        return KaggleError(
            f"Kaggle refused access to competition {slug!r} (HTTP 403): accept its rules at "
            f"{RULES_URL.format(slug=slug)}, or check that the competition name is right"
        )
    if status == 404:
        return KaggleError(
            f"unknown Kaggle competition {slug!r} (HTTP 404): check the competition name (`kaggle` in competition.toml)"
        )
    if status == 400 and _is_daily_limit(error):
        return KaggleError(
            f"Kaggle's daily submission limit for {slug!r} is reached (HTTP 400: {_first_line(error)}): "
            "nothing was submitted; submit again after 00:00 UTC"
        )
    if status == 429:
        return KaggleError(f"Kaggle kept rate-limiting requests (HTTP 429){after}: wait a while and run again")
    if status is not None and status >= 500:
        return KaggleError(f"Kaggle server error (HTTP {status}){after}: try again later")
    if status is not None:
        return KaggleError(f"Kaggle refused the request for {slug!r} (HTTP {status}: {_first_line(error)})")
    if _is_connection_error(error):
        reason = _connection_reason(error)
        return KaggleError(f"cannot reach Kaggle{reason}{after}; check the network and proxy settings")
    if isinstance(error, TransientKaggleFailure):
        return KaggleError(f"{error}{after}")
    return KaggleError(f"the Kaggle client failed for {slug!r}: {type(error).__name__}: {_first_line(error)}")


def http_status(error: BaseException | None) -> int | None:
    """Return the HTTP status of an exception raised by the official client, None if it carries none."""
    return _status(error) if isinstance(error, Exception) else None


def _status(error: Exception) -> int | None:
    import requests

    response = getattr(error, "response", None)
    if not isinstance(error, requests.HTTPError) or response is None:
        return None
    if response.status_code >= 400:
        return response.status_code
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        return int(response.json()["code"])  # an error the client found in a 2xx JSON body
    return response.status_code


def _is_daily_limit(error: Exception) -> bool:
    """Return True for Kaggle's refusal of a submission over the daily allowance (an HTTP 400)."""
    text = str(error).lower()
    return "daily" in text and ("allowance" in text or "limit" in text)


def _is_connection_error(error: Exception) -> bool:
    import requests
    import urllib3.exceptions

    return isinstance(error, (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError))


def _connection_reason(error: Exception) -> str:
    import requests

    request = getattr(error, "request", None)
    host = urlsplit(request.url).hostname if request is not None and request.url else None
    where = f" at {host}" if host else ""
    via = " via the proxy" if isinstance(error, requests.exceptions.ProxyError) else ""
    text = str(error).lower()
    if "name or service not known" in text or "nameresolution" in text or "getaddrinfo" in text:
        reason = "host name lookup failed"
    elif "refused" in text:
        reason = "connection refused"
    elif "timed out" in text or isinstance(error, requests.Timeout):
        reason = "timed out"
    else:
        reason = f"connection failed ({type(error).__name__})"
    return f"{where}{via}: {reason}"


def _parse_retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ignore(message: str) -> None:
    pass


_CLIENT_LINES_SAID: set[str] = set()


def _said_once(log: Callable[[str], None]) -> Callable[[str], None]:
    """Return `log` passing on each line once per process: the client repeats itself at every authentication."""

    def say(line: str) -> None:
        if line not in _CLIENT_LINES_SAID:
            _CLIENT_LINES_SAID.add(line)
            log(line)

    return say


@contextlib.contextmanager
def _quiet(log: Callable[[str], None]):
    """Capture what the client prints on stdout and pass its lines to `log` (the auth help is dropped)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue()
    if "Authentication required" not in text:
        for line in text.splitlines():
            if line.strip():
                log(line.strip())

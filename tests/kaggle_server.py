"""A loopback HTTP server speaking the Kaggle API protocol, so tests can drive the real kaggle client.

The client sends every call as `POST /api/v1/<service>/<Method>` with a camelCase JSON body. Run with
`KAGGLE_API_ENVIRONMENT=LOCALHOST` (requests go to http://localhost) and `http_proxy` pointing here: the
server then receives absolute-form request lines, which it accepts like a proxy would.

Each RPC method is one entry of `server.routes` (method name -> handler(server, request) -> Reply); add
entries for new calls. Plain GETs (the signed storage URLs that downloads redirect to) and the PUT of a
submission's file go through `server.storage_routes` (path prefix -> handler). A submission is uploaded
(StartSubmissionUpload, PUT, CreateSubmission), stays PENDING for `polls_until_scored` ListSubmissions
calls, then is scored by its competition's `scorer`; CreateSubmission beyond `daily_limit` a day answers
the HTTP 400 Kaggle sends. SaveKernel (a kernel push) reports dataset sources absent from `server.datasets`.
Tests script failures with `server.script(method, Reply(...), ...)`: queued replies answer the next calls
to that method (or storage prefix) before its handler does.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import zipfile
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

STORAGE_HOST = "storage.kaggle.test"
DATA_PREFIX = "/competitions-data/"
UPLOAD_PREFIX = "/submission-uploads/"
DAILY_LIMIT_MESSAGE = (
    "Submission not allowed:  Your team has used its daily Submission allowance ({limit}) today, please try "
    "again tomorrow UTC (7.5 hours from now)."
)
DEFAULT_CREATED = "2021-03-08T10:00:00.000Z"
STREAM_CHUNK_BYTES = 64 * 1024


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks of the body, to make a download take a while


@dataclass(frozen=True)
class Request:
    http_method: str
    path: str
    method: str  # the RPC method ("ListDataFiles"), or the storage path for plain GETs
    body: dict
    headers: dict[str, str]
    raw: bytes = b""  # the request body as sent (an upload's file)


@dataclass
class Submission:
    ref: int
    file_name: str
    content: bytes
    description: str
    date: str
    polls_left: int  # ListSubmissions calls that still show it PENDING
    status: str = "PENDING"
    public_score: str = ""
    error_description: str = ""


@dataclass
class Competition:
    slug: str
    files: dict[str, bytes]
    archive: bytes
    created: str = DEFAULT_CREATED
    chunk_delay: float = 0.0  # slows the archive download (see Reply.chunk_delay)
    title: str = "Tiny Match"
    daily_limit: int = 5
    polls_until_scored: int = 1
    # Scores an uploaded file as Kaggle would: returns the public score, or raises ValueError (status ERROR).
    scorer: Callable[[bytes], str] = lambda content: "0.5"
    submissions: list[Submission] = field(default_factory=list)


Handler = Callable[["KaggleTestServer", Request], Reply]


def error_reply(status: int, message: str) -> Reply:
    """Return an error the way Kaggle sends it: a JSON body with code and message."""
    return Reply(status=status, json={"code": status, "message": message})


def build_zip(files: dict[str, bytes]) -> bytes:
    """Return a zip archive holding `files` (relative path -> content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


class KaggleTestServer:
    """The fake Kaggle: competitions, credentials, scripted replies, and a record of every request."""

    def __init__(self, *, username: str = "compkit-tester", key: str = "0123456789abcdef", token: str | None = None):
        self.username, self.key, self.token = username, key, token
        self.competitions: dict[str, Competition] = {}
        self.denied: dict[str, Reply] = {}
        self.requests: list[Request] = []
        self.routes: dict[str, Handler] = {
            "IntrospectToken": introspect_token,
            "ListDataFiles": list_data_files,
            "DownloadDataFiles": download_data_files,
            "StartSubmissionUpload": start_submission_upload,
            "CreateSubmission": create_submission,
            "ListSubmissions": list_submissions,
            "GetSubmissionLimits": get_submission_limits,
            "SaveKernel": save_kernel,
        }
        self.public_routes = {"IntrospectToken"}
        self.storage_routes: dict[str, Handler] = {DATA_PREFIX: serve_data_archive, UPLOAD_PREFIX: receive_upload}
        self.uploads: dict[str, bytes | None] = {}  # upload token -> bytes PUT to its createUrl (None: not yet)
        self.datasets: set[str] = set()  # "owner/slug" of the datasets kernels may attach
        self.kernels: dict[str, list[dict]] = defaultdict(list)  # kernel id -> the SaveKernel bodies pushed
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._httpd.kaggle = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KaggleTestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="kaggle-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port, so later connections are refused."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def add_competition(self, slug: str, files: dict[str, bytes], *, archive: bytes | None = None) -> Competition:
        """Serve `files` as competition `slug`: listed one by one, downloaded as `archive` (default: their zip)."""
        competition = Competition(slug, dict(files), archive if archive is not None else build_zip(files))
        self.competitions[slug] = competition
        return competition

    def deny(self, slug: str, status: int, message: str = "Permission 'competitions.participate' was denied") -> None:
        """Answer every call about `slug` with this HTTP error (403: rules not accepted)."""
        self.denied[slug] = error_reply(status, message)

    def script(self, method: str, *replies: Reply) -> None:
        """Answer the next calls to `method` (an RPC name or a storage prefix) with `replies`, in order."""
        with self._lock:
            self._scripts[method].extend(replies)

    def calls(self, method: str) -> list[Request]:
        """Return the recorded requests to an RPC method, or to storage paths starting with `method` ("/...")."""
        is_storage = method.startswith("/")
        return [r for r in self.requests if r.method == method or (is_storage and r.path.startswith(method))]

    def is_authorized(self, headers: dict[str, str]) -> bool:
        authorization = headers.get("authorization", "")
        basic = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return authorization == f"Basic {basic}" or (self.token is not None and authorization == f"Bearer {self.token}")

    def answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            script = self._scripts.get(request.method) or self._scripts.get(_storage_prefix(request.path, self))
            if script:
                return script.popleft()
        if request.path.startswith("/api/v1/"):
            handler = self.routes.get(request.method)
            if handler is None:
                return error_reply(404, f"no route for {request.method}")
            if request.method not in self.public_routes and not self.is_authorized(request.headers):
                return error_reply(401, "Unauthenticated")
            slug = request.body.get("competitionName")
            if slug in self.denied:
                return self.denied[slug]
            return handler(self, request)
        prefix = _storage_prefix(request.path, self)
        if prefix is None:
            return error_reply(404, f"no storage route for {request.path}")
        return self.storage_routes[prefix](self, request)

    def __enter__(self) -> KaggleTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def introspect_token(server: KaggleTestServer, request: Request) -> Reply:
    active = server.token is not None and request.body.get("token") == server.token
    return Reply(json={"active": active, "username": server.username if active else ""})


def list_data_files(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    names = sorted(competition.files)
    start = int(request.body.get("pageToken") or 0)
    page_size = int(request.body.get("pageSize") or 20)
    page = names[start : start + page_size]
    files = [
        {"ref": name, "name": name, "totalBytes": len(competition.files[name]), "creationDate": competition.created}
        for name in page
    ]
    more = start + page_size < len(names)
    return Reply(json={"files": files, "nextPageToken": str(start + page_size) if more else ""})


def download_data_files(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    location = f"http://{STORAGE_HOST}{DATA_PREFIX}{competition.slug}/{competition.slug}.zip?Expires=1&Signature=x"
    return Reply(status=302, headers={"Location": location})


def serve_data_archive(server: KaggleTestServer, request: Request) -> Reply:
    slug = request.path[len(DATA_PREFIX) :].split("/")[0]
    if slug not in server.competitions:
        return error_reply(404, "NoSuchKey")
    competition = server.competitions[slug]
    headers = {"Content-Type": "application/zip", "Last-Modified": formatdate(1_615_197_600, usegmt=True)}
    return Reply(body=competition.archive, headers=headers, chunk_delay=competition.chunk_delay)


def start_submission_upload(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    token = f"blob-{len(server.uploads) + 1}"
    server.uploads[token] = None
    create_url = f"http://{STORAGE_HOST}{UPLOAD_PREFIX}{token}?upload_id=x"
    return Reply(json={"token": token, "createUrl": create_url})


def receive_upload(server: KaggleTestServer, request: Request) -> Reply:
    token = request.path[len(UPLOAD_PREFIX) :]
    if request.http_method != "PUT" or token not in server.uploads:
        return error_reply(404, "NoSuchUpload")
    server.uploads[token] = request.raw
    return Reply(json={})


def create_submission(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    token = request.body.get("blobFileTokens", "")
    content = server.uploads.get(token)
    if content is None:
        return error_reply(400, f"no uploaded file for token {token!r}")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    if sum(s.date.startswith(today) for s in competition.submissions) >= competition.daily_limit:
        return error_reply(400, DAILY_LIMIT_MESSAGE.format(limit=competition.daily_limit))
    ref = 50_000_000 + sum(len(c.submissions) for c in server.competitions.values()) + 1
    submitted = Submission(
        ref=ref, file_name=f"upload-{token}.csv", content=content, description=request.body.get(
            "submissionDescription", ""), date=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        polls_left=competition.polls_until_scored,
    )
    competition.submissions.append(submitted)
    return Reply(json={"message": f"Successfully submitted to {competition.title}", "ref": ref})


def list_submissions(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    page, page_size = int(request.body.get("page") or 1), int(request.body.get("pageSize") or 20)
    newest_first = competition.submissions[::-1][(page - 1) * page_size : page * page_size]
    for submission in newest_first:
        _advance_scoring(competition, submission)
    return Reply(json={"submissions": [_submission_json(s) for s in newest_first]})


def get_submission_limits(server: KaggleTestServer, request: Request) -> Reply:
    competition = _competition(server, request)
    if isinstance(competition, Reply):
        return competition
    today = time.strftime("%Y-%m-%d", time.gmtime())
    used = sum(s.date.startswith(today) for s in competition.submissions)
    return Reply(json={"numToday": used, "numTotal": len(competition.submissions),
                       "numAllowedNow": max(0, competition.daily_limit - used), "limitedByTotal": False})


def save_kernel(server: KaggleTestServer, request: Request) -> Reply:
    slug = request.body.get("slug", "")
    owner = slug.split("/")[0]
    if owner != server.username:
        return error_reply(403, f"Permission 'kernels.create' was denied for {slug}")
    server.kernels[slug].append(request.body)
    unknown_datasets = [d for d in request.body.get("datasetDataSources", []) if d not in server.datasets]
    unknown_competitions = [c for c in request.body.get("competitionDataSources", []) if c not in server.competitions]
    version = len(server.kernels[slug])
    return Reply(json={
        "ref": f"/code/{slug}", "url": f"https://www.kaggle.com/code/{slug}", "versionNumber": version,
        "invalidDatasetSources": unknown_datasets, "invalidCompetitionSources": unknown_competitions,
    })


def _advance_scoring(competition: Competition, submission: Submission) -> None:
    if submission.status != "PENDING":
        return
    if submission.polls_left > 0:
        submission.polls_left -= 1
        return
    try:
        submission.public_score = competition.scorer(submission.content)
        submission.status = "COMPLETE"
    except ValueError as error:
        submission.status, submission.error_description = "ERROR", str(error)


def _submission_json(submission: Submission) -> dict:
    return {
        "ref": submission.ref, "fileName": submission.file_name, "date": submission.date,
        "description": submission.description, "status": submission.status,
        "publicScore": submission.public_score, "errorDescription": submission.error_description,
        "totalBytes": len(submission.content),
    }


def _competition(server: KaggleTestServer, request: Request) -> Competition | Reply:
    slug = request.body.get("competitionName", "")
    return server.competitions.get(slug) or error_reply(404, "NotFound")


def _storage_prefix(path: str, server: KaggleTestServer) -> str | None:
    return next((prefix for prefix in server.storage_routes if path.startswith(prefix)), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    kaggle: KaggleTestServer

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-download (a killed fetch, a timed-out one) is expected; the rest is not."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        path = urlsplit(self.path).path  # the client talks to us as a proxy: absolute-form request lines
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw and "json" in (self.headers.get("Content-Type") or "") else {}
        except json.JSONDecodeError:
            body = {}
        method = path.rsplit("/", 1)[-1] if path.startswith("/api/v1/") else path
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.kaggle.answer(Request(self.command, path, method, body, headers, raw))
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = json.dumps(reply.json).encode() if reply.json is not None else reply.body
        self.send_response(reply.status)
        if reply.json is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        for start in range(0, len(payload), STREAM_CHUNK_BYTES):
            if reply.chunk_delay and start:
                time.sleep(reply.chunk_delay)
            self.wfile.write(payload[start : start + STREAM_CHUNK_BYTES])

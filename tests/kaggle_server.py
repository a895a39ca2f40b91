"""A loopback HTTP server speaking the Kaggle API protocol, so tests can drive the real kaggle client.

The client sends every call as `POST /api/v1/<service>/<Method>` with a camelCase JSON body. Run with
`KAGGLE_API_ENVIRONMENT=LOCALHOST` (requests go to http://localhost) and `http_proxy` pointing here: the
server then receives absolute-form request lines, which it accepts like a proxy would.

Each RPC method is one entry of `server.routes` (method name -> handler(server, request) -> Reply); add
entries for new calls (StartSubmissionUpload, CreateSubmission, ListSubmissions, ...). Plain GETs (the
signed storage URLs that downloads redirect to) go through `server.storage_routes` (path prefix -> handler).
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


@dataclass
class Competition:
    slug: str
    files: dict[str, bytes]
    archive: bytes
    created: str = DEFAULT_CREATED
    chunk_delay: float = 0.0  # slows the archive download (see Reply.chunk_delay)


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
        }
        self.public_routes = {"IntrospectToken"}
        self.storage_routes: dict[str, Handler] = {DATA_PREFIX: serve_data_archive}
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


def _competition(server: KaggleTestServer, request: Request) -> Competition | Reply:
    slug = request.body.get("competitionName", "")
    return server.competitions.get(slug) or error_reply(404, "NotFound")


def _storage_prefix(path: str, server: KaggleTestServer) -> str | None:
    return next((prefix for prefix in server.storage_routes if path.startswith(prefix)), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    kaggle: KaggleTestServer


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
        reply = self.server.kaggle.answer(Request(self.command, path, method, body, headers))
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

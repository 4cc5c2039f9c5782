"""A minimal local stand-in for the Hugging Face Hub HTTP API, for upload tests without the network.

It answers exactly the endpoints that ``huggingface_hub`` 2.4 calls from ``create_repo(..., exist_ok=True)``,
``upload_folder`` and ``create_commit`` when every file is a regular git blob (no LFS, no xet):

- ``POST /api/repos/create``: create a repo; 409 when it exists (which ``exist_ok=True`` accepts).
- ``POST /api/validate-yaml``: README metadata check of ``create_commit``; always valid.
- ``POST /api/{type}s/{repo_id}/preupload/{revision}``: answers ``uploadMode: "regular"`` for every file.
- ``POST /api/{type}s/{repo_id}/commit/{revision}``: the ndjson commit (a header, then base64 ``file`` lines
  and ``deletedFile`` / ``deletedFolder`` lines).
- ``GET /api/{type}s/{repo_id}[/revision/{revision}]``: repo info (``create_commit`` asks for it when a commit
  would be empty, ``create_repo`` when creation is refused).

Only the ``main`` revision exists. Anything else (another endpoint, LFS or copy operations, pull requests, a
request sent to the stand-in as a proxy) answers an error, JSON ``{"error": ...}``, and is recorded like every
request, so a test can show what was called. This is not the Hub: it checks no permissions and validates no
metadata, and passing against it says nothing about the live Hub's API beyond these endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_REVISION = "main"

_REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+|[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it."""

    method: str
    target: str  # the request target as sent: a path, or an absolute URL / host:port when sent as to a proxy
    request_line: str
    authorization: str | None
    endpoint: str  # the route that answered, or "unknown"
    status: int


@dataclass(frozen=True)
class Commit:
    repo_id: str
    repo_type: str
    revision: str
    message: str
    description: str
    oid: str
    files: dict[str, bytes]  # path -> content added or replaced by this commit
    deleted: tuple[str, ...]


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


class HubStandin:
    """Serves the endpoints above on ``127.0.0.1`` (an ephemeral port) from a background thread.

    ``url`` is the endpoint to put in ``HF_ENDPOINT``; ``requests``, ``commits`` and :meth:`files` are what was
    received. Use it as a context manager (or through the ``hub_standin`` fixture).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.commits: list[Commit] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> HubStandin:
        standin = self

        class Handler(_Handler):
            hub = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        ready = threading.Event()

        def serve() -> None:
            ready.set()
            self._server.serve_forever(poll_interval=0.05)

        self._thread = threading.Thread(target=serve, name="hub-standin", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("the Hub stand-in's server thread did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what was received -------------------------------------------------------------------------

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """The repo's files at ``main`` (path -> bytes); empty if the repo was never created."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            return dict(repo.files) if repo else {}

    def repos(self) -> list[tuple[str, str]]:
        """``(repo_type, repo_id)`` of every repo created."""
        with self._lock:
            return list(self._repos)

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == "unknown"]

    # ---- endpoints (called from the server threads) --------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _repo(self, kind: str, repo_id: str, revision: str | None = None) -> _Repo:
        repo = self._repos.get((REPO_TYPES[kind], repo_id))
        if repo is None:
            raise _HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        if revision is not None and revision != DEFAULT_REVISION:
            raise _HubError(404, f"Revision not found: {revision} (the stand-in has only main)", "RevisionNotFound")
        return repo

    def create_repo(self, body: bytes, query: dict, **_) -> tuple[int, dict]:
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        if not name:
            raise _HubError(400, "name is required")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise _HubError(400, f"the stand-in has no repo type {repo_type!r}")
        repo_id = f"{org}/{name}" if org else name
        url = f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise _HubError(409, "You already created this repo", None)
            self._repos[(repo_type, repo_id)] = _Repo(repo_id, repo_type, payload.get("visibility") == "private")
        return 200, {"url": url, "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: bytes, query: dict, **_) -> tuple[int, dict]:
        return 200, {"errors": [], "warnings": []}

    def preupload(self, body: bytes, query: dict, kind: str, repo: str, rev: str) -> tuple[int, dict]:
        if "create_pr" in query:
            raise _HubError(400, "the stand-in does not support pull requests")
        payload = json.loads(body)
        with self._lock:
            self._repo(kind, repo, rev)
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        return 200, {"files": files, "commitOid": None}

    def commit(self, body: bytes, query: dict, kind: str, repo: str, rev: str) -> tuple[int, dict]:
        if "create_pr" in query:
            raise _HubError(400, "the stand-in does not support pull requests")
        header: dict = {}
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(422, f"unsupported encoding {value.get('encoding')!r}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise _HubError(422, f"the stand-in accepts only regular files and deletions, got {key!r}")
        if not header.get("summary"):
            raise _HubError(400, "the commit has no summary")
        with self._lock:
            target = self._repo(kind, repo, rev)
            if header.get("parentCommit") not in (None, target.sha):
                raise _HubError(412, "parentCommit is not the head of main")
            digest = hashlib.sha1(target.sha.encode())
            for path in deleted:
                digest.update(b"D" + path.encode())
                prefix = path.rstrip("/") + "/"
                for existing in [p for p in target.files if p == path or p.startswith(prefix)]:
                    del target.files[existing]
            for path, content in added.items():
                digest.update(b"A" + path.encode() + hashlib.sha1(content).digest())
                target.files[path] = content
            digest.update(header["summary"].encode())
            target.sha = digest.hexdigest()
            self.commits.append(
                Commit(
                    repo_id=repo,
                    repo_type=REPO_TYPES[kind],
                    revision=rev,
                    message=header["summary"],
                    description=header.get("description", ""),
                    oid=target.sha,
                    files=added,
                    deleted=tuple(deleted),
                )
            )
            oid = target.sha
        url = f"{self.url}/{URL_PREFIXES[REPO_TYPES[kind]]}{repo}/commit/{oid}"
        return 200, {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""}

    def repo_info(self, body: bytes, query: dict, kind: str, repo: str, rev: str | None) -> tuple[int, dict]:
        with self._lock:
            target = self._repo(kind, repo, rev)
            return 200, {
                "id": target.repo_id,
                "sha": target.sha,
                "private": target.private,
                "siblings": [{"rfilename": path} for path in sorted(target.files)],
            }


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # keep the test's output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._read_body() if self.command not in ("GET", "HEAD", "CONNECT") else b""
        split = urlsplit(self.path)
        endpoint, status, headers = "unknown", 404, {}
        try:
            if not self.path.startswith("/"):  # absolute URL or CONNECT host:port: sent to us as to a proxy
                raise _HubError(404, f"the stand-in is not a proxy: {self.command} {self.path}")
            for method, pattern, name in _ROUTES:
                match = pattern.match(split.path)
                if match and method == self.command:
                    endpoint = name
                    params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    status, payload = getattr(self.hub, name)(body, parse_qs(split.query), **params)
                    break
            else:
                raise _HubError(404, f"the stand-in has no endpoint {self.command} {split.path}")
        except _HubError as err:
            status, payload = err.status, {"error": err.message}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
                headers["X-Error-Message"] = err.message
        except Exception as err:  # a malformed request: answer it, never hang the client
            status, payload = 400, {"error": f"bad request: {err!r}"}
        self.hub._record(
            RecordedRequest(
                method=self.command,
                target=self.path,
                request_line=self.requestline,
                authorization=self.headers.get("Authorization"),
                endpoint=endpoint,
                status=status,
            )
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.command == "CONNECT":
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_CONNECT = _handle


@contextmanager
def serve_hub_standin() -> Iterator[HubStandin]:
    """Run a :class:`HubStandin` for the duration of the ``with`` block."""
    with HubStandin() as hub:
        yield hub


@pytest.fixture
def hub_standin() -> Iterator[HubStandin]:
    """A running :class:`HubStandin`; ``.url`` goes into ``HF_ENDPOINT`` (of a subprocess: it is read at import)."""
    with serve_hub_standin() as hub:
        yield hub

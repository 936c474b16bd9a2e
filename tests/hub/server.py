"""A read-only Hugging Face Hub look-alike on 127.0.0.1, for tests without Hub access (standard library only).

Plain folders are served as Hub repositories, so the real huggingface_hub, transformers and datasets
clients run unchanged with HF_ENDPOINT=http://127.0.0.1:PORT:

    ROOT/models/<org>/<name>/...      model repository <org>/<name>
    ROOT/datasets/<org>/<name>/...    dataset repository <org>/<name>

Each repository has one revision, branch `main`; its commit id hashes the file list and contents, so it is
stable across restarts. Files are indexed (sha256 and git blob id) once, at start-up: restart after edits.

Only what those clients ask for is served:
    GET      /healthz                               {"status": "ok", "repos": [...]}
    GET      /api/agent-harnesses                   an empty registry (huggingface_hub asks for it)
    GET      /api/{models,datasets}/REPO[/revision/REV]          repository info: sha, siblings
    GET      /api/{models,datasets}/REPO/tree/REV[/PATH]         a listing (?recursive=true)
    HEAD/GET /REPO/resolve/REV/PATH, /datasets/REPO/resolve/REV/PATH   a file (one `Range` allowed)
Errors carry the Hub's X-Error-Code, so the clients raise what they raise against huggingface.co:
401 RepoNotFound (the Hub's answer to anonymous callers), 404 RevisionNotFound, 404 EntryNotFound.

Control files in a repository folder (`.local-hub-*`, never served) make it behave like special Hub repos:
    .local-hub-gated    a gated repository: info and listings are public, files need a token listed in this
                        file (one per line): 401 GatedRepo without one, 403 GatedRepo with another
    .local-hub-status   an outage: every request for the repository gets this HTTP status (e.g. 503)

Usage: python tests/hub/server.py ROOT [--host 127.0.0.1] [--port 8765] [--verbose]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import re
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files the Hub keeps in git LFS: its ETag is then the sha256, and the tree reports an `lfs` entry.
LFS_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack",
                          ".model", ".parquet", ".arrow", ".npy", ".npz", ".zip", ".gz", ".tar", ".zst"})
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset"}
CONTROL_PREFIX = ".local-hub-"  # control files in a repository folder: read by the server, never served
GATED_FILE, STATUS_FILE = f"{CONTROL_PREFIX}gated", f"{CONTROL_PREFIX}status"

_REPO = r"(?P<repo>[^/]+/[^/]+|[^/]+)"  # "org/name", or a bare name (only ever answered "not found")
API_ROUTE = re.compile(rf"^/api/(?P<plural>models|datasets)/{_REPO}"
                       r"(?:/revision/(?P<rev>[^/]+)|/tree/(?P<tree_rev>[^/]+)(?P<path>/.*)?)?$")
RESOLVE_ROUTE = re.compile(rf"^/(?:(?P<datasets>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
RANGE = re.compile(r"\s*bytes=(\d*)-(\d*)\s*")


class HubError(Exception):
    """An error answer: HTTP status, the Hub's X-Error-Code (None: a plain 404) and a message."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class RepoFile:
    """One file: its path in the repository, where it lies, and the ids the Hub reports for it."""

    path: str
    source: Path
    size: int
    sha256: str
    oid: str  # the git blob id; for LFS files, the id of the pointer file git stores instead
    lfs: bool

    @classmethod
    def index(cls, path: str, source: Path) -> RepoFile:
        size = source.stat().st_size
        sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        with source.open("rb") as f:
            while chunk := f.read(1 << 20):
                sha256.update(chunk)
                blob.update(chunk)
        lfs = size >= LFS_MIN_SIZE or source.suffix.lower() in LFS_SUFFIXES
        if lfs:
            pointer = _lfs_pointer(sha256.hexdigest(), size)
            blob = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer)
        return cls(path, source, size, sha256.hexdigest(), blob.hexdigest(), lfs)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid

    def tree_item(self) -> dict:
        item = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            pointer_size = len(_lfs_pointer(self.sha256, self.size))
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return item


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class Repo:
    """A repository folder: its files and folders, and the commit id of its one revision, `main`."""

    def __init__(self, repo_type: str, repo_id: str, folder: Path):
        self.repo_type, self.repo_id = repo_type, repo_id
        gated, status = folder / GATED_FILE, folder / STATUS_FILE
        # None: not gated; else the tokens that have been granted access
        self.gated_tokens = frozenset(gated.read_text().split()) if gated.is_file() else None
        self.outage = int(status.read_text().strip()) if status.is_file() else None
        paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and not p.name.startswith(CONTROL_PREFIX))
        self.files = {path: RepoFile.index(path, folder / path) for path in paths}  # symlinks are followed
        parts = [path.split("/") for path in paths]
        self.dirs = sorted({"/".join(p[:i]) for p in parts for i in range(1, len(p))})
        commit = hashlib.sha1(f"{repo_type}:{repo_id}\n".encode())
        for path, file in self.files.items():
            commit.update(f"{path}\0{file.oid}\n".encode())
        self.sha = commit.hexdigest()
        newest = max((file.source.stat().st_mtime for file in self.files.values()), default=time.time())
        self.last_modified = datetime.fromtimestamp(newest, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def check_revision(self, rev: str) -> None:
        if unquote(rev) not in ("main", "refs/heads/main", self.sha):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")

    def info(self) -> dict:
        gated = False if self.gated_tokens is None else "manual"
        return {"id": self.repo_id, "sha": self.sha, "lastModified": self.last_modified, "private": False,
                "gated": gated, "disabled": False, "siblings": [{"rfilename": path} for path in self.files]}

    def check_access(self, authorization: str | None) -> None:
        """A gated repository's files, as the Hub answers: 401 without a token, 403 with one not granted."""
        if self.gated_tokens is None:
            return
        kind = "model" if self.repo_type == "model" else "dataset"
        if not authorization or not authorization.startswith("Bearer "):
            raise HubError(401, "GatedRepo", f"Access to {kind} {self.repo_id} is restricted. You must have "
                           "access to it and be authenticated to access it. Please log in.")
        if authorization.removeprefix("Bearer ").strip() not in self.gated_tokens:
            raise HubError(403, "GatedRepo", f"Access to {kind} {self.repo_id} is restricted and you are not "
                           "in the authorized list.")

    def check_outage(self) -> None:
        if self.outage is not None:
            raise HubError(self.outage, None, f"{self.repo_id}: simulated outage (HTTP {self.outage})")

    def tree(self, folder: str, recursive: bool) -> list[dict]:
        """The folders and files under `folder` ("" = the root) as /api/.../tree lists them; 404 if none."""
        folder = folder.strip("/")
        if folder and folder not in self.dirs:
            raise HubError(404, "EntryNotFound", f'{folder} does not exist on "main"')
        prefix = f"{folder}/" if folder else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        dirs = [{"type": "directory", "oid": hashlib.sha1(f"{self.sha}:{d}".encode()).hexdigest(), "size": 0,
                 "path": d} for d in self.dirs if listed(d)]
        return dirs + [file.tree_item() for path, file in self.files.items() if listed(path)]


def index_repos(root: Path) -> dict[tuple[str, str], Repo]:
    """Every ROOT/{models,datasets}/<org>/<name> folder, keyed by (repo type, "org/name")."""
    repos = {}
    for plural, repo_type in REPO_TYPES.items():
        for folder in sorted((root / plural).glob("*/*")):
            if folder.is_dir():
                repo_id = f"{folder.parent.name}/{folder.name}"
                repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, folder)
    return repos


class HubHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests from `self.server.repos`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    server_version = "local-hub/1.0"
    server: HubServer

    def do_GET(self) -> None:
        self._dispatch(head_only=False)

    def do_HEAD(self) -> None:
        self._dispatch(head_only=True)

    def log_message(self, fmt: str, *args: object) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.log_date_time_string()} {fmt % args}\n")

    def _dispatch(self, head_only: bool) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/healthz":
                return self._json({"status": "ok", "repos": [f"{t}:{r}" for t, r in self.server.repos]})
            if url.path == "/api/agent-harnesses":
                return self._json({"standardEnvVars": [], "harnesses": {}})
            if match := RESOLVE_ROUTE.match(url.path):
                return self._resolve(match, head_only)
            if (match := API_ROUTE.match(url.path)) and not head_only:
                return self._api(match, parse_qs(url.query))
            self.server.unhandled.append(f"{self.command} {self.path}")
            sys.stderr.write(f"local-hub: unhandled {self.command} {self.path}\n")
            raise HubError(404, None, f"Not found: {url.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(error.status, json.dumps({"error": error.message}).encode(), headers, head_only)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up

    def _send(self, status: int, body: bytes, headers: dict[str, str], head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _json(self, payload: object) -> None:
        self._send(200, json.dumps(payload).encode(), {})

    def _repo(self, plural: str, repo_id: str) -> Repo:
        repo = self.server.repos.get((REPO_TYPES[plural], repo_id))
        if repo is None:
            raise HubError(401, "RepoNotFound", "Repository not found")
        repo.check_outage()
        return repo

    def _api(self, match: re.Match, query: dict[str, list[str]]) -> None:
        repo = self._repo(match["plural"], match["repo"])
        if match["tree_rev"] is None:
            repo.check_revision(match["rev"] or "main")
            return self._json(repo.info())
        repo.check_revision(match["tree_rev"])
        recursive = query.get("recursive", ["false"])[-1].lower() in ("1", "true")
        self._json(repo.tree(unquote(match["path"] or ""), recursive))

    def _resolve(self, match: re.Match, head_only: bool) -> None:
        repo = self._repo("datasets" if match["datasets"] else "models", match["repo"])
        repo.check_revision(match["rev"])
        repo.check_access(self.headers.get("Authorization"))
        file = repo.files.get(unquote(match["path"]))
        if file is None:
            raise HubError(404, "EntryNotFound", "Entry not found")
        start, end = 0, file.size - 1
        requested = RANGE.fullmatch(self.headers.get("Range", ""))
        if requested and (requested[1] or requested[2]):  # bytes=START-[END] or bytes=-SUFFIX
            if requested[1]:
                start, end = int(requested[1]), min(int(requested[2] or end), end)
            else:
                start = max(file.size - int(requested[2]), 0)
            if start > end:
                return self._send(416, b"", {"Content-Range": f"bytes */{file.size}"})
        partial = bool(requested and (requested[1] or requested[2]))
        self.send_response(206 if partial else 200)
        headers = {"Content-Type": mimetypes.guess_type(file.path)[0] or "application/octet-stream",
                   "Content-Length": str(end - start + 1), "Accept-Ranges": "bytes",
                   "ETag": f'"{file.etag}"', "X-Repo-Commit": repo.sha}
        if file.lfs:
            headers |= {"X-Linked-Etag": f'"{file.etag}"', "X-Linked-Size": str(file.size)}
        if partial:
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only and end >= start:
            with file.source.open("rb") as f:
                self.wfile.flush()
                self.connection.sendfile(f, offset=start, count=end - start + 1)


class HubServer(ThreadingHTTPServer):
    """The server over an indexed ROOT. `start()` serves from a daemon thread; `stop()` (or `with`) ends it.

    Port 0 picks a free port; `endpoint` is the URL to put in HF_ENDPOINT. Requests no route answers are
    printed to stderr and kept in `unhandled`, so a test can check that clients needed nothing else.
    """

    daemon_threads = True

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.repos = index_repos(Path(root))
        self.verbose = verbose
        self.unhandled: list[str] = []
        self._thread: threading.Thread | None = None
        super().__init__((host, port), HubHandler)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_healthy(endpoint: str, timeout: float = 5.0) -> None:
    """Poll ENDPOINT/healthz until it answers 200; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"local hub at {endpoint} is not healthy after {timeout} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the folder holding models/<org>/<name> and datasets/<org>/<name>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    server = HubServer(args.root, args.host, args.port, args.verbose)
    names = ", ".join(f"{t}:{r}" for t, r in server.repos)
    print(f"local-hub: {len(server.repos)} repos indexed in {time.perf_counter() - started:.2f}s ({names})")
    print(f"local-hub: listening on {server.endpoint}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

"""The `local_hub` fixture: tests/hub/repos.py's repositories served by tests/hub/server.py, once per session.

Clients must run in a subprocess whose environment comes from `client_env`: the libraries read HF_ENDPOINT,
HF_HOME and the offline switches when they are imported, and the test session itself is forced offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .server import HubServer, wait_healthy

CLIENTS = Path(__file__).with_name("clients.py")
COURSE_CLIENTS = Path(__file__).with_name("course_clients.py")  # the course's loaders, as learners call them
REPO_ROOT = Path(__file__).resolve().parents[2]
# Dropped from the client environment: the session's offline switches, caches, tokens and endpoints.
CLIENT_DROPPED_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")


@dataclass(frozen=True)
class LocalHub:
    """A running server: `endpoint` (the URL for HF_ENDPOINT) and `root` (the folder it serves)."""

    endpoint: str
    root: Path
    server: HubServer

    @property
    def unhandled(self) -> list[str]:
        """Requests the server had no route for (each also printed to stderr)."""
        return self.server.unhandled


def client_env(endpoint: str, hf_home: Path, offline: bool = False) -> dict[str, str]:
    """os.environ for a client process: HF_ENDPOINT=`endpoint`, HF_HOME=`hf_home` (give a fresh tmp folder
    for a cold cache), every other HF_*/HUGGINGFACE_*/TRANSFORMERS_* variable unset (HF_HUB_OFFLINE,
    HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE, tokens, cache paths); HF_HUB_OFFLINE=1 if `offline`. This
    checkout comes first on PYTHONPATH, so that the clients import its unsloth_course."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_DROPPED_PREFIXES)}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


class ClientRun:
    """A client process started by start_clients; `results()` waits for it and returns its results by call."""

    def __init__(self, env: dict[str, str], calls: tuple[str, ...], script: Path, timeout: float):
        self.calls, self.script, self.timeout = calls, script, timeout
        self.proc = subprocess.Popen([sys.executable, str(script), *calls], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def results(self) -> dict[str, dict]:
        try:
            stdout, stderr = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
            raise RuntimeError(f"{self.script.name} ran over {self.timeout} s:\n{stdout}\n{stderr[-4000:]}")
        results = {}
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
                results[result.pop("call")] = result
        if self.proc.returncode != 0 or set(results) != set(self.calls):
            raise RuntimeError(f"{self.script.name} exited with {self.proc.returncode}:\n{stdout}\n"
                               f"{stderr[-4000:]}")
        return results


def start_clients(env: dict[str, str], *calls: str, script: Path = CLIENTS,
                  timeout: float = 300) -> ClientRun:
    """Start `script` (clients.py: "KIND:REPO[:CONFIG]" calls; course_clients.py: JSON calls) in a process."""
    return ClientRun(env, calls, script, timeout)


def run_clients(env: dict[str, str], *calls: str, script: Path = CLIENTS,
                timeout: float = 300) -> dict[str, dict]:
    """Run `script` (default tests/hub/clients.py) with `calls` in one process; its results by call."""
    return start_clients(env, *calls, script=script, timeout=timeout).results()


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """Build the repositories, serve them on a free port of 127.0.0.1, stop the server at session end."""
    # Imported here: repos imports unsloth_course, which conftest must not import before it sets the env.
    from .repos import build_repos

    root = build_repos(tmp_path_factory.mktemp("local_hub"))
    server = HubServer(root).start()
    try:
        wait_healthy(server.endpoint)
        yield LocalHub(server.endpoint, root, server)
    finally:
        server.stop()

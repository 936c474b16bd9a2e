"""The `local_hub` fixture: tests/hub/repos.py's repositories served by tests/hub/server.py, once per session.

Clients must run in a subprocess whose environment comes from `client_env`: the libraries read HF_ENDPOINT,
HF_HOME and the offline switches when they are imported, and the test session itself is forced offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .server import HubServer

CLIENTS = Path(__file__).with_name("clients.py")
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
    HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE, tokens, cache paths); HF_HUB_OFFLINE=1 if `offline`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_DROPPED_PREFIXES)}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_clients(env: dict[str, str], *calls: str, timeout: float = 300) -> dict[str, dict]:
    """Run tests/hub/clients.py with `calls` ("KIND:REPO[:CONFIG]") in one process; its results by call."""
    proc = subprocess.run([sys.executable, str(CLIENTS), *calls], env=env, capture_output=True, text=True,
                          timeout=timeout)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
            results[result.pop("call")] = result
    if proc.returncode != 0 or set(results) != set(calls):
        raise RuntimeError(f"clients.py exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return results


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

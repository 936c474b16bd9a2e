"""Serve real rows and a converted checkpoint as a local Hugging Face Hub: a GPU rehearsal without the Hub.

    python -m tools.local_hub --realdata DIR --model-dir DIR [--port N] [--root DIR] [--foreground]

DIR (--realdata) holds the three files of /work/shared/realdata (see its README): alpaca-cleaned.jsonl,
orca_dpo_pairs.jsonl and code_search_net_python.jsonl, with the Hub's column names. --model-dir is a
converted checkpoint (model.safetensors, tokenizer files), e.g. unsloth_course.models.materialize_gguf()'s.
The tool lays them out in the Hub layouts of the course's repositories (tests/hub/repos.py: one JSON array
for yahma/alpaca-cleaned, JSON Lines for Intel/orca_dpo_pairs, parquet shards and a card for
claudios/code_search_net), starts tests/hub/server.py's server (in the background, or in the foreground with
--foreground), waits until /healthz answers and prints `HF_ENDPOINT=...` to export, with an empty HF_HOME and
no HF_HUB_OFFLINE. Standard library, datasets and pyarrow only; nothing reaches the network.

The repositories go to --root (default: a new temporary folder), never into this repository: the real rows
are test material with their own licenses.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.hub.repos import (
    ALPACA_ID,
    CODE_COLUMNS,
    CODE_ID,
    MODEL_ID,
    ORCA_ID,
    build_model,
    write_alpaca,
    write_code_search_net,
    write_orca,
)
from tests.hub.server import HubServer, wait_healthy

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = REPO_ROOT / "tests" / "hub" / "server.py"
HEALTHY_WITHIN_S = 60.0  # the server hashes every file at start-up: about 0.5 s for the 270 MB checkpoint
REALDATA = {  # file -> (Hub dataset, the columns it must have)
    "alpaca-cleaned.jsonl": (ALPACA_ID, ("instruction", "input", "output")),
    "orca_dpo_pairs.jsonl": (ORCA_ID, ("system", "question", "chosen", "rejected")),
    "code_search_net_python.jsonl": (CODE_ID, CODE_COLUMNS),
}


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The JSON Lines rows of `path`; ValueError naming the file and line of a bad row or missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the --realdata folder needs {', '.join(REALDATA)})")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number}: {error.msg}") from error
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"{path}: line {number} has no column {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def lay_out(realdata: Path, model_dir: Path, root: Path) -> Path:
    """Write the model and the three dataset repositories under `root` from the real rows; returns `root`."""
    rows = {name: read_rows(realdata / name, columns) for name, (_, columns) in REALDATA.items()}
    origin = f"real rows from {realdata}"
    build_model(root / "models" / MODEL_ID, source=model_dir)
    write_alpaca(root / "datasets" / ALPACA_ID, rows["alpaca-cleaned.jsonl"], origin)
    write_orca(root / "datasets" / ORCA_ID, rows["orca_dpo_pairs.jsonl"], origin)
    write_code_search_net(root / "datasets" / CODE_ID, rows["code_search_net_python.jsonl"], origin)
    return root


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _check_root(root: Path) -> None:
    resolved = root.resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise ValueError(
            f"--root {root} is inside the repository: the real rows must not be copied into it; "
            "use a folder elsewhere (default: a temporary one)"
        )


def serve_background(root: Path, host: str, port: int) -> tuple[str, int]:
    """Start the server as its own process (it outlives this one); (endpoint, pid) once /healthz answers."""
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), str(root), "--host", host, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://{host}:{port}"
    try:
        wait_healthy(endpoint, timeout=HEALTHY_WITHIN_S)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"the local Hub did not start; its log: {root / 'server.log'}") from None
    return endpoint, process.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local_hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", type=Path, required=True, help="folder with the three .jsonl files")
    parser.add_argument("--model-dir", type=Path, required=True, help="a converted checkpoint folder")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--root", type=Path, help="where to write the repositories (default: a new temp folder)"
    )
    parser.add_argument("--foreground", action="store_true", help="serve in this process until Ctrl-C")
    args = parser.parse_args(argv)
    try:
        root = args.root or Path(tempfile.mkdtemp(prefix="local_hub_"))
        _check_root(root)
        lay_out(args.realdata, args.model_dir, root)
    except (OSError, ValueError) as error:
        print(f"local_hub: error: {error}", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    print(f"local_hub: repositories written under {root}", flush=True)
    if args.foreground:
        server = HubServer(root, args.host, port)

        def announce() -> None:
            wait_healthy(server.endpoint, timeout=HEALTHY_WITHIN_S)
            print(f"HF_ENDPOINT={server.endpoint}\nlocal_hub: serving until Ctrl-C", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    endpoint, pid = serve_background(root, args.host, port)
    print(f"HF_ENDPOINT={endpoint}")
    print(f"local_hub: server pid {pid} (stop it with: kill {pid}); log {root / 'server.log'}")
    print("local_hub: then use an empty HF_HOME and unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Execute notebooks the way nbmake does (nbclient, kernel in the notebook's folder), printing each cell's
time as it finishes and saving the executed notebook after every cell, so that a run cut off by a time
limit still shows how far it got and where the time went.

    python3 scripts/run_notebook.py notebooks/colab3_dpo_reinforcement_learning.ipynb --out $OUT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, out: Path, timeout: int) -> int:
    nb = nbformat.read(path, as_version=4)
    target = out / path.name
    started = {"t": time.time()}
    total = time.time()

    def on_start(cell, cell_index, **_):
        started["t"] = time.time()

    def on_done(cell, cell_index, **_):
        first = next((line for line in cell.source.splitlines() if line.strip()), "")[:70]
        print(f"{path.stem} cell {cell_index:3d}: {time.time() - started['t']:7.1f} s  {first}", flush=True)
        nbformat.write(nb, target)

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=on_start, on_cell_executed=on_done)
    try:
        client.execute()
    except CellExecutionError as error:
        nbformat.write(nb, target)
        print(f"{path.stem}: FAILED after {time.time() - total:.0f} s\n{str(error)[-3000:]}", flush=True)
        return 1
    nbformat.write(nb, target)
    print(f"{path.stem}: passed in {time.time() - total:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("executed"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return max(run(path, args.out, args.timeout) for path in args.notebooks)


if __name__ == "__main__":
    sys.exit(main())

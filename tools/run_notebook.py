"""Execute notebooks the way nbmake does (nbclient, kernel in the notebook's folder), printing each cell's
time as it finishes and saving the executed notebook after every cell, so that a run cut off by a time
limit still shows how far it got and where the time went.

    python3 -m tools.run_notebook notebooks/colab3_dpo_reinforcement_learning.ipynb --out $OUT \
        --set DATASET=.realdata/orca_dpo_pairs.jsonl

`--set NAME=VALUE` (repeatable) changes a setting of the cell tagged `parameters` (each notebook's `DATASET`),
as papermill does: a cell tagged `injected-parameters` right after it assigns the new values, so the executed
notebook shows what was changed. VALUE is a Python literal, or else taken as a string.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def parse_settings(items: list[str]) -> dict[str, object]:
    """`NAME=VALUE` strings as {name: value}; VALUE is a Python literal or else a string."""
    settings = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME a Python name")
        try:
            settings[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[name.strip()] = text
    return settings


def inject_parameters(nb, settings: dict[str, object]) -> None:
    """Insert a cell tagged injected-parameters after the cell tagged parameters, assigning `settings`."""
    if not settings:
        return
    index = next((i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])), None)
    if index is None:
        raise SystemExit("--set needs a cell tagged 'parameters' in the notebook")
    defined = {t.id for node in ast.parse(nb.cells[index].source).body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)}
    unknown = sorted(set(settings) - defined)
    if unknown:
        raise SystemExit(f"--set {', '.join(unknown)}: not set in the parameters cell ({', '.join(sorted(defined))})")
    source = "# Injected by tools/run_notebook.py --set\n" + "".join(f"{k} = {v!r}\n" for k, v in settings.items())
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def run(path: Path, out: Path, timeout: int, settings: dict[str, object] | None = None) -> int:
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, settings or {})
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
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                        help="change a setting of the notebook's parameters cell (repeatable)")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    args.out.mkdir(parents=True, exist_ok=True)
    return max(run(path, args.out, args.timeout, settings) for path in args.notebooks)


if __name__ == "__main__":
    sys.exit(main())

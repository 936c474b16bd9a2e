"""Build the course notebooks (`notebooks/colab*.ipynb`) from their jupytext sources (`notebooks/colab*.py`).

Authors edit only the `py:percent` sources; every `.ipynb` is generated and committed, so that a learner can
upload one file to Colab and press Run all.

Setup placeholder
-----------------
Each source must contain exactly one code cell whose whole source is the single line ``# SETUP``::

    # %%
    # SETUP

It must be the first code cell (markdown cells may precede it). The build replaces it with the shared Setup
cell, a Colab form cell (``#@title Setup``, metadata ``{"cellView": "form"}``), rendered from
`notebooks/_setup_cell.py` (plain Python; the build adds the ``#@title`` line) with three values filled in:

* ``["@@PINS@@"]`` -> the pip specs installed on Colab: pyproject's `dependencies` without torch (Colab ships
  its own CUDA build), plus the `gpu` extra, whose pins win over the base ranges (trl==1.15.0);
* ``"@@VERSION@@"`` -> the project version;
* ``"@@PACKAGE@@"`` -> the course core (`unsloth_course/` without `cli/`: ``*.py`` and the recipes' ``*.toml``)
  as a deterministic xz-compressed tar, in base64 lines.

A source without the placeholder, or with more than one, is an error (ValueError naming the file).

Right before the Setup cell the build inserts a generated markdown cell (`pins_cell_source()`) that says in
plain text what the Setup cell does: the exact pins it installs on Colab, and the embedded copy of the course
library it unpacks (number of files and size of the archive); locally nothing is installed. A viewer of a video
sees it without opening the form cell.

Only ``*.py`` and ``*.toml`` files are embedded (EMBEDDED_FILES): other data files the core needs must be added there.

Output
------
nbformat v4, no outputs, ``execution_count`` None, cell ids ``cell-0``, ``cell-1``... (by position in the
built notebook), Colab GPU metadata, no
jupytext metadata, ``indent=1`` and a trailing newline: rebuilding is byte-identical, so `check()` can tell a
stale notebook (package or pins changed, source edited without a rebuild, `.ipynb` edited by hand).

Usage::

    python -m tools.build_notebooks           # (re)build every notebook
    python -m tools.build_notebooks --check   # exit 1 listing the notebooks that are out of date

API: `build()`, `check()`, `main()`, and the pieces `pins()`, `package_archive()`, `setup_cell_source()`,
`pins_cell_source()`, `render_notebook()`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import lzma
import re
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "unsloth_course"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PYPROJECT = REPO_ROOT / "pyproject.toml"
SETUP_TEMPLATE = NOTEBOOKS_DIR / "_setup_cell.py"

EMBEDDED_FILES = ("*.py", "*.toml")
NOT_EMBEDDED = {"__pycache__", "cli", "__main__.py"}  # the command line and its tools
PLACEHOLDER = "# SETUP"
SETUP_TITLE = "#@title Setup"  # added by the build: a formatter would turn it into "# @title"
SOURCE_GLOB = "colab*.py"
BUILD_COMMAND = "python -m tools.build_notebooks"
# Colab ships its own CUDA builds of these: installing them from PyPI would replace them.
COLAB_PROVIDED = frozenset({"torch", "torchvision", "torchaudio"})

PINS_MARKER = '["@@PINS@@"]'
VERSION_MARKER = '"@@VERSION@@"'
PACKAGE_MARKER = '"@@PACKAGE@@"'
BLOB_CHARS_PER_LINE = 92  # 4 spaces + quotes: 98 characters a line


NOTEBOOK_METADATA = {
    "accelerator": "GPU",
    "colab": {"provenance": [], "gpuType": "T4"},
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}
# Cell metadata that only jupytext's text representation uses.
JUPYTEXT_CELL_KEYS = frozenset(
    {"lines_to_next_cell", "lines_to_end_of_cell_marker", "title", "cell_marker", "region_name"}
)


# --- pieces ---------------------------------------------------------------------------------------------


def _load_pyproject(pyproject: Path) -> dict:
    if not pyproject.is_file():
        raise FileNotFoundError(
            f"{pyproject} not found: notebook_build runs from a checkout of the repository"
        )
    import tomllib  # Python 3.11+: only the build needs it, not the course itself

    with pyproject.open("rb") as f:
        return tomllib.load(f)


def _requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not match:
        raise ValueError(f"cannot read a package name from requirement {spec!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def pins(pyproject: Path = PYPROJECT) -> list[str]:
    """The pip specs the Setup cell installs on Colab: base dependencies less torch, then the `gpu` extra.

    Where the gpu extra names a package that is also a base dependency, the gpu spec replaces the base one
    (in its place)."""
    project = _load_pyproject(pyproject)["project"]
    gpu = project.get("optional-dependencies", {}).get("gpu", [])
    gpu_by_name = {_requirement_name(spec): spec for spec in gpu}
    result: list[str] = []
    for spec in project.get("dependencies", []):
        name = _requirement_name(spec)
        if name not in COLAB_PROVIDED:
            result.append(gpu_by_name.pop(name, spec))
    result += [spec for name, spec in gpu_by_name.items() if name not in COLAB_PROVIDED]
    return result


def project_version(pyproject: Path = PYPROJECT) -> str:
    return str(_load_pyproject(pyproject)["project"]["version"])


def package_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The course core the notebooks import: every ``*.py`` and ``*.toml`` (recipes) file of the package, sorted by
    relative path, without ``__pycache__`` and without the command line and its tools (``cli/``), which the
    notebooks never import."""
    files = [p for pattern in EMBEDDED_FILES for p in package_dir.rglob(pattern)
             if not set(p.relative_to(package_dir).parts) & NOT_EMBEDDED]
    return sorted(files, key=lambda p: p.relative_to(package_dir).as_posix())


def package_archive(package_dir: Path = PACKAGE_DIR) -> bytes:
    """A deterministic xz-compressed tar of the core's files, named ``unsloth_course/...``: one stream compresses
    the repeated text of all the modules together (about 30% smaller than a zip, which compresses each file
    alone)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path in package_files(package_dir):
            data = path.read_bytes().replace(b"\r\n", b"\n")  # same blob from a Windows checkout
            info = tarfile.TarInfo(f"unsloth_course/{path.relative_to(package_dir).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def _string_lines(text: str, open_: str, close: str) -> str:
    return open_ + "\n" + "".join(f"    {line}\n" for line in text) + close


def setup_cell_source(
    *, package_dir: Path = PACKAGE_DIR, pyproject: Path = PYPROJECT, template: Path = SETUP_TEMPLATE
) -> str:
    """The Setup cell's code: the template with the pins, the version and the embedded package filled in."""
    source = template.read_text(encoding="utf-8")
    blob = base64.b64encode(package_archive(package_dir)).decode("ascii")
    chunks = [blob[i : i + BLOB_CHARS_PER_LINE] for i in range(0, len(blob), BLOB_CHARS_PER_LINE)] or [""]
    values = {
        PINS_MARKER: _string_lines([f"{json.dumps(p)}," for p in pins(pyproject)], "[", "]"),
        VERSION_MARKER: json.dumps(project_version(pyproject)),
        PACKAGE_MARKER: _string_lines([json.dumps(c) for c in chunks], "(", ")"),
    }
    for marker, value in values.items():
        if source.count(marker) != 1:
            raise ValueError(
                f"{template}: expected {marker} exactly once, found it {source.count(marker)} times"
            )
        source = source.replace(marker, value)
    return f"{SETUP_TITLE}\n{source.strip()}"


def pins_cell_source(*, package_dir: Path = PACKAGE_DIR, pyproject: Path = PYPROJECT) -> str:
    """The markdown cell before the Setup cell: what it installs on Colab (the pins) and what it unpacks."""
    files = package_files(package_dir)
    size_kb = len(package_archive(package_dir)) / 1024
    lines = ["**What the Setup cell below does.** On Colab it installs these packages with pip, pinned as "
             "listed (Colab's own PyTorch stays as it is):", ""]
    lines += [f"- `{spec}`" for spec in pins(pyproject)]
    version = project_version(pyproject)
    lines += ["", f"Then it unpacks the copy of the course library `unsloth_course` {version} "
              f"embedded in the cell ({len(files)} files, {size_kb:.0f} KB as an xz-compressed tar) and imports "
              "it; nothing is cloned or downloaded for it. Locally (a virtual environment, VS Code, Jupyter) it "
              "installs nothing and uses the installed `unsloth_course` if there is one."]
    return "\n".join(lines)


# --- one notebook ---------------------------------------------------------------------------------------


def _setup_index(cells: Sequence, source: Path) -> int:
    found = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.strip() == PLACEHOLDER]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ValueError(
            f"{source}: found {what} Setup placeholder cells; it needs exactly one code cell whose source "
            f"is the line {PLACEHOLDER!r}"
        )
    first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
    if found[0] != first_code:
        raise ValueError(f"{source}: the {PLACEHOLDER!r} placeholder must be the first code cell")
    return found[0]


def render_notebook(source: Path, setup_cell: str, pins_cell: str) -> str:
    """The `.ipynb` text built from one py:percent source: `pins_cell` (markdown), then `setup_cell` in
    place of the placeholder."""
    import jupytext  # dev dependencies: imported here so that the package imports without them
    import nbformat

    text_nb = jupytext.read(source, fmt="py:percent")
    setup_index = _setup_index(text_nb.cells, source)
    nb = nbformat.v4.new_notebook(metadata=json.loads(json.dumps(NOTEBOOK_METADATA)))
    for i, cell in enumerate(text_nb.cells):
        metadata = {k: v for k, v in cell.metadata.items() if k not in JUPYTEXT_CELL_KEYS}
        if i == setup_index:
            nb.cells.append(nbformat.v4.new_markdown_cell(pins_cell))
            new = nbformat.v4.new_code_cell(setup_cell, metadata={"cellView": "form"})
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source, metadata=metadata)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=metadata)
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=metadata)
        nb.cells.append(new)
    for position, cell in enumerate(nb.cells):
        cell.id = f"cell-{position}"
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4, indent=1)
    return text if text.endswith("\n") else text + "\n"


# --- all notebooks --------------------------------------------------------------------------------------


def sources(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    return sorted(notebooks_dir.glob(SOURCE_GLOB))


def _rendered(notebooks_dir: Path, package_dir: Path, pyproject: Path, template: Path) -> dict[Path, str]:
    setup_cell = setup_cell_source(package_dir=package_dir, pyproject=pyproject, template=template)
    pins_cell = pins_cell_source(package_dir=package_dir, pyproject=pyproject)
    return {src.with_suffix(".ipynb"): render_notebook(src, setup_cell, pins_cell)
            for src in sources(notebooks_dir)}


def build(
    notebooks_dir: Path = NOTEBOOKS_DIR,
    *,
    package_dir: Path = PACKAGE_DIR,
    pyproject: Path = PYPROJECT,
    template: Path = SETUP_TEMPLATE,
) -> list[Path]:
    """(Re)build every `colab*.ipynb` next to its source; returns the notebooks whose file changed."""
    changed = []
    for target, text in _rendered(Path(notebooks_dir), package_dir, pyproject, template).items():
        data = text.encode("utf-8")
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
            changed.append(target)
    return changed


def check(
    notebooks_dir: Path = NOTEBOOKS_DIR,
    *,
    package_dir: Path = PACKAGE_DIR,
    pyproject: Path = PYPROJECT,
    template: Path = SETUP_TEMPLATE,
) -> list[Path]:
    """The notebooks that differ from a fresh build: missing, stale, hand-edited, or without a source."""
    notebooks_dir = Path(notebooks_dir)
    expected = _rendered(notebooks_dir, package_dir, pyproject, template)
    stale = [t for t, text in expected.items() if not t.is_file() or t.read_bytes() != text.encode("utf-8")]
    orphans = [p for p in notebooks_dir.glob("colab*.ipynb") if p not in expected]
    return sorted(stale + orphans)


def _reason(notebook: Path) -> str:
    if not notebook.with_suffix(".py").is_file():
        return f"has no source {notebook.with_suffix('.py').name}: delete it or restore the source"
    if not notebook.is_file():
        return "missing: never built"
    return "differs from a fresh build (package or pins changed, source edited, or .ipynb edited by hand)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-notebooks", description="Build notebooks/colab*.ipynb from their jupytext sources."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a notebook differs from a fresh build"
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR, help="folder of the sources")
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.notebooks)
        if stale:
            print(f"{len(stale)} notebook(s) out of date:", file=sys.stderr)
            for path in stale:
                print(f"  {path}: {_reason(path)}", file=sys.stderr)
            print(f"Fix: {BUILD_COMMAND}", file=sys.stderr)
            return 1
        print(f"{len(sources(args.notebooks))} notebook(s) up to date")
        return 0
    changed = build(args.notebooks)
    for path in sources(args.notebooks):
        target = path.with_suffix(".ipynb")
        print(f"{'built' if target in changed else 'unchanged'}: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

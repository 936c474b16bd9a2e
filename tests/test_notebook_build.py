"""The notebook build: committed notebooks are fresh, builds are deterministic, the Setup cell works."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest

from tools import build_notebooks as nbb

SOURCE = """\
# %% [markdown]
# # A tiny notebook

# %%
# SETUP

# %% A titled cell
import os

print(os.environ.get("UNSLOTH_COURSE_QUICK"))
"""


def write_source(folder: Path, text: str = SOURCE, name: str = "colab9_tiny.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def copy_package(dest: Path) -> Path:
    shutil.copytree(nbb.PACKAGE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def committed_notebooks() -> list[Path]:
    return sorted(nbb.NOTEBOOKS_DIR.glob("*.ipynb"))


def setup_code(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def embedded_archive(setup_cell: str) -> bytes:
    body = setup_cell.split("_PACKAGE = (\n", 1)[1].split("\n)", 1)[0]
    return base64.b64decode("".join(json.loads(line.strip()) for line in body.splitlines()))


# --- the committed notebooks ----------------------------------------------------------------------------


def test_committed_notebooks_equal_a_fresh_build():
    if not nbb.sources() and not committed_notebooks():
        pytest.skip("no notebooks/colab*.py sources yet: nothing to compare")
    stale = nbb.check()
    assert not stale, f"out of date: {[str(p) for p in stale]}; fix: {nbb.BUILD_COMMAND}"


def test_committed_notebooks_have_no_outputs():
    notebooks = committed_notebooks()
    if not notebooks:
        pytest.skip("no notebooks/*.ipynb yet")
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name}: cell {cell.get('id')} has outputs"
                assert cell.execution_count is None, f"{path.name}: cell {cell.get('id')} has a count"


# --- the build ------------------------------------------------------------------------------------------


def test_build_is_deterministic_and_clean(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_source(first), write_source(second)
    assert nbb.build(first) == [first / "colab9_tiny.ipynb"]
    assert nbb.build(second) == [second / "colab9_tiny.ipynb"]
    data = (first / "colab9_tiny.ipynb").read_bytes()
    assert data == (second / "colab9_tiny.ipynb").read_bytes()
    assert nbb.build(first) == []  # unchanged: not rewritten
    assert nbb.check(first) == []

    text = data.decode("utf-8")
    assert text.endswith("}\n") and text.startswith('{\n "cells": [\n  {\n   "cell_type"')  # indent=1
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata == nbb.NOTEBOOK_METADATA  # no jupytext metadata
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1", "cell-2", "cell-3"]
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code", "code"]
    assert nb.cells[1].source == nbb.pins_cell_source()  # the generated cell, right before the Setup cell
    setup = nb.cells[2]
    assert setup.source.startswith("#@title Setup\n") and setup.metadata == {"cellView": "form"}
    assert setup.source == nbb.setup_cell_source()
    assert all(len(line) <= 100 for line in setup.source.splitlines())
    assert nb.cells[3].metadata == {}  # jupytext's title and lines_to_next_cell are dropped
    assert nb.cells[3].source.startswith("import os")
    for cell in nb.cells[2:]:
        assert cell.outputs == [] and cell.execution_count is None


def test_package_archive_is_deterministic_and_complete(tmp_path):
    package = copy_package(tmp_path / "unsloth_course")
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "junk.py").write_text("x = 1\n")
    (package / "notes.txt").write_text("not python\n")
    blob = nbb.package_archive(package)
    assert blob == nbb.package_archive(package) == nbb.package_archive(nbb.PACKAGE_DIR)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:xz") as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    expected = [f"unsloth_course/{p.relative_to(nbb.PACKAGE_DIR).as_posix()}" for p in nbb.package_files()]
    assert names == sorted(names) == expected
    assert "unsloth_course/__init__.py" in names and "unsloth_course/recipes/lora.toml" in names
    assert not [n for n in names if n.startswith("unsloth_course/cli/")]  # the notebooks embed the core only
    assert all(m.isfile() and m.mtime == 0 and m.mode == 0o644 for m in members)


def test_check_reports_a_stale_package_an_edited_source_and_a_hand_edit(tmp_path):
    notebooks, package = tmp_path / "notebooks", copy_package(tmp_path / "unsloth_course")
    source = write_source(notebooks)
    target = source.with_suffix(".ipynb")
    assert nbb.check(notebooks, package_dir=package) == [target]  # never built
    nbb.build(notebooks, package_dir=package)
    assert nbb.check(notebooks, package_dir=package) == []

    hub = package / "hub.py"
    hub.write_text(hub.read_text() + "\n# changed\n")
    assert nbb.check(notebooks, package_dir=package) == [target]
    nbb.build(notebooks, package_dir=package)
    assert nbb.check(notebooks, package_dir=package) == []

    source.write_text(SOURCE + "\n# %%\nprint('new cell')\n")
    assert nbb.check(notebooks, package_dir=package) == [target]
    nbb.build(notebooks, package_dir=package)

    target.write_text(target.read_text().replace('"source": [', '"source": [\n    "# edited\\n",', 1))
    assert nbb.check(notebooks, package_dir=package) == [target]

    nbb.build(notebooks, package_dir=package)
    orphan = notebooks / "colab8_gone.ipynb"
    shutil.copy(target, orphan)
    assert nbb.check(notebooks, package_dir=package) == [orphan]


def test_cli_check_exits_1_with_the_fix_command(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    write_source(notebooks)
    assert nbb.main(["--check", "--notebooks", str(notebooks)]) == 1
    err = capsys.readouterr().err
    assert "colab9_tiny.ipynb" in err and nbb.BUILD_COMMAND in err
    assert nbb.main(["--notebooks", str(notebooks)]) == 0
    assert nbb.main(["--check", "--notebooks", str(notebooks)]) == 0


def test_pins_use_the_gpu_extra_and_leave_torch_to_colab():
    pins = nbb.pins()
    for spec in ("unsloth==2026.10.9", "trl==1.15.0", "transformers==5.17.0"):
        assert spec in pins
    assert not [p for p in pins if p.startswith("trl") and p != "trl==1.15.0"]
    assert not [p for p in pins if nbb._requirement_name(p) in {"torch", "torchvision", "torchaudio"}]
    assert len(pins) == len({nbb._requirement_name(p) for p in pins})
    setup = nbb.setup_cell_source()
    assert all(json.dumps(p) in setup for p in pins)
    assert '"torch' not in setup


def test_the_cell_before_setup_shows_the_pins_and_the_embedded_library():
    text = nbb.pins_cell_source()
    assert text.startswith("**What the Setup cell below does.** On Colab it installs these packages with pip")
    for spec in nbb.pins():
        assert f"- `{spec}`" in text.splitlines()
    files, size_kb = len(nbb.package_files()), len(nbb.package_archive()) / 1024
    assert (f"`unsloth_course` 0.1.0 embedded in the cell ({files} files, {size_kb:.0f} KB as an xz-compressed "
            "tar)") in text
    assert "Locally (a virtual environment, VS Code, Jupyter) it installs nothing" in text
    assert "torch`" not in text and text == nbb.pins_cell_source()  # deterministic


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SOURCE.replace("# SETUP", "x = 1"), "found no Setup placeholder"),
        (SOURCE + "\n# %%\n# SETUP\n", "found 2 Setup placeholder"),
        (SOURCE.replace("# %%\n# SETUP", "# %%\nx = 1\n\n# %%\n# SETUP"), "must be the first code cell"),
    ],
)
def test_a_bad_placeholder_is_an_error_naming_the_file(tmp_path, text, message):
    source = write_source(tmp_path, text, "colab7_bad.py")
    with pytest.raises(ValueError, match=message) as info:
        nbb.build(tmp_path)
    assert "colab7_bad.py" in str(info.value)
    assert not source.with_suffix(".ipynb").exists()


# --- the Setup cell, run ----------------------------------------------------------------------------------

# Runs before the cell in a fresh interpreter: makes the installed unsloth_course unimportable (editable
# finder, or a site-packages/checkout entry of sys.path) and records pip calls instead of installing.
HIDE_PACKAGE = """
import importlib.util, json, os, subprocess, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [p for p in sys.path if not os.path.exists(os.path.join(p or ".", "unsloth_course"))]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("unsloth_course") is None, "unsloth_course is still importable"
CALLS = []
subprocess.check_call = lambda cmd, **kw: CALLS.append(cmd) or 0
"""
AFTER = """
import unsloth_course
print("RESULT " + json.dumps({"file": unsloth_course.__file__, "calls": CALLS}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COLAB_RELEASE_TAG"}
    env.update(extra)
    return env


def test_setup_cell_installs_on_colab_and_imports_the_embedded_copy(tmp_path):
    notebooks = tmp_path / "notebooks"
    write_source(notebooks)
    nbb.build(notebooks)
    cell = setup_code(notebooks / "colab9_tiny.ipynb")
    target = tmp_path / "pkg"
    work = tmp_path / "cwd"
    work.mkdir()
    program = f"{HIDE_PACKAGE}\ncode = {cell!r}\nexec(code, {{}})\nexec(code, {{}})\n{AFTER}"
    env = clean_env(COLAB_RELEASE_TAG="test", UNSLOTH_COURSE_PKG_DIR=str(target))
    script = tmp_path / "run_setup_cell.py"  # a file, not `-c`: the embedded package exceeds argv limits
    script.write_text(program)
    run = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])

    pins = nbb.pins()
    assert result["calls"] == [[sys.executable, "-m", "pip", "install", "-q", *pins]] * 2  # once a run
    said = [line for line in lines if line.startswith("Colab: ")]
    expected = f"Colab: installed {', '.join(pins)}; unsloth_course 0.1.0 from the embedded copy in {target}"
    assert said == [expected, expected]  # a re-run of the cell says the same
    assert Path(result["file"]) == target / "unsloth_course" / "__init__.py"

    with tarfile.open(fileobj=io.BytesIO(embedded_archive(cell)), mode="r:xz") as archive:
        embedded = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert sorted(embedded) == [
        f"unsloth_course/{p.relative_to(nbb.PACKAGE_DIR).as_posix()}" for p in nbb.package_files()
    ]
    extracted = {
        p.relative_to(target).as_posix(): p.read_bytes()
        for p in target.rglob("*")
        if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts
    }
    assert extracted == embedded


def test_nbmake_kernel_gets_the_conftest_environment_and_uses_the_installed_package(tmp_path):
    notebooks = tmp_path / "notebooks"
    check_env = (
        "\n\n# %%\nimport json, os\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('UNSLOTH_COURSE_QUICK', 'HF_HUB_OFFLINE',"
        " 'HF_DATASETS_OFFLINE', 'MPLBACKEND', 'TOKENIZERS_PARALLELISM')}))\n"
    )
    write_source(notebooks, SOURCE + check_env)
    shutil.copy(nbb.NOTEBOOKS_DIR / "conftest.py", notebooks / "conftest.py")
    nbb.build(notebooks)
    env = clean_env(UNSLOTH_COURSE_QUICK="0")  # preset: the conftest must not override it
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MPLBACKEND", "TOKENIZERS_PARALLELISM"):
        env.pop(name, None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--overwrite", "-p", "no:cacheprovider", "-q", "."],
        check=False,
        cwd=notebooks,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout  # the notebook only: the .py files are not collected
    nb = nbformat.read(notebooks / "colab9_tiny.ipynb", as_version=4)
    outputs = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code"]
    assert (
        f"Local: using the installed unsloth_course from {nbb.PACKAGE_DIR}; nothing installed\n" in outputs[0]
    )
    assert json.loads(outputs[-1]) == {
        "UNSLOTH_COURSE_QUICK": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "TOKENIZERS_PARALLELISM": "false",
    }


def test_embedded_blob_is_the_package_archive():
    assert embedded_archive(nbb.setup_cell_source()) == nbb.package_archive()

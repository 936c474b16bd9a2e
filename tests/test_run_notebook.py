"""tools/run_notebook.py: executes cell by cell, prints each cell's time, keeps the executed notebook."""

import importlib.util
from pathlib import Path

import nbformat

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "run_notebook.py"


def _load():
    spec = importlib.util.spec_from_file_location("run_notebook", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_a_passing_notebook_is_saved_with_outputs(tmp_path, capsys):
    path = _notebook(tmp_path / "ok.ipynb", "x = 6 * 7", "print(x)")
    assert _load().main([str(path), "--out", str(tmp_path / "out"), "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "ok cell   0:" in out and "ok cell   1:" in out and "ok: passed" in out
    executed = nbformat.read(tmp_path / "out" / "ok.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "42\n"


def test_a_failing_cell_stops_with_exit_1_and_keeps_what_ran(tmp_path, capsys):
    path = _notebook(tmp_path / "bad.ipynb", "print('first')", "raise ValueError('boom')", "print('never')")
    assert _load().main([str(path), "--out", str(tmp_path / "out"), "--timeout", "60"]) == 1
    assert "bad: FAILED" in capsys.readouterr().out
    executed = nbformat.read(tmp_path / "out" / "bad.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "first\n" and not executed.cells[2].outputs

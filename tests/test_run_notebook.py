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


def test_set_injects_a_cell_after_the_parameters_cell(tmp_path):
    parameters = nbformat.v4.new_code_cell('DATASET = "hub/id"', metadata={"tags": ["parameters"]})
    nb = nbformat.v4.new_notebook(cells=[parameters,
                                         nbformat.v4.new_code_cell("print(DATASET, N)")])
    nb.cells.insert(1, nbformat.v4.new_code_cell("N = 1"))
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    module = _load()
    assert module.main([str(path), "--out", str(tmp_path / "out"), "--set", "DATASET=.realdata/x.jsonl"]) == 0
    executed = nbformat.read(tmp_path / "out" / "p.ipynb", as_version=4)
    assert executed.cells[1].metadata["tags"] == ["injected-parameters"]
    assert executed.cells[3].outputs[0]["text"] == ".realdata/x.jsonl 1\n"


def test_set_refuses_a_name_the_parameters_cell_does_not_define(tmp_path):
    parameters = nbformat.v4.new_code_cell("DATASET = None", metadata={"tags": ["parameters"]})
    nb = nbformat.v4.new_notebook(cells=[parameters])
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    import pytest

    with pytest.raises(SystemExit, match="DATSET: not set in the parameters cell"):
        _load().main([str(path), "--out", str(tmp_path / "out"), "--set", "DATSET=x"])

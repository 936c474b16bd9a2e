"""tools/local_hub.py on CPU: a realdata-like folder (generated rows in the real files' columns) and the
converted checkpoint, laid out and served in the background; the course's loaders then read those rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from hub.fixtures import COURSE_CLIENTS, REPO_ROOT, client_env, run_clients
from hub.repos import ALPACA_ID, CODE_ID, MODEL_ID, ORCA_ID, code_search_net_row

from tools import local_hub
from unsloth_course.data import generate_dpo_rows, generate_sft_rows, stdlib_functions
from unsloth_course.models import materialize_gguf


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def realdata(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realdata")
    write_jsonl(folder / "alpaca-cleaned.jsonl", generate_sft_rows(40, seed=11))
    write_jsonl(folder / "orca_dpo_pairs.jsonl", generate_dpo_rows(30, seed=11))
    write_jsonl(
        folder / "code_search_net_python.jsonl",
        [code_search_net_row(f, "test") for f in stdlib_functions(40, seed=11)],
    )
    return folder


def test_local_hub_serves_the_folder_rows_to_the_course(realdata, tmp_path):
    root = tmp_path / "repos"
    command = [
        sys.executable,
        "-m",
        "tools.local_hub",
        "--realdata",
        str(realdata),
        "--model-dir",
        str(materialize_gguf()),
        "--port",
        "0",
        "--root",
        str(root),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    endpoint = next(line.removeprefix("HF_ENDPOINT=") for line in lines if line.startswith("HF_ENDPOINT="))
    pid = int(next(line for line in lines if "server pid" in line).split("server pid ")[1].split()[0])
    try:
        assert (root / "datasets" / ALPACA_ID / "alpaca_data_cleaned.json").is_file()
        assert (root / "models" / MODEL_ID / "special_tokens_map.json").is_file()
        calls = [
            json.dumps({"kind": "sft"}),
            json.dumps({"kind": "dpo"}),
            json.dumps({"kind": "code", "n_train": 20, "n_eval": 4, "max_seq_length": 512}),
            json.dumps({"kind": "model"}),
        ]
        results = run_clients(client_env(endpoint, tmp_path / "hf_home"), *calls, script=COURSE_CLIENTS)
    finally:
        os.kill(pid, signal.SIGTERM)
    sft, dpo, code, model = (results[c] for c in calls)
    assert sft["stdout"] == [f"SFT data: 40 rows from {ALPACA_ID} on the Hub ({endpoint})"]
    assert sft["value"]["rows"] == generate_sft_rows(40, seed=11)
    assert dpo["stdout"] == [f"DPO data: 30 rows from {ORCA_ID} on the Hub ({endpoint})"]
    assert sorted(map(json.dumps, dpo["value"]["rows"])) == sorted(
        map(json.dumps, generate_dpo_rows(30, seed=11))
    )
    assert code["stdout"][0].startswith(f"Code data: 20 train + 4 eval functions from {CODE_ID} on the Hub")
    texts = {f["text"] for f in stdlib_functions(40, seed=11)}
    assert {row["text"] for row in code["value"]["train"] + code["value"]["test"]} <= texts
    assert model["stdout"] == [f"Model: {MODEL_ID} from the Hub ({endpoint})"]


def test_local_hub_refuses_missing_files_and_a_root_in_the_repository(realdata, tmp_path, capsys):
    model_dir = str(materialize_gguf())
    assert (
        local_hub.main(["--realdata", str(tmp_path), "--model-dir", model_dir, "--root", str(tmp_path / "r")])
        == 2
    )
    assert "alpaca-cleaned.jsonl: no such file" in capsys.readouterr().err
    assert (
        local_hub.main(
            ["--realdata", str(realdata), "--model-dir", model_dir, "--root", str(REPO_ROOT / "hub-repos")]
        )
        == 2
    )
    assert "is inside the repository" in capsys.readouterr().err
    assert not (REPO_ROOT / "hub-repos").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in local_hub.REALDATA:
        (broken / name).write_text((realdata / name).read_text())
    write_jsonl(broken / "orca_dpo_pairs.jsonl", [{"question": "q", "chosen": "a", "rejected": "b"}])
    assert (
        local_hub.main(["--realdata", str(broken), "--model-dir", model_dir, "--root", str(tmp_path / "r2")])
        == 2
    )
    assert "orca_dpo_pairs.jsonl: line 1 has no column system" in capsys.readouterr().err

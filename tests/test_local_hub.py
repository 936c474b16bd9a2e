"""The real huggingface_hub, transformers and datasets clients against the local Hub (tests/hub), as on Colab.

Two client processes in all: "online" starts from an empty HF_HOME and downloads everything from the
server; "offline" reuses that HF_HOME with HF_HUB_OFFLINE=1 and HF_ENDPOINT on a closed port, so every
file must come from the cache. The served files are checked against the Hub layouts in local-hub.md.
"""

import json
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hub.fixtures import client_env, run_clients
from hub.repos import ALPACA_ID, CODE_COLUMNS, CODE_CONFIG, CODE_ID, MODEL_ID, ORCA_ID

from unsloth_course.data import (
    ALPACA_DATASET,
    CODE_DATASET,
    ORCA_DPO_DATASET,
    generate_dpo_rows,
    generate_sft_rows,
)
from unsloth_course.data import CODE_CONFIG as COURSE_CODE_CONFIG
from unsloth_course.models import DEFAULT_MODEL

TOKENIZER, MODEL = f"tokenizer:{MODEL_ID}", f"model:{MODEL_ID}"
ALPACA, ORCA = f"dataset:{ALPACA_ID}", f"dataset:{ORCA_ID}"
CODE, CODE_STREAM = f"dataset:{CODE_ID}:{CODE_CONFIG}", f"stream:{CODE_ID}:{CODE_CONFIG}"
CALLS = (TOKENIZER, MODEL, ALPACA, ORCA, CODE, CODE_STREAM)
MISSING_MODEL, MISSING_DATASET = "model:no-such-org/no-such-model", "dataset:no-such-org/no-such-dataset"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def online(local_hub, hf_home):
    return run_clients(client_env(local_hub.endpoint, hf_home), *CALLS, MISSING_MODEL, MISSING_DATASET)


@pytest.fixture(scope="module")
def offline(online, hf_home):
    """After `online` filled the cache: no server at the endpoint, HF_HUB_OFFLINE=1."""
    return run_clients(client_env(f"http://127.0.0.1:{_closed_port()}", hf_home, offline=True), *CALLS)


@pytest.fixture(params=["online", "offline"])
def results(request):
    return request.getfixturevalue(request.param)


def value(results: dict, call: str) -> dict:
    assert "error" not in results[call], "\n  <- ".join(results[call]["error"])
    return results[call]["value"]


def code_dir(local_hub):
    return local_hub.root / "datasets" / CODE_ID / CODE_CONFIG


def first_code_row(local_hub) -> dict:
    return pq.read_table(code_dir(local_hub) / "train-00000-of-00003.parquet").slice(0, 1).to_pylist()[0]


def test_serves_the_course_model_and_datasets(local_hub):
    assert MODEL_ID == DEFAULT_MODEL
    assert (ALPACA_ID, ORCA_ID, CODE_ID, CODE_CONFIG) == (
        ALPACA_DATASET, ORCA_DPO_DATASET, CODE_DATASET, COURSE_CODE_CONFIG)
    assert {repo for _, repo in local_hub.server.repos} == {MODEL_ID, ALPACA_ID, ORCA_ID, CODE_ID}


def test_served_files_have_the_hub_layouts_and_the_generated_rows(local_hub):
    datasets = local_hub.root / "datasets"
    alpaca = json.loads((datasets / ALPACA_ID / "alpaca_data_cleaned.json").read_text())
    assert isinstance(alpaca, list) and alpaca == generate_sft_rows(len(alpaca))  # a JSON array
    orca_lines = (datasets / ORCA_ID / "orca_rlhf.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in orca_lines] == generate_dpo_rows(len(orca_lines))  # JSON Lines

    shards = sorted(p.name for p in code_dir(local_hub).iterdir())
    assert shards == ["test-00000-of-00001.parquet", "train-00000-of-00003.parquet",
                      "train-00001-of-00003.parquet", "train-00002-of-00003.parquet",
                      "validation-00000-of-00001.parquet"]
    schema = pq.read_schema(code_dir(local_hub) / shards[1])
    assert schema.names == list(CODE_COLUMNS)
    for field in schema:  # 9 strings and 2 lists of strings
        field_type = field.type.value_type if field.name.endswith("_tokens") else field.type
        assert field_type == pa.string() and pa.types.is_list(field.type) == field.name.endswith("_tokens")
    card = yaml.safe_load((datasets / CODE_ID / "README.md").read_text().split("---\n")[1])
    assert card["configs"] == [{"config_name": "python", "data_files": [
        {"split": split, "path": f"python/{split}-*"} for split in ("train", "validation", "test")]}]

    model = {p.name for p in (local_hub.root / "models" / MODEL_ID).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "special_tokens_map.json"} <= model


def test_tokenizer(results):
    tokenizer = value(results, TOKENIZER)
    assert tokenizer["special"] == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                    "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}
    assert tokenizer["chat"].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer["ids"]


def test_model(results):
    model = value(results, MODEL)
    assert model["class"] == "LlamaForCausalLM" and model["shape"] == [1, 3, 49152]


def test_offline_loads_what_online_downloaded(online, offline):
    for call in (TOKENIZER, MODEL):
        assert value(offline, call) == value(online, call)


def test_alpaca(results, local_hub):
    rows = json.loads((local_hub.root / "datasets" / ALPACA_ID / "alpaca_data_cleaned.json").read_text())
    alpaca = value(results, ALPACA)
    assert alpaca["rows"] == len(rows) and alpaca["first"] == rows[0]
    assert alpaca["features"] == {k: {"dtype": "string", "_type": "Value"} for k in rows[0]}


def test_orca_dpo_pairs(results, local_hub):
    lines = (local_hub.root / "datasets" / ORCA_ID / "orca_rlhf.jsonl").read_text().splitlines()
    orca = value(results, ORCA)
    assert orca["rows"] == len(lines) and orca["first"] == json.loads(lines[0])
    assert list(orca["features"]) == ["system", "question", "chosen", "rejected"]


def test_code_search_net(results, local_hub):
    train_rows = sum(pq.read_metadata(p).num_rows for p in code_dir(local_hub).glob("train-*.parquet"))
    code = value(results, CODE)
    assert code["rows"] == train_rows and code["first"] == first_code_row(local_hub)
    string = {"dtype": "string", "_type": "Value"}
    assert code["features"] == {
        c: {"feature": string, "_type": "List"} if c.endswith("_tokens") else string for c in CODE_COLUMNS}


def test_code_search_net_streaming(results, local_hub):
    train_rows = sum(pq.read_metadata(p).num_rows for p in code_dir(local_hub).glob("train-*.parquet"))
    stream = value(results, CODE_STREAM)
    assert stream["rows"] == train_rows and stream["columns"] == sorted(CODE_COLUMNS)
    assert stream["first"] == first_code_row(local_hub)


def test_missing_dataset_raises_dataset_not_found(online):
    chain = online[MISSING_DATASET]["error"]
    assert chain[0].startswith("datasets.exceptions.DatasetNotFoundError: Dataset 'no-such-org/no-such-")
    assert chain[1].startswith("builtins.FileNotFoundError:")


def test_missing_model_raises_oserror_from_repository_not_found(online):
    chain = online[MISSING_MODEL]["error"]
    assert chain[0].startswith("builtins.OSError: no-such-org/no-such-model is not a local folder")
    assert chain[1].startswith("huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error.")


def test_server_had_a_route_for_every_client_request(online, local_hub):
    assert local_hub.unhandled == []

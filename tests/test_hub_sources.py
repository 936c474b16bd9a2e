"""The course's model and data sources against the local Hub (tests/hub), in fresh client processes:

- mirror: HF_ENDPOINT at the local Hub, an empty cache: the loaders and resolve_model take the Hub branch and
  say so, with the served rows;
- warm cache: the same HF_HOME with HF_HUB_OFFLINE=1 and nothing listening: the served rows again, from the
  cache, not generated ones;
- unreachable: a closed port, no offline switch: generated rows and the embedded model at once, saying why;
- loud failures (a second server with problem repositories): a missing column, a loading script, no data
  files, a gated repository without HF_TOKEN, a missing model or dataset; an outage (503) falls back with a
  warning; and is_network_error on the exceptions the real libraries raise.
"""

import json
import re
import socket
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
from hub.fixtures import COURSE_CLIENTS, client_env, run_clients, start_clients
from hub.repos import (
    ALPACA_ID,
    CODE_CONFIG,
    CODE_ID,
    GATED_TOKEN,
    MODEL_ID,
    ORCA_ID,
    PROBLEMS_ORG,
    build_problem_repos,
    write_alpaca,
)
from hub.server import STATUS_FILE, HubServer, wait_healthy

from unsloth_course.data import generate_sft_rows

OWN_DATA_HINT = 'your own file: --dataset PATH (CLI) or DATASET = "path" (notebook)'


def call(kind: str, **kwargs) -> str:
    return json.dumps({"kind": kind, **kwargs}, sort_keys=True)


SFT, DPO = call("sft", n_rows=50), call("dpo", n_rows=40)
CODE = call("code", n_train=40, n_eval=10, max_seq_length=512)
PROSE, MODEL = call("prose", n=5), call("model")
COURSE_CALLS = (SFT, DPO, CODE, PROSE, MODEL)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def value(results: dict, key: str) -> dict:
    assert "error" not in results[key], "\n  <- ".join(results[key]["error"])
    return results[key]["value"]


def error(results: dict, key: str) -> str:
    """The outermost exception of a call that had to fail, "module.Class: message"."""
    assert "error" in results[key], f"{key} did not fail: {results[key]}"
    return results[key]["error"][0]


def served_alpaca(local_hub) -> list[dict]:
    return json.loads((local_hub.root / "datasets" / ALPACA_ID / "alpaca_data_cleaned.json").read_text())


def served_orca(local_hub) -> list[dict]:
    lines = (local_hub.root / "datasets" / ORCA_ID / "orca_rlhf.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def served_functions(local_hub) -> set[str]:
    folder = local_hub.root / "datasets" / CODE_ID / CODE_CONFIG
    return {
        text
        for path in folder.glob("train-*.parquet")
        for text in pq.read_table(path)["whole_func_string"].to_pylist()
    }


# ---------------------------------------------------------------- fixtures: one client process each


@pytest.fixture(scope="module")
def problem_hub(tmp_path_factory):
    """A second server: the problem repositories, and yahma/alpaca-cleaned in an outage (503 to all)."""
    root = build_problem_repos(tmp_path_factory.mktemp("problem_hub"))
    outage = root / "datasets" / ALPACA_ID
    write_alpaca(outage, generate_sft_rows(20), "always 503")
    (outage / STATUS_FILE).write_text("503\n")
    server = HubServer(root).start()
    try:
        wait_healthy(server.endpoint)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow_runs(problem_hub, tmp_path_factory):
    """Started first, collected last: the calls that wait out the libraries' retries (about 24 s each), in
    parallel with the rest. An outage of the default dataset; the real libraries against a closed port."""
    outage = start_clients(
        client_env(problem_hub.endpoint, tmp_path_factory.mktemp("hf_outage")),
        call("sft", n_rows=20),
        script=COURSE_CLIENTS,
    )
    refused = [
        start_clients(
            client_env(f"http://127.0.0.1:{closed_port()}", tmp_path_factory.mktemp("hf_refused")),
            call("raw", call=what),
            script=COURSE_CLIENTS,
        )
        for what in (f"dataset:{ALPACA_ID}", f"config:{MODEL_ID}")
    ]
    return outage, refused


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def online(local_hub, hf_home, slow_runs):
    results = run_clients(client_env(local_hub.endpoint, hf_home), *COURSE_CALLS, script=COURSE_CLIENTS)
    # what the notebooks do next: load the model and tokenizer (cached whole); and a full copy of the code
    run_clients(
        client_env(local_hub.endpoint, hf_home),
        f"tokenizer:{MODEL_ID}",
        f"model:{MODEL_ID}",
        f"dataset:{CODE_ID}:{CODE_CONFIG}",
    )
    return results


@pytest.fixture(scope="module")
def offline(online, hf_home):
    env = client_env(f"http://127.0.0.1:{closed_port()}", hf_home, offline=True)
    return run_clients(env, *COURSE_CALLS, script=COURSE_CLIENTS)


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = client_env(endpoint, tmp_path_factory.mktemp("hf_unreachable"))
    return endpoint, run_clients(
        env, SFT, MODEL, call("dpo", source="someone/own-pairs"), script=COURSE_CLIENTS
    )


PROBLEM_CALLS = {
    "missing column": call("sft", source=f"{PROBLEMS_ORG}/alpaca-no-output"),
    "script": call("sft", source=f"{PROBLEMS_ORG}/script-only"),
    "no data": call("sft", source=f"{PROBLEMS_ORG}/no-data"),
    "gated": call("sft", source=f"{PROBLEMS_ORG}/gated-alpaca"),
    "missing dataset": call("dpo", source="no-such-org/no-such-dataset"),
    "gated model": call("model", name=f"{PROBLEMS_ORG}/gated-model"),
    "missing model": call("model", name="no-such-org/no-such-model"),
    "math": call("math", n_train=20, n_eval=5, source=f"{PROBLEMS_ORG}/math"),
}
RAW_CALLS = {  # the libraries' own exceptions, for is_network_error
    "raw missing dataset": call("raw", call="dataset:no-such-org/no-such-dataset"),
    "raw gated dataset": call("raw", call=f"dataset:{PROBLEMS_ORG}/gated-alpaca"),
    "raw script": call("raw", call=f"dataset:{PROBLEMS_ORG}/script-only"),
    "raw no data": call("raw", call=f"dataset:{PROBLEMS_ORG}/no-data"),
    "raw missing model": call("raw", call="model:no-such-org/no-such-model"),
    "raw gated model": call("raw", call=f"model:{PROBLEMS_ORG}/gated-model"),
}


@pytest.fixture(scope="module")
def problems(problem_hub, tmp_path_factory, slow_runs):
    env = client_env(problem_hub.endpoint, tmp_path_factory.mktemp("hf_problems"))
    results = run_clients(env, *PROBLEM_CALLS.values(), *RAW_CALLS.values(), script=COURSE_CLIENTS)
    return {name: results[spec] for name, spec in {**PROBLEM_CALLS, **RAW_CALLS}.items()}


# ---------------------------------------------------------------- the mirror: the Hub branch, served rows


def test_mirror_loads_everything_from_the_hub_and_says_so(online, local_hub):
    endpoint = local_hub.endpoint
    assert online[SFT]["stdout"] == [f"SFT data: 50 rows from {ALPACA_ID} on the Hub ({endpoint})"]
    assert online[DPO]["stdout"] == [f"DPO data: 40 rows from {ORCA_ID} on the Hub ({endpoint})"]
    assert online[CODE]["stdout"] == [
        f"Code data: 40 train + 10 eval functions from {CODE_ID} on the Hub "
        f"({endpoint}; python config, streamed)"
    ]
    assert online[PROSE]["stdout"] == [
        f"General text: 5 prose texts (`output` without code, >= 400 characters) from {ALPACA_ID} on the Hub "
        f"({endpoint}; only 0 of at least 400 characters: the longest shorter ones fill in)"
    ]
    assert online[MODEL]["stdout"] == [f"Model: {MODEL_ID} from the Hub ({endpoint})"]
    for key in COURSE_CALLS:
        assert online[key]["stderr"] == []  # no warning
    assert value(online, MODEL)["path"] == MODEL_ID
    assert (
        value(online, MODEL)["source"]["kind"] == "hub"
        and value(online, MODEL)["source"]["endpoint"] == endpoint
    )
    assert value(online, SFT)["source"] == {
        "kind": "hub",
        "id": ALPACA_ID,
        "path": None,
        "line": online[SFT]["stdout"][0],
    }


def test_mirror_rows_are_the_served_rows(online, local_hub):
    alpaca, orca, functions = served_alpaca(local_hub), served_orca(local_hub), served_functions(local_hub)
    assert all(row in alpaca for row in value(online, SFT)["rows"])
    assert all(row in orca for row in value(online, DPO)["rows"])
    code = value(online, CODE)
    assert {row["text"] for row in code["train"] + code["test"]} <= functions
    outputs = {row["output"] for row in alpaca}
    assert set(value(online, PROSE)["texts"]) <= outputs


# ---------------------------------------------------------------- the warm cache, HF_HUB_OFFLINE=1


def test_warm_cache_offline_gives_the_served_rows_not_generated_ones(online, offline, local_hub):
    """The defect: HF_HUB_OFFLINE=1 meant generated rows and the embedded model even with a warm cache."""
    assert offline[SFT]["stdout"] == [
        f"SFT data: 50 rows from {ALPACA_ID} in the Hugging Face cache (HF_HUB_OFFLINE=1)"
    ]
    assert offline[DPO]["stdout"] == [
        f"DPO data: 40 rows from {ORCA_ID} in the Hugging Face cache (HF_HUB_OFFLINE=1)"
    ]
    # 40 train functions, fewer when one nearly repeats a held-out one (the offline stream is shuffled anew)
    [code_line] = offline[CODE]["stdout"]
    assert re.fullmatch(rf"Code data: (40|39|38) train \+ 10 eval functions from {CODE_ID} in the Hugging Face "
                        r"cache \(HF_HUB_OFFLINE=1; python config, streamed(; \d training functions? that nearly "
                        r"repeats? a held-out one dropped)?\)", code_line), code_line
    assert offline[MODEL]["stdout"] == [f"Model: {MODEL_ID} from the Hugging Face cache (HF_HUB_OFFLINE=1)"]
    for key in (SFT, DPO, PROSE):
        assert value(offline, key)["source"]["kind"] == "cache"
        assert {k: v for k, v in value(offline, key).items() if k != "source"} == {
            k: v for k, v in value(online, key).items() if k != "source"
        }  # the same rows, same sample
    code = value(offline, CODE)  # streamed from the cached files: served functions (another shuffle order)
    assert code["source"]["kind"] == "cache"
    assert {row["text"] for row in code["train"] + code["test"]} <= served_functions(local_hub)
    assert value(offline, MODEL)["path"] == MODEL_ID


# ---------------------------------------------------------------- unreachable endpoint


def test_unreachable_endpoint_gives_generated_rows_and_the_embedded_model_at_once(unreachable):
    endpoint, results = unreachable
    assert results[SFT]["stdout"] == [
        f"SFT data: 50 rows generated by unsloth_course ({endpoint} did not "
        f"answer within 3 s, so {ALPACA_ID} was not loaded)"
    ]
    line = results[MODEL]["stdout"][0]
    assert line.startswith(
        f"Model: {MODEL_ID} converted from the embedded GGUF ({endpoint} did not answer within 3 s), in "
    )
    assert value(results, MODEL)["source"]["kind"] == "embedded gguf"
    assert results[SFT]["seconds"] < 5 and results[MODEL]["seconds"] < 15  # the probe, not ~24 s of retries
    own = call("dpo", source="someone/own-pairs")  # a dataset the learner named is never replaced
    assert error(results, own) == (
        f"unsloth_course.data.sources.DataSourceError: cannot load someone/own-pairs: "
        f"{endpoint} did not answer within 3 s; {OWN_DATA_HINT}"
    )


# ---------------------------------------------------------------- loud failures of a Hub that answered


def test_a_served_dataset_without_a_needed_column_stops(problems):
    assert problems["missing column"]["error"][0] == (
        f"unsloth_course.data.sources.DataSourceError: {PROBLEMS_ORG}/alpaca-no-output: column 'output' "
        "missing; its columns: instruction, input. The SFT data needs instruction, input, output (the "
        "schema of "
        f"{ALPACA_ID}). Use a dataset with these columns, or {OWN_DATA_HINT}"
    )


def test_a_dataset_that_needs_a_loading_script_or_has_no_data_files_stops(problems):
    assert problems["script"]["error"][0].startswith(
        f"unsloth_course.data.sources.DataSourceError: {PROBLEMS_ORG}/script-only needs a loading script "
        "(script-only.py), which datasets 4 no longer runs"
    )
    assert problems["no data"]["error"][0].startswith(
        f"unsloth_course.data.sources.DataSourceError: {PROBLEMS_ORG}/no-data on the Hub has no data files "
        "that "
        "datasets can read (.json, .jsonl, .parquet, .csv): EmptyDatasetError"
    )


def test_gated_repositories_without_hf_token_say_what_to_do(problems, problem_hub):
    assert problems["gated"]["error"][0] == (
        f"unsloth_course.data.sources.DataSourceError: {PROBLEMS_ORG}/gated-alpaca is a gated dataset: "
        "accept "
        f"its conditions on {problem_hub.endpoint}/datasets/{PROBLEMS_ORG}/gated-alpaca, then set HF_TOKEN "
        "to a "
        f"token of that account (Colab: the key icon, secret HF_TOKEN); or {OWN_DATA_HINT}"
    )
    assert problems["gated model"]["error"][0].startswith(
        f"unsloth_course.models.ModelSourceError: model {PROBLEMS_ORG}/gated-model is gated: its conditions "
        "must "
        f"be accepted on {problem_hub.endpoint}/{PROBLEMS_ORG}/gated-model; set HF_TOKEN"
    )


def test_missing_repositories_name_the_id_and_what_to_do(problems, problem_hub):
    assert problems["missing dataset"]["error"][0] == (
        "unsloth_course.data.sources.DataSourceError: dataset no-such-org/no-such-dataset was not found on "
        "the "
        f"Hub ({problem_hub.endpoint}): check the id; a private dataset needs HF_TOKEN; or {OWN_DATA_HINT}"
    )
    assert problems["missing model"]["error"][0] == (
        "unsloth_course.models.ModelSourceError: model no-such-org/no-such-model was not found on the Hub "
        f"({problem_hub.endpoint}): check the id; a private repository needs HF_TOKEN; a local checkpoint: "
        "--model FOLDER"
    )
    for name in (
        "missing column",
        "script",
        "no data",
        "gated",
        "missing dataset",
        "gated model",
        "missing model",
    ):
        assert (
            problems[name]["stdout"] == [] and problems[name]["stderr"] == []
        )  # no fallback, no source line


def test_math_problems_from_a_hub_dataset(problems, problem_hub):
    math = problems["math"]
    assert math["stdout"] == [
        f"GRPO data: 20 train + 5 eval math problems from {PROBLEMS_ORG}/math on the Hub "
        f"({problem_hub.endpoint})"
    ]
    row = math["value"]["train"][0]
    a = int(row["question"].split()[2])
    assert row["answer"] == str(2 * a + 3)


def test_is_network_error_on_what_the_libraries_raise(problems, slow_runs):
    for name in RAW_CALLS:  # the Hub answered: 401 RepoNotFound / GatedRepo, a script, no data files
        assert problems[name]["network"] is False, problems[name]["error"]
    assert problems["raw gated dataset"]["error"][0].startswith(
        "datasets.exceptions.DatasetNotFoundError: Dataset 'course-tests/gated-alpaca' is a gated dataset"
    )
    refused = [result for run in slow_runs[1] for result in run.results().values()]
    for (
        result
    ) in refused:  # connection refused: datasets' ConnectionError, huggingface_hub's LocalEntryNotFound
        assert result["network"] is True, result["error"]
        assert any(
            "Connection refused" in link or "LocalEntryNotFoundError" in link for link in result["error"]
        )


def test_an_outage_of_the_default_dataset_falls_back_with_a_warning(slow_runs, problem_hub):
    result = slow_runs[0].results()[call("sft", n_rows=20)]
    why = f"loading {ALPACA_ID} from the Hub ({problem_hub.endpoint}) failed: HTTP 503 Service Unavailable"
    assert result["stdout"] == [f"SFT data: 20 rows generated by unsloth_course ({why})"]
    assert result["stderr"] == [
        f"WARNING: {why}. Check the connection or HF_ENDPOINT; the course continues with generated rows"
    ]
    assert result["value"]["source"]["kind"] == "generated"


# ---------------------------------------------------------------- the server answers gated files like the Hub


def test_server_gates_files_like_the_hub(problem_hub):
    url = f"{problem_hub.endpoint}/datasets/{PROBLEMS_ORG}/gated-alpaca/resolve/main/alpaca_data_cleaned.json"

    def status(token: str | None) -> tuple[int, str | None]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, None
        except urllib.error.HTTPError as answer:
            return answer.code, answer.headers.get("X-Error-Code")

    assert status(None) == (401, "GatedRepo")
    assert status("hf_someone_else") == (403, "GatedRepo")
    assert status(GATED_TOKEN) == (200, None)
    info = json.loads(
        urllib.request.urlopen(
            f"{problem_hub.endpoint}/api/datasets/{PROBLEMS_ORG}/gated-alpaca", timeout=5
        ).read()
    )
    assert info["gated"] == "manual" and {"rfilename": ".local-hub-gated"} not in info["siblings"]

"""unsloth_course.data.sources and the loaders' `source` argument: your own files (json, jsonl, parquet, csv),
errors that name the file, row and column, and provenance that survives the course's transformations.
(The Hub branches run against the local Hub in test_hub_sources.py.)"""

import importlib
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before unsloth_course is imported: no test may reach the Hub

import pandas as pd
import pytest
from datasets import Dataset

import unsloth_course.data.sources as sources
from unsloth_course import data
from unsloth_course.data import DataSourceError, source_of
from unsloth_course.recipes import get_recipe

ALPACA_ROWS = [
    {
        "instruction": f"Name the number after {i}.",
        "input": "" if i % 2 else f"{i}",
        "output": f"It is {i + 1}.",
    }
    for i in range(30)
]
DPO_ROWS = [
    {"system": "", "question": f"What is {i} + 1?", "chosen": f"{i + 1}", "rejected": "I don't know."}
    for i in range(12)
]


def write(path, rows) -> str:
    """`rows` as a .json array, .jsonl, .parquet or .csv file (chosen by the suffix); returns the path."""
    suffix = path.suffix
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------- local files


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet", ".csv"])
def test_load_alpaca_reads_each_file_type(tmp_path, capsys, suffix):
    path = write(tmp_path / f"mine{suffix}", ALPACA_ROWS)
    dataset = data.load_alpaca(path)
    assert lines(capsys) == [f"SFT data: 30 rows from local file {path} (schema of yahma/alpaca-cleaned)"]
    assert [dict(row) for row in dataset] == ALPACA_ROWS  # every row, in order; CSV keeps "" as ""
    assert source_of(dataset) == {
        "kind": "local file",
        "id": None,
        "path": path,
        "line": f"SFT data: 30 rows from local file {path} (schema of yahma/alpaca-cleaned)",
    }


def test_load_alpaca_samples_a_local_file_and_says_when_it_is_short(tmp_path, capsys):
    path = write(tmp_path / "mine.jsonl", ALPACA_ROWS)
    sample = data.load_alpaca(path, n_rows=10, seed=1)
    assert len(sample) == 10 and all(dict(row) in ALPACA_ROWS for row in sample)
    assert sample["instruction"] != [row["instruction"] for row in ALPACA_ROWS[:10]]  # shuffled, not the head
    assert data.load_alpaca(path, n_rows=10, seed=1)["output"] == sample["output"]  # the seed decides
    capsys.readouterr()
    assert len(data.load_alpaca(path, n_rows=100)) == 30
    assert lines(capsys) == [
        f"SFT data: 30 rows from local file {path} (schema of yahma/alpaca-cleaned; all of them: 100 asked)"
    ]


@pytest.mark.parametrize(
    ("suffix", "where"),
    [
        (".jsonl", "row 7 (line 8 of the file)"),
        (".csv", "row 7 (line 9 of the file, after the header)"),
        (".json", "row 7 (counting from 0)"),
        (".parquet", "row 7 (counting from 0)"),
    ],
)
def test_a_bad_value_names_the_file_the_row_and_the_column(tmp_path, suffix, where):
    rows = [dict(row) for row in ALPACA_ROWS]
    rows[7]["output"] = "   "
    path = write(tmp_path / f"mine{suffix}", rows)
    with pytest.raises(DataSourceError) as error:
        data.load_alpaca(path)
    assert str(error.value) == f"{path}: {where} of the SFT dataset: column 'output' is empty"


def test_a_missing_column_names_the_file_and_its_columns(tmp_path):
    path = write(tmp_path / "mine.jsonl", [{"instruction": "a", "input": "", "answer": "b"}])
    with pytest.raises(DataSourceError) as error:
        data.load_alpaca(path)
    assert str(error.value) == (
        f"{path}: column 'output' missing; its columns: instruction, input, answer. The SFT data needs "
        "instruction, input, output (the schema of yahma/alpaca-cleaned). Use a dataset with these columns, "
        "or "
        'your own file: --dataset PATH (CLI) or DATASET = "path" (notebook)'
    )


@pytest.mark.parametrize(("suffix", "where"),
                         [(".jsonl", "row 3 (line 4 of the file)"), (".json", "row 3 (counting from 0)")])
def test_a_value_of_another_type_names_the_row(tmp_path, suffix, where):
    rows = [dict(row) for row in DPO_ROWS]
    rows[3]["chosen"] = 4  # a number among strings: no silent conversion of the column
    path = write(tmp_path / f"pairs{suffix}", rows)
    with pytest.raises(DataSourceError) as error:
        data.load_orca_dpo(path)
    assert str(error.value) == (
        f"{path}: {where}: column 'chosen' is int, but row 0 has str: give every row the same type"
    )
    numbers = write(tmp_path / f"numbers{suffix}", [dict(row, chosen=i) for i, row in enumerate(DPO_ROWS)])
    with pytest.raises(
        DataSourceError, match=r"row 0 .*of the DPO dataset: column 'chosen' should be str, got int"
    ):
        data.load_orca_dpo(numbers)


def test_a_key_missing_from_some_rows_is_reported_for_its_row(tmp_path):
    rows = [{"instruction": "a", "output": "b"}] + ALPACA_ROWS[:3]  # the first row has no "input"
    with pytest.raises(DataSourceError) as error:  # not "column 'input' missing": the other rows have it
        data.load_alpaca(write(tmp_path / "mine.json", rows))
    assert str(error.value).endswith("row 0 (counting from 0) of the SFT dataset: column 'input' is None")


def test_a_broken_json_lines_file_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ALPACA_ROWS[0]) + "\n" + '{"instruction": "x", "input": ""\n')
    with pytest.raises(DataSourceError) as error:
        data.load_alpaca(str(path))
    assert str(error.value).startswith(
        f"{path}: cannot be read as JSON Lines: line 2: Expecting ',' delimiter"
    )


def test_nonexistent_paths_and_other_file_types_fail_at_once(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    formats = ".json, .jsonl, .parquet, .csv"
    notes = str(tmp_path / "notes.txt")
    cases = {
        str(tmp_path / "missing.jsonl"): f"{tmp_path / 'missing.jsonl'}: no such file",
        "./missing.parquet": "./missing.parquet: no such file",
        notes: f"{notes}: unsupported file type .txt; the course reads {formats}",
        "data.xlsx": f"data.xlsx: unsupported file type .xlsx; the course reads {formats}",
        str(tmp_path): f"{tmp_path} is a folder; give one data file ({formats})",
        "not a/valid id!": f"'not a/valid id!' is neither a data file ({formats}) nor a Hub id",
    }
    for source, message in cases.items():
        with pytest.raises(DataSourceError) as error:
            data.check_source(source)
        assert str(error.value).startswith(message), source
        with pytest.raises(DataSourceError):
            data.load_alpaca(source)


def test_parse_source_tells_hub_ids_from_paths(tmp_path):
    assert data.parse_source("yahma/alpaca-cleaned") == sources.Where("hub", repo_id="yahma/alpaca-cleaned")
    assert data.parse_source("gsm8k") == sources.Where("hub", repo_id="gsm8k")
    path = write(tmp_path / "x.csv", ALPACA_ROWS)
    assert data.parse_source(path).kind == "local file"


def test_loaders_reject_the_old_positional_call():
    with pytest.raises(
        TypeError, match=r"load_alpaca\(source, ...\): source must be a Hub id or a file path"
    ):
        data.load_alpaca(1000, 3407)


# ---------------------------------------------------------------- provenance


def test_source_survives_the_course_transformations(tmp_path, capsys):
    sft = data.load_alpaca(write(tmp_path / "a.jsonl", ALPACA_ROWS))
    expected = source_of(sft)
    derived = [
        sft.select(range(5)),
        sft.shuffle(seed=1),
        sft.filter(lambda row: True),
        data.to_prompt_completion(sft),
        data.to_chat_messages(sft),
        data.split_train_eval(sft, n_eval=5, seed=1)["test"],
    ]
    for dataset in derived:
        assert source_of(dataset) == expected
    pairs = data.load_orca_dpo(n_rows=20)
    conversations = data.to_dpo_conversations(pairs)
    assert source_of(data.split_train_eval(conversations, 4)["train"]) == source_of(pairs)
    assert source_of(pairs)["kind"] == "generated" and source_of(pairs)["id"] == "Intel/orca_dpo_pairs"
    with pytest.raises(ValueError, match="carries no source"):
        source_of(Dataset.from_list(ALPACA_ROWS))


# ---------------------------------------------------------------- code, math and prose from files

CODE_ROWS = [
    {
        "func_name": f"f{i}",
        "whole_func_string": f'def f{i}(x):\n    """Add {i}."""\n    return x + {i}',
        "repository_name": "me/mine",
    }
    for i in range(20)
]


def test_load_python_code_from_a_short_file_keeps_every_eval_row(tmp_path, capsys):
    long_function = "def long(x):\n" + "    x += 1\n" * 120  # 1,333 characters > 4 x 256
    path = write(
        tmp_path / "code.parquet",
        CODE_ROWS + [{"func_name": "long", "whole_func_string": long_function, "repository_name": "me/mine"}],
    )
    splits = data.load_python_code(path, n_train=40, n_eval=6, seed=1, max_seq_length=256)
    assert (len(splits["train"]), len(splits["test"])) == (14, 6)
    assert lines(capsys) == [
        f"Code data: 14 train + 6 eval functions from local file {path} (schema of claudios/code_search_net; "
        "1 longer than 1,024 characters skipped; only 20 usable functions, fewer than 40 + 6: all 6 held "
        "out, "
        "14 to train)"
    ]
    assert not set(splits["train"]["text"]) & set(splits["test"]["text"])
    assert source_of(splits["train"])["kind"] == "local file"
    with pytest.raises(DataSourceError, match="only 20 usable functions .* needs more than n_eval=20"):
        data.load_python_code(path, n_train=5, n_eval=20, max_seq_length=256)


def test_load_python_code_allows_long_real_functions():
    assert data.code_char_limit(1024) == 4096  # the full profile: CodeSearchNet averages ~1,100 characters


def test_load_math_problems_from_a_file(tmp_path, capsys):
    rows = [
        {"question": f"What is {i} times 3?", "answer": str(3 * i) if i % 2 else 3 * i} for i in range(1, 31)
    ]
    path = write(tmp_path / "math.jsonl", [dict(row, answer=str(row["answer"])) for row in rows])
    splits = data.load_math_problems(n_train=20, n_eval=5, seed=1, source=path)
    assert lines(capsys) == [
        f"GRPO data: 20 train + 5 eval math problems from local file {path} (columns question, answer)"
    ]
    row = splits["train"][0]
    assert row["answer"] == str(int(row["question"].split()[2]) * 3)
    assert (
        row["prompt"][0]["content"] == data.SYSTEM_PROMPT and row["prompt"][1]["content"] == row["question"]
    )
    bad = write(
        tmp_path / "bad.csv", [{"question": "q1", "answer": "4"}, {"question": "q2", "answer": "4.5"}]
    )
    with pytest.raises(DataSourceError) as error:
        data.load_math_problems(source=bad)
    assert str(error.value).startswith(
        f"{bad}: row 1: column 'answer' should be an integer or an integer "
        'string like "42" or "-7", got \'4.5\''
    )


def test_load_general_prose_keeps_long_answers_without_code(tmp_path, capsys):
    prose = "The river runs slowly through the old town, past the market and the mill. " * 6
    rows = [{"instruction": "Describe a town.", "input": "", "output": prose + str(i)} for i in range(5)] + [
        {"instruction": "Write code.", "input": "", "output": "```python\nprint(1)\n```" + prose},
        {"instruction": "Make a page.", "input": "", "output": "<div>" + prose + "</div>"},
        {"instruction": "Say hi.", "input": "", "output": "Hi there, how are you today?"},
    ]
    path = write(tmp_path / "prose.json", rows)
    texts = data.load_general_prose(path, n=3, seed=1)
    assert isinstance(texts, list) and len(texts) == 3
    assert all(text.startswith("The river") and len(text) >= data.MIN_PROSE_CHARS for text in texts)
    assert lines(capsys) == [
        f"General text: 3 prose texts (`output` without code, >= 400 characters) from local "
        f"file {path} (schema of yahma/alpaca-cleaned)"
    ]
    assert source_of(texts)["path"] == path
    assert len(data.load_general_prose(path, n=8)) == 6  # 5 long, then the longest short one; 8 asked
    assert "only 5 of at least 400 characters: the longest shorter ones fill in; 8 asked" in lines(capsys)[0]


def test_load_general_prose_offline_uses_generated_answers(capsys):
    texts = data.load_general_prose(n=4)
    assert len(texts) == 4 and not any("```" in text for text in texts)
    assert lines(capsys) == [
        "General text: 4 prose texts generated by unsloth_course (HF_HUB_OFFLINE=1 and "
        "yahma/alpaca-cleaned is not in the Hugging Face cache; the prose answers of its "
        "generated SFT rows, shorter than real ones)"
    ]


@pytest.mark.parametrize(
    ("row", "prose"),
    [
        ({"output": "Paris is the capital of France and its largest city."}, True),
        ({"output": "Use `len(x)` to count."}, False),
        ({"output": "def add(a, b):\n    return a + b"}, False),
        ({"output": "import numpy as np\nnp.zeros(3)"}, False),
        ({"output": "Wrap it in <b>bold</b>."}, False),
        ({"output": "const x = {a: 1};"}, False),
        (
            {"instruction": "Fix this SQL.", "input": "SELECT * FROM t", "output": "It selects every row."},
            False,
        ),
    ],
)
def test_is_prose(row, prose):
    assert data.is_prose(row) is prose


# ---------------------------------------------------------------- recipes and the command line


def test_recipes_carry_their_data_sources():
    recipe = get_recipe("lora", "quick")
    assert recipe.dataset is None and recipe.to_dict()["dataset"] is None
    assert recipe.replace(dataset="mine.jsonl").to_dict()["dataset"] == "mine.jsonl"
    cpt = get_recipe("cpt", "quick", general_dataset="prose.parquet")
    assert cpt.to_dict()["general_dataset"] == "prose.parquet"
    with pytest.raises(ValueError, match="dataset=''"):
        get_recipe("dpo", "quick", dataset="")
    with pytest.raises(ValueError, match="general_dataset=3"):
        get_recipe("cpt", "quick", general_dataset=3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--dataset", "/no/such/file.jsonl"],
            "unsloth-course run: error: /no/such/file.jsonl: no such file",
        ),
        (["--dataset", "rows.txt"], "unsloth-course run: error: rows.txt: unsupported file type .txt"),
        (["--set", "dataset=./nope.csv"], "unsloth-course run: error: ./nope.csv: no such file"),
    ],
)
def test_cli_rejects_a_bad_dataset_before_loading_a_model(argv, message, capsys, monkeypatch):
    cli_main = importlib.import_module("unsloth_course.cli.main")  # the package exports the function `main`
    monkeypatch.setattr("unsloth_course.cli.run.run", lambda *a, **k: pytest.fail("ran with a bad dataset"))
    assert cli_main.main(["run", "lora", "--quick", *argv]) == 2
    assert capsys.readouterr().err.startswith(message)

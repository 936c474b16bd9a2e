"""unsloth_course.data, offline: generated rows must be correct and loaders must say where rows came from."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before unsloth_course is imported: no test may reach the Hub

import ast
import copy
import re

import pytest
from datasets import Dataset

import unsloth_course.data.cpt as cpt_module
import unsloth_course.data.sources as sources_module
import unsloth_course.hub
from unsloth_course.data import (
    ALPACA_DATASET,
    CODE_DATASET,
    COUNTRY_CAPITALS,
    ORCA_DPO_DATASET,
    SYSTEM_PROMPT,
    TEMPLATES,
    add_eos,
    alpaca_prompt,
    format_alpaca,
    generate_dpo_rows,
    generate_math_problems,
    generate_sft_rows,
    load_alpaca,
    load_math_problems,
    load_orca_dpo,
    load_python_code,
    render_chat,
    render_chat_text,
    render_example,
    split_train_eval,
    stdlib_functions,
    to_alpaca_text,
    to_chat_messages,
    to_dpo_conversations,
    to_format_warmup,
    token_lengths,
    validate_rows,
)

SFT_ROWS = generate_sft_rows()
EQUATION = re.compile(r"(-?\d+) ([+\-×÷]) (-?\d+) = (-?\d+)")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}


@pytest.fixture(autouse=True)
def offline_hub():
    unsloth_course.hub.hub_available.cache_clear()
    yield
    unsloth_course.hub.hub_available.cache_clear()


def one_line(capsys) -> str:
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------- generated SFT rows


def test_sft_rows_are_deterministic_per_seed():
    assert generate_sft_rows(60, seed=1) == generate_sft_rows(60, seed=1)
    assert generate_sft_rows(60, seed=1) != generate_sft_rows(60, seed=2)


def test_sft_rows_have_size_keys_and_an_even_mix():
    assert len(SFT_ROWS) == 600
    assert all(set(row) == {"instruction", "input", "output"} for row in SFT_ROWS)
    assert sum("```python" in row["output"] for row in SFT_ROWS) == 100
    assert sum(row["output"].startswith("In short:") for row in SFT_ROWS) == 100
    with_input = sum(bool(row["input"]) for row in SFT_ROWS)
    assert 100 < with_input < 500
    assert len({row["instruction"] + row["input"] for row in SFT_ROWS}) > 450
    validate_rows(
        Dataset.from_list(SFT_ROWS), {"instruction": str, "input": str, "output": str}, "SFT", ("input",)
    )


def test_sft_arithmetic_answers_are_correct():
    checked = 0
    for row in SFT_ROWS:
        if "```python" in row["output"] or "(The rule" in row["output"]:
            continue
        for a, op, b, result in EQUATION.findall(row["output"]):
            assert OPERATIONS[op](int(a), int(b)) == int(result), row
            assert a in row["instruction"] + row["input"] and b in row["instruction"] + row["input"], row
            checked += 1
    assert checked >= 80


UNITS = "kilometers|miles|kilograms|pounds|degrees Celsius|degrees Fahrenheit"
TRUE_CONVERSIONS = {
    ("kilometers", "miles"): lambda x: x / 1.609344,
    ("miles", "kilometers"): lambda x: x * 1.609344,
    ("kilograms", "pounds"): lambda x: x * 2.2046226218,
    ("pounds", "kilograms"): lambda x: x * 0.45359237,
    ("degrees Celsius", "degrees Fahrenheit"): lambda c: c * 1.8 + 32,
    ("degrees Fahrenheit", "degrees Celsius"): lambda f: (f - 32) / 1.8,
}


def test_sft_unit_conversions_are_correct_and_rounded():
    pattern = re.compile(rf"^(-?\d+) ({UNITS}) is about (-?\d+)\.(\d+) ({UNITS})\.")
    checked = 0
    for row in SFT_ROWS:
        match = pattern.match(row["output"])
        if not match:
            continue
        value, source, whole, decimals, target = match.groups()
        stated = float(f"{whole}.{decimals}")
        exact = TRUE_CONVERSIONS[(source, target)](int(value))
        assert abs(stated - exact) <= 0.5 * 10 ** -len(decimals) + 1e-6, row
        assert f"{value} {source}" in row["instruction"] + row["input"] and target in row["instruction"], row
        checked += 1
    assert checked >= 80


def test_sft_capitals_are_correct():
    known = {
        "France": "Paris",
        "Japan": "Tokyo",
        "Canada": "Ottawa",
        "Australia": "Canberra",
        "Brazil": "Brasília",
        "Nigeria": "Abuja",
        "Turkey": "Ankara",
        "Switzerland": "Bern",
    }
    assert all(COUNTRY_CAPITALS[country] == city for country, city in known.items())
    assert len(COUNTRY_CAPITALS) >= 40 and len(set(COUNTRY_CAPITALS.values())) == len(COUNTRY_CAPITALS)
    checked = 0
    for row in SFT_ROWS:
        if not row["output"].startswith("The capital of"):
            continue
        asked = [c for c in COUNTRY_CAPITALS if c in row["instruction"] or c == row["input"]]
        assert len(asked) == 1, row
        assert row["output"].startswith(f"The capital of {asked[0]} is {COUNTRY_CAPITALS[asked[0]]},"), row
        checked += 1
    assert checked >= 80


def test_sft_string_answers_are_correct():
    checked = 0
    for row in SFT_ROWS:
        out = row["output"]
        if match := re.fullmatch(r'The word "(\w+)" reversed is "(\w+)"\.', out):
            assert match[2] == match[1][::-1] and match[1] in row["instruction"] + row["input"]
        elif match := re.fullmatch(r'The word "(\w+)" has (\d+) vowels?: .*\.', out):
            assert int(match[2]) == sum(c in "aeiou" for c in match[1])
        elif match := re.fullmatch(r'In uppercase, "([a-z ]+)" becomes "([A-Z ]+)"\.', out):
            assert match[2] == match[1].upper() and match[1] == row["input"]
        elif match := re.fullmatch(r'Sorted alphabetically, the letters of "(\w+)" are "(\w+)"\.', out):
            assert match[2] == "".join(sorted(match[1]))
        else:
            continue
        checked += 1
    assert checked >= 80


def test_sft_python_answers_run_and_their_examples_hold():
    checked = 0
    for row in SFT_ROWS:
        code = re.search(r"```python\n(.*?)\n```", row["output"], re.DOTALL)
        if not code:
            continue
        namespace: dict = {}
        exec(code[1], namespace)  # noqa: S102 -- our own templates, not model output
        call, expected = re.search(r"For example, `(.+)` returns `(.+)`\.$", row["output"]).groups()
        assert repr(eval(call, namespace)) == expected, row
        function = ast.parse(code[1]).body[0]
        assert isinstance(function, ast.FunctionDef) and ast.get_docstring(function)
        checked += 1
    assert checked == 100


# ---------------------------------------------------------------- generated DPO rows


def test_dpo_rows_are_deterministic_and_well_formed():
    rows = generate_dpo_rows()
    assert rows == generate_dpo_rows() and rows != generate_dpo_rows(seed=1)
    assert len(rows) == 400 and len(generate_dpo_rows(7)) == 7
    assert all(list(row) == ["system", "question", "chosen", "rejected"] for row in rows)
    assert all(row["chosen"] != row["rejected"] and row["question"].strip() for row in rows)
    systems = {row["system"] for row in rows}
    assert "" in systems and len(systems) >= 3


def test_dpo_wrong_answers_are_really_wrong():
    checked = 0
    for row in generate_dpo_rows():  # off-topic rejections answer another question; skip those
        match = re.search(r"The capital of (.+?) is (.+?),", row["rejected"])
        if match and match[1] in row["question"]:
            assert COUNTRY_CAPITALS[match[1]] != match[2]
            checked += 1
        for a, op, b, result in EQUATION.findall(row["rejected"]):
            if f"{a} {op} {b} = " in row["chosen"]:
                assert OPERATIONS[op](int(a), int(b)) != int(result)
                checked += 1
    assert checked >= 40


# ---------------------------------------------------------------- loaders say where their rows come from


def test_load_alpaca_offline_prints_its_source(capsys):
    dataset = load_alpaca()
    assert one_line(capsys) == (
        "SFT data: 600 rows generated by unsloth_course "
        f"(HF_HUB_OFFLINE=1 and {ALPACA_DATASET} is not in the Hugging Face cache)"
    )
    assert dataset.column_names == ["instruction", "input", "output"] and len(dataset) == 600
    assert len(load_alpaca(n_rows=50)) == 50
    assert one_line(capsys).startswith("SFT data: 50 rows generated by unsloth_course")


def test_load_alpaca_falls_back_with_a_warning_only_on_a_network_error(monkeypatch, capsys):
    monkeypatch.setattr(sources_module, "hub_mode", lambda: "online")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'yahma/alpaca-cleaned' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(sources_module, "load_hub_dataset", unreachable)
    dataset = load_alpaca(n_rows=30)
    assert len(dataset) == 30
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"SFT data: 30 rows generated by unsloth_course (loading {ALPACA_DATASET} from the Hub "
        "(https://huggingface.co) failed: ConnectionError: Couldn't reach 'yahma/alpaca-cleaned' on the Hub "
        "(LocalEntryNotFoundError))"
    ]
    assert captured.err.startswith(f"WARNING: loading {ALPACA_DATASET} from the Hub")

    def broken(*args, **kwargs):
        raise KeyError("a bug, not the network")

    monkeypatch.setattr(sources_module, "load_hub_dataset", broken)
    with pytest.raises(sources_module.DataSourceError, match="loading yahma/alpaca-cleaned from the Hub .* "
                       "failed: KeyError: 'a bug, not the network'"):
        load_alpaca(n_rows=30)


def test_load_alpaca_from_the_hub_drops_blank_rows(monkeypatch, capsys):
    hub_rows = Dataset.from_list(
        generate_sft_rows(20, seed=5) + [{"instruction": "x", "input": "", "output": " "}]
    )
    monkeypatch.setattr(sources_module, "hub_mode", lambda: "online")
    monkeypatch.setattr(sources_module, "load_hub_dataset", lambda *args, **kwargs: hub_rows)
    dataset = load_alpaca(n_rows=10)
    assert len(dataset) == 10
    assert one_line(capsys) == (
        f"SFT data: 10 rows from {ALPACA_DATASET} on the Hub (https://huggingface.co; 1 blank row dropped)"
    )


def test_load_orca_dpo_offline_prints_its_source(capsys):
    dataset = load_orca_dpo(n_rows=40)
    assert one_line(capsys) == (
        "DPO data: 40 rows generated by unsloth_course "
        f"(HF_HUB_OFFLINE=1 and {ORCA_DPO_DATASET} is not in the Hugging Face cache)"
    )
    assert dataset.column_names == ["system", "question", "chosen", "rejected"]


# ---------------------------------------------------------------- validation


def alpaca_dataset(**overrides) -> Dataset:
    """20 valid rows (no empty field), with `column=(row index, value)` overrides."""
    rows = [
        {"instruction": "Reverse the following word.", "input": f"word{i}", "output": f"{i}drow"}
        for i in range(20)
    ]
    for column, (index, value) in overrides.items():
        rows[index][column] = value
    return Dataset.from_list(rows)


SFT_SCHEMA = {"instruction": str, "input": str, "output": str}


def test_validate_rows_accepts_good_rows_and_allowed_empty_columns():
    dataset = alpaca_dataset(input=(2, ""))
    validate_rows(dataset, SFT_SCHEMA, "SFT", allow_empty=("input",))
    with pytest.raises(ValueError, match="row 2 of the SFT dataset: column 'input' is empty"):
        validate_rows(dataset, SFT_SCHEMA, "SFT")


def test_validate_rows_names_a_missing_column():
    dataset = alpaca_dataset().remove_columns("output")
    with pytest.raises(ValueError) as error:
        validate_rows(dataset, SFT_SCHEMA, "SFT")
    assert (
        str(error.value)
        == "column 'output' missing in the SFT dataset; expected columns instruction, input, output"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "row 17 of the SFT dataset: column 'output' is None"),
        ("", "row 17 of the SFT dataset: column 'output' is empty"),
        ("  \n", "row 17 of the SFT dataset: column 'output' is empty"),
    ],
)
def test_validate_rows_rejects_none_and_blank_values(value, message):
    with pytest.raises(ValueError) as error:
        validate_rows(alpaca_dataset(output=(17, value)), SFT_SCHEMA, "SFT", allow_empty=("input",))
    assert str(error.value) == message


def test_validate_rows_rejects_wrong_types_and_empty_datasets():
    dataset = Dataset.from_list([{"chosen": "a", "n": 1}] * 3 + [{"chosen": "b", "n": 2}])
    with pytest.raises(ValueError) as error:
        validate_rows(dataset, {"chosen": str, "n": str}, "DPO")
    assert str(error.value) == "row 0 of the DPO dataset: column 'n' should be str, got int"
    validate_rows(dataset, {"chosen": str, "n": (str, int)}, "DPO")
    flags = Dataset.from_list([{"answer": True}])  # bool is an int subclass, but no integer answer
    with pytest.raises(
        ValueError, match="row 0 of the GRPO dataset: column 'answer' should be int, got bool"
    ):
        validate_rows(flags, {"answer": int}, "GRPO")
    empty = Dataset.from_dict({"instruction": [], "input": [], "output": []})
    with pytest.raises(ValueError, match="the SFT dataset has 0 rows"):
        validate_rows(empty, SFT_SCHEMA, "SFT")


def test_formatters_validate_before_converting():
    with pytest.raises(ValueError, match="row 4 of the SFT dataset: column 'instruction' is empty"):
        to_chat_messages(alpaca_dataset(instruction=(4, " ")))
    with pytest.raises(ValueError, match="column 'rejected' missing in the DPO dataset"):
        to_dpo_conversations(Dataset.from_list([{"system": "", "question": "q", "chosen": "a"}]))


# ---------------------------------------------------------------- SFT formatting


def test_to_alpaca_text_ends_with_eos_and_uses_the_right_template():
    rows = [
        {"instruction": "Reverse the following word.", "input": "planet", "output": "It is tenalp."},
        {"instruction": "What is 2 plus 2?", "input": "", "output": "2 plus 2 is 4."},
    ]
    texts = to_alpaca_text(Dataset.from_list(rows), eos_token="<|im_end|>")["text"]
    assert all(text.endswith("<|im_end|>") for text in texts)
    assert "### Input:\nplanet\n\n### Response:\nIt is tenalp.<|im_end|>" in texts[0]
    assert "### Input:" not in texts[1] and texts[1].startswith(
        "Below is an instruction that describes a task. "
    )
    assert (
        texts[1]
        == alpaca_prompt(rows[1]) + "2 plus 2 is 4.<|im_end|>"
        == format_alpaca(rows[1], "<|im_end|>")
    )
    assert alpaca_prompt(rows[0]).endswith("### Response:\n")
    with pytest.raises(ValueError, match="eos_token is empty"):
        to_alpaca_text(Dataset.from_list(rows), eos_token="")


def test_to_chat_messages_builds_user_and_assistant_turns():
    rows = [
        {"instruction": "Reverse the following word.", "input": "planet", "output": "tenalp"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    ]
    dataset = to_chat_messages(Dataset.from_list(rows))
    assert dataset.column_names == ["messages"]
    assert dataset[0]["messages"] == [
        {"role": "user", "content": "Reverse the following word.\n\nplanet"},
        {"role": "assistant", "content": "tenalp"},
    ]
    assert dataset[1]["messages"][0]["content"] == "Say hi."


class ChatTemplateTokenizer:
    """The one method render_chat_text needs, rendered with our ChatML template like a real tokenizer."""

    def apply_chat_template(self, messages, tokenize=True):
        assert tokenize is False
        return render_chat(messages, "chatml")


def test_render_chat_text_uses_the_tokenizer_template():
    dataset = render_chat_text(
        to_chat_messages(Dataset.from_list(generate_sft_rows(5))), ChatTemplateTokenizer()
    )
    text = dataset[0]["text"]
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_end|>\n")
    assert text.count("<|im_end|>") == 2 and "<|im_start|>assistant\n" in text


def test_render_example_in_every_style():
    row = {
        "instruction": "Name the capital city of Peru.",
        "input": "",
        "output": "The capital of Peru is Lima.",
    }
    assert render_example(row, "alpaca").endswith("### Response:\nThe capital of Peru is Lima.<|im_end|>")
    assert render_example(row, "alpaca", eos_token="</s>").endswith("Lima.</s>")
    assert render_example(row, "chatml") == (
        "<|im_start|>user\nName the capital city of Peru.<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of Peru is Lima.<|im_end|>\n"
    )
    assert render_example(row, "llama3") == (
        "<|begin_of_text|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName the capital city of Peru.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe capital of Peru is Lima.<|eot_id|>"
    )
    assert set(TEMPLATES) == {"chatml", "llama3"}
    assert render_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="unknown style 'vicuna'; allowed styles: alpaca, chatml, llama3"):
        render_example(row, "vicuna")


# ---------------------------------------------------------------- DPO formatting and splits


def test_to_dpo_conversations_has_trl_structure():
    rows = [
        {"system": "Be brief.", "question": "2+2?", "chosen": "4", "rejected": "5"},
        {"system": "", "question": "Capital of Peru?", "chosen": "Lima", "rejected": "I don't know."},
    ]
    dataset = to_dpo_conversations(Dataset.from_list(rows))
    assert sorted(dataset.column_names) == ["chosen", "prompt", "rejected"]
    assert dataset[0]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
    ]
    assert dataset[1]["prompt"] == [{"role": "user", "content": "Capital of Peru?"}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert dataset[1]["rejected"] == [{"role": "assistant", "content": "I don't know."}]


def test_split_train_eval_is_disjoint_and_checks_its_size():
    dataset = Dataset.from_list([{"i": i} for i in range(30)])
    splits = split_train_eval(dataset, n_eval=5)
    assert len(splits["train"]) == 25 and len(splits["test"]) == 5
    assert not set(splits["train"]["i"]) & set(splits["test"]["i"])
    assert splits["test"]["i"] == split_train_eval(dataset, n_eval=5)["test"]["i"]
    for bad in (0, 30):
        with pytest.raises(
            ValueError, match=f"n_eval must be between 1 and 29 for a dataset of 30 rows, got {bad}"
        ):
            split_train_eval(dataset, n_eval=bad)


# ---------------------------------------------------------------- GRPO math problems


def check_worked_solution(problem: dict) -> None:
    steps = problem["reasoning"].split("\n")
    values = []
    for step in steps:
        a, op, b, result = re.fullmatch(r"(-?\d+) ([+\-×÷]) (-?\d+) = (-?\d+)", step).groups()
        a, b, result = int(a), int(b), int(result)
        if op == "÷":
            assert a % b == 0 and a // b == result, problem
        else:
            assert OPERATIONS[op](a, b) == result, problem
        values.append(result)
    assert values[-1] == int(problem["answer"]), problem


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_math_problems_have_correct_worked_answers(level):
    problems = generate_math_problems(150, level=level, seed=11)
    assert len(problems) == 150 and len({p["question"] for p in problems}) == 150
    assert problems == generate_math_problems(150, level=level, seed=11)
    assert problems != generate_math_problems(150, level=level, seed=12)
    for problem in problems:
        assert set(problem) == {"question", "answer", "level", "reasoning"} and problem["level"] == level
        assert isinstance(problem["answer"], int)
        check_worked_solution(problem)
        if level <= 2:
            a, op, b = re.search(r"(\d+) (\+|-|×|plus|minus|times) (\d+)", problem["question"]).groups()
            op = {"plus": "+", "minus": "-", "times": "×"}.get(op, op)
            assert OPERATIONS[op](int(a), int(b)) == problem["answer"]
        if level == 1:
            assert problem["answer"] >= 0 and max(int(a), int(b)) <= 25
    steps = {len(p["reasoning"].split("\n")) for p in problems}
    assert steps == {1: {1}, 2: {1}, 3: {2}, 4: {3}}[level]
    if level == 2:
        assert any(p["answer"] < 0 for p in problems)
    if level == 4:
        assert any("÷" in p["reasoning"] for p in problems)


def test_math_problem_arguments_are_checked():
    for level in (0, 5):
        with pytest.raises(ValueError, match=f"level must be one of 1, 2, 3, 4, got {level}"):
            generate_math_problems(5, level=level)
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        generate_math_problems(0)
    with pytest.raises(ValueError, match="level 1 has fewer than 5000 distinct problems"):
        generate_math_problems(5000, level=1)
    with pytest.raises(ValueError, match="level must be one of"):
        load_math_problems(levels=(1, 7))


def test_load_math_problems_splits_without_leaks(capsys):
    splits = load_math_problems(n_train=120, n_eval=30, levels=(1, 2, 3))
    assert one_line(capsys) == (
        "GRPO data: 120 train + 30 eval math problems generated by unsloth_course (levels 1, 2, 3)"
    )
    train, test = splits["train"], splits["test"]
    assert len(train) == 120 and len(test) == 30
    assert set(train.column_names) == {"prompt", "question", "answer", "level", "reasoning"}
    assert not set(train["question"]) & set(test["question"])
    assert set(train["level"]) == {1, 2, 3}
    row = train[0]
    assert row["prompt"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": row["question"]},
    ]
    assert isinstance(row["answer"], str) and int(row["answer"]) == int(row["reasoning"].split(" = ")[-1])
    assert "single integer" in SYSTEM_PROMPT
    assert (
        load_math_problems(n_train=120, n_eval=30, levels=(1, 2, 3))["test"]["question"] == test["question"]
    )


def test_format_warmup_shows_the_answer_format():
    splits = load_math_problems(n_train=20, n_eval=4)
    dataset = to_format_warmup(splits["train"])
    assert dataset.column_names == ["messages"]
    messages, row = dataset[0]["messages"], splits["train"][0]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == (
        f"<reasoning>\n{row['reasoning']}\n</reasoning>\n<answer>\n{row['answer']}\n</answer>"
    )


# ---------------------------------------------------------------- continued pretraining code


def test_stdlib_functions_are_documented_parsable_and_deterministic():
    functions = stdlib_functions(40)
    assert len(functions) == 40 and functions == stdlib_functions(40)
    assert [f["text"] for f in functions] != [f["text"] for f in stdlib_functions(40, seed=1)]
    for function in functions:
        assert set(function) == {"text", "name", "path"}
        node = ast.parse(function["text"]).body[0]
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node)
        assert function["name"].split(".")[-1] == node.name
        assert function["text"].count("\n") >= 3 and len(function["text"]) <= 1500
        assert function["path"].endswith(".py") and not function["path"].startswith(("test/", "idlelib/"))


def test_load_python_code_offline(capsys):
    splits = load_python_code(n_train=40, n_eval=10)
    assert one_line(capsys) == (
        "Code data: 40 train + 10 eval functions generated by unsloth_course from this Python's standard "
        f"library (HF_HUB_OFFLINE=1 and {CODE_DATASET} is not in the Hugging Face cache)"
    )
    assert splits["train"].column_names == ["text", "name"]
    assert not set(splits["train"]["text"]) & set(splits["test"]["text"])


def test_load_python_code_from_a_hub_stream(monkeypatch, capsys):
    body = '        """Add one."""\n        return x + 1'  # CodeSearchNet keeps a method's class indentation
    rows = [{"func_name": f"Thing.f{i}", "whole_func_string": f"def f{i}(x):\n{body}"} for i in range(30)]
    rows.append({"func_name": "long", "whole_func_string": "def long():\n" + "    x = 1\n" * 200})
    monkeypatch.setattr(sources_module, "hub_mode", lambda: "online")
    monkeypatch.setattr(
        cpt_module, "load_hub_dataset", lambda *a, **k: Dataset.from_list(rows).to_iterable_dataset()
    )
    splits = load_python_code(n_train=8, n_eval=2, max_seq_length=256)
    assert one_line(capsys) == (
        f"Code data: 8 train + 2 eval functions from {CODE_DATASET} on the Hub "
        "(https://huggingface.co; python config, streamed)"
    )
    text = splits["train"][0]["text"]
    assert text.split("\n")[1] == '    """Add one."""'  # the method body is moved back under its def
    ast.parse(text)
    splits = load_python_code(n_train=40, n_eval=2, max_seq_length=256)  # 1,024 characters at most
    assert one_line(capsys) == (
        f"Code data: 28 train + 2 eval functions from {CODE_DATASET} on the Hub (https://huggingface.co; "
        "1 longer than 1,024 characters skipped; python config, streamed; only 30 usable functions, fewer "
        "than 40 + 2: all 2 held out, 28 to train)"
    )


def test_add_eos_and_token_lengths():
    dataset = Dataset.from_list([{"text": "def f():\n    return 1"}, {"text": "x = 2"}])
    with_eos = add_eos(dataset, "<|endoftext|>")
    assert with_eos["text"] == ["def f():\n    return 1<|endoftext|>", "x = 2<|endoftext|>"]
    with pytest.raises(ValueError, match="eos_token is empty"):
        add_eos(dataset, "")

    def whitespace_tokenizer(texts, add_special_tokens=True):
        return {"input_ids": [text.split() for text in texts]}

    assert token_lengths(dataset, whitespace_tokenizer) == [4, 3]


# ---------------------------------------------------------------- malformed chat messages, pairs that prefer nothing
@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"content": "Hi"}, "message 1: has no 'role'"),
        ({"role": "assistant", "content": None}, "message 1: content is None"),
        ({"role": "assistant", "content": "  "}, "message 1: content is empty"),
        ({"role": "bot", "content": "Hi"}, "message 1: role 'bot' is not one of system, user, assistant, tool"),
        ({"role": "assistant"}, "message 1: content is None"),  # Arrow gives the missing key as None
    ],
)
def test_malformed_chat_messages_name_row_column_message_and_problem(message, problem):
    """A message without role used to end in a bare KeyError; content None went through to the template."""
    from unsloth_course.data import messages_to_prompt_completion

    good = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    dataset = Dataset.from_list([{"messages": good}, {"messages": [good[0], message]}])
    expected = f"row 1 of the chat dataset: column 'messages', {problem}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        messages_to_prompt_completion(dataset)
    with pytest.raises(ValueError, match=re.escape(expected)):
        render_chat_text(dataset, tokenizer=None)  # refused before the tokenizer is used


def test_validate_messages_checks_each_column():
    from unsloth_course.data import validate_messages

    ok = [{"role": "user", "content": "Q"}]
    dataset = Dataset.from_list([{"prompt": ok, "chosen": [], "rejected": ok}])
    with pytest.raises(ValueError, match="row 0 of the DPO dataset: column 'chosen' has no messages"):
        validate_messages(dataset, ("prompt", "chosen", "rejected"), "DPO")
    with pytest.raises(ValueError, match="column 'completion' missing in the SFT dataset"):
        validate_messages(dataset, ("prompt", "completion"), "SFT")
    validate_messages(dataset, ("prompt", "rejected"), "DPO")


def test_pairs_that_prefer_nothing_are_dropped_with_their_count_and_rows(capsys):
    rows = [{"system": "", "question": f"Q{i}", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(8)]
    rows[2]["rejected"] = " A2 \n"  # the same answer once stripped
    rows[5]["rejected"] = "A5"
    pairs = to_dpo_conversations(Dataset.from_list(rows))
    assert len(pairs) == 6 and [p[0]["content"] for p in pairs["prompt"]] == ["Q0", "Q1", "Q3", "Q4", "Q6", "Q7"]
    assert one_line(capsys) == ("DPO data: dropped 2 of 8 pairs whose 'chosen' and 'rejected' answers are "
                                "identical after stripping whitespace (rows 2, 5): they prefer nothing")
    same = [{"system": "", "question": "Q", "chosen": "A", "rejected": "A "}] * 3
    with pytest.raises(ValueError, match=r"every row of the DPO dataset \(3\) has the same 'chosen' and "
                                         r"'rejected' answer .*rows 0, 1, 2\): no pair prefers anything"):
        to_dpo_conversations(Dataset.from_list(same))
    from unsloth_course.data import drop_identical_pairs

    conversational = Dataset.from_list([
        {"chosen": [{"role": "assistant", "content": "x "}], "rejected": [{"role": "assistant", "content": "x"}]},
        {"chosen": [{"role": "assistant", "content": "x"}], "rejected": [{"role": "assistant", "content": "y"}]}])
    assert len(drop_identical_pairs(conversational)) == 1


# ---------------------------------------------------------------- rows TRL cuts or drops for length
@pytest.mark.slow
def test_length_reports_match_what_trl_cuts_and_drops(tiny_model, tmp_path, capsys):
    """The counts printed before training are what TRL's trainers (1.16 here; 1.15 does the same) then do."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from unsloth_course.data import report_dpo_lengths, report_sft_lengths, to_prompt_completion

    base, tokenizer = tiny_model
    model = copy.deepcopy(base)  # trainers change a model they get (gradient checkpointing): not the shared one
    sft = to_prompt_completion(load_alpaca(n_rows=64))
    pairs = to_dpo_conversations(load_orca_dpo(n_rows=40))
    capsys.readouterr()
    counts = report_sft_lengths(sft, tokenizer, 80)
    out = one_line(capsys)
    assert out.startswith(f"SFT data: {counts['cut']} of 64 rows are longer than max_length=80 tokens (rows ")
    assert f"{counts['dropped']} of them keep no answer token (the prompt fills max_length): TRL drops them" in out
    assert counts["cut"] > counts["dropped"] > 0
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=sft, args=SFTConfig(
        output_dir=str(tmp_path), max_length=80, completion_only_loss=True, report_to="none", bf16=False))
    prepared = trainer.train_dataset["input_ids"]
    assert len(prepared) == 64 - counts["dropped"]
    assert counts["cut"] - counts["dropped"] <= sum(len(ids) == 80 for ids in prepared)
    assert report_sft_lengths(sft, tokenizer, 80, packing=True, packing_strategy="wrapped")["cut"] == 0
    capsys.readouterr()
    counts = report_dpo_lengths(pairs, tokenizer, 90)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"DPO data: {counts['dropped']} of 40 pairs have a prompt of max_length=90 tokens or more (rows "
        + lines[0].split("(rows ", 1)[1],
        f"DPO data: {counts['cut']} of 40 pairs are longer than max_length=90 tokens (prompt + chosen or rejected; "
        + lines[1].split("rejected; ", 1)[1]]
    trainer = DPOTrainer(model=model, ref_model=None, processing_class=tokenizer, train_dataset=pairs,
                         args=DPOConfig(output_dir=str(tmp_path), max_length=90, report_to="none", bf16=False))
    kept = trainer.train_dataset
    assert len(kept) == 40 - counts["dropped"] and counts["dropped"] > 0
    assert counts["cut"] == sum(len(p) + max(len(c), len(r)) > 90 for p, c, r in
                                zip(kept["prompt_ids"], kept["chosen_ids"], kept["rejected_ids"])) > 0

"""No evaluation prompt in any training set: the near-duplicate measure, decontaminate(), and every generator
at the sizes and seeds the recipes use."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before unsloth_course is imported: no test may reach the Hub

import re

import pytest
from datasets import Dataset

import unsloth_course.hub
from unsloth_course.data import (
    decontaminate,
    find_contaminated,
    generate_dpo_rows,
    generate_sft_rows,
    is_near_duplicate,
    load_math_problems,
    load_python_code,
    split_train_eval,
)
from unsloth_course.data.decontamination import EvalIndex, normalize, row_text, similarity
from unsloth_course.prompts import SFT_PROMPTS
from unsloth_course.recipes import get_recipe

SEEDS = (3407, 0, 1)


@pytest.fixture(autouse=True)
def offline_hub():
    unsloth_course.hub.hub_available.cache_clear()
    yield
    unsloth_course.hub.hub_available.cache_clear()


def sizes(technique: str, profiles: tuple[str, ...] = ("quick", "full")) -> list[tuple[int, int]]:
    """(n_train, n_eval) of the technique's recipes in `profiles`."""
    return sorted({(r.n_train_rows, r.n_eval_rows) for r in (get_recipe(technique, p) for p in profiles)})


# ---------------------------------------------------------------- the measure


def test_exact_duplicates_ignore_case_spacing_and_punctuation():
    assert normalize("  What is the CAPITAL of France ?? ") == "what is the capital of france"
    assert is_near_duplicate("What is the capital of France?", "what is the capital of france")
    assert is_near_duplicate("What’s the capital of France?", "What's the capital of France")


def test_near_duplicates_are_copies_and_light_edits():
    summary = SFT_PROMPTS[2]
    assert is_near_duplicate(summary, summary.replace("Tuesday", "Wednesday"))  # one word of ~40
    paragraph = summary.split("\n\n")[1]
    assert is_near_duplicate(summary, "Give a short summary of the paragraph below.\n\n" + paragraph)
    assert is_near_duplicate("Sam has 3 apples and buys 2 bags with 6 apples in each bag. How many now?",
                             "Mia has 3 apples and buys 2 bags with 6 apples in each bag. How many now?")
    assert is_near_duplicate("Write a Python function that returns the factorial of a non-negative integer.",
                             "Can you write a Python function that returns the factorial of a non-negative "
                             "integer?")


def test_different_questions_are_not_duplicates():
    assert not is_near_duplicate("What is the capital of France?", "What is the capital of Spain?")
    assert not is_near_duplicate("What is 93 + 18?", "What is 93 + 17?")  # another number: another question
    assert not is_near_duplicate("What is 93 + 18?", "What is 93 - 18?")
    assert not is_near_duplicate("Sam has 3 apples and buys 2 bags with 6 apples in each bag.",
                                 "Sam has 6 apples and buys 2 bags with 3 apples in each bag.")  # in order
    assert not is_near_duplicate('Sort the letters of the word "puzzle" in alphabetical order.',
                                 'Sort the letters of the word "garden" in alphabetical order.')
    assert similarity("Name the capital city of France.", "What is the capital of France?") == 0.5
    with pytest.raises(ValueError, match=r"threshold=0 must be in \(0, 1\]"):
        is_near_duplicate("a", "b", threshold=0)


def test_conversational_prompts_are_compared_by_their_user_turns():
    system = {"role": "system", "content": "Respond in the following format: reasoning, then the answer."}
    index = EvalIndex([[system, {"role": "user", "content": "What is 12 + 7?"}]])
    assert index.match("What is 12 + 7?") == 0
    assert index.match(row_text({"prompt": [system, {"role": "user", "content": "What is 12 + 8?"}]},
                                ["prompt"])) is None  # the shared system prompt makes no duplicate


def test_decontaminate_drops_the_rows_that_repeat_an_evaluation_prompt(capsys):
    rows = Dataset.from_list([
        {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
        {"instruction": "what is the capital of france", "input": "", "output": "Paris"},
        {"instruction": "What is the capital of Spain?", "input": "", "output": "Madrid."},
        {"instruction": "Summarize the following paragraph in one sentence.",
         "input": SFT_PROMPTS[2].split("\n\n")[1], "output": "The council approved bike lanes."},
        {"instruction": "Summarize the following paragraph in one sentence.",
         "input": "Maria bakes bread every morning and sells it at the market.", "output": "Maria bakes."},
    ])
    kept, removed = decontaminate(rows, SFT_PROMPTS)
    assert removed == 3 and kept["output"] == ["Madrid.", "Maria bakes."]
    assert capsys.readouterr().out == ("decontaminate: removed 3 of 5 training rows that repeat one of 3 "
                                       "evaluation prompts (exact or near-duplicate, threshold 0.8)\n")
    same, none = decontaminate(rows.select([2]), SFT_PROMPTS)
    assert none == 0 and len(same) == 1


def test_decontaminate_checks_its_arguments():
    rows = Dataset.from_list([{"question": "What is the capital of France?", "answer": "Paris"}])
    assert decontaminate(Dataset.from_list([{"question": "Hi?", "answer": "x"}]), SFT_PROMPTS)[1] == 0
    with pytest.raises(ValueError, match="every training row repeats an evaluation prompt"):
        decontaminate(rows, SFT_PROMPTS)
    with pytest.raises(ValueError, match=r"column\(s\) \['prompt'\] not in the dataset; its columns are "
                                         "question, answer"):
        decontaminate(rows, SFT_PROMPTS, columns=["prompt"])
    with pytest.raises(ValueError, match="say which columns hold the prompt"):
        decontaminate(Dataset.from_list([{"a": "x"}]), SFT_PROMPTS)
    with pytest.raises(ValueError, match="eval_prompts is empty"):
        decontaminate(rows, [])
    with pytest.raises(TypeError, match="a prompt must be a string or a list of chat messages, got int"):
        decontaminate(rows, [3])


# ---------------------------------------------------------------- the generators, as the recipes use them


def course_prompts() -> EvalIndex:
    """The course's fixed evaluation prompts, and the instruction of each that has an input."""
    return EvalIndex([*SFT_PROMPTS, *(p.split("\n\n")[0] for p in SFT_PROMPTS if "\n\n" in p)])


@pytest.mark.parametrize("technique", ["full", "lora"])
def test_generated_sft_rows_never_ask_an_evaluation_prompt(technique):
    index = course_prompts()
    for n_train, n_eval in sizes(technique):
        for seed in SEEDS:
            rows = generate_sft_rows(n_train + n_eval, seed)
            prompts = [row_text(row, ("instruction", "input")) for row in rows]
            instructions = [row["instruction"] for row in rows]
            found = find_contaminated(prompts, index) + find_contaminated(instructions, index)
            assert not found, [(prompts[i], index.prompts[j]) for i, j in found[:3]]
            assert not any("France" in p or "factorial" in p for p in prompts)  # the topics, in any wording


def test_generated_dpo_rows_never_ask_an_evaluation_prompt():
    index = course_prompts()
    for n_train, n_eval in sizes("dpo"):
        for seed in SEEDS:
            questions = [row["question"] for row in generate_dpo_rows(n_train + n_eval, seed)]
            found = find_contaminated(questions, index)
            assert not found, [(questions[i], index.prompts[j]) for i, j in found[:3]]
            assert not any("France" in q or "factorial" in q for q in questions)


def test_decontaminated_dpo_training_rows_repeat_no_held_out_prompt(capsys):
    """Generated pairs repeat some questions (44 countries, 7 functions): split as notebook 3 splits, the
    training rows that repeat a held-out prompt are dropped, and what stays is clean."""
    for n_train, n_eval in sizes("dpo"):
        pairs = Dataset.from_list(generate_dpo_rows(n_train + n_eval, 3407))
        split = split_train_eval(pairs, n_eval, 3407)
        train, removed = decontaminate(split["train"], split["test"]["question"], columns="question")
        assert removed < 0.2 * n_train and len(train) == n_train - removed
        assert not find_contaminated(train["question"], split["test"]["question"])


COMPUTATION = re.compile(r"(-?\d+) ([+\-×÷]) (-?\d+) = (-?\d+)")


def computations(reasoning: str) -> tuple:
    """The worked steps, operands of + and × sorted: 13 + 4 and 4 + 13 are the same computation."""
    return tuple((*sorted((a, b)), op, c) if op in "+×" else (a, b, op, c)
                 for a, op, b, c in COMPUTATION.findall(reasoning))


@pytest.mark.parametrize("levels", [(1, 2), (1, 2, 3), (3, 4)])
def test_math_problems_held_out_are_not_in_training(levels, capsys):
    for n_train, n_eval in sizes("grpo", ("quick", "full", "throughput")):  # throughput: 520 level-1 problems
        for seed in SEEDS:
            splits = load_math_problems(n_train, n_eval, levels, seed)
            train, test = splits["train"], splits["test"]
            found = find_contaminated(train["question"], test["question"])
            assert not found, [(train[i]["question"], test[j]["question"]) for i, j in found[:3]]
            trained = {computations(r) for r in train["reasoning"]}
            shared = trained & {computations(r) for r in test["reasoning"]}
            assert not shared, sorted(shared)[:3]  # "Calculate 4 + 13." held out, "What is 13 + 4?" trained


def test_held_out_code_is_not_in_the_training_code(capsys):
    for n_train, n_eval in sizes("cpt"):
        splits = load_python_code(n_train=n_train, n_eval=n_eval, seed=3407)
        train, test = splits["train"], splits["test"]
        found = find_contaminated(train["text"], test["text"])
        assert not found, [(train[i]["name"], test[j]["name"]) for i, j in found[:3]]
        assert n_train - 5 <= len(train) <= n_train and len(test) == n_eval
    out = capsys.readouterr().out
    # the stdlib sample depends on the Python build; the printed counts must add up to what was asked for
    match = re.search(r"Code data: ([\d,]+) train \+ 64 eval functions .*; (\d+) training functions? that nearly "
                      r"repeats? a held-out one dropped", out)
    assert match, out
    assert int(match[1].replace(",", "")) + int(match[2]) == 2000, out

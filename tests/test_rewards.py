"""Tests for unsloth_course.rewards (CPU only, no model)."""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import random
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from unsloth_course import rewards as R
from unsloth_course.rewards import (
    DEFAULT_REWARDS,
    MAX_TOTAL_REWARD,
    REWARD_WEIGHTS,
    answer_int,
    completion_text,
    correctness_reward,
    extract_answer,
    int_reward,
    parse_int,
    score_completions,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)

GOOD = "<reasoning>\n6 times 7 is 42.\n</reasoning>\n<answer>\n42\n</answer>\n"
WRONG = "<reasoning>\n6 times 7 is 41.\n</reasoning>\n<answer>\n41\n</answer>\n"
SLOPPY = "Let me think. <reasoning>6*7</reasoning> <answer>42</answer> done"
NO_TAGS = "The answer is 42."
HOSTILE = [
    "__import__('os').system('x')",
    "<answer>__import__('os').system('x')</answer>",
    "<reasoning>\nx\n</reasoning>\n<answer>\n__import__('os').system('echo pwned')\n</answer>",
    "<answer>2+3</answer>",
    "<answer>exec('1')</answer>",
    "<answer>eval('1')</answer>",
    "<answer>" + "9" * 5000 + "</answer>",
    "<answer>1e1000</answer>",
    "<answer>[1]*10**10</answer>",
    "<answer>" + "<answer>" * 200 + "</answer>",
    "<reasoning>" * 500 + "<answer>",
    "\x00\ufeff<answer>\u202e42</answer>",
]


def conv(text):
    return [{"role": "assistant", "content": text}]


def call(fn, completions, answer="42"):
    return fn(prompts=[""] * len(completions), completions=completions, answer=[answer] * len(completions))


# ---------------------------------------------------------------- completion_text


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        (conv("hi"), "hi"),
        ([], ""),
        ("", ""),
        (None, ""),
        ([{"role": "assistant", "content": None}], ""),
        ([{"role": "assistant"}], ""),
        ({"role": "assistant", "content": "one message"}, "one message"),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "ab",
        ),
        ([{"content": "no role"}], "no role"),
        (
            [
                {"role": "assistant", "content": "a"},
                {"role": "tool", "content": "t"},
                {"role": "assistant", "content": "b"},
            ],
            "a\nb",
        ),
        (42, ""),
        (["not a message"], ""),
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


# ---------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, "42"),
        ("<answer>  7 \n</answer>", "7"),
        ("<answer></answer>", ""),
        ("no tags", None),
        ("", None),
        ("<answer>42", None),  # unclosed
        ("42</answer>", None),  # never opened
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # the last block counts
        ("<answer>1</answer><answer>2", "1"),  # a trailing unclosed block is ignored
        ("<answer><answer>5</answer>", "5"),
        ("<ANSWER>5</ANSWER>", None),  # tags are exact
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_non_string():
    assert extract_answer(None) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- parse_int


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("0", 0),
        ("007", 7),
        ("-5", -5),
        ("+5", 5),
        ("  \n 42 \t\n", 42),
        ("42.", 42),
        ("\u22125", -5),  # U+2212 MINUS SIGN
        ("\u2212 5", None),  # a sign must touch its number
        ("\u2013" + "5", -5),  # EN DASH as minus
        ("\uff14\uff12", 42),  # fullwidth digits
        ("\uff0d\uff17", -7),  # fullwidth minus and digit
        ("1,234", 1234),
        ("-1,234,567", -1234567),
        ("1 234", 1234),
        ("1\u00a0234", 1234),  # no-break space
        ("1\u202f234", 1234),  # narrow no-break space
        ("1_234", 1234),
        ("1,23,4", None),
        ("12,34", None),
        ("1,2345", None),
        ("1,234_567", None),  # mixed separators
        ("1  234", None),
        (",123", None),
        ("4.0", 4),
        ("4.00", 4),
        ("-4.0", -4),
        ("1,234.0", 1234),
        ("3.5", None),
        ("0.5", None),
        (".5", None),
        ("1e3", None),
        ("0x1F", None),
        ("2+3", None),
        ("2 + 3", None),
        ("2 + 3 = 5", None),
        ("6*7", None),
        ("10/2", None),
        ("5-3", None),
        ("(42)", None),
        ("x2 = 5", None),
        ("4\u00b2", None),  # superscript: NFKC would make it "42"
        ("\u00bd", None),  # vulgar fraction
        ("= 42", 42),
        ("x = 42", 42),
        ("x=-3", -3),
        ("The answer is 42.", 42),
        ("The answer is -1,234.", -1234),
        ("Answer: 7", 7),
        ("42 apples", None),  # no words after the number: "42 is wrong" has the same shape
        ("$42", 42),
        ("answer42", None),  # glued to a word
        ("42apples", None),
        ("The answer is definitely, without any doubt, 42", None),  # longer than 40 chars
        ("The answer is 3.5", None),
        ("between 3 and 4", None),
        ("", None),
        ("   ", None),
        (".", None),
        ("-", None),
        ("+", None),
        ("--5", None),
        (None, None),
        ("9" * 2000, None),  # absurdly long: rejected, no int-parsing error
    ],
)
def test_parse_int(text, expected):
    result = parse_int(text)
    assert result == expected
    assert result is None or type(result) is int


# Answers that do not state the number: the old short-sentence rule read a number out of each of these.
NOT_A_STATED_ANSWER = [
    "not 42",
    "Not 42.",
    "not = 42",
    "is not 42",
    "The answer is not 42",
    "never 42",
    "no 42",
    "wrong: 42",
    "incorrect = 42",
    "42 is wrong",
    "42 is incorrect",
    "42 is not the answer",
    "42 no",
    "it is wrong that x = 42",
    "So the answer is 42",
    "about 42",
    "approximately 42",
    "almost 42",
    "more than 42",
    "less than 42",
    "at least 42",
    "forty one or 42",
    "42 apples",
]


@pytest.mark.parametrize("text", NOT_A_STATED_ANSWER)
def test_parse_int_rejects_words_around_the_number(text):
    assert parse_int(text) is None


@pytest.mark.parametrize("text", ["minus 7", "Minus 7", "negative 7", "minus -7", "the answer is minus 7"])
def test_parse_int_sign_words_are_rejected_not_dropped(text):
    # the rule rejects sign words rather than guess: "minus 7" must never be read as +7
    assert parse_int(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42", 42),
        ("the answer is: 42", 42),
        ("THE ANSWER IS 42.", 42),
        ("Answer = 42", 42),
        ("answer:42", 42),
        ("Final answer: -7", -7),
        ("The final answer is -1,234.", -1234),
        ("The result is 42", 42),
        ("result = 42", 42),
        ("n: 42", 42),
        ("x is 42", 42),
        ("The answer is\n42", 42),
        ("= +42", 42),
        ("$1,234", 1234),
        ("-$5", -5),
    ],
)
def test_parse_int_accepted_lead_ins(text, expected):
    assert parse_int(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "answer is42",
        "the answer 42",
        "answer answer: 42",
        "xy = 42",
        "x = = 42",
        "x \u2260 42",
        "x != 42",
        "x < 42",
        "~42",
        "$-5",
        "The answer is 42!",
        "42?",
        "**42**",
        "\\boxed{42}",
        "42 42",
        "41, 42",
    ],
)
def test_parse_int_rejects_other_shapes(text):
    assert parse_int(text) is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 42),
        (conv(GOOD), 42),
        ({"role": "assistant", "content": "<answer>-7</answer>"}, -7),
        ("<answer>The answer is 1,234.</answer>", 1234),
        ("<answer>not 42</answer>", None),
        ("<answer>1</answer> then <answer>2</answer>", 2),
        (NO_TAGS, None),
        ("<answer>42", None),
        (None, None),
        ([], None),
    ],
)
def test_answer_int(completion, expected):
    assert answer_int(completion) == expected
    assert answer_int(completion) == parse_int(extract_answer(completion_text(completion)))


# ---------------------------------------------------------------- correctness / int


def test_correctness_correct_and_wrong():
    assert call(correctness_reward, [GOOD, WRONG]) == [2.0, 0.0]


def test_correctness_badly_formatted_and_empty():
    assert call(correctness_reward, [NO_TAGS, "", [], conv(None), "<answer>42"]) == [0.0] * 5


def test_correctness_sloppy_format_still_counts_answer():
    assert call(correctness_reward, [SLOPPY]) == [2.0]


def test_correctness_several_answer_blocks_last_wins():
    assert call(correctness_reward, ["<answer>41</answer><answer>42</answer>"]) == [2.0]
    assert call(correctness_reward, ["<answer>42</answer><answer>41</answer>"]) == [0.0]


def test_correctness_negative_and_unicode():
    comps = ["<answer>\n-17\n</answer>", "<answer>\u221217</answer>", "<answer>\uff0d\uff11\uff17</answer>"]
    assert call(correctness_reward, comps, answer="-17") == [2.0, 2.0, 2.0]
    assert call(correctness_reward, ["<answer>17</answer>"], answer="-17") == [0.0]


def test_correctness_thousands_and_decimals():
    comps = [
        "<answer>1,234</answer>",
        "<answer>1,23,4</answer>",
        "<answer>1234.0</answer>",
        "<answer>1234.5</answer>",
    ]
    assert call(correctness_reward, comps, answer="1234") == [2.0, 0.0, 2.0, 0.0]


def test_correctness_ground_truth_forms():
    assert correctness_reward(None, [GOOD], answer=[" 42 "]) == [2.0]
    assert correctness_reward(None, [GOOD], answer=[42]) == [2.0]
    assert correctness_reward(None, [GOOD, WRONG], answer="42") == [2.0, 0.0]  # a single value is broadcast
    with pytest.raises(ValueError, match="not an integer"):
        correctness_reward(None, [GOOD], answer=["forty-two"])


def test_answers_aligned_with_completions():
    comps = ["<answer>1</answer>", "<answer>2</answer>", "<answer>3</answer>", "<answer>3</answer>"]
    answers = ["1", "2", "3", "4"]  # e.g. 2 prompts x 2 generations, repeated per completion by TRL
    assert correctness_reward(["p"] * 4, comps, answer=answers) == [2.0, 2.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="3 values for 4 completions"):
        correctness_reward(["p"] * 4, comps, answer=answers[:3])


def test_correctness_negated_or_qualified_answers_get_nothing():
    comps = [
        f"<reasoning>\n6 times 7 is 42.\n</reasoning>\n<answer>\n{a}\n</answer>\n"
        for a in NOT_A_STATED_ANSWER
    ]
    assert call(correctness_reward, comps) == [0.0] * len(comps)
    assert call(int_reward, comps) == [0.0] * len(comps)  # "not 42" is not an integer answer either
    assert call(correctness_reward, ["<answer>42</answer>", "<answer>The answer is 42.</answer>"]) == [
        2.0,
        2.0,
    ]


def test_correctness_sign_words():
    assert call(correctness_reward, ["<answer>minus 7</answer>"], answer="7") == [0.0]
    assert call(correctness_reward, ["<answer>minus 7</answer>"], answer="-7") == [0.0]  # rejected: write -7
    assert call(correctness_reward, ["<answer>-7</answer>"], answer="-7") == [2.0]


def test_int_reward():
    comps = [GOOD, WRONG, "<answer>3.5</answer>", "<answer>2+3</answer>", NO_TAGS, "", "<answer>4.0</answer>"]
    assert call(int_reward, comps) == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5]


# ---------------------------------------------------------------- format rewards


def test_strict_format():
    comps = [
        GOOD,
        GOOD.rstrip("\n"),  # final newline optional
        SLOPPY,
        "<reasoning>x</reasoning>\n<answer>\n42\n</answer>",  # missing newlines
        " " + GOOD,  # leading text
        GOOD + "extra",  # trailing text
        GOOD + "\n",  # two final newlines
        "<reasoning>\nx\n</reasoning>\n<answer>\n1\n</answer>\n<answer>\n2\n</answer>",  # two answer blocks
        "",
        [],
    ]
    assert call(strict_format_reward, comps) == [0.5, 0.5] + [0.0] * 8


def test_soft_format():
    comps = [
        GOOD,
        SLOPPY,
        "<answer>42</answer><reasoning>x</reasoning>",
        NO_TAGS,
        "<reasoning>x</reasoning>",
        "",
    ]
    assert call(soft_format_reward, comps) == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_xml_count_best_is_half():
    assert call(xml_count_reward, [GOOD]) == [0.5]
    assert call(xml_count_reward, [GOOD.rstrip("\n")]) == [0.5]


def test_xml_count_partial_credit_ordering():
    ladder = [
        "no tags at all",
        "<reasoning>\nthinking",
        "<reasoning>\nthinking\n</reasoning>\n",
        "<reasoning>\nthinking\n</reasoning>\n<answer>\n42",
        GOOD,
    ]
    scores = call(xml_count_reward, ladder)
    assert scores == [0.0, 0.125, 0.25, 0.375, 0.5]
    assert scores == sorted(scores)


def test_xml_count_duplicate_tags_get_no_credit():
    doubled = GOOD + "<answer>\n42\n</answer>"
    assert call(xml_count_reward, [doubled])[0] < call(xml_count_reward, [GOOD])[0]


def test_xml_count_trailing_text_penalty():
    short, long_, huge = (GOOD + "x" * 10, GOOD + "x" * 100, GOOD + "x" * 10_000)
    scores = call(xml_count_reward, [GOOD, short, long_, huge])
    assert scores[0] == 0.5
    assert scores[1] == pytest.approx(0.5 - 0.010)
    assert scores[2] == pytest.approx(0.5 - 0.100)
    assert scores[3] == pytest.approx(0.0)  # penalty capped at 0.5
    assert scores == sorted(scores, reverse=True)
    assert call(xml_count_reward, [GOOD + "  \n\n "]) == [0.5]  # whitespace is free
    assert call(xml_count_reward, ["</answer>" + "x" * 10_000]) == [pytest.approx(-0.5)]  # the floor


# ---------------------------------------------------------------- linear time on adversarial input

# The format rules as the regular expressions they were, kept here as references (fine on short texts).
_TAG = r"</?(?:reasoning|answer)>"
REFERENCE_STRICT = re.compile(
    rf"<reasoning>\n(?:(?!{_TAG}).)*?\n</reasoning>\n<answer>\n(?:(?!{_TAG}).)*?\n</answer>\n?", re.DOTALL
)
REFERENCE_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
FRAGMENTS = [
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "\n",
    "\n",
    " ",
    "\t",
    "x",
    "42",
    "<",
    ">",
]
SKELETON = [
    "<reasoning>",
    "\n",
    "x",
    "\n",
    "</reasoning>",
    "\n",
    "<answer>",
    "\n",
    "42",
    "\n",
    "</answer>",
    "\n",
]


def random_texts(n=4000, seed=0):
    """Short texts: the well-formed skeleton after 0-3 random edits (insert, delete, replace a piece),
    and random strings of pieces, so that both outcomes and the near misses are common."""
    rng = random.Random(seed)
    texts = [GOOD, WRONG, SLOPPY, GOOD + "\n", GOOD.replace("\n</answer>", "</answer>")]
    for _ in range(n):
        if rng.random() < 0.2:
            texts.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 14))))
            continue
        pieces = list(SKELETON)
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(pieces) + 1)
            edit = rng.choice(("insert", "delete", "replace"))
            if edit == "insert":
                pieces.insert(i, rng.choice(FRAGMENTS))
            elif pieces and i < len(pieces):
                if edit == "delete":
                    del pieces[i]
                else:
                    pieces[i] = rng.choice(FRAGMENTS)
        texts.append("".join(pieces))
    return texts


def test_format_rewards_match_their_reference_patterns():
    texts = random_texts()
    strict = call(strict_format_reward, texts)
    soft = call(soft_format_reward, texts)
    assert strict == [0.5 if REFERENCE_STRICT.fullmatch(t) else 0.0 for t in texts]
    assert soft == [0.5 if REFERENCE_SOFT.search(t) else 0.0 for t in texts]
    for scores in (strict, soft):  # the sample exercises both outcomes of both rules
        assert 0.1 < sum(x > 0 for x in scores) / len(texts) < 0.9


def _repeat(unit, n):
    return unit * max(1, n // len(unit))


ADVERSARIAL = {
    "unclosed_reasoning": lambda n: _repeat("<reasoning>", n),
    "empty_reasoning_blocks": lambda n: _repeat("<reasoning></reasoning>", n),
    "unclosed_then_whitespace": lambda n: _repeat("<reasoning>", n // 2) + "</reasoning>" + " " * (n // 2),
    "nested_unclosed": lambda n: _repeat("<reasoning><answer>", n),
    "joins_without_close": lambda n: "<reasoning>" + _repeat("</reasoning> <answer>", n),
    "unclosed_answer": lambda n: _repeat("<answer>", n),
    "closing_answer": lambda n: _repeat("\n</answer>", n),
    "digits": lambda n: "<answer>" + "9" * n + "</answer>",
    "grouped_digits": lambda n: "<answer>1" + _repeat(",234", n) + "</answer>",
    "whitespace_around_answer": lambda n: "<answer>" + " " * (n // 2) + "42" + "\n" * (n // 2) + "</answer>",
    "non_ascii_answer": lambda n: "<answer>" + "\u00e9" * n + "</answer>",
    "fullwidth_digits": lambda n: "<answer>" + "\uff19" * n + "</answer>",
    "words_answer": lambda n: "<answer>" + _repeat("not ", n) + "42</answer>",
    "long_strict_reasoning": lambda n: (
        "<reasoning>\n" + "x" * n + "\n</reasoning>\n<answer>\n42\n</answer>\n"
    ),
    "newlines": lambda n: "<reasoning>\n" + "\n" * n,
}
TIME_BOUND_S = 0.25  # per reward call on up to 1 MB; measured at most ~2 ms here, 0.1-350 s before


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
def test_adversarial_long_inputs_score_in_linear_time(kind):
    for size in (100_000, 1_000_000):  # the smaller first: quadratic code fails there within seconds
        text = ADVERSARIAL[kind](size)
        for fn in DEFAULT_REWARDS:
            timings = []
            for _ in range(2):  # a second try before failing, for a momentarily loaded machine
                start = time.perf_counter()
                out = call(fn, [text])
                timings.append(time.perf_counter() - start)
                if timings[-1] < TIME_BOUND_S:
                    break
            assert len(out) == 1 and math.isfinite(out[0])
            assert min(timings) < TIME_BOUND_S, (
                f"{fn.__name__} took {min(timings):.3f} s on {len(text):,} chars"
            )


def test_long_answers():
    assert parse_int("9" * 1000) == int("9" * 1000)
    assert parse_int("9" * 1001) is None
    assert parse_int(" " * 1_000_000 + "-42." + "\n" * 1_000_000) == -42  # whitespace is stripped first
    assert parse_int("x = " + " " * (R.MAX_ANSWER_CHARS - 5) + "1") == 1  # MAX_ANSWER_CHARS: still read
    assert parse_int("x = " + " " * (R.MAX_ANSWER_CHARS - 4) + "1") is None  # one more: rejected unread
    assert call(correctness_reward, [ADVERSARIAL["whitespace_around_answer"](1_000_000)]) == [2.0]


# ---------------------------------------------------------------- shared behaviour


ALL_INPUTS = [GOOD, WRONG, SLOPPY, NO_TAGS, "", [], conv(GOOD), conv(None), None, *HOSTILE]


@pytest.mark.parametrize("fn", DEFAULT_REWARDS, ids=lambda f: f.__name__)
def test_returns_list_of_floats_same_length(fn):
    out = call(fn, ALL_INPUTS)
    assert isinstance(out, list)
    assert len(out) == len(ALL_INPUTS)
    assert all(type(x) is float and math.isfinite(x) for x in out)
    assert call(fn, []) == []


@pytest.mark.parametrize("fn", DEFAULT_REWARDS, ids=lambda f: f.__name__)
def test_conversational_equals_string_form(fn):
    texts = [GOOD, WRONG, SLOPPY, NO_TAGS, "", GOOD + "trailing"]
    assert call(fn, [conv(t) for t in texts]) == call(fn, texts)


@pytest.mark.parametrize("fn", DEFAULT_REWARDS, ids=lambda f: f.__name__)
def test_rewards_within_documented_range(fn):
    top = REWARD_WEIGHTS[fn.__name__]
    out = call(fn, ALL_INPUTS)
    assert max(out) == top  # GOOD reaches the maximum of every reward
    assert all(-0.5 <= x <= top for x in out)


def test_never_evaluates_model_text(monkeypatch):
    import ast as ast_module

    def boom(*args, **kwargs):
        raise AssertionError("model text must never be evaluated")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    monkeypatch.setattr(builtins, "compile", boom)
    monkeypatch.setattr(ast_module, "literal_eval", boom)
    for fn in DEFAULT_REWARDS:
        assert len(call(fn, HOSTILE)) == len(HOSTILE)
        assert len(call(fn, [conv(h) for h in HOSTILE])) == len(HOSTILE)
    for text in HOSTILE:
        parse_int(text)
        parse_int(extract_answer(text))
    score_completions(HOSTILE, "42")


def test_source_has_no_eval_exec_or_literal_eval():
    tree = ast.parse(Path(R.__file__).read_text(encoding="utf-8"))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.id if isinstance(func, ast.Name) else "." + getattr(func, "attr", ""))
    # re.compile is fine; builtins compile/eval/exec and any .literal_eval / .eval are not
    assert not called & {"eval", "exec", "compile", "__import__", "literal_eval", ".literal_eval", ".eval"}


def test_default_rewards_and_weights():
    assert [f.__name__ for f in DEFAULT_REWARDS] == [
        "correctness_reward",
        "int_reward",
        "strict_format_reward",
        "soft_format_reward",
        "xml_count_reward",
    ]
    assert list(REWARD_WEIGHTS) == [f.__name__ for f in DEFAULT_REWARDS]
    assert REWARD_WEIGHTS == {
        "correctness_reward": 2.0,
        "int_reward": 0.5,
        "strict_format_reward": 0.5,
        "soft_format_reward": 0.5,
        "xml_count_reward": 0.5,
    }
    assert MAX_TOTAL_REWARD == 4.0
    for fn in DEFAULT_REWARDS:
        assert str(REWARD_WEIGHTS[fn.__name__]) in fn.__doc__ or fn is xml_count_reward
    assert "0.5" in xml_count_reward.__doc__


def test_score_completions():
    rows = score_completions([GOOD, WRONG, "", conv(GOOD)], "42")
    assert len(rows) == 4
    assert list(rows[0]) == [*REWARD_WEIGHTS, "total"]
    assert rows[0]["total"] == MAX_TOTAL_REWARD
    assert rows[1]["correctness_reward"] == 0.0 and rows[1]["total"] == 2.0
    assert rows[2]["total"] == 0.0
    assert rows[3] == rows[0]
    assert all(row["total"] == pytest.approx(sum(v for k, v in row.items() if k != "total")) for row in rows)
    assert score_completions([], "42") == []


# ---------------------------------------------------------------- TRL compatibility

TRL_EXTRA_KWARGS = {
    "completion_ids": [[1, 2, 3], [4, 5]],
    "trainer_state": None,
    "log_extra": lambda *a, **k: None,
    "log_metric": lambda *a, **k: None,
    "some_other_column": ["a", "b"],
}


@pytest.mark.parametrize("fn", DEFAULT_REWARDS, ids=lambda f: f.__name__)
def test_accepts_trl_keyword_arguments(fn):
    kwargs = {
        "prompts": ["p1", "p2"],
        "completions": [GOOD, WRONG],
        "answer": ["42", "42"],
        **TRL_EXTRA_KWARGS,
    }
    inspect.signature(fn).bind(**kwargs)
    out = fn(**kwargs)
    assert len(out) == 2 and all(isinstance(x, float) for x in out)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_through_trl_calculate_rewards(conversational):
    """Run the rewards through GRPOTrainer._calculate_rewards itself, on a stub trainer (no model)."""
    pytest.importorskip("torch")
    trl = pytest.importorskip("trl")
    from transformers import TrainerState

    texts = [GOOD, WRONG, SLOPPY, ""]
    if conversational:
        prompts = [[{"role": "user", "content": "6*7?"}]] * 2 + [[{"role": "user", "content": "1+1?"}]] * 2
        completions = [conv(t) for t in texts]
    else:
        prompts = ["6*7?", "6*7?", "1+1?", "1+1?"]
        completions = texts
    inputs = [{"prompt": p, "answer": a} for p, a in zip(prompts, ["42", "42", "2", "2"], strict=True)]
    stub = SimpleNamespace(
        accelerator=SimpleNamespace(device="cpu", is_main_process=True),
        args=SimpleNamespace(report_to=[]),
        state=TrainerState(),
        reward_funcs=list(DEFAULT_REWARDS),
        reward_processing_classes=[None] * len(DEFAULT_REWARDS),
        reward_func_names=[f.__name__ for f in DEFAULT_REWARDS],
        environments=None,
        _log_completion_extra=lambda *a, **k: None,
        _log_metric=lambda *a, **k: None,
    )
    completion_ids = [[1, 2, 3]] * len(texts)
    rewards = trl.GRPOTrainer._calculate_rewards(stub, inputs, prompts, completions, completion_ids)
    assert tuple(rewards.shape) == (4, len(DEFAULT_REWARDS))
    expected = [[row[name] for name in REWARD_WEIGHTS] for row in score_completions(texts[:2], "42")]
    expected += [[row[name] for name in REWARD_WEIGHTS] for row in score_completions(texts[2:], "2")]
    assert [x for row in rewards.tolist() for x in row] == pytest.approx([x for row in expected for x in row])
    assert rewards[0].sum().item() == MAX_TOTAL_REWARD

"""unsloth_course.inference: chat/generate shapes, templates, restored state, and before/after comparisons."""

from types import SimpleNamespace

from unsloth_course.backend import FastLanguageModel

import pytest
import torch

from unsloth_course import inference
from unsloth_course.inference import (
    Generation,
    answer_flags,
    chat,
    chat_details,
    compare,
    generate,
    generate_details,
    repetition_loop,
)
from unsloth_course.prompts import CODE_HEADERS


@pytest.fixture
def templated(monkeypatch):
    """Replace generation: record the templated texts chat() builds, answer with their index."""
    seen: list[str] = []

    def fake_generate_details(model, tokenizer, texts, max_new_tokens=128, **kwargs):
        seen.extend(texts)
        return [Generation(f" answer {i} ", 3, True, max_new_tokens) for i in range(len(texts))]

    monkeypatch.setattr(inference, "generate_details", fake_generate_details)
    return seen


def test_chat_one_prompt_is_a_string_many_are_a_list(tiny_model):
    model, tokenizer = tiny_model
    prompts = ["What is the capital of France?", "Name a primary color."]
    answers = chat(model, tokenizer, prompts, max_new_tokens=6)
    assert isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    single = chat(model, tokenizer, prompts[1], max_new_tokens=6)
    assert isinstance(single, str)
    assert single == answers[1]  # left padding: a batched answer equals the unbatched one


def test_chat_templates(tiny_model, templated):
    model, tokenizer = tiny_model
    assert chat(model, tokenizer, "Hi") == "answer 0"
    assert templated[-1].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "You are a helpful AI assistant named SmolLM" in templated[-1]  # the template's default system

    chat(model, tokenizer, "Hi", system="You are a pirate.")
    assert templated[-1].startswith("<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHi")
    assert "SmolLM" not in templated[-1]

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat(model, tokenizer, messages, system="ignored") == "answer 0"  # one conversation: one answer
    assert "Be brief." in templated[-1] and "ignored" not in templated[-1]
    assert messages[0] == {"role": "system", "content": "Be brief."}  # the caller's list is not changed

    assert chat(model, tokenizer, [messages, "Hello"]) == ["answer 0", "answer 1"]


def test_chat_rejects_no_new_tokens(tiny_model):
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        chat(*tiny_model, "Hi", max_new_tokens=0)


def test_chat_restores_padding_side_and_training_mode(tiny_model):
    model, tokenizer = tiny_model
    assert tokenizer.padding_side == "right"
    model.train()
    try:
        chat(model, tokenizer, "Hi", max_new_tokens=2)
        assert model.training
        assert tokenizer.padding_side == "right"
    finally:
        FastLanguageModel.for_inference(model)
    chat(model, tokenizer, "Hi", max_new_tokens=2)
    assert not model.training


class BrokenModel(torch.nn.Linear):
    def __init__(self):
        super().__init__(1, 1)
        self.config = SimpleNamespace(use_cache=False)

    def generate(self, **kwargs):
        raise RuntimeError("generation failed")


def test_state_restored_after_an_error(tiny_model):
    _, tokenizer = tiny_model
    model = BrokenModel().train()
    with pytest.raises(RuntimeError, match="generation failed"):
        generate(model, tokenizer, ["Hi"], max_new_tokens=2)
    assert tokenizer.padding_side == "right"
    assert model.training


def test_generate_continues_a_code_header(tiny_model):
    model, tokenizer = tiny_model
    header = CODE_HEADERS[0]
    (continuation,) = generate(model, tokenizer, [header], max_new_tokens=12)
    assert continuation and "def is_palindrome" not in continuation  # new text only
    full = tokenizer(header + continuation, add_special_tokens=False)["input_ids"]
    assert len(full) - len(tokenizer(header, add_special_tokens=False)["input_ids"]) <= 13


def test_generate_keeps_the_indentation_a_continuation_starts_with(tiny_model):
    """Raw continuations are not stripped on the left: a function body's first line keeps its indent."""
    import torch

    _, tokenizer = tiny_model
    body = tokenizer("    return a + b\n\n", add_special_tokens=False, return_tensors="pt")["input_ids"]

    class Scripted(torch.nn.Module):  # answers every prompt with the same body
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.config = type("Config", (), {"use_cache": True})()

        def generate(self, input_ids, **kwargs):
            return torch.cat([input_ids, body.expand(input_ids.shape[0], -1)], dim=1)

    header = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n'
    assert generate(Scripted(), tokenizer, [header], max_new_tokens=8) == ["    return a + b"]
    assert chat(Scripted(), tokenizer, "Add 1 and 2", max_new_tokens=8) == "return a + b"  # chat answers: stripped


def test_compare():
    table = compare(["<b>bold</b>", [{"role": "user", "content": "last turn"}]], ["x < y", "b1"], ["a0", "a1"])
    assert table.prompts == ["<b>bold</b>", "last turn"]
    html = table._repr_html_()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html
    assert "x &lt; y" in html
    assert html.count("<tr>") == 3  # header and two rows
    assert "⚠" not in html  # no answer is flagged
    text = str(table)
    assert "--- before training:\nx < y" in text and "--- after training:\na1" in text
    assert table.to_records()[1] == {"prompt": "last turn", "before training": "b1", "after training": "a1",
                                     "flags": {"before training": [], "after training": []}}
    custom = compare(["p"], ["b"], ["a"], labels=("base", "tuned"))
    assert "--- base:\nb" in str(custom) and "--- tuned:\na" in str(custom)


def test_compare_needs_one_answer_per_prompt():
    with pytest.raises(ValueError, match="2 prompts, 1 before, 2 after"):
        compare(["a", "b"], ["x"], ["y", "z"])


def test_model_device_skips_parameters_kept_on_the_cpu():
    import torch

    from unsloth_course.inference import model_device

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert model_device(model) == torch.device("cpu")
    meta = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, device="meta"))
    assert model_device(meta) == torch.device("meta")  # the first non-CPU parameter wins


def test_a_tokenizer_saved_after_left_padding_reloads_padding_right(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from unsloth_course.inference import padding_side

    _, tokenizer = tiny_model
    with padding_side(tokenizer, "left"):
        tokenizer(["a", "b c d"], padding=True)  # what generate does
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).padding_side == "right"


# ---------------------------------------------------------------- what is wrong with an answer


def scripted(tokenizer, answer: str, eos: bool):
    """A model whose generate() appends `answer`'s tokens (then EOS and padding, when `eos`) to a prompt."""
    import torch

    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]

    class Scripted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.config = type("Config", (), {"use_cache": True})()

        def generate(self, input_ids, max_new_tokens, pad_token_id, **kwargs):
            new = (ids + [tokenizer.eos_token_id] + [pad_token_id] * 3 if eos else ids)  # pads after EOS
            new = new[:max_new_tokens]
            return torch.cat([input_ids, torch.tensor([new]).expand(input_ids.shape[0], -1)], dim=1)

    return Scripted(), len(ids)


def test_generate_details_counts_tokens_and_sees_eos(tiny_model):
    _, tokenizer = tiny_model
    model, n = scripted(tokenizer, "Paris is the capital.", eos=True)
    (ended,) = generate_details(model, tokenizer, ["Q: capital?"], max_new_tokens=20)
    assert ended == Generation("Paris is the capital.", n + 1, True, 20) and ended.flags == []
    model, n = scripted(tokenizer, "one two three four five six seven", eos=False)
    (cut,) = generate_details(model, tokenizer, ["Q"], max_new_tokens=n)
    assert (cut.new_tokens, cut.stopped_by_eos, cut.flags) == (n, False, ["stopped at max_new_tokens"])
    assert str(cut) == cut.text == "one two three four five six seven"
    details = chat_details(model, tokenizer, ["Hi", "Hello"], max_new_tokens=n)
    assert [d.text for d in details] == chat(model, tokenizer, ["Hi", "Hello"], max_new_tokens=n)
    with pytest.raises(ValueError, match="max_new_tokens=0 must be > 0"):
        generate_details(model, tokenizer, ["Q"], max_new_tokens=0)


def test_a_real_answer_that_loops_to_the_token_limit(tiny_model):
    model, tokenizer = tiny_model
    answer = chat_details(model, tokenizer, "Write a haiku about rain.", max_new_tokens=40)
    assert answer.text.startswith("In the heart of the night, a gentle rain\nA gentle rain, a gentle rain")
    assert answer.new_tokens == 40 and not answer.stopped_by_eos
    assert answer.flags == ["stopped at max_new_tokens", "repetition loop"]
    assert "gentle rain" in repetition_loop(answer.text)[0]  # one line of the poem, again and again


TRIPLE_QUOTES = '"""\n' * 30  # a code completion that writes closing quotes until the token limit
LOOPS = {
    "closing quotes": '    """Return the sum."""\n    ' + TRIPLE_QUOTES[:-3],
    "quotes without newlines": '"""' * 40,
    "tag blocks": "<reasoning>\n9 × 9 = 81\n</reasoning>\n" + "<answer>\n81\n</answer>\n" * 4 + "<answer>\n8",
    "words": "Fashion is about style: fashion, fashion, fashion",
    "one character": "The answer is 1" + "!" * 30,
}
NOT_LOOPS = {
    "a short repeat": "ha ha ha",
    "two tag blocks": "<answer>\n81\n</answer>\n<answer>\n81\n</answer>",
    "a list": "1. red\n2. orange\n3. yellow\n4. green\n5. blue\n6. indigo\n7. violet",
    "code": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b",
    "a table": "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |",
    "an answer in the format": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\n19\n</answer>",
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_repetition_loops_are_flagged(name):
    unit, copies = repetition_loop(LOOPS[name])
    assert copies >= 2.5 and answer_flags(LOOPS[name]) == ["repetition loop"]


@pytest.mark.parametrize("name", sorted(NOT_LOOPS))
def test_ordinary_answers_are_not_loops(name):
    assert repetition_loop(NOT_LOOPS[name]) is None and answer_flags(NOT_LOOPS[name]) == []


def test_answer_flags():
    assert answer_flags("   ") == ["empty"]
    assert answer_flags("", n_new_tokens=1, max_new_tokens=16, stopped_by_eos=True) == ["empty"]
    assert answer_flags("ok", n_new_tokens=16, max_new_tokens=16) == ["stopped at max_new_tokens"]
    assert answer_flags("ok", n_new_tokens=16, max_new_tokens=16, stopped_by_eos=True) == []  # EOS was last
    assert answer_flags("ok", n_new_tokens=5, max_new_tokens=16, stopped_by_eos=False) == [
        "stopped at max_new_tokens"]
    assert answer_flags(LOOPS["words"], 30, 30) == ["stopped at max_new_tokens", "repetition loop"]


def test_compare_shows_each_answers_flags():
    before = [Generation(LOOPS["tag blocks"], 48, False, 48), Generation("19", 2, True, 48)]
    table = compare(["What is 9 × 9?", "What is 12 + 7?"], before, ["81", ""])
    html = table._repr_html_()
    assert html.count("⚠") == 2 and "⚠ empty" in html
    assert "stopped at max_new_tokens · repetition loop" in html
    assert "--- before training:  ⚠ stopped at max_new_tokens · repetition loop\n<reasoning>" in str(table)
    records = table.to_records()
    assert records[0]["flags"] == {"before training": ["stopped at max_new_tokens", "repetition loop"],
                                   "after training": []}
    assert records[1]["flags"] == {"before training": [], "after training": ["empty"]}
    assert records[0]["before training"] == LOOPS["tag blocks"]

"""unsloth_course.evaluation: held-out answer loss, preference metrics, math accuracy, perplexity and code
completions, each with its interval, tokenized exactly as TRL trains."""

import copy
import json
import math

import pytest
import torch
from datasets import Dataset

from unsloth_course import data, records
from unsloth_course import evaluation as ev
from unsloth_course.inference import Generation
from unsloth_course.recipes import get_recipe
from unsloth_course.trainers import common_args


@pytest.fixture(scope="module")
def sft_rows():
    return data.to_prompt_completion(Dataset.from_list(data.generate_sft_rows(4, seed=5)))


@pytest.fixture(scope="module")
def pairs():
    """Three short preference pairs (short keeps the CPU forward passes fast)."""
    def pair(question, chosen, rejected, system=""):
        return {"system": system, "question": question, "chosen": chosen, "rejected": rejected}

    return data.to_dpo_conversations(Dataset.from_list([
        pair("What is the capital of Japan?", "The capital of Japan is Tokyo.", "It is Osaka."),
        pair("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5, because two and two make five.", "Be brief."),
        pair("Name a primary color.", "Red is a primary color.", "I don't know."),
    ]))


@pytest.fixture(scope="module")
def generated_pairs():
    return data.to_dpo_conversations(Dataset.from_list(data.generate_dpo_rows(3, seed=2)))


class ForwardCounter:
    """Counts the model's forward passes (a hook on the outermost module)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- SFT: answer loss


def test_answer_loss_is_what_trls_completion_only_loss_trains(tiny_model, sft_rows, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = tiny_model
    args = common_args(get_recipe("lora", "quick"), str(tmp_path), gradient_checkpointing=False)
    config = SFTConfig(**args, max_length=64, completion_only_loss=True)
    trainer = SFTTrainer(model=copy.deepcopy(model), processing_class=tokenizer, train_dataset=sft_rows,
                         args=config)
    result = ev.answer_loss(model, tokenizer, sft_rows, max_length=64, batch_size=3)
    assert result.rows == 4 and result.truncated == 2  # two rows are cut at 64 tokens, as TRL cuts them
    for i, row in enumerate(sft_rows):
        trained = trainer.train_dataset[i]
        ids, start, _ = ev.completion_token_ids(tokenizer, row["prompt"], row["completion"], 64)
        assert trained["input_ids"] == ids
        trained_positions = [j for j, label in enumerate(trained["labels"]) if label != -100]
        assert trained_positions == list(range(start, len(ids)))
        assert tokenizer.decode(ids[start:]).endswith("<|im_end|>\n") or len(ids) == 64  # EOS and newline
        with torch.no_grad():  # the loss the model computes on TRL's labels, for this row
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([trained["labels"]])).loss
        assert result.nll[i] / result.tokens[i] == pytest.approx(float(loss), rel=1e-4)
    assert result.loss.value == pytest.approx(sum(result.nll) / sum(result.tokens))
    assert result.perplexity.value == pytest.approx(math.exp(result.loss.value))
    assert result.loss.low < result.loss.value < result.loss.high
    assert str(result).startswith(f"answer loss {result.loss.value:.3f} nats/token (95% CI ")
    assert f"; {sum(result.tokens):,} answer tokens, 2 cut at max_length" in str(result)


def test_answer_loss_is_the_same_for_any_batch_size_and_restores_training_mode(tiny_model, sft_rows):
    model, tokenizer = tiny_model
    one = ev.answer_loss(model, tokenizer, sft_rows, max_length=256, batch_size=1)
    model.train()
    try:
        many = ev.answer_loss(model, tokenizer, sft_rows, max_length=256, batch_size=3)
        assert model.training
    finally:
        model.eval()
    assert many.tokens == one.tokens and one.truncated == 0
    assert many.nll == pytest.approx(one.nll, rel=1e-4)  # right padding is masked
    assert str(many.loss) == str(one.loss)


def test_answer_loss_names_the_row_it_cannot_score(tiny_model, sft_rows):
    model, tokenizer = tiny_model
    bad = [sft_rows[0], {"prompt": "What is 2 + 2?", "completion": sft_rows[0]["completion"]}]
    with pytest.raises(ValueError, match="row 1: column 'prompt' must be a non-empty list of chat messages"):
        ev.answer_loss(model, tokenizer, bad)
    with pytest.raises(ValueError, match="row 0: its prompt is .* tokens, max_length=8 leaves no answer"):
        ev.answer_loss(model, tokenizer, sft_rows, max_length=8)
    with pytest.raises(ValueError, match="needs at least one row"):
        ev.answer_loss(model, tokenizer, [])


def token_loss(nll, tokens, what="answer"):
    return ev.TokenLoss(what, tuple(nll), tuple(tokens))


def test_compare_answer_loss_is_paired_on_the_same_rows():
    tokens = [10, 20, 30, 40, 50, 60]
    before = token_loss([2.0 * t for t in tokens], tokens)
    after = token_loss([(1.5 + 0.01 * i) * t for i, t in enumerate(tokens)], tokens)
    change = ev.compare_answer_loss(before, after)
    expected = sum(after.nll) / sum(tokens) - 2.0
    assert change.change.value == pytest.approx(expected) and change.change.high < 0
    assert change.perplexity_ratio.value == pytest.approx(math.exp(expected))
    assert change.improved.value == 1.0 and change.improved.n == 6
    assert str(change).startswith(f"answer loss 2.000 -> {2 + expected:.3f} nats/token, "
                                  f"change {expected:+.3f} nats/token (95% CI -0.")
    assert list(change.to_frame().index) == ["before", "after", "change (after - before)"]
    record = json.loads(json.dumps(records.json_safe(change)))
    assert record["loss_change"] == pytest.approx(expected) and len(record["loss_change_ci"]) == 2
    assert record["before"]["rows"] == 6 and record["rows_improved"]["value"] == 1.0
    with pytest.raises(ValueError, match="needs the same rows, tokenized alike"):
        ev.compare_answer_loss(before, token_loss([1.0] * 6, [11, *tokens[1:]]))
    with pytest.raises(ValueError, match="needs the same rows"):
        ev.compare_perplexity(before, token_loss(before.nll, tokens, what="text"))


# ---------------------------------------------------------------- CPT: perplexity


def test_perplexity_report_has_per_text_values_and_an_interval(tiny_model):
    model, tokenizer = tiny_model
    texts = ["The cat sat on the mat.", "def add(a, b):\n    return a + b\n", "Paris is in France."]
    report = ev.perplexity_report(model, tokenizer, texts, max_length=64)
    assert report.perplexity.value == pytest.approx(ev.perplexity(model, tokenizer, texts, 64), rel=1e-6)
    assert report.rows == 3 and report.tokens == tuple(len(tokenizer(t)["input_ids"]) - 1 for t in texts)
    assert report.perplexity.low <= report.perplexity.value <= report.perplexity.high
    assert str(report).startswith("text loss ") and "; perplexity " in str(report)
    cut = ev.perplexity_report(model, tokenizer, texts, max_length=4)
    assert cut.truncated == 3 and cut.tokens == (3, 3, 3)
    with pytest.raises(ValueError, match="text 1 has 1 token"):
        ev.perplexity_report(model, tokenizer, ["Hello there", "Hi"])
    change = ev.compare_perplexity(report, report)
    assert change.change.value == 0 and change.perplexity_ratio.value == 1
    table = ev.loss_table({"held-out code": change, "general text": change})
    assert list(table.index) == ["held-out code (3 rows)", "general text (3 rows)"]
    assert list(table.columns) == ["perplexity before", "perplexity after", "after / before",
                                   "loss change (nats/token)", "rows improved"]
    assert table.iloc[0]["after / before"] == "x1.000 (95% CI 1.000-1.000)"


# ---------------------------------------------------------------- DPO: preference metrics


def trained_copy(lora_model):
    """The fresh LoRA model with every lora_B set to small seeded values: a policy that differs from the
    reference (the model with its adapter off)."""
    model = copy.deepcopy(lora_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


def test_preference_metrics_before_training_leave_the_reward_undefined(tiny_model, lora_model, pairs):
    model, tokenizer = tiny_model
    base = ev.preference_metrics(model, tokenizer, pairs, 256, beta=0.1)
    assert base.reward_accuracy.value is None and "no adapter" in base.reward_note
    with ForwardCounter(lora_model) as counter:
        fresh = ev.preference_metrics(lora_model, tokenizer, pairs, 256, beta=0.1)
    assert counter.calls == 1  # one batch, the policy only: the reference would give the same numbers
    assert fresh.reward_accuracy.value is None and fresh.mean_reward_margin.value is None
    assert str(fresh.reward_accuracy) == ("n/a (policy = reference: the adapter is untrained (every lora_B "
                                          "is 0), every reward is exactly 0)")
    assert sum(fresh.policy, ()) == pytest.approx(sum(base.policy, ()), abs=1e-3)
    record = fresh.to_record()
    assert record["reward_accuracy"] is None and record["reward_accuracy_ci"] is None and record["pairs"] == 3
    # each answer is scored as DPOTrainer scores it: its tokens after the prompt, <|im_end|> and "\n" included
    items, lengths = [], []
    for row in pairs:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        for key in ("chosen", "rejected"):
            text = row[key][-1]["content"] + "<|im_end|>\n"
            items.append((prompt, text))
            lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    assert sum(base.lengths, ()) == tuple(lengths)
    assert sum(base.policy, ()) == pytest.approx(ev.completion_logprobs(model, tokenizer, items), abs=1e-3)


def test_preference_metrics_of_a_trained_adapter(lora_model, tiny_model, pairs):
    _, tokenizer = tiny_model
    model = trained_copy(lora_model)
    with ForwardCounter(model) as counter:
        result = ev.preference_metrics(model, tokenizer, pairs, 256, beta=0.5)
    assert counter.calls == 2  # one batch: one pass with the adapter, one without
    assert result.reward_note == "" and result.pairs == 3
    sequences, _ = ev._pair_sequences(tokenizer, pairs, 256)
    with torch.no_grad(), model.disable_adapter():
        scored = [-nll for nll, _ in ev._score(model, sequences, tokenizer.pad_token_id, batch_size=8)]
    reference = list(zip(scored[0::2], scored[1::2]))
    margins = [0.5 * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(result.policy, reference)]
    assert result.margins == pytest.approx(margins, abs=1e-4)
    assert result.reward_accuracy.value == sum(m > 0 for m in margins) / 3
    assert result.mean_reward_margin.value == pytest.approx(sum(margins) / 3, abs=1e-4)
    assert result.logp_accuracy.value == sum(c > r for c, r in result.policy) / 3
    normalized = [c / lc > r / lr for (c, r), (lc, lr) in zip(result.policy, result.lengths)]
    assert result.normalized_logp_accuracy.value == sum(normalized) / 3
    assert result.chosen_longer.value == sum(c > r for c, r in result.lengths) / 3
    one_by_one = ev.preference_metrics(model, tokenizer, pairs, 256, beta=0.5, batch_size=2)
    assert one_by_one.margins == pytest.approx(result.margins, abs=1e-4)  # the same for any batch size
    table = ev.preference_table({"before DPO": result, "after DPO": one_by_one})
    assert list(table.columns) == ["before DPO", "after DPO"]
    assert table.index.name == "3 held-out pairs (95% CI)"
    assert "reward accuracy" in table.index and "length-normalized log p accuracy" in table.index
    change = ev.preference_change(result, one_by_one)
    assert change["log p accuracy"].value == 0 and set(change) == {
        "log p accuracy", "length-normalized log p accuracy", "mean log p margin (nats)"}


def test_preference_metrics_tokenize_as_dpo_trainer(lora_model, tiny_model, generated_pairs, tmp_path):
    from trl import DPOConfig, DPOTrainer

    _, tokenizer = tiny_model
    config = DPOConfig(**common_args(get_recipe("dpo", "quick"), str(tmp_path), gradient_checkpointing=False),
                       max_length=48, truncation_mode="keep_start")
    pairs = generated_pairs
    trainer = DPOTrainer(model=copy.deepcopy(lora_model), ref_model=None, args=config, train_dataset=pairs,
                         processing_class=tokenizer)
    sequences, truncated = ev._pair_sequences(tokenizer, pairs, 48)
    assert truncated > 0
    for i in range(len(pairs)):
        row = trainer.train_dataset[i]
        (chosen, start), (rejected, _) = sequences[2 * i], sequences[2 * i + 1]
        assert row["prompt_ids"] == chosen[:start]
        assert (row["prompt_ids"] + row["chosen_ids"])[:48] == chosen
        assert (row["prompt_ids"] + row["rejected_ids"])[:48] == rejected


def test_preference_metrics_check_their_arguments(tiny_model, pairs):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match="beta=0 must be > 0"):
        ev.preference_metrics(model, tokenizer, pairs, beta=0)
    with pytest.raises(ValueError, match="pair 0: column 'chosen' must be a non-empty list"):
        ev.preference_metrics(model, tokenizer, [{**pairs[0], "chosen": "text"}])
    with pytest.raises(ValueError, match="pair 0: its prompt is .* tokens, max_length=10 leaves no answer"):
        ev.preference_metrics(model, tokenizer, pairs, max_length=10)


# ---------------------------------------------------------------- GRPO: math accuracy and stages


def test_math_accuracy(tiny_model):
    model, tokenizer = tiny_model
    rows = data.load_math_problems(n_train=1, n_eval=2, seed=1)["test"]
    result = ev.math_accuracy(model, tokenizer, rows, max_new_tokens=12)
    assert result.problems == 2 and len(result.completions) == 2
    assert all(isinstance(c, str) and c for c in result.completions)
    assert result.questions == tuple(rows["question"]) and result.levels == tuple(rows["level"])
    for estimate in (result.accuracy, result.strict_format, result.soft_format, *result.by_level.values()):
        assert 0 <= estimate.low <= estimate.value <= estimate.high <= 1 and estimate.percent
    assert result.stopped_at_limit == sum(not g.stopped_by_eos for g in result.generations)
    assert "answers stopped at max_new_tokens=12" in str(result)
    record = result.to_record()
    assert set(record) >= {"problems", "accuracy", "accuracy_ci", "strict_format", "soft_format",
                           "accuracy_by_level", "stopped_at_max_new_tokens"} and "completions" not in record


def math_result(correct, strict=None, levels=None):
    n = len(correct)
    return ev.MathAccuracy(tuple(f"q{i}" for i in range(n)), tuple(levels or [1] * n),
                           tuple(Generation("x", 5, True, 8) for _ in range(n)), tuple(correct),
                           tuple(strict or correct), tuple(strict or correct))


def test_stage_contributions_are_paired_changes_on_the_same_problems():
    levels = [1] * 10 + [2] * 10
    base = math_result([False] * 20, levels=levels)
    warm = math_result([True] * 4 + [False] * 16, strict=[True] * 15 + [False] * 5, levels=levels)
    after = math_result([True] * 10 + [True] * 2 + [False] * 8, strict=[True] * 20, levels=levels)
    stages = ev.stage_contributions(base, warm, after)
    assert stages.warmup["accuracy"].value == pytest.approx(0.2)
    assert stages.grpo["accuracy"].value == pytest.approx(0.4) and stages.grpo["accuracy"].excludes_zero()
    assert stages.total["accuracy"].value == pytest.approx(0.6)
    assert stages.warmup["strict format"].value == pytest.approx(0.75)
    level_2 = stages.grpo["accuracy, level 2"]
    assert level_2.value == pytest.approx(0.2) and level_2.n == 10
    frame = stages.to_frame()
    assert list(frame.columns) == ["warm-up (after warm-up - before)", "GRPO (after GRPO - after warm-up)",
                                   "total (after GRPO - before)"]
    assert frame.loc["accuracy", "GRPO (after GRPO - after warm-up)"].startswith("+40.0 points (95% CI +")
    assert records.json_safe(stages)["grpo"]["accuracy"]["value"] == 0.4
    table = ev.math_table({"before": base, "after warm-up": warm, "after GRPO": after})
    assert table.loc["accuracy", "after GRPO"] == "60.0% (95% CI 38.7-78.1%, n=20)"
    assert table.loc["stopped at max_new_tokens", "before"] == "0 of 20"
    with pytest.raises(ValueError, match="same problems in the same order: after has 3 problems, base 20"):
        ev.stage_contributions(base, warm, math_result([True] * 3))


# ---------------------------------------------------------------- CPT: code completions


HEAD = 'def total(values):\n    """Return the sum of the values."""\n    result = 0\n'


@pytest.mark.parametrize("completion, is_code", [
    ("    for value in values:\n        result += value\n    return result", True),
    ("    for value in values:\n        result += val", True),  # cut at max_new_tokens mid-word
    ("    for value in values:\n        result += (value *", True),  # cut inside an expression
    ("    return result\n\n\nprint(total([1, 2, 3]))", True),  # ends the function, goes on with code
    ("    return result\n```\n\nThis function adds the values.", False),  # closes a code block: prose
    ("```\n\nThe function above returns the total.", False),
    ("    This function returns the sum of the values, starting from zero.", False),  # prose, indented
    ("    # add the values\n    # then return", False),  # only comments
    ("", False),
    ("    return result +\nresult", False),  # not Python
])
def test_completion_is_code(completion, is_code):
    assert ev.completion_is_code(HEAD, completion) is is_code


def test_code_completion_prompts_end_inside_the_function():
    functions = [
        'def one_liner(x):\n    """Nothing follows its first line."""\n    return x\n',
        'def area(w, h):\n    """Area of a rectangle."""\n    if w < 0 or h < 0:\n        raise ValueError\n'
        '    return w * h\n',
        "def no_docstring(a):\n    b = a + 1\n    return b\n",
        "not python (",
        "x = 1\n",
    ]
    heads = data.code_completion_prompts(functions)
    assert heads == ['def area(w, h):\n    """Area of a rectangle."""\n    if w < 0 or h < 0:\n',
                     "def no_docstring(a):\n    b = a + 1\n"]
    assert data.code_completion_prompts(functions, n=1) == heads[:1]
    with pytest.raises(ValueError, match="only 2 of 5 functions have a head to complete"):
        data.code_completion_prompts(functions, n=3)
    held_out = data.stdlib_functions(20)
    assert all(h.endswith("\n") and ev.completion_is_code(h, "    pass") is not None
               for h in data.code_completion_prompts([f["text"] for f in held_out]))
    rate = ev.code_rate(heads, ["        return 0", "    return b"])
    assert (rate.value, rate.n) == (1.0, 2) and str(rate).startswith("100.0% (95% CI 34.2-100.0%, n=2)")


# ---------------------------------------------------------------- run records


def test_json_safe_records(tmp_path):
    record = {"estimate": ev.Estimate(0.123456789, 0.1, 0.2, 10, percent=True), "nan": float("nan"),
              "tuple": (1, 2.0000001), "numpy": __import__("numpy").float32(0.5), "tensor": torch.tensor(3),
              "result": math_result([True, False])}
    safe = records.json_safe(record)
    assert safe["estimate"] == {"value": 0.123457, "ci": [0.1, 0.2], "confidence": 0.95, "n": 10}
    assert safe["nan"] is None and safe["tuple"] == [1, 2.0] and safe["numpy"] == 0.5 and safe["tensor"] == 3
    assert safe["result"]["accuracy"] == 0.5 and safe["result"]["accuracy_ci"] == [0.0945312, 0.905469]
    path = records.write_run_record("evaluation-test", {"after": math_result([True]), "loss": 1.0}, tmp_path)
    written = json.loads(path.read_text())
    assert written["after"]["problems"] == 1 and written["loss"] == 1.0


def test_completion_logprobs_refuse_a_completion_cut_away_before_any_forward_pass():
    class NoModel:  # fails the test if the model is run
        def parameters(self):
            return iter([torch.zeros(1)])

        def __call__(self, **kwargs):
            raise AssertionError("the model ran")

    from unsloth_course.evaluation import completion_logprobs

    tokenizer = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 0,
                                 "__call__": lambda self, text, add_special_tokens=False: {
                                     "input_ids": list(range(1, len(text.split()) + 1))}})()
    with pytest.raises(ValueError, match="sequence 1: scoring starts at token 3 of 3; nothing to score"):
        completion_logprobs(NoModel(), tokenizer, [("a b", "c"), ("a b c", "d e")], max_length=3)

"""The runner hands the recipe's settings to the trainers (captured without training)."""

import pytest

from unsloth_course import hardware, standin, trainers
from unsloth_course.cli import run as runner
from unsloth_course.recipes import get_recipe


class Captured(Exception):
    """Raised by the fake trainer once it has the arguments."""


def _capture(store):
    def fake_trainer(*args, **kwargs):
        store.update(kwargs)
        raise Captured

    return fake_trainer


@pytest.mark.parametrize("technique", ["lora", "cpt"])
def test_packed_runs_pass_pad_to_multiple_of_to_the_trainer(technique, monkeypatch, tmp_path):

    store: dict = {}
    monkeypatch.setattr(trainers, "SFTTrainer", _capture(store))  # the builder run_sft calls
    monkeypatch.setattr(trainers, "UnslothTrainer", _capture(store))
    recipe = get_recipe(technique, "quick", packing=True, pad_to_multiple_of=512, n_train_rows=8, n_eval_rows=2,
                        packing_strategy="wrapped")
    with pytest.raises(Captured):
        runner.run(technique, recipe, tmp_path, runs_dir=tmp_path, train_only=True)
    assert store["args"].pad_to_multiple_of == 512 and store["args"].packing is True
    assert store["args"].packing_strategy == "wrapped"


def test_dpo_passes_pad_to_multiple_of_to_the_trainer(monkeypatch, tmp_path):

    store: dict = {}
    monkeypatch.setattr(trainers, "DPOTrainer", _capture(store))
    recipe = get_recipe("dpo", "quick", pad_to_multiple_of=64, n_train_rows=8, n_eval_rows=2)
    with pytest.raises(Captured):
        runner.run("dpo", recipe, tmp_path, runs_dir=tmp_path, train_only=True)
    assert store["args"].pad_to_multiple_of == 64


def test_the_recipe_attention_kernel_reaches_the_plain_model(monkeypatch, tmp_path):
    recipe = get_recipe("lora", "quick", attn_implementation="eager")
    model, _ = trainers.load_model(recipe)
    assert model.config._attn_implementation == "eager"
    # flex attention has no backward on a CPU: the plain backend says so and uses SDPA
    said = []
    monkeypatch.setattr(standin, "report_once", lambda key, message: said.append(message))
    assert standin._attention_kernel("flex_attention") == "sdpa" and "cannot train on a CPU" in said[0]
    assert standin._attention_kernel(None) is None and standin._attention_kernel("sdpa") == "sdpa"


def test_the_throughput_profiles_pack_rows_with_a_kernel_that_keeps_examples_apart():
    for technique in ("full", "lora", "cpt"):  # bfd: padding-free batches; the plain backend needs flex attention
        recipe = get_recipe(technique, "throughput")
        assert recipe.packing and recipe.packing_strategy == "bfd" and recipe.attn_implementation == "flex_attention"
        assert recipe.pad_to_multiple_of is None
    assert get_recipe("lora", "full").pad_to_multiple_of is None  # the notebooks' profile pads to the longest row
    assert get_recipe("dpo", "throughput").pad_to_multiple_of == 64


def test_pad_to_multiple_of_must_be_positive():
    with pytest.raises(ValueError, match="pad_to_multiple_of=0 must be a positive integer or None"):
        get_recipe("lora", "quick", pad_to_multiple_of=0)


def test_grpo_passes_continuous_batching_to_the_trainer(monkeypatch, tmp_path):

    store: dict = {}
    monkeypatch.setattr(trainers, "GRPOTrainer", _capture(store))
    recipe = get_recipe("grpo", "quick", continuous_batching=True, n_train_rows=8, n_eval_rows=2)
    with pytest.raises(Captured):
        runner.run("grpo", recipe, tmp_path, runs_dir=tmp_path, train_only=True)
    assert store["args"].use_transformers_continuous_batching is True
    assert get_recipe("grpo", "full").continuous_batching is False  # model.generate unless asked


def test_grpo_throughput_profile_turns_unsloths_sequence_packing_off_only_on_unsloth(monkeypatch, tmp_path, capsys):

    monkeypatch.setattr(hardware, "_reported", set())
    assert get_recipe("grpo", "throughput").unsloth_sequence_packing is False
    assert get_recipe("grpo", "full").unsloth_sequence_packing is None  # Unsloth's default in the notebooks
    calls = []

    def switch(enabled, trainer):
        calls.append(enabled)
        return []

    def stop(*args, **kwargs):
        raise Captured

    monkeypatch.setattr(runner, "set_grpo_sequence_packing", switch)
    monkeypatch.setattr(trainers, "GRPOTrainer", lambda **kwargs: object())  # the switch runs on the built trainer
    monkeypatch.setattr(runner, "train", stop)
    recipe = get_recipe("grpo", "quick", unsloth_sequence_packing=False, n_train_rows=8, n_eval_rows=2)
    for name, expected in (("plain", []), ("unsloth", [False])):
        monkeypatch.setattr(runner, "BACKEND", name)
        with pytest.raises(Captured):
            runner.run("grpo", recipe, tmp_path, runs_dir=tmp_path, train_only=True)
        assert calls == expected
    assert "the plain backend pads" in capsys.readouterr().out

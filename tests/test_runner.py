"""The runner hands the recipe's settings to the trainers (captured without training)."""

import pytest

from unsloth_course import runner
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
    import trl

    store: dict = {}
    monkeypatch.setattr(trl, "SFTTrainer", _capture(store))  # run_sft imports it from trl when it runs
    monkeypatch.setattr(runner, "UnslothTrainer", _capture(store))
    recipe = get_recipe(technique, "quick", packing=True, pad_to_multiple_of=512, n_train_rows=8, n_eval_rows=2)
    with pytest.raises(Captured):
        runner.run(technique, recipe, tmp_path, runs_dir=tmp_path, train_only=True)
    assert store["args"].pad_to_multiple_of == 512 and store["args"].packing is True


def test_the_throughput_profile_pads_packed_batches_to_one_shape():
    for technique in ("full", "lora", "cpt"):
        recipe = get_recipe(technique, "throughput")
        assert recipe.packing and recipe.pad_to_multiple_of is None and recipe.attn_implementation == "flex_attention"
    assert get_recipe("lora", "full").pad_to_multiple_of is None  # the notebooks' profile pads to the longest row


def test_pad_to_multiple_of_must_be_positive():
    with pytest.raises(ValueError, match="pad_to_multiple_of=0 must be a positive integer or None"):
        get_recipe("lora", "quick", pad_to_multiple_of=0)

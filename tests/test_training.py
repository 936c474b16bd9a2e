"""unsloth_course.training: optimizer/precision by hardware, shared trainer arguments, OOM advice, a real run."""

import copy
import math
from types import SimpleNamespace

from unsloth_course.backend import FastLanguageModel

import pytest
import torch
from transformers import TrainerCallback

from unsloth_course import data, hardware, settings
from unsloth_course.hardware import precision_args
from unsloth_course.measurement import StepClock
from unsloth_course.recipes import LORA_TARGETS, get_recipe
from unsloth_course.trainers import common_args
from unsloth_course.training import (
    NonFiniteGuard,
    NonFiniteTrainingError,
    is_oom,
    oom_advice,
    resolve_optim,
    train,
)


@pytest.fixture
def reported(monkeypatch):
    monkeypatch.setattr(hardware, "_reported", set())


def test_resolve_optim_on_cpu_says_it_once(reported, capsys):
    assert resolve_optim("adamw_8bit") == "adamw_torch"
    assert resolve_optim("paged_adamw_8bit") == "adamw_torch"
    assert resolve_optim("adamw_torch_fused") == "adamw_torch_fused"
    out = capsys.readouterr().out
    assert out.count("needs bitsandbytes on a CUDA GPU") == 1 and "'adamw_8bit'" in out


def test_precision_args_on_cpu():
    assert precision_args() == {"bf16": False, "fp16": False}


def test_common_args_from_the_recipe(reported):
    from trl import SFTConfig

    recipe = get_recipe("lora", "full")
    args = common_args(recipe, "out/lora", logging_steps=5)
    assert args["report_to"] == "none" and args["save_strategy"] == "no"
    assert args["include_num_input_tokens_seen"] == "non_padding"
    assert args["output_dir"] == "out/lora" and args["optim"] == "adamw_torch"
    assert (args["bf16"], args["fp16"]) == (False, False)
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "warmup_steps", "lr_scheduler_type", "weight_decay", "seed"):
        assert args[name] == getattr(recipe, name), name
    assert args["logging_steps"] == 5  # overrides win
    assert args["logging_nan_inf_filter"] is False  # a NaN loss is logged as NaN, never as 0
    config = SFTConfig(**args)  # TRL accepts every key
    assert (config.max_steps, config.learning_rate) == (recipe.max_steps, recipe.learning_rate)


def test_oom_advice_halves_and_doubles():
    advice = oom_advice(get_recipe("lora", "full", per_device_train_batch_size=2, gradient_accumulation_steps=4))
    assert advice.startswith("CUDA out of memory. Try, in this order:")
    assert "per_device_train_batch_size=1 with gradient_accumulation_steps=8 (same effective batch 8)" in advice
    assert "max_seq_length=256 (now 512)" in advice
    assert "gradient checkpointing is already on" in advice
    assert "optimizer is already 8-bit" in advice
    small = oom_advice(get_recipe("lora", "quick", per_device_train_batch_size=1, gradient_checkpointing=False,
                                  optim="adamw_torch", max_seq_length=200))
    assert "per_device_train_batch_size is already 1" in small
    assert "max_seq_length=128 (now 200)" in small
    assert "use_gradient_checkpointing='unsloth'" in small
    assert "optim='adamw_8bit'" in small


def test_oom_advice_never_suggests_a_longer_sequence():
    advice = oom_advice(get_recipe("lora", "quick", max_seq_length=100))
    assert "max_seq_length=128 (now 100)" not in advice


def test_is_oom():
    assert is_oom(torch.cuda.OutOfMemoryError("boom"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))


class RaisingTrainer:
    def __init__(self, error):
        self.error = error
        self.callbacks = []

    def add_callback(self, callback):  # train() attaches its StepClock and NonFiniteGuard
        self.callbacks.append(callback)

    def remove_callback(self, callback):  # ... and removes them, also when training fails
        self.callbacks.remove(callback)

    def train(self, resume_from_checkpoint=None):
        raise self.error


def test_train_prints_advice_on_oom_and_reraises(capsys):
    recipe = get_recipe("lora", "full")
    trainer = RaisingTrainer(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(trainer, recipe)
    assert capsys.readouterr().out.strip() == oom_advice(recipe)
    assert trainer.callbacks == []
    with pytest.raises(RuntimeError, match="shape"):
        train(RaisingTrainer(RuntimeError("shape mismatch")), recipe)
    assert capsys.readouterr().out == ""


def test_sampling_from_nan_logits_is_a_non_finite_error():
    """GRPO samples completions: NaN/inf logits fail in torch.multinomial, said as what it is."""
    trainer = RaisingTrainer(RuntimeError("probability tensor contains either `inf`, `nan` or element < 0"))
    trainer.state = SimpleNamespace(global_step=3)
    trainer.args = SimpleNamespace(fp16=True, bf16=False, learning_rate=5e-6, logging_nan_inf_filter=False)
    with pytest.raises(NonFiniteTrainingError, match=r"step 4: the sampling distribution of a generation is "
                                                     r"nan/inf \(the logits overflowed .*\(fp16\); likely an fp16"):
        train(trainer, get_recipe("grpo", "quick"))


def test_a_real_lora_sft_run(tiny_model, tmp_path, capsys):
    from trl import SFTConfig, SFTTrainer

    base, tokenizer = tiny_model
    recipe = get_recipe("lora", "quick", max_steps=2)
    model = FastLanguageModel.get_peft_model(copy.deepcopy(base), r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                             target_modules=list(LORA_TARGETS))
    train_set = data.to_prompt_completion(data.load_alpaca(n_rows=8))
    config = SFTConfig(**common_args(recipe, str(tmp_path), gradient_checkpointing=False),
                       max_length=recipe.max_seq_length, completion_only_loss=True)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config)
    summary = train(trainer, recipe)
    assert not any(isinstance(c, StepClock) for c in trainer.callback_handler.callbacks)  # removed after training
    assert (summary["technique"], summary["profile"], summary["steps"]) == ("lora", "quick", 2)
    assert summary["step_time_median_s"] > 0 and summary["steady_tokens_per_s"] > 0  # StepClock attached
    assert summary["tokens"] > 0 and summary["tokens_per_s"] > 0 and summary["runtime_s"] > 0
    assert summary["trainable_pct"] == pytest.approx(3.50, abs=0.05)
    assert [step for step, _ in summary["loss_curve"]] == [1, 2]
    assert math.isfinite(summary["first_loss"]) and math.isfinite(summary["last_loss"])
    assert summary["memory_device"] == "cpu" and summary["memory_peak_gb"] > 0
    assert "for 2 steps" in capsys.readouterr().out
    lora_b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0  # the adapters trained


def test_trainer_fake_summary_verbose_off(capsys):
    trainer = SimpleNamespace(
        train=lambda resume_from_checkpoint=None: SimpleNamespace(metrics={"train_runtime": 1.0}),
        state=SimpleNamespace(log_history=[], global_step=0, num_input_tokens_seen=0),
        model=torch.nn.Linear(2, 2),
        add_callback=lambda callback: None,
        remove_callback=lambda callback: None,
    )
    summary = train(trainer, get_recipe("cpt", "quick"), technique="custom", verbose=False, note="x")
    assert (summary["technique"], summary["note"], summary["first_loss"]) == ("custom", "x", None)
    assert capsys.readouterr().out == ""


def test_t4_emulation_is_fp16_only(monkeypatch):

    monkeypatch.setenv("UNSLOTH_COURSE_EMULATE_T4", "1")
    assert settings.emulate_t4() and not hardware.is_bfloat16_supported()
    assert hardware.apply_t4_emulation() is None  # no CUDA here: nothing to cap
    monkeypatch.setenv("UNSLOTH_COURSE_EMULATE_T4", "0")
    assert not settings.emulate_t4()


# ---------------------------------------------------------------- non-finite loss or gradient norm
class PoisonAt(TrainerCallback):
    """Sets one LoRA matrix to NaN as optimizer step `step` begins: from there the loss is NaN."""

    def __init__(self, model, step):
        self.model, self.step = model, step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                self.model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.fill_(math.nan)


@pytest.mark.slow
def test_a_nan_loss_stops_training_at_that_step_and_saves_nothing(tiny_model, tmp_path):
    """logging_steps=3 and 2 accumulated micro-batches: the NaN of step 2 stops the run at step 2 (not at the
    logging step 3), before its optimizer step and checkpoint; the old code ran on and saved NaN weights."""
    from trl import SFTConfig, SFTTrainer

    base, tokenizer = tiny_model
    recipe = get_recipe("lora", "quick", max_steps=4, logging_steps=3, gradient_accumulation_steps=2,
                        per_device_train_batch_size=1)
    model = FastLanguageModel.get_peft_model(copy.deepcopy(base), r=8, target_modules=list(LORA_TARGETS))
    config = SFTConfig(**common_args(recipe, str(tmp_path), gradient_checkpointing=False, save_strategy="steps",
                                     save_steps=1), max_length=recipe.max_seq_length, completion_only_loss=True)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data.to_prompt_completion(
        data.load_alpaca(n_rows=8)), args=config, callbacks=[PoisonAt(model, 2)])
    with pytest.raises(NonFiniteTrainingError) as stopped:
        train(trainer, recipe)
    message = str(stopped.value)
    assert message.startswith("training stopped at step 2: the loss is nan (fp32); likely a too-high learning")
    assert "learning_rate=5e-05 (now 0.0002)" in message
    assert (stopped.value.step, stopped.value.what) == (2, "loss")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]  # step 2 never saved
    assert trainer.state.global_step == 1
    assert not any(isinstance(c, NonFiniteGuard) for c in trainer.callback_handler.callbacks)


class FakeScaler:
    def __init__(self, scale=65536.0):
        self.scale = scale

    def is_enabled(self):
        return True

    def get_scale(self):
        return self.scale


def _guarded(precision="fp32", scaler=None, loss=1.0, grad=1.0):
    model = torch.nn.Linear(2, 1)
    model.weight.grad = torch.full_like(model.weight, grad)
    args = SimpleNamespace(fp16=precision == "fp16", bf16=precision == "bf16", learning_rate=1e-4)
    trainer = SimpleNamespace(args=args, model=model, _tr_loss=torch.tensor(loss),
                              accelerator=SimpleNamespace(scaler=scaler))
    return NonFiniteGuard(trainer), SimpleNamespace(global_step=4)


def test_guard_checks_every_step_and_every_technique_s_log():
    guard, state = _guarded()
    guard.on_pre_optimizer_step(None, state, None)  # finite: nothing happens
    guard.on_log(None, state, None, logs={"loss": 0.0, "reward": 0.5, "kl": 0.0, "grad_norm": 0.1})  # GRPO's
    with pytest.raises(NonFiniteTrainingError, match=r"step 5: the gradient norm is inf \(fp32\)"):
        _guarded(grad=math.inf)[0].on_pre_optimizer_step(None, state, None)
    with pytest.raises(NonFiniteTrainingError, match="step 5: the loss is nan"):
        _guarded(loss=math.nan)[0].on_pre_optimizer_step(None, state, None)
    for logs in ({"loss": math.nan, "rewards/chosen": 0.1}, {"loss": 0.7, "grad_norm": math.inf}):  # DPO's
        with pytest.raises(NonFiniteTrainingError, match="step 4: the logged"):
            guard.on_log(None, state, None, logs=logs)
    with pytest.raises(NonFiniteTrainingError, match=r"\(bf16\); bf16 has fp32's range.*learning_rate=2\.5e-05"):
        _guarded("bf16", loss=math.inf)[0].on_pre_optimizer_step(None, state, None)


def test_fp16_overflows_are_the_scalers_until_the_scale_collapses():
    scaler = FakeScaler()
    guard, state = _guarded("fp16", scaler=scaler, grad=math.inf)
    guard.on_pre_optimizer_step(None, state, None)  # the scaler skips this step and halves its scale
    guard.on_log(None, state, None, logs={"loss": 2.0, "grad_norm": math.inf})
    guard.on_step_end(None, state, None)
    assert guard.skipped_steps == 1
    scaler.scale = 0.5  # gradients overflow fp16 even unscaled
    with pytest.raises(NonFiniteTrainingError) as stopped:
        guard.on_step_end(None, state, None)
    assert "loss scale down to 0.5 after 1 skipped step(s) (fp16); likely an fp16 overflow" in str(stopped.value)
    assert "keep fp32 master weights" in str(stopped.value) and "bf16 GPU" in str(stopped.value)
    with pytest.raises(NonFiniteTrainingError, match="the loss is nan"):  # a NaN loss is never the scaler's
        _guarded("fp16", scaler=FakeScaler(), loss=math.nan)[0].on_pre_optimizer_step(None, state, None)


def test_train_switches_off_the_nan_filter_of_a_trainer_built_elsewhere():
    args = SimpleNamespace(logging_nan_inf_filter=True)
    trainer = SimpleNamespace(
        args=args, train=lambda resume_from_checkpoint=None: SimpleNamespace(metrics={"train_runtime": 1.0}),
        state=SimpleNamespace(log_history=[], global_step=0, num_input_tokens_seen=0),
        model=torch.nn.Linear(2, 2), add_callback=lambda callback: None, remove_callback=lambda callback: None)
    train(trainer, get_recipe("lora", "quick"), verbose=False)
    assert args.logging_nan_inf_filter is False

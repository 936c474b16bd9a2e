"""Measure what the merged copy's precision costs: a short LoRA run, then its adapter model against merges
saved in bfloat16 and in float32 (export.save_merged(..., dtype=...)), on held-out chat texts.

    python -m tools.merge_precision [--steps 8] [--texts 32]

Reported per merge: the share of positions where the merged model predicts the same next token as the adapter
model (evaluation.next_token_agreement), the largest |logit difference|, and for the LoRA-targeted weights the
share whose merged value equals the base weight (the update rounded away entirely) and the rounding error
relative to the update's size. The base model's agreement with the adapter model shows how much the run changed.
Merged models are computed in float32 (as a CPU loads them), so the differences are the stored weights' only.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

from unsloth_course.backend import FastLanguageModel

import torch
from safetensors.torch import load_file

from unsloth_course import data, trainers
from unsloth_course.evaluation import next_token_agreement
from unsloth_course.export import save_merged
from unsloth_course.recipes import get_recipe
from unsloth_course.training import train


def max_logit_difference(model_a, model_b, tokenizer, texts, max_length: int = 256) -> float:
    worst = 0.0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            worst = max(worst, float((model_a(input_ids=ids).logits - model_b(input_ids=ids).logits).abs().max()))
    return worst


def rounding(merged_dir: Path, base: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> dict:
    """For the weights LoRA changed: share whose stored value is the base value, and ||stored - exact|| / ||update||."""
    stored = load_file(str(merged_dir / "model.safetensors"))
    same = total = 0
    error = update = 0.0
    for name, want in exact.items():
        got = stored[name].float()
        delta = want - base[name]
        changed = delta != 0
        same += int((got == base[name])[changed].sum())
        total += int(changed.sum())
        error += float((got - want).pow(2).sum())
        update += float(delta.pow(2).sum())
    return {"update_rounded_away": same / total, "relative_rounding_error": (error / update) ** 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--texts", type=int, default=32)
    args = parser.parse_args()
    recipe = get_recipe("lora", "quick", max_steps=args.steps)
    model, tokenizer = trainers.load_model(recipe)
    base_state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    model = trainers.add_lora(model, recipe)
    rows = data.load_alpaca(n_rows=recipe.n_train_rows + args.texts, seed=recipe.seed)
    train_set = data.to_prompt_completion(rows.select(range(recipe.n_train_rows)))
    held_out = rows.select(range(recipe.n_train_rows, len(rows)))
    with tempfile.TemporaryDirectory() as work:
        trainer = trainers.sft_trainer(recipe, model, tokenizer, train_set, work, gradient_checkpointing=False)
        summary = train(trainer, recipe, verbose=False)
        model.eval()
        texts = [tokenizer.apply_chat_template(data.row_to_messages(r), tokenize=False) for r in held_out]
        merged_exact = copy.deepcopy(model).merge_and_unload()  # W + (alpha/r) B A in float32
        exact = {k: v.detach().float() for k, v in merged_exact.state_dict().items()
                 if k in base_state and not torch.equal(v.float(), base_state[k])}
        del merged_exact
        base_model, _ = FastLanguageModel.from_pretrained(max_seq_length=recipe.max_seq_length)
        results = {"steps": summary["steps"], "learning_rate": recipe.learning_rate, "lora_r": recipe.lora_r,
                   "texts": len(texts), "loss": [summary["first_loss"], summary["last_loss"]],
                   "base_vs_adapter_agreement": round(next_token_agreement(model, base_model, tokenizer, texts), 4),
                   "base_vs_adapter_max_logit_diff": round(max_logit_difference(model, base_model, tokenizer, texts),
                                                           4)}
        for dtype in ("bfloat16", "float32"):
            folder = Path(work) / f"merged-{dtype}"
            save_merged(model, tokenizer, folder, dtype=dtype)
            merged, _ = FastLanguageModel.from_pretrained(model_name=str(folder), max_seq_length=recipe.max_seq_length,
                                                          dtype=torch.float32)
            results[dtype] = {
                "size_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1),
                "agreement": round(next_token_agreement(model, merged, tokenizer, texts), 4),
                "max_logit_diff": round(max_logit_difference(model, merged, tokenizer, texts), 4),
                **{k: round(v, 4) for k, v in rounding(folder, base_state, exact).items()},
            }
            del merged
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Recompute, on the CPU in float32, the loss of the first packed batch an SFT recipe trains on: each packed example
run through the model alone, cross-entropy over its completion tokens. It checks that a backend's logged step-1
loss is the loss of that batch (padding-free packing keeps the examples apart).

    UNSLOTH_COURSE_BACKEND=plain python scripts/first_batch_loss.py full throughput

On 2026-11-30 (2 CPU cores, 63 s for the forward passes): 1.6939 over 11,678 completion tokens of 322 examples; the plain backend
logged 1.6935 for step 1 of the same recipe on the H200 (docs/gpu_logs/2026-11-30/m-full-full-plain.log.txt).
"""

import sys
import time

import torch
from trl import SFTTrainer

from unsloth_course import data
from unsloth_course.recipes import get_recipe
from unsloth_course.runner import _load, sft_config


def main(technique: str = "full", profile: str = "throughput") -> None:
    recipe = get_recipe(technique, profile)
    model, tokenizer = _load(recipe, full_finetuning=True)
    model = model.float().eval()
    train_set = data.to_prompt_completion(data.load_alpaca(recipe.n_train_rows, recipe.seed))
    config = sft_config(recipe, "outputs/first_batch_loss")  # the batches run_sft trains on
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config)
    batch = next(iter(trainer.get_train_dataloader()))
    if "position_ids" not in batch or batch["input_ids"].size(0) != 1:
        raise SystemExit(f"{technique}/{profile}: not a padding-free packed batch (packing={recipe.packing})")
    ids, labels, positions = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [len(ids)]
    total, count, start_time = 0.0, 0, time.time()
    with torch.no_grad():
        for a, b in zip(starts[:-1], starts[1:]):
            logits = model(input_ids=ids[a:b][None]).logits[0, :-1]
            targets = labels[a + 1:b]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    print(f"{technique}/{profile} first batch: loss {total / count:.4f} over {count:,} completion tokens of "
          f"{len(starts) - 1} examples, {len(ids):,} tokens ({time.time() - start_time:.0f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:])

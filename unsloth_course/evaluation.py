"""Evaluations: perplexity, preference accuracy (DPO) and math accuracy/format compliance (GRPO)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from unsloth_course.inference import chat, inference_mode, model_device, padding_side
from unsloth_course.rewards import correctness_reward, soft_format_reward, strict_format_reward


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 512, batch_size: int = 4) -> float:
    """exp(mean next-token loss) over all tokens of `texts` (padding excluded)."""
    if not texts:
        raise ValueError("perplexity needs at least one text")
    device = model_device(model)
    total_loss, total_tokens = 0.0, 0
    # positions count from the start of each row (a tokenizer saved after generating may say left)
    with padding_side(tokenizer, "right"), inference_mode(model):
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length).to(device)
            logits = model(**enc).logits[:, :-1].float()
            target = enc["input_ids"][:, 1:]
            mask = enc["attention_mask"][:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            total_loss += nll[mask].sum().item()
            total_tokens += int(mask.sum())
    return math.exp(total_loss / total_tokens)


@torch.no_grad()
def completion_logprobs(model, tokenizer, items: Sequence[tuple[str, str]], max_length: int = 512,
                        batch_size: int = 16) -> list[float]:
    """For each (prompt, completion) pair (both already templated): the sum of the completion tokens'
    log-probabilities given the prompt. Rows are right-padded and scored `batch_size` at a time."""
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[float] = []
    for i in range(0, len(items), batch_size):
        rows, starts = [], []
        for prompt, completion in items[i:i + batch_size]:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            rows.append((prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"])[:max_length])
            starts.append(len(prompt_ids))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(2, ids[:, 1:, None])[..., 0]
        for row, (r, start) in enumerate(zip(rows, starts)):
            results.append(float(picked[row, start - 1:len(r) - 1].sum()))
    return results


def completion_logprob(model, tokenizer, prompt: str, completion: str, max_length: int = 512) -> float:
    """Sum of log-probabilities of `completion`'s tokens given `prompt` (both already templated)."""
    return completion_logprobs(model, tokenizer, [(prompt, completion)], max_length)[0]


def preference_accuracy(model, tokenizer, pairs, max_length: int = 512, beta: float = 0.1) -> dict:
    """On prompt/chosen/rejected pairs (conversational), how often the model prefers the chosen answer.

    `logp_accuracy`: log p(chosen) > log p(rejected) under the model.
    `reward_accuracy` (LoRA models only): the DPO implicit reward, beta * (policy - reference) log-ratio,
    is higher for chosen; the reference is the same model with its adapters disabled, which equals TRL's
    frozen "ref" adapter copy when training started from a fresh (zero) adapter, as in notebook 3.
    """
    items = []
    for row in pairs:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        items += [(prompt, row["chosen"][-1]["content"] + tokenizer.eos_token),
                  (prompt, row["rejected"][-1]["content"] + tokenizer.eos_token)]

    def rows_logps(m) -> list[tuple[float, float]]:
        scores = completion_logprobs(m, tokenizer, items, max_length)
        return list(zip(scores[0::2], scores[1::2]))

    with inference_mode(model):
        policy = rows_logps(model)
        reference = None
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                reference = rows_logps(model)
    n = len(policy)
    result = {"pairs": n, "logp_accuracy": sum(c > r for c, r in policy) / n,
              "mean_logp_margin": sum(c - r for c, r in policy) / n}
    if reference is not None:
        margins = [beta * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, reference)]
        result["reward_accuracy"] = sum(m > 0 for m in margins) / n
        result["mean_reward_margin"] = sum(margins) / n
    return result


def math_accuracy(model, tokenizer, rows, max_new_tokens: int = 128, batch_size: int = 16) -> dict:
    """Greedy answers to held-out math problems: accuracy, strict/soft format compliance, and the answers."""
    prompts = [row["prompt"] for row in rows]
    answers_ref = [str(row["answer"]) for row in rows]
    completions = chat(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    correct = correctness_reward(prompts, completions, answer=answers_ref)
    strict = strict_format_reward(prompts, completions)
    soft = soft_format_reward(prompts, completions)
    n = len(rows)
    return {
        "problems": n,
        "accuracy": sum(c > 0 for c in correct) / n,
        "strict_format": sum(s > 0 for s in strict) / n,
        "soft_format": sum(s > 0 for s in soft) / n,
        "completions": completions,
    }


@torch.no_grad()
def next_token_agreement(model_a, model_b, tokenizer, texts: Sequence[str], max_length: int = 256) -> float:
    """Share of positions where two models predict the same next token on the same texts (teacher forcing).

    Greedy generation amplifies a single near-tie into a different continuation; comparing predictions
    position by position measures whether two checkpoints (e.g. LoRA vs its 16-bit merge) really agree.
    """
    same = total = 0
    with inference_mode(model_a), inference_mode(model_b):
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            a = model_a(input_ids=ids.to(model_device(model_a))).logits.argmax(-1).cpu()
            b = model_b(input_ids=ids.to(model_device(model_b))).logits.argmax(-1).cpu()
            same += int((a == b).sum())
            total += a.numel()
    return same / total

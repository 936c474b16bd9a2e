"""Evaluations: perplexity, preference accuracy (DPO) and math accuracy/format compliance (GRPO)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .inference import model_device

@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 512, batch_size: int = 4) -> float:
    """exp(mean next-token loss) over all tokens of `texts` (padding excluded)."""
    if not texts:
        raise ValueError("perplexity needs at least one text")
    from .inference import inference_mode, padding_side

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
def completion_logprob(model, tokenizer, prompt: str, completion: str, max_length: int = 512) -> float:
    """Sum of log-probabilities of `completion`'s tokens given `prompt` (both already templated)."""
    device = model_device(model)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = (prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"])[:max_length]
    ids = torch.tensor([full_ids], device=device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[len(prompt_ids) - 1:].sum())


def preference_accuracy(model, tokenizer, pairs, max_length: int = 512, beta: float = 0.1) -> dict:
    """On prompt/chosen/rejected pairs (conversational), how often the model prefers the chosen answer.

    `logp_accuracy`: log p(chosen) > log p(rejected) under the model.
    `reward_accuracy` (LoRA models only): the DPO implicit reward, beta * (policy - reference) log-ratio,
    is higher for chosen; the reference is the same model with its adapters disabled, which equals TRL's
    frozen "ref" adapter copy when training started from a fresh (zero) adapter, as in notebook 3.
    """
    from .inference import inference_mode

    def rows_logps(m) -> list[tuple[float, float]]:
        out = []
        for row in pairs:
            prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            chosen = row["chosen"][-1]["content"] + tokenizer.eos_token
            rejected = row["rejected"][-1]["content"] + tokenizer.eos_token
            out.append((completion_logprob(m, tokenizer, prompt, chosen, max_length),
                        completion_logprob(m, tokenizer, prompt, rejected, max_length)))
        return out

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
    from .inference import chat
    from .rewards import correctness_reward, soft_format_reward, strict_format_reward

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
    from .inference import inference_mode

    same = total = 0
    with inference_mode(model_a), inference_mode(model_b):
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            a = model_a(input_ids=ids.to(model_device(model_a))).logits.argmax(-1).cpu()
            b = model_b(input_ids=ids.to(model_device(model_b))).logits.argmax(-1).cpu()
            same += int((a == b).sum())
            total += a.numel()
    return same / total

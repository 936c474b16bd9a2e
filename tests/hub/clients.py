"""Run the real Hub clients in this process and print what they returned or raised, one JSON line per call.

    python tests/hub/clients.py KIND:REPO[:CONFIG] ...

KIND is tokenizer or model (transformers' Auto classes), dataset (load_dataset, split "train") or stream
(the same with streaming=True). HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE come from the environment, read
fresh by this process. Each call prints `RESULT {"call": ..., "value": {...}}`, or `"error": [...]`: the
exception chain, outermost first, as "module.Class: message".
"""

from __future__ import annotations

import json
import logging
import sys

SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _tokenizer(repo: str) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(repo)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    return {"class": type(tokenizer).__name__, "ids": tokenizer("Hello world")["input_ids"], "chat": chat,
            "special": {k: getattr(tokenizer, k) for k in SPECIAL_TOKENS}}


def _model(repo: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(repo)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    top5 = logits[0, -1].topk(5).indices.tolist()  # the next-token ids: same weights, same ids
    return {"class": type(model).__name__, "shape": list(logits.shape), "top5": top5}


def _dataset(repo: str, *config: str) -> dict:
    from datasets import load_dataset

    dataset = load_dataset(repo, *config, split="train")
    return {"rows": dataset.num_rows, "features": dataset.features.to_dict(), "first": dataset[0]}


def _stream(repo: str, *config: str) -> dict:
    from datasets import load_dataset

    rows = list(load_dataset(repo, *config, split="train", streaming=True))
    return {"rows": len(rows), "columns": sorted(rows[0]) if rows else [], "first": rows[0] if rows else None}


CALLS = {"tokenizer": _tokenizer, "model": _model, "dataset": _dataset, "stream": _stream}


def exception_chain(exc: BaseException | None) -> list[str]:
    """`exc`, its __cause__ (or __context__), and so on: "module.Class: message" each."""
    chain: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        message = " ".join(str(exc).split())
        chain.append(f"{type(exc).__module__}.{type(exc).__qualname__}: {message[:500]}")
        exc = exc.__cause__ or exc.__context__
    return chain


def main(calls: list[str]) -> None:
    logging.disable(logging.WARNING)
    for call in calls:
        kind, *args = call.split(":")
        try:
            result = {"call": call, "value": CALLS[kind](*args)}
        except Exception as exc:  # the point: record what the client raised
            result = {"call": call, "error": exception_chain(exc)}
        print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

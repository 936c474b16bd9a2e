"""Answer prompts with a model (greedy by default) and show before/after answers side by side."""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from unsloth_course.backend import FastLanguageModel  # Unsloth before transformers: see backend

import torch
from transformers import TextStreamer

Message = dict
Prompt = str | Sequence[Message]


def _as_messages(prompt: Prompt, system: str | None) -> list[Message]:
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


@contextmanager
def padding_side(tokenizer, side: str) -> Iterator[None]:
    """Pad on `side` ("left" to generate, "right" to score) inside the block; restore it afterwards.

    A fast tokenizer's Rust backend also remembers the direction of its last padded call, and `save_pretrained`
    writes that into tokenizer.json, from which transformers 5 reads `padding_side` on reload: so a tokenizer saved
    after generating came back padding on the left. The backend's padding is cleared on entry and exit (every
    padded call sets it again).
    """
    previous = tokenizer.padding_side
    _clear_backend_padding(tokenizer)
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = previous
        _clear_backend_padding(tokenizer)


def _clear_backend_padding(tokenizer) -> None:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and getattr(backend, "padding", None) is not None:
        backend.no_padding()


@contextmanager
def inference_mode(model) -> Iterator[None]:
    """Switch the model to inference (Unsloth's fast path on GPU) and back to training afterwards."""
    was_training = model.training
    FastLanguageModel.for_inference(model)
    try:
        yield
    finally:
        if was_training:
            FastLanguageModel.for_training(model)


def model_device(model) -> torch.device:
    """Where the model computes: its first accelerator parameter, else the CPU.

    Not simply the first parameter: Unsloth keeps a frozen copy of the embeddings on the CPU when
    embed_tokens/lm_head train (CPT), so the first parameter can sit on the CPU while the model runs on CUDA.
    """
    first = None
    for param in model.parameters():
        if param.device.type != "cpu":
            return param.device
        first = first or param.device
    return first or torch.device("cpu")



def chat(
    model,
    tokenizer,
    prompts: Prompt | Sequence[Prompt],
    max_new_tokens: int = 128,
    system: str | None = None,
    stream: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> str | list[str]:
    """Answer one prompt (returns str) or many (returns list[str]) with the chat template; greedy by default.

    A prompt is a user message string or a list of chat messages.
    """
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be > 0")
    single = isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], dict)
    )
    batch = [prompts] if single else list(prompts)
    texts = [
        tokenizer.apply_chat_template(_as_messages(p, system), tokenize=False, add_generation_prompt=True)
        for p in batch
    ]
    answers = [a.strip() for a in generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, stream=stream,
                                           do_sample=do_sample, temperature=temperature, batch_size=batch_size)]
    return answers[0] if single else answers


def generate(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int = 128,
    stream: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[str]:
    """Continue raw texts (already templated, or plain text for a base/CPT model); returns new text only."""
    answers: list[str] = []
    # decoder-only models generate after the last real token: pad on the left
    with padding_side(tokenizer, "left"), inference_mode(model), torch.no_grad():
        step = 1 if stream else batch_size
        for start in range(0, len(texts), step):
            chunk = list(texts[start:start + step])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model_device(model)) for k, v in enc.items()}
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            if do_sample:
                kwargs["temperature"] = temperature
            if stream:
                kwargs["streamer"] = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            # a continuation keeps its leading whitespace (code indentation); chat answers are stripped in chat()
            answers += [a.rstrip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


@dataclass
class Comparison:
    """Prompts with two columns of answers; an HTML table in notebooks, text in a terminal."""

    prompts: list[str]
    columns: dict[str, list[str]]

    def _repr_html_(self) -> str:
        cell = 'style="text-align:left;vertical-align:top;white-space:pre-wrap;max-width:420px"'
        head = "".join(f"<th {cell}>{html.escape(n)}</th>" for n in ["prompt", *self.columns])
        rows = []
        for i, prompt in enumerate(self.prompts):
            values = [prompt, *(col[i] for col in self.columns.values())]
            rows.append("<tr>" + "".join(f"<td {cell}>{html.escape(v)}</td>" for v in values) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def __str__(self) -> str:
        parts = []
        for i, prompt in enumerate(self.prompts):
            parts.append(f"=== {prompt}")
            parts += [f"--- {name}:\n{col[i]}" for name, col in self.columns.items()]
        return "\n".join(parts)

    __repr__ = __str__

    def to_records(self) -> list[dict]:
        return [{"prompt": p, **{n: c[i] for n, c in self.columns.items()}} for i, p in enumerate(self.prompts)]


def compare(prompts: Sequence[Prompt], before: Sequence[str], after: Sequence[str],
            labels: tuple[str, str] = ("before training", "after training")) -> Comparison:
    """The same prompts answered before and after training, side by side."""
    if not (len(prompts) == len(before) == len(after)):
        raise ValueError(f"compare needs one answer per prompt: {len(prompts)} prompts, "
                         f"{len(before)} before, {len(after)} after")
    shown = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return Comparison(shown, {labels[0]: list(before), labels[1]: list(after)})

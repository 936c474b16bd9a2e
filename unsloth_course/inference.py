"""Answer prompts with a model (greedy by default) and show before/after answers side by side."""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class Generation:
    """One generated answer: its text, how many tokens were generated, and whether it ended with EOS.

    str(generation) is the text, so a Generation prints like the answer itself; `flags` says what is wrong
    with it, if anything (answer_flags).
    """

    text: str
    new_tokens: int
    stopped_by_eos: bool
    max_new_tokens: int

    def __str__(self) -> str:
        return self.text

    @property
    def flags(self) -> list[str]:
        return answer_flags(self.text, self.new_tokens, self.max_new_tokens, self.stopped_by_eos)


EMPTY = "empty"
STOPPED_AT_LIMIT = "stopped at max_new_tokens"
REPETITION_LOOP = "repetition loop"
LOOP_MIN_CHARS = 20  # a repeated tail shorter than this is not flagged ("ha ha ha", "...")


def repetition_loop(text: str, min_chars: int = LOOP_MIN_CHARS) -> tuple[str, float] | None:
    """(unit, copies) when `text` ends in a loop, else None.

    A loop: the end of the text is one unit of text written again and again, back to back, at least 2.5
    times in a row (the last copy may be cut short where generation stopped), over at least `min_chars`
    characters. Found as the period p of the longest p-periodic end of the text (text[i] == text[i + p] for
    every position i of that end), the shortest period first. Examples: a triple quote and a newline written
    to the token limit, "fashion, fashion, fashion", "<answer>\n81\n</answer>\n" three times.
    """
    text = text.rstrip()
    n = len(text)
    for period in range(1, n // 2 + 1):
        run = period  # length of the p-periodic end
        while run < n and text[n - 1 - run] == text[n - 1 - run + period]:
            run += 1
        if run >= max(min_chars, 2.5 * period):
            return text[n - period:], run / period
    return None


def answer_flags(text: str, n_new_tokens: int | None = None, max_new_tokens: int | None = None,
                 stopped_by_eos: bool | None = None) -> list[str]:
    """What makes an answer degenerate: "empty" (nothing but whitespace), "stopped at max_new_tokens" (the
    generation ran out of tokens instead of ending with EOS: it was cut off), "repetition loop" (see
    repetition_loop). stopped_by_eos, when known, decides the second flag; otherwise a generation that used
    all max_new_tokens counts as stopped at the limit.
    """
    flags = []
    if not text.strip():
        flags.append(EMPTY)
    if stopped_by_eos is not None:
        if not stopped_by_eos:
            flags.append(STOPPED_AT_LIMIT)
    elif n_new_tokens is not None and max_new_tokens is not None and n_new_tokens >= max_new_tokens:
        flags.append(STOPPED_AT_LIMIT)
    if repetition_loop(text) is not None:
        flags.append(REPETITION_LOOP)
    return flags


def _template(tokenizer, prompts: Prompt | Sequence[Prompt], system: str | None) -> tuple[list[str], bool]:
    single = isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], dict)
    )
    batch = [prompts] if single else list(prompts)
    texts = [
        tokenizer.apply_chat_template(_as_messages(p, system), tokenize=False, add_generation_prompt=True)
        for p in batch
    ]
    return texts, single


def chat_details(
    model,
    tokenizer,
    prompts: Prompt | Sequence[Prompt],
    max_new_tokens: int = 128,
    system: str | None = None,
    stream: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> Generation | list[Generation]:
    """chat(), returning Generation objects (text stripped, tokens generated, ended with EOS or not)."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be > 0")
    texts, single = _template(tokenizer, prompts, system)
    details = generate_details(model, tokenizer, texts, max_new_tokens=max_new_tokens, stream=stream,
                               do_sample=do_sample, temperature=temperature, batch_size=batch_size)
    answers = [replace(d, text=d.text.strip()) for d in details]
    return answers[0] if single else answers


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

    A prompt is a user message string or a list of chat messages. chat_details() answers the same way and
    also says how many tokens each answer took and whether it ended with EOS.
    """
    details = chat_details(model, tokenizer, prompts, max_new_tokens=max_new_tokens, system=system,
                           stream=stream, do_sample=do_sample, temperature=temperature, batch_size=batch_size)
    return details.text if isinstance(details, Generation) else [d.text for d in details]


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
    return [g.text for g in generate_details(model, tokenizer, texts, max_new_tokens=max_new_tokens,
                                             stream=stream, do_sample=do_sample, temperature=temperature,
                                             batch_size=batch_size)]


def _ended(row: list[int], eos_ids: set[int]) -> tuple[int, bool]:
    """(tokens generated, EOS produced) of one row of new tokens; tokens after the first EOS are padding."""
    for index, token in enumerate(row):
        if token in eos_ids:
            return index + 1, True
    return len(row), False


def generate_details(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int = 128,
    stream: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[Generation]:
    """generate(), returning Generation objects: the new text (right-stripped, leading indentation kept), the
    number of tokens generated (the EOS included) and whether the generation ended with EOS."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be > 0")
    answers: list[Generation] = []
    eos_ids = {tokenizer.eos_token_id}
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
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            for row in new:
                count, eos = _ended(row, eos_ids)
                # a continuation keeps its leading whitespace (code indentation); chat answers are stripped
                text = tokenizer.decode(row[:count], skip_special_tokens=True).rstrip()
                answers.append(Generation(text, count, eos, max_new_tokens))
    return answers


def _flag_line(flags: Sequence[str]) -> str:
    return "⚠ " + " · ".join(flags) if flags else ""


@dataclass
class Comparison:
    """Prompts with columns of answers; an HTML table in notebooks, text in a terminal.

    flags: per column, the answer_flags of each answer (shown under it, kept in to_records).
    """

    prompts: list[str]
    columns: dict[str, list[str]]
    flags: dict[str, list[list[str]]] = field(default_factory=dict)

    def _flags(self, name: str, i: int) -> list[str]:
        return self.flags[name][i] if name in self.flags else []

    def _repr_html_(self) -> str:
        cell = 'style="text-align:left;vertical-align:top;white-space:pre-wrap;max-width:420px"'
        note = 'style="color:#b00020;font-size:smaller;white-space:normal"'
        head = "".join(f"<th {cell}>{html.escape(n)}</th>" for n in ["prompt", *self.columns])
        rows = []
        for i, prompt in enumerate(self.prompts):
            cells = [f"<td {cell}>{html.escape(prompt)}</td>"]
            for name, col in self.columns.items():
                flags = self._flags(name, i)
                under = f"<div {note}>{html.escape(_flag_line(flags))}</div>" if flags else ""
                cells.append(f"<td {cell}>{html.escape(col[i])}{under}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def __str__(self) -> str:
        parts = []
        for i, prompt in enumerate(self.prompts):
            parts.append(f"=== {prompt}")
            for name, col in self.columns.items():
                flags = self._flags(name, i)
                parts.append(f"--- {name}:{'  ' + _flag_line(flags) if flags else ''}\n{col[i]}")
        return "\n".join(parts)

    __repr__ = __str__

    def to_records(self) -> list[dict]:
        """One dict per prompt: the prompt, each column's answer, and "flags": {column: [flags]}."""
        return [{"prompt": p, **{n: c[i] for n, c in self.columns.items()},
                 "flags": {n: self._flags(n, i) for n in self.columns}} for i, p in enumerate(self.prompts)]


Answer = str | Generation


def _text_and_flags(answer: Answer) -> tuple[str, list[str]]:
    if isinstance(answer, Generation):
        return answer.text, answer.flags
    return answer, answer_flags(answer)  # no token counts: only "empty" and "repetition loop" can be told


def compare(prompts: Sequence[Prompt], before: Sequence[Answer], after: Sequence[Answer],
            labels: tuple[str, str] = ("before training", "after training")) -> Comparison:
    """The same prompts answered before and after training, side by side, each answer with its flags.

    Answers are strings (chat/generate) or Generation objects (chat_details/generate_details); only the latter
    can be flagged "stopped at max_new_tokens".
    """
    if not (len(prompts) == len(before) == len(after)):
        raise ValueError(f"compare needs one answer per prompt: {len(prompts)} prompts, "
                         f"{len(before)} before, {len(after)} after")
    shown = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    columns, flags = {}, {}
    for label, answers in zip(labels, (before, after)):
        pairs = [_text_and_flags(a) for a in answers]
        columns[label] = [text for text, _ in pairs]
        flags[label] = [f for _, f in pairs]
    return Comparison(shown, columns, flags)

"""Evaluations on held-out data, each with its 95% interval (unsloth_course.statistics).

- SFT (notebooks 1-2): `answer_loss`, the loss per answer token exactly as TRL trains it, and its perplexity;
  `compare_answer_loss` for the change on the same rows.
- DPO (notebook 3): `preference_metrics`, implicit-reward and log-probability accuracies, margins, lengths.
- GRPO (notebook 4): `math_accuracy` (accuracy, format compliance, per level) and `stage_contributions`.
- CPT (notebook 5): `perplexity` / `perplexity_report` / `compare_perplexity`, and `completion_is_code`.

Every result prints as a short summary, has `to_record()` (JSON-safe, for records.write_run_record) and,
where the notebooks show a table, a DataFrame helper.
"""

from __future__ import annotations

import ast
import codeop
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unsloth_course import statistics as stats
from unsloth_course.inference import Generation, chat_details, inference_mode, model_device
from unsloth_course.rewards import correctness_reward, soft_format_reward, strict_format_reward
from unsloth_course.statistics import Estimate

# ---------------------------------------------------------------- token scoring


def _score(model, sequences: Sequence[tuple[list[int], int]], pad_id: int,
           batch_size: int) -> list[tuple[float, int]]:
    """(sum of -log p, tokens) of ids[start:] for each (ids, start), every token predicted from the ones
    before it. Rows are right-padded (padding masked) and batched longest first; results keep input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    for index, (tokens, start) in enumerate(sequences):
        if not 1 <= start < len(tokens):
            raise ValueError(f"sequence {index}: scoring starts at token {start} of {len(tokens)}; nothing "
                             "to score (an empty prompt, or a completion cut away by max_length)")
    device = model_device(model)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    with torch.no_grad():
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            width = max(len(sequences[i][0]) for i in batch)
            ids = torch.tensor([sequences[i][0] + [pad_id] * (width - len(sequences[i][0])) for i in batch],
                               device=device)
            mask = torch.tensor([[1] * len(sequences[i][0]) + [0] * (width - len(sequences[i][0]))
                                 for i in batch], device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for row, index in enumerate(batch):
                tokens, start = sequences[index]
                predicted = logits[row, start - 1:len(tokens) - 1].float()
                target = ids[row, start:len(tokens)]
                nll = torch.nn.functional.cross_entropy(predicted, target, reduction="sum")
                results[index] = (float(nll), len(tokens) - start)
    return results


def _messages(value: Any, where: str) -> list[dict]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
            isinstance(m, Mapping) and "role" in m and "content" in m for m in value):
        raise ValueError(f"{where} must be a non-empty list of chat messages ({{'role', 'content'}}), got "
                         f"{type(value).__name__}: the conversational form data.to_prompt_completion makes")
    return [dict(m) for m in value]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def completion_token_ids(tokenizer, prompt: list[dict], completion: list[dict],
                         max_length: int) -> tuple[list[int], int, bool]:
    """(token ids, index of the first completion token, cut at max_length) of one conversational
    prompt/completion pair, tokenized as TRL 1.15-1.16 does for SFT (completion_only_loss) and DPO: the
    prompt rendered with add_generation_prompt=True, prompt + completion rendered whole, the completion
    starting where the two token lists diverge (so it includes the closing <|im_end|> and the newline the
    template appends), then the whole cut to its first max_length tokens."""
    prompt_ids = _template_ids(tokenizer, prompt, add_generation_prompt=True)
    full = _template_ids(tokenizer, prompt + completion, add_generation_prompt=False)
    start = _common_prefix(prompt_ids, full)
    return full[:max_length], start, len(full) > max_length


def _template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            add_generation_prompt=add_generation_prompt)
    return list(encoded["input_ids"])


def _check_length(max_length: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2 tokens")


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ---------------------------------------------------------------- loss per token (SFT answers, CPT texts)


@dataclass(frozen=True)
class TokenLoss:
    """The mean negative log-likelihood per token over rows (token-weighted), and its perplexity.

    what: "answer" (answer_loss: the completion tokens) or "text" (perplexity_report: every token but the
    first). nll and tokens are per row (sum of -log p, number of tokens scored), kept for paired comparisons.
    loss: the mean per token, sum(nll) / sum(tokens), with a bootstrap interval over rows (rows resampled,
    each weighted by its tokens); perplexity = exp(loss), its interval exp() of the loss interval.
    """

    what: str
    nll: tuple[float, ...]
    tokens: tuple[int, ...]
    truncated: int = 0
    loss: Estimate = field(init=False)
    perplexity: Estimate = field(init=False)

    def __post_init__(self) -> None:
        per_token = [n / t for n, t in zip(self.nll, self.tokens)]
        loss = stats.mean(per_token, weights=self.tokens, unit="nats/token")
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "perplexity", Estimate(
            math.exp(loss.value), math.exp(loss.low), math.exp(loss.high), loss.n,
            "bootstrap (exp of the loss interval)", decimals=3))

    @property
    def rows(self) -> int:
        return len(self.tokens)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    def __str__(self) -> str:
        unit = "answer tokens" if self.what == "answer" else "tokens"
        cut = f", {self.truncated} cut at max_length" if self.truncated else ""
        return (f"{self.what} loss {self.loss}; perplexity {self.perplexity}; "
                f"{self.total_tokens:,} {unit}{cut}")

    __repr__ = __str__

    def to_record(self, digits: int = 6) -> dict:
        return {"loss": stats.round_float(self.loss.value, digits), "loss_ci": _ci(self.loss, digits),
                "perplexity": stats.round_float(self.perplexity.value, digits),
                "perplexity_ci": _ci(self.perplexity, digits), "rows": self.rows, "tokens": self.total_tokens,
                "truncated_rows": self.truncated}


def _ci(estimate: Estimate, digits: int = 6) -> list | None:
    interval = estimate.interval
    return None if interval is None else [stats.round_float(x, digits) for x in interval]


def answer_loss(model, tokenizer, rows, max_length: int = 512, batch_size: int = 8) -> TokenLoss:
    """Held-out answer loss: on conversational prompt/completion rows (data.to_prompt_completion), the mean
    negative log-likelihood per answer token, the answer being the completion exactly as TRL's
    completion_only_loss trains it (completion_token_ids: the closing <|im_end|> and the template's newline
    included, cut at max_length). Token-weighted over all rows; same numbers for any batch_size.

    Prints as: answer loss 1.234 nats/token (95% CI 1.180-1.291, n=200); perplexity 3.435 (95% CI
    3.254-3.636, n=200); 9,876 answer tokens
    """
    _check_length(max_length)
    sequences, truncated = [], 0
    for index, row in enumerate(rows):
        prompt = _messages(row.get("prompt"), f"row {index}: column 'prompt'")
        completion = _messages(row.get("completion"), f"row {index}: column 'completion'")
        ids, start, cut = completion_token_ids(tokenizer, prompt, completion, max_length)
        if start >= len(ids):
            raise ValueError(f"row {index}: its prompt is {start} tokens, max_length={max_length} leaves no "
                             "answer token to score (TRL drops such rows); raise max_length or drop long "
                             "prompts")
        sequences.append((ids, start))
        truncated += cut
    if not sequences:
        raise ValueError("answer_loss needs at least one row")
    with inference_mode(model):
        scored = _score(model, sequences, _pad_id(tokenizer), batch_size)
    return TokenLoss("answer", tuple(n for n, _ in scored), tuple(t for _, t in scored), truncated)


def _text_sequences(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list, int]:
    _check_length(max_length)
    if not texts:
        raise ValueError("perplexity needs at least one text")
    sequences, truncated = [], 0
    for index, text in enumerate(texts):
        ids = list(tokenizer(text)["input_ids"])
        if len(ids) < 2:
            raise ValueError(f"text {index} has {len(ids)} token(s): perplexity needs 2 or more")
        sequences.append((ids[:max_length], 1))
        truncated += len(ids) > max_length
    return sequences, truncated


def perplexity_report(model, tokenizer, texts: Sequence[str], max_length: int = 512,
                      batch_size: int = 4) -> TokenLoss:
    """Perplexity of raw texts (every token after the first, each text cut to max_length tokens), with a
    bootstrap interval over texts; the per-text values are kept for compare_perplexity."""
    sequences, truncated = _text_sequences(tokenizer, texts, max_length)
    with inference_mode(model):
        scored = _score(model, sequences, _pad_id(tokenizer), batch_size)
    return TokenLoss("text", tuple(n for n, _ in scored), tuple(t for _, t in scored), truncated)


def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 512, batch_size: int = 4) -> float:
    """exp(mean next-token loss) over all tokens of `texts` (padding excluded); perplexity_report adds the
    interval."""
    sequences, _ = _text_sequences(tokenizer, texts, max_length)
    with inference_mode(model):
        scored = _score(model, sequences, _pad_id(tokenizer), batch_size)
    return math.exp(sum(n for n, _ in scored) / sum(t for _, t in scored))


@dataclass(frozen=True)
class LossChange:
    """A TokenLoss before and after training on the same rows, and the paired change.

    change: loss after - loss before (nats/token), paired bootstrap interval (the same rows resampled for
    both). perplexity_ratio: perplexity after / before = exp(change). improved: the share of rows whose loss
    per token fell, with its Wilson interval.
    """

    before: TokenLoss
    after: TokenLoss
    change: Estimate = field(init=False)
    perplexity_ratio: Estimate = field(init=False)
    improved: Estimate = field(init=False)

    def __post_init__(self) -> None:
        if self.before.what != self.after.what or self.before.tokens != self.after.tokens:
            b, a = self.before, self.after
            raise ValueError("a paired comparison needs the same rows, tokenized alike, before and after: "
                             f"got {b.rows} {b.what} rows ({b.total_tokens:,} tokens) before and {a.rows} "
                             f"{a.what} rows ({a.total_tokens:,} tokens) after")
        weights = self.before.tokens
        before = [n / t for n, t in zip(self.before.nll, weights)]
        after = [n / t for n, t in zip(self.after.nll, weights)]
        change = stats.mean_change(before, after, weights=weights, unit="nats/token")
        object.__setattr__(self, "change", change)
        object.__setattr__(self, "perplexity_ratio", Estimate(
            math.exp(change.value), math.exp(change.low), math.exp(change.high), change.n,
            "paired bootstrap (exp of the loss change)", decimals=3))
        object.__setattr__(self, "improved", stats.rate_of([a < b for b, a in zip(before, after)]))

    def __str__(self) -> str:
        b, a, r = self.before, self.after, self.perplexity_ratio
        return (f"{b.what} loss {b.loss.value:.3f} -> {a.loss.value:.3f} nats/token, change {self.change}; "
                f"perplexity {b.perplexity.value:.3f} -> {a.perplexity.value:.3f} (x{r.value:.3f}, 95% CI "
                f"{r.low:.3f}-{r.high:.3f}); lower on {self.improved} of the rows")

    __repr__ = __str__

    def to_frame(self):
        """before / after / change as a two-column table (loss, perplexity)."""
        import pandas as pd

        b, a, ratio = self.before, self.after, self.perplexity_ratio
        change = "change (after - before)"
        return pd.DataFrame({
            f"{b.what} loss (nats/token)": {"before": str(b.loss), "after": str(a.loss),
                                             change: str(self.change)},
            "perplexity": {"before": str(b.perplexity), "after": str(a.perplexity),
                           change: f"x{ratio.value:.3f} (95% CI {ratio.low:.3f}-{ratio.high:.3f})"},
        })

    def to_record(self, digits: int = 6) -> dict:
        return {"before": self.before.to_record(digits), "after": self.after.to_record(digits),
                "loss_change": stats.round_float(self.change.value, digits),
                "loss_change_ci": _ci(self.change, digits),
                "perplexity_ratio": stats.round_float(self.perplexity_ratio.value, digits),
                "perplexity_ratio_ci": _ci(self.perplexity_ratio, digits),
                "rows_improved": self.improved.to_record(digits)}


def loss_table(changes: Mapping[str, LossChange]):
    """A DataFrame with one row per evaluated set (e.g. "held-out code", "general text"): perplexity before
    and after, the perplexity ratio after / before and the loss change, each with its 95% interval."""
    import pandas as pd

    rows = {}
    for name, change in changes.items():
        ratio = change.perplexity_ratio
        rows[f"{name} ({change.before.rows} rows)"] = {
            "perplexity before": str(change.before.perplexity),
            "perplexity after": str(change.after.perplexity),
            "after / before": f"x{ratio.value:.3f} (95% CI {ratio.low:.3f}-{ratio.high:.3f})",
            "loss change (nats/token)": str(change.change), "rows improved": str(change.improved)}
    return pd.DataFrame(rows).T


def compare_answer_loss(before: TokenLoss, after: TokenLoss) -> LossChange:
    """The change in held-out answer loss (after - before) on the same rows, with its paired interval."""
    return LossChange(before, after)


def compare_perplexity(before: TokenLoss, after: TokenLoss) -> LossChange:
    """The change in loss/perplexity of the same texts before and after training (paired)."""
    return LossChange(before, after)


# ---------------------------------------------------------------- pre-templated log-probabilities


def completion_logprobs(model, tokenizer, items: Sequence[tuple[str, str]], max_length: int = 512,
                        batch_size: int = 16) -> list[float]:
    """For each (prompt, completion) pair (both already templated): the sum of the completion tokens'
    log-probabilities given the prompt. Rows are right-padded and scored `batch_size` at a time."""
    sequences = []
    for prompt, completion in items:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"])[:max_length]
        sequences.append((ids, len(prompt_ids)))
    return [-nll for nll, _ in _score(model, sequences, _pad_id(tokenizer), batch_size)]


def completion_logprob(model, tokenizer, prompt: str, completion: str, max_length: int = 512) -> float:
    """Sum of log-probabilities of `completion`'s tokens given `prompt` (both already templated)."""
    return completion_logprobs(model, tokenizer, [(prompt, completion)], max_length)[0]


# ---------------------------------------------------------------- DPO: preference metrics


def _active_lora_b(model) -> list[torch.Tensor] | None:
    """The lora_B matrices of the model's active adapters; None when it has none that can be read."""
    active = getattr(model, "active_adapters", None)
    if callable(active):
        active = active()
    if active is None:
        single = getattr(model, "active_adapter", None)
        active = [single] if isinstance(single, str) else single
    if not active:
        return None
    found = [p for name, p in model.named_parameters() if any(f"lora_B.{a}." in name for a in active)]
    return found or None


def reference_note(model) -> str:
    """Why the implicit reward is undefined for `model` ("" when it is defined)."""
    if not hasattr(model, "disable_adapter"):
        return "no adapter to switch off, so no reference model"
    matrices = _active_lora_b(model)
    if matrices is not None and all(not bool(p.detach().any()) for p in matrices):
        return "policy = reference: the adapter is untrained (every lora_B is 0), every reward is exactly 0"
    return ""


@dataclass(frozen=True)
class PreferenceMetrics:
    """Held-out preference pairs scored by the policy (and by the reference, the model with its adapter off).

    Per pair: log p of the chosen and rejected answers (sums over their tokens, tokenized as TRL's
    DPOTrainer does) under the policy and the reference, and the answers' token counts.

    - reward_accuracy: DPO's implicit reward beta * (log p_policy - log p_reference) is higher for chosen
      (Wilson interval); mean_reward_margin: chosen minus rejected reward (bootstrap interval). Both None
      ("n/a") when undefined, with `reward_note` saying why: before training the policy *is* the reference,
      every reward is exactly 0, so the accuracy would read 0% (no pair wins) and mean nothing.
    - logp_accuracy: log p(chosen) > log p(rejected) under the policy; it favours the shorter answer, since
      every token adds a negative term. normalized_logp_accuracy: the same with the mean log p per token,
      which removes that length effect. Compare the two with chosen_longer to read a length bias.
    - mean_logp_margin: mean of log p(chosen) - log p(rejected) (bootstrap).
    - chosen_tokens / rejected_tokens: mean answer lengths in tokens; chosen_longer: share of pairs whose
      chosen answer is the longer one.
    """

    beta: float
    policy: tuple[tuple[float, float], ...]
    reference: tuple[tuple[float, float], ...] | None
    lengths: tuple[tuple[int, int], ...]
    reward_note: str = ""
    truncated: int = 0

    @property
    def pairs(self) -> int:
        return len(self.policy)

    @property
    def margins(self) -> list[float] | None:
        """The reward margin of each pair: beta * ((pc - rc) - (pr - rr)); None when undefined."""
        if self.reference is None:
            return None
        return [self.beta * ((pc - rc) - (pr - rr))
                for (pc, pr), (rc, rr) in zip(self.policy, self.reference)]

    @property
    def reward_accuracy(self) -> Estimate:
        margins = self.margins
        if margins is None:
            return Estimate(None, None, None, self.pairs, percent=True, note=self.reward_note)
        return stats.rate_of([m > 0 for m in margins])

    @property
    def mean_reward_margin(self) -> Estimate:
        margins = self.margins
        if margins is None:
            return Estimate(None, None, None, self.pairs, note=self.reward_note)
        return stats.mean(margins, decimals=4)

    @property
    def logp_accuracy(self) -> Estimate:
        return stats.rate_of([c > r for c, r in self.policy])

    @property
    def normalized_logp_accuracy(self) -> Estimate:
        return stats.rate_of([c / lc > r / lr for (c, r), (lc, lr) in zip(self.policy, self.lengths)])

    @property
    def mean_logp_margin(self) -> Estimate:
        return stats.mean([c - r for c, r in self.policy], decimals=2)

    @property
    def chosen_tokens(self) -> Estimate:
        return stats.mean([c for c, _ in self.lengths], decimals=1)

    @property
    def rejected_tokens(self) -> Estimate:
        return stats.mean([r for _, r in self.lengths], decimals=1)

    @property
    def chosen_longer(self) -> Estimate:
        return stats.rate_of([c > r for c, r in self.lengths])

    def metrics(self) -> dict[str, Estimate]:
        """Every metric, by the name the table shows."""
        return {"reward accuracy": self.reward_accuracy, "mean reward margin": self.mean_reward_margin,
                "log p accuracy": self.logp_accuracy,
                "length-normalized log p accuracy": self.normalized_logp_accuracy,
                "mean log p margin (nats)": self.mean_logp_margin,
                "chosen length (tokens)": self.chosen_tokens,
                "rejected length (tokens)": self.rejected_tokens, "chosen is longer": self.chosen_longer}

    def __str__(self) -> str:
        return f"{self.pairs} held-out pairs, beta={self.beta}\n" + "\n".join(
            f"  {name}: {value}" for name, value in self.metrics().items())

    __repr__ = __str__

    def to_frame(self):
        return preference_table({"": self})

    def to_record(self, digits: int = 6) -> dict:
        record: dict[str, Any] = {"pairs": self.pairs, "beta": self.beta}
        for key, estimate in (("reward_accuracy", self.reward_accuracy),
                              ("mean_reward_margin", self.mean_reward_margin),
                              ("logp_accuracy", self.logp_accuracy),
                              ("normalized_logp_accuracy", self.normalized_logp_accuracy),
                              ("mean_logp_margin", self.mean_logp_margin),
                              ("chosen_tokens", self.chosen_tokens),
                              ("rejected_tokens", self.rejected_tokens),
                              ("chosen_longer", self.chosen_longer)):
            record[key] = stats.round_float(estimate.value, digits) if estimate.value is not None else None
            record[f"{key}_ci"] = _ci(estimate, digits)
        if self.reward_note:
            record["reward_note"] = self.reward_note
        record["truncated_answers"] = self.truncated
        return record


def preference_table(columns: Mapping[str, PreferenceMetrics]):
    """A DataFrame of every preference metric (rows) for each labelled result (columns, e.g. before/after)."""
    import pandas as pd

    table = pd.DataFrame({label: {name: str(value) for name, value in result.metrics().items()}
                          for label, result in columns.items()})
    pairs = {result.pairs for result in columns.values()}
    return table.rename_axis(f"{'/'.join(map(str, sorted(pairs)))} held-out pairs (95% CI)")


def _pair_sequences(tokenizer, pairs, max_length: int) -> tuple[list[tuple[list[int], int]], int]:
    sequences, truncated = [], 0
    for index, row in enumerate(pairs):
        prompt = _messages(row.get("prompt"), f"pair {index}: column 'prompt'")
        answers = [_messages(row.get(key), f"pair {index}: column {key!r}") for key in ("chosen", "rejected")]
        prompt_ids = _template_ids(tokenizer, prompt, add_generation_prompt=True)
        full = [_template_ids(tokenizer, prompt + answer, add_generation_prompt=False) for answer in answers]
        start = min(_common_prefix(prompt_ids, ids) for ids in full)  # as DPOTrainer's tokenize_fn
        if start >= max_length:
            raise ValueError(f"pair {index}: its prompt is {start} tokens, max_length={max_length} leaves no "
                             "answer token (TRL drops such pairs); use data.filter_long_prompts")
        for ids in full:
            sequences.append((ids[:max_length], start))
            truncated += len(ids) > max_length
    return sequences, truncated


def preference_metrics(model, tokenizer, pairs, max_length: int = 512, beta: float = 0.1,
                       batch_size: int = 16) -> PreferenceMetrics:
    """Score held-out prompt/chosen/rejected pairs (conversational) without generating: see PreferenceMetrics.

    One forward pass per batch with the adapter on (the policy) and, when the reward is defined, one with it
    off (the reference: the base model, which equals TRL's frozen "ref" adapter copy when DPO started from a
    fresh adapter, as in notebook 3). Before training (every lora_B still 0) the reference pass is skipped:
    it would give the policy's numbers again.
    """
    _check_length(max_length)
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0 (DPO's implicit-reward scale, 0.1 by default)")
    sequences, truncated = _pair_sequences(tokenizer, pairs, max_length)
    if not sequences:
        raise ValueError("preference_metrics needs at least one pair")
    lengths = [len(ids) - start for ids, start in sequences]
    pad = _pad_id(tokenizer)
    note = reference_note(model)
    with inference_mode(model):
        policy = [-nll for nll, _ in _score(model, sequences, pad, batch_size)]
        reference = None
        if not note:
            with model.disable_adapter():
                reference = [-nll for nll, _ in _score(model, sequences, pad, batch_size)]

    def pairs_of(values: list) -> tuple:
        return tuple(zip(values[0::2], values[1::2]))

    return PreferenceMetrics(beta, pairs_of(policy), None if reference is None else pairs_of(reference),
                             pairs_of(lengths), note, truncated)


def preference_change(before: PreferenceMetrics, after: PreferenceMetrics) -> dict[str, Estimate]:
    """Paired changes on the same pairs (after - before): the log p and length-normalized accuracies
    (Newcombe) and the mean log p margin (paired bootstrap)."""
    if before.lengths != after.lengths:
        raise ValueError(f"preference_change needs the same pairs before and after: {before.pairs} pairs "
                         f"before, {after.pairs} after, or their answers tokenized differently")
    wins = [[c > r for c, r in m.policy] for m in (before, after)]
    normalized = [[c / lc > r / lr for (c, r), (lc, lr) in zip(m.policy, m.lengths)] for m in (before, after)]
    margins = [[c - r for c, r in m.policy] for m in (before, after)]
    return {"log p accuracy": stats.rate_change(*wins),
            "length-normalized log p accuracy": stats.rate_change(*normalized),
            "mean log p margin (nats)": stats.mean_change(*margins, decimals=2)}


# ---------------------------------------------------------------- GRPO: math accuracy


@dataclass(frozen=True)
class MathAccuracy:
    """Greedy answers to held-out math problems, checked by the reward functions.

    correct / strict / soft: per problem, the correctness, strict-format and soft-format rewards > 0.
    accuracy, strict_format, soft_format: their rates with Wilson intervals; by_level: accuracy per level.
    """

    questions: tuple[str, ...]
    levels: tuple[int | None, ...]
    generations: tuple[Generation, ...]
    correct: tuple[bool, ...]
    strict: tuple[bool, ...]
    soft: tuple[bool, ...]

    @property
    def problems(self) -> int:
        return len(self.questions)

    @property
    def completions(self) -> list[str]:
        return [g.text for g in self.generations]

    @property
    def accuracy(self) -> Estimate:
        return stats.rate_of(self.correct)

    @property
    def strict_format(self) -> Estimate:
        return stats.rate_of(self.strict)

    @property
    def soft_format(self) -> Estimate:
        return stats.rate_of(self.soft)

    @property
    def by_level(self) -> dict[int, Estimate]:
        levels = sorted({level for level in self.levels if level is not None})
        return {level: stats.rate_of([c for c, lv in zip(self.correct, self.levels) if lv == level])
                for level in levels}

    @property
    def stopped_at_limit(self) -> int:
        """Answers that used every max_new_tokens without ending: cut off, so no correctness reward."""
        return sum(not g.stopped_by_eos for g in self.generations)

    def metrics(self) -> dict[str, Estimate]:
        return {"accuracy": self.accuracy, "strict format": self.strict_format,
                "soft format": self.soft_format,
                **{f"accuracy, level {level}": value for level, value in self.by_level.items()}}

    def __str__(self) -> str:
        limit = self.generations[0].max_new_tokens if self.generations else 0
        stopped = f"{self.stopped_at_limit} of {self.problems} answers stopped at max_new_tokens={limit}"
        return "\n".join([*(f"{name}: {value}" for name, value in self.metrics().items()), stopped])

    __repr__ = __str__

    def to_record(self, digits: int = 6, completions: bool = False) -> dict:
        record: dict[str, Any] = {"problems": self.problems}
        for key, estimate in (("accuracy", self.accuracy), ("strict_format", self.strict_format),
                              ("soft_format", self.soft_format)):
            record[key] = stats.round_float(estimate.value, digits)
            record[f"{key}_ci"] = _ci(estimate, digits)
        record["accuracy_by_level"] = {str(level): value.to_record(digits)
                                       for level, value in self.by_level.items()}
        record["stopped_at_max_new_tokens"] = self.stopped_at_limit
        if completions:
            record["completions"] = self.completions
        return record


def math_accuracy(model, tokenizer, rows, max_new_tokens: int = 128, batch_size: int = 16) -> MathAccuracy:
    """Greedy answers to held-out math problems (rows with prompt, answer, question, level): accuracy,
    strict/soft format compliance and accuracy per level, each with its Wilson interval."""
    rows = list(rows)
    if not rows:
        raise ValueError("math_accuracy needs at least one problem")
    prompts = [row["prompt"] for row in rows]
    answers = [str(row["answer"]) for row in rows]
    generations = chat_details(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
    texts = [g.text for g in generations]
    correct = correctness_reward(prompts, texts, answer=answers)
    strict = strict_format_reward(prompts, texts)
    soft = soft_format_reward(prompts, texts)
    questions = tuple(str(row.get("question", p[-1]["content"])) for row, p in zip(rows, prompts))
    return MathAccuracy(questions, tuple(row.get("level") for row in rows), tuple(generations),
                        tuple(c > 0 for c in correct), tuple(s > 0 for s in strict),
                        tuple(s > 0 for s in soft))


def math_table(stages: Mapping[str, MathAccuracy]):
    """A DataFrame: metrics (rows) by stage (columns, e.g. before / after warm-up / after GRPO)."""
    import pandas as pd

    table = pd.DataFrame({name: {metric: str(value) for metric, value in result.metrics().items()}
                          for name, result in stages.items()})
    table.loc["stopped at max_new_tokens"] = [f"{r.stopped_at_limit} of {r.problems}"
                                              for r in stages.values()]
    return table.rename_axis("held-out problems (95% CI)")


@dataclass(frozen=True)
class StageContributions:
    """What the warm-up and GRPO each changed on the same held-out problems (paired, Newcombe intervals).

    warmup: after warm-up - base; grpo: after GRPO - after warm-up; total: after GRPO - base; each a dict
    metric -> Estimate in percentage points.
    """

    warmup: dict[str, Estimate]
    grpo: dict[str, Estimate]
    total: dict[str, Estimate]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({
            "warm-up (after warm-up - before)": {k: str(v) for k, v in self.warmup.items()},
            "GRPO (after GRPO - after warm-up)": {k: str(v) for k, v in self.grpo.items()},
            "total (after GRPO - before)": {k: str(v) for k, v in self.total.items()},
        }).rename_axis("change in points (95% CI, paired)")

    def __str__(self) -> str:
        return "\n".join(f"{metric}: warm-up {self.warmup[metric]}; GRPO {self.grpo[metric]}"
                         for metric in self.warmup)

    __repr__ = __str__

    def to_record(self, digits: int = 6) -> dict:
        return {stage: {k: v.to_record(digits) for k, v in values.items()}
                for stage, values in (("warmup", self.warmup), ("grpo", self.grpo), ("total", self.total))}


def _outcomes(result: MathAccuracy) -> dict[str, tuple[bool, ...]]:
    found = {"accuracy": result.correct, "strict format": result.strict, "soft format": result.soft}
    for level in result.by_level:
        found[f"accuracy, level {level}"] = tuple(c for c, lv in zip(result.correct, result.levels)
                                                  if lv == level)
    return found


def stage_contributions(base: MathAccuracy, warm: MathAccuracy, after: MathAccuracy) -> StageContributions:
    """The warm-up's contribution (warm - base) and GRPO's (after - warm), paired on the same problems."""
    for name, result in (("warm", warm), ("after", after)):
        if result.questions != base.questions:
            raise ValueError(f"stage_contributions needs the same problems in the same order: {name} has "
                             f"{result.problems} problems, base {base.problems}, or other questions")
    b, w, a = _outcomes(base), _outcomes(warm), _outcomes(after)
    return StageContributions({k: stats.rate_change(b[k], w[k]) for k in b},
                              {k: stats.rate_change(w[k], a[k]) for k in b},
                              {k: stats.rate_change(b[k], a[k]) for k in b})


# ---------------------------------------------------------------- CPT: is a completion code?


def _compiles(source: str) -> bool | None:
    """True: complete, valid Python; None: a valid beginning that more lines could complete; False: invalid.
    Parsed and compiled only, never run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences and the like in model output
        try:
            ast.parse(source)
            return True
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
        try:
            return None if codeop.compile_command(source, "<completion>", "exec") is None else True
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
            return False


def _is_code_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def completion_is_code(prompt: str, completion: str) -> bool:
    """True when `completion` continues `prompt` (a function head from data.code_completion_prompts) as raw
    Python code, not as a closed code block followed by prose.

    The rule: the completion holds at least one line of code (not blank, not only a comment), and prompt +
    completion is Python: it parses (ast), or it is a valid beginning that more lines could complete
    (codeop: a generation stopped at max_new_tokens inside a statement), or it is either of those without
    its last line (a generation cut in the middle of a token or a string). The whole text counts, not only
    the function: ending the function and going on with more code (a usage example) is code; a closing ```
    fence or a sentence is not. Nothing is executed: the text is only parsed and compiled.
    """
    if not any(_is_code_line(line) for line in completion.split("\n")):
        return False
    text = prompt + completion
    if _compiles(text) is not False:
        return True
    lines = text.split("\n")
    kept = "\n".join(lines[:-1])
    return len(kept) > len(prompt.rstrip("\n")) and any(
        _is_code_line(line) for line in kept[len(prompt):].split("\n")) and _compiles(kept) is not False


def code_rate(prompts: Sequence[str], completions: Sequence[str | Generation]) -> Estimate:
    """The share of completions that continue their prompt as code (completion_is_code), Wilson interval."""
    if len(prompts) != len(completions):
        raise ValueError(f"code_rate needs one completion per prompt: {len(prompts)} prompts, "
                         f"{len(completions)} completions")
    return stats.rate_of([completion_is_code(p, str(c)) for p, c in zip(prompts, completions)])


# ---------------------------------------------------------------- two models, one text


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

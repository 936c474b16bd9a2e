"""Plain-backend stand-ins for Unsloth's UnslothTrainer / UnslothTrainingArguments.

Continued pretraining trains the embeddings and output head at a smaller learning rate than the LoRA
adapters. Unsloth does it with `embedding_learning_rate`; this does the same with two optimizer groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, SFTTrainer


@dataclass
class UnslothTrainingArguments(SFTConfig):
    """SFTConfig plus `embedding_learning_rate` (None: embeddings train at `learning_rate`)."""

    embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate for embed_tokens / lm_head (continued pretraining)."}
    )


def embedding_parameter_names(model) -> set[str]:
    """Trainable parameters that are the input embeddings or the output head (or their saved copies)."""
    ids = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            ids.add(id(module.weight))
    names = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        saved_copy = "modules_to_save" in name and ("embed_tokens" in name or "lm_head" in name)
        if saved_copy or id(param) in ids:
            names.add(name)
    return names


class UnslothTrainer(SFTTrainer):
    """SFTTrainer whose optimizer gives embeddings their own learning rate."""

    def create_optimizer(self, model=None):
        lr_embed = getattr(self.args, "embedding_learning_rate", None)
        if lr_embed is None or self.optimizer is not None:
            return super().create_optimizer()
        target = model if model is not None else self.model
        embed_names = embedding_parameter_names(target)
        if not embed_names:
            raise ValueError("embedding_learning_rate is set but no embedding parameter trains; add "
                             "'embed_tokens' and 'lm_head' to target_modules (or modules_to_save)")
        decay = set(self.get_decay_parameter_names(target))
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in target.named_parameters():
            if param.requires_grad:
                groups.setdefault((name in embed_names, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = SFTTrainer.get_optimizer_cls_and_kwargs(self.args, target)
        param_groups = [
            {
                "params": params,
                "lr": lr_embed if is_embed else self.args.learning_rate,
                "weight_decay": self.args.weight_decay if decays else 0.0,
            }
            for (is_embed, decays), params in sorted(groups.items())
        ]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

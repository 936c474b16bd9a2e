"""Data-parallel helpers: which process am I, how large is the global batch, and who prints and saves.

`accelerate launch --num_processes N` and `torchrun --nproc_per_node N` start N copies of the same script
and tell each its place through environment variables (RANK: global index, LOCAL_RANK: index on this
machine, WORLD_SIZE: number of processes). The Hugging Face Trainer reads them itself, wraps the model in
DistributedDataParallel and gives every process a different slice of each batch, so a recipe's
`per_device_train_batch_size` is per process and the global batch grows with the number of processes:

    global batch = per_device_train_batch_size x gradient_accumulation_steps x world_size

The learning rate is NOT scaled with the number of processes: the recipe's value is used as is (scaling
it, linearly or by the square root, is a choice the course leaves to the reader; `describe_scaling` says so).
Only rank 0 should print summaries, save models and write run records: `is_main_process()`,
`print_main()` and `@main_process_only`.

Unsloth 2026.10 trains data-parallel under torchrun/accelerate (each rank loads its copy on
cuda:LOCAL_RANK); it does not support torch.nn.DataParallel (one process driving several GPUs), and some
of its options are single-process only: see `UNSLOTH_MULTI_GPU`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as torch_distributed

from unsloth_course import settings

F = TypeVar("F", bound=Callable[..., Any])

UNSLOTH_MULTI_GPU = (
    "Unsloth 2026.10.9 supports data parallel (DDP) runs started by torchrun or accelerate launch: each rank "
    "loads its own copy on cuda:LOCAL_RANK and LoRA under gradient checkpointing gets "
    "ddp_find_unused_parameters=False. Not supported: torch.nn.DataParallel (one process, several GPUs; "
    "Unsloth forces n_gpu=1), checkpoint_skip_layers='auto' (single process only), vLLM fast_inference with "
    "FSDP2. The plain backend (transformers + PEFT) runs DDP through the Trainer on GPUs and on CPU (gloo)."
)


def _dist():
    """torch.distributed when a process group is initialized, else None."""
    dist = torch_distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's global rank: torch.distributed's when initialized, else RANK, LOCAL_RANK, or 0."""
    dist = _dist()
    return dist.get_rank() if dist is not None else settings.rank()


def local_rank() -> int:
    """This process's index on its machine (which GPU it uses): LOCAL_RANK, else the global rank."""
    value = settings.local_rank()
    return rank() if value is None else value


def world_size() -> int:
    """How many processes train together: torch.distributed's when initialized, else WORLD_SIZE, else 1."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else settings.world_size()


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the process that prints, saves and records."""
    return rank() == 0


def main_process_only(fn: F) -> F:
    """Run `fn` on rank 0 only; the other ranks get None without calling it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main_process() else None

    return wrapper  # type: ignore[return-value]


def print_main(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only."""
    if is_main_process():
        print(*args, **kwargs)


def barrier() -> None:
    """Wait for every rank (no-op without an initialized process group), e.g. before rank 0 reads a file
    that another step wrote."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def shutdown() -> None:
    """At the end of a launched run: wait for every rank, then destroy the process group (no-op without one).

    A rank that exits while the others still work tears gloo down under them: CI saw rank 1 die with SIGABRT
    after its last line while rank 0 was writing the record.
    """
    dist = _dist()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()


def device_for_rank() -> str:
    """cuda:LOCAL_RANK on a GPU machine, else cpu: where this rank's model copy belongs."""
    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def trainer_ddp_args(lora: bool = True) -> dict[str, Any]:
    """TrainingArguments a data-parallel run needs (pass them to `training.common_args` as overrides);
    empty in a single process.

    - On CPU: `use_cpu=True` and the gloo backend. Without `use_cpu`, transformers builds accelerate's
      state with cpu=False, which on a machine without GPUs is DistributedType.NO: every rank then trains
      on its own, silently, with world_size 1.
    - LoRA: `ddp_find_unused_parameters=False`. The Trainer asks DDP to search for unused parameters for
      every model that is not a PreTrainedModel (a PEFT model); LoRA uses every adapter in every step, so the
      search is wasted work (and with reentrant checkpointing it fails: "marked ready twice").
    """
    if not is_distributed():
        return {}
    args: dict[str, Any] = {}
    if not torch.cuda.is_available():
        args.update(use_cpu=True, ddp_backend="gloo")
    if lora:
        args["ddp_find_unused_parameters"] = False
    return args


def global_batch(recipe: Any, world: int | None = None) -> int:
    """per_device_train_batch_size x gradient_accumulation_steps x world_size (rows per optimizer step)."""
    world = world_size() if world is None else world
    if world < 1:
        raise ValueError(f"world size {world} must be >= 1")
    return recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world


def describe_scaling(recipe: Any, world: int | None = None) -> str:
    """One line: processes, per-device batch, accumulation, global batch and the (unscaled) learning rate."""
    world = world_size() if world is None else world
    return (f"data parallel: {world} process{'es' if world != 1 else ''} x per-device batch "
            f"{recipe.per_device_train_batch_size} x gradient accumulation "
            f"{recipe.gradient_accumulation_steps} = global batch {global_batch(recipe, world)}; "
            f"learning rate {recipe.learning_rate:g} "
            "(not scaled with the number of processes: the recipe's value is used as is)")


def scaling_record(recipe: Any, world: int | None = None) -> dict[str, Any]:
    """The same facts for a run record."""
    world = world_size() if world is None else world
    return {"world_size": world, "per_device_train_batch_size": recipe.per_device_train_batch_size,
            "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
            "global_batch": global_batch(recipe, world), "learning_rate": recipe.learning_rate,
            "learning_rate_scaled": False}


__all__ = ["UNSLOTH_MULTI_GPU", "barrier", "describe_scaling", "device_for_rank", "global_batch",
           "is_distributed", "is_main_process", "local_rank", "main_process_only", "print_main", "rank",
           "scaling_record", "shutdown", "trainer_ddp_args", "world_size"]

"""Check unsloth_course.cli.planner against measured peak memory, with randomly initialized weights.

On the GPU machine (no weights can be downloaded there; the configs ship in planner.KNOWN_CONFIGS), after
`bash .gpu/a/device-a.sh` (bitsandbytes is in that bundle) and `source /tmp/gpu/device-b.sh`:

    python3 -m tools.verify_planner                 # every case, JSON to $OUT/planner_verify.json
    python3 -m tools.verify_planner --cases llama8b-qlora mistral7b-qlora   # some (10-minute limit)
    python3 -m tools.verify_planner --cpu-smoke     # on a CPU: SmolLM2-sized model, 1 step

For each case: build the architecture from its config with random bf16 weights on the GPU
(`AutoModelForCausalLM.from_config`). For QLoRA, replace every decoder-layer nn.Linear by a bitsandbytes
`Linear4bit` (NF4, double quantization, bf16 compute) and quantize the random bf16 weight on the GPU: the
same modules and storage as `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))` (embeddings and lm_head stay bf16 there too),
without writing 16 GB of random weights to disk to load them back; `model.is_loaded_in_4bit = True` makes
PEFT wrap them with its bitsandbytes LoRA layers. Then non-reentrant gradient checkpointing, LoRA r=16 on
every projection with PEFT (full fine-tuning: every weight trains), 8-bit AdamW from bitsandbytes (plain
AdamW, and a planner asked about plain AdamW, where bitsandbytes is missing), and `--steps` training steps
(bf16 autocast forward, backward, optimizer step) at the batch and sequence length the planner recommends
for the case's GPU size. `torch.cuda.max_memory_allocated()` over the steps is compared with the
planner's `allocated_gb` (tensors only); `max_memory_reserved()` plus the CUDA context (device memory in
use outside PyTorch's allocator, read after training) with its `total_gb`. A case is within tolerance when
the allocated estimate is within 20% of the measured peak.

This is the plain backend's training step (transformers + PEFT), the one the planner models; Unsloth is kept
out of the process (UNSLOTH_COURSE_BACKEND=plain) because it patches transformers' models.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# unsloth_course's package import would import Unsloth on a GPU, and Unsloth patches transformers' models:
# the planner models plain transformers + PEFT, so keep Unsloth out of this process (when it starts here).
if "unsloth_course" not in sys.modules:
    os.environ.setdefault("UNSLOTH_COURSE_BACKEND", "plain")

from unsloth_course.cli import planner

# name: (model id, technique, GPU size the planner sizes for, batch, seq_len); None = the planner's choice
# (the largest batch that fits at the recipe's sequence length, 512)
SHARED_GPU = False
CASES = {
    "llama8b-qlora": ("meta-llama/Llama-3.1-8B-Instruct", "qlora", 16, None, None),
    "llama8b-qlora-long": ("meta-llama/Llama-3.1-8B-Instruct", "qlora", 16, 1, 4096),
    "phi35-lora": ("microsoft/Phi-3.5-mini-instruct", "lora", 24, None, None),
    "mistral7b-qlora": ("mistralai/Mistral-7B-Instruct-v0.3", "qlora", 16, None, None),
    "qwen25-lora": ("Qwen/Qwen2.5-1.5B-Instruct", "lora", 16, None, None),
    "smollm2-lora": ("HuggingFaceTB/SmolLM2-135M-Instruct", "lora", 16, None, None),
    "smollm2-full": ("HuggingFaceTB/SmolLM2-135M-Instruct", "full", 16, None, None),
}
TOLERANCE = 0.20


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def build_model(model_id: str, device: str, quantize: bool, dtype=torch.bfloat16, config_overrides=None):
    """Random weights of `model_id`'s architecture on `device`; 4-bit decoder Linears when `quantize`."""
    from transformers import AutoModelForCausalLM

    config = planner.transformers_config(dict(planner.load_config(model_id), **(config_overrides or {})))
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if quantize:
        quantize_linears_4bit(model, device, dtype)
    return model


def quantize_linears_4bit(model, device: str, compute_dtype=torch.bfloat16) -> int:
    """Replace the decoder layers' nn.Linear by bitsandbytes NF4 Linear4bit (double quantization, bf16
    compute), quantizing each random 16-bit weight on `device`; returns how many were replaced."""
    import bitsandbytes as bnb

    replaced = 0
    for layer in model.model.layers:
        for parent in layer.modules():
            for name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=compute_dtype, compress_statistics=True,
                                        quant_type="nf4", device="meta")
                weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                           quant_type="nf4", module=new)
                new.weight = weight.to(device)  # quantizes (Params4bit._quantize)
                if child.bias is not None:
                    new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, new)
                del child, weight
                replaced += 1
    model.is_loaded_in_4bit = True  # PEFT then wraps Linear4bit with its bitsandbytes LoRA layer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return replaced


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of live tensor storages on any device: a CPU stand-in for torch.cuda.max_memory_allocated.

    Every tensor an op returns or receives is recorded by its storage and forgotten when the storage is
    freed (weak reference), so the peak covers weights, adapters, gradients, optimizer states and the
    autograd graph's saved tensors. torch.distributed's MemTracker does the same but cannot handle frozen
    parameters (it hooks every parameter's gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0

    def _forget(self, key: int) -> None:
        _, size = self.live.pop(key, (None, 0))
        self.current -= size

    def track(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(storage)
        entry = self.live.get(key)
        if entry is not None and entry[0]() is storage:
            return
        size = storage.nbytes()
        self.live[key] = (weakref.ref(storage, lambda _, k=key: self._forget(k)), size)
        self.current += size
        self.peak = max(self.peak, self.current)

    def track_all(self, *iterables) -> None:
        for tensors in iterables:
            for tensor in tensors:
                self.track(tensor)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten((args, kwargs, out))[0]:
            self.track(tensor)
        return out


def prepare_training(model, arch: planner.Arch, technique: str, r: int = 16,
                     gradient_checkpointing: bool = True):
    """Gradient checkpointing as unsloth_course.backend enables it, then LoRA on every projection (or, for
    full fine-tuning, every weight trainable)."""
    from peft import LoraConfig, get_peft_model

    full = technique == "full"
    model.requires_grad_(full)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if not full:
            model.enable_input_require_grads()
    if full:
        return model
    config = LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, bias="none",
                        target_modules=arch.lora_targets(), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def quant_state_tensors(model) -> list:
    """bitsandbytes keeps the 4-bit scales beside the weights (module.quant_state), not as parameters."""
    tensors = []
    for module in model.modules():
        state = getattr(module, "quant_state", None)
        if state is not None:
            tensors += [state.absmax, state.code]
            if state.state2 is not None:
                tensors += [state.state2.absmax, state.state2.code]
    return tensors


def make_optimizer(model, optimizer: str):
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=2e-4, weight_decay=0.01)
    return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)


def train_steps(model, optimizer, batch: int, seq_len: int, vocab: int, steps: int,
                device: str) -> list[float]:
    """forward (bf16 autocast) + backward + optimizer step, `steps` times; returns the losses."""
    model.train()
    losses = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 4))
        del loss, ids
    return losses


def run_case(name: str, model_id: str, technique: str, gpu_gb: float, batch: int | None, seq_len: int | None,
             device: str, steps: int, optimizer: str, config_overrides=None) -> dict:
    """Build, train `steps` steps, measure the peak and compare it with the planner's estimate."""
    config = dict(planner.load_config(model_id), **(config_overrides or {}))
    arch = planner.Arch.from_config(config)
    common = {"optimizer": optimizer, "model_name": model_id}
    if batch is None or seq_len is None:
        sized = planner.plan(config, technique, gpu_gb=gpu_gb, batch=batch, seq_len=seq_len, **common)
        rec = sized.recommendation or {"batch": 1, "seq_len": 256}
        batch, seq_len = batch or rec["batch"], seq_len or rec["seq_len"]
    estimate = planner.plan(config, technique, gpu_gb=gpu_gb, batch=batch, seq_len=seq_len, **common)
    breakdown = estimate.breakdown_gb
    row = {"case": name, "model": model_id, "technique": technique, "gpu_gb_planned_for": gpu_gb,
           "batch": batch, "seq_len": seq_len, "optimizer": optimizer, "device": device,
           "planned_allocated_gb": estimate.allocated_gb, "planned_total_gb": estimate.total_gb,
           "planned_weights_gb": round(breakdown["weights"] + breakdown["lora_adapter"], 3),
           "planned_peak_phase": estimate.peak_phase, "planned_breakdown_gb": breakdown}
    print(f"\n=== {name}: {model_id} {technique}, batch {batch} x seq_len {seq_len}, {optimizer}", flush=True)
    started = time.time()
    model = build_model(model_id, device, technique == "qlora", config_overrides=config_overrides)
    model = prepare_training(model, arch, technique)
    opt = make_optimizer(model, optimizer)
    row["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row["planned_trainable_params"] = estimate.trainable_params
    if device == "cuda":
        torch.cuda.synchronize()
        row["measured_weights_gb"] = round(torch.cuda.memory_allocated() / 1e9, 3)
        torch.cuda.reset_peak_memory_stats()
        row["losses"] = train_steps(model, opt, batch, seq_len, arch.vocab_size, steps, device)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 1e9
        row["measured_peak_allocated_gb"] = round(peak, 3)
        row["measured_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 3)
        if not SHARED_GPU:  # device-wide free memory includes other processes' memory on a shared GPU
            free, total = torch.cuda.mem_get_info()
            context_gb = (total - free - torch.cuda.memory_reserved()) / 1e9  # context + libraries, after use
            row["cuda_context_gb"] = round(context_gb, 3)
            row["measured_total_gb"] = round(row["measured_peak_reserved_gb"] + context_gb, 3)
        row["gpu"] = torch.cuda.get_device_name(0)
    else:
        tracker = LiveTensorPeak()
        tracker.track_all(model.parameters(), model.buffers(), quant_state_tensors(model))
        row["measured_weights_gb"] = round(tracker.current / 1e9, 3)
        with tracker:
            row["losses"] = train_steps(model, opt, batch, seq_len, arch.vocab_size, steps, device)
        peak = tracker.peak / 1e9 + planner.WORKSPACE_GB  # the planner's allocated includes GPU workspaces
        row["measured_peak_allocated_gb"] = round(peak, 3)
        row["note"] = ("CPU: peak bytes of live tensor storages (TorchDispatchMode) plus the planner's GPU "
                       "workspace constant")
    row["error_allocated"] = round((estimate.allocated_gb - peak) / peak, 4)
    if "measured_total_gb" in row:
        measured_total = row["measured_total_gb"]
        row["error_total"] = round((estimate.total_gb - measured_total) / measured_total, 4)
    row["within_tolerance"] = abs(row["error_allocated"]) <= TOLERANCE
    row["seconds"] = round(time.time() - started, 1)
    del model, opt
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    print(json.dumps({k: v for k, v in row.items() if k != "planned_breakdown_gb"}), flush=True)
    return row


def print_table(rows: list[dict]) -> None:
    header = f"{'case':18s}{'batch x seq':>13s}{'planned GB':>12s}{'measured GB':>13s}{'error':>9s}  ok"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['case']:18s}  FAILED: {r['error']}")
            continue
        print(f"{r['case']:18s}{r['batch']:>6d} x {r['seq_len']:<5d}{r['planned_allocated_gb']:>12.2f}"
              f"{r['measured_peak_allocated_gb']:>13.2f}{r['error_allocated']:>+9.1%}  "
              f"{'yes' if r['within_tolerance'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cpu-smoke", action="store_true", help="SmolLM2-sized random model, 1 step on CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for planner_verify.json")
    parser.add_argument("--shared-gpu", action="store_true", help="other processes use the GPU too: measure "
                        "this process's tensors (the tolerance check) but not the device-wide CUDA context")
    args = parser.parse_args(argv)
    global SHARED_GPU
    SHARED_GPU = args.shared_gpu

    rows = []
    if args.cpu_smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        rows.append(run_case("smollm2-cpu-smoke", "HuggingFaceTB/SmolLM2-135M-Instruct", "lora", 16, 1, 128,
                             "cpu", steps=1, optimizer="adamw"))
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU: run with --cpu-smoke here")
        optimizer = "adamw_8bit" if has_bitsandbytes() else "adamw"
        for name in args.cases:
            model_id, technique, gpu_gb, batch, seq_len = CASES[name]
            if technique == "qlora" and not has_bitsandbytes():
                rows.append({"case": name, "error": "bitsandbytes is not installed: QLoRA skipped"})
                continue
            try:
                rows.append(run_case(name, model_id, technique, gpu_gb, batch, seq_len, "cuda", args.steps,
                                     optimizer))
            except Exception as error:  # noqa: BLE001 (one failing case must not hide the others' numbers)
                rows.append({"case": name, "error": f"{type(error).__name__}: {error}"})
                gc.collect()
                torch.cuda.empty_cache()
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "planner_verify.json"
    versions = {name: _version(name) for name in ("torch", "transformers", "peft", "bitsandbytes")}
    payload = {"tolerance": TOLERANCE, "versions": versions, "unsloth_imported": "unsloth" in sys.modules,
               "rows": rows, "assumptions": list(planner.ASSUMPTIONS)}
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
    ok = all(r.get("within_tolerance") for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

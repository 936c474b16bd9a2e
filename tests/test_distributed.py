"""unsloth_course.cli.distributed: ranks from the launcher's environment, rank-0-only output, the global batch,
and a real 2-process data-parallel LoRA run on CPU (torchrun, gloo)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no test may reach the Hub

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unsloth_course.cli import distributed
from unsloth_course.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture
def launched(monkeypatch):
    """Pretend to be a rank of a torchrun/accelerate launch: set(rank, local_rank, world)."""
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)

    def set_env(rank=None, local_rank=None, world=None):
        for name, value in zip(LAUNCH_ENV, (rank, local_rank, world)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))

    return set_env


def test_single_process_defaults(launched):
    launched()
    assert (distributed.rank(), distributed.local_rank(), distributed.world_size()) == (0, 0, 1)
    assert distributed.is_main_process() and not distributed.is_distributed()
    assert distributed.trainer_ddp_args() == {}
    assert distributed.device_for_rank() in ("cpu", "cuda:0")


def test_ranks_from_launcher_environment(launched):
    launched(rank=3, local_rank=1, world=4)
    assert (distributed.rank(), distributed.local_rank(), distributed.world_size()) == (3, 1, 4)
    assert not distributed.is_main_process() and distributed.is_distributed()
    launched(local_rank=0, world=2)  # LOCAL_RANK alone (single machine)
    assert distributed.rank() == 0 and distributed.is_main_process()
    launched(rank="x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        distributed.rank()


def test_main_process_only_and_print_main(launched, capsys):
    calls = []

    @distributed.main_process_only
    def save(path):
        calls.append(path)
        return path

    launched(rank=1, local_rank=1, world=2)
    assert save("a") is None
    distributed.print_main("summary")
    assert calls == [] and capsys.readouterr().out == ""
    launched(rank=0, local_rank=0, world=2)
    assert save("b") == "b"
    distributed.print_main("summary")
    assert calls == ["b"] and capsys.readouterr().out == "summary\n"


def test_global_batch_and_scaling_line(launched):
    recipe = get_recipe("lora", "full", per_device_train_batch_size=2, gradient_accumulation_steps=4)
    launched()
    assert distributed.global_batch(recipe) == 8
    assert distributed.global_batch(recipe, world=4) == 32
    launched(rank=0, local_rank=0, world=2)
    line = distributed.describe_scaling(recipe)
    assert "2 processes x per-device batch 2 x gradient accumulation 4 = global batch 16" in line
    assert "learning rate 0.0002" in line and "not scaled" in line
    record = distributed.scaling_record(recipe)
    assert record["global_batch"] == 16 and record["learning_rate_scaled"] is False
    with pytest.raises(ValueError, match="world size 0"):
        distributed.global_batch(recipe, world=0)


def test_trainer_ddp_args_on_cpu(launched, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    launched(rank=1, local_rank=1, world=2)
    assert distributed.trainer_ddp_args() == {"use_cpu": True, "ddp_backend": "gloo",
                                              "ddp_find_unused_parameters": False}
    assert "ddp_find_unused_parameters" not in distributed.trainer_ddp_args(lora=False)


def test_unsloth_multi_gpu_note_names_what_is_unsupported():
    note = distributed.UNSLOTH_MULTI_GPU
    assert "torchrun" in note and "DataParallel" in note and "Not supported" in note


WORKER = textwrap.dedent('''
    """One rank of a data-parallel LoRA run, as `unsloth-course run lora --quick` sets it up."""
    import json, os, sys
    from unsloth_course import data
    from unsloth_course.cli import distributed
    from unsloth_course.backend import FastLanguageModel
    from unsloth_course.recipes import get_recipe
    from unsloth_course import trainers

    out = sys.argv[1]
    print(f"rank {distributed.rank()} of {distributed.world_size()} starting", flush=True)
    recipe = get_recipe("lora", "quick")
    model, tokenizer = FastLanguageModel.from_pretrained(max_seq_length=128)
    model = FastLanguageModel.get_peft_model(model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                             target_modules=list(recipe.target_modules),
                                             random_state=recipe.seed)
    train_set = data.to_prompt_completion(data.load_alpaca(n_rows=16))
    trainer = trainers.sft_trainer(recipe.replace(max_steps=2, max_seq_length=128), model, tokenizer, train_set,
                                   out, **distributed.trainer_ddp_args())
    trainer.train()
    import torch.distributed as dist
    record = {"world_size": distributed.world_size(), "global_batch": distributed.global_batch(recipe),
              "global_step": trainer.state.global_step,
              "trainer_world_size_is_2": trainer.args.world_size == 2,
              "backend": dist.get_backend() if dist.is_initialized() else None,
              "distributed_type": str(trainer.accelerator.distributed_type),
              "wrapped": type(trainer.model_wrapped).__name__,
              "tokens_seen": trainer.state.num_input_tokens_seen,
              "scaling": distributed.describe_scaling(recipe), "writer_rank": distributed.rank()}
    distributed.print_main("SUMMARY " + json.dumps(record))
    if distributed.is_main_process():
        with open(os.path.join(out, "ddp_record.json"), "x") as handle:  # "x": a second writer would fail
            json.dump(record, handle)
    distributed.shutdown()  # every rank waits for the others, then the process group is destroyed
    print(f"rank {distributed.rank()} done", flush=True)
''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_data_parallel_lora_on_cpu(tmp_path):
    """torchrun starts 2 processes; the Trainer forms a gloo group, wraps the LoRA model in DDP and trains 2
    steps of the quick recipe; only rank 0 writes the record and prints the summary."""
    from unsloth_course.models import resolve_model

    resolve_model(verbose=False)  # convert the offline checkpoint once, before two ranks race to do it
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    # `accelerate launch --cpu` starts ONE process here (multi-CPU goes through mpirun); torchrun (or
    # `accelerate launch --multi_gpu`, which runs torchrun) starts both. --redirects/--log-dir split each
    # rank's stdout into logs/<run>/attempt_0/<rank>/stdout.log.
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "--log-dir", str(logs), "--redirects", "3",
               str(script), str(out)]
    started = time.time()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    elapsed = time.time() - started
    rank_logs = {int(p.parent.name): p.read_text() for p in logs.glob("*/attempt_0/*/stdout.log")}
    detail = f"exit {result.returncode} after {elapsed:.0f} s\n{result.stderr[-3000:]}\n{rank_logs}"
    assert result.returncode == 0, detail
    records = list(out.glob("**/ddp_record.json"))
    assert len(records) == 1, detail
    record = json.loads(records[0].read_text())
    assert record["world_size"] == 2 and record["trainer_world_size_is_2"] is True
    assert record["global_step"] == 2 and record["global_batch"] == 2 * 1 * 2
    assert record["backend"] == "gloo" and record["distributed_type"] == "DistributedType.MULTI_CPU"
    assert record["wrapped"] == "DistributedDataParallel" and record["writer_rank"] == 0
    assert "global batch 4" in record["scaling"] and "not scaled" in record["scaling"]
    assert sorted(rank_logs) == [0, 1], detail
    assert "rank 0 of 2 starting" in rank_logs[0] and "rank 1 of 2 starting" in rank_logs[1]
    assert "SUMMARY" in rank_logs[0] and "rank 0 done" in rank_logs[0]
    assert "rank 1 done" in rank_logs[1] and "SUMMARY" not in rank_logs[1]
    assert "'loss'" not in rank_logs[1]  # the Trainer logs on rank 0 only

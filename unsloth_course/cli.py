"""`unsloth-course` command line: run a technique end to end, build notebooks."""

from __future__ import annotations

import argparse
import sys

from .recipes import TECHNIQUES


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unsloth-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one technique end to end (load, data, train, compare, save)")
    run.add_argument("technique", choices=TECHNIQUES)
    run.add_argument("--quick", action="store_true", help="quick profile (CPU/CI); default: UNSLOTH_COURSE_QUICK")
    run.add_argument("--max-steps", type=_positive_int, help="override the recipe's max_steps")
    run.add_argument("--output-dir", help="where to save (default outputs/<technique>)")
    run.add_argument("--model", help="model id or folder (default: SmolLM2-135M-Instruct)")
    sub.add_parser("info", help="print the backend, device, precision and library versions")
    build = sub.add_parser("build-notebooks", help="regenerate notebooks/*.ipynb from their .py sources")
    build.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "build-notebooks":
        from .notebook_build import main as build_main

        return build_main(["--check"] if args.check else [])
    from .backend import backend_info  # imports Unsloth first on a GPU

    if args.command == "info":
        print(backend_info())
        return 0
    from .recipes import get_recipe
    from .runner import run

    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    if args.model:
        overrides["model_name"] = args.model
    recipe = get_recipe(args.technique, "quick" if args.quick else None, **overrides)
    run(args.technique, recipe, args.output_dir or f"outputs/{args.technique}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

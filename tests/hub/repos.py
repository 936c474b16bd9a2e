"""The repositories tests/hub/server.py serves: the course's model and datasets, in their Hub file layouts.

    ROOT/models/HuggingFaceTB/SmolLM2-135M-Instruct   the converted checkpoint of unsloth_course.models
    ROOT/datasets/yahma/alpaca-cleaned               alpaca_data_cleaned.json: one JSON array
    ROOT/datasets/Intel/orca_dpo_pairs               orca_rlhf.jsonl: JSON Lines
    ROOT/datasets/claudios/code_search_net           python/{train,validation,test}-*.parquet + README configs

The rows are the course's own generated rows (unsloth_course.data), never copies of the real datasets; the
layouts and formats are those of the Hub repositories (see /work/notes/local-hub.md). The write_* functions
take any rows in the datasets' columns: tools/local_hub.py serves real rows with them on the GPU machine.
build_problem_repos writes repositories that fail the way Hub repositories can (gated, a loading script, no
data files, a missing column, an outage), under the organisation `course-tests`.
Needs the course's environment (pyarrow, the package). Usage: python tests/hub/repos.py OUTDIR
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from unsloth_course.data import generate_dpo_rows, generate_sft_rows, stdlib_functions
from unsloth_course.models import materialize_gguf

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALPACA_ID = "yahma/alpaca-cleaned"
ORCA_ID = "Intel/orca_dpo_pairs"
CODE_ID = "claudios/code_search_net"
CODE_CONFIG = "python"

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja")
# save_pretrained wrote these loader arguments into tokenizer_config.json; the Hub's copy has none.
STRAY_TOKENIZER_KEYS = ("is_local", "local_files_only")
# The Hub's SmolLM2-135M-Instruct pads with its EOS; the course's conversion pads with <|endoftext|> (as Unsloth
# does on load). The local Hub serves the Hub's values, so that loading from it meets what Colab meets.
HUB_PAD_TOKEN, HUB_PAD_TOKEN_ID = "<|im_end|>", 2

CODE_COLUMNS = ("repository_name", "func_path_in_repository", "func_name", "whole_func_string", "language",
                "func_code_string", "func_code_tokens", "func_documentation_string",
                "func_documentation_tokens", "split_name", "func_code_url")
# split -> (number of parquet shards, as on the Hub; the value of the split_name column)
CODE_SPLITS = {"train": (3, "train"), "validation": (1, "valid"), "test": (1, "test")}


def build_repos(root: str | Path, *, sft_rows: int = 600, dpo_rows: int = 300, code_functions: int = 200,
                seed: int = 3407) -> Path:
    """Write the model and the three dataset repositories under `root` (created) and return it."""
    root = Path(root)
    build_model(root / "models" / MODEL_ID)
    build_alpaca(root / "datasets" / ALPACA_ID, sft_rows, seed)
    build_orca(root / "datasets" / ORCA_ID, dpo_rows, seed)
    build_code_search_net(root / "datasets" / CODE_ID, code_functions, seed)
    return root


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    """A symlink to `source` (the weights are 270 MB); a hard link or a copy where links are refused."""
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def build_model(folder: Path, source: Path | None = None) -> None:
    """A checkpoint folder (default: the converted one of materialize_gguf) as the Hub repo has it: plus
    special_tokens_map.json, minus the loader arguments save_pretrained wrote into tokenizer_config.json, with
    the Hub's pad token (HUB_PAD_TOKEN)."""
    source = Path(source) if source is not None else materialize_gguf()
    missing = [name for name in ("model.safetensors", "tokenizer_config.json")
               if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: not a converted checkpoint ({', '.join(missing)} missing)")
    folder.mkdir(parents=True, exist_ok=True)
    _link_or_copy(source / "model.safetensors", folder / "model.safetensors")
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    for name in ("config.json", "generation_config.json"):
        if (folder / name).is_file():
            config = json.loads((folder / name).read_text())
            _write(folder / name, json.dumps({**config, "pad_token_id": HUB_PAD_TOKEN_ID}, indent=2) + "\n")
    tokenizer = json.loads((source / "tokenizer_config.json").read_text())
    for key in STRAY_TOKENIZER_KEYS:
        tokenizer.pop(key, None)
    tokenizer["pad_token"] = HUB_PAD_TOKEN
    _write(folder / "tokenizer_config.json", json.dumps(tokenizer, indent=2) + "\n")
    special = {k: tokenizer[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    _write(folder / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    _write(folder / "README.md", "---\nlibrary_name: transformers\nlicense: apache-2.0\nlanguage:\n- en\n"
           "---\n# SmolLM2-135M-Instruct (local copy, converted from the course's GGUF)\n")


def build_alpaca(folder: Path, n: int, seed: int) -> None:
    write_alpaca(folder, generate_sft_rows(n, seed), "rows from unsloth_course.data.generate_sft_rows")


def write_alpaca(folder: Path, rows: list[dict], origin: str) -> None:
    """One pretty-printed JSON array (not JSON Lines); the card has no `configs:`, so one split, train."""
    _write(folder / "README.md", "---\nlicense: cc-by-4.0\nlanguage:\n- en\ntags:\n- instruction-finetuning\n"
           "pretty_name: Alpaca-Cleaned\ntask_categories:\n- text-generation\n---\n"
           f"# Alpaca-Cleaned (local copy: {origin})\n")
    _write(folder / "alpaca_data_cleaned.json", json.dumps(rows, indent=4))


def build_orca(folder: Path, n: int, seed: int) -> None:
    write_orca(folder, generate_dpo_rows(n, seed), "rows from unsloth_course.data.generate_dpo_rows")


def write_orca(folder: Path, rows: list[dict], origin: str) -> None:
    """One JSON Lines file at the root, string columns system, question, chosen, rejected."""
    _write(folder / "README.md",
           f"---\nlicense: apache-2.0\n---\n# Intel/orca_dpo_pairs (local copy: {origin})\n")
    _write(folder / "orca_rlhf.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def code_search_net_row(function: dict, split_name: str) -> dict:
    """A CodeSearchNet row for one stdlib_functions() record (text, name, path)."""
    text, path = function["text"], function["path"]
    docstring = ast.get_docstring(ast.parse(text).body[0]) or ""
    return {
        "repository_name": "python/cpython",
        "func_path_in_repository": path,
        "func_name": function["name"],
        "whole_func_string": text,
        "language": "python",
        "func_code_string": text,
        "func_code_tokens": _tokens(text),
        "func_documentation_string": docstring,
        "func_documentation_tokens": _tokens(docstring.split("\n\n")[0]),  # the summary, as in CodeSearchNet
        "split_name": split_name,
        "func_code_url": f"https://github.com/python/cpython/blob/v{platform.python_version()}/Lib/{path}",
    }


def build_code_search_net(folder: Path, n: int, seed: int) -> None:
    """CodeSearchNet rows made from `n` functions of this Python's standard library (stdlib_functions)."""
    if n < 5:
        raise ValueError(f"build_code_search_net: needs at least 5 functions (one per shard), got {n}")
    rows = [code_search_net_row(f, "train") for f in stdlib_functions(n, seed=seed)]
    write_code_search_net(folder, rows, "unsloth_course.data.stdlib_functions")


def write_code_search_net(folder: Path, rows: list[dict], origin: str) -> None:
    """Parquet shards <config>/<split>-NNNNN-of-MMMMM.parquet and a card whose `configs:` name them; a tenth
    of the rows each for validation and test (split_name set to match), the rest for train.

    datasets needs the `configs:` entry to find config "python", prepares every split it names, and checks
    dataset_info's num_examples against the rows, so the card is written from the rows actually written.
    """
    if len(rows) < 5:
        raise ValueError(f"write_code_search_net: needs at least 5 rows (one per shard), got {len(rows)}")
    missing = {c for row in rows for c in CODE_COLUMNS if c not in row}
    if missing:
        raise ValueError(f"write_code_search_net: rows lack the CodeSearchNet columns {sorted(missing)}")
    n_held_out = max(1, len(rows) // 10)
    rows_per_split = {"validation": rows[:n_held_out], "test": rows[n_held_out:2 * n_held_out],
                      "train": rows[2 * n_held_out:]}
    schema = pa.schema([(c, pa.list_(pa.string()) if c.endswith("_tokens") else pa.string())
                        for c in CODE_COLUMNS])
    features = {c: {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
                if c.endswith("_tokens") else {"dtype": "string", "_type": "Value"} for c in CODE_COLUMNS}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, (shards, split_name) in CODE_SPLITS.items():
        split_rows = [{**{c: row[c] for c in CODE_COLUMNS}, "split_name": split_name}
                      for row in rows_per_split[split]]
        for shard in range(shards):
            chunk = split_rows[shard * len(split_rows) // shards:(shard + 1) * len(split_rows) // shards]
            table = pa.Table.from_pylist(chunk, schema=schema).replace_schema_metadata(metadata)
            path = folder / CODE_CONFIG / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)

    card = ["---", "license: other", "language:", "- code", "dataset_info:", f"- config_name: {CODE_CONFIG}",
            "  features:"]
    for c in CODE_COLUMNS:
        card += [f"  - name: {c}", "    sequence: string" if c.endswith("_tokens") else "    dtype: string"]
    card += ["  splits:"]
    card += [line for split in CODE_SPLITS
             for line in (f"  - name: {split}", f"    num_examples: {len(rows_per_split[split])}")]
    card += ["configs:", f"- config_name: {CODE_CONFIG}", "  data_files:"]
    card += [line for split in CODE_SPLITS
             for line in (f"  - split: {split}", f"    path: {CODE_CONFIG}/{split}-*")]
    card += ["---", f"# CodeSearchNet, Python (local copy: {origin})", ""]
    _write(folder / "README.md", "\n".join(card))


# ---------------------------------------------------------------- repositories that fail like Hub ones do

PROBLEMS_ORG = "course-tests"
GATED_TOKEN = "hf_local_hub_granted"  # the one token the gated repositories accept
PROBLEM_REPOS = {  # name -> what it is
    "gated-alpaca": "a gated dataset (alpaca rows): 401 without a token, 403 with another one",
    "gated-model": "a gated model (config.json only)",
    "script-only": "a dataset with only a loading script, as code-search-net/code_search_net",
    "no-data": "a dataset with a card and no data files",
    "alpaca-no-output": "alpaca rows without the output column",
    "outage": "a dataset whose every request is answered 503",
    "math": "question/answer rows (integer answers) for GRPO",
}


def build_problem_repos(root: str | Path, seed: int = 3407) -> Path:
    """The PROBLEM_REPOS under `root` (created), for the course's loud failures; returns `root`."""
    from .server import GATED_FILE, STATUS_FILE

    root = Path(root)
    datasets, models = root / "datasets" / PROBLEMS_ORG, root / "models" / PROBLEMS_ORG
    rows = generate_sft_rows(40, seed)
    card = "---\nlicense: apache-2.0\n---\n"
    write_alpaca(datasets / "gated-alpaca", rows, "generated rows, gated")
    _write(datasets / "gated-alpaca" / GATED_FILE, GATED_TOKEN + "\n")
    _write(models / "gated-model" / "config.json", json.dumps({"model_type": "llama"}))
    _write(models / "gated-model" / GATED_FILE, GATED_TOKEN + "\n")
    _write(datasets / "script-only" / "README.md", card)
    _write(datasets / "script-only" / "script-only.py", "import datasets  # a loading script\n")
    _write(datasets / "no-data" / "README.md", card + "# no data files here\n")
    _write(datasets / "alpaca-no-output" / "README.md", card)
    _write(datasets / "alpaca-no-output" / "data.json",
           json.dumps([{"instruction": r["instruction"], "input": r["input"]} for r in rows]))
    write_alpaca(datasets / "outage", rows, "generated rows, always 503")
    _write(datasets / "outage" / STATUS_FILE, "503\n")
    problems = [{"question": f"What is {a} plus {a + 3}?", "answer": 2 * a + 3}
                for a in range(1, 41)]
    _write(datasets / "math" / "README.md", card)
    _write(datasets / "math" / "train.jsonl", "".join(json.dumps(row) + "\n" for row in problems))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="where to write models/ and datasets/ (created)")
    parser.add_argument("--sft-rows", type=int, default=600)
    parser.add_argument("--dpo-rows", type=int, default=300)
    parser.add_argument("--code-functions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3407)
    args = parser.parse_args(argv)
    root = build_repos(args.outdir, sft_rows=args.sft_rows, dpo_rows=args.dpo_rows,
                       code_functions=args.code_functions, seed=args.seed)
    print(f"repositories written under {root}")


if __name__ == "__main__":
    main()

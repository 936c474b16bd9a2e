"""The repositories tests/hub/server.py serves: the course's model and datasets, in their Hub file layouts.

    ROOT/models/HuggingFaceTB/SmolLM2-135M-Instruct   the converted checkpoint of unsloth_course.models
    ROOT/datasets/yahma/alpaca-cleaned               alpaca_data_cleaned.json: one JSON array
    ROOT/datasets/Intel/orca_dpo_pairs               orca_rlhf.jsonl: JSON Lines
    ROOT/datasets/claudios/code_search_net           python/{train,validation,test}-*.parquet + README configs

The rows are the course's own generated rows (unsloth_course.data), never copies of the real datasets; the
layouts and formats are those of the Hub repositories (see /work/notes/local-hub.md).
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


def build_model(folder: Path) -> None:
    """The converted checkpoint (materialize_gguf), plus the special_tokens_map.json the Hub repo has."""
    source = materialize_gguf()
    folder.mkdir(parents=True, exist_ok=True)
    _link_or_copy(source / "model.safetensors", folder / "model.safetensors")
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    tokenizer = json.loads((source / "tokenizer_config.json").read_text())
    for key in STRAY_TOKENIZER_KEYS:
        tokenizer.pop(key, None)
    _write(folder / "tokenizer_config.json", json.dumps(tokenizer, indent=2) + "\n")
    special = {k: tokenizer[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    _write(folder / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    _write(folder / "README.md", "---\nlibrary_name: transformers\nlicense: apache-2.0\nlanguage:\n- en\n"
           "---\n# SmolLM2-135M-Instruct (local copy, converted from the course's GGUF)\n")


def build_alpaca(folder: Path, n: int, seed: int) -> None:
    """One pretty-printed JSON array (not JSON Lines); the card has no `configs:`, so one split, train."""
    _write(folder / "README.md", "---\nlicense: cc-by-4.0\nlanguage:\n- en\ntags:\n- instruction-finetuning\n"
           "pretty_name: Alpaca-Cleaned\ntask_categories:\n- text-generation\n---\n"
           "# Alpaca-Cleaned (local copy: rows from unsloth_course.data.generate_sft_rows)\n")
    _write(folder / "alpaca_data_cleaned.json", json.dumps(generate_sft_rows(n, seed), indent=4))


def build_orca(folder: Path, n: int, seed: int) -> None:
    """One JSON Lines file at the root, string columns system, question, chosen, rejected."""
    _write(folder / "README.md", "---\nlicense: apache-2.0\n---\n"
           "# Intel/orca_dpo_pairs (local copy: rows from unsloth_course.data.generate_dpo_rows)\n")
    rows = generate_dpo_rows(n, seed)
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
    """Parquet shards <config>/<split>-NNNNN-of-MMMMM.parquet and a card whose `configs:` name them.

    datasets needs the `configs:` entry to find config "python", prepares every split it names, and checks
    dataset_info's num_examples against the rows, so the card is written from the rows actually written.
    """
    if n < 5:
        raise ValueError(f"build_code_search_net: needs at least 5 functions (one per shard), got {n}")
    functions = stdlib_functions(n, seed=seed)
    n_held_out = max(1, n // 10)
    rows_per_split = {"validation": functions[:n_held_out], "test": functions[n_held_out:2 * n_held_out],
                      "train": functions[2 * n_held_out:]}
    schema = pa.schema([(c, pa.list_(pa.string()) if c.endswith("_tokens") else pa.string())
                        for c in CODE_COLUMNS])
    features = {c: {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
                if c.endswith("_tokens") else {"dtype": "string", "_type": "Value"} for c in CODE_COLUMNS}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, (shards, split_name) in CODE_SPLITS.items():
        rows = [code_search_net_row(f, split_name) for f in rows_per_split[split]]
        for shard in range(shards):
            chunk = rows[shard * len(rows) // shards:(shard + 1) * len(rows) // shards]
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
    card += ["---", "# CodeSearchNet, Python (local copy: unsloth_course.data.stdlib_functions)", ""]
    _write(folder / "README.md", "\n".join(card))


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

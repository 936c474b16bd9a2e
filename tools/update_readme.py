"""Generated parts of README.md (the notebook table with Colab badges from pyproject's repository URL, the
results matrix from committed run records, the bench table) and of docs/DATA.md (one example row per format).

    python -m tools.update_readme           # rewrite the generated blocks
    python -m tools.update_readme --check   # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
RESULTS_DIR = REPO_ROOT / "docs" / "runs"

NOTEBOOKS = (
    ("colab1_full_finetuning_smollm2", "full", "full fine-tuning",
     "every weight trains: `full_finetuning=True`, memory of weights/gradients/optimizer, chat templates and EOS",
     "yahma/alpaca-cleaned"),
    ("colab2_lora_finetuning_smollm2", "lora", "LoRA",
     "rank, alpha, target modules; merge and save; measured comparison with notebook 1", "yahma/alpaca-cleaned"),
    ("colab3_dpo_reinforcement_learning", "dpo", "DPO",
     "preference pairs, beta, the implicit reward, held-out preference accuracy", "Intel/orca_dpo_pairs"),
    ("colab4_grpo_reasoning_model", "grpo", "GRPO",
     "reward functions, group advantages, making learning possible for a small model", "generated math problems"),
    ("colab5_continued_pretraining", "cpt", "continued pretraining",
     "raw-text next-token training, embeddings at their own learning rate, tied embeddings, forgetting",
     "code_search_net (Python)"),
)


def repository() -> tuple[str, str]:
    """(repository URL, branch) from [tool.unsloth_course] in pyproject.toml."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["unsloth_course"]
    return config["repository"].rstrip("/"), config.get("branch", "main")


def colab_url(notebook: str) -> str:
    url, branch = repository()
    github = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/notebooks/{notebook}.ipynb"


def notebooks_table() -> str:
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    rows = ["| # | notebook | technique | what it teaches | dataset | Colab |", "|---|---|---|---|---|---|"]
    for i, (name, _, technique, teaches, dataset) in enumerate(NOTEBOOKS, 1):
        rows.append(f"| {i} | [{name}](notebooks/{name}.ipynb) | {technique} | {teaches} | {dataset} | "
                    f"[![Open In Colab]({badge})]({colab_url(name)}) |")
    return "\n".join(rows)


def dataset_examples() -> str:
    """One row of each format, produced by the library's offline generators (the Hub's rows look alike)."""
    from datasets import Dataset

    from unsloth_course.data import formats, generators, grpo
    from unsloth_course.data.cpt import stdlib_functions
    from unsloth_course.data.dpo import to_dpo_conversations

    sft = formats.to_prompt_completion(Dataset.from_list(generators.generate_sft_rows(6)))[0]
    dpo_row = to_dpo_conversations(Dataset.from_list(generators.generate_dpo_rows(6)))[0]
    dpo = {key: dpo_row[key] for key in ("prompt", "chosen", "rejected")}
    problem = grpo.generate_math_problems(1, level=2, seed=1)[0]
    code = stdlib_functions(1)[0]["text"]
    blocks = [
        ("SFT (notebooks 1-2): conversational prompt / completion; the loss covers the completion only", sft),
        ("DPO (notebook 3): prompt / chosen / rejected", dpo),
        ("GRPO (notebook 4): a prompt and the answer the reward checks",
         {"prompt": [{"role": "system", "content": "<SYSTEM_PROMPT>"},
                     {"role": "user", "content": problem["question"]}], "answer": str(problem["answer"])}),
    ]
    parts = [f"**{title}**\n\n```json\n{json.dumps(row, indent=1, ensure_ascii=False)}\n```" for title, row in blocks]
    parts.append("**CPT (notebook 5): raw text, then the EOS token `<|im_end|>`**\n\n```python\n"
                 f"{code.rstrip()}\n```")
    return "\n\n".join(parts)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def results_matrix(results_dir: Path = RESULTS_DIR) -> str:
    """The five techniques side by side, from the committed GPU run records in docs/runs/: data, the held-out
    result before -> after, the target it had to meet, time and memory (details: docs/RESULTS.md)."""
    from tools.update_results import data_text, held_out_result, target_met

    records = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}
    if not records:
        return "_No run records committed yet (docs/runs/*.json)._"
    rows = ["| technique | data | held-out result | target | device | time | peak memory |",
            "|---|---|---|---|---|---|---|"]
    for _, technique, label, _, _ in NOTEBOOKS:
        r = records.get(technique)
        if r is None:
            rows.append(f"| {label} | no run record yet | | | | | |")
            continue
        device = r.get("backend", {}).get("device_name", "?")
        rows.append(f"| {label} | {data_text(r)} | {held_out_result(r)} | {target_met(r)} | {device} | "
                    f"{_fmt(r.get('runtime_s'), '{:.0f}')} s | {_fmt(r.get('memory_peak_gb'), '{:.2f}')} GB |")
    return "\n".join(rows)


def bench_matrix(extra_dir: Path = RESULTS_DIR / "extra") -> str:
    """Unsloth vs plain from the bench records (throughput profile), measured rows only."""
    from unsloth_course.cli.bench import TARGETS, load_reports, target_verdict, unsloth_over_plain
    from unsloth_course.recipes import get_recipe, parse_overrides

    lines = ["| technique | micro-batch | device | Unsloth tokens/s | plain tokens/s | Unsloth / plain | "
             "target (Unsloth) |", "|---|---|---|---|---|---|---|"]
    for report in load_reports(extra_dir):
        technique = report["technique"]
        batch = get_recipe(technique, report.get("profile", "throughput"),
                           **parse_overrides(technique, report.get("overrides", []))).per_device_train_batch_size
        key = TARGETS[technique][0]
        unsloth, plain = (report["results"].get(b, {}) for b in ("unsloth", "plain"))
        cells = [r.get("error", "-") if "error" in r or not r.get(key) else f"{r[key]:,.0f}" for r in (unsloth, plain)]
        speedup = unsloth_over_plain(technique, report["results"])
        unit = " generated" if technique == "grpo" else ""
        verdict = target_verdict(technique, unsloth) if "error" not in unsloth else "-"
        lines.append(f"| {technique}{unit} | {batch} | {report.get('gpu', '?')} | {cells[0]} | {cells[1]} | "
                     f"{f'{speedup:.2f}x' if speedup else '-'} | {verdict} |")
    return "\n".join(lines) if len(lines) > 2 else "No bench record yet."


DATA_MD = REPO_ROOT / "docs" / "DATA.md"
BLOCKS = {"notebooks": notebooks_table, "results": results_matrix, "bench": bench_matrix}  # README.md's
DATA_BLOCKS = {"formats": dataset_examples}  # docs/DATA.md's


def render(text: str, blocks: dict = BLOCKS, name_of_file: str = "README.md") -> str:
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{name_of_file} has no <!-- {name}:start --> ... <!-- {name}:end --> block")
        content = make()
        text = pattern.sub(lambda m, c=content: m.group(1) + c + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for path, blocks in ((README, BLOCKS), (DATA_MD, DATA_BLOCKS)):
        current = path.read_text()
        fresh = render(current, blocks, path.name)
        if fresh != current:
            stale.append(path.relative_to(REPO_ROOT))
            if not args.check:
                path.write_text(fresh)
    if args.check:
        print(f"out of date: {', '.join(map(str, stale))}: run `python -m tools.update_readme`" if stale
              else "README.md and docs/DATA.md are up to date")
        return int(bool(stale))
    print(f"updated: {', '.join(map(str, stale))}" if stale else "README.md and docs/DATA.md unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())

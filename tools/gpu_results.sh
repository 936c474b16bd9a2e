#!/usr/bin/env bash
# The GPU run behind docs/RESULTS.md: the five notebooks in their full profile on real rows, and notebooks 1, 3
# and 5 (quick profile) through a local Hugging Face Hub that serves the same rows and the converted model.
# On the GPU machine (see ../shared/gpu/README.md), after `source /tmp/gpu/device-b.sh`, with the real rows of
# ../shared/realdata/ (alpaca-cleaned.jsonl, orca_dpo_pairs.jsonl, code_search_net_python.jsonl; .gz accepted)
# carried in a git-ignored folder:
#     REALDATA=.lab/realdata bash tools/gpu_results.sh        # ONLY="nb2|nb4" runs some jobs only
#     REALDATA=.lab/realdata GRPO_VALIDATION=1 ONLY="nb4|val-.*" bash tools/gpu_results.sh
# Everything comes back in $OUT/results.tgz (executed notebooks, logs, run records): copy the executed notebooks
# to docs/executed/, the records to docs/runs/ and docs/runs/hub/, then `python -m tools.update_results`.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT" .realdata
for f in "${REALDATA:?set REALDATA to the folder with the real rows}"/*; do
  case "$f" in
    *.jsonl.gz) gunzip -c "$f" > ".realdata/$(basename "$f" .gz)" ;;
    *.jsonl) cp "$f" .realdata/ ;;
  esac
done
model_dir=$(python3 -c "from unsloth_course.models import resolve_model; print(resolve_model(verbose=False))" | tail -1)
python3 -m tools.local_hub --realdata .realdata --model-dir "$model_dir" --port 8765 | tee "$OUT/local_hub.txt"
for n in 1 3 5; do mkdir -p "/tmp/hub$n"; cp notebooks/colab$n*.ipynb "/tmp/hub$n/"; done
L=gpu_logs R=$PWD/.realdata
HUB="env -u HF_HUB_OFFLINE -u HF_DATASETS_OFFLINE -u TRANSFORMERS_OFFLINE HF_ENDPOINT=http://127.0.0.1:8765 UNSLOTH_COURSE_QUICK=1"
cat > /tmp/jobs.txt <<JOBS
nb1 python3 -m tools.run_notebook notebooks/colab1_full_finetuning_smollm2.ipynb --out $L/nb1 --set DATASET=$R/alpaca-cleaned.jsonl
nb2 python3 -m tools.run_notebook notebooks/colab2_lora_finetuning_smollm2.ipynb --out $L/nb2 --set DATASET=$R/alpaca-cleaned.jsonl
nb3 python3 -m tools.run_notebook notebooks/colab3_dpo_reinforcement_learning.ipynb --out $L/nb3 --set DATASET=$R/orca_dpo_pairs.jsonl
nb4 python3 -m tools.run_notebook notebooks/colab4_grpo_reasoning_model.ipynb --out $L/nb4
nb5 python3 -m tools.run_notebook notebooks/colab5_continued_pretraining.ipynb --out $L/nb5 --set DATASET=$R/code_search_net_python.jsonl --set GENERAL_DATASET=$R/alpaca-cleaned.jsonl
hub1 $HUB HF_HOME=/tmp/hfhome1 python3 -m tools.run_notebook /tmp/hub1/colab1_full_finetuning_smollm2.ipynb --out $L/hub1
hub3 $HUB HF_HOME=/tmp/hfhome3 python3 -m tools.run_notebook /tmp/hub3/colab3_dpo_reinforcement_learning.ipynb --out $L/hub3
hub5 $HUB HF_HOME=/tmp/hfhome5 python3 -m tools.run_notebook /tmp/hub5/colab5_continued_pretraining.ipynb --out $L/hub5
JOBS
# GRPO_VALIDATION=1 adds the GRPO settings sweep (`unsloth-course run grpo`), drawn with another seed: other
# training problems and another held-out set, so that settings are compared without touching the notebook's. Every
# setting a job name states is set explicitly: the recipe's own values change when a choice is made.
if [ -n "${GRPO_VALIDATION:-}" ]; then
  V="python3 -m unsloth_course run grpo --set seed=1"
  cat >> /tmp/jobs.txt <<JOBS
val-lr5e-5-60 $V --set learning_rate=5e-5 --max-steps 60 --output-dir outputs/val1
val-lr5e-5-100 $V --set learning_rate=5e-5 --max-steps 100 --output-dir outputs/val2
val-lr1e-4-60 $V --set learning_rate=1e-4 --max-steps 60 --output-dir outputs/val3
val-lr1e-4-100 $V --set learning_rate=1e-4 --max-steps 100 --output-dir outputs/val4
JOBS
fi
if [ -n "${ONLY:-}" ]; then grep -E "^($ONLY) " /tmp/jobs.txt > /tmp/jobs1.txt; mv /tmp/jobs1.txt /tmp/jobs.txt; fi
ITEM_TIMEOUT=${ITEM_TIMEOUT:-520} bash tools/gpu_suite.sh jobs /tmp/jobs.txt

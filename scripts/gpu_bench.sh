#!/usr/bin/env bash
# The bench runs behind docs/RESULTS.md's backend table. On the GPU machine, after `source /tmp/gpu/device-b.sh`:
#   TOTAL=560 bash scripts/gpu_bench.sh scripts/gpu_jobs/bench-f.txt
# FILE has one line per item, `NAME COMMAND...` (blank lines and # comments skipped); the items run one after
# the other (alone on the GPU, so their times are comparable). $W is the item's own folder: pass it to
# `unsloth-course bench ... --workdir $W --json $W/bench.json`. An item gets what is left of $TOTAL seconds
# (at most $ITEM_TIMEOUT, default 300); the whole script starts nothing once fewer than 30 s are left.
# Everything (bench JSON, the children's logs without progress bars, run records) goes into one archive,
# $OUT/bench.tgz, refreshed after each item (the device returns at most 8 files).
set -uo pipefail
plan=$1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
WORK=/tmp/bench_out; mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
deadline=$(( $(date +%s) + ${TOTAL:-560} ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$WORK/gpu.txt"
python3 -c "from unsloth_course.models import resolve_model; resolve_model()"  # convert the GGUF once
while read -r name command; do
  case "$name" in ''|'#'*) continue ;; esac
  left=$(( deadline - $(date +%s) ))
  limit=$(( left < ${ITEM_TIMEOUT:-300} ? left : ${ITEM_TIMEOUT:-300} ))
  if [ "$limit" -lt 30 ]; then echo "$name: not started ($left s left)" | tee -a "$WORK/bench.txt"; continue; fi
  export W="$WORK/$name"; mkdir -p "$W"
  start=$(date +%s)
  timeout "$limit" bash -c "$command" < /dev/null 2>&1 | tr '\r' '\n' \
    | grep --line-buffered -v -E "it/s\]|s/it\]|examples/s\]" > "$W/item.log"
  echo "$name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$WORK/bench.txt"
  for log in "$W"/*-unsloth.log "$W"/*-plain.log; do  # child logs without progress bars
    [ -f "$log" ] && tr '\r' '\n' < "$log" | grep -v -E "it/s\]|s/it\]|examples/s\]" > "$log.txt" && rm "$log"
  done
  find "$W" -mindepth 2 -name "*.safetensors" -delete  # run outputs: keep logs and records, not weights
  tar czf "$OUT/bench.tmp" --exclude="out-*" -C "$WORK" . && mv -f "$OUT/bench.tmp" "$OUT/bench.tgz"
done < "$plan"
cat "$WORK/bench.txt"

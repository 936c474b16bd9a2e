#!/usr/bin/env bash
# The bench behind docs/RESULTS.md's backend table. On the GPU machine, after `source /tmp/gpu/device-b.sh`:
#   STEPS=12 bash scripts/gpu_bench.sh full lora cpt dpo grpo[:STEPS]
# Runs `unsloth-course bench TECHNIQUE --profile throughput` one technique at a time (alone on the GPU, so the
# times are comparable), with a torch-profiler window of 2 steps. Everything (JSON, logs, run records) goes
# into one archive, $OUT/bench.tgz, refreshed after each technique (the device returns at most 8 files), and
# the whole script stops starting work $TOTAL seconds (default 560) after it began.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
WORK=/tmp/bench_out; mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
deadline=$(( $(date +%s) + ${TOTAL:-560} ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$WORK/gpu.txt"
python3 -c "from unsloth_course.models import resolve_model; resolve_model()"  # convert the GGUF once
for item in "$@"; do
  technique=${item%%:*}; steps=${STEPS:-12}
  [ "$item" != "$technique" ] && steps=${item#*:}
  left=$(( deadline - $(date +%s) ))
  limit=$(( left < ${BENCH_TIMEOUT:-300} ? left : ${BENCH_TIMEOUT:-300} ))
  if [ "$limit" -lt 30 ]; then echo "bench $technique: not started ($left s left)" | tee -a "$WORK/bench.txt"; continue; fi
  child=$(( limit / 2 - 5 < ${CHILD_TIMEOUT:-90} ? limit / 2 - 5 : ${CHILD_TIMEOUT:-90} ))  # per backend run
  start=$(date +%s)
  timeout "$limit" python3 -m unsloth_course bench "$technique" --profile "${PROFILE:-throughput}" \
    --steps "$steps" --torch-profile 2 --timeout "$child" --json "$WORK/bench-$technique.json" --workdir "/tmp/bench-$technique" \
    > "$WORK/bench-$technique.log" 2>&1
  echo "bench $technique ($steps steps): exit $? after $(( $(date +%s) - start )) s" | tee -a "$WORK/bench.txt"
  for log in /tmp/bench-"$technique"/*.log; do  # child logs without progress bars
    [ -f "$log" ] && tr '\r' '\n' < "$log" | grep -v -E "it/s\]|s/it\]|examples/s\]" > "$WORK/$(basename "$log")"
  done
  for runs in /tmp/bench-"$technique"/runs-*; do  # the run records (runs-unsloth, runs-plain)
    [ -d "$runs" ] && mkdir -p "$WORK/$technique-$(basename "$runs")" && cp "$runs"/*.json "$WORK/$technique-$(basename "$runs")/"
  done
  tar czf "$OUT/bench.tmp" -C "$WORK" . && mv -f "$OUT/bench.tmp" "$OUT/bench.tgz"
done
cat "$WORK/bench.txt"

#!/usr/bin/env bash
# The bench behind docs/RESULTS.md's backend table. On the GPU machine, after `source /tmp/gpu/device-b.sh`:
#   STEPS=12 bash scripts/gpu_bench.sh full lora cpt dpo grpo[:STEPS]
# Runs `unsloth-course bench TECHNIQUE --profile throughput` one technique at a time (alone on the GPU, so the
# times are comparable), with a torch-profiler window of 2 steps; JSON, logs and run records go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for item in "$@"; do
  technique=${item%%:*}; steps=${STEPS:-12}
  [ "$item" != "$technique" ] && steps=${item#*:}
  start=$(date +%s)
  timeout "${BENCH_TIMEOUT:-300}" python3 -m unsloth_course bench "$technique" --profile "${PROFILE:-throughput}" \
    --steps "$steps" --torch-profile 2 --json "$OUT/bench-$technique.json" --workdir "/tmp/bench-$technique" \
    > "$OUT/bench-$technique.log" 2>&1
  echo "bench $technique ($steps steps): exit $? after $(( $(date +%s) - start )) s"
  for log in /tmp/bench-"$technique"/*.log; do  # child logs without progress bars
    [ -f "$log" ] && tr '\r' '\n' < "$log" | grep -v -E "it/s\]|s/it\]|examples/s\]" > "$OUT/$(basename "$log")"
  done
  tar czf "$OUT/bench-$technique-records.tgz" -C "/tmp/bench-$technique" $(cd "/tmp/bench-$technique" 2>/dev/null \
    && ls -d runs-* 2>/dev/null) 2>/dev/null
done

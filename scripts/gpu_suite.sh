#!/usr/bin/env bash
# The GPU runs behind the figures in docs/RESULTS.md. On the GPU machine (see ../shared/gpu/README.md), after
# `source /tmp/gpu/device-b.sh`:
#   bash scripts/gpu_suite.sh notebooks NB...      executes each notebook in its full profile (pytest --nbmake)
#   bash scripts/gpu_suite.sh cli TECHNIQUE...     runs `python3 -m unsloth_course run TECHNIQUE` (full profile)
#   bash scripts/gpu_suite.sh jobs FILE             runs every line `NAME COMMAND...` of FILE at the same time
#                                                   (jobs share the GPU: their times are not benchmarks)
# Each item gets at most $ITEM_TIMEOUT seconds; its log, executed notebook and run records are copied to
# $OUT as soon as it ends, so that a later timeout loses nothing.
set -uo pipefail
mode=$1; shift
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
ITEM_TIMEOUT=${ITEM_TIMEOUT:-540}
export UNSLOTH_COURSE_QUICK=0 PYTHONUNBUFFERED=1 UNSLOTH_COURSE_RUNS="$PWD/gpu_runs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
if [ "$mode" = jobs ]; then
  run_job() {  # NAME COMMAND: own run-record folder, log and results archive
    local name=$1; shift
    local start=$(date +%s)
    # own run records and own Unsloth compile cache (concurrent writers of one cache folder race)
    UNSLOTH_COURSE_RUNS="$PWD/gpu_runs/$name" UNSLOTH_COMPILE_LOCATION="/tmp/unsloth_compiled_$name" timeout "$ITEM_TIMEOUT" bash -c "$*" 2>&1 \
      | grep --line-buffered -v -E "it/s\]|s/it\]|examples/s\]" > "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/jobs.txt"
    local notebooks=$(grep -o "notebooks/[A-Za-z0-9_]*\.ipynb" <<< "$*")
    tar czf "$OUT/results-$name.tgz" "gpu_runs/$name" $notebooks 2>/dev/null
    return "$rc"
  }
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
  python3 -c "from unsloth_course.models import resolve_model; resolve_model()"  # convert the GGUF once
  pids=()
  while read -r name command; do
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
    run_job "$name" "$command" & pids+=($!)
  done < "$1"
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  exit "$status"
fi
for item in "$@"; do
  name=$(basename "$item" .ipynb)
  start=$(date +%s)
  if [ "$mode" = notebooks ]; then
    timeout "$ITEM_TIMEOUT" python3 -m pytest --nbmake --nbmake-timeout="$ITEM_TIMEOUT" --overwrite \
      -p no:cacheprovider -o addopts="" -q "$item" > "$OUT/$name.log" 2>&1
  else
    timeout "$ITEM_TIMEOUT" python3 -m unsloth_course run "$item" --output-dir "outputs/cli-$item" 2>&1 \
      | grep -v -E "it/s\]|s/it\]|examples/s\]" > "$OUT/cli-$name.log"
  fi
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  echo "$item: exit $rc after $(( $(date +%s) - start )) s"
  tar czf "$OUT/results-$name.tgz" gpu_runs $( [ "$mode" = notebooks ] && echo "$item" ) 2>/dev/null
done
exit "$status"

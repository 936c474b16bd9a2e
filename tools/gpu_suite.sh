#!/usr/bin/env bash
# The GPU runs behind the figures in docs/RESULTS.md. On the GPU machine (see ../shared/gpu/README.md), after
# `source /tmp/gpu/device-b.sh`:
#   bash tools/gpu_suite.sh notebooks NB...      executes each notebook in its full profile (pytest --nbmake)
#   bash tools/gpu_suite.sh cli TECHNIQUE...     runs `python3 -m unsloth_course run TECHNIQUE` (full profile)
#   bash tools/gpu_suite.sh jobs FILE             runs every line `NAME COMMAND...` of FILE at the same time
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
  # The device returns at most 8 files: every job's log, run records and executed notebooks go into one
  # archive, $OUT/results.tgz, refreshed every 20 s and whenever a job ends (a run cut off by the time limit
  # still brings back what its jobs had written), plus $OUT/jobs.txt with each job's exit code and time.
  LOGS="$PWD/gpu_logs"; mkdir -p "$LOGS" gpu_runs
  export GPU_JOB_LOGS="$LOGS"  # python3 -m tools.run_notebook --out "$GPU_JOB_LOGS" keeps executed notebooks there
  snapshot() {
    tar czf "$OUT/tmp-$BASHPID.tgz" gpu_logs gpu_runs notebooks/*.ipynb 2>/dev/null && mv -f "$OUT/tmp-$BASHPID.tgz" "$OUT/results.tgz"
  }
  run_job() {  # NAME COMMAND: own run-record folder, own Unsloth compile cache (concurrent writers race)
    local name=$1; shift
    local start=$(date +%s)
    UNSLOTH_COURSE_RUNS="$PWD/gpu_runs/$name" UNSLOTH_COMPILE_LOCATION="/tmp/unsloth_compiled_$name" \
      timeout "$ITEM_TIMEOUT" bash -c "$*" 2>&1 | stdbuf -oL tr '\r' '\n' \
      | grep --line-buffered -v -E "it/s\]|s/it\]|examples/s\]|Both .max_new_tokens" > "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/jobs.txt"
    snapshot
    return "$rc"
  }
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
  python3 -c "from unsloth_course.models import resolve_model; resolve_model()"  # convert the GGUF once
  ( while sleep 20; do snapshot; done ) & snapper=$!
  pids=()
  while read -r name command; do
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
    run_job "$name" "$command" & pids+=($!)
  done < "$1"
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  kill "$snapper" 2>/dev/null
  snapshot
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

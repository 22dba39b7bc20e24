#!/usr/bin/env bash
# Create ./.venv (if missing) and install UniCTR into it, editable.
# torch is pinned to 2.13.0 (the CPU build); it is installed first so that no
# other requirement can pull a multi-GB CUDA build.
# Usage: scripts/install.sh [EXTRAS]     e.g. scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet -e .
fi

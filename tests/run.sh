#!/usr/bin/env bash
# Install UniCTR with its test extras into ./.venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
.venv/bin/python -m pytest -q "$@"

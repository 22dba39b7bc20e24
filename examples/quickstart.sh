#!/usr/bin/env bash
# The main job on the built-in data: install, generate the dataset, train Uni-CTR jointly on
# books, movies and music with the default `minilm` backbone, evaluate on the test split
# (board_games, held out, is scored zero-shot by the general network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
unictr data generate --out data/builtin
unictr train --data data/builtin --home runs/builtin --epochs "${EPOCHS:-3}"
unictr evaluate --data data/builtin --home runs/builtin --out runs/builtin/evaluation.json

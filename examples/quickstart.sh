#!/usr/bin/env bash
# The main job on the built-in data: install; generate the dataset; train Uni-CTR jointly on
# books, movies and music with the default `minilm` backbone; evaluate on the test split, where
# the held-out board_games domain is scored zero-shot by the general network; then add a DSN for
# board_games against the frozen core and evaluate again.
# TUNE_LAYERS=0 (or 2) trains LoRA only in the top layers and caches the hidden states below them once
# (see "Faster training and serving" in the README); EPOCHS sets the number of epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
unictr data generate --out data/builtin
unictr train --data data/builtin --home runs/builtin --epochs "${EPOCHS:-3}" --tune-layers "${TUNE_LAYERS:-all}"
unictr evaluate --data data/builtin --home runs/builtin --out runs/builtin/evaluation-zero-shot.json
unictr domain add board_games --data data/builtin --home runs/builtin --replace
unictr evaluate --data data/builtin --home runs/builtin --out runs/builtin/evaluation.json
unictr domain list --home runs/builtin

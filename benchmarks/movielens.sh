#!/usr/bin/env bash
# Table III + zero-shot table on MovieLens 100K, domains by genre (held-out: horror), Uni-CTR on minilm.
# Sized to finish within about 60 minutes on a 2-core CPU; every model sees the same subsampled rows.
# Override any setting through the environment, e.g.  MAX_ROWS=200 UNI_EPOCHS=2 benchmarks/movielens.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${RAW:-../shared/data/ml-100k}
WORK=${WORK:-/tmp/unictr-bench}
MAX_ROWS=${MAX_ROWS:-400}            # training rows per domain (15 training domains)
MAX_EVAL_ROWS=${MAX_EVAL_ROWS:-200}  # validation and test rows per domain
EPOCHS=${EPOCHS:-30}                 # baseline epoch cap (early stopping on validation AUC)
UNI_EPOCHS=${UNI_EPOCHS:-3}
BATCH=${BATCH:-64}                   # baseline batch size (small subsamples need enough steps)
PATIENCE=${PATIENCE:-3}
SEED=${SEED:-0}
THREADS=${THREADS:-2}

unictr data prepare movielens --raw "$RAW" --out "$WORK/movielens-genre" --domain-by genre
unictr benchmark --data "$WORK/movielens-genre" --out "$WORK/movielens-results" \
  --max-rows "$MAX_ROWS" --max-eval-rows "$MAX_EVAL_ROWS" --epochs "$EPOCHS" --uni-epochs "$UNI_EPOCHS" \
  --batch-size "$BATCH" --patience "$PATIENCE" \
  --uni-backbone minilm --seed "$SEED" --threads "$THREADS" "$@"

# Optional companion run (FULL_BASELINES=1): the baselines on ALL rows (no subsampling, minutes on CPU),
# to show how much the subsampling that Uni-CTR's CPU budget forces costs the baselines.
if [ "${FULL_BASELINES:-0}" = 1 ]; then
  unictr benchmark --data "$WORK/movielens-genre" --out "$WORK/movielens-baselines-full" \
    --models deepfm,dcn,autoint,xdeepfm,pnn,shared_bottom,mmoe,ple,star --epochs "$EPOCHS" --seed "$SEED" \
    --batch-size "$BATCH" --patience "$PATIENCE" --threads "$THREADS" --quiet
fi

#!/usr/bin/env bash
# Table III + zero-shot table on the Amazon Review Data 2018 files in ../shared/data/amazon2018
# (training domains fashion and gift_cards, held-out all_beauty), Uni-CTR on minilm.
# Sized to finish within about 60 minutes on a 2-core CPU; every model sees the same subsampled rows.
# Override any setting through the environment, e.g.  MAX_ROWS=1200 benchmarks/amazon2018.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${RAW:-../shared/data/amazon2018}
WORK=${WORK:-/tmp/unictr-bench}
MAX_ROWS=${MAX_ROWS:-1500}           # training rows per domain (2 training domains)
MAX_EVAL_ROWS=${MAX_EVAL_ROWS:-500}  # validation and test rows per domain
EPOCHS=${EPOCHS:-30}                 # baseline epoch cap (early stopping on validation AUC)
UNI_EPOCHS=${UNI_EPOCHS:-3}
BATCH=${BATCH:-64}                   # baseline batch size (small subsamples need enough steps)
PATIENCE=${PATIENCE:-3}
SEED=${SEED:-0}
THREADS=${THREADS:-2}

unictr data prepare amazon2018 --raw "$RAW" --out "$WORK/amazon2018"
unictr benchmark --data "$WORK/amazon2018" --out "$WORK/amazon2018-results" \
  --max-rows "$MAX_ROWS" --max-eval-rows "$MAX_EVAL_ROWS" --epochs "$EPOCHS" --uni-epochs "$UNI_EPOCHS" \
  --batch-size "$BATCH" --patience "$PATIENCE" \
  --uni-backbone minilm --seed "$SEED" --threads "$THREADS" "$@"

# Optional companion run (FULL_BASELINES=1): the baselines on ALL rows (no subsampling, minutes on CPU),
# to show how much the subsampling that Uni-CTR's CPU budget forces costs the baselines.
if [ "${FULL_BASELINES:-0}" = 1 ]; then
  unictr benchmark --data "$WORK/amazon2018" --out "$WORK/amazon2018-baselines-full" \
    --models deepfm,dcn,autoint,xdeepfm,pnn,shared_bottom,mmoe,ple,star --epochs "$EPOCHS" --seed "$SEED" \
    --batch-size "$BATCH" --patience "$PATIENCE" --threads "$THREADS" --quiet
fi

#!/usr/bin/env bash
# All of MovieLens-100K by genre: Table III, the zero-shot table, wall time and peak memory per seed, every model
# on the same rows, split, label and features (80,001 training rows: 77,644 in the 15 training genres, horror
# held out), then the mean and spread over the seeds (benchmarks/seed_table.py).
#
# Uni-CTR: frozen backbone (UNI_TUNE_LAYERS=0), heads over token summaries (UNI_TOKEN_SUMMARY=8 vectors per
# layer, the cache grows with rows; 0 is the paper's token-level heads: about 2.2 GiB of cache per 10,000 rows and
# ~10x slower epochs, hours on all rows of a 2-core CPU). The summaries of the first seed are stored under
# $UNICTR_CACHE/states and read by the next seeds, so only the first seed runs the backbone over the
# training and validation rows. The table in docs/results.md ("All of MovieLens-100K") came from
#   SEEDS="0 1 2" MODELS=user_rate,item_rate,unictr benchmarks/movielens_full.sh
#   SEEDS="0 1 2" MODELS=mmoe,ple THREADS=1 benchmarks/movielens_full.sh
#   SEEDS="0 1 2" MODELS=deepfm,dcn,autoint,xdeepfm,pnn,shared_bottom,star THREADS=1 benchmarks/movielens_full.sh
# and, with one ID slot per field, SEEDS="0 1 2" MODELS=unictr benchmarks/movielens_full.sh --uni-id-fields auto
# (and --uni-id-lr-scale 5: the ID tables at 5x the heads' learning rate, the best Uni-CTR row there)
# MAX_ROWS / MAX_EVAL_ROWS subsample every model alike (rows per domain); TAG names the results folder; further
# arguments go to `unictr benchmark` (e.g. --uni-dsn-stats).
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${RAW:-../shared/data/ml-100k}
WORK=${WORK:-/tmp/unictr-bench}
MODELS=${MODELS:-user_rate,item_rate,deepfm,dcn,autoint,xdeepfm,pnn,shared_bottom,mmoe,ple,star,unictr}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-30}                 # baseline epoch cap (early stopping on validation AUC)
UNI_EPOCHS=${UNI_EPOCHS:-6}
UNI_BATCH=${UNI_BATCH:-256}
UNI_DSN=${UNI_DSN:-residual}
UNI_IDS=${UNI_IDS:-all}
UNI_MAX_LENGTH=${UNI_MAX_LENGTH:-128}
UNI_TUNE_LAYERS=${UNI_TUNE_LAYERS:-0}
UNI_TOKEN_SUMMARY=${UNI_TOKEN_SUMMARY:-8}
# the frozen backbone's cache fill and the test predictions: auto = bf16 where the CPU has AMX / AVX512-BF16
# (measured 2.9x faster there, benchmarks/bench_fill.py), fp32 elsewhere; the heads train in fp32 either way
UNI_FILL=${UNI_FILL:-auto}
BATCH=${BATCH:-256}                  # baseline batch size
PATIENCE=${PATIENCE:-3}
THREADS=${THREADS:-2}
SUBSAMPLE=()
[ -n "${MAX_ROWS:-}" ] && SUBSAMPLE+=(--max-rows "$MAX_ROWS")
[ -n "${MAX_EVAL_ROWS:-}" ] && SUBSAMPLE+=(--max-eval-rows "$MAX_EVAL_ROWS")

[ -f "$WORK/movielens-genre/dataset.yaml" ] || \
  unictr data prepare movielens --raw "$RAW" --out "$WORK/movielens-genre" --domain-by genre
runs=()
for SEED in $SEEDS; do
  out="$WORK/movielens-full-results/${TAG:-${MODELS//,/-}}/seed$SEED"
  start=$(date +%s)
  /usr/bin/env time -f "peak RSS %M KiB" unictr benchmark --data "$WORK/movielens-genre" --out "$out" \
    "${SUBSAMPLE[@]}" --models "$MODELS" --epochs "$EPOCHS" --uni-epochs "$UNI_EPOCHS" --uni-dsn "$UNI_DSN" \
    --uni-ids "$UNI_IDS" --uni-max-length "$UNI_MAX_LENGTH" --uni-tune-layers "$UNI_TUNE_LAYERS" \
    --uni-token-summary "$UNI_TOKEN_SUMMARY" --uni-fill-precision "$UNI_FILL" --uni-batch-size "$UNI_BATCH" \
    --batch-size "$BATCH" --patience "$PATIENCE" --uni-backbone minilm --seed "$SEED" --threads "$THREADS" --quiet "$@"
  echo "seed $SEED wall time: $(( $(date +%s) - start )) s"
  runs+=("$out/benchmark.json")
done
python benchmarks/seed_table.py "${runs[@]}"

#!/usr/bin/env bash
# "Add a domain nobody trained on", on every protocol domain (issue 21): a core trained without the domain, then
# benchmarks/domain_add_protocol.py (the DSN exactly as `unictr domain add` trains it, next to zero-shot, the
# count-rule floors and single-domain ID baselines on the same rows, 3 seeds; nothing is written to the home).
#
#   board_games  the built-in data (`unictr data generate`), core: the quickstart's settings
#   horror       MovieLens-100K by genre (../shared/data/ml-100k), core: the 15 other genres, all rows
#                (the settings of benchmarks/movielens_full.sh, whose stored token summaries it reuses)
#   all_beauty   Amazon 2018 5-core (../shared/data/amazon2018), core: fashion + gift_cards
#   fashion      the same data, core: gift_cards + all_beauty
#
#   PROTOCOLS="horror all_beauty fashion" SEEDS="0 1 2" THREADS=2 benchmarks/domain_add_protocols.sh
#
# Further arguments go to domain_add_protocol.py (e.g. --no-dsn-shrinkage; TAG then names the JSON files:
# $WORK/domain-add-protocols/<protocol><TAG>.json).
#
# A core is trained only when its home is missing (HOMES/<protocol>); each protocol writes
# $WORK/domain-add-protocols/<protocol>.json and prints its table. Run it alone on the machine for wall times.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/unictr-bench}
HOMES=${HOMES:-$WORK/protocol-homes}
PROTOCOLS=${PROTOCOLS:-board_games horror all_beauty fashion}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-2}
OUT="$WORK/domain-add-protocols"
mkdir -p "$OUT" "$HOMES"

core() {  # core HOME DATA [train options...]: train a frozen-backbone core into HOME unless it is there
  local home=$1 data=$2
  shift 2
  [ -f "$home/core/manifest.yaml" ] || unictr train --data "$data" --home "$home" --backbone minilm --tune-layers 0 \
    --token-summary 8 --seed 0 --threads "$THREADS" --replace "$@"
}

for protocol in $PROTOCOLS; do
  case $protocol in
    board_games)
      data="$WORK/builtin"
      [ -f "$data/dataset.yaml" ] || unictr data generate --out "$data"
      core "$HOMES/board_games" "$data" --epochs 8 ;;
    horror)
      data="$WORK/movielens-genre"
      [ -f "$data/dataset.yaml" ] || \
        unictr data prepare movielens --raw "${ML_RAW:-../shared/data/ml-100k}" --out "$data" --domain-by genre
      core "$HOMES/horror" "$data" --ids all --max-length 128 --epochs 6 --batch-size 256 --patience 3 ;;
    all_beauty|fashion)
      data="$WORK/amazon2018"
      [ -f "$data/dataset.yaml" ] || \
        unictr data prepare amazon2018 --raw "${AMAZON_RAW:-../shared/data/amazon2018}" --out "$data"
      others=$([ "$protocol" = fashion ] && echo gift_cards,all_beauty || echo fashion,gift_cards)
      core "$HOMES/$protocol" "$data" --domains "$others" --ids all --epochs 6 --batch-size 64 --patience 2 ;;
    *) echo "unknown protocol '$protocol' (board_games, horror, all_beauty, fashion)" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  python benchmarks/domain_add_protocol.py --home "$HOMES/$protocol" --data "$data" --domain "$protocol" \
    --seeds $SEEDS --threads "$THREADS" --out "$OUT/$protocol${TAG:-}.json" "$@"
done

#!/usr/bin/env bash
# The defaults measurements of docs/BENCHMARKS.md ("The defaults and the measurements behind
# them"): plain InceptionXML's classifier bias (zero vs prior) and peak learning rate (5e-3 vs
# 0.01) on cooking (the demo's 20 epochs) and goodbooks10k (train's defaults), each on a 5 %
# validation split of the training rows; epochs (20 vs 42) and --dropout-ext 0.3 on both; and
# InceptionXML+ with train's defaults on goodbooks10k.
# Two runs side by side, one thread each.
#
# usage: bench/defaults.sh BINARY OUT_DIR
#   COOKING  default data/cooking;  GOODBOOKS  default ../shared/data/goodbooks10k/xc
set -euo pipefail
BIN=$1
OUT=$2
COOKING=${COOKING:-data/cooking}
GOODBOOKS=${GOODBOOKS:-../shared/data/goodbooks10k/xc}
mkdir -p "$OUT"

run() { # name, flags...
  local name=$1
  shift
  /usr/bin/time -f "%e s wall, %M KB peak RSS" "$BIN" train --model "$OUT/$name" \
    --threads 1 --quiet "$@" > "$OUT/$name.log" 2>&1
}
plain() { # name, data, flags...
  local name=$1 data=$2
  shift 2
  run "$name" --data "$data" --valid-fraction 0.05 "$@"
}
plain cook_zero "$COOKING" --epochs 20 --output-bias zero &
plain cook_prior "$COOKING" --epochs 20 --output-bias prior &
wait
plain cook_prior_lr01 "$COOKING" --epochs 20 --output-bias prior --lr 0.01 &
run gb_plus --data "$GOODBOOKS" --plus --eval-every 5 &
wait
plain gb_zero "$GOODBOOKS" --output-bias zero --eval-every 6 &
plain gb_prior "$GOODBOOKS" --output-bias prior --eval-every 6 &
wait
plain gb_prior_lr01 "$GOODBOOKS" --output-bias prior --lr 0.01 --eval-every 6 &
plain cook_e42 "$COOKING" --epochs 42 --eval-every 0 &
wait
plain cook_dx03 "$COOKING" --epochs 20 --dropout-ext 0.3 --eval-every 0 &
plain gb_e20 "$GOODBOOKS" --epochs 20 --eval-every 0 &
wait
for r in cook_zero cook_prior cook_prior_lr01 cook_e42 cook_dx03 gb_zero gb_prior gb_prior_lr01 \
  gb_e20 gb_plus; do
  echo "== $r"
  sed -n '/validation metrics/,$p' "$OUT/$r.log"
done

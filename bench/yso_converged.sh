#!/usr/bin/env bash
# The converged-accuracy figures of docs/BENCHMARKS.md ("Converged accuracy on yso_finna_sv"):
# InceptionXML+ runs two at a time (one thread each, side by side on the 2 cores): C 2,048 / K 128
# (the default since), C 512 / K 32, C 2,048 / K 32 (the old default K), C 2,048 / K 128 seed 1;
# then plain InceptionXML (12 epochs, both cores); ensembles, evaluation on the validation and
# test splits, prediction latency/throughput, curves.
#
# usage: bench/yso_converged.sh BINARY OUT_DIR
#   YSO  yso_finna_sv in XC layout (default ../shared/data/yso_finna_sv/xc)
# Each run holds 5 % of the training rows out (seeded) as the validation split; the ranking
# (extreme or combined) is chosen there. Nothing is tuned on the test split. A run that is
# interrupted continues with `train --resume --model OUT_DIR/<run>`.
set -euo pipefail
BIN=$1
OUT=$2
YSO=${YSO:-../shared/data/yso_finna_sv/xc}
mkdir -p "$OUT"

run() { # name, flags...
  local name=$1
  shift
  if [ -e "$OUT/$name/trainer_state.json" ] && [ ! -e "$OUT/$name/curves.png" ]; then
    "$BIN" train --resume --data "$YSO" --model "$OUT/$name" --threads 1 --quiet
  elif [ ! -e "$OUT/$name/curves.png" ]; then
    "$BIN" train --data "$YSO" --model "$OUT/$name" --plus --epochs 16 --eval-every 4 \
      --threads 1 --quiet "$@"
  fi > "$OUT/$name.log" 2>&1
}
run plus_c2048_k128 --clusters 2048 --top-k 128 &
run plus_c512_k32 --clusters 512 --top-k 32 &
wait
run plus_c2048_k32 --clusters 2048 --top-k 32 &
run plus_c2048_k128_s1 --clusters 2048 --top-k 128 --seed 1 &
wait
RUNS="plus_c2048_k128 plus_c512_k32 plus_c2048_k32 plus_c2048_k128_s1"
for r in $RUNS; do
  echo "== $r"
  sed -n '/validation metrics/,$p' "$OUT/$r.log"
done

# Plain InceptionXML (prior-initialised classifier bias, the default since), 12 epochs at lr 0.01,
# on both cores.
if [ ! -e "$OUT/plain_p12/curves.png" ]; then
  if [ -e "$OUT/plain_p12/trainer_state.json" ]; then
    "$BIN" train --resume --data "$YSO" --model "$OUT/plain_p12" --quiet
  else
    "$BIN" train --data "$YSO" --model "$OUT/plain_p12" --epochs 12 --valid-fraction 0.05 \
      --lr 0.01 --quiet
  fi > "$OUT/plain_p12.log" 2>&1
fi
sed -n '/validation metrics/,$p' "$OUT/plain_p12.log"

# The validation rows train --valid-fraction 0.05 holds out (fixed seed), as a dataset folder:
# ensembles are chosen on them, and only reported on the test split.
[ -e "$OUT/valid/tst_X.txt" ] || "$BIN" split --data "$YSO" --out "$OUT/valid" --valid-fraction 0.05
ensemble() { # name, runs...
  local name=$1
  shift
  local flags=()
  for r in "$@"; do flags+=(--model "$OUT/$r"); done
  for split in valid test; do
    local x="$YSO/tst_X.txt" y="$YSO/tst_X_Y.txt"
    if [ "$split" = valid ]; then x="$OUT/valid/tst_X.txt" y="$OUT/valid/tst_X_Y.txt"; fi
    echo "== ensemble $name (scores averaged), $split split"
    "$BIN" predict "${flags[@]}" --texts "$x" --out "$OUT/ens_${name}_$split.txt" --top-k 5
    "$BIN" eval --truth "$y" --pred "$OUT/ens_${name}_$split.txt" --train-labels "$YSO/trn_X_Y.txt"
  done
}
ensemble ab plus_c2048_k128 plus_c512_k32
ensemble a_s1 plus_c2048_k128 plus_c2048_k128_s1
ensemble ab_s1 plus_c2048_k128 plus_c512_k32 plus_c2048_k128_s1
ensemble a_plain plus_c2048_k128 plain_p12

echo "== prediction: batch 1 (ms/query) and batch 256 (queries/s), 2 threads"
for r in plus_c2048_k128; do
  "$BIN" bench predict --model "$OUT/$r" --texts "$YSO/tst_X.txt" --queries 2000 --threads 2
  "$BIN" bench predict --model "$OUT/$r" --texts "$YSO/tst_X.txt" --queries 20000 \
    --batch-size 256 --threads 2
done
"$BIN" plot --metrics "$OUT/plus_c2048_k128" --metrics "$OUT/plus_c512_k32" \
  --metrics "$OUT/plus_c2048_k32" --out "$OUT/yso_curves.png"
"$BIN" plot --metrics "$OUT/plain_p12" --metrics "$OUT/plus_c2048_k128" \
  --out "$OUT/yso_curves_plain.png"

#!/usr/bin/env bash
# The converged-accuracy figures of docs/BENCHMARKS.md ("Converged accuracy on yso_finna_sv"):
# two InceptionXML+ runs (one thread each, side by side on the 2 cores), their two-model ensemble,
# evaluation on the test split, prediction latency/throughput, and the curves.
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
for r in plus_c2048_k128 plus_c512_k32; do
  echo "== $r"
  sed -n '/validation metrics/,$p' "$OUT/$r.log"
done

echo "== ensemble (scores averaged)"
"$BIN" predict --model "$OUT/plus_c2048_k128" --model "$OUT/plus_c512_k32" \
  --texts "$YSO/tst_X.txt" --out "$OUT/ensemble_tst.txt"
"$BIN" eval --truth "$YSO/tst_X_Y.txt" --pred "$OUT/ensemble_tst.txt" \
  --train-labels "$YSO/trn_X_Y.txt"

echo "== prediction: batch 1 (ms/query) and batch 256 (queries/s), 2 threads"
for r in plus_c2048_k128 plus_c512_k32; do
  "$BIN" bench predict --model "$OUT/$r" --texts "$YSO/tst_X.txt" --queries 2000 --threads 2
  "$BIN" bench predict --model "$OUT/$r" --texts "$YSO/tst_X.txt" --queries 20000 \
    --batch-size 256 --threads 2
done
"$BIN" plot --metrics "$OUT/plus_c2048_k128" --metrics "$OUT/plus_c512_k32" \
  --out "$OUT/yso_curves.png"

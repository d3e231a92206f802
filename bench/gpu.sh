#!/usr/bin/env bash
# Side-by-side GPU benchmark: inceptionxml (built with --features cuda) against the PyTorch
# reference (bench/reference.py), both in the same call, same data and settings (issue 6):
#   1. InceptionXML training throughput on yso_finna_sv (batch 128, 300-d);
#   2. InceptionXML+ training throughput on a synthetic 670,091-label set (C 65,536, K 800,
#      batch 256), with the same label clusters for both programs;
#   3. batch-1 and batch-256 prediction latency; peak GPU memory.
# Usage (on the GPU machine, from the repository root):
#   LD_LIBRARY_PATH=/usr/local/cuda/lib64 bench/gpu.sh BIN YSO_DIR [OUT_DIR]
# BIN: the inceptionxml binary built with the cuda feature; YSO_DIR: the yso_finna_sv XC folder.
set -euo pipefail
BIN=${1:?binary}; YSO=${2:?yso_finna_sv folder}; OUT=${3:-/tmp/ixml_gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
log() { echo "== $*"; }

log "GPU agreement tests are run separately: cargo test --release --features cuda --test cuda"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

log "1. InceptionXML, yso_finna_sv, batch 128 (3 alternating repetitions)"
for rep in 1 2 3; do
  "$BIN" bench train --device cuda --data "$YSO" --steps 50 --warmup 5
  "$PY" bench/reference.py --device cuda --data "$YSO" --bench-steps 50 --warmup 5
done

log "2. InceptionXML+, synthetic 670,091 labels"
if [ ! -f "$OUT/syn670k/trn_X_Y.txt" ]; then
  "$BIN" synth --out "$OUT/syn670k" --labels 670091 --texts 500000 --vocab 100000 --test 20000 --seed 0
  "$BIN" cluster --data "$OUT/syn670k" --out "$OUT/syn670k_c65536.txt" --clusters 65536 --seed 0
fi
for rep in 1 2; do
  "$BIN" bench train --device cuda --data "$OUT/syn670k" --plus --clusters "$OUT/syn670k_c65536.txt" \
    --top-k 800 --batch-size 256 --steps 30 --warmup 5
  "$PY" bench/reference.py --device cuda --data "$OUT/syn670k" --plus \
    --clusters "$OUT/syn670k_c65536.txt" --top-k 800 --bench-steps 30 --warmup 5
done

log "3. prediction latency (a yso-shaped InceptionXML trained for one epoch on the GPU)"
"$BIN" train --device cuda --data "$YSO" --model "$OUT/yso_e1" --epochs 1 --quiet
"$BIN" bench predict --device cuda --model "$OUT/yso_e1" --texts "$YSO/tst_X.txt" --batch-size 1 --queries 1000
"$BIN" bench predict --device cuda --model "$OUT/yso_e1" --texts "$YSO/tst_X.txt" --batch-size 256 --queries 8192
"$PY" bench/reference.py --device cuda --data "$YSO" --epochs 0 --bench-predict 1000

log "4. accuracy: InceptionXML trained on the GPU, yso_finna_sv, paper defaults (42 epochs, batch 128)"
if [ "${SKIP_ACCURACY:-0}" != 1 ]; then
  "$BIN" train --device cuda --data "$YSO" --model "$OUT/yso_full" --eval-every 0
  "$PY" bench/reference.py --device cuda --data "$YSO" --epochs 42
fi

#!/usr/bin/env bash
# The CPU speed figures of docs/BENCHMARKS.md ("CPU speed: the fused encoder"). Every figure is a
# median over ROUNDS runs, and every comparison alternates the two sides run by run in the same
# session (the machine is shared and noisy: compare ratios of medians, not absolute numbers).
#
# usage: bench/cpu_speed.sh BASE_BINARY NEW_BINARY [ROUNDS]
#   YSO        yso_finna_sv in XC layout      (default ../shared/data/yso_finna_sv/xc)
#   YSO_MODEL  a yso-shaped plain model        (default /tmp/yso_m; made if missing)
#   SYN_MODEL  an InceptionXML+ model at 670,091 synthetic labels, C 65,536, K 800
#              (default /tmp/syn670k_plus; made with the synthetic set if missing)
set -euo pipefail
BASE=$1
NEW=$2
ROUNDS=${3:-3}
YSO=${YSO:-../shared/data/yso_finna_sv/xc}
YSO_MODEL=${YSO_MODEL:-/tmp/yso_m}
SYN_MODEL=${SYN_MODEL:-/tmp/syn670k_plus}
T=2

if [ ! -e "$YSO_MODEL/config.json" ]; then
  "$NEW" train --data "$YSO" --model "$YSO_MODEL" --max-train 4096 --epochs 1 --threads $T --quiet
fi
if [ ! -e "$SYN_MODEL/config.json" ]; then
  [ -e /tmp/syn670k/Y.txt ] || "$NEW" synth --out /tmp/syn670k --labels 670091 --texts 500000 \
    --vocab 100000 --test 2000 --seed 0
  "$NEW" train --plus --data /tmp/syn670k --model "$SYN_MODEL" --epochs 1 --max-train 2048 \
    --threads $T --quiet
fi

# The first number followed by "$1" in the output.
num_after() { grep -o "[0-9.]* $1" | head -1 | cut -d' ' -f1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# compare NAME UNIT "ARGS_A" "ARGS_B" BIN_A BIN_B: alternate A and B ROUNDS times.
compare() {
  local name=$1 unit=$2 args_a=$3 args_b=$4 bin_a=$5 bin_b=$6 a=() b=()
  for _ in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086
    a+=("$("$bin_a" $args_a 2>&1 | num_after "$unit")")
    # shellcheck disable=SC2086
    b+=("$("$bin_b" $args_b 2>&1 | num_after "$unit")")
  done
  local ma mb
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  printf '%-44s A: %s (median %s)  B: %s (median %s)  B/A %.2f\n' "$name" "${a[*]}" "$ma" \
    "${b[*]}" "$mb" "$(echo "$mb $ma" | awk '{print $1/$2}')"
}

# K is fixed at 32, the default at C 2,048 as of 34d49b3: since e16862d the default there is 128
# (a model choice of issue 16, 4x the candidates), compared separately below.
PLUS="bench train --data $YSO --plus --batch-size 256 --steps 8 --warmup 2 --top-k 32"
PLUS128="bench train --data $YSO --plus --batch-size 256 --steps 8 --warmup 2 --top-k 128"
PLAIN="bench train --data $YSO --batch-size 128 --steps 8 --warmup 2"
echo "# $(date -u +%FT%TZ) $(nproc) cores; A = $BASE, B = $NEW unless noted"
compare "InceptionXML+ training, batch 256 (samples/s)" "samples/s" "$PLUS --threads $T" "$PLUS --threads $T" "$BASE" "$NEW"
compare "InceptionXML training, batch 128 (samples/s)" "samples/s" "$PLAIN --threads $T" "$PLAIN --threads $T" "$BASE" "$NEW"
compare "InceptionXML+ K 32 at A, K 128 (today's default) at B" "samples/s" "$PLUS --threads $T" "$PLUS128 --threads $T" "$BASE" "$NEW"
compare "NEW: InceptionXML+ 1 thread (A) vs 2 (B)" "samples/s" "$PLUS --threads 1" "$PLUS --threads 2" "$NEW" "$NEW"
compare "NEW: InceptionXML+ K 128, 1 thread (A) vs 2 (B)" "samples/s" "$PLUS128 --threads 1" "$PLUS128 --threads 2" "$NEW" "$NEW"
compare "NEW: InceptionXML 1 thread (A) vs 2 (B)" "samples/s" "$PLAIN --threads 1" "$PLAIN --threads 2" "$NEW" "$NEW"
compare "NEW: composed ops (A) vs fused (B), +" "samples/s" "$PLUS --threads $T --encoder composed" "$PLUS --threads $T" "$NEW" "$NEW"
compare "NEW: composed ops (A) vs fused (B)" "samples/s" "$PLAIN --threads $T --encoder composed" "$PLAIN --threads $T" "$NEW" "$NEW"
PRED="bench predict --model $YSO_MODEL --texts $YSO/tst_X.txt --batch-size 256 --queries 4096 --threads $T"
compare "prediction, batch 256, 22,933 labels (q/s)" "queries/s" "$PRED" "$PRED" "$BASE" "$NEW"
B1="bench predict --model $SYN_MODEL --texts /tmp/syn670k/tst_X.txt --batch-size 1 --queries 2000 --threads $T"
compare "InceptionXML+ batch 1, 670K labels (ms)" "ms," "$B1" "$B1" "$BASE" "$NEW"

#!/usr/bin/env bash
# Training and prediction speed of two builds, alternated run by run (medians of ROUNDS): the
# check that a change meant to keep behaviour (issue 25's renovation) kept the speed too.
#
# usage: bench/same_speed.sh BASE_BINARY NEW_BINARY [ROUNDS]
#   YSO        yso_finna_sv in XC layout        (default ../shared/data/yso_finna_sv/xc)
#   YSO_MODEL  a yso-shaped plain model          (default /tmp/yso_m; made by BASE if missing)
#   YSO_PLUS   a yso-shaped InceptionXML+ model  (default /tmp/yso_plus; made by BASE if missing)
#   STEPS      timed training steps per run (default 8); QUERIES  batch-1 queries (default 1000)
set -euo pipefail
BASE=$1
NEW=$2
ROUNDS=${3:-3}
YSO=${YSO:-../shared/data/yso_finna_sv/xc}
YSO_MODEL=${YSO_MODEL:-/tmp/yso_m}
YSO_PLUS=${YSO_PLUS:-/tmp/yso_plus}
T=2
STEPS=${STEPS:-8}
QUERIES=${QUERIES:-1000}

if [ ! -e "$YSO_MODEL/config.json" ]; then
  "$BASE" train --data "$YSO" --model "$YSO_MODEL" --max-train 4096 --epochs 1 --threads $T --quiet
fi
if [ ! -e "$YSO_PLUS/config.json" ]; then
  "$BASE" train --plus --data "$YSO" --model "$YSO_PLUS" --max-train 4096 --epochs 1 \
    --threads $T --quiet
fi

# The first number followed by "$1" in the output.
num_after() { grep -o "[0-9.]* $1" | head -1 | cut -d' ' -f1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# compare NAME UNIT "ARGS": alternate BASE and NEW ROUNDS times with the same arguments, the
# one that goes first swapping every round (the second run of a pair can differ systematically).
compare() {
  local name=$1 unit=$2 args=$3 a=() b=() r
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
      # shellcheck disable=SC2086
      a+=("$("$BASE" $args 2>&1 | num_after "$unit")")
      # shellcheck disable=SC2086
      b+=("$("$NEW" $args 2>&1 | num_after "$unit")")
    else
      # shellcheck disable=SC2086
      b+=("$("$NEW" $args 2>&1 | num_after "$unit")")
      # shellcheck disable=SC2086
      a+=("$("$BASE" $args 2>&1 | num_after "$unit")")
    fi
  done
  local ma mb
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  printf '%-46s base: %s (median %s)  new: %s (median %s)  new/base %.3f\n' "$name" "${a[*]}" \
    "$ma" "${b[*]}" "$mb" "$(echo "$mb $ma" | awk '{print $1/$2}')"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; base = $BASE, new = $NEW, $ROUNDS rounds alternated"
compare "InceptionXML training, batch 128 (samples/s)" "samples/s" \
  "bench train --data $YSO --batch-size 128 --steps $STEPS --warmup 2 --threads $T"
compare "InceptionXML+ training, batch 256 (samples/s)" "samples/s" \
  "bench train --data $YSO --plus --batch-size 256 --steps $STEPS --warmup 2 --threads $T"
compare "InceptionXML batch 1 (median ms)" "ms" \
  "bench predict --model $YSO_MODEL --texts $YSO/tst_X.txt --batch-size 1 --queries $QUERIES --threads $T"
compare "InceptionXML batch 256 (queries/s)" "queries/s" \
  "bench predict --model $YSO_MODEL --texts $YSO/tst_X.txt --batch-size 256 --queries 4096 --threads $T"
compare "InceptionXML+ batch 1 (median ms)" "ms" \
  "bench predict --model $YSO_PLUS --texts $YSO/tst_X.txt --batch-size 1 --queries $QUERIES --threads $T"
compare "InceptionXML+ batch 256 (queries/s)" "queries/s" \
  "bench predict --model $YSO_PLUS --texts $YSO/tst_X.txt --batch-size 256 --queries 4096 --threads $T"

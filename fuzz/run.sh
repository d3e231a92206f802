#!/usr/bin/env bash
# Fuzzes every target for SECONDS (default 60) each with libFuzzer through cargo-fuzz, keeping new
# inputs in fuzz/corpus/<target>/ and crashes in fuzz/artifacts/<target>/. The stable toolchain is
# enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
#   cargo install cargo-fuzz --locked      # once
#   fuzz/run.sh 60                         # from the repository root or from fuzz/
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O -s none
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "== $t ($secs s)"
  cargo fuzz run -O -s none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=4096 2>&1 |
    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs|SUMMARY|panicked|ERROR" || true
done

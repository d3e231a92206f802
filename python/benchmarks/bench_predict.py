#!/usr/bin/env python3
"""The Python binding's cost against the Rust library and the command line (docs/BENCHMARKS.md).

1. Throughput: ``Model.predict_topk`` over N texts against ``inceptionxml predict`` on the same
   texts, same model, same threads; the CLI's ranking time is its wall time on N texts less its
   wall time on one text (loading the model and starting the process). Rounds alternate;
   medians.
2. Per-call overhead of a one-text call: ``predict_topk([text], k)`` from Python against the same
   library call timed inside Rust (``NativeModel.time_rank``), alternating, medians.

    python python/benchmarks/bench_predict.py --model runs/m --texts tst_X.txt --bin target/release/inceptionxml
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import inceptionxml


def cli_seconds(binary: str, model: str, texts_file: str, k: int, threads: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [binary, "predict", "--model", model, "--texts", texts_file, "--top-k", str(k),
         "--threads", str(threads), "--out", "/dev/null"],
        check=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--bin", required=True, help="the inceptionxml binary")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=2000, help="one-text calls per overhead round")
    a = p.parse_args()

    texts = Path(a.texts).read_text(encoding="utf-8").splitlines()[: a.n]
    tmp = Path(tempfile.mkdtemp())
    all_file, one_file = tmp / "all.txt", tmp / "one.txt"
    all_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    one_file.write_text(texts[0] + "\n", encoding="utf-8")
    m = inceptionxml.Model.load(a.model, threads=a.threads)
    m.predict_topk(texts[:512], a.k)  # warm-up

    py_qps, cli_qps = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        m.predict_topk(texts, a.k)
        py_qps.append(len(texts) / (time.perf_counter() - t0))
        full = cli_seconds(a.bin, a.model, str(all_file), a.k, a.threads)
        base = cli_seconds(a.bin, a.model, str(one_file), a.k, a.threads)
        cli_qps.append((len(texts) - 1) / max(full - base, 1e-9))
    py_m, cli_m = statistics.median(py_qps), statistics.median(cli_qps)
    print(f"throughput, {len(texts)} texts, k {a.k}, {a.threads} threads:")
    print(f"  Model.predict_topk   {', '.join(f'{q:,.0f}' for q in py_qps)} -> median {py_m:,.0f} texts/s")
    print(f"  inceptionxml predict {', '.join(f'{q:,.0f}' for q in cli_qps)} -> median {cli_m:,.0f} texts/s (wall less a one-text run)")
    print(f"  ratio Python / CLI: {py_m / cli_m:.3f}")

    one = [texts[1]]
    py_us, rust_us = [], []
    for _ in range(a.rounds * 2):
        t0 = time.perf_counter()
        for _ in range(a.calls):
            m.predict_topk(one, a.k)
        py_us.append((time.perf_counter() - t0) / a.calls * 1e6)
        rust_us.append(m._m.time_rank(one, a.k, a.calls) * 1e6)
    py_m, rust_m = statistics.median(py_us), statistics.median(rust_us)
    print(f"one-text call, k {a.k}, {a.calls} calls per round:")
    print(f"  Python predict_topk  {', '.join(f'{u:.1f}' for u in py_us)} -> median {py_m:.1f} us")
    print(f"  Rust Model::rank     {', '.join(f'{u:.1f}' for u in rust_us)} -> median {rust_m:.1f} us")
    print(f"  overhead: {py_m - rust_m:.1f} us per call")


if __name__ == "__main__":
    main()

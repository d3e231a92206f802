#!/usr/bin/env python3
"""Batch prediction on Ray Data: rank labels for a large text file with an inceptionxml model.

Each Ray actor loads the model once and ranks whole batches (the GIL is released while it
ranks); Ray spreads the actors over the cluster's CPUs (or one machine's). Output: JSON Lines
(or Parquet), one row per text: ``{"row": i, "text": ..., "labels": [id, ...], "uris": [...],
"scores": [...]}``, labels best first, as ``inceptionxml predict --exact`` ranks them.

    python examples/ray_predict.py --model runs/cooking --input texts.txt --output out/ \
        --concurrency 2 --batch-size 1024 --k 10 [--format parquet] [--address auto]

``row`` is the text's 0-based line number in ``--input`` (a Ray block never spans two lines'
order: each line is numbered before ranking), so the output can be sorted back into input order.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


class Predictor:
    """A callable class for ``map_batches``: one model per actor, reused for every batch."""

    def __init__(self, model: str, k: int, threads: int):
        import inceptionxml

        # `exact`: batches of at most 8 texts (a block's remainder) are scored in f32 like the
        # large ones, so that every row ranks exactly as `inceptionxml predict --exact`.
        self.model = inceptionxml.Model.load(model, threads=threads, exact=True)
        self.k = k
        self.uris = np.array([u for u, _ in self.model.labels], dtype=object)

    def __call__(self, batch: "pandas.DataFrame") -> "pandas.DataFrame":
        import pandas as pd

        ids, scores = self.model.predict_topk(batch["text"].tolist(), self.k)
        keep = ids >= 0  # a row with fewer than k labels is padded with -1
        return pd.DataFrame({
            "row": batch["row"].to_numpy(),
            "text": batch["text"].to_numpy(),
            "labels": [r[m].tolist() for r, m in zip(ids, keep)],
            "uris": [self.uris[r[m]].tolist() for r, m in zip(ids, keep)],
            "scores": [s[m].tolist() for s, m in zip(scores, keep)],
        })


def numbered_lines(path: str):
    """``[{"row": i, "text": line}]`` of a text file (a line break ends each text)."""
    with open(path, encoding="utf-8") as f:
        return [{"row": i, "text": line.rstrip("\n")} for i, line in enumerate(f)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model directory (inceptionxml train)")
    p.add_argument("--input", required=True, help="texts, one per line")
    p.add_argument("--output", required=True, help="output folder (Ray writes one file per block)")
    p.add_argument("--format", choices=["json", "parquet"], default="json")
    p.add_argument("--k", type=int, default=10, help="labels per text")
    p.add_argument("--concurrency", type=int, default=2, help="model actors")
    p.add_argument("--batch-size", type=int, default=1024, help="texts per map_batches call")
    p.add_argument("--threads", type=int, default=1, help="ranking threads per actor")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    a = p.parse_args(argv)

    import ray

    ray.init(address=a.address, include_dashboard=False, log_to_driver=False)
    # Reading here numbers the lines; for inputs beyond the driver's memory use
    # ray.data.read_text (shards are then numbered by file and line: see docs/PYTHON.md).
    ds = ray.data.from_items(numbered_lines(a.input))
    ranked = ds.map_batches(
        Predictor,
        fn_constructor_args=(os.path.abspath(a.model), a.k, a.threads),
        batch_size=a.batch_size,
        concurrency=a.concurrency,
        num_cpus=a.threads,
        batch_format="pandas",
    )
    if a.format == "json":
        ranked.write_json(a.output)
    else:
        ranked.write_parquet(a.output)
    ray.shutdown()


if __name__ == "__main__":
    main()

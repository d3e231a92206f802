"""examples/ray_predict.py on a local Ray (2 CPUs) against `inceptionxml predict --exact`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, cli, read_xc

pytest.importorskip("ray")


def test_ray_recipe_ranks_20000_texts_as_the_cli(py_model_dir, cooking, tmp_path):
    base = (cooking / "trn_X.txt").read_text(encoding="utf-8").splitlines()
    base += (cooking / "tst_X.txt").read_text(encoding="utf-8").splitlines()
    texts = [base[i % len(base)] + ("" if i < len(base) else f" {i}") for i in range(20_000)]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "ray_out"
    r = subprocess.run(
        [sys.executable, str(REPO / "examples" / "ray_predict.py"), "--model", str(py_model_dir),
         "--input", str(src), "--output", str(out), "--k", "10", "--concurrency", "2",
         "--batch-size", "1000"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    rows = {}
    for f in sorted(out.glob("*.json*")):
        for line in f.read_text().splitlines():
            o = json.loads(line)
            rows[o["row"]] = o
    assert sorted(rows) == list(range(20_000))
    expected = tmp_path / "cli.txt"
    cli("predict", "--model", str(py_model_dir), "--texts", str(src), "--top-k", "10",
        "--exact", "--out", str(expected))
    for i, row in enumerate(read_xc(expected)):
        got = rows[i]
        assert got["text"] == texts[i]
        assert got["labels"] == [l for l, _ in row], f"row {i}"
        np.testing.assert_allclose(got["scores"], [s for _, s in row], rtol=0, atol=1e-6)

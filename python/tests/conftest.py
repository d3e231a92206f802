"""Fixtures: the bundled cooking data, the `inceptionxml` binary, models trained once per run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import inceptionxml

REPO = Path(__file__).resolve().parents[2]
COOKING = REPO / "data" / "cooking"


def binary() -> str:
    """The CLI: $INCEPTIONXML_BIN, else the workspace's build (scripts/test builds it)."""
    env = os.environ.get("INCEPTIONXML_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "inceptionxml"
        if p.exists():
            return str(p)
    found = shutil.which("inceptionxml")
    if found:
        return found
    pytest.fail("no inceptionxml binary: run `cargo build -p inceptionxml-cli` or set INCEPTIONXML_BIN")


def cli(*args: str) -> str:
    r = subprocess.run([binary(), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"inceptionxml {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def read_xc(path: Path) -> list[list[tuple[int, float]]]:
    """A sparse prediction file (`rows labels` header, `id:score` pairs)."""
    lines = path.read_text().splitlines()
    rows = []
    for line in lines[1:]:
        rows.append([(int(i), float(s)) for i, s in (p.split(":") for p in line.split())])
    return rows


@pytest.fixture(scope="session")
def cooking() -> Path:
    return COOKING


@pytest.fixture(scope="session")
def test_texts() -> list[str]:
    return (COOKING / "tst_X.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def py_model_dir(tmp_path_factory) -> Path:
    """A fused model (network + sparse model) trained from Python on the cooking folder: two
    epochs instead of the default five, to keep the suite fast."""
    out = tmp_path_factory.mktemp("py") / "model"
    inceptionxml.train(out, data_dir=COOKING, epochs=2, progress=False, force=True)
    return out


@pytest.fixture(scope="session")
def cli_model_dir(tmp_path_factory) -> Path:
    """An InceptionXML+ network trained by the command line (one epoch, no sparse model)."""
    out = tmp_path_factory.mktemp("cli") / "model"
    cli("train", "--data", str(COOKING), "--model", str(out), "--plus", "--clusters", "32",
        "--epochs", "1", "--dim", "64", "--no-sparse", "--quiet")
    return out

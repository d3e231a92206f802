"""Ctrl-C during training: KeyboardInterrupt between two steps, the last checkpoint intact."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

import inceptionxml

SMALL = dict(max_train=1500, dim=64, epochs=3, no_sparse=True, progress=False)


def epochs_done(model_dir) -> int:
    with open(os.path.join(model_dir, "trainer_state.json")) as f:
        return json.load(f)["epochs_done"]


def test_a_real_sigint_stops_training_and_resume_finishes_it(tmp_path, cooking):
    out = tmp_path / "m"
    timers = []

    def on_event(e):
        # Once the first epoch is saved, Ctrl-C arrives while Rust runs the next steps.
        if e["event"] == "epoch_end" and e["epoch"] == 1:
            t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            t.start()
            timers.append(t)

    with pytest.raises(KeyboardInterrupt):
        inceptionxml.train(out, data_dir=cooking, callback=on_event, **SMALL)
    for t in timers:
        t.join()
    assert epochs_done(out) == 1
    inceptionxml.Model.load(out)  # the checkpoint is a usable model
    summary = inceptionxml.train(out, data_dir=cooking, resume=True, **SMALL)
    assert summary["epochs_done"] == 3 and epochs_done(out) == 3


def test_an_exception_in_the_callback_stops_training(tmp_path, cooking):
    out = tmp_path / "m"

    class Stop(Exception):
        pass

    steps = []

    def on_event(e):
        if e["event"] == "step":
            steps.append(e)
            if len(steps) == 3:
                raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        inceptionxml.train(out, data_dir=cooking, callback=on_event, **SMALL)
    assert len(steps) == 3
    # Nothing was saved in the first epoch: the folder holds no model (a fresh run is staged).
    assert not (out / "config.json").exists()

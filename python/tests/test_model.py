"""inceptionxml.Model and inceptionxml.train against the command line on the same models."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import inceptionxml
from conftest import cli, read_xc


def cli_rankings(model: Path, texts: list[str], k: int, tmp: Path) -> list[list[tuple[int, float]]]:
    src = tmp / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp / "pred.txt"
    cli("predict", "--model", str(model), "--texts", str(src), "--top-k", str(k), "--out", str(out))
    return read_xc(out)


def assert_same_rankings(ids, scores, expected, tol=1e-6):
    assert len(expected) == ids.shape[0]
    for r, row in enumerate(expected):
        assert ids[r].tolist() == [i for i, _ in row], f"row {r}"
        np.testing.assert_allclose(scores[r], [s for _, s in row], rtol=0, atol=tol)


@pytest.mark.parametrize("which", ["py_model_dir", "cli_model_dir"])
def test_python_and_cli_rank_alike_on_each_others_models(which, request, test_texts, tmp_path):
    """A model trained from Python is used by `inceptionxml predict`, and the reverse; both rank
    the same (ids equal, scores to 1e-6)."""
    model_dir = request.getfixturevalue(which)
    texts = test_texts[:600]
    m = inceptionxml.Model.load(model_dir)
    ids, scores = m.predict_topk(texts, k=10)
    assert_same_rankings(ids, scores, cli_rankings(model_dir, texts, 10, tmp_path))


def test_training_from_python_reports_and_writes_a_fused_model(py_model_dir):
    files = set(os.listdir(py_model_dir))
    assert {"config.json", "weights.safetensors", "sparse.json", "fusion.json"} <= files
    m = inceptionxml.Model.load(py_model_dir)
    assert m.n_labels == 736
    assert m.paths == [os.fspath(py_model_dir)]
    assert "n_labels=736" in repr(m)


def test_predict_forms_agree(py_model_dir, test_texts):
    m = inceptionxml.Model.load(py_model_dir)
    texts = test_texts[:50]
    ids, scores = m.predict_topk(texts, k=7)
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (50, 7)
    assert (np.diff(scores, axis=1) <= 0).all()
    # predict: (uri, label, score) with the names of labels.tsv, same order and scores.
    labels = m.labels
    assert len(labels) == m.n_labels and all(isinstance(u, str) for u, _ in labels)
    sug = m.predict(texts, k=7)
    for r in range(50):
        assert [s[0] for s in sug[r]] == [labels[i][0] for i in ids[r]]
        assert [s[1] for s in sug[r]] == [labels[i][1] for i in ids[r]]
        np.testing.assert_allclose([s[2] for s in sug[r]], scores[r], atol=0)
    # threshold leaves out what scores below it.
    t = float(np.median(scores))
    for r, row in enumerate(m.predict(texts, k=7, threshold=t)):
        assert len(row) == int((scores[r] >= t).sum())
    # CSR: shape [n, n_labels], the same entries.
    c = m.predict_csr(texts, k=7)
    assert isinstance(c, sparse.csr_matrix) and c.shape == (50, m.n_labels)
    assert c.nnz == 50 * 7
    for r in range(50):
        np.testing.assert_array_equal(c[r].toarray()[0, ids[r]], scores[r])
    # An empty list is an empty answer.
    e_ids, e_scores = m.predict_topk([], k=3)
    assert e_ids.shape == (0, 3) and m.predict([], k=3) == []
    # batch_size does not change the ranking.
    ids2, _ = m.predict_topk(texts, k=7, batch_size=16)
    np.testing.assert_array_equal(ids, ids2)


def test_errors_are_python_exceptions(py_model_dir, tmp_path, cooking):
    with pytest.raises(FileNotFoundError, match="not found"):
        inceptionxml.Model.load(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ValueError):
        inceptionxml.Model.load(tmp_path / "junk")
    m = inceptionxml.Model.load(py_model_dir)
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.predict_topk(["egg"], k=0)
    with pytest.raises(TypeError):
        m.predict_topk(["egg"], k="5")
    with pytest.raises(TypeError, match="not a single str"):
        m.predict("boil an egg")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        m.predict(["egg", 3])
    with pytest.raises(ValueError, match="more than the model's 736 labels"):
        m.predict_topk(["egg"], k=10**12)
    assert len(m.predict(["egg"], k=10**12)[0]) == 736
    with pytest.raises(ValueError, match="at most 1024 words"):
        m.explain([" ".join(["salt"] * 1100)])
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(["egg"], batch_size=0)
    # A label matrix of the wrong shape, label ids out of range, a missing dataset.
    texts = ["a b", "c d", "e"]
    with pytest.raises(ValueError, match="2 rows for 3 texts"):
        inceptionxml.train(tmp_path / "m", texts=texts, labels=sparse.csr_matrix(np.eye(2)))
    with pytest.raises(ValueError, match="outside 0..4"):
        inceptionxml.train(tmp_path / "m", texts=texts, labels=[[0], [4], [1]],
                           label_names=list("abcd"))
    with pytest.raises(FileNotFoundError):
        inceptionxml.train(tmp_path / "m", data_dir=tmp_path / "nodata")
    with pytest.raises(ValueError, match="data_dir"):
        inceptionxml.train(tmp_path / "m")
    with pytest.raises(ValueError, match="exclude each other"):
        inceptionxml.train(tmp_path / "m", data_dir=cooking, sparse=True, no_sparse=True)
    with pytest.raises(ValueError, match="invalid parameter"):
        inceptionxml.train(tmp_path / "m", data_dir=cooking, lr=-1.0, no_sparse=True)
    with pytest.raises(TypeError):
        inceptionxml.train(tmp_path / "m", data_dir=cooking, no_such_option=1)
    # An existing model is not replaced unasked.
    with pytest.raises(ValueError, match="already holds a model"):
        inceptionxml.train(py_model_dir, data_dir=cooking, sparse=True)


def test_training_from_memory_with_names_and_a_test_split(tmp_path, cooking):
    lines = (cooking / "trn_X.txt").read_text(encoding="utf-8").splitlines()[:3000]
    ylines = (cooking / "trn_X_Y.txt").read_text().splitlines()[1 : 3000 + 1]
    rows = [[int(p.split(":")[0]) for p in l.split()] for l in ylines]
    names = (cooking / "Y.txt").read_text(encoding="utf-8").splitlines()
    n = len(names)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    Y = sparse.csr_matrix(
        (np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr), shape=(len(rows), n)
    )
    events = []
    summary = inceptionxml.train(
        tmp_path / "mem", texts=lines[:2500], labels=Y[:2500], label_names=names,
        test_texts=lines[2500:], test_labels=rows[2500:], epochs=1, dim=64,
        progress=True, callback=events.append,
    )
    kinds = {e["event"] for e in events}
    assert {"default_epochs", "epoch_start", "step", "epoch_end", "sparse_start"} - kinds == {"default_epochs"}
    assert summary["epochs_done"] == 1 and summary["n_train"] + summary["n_valid"] == 2500
    assert summary["test"]["P@1"] > 0 and summary["sparse"]["test"]["P@1"] > 0
    m = inceptionxml.Model.load(tmp_path / "mem")
    assert m.labels[5] == (names[5], names[5])
    # A list of label-id lists trains the same kind of model (the sparse model alone here).
    inceptionxml.train(tmp_path / "lists", texts=lines[:500], labels=rows[:500], sparse=True,
                       progress=False)
    assert inceptionxml.Model.load(tmp_path / "lists").n_labels == 1 + max(max(r) for r in rows[:500])


def test_subwords_train_and_rank_alike_from_python_and_the_cli(tmp_path, cooking, test_texts):
    inceptionxml.train(tmp_path / "sw", data_dir=cooking, max_train=1000, epochs=1, dim=64,
                       no_sparse=True, subwords=5000, subword_ngrams=3, progress=False)
    config = json.loads((tmp_path / "sw" / "config.json").read_text())
    assert config["model"]["subwords"] == {"buckets": 5000, "minn": 3, "maxn": 3}
    m = inceptionxml.Model.load(tmp_path / "sw")
    texts = test_texts[:200] + ["an unseenword and sourdoughbread"]
    ids, scores = m.predict_topk(texts, k=5)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    cli("predict", "--model", str(tmp_path / "sw"), "--texts", str(tmp_path / "t.txt"),
        "--out", str(tmp_path / "p.txt"), "--top-k", "5")
    rows = read_xc(tmp_path / "p.txt")
    assert [[i for i, _ in r] for r in rows] == ids.tolist()
    assert np.allclose([[s for _, s in r] for r in rows], scores, atol=1e-6)


def test_save_and_ensembles(py_model_dir, cli_model_dir, tmp_path, test_texts):
    m = inceptionxml.Model.load(py_model_dir)
    m.save(tmp_path / "copy")
    a = m.predict_topk(test_texts[:40], 5)
    b = inceptionxml.Model.load(tmp_path / "copy").predict_topk(test_texts[:40], 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="already exists"):
        m.save(tmp_path / "copy")
    m.save(tmp_path / "copy", overwrite=True)
    both = inceptionxml.Model.load([py_model_dir, cli_model_dir])
    assert len(both.paths) == 2
    ids, scores = both.predict_topk(test_texts[:40], 5)
    assert ids.shape == (40, 5) and (np.diff(scores, axis=1) <= 0).all()
    with pytest.raises(ValueError, match="ensemble"):
        both.save(tmp_path / "e")
    # An ensemble explains its averaged score: the same ranking, one weight per word.
    ex = both.explain(test_texts[:5], 5)
    for r, row in enumerate(ex):
        assert [l for l, *_ in row] == [both.labels[i][0] for i in ids[r]]
        np.testing.assert_allclose([s for _, _, s, _ in row], scores[r], atol=1e-6)
        assert all(len(words) == len(row[0][3]) for *_, words in row)


def test_the_gil_is_released_while_ranking(py_model_dir, test_texts):
    m = inceptionxml.Model.load(py_model_dir)
    texts = test_texts * 4
    done = threading.Event()

    def work():
        m.predict_topk(texts, 10)
        done.set()

    t = threading.Thread(target=work)
    ticks, t0 = 0, time.perf_counter()
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    elapsed = time.perf_counter() - t0
    # With the GIL held for the whole call, this thread would not run until it ended.
    assert elapsed < 0.02 or ticks >= 0.3 * elapsed / 0.0011, (ticks, elapsed)


def test_explain_gives_each_word_a_weight_and_the_same_ranking(py_model_dir, test_texts, tmp_path):
    import re

    m = inceptionxml.Model.load(py_model_dir)
    texts = test_texts[:20]
    plain = m.predict(texts, k=4)
    explained = m.explain(texts, k=4)
    for t, p, e in zip(texts, plain, explained):
        assert [(u, l) for u, l, _ in p] == [(u, l) for u, l, _, _ in e]
        np.testing.assert_allclose([s for *_, s in p], [s for _, _, s, _ in e], atol=0)
        for _, _, _, words in e:
            # The words are the text's, lowercased, in order (stop words left out).
            joined = " ".join(w for w, _ in words)
            assert all(w in t.lower() or not re.fullmatch(r"\w+", w) for w, _ in words), joined
            assert all(np.isfinite(x) for _, x in words)
    # The same explanation as `predict --explain`.
    src = tmp_path / "t.txt"
    src.write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
    out = cli("predict", "--model", str(py_model_dir), "--texts", str(src), "--top-k", "4",
              "--format", "json", "--explain")
    for line, e in zip(out.splitlines(), explained[:5]):
        for r, (_, _, _, words) in zip(json.loads(line)["results"], e):
            assert [x["word"] for x in r["explanation"]] == [w for w, _ in words]
            np.testing.assert_allclose([x["weight"] for x in r["explanation"]],
                                       [x for _, x in words], atol=1e-6)

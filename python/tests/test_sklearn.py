"""inceptionxml.sklearn.InceptionXMLClassifier in scikit-learn's machinery."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from inceptionxml.sklearn import InceptionXMLClassifier


def load(cooking, split: str, n: int):
    texts = (cooking / f"{split}_X.txt").read_text(encoding="utf-8").splitlines()[:n]
    lines = (cooking / f"{split}_X_Y.txt").read_text().splitlines()
    n_labels = int(lines[0].split()[1])
    rows = [[int(p.split(":")[0]) for p in l.split()] for l in lines[1 : n + 1]]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    Y = sparse.csr_matrix(
        (np.ones(indptr[-1], np.int8), np.concatenate(rows), indptr), shape=(len(rows), n_labels)
    )
    return texts, Y


def test_a_pipeline_fits_predicts_and_scores(cooking):
    X, Y = load(cooking, "trn", 4000)
    Xt, Yt = load(cooking, "tst", 500)
    pipe = Pipeline([
        ("lower", FunctionTransformer(lambda xs: [x.lower() for x in xs])),
        ("xmc", InceptionXMLClassifier(k=3, sparse=True)),
    ])
    pipe.fit(X, Y)
    pred = pipe.predict(Xt)
    assert sparse.issparse(pred) and pred.shape == (500, Y.shape[1])
    assert (np.diff(pred.indptr) == 3).all() and set(np.unique(pred.data)) == {1}
    proba = pipe.predict_proba(Xt)
    assert proba.shape == pred.shape and proba.dtype == np.float32
    assert ((proba.data > 0) & (proba.data <= 1)).all()
    p_at_3 = pipe.score(Xt, Yt)
    assert 0.2 < p_at_3 <= 1.0, p_at_3  # the sparse model reaches ~0.3 P@3 on cooking
    # A list of label-id lists scores the same.
    rows = [Yt.indices[Yt.indptr[i] : Yt.indptr[i + 1]].tolist() for i in range(500)]
    assert pipe.score(Xt, rows) == pytest.approx(p_at_3)


def test_params_clone_and_grid_search(cooking):
    clf = InceptionXMLClassifier(k=5, sparse=True, sparse_trees=1)
    params = clf.get_params()
    assert params["k"] == 5 and params["sparse_trees"] == 1 and params["plus"] is False
    clf.set_params(k=2)
    assert clone(clf).get_params()["k"] == 2
    X, Y = load(cooking, "trn", 1200)
    gs = GridSearchCV(clf, {"sparse_char_ngrams": [0, 4]}, cv=2)
    gs.fit(X, Y)
    assert set(gs.cv_results_["param_sparse_char_ngrams"]) == {0, 4}
    assert gs.best_estimator_.predict(X[:10]).shape == (10, Y.shape[1])


def test_unfitted_and_network_runs(cooking, tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        InceptionXMLClassifier().predict(["egg"])
    X, Y = load(cooking, "trn", 800)
    clf = InceptionXMLClassifier(k=2, epochs=1, dim=64, no_sparse=True,
                                 model_dir=str(tmp_path / "m"))
    clf.fit(X, Y)
    assert clf.train_summary_["epochs_done"] == 1
    assert (tmp_path / "m" / "weights.safetensors").exists()
    assert clf.predict(X[:4]).shape == (4, Y.shape[1])

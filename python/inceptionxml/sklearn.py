"""A scikit-learn estimator: ``InceptionXMLClassifier`` (needs scikit-learn and scipy).

``fit(X, Y)`` with ``X`` a list of texts and ``Y`` a label indicator matrix (scipy sparse or
dense, ``[n_texts, n_labels]``) or a list of label-id lists; ``predict(X)`` gives the top-``k``
labels as a CSR 0/1 indicator, ``predict_proba(X)`` their scores as CSR. Every constructor
argument is a parameter (``get_params`` / ``set_params``), so ``GridSearchCV``, ``clone`` and
``Pipeline`` work::

    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    from inceptionxml.sklearn import InceptionXMLClassifier

    clf = Pipeline([
        ("lower", FunctionTransformer(lambda xs: [x.lower() for x in xs])),
        ("xmc", InceptionXMLClassifier(k=5, sparse=True)),
    ])
    clf.fit(train_texts, Y_train)
    clf.predict(test_texts)          # csr_matrix [n, n_labels], k ones per row
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import numpy as np
from scipy import sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin

from . import Model, train

__all__ = ["InceptionXMLClassifier"]


def _indicator(Y, n_labels: int) -> sp.csr_matrix:
    """``Y`` (scipy sparse, dense, or a list of label-id lists) as a CSR matrix."""
    if hasattr(Y, "tocsr"):
        return Y.tocsr()
    if isinstance(Y, np.ndarray):
        return sp.csr_matrix(Y)
    rows = [list(r) for r in Y]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.int8)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_labels))


class InceptionXMLClassifier(ClassifierMixin, BaseEstimator):
    """InceptionXML (or InceptionXML+ with ``plus=True``) fused with the sparse lexical model,
    as ``inceptionxml train`` trains it, behind scikit-learn's estimator API.

    ``k`` is how many labels ``predict`` / ``predict_proba`` return per text and ``score``
    measures (precision@k). ``model_dir``: where the model is written (default: a temporary
    folder owned by the estimator, removed with it). The other parameters are
    :func:`inceptionxml.train`'s options, with its defaults (``None``: the command line's
    default for the data).
    """

    def __init__(
        self,
        k: int = 5,
        *,
        model_dir: str | None = None,
        plus: bool = False,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        clusters: int | None = None,
        top_k: int | None = None,
        dim: int | None = None,
        dropout_ext: float | None = None,
        seed: int | None = None,
        valid_fraction: float | None = None,
        max_vocab: int | None = None,
        sparse: bool = False,
        no_sparse: bool = False,
        sparse_trees: int | None = None,
        sparse_char_ngrams: int | None = None,
        threads: int | None = None,
        progress: bool = False,
    ):
        self.k = k
        self.model_dir = model_dir
        self.plus = plus
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.clusters = clusters
        self.top_k = top_k
        self.dim = dim
        self.dropout_ext = dropout_ext
        self.seed = seed
        self.valid_fraction = valid_fraction
        self.max_vocab = max_vocab
        self.sparse = sparse
        self.no_sparse = no_sparse
        self.sparse_trees = sparse_trees
        self.sparse_char_ngrams = sparse_char_ngrams
        self.threads = threads
        self.progress = progress

    _TRAIN_OPTIONS = (
        "plus", "epochs", "batch_size", "lr", "clusters", "top_k", "dim", "dropout_ext", "seed",
        "valid_fraction", "max_vocab", "sparse", "no_sparse", "sparse_trees",
        "sparse_char_ngrams", "threads", "progress",
    )  # fmt: skip

    def fit(self, X, Y) -> "InceptionXMLClassifier":
        """Trains on the texts ``X`` and their labels ``Y``; returns ``self``."""
        texts = list(X)
        if hasattr(Y, "tocsr") or isinstance(Y, np.ndarray):
            n_labels = int(Y.shape[1])
        else:
            Y = [list(r) for r in Y]
            n_labels = 1 + max((max(r) for r in Y if r), default=-1)
        self._cleanup()
        if self.model_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="inceptionxml-")
            out = f"{self._tmp}/model"
        else:
            out = self.model_dir
        options = {name: getattr(self, name) for name in self._TRAIN_OPTIONS}
        self.train_summary_ = train(out, texts=texts, labels=Y, force=True, **options)
        self.model_ = Model.load(out)
        self.n_labels_ = n_labels
        self.classes_ = np.arange(self.model_.n_labels)
        return self

    def _model(self) -> Model:
        m = getattr(self, "model_", None)
        if m is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("call fit before predict")
        return m

    def predict_proba(self, X) -> sp.csr_matrix:
        """The top-``k`` scores of each text, ``csr_matrix [n_texts, n_labels]`` (float32)."""
        return self._model().predict_csr(list(X), self.k)

    def predict(self, X) -> sp.csr_matrix:
        """The top-``k`` labels of each text as a 0/1 indicator ``csr_matrix [n_texts,
        n_labels]`` (int8)."""
        p = self.predict_proba(X)
        p.data = np.ones_like(p.data, dtype=np.int8)
        return p.astype(np.int8)

    def score(self, X, Y, sample_weight=None) -> float:
        """Precision@k of the top-``k`` labels against the indicator ``Y`` (what ``GridSearchCV``
        maximises by default)."""
        pred = self.predict(X)
        truth = _indicator(Y, pred.shape[1])
        if truth.shape != pred.shape:
            raise ValueError(f"Y has shape {truth.shape}, the predictions {pred.shape}")
        hits = np.asarray((pred.multiply(truth > 0)).sum(axis=1)).ravel() / self.k
        return float(np.average(hits, weights=sample_weight))

    def _cleanup(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self) -> None:
        self._cleanup()

    def __getstate__(self) -> dict[str, Any]:
        # A loaded model is a handle on native memory: pickling keeps the parameters and the
        # model's directory (load it again with set_state); a temporary directory is not kept.
        state = {k: v for k, v in self.__dict__.items() if k not in ("model_", "_tmp")}
        if getattr(self, "model_", None) is not None and self.model_dir is not None:
            state["_reload"] = self.model_dir
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        reload = state.pop("_reload", None)
        self.__dict__.update(state)
        if reload is not None:
            self.model_ = Model.load(reload)

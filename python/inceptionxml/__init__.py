"""InceptionXML for Python: short-text extreme multi-label classification.

The same library as the ``inceptionxml`` command-line tool (Rust, through PyO3), and the same
model directories: a model trained here is used by ``inceptionxml predict`` and ``serve``, and
the reverse.

Quick start::

    import inceptionxml

    inceptionxml.train("runs/cooking", data_dir="data/cooking", force=True)
    model = inceptionxml.Model.load("runs/cooking")
    model.predict(["how long to boil an egg"], k=3)
    # [[('eggs', 'eggs', 0.83), ('boiling', 'boiling', 0.41), ...]]
    ids, scores = model.predict_topk(texts, k=10)    # NumPy [N, 10] int32 / float32
    matrix = model.predict_csr(texts, k=10)          # scipy.sparse.csr_matrix [N, n_labels]

Training and prediction release the GIL. Ctrl-C stops training between two steps
(``KeyboardInterrupt``; the model directory keeps its last checkpoint, ``resume=True``
continues it). Library errors are Python exceptions: ``FileNotFoundError`` / ``OSError`` for
files, ``ValueError`` for bad arguments, data or models, ``RuntimeError`` for a run that failed.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from . import _native

__all__ = ["Model", "train", "train_defaults", "__version__"]
__version__: str = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]

#: Labels per text when none is given.
DEFAULT_K = 10
#: Texts per forward pass (large batches score the heads with f32 GEMMs).
DEFAULT_BATCH_SIZE = 256


def _texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str (a list of texts), not a single str")
    out = texts if isinstance(texts, list) else list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return out


def _k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


class Model:
    """A trained model directory (or several, averaged as an ensemble), loaded for prediction.

    Load with :meth:`Model.load`. Every method takes a list of texts and ranks them in batches
    of ``batch_size`` with the library's thread pool.
    """

    __slots__ = ("_m",)

    def __init__(self, native: _native.NativeModel):
        self._m = native

    @classmethod
    def load(
        cls,
        path_or_paths: PathLike | Sequence[PathLike],
        *,
        threads: int | None = None,
        exact: bool = False,
        device: str = "cpu",
    ) -> "Model":
        """Loads a model directory; several directories make an ensemble (their scores averaged).

        ``threads``: worker threads of the process's pool (default: every core; set by the
        first load or training of the process). ``exact``: score small batches in f32 instead
        of the int8 indexes. Raises ``FileNotFoundError`` for a missing folder and
        ``ValueError`` for a folder that is not a valid model.
        """
        if isinstance(path_or_paths, (str, os.PathLike)):
            paths = [os.fspath(path_or_paths)]
        else:
            paths = [os.fspath(p) for p in path_or_paths]
        return cls(_native.NativeModel.load(paths, threads=threads, exact=exact, device=device))

    @property
    def labels(self) -> list[tuple[str, str]]:
        """Every label as ``(uri, name)``, in label-id order (the URI is the name when the
        dataset gave none)."""
        uris, names = self._m.labels()
        return list(zip(uris, names))

    @property
    def n_labels(self) -> int:
        """How many labels the model scores."""
        return self._m.n_labels

    @property
    def paths(self) -> list[str]:
        """The model directories (several for an ensemble)."""
        return [os.fspath(p) for p in self._m.dirs]

    def predict(
        self,
        texts: Sequence[str],
        k: int = DEFAULT_K,
        threshold: float = 0.0,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[list[tuple[str, str, float]]]:
        """Per text, its top ``k`` labels as ``(uri, label, score)``, best first; labels
        scoring below ``threshold`` are left out (Annif's ``threshold``)."""
        return self._m.predict(_texts(texts), _k(k), float(threshold), batch_size)

    def predict_topk(
        self, texts: Sequence[str], k: int = DEFAULT_K, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)``: int32 and float32 arrays of shape ``[len(texts), k]``, each row
        best first. A row with fewer than ``k`` labels (the sparse model alone can rank fewer)
        is padded with id -1 and score 0."""
        return self._m.predict_topk(_texts(texts), _k(k), batch_size)

    def predict_csr(
        self,
        texts: Sequence[str],
        k: int = DEFAULT_K,
        threshold: float = 0.0,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        """The top-``k`` scores as a ``scipy.sparse.csr_matrix`` of shape
        ``[len(texts), n_labels]`` (float32), as PECOS's ``predict`` returns; needs scipy."""
        from scipy import sparse

        texts = _texts(texts)
        indptr, indices, data = self._m.predict_csr_parts(
            texts, _k(k), float(threshold), batch_size
        )
        m = sparse.csr_matrix((data, indices, indptr), shape=(len(texts), self.n_labels))
        m.has_sorted_indices = False
        return m

    def explain(
        self,
        texts: Sequence[str],
        k: int = DEFAULT_K,
        threshold: float = 0.0,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[list[tuple[str, str, float, list[tuple[str, float]]]]]:
        """:meth:`predict` with, for each label, the weight of every word of the text:
        ``(uri, label, score, [(word, weight), ...])``. A word's weight is the label's score
        minus its score with that word removed (occlusion, exact for short texts); words are
        the tokens the model sees (lowercased, stop words left out), in text order."""
        return self._m.explain(_texts(texts), _k(k), float(threshold), batch_size)

    def save(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Copies the model directory to ``path`` (complete or not at all). An existing ``path``
        is refused unless ``overwrite``; an ensemble cannot be saved as one directory."""
        self._m.save(os.fspath(path), overwrite)

    def __repr__(self) -> str:
        return f"inceptionxml.Model({self.paths!r}, n_labels={self.n_labels})"


def _label_rows(labels: Any, n_texts: int, what: str) -> tuple[list[list[int]], int | None]:
    """A label matrix (scipy sparse, dense 0/1 array) or a list of label-id lists, as rows of
    ids and the number of label columns when the matrix says it."""
    if hasattr(labels, "tocsr"):  # any scipy.sparse matrix or array
        m = labels.tocsr()
        if m.shape[0] != n_texts:
            raise ValueError(f"{what} has {m.shape[0]} rows for {n_texts} texts")
        m.sum_duplicates()
        if m.nnz and m.data.min() < 0:
            raise ValueError(f"{what}: negative entries (a label matrix holds 0/1)")
        m.eliminate_zeros()
        rows = np.split(m.indices.astype(np.int64), m.indptr[1:-1])
        return [r.tolist() for r in rows], int(m.shape[1])
    if isinstance(labels, np.ndarray):
        if labels.ndim != 2 or labels.shape[0] != n_texts:
            raise ValueError(
                f"{what} has shape {labels.shape}: expected [{n_texts}, n_labels] (0/1)"
            )
        return [np.flatnonzero(r > 0).tolist() for r in labels], int(labels.shape[1])
    rows = [list(r) for r in labels]
    if len(rows) != n_texts:
        raise ValueError(f"{what} has {len(rows)} rows for {n_texts} texts")
    return rows, None


def _progress_callback(progress: bool, callback: Callable[[dict], Any] | None):
    """The event callback: a tqdm bar per epoch when ``progress`` and tqdm is installed, then
    the user's ``callback``."""
    bar = None
    tqdm = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None

    def on_event(e: dict) -> None:
        nonlocal bar
        if tqdm is not None:
            kind = e["event"]
            if kind == "epoch_start":
                bar = tqdm(total=e["steps"], desc=f"epoch {e['epoch']}/{e['epochs']}", unit="step")
            elif kind == "step" and bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{e['loss']:.4f}", refresh=False)
            elif kind == "epoch_end" and bar is not None:
                bar.close()
                bar = None
            elif kind == "sparse_start":
                tqdm.write(f"training the sparse model on {e['rows']} rows")
            elif kind == "warning":
                tqdm.write(f"warning: {e['message']}")
        if callback is not None:
            callback(e)

    def close() -> None:
        if bar is not None:
            bar.close()

    return (on_event if (tqdm is not None or callback is not None) else None), close


def train(
    model_dir: PathLike,
    *,
    data_dir: PathLike | None = None,
    texts: Sequence[str] | None = None,
    labels: Any = None,
    label_names: Sequence[str] | None = None,
    label_uris: Sequence[str | None] | None = None,
    test_texts: Sequence[str] | None = None,
    test_labels: Any = None,
    progress: bool = True,
    callback: Callable[[dict], Any] | None = None,
    plus: bool = False,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    clusters: int | str | None = None,
    top_k: int | None = None,
    detach_fraction: float | None = None,
    hidden_dim: int | None = None,
    dropout_meta: float | None = None,
    embeddings: PathLike | None = None,
    dim: int | None = None,
    dropout_ext: float | None = None,
    seed: int | None = None,
    eval_every: int | None = None,
    valid_fraction: float | None = None,
    output_bias: str | None = None,
    resume: bool = False,
    force: bool = False,
    max_vocab: int | None = None,
    max_train: int | None = None,
    sparse: bool = False,
    no_sparse: bool = False,
    sparse_trees: int | None = None,
    sparse_char_ngrams: int | None = None,
    subwords: int | None = None,
    subword_ngrams: int | None = None,
    corpus_vectors: bool | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> dict:
    """Trains (or with ``resume=True`` continues) the model directory ``model_dir``, as
    ``inceptionxml train`` does: every option has the command line's name and default (``None``
    is the default, which for some options depends on the data or on ``plus``; see
    ``inceptionxml train --help`` and :func:`train_defaults`).

    The data comes from a dataset folder (``data_dir``: ``trn_X.txt``, ``trn_X_Y.txt``, optional
    ``tst_*`` and ``Y.txt`` / ``Y.tsv``) or from memory: ``texts`` (a list of str) with
    ``labels``, a scipy sparse or dense 0/1 matrix ``[len(texts), n_labels]`` or a list of
    label-id lists; optionally ``label_names`` / ``label_uris`` (one per label) and a test split
    (``test_texts``, ``test_labels``), evaluated as the CLI does.

    By default the network is trained, then the sparse lexical model, fused with it
    (``sparse=True``: the sparse model alone, in minutes; ``no_sparse=True``: the network
    alone). ``progress`` shows a tqdm bar per epoch when tqdm is installed; ``callback`` gets
    every event as a dict (``{"event": "epoch_end", "epoch": 3, "valid": {"P@1": ...}, ...}``).

    Returns a summary dict: ``epochs_done``, ``steps``, ``train_s``, ``samples_per_s``,
    ``n_train``, ``n_valid``, ``vocab_size``, ``valid`` and ``test`` metrics (× 100) of the last
    evaluation, and ``sparse`` (its training time and fusion weight) when trained.
    """
    opts = {
        "plus": plus,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "clusters": None if clusters is None else str(clusters),
        "top_k": top_k,
        "detach_fraction": detach_fraction,
        "hidden_dim": hidden_dim,
        "dropout_meta": dropout_meta,
        "embeddings": None if embeddings is None else os.fspath(embeddings),
        "dim": dim,
        "dropout_ext": dropout_ext,
        "seed": seed,
        "eval_every": eval_every,
        "valid_fraction": valid_fraction,
        "output_bias": output_bias,
        "resume": resume,
        "force": force,
        "max_vocab": max_vocab,
        "max_train": max_train,
        "sparse": sparse,
        "no_sparse": no_sparse,
        "sparse_trees": sparse_trees,
        "sparse_char_ngrams": sparse_char_ngrams,
        "subwords": subwords,
        "subword_ngrams": subword_ngrams,
        "corpus_vectors": corpus_vectors,
        "threads": threads,
        "device": device,
    }
    opts = {k: v for k, v in opts.items() if v is not None}
    kwargs: dict[str, Any] = {}
    if data_dir is not None:
        if texts is not None or labels is not None:
            raise ValueError("give data_dir, or texts and labels, not both")
        kwargs["data_dir"] = os.fspath(data_dir)
    else:
        if texts is None or labels is None:
            raise ValueError("give data_dir, or texts and labels")
        texts = _texts(texts)
        rows, n_labels = _label_rows(labels, len(texts), "labels")
        kwargs.update(texts=texts, labels=rows, n_labels=n_labels)
        if label_names is not None:
            kwargs["label_names"] = [str(n) for n in label_names]
        if label_uris is not None:
            kwargs["label_uris"] = [None if u is None else str(u) for u in label_uris]
        if (test_texts is None) != (test_labels is None):
            raise ValueError("test_texts and test_labels go together")
        if test_texts is not None:
            test_texts = _texts(test_texts)
            trows, tn = _label_rows(test_labels, len(test_texts), "test_labels")
            if n_labels is not None and tn is not None and tn != n_labels:
                raise ValueError(f"test_labels has {tn} columns, labels {n_labels}")
            kwargs.update(test_texts=test_texts, test_labels=trows)
    on_event, close = _progress_callback(progress, callback)
    try:
        return _native.train(os.fspath(model_dir), options=opts, on_event=on_event, **kwargs)
    finally:
        close()


def train_defaults() -> dict:
    """The training defaults that do not depend on the data, for plain InceptionXML and for
    ``plus=True`` (what ``inceptionxml train --help`` quotes)."""
    return _native.train_defaults()

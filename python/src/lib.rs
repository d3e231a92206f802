//! `inceptionxml._native`: the library's facade ([`inceptionxml::Model`],
//! [`inceptionxml::train_interruptible`]) as a Python extension module. The Python package
//! (`python/inceptionxml`) wraps it with the documented API; this module only converts.
//!
//! Every call that ranks or trains releases the GIL. Library errors become Python exceptions
//! (`to_py_err`); a panic would become pyo3's `PanicException`, never an abort.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyPermissionError, PyRuntimeError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use inceptionxml::config::OutputBias;
use inceptionxml::train::{TrainEvent, TrainSummary};
use inceptionxml::xmc::dataset::{Split, XcDataset};
use inceptionxml::xmc::labels::Labels;
use inceptionxml::xmc::metrics::Metrics;
use inceptionxml::xmc::sparse::SparseMatrix;
use inceptionxml::{
    DeviceSpec, Error, LoadOptions, Model, PredictOptions, ScoreMode, SparseMode, TrainOptions,
};

/// The Python exception for a library error: files that are missing or unreadable are
/// `OSError`s (`FileNotFoundError`, `PermissionError`), bad values and bad models
/// `ValueError`, an interrupted run `KeyboardInterrupt`, a run that failed `RuntimeError`.
fn to_py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Xmc(inceptionxml::xmc::Error::Io { source, .. }) => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        Error::Xmc(_)
        | Error::Model { .. }
        | Error::Config(_)
        | Error::Shape(_)
        | Error::WrongModelKind(_)
        | Error::ChangedOnResume(_)
        | Error::NoTrainingRows
        | Error::NotBuiltWithCuda { .. }
        | Error::Device(_) => PyValueError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// `FileNotFoundError` for a model folder that is not there (before the library's own, more
/// general, message about its files).
fn check_dir(path: &Path, what: &str) -> PyResult<()> {
    if path.is_dir() {
        Ok(())
    } else if path.exists() {
        Err(PyValueError::new_err(format!(
            "{}: not a {what} folder",
            path.display()
        )))
    } else {
        Err(PyFileNotFoundError::new_err(format!(
            "{}: {what} folder not found",
            path.display()
        )))
    }
}

fn check_k(k: usize) -> PyResult<()> {
    if k == 0 {
        return Err(PyValueError::new_err("k (labels per text) must be >= 1"));
    }
    Ok(())
}

/// A loaded model (one directory, or several averaged as an ensemble).
#[pyclass(name = "NativeModel", module = "inceptionxml._native", frozen)]
struct NativeModel {
    model: Model,
}

impl NativeModel {
    fn options(
        &self,
        batch_size: usize,
        score: Option<&str>,
        threshold: f32,
    ) -> PyResult<PredictOptions> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be >= 1"));
        }
        if !threshold.is_finite() {
            return Err(PyValueError::new_err("threshold must be a finite number"));
        }
        let score = score
            .map(ScoreMode::from_str)
            .transpose()
            .map_err(to_py_err)?;
        Ok(PredictOptions {
            batch_size,
            score,
            threshold,
        })
    }

    /// Ranks `texts` with the GIL released.
    fn rank(
        &self,
        py: Python<'_>,
        texts: &[String],
        k: usize,
        opts: &PredictOptions,
    ) -> PyResult<Vec<Vec<(u32, f32)>>> {
        check_k(k)?;
        py.detach(|| self.model.rank(texts, k, opts))
            .map_err(to_py_err)
    }
}

#[pymethods]
impl NativeModel {
    /// Loads one model directory, or several as an ensemble.
    #[staticmethod]
    #[pyo3(signature = (paths, *, threads=None, exact=false, device="cpu"))]
    fn load(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        threads: Option<usize>,
        exact: bool,
        device: &str,
    ) -> PyResult<Self> {
        if paths.is_empty() {
            return Err(PyValueError::new_err("no model directory given"));
        }
        for p in &paths {
            check_dir(p, "model")?;
        }
        let opts = LoadOptions {
            device: DeviceSpec::from_str(device).map_err(to_py_err)?,
            exact,
            threads,
        };
        let model = py
            .detach(|| Model::load_with(&paths, &opts))
            .map_err(to_py_err)?;
        Ok(NativeModel { model })
    }

    /// `(uris, names)`: each label's URI (its name when it has none) and name, in label order.
    fn labels(&self) -> (Vec<String>, Vec<String>) {
        let l = self.model.labels();
        (0..l.len())
            .map(|i| (l.uri_or_name(i).to_string(), l.name(i).to_string()))
            .unzip()
    }

    #[getter]
    fn n_labels(&self) -> usize {
        self.model.n_labels()
    }

    #[getter]
    fn dirs(&self) -> Vec<PathBuf> {
        self.model.dirs().to_vec()
    }

    /// Per text, its top `k` as `(uri, label, score)`, best first, below `threshold` left out.
    #[pyo3(signature = (texts, k, threshold, batch_size, score=None))]
    fn predict(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        k: usize,
        threshold: f32,
        batch_size: usize,
        score: Option<&str>,
    ) -> PyResult<Vec<Vec<(String, String, f32)>>> {
        let opts = self.options(batch_size, score, threshold)?;
        let rows = self.rank(py, &texts, k, &opts)?;
        Ok(rows
            .iter()
            .map(|row| {
                self.model
                    .suggestions(row, threshold)
                    .into_iter()
                    .map(|s| (s.uri.to_string(), s.label.to_string(), s.score))
                    .collect()
            })
            .collect())
    }

    /// `(ids, scores)`, int32 and float32 arrays `[N, k]`; a row with fewer than `k` labels
    /// (the sparse model's beam can return fewer) is padded with id -1 and score 0.
    #[pyo3(signature = (texts, k, batch_size, score=None))]
    #[allow(clippy::type_complexity)]
    fn predict_topk<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        k: usize,
        batch_size: usize,
        score: Option<&str>,
    ) -> PyResult<(Bound<'py, PyArray2<i32>>, Bound<'py, PyArray2<f32>>)> {
        if k > self.model.n_labels() {
            return Err(PyValueError::new_err(format!(
                "k {k} is more than the model's {} labels (predict and predict_csr return every \
                 label for such a k)",
                self.model.n_labels()
            )));
        }
        let opts = self.options(batch_size, score, 0.0)?;
        let rows = self.rank(py, &texts, k, &opts)?;
        let mut ids = Array2::<i32>::from_elem((rows.len(), k), -1);
        let mut scores = Array2::<f32>::zeros((rows.len(), k));
        for (r, row) in rows.iter().enumerate() {
            for (j, &(id, s)) in row.iter().take(k).enumerate() {
                ids[[r, j]] = id as i32;
                scores[[r, j]] = s;
            }
        }
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// The CSR parts `(indptr int64, indices int32, data float32)` of the top-`k` scores
    /// (those below `threshold` left out), each row's entries best first.
    #[pyo3(signature = (texts, k, threshold, batch_size, score=None))]
    #[allow(clippy::type_complexity)]
    fn predict_csr_parts<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        k: usize,
        threshold: f32,
        batch_size: usize,
        score: Option<&str>,
    ) -> PyResult<(
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<f32>>,
    )> {
        let opts = self.options(batch_size, score, threshold)?;
        let rows = self.rank(py, &texts, k, &opts)?;
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        indptr.push(0i64);
        for row in &rows {
            for &(id, s) in row.iter().filter(|e| e.1 >= threshold) {
                indices.push(id as i32);
                data.push(s);
            }
            indptr.push(indices.len() as i64);
        }
        Ok((
            PyArray1::from_vec(py, indptr),
            PyArray1::from_vec(py, indices),
            PyArray1::from_vec(py, data),
        ))
    }

    /// Per text, its top `k` as `(uri, label, score, [(word, weight), ...])`: each word's
    /// occlusion weight for the label, words in text order (see `Model::explain`).
    #[pyo3(signature = (texts, k, threshold, batch_size, score=None))]
    #[allow(clippy::type_complexity)]
    fn explain(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        k: usize,
        threshold: f32,
        batch_size: usize,
        score: Option<&str>,
    ) -> PyResult<Vec<Vec<(String, String, f32, Vec<(String, f32)>)>>> {
        check_k(k)?;
        let opts = self.options(batch_size, score, threshold)?;
        let rows = py
            .detach(|| self.model.explain(&texts, k, &opts))
            .map_err(to_py_err)?;
        let labels = self.model.labels();
        Ok(rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|e| {
                        (
                            labels.uri_or_name(e.id as usize).to_string(),
                            labels.name(e.id as usize).to_string(),
                            e.score,
                            e.words.into_iter().map(|w| (w.word, w.weight)).collect(),
                        )
                    })
                    .collect()
            })
            .collect())
    }

    /// Copies the model directory to `path` (see `Model::save`).
    #[pyo3(signature = (path, overwrite=false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        py.detach(|| self.model.save(&path, overwrite))
            .map_err(to_py_err)
    }

    /// Seconds per call of the library's own `rank` on `texts`, the mean over `repeats` calls
    /// made from Rust (no Python in the loop): the baseline of the binding's overhead benchmark.
    fn time_rank(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        k: usize,
        repeats: usize,
    ) -> PyResult<f64> {
        check_k(k)?;
        let opts = PredictOptions::default();
        py.detach(|| {
            let t0 = Instant::now();
            for _ in 0..repeats.max(1) {
                std::hint::black_box(self.model.rank(&texts, k, &opts)?);
            }
            Ok(t0.elapsed().as_secs_f64() / repeats.max(1) as f64)
        })
        .map_err(to_py_err)
    }
}

/// A label matrix from rows of label ids, checked: ids in `0..n_labels` (when `n_labels` is
/// None, one more than the largest id).
fn label_matrix(
    rows: Vec<Vec<i64>>,
    n_labels: Option<usize>,
    what: &str,
) -> PyResult<SparseMatrix> {
    let max = rows.iter().flatten().copied().max();
    let n = match n_labels {
        Some(n) => n,
        None => max.map_or(0, |m| m.max(-1) + 1) as usize,
    };
    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in rows.into_iter().enumerate() {
        let mut ids = Vec::with_capacity(row.len());
        for id in row {
            if id < 0 || id as u64 >= n as u64 {
                return Err(PyValueError::new_err(format!(
                    "{what} row {r}: label id {id} is outside 0..{n}"
                )));
            }
            ids.push(id as u32);
        }
        ids.sort_unstable();
        ids.dedup();
        out.push(ids);
    }
    SparseMatrix::from_index_rows(n, &out).map_err(|e| to_py_err(Error::Xmc(e)))
}

/// The options dict (keyword arguments of `inceptionxml.train`, `None`s left out) as the
/// library's [`TrainOptions`]; an unknown name is a `TypeError`, as for any Python function.
fn train_options(options: Option<&Bound<'_, PyDict>>) -> PyResult<TrainOptions> {
    let mut o = TrainOptions::default();
    let (mut sparse_only, mut no_sparse) = (false, false);
    let Some(options) = options else {
        return Ok(o);
    };
    for (key, value) in options.iter() {
        let key: String = key.extract()?;
        let v = &value;
        match key.as_str() {
            "plus" => o.plus = v.extract()?,
            "epochs" => o.epochs = Some(v.extract()?),
            "batch_size" => o.batch_size = Some(v.extract()?),
            "lr" => o.lr = Some(v.extract()?),
            "clusters" => o.clusters = Some(v.str()?.to_string()),
            "top_k" => o.top_k = Some(v.extract()?),
            "detach_fraction" => o.detach_fraction = Some(v.extract()?),
            "hidden_dim" => o.hidden_dim = Some(v.extract()?),
            "dropout_meta" => o.dropout_meta = Some(v.extract()?),
            "embeddings" => o.embeddings = Some(v.extract()?),
            "dim" => o.dim = Some(v.extract()?),
            "dropout_ext" => o.dropout_ext = Some(v.extract()?),
            "seed" => o.seed = Some(v.extract()?),
            "eval_every" => o.eval_every = Some(v.extract()?),
            "valid_fraction" => o.valid_fraction = Some(v.extract()?),
            "output_bias" => {
                let name: String = v.extract()?;
                o.output_bias = Some(match name.as_str() {
                    "zero" => OutputBias::Zero,
                    "prior" => OutputBias::Prior,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "output_bias {other:?}: expected \"zero\" or \"prior\""
                        )))
                    }
                })
            }
            "resume" => o.resume = v.extract()?,
            "force" => o.force = v.extract()?,
            "max_vocab" => o.max_vocab = Some(v.extract()?),
            "max_train" => o.max_train = Some(v.extract()?),
            "threads" => o.threads = Some(v.extract()?),
            "device" => {
                let d: String = v.extract()?;
                o.device = DeviceSpec::from_str(&d).map_err(to_py_err)?;
            }
            "sparse" => sparse_only = v.extract()?,
            "no_sparse" => no_sparse = v.extract()?,
            "sparse_trees" => o.sparse_trees = Some(v.extract()?),
            "sparse_char_ngrams" => o.sparse_char_ngrams = Some(v.extract()?),
            "subwords" => o.subwords = Some(v.extract()?),
            "corpus_vectors" => o.corpus_vectors = Some(v.extract()?),
            "subword_ngrams" => o.subword_ngrams = Some(v.extract()?),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "train() got an unexpected option {other:?}"
                )))
            }
        }
    }
    o.sparse = match (sparse_only, no_sparse) {
        (true, true) => {
            return Err(PyValueError::new_err(
                "sparse=True (the sparse model alone) and no_sparse=True (the network alone) \
                 exclude each other",
            ))
        }
        (true, false) => SparseMode::Only,
        (false, true) => SparseMode::Off,
        (false, false) => SparseMode::Fused,
    };
    if o.sparse == SparseMode::Only && (o.plus || o.resume) {
        return Err(PyValueError::new_err(
            "sparse=True trains the sparse model alone: plus and resume do not apply",
        ));
    }
    Ok(o)
}

/// A training event as a dict `{"event": name, ...}` for the Python callback.
fn event_dict<'py>(py: Python<'py>, e: &TrainEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        TrainEvent::Clustered {
            labels,
            clusters,
            seconds,
        } => {
            d.set_item("event", "clustered")?;
            d.set_item("labels", labels)?;
            d.set_item("clusters", clusters)?;
            d.set_item("seconds", seconds)?;
        }
        TrainEvent::EpochStart {
            epoch,
            epochs,
            steps,
        } => {
            d.set_item("event", "epoch_start")?;
            d.set_item("epoch", epoch)?;
            d.set_item("epochs", epochs)?;
            d.set_item("steps", steps)?;
        }
        TrainEvent::Step {
            loss,
            samples_per_s,
        } => {
            d.set_item("event", "step")?;
            d.set_item("loss", loss)?;
            d.set_item("samples_per_s", samples_per_s)?;
        }
        TrainEvent::EpochEnd(r) => {
            d.set_item("event", "epoch_end")?;
            d.set_item("epoch", r.epoch)?;
            d.set_item("epochs", r.epochs)?;
            d.set_item("loss", r.loss)?;
            d.set_item("samples_per_s", r.samples_per_s)?;
            d.set_item("seconds", r.seconds)?;
            d.set_item("test", metrics_dict(py, r.metrics.as_ref())?)?;
            d.set_item("valid", metrics_dict(py, r.valid.as_ref())?)?;
        }
        TrainEvent::DefaultEpochs { epochs, rows } => {
            d.set_item("event", "default_epochs")?;
            d.set_item("epochs", epochs)?;
            d.set_item("rows", rows)?;
        }
        TrainEvent::Warning(w) => {
            d.set_item("event", "warning")?;
            d.set_item("message", w)?;
        }
        TrainEvent::SparseStart { rows } => {
            d.set_item("event", "sparse_start")?;
            d.set_item("rows", rows)?;
        }
        TrainEvent::CorpusVectors {
            words,
            tokens,
            seconds,
        } => {
            d.set_item("event", "corpus_vectors")?;
            d.set_item("words", words)?;
            d.set_item("tokens", tokens)?;
            d.set_item("seconds", seconds)?;
        }
    }
    Ok(d)
}

/// `{"P@1": 40.1, ...}` (values × 100, as `eval` prints them), or None.
fn metrics_dict<'py>(py: Python<'py>, m: Option<&Metrics>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(m) = m else { return Ok(None) };
    let d = PyDict::new(py);
    for (k, v) in m.to_json_map() {
        d.set_item(k, v)?;
    }
    Ok(Some(d))
}

fn summary_dict<'py>(py: Python<'py>, s: &TrainSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epochs_done", s.epochs_done)?;
    d.set_item("steps", s.steps)?;
    d.set_item("train_s", s.train_s)?;
    d.set_item("samples_per_s", s.samples_per_s)?;
    d.set_item("n_train", s.n_train)?;
    d.set_item("n_valid", s.n_valid)?;
    d.set_item("vocab_size", s.vocab_size)?;
    d.set_item(
        "valid",
        metrics_dict(py, s.last_valid.as_ref().map(|r| &r.metrics))?,
    )?;
    d.set_item(
        "test",
        metrics_dict(py, s.last_eval.as_ref().map(|r| &r.metrics))?,
    )?;
    if let Some(sp) = &s.sparse {
        let sd = PyDict::new(py);
        sd.set_item("train_s", sp.train_s)?;
        sd.set_item("n_weights", sp.n_weights)?;
        sd.set_item("fusion_weight", sp.fusion.sparse_weight)?;
        sd.set_item("fusion_power", sp.fusion.sparse_power)?;
        sd.set_item("test", metrics_dict(py, sp.test.as_ref())?)?;
        d.set_item("sparse", sd)?;
    } else {
        d.set_item("sparse", py.None())?;
    }
    Ok(d)
}

/// Trains (or resumes) the model directory `model_dir`, from a dataset folder or from memory.
#[pyfunction]
#[pyo3(signature = (model_dir, *, data_dir=None, texts=None, labels=None, n_labels=None,
    label_names=None, label_uris=None, test_texts=None, test_labels=None, options=None,
    on_event=None))]
#[allow(clippy::too_many_arguments)]
fn train<'py>(
    py: Python<'py>,
    model_dir: PathBuf,
    data_dir: Option<PathBuf>,
    texts: Option<Vec<String>>,
    labels: Option<Vec<Vec<i64>>>,
    n_labels: Option<usize>,
    label_names: Option<Vec<String>>,
    label_uris: Option<Vec<Option<String>>>,
    test_texts: Option<Vec<String>>,
    test_labels: Option<Vec<Vec<i64>>>,
    options: Option<&Bound<'py, PyDict>>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = train_options(options)?;
    let data = match (data_dir, texts, labels) {
        (Some(dir), None, None) => {
            check_dir(&dir, "dataset")?;
            py.detach(|| XcDataset::open(&dir))
                .map_err(|e| to_py_err(Error::Xmc(e)))?
        }
        (None, Some(texts), Some(labels)) => {
            // Names (or URIs) given with n_labels must be as many: XcDataset::from_memory checks.
            let n = n_labels
                .or(label_names.as_ref().map(Vec::len))
                .or(label_uris.as_ref().map(Vec::len));
            let y = label_matrix(labels, n, "labels")?;
            let n = y.n_cols;
            let train = Split::new(texts, y).map_err(|e| to_py_err(Error::Xmc(e)))?;
            let test = match (test_texts, test_labels) {
                (Some(t), Some(l)) => Some(
                    Split::new(t, label_matrix(l, Some(n), "test_labels")?)
                        .map_err(|e| to_py_err(Error::Xmc(e)))?,
                ),
                (None, None) => None,
                _ => {
                    return Err(PyValueError::new_err(
                        "test_texts and test_labels go together",
                    ))
                }
            };
            let names = match (label_names, label_uris) {
                (None, None) => None,
                (names, uris) => {
                    let names = names.unwrap_or_else(|| Labels::numbered(n).names);
                    let uris = uris.unwrap_or_else(|| vec![None; names.len()]);
                    if uris.len() != names.len() {
                        return Err(PyValueError::new_err(format!(
                            "{} label URIs for {} label names",
                            uris.len(),
                            names.len()
                        )));
                    }
                    Some(Labels { names, uris })
                }
            };
            XcDataset::from_memory(train, test, names).map_err(|e| to_py_err(Error::Xmc(e)))?
        }
        (None, _, _) => {
            return Err(PyValueError::new_err(
                "give data_dir, or texts and labels (and optionally test_texts, test_labels)",
            ))
        }
        (Some(_), _, _) => {
            return Err(PyValueError::new_err(
                "give data_dir or texts and labels, not both",
            ))
        }
    };
    let stop = AtomicBool::new(false);
    // The first Python exception raised while training (Ctrl-C, or the callback's own).
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut on = |e: TrainEvent| {
            if raised.is_some() {
                return;
            }
            // Ctrl-C is seen here, between steps: training runs on this (the calling) thread.
            let r = Python::attach(|py| -> PyResult<()> {
                py.check_signals()?;
                if let Some(cb) = &on_event {
                    cb.call1(py, (event_dict(py, &e)?,))?;
                }
                Ok(())
            });
            if let Err(err) = r {
                raised = Some(err);
                stop.store(true, Ordering::Relaxed);
            }
        };
        inceptionxml::train_interruptible(&data, &model_dir, &opts, &mut on, &stop)
    });
    if let Some(err) = raised {
        return Err(err);
    }
    let summary = result.map_err(to_py_err)?;
    summary_dict(py, &summary)
}

/// The one default of each training option that does not depend on the data (the CLI's help
/// quotes the same values): `{"plain": {...}, "plus": {...}}`.
#[pyfunction]
fn train_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = inceptionxml::api::TrainDefaults::get();
    let out = PyDict::new(py);
    for (name, c) in [("plain", &d.plain), ("plus", &d.plus)] {
        let m = PyDict::new(py);
        m.set_item("batch_size", c.batch_size)?;
        m.set_item("lr", c.lr_max)?;
        m.set_item("seed", c.seed)?;
        m.set_item("eval_every", c.eval_every)?;
        m.set_item("valid_fraction", c.valid_fraction)?;
        m.set_item("max_vocab", c.max_vocab)?;
        m.set_item("output_bias", c.output_bias.name())?;
        out.set_item(name, m)?;
    }
    out.set_item("dim", d.embed_dim)?;
    out.set_item("corpus_vectors", d.corpus_vectors)?;
    out.set_item("subwords", d.subwords)?;
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(train_defaults, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

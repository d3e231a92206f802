//! [`Model`]: a trained model directory (or several, an ensemble) loaded for prediction, with
//! its labels' names and URIs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use xmc::labels::Labels;

use crate::config::ScoreMode;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::predict::{Ensemble, Explained, Row, Scoring};
use crate::runtime;

/// How a model is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Where the weights go and the model runs (default: the CPU).
    pub device: DeviceSpec,
    /// Score small batches exactly in f32 instead of through the int8 indexes (CPU only; the
    /// indexes pre-rank every label and rescore the best exactly). Default: false.
    pub exact: bool,
    /// Worker threads of the process's thread pool (None: every core). Applied by the first
    /// load or training of the process ([`runtime::init_threads`]).
    pub threads: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: DeviceSpec::Cpu,
            exact: false,
            threads: None,
        }
    }
}

/// How texts are ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictOptions {
    /// Texts per forward pass (at most [`crate::predict::INT8_MAX_BATCH`], or a call with that
    /// few texts, uses the int8 indexes). Default [`PredictOptions::DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
    /// InceptionXML+'s ranking; None: the one the model was saved with.
    pub score: Option<ScoreMode>,
    /// Suggestions scoring below this are left out (Annif's `threshold`). Default 0.
    pub threshold: f32,
}

impl PredictOptions {
    /// The default batch size: large batches score the heads with f32 GEMMs.
    pub const DEFAULT_BATCH_SIZE: usize = 256;
    /// Labels per text when none is asked for (`predict --top-k`).
    pub const DEFAULT_TOP_K: usize = 100;
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            batch_size: Self::DEFAULT_BATCH_SIZE,
            score: None,
            threshold: 0.0,
        }
    }
}

/// One suggested label of a text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Suggestion<'a> {
    /// The label's index (its column in `Y.txt` / the label files).
    pub id: u32,
    /// The label's URI, or its name when it has none (what Annif's `uri` field carries).
    pub uri: &'a str,
    /// The label's name.
    pub label: &'a str,
    /// The label's score in [0, 1]: the network's σ, the sparse model's score, or their fusion
    /// (`fusion.json`), as the model directory holds them.
    pub score: f32,
}

/// A trained model ready to rank labels for texts: one model directory, or several whose
/// scores are averaged (an ensemble over the same labels). Loading validates every file.
pub struct Model {
    ensemble: Ensemble,
    dirs: Vec<PathBuf>,
}

impl Model {
    /// Loads the model directory `dir` (written by `inceptionxml train`, `demo` or
    /// [`crate::train()`]) on the CPU, with the default [`LoadOptions`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(&[dir], &LoadOptions::default())
    }

    /// Loads one or several model directories (several: an ensemble, whose members must score
    /// the same labels).
    pub fn load_with<P: AsRef<Path>>(dirs: &[P], opts: &LoadOptions) -> Result<Self> {
        runtime::init_threads(opts.threads)?;
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_path_buf()).collect();
        let device = opts.device.open()?;
        let scoring = match opts.exact {
            true => Scoring::Exact,
            false => Scoring::Int8SmallBatches,
        };
        let ensemble = Ensemble::load(&dirs, &device, scoring)?;
        Ok(Model { ensemble, dirs })
    }

    /// The top `k` labels of each text, best first, with their names and URIs.
    pub fn predict<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
    ) -> Result<Vec<Vec<Suggestion<'_>>>> {
        self.predict_with(texts, k, &PredictOptions::default())
    }

    /// [`Model::predict`] with options.
    pub fn predict_with<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        opts: &PredictOptions,
    ) -> Result<Vec<Vec<Suggestion<'_>>>> {
        let rows = self.rank(texts, k, opts)?;
        Ok(rows
            .iter()
            .map(|row| self.suggestions(row, opts.threshold))
            .collect())
    }

    /// The top `k` `(label id, score)` of each text, scores descending: what the sparse XC
    /// prediction format holds.
    pub fn rank<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        opts: &PredictOptions,
    ) -> Result<Vec<Row>> {
        check_k(k)?;
        check_batch(opts.batch_size)?;
        self.ensemble
            .predict_texts(texts, k, opts.batch_size, opts.score)
    }

    /// The top `k` labels of each text (below `opts.threshold` left out), each with the weight
    /// of every word of the text for that label: its score minus its score with the word
    /// removed (occlusion, [`crate::predict::explain`]). Words come in text order, as the models
    /// see them (lowercased, stop words left out).
    pub fn explain<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        opts: &PredictOptions,
    ) -> Result<Vec<Vec<Explained>>> {
        check_k(k)?;
        check_batch(opts.batch_size)?;
        let mut rows = self
            .ensemble
            .explain(texts, k, opts.batch_size, opts.score)?;
        for row in &mut rows {
            row.retain(|e| e.score >= opts.threshold);
        }
        Ok(rows)
    }

    /// [`Model::rank`] for one text: a batch of one (the int8 path unless loaded `exact`).
    pub fn rank_one(&self, text: &str, k: usize, score: Option<ScoreMode>) -> Result<Row> {
        check_k(k)?;
        self.ensemble.predict_one(text, k, score)
    }

    /// A ranked row as suggestions with names and URIs, those below `threshold` left out.
    pub fn suggestions(&self, row: &[(u32, f32)], threshold: f32) -> Vec<Suggestion<'_>> {
        let labels = self.labels();
        row.iter()
            .filter(|e| e.1 >= threshold)
            .map(|&(id, score)| Suggestion {
                id,
                uri: labels.uri_or_name(id as usize),
                label: labels.name(id as usize),
                score,
            })
            .collect()
    }

    /// Every label's name and URI, in label order.
    pub fn labels(&self) -> &Labels {
        self.ensemble.labels()
    }

    /// How many labels the model scores.
    pub fn n_labels(&self) -> usize {
        self.ensemble.n_labels()
    }

    /// The directories the model was loaded from (several for an ensemble).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Copies the model directory this model was loaded from to `dir`, as its files are on
    /// disk: built in a staging folder beside `dir` and moved into place only when complete.
    /// An existing `dir` is refused unless `overwrite`. An ensemble (several directories) has
    /// no single directory to save: an error (save each member from its own directory).
    pub fn save(&self, dir: impl AsRef<Path>, overwrite: bool) -> Result<()> {
        let out = dir.as_ref();
        let [src] = self.dirs.as_slice() else {
            return Err(crate::Error::Config(format!(
                "an ensemble of {} model directories cannot be saved as one",
                self.dirs.len()
            )));
        };
        let model_err = |msg: &str| crate::Error::Model {
            path: out.display().to_string(),
            msg: msg.into(),
        };
        if out.exists() {
            if !overwrite {
                return Err(model_err("already exists (overwrite=True replaces it)"));
            }
            let same = |p: &Path| std::fs::canonicalize(p).ok();
            if same(out) == same(src) {
                return Err(model_err("is the directory the model was loaded from"));
            }
        }
        let io = |p: &Path, e| crate::Error::Xmc(xmc::Error::io(p, e));
        let stage = crate::model_dir::staging_dir(out)?;
        let copied = (|| {
            for entry in std::fs::read_dir(src).map_err(|e| io(src, e))? {
                let entry = entry.map_err(|e| io(src, e))?;
                let from = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if hidden || !entry.file_type().map_err(|e| io(&from, e))?.is_file() {
                    continue;
                }
                std::fs::copy(&from, stage.join(entry.file_name())).map_err(|e| io(&from, e))?;
            }
            Ok(())
        })();
        match copied {
            Ok(()) => crate::model_dir::promote(&stage, out),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&stage);
                Err(e)
            }
        }
    }

    /// The loaded ensemble (the prediction layer's type, for callers that need its details).
    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(crate::Error::Config(
            "k (labels per text) must be > 0".into(),
        ));
    }
    Ok(())
}

fn check_batch(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(crate::Error::Config("batch_size must be > 0".into()));
    }
    Ok(())
}

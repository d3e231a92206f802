//! [`train()`]: one call that trains (or resumes) a model directory from a dataset, with the
//! command line's options and defaults ([`TrainOptions`]; the CLI's `train` flags are its
//! fields, the Python package's keyword arguments too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use xmc::dataset::XcDataset;

use crate::config::{
    ClusterSource, ModelParams, OutputBias, PlusConfig, PlusParams, Preset, SubwordConfig,
    TrainConfig, DEFAULT_EMBED_DIM,
};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::model_dir::{self, ModelDirConfig};
use crate::runtime;
use crate::train::{self as run, TrainEvent, TrainJob, TrainSummary};
use xmc::tree::SparseParams;

/// Everything `inceptionxml train` takes besides the data. `None` is the default, which for
/// several options depends on the model kind (`plus`) or on the data (epochs): see
/// [`TrainOptions::resolve`] and each field. `TrainOptions::default()` trains plain
/// InceptionXML with every default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainOptions {
    /// Train InceptionXML+ (meta head over label clusters, extreme head over each row's
    /// shortlisted clusters) instead of the full one-vs-all head.
    pub plus: bool,
    /// Passes over the training data (default: [`Preset::epochs_for`] the rows trained on, or
    /// [`Preset::fused_epochs_for`] when the sparse model is fused, as it is by default).
    pub epochs: Option<usize>,
    /// Rows per optimiser step (default: the preset's, 128; 256 with `plus`).
    pub batch_size: Option<usize>,
    /// Peak learning rate of the one-cycle schedule (default: the preset's).
    pub lr: Option<f64>,
    /// InceptionXML+: a label -> cluster file, or a number of clusters (default: L/10 as a
    /// power of two).
    pub clusters: Option<String>,
    /// InceptionXML+: clusters shortlisted per text, K (default: C/64 within 128..=800).
    pub top_k: Option<usize>,
    /// InceptionXML+: share of the epochs with the encoder detached from the extreme head.
    pub detach_fraction: Option<f64>,
    /// InceptionXML+: hidden width of the heads (default: the encoder's output).
    pub hidden_dim: Option<usize>,
    /// InceptionXML+: dropout before the meta classifier.
    pub dropout_meta: Option<f32>,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    pub embeddings: Option<PathBuf>,
    /// Without `embeddings`: word vectors trained on the training texts first (default
    /// [`DEFAULT_CORPUS_VECTORS`]).
    pub corpus_vectors: Option<bool>,
    /// Word-embedding dimension (default [`DEFAULT_EMBED_DIM`]).
    pub dim: Option<usize>,
    /// Dropout before the L-way classifier.
    pub dropout_ext: Option<f32>,
    /// Seed of shuffles and initialisation.
    pub seed: Option<u64>,
    /// Evaluate on the test split every N epochs (0: only after the last).
    pub eval_every: Option<usize>,
    /// Share of the training rows held out as a validation split (default: the preset's).
    pub valid_fraction: Option<f64>,
    /// Plain InceptionXML: the classifier's initial bias.
    pub output_bias: Option<OutputBias>,
    /// Continue the run saved in the model directory (same schedule and step count); options
    /// that differ from the saved run's are refused.
    pub resume: bool,
    /// Replace a model already in the directory (it stays complete and usable until the new
    /// model's first epoch is saved).
    pub force: bool,
    /// Largest vocabulary.
    pub max_vocab: Option<usize>,
    /// Train on the first N rows only.
    pub max_train: Option<usize>,
    /// Stop after N epochs of this session as if interrupted (continue with `resume`).
    pub stop_after: Option<usize>,
    /// Where the model trains.
    pub device: DeviceSpec,
    /// Worker threads (None: every core; [`runtime::init_threads`]).
    pub threads: Option<usize>,
    /// The sparse lexical model ([`xmc::tree`]): fused with the network (the default), off, or
    /// alone (no network: minutes instead of tens of minutes).
    pub sparse: SparseMode,
    /// Trees of the sparse model (None: [`SparseParams::DEFAULT`]'s).
    pub sparse_trees: Option<usize>,
    /// Character n-grams of the sparse model's features (None: [`SparseParams::DEFAULT`]'s).
    pub sparse_char_ngrams: Option<usize>,
    /// Subwords in the network's encoder: this many rows for the words' hashed character
    /// n-grams (None or 0: words only; [`crate::config::ModelConfig::subwords`]).
    pub subwords: Option<usize>,
    /// Length of those n-grams (default [`SubwordConfig::DEFAULT_N`]).
    pub subword_ngrams: Option<usize>,
}

/// Whether a model directory holds a sparse lexical model beside its network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparseMode {
    /// Network and sparse model, their scores fused with a weight chosen on the validation split.
    #[default]
    Fused,
    /// The network alone.
    Off,
    /// The sparse model alone.
    Only,
}

/// The one default of each training option that does not depend on the data, for help texts
/// (`inceptionxml train --help`, the Python docstrings): `(plain, plus)` where they differ.
pub struct TrainDefaults {
    pub plain: TrainConfig,
    pub plus: TrainConfig,
    pub embed_dim: usize,
    pub dropout_ext: f32,
    pub dropout_meta: f32,
    /// [`DEFAULT_CORPUS_VECTORS`].
    pub corpus_vectors: bool,
    /// [`DEFAULT_SUBWORDS`].
    pub subwords: usize,
}

impl TrainDefaults {
    pub fn get() -> Self {
        TrainDefaults {
            plain: TrainConfig::preset(Preset::Plain),
            plus: TrainConfig::preset(Preset::Plus),
            embed_dim: DEFAULT_EMBED_DIM,
            dropout_ext: crate::config::ModelConfig::new(1, 1).dropout_ext,
            dropout_meta: crate::config::DEFAULT_DROPOUT_META,
            corpus_vectors: DEFAULT_CORPUS_VECTORS,
            subwords: DEFAULT_SUBWORDS,
        }
    }
}

/// Whether `train` starts the word table from vectors trained on its texts when no
/// `embeddings` are given.
pub const DEFAULT_CORPUS_VECTORS: bool = false;

/// The n-gram rows of the encoder's subwords when not told (0: none).
pub const DEFAULT_SUBWORDS: usize = 0;

impl TrainOptions {
    /// The sparse model's options: [`SparseParams::DEFAULT`] with the run's seed and trees.
    pub fn sparse_params(&self) -> SparseParams {
        SparseParams {
            n_trees: self.sparse_trees.unwrap_or(SparseParams::DEFAULT.n_trees),
            char_ngrams: self
                .sparse_char_ngrams
                .unwrap_or(SparseParams::DEFAULT.char_ngrams),
            seed: self.seed.unwrap_or(0),
            ..SparseParams::DEFAULT
        }
    }

    /// The model kind's preset.
    pub fn preset(&self) -> Preset {
        if self.plus {
            Preset::Plus
        } else {
            Preset::Plain
        }
    }

    /// The run's configuration for a training split of `n_rows` rows: each option given, or
    /// its default. The second value is true when the epochs were chosen by the data.
    pub fn resolve(&self, n_rows: usize) -> (TrainConfig, ModelParams, bool) {
        let kind = self.preset();
        let preset = TrainConfig::preset(kind);
        let mut config = TrainConfig {
            batch_size: self.batch_size.unwrap_or(preset.batch_size),
            lr_max: self.lr.unwrap_or(preset.lr_max),
            detach_fraction: self.detach_fraction.unwrap_or(preset.detach_fraction),
            seed: self.seed.unwrap_or(preset.seed),
            eval_every: self.eval_every.unwrap_or(preset.eval_every),
            max_vocab: self.max_vocab.unwrap_or(preset.max_vocab),
            max_train: self.max_train,
            valid_fraction: self.valid_fraction.unwrap_or(preset.valid_fraction),
            embeddings: self.embeddings.clone(),
            corpus_vectors: self.embeddings.is_none()
                && self.corpus_vectors.unwrap_or(DEFAULT_CORPUS_VECTORS),
            output_bias: self.output_bias.unwrap_or(preset.output_bias),
            ..preset
        };
        let by_data = self.epochs.is_none();
        config.epochs = match self.epochs {
            Some(e) => e,
            None if self.sparse == SparseMode::Fused => {
                kind.fused_epochs_for(config.n_train_rows(n_rows))
            }
            None => kind.epochs_for(config.n_train_rows(n_rows)),
        };
        let plus = self.plus.then(|| PlusParams {
            clusters: ClusterSource::from_arg(self.clusters.as_deref()),
            top_k: self.top_k,
            hidden_dim: self.hidden_dim,
            dropout_meta: self.dropout_meta,
        });
        let n = self.subword_ngrams.unwrap_or(SubwordConfig::DEFAULT_N);
        let model = ModelParams {
            embed_dim: self.dim.unwrap_or(DEFAULT_EMBED_DIM),
            dropout_ext: self.dropout_ext,
            plus,
            subwords: Some(self.subwords.unwrap_or(DEFAULT_SUBWORDS))
                .filter(|&b| b > 0)
                .map(|buckets| SubwordConfig {
                    buckets,
                    minn: n,
                    maxn: n,
                }),
        };
        (config, model, by_data)
    }

    /// The options given whose values differ from the saved run's, as `name value (saved
    /// value)` (a resumed run keeps its own settings: silently ignoring a changed option would
    /// mislead). Names are the fields', which are the command line's flags with `-` for `_`.
    pub fn changed_from(&self, saved: &ModelDirConfig) -> Vec<String> {
        let (t, m) = (&saved.train, &saved.model);
        let p = m.plus.as_ref();
        let mut out = Vec::new();
        let mut check = |name: &str, given: Option<String>, was: String| {
            if let Some(g) = given {
                if g != was {
                    out.push(format!("{name} {g} (saved {was})"));
                }
            }
        };
        fn s<T: std::fmt::Display>(v: T) -> String {
            v.to_string()
        }
        let plus = |f: fn(&PlusConfig) -> String| p.map_or("none".into(), f);
        check("epochs", self.epochs.map(s), s(t.epochs));
        check("batch_size", self.batch_size.map(s), s(t.batch_size));
        check("lr", self.lr.map(s), s(t.lr_max));
        check("dim", self.dim.map(s), s(m.embed_dim));
        check("seed", self.seed.map(s), s(t.seed));
        check("eval_every", self.eval_every.map(s), s(t.eval_every));
        check(
            "valid_fraction",
            self.valid_fraction.map(s),
            s(t.valid_fraction),
        );
        check(
            "output_bias",
            self.output_bias.map(|v| s(v.name())),
            s(t.output_bias.name()),
        );
        check("max_vocab", self.max_vocab.map(s), s(t.max_vocab));
        check(
            "max_train",
            self.max_train.map(s),
            t.max_train.map_or("all".into(), s),
        );
        check("dropout_ext", self.dropout_ext.map(s), s(m.dropout_ext));
        check(
            "subwords",
            self.subwords.map(s),
            s(m.subwords.map_or(0, |w| w.buckets)),
        );
        check(
            "subword_ngrams",
            self.subword_ngrams.filter(|_| m.subwords.is_some()).map(s),
            m.subwords.map_or("none".into(), |w| s(w.minn)),
        );
        let shown = |v: &Path| v.display().to_string();
        check(
            "embeddings",
            self.embeddings.as_deref().map(shown),
            t.embeddings.as_deref().map_or("none".into(), shown),
        );
        check(
            "corpus_vectors",
            self.corpus_vectors.map(s),
            s(t.corpus_vectors),
        );
        check(
            "detach_fraction",
            self.detach_fraction.map(s),
            s(t.detach_fraction),
        );
        check(
            "plus",
            self.plus.then(|| "on".into()),
            p.map_or("off".into(), |_| "on".into()),
        );
        check("top_k", self.top_k.map(s), plus(|p| p.top_k.to_string()));
        check(
            "hidden_dim",
            self.hidden_dim.map(s),
            plus(|p| p.hidden_dim.to_string()),
        );
        check(
            "dropout_meta",
            self.dropout_meta.map(s),
            plus(|p| p.dropout_meta.to_string()),
        );
        check(
            "clusters",
            self.clusters.clone().filter(|c| c.parse::<usize>().is_ok()),
            plus(|p| p.n_clusters.to_string()),
        );
        out
    }
}

/// Trains (or, with `opts.resume`, continues) a model into `model_dir` from `data`, with the
/// command line's defaults; reports nothing. See [`train_with`] for progress events.
pub fn train(
    data: &XcDataset,
    model_dir: impl AsRef<Path>,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    train_with(data, model_dir, opts, &mut |_| {})
}

/// [`train()`], reporting progress through `on_event` (epochs, steps, warnings, the epochs
/// chosen by the data).
pub fn train_with(
    data: &XcDataset,
    model_dir: impl AsRef<Path>,
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary> {
    train_interruptible(data, model_dir, opts, on_event, &AtomicBool::new(false))
}

/// [`train_with`] that ends with [`Error::Interrupted`] once `stop` is set: the network's run
/// stops after its current step, keeping the directory's last checkpoint (`resume` continues
/// it); the sparse model, trained in one go (seconds to minutes), is not started once `stop`
/// is set. The Python package sets `stop` on Ctrl-C.
pub fn train_interruptible(
    data: &XcDataset,
    model_dir: impl AsRef<Path>,
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
    stop: &AtomicBool,
) -> Result<TrainSummary> {
    runtime::init_threads(opts.threads)?;
    let out = model_dir.as_ref();
    let interrupted = || stop.load(Ordering::Relaxed);
    if interrupted() {
        return Err(Error::Interrupted);
    }
    if opts.sparse == SparseMode::Only {
        return train_sparse_only(data, out, opts, on_event);
    }
    if opts.resume {
        let saved = model_dir::read_config(out)?;
        let changed = opts.changed_from(&saved);
        if !changed.is_empty() {
            return Err(Error::ChangedOnResume(changed));
        }
    }
    let (config, model, by_data) = opts.resolve(data.train.len());
    if by_data && !opts.resume {
        on_event(TrainEvent::DefaultEpochs {
            epochs: config.epochs,
            rows: config.n_train_rows(data.train.len()),
        });
    }
    let job = TrainJob {
        data,
        out,
        config,
        model,
        resume: opts.resume,
        force: opts.force,
        stop_after: opts.stop_after,
        device: opts.device.open()?,
        stop: Some(stop),
    };
    let mut summary = run::train(&job, on_event)?;
    // The saved configuration (a resumed run keeps its own).
    let saved = model_dir::read_config(out)?.train;
    if opts.sparse == SparseMode::Fused && summary.epochs_done >= saved.epochs {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        let params = opts.sparse_params();
        summary.sparse = Some(run::train_sparse(
            data,
            out,
            &saved,
            &params,
            Some(&job.device),
            on_event,
        )?);
    }
    model_dir::write_examples(out, data.test.as_ref())?;
    Ok(summary)
}

/// `train --sparse`: the sparse model alone, built in a staging folder that replaces `out`
/// only when complete.
fn train_sparse_only(
    data: &XcDataset,
    out: &Path,
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary> {
    if opts.resume {
        return Err(Error::Config(
            "--resume: a sparse model trains in one go (minutes); train it again".into(),
        ));
    }
    let holds_model = out.join(model_dir::CONFIG).exists()
        || out.join(crate::predict::fusion::FUSION_FILE).exists();
    if holds_model && !opts.force {
        return Err(Error::Model {
            path: out.display().to_string(),
            msg: "already holds a model: --force replaces it".into(),
        });
    }
    let (config, _, _) = opts.resolve(data.train.len());
    config.validate()?;
    let params = opts.sparse_params();
    params.validate()?;
    let stage = model_dir::staging_dir(out)?;
    let built = data
        .labels()
        .write_tsv(stage.join(model_dir::LABELS))
        .map_err(Error::from)
        .and_then(|()| model_dir::write_examples(&stage, data.test.as_ref()))
        .and_then(|()| run::train_sparse(data, &stage, &config, &params, None, on_event));
    let sparse = match built {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    model_dir::promote(&stage, out)?;
    let n_train = config.n_train_rows(data.train.len());
    Ok(TrainSummary {
        epochs_done: 0,
        steps: 0,
        train_s: sparse.train_s,
        samples_per_s: n_train as f64 / sparse.train_s.max(1e-9),
        last_eval: None,
        last_valid: None,
        n_valid: data.train.len() - n_train,
        vocab_size: 0,
        n_train,
        coverage: None,
        sparse: Some(sparse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The epochs follow the data unless given; every other default is the preset's.
    #[test]
    fn defaults_are_the_presets_and_the_epochs_rule() {
        let plain = TrainOptions::default();
        let (c, m, by_data) = plain.resolve(12_404);
        assert!(by_data);
        assert_eq!(c.epochs, Preset::Plain.fused_epochs_for(12_404));
        // The network alone gets its solo schedule.
        let (c, _, _) = TrainOptions {
            sparse: SparseMode::Off,
            ..Default::default()
        }
        .resolve(12_404);
        assert_eq!(c.epochs, Preset::Plain.epochs_for(12_404));
        assert!(Preset::Plain.fused_epochs_for(12_404) < c.epochs);
        assert_eq!(c.batch_size, TrainConfig::preset(Preset::Plain).batch_size);
        assert_eq!(m.embed_dim, DEFAULT_EMBED_DIM);
        assert!(m.plus.is_none());
        let plus = TrainOptions {
            plus: true,
            epochs: Some(3),
            ..Default::default()
        };
        let (c, m, by_data) = plus.resolve(600_000);
        assert!(!by_data);
        assert_eq!(c.epochs, 3);
        assert_eq!(c.lr_max, TrainConfig::preset(Preset::Plus).lr_max);
        assert_eq!(
            c.valid_fraction,
            TrainConfig::preset(Preset::Plus).valid_fraction
        );
        assert!(m.plus.is_some());
        // The rule counts the rows after the validation hold-out.
        let (c, _, _) = TrainOptions {
            plus: true,
            sparse: SparseMode::Off,
            ..Default::default()
        }
        .resolve(PAPER_ROWS_PLUS_HOLDOUT);
        assert_eq!(
            c.epochs,
            Preset::Plus.epochs_for(crate::config::PAPER_TRAIN_ROWS)
        );
    }

    /// A stop asked in the middle of the second epoch ends the run with `Interrupted`, the first
    /// epoch's checkpoint intact; resuming finishes the run.
    #[test]
    fn an_interrupted_run_keeps_its_last_checkpoint_and_resumes() {
        use xmc::dataset::Split;
        use xmc::sparse::SparseMatrix;
        let texts: Vec<String> = (0..192)
            .map(|i| format!("w{} v{} common", i % 13, i % 7))
            .collect();
        let rows: Vec<Vec<u32>> = (0..192u32).map(|i| vec![i % 13, 13 + i % 7]).collect();
        let split = Split::new(texts, SparseMatrix::from_index_rows(20, &rows).unwrap()).unwrap();
        let data = XcDataset::from_memory(split, None, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        let opts = TrainOptions {
            epochs: Some(2),
            dim: Some(64),
            batch_size: Some(32),
            valid_fraction: Some(0.0),
            sparse: SparseMode::Off,
            ..Default::default()
        };
        let stop = AtomicBool::new(false);
        let mut ended = 0;
        let r = train_interruptible(
            &data,
            &out,
            &opts,
            &mut |e| match e {
                TrainEvent::EpochEnd(_) => ended += 1,
                TrainEvent::Step { .. } if ended == 1 => stop.store(true, Ordering::Relaxed),
                _ => {}
            },
            &stop,
        );
        assert!(matches!(r, Err(Error::Interrupted)), "{:?}", r.map(|_| ()));
        assert_eq!(model_dir::read_state(&out).unwrap().epochs_done, 1);
        crate::Model::load(&out).unwrap();
        // A stop already set starts nothing.
        let r = train_interruptible(&data, &out, &opts, &mut |_| {}, &stop);
        assert!(matches!(r, Err(Error::Interrupted)));
        let resumed = TrainOptions {
            resume: true,
            ..opts
        };
        assert_eq!(train(&data, &out, &resumed).unwrap().epochs_done, 2);

        // `Model::save` copies the directory: the copy ranks the same; nothing is overwritten
        // unasked; an ensemble has no one directory.
        let m = crate::Model::load(&out).unwrap();
        let copy = dir.path().join("copy");
        m.save(&copy, false).unwrap();
        let texts = ["w3 v4 common", "w12"];
        let opts = crate::PredictOptions::default();
        assert_eq!(
            crate::Model::load(&copy)
                .unwrap()
                .rank(&texts, 5, &opts)
                .unwrap(),
            m.rank(&texts, 5, &opts).unwrap()
        );
        assert!(m
            .save(&copy, false)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(m
            .save(&out, true)
            .unwrap_err()
            .to_string()
            .contains("loaded from"));
        m.save(&copy, true).unwrap();
        let both = crate::Model::load_with(&[&out, &copy], &Default::default()).unwrap();
        assert!(both.save(dir.path().join("e"), false).is_err());
    }

    /// 485,176 rows remain after a 5 % hold-out of this many.
    const PAPER_ROWS_PLUS_HOLDOUT: usize = 510_712;

    #[test]
    fn changed_options_are_named_on_resume() {
        let saved = ModelDirConfig {
            format: String::new(),
            model: crate::config::ModelConfig::new(10, 5),
            train: TrainConfig::preset(Preset::Plain),
        };
        let same = TrainOptions {
            seed: Some(saved.train.seed),
            ..Default::default()
        };
        assert!(same.changed_from(&saved).is_empty());
        let other = TrainOptions {
            seed: Some(7),
            plus: true,
            ..Default::default()
        };
        let changed = other.changed_from(&saved);
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed[0].starts_with("seed 7 (saved 0)"));
        assert!(changed[1].starts_with("plus on (saved off)"));
    }
}

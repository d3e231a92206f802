//! The epoch loop.
//!
//! Per batch: look up the word vectors (`embed`, detached from the table) → make them a leaf
//! variable `x` → `encode` → `head` → BCE-with-logits → backward → fused dense Adam on the
//! model's dense parameters, and lazy row Adam on the word table with ∂loss/∂x summed into the
//! unique rows the batch touched (the padding row never moves). The learning rate and Adam's β1
//! follow the one-cycle schedule per step. After every `eval_every` epochs (and after the last)
//! the test split is ranked with [`crate::predict::predict_ids`] and scored (P, nDCG, PSP,
//! PSnDCG at 1..=k with the default propensity of the training labels); each epoch appends one
//! line to `metrics.jsonl` and saves a checkpoint that `--resume` continues from.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use xmc::dataset::XcDataset;
use xmc::metrics::{inverse_propensity, Metrics, Propensity};
use xmc::vocab::Vocab;
use xmc::SparseMatrix;

use super::batches::{epoch_order, steps_per_epoch, Batch, Batches};
use super::checkpoint::{self, ModelDirConfig, TrainerState};
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{InceptionXml, ModelConfig, PlusConfig, ScoreMode};
use crate::ops::{
    bce_with_logits, bce_with_logits_masked, candidate_logits, stable_sigmoid, Adam, AdamConsts,
    CandidatePlan, RowAdam, RowGroups,
};
use crate::predict::{predict_ids, predict_plus_ids};
use xmc::shortlist::{self, ClusterIndex};

/// Model hyper-parameters chosen at training time (the rest are SPEC defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOverrides {
    /// Word-embedding dimension d (300).
    pub embed_dim: usize,
    /// Dropout before the L-way classifier (None: the SPEC default).
    pub dropout_ext: Option<f32>,
    /// Train InceptionXML+ instead of InceptionXML.
    pub plus: Option<PlusOptions>,
}

impl Default for ModelOverrides {
    fn default() -> Self {
        ModelOverrides {
            embed_dim: 300,
            dropout_ext: None,
            plus: None,
        }
    }
}

/// Where InceptionXML+'s label clusters come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterSource {
    /// SPEC §5's default count (L/10 as a power of two), clustered from the training data.
    Default,
    /// This many clusters (a power of two), clustered from the training data (PIFA on TF-IDF,
    /// balanced 2-means, SPEC §6).
    Count(usize),
    /// A label -> cluster file written by `inceptionxml cluster`.
    File(std::path::PathBuf),
}

impl ClusterSource {
    /// A number of clusters, or else a file path; None is the default count.
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            None => ClusterSource::Default,
            Some(s) => match s.parse::<usize>() {
                Ok(n) => ClusterSource::Count(n),
                Err(_) => ClusterSource::File(s.into()),
            },
        }
    }
}

/// InceptionXML+ choices (None: SPEC §5 defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PlusOptions {
    pub clusters: ClusterSource,
    pub top_k: Option<usize>,
    pub hidden_dim: Option<usize>,
    pub dropout_meta: Option<f32>,
}

impl PlusOptions {
    /// The heads' configuration for `n_clusters` clusters of `n_labels` labels and encoder
    /// features of width `feature_dim`: these choices over SPEC §5's defaults, K capped at C.
    pub fn config(&self, n_clusters: usize, n_labels: usize, feature_dim: usize) -> PlusConfig {
        let defaults = PlusConfig::for_labels(n_labels, feature_dim);
        PlusConfig {
            n_clusters,
            hidden_dim: self.hidden_dim.unwrap_or(defaults.hidden_dim),
            top_k: self
                .top_k
                .unwrap_or_else(|| shortlist::default_top_k(n_clusters))
                .min(n_clusters),
            dropout_meta: self.dropout_meta.unwrap_or(defaults.dropout_meta),
            score: ScoreMode::Extreme,
        }
    }
}

impl Default for PlusOptions {
    fn default() -> Self {
        PlusOptions {
            clusters: ClusterSource::Default,
            top_k: None,
            hidden_dim: None,
            dropout_meta: None,
        }
    }
}

/// What to train and where.
pub struct TrainJob<'a> {
    pub data: &'a XcDataset,
    /// The model directory (created if missing).
    pub out: &'a Path,
    /// Ignored with `resume` (the checkpoint's own configuration continues).
    pub config: TrainConfig,
    /// Ignored with `resume`.
    pub model: ModelOverrides,
    pub resume: bool,
    /// Stop after this many epochs of this session, as if interrupted (the checkpoint can be
    /// resumed); None runs to the end.
    pub stop_after: Option<usize>,
    /// Show a progress bar and a line per epoch on standard error.
    pub progress: bool,
    /// Where the model trains (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
}

/// One evaluation of the test split.
#[derive(Debug, Clone)]
pub struct EvalRecord {
    pub epoch: usize,
    pub metrics: Metrics,
    /// InceptionXML+ only.
    pub plus: Option<PlusEval>,
}

/// Rewrites `config.json` of `dir` with `score` as InceptionXML+'s default ranking.
fn set_default_score(dir: &Path, score: ScoreMode) -> Result<()> {
    let mut dc = checkpoint::read_config(dir)?;
    if let Some(p) = dc.model.plus.as_mut() {
        p.score = score;
    }
    checkpoint::write_json(&dir.join(checkpoint::CONFIG), &dc)
}

/// The label clustering of a fresh InceptionXML+ run.
pub fn label_clusters(
    source: &ClusterSource,
    tokens: &[Vec<String>],
    labels: &SparseMatrix,
    seed: u64,
    progress: bool,
) -> Result<xmc::cluster::Clustering> {
    use xmc::cluster::{cluster_labels, ClusterParams, Clustering, Stop};
    let n = match source {
        ClusterSource::File(path) => {
            let c = Clustering::read(path)?;
            c.check_labels(labels.n_cols, path)?;
            return Ok(c);
        }
        ClusterSource::Count(n) => *n,
        ClusterSource::Default => shortlist::default_clusters(labels.n_cols),
    };
    let t0 = Instant::now();
    let (_, features) = xmc::pifa::pifa_from_tokens(
        tokens,
        labels,
        xmc::tfidf::TfIdfParams::default(),
        xmc::pifa::DEFAULT_TOP_N,
    )?;
    let params = ClusterParams {
        stop: Stop::Clusters(n),
        seed,
        ..Default::default()
    };
    let c = cluster_labels(&features, &params)?;
    if progress {
        eprintln!(
            "clustered {} labels into {} clusters in {:.1}s",
            labels.n_cols,
            c.n_clusters,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(c)
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub epochs_done: usize,
    pub steps: u64,
    /// Training time (all sessions of a resumed run), seconds.
    pub train_s: f64,
    /// Training throughput of this session.
    pub samples_per_s: f64,
    pub last_eval: Option<EvalRecord>,
    pub vocab_size: usize,
    pub n_train: usize,
    /// How many vocabulary words got a pre-trained vector (fresh runs only).
    pub coverage: Option<String>,
}

/// Ranks `ids` (N×S) and scores the top-k against `labels`.
pub fn evaluate_ids(
    model: &InceptionXml,
    ids: &[u32],
    labels: &SparseMatrix,
    inv_prop: &[f32],
    k: usize,
    batch_size: usize,
) -> Result<Metrics> {
    let rows = predict_ids(model, ids, k, batch_size, None)?;
    let pred = SparseMatrix::from_rows(labels.n_cols, rows)?;
    Ok(xmc::metrics::evaluate(labels, &pred, Some(inv_prop), k)?)
}

/// What an InceptionXML+ evaluation measures besides the label metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlusEval {
    /// The ranking the metrics were computed with.
    pub score: ScoreMode,
    /// Share of rows whose best meta cluster holds one of their positives.
    pub meta_p1: f64,
    /// Share of all test positives whose cluster is among the row's top-K clusters.
    pub shortlist_recall: f64,
    /// K.
    pub top_k: usize,
}

/// [`evaluate_ids`] for an InceptionXML+ model, with meta precision and shortlist recall.
pub fn evaluate_plus_ids(
    model: &InceptionXml,
    ids: &[u32],
    labels: &SparseMatrix,
    inv_prop: &[f32],
    k: usize,
    batch_size: usize,
    score: ScoreMode,
) -> Result<(Metrics, PlusEval)> {
    let index = model
        .clusters()
        .ok_or_else(|| Error::InvalidParam("InceptionXML+ model without clusters".into()))?;
    let top_k = model.config().plus.as_ref().map_or(0, |p| p.top_k);
    let out = predict_plus_ids(model, ids, k, batch_size, score, None)?;
    let positives: Vec<&[u32]> = (0..labels.n_rows).map(|r| labels.row_indices(r)).collect();
    let meta_hits = out
        .clusters
        .iter()
        .zip(&positives)
        .filter(|(cs, pos)| {
            cs.first()
                .is_some_and(|&best| pos.iter().any(|&l| index.assign[l as usize] == best))
        })
        .count();
    let (hits, total) = shortlist::recall(&out.clusters, &positives, index);
    let pred = SparseMatrix::from_rows(labels.n_cols, out.rows)?;
    let m = xmc::metrics::evaluate(labels, &pred, Some(inv_prop), k)?;
    let extra = PlusEval {
        score,
        meta_p1: meta_hits as f64 / labels.n_rows.max(1) as f64,
        shortlist_recall: hits as f64 / total.max(1) as f64,
        top_k,
    };
    Ok((m, extra))
}

/// One optimiser step on `batch`; returns the batch loss.
pub fn train_step(
    model: &InceptionXml,
    adam: &mut Adam,
    rows: &mut RowAdam,
    batch: &Batch,
    lr: f64,
    beta1: f64,
) -> Result<f32> {
    let x = model.embed(&batch.ids)?;
    let x = Var::from_tensor(&x)?;
    let h = model.encode(x.as_tensor(), true)?;
    let logits = model.head(&h, true)?;
    let loss = bce_with_logits(&logits, &batch.targets)?;
    let grads = loss.backward()?;
    adam.step(&grads, lr, beta1)?;
    step_word_rows(model, rows, batch, &grads, x.as_tensor(), lr, beta1)?;
    Ok(loss.to_scalar::<f32>()?)
}

/// The optimiser state of a run: dense Adam, lazy row Adam for the word table and, for
/// InceptionXML+, lazy row Adam for the label table.
pub struct Optimizers {
    pub adam: Adam,
    pub words: RowAdam,
    pub labels: Option<RowAdam>,
}

impl Optimizers {
    pub fn new(model: &InceptionXml, consts: AdamConsts) -> Result<Self> {
        let c = model.config();
        let dev = model.embedding_table().device();
        let labels = match &c.plus {
            Some(p) => {
                Some(RowAdam::named("extreme", None, c.n_labels, p.hidden_dim, consts).on(dev)?)
            }
            None => None,
        };
        Ok(Optimizers {
            adam: Adam::new(dense_vars(model), consts)?,
            words: RowAdam::new(c.vocab_size, c.embed_dim, consts).on(dev)?,
            labels,
        })
    }

    /// The row-Adam states, word table first.
    pub fn tables(&self) -> Vec<&RowAdam> {
        std::iter::once(&self.words).chain(&self.labels).collect()
    }

    /// The same, mutable, with the dense Adam beside them (for loading a checkpoint).
    pub fn parts_mut(&mut self) -> (&mut Adam, Vec<&mut RowAdam>) {
        let tables = std::iter::once(&mut self.words)
            .chain(self.labels.as_mut())
            .collect();
        (&mut self.adam, tables)
    }
}

/// What one InceptionXML+ step did besides its loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlusStep {
    pub meta_loss: f32,
    pub extreme_loss: f32,
    /// Real (unpadded) candidates over the batch.
    pub candidates: usize,
    /// Label-table rows updated.
    pub touched_rows: usize,
}

/// One optimiser step of InceptionXML+ on `batch` (whose targets are cluster targets):
/// meta BCE over all C clusters + masked BCE over each row's shortlisted candidates. With
/// `detach`, the encoder output is detached before the extreme head (the encoder learns from the
/// meta task only; the extreme head and the label table still train). Returns the loss.
pub fn train_step_plus(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
    detach: bool,
) -> Result<(f32, PlusStep)> {
    let (plus, index) = match (model.plus(), model.clusters()) {
        (Some(p), Some(ix)) => (p, ix.clone()),
        _ => {
            return Err(Error::InvalidParam(
                "train_step_plus needs an InceptionXML+ model with clusters".into(),
            ))
        }
    };
    let table_opt = opt
        .labels
        .as_mut()
        .ok_or_else(|| Error::InvalidParam("no label-table optimiser".into()))?;
    let x = model.embed(&batch.ids)?;
    let x = Var::from_tensor(&x)?;
    let h = model.encode(x.as_tensor(), true)?;
    let meta = plus.meta_logits(&h, true)?;
    let meta_loss = bce_with_logits(&meta, &batch.targets)?;
    let scores: Vec<f32> = {
        let mut v: Vec<f32> = meta.detach().flatten_all()?.to_vec1()?;
        v.par_iter_mut().for_each(|s| *s = stable_sigmoid(*s));
        v
    };
    let pos: Vec<&[u32]> = batch.positives.iter().map(Vec::as_slice).collect();
    let sl = shortlist::build(&scores, &index, plus.config().top_k, Some(&pos))?;
    let plan = std::sync::Arc::new(CandidatePlan::new(&sl, &index)?);
    let hin = if detach { h.detach() } else { h.clone() };
    let g = plus.extreme_features(&hin, true)?;
    let (logits, table_grad) = candidate_logits(&g, plus.table.as_tensor(), plan.clone())?;
    let dev = logits.device().clone();
    let shape = (sl.rows, sl.width);
    let y = Tensor::from_vec(sl.targets, shape, &dev)?;
    let m = Tensor::from_vec(sl.mask, shape, &dev)?;
    let ext_loss = bce_with_logits_masked(&logits, &y, &m)?;
    let loss = (&meta_loss + &ext_loss)?;
    let grads = loss.backward()?;
    opt.adam.step(&grads, lr, beta1)?;
    let touched = match table_grad.take() {
        Some((rows, g)) => {
            table_opt.step_rows(&plus.table, &rows, &g, lr, beta1)?;
            rows.len()
        }
        None => {
            table_opt.step(&plus.table, &[], &[], lr, beta1)?;
            0
        }
    };
    step_word_rows(
        model,
        &mut opt.words,
        batch,
        &grads,
        x.as_tensor(),
        lr,
        beta1,
    )?;
    let stats = PlusStep {
        meta_loss: meta_loss.to_scalar()?,
        extreme_loss: ext_loss.to_scalar()?,
        candidates: plan.n_candidates(),
        touched_rows: touched,
    };
    Ok((loss.to_scalar::<f32>()?, stats))
}

/// Lazy Adam on the word-table rows the batch looked up, from ∂loss/∂x.
fn step_word_rows(
    model: &InceptionXml,
    rows: &mut RowAdam,
    batch: &Batch,
    grads: &candle_core::backprop::GradStore,
    x: &Tensor,
    lr: f64,
    beta1: f64,
) -> Result<()> {
    let table = model.embedding_table();
    match grads.get(x) {
        Some(gx) => {
            // Grouped on the host from the batch's ids, summed where the gradient lives.
            let groups = RowGroups::new(&batch.ids_host);
            let g = groups.sum(gx)?;
            rows.step_rows(table, &groups.ids, &g, lr, beta1)
        }
        None => rows.step(table, &[], &[], lr, beta1),
    }
}

/// The model's dense variables, never including the word table (it has its own optimiser).
pub fn dense_vars(model: &InceptionXml) -> Vec<(String, Var)> {
    let table = model.embedding_table().as_tensor().id();
    model
        .trainable_vars()
        .into_iter()
        .filter(|(_, v)| v.as_tensor().id() != table)
        .collect()
}

fn progress_bar(show: bool, len: u64, prefix: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(prefix);
    pb
}

/// Trains (or resumes) a model into `job.out`.
pub fn train(job: &TrainJob) -> Result<TrainSummary> {
    let out = job.out;
    std::fs::create_dir_all(out).map_err(|e| Error::Xmc(xmc::Error::io(out, e)))?;
    let data = job.data;

    // Configuration, vocabulary, label clusters and where to start.
    let (cfg, mcfg, vocab, state, index) = if job.resume {
        let dc = checkpoint::read_config(out)?;
        let vpath = out.join(checkpoint::VOCAB);
        let vocab = Vocab::load(&vpath)?;
        if vocab.len() != dc.model.vocab_size {
            return Err(Error::Model {
                path: vpath.display().to_string(),
                msg: format!(
                    "{} words, config.json says {}",
                    vocab.len(),
                    dc.model.vocab_size
                ),
            });
        }
        if dc.model.n_labels != data.n_labels {
            return Err(Error::Model {
                path: out.join(checkpoint::CONFIG).display().to_string(),
                msg: format!(
                    "trained for {} labels, the data has {}",
                    dc.model.n_labels, data.n_labels
                ),
            });
        }
        let index = match dc.model.plus {
            Some(_) => Some(checkpoint::read_clusters(out, &dc.model)?),
            None => None,
        };
        let state = checkpoint::read_state(out)?;
        (dc.train, dc.model, vocab, Some(state), index)
    } else {
        job.config.validate()?;
        let cfg = job.config.clone();
        let n = cfg
            .max_train
            .map_or(data.train.texts.len(), |m| m.min(data.train.texts.len()));
        let tokens = xmc::text::tokenize_all(&data.train.texts[..n]);
        let vocab = Vocab::build(&tokens, cfg.max_vocab, cfg.min_count);
        let mut mcfg = ModelConfig::new(vocab.len(), data.n_labels);
        mcfg.embed_dim = job.model.embed_dim;
        if let Some(p) = job.model.dropout_ext {
            mcfg.dropout_ext = p;
        }
        let index = match &job.model.plus {
            Some(po) => {
                let labels = if n == data.train.labels.n_rows {
                    data.train.labels.clone()
                } else {
                    data.train.labels.select_rows(&(0..n).collect::<Vec<_>>())
                };
                let c = label_clusters(&po.clusters, &tokens, &labels, cfg.seed, job.progress)?;
                mcfg.plus = Some(po.config(c.n_clusters, data.n_labels, mcfg.feature_dim()));
                Some(std::sync::Arc::new(ClusterIndex::new(
                    c.assign,
                    c.n_clusters,
                )?))
            }
            None => None,
        };
        mcfg.validate()?;
        (cfg, mcfg, vocab, None, index)
    };

    // Data.
    let n_train = cfg
        .max_train
        .map_or(data.train.texts.len(), |m| m.min(data.train.texts.len()));
    if n_train == 0 {
        return Err(Error::InvalidParam("no training rows".into()));
    }
    let seq_len = mcfg.seq_len;
    let train_ids = Arc::new(vocab.encode_all(&data.train.texts[..n_train], seq_len));
    let train_labels = Arc::new(if n_train == data.train.labels.n_rows {
        data.train.labels.clone()
    } else {
        data.train
            .labels
            .select_rows(&(0..n_train).collect::<Vec<_>>())
    });
    let inv_prop = inverse_propensity(&data.train.labels, Propensity::default())?;
    let test = data
        .test
        .as_ref()
        .map(|t| (vocab.encode_all(&t.texts, seq_len), &t.labels));

    // Model and optimisers.
    let device = job.device.clone();
    let varmap = VarMap::new();
    let mut model = InceptionXml::new(&mcfg, &varmap, &device, cfg.seed)?;
    if let Some(ix) = &index {
        model.set_clusters(ix.clone())?;
    }
    let consts = AdamConsts {
        beta2: cfg.beta2,
        eps: cfg.eps,
    };
    let mut opt = Optimizers::new(&model, consts)?;
    let mut coverage = None;
    match &state {
        Some(st) => {
            checkpoint::load_weights(out, &model, &varmap)?;
            let (adam, mut tables) = opt.parts_mut();
            checkpoint::load_optimizer(out, adam, &mut tables, st.step)?;
        }
        None => {
            let vectors = match &cfg.embeddings {
                Some(p) => Some(xmc::embeddings::WordVectors::load(p)?),
                None => None,
            };
            let (table, cov) =
                xmc::embeddings::init_table(&vocab, mcfg.embed_dim, vectors.as_ref(), cfg.seed)?;
            model.set_embeddings(&table)?;
            coverage = Some(cov.to_string());
            vocab.save(out.join(checkpoint::VOCAB))?;
            if let Some(ix) = &index {
                checkpoint::save_clusters(out, ix)?;
            }
            checkpoint::write_json(
                &out.join(checkpoint::CONFIG),
                &ModelDirConfig {
                    format: checkpoint::FORMAT.to_string(),
                    model: mcfg.clone(),
                    train: cfg.clone(),
                },
            )?;
            let stale = out.join(checkpoint::METRICS);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| Error::Xmc(xmc::Error::io(&stale, e)))?;
            }
        }
    }

    // Schedule.
    let spe = steps_per_epoch(n_train, cfg.batch_size);
    let total = (spe * cfg.epochs) as u64;
    if let Some(st) = &state {
        if st.steps_per_epoch != spe || st.total_steps != total || st.n_train != n_train {
            return Err(Error::Model {
                path: out.join(checkpoint::STATE).display().to_string(),
                msg: format!(
                    "checkpoint has {} steps/epoch of {} total over {} rows; the data gives {spe} of {total} over {n_train}",
                    st.steps_per_epoch, st.total_steps, st.n_train
                ),
            });
        }
    }
    let sched = cfg.schedule(total);
    let mut step = state.as_ref().map_or(0, |s| s.step);
    let start_epoch = state.as_ref().map_or(0, |s| s.epochs_done);
    let mut train_s = state.as_ref().map_or(0.0, |s| s.elapsed_s);
    let mut last_eval = None;
    let (mut session_rows, mut session_s) = (0usize, 0f64);

    // InceptionXML+: the encoder is detached from the extreme head for the first epochs.
    let detach_epochs = if mcfg.plus.is_some() {
        (cfg.detach_fraction * cfg.epochs as f64).round() as usize
    } else {
        0
    };
    let end_epoch = job
        .stop_after
        .map_or(cfg.epochs, |n| cfg.epochs.min(start_epoch + n));
    for epoch in start_epoch..end_epoch {
        let pb = progress_bar(
            job.progress,
            spe as u64,
            format!("epoch {}/{}", epoch + 1, cfg.epochs),
        );
        let t0 = Instant::now();
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        let batches = Batches::new(
            train_ids.clone(),
            seq_len,
            train_labels.clone(),
            epoch_order(n_train, cfg.seed, epoch),
            cfg.batch_size,
            index.clone(),
            device.clone(),
        );
        let detach = epoch < detach_epochs;
        let (mut cand_sum, mut touched_sum, mut steps_here) = (0usize, 0usize, 0usize);
        for batch in batches {
            let batch = batch?;
            let (lr, beta1) = sched.at(step);
            let loss = if mcfg.plus.is_some() {
                let (loss, st) = train_step_plus(&model, &mut opt, &batch, lr, beta1, detach)?;
                cand_sum += st.candidates;
                touched_sum += st.touched_rows;
                loss
            } else {
                train_step(&model, &mut opt.adam, &mut opt.words, &batch, lr, beta1)?
            };
            steps_here += 1;
            if !loss.is_finite() {
                return Err(Error::InvalidParam(format!(
                    "loss diverged ({loss}) at step {step}; try a smaller --lr"
                )));
            }
            step += 1;
            loss_sum += loss as f64 * batch.len as f64;
            seen += batch.len;
            pb.inc(1);
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!(
                "loss {:.5}  {:.0} samples/s",
                loss_sum / seen as f64,
                seen as f64 / secs
            ));
        }
        pb.finish_and_clear();
        let epoch_s = t0.elapsed().as_secs_f64();
        train_s += epoch_s;
        session_rows += seen;
        session_s += epoch_s;
        let loss = loss_sum / seen.max(1) as f64;
        let samples_per_s = seen as f64 / epoch_s.max(1e-9);

        let last = epoch + 1 == cfg.epochs;
        let due = cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0;
        let mut plus_eval = None;
        let mut modes = serde_json::Map::new();
        let metrics = match &test {
            Some((ids, labels)) if due || last => {
                let (ek, eb) = (cfg.eval_k, cfg.eval_batch_size);
                let m = match &mcfg.plus {
                    None => evaluate_ids(&model, ids, labels, &inv_prop, ek, eb)?,
                    Some(p) => {
                        let (m, extra) =
                            evaluate_plus_ids(&model, ids, labels, &inv_prop, ek, eb, p.score)?;
                        modes.insert(p.score.to_string(), serde_json::json!(m.p[0] * 100.0));
                        plus_eval = Some(extra);
                        if last {
                            // Keep as the default ranking whichever is better on this split.
                            let other = match p.score {
                                ScoreMode::Extreme => ScoreMode::Combined,
                                ScoreMode::Combined => ScoreMode::Extreme,
                            };
                            let (m2, _) =
                                evaluate_plus_ids(&model, ids, labels, &inv_prop, ek, eb, other)?;
                            modes.insert(other.to_string(), serde_json::json!(m2.p[0] * 100.0));
                            if m2.p[0] > m.p[0] {
                                set_default_score(out, other)?;
                            }
                        }
                        m
                    }
                };
                last_eval = Some(EvalRecord {
                    epoch: epoch + 1,
                    metrics: m.clone(),
                    plus: plus_eval.clone(),
                });
                Some(m)
            }
            _ => None,
        };
        let mut line = serde_json::json!({
            "epoch": epoch + 1,
            "step": step,
            "loss": loss,
            "lr": sched.at(step.saturating_sub(1)).0,
            "samples_per_s": samples_per_s,
            "elapsed": train_s,
            "metrics": metrics.as_ref(),
        });
        if mcfg.plus.is_some() {
            line["detached"] = serde_json::json!(detach);
            line["candidates_per_row"] = serde_json::json!(cand_sum as f64 / seen.max(1) as f64);
            line["table_rows_per_step"] =
                serde_json::json!(touched_sum as f64 / steps_here.max(1) as f64);
            if let Some(e) = &plus_eval {
                // ×100, like the metrics.
                line["meta_p1"] = serde_json::json!(e.meta_p1 * 100.0);
                line["shortlist_recall"] = serde_json::json!(e.shortlist_recall * 100.0);
                line["top_k"] = serde_json::json!(e.top_k);
                line["score"] = serde_json::json!(e.score);
                line["p1_by_score"] = serde_json::Value::Object(modes.clone());
            }
        }
        checkpoint::append_metrics_line(out, &line)?;
        checkpoint::save_weights(out, &model, &varmap)?;
        checkpoint::save_optimizer(out, &opt.adam, &opt.tables())?;
        checkpoint::write_json(
            &out.join(checkpoint::STATE),
            &TrainerState {
                epochs_done: epoch + 1,
                step,
                total_steps: total,
                steps_per_epoch: spe,
                n_train,
                elapsed_s: train_s,
            },
        )?;
        if job.progress {
            let mut msg = format!(
                "epoch {}/{}  loss {loss:.5}  {samples_per_s:.0} samples/s  {epoch_s:.1}s",
                epoch + 1,
                cfg.epochs
            );
            if let Some(m) = &metrics {
                msg.push_str(&format!(
                    "  P@1 {:.2}  P@5 {:.2}  PSP@1 {:.2}",
                    m.p[0] * 100.0,
                    m.p.last().copied().unwrap_or(0.0) * 100.0,
                    m.psp[0] * 100.0
                ));
            }
            if let Some(e) = &plus_eval {
                msg.push_str(&format!(
                    "  meta P@1 {:.2}  recall@{} {:.2}",
                    e.meta_p1 * 100.0,
                    e.top_k,
                    e.shortlist_recall * 100.0
                ));
            }
            if detach {
                msg.push_str("  (encoder detached from the extreme head)");
            }
            eprintln!("{msg}");
        }
    }

    Ok(TrainSummary {
        epochs_done: end_epoch.max(start_epoch),
        steps: step,
        train_s,
        samples_per_s: session_rows as f64 / session_s.max(1e-9),
        last_eval,
        vocab_size: vocab.len(),
        n_train,
        coverage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batches::make_batch;
    use std::sync::Arc;

    /// One InceptionXML+ step moves exactly the label-table rows of the shortlisted clusters.
    #[test]
    fn a_plus_step_updates_only_candidate_rows() {
        let mut cfg = ModelConfig::new(40, 12);
        cfg.embed_dim = 64;
        cfg.plus = Some(PlusConfig {
            n_clusters: 4,
            hidden_dim: cfg.feature_dim(),
            top_k: 1,
            dropout_meta: 0.3,
            score: ScoreMode::Extreme,
        });
        let varmap = VarMap::new();
        let mut model = InceptionXml::new(&cfg, &varmap, &Device::Cpu, 3).unwrap();
        // Labels l -> cluster l % 4; in cluster order the table rows of cluster c are 3c..3c+3.
        let assign: Vec<u32> = (0..12).map(|l| l % 4).collect();
        let index = Arc::new(ClusterIndex::new(assign, 4).unwrap());
        model.set_clusters(index.clone()).unwrap();
        let mut opt = Optimizers::new(&model, AdamConsts::default()).unwrap();
        // Two rows, positives in clusters 1 and 2: with K = 1 the forced clusters are exactly those.
        let labels = SparseMatrix::from_index_rows(12, &[vec![5], vec![6]]).unwrap();
        let ids: Vec<u32> = (0..64).map(|i| 1 + i % 38).collect();
        let batch = make_batch(&ids, 32, &labels, &[0, 1], Some(&index), &Device::Cpu).unwrap();
        let before: Vec<f32> = model
            .plus()
            .unwrap()
            .table
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (loss, st) = train_step_plus(&model, &mut opt, &batch, 1e-2, 0.9, false).unwrap();
        assert!(loss.is_finite());
        assert_eq!(st.candidates, 6);
        assert_eq!(st.touched_rows, 6);
        let after: Vec<f32> = model
            .plus()
            .unwrap()
            .table
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let hd = cfg.feature_dim();
        for row in 0..12 {
            let (a, b) = (
                &before[row * hd..(row + 1) * hd],
                &after[row * hd..(row + 1) * hd],
            );
            let cluster = row / 3;
            if cluster == 1 || cluster == 2 {
                assert_ne!(a, b, "candidate row {row} did not move");
            } else {
                assert_eq!(a, b, "row {row} of an unlisted cluster moved");
            }
        }
    }
}

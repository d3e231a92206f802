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

use candle_core::{Device, Var};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xmc::dataset::XcDataset;
use xmc::metrics::{inverse_propensity, Metrics, Propensity};
use xmc::vocab::Vocab;
use xmc::SparseMatrix;

use super::batches::{epoch_order, steps_per_epoch, Batch, Batches};
use super::checkpoint::{self, ModelDirConfig, TrainerState};
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{InceptionXml, ModelConfig};
use crate::ops::{bce_with_logits, scatter_rows, Adam, AdamConsts, RowAdam};
use crate::predict::predict_ids;

/// Model hyper-parameters chosen at training time (the rest are SPEC defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOverrides {
    /// Word-embedding dimension d (300).
    pub embed_dim: usize,
    /// Dropout before the L-way classifier (None: the SPEC default).
    pub dropout_ext: Option<f32>,
}

impl Default for ModelOverrides {
    fn default() -> Self {
        ModelOverrides {
            embed_dim: 300,
            dropout_ext: None,
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
}

/// One evaluation of the test split.
#[derive(Debug, Clone)]
pub struct EvalRecord {
    pub epoch: usize,
    pub metrics: Metrics,
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
    let rows = predict_ids(model, ids, k, batch_size)?;
    let pred = SparseMatrix::from_rows(labels.n_cols, rows)?;
    Ok(xmc::metrics::evaluate(labels, &pred, Some(inv_prop), k)?)
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
    let table = model.embedding_table();
    match grads.get(x.as_tensor()) {
        Some(gx) => {
            let gx: Vec<f32> = gx.flatten_all()?.to_vec1()?;
            let (ids, g) = scatter_rows(&batch.ids_host, &gx, model.config().embed_dim)?;
            rows.step(table, &ids, &g, lr, beta1)?;
        }
        None => rows.step(table, &[], &[], lr, beta1)?,
    }
    Ok(loss.to_scalar::<f32>()?)
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

    // Configuration, vocabulary and where to start.
    let (cfg, mcfg, vocab, state) = if job.resume {
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
        let state = checkpoint::read_state(out)?;
        (dc.train, dc.model, vocab, Some(state))
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
        mcfg.validate()?;
        (cfg, mcfg, vocab, None)
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
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = InceptionXml::new(&mcfg, &varmap, &device, cfg.seed)?;
    let consts = AdamConsts {
        beta2: cfg.beta2,
        eps: cfg.eps,
    };
    let mut adam = Adam::new(dense_vars(&model), consts)?;
    let mut rows = RowAdam::new(mcfg.vocab_size, mcfg.embed_dim, consts);
    let mut coverage = None;
    match &state {
        Some(st) => {
            checkpoint::load_weights(out, &model, &varmap)?;
            checkpoint::load_optimizer(out, &mut adam, &mut rows, st.step)?;
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
            device.clone(),
        );
        for batch in batches {
            let batch = batch?;
            let (lr, beta1) = sched.at(step);
            let loss = train_step(&model, &mut adam, &mut rows, &batch, lr, beta1)?;
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
        let metrics = match &test {
            Some((ids, labels)) if due || last => {
                let m = evaluate_ids(
                    &model,
                    ids,
                    labels,
                    &inv_prop,
                    cfg.eval_k,
                    cfg.eval_batch_size,
                )?;
                last_eval = Some(EvalRecord {
                    epoch: epoch + 1,
                    metrics: m.clone(),
                });
                Some(m)
            }
            _ => None,
        };
        let line = serde_json::json!({
            "epoch": epoch + 1,
            "step": step,
            "loss": loss,
            "lr": sched.at(step.saturating_sub(1)).0,
            "samples_per_s": samples_per_s,
            "elapsed": train_s,
            "metrics": metrics.as_ref(),
        });
        checkpoint::append_metrics_line(out, &line)?;
        checkpoint::save_weights(out, &model, &varmap)?;
        checkpoint::save_optimizer(out, &adam, &rows)?;
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

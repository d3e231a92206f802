//! Training: [`train()`] runs a whole job (fresh or resumed) and reads as its table of contents;
//! [`crate::train()`] (the facade) resolves the user's options and calls it.
//!
//! | file | job |
//! |---|---|
//! | [`setup`] | configuration, vocabulary, clusters, encoded data, model, optimisers (shared with `bench train`) |
//! | [`batches`] | seeded shuffles and batches built one ahead on a background thread |
//! | [`step`] | one optimiser step of InceptionXML or InceptionXML+: orchestration of the model's and the optimisers' passes |
//! | [`evaluate`] | metrics on the validation and test splits through the prediction code |
//! | [`report`] | progress events and the `metrics.jsonl` line |
//!
//! Checkpoints go through [`crate::model_dir`]: each epoch appends to `metrics.jsonl` and saves
//! weights, optimiser state and `trainer_state.json` (last), which `--resume` continues from.

pub mod batches;
pub mod evaluate;
pub mod report;
pub mod setup;
pub mod sparse;
pub mod step;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Device;
use serde_json::{json, Map};
use xmc::dataset::XcDataset;
use xmc::metrics::{inverse_propensity, Metrics, Propensity};

pub use evaluate::{EvalSet, PlusEval};
pub use report::{EpochReport, PlusReport, TrainEvent};
pub use setup::{optimizers_for, Setup, VALID_SEED};
pub use sparse::{train_sparse, SparseSummary};
pub use step::{train_step, StepStats};

use crate::config::{ModelParams, ScoreMode, TrainConfig};
use crate::error::{Error, Result};
use crate::model_dir::{self, TrainerState};
use crate::optim::OneCycle;
use batches::{epoch_order, steps_per_epoch, Batches};

/// A batch's mean BCE above this means the run has diverged (a fresh model starts near ln 2 ≈
/// 0.69; a mean of 100 needs logits about 100 on the wrong side for every entry).
pub const MAX_LOSS: f32 = 100.0;

/// What to train and where.
pub struct TrainJob<'a> {
    pub data: &'a XcDataset,
    /// The model directory (created if missing, once the run's parameters have been checked).
    pub out: &'a Path,
    /// Ignored with `resume` (the checkpoint's own configuration continues).
    pub config: TrainConfig,
    /// Ignored with `resume`.
    pub model: ModelParams,
    pub resume: bool,
    /// Replace a model already in `out` (without it, a fresh run refuses an existing model).
    pub force: bool,
    /// Stop after this many epochs of this session, as if interrupted (the checkpoint can be
    /// resumed); None runs to the end.
    pub stop_after: Option<usize>,
    /// Where the model trains (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
    /// Set (by another thread, a signal handler, the Python package's Ctrl-C check) to stop
    /// the run after its current step with [`Error::Interrupted`]: the epoch under way is
    /// dropped, the last saved checkpoint stays as it was.
    pub stop: Option<&'a AtomicBool>,
}

/// Whether `stop` asks the run to end.
fn stopped(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::Relaxed))
}

/// One evaluation of the test split.
#[derive(Debug, Clone)]
pub struct EvalRecord {
    pub epoch: usize,
    pub metrics: Metrics,
    /// InceptionXML+ only.
    pub plus: Option<PlusEval>,
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
    /// The last evaluation of the validation split (rows held out of training).
    pub last_valid: Option<EvalRecord>,
    /// Rows held out of the training split for validation.
    pub n_valid: usize,
    pub vocab_size: usize,
    pub n_train: usize,
    /// How many vocabulary words got a pre-trained vector (fresh runs only).
    pub coverage: Option<String>,
    /// The sparse model trained beside the network (or alone), when there is one.
    pub sparse: Option<SparseSummary>,
}

/// Trains (or resumes) a model into `job.out`, reporting progress through `on_event`.
pub fn train(job: &TrainJob, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainSummary> {
    let out = job.out;
    if !job.resume && !job.force && out.join(model_dir::CONFIG).exists() {
        return Err(Error::Model {
            path: out.display().to_string(),
            msg: "already holds a model: --resume continues it, --force replaces it".into(),
        });
    }
    // A fresh run is built in a staging folder beside `out` and moved into place after its
    // first checkpoint: until then `out` keeps whatever model it held, complete.
    let mut staging = None;
    let mut s = if job.resume {
        Setup::resume(job.data, out, &job.device)?
    } else {
        // Everything is checked and built before anything is written.
        let s = Setup::fresh(
            job.data,
            job.config.clone(),
            &job.model,
            &job.device,
            on_event,
        )?;
        let stage = model_dir::staging_dir(out)?;
        start_model_dir(&stage, &s)?;
        staging = Some(stage);
        s
    };
    let work = |staging: &Option<std::path::PathBuf>| staging.clone().unwrap_or(out.to_path_buf());
    let inv_prop = inverse_propensity(&job.data.train.labels, Propensity::default())?;
    let test = job.data.test.as_ref().filter(|t| {
        let empty = t.is_empty();
        if empty {
            on_event(TrainEvent::Warning(
                "the test split is empty: no evaluation".into(),
            ));
        }
        !empty
    });
    let seq_len = s.config.model.seq_len;
    let eval_set = |texts: &[String], labels| EvalSet {
        ids: s.vocab.encode_all(texts, seq_len),
        subwords: s.model.subwords_of(texts),
        labels,
        inv_prop: &inv_prop,
        k: s.config.train.eval_k,
        batch_size: s.config.train.eval_batch_size,
    };
    let test = test.map(|t| eval_set(&t.texts, &t.labels));
    let valid_split = s.valid.take();
    let valid = valid_split.as_ref().map(|v| eval_set(&v.texts, &v.labels));
    let plan = Plan::new(&s, out)?;
    let cfg = s.config.train.clone();
    let mut step = s.state.as_ref().map_or(0, |st| st.step);
    let start_epoch = s.state.as_ref().map_or(0, |st| st.epochs_done);
    let mut train_s = s.state.as_ref().map_or(0.0, |st| st.elapsed_s);
    let (mut last_eval, mut last_valid) = (None, None);
    let (mut session_rows, mut session_s) = (0usize, 0f64);
    let end_epoch = job
        .stop_after
        .map_or(cfg.epochs, |n| cfg.epochs.min(start_epoch + n));
    for epoch in start_epoch..end_epoch {
        let e = run_epoch(&mut s, &plan, epoch, &mut step, job.stop, on_event)?;
        train_s += e.seconds;
        session_rows += e.rows;
        session_s += e.seconds;
        let last = epoch + 1 == cfg.epochs;
        let due = cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0;
        // The validation split (when held out; small) is scored every epoch, first: after the
        // last epoch it chooses InceptionXML+'s ranking, which the test split is then scored with.
        let (valid_metrics, valid_plus, valid_by_score) = match &valid {
            Some(v) => evaluate_epoch(&mut s, v, last, &work(&staging))?,
            None => (None, None, Map::new()),
        };
        let (metrics, plus_eval, test_by_score) = match &test {
            Some(t) if due || last => evaluate_epoch(&mut s, t, false, &work(&staging))?,
            _ => (None, None, Map::new()),
        };
        let by_score = if valid.is_some() {
            valid_by_score
        } else {
            test_by_score
        };
        let record = |m: &Option<Metrics>, plus: &Option<PlusEval>| {
            m.as_ref().map(|m| EvalRecord {
                epoch: epoch + 1,
                metrics: m.clone(),
                plus: plus.clone(),
            })
        };
        last_valid = record(&valid_metrics, &valid_plus).or(last_valid);
        last_eval = record(&metrics, &plus_eval).or(last_eval);
        let report = EpochReport {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            step,
            loss: e.loss_sum / e.rows.max(1) as f64,
            lr: plan.schedule.at(step.saturating_sub(1)).0,
            samples_per_s: e.rows as f64 / e.seconds.max(1e-9),
            seconds: e.seconds,
            elapsed: train_s,
            metrics,
            valid: valid_metrics,
            plus: s.config.model.plus.as_ref().map(|_| PlusReport {
                detached: e.detached,
                candidates_per_row: e.candidates as f64 / e.rows.max(1) as f64,
                table_rows_per_step: e.touched as f64 / e.steps.max(1) as f64,
                eval: plus_eval,
                by_score,
            }),
        };
        save_checkpoint(&work(&staging), &s, &report, &plan, train_s)?;
        if let Some(stage) = staging.take() {
            model_dir::promote(&stage, out)?;
        }
        on_event(TrainEvent::EpochEnd(&report));
    }
    if let Some(stage) = staging.take() {
        model_dir::promote(&stage, out)?;
    }
    Ok(TrainSummary {
        epochs_done: end_epoch.max(start_epoch),
        steps: step,
        train_s,
        samples_per_s: session_rows as f64 / session_s.max(1e-9),
        last_eval,
        last_valid,
        n_valid: valid_split.as_ref().map_or(0, |v| v.len()),
        vocab_size: s.vocab.len(),
        n_train: s.n_train,
        coverage: s.coverage.clone(),
        sparse: None,
    })
}

/// The schedule of a run: its length, and the epochs whose encoder output is detached.
struct Plan {
    steps_per_epoch: usize,
    total_steps: u64,
    schedule: OneCycle,
    /// InceptionXML+: epochs `0..detach_epochs` detach the encoder from the extreme head.
    detach_epochs: usize,
}

impl Plan {
    /// The plan of `s`; a resumed run must find the same one in its checkpoint.
    fn new(s: &Setup, dir: &Path) -> Result<Self> {
        let cfg = &s.config.train;
        let spe = steps_per_epoch(s.n_train, cfg.batch_size);
        let total = (spe * cfg.epochs) as u64;
        if let Some(st) = &s.state {
            // Checkpoints are saved at epoch ends: the step count is whole epochs of the
            // schedule, at most all of them.
            let at_epoch_end = (st.epochs_done as u64).checked_mul(st.steps_per_epoch as u64);
            if at_epoch_end != Some(st.step) || st.epochs_done > cfg.epochs {
                return Err(Error::Model {
                    path: dir.join(model_dir::STATE).display().to_string(),
                    msg: format!(
                        "step {} after {} of {} epochs of {} steps: step, epoch and schedule disagree",
                        st.step, st.epochs_done, cfg.epochs, st.steps_per_epoch
                    ),
                });
            }
            if st.steps_per_epoch != spe || st.total_steps != total || st.n_train != s.n_train {
                return Err(Error::Model {
                    path: dir.join(model_dir::STATE).display().to_string(),
                    msg: format!(
                        "checkpoint has {} steps/epoch of {} total over {} rows; the data gives {spe} of {total} over {}",
                        st.steps_per_epoch, st.total_steps, st.n_train, s.n_train
                    ),
                });
            }
        }
        let detach_epochs = match s.config.model.plus {
            Some(_) => (cfg.detach_fraction * cfg.epochs as f64).round() as usize,
            None => 0,
        };
        Ok(Plan {
            steps_per_epoch: spe,
            total_steps: total,
            schedule: OneCycle::for_run(cfg, total),
            detach_epochs,
        })
    }
}

/// What one epoch of steps did.
struct EpochSteps {
    loss_sum: f64,
    rows: usize,
    steps: usize,
    seconds: f64,
    candidates: usize,
    touched: usize,
    detached: bool,
}

/// Runs the optimiser steps of `epoch` (0-based) over the seeded order of the training rows.
fn run_epoch(
    s: &mut Setup,
    plan: &Plan,
    epoch: usize,
    step: &mut u64,
    stop: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<EpochSteps> {
    let cfg = &s.config.train;
    on_event(TrainEvent::EpochStart {
        epoch: epoch + 1,
        epochs: cfg.epochs,
        steps: plan.steps_per_epoch,
    });
    let t0 = Instant::now();
    let batches = Batches::new(
        (s.train_ids.clone(), s.train_subwords.clone()),
        s.config.model.seq_len,
        s.train_labels.clone(),
        epoch_order(s.n_train, cfg.seed, epoch),
        cfg.batch_size,
        s.index.clone(),
        s.model.embedding_table().device().clone(),
    );
    let detached = epoch < plan.detach_epochs;
    let mut e = EpochSteps {
        loss_sum: 0.0,
        rows: 0,
        steps: 0,
        seconds: 0.0,
        candidates: 0,
        touched: 0,
        detached,
    };
    for batch in batches {
        if stopped(stop) {
            return Err(Error::Interrupted);
        }
        let batch = batch?;
        let (lr, beta1) = plan.schedule.at(*step);
        let (loss, st) = train_step(&s.model, &mut s.opt, &batch, lr, beta1, detached)?;
        e.candidates += st.candidates;
        e.touched += st.touched_rows;
        e.steps += 1;
        if !loss.is_finite() || loss > MAX_LOSS {
            return Err(Error::Diverged { step: *step, loss });
        }
        *step += 1;
        e.loss_sum += loss as f64 * batch.len as f64;
        e.rows += batch.len;
        on_event(TrainEvent::Step {
            loss: e.loss_sum / e.rows as f64,
            samples_per_s: e.rows as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        });
    }
    // `Batches` reports a failed loader as an error; this guards the schedule itself: an epoch
    // of fewer steps than planned would be saved as complete.
    if e.steps != plan.steps_per_epoch {
        return Err(Error::BatchLoader(format!(
            "epoch {} ran {} of its {} steps",
            epoch + 1,
            e.steps,
            plan.steps_per_epoch
        )));
    }
    e.seconds = t0.elapsed().as_secs_f64();
    Ok(e)
}

type EpochEval = (
    Option<Metrics>,
    Option<PlusEval>,
    Map<String, serde_json::Value>,
);

/// Evaluates the model on `set` with the model's ranking. With `choose` (the validation split
/// after the last epoch of an InceptionXML+ run) both rankings are scored and the better one by
/// [`ranking_quality`] becomes the model's default (saved in `config.json`); the metrics
/// returned are those of the ranking the model is saved with.
fn evaluate_epoch(s: &mut Setup, test: &EvalSet, choose: bool, dir: &Path) -> Result<EpochEval> {
    let mut by_score = Map::new();
    let Some(score) = s.config.model.plus.as_ref().map(|p| p.score) else {
        let (m, _) = test.evaluate(&s.model, ScoreMode::Extreme)?;
        return Ok((Some(m), None, by_score));
    };
    let (m, extra) = test.evaluate(&s.model, score)?;
    by_score.insert(score.to_string(), top_precisions(&m));
    if choose {
        let other = match score {
            ScoreMode::Extreme => ScoreMode::Combined,
            ScoreMode::Combined => ScoreMode::Extreme,
        };
        let (m2, extra2) = test.evaluate(&s.model, other)?;
        by_score.insert(other.to_string(), top_precisions(&m2));
        if ranking_quality(&m2) > ranking_quality(&m) {
            if let Some(p) = s.config.model.plus.as_mut() {
                p.score = other;
            }
            model_dir::write_config(dir, &s.config)?;
            // Report the ranking the saved model will use.
            return Ok((Some(m2), extra2, by_score));
        }
    }
    Ok((Some(m), extra, by_score))
}

/// The precisions a ranking is chosen on, at 1, 3 and 5 (those within the evaluated k).
const CHOICE_KS: [usize; 3] = [1, 3, 5];

/// What InceptionXML+'s ranking is chosen on: the mean of P@1, P@3 and P@5, the top of the list
/// a user reads rather than its first entry only (on cooking after 16 epochs the combined
/// ranking is 1.0 P@1 ahead of the extreme one, and 2.0 / 1.6 behind at P@3 / P@5).
pub fn ranking_quality(m: &Metrics) -> f64 {
    let ps: Vec<f64> = CHOICE_KS
        .iter()
        .filter_map(|&k| m.p.get(k - 1).copied())
        .collect();
    ps.iter().sum::<f64>() / ps.len().max(1) as f64
}

/// `{"P@1": .., "P@3": .., "P@5": ..}` (×100) of `m`, for `metrics.jsonl`.
fn top_precisions(m: &Metrics) -> serde_json::Value {
    let mut o = Map::new();
    for k in CHOICE_KS {
        if let Some(p) = m.p.get(k - 1) {
            o.insert(format!("P@{k}"), json!(p * 100.0));
        }
    }
    serde_json::Value::Object(o)
}

/// The files a fresh run writes before its first step: vocabulary, labels, clusters, `config.json`;
/// the metrics of an earlier run in the same directory are removed.
fn start_model_dir(dir: &Path, s: &Setup) -> Result<()> {
    s.vocab.save(dir.join(model_dir::VOCAB))?;
    s.labels.write_tsv(dir.join(model_dir::LABELS))?;
    if let Some(ix) = &s.index {
        model_dir::save_clusters(dir, ix)?;
    }
    model_dir::write_config(dir, &s.config)?;
    let stale = dir.join(model_dir::METRICS);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| Error::Xmc(xmc::Error::io(&stale, e)))?;
    }
    Ok(())
}

/// The end-of-epoch checkpoint, saved as one unit ([`model_dir::save_checkpoint`]): the
/// `metrics.jsonl` line, weights, optimiser state and `trainer_state.json`.
fn save_checkpoint(
    dir: &Path,
    s: &Setup,
    report: &EpochReport,
    plan: &Plan,
    elapsed_s: f64,
) -> Result<()> {
    let state = TrainerState {
        epochs_done: report.epoch,
        step: report.step,
        total_steps: plan.total_steps,
        steps_per_epoch: plan.steps_per_epoch,
        n_train: s.n_train,
        elapsed_s,
        dropout_position: Some(s.model.dropout().position()?.to_string()),
        pending: Vec::new(),
    };
    model_dir::save_checkpoint(
        dir,
        (&s.model, &s.varmap),
        (&s.opt.adam, &s.opt.tables()),
        &report.json_line(),
        &state,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_p(p: &[f64]) -> Metrics {
        Metrics {
            k: p.len(),
            p: p.to_vec(),
            ndcg: p.to_vec(),
            psp: Vec::new(),
            psndcg: Vec::new(),
            recall: p.to_vec(),
        }
    }

    #[test]
    fn the_ranking_is_chosen_on_p1_p3_p5_together() {
        // Cooking after 16 epochs, validation (×0.01): combined leads at P@1 only.
        let combined = with_p(&[0.6742, 0.4895, 0.3683, 0.2996, 0.2542]);
        let extreme = with_p(&[0.6645, 0.4952, 0.3882, 0.3165, 0.2703]);
        assert!(combined.p[0] > extreme.p[0]);
        assert!(ranking_quality(&extreme) > ranking_quality(&combined));
        assert!((ranking_quality(&extreme) - (0.6645 + 0.3882 + 0.2703) / 3.0).abs() < 1e-12);
        // With k < 5 the precisions that exist.
        assert!((ranking_quality(&with_p(&[0.5, 0.4])) - 0.5).abs() < 1e-12);
        assert_eq!(
            top_precisions(&with_p(&[0.5, 0.4, 0.3])),
            json!({"P@1": 50.0, "P@3": 30.0})
        );
    }
}

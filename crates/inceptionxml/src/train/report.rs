//! What training tells the outside world: [`TrainEvent`]s for a progress display (the library
//! prints nothing itself) and one `metrics.jsonl` line per epoch.

use serde_json::{json, Map, Value};
use xmc::metrics::Metrics;

use super::evaluate::PlusEval;

/// Progress of a run, reported through the callback given to [`super::train`].
#[derive(Debug, Clone)]
pub enum TrainEvent<'a> {
    /// InceptionXML+: the labels were clustered.
    Clustered {
        labels: usize,
        clusters: usize,
        seconds: f64,
    },
    /// An epoch begins (`epoch` is 1-based).
    EpochStart {
        epoch: usize,
        epochs: usize,
        steps: usize,
    },
    /// A step ended: the epoch's mean loss and throughput so far.
    Step { loss: f64, samples_per_s: f64 },
    /// An epoch ended (after its evaluation and checkpoint).
    EpochEnd(&'a EpochReport),
    /// A fresh run chose its number of epochs by the rows it trains on
    /// ([`crate::config::Preset::epochs_for`]), no number having been given.
    DefaultEpochs { epochs: usize, rows: usize },
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// The sparse lexical model starts training on `rows` rows.
    SparseStart { rows: usize },
    /// Word vectors were trained on the training texts (`corpus_vectors`) in `seconds`.
    CorpusVectors {
        words: usize,
        tokens: u64,
        seconds: f64,
    },
}

/// One finished epoch.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Global optimiser steps done.
    pub step: u64,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub samples_per_s: f64,
    /// Wall time of the epoch's steps.
    pub seconds: f64,
    /// Training time of the whole run so far.
    pub elapsed: f64,
    /// Test metrics, when the epoch was evaluated.
    pub metrics: Option<Metrics>,
    /// Metrics of the validation split (rows held out of training), when there is one.
    pub valid: Option<Metrics>,
    /// InceptionXML+ only.
    pub plus: Option<PlusReport>,
}

/// What an InceptionXML+ epoch adds to its report.
#[derive(Debug, Clone)]
pub struct PlusReport {
    /// The encoder was detached from the extreme head.
    pub detached: bool,
    pub candidates_per_row: f64,
    pub table_rows_per_step: f64,
    /// Meta precision and shortlist recall, when evaluated.
    pub eval: Option<PlusEval>,
    /// P@1, P@3 and P@5 (×100) of each ranking evaluated on the split the ranking is chosen on
    /// (the validation split when there is one, else the test split, where it is not chosen):
    /// `{"extreme": {"P@1": ..}, ..}`.
    pub by_score: Map<String, Value>,
}

impl EpochReport {
    /// The epoch's `metrics.jsonl` line (metrics ×100).
    pub fn json_line(&self) -> Value {
        let mut line = json!({
            "epoch": self.epoch,
            "step": self.step,
            "loss": self.loss,
            "lr": self.lr,
            "samples_per_s": self.samples_per_s,
            "elapsed": self.elapsed,
            "metrics": self.metrics.as_ref(),
        });
        if let Some(v) = &self.valid {
            line["valid"] = json!(v);
        }
        if let Some(p) = &self.plus {
            line["detached"] = json!(p.detached);
            line["candidates_per_row"] = json!(p.candidates_per_row);
            line["table_rows_per_step"] = json!(p.table_rows_per_step);
            if let Some(e) = &p.eval {
                line["meta_p1"] = json!(e.meta_p1 * 100.0);
                line["shortlist_recall"] = json!(e.shortlist_recall * 100.0);
                line["top_k"] = json!(e.top_k);
                line["score"] = json!(e.score);
                // `p1_by_score` (P@1 only) is what lines written before `p_by_score` hold.
                let p1: Map<String, Value> = p
                    .by_score
                    .iter()
                    .map(|(k, v)| (k.clone(), v["P@1"].clone()))
                    .collect();
                line["p1_by_score"] = Value::Object(p1);
                line["p_by_score"] = Value::Object(p.by_score.clone());
            }
        }
        line
    }
}

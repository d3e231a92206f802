//! Training: mini-batches, the one-cycle schedule, the epoch loop, checkpoints, `metrics.jsonl`.

pub mod batches;
pub mod checkpoint;
#[path = "loop.rs"]
pub mod epoch_loop;
pub mod schedule;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use epoch_loop::{
    train, ClusterSource, EvalRecord, ModelOverrides, PlusEval, PlusOptions, TrainJob, TrainSummary,
};
pub use schedule::OneCycle;

/// Training hyper-parameters (SPEC §4 defaults), saved in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training data (42 for AmazonTitles-670K).
    pub epochs: usize,
    /// Rows per optimiser step (128).
    pub batch_size: usize,
    /// Peak learning rate of the one-cycle schedule (5e-3).
    pub lr_max: f64,
    /// Fraction of steps spent warming up (0.3).
    pub pct_start: f64,
    /// Start lr = lr_max / div_factor (10).
    pub div_factor: f64,
    /// End lr = start lr / final_div_factor (1e4).
    pub final_div_factor: f64,
    /// Adam β1 at the ends of the cycle (0.95) and at the peak (0.85).
    pub beta1_max: f64,
    pub beta1_min: f64,
    /// Adam β2 (0.999) and ε (1e-8).
    pub beta2: f64,
    pub eps: f64,
    /// Seed of the shuffles, the embedding initialisation and the model's initialisation.
    pub seed: u64,
    /// Evaluate on the test split every this many epochs (and after the last one); 0 = only
    /// after the last.
    pub eval_every: usize,
    /// Ranks reported: P@1..=eval_k etc. (5).
    pub eval_k: usize,
    /// Rows per evaluation batch.
    pub eval_batch_size: usize,
    /// Largest vocabulary (the most frequent training words; pad and unknown come on top).
    pub max_vocab: usize,
    /// Words seen fewer times in the training texts are unknown.
    pub min_count: usize,
    /// Train on the first N training rows only (quick runs and tests).
    pub max_train: Option<usize>,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    pub embeddings: Option<PathBuf>,
    /// InceptionXML+: share of the epochs (rounded) during which the encoder output is detached
    /// before the extreme head (0.25).
    pub detach_fraction: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 42,
            batch_size: 128,
            lr_max: 5e-3,
            pct_start: 0.3,
            div_factor: 10.0,
            final_div_factor: 1e4,
            beta1_max: 0.95,
            beta1_min: 0.85,
            beta2: 0.999,
            eps: 1e-8,
            seed: 0,
            eval_every: 1,
            eval_k: 5,
            eval_batch_size: 256,
            max_vocab: 200_000,
            min_count: 1,
            max_train: None,
            embeddings: None,
            detach_fraction: 0.25,
        }
    }
}

impl TrainConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidParam(m));
        if self.epochs == 0 {
            return bad("epochs must be > 0".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch_size {} < 2 (batch norm needs two rows)",
                self.batch_size
            ));
        }
        if !(self.lr_max > 0.0 && self.lr_max.is_finite()) {
            return bad(format!("lr_max {} must be positive", self.lr_max));
        }
        if !(self.pct_start > 0.0 && self.pct_start < 1.0) {
            return bad(format!("pct_start {} outside (0, 1)", self.pct_start));
        }
        if self.div_factor <= 0.0 || self.final_div_factor <= 0.0 {
            return bad("div_factor and final_div_factor must be positive".into());
        }
        for (n, b) in [
            ("beta1_max", self.beta1_max),
            ("beta1_min", self.beta1_min),
            ("beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{n} {b} outside [0, 1)"));
            }
        }
        if self.eps <= 0.0 {
            return bad("eps must be positive".into());
        }
        if self.eval_k == 0 || self.eval_batch_size == 0 {
            return bad("eval_k and eval_batch_size must be > 0".into());
        }
        if self.max_vocab == 0 {
            return bad("max_vocab must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.detach_fraction) {
            return bad(format!(
                "detach_fraction {} outside [0, 1)",
                self.detach_fraction
            ));
        }
        if self.max_train == Some(0) {
            return bad("max_train must be > 0".into());
        }
        Ok(())
    }

    /// The one-cycle schedule for `total_steps` steps.
    pub fn schedule(&self, total_steps: u64) -> OneCycle {
        OneCycle {
            lr_max: self.lr_max,
            total_steps,
            pct_start: self.pct_start,
            div_factor: self.div_factor,
            final_div_factor: self.final_div_factor,
            beta1_max: self.beta1_max,
            beta1_min: self.beta1_min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&j).unwrap(), c);
        let mut b = c.clone();
        b.batch_size = 1;
        assert!(b.validate().is_err());
    }
}

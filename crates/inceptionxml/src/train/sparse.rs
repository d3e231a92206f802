//! The sparse lexical model ([`xmc::tree`]) of a model directory: trained on the network's
//! training rows, its fusion weight chosen on the validation split ([`crate::predict::fusion`]).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use xmc::dataset::XcDataset;
use xmc::metrics::{evaluate, inverse_propensity, Metrics, Propensity};
use xmc::sparse::SparseMatrix;
use xmc::tree::SparseParams;

use super::setup::{first_rows, training_rows};
use super::TrainEvent;
use crate::config::TrainConfig;
use crate::error::Result;
use crate::predict::fusion::{choose_fusion, FusionConfig, Sparse, POOL};
use crate::predict::{Member, Predictor, Scoring};

/// What the sparse stage did.
#[derive(Debug, Clone)]
pub struct SparseSummary {
    /// Training time of the sparse model, seconds.
    pub train_s: f64,
    /// Weights kept over all trees.
    pub n_weights: usize,
    /// How the sparse scores enter the directory's ranking (weight 1: the sparse model alone).
    pub fusion: FusionConfig,
    /// On the validation split, when there is one and a network beside: P@1 (fractions) of the
    /// network alone, the sparse model alone and the chosen fusion.
    pub valid_p1: Option<[f64; 3]>,
    /// The directory's ranking (fused, or the sparse model alone) on the test split.
    pub test: Option<Metrics>,
}

/// Trains the sparse model on the training rows `config` selects (the validation hold-out
/// left out, then the first `max_train` rows), writes it into `out` beside the network already
/// there (`with_network`) or alone, and chooses the fusion weight on the validation split (the
/// default weight without one). Evaluates the directory on the test split when there is one.
pub fn train_sparse(
    data: &XcDataset,
    out: &Path,
    config: &TrainConfig,
    params: &SparseParams,
    with_network: Option<&Device>,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<SparseSummary> {
    let (train, valid) = training_rows(config, data)?;
    let n = config.n_train_rows(data.train.len());
    let labels = first_rows(&train.labels, n);
    on_event(TrainEvent::SparseStart { rows: n });
    let t0 = Instant::now();
    let model = xmc::tree::train(&train.texts[..n], &labels, params, &|_| {})?;
    let train_s = t0.elapsed().as_secs_f64();
    // The network `train` just saved, loaded once for the choice and the test evaluation.
    let network = match with_network {
        Some(device) => Some(Predictor::load(out, device, Scoring::Exact)?),
        None => None,
    };
    let (fusion, valid_p1) = match (&network, &valid) {
        (None, _) => (FusionConfig::SPARSE_ONLY, None),
        (Some(_), None) => (FusionConfig::DEFAULT, None),
        (Some(net), Some(v)) => {
            let a = net.predict_texts(&v.texts, POOL, 256, None)?;
            let b = model.predict(&v.texts, POOL);
            let p1 = |rows: &[Vec<(u32, f32)>]| -> Result<f64> {
                let pred = SparseMatrix::from_rows(v.labels.n_cols, rows.to_vec())?;
                Ok(evaluate(&v.labels, &pred, None, 1)?.p[0])
            };
            let (f, fused, _) = choose_fusion(&a, &b, &v.labels)?;
            (f, Some([p1(&a)?, p1(&b)?, fused]))
        }
    };
    let n_weights = model.n_weights();
    let sparse = Sparse { model, fusion };
    sparse.save(out)?;
    let test = match &data.test {
        Some(t) => {
            let member = Member::new(out, network, Some(sparse))?;
            let rows = member.predict_texts(&t.texts, 5, 256, None)?;
            let pred = SparseMatrix::from_rows(t.labels.n_cols, rows)?;
            let inv = inverse_propensity(&data.train.labels, Propensity::default())?;
            Some(evaluate(&t.labels, &pred, Some(&inv), 5)?)
        }
        None => None,
    };
    Ok(SparseSummary {
        train_s,
        n_weights,
        fusion,
        valid_p1,
        test,
    })
}

//! One optimiser step of each model on a batch: forward in training mode, loss, backward, and
//! every optimiser's update ([`Optimizers::step`]).
//!
//! Per batch: look up the word vectors (detached from the table) → make them a leaf variable
//! `x` → encode → head(s) → BCE-with-logits → backward → dense Adam on the model's dense
//! parameters, lazy row Adam on the word rows the batch looked up (from ∂loss/∂x) and, for
//! InceptionXML+, on the label-table rows of the shortlisted clusters. The padding row never
//! moves.

use std::sync::Arc;

use candle_core::{Tensor, Var};
use rayon::prelude::*;
use xmc::shortlist;

use super::batches::Batch;
use crate::error::{Error, Result};
use crate::model::InceptionXml;
use crate::ops::{
    bce_with_logits, bce_with_logits_masked, candidate_logits, stable_sigmoid, CandidatePlan,
};
use crate::optim::Optimizers;

/// What one step did besides its loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Real (unpadded) candidates over the batch (InceptionXML+).
    pub candidates: usize,
    /// Label-table rows updated (InceptionXML+).
    pub touched_rows: usize,
}

/// One optimiser step of whichever model `model` is; returns the batch loss. `detach` (only
/// meaningful for InceptionXML+) detaches the encoder output before the extreme head.
pub fn train_step(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
    detach: bool,
) -> Result<(f32, StepStats)> {
    match model.plus() {
        None => Ok((
            train_step_plain(model, opt, batch, lr, beta1)?,
            StepStats::default(),
        )),
        Some(_) => train_step_plus(model, opt, batch, lr, beta1, detach),
    }
}

/// One optimiser step of plain InceptionXML on `batch` (dense label targets); returns the loss.
pub fn train_step_plain(
    model: &InceptionXml,
    opt: &mut Optimizers,
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
    opt.step(
        model,
        &grads,
        x.as_tensor(),
        &batch.ids_host,
        None,
        lr,
        beta1,
    )?;
    Ok(loss.to_scalar::<f32>()?)
}

/// One optimiser step of InceptionXML+ on `batch` (whose targets are cluster targets): meta BCE
/// over all C clusters + masked BCE over each row's shortlisted candidates. With `detach`, the
/// encoder output is detached before the extreme head (the encoder learns from the meta task
/// only; the extreme head and the label table still train). Returns the loss.
pub fn train_step_plus(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
    detach: bool,
) -> Result<(f32, StepStats)> {
    let (plus, index) = match (model.plus(), model.clusters()) {
        (Some(p), Some(ix)) => (p, ix.clone()),
        _ => {
            return Err(Error::WrongModelKind(
                "train_step_plus needs an InceptionXML+ model with clusters".into(),
            ))
        }
    };
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
    let plan = Arc::new(CandidatePlan::new(&sl, &index)?);
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
    let touched = opt.step(
        model,
        &grads,
        x.as_tensor(),
        &batch.ids_host,
        table_grad.take(),
        lr,
        beta1,
    )?;
    let stats = StepStats {
        candidates: plan.n_candidates(),
        touched_rows: touched,
    };
    Ok((loss.to_scalar::<f32>()?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, PlusConfig, ScoreMode};
    use crate::optim::AdamConsts;
    use crate::train::batches::make_batch;
    use candle_core::Device;
    use candle_nn::VarMap;
    use xmc::shortlist::ClusterIndex;
    use xmc::SparseMatrix;

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

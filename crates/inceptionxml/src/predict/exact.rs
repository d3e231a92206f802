//! Exact f32 scoring: the plain model's full L-way logits, InceptionXML+'s meta head over all C
//! clusters and its candidates. Used for batches larger than [`super::INT8_MAX_BATCH`], on a GPU,
//! with `--exact`, and by the training loop's evaluation.

use std::sync::Arc;

use candle_core::Tensor;
use rayon::prelude::*;
use xmc::predictions::top_k_sparse;
use xmc::shortlist::{self, ClusterIndex};

use super::{meta_factor, Row, Shortlisted};
use crate::config::ScoreMode;
use crate::error::Result;
use crate::model::plus::PlusHeads;
use crate::model::InceptionXml;
use crate::ops::{candidate_logits, stable_sigmoid, CandidatePlan};

/// Top-k rows of a plain model for encoder features `h` `[B, D]`, from the head's evaluation
/// logits ([`crate::model::head::Head::eval_logits`]).
pub fn plain(model: &InceptionXml, h: &Tensor, k: usize) -> Result<Vec<Row>> {
    let head = model.full_head()?;
    let l = head.output_layer().0.dim(1)?;
    Ok(top_k_host(&head.eval_logits(h)?, l, k))
}

/// Per row of a `[B, L]` logit tensor, the `k` best labels with their σ scores, descending.
pub fn top_k_rows(logits: &Tensor, k: usize) -> Result<Vec<Row>> {
    let (_, l) = logits.dims2()?;
    let flat: Vec<f32> = logits
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(top_k_host(&flat, l, k))
}

/// The same on row-major host logits with rows of `l`.
fn top_k_host(flat: &[f32], l: usize, k: usize) -> Vec<Row> {
    flat.par_chunks(l.max(1))
        .map(|row| {
            xmc::predictions::top_k(row, k)
                .into_iter()
                .map(|(c, x)| (c, stable_sigmoid(x)))
                .collect()
        })
        .collect()
}

/// Each row's top-K clusters from the meta head over all C clusters (one f32 GEMM, which
/// reuses each weight across rows), with their meta logits.
pub fn shortlist(plus: &PlusHeads, index: &ClusterIndex, h: &Tensor) -> Result<Shortlisted> {
    let meta: Vec<f32> = plus.meta_logits(h, false)?.flatten_all()?.to_vec1()?;
    // σ is monotone: ranking clusters by logit is ranking them by score.
    let sl = shortlist::build(&meta, index, plus.config().top_k, None)?;
    let c = index.n_clusters();
    let meta_logits = sl
        .clusters
        .iter()
        .enumerate()
        .map(|(r, cs)| cs.iter().map(|&cl| meta[r * c + cl as usize]).collect())
        .collect();
    Ok(Shortlisted { sl, meta_logits })
}

/// Top-k labels per row from every candidate of its shortlisted clusters, scored exactly.
pub fn rank_candidates(
    plus: &PlusHeads,
    index: &ClusterIndex,
    s: &Shortlisted,
    g: &Tensor,
    k: usize,
    score: ScoreMode,
) -> Result<Vec<Row>> {
    let sl = &s.sl;
    let plan = Arc::new(CandidatePlan::new(sl, index)?);
    let (logits, _) = candidate_logits(g, plus.table.as_tensor(), plan)?;
    let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let (w, order) = (sl.width, index.order());
    Ok((0..sl.rows)
        .into_par_iter()
        .map(|r| {
            let mut cand = Vec::with_capacity(w);
            let mut slot = 0;
            for (&cl, &ml) in sl.clusters[r].iter().zip(&s.meta_logits[r]) {
                let (a, b) = (index.offset(cl as usize), index.offset(cl as usize + 1));
                let ms = meta_factor(score, ml);
                for &l in &order[a..b] {
                    cand.push((l, stable_sigmoid(logits[r * w + slot]) * ms));
                    slot += 1;
                }
            }
            top_k_sparse(cand, k)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top_k_rows_are_sigmoid_scores_descending() {
        let l =
            Tensor::from_slice(&[0.0f32, 3.0, -2.0, 1.0, -5.0, 2.0], (2, 3), &Device::Cpu).unwrap();
        let r = top_k_rows(&l, 2).unwrap();
        assert_eq!(r[0].iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 0]);
        assert!((r[0][0].1 - stable_sigmoid(3.0)).abs() < 1e-7);
        assert_eq!(r[1].iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 0]);
        assert!(r[1][0].1 >= r[1][1].1);
    }
}

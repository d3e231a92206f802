//! Evaluation of a model on a labelled split: P, nDCG, PSP, PSnDCG at 1..=k (with the default
//! propensity of the training labels) and, for InceptionXML+, meta precision and shortlist
//! recall, through the same ranking code as `predict` ([`crate::predict::rank_ids`], exact).

use xmc::metrics::Metrics;
use xmc::shortlist;
use xmc::SparseMatrix;

use crate::config::ScoreMode;
use crate::error::{Error, Result};
use crate::model::InceptionXml;
use crate::predict::rank_ids;

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

/// A labelled split encoded for evaluation.
pub struct EvalSet<'a> {
    /// N×S token ids.
    pub ids: Vec<u32>,
    /// Their n-gram rows (models with subwords).
    pub subwords: Option<xmc::subwords::Subwords>,
    pub labels: &'a SparseMatrix,
    /// Inverse propensity of every label (from the training labels).
    pub inv_prop: &'a [f32],
    /// Ranks reported (P@1..=k etc.).
    pub k: usize,
    pub batch_size: usize,
}

impl EvalSet<'_> {
    /// Ranks the split with `model` and scores the top-k (`score`: InceptionXML+'s ranking;
    /// ignored for a plain model). InceptionXML+ also reports [`PlusEval`].
    pub fn evaluate(
        &self,
        model: &InceptionXml,
        score: ScoreMode,
    ) -> Result<(Metrics, Option<PlusEval>)> {
        let (labels, k) = (self.labels, self.k);
        let out = rank_ids(
            model,
            (&self.ids, self.subwords.as_ref()),
            k,
            self.batch_size,
            Some(score),
            None,
        )?;
        let plus = match model.config().plus.as_ref() {
            None => None,
            Some(p) => {
                let index = model.clusters().ok_or_else(|| {
                    Error::WrongModelKind("InceptionXML+ model without clusters".into())
                })?;
                let positives: Vec<&[u32]> =
                    (0..labels.n_rows).map(|r| labels.row_indices(r)).collect();
                let meta_hits = out
                    .clusters
                    .iter()
                    .zip(&positives)
                    .filter(|(cs, pos)| {
                        cs.first().is_some_and(|&best| {
                            pos.iter().any(|&l| index.assign[l as usize] == best)
                        })
                    })
                    .count();
                let (hits, total) = shortlist::recall(&out.clusters, &positives, index);
                Some(PlusEval {
                    score,
                    meta_p1: meta_hits as f64 / labels.n_rows.max(1) as f64,
                    shortlist_recall: hits as f64 / total.max(1) as f64,
                    top_k: p.top_k,
                })
            }
        };
        let pred = SparseMatrix::from_rows(labels.n_cols, out.rows)?;
        let m = xmc::metrics::evaluate(labels, &pred, Some(self.inv_prop), k)?;
        Ok((m, plus))
    }
}

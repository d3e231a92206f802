//! Ranking metrics for extreme multi-label classification: P@k, nDCG@k, propensity-scored
//! PSP@k / PSnDCG@k (Jain et al., KDD'16) and recall R@k, for every k = 1..K.
//!
//! The semantics follow pyxclib (`xclib/evaluation/xc_metrics.py`), the reference used by the
//! extreme-classification literature, so numbers are comparable with published tables:
//!
//! * **Ranking.** Each prediction row is a sparse list of `label:score`; its entries are ranked by
//!   score descending (pyxclib's `_topk` uses an unstable `argsort`, so its tie order is
//!   unspecified; ours is deterministic). Prediction files read for evaluation
//!   ([`crate::predictions::read_predictions_file_order`], what `inceptionxml eval` does) keep
//!   the file's order among equal scores; [`evaluate`] on a matrix with equal scores in a row
//!   ranks them by the lower label index ([`rank_row`]). A row with fewer than `k`
//!   stored predictions is padded with "no label", which is never relevant. Every stored entry
//!   counts as a prediction, whatever its score.
//! * **Truth.** Every stored entry of a truth row is a positive; callers drop entries whose value
//!   is not positive first ([`crate::sparse::SparseMatrix::positives`]: `3:0` and `3:-1` are not
//!   positives; pyxclib sums the values, which is the same for the usual 0/1 label files).
//! * **Empty truth rows** (no positive labels) are **kept**: they stay in the denominator of every
//!   average and contribute 0 to P@k, nDCG@k and R@k (pyxclib's `Metrics(remove_invalid=False)`
//!   default; `recall` sets `deno[deno == 0] = 1`). They contribute 0 to both the numerator and the
//!   ideal of PSP@k / PSnDCG@k, so they do not change those.
//! * **P@k** = mean over rows of `|top-k ∩ pos| / k`.
//! * **nDCG@k** = mean over rows of `DCG@k / IDCG@min(|pos|, k)` with `DCG@k = Σ_{j≤k} rel_j /
//!   log2(j + 1)`; an empty row scores 0.
//! * **R@k** = mean over rows of `|top-k ∩ pos| / max(|pos|, 1)`.
//! * **PSP@k** = `Σ_rows Σ_{l ∈ top-k ∩ pos} w_l / k` divided by the same sum for the best possible
//!   ranking (each row's positives ordered by `w_l`), i.e. a ratio of sums over rows (MODEL.md §7 and
//!   pyxclib agree here).
//! * **PSnDCG@k** follows pyxclib, which differs from a plain ratio of sums (MODEL.md §7's "likewise"):
//!   each row's propensity-weighted DCG@k is first divided by that row's *unweighted*
//!   `IDCG@min(|pos|, k)` and averaged over rows, and that average is divided by the same average
//!   for the best possible ranking:
//!   `PSnDCG@k = Σ_r PSDCG_r@k / IDCG_r  /  Σ_r PSDCG*_r@k / IDCG_r`.
//! * If no test row has a positive label, the PSP@k / PSnDCG@k ideal is 0; pyxclib then returns
//!   NaN, we return 0.
//!
//! Inverse propensities: `w_l = 1 + C (N_l + B)^(-A)`, `C = (ln N − 1)(B + 1)^A`, with `N` the
//! number of training rows and `N_l` the training rows having label `l`.
//!
//! Rows are processed in parallel with rayon in fixed-size chunks whose partial sums are combined
//! in chunk order, so results do not depend on the number of threads.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{Error, Result};
use crate::predictions::top_k_sparse;
use crate::sparse::SparseMatrix;

/// Parameters `A`, `B` of the inverse-propensity model `w_l = 1 + C (N_l + B)^(-A)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Propensity {
    pub a: f64,
    pub b: f64,
}

impl Propensity {
    /// Amazon datasets: `A = 0.6`, `B = 2.6`.
    pub const AMAZON: Propensity = Propensity { a: 0.6, b: 2.6 };
    /// Wikipedia datasets (WikiTitles-500K, WikiLSHTC): `A = 0.5`, `B = 0.4`.
    pub const WIKIPEDIA: Propensity = Propensity { a: 0.5, b: 0.4 };
    /// Everything else: `A = 0.55`, `B = 1.5`.
    pub const DEFAULT: Propensity = Propensity { a: 0.55, b: 1.5 };

    /// The Amazon preset.
    pub fn amazon() -> Self {
        Self::AMAZON
    }

    /// The Wikipedia preset.
    pub fn wikipedia() -> Self {
        Self::WIKIPEDIA
    }

    /// Checks that `A` is finite and non-negative and `B` finite and positive (so that a label
    /// never seen in training, `N_l = 0`, still has a finite weight).
    pub fn validate(&self) -> Result<()> {
        if !(self.a.is_finite() && self.a >= 0.0) {
            return Err(Error::param(format!(
                "propensity A must be finite and >= 0, got {}",
                self.a
            )));
        }
        if !(self.b.is_finite() && self.b > 0.0) {
            return Err(Error::param(format!(
                "propensity B must be finite and > 0, got {}",
                self.b
            )));
        }
        Ok(())
    }
}

impl Default for Propensity {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Propensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.a, self.b)
    }
}

impl FromStr for Propensity {
    type Err = Error;

    /// Accepts `amazon`, `wikipedia`, `default` (any case) or explicit `A,B`, e.g. `0.55,1.5`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let p = match t.to_ascii_lowercase().as_str() {
            "amazon" => Self::AMAZON,
            "wikipedia" => Self::WIKIPEDIA,
            "default" => Self::DEFAULT,
            _ => {
                let bad = || {
                    Error::param(format!(
                        "propensity {s:?}: expected amazon, wikipedia, default or `A,B` (e.g. 0.55,1.5)"
                    ))
                };
                let (a, b) = t.split_once(',').ok_or_else(bad)?;
                let a: f64 = a.trim().parse().map_err(|_| bad())?;
                let b: f64 = b.trim().parse().map_err(|_| bad())?;
                Propensity { a, b }
            }
        };
        p.validate()?;
        Ok(p)
    }
}

/// Inverse propensity `w_l` of every label (length `train_labels.n_cols`), from the training label
/// matrix: `N` = rows, `N_l` = stored entries in column `l`. Errors on an empty matrix (`ln 0`)
/// or invalid parameters.
pub fn inverse_propensity(train_labels: &SparseMatrix, p: Propensity) -> Result<Vec<f32>> {
    p.validate()?;
    if train_labels.n_rows == 0 {
        return Err(Error::param(
            "inverse propensities need a training label matrix with at least one row",
        ));
    }
    let n = train_labels.n_rows as f64;
    let c = (n.ln() - 1.0) * (p.b + 1.0).powf(p.a);
    Ok(train_labels
        .col_counts()
        .into_iter()
        .map(|nl| (1.0 + c * (nl as f64 + p.b).powf(-p.a)) as f32)
        .collect())
}

/// Metric values for k = 1..K as fractions (index `k - 1`). `psp` and `psndcg` are empty when no
/// inverse propensities were given.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub k: usize,
    pub p: Vec<f64>,
    pub ndcg: Vec<f64>,
    pub psp: Vec<f64>,
    pub psndcg: Vec<f64>,
    pub recall: Vec<f64>,
}

impl Metrics {
    /// The metric families present, as (name, values): `P`, `nDCG`, `PSP`, `PSnDCG`, `R`.
    fn families(&self) -> Vec<(&'static str, &[f64])> {
        let mut f: Vec<(&'static str, &[f64])> = vec![("P", &self.p), ("nDCG", &self.ndcg)];
        if !self.psp.is_empty() {
            f.push(("PSP", &self.psp));
        }
        if !self.psndcg.is_empty() {
            f.push(("PSnDCG", &self.psndcg));
        }
        f.push(("R", &self.recall));
        f
    }

    /// Ordered `(key, value × 100)` pairs: `P@1..P@k`, `nDCG@1..`, `PSP@1..`, `PSnDCG@1..`,
    /// `R@1..` (the PS keys only when propensities were given).
    pub fn to_json_map(&self) -> Vec<(String, f64)> {
        self.families()
            .into_iter()
            .flat_map(|(name, vals)| {
                vals.iter()
                    .enumerate()
                    .map(move |(i, v)| (format!("{name}@{}", i + 1), v * 100.0))
            })
            .collect()
    }

    /// One JSON object with the keys of [`Metrics::to_json_map`], in order.
    pub fn to_json(&self) -> String {
        // Serialising f64 values and string keys to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Serialises as the ordered object of [`Metrics::to_json_map`] (values × 100), so a record
/// struct can embed it with `#[serde(flatten)]`.
impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let entries = self.to_json_map();
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A table: one line per metric family, one column per k, values × 100 with two decimals.
impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8}", "k")?;
        for k in 1..=self.k {
            write!(f, " {k:>7}")?;
        }
        writeln!(f)?;
        for (name, vals) in self.families() {
            write!(f, "{name:<8}")?;
            for v in vals {
                write!(f, " {:>7.2}", v * 100.0)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Rows per parallel chunk; partial sums are combined in chunk order (thread-count independent).
const CHUNK: usize = 512;

/// Per-k sums over rows of the per-row quantities.
#[derive(Clone)]
struct Sums {
    /// Σ_r |top-j ∩ pos| / j.
    p: Vec<f64>,
    /// Σ_r DCG_r@j / IDCG_r@min(|pos|, j).
    ndcg: Vec<f64>,
    /// Σ_r |top-j ∩ pos| / max(|pos|, 1).
    recall: Vec<f64>,
    /// Σ_r Σ_{l ∈ top-j ∩ pos} w_l / j, predicted and ideal.
    psp: Vec<f64>,
    psp_ideal: Vec<f64>,
    /// Σ_r PSDCG_r@j / IDCG_r, predicted and ideal.
    psndcg: Vec<f64>,
    psndcg_ideal: Vec<f64>,
}

impl Sums {
    fn zeros(k: usize) -> Self {
        Sums {
            p: vec![0.0; k],
            ndcg: vec![0.0; k],
            recall: vec![0.0; k],
            psp: vec![0.0; k],
            psp_ideal: vec![0.0; k],
            psndcg: vec![0.0; k],
            psndcg_ideal: vec![0.0; k],
        }
    }

    fn add(&mut self, o: &Sums) {
        for (a, b) in [
            (&mut self.p, &o.p),
            (&mut self.ndcg, &o.ndcg),
            (&mut self.recall, &o.recall),
            (&mut self.psp, &o.psp),
            (&mut self.psp_ideal, &o.psp_ideal),
            (&mut self.psndcg, &o.psndcg),
            (&mut self.psndcg_ideal, &o.psndcg_ideal),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// The top `k` entries of a prediction row: score descending, equal scores by the lower label
/// index. (`inceptionxml eval` turns each row's scores into distinct rank keys in the file's
/// order first, [`crate::predictions::read_predictions_file_order`], so that no tie is left.)
pub fn rank_row(indices: &[u32], scores: &[f32], k: usize) -> Vec<u32> {
    let entries = indices
        .iter()
        .copied()
        .zip(scores.iter().copied())
        .collect();
    top_k_sparse(entries, k).into_iter().map(|e| e.0).collect()
}

/// Computes P@k, nDCG@k, R@k and (with `inv_psp`) PSP@k, PSnDCG@k for k = 1..`k`.
///
/// `truth` and `pred` must have the same number of rows and columns; `inv_psp`, if given, one
/// weight per column (see [`inverse_propensity`]). See the module documentation for the exact
/// definitions, including the treatment of rows without positive labels.
pub fn evaluate(
    truth: &SparseMatrix,
    pred: &SparseMatrix,
    inv_psp: Option<&[f32]>,
    k: usize,
) -> Result<Metrics> {
    if k == 0 {
        return Err(Error::param("k must be at least 1"));
    }
    if truth.n_rows != pred.n_rows || truth.n_cols != pred.n_cols {
        return Err(Error::Shape(format!(
            "truth is {} rows x {} labels but predictions are {} rows x {} labels",
            truth.n_rows, truth.n_cols, pred.n_rows, pred.n_cols
        )));
    }
    if truth.n_rows == 0 {
        return Err(Error::Shape("truth and predictions have no rows".into()));
    }
    if let Some(w) = inv_psp {
        if w.len() != truth.n_cols {
            return Err(Error::Shape(format!(
                "{} inverse propensities (training labels) but truth and predictions have {} labels",
                w.len(),
                truth.n_cols
            )));
        }
    }

    // discount[j] = 1 / log2(j + 2); idcg[j] = Σ_{i ≤ j} discount[i] (IDCG with j + 1 positives).
    let discount: Vec<f64> = (0..k).map(|j| 1.0 / ((j + 2) as f64).log2()).collect();
    let idcg: Vec<f64> = discount
        .iter()
        .scan(0.0, |s, d| {
            *s += d;
            Some(*s)
        })
        .collect();

    let n = truth.n_rows;
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let partial: Vec<Sums> = starts
        .par_iter()
        .map(|&s| {
            let mut sums = Sums::zeros(k);
            let mut w_pos: Vec<f64> = Vec::new();
            for r in s..(s + CHUNK).min(n) {
                add_row(
                    truth.row_indices(r),
                    pred.row(r),
                    inv_psp,
                    k,
                    &discount,
                    &idcg,
                    &mut w_pos,
                    &mut sums,
                );
            }
            sums
        })
        .collect();
    let mut total = Sums::zeros(k);
    for p in &partial {
        total.add(p);
    }

    let nf = n as f64;
    let ratio = |a: &[f64], b: &[f64]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(x, y)| if *y > 0.0 { x / y } else { 0.0 })
            .collect()
    };
    let (psp, psndcg) = if inv_psp.is_some() {
        (
            ratio(&total.psp, &total.psp_ideal),
            ratio(&total.psndcg, &total.psndcg_ideal),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Metrics {
        k,
        p: total.p.iter().map(|x| x / nf).collect(),
        ndcg: total.ndcg.iter().map(|x| x / nf).collect(),
        psp,
        psndcg,
        recall: total.recall.iter().map(|x| x / nf).collect(),
    })
}

/// Adds one row's contributions for every j = 1..k to `sums`.
#[allow(clippy::too_many_arguments)]
fn add_row(
    pos: &[u32],
    (p_idx, p_val): (&[u32], &[f32]),
    inv_psp: Option<&[f32]>,
    k: usize,
    discount: &[f64],
    idcg: &[f64],
    w_pos: &mut Vec<f64>,
    sums: &mut Sums,
) {
    let top = rank_row(p_idx, p_val, k);
    let n_pos = pos.len();
    let recall_den = n_pos.max(1) as f64;
    // IDCG over min(|pos|, j) positives; an empty row uses IDCG@j (its DCG is 0 anyway).
    let idcg_at = |j: usize| {
        if n_pos == 0 {
            idcg[j]
        } else {
            idcg[j.min(n_pos - 1)]
        }
    };

    let (mut hits, mut dcg, mut ps, mut psdcg) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (j, &dj) in discount.iter().enumerate() {
        if let Some(&l) = top.get(j) {
            if pos.binary_search(&l).is_ok() {
                hits += 1.0;
                dcg += dj;
                if let Some(w) = inv_psp {
                    let wl = f64::from(w[l as usize]);
                    ps += wl;
                    psdcg += wl * dj;
                }
            }
        }
        sums.p[j] += hits / (j + 1) as f64;
        sums.ndcg[j] += dcg / idcg_at(j);
        sums.recall[j] += hits / recall_den;
        if inv_psp.is_some() {
            sums.psp[j] += ps / (j + 1) as f64;
            sums.psndcg[j] += psdcg / idcg_at(j);
        }
    }

    if let Some(w) = inv_psp {
        // The best possible ranking: the row's positives by weight, descending.
        w_pos.clear();
        w_pos.extend(pos.iter().map(|&l| f64::from(w[l as usize])));
        w_pos.sort_unstable_by(|a, b| b.total_cmp(a));
        let (mut ps, mut psdcg) = (0.0f64, 0.0f64);
        for (j, &dj) in discount.iter().enumerate() {
            if let Some(&wl) = w_pos.get(j) {
                ps += wl;
                psdcg += wl * dj;
            }
            sums.psp_ideal[j] += ps / (j + 1) as f64;
            sums.psndcg_ideal[j] += psdcg / idcg_at(j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < EPS, "{a:?} vs {b:?}");
        }
    }

    fn d(j: usize) -> f64 {
        1.0 / ((j + 1) as f64).log2() // discount of 1-based rank j
    }

    /// Row 0: truth {0, 2}, predictions 1:0.9 0:0.5 2:0.5 3:0.1 -> ranked 1, 0, 2 (tie by index).
    /// Row 1: truth {}, predictions 0:1.
    /// Row 2: truth {3}, one prediction 3:0.2 (fewer than k).
    fn example() -> (SparseMatrix, SparseMatrix) {
        let truth = SparseMatrix::from_index_rows(4, &[vec![0, 2], vec![], vec![3]]).unwrap();
        let pred = SparseMatrix::from_rows(
            4,
            vec![
                vec![(1, 0.9), (2, 0.5), (0, 0.5), (3, 0.1)],
                vec![(0, 1.0)],
                vec![(3, 0.2)],
            ],
        )
        .unwrap();
        (truth, pred)
    }

    #[test]
    fn ranking_breaks_ties_by_lower_index() {
        assert_eq!(
            rank_row(&[0, 1, 2, 3], &[0.5, 0.9, 0.5, 0.1], 3),
            vec![1, 0, 2]
        );
        assert_eq!(rank_row(&[5, 2, 7], &[1.0, 1.0, 1.0], 2), vec![2, 5]);
        assert_eq!(rank_row(&[4], &[0.3], 5), vec![4]);
        assert!(rank_row(&[], &[], 5).is_empty());
    }

    #[test]
    fn hand_computed_p_ndcg_recall() {
        let (truth, pred) = example();
        let m = evaluate(&truth, &pred, None, 3).unwrap();
        // Hits per row at ranks 1..3: row0 [0,1,1], row1 [0,0,0], row2 [1,-,-].
        close(
            &m.p,
            &[1.0 / 3.0, (0.5 + 0.5) / 3.0, (2.0 / 3.0 + 1.0 / 3.0) / 3.0],
        );
        let ndcg1 = (0.0 + 0.0 + 1.0) / 3.0;
        let ndcg2 = (d(2) / (d(1) + d(2)) + 0.0 + 1.0) / 3.0;
        let ndcg3 = ((d(2) + d(3)) / (d(1) + d(2)) + 0.0 + 1.0) / 3.0;
        close(&m.ndcg, &[ndcg1, ndcg2, ndcg3]);
        // Recall: row0 [0, 1/2, 1], empty row counts 0 (denominator 1), row2 [1, 1, 1].
        close(&m.recall, &[1.0 / 3.0, 1.5 / 3.0, 2.0 / 3.0]);
        assert!(m.psp.is_empty() && m.psndcg.is_empty());
    }

    #[test]
    fn hand_computed_propensity_scored() {
        let (truth, pred) = example();
        let w = [2.0f32, 1.0, 3.0, 5.0];
        let m = evaluate(&truth, &pred, Some(&w), 3).unwrap();
        // Predicted weighted hits: row0 ranks (1,0,2) -> [0, 2, 3]; row2 -> [5].
        // Ideal: row0 by weight (2, 0) -> [3, 2]; row2 -> [5].
        let psp_num = [5.0, (2.0 + 5.0) / 2.0, (5.0 + 5.0) / 3.0];
        let psp_den = [3.0 + 5.0, (5.0 + 5.0) / 2.0, (5.0 + 5.0) / 3.0];
        close(
            &m.psp,
            &[
                psp_num[0] / psp_den[0],
                psp_num[1] / psp_den[1],
                psp_num[2] / psp_den[2],
            ],
        );
        // PSnDCG: per-row PSDCG over the row's unweighted IDCG@min(|pos|, k), then a ratio.
        let i0 = [d(1), d(1) + d(2), d(1) + d(2)];
        let num = [
            0.0 / i0[0] + 5.0,
            2.0 * d(2) / i0[1] + 5.0,
            (2.0 * d(2) + 3.0 * d(3)) / i0[2] + 5.0,
        ];
        let den = [
            3.0 / i0[0] + 5.0,
            (3.0 + 2.0 * d(2)) / i0[1] + 5.0,
            (3.0 + 2.0 * d(2)) / i0[2] + 5.0,
        ];
        close(
            &m.psndcg,
            &[num[0] / den[0], num[1] / den[1], num[2] / den[2]],
        );
    }

    #[test]
    fn perfect_predictions_score_one_except_empty_rows() {
        let truth = SparseMatrix::from_index_rows(5, &[vec![1, 4], vec![0], vec![]]).unwrap();
        let pred = SparseMatrix::from_rows(
            5,
            vec![vec![(4, 0.9), (1, 0.8)], vec![(0, 0.7)], vec![(2, 0.1)]],
        )
        .unwrap();
        let w = [1.5f32, 2.0, 1.0, 1.0, 4.0];
        let m = evaluate(&truth, &pred, Some(&w), 2).unwrap();
        // The empty row stays in the denominator of P, nDCG and R.
        close(&m.p, &[2.0 / 3.0, (1.0 + 0.5) / 3.0]);
        close(&m.ndcg, &[2.0 / 3.0, 2.0 / 3.0]);
        close(&m.recall, &[(0.5 + 1.0) / 3.0, 2.0 / 3.0]);
        // Highest weight first in each row, so the PS metrics are exactly 1.
        close(&m.psp, &[1.0, 1.0]);
        close(&m.psndcg, &[1.0, 1.0]);
    }

    #[test]
    fn no_positives_anywhere_gives_zero_not_nan() {
        let truth = SparseMatrix::from_index_rows(3, &[vec![], vec![]]).unwrap();
        let pred = SparseMatrix::from_rows(3, vec![vec![(0, 1.0)], vec![]]).unwrap();
        let m = evaluate(&truth, &pred, Some(&[1.0, 1.0, 1.0]), 2).unwrap();
        for v in [&m.p, &m.ndcg, &m.psp, &m.psndcg, &m.recall] {
            close(v, &[0.0, 0.0]);
        }
    }

    #[test]
    fn independent_of_thread_count() {
        // Enough rows for several chunks, awkward float sums.
        let n = 3 * CHUNK + 17;
        let l = 50u32;
        let mut t = Vec::new();
        let mut p = Vec::new();
        for r in 0..n as u32 {
            t.push(
                (0..l)
                    .filter(|c| (r * 7 + c * 13) % 11 == 0)
                    .collect::<Vec<_>>(),
            );
            p.push(
                (0..l)
                    .filter(|c| (r + c) % 3 == 0)
                    .map(|c| (c, ((r * 31 + c * 17) % 23) as f32 / 7.0))
                    .collect::<Vec<_>>(),
            );
        }
        let truth = SparseMatrix::from_index_rows(l as usize, &t).unwrap();
        let pred = SparseMatrix::from_rows(l as usize, p).unwrap();
        let w = inverse_propensity(&truth, Propensity::default()).unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| evaluate(&truth, &pred, Some(&w), 5).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(7));
    }

    #[test]
    fn inverse_propensity_formula() {
        // 4 rows; label counts [3, 1, 0].
        let y = SparseMatrix::from_index_rows(3, &[vec![0, 1], vec![0], vec![0], vec![]]).unwrap();
        let p = Propensity { a: 0.5, b: 0.4 };
        let w = inverse_propensity(&y, p).unwrap();
        let c = (4f64.ln() - 1.0) * 1.4f64.powf(0.5);
        for (l, nl) in [3.0, 1.0, 0.0].iter().enumerate() {
            let want = 1.0 + c * (nl + 0.4f64).powf(-0.5);
            assert!(
                (f64::from(w[l]) - want).abs() < 1e-6,
                "{l}: {} vs {want}",
                w[l]
            );
        }
        assert!(inverse_propensity(&SparseMatrix::new(3), p).is_err());
    }

    #[test]
    fn propensity_parsing() {
        assert_eq!("amazon".parse::<Propensity>().unwrap(), Propensity::AMAZON);
        assert_eq!(
            "Wikipedia".parse::<Propensity>().unwrap(),
            Propensity::WIKIPEDIA
        );
        assert_eq!(
            "default".parse::<Propensity>().unwrap(),
            Propensity { a: 0.55, b: 1.5 }
        );
        assert_eq!(
            " 0.7 , 2 ".parse::<Propensity>().unwrap(),
            Propensity { a: 0.7, b: 2.0 }
        );
        assert_eq!(
            Propensity::DEFAULT
                .to_string()
                .parse::<Propensity>()
                .unwrap(),
            Propensity::DEFAULT
        );
        for bad in [
            "", "amazonn", "0.5", "0.5,x", "0.5,0", "-1,1", "nan,1", "0.5,1,2",
        ] {
            assert!(bad.parse::<Propensity>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shape_checks_name_both_matrices() {
        let (truth, pred) = example();
        let short = truth.select_rows(&[0, 1]);
        let e = evaluate(&short, &pred, None, 5).unwrap_err().to_string();
        assert!(
            e.contains("truth is 2 rows") && e.contains("predictions are 3 rows"),
            "{e}"
        );
        let wide = SparseMatrix::from_index_rows(9, &[vec![], vec![], vec![]]).unwrap();
        assert!(evaluate(&wide, &pred, None, 5).is_err());
        assert!(evaluate(&truth, &pred, Some(&[1.0]), 5).is_err());
        assert!(evaluate(&truth, &pred, None, 0).is_err());
    }

    #[test]
    fn json_keys_ordered_and_scaled() {
        let (truth, pred) = example();
        let m = evaluate(&truth, &pred, Some(&[1.0, 1.0, 1.0, 1.0]), 2).unwrap();
        let keys: Vec<String> = m.to_json_map().into_iter().map(|e| e.0).collect();
        assert_eq!(
            keys,
            [
                "P@1", "P@2", "nDCG@1", "nDCG@2", "PSP@1", "PSP@2", "PSnDCG@1", "PSnDCG@2", "R@1",
                "R@2"
            ]
        );
        assert!((m.to_json_map()[0].1 - 100.0 / 3.0).abs() < 1e-9);
        let json = m.to_json();
        assert!(json.starts_with("{\"P@1\":33.33"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.as_object().map(|o| o.len()), Some(10));
        let table = m.to_string();
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("P          33.33"),
            "{table}"
        );
        let plain = evaluate(&truth, &pred, None, 2).unwrap();
        assert_eq!(plain.to_json_map().len(), 6);
        assert_eq!(plain.to_string().lines().count(), 4);
    }
}

//! Fast small-batch prediction on the CPU: int8 copies of the big reads of a query (the plain
//! model's output layer; InceptionXML+'s meta classifier and label table), each followed by
//! exact f32 rescoring of a short list.
//!
//! [`RowsI8`] quantises rows of a table to int8 with one scale per row; a query vector is
//! quantised to int16 ([`quantize_query`]) and approximate dot products are exact integer sums
//! (`pmaddwd`). [`MetaIndex`] uses it for the meta classifier, [`ExtremeIndex`] for the label
//! table (the exact rescoring of the latter reads the model's own f32 table through
//! [`crate::ops::candidate_logits`]).
//!
//! The meta classifier is the largest read of a query: C × hd weights (126 MB in f32 for
//! C = 65,536, hd = 480). [`MetaIndex`] keeps an int8 copy (one scale per cluster, 4× fewer
//! bytes) to score all C clusters approximately with exact integer dot products against the
//! int16-quantised features, keeps the best `2K + 32`, and rescores those exactly in f32 from a
//! cluster-major copy (K·hd values, contiguous per cluster). The K clusters returned carry exact
//! meta logits; they differ from the full f32 ranking only if int8 rounding pushes one of the
//! true top K below rank 2K + 32.

use std::sync::Arc;

use candle_core::Tensor;
use rayon::prelude::*;
use xmc::predictions::top_k_sparse;
use xmc::shortlist::ClusterIndex;

use super::{meta_factor, Row, Shortlisted};
use crate::config::ScoreMode;
use crate::error::Result;
use crate::model::plus::PlusHeads;
use crate::model::InceptionXml;
use crate::ops::host::simd::{dot, dot_i8};
use crate::ops::{candidate_logits, stable_sigmoid, CandidatePlan};

/// Clusters per parallel task.
const CHUNK: usize = 2048;

/// Shortlist length kept from approximate scores for exact rescoring, for `k` results.
pub fn rescore_len(k: usize) -> usize {
    2 * k + 32
}

/// `x` as int16 with one scale: `x ≈ q · scale`.
pub fn quantize_query(x: &[f32]) -> (Vec<i16>, f32) {
    let m = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let sx = if m > 0.0 { m / 32767.0 } else { 1.0 };
    let q = x
        .iter()
        .map(|&v| (v / sx).round().clamp(-32767.0, 32767.0) as i16)
        .collect();
    (q, sx)
}

/// Rows of a table in int8, one scale per row.
#[derive(Debug, Clone)]
pub struct RowsI8 {
    dim: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
}

impl RowsI8 {
    /// Quantises the row-major `data` (`rows × dim`).
    pub fn new(data: &[f32], dim: usize) -> Self {
        let dim = dim.max(1);
        let rows = data.len() / dim;
        let mut q = vec![0i8; rows * dim];
        crate::runtime::advise_huge_pages(&q);
        let mut scale = vec![0f32; rows];
        q.par_chunks_mut(dim)
            .zip(scale.par_iter_mut())
            .zip(data.par_chunks(dim))
            .for_each(|((qr, s), er)| {
                let m = er.iter().fold(0f32, |a, &x| a.max(x.abs()));
                *s = if m > 0.0 { m / 127.0 } else { 1.0 };
                for (o, &x) in qr.iter_mut().zip(er) {
                    *o = (x / *s).round().clamp(-127.0, 127.0) as i8;
                }
            });
        RowsI8 { dim, q, scale }
    }

    /// ≈ `row(r) · x` for the quantised query `(qx, sx)`.
    #[inline]
    pub fn approx(&self, r: usize, qx: &[i16], sx: f32) -> f32 {
        dot_i8(&self.q[r * self.dim..(r + 1) * self.dim], qx) as f32 * sx * self.scale[r]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }
}

/// Both int8 indexes of an InceptionXML+ model.
#[derive(Debug, Clone)]
pub struct FastIndex {
    pub meta: MetaIndex,
    pub extreme: ExtremeIndex,
}

/// The int8 label table of an InceptionXML+ model (rows in cluster order).
#[derive(Debug, Clone)]
pub struct ExtremeIndex {
    pub rows: RowsI8,
}

impl ExtremeIndex {
    /// Quantises the label table `[L, hd]` (read in place when it is on the CPU).
    pub fn from_table(table: &candle_core::Tensor) -> Result<Self> {
        let hd = table.dims2()?.1;
        let rows = crate::ops::storage::with_host_f32(table, |t| RowsI8::new(t, hd))?;
        Ok(ExtremeIndex { rows })
    }
}

impl FastIndex {
    /// Both indexes of an InceptionXML+ model's heads.
    pub fn new(plus: &crate::model::plus::PlusHeads) -> Result<Self> {
        let (w, b) = plus.meta_layer();
        Ok(FastIndex {
            meta: MetaIndex::from_linear(w, b)?,
            extreme: ExtremeIndex::from_table(plus.table.as_tensor())?,
        })
    }
}

/// The int8 and cluster-major f32 copies of the meta classifier.
#[derive(Debug, Clone)]
pub struct MetaIndex {
    n_clusters: usize,
    dim: usize,
    quant: RowsI8,
    exact: Vec<f32>,
    bias: Vec<f32>,
}

impl MetaIndex {
    /// From the classifier weight `[dim, C]` (in × out, row-major) and bias `[C]`.
    pub fn new(weight: &[f32], bias: &[f32], dim: usize) -> Self {
        let c = bias.len();
        let mut exact = vec![0f32; c * dim];
        crate::runtime::advise_huge_pages(&exact);
        exact
            .par_chunks_mut(dim.max(1))
            .enumerate()
            .for_each(|(j, row)| {
                for (i, x) in row.iter_mut().enumerate() {
                    *x = weight[i * c + j];
                }
            });
        MetaIndex {
            n_clusters: c,
            dim,
            quant: RowsI8::new(&exact, dim),
            exact,
            bias: bias.to_vec(),
        }
    }

    /// [`MetaIndex::new`] from a linear layer's `[dim, C]` weight and `[C]` bias tensors, read
    /// in place when they are on the CPU.
    pub fn from_linear(weight: &candle_core::Tensor, bias: &candle_core::Tensor) -> Result<Self> {
        let dim = weight.dims2()?.0;
        let b: Vec<f32> = bias.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        Ok(crate::ops::storage::with_host_f32(weight, |w| {
            Self::new(w, &b, dim)
        })?)
    }

    pub fn n_clusters(&self) -> usize {
        self.n_clusters
    }

    /// The exact logit of cluster `c` for features `x`.
    pub fn logit(&self, x: &[f32], c: usize) -> f32 {
        dot(&self.exact[c * self.dim..(c + 1) * self.dim], x) + self.bias[c]
    }

    /// The `k` best clusters for features `x` (`dim` values) with their exact logits, best first.
    pub fn top_clusters(&self, x: &[f32], k: usize) -> Vec<(u32, f32)> {
        let (qx, sx) = quantize_query(x);
        let mut approx = vec![0f32; self.n_clusters];
        approx
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(t, out)| {
                let c0 = t * CHUNK;
                for (j, o) in out.iter_mut().enumerate() {
                    let c = c0 + j;
                    *o = self.quant.approx(c, &qx, sx) + self.bias[c];
                }
            });
        let pre = rescore_len(k).min(self.n_clusters);
        let mut best: Vec<(u32, f32)> = above_rank(&approx, pre)
            .into_par_iter()
            .map(|c| (c, self.logit(x, c as usize)))
            .collect();
        best.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        best.truncate(k);
        best
    }
}

/// The indices of (at least) the `n` largest values of `v` (all values ≥ the n-th largest; NaN
/// never selected), in increasing index order: one selection on the bare values, one scan.
pub fn above_rank(v: &[f32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    if n >= v.len() {
        return (0..v.len() as u32).collect();
    }
    let mut tmp: Vec<f32> = v
        .iter()
        .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
        .collect();
    let (_, t, _) = tmp.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
    let t = *t;
    v.iter()
        .enumerate()
        .filter(|(_, &x)| x >= t)
        .map(|(i, _)| i as u32)
        .collect()
}

/// Top-k rows of a plain model for encoder features `h` `[B, D]` through the int8 index of its
/// output layer: every label's logit approximated from int8 weights, the best
/// `rescore_len(k)` rescored exactly in f32. Reads a quarter of the output layer's bytes per
/// row: the batch-1 path.
pub fn plain(model: &InceptionXml, index: &MetaIndex, h: &Tensor, k: usize) -> Result<Vec<Row>> {
    let x = model.full_head()?.features(h, false)?;
    let d = x.dims2()?.1;
    let x: Vec<f32> = x.flatten_all()?.to_vec1()?;
    Ok(x.chunks(d.max(1))
        .map(|row| {
            index
                .top_clusters(row, k)
                .into_iter()
                .map(|(l, z)| (l, stable_sigmoid(z)))
                .collect()
        })
        .collect())
}

/// Each row's top-K clusters chosen with the int8 meta index (exact meta logits).
pub fn shortlist(
    plus: &PlusHeads,
    index: &ClusterIndex,
    h: &Tensor,
    fi: &FastIndex,
) -> Result<Shortlisted> {
    let x: Vec<f32> = plus.meta_features(h, false)?.flatten_all()?.to_vec1()?;
    let (hd, top_k) = (plus.config().hidden_dim, plus.config().top_k);
    let best: Vec<Vec<(u32, f32)>> = x
        .chunks(hd)
        .map(|row| fi.meta.top_clusters(row, top_k))
        .collect();
    let clusters = best
        .iter()
        .map(|r| r.iter().map(|e| e.0).collect())
        .collect();
    let meta_logits = best
        .into_iter()
        .map(|r| r.into_iter().map(|e| e.1).collect())
        .collect();
    Ok(Shortlisted {
        sl: xmc::shortlist::from_clusters(clusters, index, None)?,
        meta_logits,
    })
}

/// Top-k labels per row: approximate scores of every candidate from the int8 label table, exact
/// scores of the best `rescore_len(k)` of them.
pub fn rank_candidates(
    plus: &PlusHeads,
    index: &ClusterIndex,
    s: &Shortlisted,
    g: &Tensor,
    fi: &FastIndex,
    k: usize,
    score: ScoreMode,
) -> Result<Vec<Row>> {
    let (sl, meta_of) = (&s.sl, &s.meta_logits);
    let hd = plus.config().hidden_dim;
    let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
    let pre = rescore_len(k);
    let positions: Vec<Vec<u32>> = (0..sl.rows)
        .map(|r| {
            let (qg, sg) = quantize_query(&gv[r * hd..(r + 1) * hd]);
            // Slot ranges of the row's clusters, then every slot's approximate score
            // (σ(ext)·σ(meta) in combined mode; the raw logit orders like σ otherwise).
            let mut starts = Vec::with_capacity(sl.clusters[r].len() + 1);
            starts.push(0usize);
            for &cl in &sl.clusters[r] {
                let n = index.offset(cl as usize + 1) - index.offset(cl as usize);
                starts.push(starts[starts.len() - 1] + n);
            }
            let mut approx = vec![0f32; starts[starts.len() - 1]];
            let mut parts = Vec::with_capacity(sl.clusters[r].len());
            let mut rest = approx.as_mut_slice();
            for w in starts.windows(2) {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
                parts.push(head);
                rest = tail;
            }
            let rows = &fi.extreme.rows;
            parts
                .into_par_iter()
                .zip(sl.clusters[r].par_iter().zip(meta_of[r].par_iter()))
                .with_min_len(16)
                .for_each(|(out, (&cl, &ml))| {
                    let a = index.offset(cl as usize);
                    for (i, o) in out.iter_mut().enumerate() {
                        let z = rows.approx(a + i, &qg, sg);
                        *o = match score {
                            ScoreMode::Extreme => z,
                            ScoreMode::Combined => stable_sigmoid(z) * stable_sigmoid(ml),
                        };
                    }
                });
            // Slot -> table position.
            let slot_pos = |j: usize| {
                let c = starts.partition_point(|&s| s <= j) - 1;
                (index.offset(sl.clusters[r][c] as usize) + j - starts[c]) as u32
            };
            above_rank(&approx, pre)
                .into_iter()
                .map(|j| slot_pos(j as usize))
                .collect()
        })
        .collect();
    let plan = Arc::new(CandidatePlan::from_positions(&positions));
    let (logits, _) = candidate_logits(g, plus.table.as_tensor(), plan.clone())?;
    let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let (w, order) = (plan.width(), index.order());
    Ok((0..sl.rows)
        .map(|r| {
            let mut by_cluster: Vec<(u32, f32)> = sl.clusters[r]
                .iter()
                .copied()
                .zip(meta_of[r].iter().copied())
                .collect();
            by_cluster.sort_unstable_by_key(|e| e.0);
            let cand = positions[r]
                .iter()
                .enumerate()
                .map(|(j, &p)| {
                    let l = order[p as usize];
                    let cl = index.assign[l as usize];
                    let ml = by_cluster
                        .binary_search_by_key(&cl, |e| e.0)
                        .map_or(0.0, |i| by_cluster[i].1);
                    (
                        l,
                        stable_sigmoid(logits[r * w + j]) * meta_factor(score, ml),
                    )
                })
                .collect();
            top_k_sparse(cand, k)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_rank_keeps_the_best_and_ties() {
        let v = [0.5, 3.0, f32::NAN, 2.0, 3.0, -1.0];
        assert_eq!(above_rank(&v, 2), vec![1, 4]);
        assert_eq!(above_rank(&v, 3), vec![1, 3, 4]);
        assert_eq!(above_rank(&v, 10).len(), 6);
        assert!(above_rank(&v, 0).is_empty());
    }

    #[test]
    fn finds_the_exact_top_clusters() {
        let (dim, c) = (48, 3000);
        let w: Vec<f32> = (0..dim * c)
            .map(|i| (((i * 7919) % 1009) as f32 / 1009.0 - 0.5) * 0.3)
            .collect();
        let b: Vec<f32> = (0..c).map(|j| (j % 7) as f32 * 0.01).collect();
        let ix = MetaIndex::new(&w, &b, dim);
        for s in 0..5 {
            let x: Vec<f32> = (0..dim)
                .map(|i| ((i * 31 + s * 17) % 23) as f32 / 23.0 - 0.4)
                .collect();
            let exact: Vec<f32> = (0..c)
                .map(|j| (0..dim).map(|i| w[i * c + j] * x[i]).sum::<f32>() + b[j])
                .collect();
            let want = xmc::predictions::top_k(&exact, 20);
            let got = ix.top_clusters(&x, 20);
            assert_eq!(
                got.iter().map(|e| e.0).collect::<Vec<_>>(),
                want.iter().map(|e| e.0).collect::<Vec<_>>()
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g.1 - w.1).abs() < 1e-4);
            }
        }
    }
}

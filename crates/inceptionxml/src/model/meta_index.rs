//! Fast small-batch InceptionXML+ prediction on the CPU: int8 copies of the two big reads of a
//! query, each followed by exact f32 rescoring of a short list.
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

use rayon::prelude::*;

use crate::error::Result;
use crate::ops::simd::{dot, dot_i8};

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

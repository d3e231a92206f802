//! Extreme logits over a batch's shortlisted candidates (InceptionXML+, MODEL.md §5), with a sparse
//! gradient for the label table.
//!
//! The label table `W_e` (`L × hd`) is stored in **cluster order** (see
//! [`xmc::shortlist::ClusterIndex::order`]): cluster `c` owns the contiguous rows
//! `offset(c)..offset(c+1)`. A row of the batch that shortlisted clusters `c1, c2, …` scores the
//! blocks of those clusters one after another, so its candidate slots are exactly the layout of
//! [`xmc::shortlist::build`] (cluster by cluster, members in increasing label order).
//!
//! Forward: `logit[r, slot] = W_e[p] · g[r]` for every candidate position `p`; padding slots are 0.
//! Backward, from `∂loss/∂logit` (0 in padding slots):
//! * `∂g[r] = Σ_slots ∂logit[r, slot] · W_e[p]` — returned to autograd;
//! * `∂W_e[p] = Σ_{rows r that picked p's cluster} ∂logit[r, slot] · g[r]` — computed per unique
//!   cluster of the batch (blocks are disjoint, so clusters run in parallel without locks) and put
//!   in a [`TableGrad`] side channel as `(positions, rows)`, positions strictly increasing, ready
//!   for [`crate::optim::RowAdam`]. Nothing of size `L × hd` is allocated; the table gets no dense
//!   gradient in autograd.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use xmc::shortlist::{ClusterIndex, Shortlist};

use super::storage::f32_slice;
use crate::error::{Error, Result};

/// One cluster's block as scored by one row: table rows `start..start+len` land in slots
/// `slot..slot+len`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    start: u32,
    len: u32,
    slot: u32,
}

/// Where each row's candidates come from and go to, and which table rows the batch touches.
#[derive(Debug, Clone)]
pub struct CandidatePlan {
    rows: usize,
    width: usize,
    /// Per row, its blocks in slot order.
    row_blocks: Vec<Vec<Block>>,
    /// The batch's distinct blocks `(start, len)`, by increasing start.
    uniq: Vec<(u32, u32)>,
    /// `users[users_off[u]..users_off[u+1]]`: the `(row, slot)` that scored block `u`.
    users_off: Vec<usize>,
    users: Vec<(u32, u32)>,
    /// [`CandidatePlan::slot_positions`], built on first use (the GPU forward and backward both
    /// read it).
    slots: OnceLock<Vec<i32>>,
}

impl CandidatePlan {
    /// The plan of a shortlist built with `index` (the same clusters in the same order).
    pub fn new(shortlist: &Shortlist, index: &ClusterIndex) -> Result<Self> {
        let mut blocks = Vec::with_capacity(shortlist.rows);
        for cs in &shortlist.clusters {
            let mut row = Vec::with_capacity(cs.len());
            for &c in cs {
                let c = c as usize;
                if c >= index.n_clusters() {
                    return Err(Error::Shape(format!(
                        "cluster {c} >= {} clusters",
                        index.n_clusters()
                    )));
                }
                let start = index.offset(c) as u32;
                row.push((start, (index.offset(c + 1) - index.offset(c)) as u32));
            }
            blocks.push(row);
        }
        let plan = Self::from_blocks(&blocks);
        if plan.width != shortlist.width {
            return Err(Error::Shape(format!(
                "candidate plan: width {} but the shortlist has {}",
                plan.width, shortlist.width
            )));
        }
        Ok(plan)
    }

    /// A plan scoring single table rows: row `r` of the batch scores positions `rows[r]`
    /// (distinct within a row), in that order.
    pub fn from_positions(rows: &[Vec<u32>]) -> Self {
        let blocks: Vec<Vec<(u32, u32)>> = rows
            .iter()
            .map(|r| r.iter().map(|&p| (p, 1)).collect())
            .collect();
        Self::from_blocks(&blocks)
    }

    /// Per batch row, its blocks `(start, len)` of table rows in slot order. Blocks of different
    /// batch rows are either identical or disjoint (cluster blocks, or single rows).
    fn from_blocks(blocks_of: &[Vec<(u32, u32)>]) -> Self {
        let rows = blocks_of.len();
        let mut row_blocks = Vec::with_capacity(rows);
        let mut all: Vec<(u32, u32, u32, u32)> = Vec::new(); // (start, len, row, slot)
        let mut width = 1;
        for (r, bs) in blocks_of.iter().enumerate() {
            let mut slot = 0u32;
            let mut blocks = Vec::with_capacity(bs.len());
            for &(start, len) in bs {
                blocks.push(Block { start, len, slot });
                all.push((start, len, r as u32, slot));
                slot += len;
            }
            width = width.max(slot as usize);
            row_blocks.push(blocks);
        }
        all.sort_unstable();
        let mut uniq = Vec::new();
        let mut users_off = vec![0];
        let mut users = Vec::with_capacity(all.len());
        for (start, len, r, slot) in all {
            if uniq.last().map(|u: &(u32, u32)| u.0) != Some(start) {
                if !uniq.is_empty() {
                    users_off.push(users.len());
                }
                uniq.push((start, len));
            }
            users.push((r, slot));
        }
        users_off.push(users.len());
        if uniq.is_empty() {
            users_off = vec![0];
        }
        CandidatePlan {
            rows,
            width,
            row_blocks,
            uniq,
            users_off,
            users,
            slots: OnceLock::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The table rows the batch touches (strictly increasing).
    pub fn touched(&self) -> Vec<u32> {
        self.uniq
            .iter()
            .flat_map(|&(s, l)| s..s + l)
            .collect::<Vec<_>>()
    }

    /// Number of real (unpadded) candidate slots over the batch.
    pub fn n_candidates(&self) -> usize {
        self.row_blocks
            .iter()
            .map(|b| b.iter().map(|x| x.len as usize).sum::<usize>())
            .sum()
    }

    /// Logits `rows × width` (padding 0) from `g` (`rows × dim`) and the table (`L × dim`).
    ///
    /// By distinct block: a block's table rows are read once for all the batch rows that
    /// scored it, in register tiles of 2 table rows × 4 batch rows (`kernels::score_block`);
    /// the block-major results are then put in slot order.
    pub fn scores(&self, g: &[f32], table: &[f32], dim: usize) -> Vec<f32> {
        let mut by_block = vec![0f32; self.block_major_len()];
        self.block_chunks(&mut by_block, |len| len)
            .into_par_iter()
            .with_min_len(2)
            .for_each(|(o, u)| {
                let (start, len) = self.uniq[u];
                let w = &table[start as usize * dim..(start + len) as usize * dim];
                let users = &self.users[self.users_off[u]..self.users_off[u + 1]];
                kernels::score_block(w, dim, users, g, o);
            });
        let mut out = vec![0f32; self.rows * self.width];
        let src = self.block_major_sources();
        out.par_chunks_mut(self.width.max(1))
            .zip(&self.row_blocks)
            .zip(&src)
            .for_each(|((o, blocks), at)| {
                for (b, &at) in blocks.iter().zip(at) {
                    let (slot, len) = (b.slot as usize, b.len as usize);
                    o[slot..slot + len].copy_from_slice(&by_block[at..at + len]);
                }
            });
        out
    }

    /// `∂g` (`rows × dim`) from `∂logits` (`rows × width`).
    ///
    /// By distinct block (its table rows read once), over `GRAD_SLICES` fixed slices of the
    /// blocks, each adding into its own `rows × dim` buffer; the buffers are summed in slice
    /// order, so the result does not depend on the thread count or on scheduling.
    pub fn grad_input(&self, dlog: &[f32], table: &[f32], dim: usize) -> Vec<f32> {
        let n = self.rows * dim;
        let slices = self.block_slices(GRAD_SLICES);
        let parts: Vec<Vec<f32>> = slices
            .par_iter()
            .map(|range| {
                let mut acc = vec![0f32; n];
                for u in range.clone() {
                    let (start, len) = self.uniq[u];
                    let w = &table[start as usize * dim..(start + len) as usize * dim];
                    let users = &self.users[self.users_off[u]..self.users_off[u + 1]];
                    kernels::grad_input_block(w, dim, users, dlog, self.width, &mut acc);
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; n];
        out.par_chunks_mut(dim.max(1))
            .enumerate()
            .for_each(|(r, o)| {
                for p in &parts {
                    for (a, b) in o.iter_mut().zip(&p[r * dim..(r + 1) * dim]) {
                        *a += b;
                    }
                }
            });
        out
    }

    /// Values in the block-major layout: block `u`'s users one after another, `len(u)` values
    /// each.
    fn block_major_len(&self) -> usize {
        (0..self.uniq.len())
            .map(|u| (self.users_off[u + 1] - self.users_off[u]) * self.uniq[u].1 as usize)
            .sum()
    }

    /// `out` cut into one chunk per distinct block, `size(len)` values per user of the block.
    fn block_chunks<'a>(
        &self,
        out: &'a mut [f32],
        size: impl Fn(usize) -> usize,
    ) -> Vec<(&'a mut [f32], usize)> {
        let mut parts = Vec::with_capacity(self.uniq.len());
        let mut rest = out;
        for (u, &(_, len)) in self.uniq.iter().enumerate() {
            let n = (self.users_off[u + 1] - self.users_off[u]) * size(len as usize);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            parts.push((head, u));
            rest = tail;
        }
        parts
    }

    /// Per batch row and block (slot order), where its values start in the block-major layout.
    fn block_major_sources(&self) -> Vec<Vec<usize>> {
        let mut src: Vec<Vec<(u32, usize)>> = self
            .row_blocks
            .iter()
            .map(|b| Vec::with_capacity(b.len()))
            .collect();
        let mut at = 0;
        for (u, &(_, len)) in self.uniq.iter().enumerate() {
            for &(r, slot) in &self.users[self.users_off[u]..self.users_off[u + 1]] {
                src[r as usize].push((slot, at));
                at += len as usize;
            }
        }
        src.into_iter()
            .map(|mut v| {
                v.sort_unstable();
                v.into_iter().map(|x| x.1).collect()
            })
            .collect()
    }

    /// The distinct blocks cut into at most `n` contiguous ranges of about equal work (users ×
    /// rows): a function of the plan only.
    fn block_slices(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let work: Vec<usize> = (0..self.uniq.len())
            .map(|u| (self.users_off[u + 1] - self.users_off[u]) * self.uniq[u].1 as usize)
            .collect();
        let total: usize = work.iter().sum();
        let per = total.div_ceil(n.max(1)).max(1);
        let mut out = Vec::with_capacity(n);
        let (mut from, mut acc) = (0, 0);
        for (u, w) in work.iter().enumerate() {
            acc += w;
            if acc >= per {
                out.push(from..u + 1);
                from = u + 1;
                acc = 0;
            }
        }
        if from < work.len() {
            out.push(from..work.len());
        }
        out
    }

    /// Number of table rows the batch touches (`touched().len()`).
    pub fn n_touched(&self) -> usize {
        self.uniq.iter().map(|u| u.1 as usize).sum()
    }

    /// The batch's distinct blocks `(start, len)` of table rows: disjoint, by increasing start
    /// (their rows are [`CandidatePlan::touched`]).
    pub fn runs(&self) -> &[(u32, u32)] {
        &self.uniq
    }

    /// The gradient rows of distinct block `u` ([`CandidatePlan::runs`]) into `out` (`len × dim`).
    pub fn grad_block(&self, u: usize, dlog: &[f32], g: &[f32], dim: usize, out: &mut [f32]) {
        let users = &self.users[self.users_off[u]..self.users_off[u + 1]];
        kernels::grad_table_block(out, dim, users, dlog, self.width, g);
    }

    /// The gradient of every touched table row, in [`CandidatePlan::touched`] order
    /// (`n_touched() × dim`): by distinct block (blocks are disjoint, so they run in parallel
    /// without locks), in register tiles of 4 table rows × 16 values summed over the block's
    /// users (`kernels::grad_table_block`).
    pub fn grad_table(&self, dlog: &[f32], g: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.n_touched() * dim];
        let mut parts: Vec<(&mut [f32], usize)> = Vec::with_capacity(self.uniq.len());
        let mut rest = out.as_mut_slice();
        for (u, &(_, len)) in self.uniq.iter().enumerate() {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len as usize * dim);
            parts.push((head, u));
            rest = tail;
        }
        parts
            .into_par_iter()
            .for_each(|(o, u)| self.grad_block(u, dlog, g, dim, o));
        out
    }
}

/// Slices of the distinct blocks in [`CandidatePlan::grad_input`] (fixed, for determinism).
const GRAD_SLICES: usize = 8;

/// The per-block kernels of the CPU path: AVX2 + FMA register tiles where the CPU has them
/// ([`kernels::avx`]), plain loops otherwise ([`kernels::plain`]). Every kernel sees one
/// distinct block `w` (`len × dim`, a cluster's table rows) and its users `(row, slot)`.
mod kernels {
    /// Plain loops: the reference, and the path of CPUs without AVX2 + FMA.
    pub mod plain {
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            a.iter().zip(b).map(|(x, y)| x * y).sum()
        }

        /// `out[j·len + i] = w[i]·g[r_j]`.
        pub fn score_block(
            w: &[f32],
            dim: usize,
            users: &[(u32, u32)],
            g: &[f32],
            out: &mut [f32],
        ) {
            let len = w.len() / dim.max(1);
            for (j, &(r, _)) in users.iter().enumerate() {
                let gr = &g[r as usize * dim..(r as usize + 1) * dim];
                for i in 0..len {
                    out[j * len + i] = dot(&w[i * dim..(i + 1) * dim], gr);
                }
            }
        }

        /// `acc[r_j] += Σ_i dlog[r_j, slot_j + i]·w[i]`.
        pub fn grad_input_block(
            w: &[f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            acc: &mut [f32],
        ) {
            let len = w.len() / dim.max(1);
            for &(r, slot) in users {
                let (r, slot) = (r as usize, slot as usize);
                let o = &mut acc[r * dim..(r + 1) * dim];
                for i in 0..len {
                    let a = dlog[r * width + slot + i];
                    for (o, &x) in o.iter_mut().zip(&w[i * dim..(i + 1) * dim]) {
                        *o += a * x;
                    }
                }
            }
        }

        /// `out[i] = Σ_j dlog[r_j, slot_j + i]·g[r_j]`.
        pub fn grad_table_block(
            out: &mut [f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            g: &[f32],
        ) {
            let len = out.len() / dim.max(1);
            out.fill(0.0);
            for &(r, slot) in users {
                let (r, slot) = (r as usize, slot as usize);
                let gr = &g[r * dim..(r + 1) * dim];
                for i in 0..len {
                    let a = dlog[r * width + slot + i];
                    for (o, &x) in out[i * dim..(i + 1) * dim].iter_mut().zip(gr) {
                        *o += a * x;
                    }
                }
            }
        }
    }

    /// AVX2 + FMA register tiles (8 accumulators each, enough independent FMAs to cover their
    /// latency on both ports): scores 2 table rows × 4 users, the input gradient 64 values of a
    /// user's row, the table gradient 4 table rows × 16 values. Callers check the CPU.
    #[cfg(target_arch = "x86_64")]
    pub mod avx {
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx2,fma")]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        /// See [`super::plain::score_block`].
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn score_block(
            w: &[f32],
            dim: usize,
            users: &[(u32, u32)],
            g: &[f32],
            out: &mut [f32],
        ) {
            let len = w.len() / dim.max(1);
            let n8 = dim / 8 * 8;
            assert!(out.len() >= users.len() * len && w.len() >= len * dim);
            for &(r, _) in users {
                assert!((r as usize + 1) * dim <= g.len());
            }
            let wp = w.as_ptr();
            let grow = |j: usize| g.as_ptr().add(users[j].0 as usize * dim);
            let mut j = 0;
            while j + 4 <= users.len() {
                let gs = [grow(j), grow(j + 1), grow(j + 2), grow(j + 3)];
                let mut i = 0;
                while i + 2 <= len {
                    let (w0, w1) = (wp.add(i * dim), wp.add((i + 1) * dim));
                    let mut acc = [_mm256_setzero_ps(); 8];
                    let mut k = 0;
                    while k < n8 {
                        let a0 = _mm256_loadu_ps(w0.add(k));
                        let a1 = _mm256_loadu_ps(w1.add(k));
                        for (q, gq) in gs.iter().enumerate() {
                            let b = _mm256_loadu_ps(gq.add(k));
                            acc[q] = _mm256_fmadd_ps(a0, b, acc[q]);
                            acc[4 + q] = _mm256_fmadd_ps(a1, b, acc[4 + q]);
                        }
                        k += 8;
                    }
                    for (q, gq) in gs.iter().enumerate() {
                        let (mut s0, mut s1) = (hsum(acc[q]), hsum(acc[4 + q]));
                        for t in n8..dim {
                            let b = *gq.add(t);
                            s0 += *w0.add(t) * b;
                            s1 += *w1.add(t) * b;
                        }
                        out[(j + q) * len + i] = s0;
                        out[(j + q) * len + i + 1] = s1;
                    }
                    i += 2;
                }
                if i < len {
                    for (q, gq) in gs.iter().enumerate() {
                        out[(j + q) * len + i] = dot(wp.add(i * dim), *gq, dim);
                    }
                }
                j += 4;
            }
            while j < users.len() {
                let gq = grow(j);
                for i in 0..len {
                    out[j * len + i] = dot(wp.add(i * dim), gq, dim);
                }
                j += 1;
            }
        }

        /// `a·b` over `n` values.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
            let n8 = n / 8 * 8;
            let mut acc = [_mm256_setzero_ps(); 2];
            let mut k = 0;
            while k < n8 {
                let q = (k / 8) & 1;
                acc[q] =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), acc[q]);
                k += 8;
            }
            let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
            for t in n8..n {
                s += *a.add(t) * *b.add(t);
            }
            s
        }

        /// See [`super::plain::grad_input_block`].
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn grad_input_block(
            w: &[f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            acc: &mut [f32],
        ) {
            let len = w.len() / dim.max(1);
            let wp = w.as_ptr();
            for &(r, slot) in users {
                let (r, slot) = (r as usize, slot as usize);
                let d = &dlog[r * width + slot..r * width + slot + len];
                if d.iter().all(|&x| x == 0.0) {
                    continue;
                }
                let o = &mut acc[r * dim..(r + 1) * dim];
                let op = o.as_mut_ptr();
                let mut k = 0;
                while k + 64 <= dim {
                    let mut s = [_mm256_setzero_ps(); 8];
                    for (i, &a) in d.iter().enumerate() {
                        let c = _mm256_set1_ps(a);
                        let wi = wp.add(i * dim + k);
                        for (q, sq) in s.iter_mut().enumerate() {
                            *sq = _mm256_fmadd_ps(c, _mm256_loadu_ps(wi.add(8 * q)), *sq);
                        }
                    }
                    for (q, sq) in s.iter().enumerate() {
                        let p = op.add(k + 8 * q);
                        _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), *sq));
                    }
                    k += 64;
                }
                while k + 8 <= dim {
                    let mut s = _mm256_setzero_ps();
                    for (i, &a) in d.iter().enumerate() {
                        s = _mm256_fmadd_ps(
                            _mm256_set1_ps(a),
                            _mm256_loadu_ps(wp.add(i * dim + k)),
                            s,
                        );
                    }
                    let p = op.add(k);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), s));
                    k += 8;
                }
                for t in k..dim {
                    let mut s = 0f32;
                    for (i, &a) in d.iter().enumerate() {
                        s += a * w[i * dim + t];
                    }
                    o[t] += s;
                }
            }
        }

        /// See [`super::plain::grad_table_block`].
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn grad_table_block(
            out: &mut [f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            g: &[f32],
        ) {
            let len = out.len() / dim.max(1);
            for &(r, slot) in users {
                assert!((r as usize + 1) * dim <= g.len());
                assert!(r as usize * width + slot as usize + len <= dlog.len());
            }
            let coef = |j: usize, i: usize| {
                let (r, slot) = (users[j].0 as usize, users[j].1 as usize);
                *dlog.get_unchecked(r * width + slot + i)
            };
            let grow = |j: usize| g.as_ptr().add(users[j].0 as usize * dim);
            let op = out.as_mut_ptr();
            let mut i0 = 0;
            while i0 < len {
                let ri = (len - i0).min(4);
                let mut k = 0;
                while k + 16 <= dim {
                    let mut s = [_mm256_setzero_ps(); 8];
                    for j in 0..users.len() {
                        let gj = grow(j).add(k);
                        let (b0, b1) = (_mm256_loadu_ps(gj), _mm256_loadu_ps(gj.add(8)));
                        for a in 0..ri {
                            let c = _mm256_set1_ps(coef(j, i0 + a));
                            s[2 * a] = _mm256_fmadd_ps(c, b0, s[2 * a]);
                            s[2 * a + 1] = _mm256_fmadd_ps(c, b1, s[2 * a + 1]);
                        }
                    }
                    for a in 0..ri {
                        let p = op.add((i0 + a) * dim + k);
                        _mm256_storeu_ps(p, s[2 * a]);
                        _mm256_storeu_ps(p.add(8), s[2 * a + 1]);
                    }
                    k += 16;
                }
                for t in k..dim {
                    for a in 0..ri {
                        let mut s = 0f32;
                        for j in 0..users.len() {
                            s += coef(j, i0 + a) * *grow(j).add(t);
                        }
                        out[(i0 + a) * dim + t] = s;
                    }
                }
                i0 += ri;
            }
        }
    }

    macro_rules! dispatch {
        ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?);) => {
            $(#[$m])*
            pub fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                if crate::ops::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { avx::$name($($arg),*) };
                }
                plain::$name($($arg),*)
            }
        };
    }

    dispatch! {
        /// Scores of a block's rows for each of its users, user-major: `out[j·len + i]`.
        pub fn score_block(w: &[f32], dim: usize, users: &[(u32, u32)], g: &[f32], out: &mut [f32]);
    }

    dispatch! {
        /// Adds a block's contribution to its users' input gradients.
        pub fn grad_input_block(
            w: &[f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            acc: &mut [f32],
        );
    }

    dispatch! {
        /// A block's table-row gradients.
        pub fn grad_table_block(
            out: &mut [f32],
            dim: usize,
            users: &[(u32, u32)],
            dlog: &[f32],
            width: usize,
            g: &[f32],
        );
    }
}

impl CandidatePlan {
    /// Per `(row, slot)` (row-major, `rows × width`), the table row it scores, −1 for padding:
    /// what the GPU kernels read instead of the block lists.
    pub fn slot_positions(&self) -> &[i32] {
        self.slots.get_or_init(|| {
            let mut out = vec![-1i32; self.rows * self.width];
            for (r, blocks) in self.row_blocks.iter().enumerate() {
                for b in blocks {
                    let at = r * self.width + b.slot as usize;
                    for (i, o) in out[at..at + b.len as usize].iter_mut().enumerate() {
                        *o = (b.start as usize + i) as i32;
                    }
                }
            }
            out
        })
    }

    /// The users of each touched table row, flattened for the GPU: touched row `t` (in
    /// [`CandidatePlan::touched`] order) is row `t_off[t]` of distinct block `t_block[t]`, whose
    /// users are `(users_r[q], users_slot[q])` for `q` in `users_off[u]..users_off[u+1]`.
    pub fn touched_users(&self) -> TouchedUsers {
        let mut t_block = Vec::new();
        let mut t_off = Vec::new();
        for (u, &(_, len)) in self.uniq.iter().enumerate() {
            for i in 0..len {
                t_block.push(u as u32);
                t_off.push(i);
            }
        }
        TouchedUsers {
            t_block,
            t_off,
            users_off: self.users_off.iter().map(|&o| o as u32).collect(),
            users_r: self.users.iter().map(|u| u.0).collect(),
            users_slot: self.users.iter().map(|u| u.1).collect(),
        }
    }
}

/// See [`CandidatePlan::touched_users`].
#[derive(Debug, Clone, PartialEq)]
pub struct TouchedUsers {
    pub t_block: Vec<u32>,
    pub t_off: Vec<u32>,
    pub users_off: Vec<u32>,
    pub users_r: Vec<u32>,
    pub users_slot: Vec<u32>,
}

/// The table gradient left by a backward pass through [`candidate_logits`]: the touched
/// positions (strictly increasing) and their gradient rows as a `[positions, hd]` tensor on the
/// table's device.
#[derive(Debug, Clone, Default)]
pub struct TableGrad(Arc<Mutex<Option<TableRows>>>);

/// Touched positions (strictly increasing) and their rows as a `[positions, hd]` tensor.
pub type TableRows = (Vec<u32>, Tensor);

impl TableGrad {
    /// The `(positions, rows)` of the last backward pass, if one ran.
    pub fn take(&self) -> Option<TableRows> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

struct Scores {
    plan: Arc<CandidatePlan>,
    sink: TableGrad,
}

fn dims2(l: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    match l.shape().dims() {
        &[a, b] => Ok((a, b)),
        d => candle_core::bail!("{what}: expected 2 dimensions, got {d:?}"),
    }
}

impl Scores {
    /// `(rows, dim)` of the features, checked against the table and the plan.
    fn check(&self, features: &Layout, table: &Layout) -> candle_core::Result<(usize, usize)> {
        let (rows, dim) = dims2(features, "candidate features")?;
        let (_, tdim) = dims2(table, "label table")?;
        if rows != self.plan.rows || dim != tdim {
            candle_core::bail!(
                "candidate scores: features {rows}×{dim}, table width {tdim}, plan for {} rows",
                self.plan.rows
            );
        }
        Ok((rows, dim))
    }
}

impl CustomOp2 for Scores {
    fn name(&self) -> &'static str {
        "candidate-scores"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, dim) = self.check(l1, l2)?;
        let g = f32_slice(s1, l1, "candidate features")?;
        let t = f32_slice(s2, l2, "label table")?;
        let out = self.plan.scores(g, t, dim);
        Ok((CpuStorage::F32(out), Shape::from((rows, self.plan.width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{launch_kernel, storage, upload, view, zeros, Kernel, THREADS};
        use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
        let (rows, dim) = self.check(l1, l2)?;
        let dev = s1.device.clone();
        let g = view(s1, l1, "candidate features")?;
        let t = view(s2, l2, "label table")?;
        let width = self.plan.width;
        let slots = upload(&dev, self.plan.slot_positions())?;
        let out = zeros(&dev, rows * width)?;
        let k = Kernel::new(&dev, "cand_scores_f32")?;
        // One warp per slot.
        let warps_per_block = (THREADS / 32) as usize;
        let blocks = (rows * width).div_ceil(warps_per_block).clamp(1, 65_535) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch_kernel!(k, cfg; &g, &t, &slots, &rows, &width, &dim, &out)?;
        Ok((storage(out, &dev), Shape::from((rows, width))))
    }

    fn bwd(
        &self,
        g: &Tensor,
        table: &Tensor,
        _res: &Tensor,
        dlog: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dlog = dlog.contiguous()?;
        let gx = dlog.apply_op2_no_bwd(table, &GradInput(self.plan.clone()))?;
        // The table's rows go to the side channel (the table is not an autograd input).
        let rows = g.apply_op2_no_bwd(&dlog, &GradTable(self.plan.clone()))?;
        match self.sink.0.lock() {
            Ok(mut s) => *s = Some((self.plan.touched(), rows)),
            Err(_) => candle_core::bail!("candidate scores: gradient sink poisoned"),
        }
        Ok((Some(gx), None))
    }
}

struct GradInput(Arc<CandidatePlan>);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "candidate-scores-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, dim) = dims2(l2, "label table")?;
        let d = f32_slice(s1, l1, "candidate logit gradient")?;
        let t = f32_slice(s2, l2, "label table")?;
        let out = self.0.grad_input(d, t, dim);
        Ok((CpuStorage::F32(out), Shape::from((self.0.rows, dim))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{grid, launch_kernel, storage, upload, view, zeros, Kernel};
        let (_, dim) = dims2(l2, "label table")?;
        let dev = s1.device.clone();
        let d = view(s1, l1, "candidate logit gradient")?;
        let t = view(s2, l2, "label table")?;
        let (rows, width) = (self.0.rows, self.0.width);
        let slots = upload(&dev, self.0.slot_positions())?;
        let out = zeros(&dev, rows * dim)?;
        let k = Kernel::new(&dev, "cand_grad_input_f32")?;
        launch_kernel!(k, grid(rows * dim); &d, &t, &slots, &rows, &width, &dim, &out)?;
        Ok((storage(out, &dev), Shape::from((rows, dim))))
    }
}

struct GradTable(Arc<CandidatePlan>);

impl CustomOp2 for GradTable {
    fn name(&self) -> &'static str {
        "candidate-scores-grad-table"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, dim) = dims2(l1, "candidate features")?;
        let g = f32_slice(s1, l1, "candidate features")?;
        let d = f32_slice(s2, l2, "candidate logit gradient")?;
        let rows = self.0.grad_table(d, g, dim);
        Ok((
            CpuStorage::F32(rows),
            Shape::from((self.0.n_touched(), dim)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{grid, launch_kernel, storage, upload, view, zeros, Kernel};
        let (_, dim) = dims2(l1, "candidate features")?;
        let dev = s1.device.clone();
        let g = view(s1, l1, "candidate features")?;
        let d = view(s2, l2, "candidate logit gradient")?;
        let tu = self.0.touched_users();
        let n = tu.t_block.len();
        let width = self.0.width;
        let out = zeros(&dev, n * dim)?;
        if n > 0 {
            let t_block = upload(&dev, &tu.t_block)?;
            let t_off = upload(&dev, &tu.t_off)?;
            let users_off = upload(&dev, &tu.users_off)?;
            let users_r = upload(&dev, &tu.users_r)?;
            let users_slot = upload(&dev, &tu.users_slot)?;
            let k = Kernel::new(&dev, "cand_grad_table_f32")?;
            launch_kernel!(
                k,
                grid(n * dim);
                &d, &g, &t_block, &t_off, &users_off, &users_r, &users_slot, &n, &width, &dim, &out
            )?;
        }
        Ok((storage(out, &dev), Shape::from((n, dim))))
    }
}

/// Extreme logits `[rows, width]` of `g` (`[rows, hd]`, differentiable) against the candidate
/// rows of `table` (`[L, hd]`, cluster order, never differentiated). After `backward`, the
/// returned [`TableGrad`] holds the table's sparse gradient.
pub fn candidate_logits(
    g: &Tensor,
    table: &Tensor,
    plan: Arc<CandidatePlan>,
) -> Result<(Tensor, TableGrad)> {
    let sink = TableGrad::default();
    let op = Scores {
        plan,
        sink: sink.clone(),
    };
    let out = g.contiguous()?.apply_op2(&table.detach(), op)?;
    Ok((out, sink))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bce_with_logits_masked;
    use candle_core::{Device, Var};
    use xmc::shortlist::build;

    /// 7 labels in 3 clusters of sizes 3, 2, 2.
    fn index() -> ClusterIndex {
        ClusterIndex::new(vec![0, 1, 2, 0, 1, 0, 2], 3).unwrap()
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 211) as f32 - 105.0) / 100.0)
            .collect()
    }

    #[test]
    fn forward_and_sparse_backward_match_a_dense_oracle() {
        let ix = index();
        let (rows, dim) = (3, 5);
        let table = values(7 * dim, 1);
        let g0 = values(rows * dim, 2);
        let meta = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.1, 0.2, 0.9];
        let pos: Vec<&[u32]> = vec![&[1], &[], &[6, 2]];
        let sl = build(&meta, &ix, 1, Some(&pos)).unwrap();
        let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
        assert_eq!(plan.width(), sl.width);
        let dev = Device::Cpu;
        let g = Var::from_slice(&g0, (rows, dim), &dev).unwrap();
        let t = Tensor::from_slice(&table, (7, dim), &dev).unwrap();
        let (logits, sink) = candidate_logits(g.as_tensor(), &t, plan.clone()).unwrap();
        let y = Tensor::from_slice(&sl.targets, (rows, sl.width), &dev).unwrap();
        let m = Tensor::from_slice(&sl.mask, (rows, sl.width), &dev).unwrap();
        let loss = bce_with_logits_masked(&logits, &y, &m).unwrap();
        let grads = loss.backward().unwrap();
        let gg: Vec<f32> = grads
            .get(g.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (tpos, tgrad) = sink.take().unwrap();
        let tgrad: Vec<f32> = tgrad.flatten_all().unwrap().to_vec1().unwrap();

        // Oracle: explicit loops over (row, slot) in label space.
        let order = ix.order();
        let lg: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        let n: f32 = sl.mask.iter().sum();
        let mut want_g = vec![0f32; rows * dim];
        let mut want_t = vec![0f32; 7 * dim];
        let positions = ix.positions();
        for r in 0..rows {
            for s in 0..sl.width {
                let i = r * sl.width + s;
                if sl.mask[i] == 0.0 {
                    assert_eq!(lg[i], 0.0);
                    continue;
                }
                let p = positions[sl.labels[i] as usize] as usize;
                assert_eq!(order[p], sl.labels[i]);
                let z: f32 = (0..dim).map(|k| table[p * dim + k] * g0[r * dim + k]).sum();
                assert!((z - lg[i]).abs() < 1e-5);
                let d = (1.0 / (1.0 + (-z).exp()) - sl.targets[i]) / n;
                for k in 0..dim {
                    want_g[r * dim + k] += d * table[p * dim + k];
                    want_t[p * dim + k] += d * g0[r * dim + k];
                }
            }
        }
        for (a, b) in gg.iter().zip(&want_g) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert!(tpos.windows(2).all(|w| w[0] < w[1]));
        let touched: Vec<u32> = plan.touched();
        assert_eq!(tpos, touched);
        for p in 0..7u32 {
            let row = &want_t[p as usize * dim..(p as usize + 1) * dim];
            match tpos.iter().position(|&x| x == p) {
                Some(j) => {
                    for (a, b) in tgrad[j * dim..(j + 1) * dim].iter().zip(row) {
                        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
                    }
                }
                None => assert!(row.iter().all(|&v| v == 0.0), "untouched row {p}"),
            }
        }
    }

    /// The tiled block kernels against plain loops over (row, slot), at sizes that exercise the
    /// full tiles and every remainder (dims 480 and 37, blocks of 1–13 rows, 1–40 users).
    #[test]
    fn tiled_kernels_match_plain_loops() {
        for dim in [480usize, 37] {
            let (rows, n_blocks) = (40, 9);
            let sizes: Vec<u32> = (0..n_blocks).map(|b| 1 + (b * 5 % 13) as u32).collect();
            let starts: Vec<u32> = sizes
                .iter()
                .scan(0u32, |a, &l| {
                    let s = *a;
                    *a += l;
                    Some(s)
                })
                .collect();
            let n_table = (starts[n_blocks - 1] + sizes[n_blocks - 1]) as usize;
            // Row r scores blocks (r·b + 1) mod 7 < 4, in an order of its own.
            let blocks: Vec<Vec<(u32, u32)>> = (0..rows)
                .map(|r| {
                    let mut v: Vec<usize> = (0..n_blocks).filter(|b| (r * b + 1) % 7 < 4).collect();
                    let k = r % v.len().max(1);
                    v.rotate_left(k);
                    v.iter().map(|&b| (starts[b], sizes[b])).collect()
                })
                .collect();
            let plan = CandidatePlan::from_blocks(&blocks);
            let table = values(n_table * dim, 3);
            let g = values(rows * dim, 4);
            let dlog: Vec<f32> = values(rows * plan.width(), 5);
            let mut want_s = vec![0f32; rows * plan.width()];
            let mut want_g = vec![0f32; rows * dim];
            let mut want_t = vec![0f32; n_table * dim];
            for (r, bs) in plan.row_blocks.iter().enumerate() {
                for b in bs {
                    for i in 0..b.len as usize {
                        let p = b.start as usize + i;
                        let at = r * plan.width() + b.slot as usize + i;
                        let (w, x) = (&table[p * dim..(p + 1) * dim], &g[r * dim..(r + 1) * dim]);
                        want_s[at] = w.iter().zip(x).map(|(a, b)| a * b).sum();
                        for k in 0..dim {
                            want_g[r * dim + k] += dlog[at] * w[k];
                            want_t[p * dim + k] += dlog[at] * x[k];
                        }
                    }
                }
            }
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len(), "{what}");
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() < 1e-3 * (1.0 + y.abs()),
                        "{what}[{i}] {x} vs {y}"
                    );
                }
            };
            // Padding slots: 0 in the scores, and 0 in dlog (the loss gives them none).
            let zero_padding = |v: &[f32]| {
                let mut v = v.to_vec();
                for (r, bs) in plan.row_blocks.iter().enumerate() {
                    let used: u32 = bs.iter().map(|b| b.len).sum();
                    v[r * plan.width() + used as usize..(r + 1) * plan.width()].fill(0.0);
                }
                v
            };
            close(
                &plan.scores(&g, &table, dim),
                &zero_padding(&want_s),
                "scores",
            );
            let dl = zero_padding(&dlog);
            close(&plan.grad_input(&dl, &table, dim), &want_g, "grad_input");
            let touched = plan.touched();
            let got = plan.grad_table(&dl, &g, dim);
            let want: Vec<f32> = touched
                .iter()
                .flat_map(|&p| want_t[p as usize * dim..(p as usize + 1) * dim].to_vec())
                .collect();
            close(&got, &want, "grad_table");
            // The dispatched (AVX2 where the CPU has it) block kernels against the plain loops.
            for u in 0..plan.uniq.len() {
                let (start, len) = plan.uniq[u];
                let w = &table[start as usize * dim..(start + len) as usize * dim];
                let users = &plan.users[plan.users_off[u]..plan.users_off[u + 1]];
                let n = users.len() * len as usize;
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                kernels::score_block(w, dim, users, &g, &mut a);
                kernels::plain::score_block(w, dim, users, &g, &mut b);
                close(&a, &b, "score_block");
                let n = rows * dim;
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                kernels::grad_input_block(w, dim, users, &dl, plan.width(), &mut a);
                kernels::plain::grad_input_block(w, dim, users, &dl, plan.width(), &mut b);
                close(&a, &b, "grad_input_block");
                let n = len as usize * dim;
                let (mut a, mut b) = (vec![1f32; n], vec![2f32; n]);
                kernels::grad_table_block(&mut a, dim, users, &dl, plan.width(), &g);
                kernels::plain::grad_table_block(&mut b, dim, users, &dl, plan.width(), &g);
                close(&a, &b, "grad_table_block");
            }
            // The same result on one thread as on several (fixed slices).
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            assert_eq!(
                one.install(|| plan.grad_input(&dl, &table, dim)),
                plan.grad_input(&dl, &table, dim)
            );
        }
    }

    /// The loops of the GPU kernels (kernels/ops.cu `cand_*`) over the flat arrays, on the host.
    fn flat_kernels(
        plan: &CandidatePlan,
        g: &[f32],
        table: &[f32],
        dlog: &[f32],
        dim: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (rows, width) = (plan.rows(), plan.width());
        let sp = plan.slot_positions();
        let mut scores = vec![0f32; rows * width];
        for (w, o) in scores.iter_mut().enumerate() {
            if sp[w] >= 0 {
                let p = sp[w] as usize;
                *o = (0..dim)
                    .map(|j| table[p * dim + j] * g[(w / width) * dim + j])
                    .sum();
            }
        }
        let mut dg = vec![0f32; rows * dim];
        for (k, o) in dg.iter_mut().enumerate() {
            let (r, j) = (k / dim, k % dim);
            for s in 0..width {
                let (p, d) = (sp[r * width + s], dlog[r * width + s]);
                if p >= 0 && d != 0.0 {
                    *o += d * table[p as usize * dim + j];
                }
            }
        }
        let tu = plan.touched_users();
        let mut dw = vec![0f32; tu.t_block.len() * dim];
        for (k, o) in dw.iter_mut().enumerate() {
            let (t, j) = (k / dim, k % dim);
            let (u, i) = (tu.t_block[t] as usize, tu.t_off[t] as usize);
            for q in tu.users_off[u] as usize..tu.users_off[u + 1] as usize {
                let r = tu.users_r[q] as usize;
                let d = dlog[r * width + tu.users_slot[q] as usize + i];
                if d != 0.0 {
                    *o += d * g[r * dim + j];
                }
            }
        }
        (scores, dg, dw)
    }

    #[test]
    fn the_gpu_kernels_flat_arrays_give_the_block_results() {
        let ix = index();
        let (rows, dim) = (4, 6);
        let table = values(7 * dim, 3);
        let g = values(rows * dim, 4);
        let meta = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.1, 0.2, 0.9, 0.4, 0.6, 0.5];
        let pos: Vec<&[u32]> = vec![&[1], &[], &[6, 2], &[0]];
        let sl = build(&meta, &ix, 2, Some(&pos)).unwrap();
        let plan = CandidatePlan::new(&sl, &ix).unwrap();
        let dlog: Vec<f32> = values(rows * plan.width(), 5)
            .iter()
            .zip(&sl.mask)
            .map(|(d, m)| d * m)
            .collect();
        let (scores, dg, dw) = flat_kernels(&plan, &g, &table, &dlog, dim);
        let close = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        };
        close(&scores, &plan.scores(&g, &table, dim));
        close(&dg, &plan.grad_input(&dlog, &table, dim));
        let want = plan.grad_table(&dlog, &g, dim);
        assert_eq!(plan.touched().len() * dim, dw.len());
        close(&dw, &want);
        // Padding slots are -1 exactly where the shortlist masks them out.
        let sp = plan.slot_positions();
        for (p, m) in sp.iter().zip(&sl.mask) {
            assert_eq!(*p < 0, *m == 0.0);
        }
        let from_positions = CandidatePlan::from_positions(&[vec![4, 1], vec![6]]);
        assert_eq!(from_positions.slot_positions(), vec![4, 1, 6, -1]);
    }

    #[test]
    fn the_table_gradient_is_finite_differences() {
        // d loss / d table[p][k] by central differences on a tiny case.
        let ix = index();
        let (rows, dim) = (2, 3);
        let table = values(7 * dim, 3);
        let g0 = values(rows * dim, 4);
        let meta = [0.2, 0.9, 0.4, 0.7, 0.1, 0.6];
        let pos: Vec<&[u32]> = vec![&[4], &[0, 5]];
        let sl = build(&meta, &ix, 2, Some(&pos)).unwrap();
        let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
        let dev = Device::Cpu;
        let y = Tensor::from_slice(&sl.targets, (rows, sl.width), &dev).unwrap();
        let m = Tensor::from_slice(&sl.mask, (rows, sl.width), &dev).unwrap();
        let loss_at = |tab: &[f32]| -> f32 {
            let t = Tensor::from_slice(tab, (7, dim), &dev).unwrap();
            let g = Tensor::from_slice(&g0, (rows, dim), &dev).unwrap();
            let (l, _) = candidate_logits(&g, &t, plan.clone()).unwrap();
            bce_with_logits_masked(&l, &y, &m)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let g = Var::from_slice(&g0, (rows, dim), &dev).unwrap();
        let t = Tensor::from_slice(&table, (7, dim), &dev).unwrap();
        let (l, sink) = candidate_logits(g.as_tensor(), &t, plan.clone()).unwrap();
        bce_with_logits_masked(&l, &y, &m)
            .unwrap()
            .backward()
            .unwrap();
        let (tpos, tgrad) = sink.take().unwrap();
        let tgrad: Vec<f32> = tgrad.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-2f32;
        for (j, &p) in tpos.iter().enumerate() {
            for k in 0..dim {
                let i = p as usize * dim + k;
                let mut a = table.clone();
                a[i] += h;
                let mut b = table.clone();
                b[i] -= h;
                let fd = (loss_at(&a) - loss_at(&b)) / (2.0 * h);
                assert!(
                    (fd - tgrad[j * dim + k]).abs() < 2e-4,
                    "{fd} vs {}",
                    tgrad[j * dim + k]
                );
            }
        }
    }
}

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

mod kernels;
mod op;
#[cfg(test)]
mod tests;

pub use op::{candidate_logits, TableGrad, TableRows};

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

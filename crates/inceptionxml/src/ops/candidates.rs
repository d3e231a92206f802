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
//!   for [`crate::ops::RowAdam`]. Nothing of size `L × hd` is allocated; the table gets no dense
//!   gradient in autograd.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use xmc::shortlist::{ClusterIndex, Shortlist};

use super::simd::{axpy, dot};
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
    pub fn scores(&self, g: &[f32], table: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.width];
        // One task per (row, block): batch-1 prediction spreads its blocks over the cores.
        let mut tasks: Vec<(&mut [f32], Block, usize)> = Vec::new();
        for (r, (chunk, blocks)) in out.chunks_mut(self.width).zip(&self.row_blocks).enumerate() {
            let mut rest = chunk;
            for &b in blocks {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(b.len as usize);
                tasks.push((head, b, r));
                rest = tail;
            }
        }
        tasks.into_par_iter().with_min_len(4).for_each(|(o, b, r)| {
            let gr = &g[r * dim..(r + 1) * dim];
            let w = &table[b.start as usize * dim..(b.start + b.len) as usize * dim];
            for (o, wrow) in o.iter_mut().zip(w.chunks_exact(dim)) {
                *o = dot(wrow, gr);
            }
        });
        out
    }

    /// `∂g` (`rows × dim`) from `∂logits` (`rows × width`).
    pub fn grad_input(&self, dlog: &[f32], table: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * dim];
        out.par_chunks_mut(dim)
            .zip(&self.row_blocks)
            .enumerate()
            .for_each(|(r, (o, blocks))| {
                let d = &dlog[r * self.width..(r + 1) * self.width];
                for b in blocks {
                    let w = &table[b.start as usize * dim..(b.start + b.len) as usize * dim];
                    let ds = &d[b.slot as usize..(b.slot + b.len) as usize];
                    for (&a, wrow) in ds.iter().zip(w.chunks_exact(dim)) {
                        if a != 0.0 {
                            axpy(o, a, wrow);
                        }
                    }
                }
            });
        out
    }

    /// Number of table rows the batch touches (`touched().len()`).
    pub fn n_touched(&self) -> usize {
        self.uniq.iter().map(|u| u.1 as usize).sum()
    }

    /// The gradient of every touched table row, in [`CandidatePlan::touched`] order
    /// (`n_touched() × dim`).
    pub fn grad_table(&self, dlog: &[f32], g: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.n_touched() * dim];
        let mut parts: Vec<(&mut [f32], usize)> = Vec::with_capacity(self.uniq.len());
        let mut rest = out.as_mut_slice();
        for (u, &(_, len)) in self.uniq.iter().enumerate() {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len as usize * dim);
            parts.push((head, u));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(o, u)| {
            for &(r, slot) in &self.users[self.users_off[u]..self.users_off[u + 1]] {
                let (r, slot) = (r as usize, slot as usize);
                let gr = &g[r * dim..(r + 1) * dim];
                let d = &dlog[r * self.width + slot..];
                for (orow, &a) in o.chunks_exact_mut(dim).zip(d) {
                    if a != 0.0 {
                        axpy(orow, a, gr);
                    }
                }
            }
        });
        out
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

//! Lazy ("sparse") Adam for big row tables such as the word-embedding table.
//!
//! Only the rows touched by a batch are updated: their moments and values. Untouched rows keep
//! their moments as they are (no decay), which is what makes the update cost proportional to
//! the batch instead of the table — PyTorch's `SparseAdam` / TensorFlow's `LazyAdam` semantics.
//! The bias-correction step `t` is the GLOBAL step (the number of calls to
//! [`RowAdam::step`]), as in `SparseAdam`; with every row touched at every step this is exactly
//! dense Adam. Row 0 (the padding row) is never updated, whatever the gradient says.
//!
//! [`RowGroups`] turns the gradient with respect to the looked-up vectors (one row per token
//! position) into unique row ids and summed gradient rows.

use std::collections::HashMap;

use candle_core::{
    CpuStorage, CustomOp1, DType, Device, InplaceOp1, InplaceOp2, Layout, Shape, Tensor, Var,
};
use rayon::prelude::*;

use super::adam::{AdamCoef, AdamConsts, Moments, MomentsMut};
use crate::error::{Error, Result};
use crate::ops::storage::{f32_slice, f32_slice_mut};

/// The padding row: never updated.
pub const PAD_ROW: u32 = xmc::vocab::PAD_ID;

/// How the looked-up rows of a batch group by table row: the unique row ids (ascending,
/// `PAD_ROW` left out) and, per unique id `u`, the lookup positions
/// `order[starts[u]..starts[u+1]]` that hold it. Built on the host from the batch's ids (the
/// loader knows them), then applied to the gradient on the host or on the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGroups {
    pub ids: Vec<u32>,
    pub order: Vec<u32>,
    pub starts: Vec<u32>,
    /// Lookup positions (PAD included): the gradient has one row per position.
    pub positions: usize,
}

impl RowGroups {
    pub fn new(ids: &[u32]) -> Self {
        let mut order: Vec<u32> = (0..ids.len() as u32)
            .filter(|&i| ids[i as usize] != PAD_ROW)
            .collect();
        order.sort_unstable_by_key(|&i| ids[i as usize]);
        let mut starts = Vec::new();
        let mut uniq = Vec::new();
        for (k, &pos) in order.iter().enumerate() {
            let id = ids[pos as usize];
            if uniq.last() != Some(&id) {
                uniq.push(id);
                starts.push(k as u32);
            }
        }
        starts.push(order.len() as u32);
        RowGroups {
            ids: uniq,
            order,
            starts,
            positions: ids.len(),
        }
    }

    /// Errors unless `values` is one `dim`-wide gradient row per lookup position.
    fn check(&self, values: usize, dim: usize) -> Result<()> {
        if values != self.positions * dim {
            return Err(Error::Shape(format!(
                "row groups: {} ids × {dim} != {values} gradient values",
                self.positions
            )));
        }
        Ok(())
    }

    /// Summed gradient rows (`ids.len() × dim`) from one gradient row per lookup position
    /// (`grads`: `positions × dim`).
    pub fn sum_host(&self, grads: &[f32], dim: usize) -> Result<Vec<f32>> {
        self.check(grads.len(), dim)?;
        let mut out = vec![0f32; self.ids.len() * dim];
        out.par_chunks_mut(dim.max(1))
            .enumerate()
            .for_each(|(u, row)| {
                let (a, b) = (self.starts[u] as usize, self.starts[u + 1] as usize);
                for &pos in &self.order[a..b] {
                    let g = &grads[pos as usize * dim..(pos as usize + 1) * dim];
                    for (o, &x) in row.iter_mut().zip(g) {
                        *o += x;
                    }
                }
            });
        Ok(out)
    }

    /// The same on a `[positions, dim]` tensor (any device), without leaving the device.
    pub fn sum(&self, grads: &Tensor) -> Result<Tensor> {
        let dim = grads.dim(candle_core::D::Minus1)?;
        let g = grads.reshape(((), dim))?.contiguous()?;
        self.check(g.elem_count(), dim)?;
        Ok(g.apply_op1_no_bwd(&SegmentSum { groups: self, dim })?)
    }
}

/// [`RowGroups::sum`] as an op.
struct SegmentSum<'a> {
    groups: &'a RowGroups,
    dim: usize,
}

impl CustomOp1 for SegmentSum<'_> {
    fn name(&self) -> &'static str {
        "segment-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, "row gradients")?;
        let out = self
            .groups
            .sum_host(g, self.dim)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let n = self.groups.ids.len();
        Ok((CpuStorage::F32(out), Shape::from((n, self.dim))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::ops::cuda::{grid, launch_kernel, storage, upload, view, zeros, Kernel};
        let dev = s.device.clone();
        let src = view(s, l, "row gradients")?;
        let (n, dim) = (self.groups.ids.len(), self.dim);
        let order = upload(&dev, &self.groups.order)?;
        let starts = upload(&dev, &self.groups.starts)?;
        let out = zeros(&dev, n * dim)?;
        if n > 0 {
            let k = Kernel::new(&dev, "segment_sum_f32")?;
            launch_kernel!(k, grid(n * dim); &src, &order, &starts, &n, &dim, &out)?;
        }
        Ok((storage(out, &dev), Shape::from((n, dim))))
    }
}

/// Disjoint mutable rows `ids` (strictly increasing) of a row-major `data` with `dim` columns.
fn rows_mut<'a>(mut data: &'a mut [f32], dim: usize, ids: &[u32]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(ids.len());
    let mut base = 0usize;
    for &id in ids {
        let start = id as usize * dim - base;
        let (_, rest) = std::mem::take(&mut data).split_at_mut(start);
        let (row, rest) = rest.split_at_mut(dim);
        out.push(row);
        data = rest;
        base = (id as usize + 1) * dim;
    }
    out
}

/// The in-place row-Adam op: dst = the table, src = the gradient rows of `ids`, the moments
/// borrowed from the optimiser (host slices on the CPU, device tensors on a GPU).
struct RowKernel<'a> {
    coef: AdamCoef,
    dim: usize,
    ids: &'a [u32],
    moments: MomentsMut<'a>,
}

impl InplaceOp2 for RowKernel<'_> {
    fn name(&self) -> &'static str {
        "row-adam"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_slice_mut(s, l, "row-adam table")?;
        let grads = f32_slice(gs, gl, "row-adam gradient")?;
        let (mut m, mut v) = self.moments.host("row-adam")?;
        if p.len() != m.len() || grads.len() != self.ids.len() * self.dim {
            candle_core::bail!(
                "row-adam: table has {} values, state {}, gradient {} for {} rows",
                p.len(),
                m.len(),
                grads.len(),
                self.ids.len()
            );
        }
        let dim = self.dim;
        let prow = rows_mut(p, dim, self.ids);
        let mrow = rows_mut(&mut m, dim, self.ids);
        let vrow = rows_mut(&mut v, dim, self.ids);
        let coef = self.coef;
        prow.into_par_iter()
            .zip(mrow.into_par_iter().zip(vrow.into_par_iter()))
            .zip(grads.par_chunks(dim))
            .for_each(|((p, (m, v)), g)| coef.apply(p, g, m, v));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &mut candle_core::CudaStorage,
        l: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        use crate::ops::cuda::{grid, launch_kernel, upload, view, view_mut, with_moments, Kernel};
        let dev = s.device.clone();
        let k = Kernel::new(&dev, "row_adam_f32")?;
        let g = view(gs, gl, "row-adam gradient")?;
        let (n_ids, dim) = (self.ids.len(), self.dim);
        if g.len() != n_ids * dim {
            candle_core::bail!("row-adam: gradient {} for {n_ids} rows of {dim}", g.len());
        }
        let ids = upload(&dev, self.ids)?;
        let c = self.coef;
        let mut p = view_mut(s, l, "row-adam table")?;
        let n = p.len();
        let (m, v) = self.moments.device("row-adam")?;
        with_moments(
            m,
            v,
            n,
            |m, v| launch_kernel!(k, grid(n_ids * dim); &mut p, &g, m, v, &ids, &n_ids, &dim; adam c),
        )
    }
}

/// A table gradient given by runs of rows: run `u` covers rows `runs[u].0..runs[u].0 + runs[u].1`
/// (runs disjoint, increasing), and `grad(u, out)` writes its gradient rows into `out`
/// (`len × dim`).
pub type RunGrad<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// The row-Adam update of [`RowAdam::step_runs`]: each run's gradient is computed into a small
/// buffer and applied at once, so no gradient of the touched rows is ever materialised.
struct RunKernel<'a> {
    coef: AdamCoef,
    dim: usize,
    runs: &'a [(u32, u32)],
    grad: &'a RunGrad<'a>,
    moments: MomentsMut<'a>,
}

/// `data` cut into the disjoint increasing runs `(start, len)` of `dim`-wide rows.
fn runs_mut<'a>(mut data: &'a mut [f32], dim: usize, runs: &[(u32, u32)]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(runs.len());
    let mut base = 0usize;
    for &(start, len) in runs {
        let (_, rest) = std::mem::take(&mut data).split_at_mut(start as usize * dim - base);
        let (run, rest) = rest.split_at_mut(len as usize * dim);
        out.push(run);
        data = rest;
        base = (start + len) as usize * dim;
    }
    out
}

impl InplaceOp1 for RunKernel<'_> {
    fn name(&self) -> &'static str {
        "row-adam-runs"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let p = f32_slice_mut(s, l, "row-adam table")?;
        let (mut m, mut v) = self.moments.host("row-adam")?;
        if p.len() != m.len() {
            candle_core::bail!("row-adam: table has {} values, state {}", p.len(), m.len());
        }
        let dim = self.dim;
        let prow = runs_mut(p, dim, self.runs);
        let mrow = runs_mut(&mut m, dim, self.runs);
        let vrow = runs_mut(&mut v, dim, self.runs);
        let coef = self.coef;
        prow.into_par_iter()
            .zip(mrow.into_par_iter().zip(vrow.into_par_iter()))
            .enumerate()
            .for_each(|(u, (p, (m, v)))| {
                let mut g = vec![0f32; p.len()];
                (self.grad)(u, &mut g);
                coef.apply(p, &g, m, v);
            });
        Ok(())
    }
}

/// Lazy Adam state for one `rows × dim` table.
pub struct RowAdam {
    /// Name prefix of the saved state (`rowadam` for the word table).
    prefix: String,
    /// A row that never moves (the word table's padding row), if any.
    pad: Option<u32>,
    rows: usize,
    dim: usize,
    moments: Moments,
    step: u64,
    consts: AdamConsts,
}

impl RowAdam {
    /// State for the word table: saved as `rowadam.*`, row [`PAD_ROW`] never updated.
    pub fn new(rows: usize, dim: usize, consts: AdamConsts) -> Self {
        Self::named("rowadam", Some(PAD_ROW), rows, dim, consts)
    }

    /// State for any table: saved as `{prefix}.m`, `{prefix}.v`, `{prefix}.step`; `pad` names a
    /// row that never moves.
    pub fn named(
        prefix: &str,
        pad: Option<u32>,
        rows: usize,
        dim: usize,
        consts: AdamConsts,
    ) -> Self {
        RowAdam {
            prefix: prefix.to_string(),
            pad,
            rows,
            dim,
            moments: Moments::host_zeros(rows * dim),
            step: 0,
            consts,
        }
    }

    /// The same state with its moments on `device` (the table's device); zero moments.
    pub fn on(mut self, device: &Device) -> Result<Self> {
        if !device.is_cpu() {
            self.moments = Moments::zeros(&Shape::from((self.rows, self.dim)), device)?;
        }
        Ok(self)
    }

    /// Writes every page of the moment buffers so that they are resident (they start as
    /// untouched zero pages): lets a benchmark count the tables' full size before the first step.
    pub fn make_resident(&mut self) {
        self.moments.make_resident();
    }

    /// Whether `table` has the shape of this state.
    fn check_table(&self, table: &Var) -> Result<()> {
        if table.dims() != [self.rows, self.dim] {
            return Err(Error::Shape(format!(
                "row-adam: table {:?} but state for {}×{}",
                table.dims(),
                self.rows,
                self.dim
            )));
        }
        Ok(())
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Global step count so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Updates rows `ids` (strictly increasing, `< rows`) of `table` with the summed gradient
    /// rows `grads` (`ids.len() × dim`, host values). The pad row (if any) is skipped if present.
    /// Counts one global step even when no row is touched.
    pub fn step(
        &mut self,
        table: &Var,
        ids: &[u32],
        grads: &[f32],
        lr: f64,
        beta1: f64,
    ) -> Result<()> {
        if grads.len() != ids.len() * self.dim {
            return Err(Error::Shape(format!(
                "row-adam: {} ids × {} != {} gradient values",
                ids.len(),
                self.dim,
                grads.len()
            )));
        }
        // No rows: a host tensor (nothing is copied to a GPU for an empty update).
        let dev = if ids.is_empty() {
            Device::Cpu
        } else {
            table.device().clone()
        };
        let g = Tensor::from_slice(grads, (ids.len(), self.dim), &dev)?;
        self.step_rows(table, ids, &g, lr, beta1)
    }

    /// [`RowAdam::step`] with the gradient rows as a `[ids.len(), dim]` tensor on the table's
    /// device (no copy to the host).
    pub fn step_rows(
        &mut self,
        table: &Var,
        ids: &[u32],
        grads: &Tensor,
        lr: f64,
        beta1: f64,
    ) -> Result<()> {
        self.check_table(table)?;
        if grads.dims() != [ids.len(), self.dim] {
            return Err(Error::Shape(format!(
                "row-adam: {} ids × {} but gradient rows {:?}",
                ids.len(),
                self.dim,
                grads.dims()
            )));
        }
        for w in ids.windows(2) {
            if w[0] >= w[1] {
                return Err(Error::Shape(
                    "row-adam: row ids must be strictly increasing".into(),
                ));
            }
        }
        if let Some(&last) = ids.last() {
            if last as usize >= self.rows {
                return Err(Error::Shape(format!(
                    "row-adam: row {last} >= {} rows",
                    self.rows
                )));
            }
        }
        self.step += 1;
        let (ids, grads) = if self.pad.is_some() && ids.first() == self.pad.as_ref() {
            (&ids[1..], grads.narrow(0, 1, ids.len() - 1)?)
        } else {
            (ids, grads.clone())
        };
        if ids.is_empty() {
            return Ok(());
        }
        let grads = grads.contiguous()?;
        let coef = AdamCoef::new(lr, beta1, self.consts, self.step);
        let dim = self.dim;
        let kernel = RowKernel {
            coef,
            dim,
            ids,
            moments: self.moments.borrow_mut(),
        };
        table.as_tensor().inplace_op2(&grads, &kernel)?;
        Ok(())
    }

    /// [`RowAdam::step`] for the rows of `runs` (disjoint, increasing `(start, len)`), whose
    /// gradient rows `grad` computes run by run as the update goes (on the CPU; a table without
    /// a pad row). Counts one global step even when no row is touched.
    pub fn step_runs(
        &mut self,
        table: &Var,
        runs: &[(u32, u32)],
        grad: &RunGrad<'_>,
        lr: f64,
        beta1: f64,
    ) -> Result<()> {
        self.check_table(table)?;
        if self.pad.is_some() || !table.device().is_cpu() {
            return Err(Error::Shape(
                "row-adam: runs of rows update a CPU table without a pad row only".into(),
            ));
        }
        let mut end = 0u64;
        for &(start, len) in runs {
            if (start as u64) < end || len == 0 {
                return Err(Error::Shape(
                    "row-adam: runs must be non-empty, disjoint and increasing".into(),
                ));
            }
            end = start as u64 + len as u64;
        }
        if end > self.rows as u64 {
            return Err(Error::Shape(format!(
                "row-adam: run ends at row {end} > {} rows",
                self.rows
            )));
        }
        self.step += 1;
        if runs.is_empty() {
            return Ok(());
        }
        let kernel = RunKernel {
            coef: AdamCoef::new(lr, beta1, self.consts, self.step),
            dim: self.dim,
            runs,
            grad,
            moments: self.moments.borrow_mut(),
        };
        table.as_tensor().inplace_op1(&kernel)?;
        Ok(())
    }

    /// The state as named tensors (`{prefix}.m`, `{prefix}.v`, `{prefix}.step`) for saving.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let dev = Device::Cpu;
        let p = &self.prefix;
        let mut out = HashMap::new();
        let (m, v) = self
            .moments
            .to_tensors(&Shape::from((self.rows, self.dim)))?;
        out.insert(format!("{p}.m"), m);
        out.insert(format!("{p}.v"), v);
        out.insert(
            format!("{p}.step"),
            Tensor::from_slice(&[self.step as u32, (self.step >> 32) as u32], 2, &dev)?,
        );
        Ok(out)
    }

    /// Restores the state written by [`RowAdam::state_tensors`]; `file` names the source.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, file: &str) -> Result<()> {
        let bad = |msg: String| Error::Model {
            path: file.to_string(),
            msg,
        };
        let get = |k: &str| {
            state
                .get(k)
                .ok_or_else(|| bad(format!("missing tensor {k}")))
        };
        let p = &self.prefix;
        let (km, kv, ks) = (format!("{p}.m"), format!("{p}.v"), format!("{p}.step"));
        let (m, v) = (get(&km)?, get(&kv)?);
        for (k, t) in [(&km, m), (&kv, v)] {
            if t.dims() != [self.rows, self.dim] {
                return Err(bad(format!(
                    "{k} has shape {:?}, the table {}×{}",
                    t.dims(),
                    self.rows,
                    self.dim
                )));
            }
        }
        self.moments.set(m, v)?;
        let st: Vec<u32> = get(&ks)?.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
        if st.len() != 2 {
            return Err(bad(format!("{ks} must hold 2 values")));
        }
        self.step = st[0] as u64 | ((st[1] as u64) << 32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::adam::Adam;
    use super::*;

    fn table(rows: usize, dim: usize) -> Vec<f32> {
        (0..rows * dim)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 100.0)
            .collect()
    }

    #[test]
    fn groups_sum_repeated_ids_and_drop_pad() {
        let ids = [3u32, 0, 1, 3, 0];
        let g: Vec<f32> = (0..10).map(|i| i as f32).collect(); // dim 2
        let groups = RowGroups::new(&ids);
        let s = groups.sum_host(&g, 2).unwrap();
        assert_eq!(groups.ids, vec![1, 3]);
        assert_eq!(s, vec![4.0, 5.0, 0.0 + 6.0, 1.0 + 7.0]);
        assert!(groups.sum_host(&g[..9], 2).is_err());
        let t = Tensor::from_slice(&g, (5, 2), &Device::Cpu).unwrap();
        let st: Vec<f32> = groups
            .sum(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(st, s);
        assert!(groups.sum(&t.narrow(0, 0, 4).unwrap()).is_err());
    }

    #[test]
    fn agrees_with_dense_adam_when_every_row_is_touched() {
        let (rows, dim) = (6, 5);
        let dev = Device::Cpu;
        let init = table(rows, dim);
        let dense = Var::from_slice(&init, (rows, dim), &dev).unwrap();
        let lazy = Var::from_slice(&init, (rows, dim), &dev).unwrap();
        let mut dopt = Adam::new(vec![("t".into(), dense.clone())], AdamConsts::default()).unwrap();
        let mut lopt = RowAdam::new(rows, dim, AdamConsts::default());
        let ids: Vec<u32> = (0..rows as u32).collect();
        for t in 0..4 {
            let w: Vec<f32> = (0..rows * dim)
                .map(|i| ((i + t) % 5) as f32 - 2.0)
                .collect();
            let wt = Tensor::from_slice(&w, (rows, dim), &dev).unwrap();
            let loss = (dense.as_tensor().sqr().unwrap() * &wt)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            // The lazy side gets the same gradient computed on its own values.
            let lv = lazy.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let lg: Vec<f32> = lv.iter().zip(&w).map(|(p, w)| 2.0 * p * w).collect();
            let lr = 0.01 + 0.01 * t as f64;
            let b1 = 0.9 - 0.01 * t as f64;
            dopt.step(&grads, lr, b1).unwrap();
            lopt.step(&lazy, &ids, &lg, lr, b1).unwrap();
        }
        let d = dense.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let l = lazy.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Row 0 is the pad row: never updated.
        assert_eq!(&l[..dim], &init[..dim]);
        for i in dim..rows * dim {
            assert!((d[i] - l[i]).abs() < 1e-6, "{i}: {} vs {}", d[i], l[i]);
        }
    }

    #[test]
    fn untouched_rows_are_unchanged() {
        let (rows, dim) = (50, 4);
        let dev = Device::Cpu;
        let init = table(rows, dim);
        let var = Var::from_slice(&init, (rows, dim), &dev).unwrap();
        let mut opt = RowAdam::new(rows, dim, AdamConsts::default());
        let ids = [0u32, 2, 17, 49];
        let g = vec![1f32; ids.len() * dim];
        opt.step(&var, &ids, &g, 0.1, 0.9).unwrap();
        let after = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in 0..rows {
            let row = &after[r * dim..(r + 1) * dim];
            let before = &init[r * dim..(r + 1) * dim];
            if [2, 17, 49].contains(&r) {
                // First Adam step moves each coordinate by lr against the gradient's sign.
                for (a, b) in row.iter().zip(before) {
                    assert!((b - a - 0.1).abs() < 1e-5);
                }
            } else {
                assert_eq!(row, before, "row {r}");
            }
        }
        assert!(opt.step(&var, &[3, 3], &[0.0; 8], 0.1, 0.9).is_err());
        assert!(opt.step(&var, &[50], &[0.0; 4], 0.1, 0.9).is_err());
    }

    #[test]
    fn state_round_trip() {
        let dev = Device::Cpu;
        let var = Var::from_slice(&table(4, 3), (4, 3), &dev).unwrap();
        let mut opt = RowAdam::new(4, 3, AdamConsts::default());
        opt.step(&var, &[1, 3], &[1.0; 6], 0.1, 0.9).unwrap();
        let st = opt.state_tensors().unwrap();
        let mut other = RowAdam::new(4, 3, AdamConsts::default());
        other.load_state(&st, "o").unwrap();
        assert_eq!(other.steps(), 1);
        assert_eq!(other.moments.m_host(), opt.moments.m_host());
        let mut wrong = RowAdam::new(5, 3, AdamConsts::default());
        assert!(wrong
            .load_state(&st, "o")
            .unwrap_err()
            .to_string()
            .contains("rowadam.m"));
    }

    /// Updating runs of rows with gradients computed run by run equals the update from the
    /// same gradient rows; bad runs are refused.
    #[test]
    fn runs_match_rows() {
        let (rows, dim) = (12, 5);
        let init: Vec<f32> = (0..rows * dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let runs = [(1u32, 3u32), (6, 2), (9, 3)];
        let ids: Vec<u32> = runs.iter().flat_map(|&(s, l)| s..s + l).collect();
        let grad_of = |row: u32, k: usize| ((row as usize * dim + k) as f32 * 0.71).cos();
        let g: Vec<f32> = ids
            .iter()
            .flat_map(|&r| (0..dim).map(move |k| grad_of(r, k)))
            .collect();
        let a = Var::from_slice(&init, (rows, dim), &Device::Cpu).unwrap();
        let b = Var::from_slice(&init, (rows, dim), &Device::Cpu).unwrap();
        let mut oa = RowAdam::named("t", None, rows, dim, AdamConsts::default());
        let mut ob = RowAdam::named("t", None, rows, dim, AdamConsts::default());
        for _ in 0..3 {
            oa.step(&a, &ids, &g, 0.1, 0.9).unwrap();
            let grad = |u: usize, out: &mut [f32]| {
                let (start, len) = runs[u];
                for (i, row) in (start..start + len).enumerate() {
                    for k in 0..dim {
                        out[i * dim + k] = grad_of(row, k);
                    }
                }
            };
            ob.step_runs(&b, &runs, &grad, 0.1, 0.9).unwrap();
        }
        let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        assert_eq!(oa.steps(), ob.steps());
        let none = |_: usize, _: &mut [f32]| {};
        assert!(ob
            .step_runs(&b, &[(3, 2), (4, 1)], &none, 0.1, 0.9)
            .is_err());
        assert!(ob.step_runs(&b, &[(10, 3)], &none, 0.1, 0.9).is_err());
        assert!(ob.step_runs(&b, &[(2, 0)], &none, 0.1, 0.9).is_err());
        let mut padded = RowAdam::new(rows, dim, AdamConsts::default());
        assert!(padded.step_runs(&b, &[(2, 1)], &none, 0.1, 0.9).is_err());
    }
}

//! The candle ops of candidate scoring: the logits forward, and its backward into the input
//! and into the label table (a sparse row gradient in a side channel, [`TableGrad`]).

use super::*;

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

//! Numerically stable binary cross-entropy with logits, as candle custom ops.
//!
//! Per entry `ℓ(x, y) = max(x, 0) − x·y + ln(1 + e^(−|x|))`, which never overflows (finite for
//! |x| up to f32's range) and equals `−y·ln σ(x) − (1 − y)·ln(1 − σ(x))`. The loss is the mean
//! over all entries (or over the entries whose mask is non-zero). The gradient with respect to the
//! logits is `(σ(x) − y) / N`, computed in one fused pass; targets (and the mask) get no gradient.
//! f32, any layout (inputs are made contiguous first); CPU kernels here, CUDA kernels in
//! `kernels/ops.cu` (`bce_sum_f32`, `bce_finish`, `bce_grad_f32`). On a GPU the backward pass
//! keeps the incoming gradient and the mask count on the device (no host round-trip).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::host::vmath;
use super::storage::{f32_slice, with_host_f32};
use crate::error::Result;

/// Entries per rayon task.
const CHUNK: usize = 1 << 14;

#[inline]
fn check_same(a: &Layout, b: &Layout, what: &str) -> candle_core::Result<()> {
    if a.shape() != b.shape() {
        candle_core::bail!(
            "bce_with_logits: {what} shape {:?} differs from logits {:?}",
            b.shape(),
            a.shape()
        );
    }
    Ok(())
}

/// Sum of `ℓ(x, y)·m` and of `m` over all entries (m = 1 without a mask), each chunk by the
/// vectorised row kernel ([`vmath::bce_sum_row`]) and added up in f64.
fn sums(x: &[f32], y: &[f32], m: Option<&[f32]>) -> (f64, f64) {
    x.par_chunks(CHUNK)
        .enumerate()
        .map(|(c, xs)| {
            let o = c * CHUNK;
            let ys = &y[o..o + xs.len()];
            match m {
                None => (vmath::bce_sum_row(xs, ys, None), xs.len() as f64),
                Some(m) => {
                    let ms = &m[o..o + xs.len()];
                    (
                        vmath::bce_sum_row(xs, ys, Some(ms)),
                        ms.iter().map(|&w| w as f64).sum(),
                    )
                }
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// `(σ(x) − y)·m·scale` per entry (m = 1 without a mask; 0 where the mask is 0).
fn grads(x: &[f32], y: &[f32], m: Option<&[f32]>, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let r = c * CHUNK..c * CHUNK + o.len();
        vmath::bce_grad_row(&x[r.clone()], &y[r.clone()], m.map(|m| &m[r]), scale, o);
    });
    out
}

/// The mean loss `Σ m·ℓ / Σ m` as a scalar storage (0 when nothing counts).
fn mean_loss(x: &[f32], y: &[f32], m: Option<&[f32]>) -> (CpuStorage, Shape) {
    let (s, n) = sums(x, y, m);
    let loss = if n > 0.0 { (s / n) as f32 } else { 0.0 };
    (CpuStorage::F32(vec![loss]), Shape::from(()))
}

/// The mean loss on the GPU: one reduction kernel into an f64 (sum, count) pair, one kernel
/// dividing.
#[cfg(feature = "cuda")]
fn mean_loss_cuda(
    x: (&candle_core::CudaStorage, &Layout),
    y: (&candle_core::CudaStorage, &Layout),
    m: Option<(&candle_core::CudaStorage, &Layout)>,
) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
    use super::cuda::{grid, launch_kernel, storage, view, zeros, CapBlocks, Kernel};
    let dev = x.0.device.clone();
    let xs = view(x.0, x.1, "bce logits")?;
    let ys = view(y.0, y.1, "bce targets")?;
    let (ms, has_mask) = match m {
        Some((s, l)) => (view(s, l, "bce mask")?, 1i32),
        None => (view(x.0, x.1, "bce logits")?, 0i32),
    };
    let n = xs.len();
    let acc = dev.alloc_zeros::<f64>(2)?;
    let out = zeros(&dev, 1)?;
    let k = Kernel::new(&dev, "bce_sum_f32")?;
    launch_kernel!(k, grid(n).cap_blocks(1024); &xs, &ys, &ms, &has_mask, &n, &acc)?;
    let k = Kernel::new(&dev, "bce_finish")?;
    launch_kernel!(k, grid(1); &acc, &out)?;
    Ok((storage(out, &dev), Shape::from(())))
}

/// The factor of the gradient: ∂loss/∂mean over the entry count, on the host for CPU tensors
/// and on the device otherwise (so a GPU step never waits for it).
enum GradScale {
    Host(f32),
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Device(Tensor),
}

impl GradScale {
    /// `grad / count` where the tensors live (`count` ≥ 1 entries).
    fn new(grad: &Tensor, count: CountOf) -> candle_core::Result<Self> {
        if grad.device().is_cpu() {
            let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            return Ok(GradScale::Host(match count {
                CountOf::All(n) => g / (n.max(1) as f64) as f32,
                CountOf::Mask(m) => {
                    let n = m.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                    if n > 0.0 {
                        g / n
                    } else {
                        0.0
                    }
                }
            }));
        }
        let g = grad.to_dtype(DType::F32)?.reshape(1)?;
        Ok(GradScale::Device(match count {
            CountOf::All(n) => (g / n.max(1) as f64)?,
            // Σm = 0 means every entry is masked: any count ≥ 1 gives the zero gradient.
            CountOf::Mask(m) => g.div(
                &m.to_dtype(DType::F32)?
                    .sum_all()?
                    .maximum(1f64)?
                    .reshape(1)?,
            )?,
        }))
    }
}

/// What the mean was taken over.
enum CountOf<'a> {
    All(usize),
    Mask(&'a Tensor),
}

/// `(σ(x) − y)·m·scale` in one pass (m = 1 without a mask): the backward of both BCE ops.
struct BceGrad {
    scale: GradScale,
    mask: Option<Tensor>,
}

impl CustomOp2 for BceGrad {
    fn name(&self) -> &'static str {
        "bce-with-logits-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let GradScale::Host(scale) = self.scale else {
            candle_core::bail!("bce: the gradient scale is on a GPU but the logits are not")
        };
        let x = f32_slice(s1, l1, "bce logits")?;
        let y = f32_slice(s2, l2, "bce targets")?;
        let out = match &self.mask {
            None => grads(x, y, None, scale),
            Some(m) => with_host_f32(m, |m| grads(x, y, Some(m), scale))?,
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{grid, launch_kernel, storage, view, with_cuda, zeros, Kernel};
        let GradScale::Device(scale) = &self.scale else {
            candle_core::bail!(
                "bce: the gradient scale is in host memory but the logits are on a GPU"
            )
        };
        let dev = s1.device.clone();
        let xs = view(s1, l1, "bce logits")?;
        let ys = view(s2, l2, "bce targets")?;
        let n = xs.len();
        let out = zeros(&dev, n)?;
        let k = Kernel::new(&dev, "bce_grad_f32")?;
        let run = |ms: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>,
                   has_mask: i32| {
            with_cuda(scale, "bce gradient scale", |ss, sl| {
                let sc = view(ss, sl, "bce gradient scale")?;
                launch_kernel!(k, grid(n); &xs, &ys, ms, &has_mask, &sc, &n, &out)
            })
        };
        match &self.mask {
            Some(m) => with_cuda(m, "bce mask", |ms, ml| run(&view(ms, ml, "bce mask")?, 1))?,
            None => run(&view(s1, l1, "bce logits")?, 0)?,
        }
        Ok((storage(out, &dev), l1.shape().clone()))
    }
}

/// The forward op: (logits, targets) -> scalar mean loss.
struct Bce;

impl CustomOp2 for Bce {
    fn name(&self) -> &'static str {
        "bce-with-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_same(l1, l2, "targets")?;
        let x = f32_slice(s1, l1, "bce logits")?;
        let y = f32_slice(s2, l2, "bce targets")?;
        Ok(mean_loss(x, y, None))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        check_same(l1, l2, "targets")?;
        mean_loss_cuda((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = BceGrad {
            scale: GradScale::new(grad, CountOf::All(x.elem_count()))?,
            mask: None,
        };
        let gx = x.apply_op2_no_bwd(y, &op)?;
        Ok((Some(gx), None))
    }
}

/// The masked forward op: (logits, targets, mask) -> scalar mean over the masked entries.
struct BceMasked;

impl CustomOp3 for BceMasked {
    fn name(&self) -> &'static str {
        "bce-with-logits-masked"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_same(l1, l2, "targets")?;
        check_same(l1, l3, "mask")?;
        let x = f32_slice(s1, l1, "bce logits")?;
        let y = f32_slice(s2, l2, "bce targets")?;
        let m = f32_slice(s3, l3, "bce mask")?;
        Ok(mean_loss(x, y, Some(m)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        check_same(l1, l2, "targets")?;
        check_same(l1, l3, "mask")?;
        mean_loss_cuda((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        m: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BceGrad {
            scale: GradScale::new(grad, CountOf::Mask(m))?,
            mask: Some(m.contiguous()?),
        };
        let gx = x.apply_op2_no_bwd(y, &op)?;
        Ok((Some(gx), None, None))
    }
}

/// Mean binary cross-entropy with logits over all entries of `logits` (any shape, f32);
/// `targets` has the same shape (values in [0, 1]). Returns a scalar with a backward pass.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let x = logits.contiguous()?;
    let y = targets.contiguous()?.detach();
    Ok(x.apply_op2(&y, Bce)?)
}

/// Like [`bce_with_logits`] but entries whose `mask` is 0 (padding slots) do not contribute:
/// the loss is `Σ m·ℓ / Σ m` (0 when the mask is all zero), and their gradient is 0.
pub fn bce_with_logits_masked(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let x = logits.contiguous()?;
    let y = targets.contiguous()?.detach();
    let m = mask.contiguous()?.detach();
    Ok(x.apply_op3(&y, &m, BceMasked)?)
}

/// The masked mean BCE `Σ m·ℓ / Σ m` of host logits `x` and its gradient `(σ(x) − y)·m / Σ m`
/// (0 where nothing counts), as [`bce_with_logits_masked`] and its backward compute them: for
/// fused CPU callers outside candle's graph.
pub fn bce_masked_host(x: &[f32], y: &[f32], m: &[f32]) -> Result<(f32, Vec<f32>)> {
    if x.len() != y.len() || x.len() != m.len() {
        return Err(crate::error::Error::Shape(format!(
            "bce: {} logits, {} targets, {} mask values",
            x.len(),
            y.len(),
            m.len()
        )));
    }
    let (s, n) = sums(x, y, Some(m));
    if n > 0.0 {
        Ok(((s / n) as f32, grads(x, y, Some(m), (1.0 / n) as f32)))
    } else {
        Ok((0.0, vec![0.0; x.len()]))
    }
}

/// σ(x) for one value without overflow (used to turn logits into scores).
pub fn stable_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn naive(x: &[f32], y: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .map(|(&x, &y)| {
                let s = 1.0 / (1.0 + (-(x as f64)).exp());
                -(y as f64) * s.ln() - (1.0 - y as f64) * (1.0 - s).ln()
            })
            .sum::<f64>()
            / x.len() as f64
    }

    fn data() -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..60)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / 5.0)
            .collect();
        let y: Vec<f32> = (0..60)
            .map(|i| if i % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        (x, y)
    }

    #[test]
    fn matches_naive_formula_on_moderate_values() {
        let (x, y) = data();
        let dev = Device::Cpu;
        let xt = Tensor::from_slice(&x, (6, 10), &dev).unwrap();
        let yt = Tensor::from_slice(&y, (6, 10), &dev).unwrap();
        let l = bce_with_logits(&xt, &yt)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l as f64 - naive(&x, &y)).abs() < 1e-5, "{l}");
    }

    #[test]
    fn stable_for_huge_logits() {
        let dev = Device::Cpu;
        let x = [1e4f32, -1e4, 1e4, -1e4];
        let y = [1f32, 0.0, 0.0, 1.0];
        let xv = Var::from_slice(&x, 4, &dev).unwrap();
        let yt = Tensor::from_slice(&y, 4, &dev).unwrap();
        let l = bce_with_logits(xv.as_tensor(), &yt).unwrap();
        let v = l.to_scalar::<f32>().unwrap();
        // Two perfect entries (0) and two wrong by 1e4 each: mean 5e3.
        assert!((v - 5e3).abs() < 1e-2, "{v}");
        let g = l.backward().unwrap();
        let gx = g.get(xv.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
        assert_eq!(gx, vec![0.0, 0.0, 0.25, -0.25]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (x, y) = data();
        let dev = Device::Cpu;
        let xv = Var::from_slice(&x, (6, 10), &dev).unwrap();
        let yt = Tensor::from_slice(&y, (6, 10), &dev).unwrap();
        // Scale the loss by 3 to check the upstream gradient is used.
        let l = (bce_with_logits(xv.as_tensor(), &yt).unwrap() * 3.0).unwrap();
        let g = l.backward().unwrap();
        let gx = g
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let h = 1e-3f64;
        let f = |xs: &[f32]| {
            // f64 reference of the same loss for a clean difference quotient.
            3.0 * xs
                .iter()
                .zip(&y)
                .map(|(&a, &b)| {
                    let (a, b) = (a as f64, b as f64);
                    a.max(0.0) - a * b + (-a.abs()).exp().ln_1p()
                })
                .sum::<f64>()
                / xs.len() as f64
        };
        for i in [0usize, 7, 13, 29, 59] {
            let mut p = x.clone();
            let mut m = x.clone();
            p[i] += h as f32;
            m[i] -= h as f32;
            let hp = (p[i] - x[i]) as f64;
            let hm = (x[i] - m[i]) as f64;
            let fd = (f(&p) - f(&m)) / (hp + hm);
            assert!(
                (fd - gx[i] as f64).abs() < 1e-4,
                "{i}: fd {fd} vs {}",
                gx[i]
            );
        }
    }

    #[test]
    fn masked_ignores_padding_slots() {
        let (x, y) = data();
        let dev = Device::Cpu;
        let mask: Vec<f32> = (0..60)
            .map(|i| if i % 10 < 7 { 1.0 } else { 0.0 })
            .collect();
        let xv = Var::from_slice(&x, (6, 10), &dev).unwrap();
        let yt = Tensor::from_slice(&y, (6, 10), &dev).unwrap();
        let mt = Tensor::from_slice(&mask, (6, 10), &dev).unwrap();
        let l = bce_with_logits_masked(xv.as_tensor(), &yt, &mt).unwrap();
        let (xs, ys): (Vec<f32>, Vec<f32>) = x
            .iter()
            .zip(&y)
            .zip(&mask)
            .filter(|(_, &m)| m != 0.0)
            .map(|((&a, &b), _)| (a, b))
            .unzip();
        let v = l.to_scalar::<f32>().unwrap() as f64;
        assert!((v - naive(&xs, &ys)).abs() < 1e-5);
        let gx = l
            .backward()
            .unwrap()
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in 0..60 {
            if mask[i] == 0.0 {
                assert_eq!(gx[i], 0.0);
            } else {
                let want = (stable_sigmoid(x[i]) - y[i]) / 42.0;
                assert!((gx[i] - want).abs() < 1e-7);
            }
        }
    }

    #[test]
    fn strided_inputs_are_accepted() {
        let (x, y) = data();
        let dev = Device::Cpu;
        let xt = Tensor::from_slice(&x, (6, 10), &dev).unwrap().t().unwrap();
        let yt = Tensor::from_slice(&y, (6, 10), &dev).unwrap().t().unwrap();
        let l = bce_with_logits(&xt, &yt)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l as f64 - naive(&x, &y)).abs() < 1e-5);
    }
}

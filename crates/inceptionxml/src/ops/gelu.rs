//! The exact (erf) GELU as one op: on the CPU a vectorised kernel forward
//! ([`crate::ops::host::vmath::gelu_row`]) and one fused pass backward (`g·GELU'(x)`), where candle's
//! `gelu_erf` evaluates a scalar erf per value and composes its backward from about a dozen
//! elementwise ops. Other devices and dtypes use `gelu_erf`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::host::vmath;
use crate::ops::storage::f32_slice;

const CHUNK: usize = 1 << 13;

struct Gelu;
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu_erf_fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "gelu input")?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, i)| vmath::gelu_row(i, o));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu_erf_fused_grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "gelu input")?;
        let g = f32_slice(s2, l2, "gelu gradient")?;
        if x.len() != g.len() {
            candle_core::bail!("gelu backward: {} values, gradient of {}", x.len(), g.len());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (xs, gs))| vmath::gelu_bwd_row(xs, gs, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `GELU(x)` (exact, erf form), differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(x.contiguous()?.apply_op1(Gelu)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and gradient against candle's `gelu_erf` (itself differentiated by autograd).
    #[test]
    fn matches_candle_gelu_erf() {
        let v: Vec<f32> = (0..20_001)
            .map(|i| (i as f32 - 10_000.0) / 1_000.0)
            .collect();
        let x = Var::from_vec(v, (3, 6667), &Device::Cpu).unwrap();
        let w = Tensor::rand(-1f32, 1.0, (3, 6667), &Device::Cpu).unwrap();
        let (a, b) = (
            gelu(x.as_tensor()).unwrap(),
            x.as_tensor().gelu_erf().unwrap(),
        );
        let diff = |p: &Tensor, q: &Tensor| -> f32 {
            (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(diff(&a, &b) < 2e-6);
        let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            diff(
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap()
            ) < 1e-5
        );
    }
}

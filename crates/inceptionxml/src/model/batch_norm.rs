//! BatchNorm over the last (channel) axis, with PyTorch's defaults and running statistics.
//!
//! Input `[.., C]` (channels last; every other axis is a sample for the statistics).
//! Training: normalise with the batch mean and biased variance, and update the running mean and
//! the running (unbiased) variance with momentum 0.1. Evaluation: normalise with the running
//! statistics. Weight starts at 1, bias at 0, running mean 0, running variance 1, eps 1e-5.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::init;
use crate::error::{Error, Result};
use crate::ops::gelu_bn;

/// PyTorch's default momentum for the running statistics.
pub const MOMENTUM: f64 = 0.1;
/// PyTorch's default epsilon ([`gelu_bn::BN_EPS`]).
pub const EPS: f64 = gelu_bn::BN_EPS;

/// BatchNorm over the last axis.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    channels: usize,
}

impl BatchNorm {
    /// Registers `{prefix}.weight`, `.bias` (trainable) and `.running_mean`, `.running_var`
    /// (buffers).
    pub fn new(varmap: &VarMap, prefix: &str, channels: usize, device: &Device) -> Result<Self> {
        let reg = |n: &str, v: f32| {
            init::register(
                varmap,
                &format!("{prefix}.{n}"),
                channels,
                vec![v; channels],
                device,
            )
        };
        Ok(BatchNorm {
            weight: reg("weight", 1.0)?,
            bias: reg("bias", 0.0)?,
            running_mean: reg("running_mean", 0.0)?,
            running_var: reg("running_var", 1.0)?,
            channels,
        })
    }

    /// The trainable `(weight, bias)`.
    pub fn params(&self) -> (&Var, &Var) {
        (&self.weight, &self.bias)
    }

    /// The buffers `(running_mean, running_var)`.
    pub fn buffers(&self) -> (&Var, &Var) {
        (&self.running_mean, &self.running_var)
    }

    /// `BN(GELU(z))` for `z` `[.., C]`: one fused kernel on the CPU ([`gelu_bn`]), the composed
    /// candle ops elsewhere. Same semantics as `self.forward(&z.gelu_erf()?, train)`.
    pub fn forward_gelu(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        if !z.device().is_cpu() || z.dtype() != candle_core::DType::F32 {
            return self.forward(&z.gelu_erf()?, train);
        }
        let c = *z.dims().last().unwrap_or(&0);
        if c != self.channels {
            return Err(Error::Shape(format!(
                "BatchNorm over {} channels got input {:?}",
                self.channels,
                z.dims()
            )));
        }
        let n = z.elem_count() / c.max(1);
        let (w, b) = (self.weight.as_tensor(), self.bias.as_tensor());
        if !train {
            let mean: Vec<f32> = self.running_mean.as_tensor().to_vec1()?;
            let var: Vec<f32> = self.running_var.as_tensor().to_vec1()?;
            return gelu_bn::eval(z, w, b, mean, var);
        }
        if n < 2 {
            return Err(Error::Shape(format!(
                "BatchNorm in training needs more than one value per channel, got input {:?}",
                z.dims()
            )));
        }
        let (y, mean, var) = gelu_bn::train(z, w, b)?;
        self.update_running(&mean, &var, n)?;
        Ok(y)
    }

    /// Moves the running statistics towards a batch's `mean` and biased `var` over `n` values
    /// per channel (momentum [`MOMENTUM`], the variance unbiased as PyTorch does).
    pub fn update_running(&self, mean: &[f32], var: &[f32], n: usize) -> Result<()> {
        let c = self.channels;
        if mean.len() != c || var.len() != c || n < 2 {
            return Err(Error::Shape(format!(
                "BatchNorm over {c} channels: statistics of {} / {} channels over {n} values",
                mean.len(),
                var.len()
            )));
        }
        let unbias = n as f32 / (n - 1) as f32;
        let m = MOMENTUM as f32;
        let rm: Vec<f32> = self.running_mean.as_tensor().to_vec1()?;
        let rv: Vec<f32> = self.running_var.as_tensor().to_vec1()?;
        let rm: Vec<f32> = rm
            .iter()
            .zip(mean)
            .map(|(r, x)| (1.0 - m) * r + m * x)
            .collect();
        let rv: Vec<f32> = rv
            .iter()
            .zip(var)
            .map(|(r, v)| (1.0 - m) * r + m * v * unbias)
            .collect();
        let dev = self.running_mean.device();
        self.running_mean.set(&Tensor::from_vec(rm, c, dev)?)?;
        self.running_var.set(&Tensor::from_vec(rv, c, dev)?)?;
        Ok(())
    }

    /// Normalises `x` `[.., C]`. With `train`, uses the batch statistics and updates the running
    /// ones; needs at least two samples per channel then.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let c = *dims.last().unwrap_or(&0);
        if c != self.channels {
            return Err(Error::Shape(format!(
                "BatchNorm over {} channels got input {:?}",
                self.channels, dims
            )));
        }
        let n = x.elem_count() / c.max(1);
        let w = self.weight.as_tensor();
        let b = self.bias.as_tensor();
        if !train {
            // y = x·scale + shift, with the per-channel vectors folded first.
            let scale = (self.running_var.as_tensor().detach() + EPS)?
                .sqrt()?
                .recip()?
                .mul(w)?;
            let shift = (b - self.running_mean.as_tensor().detach().mul(&scale)?)?;
            return Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?);
        }
        if n < 2 {
            return Err(Error::Shape(format!(
                "BatchNorm in training needs more than one value per channel, got input {dims:?}"
            )));
        }
        let x2 = x.reshape((n, c))?;
        let mean = x2.mean_keepdim(0)?;
        let xc = x2.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(0)?;
        let scale = (&var + EPS)?.sqrt()?.recip()?.broadcast_mul(w)?;
        let y = xc.broadcast_mul(&scale)?.broadcast_add(b)?;
        // Running statistics (no gradient; unbiased variance as PyTorch).
        let mean_d = mean.detach().squeeze(0)?;
        let var_d = (var.detach().squeeze(0)? * (n as f64 / (n - 1) as f64))?;
        let rm =
            ((self.running_mean.as_tensor().detach() * (1.0 - MOMENTUM))? + (mean_d * MOMENTUM)?)?;
        let rv =
            ((self.running_var.as_tensor().detach() * (1.0 - MOMENTUM))? + (var_d * MOMENTUM)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(y.reshape(dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{host, max_rel_diff};

    #[test]
    fn train_normalises_and_updates_running_stats() {
        let vm = VarMap::new();
        let bn = BatchNorm::new(&vm, "bn", 2, &Device::Cpu).unwrap();
        // channel 0: 1,2,3,4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: all 7.
        let x = Tensor::new(
            &[[[1f32, 7.], [2., 7.]], [[3., 7.], [4., 7.]]],
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<Vec<Vec<f32>>> = bn.forward(&x, true).unwrap().to_vec3().unwrap();
        let s = (1.25f32 + 1e-5).sqrt();
        assert!((y[0][0][0] - (1.0 - 2.5) / s).abs() < 1e-5);
        assert!((y[1][1][0] - (4.0 - 2.5) / s).abs() < 1e-5);
        assert!(y[0][0][1].abs() < 1e-5);
        let rm: Vec<f32> = bn.buffers().0.as_tensor().to_vec1().unwrap();
        let rv: Vec<f32> = bn.buffers().1.as_tensor().to_vec1().unwrap();
        assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 0.7).abs() < 1e-6);
        assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6 && (rv[1] - 0.9).abs() < 1e-6);
        // eval uses the running stats and is deterministic
        let e1: Vec<Vec<Vec<f32>>> = bn.forward(&x, false).unwrap().to_vec3().unwrap();
        let e2: Vec<Vec<Vec<f32>>> = bn.forward(&x, false).unwrap().to_vec3().unwrap();
        assert_eq!(e1, e2);
        let want = (1.0 - 0.25) / (rv[0] + 1e-5).sqrt();
        assert!((e1[0][0][0] - want).abs() < 1e-5);
        assert_ne!(e1, y);
        // one sample per channel cannot be normalised in training
        let one = Tensor::new(&[[1f32, 2.]], &Device::Cpu).unwrap();
        assert!(bn.forward(&one, true).is_err());
        assert!(bn.forward(&one, false).is_ok());
    }

    /// The fused CPU kernel against the composed candle ops, forward, gradients and running
    /// statistics, in training and evaluation.
    #[test]
    fn fused_gelu_bn_matches_composed_ops() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (n, c) = (300, 7);
        let z = Tensor::from_vec(
            init::normal(&mut rng, n * c, 1.5),
            (3, n / 3, c),
            &Device::Cpu,
        )
        .unwrap();
        let r = Tensor::from_vec(
            init::normal(&mut rng, n * c, 1.0),
            (3, n / 3, c),
            &Device::Cpu,
        )
        .unwrap();
        let (v1, v2) = (VarMap::new(), VarMap::new());
        let (a, b) = (
            BatchNorm::new(&v1, "bn", c, &Device::Cpu).unwrap(),
            BatchNorm::new(&v2, "bn", c, &Device::Cpu).unwrap(),
        );
        let wv = Tensor::from_vec(init::normal(&mut rng, c, 1.0), c, &Device::Cpu).unwrap();
        let bv = Tensor::from_vec(init::normal(&mut rng, c, 1.0), c, &Device::Cpu).unwrap();
        for bn in [&a, &b] {
            bn.weight.set(&wv).unwrap();
            bn.bias.set(&bv).unwrap();
        }
        let close = |x: &Tensor, y: &Tensor, what: &str| {
            let (x, y) = (host(x), host(y));
            let e = max_rel_diff(&x, &y, &y, 1.0);
            assert!(e <= 1e-4, "{what}: max diff {e} of the scale");
        };
        for train in [true, false, true] {
            let zv = candle_core::Var::from_tensor(&z).unwrap();
            let ya = a.forward_gelu(zv.as_tensor(), train).unwrap();
            let yb = b
                .forward(&zv.as_tensor().gelu_erf().unwrap(), train)
                .unwrap();
            close(&ya, &yb, "forward");
            let ga = (ya * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (yb * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |gs: &candle_core::backprop::GradStore, t: &Tensor| gs.get(t).unwrap().clone();
            close(&g(&ga, zv.as_tensor()), &g(&gb, zv.as_tensor()), "dz");
            close(
                &g(&ga, a.weight.as_tensor()),
                &g(&gb, b.weight.as_tensor()),
                "dw",
            );
            close(
                &g(&ga, a.bias.as_tensor()),
                &g(&gb, b.bias.as_tensor()),
                "db",
            );
            close(
                a.running_mean.as_tensor(),
                b.running_mean.as_tensor(),
                "running mean",
            );
            close(
                a.running_var.as_tensor(),
                b.running_var.as_tensor(),
                "running var",
            );
        }
    }
}

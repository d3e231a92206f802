//! A classifier layer and its BCE-with-logits loss, forward and backward in one host pass on the
//! CPU: `logits = x·W + b` (x `[B, D]`, W `[D, C]` in × out), `loss = mean BCE(logits, y)`.
//!
//! Both classifiers of the model end this way: plain InceptionXML's `[B, L]` output layer and
//! InceptionXML+'s `[B, C]` meta classifier. Through candle's autograd their backward costs
//! about three times the two products it needs (fresh zeroed gradient tensors accumulated by
//! `add`, the bias gradient a single-threaded strided reduction, separate passes for the loss
//! gradient); here the loss gradient `G = (σ(logits) − y)/(B·C)` is one vectorised pass
//! ([`crate::ops::vmath::bce_grad_row`]), `dW = xᵀG` and `dx = G·Wᵀ` are two GEMMs, `db` a
//! column sum in row order (deterministic).
//!
//! The caller joins the result to candle's graph: `dx` is the gradient of `x`, so
//! `(x · dx.detach()).sum()` added to the rest of the loss carries it back through whatever
//! produced `x`, and `dW`, `db` go into the `GradStore` directly (see `train::step`).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::mm::{mm, par_for, Out, View};
use crate::ops::vmath;

/// The forward values and every gradient of one classifier + BCE.
#[derive(Debug)]
pub struct LinearBce {
    /// Mean BCE over all `B·C` entries.
    pub loss: f32,
    /// `[B, C]` row-major.
    pub logits: Vec<f32>,
    /// `[B, D]`: gradient of the loss with respect to `x`.
    pub dx: Vec<f32>,
    /// `[D, C]`.
    pub dw: Vec<f32>,
    /// `[C]`.
    pub db: Vec<f32>,
}

/// `x·W + b` for `x` `[b, d]`, `w` `[d, c]`, `bias` `[c]` (row-major host slices): the bias
/// written first and the product accumulated onto it, one pass over the `[b, c]` result.
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    (b, d, c): (usize, usize, usize),
) -> Result<Vec<f32>> {
    if x.len() != b * d || w.len() != d * c || bias.len() != c {
        return Err(Error::Shape(format!(
            "linear: x {} w {} b {} for [{b}, {d}] × [{d}, {c}]",
            x.len(),
            w.len(),
            bias.len()
        )));
    }
    let mut out = vec![0f32; b * c];
    out.par_chunks_mut(c.max(1))
        .for_each(|row| row.copy_from_slice(bias));
    mm(
        &mut out,
        Out::rm(0, c),
        View::rm(x, 0, b, d),
        View::rm(w, 0, d, c),
        1.0,
        true,
        par_for(b, c, d),
    )?;
    Ok(out)
}

/// Forward and backward of `mean BCE(x·W + b, y)` for `x` `[b, d]`, `w` `[d, c]`, `bias` `[c]`,
/// targets `y` `[b, c]` (all row-major host slices).
pub fn linear_bce(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &[f32],
    (b, d, c): (usize, usize, usize),
) -> Result<LinearBce> {
    if x.len() != b * d || w.len() != d * c || bias.len() != c || y.len() != b * c || b * c == 0 {
        return Err(Error::Shape(format!(
            "linear_bce: x {} w {} b {} y {} for [{b}, {d}] × [{d}, {c}]",
            x.len(),
            w.len(),
            bias.len(),
            y.len()
        )));
    }
    let logits = linear(x, w, bias, (b, d, c))?;
    let sums: Vec<f64> = logits
        .par_chunks(c)
        .zip(y.par_chunks(c))
        .map(|(z, t)| vmath::bce_sum_row(z, t, None))
        .collect();
    let n = (b * c) as f64;
    let loss = (sums.iter().sum::<f64>() / n) as f32;
    let scale = (1.0 / n) as f32;
    let mut g = vec![0f32; b * c];
    g.par_chunks_mut(c)
        .zip(logits.par_chunks(c).zip(y.par_chunks(c)))
        .for_each(|(o, (z, t))| vmath::bce_grad_row(z, t, None, scale, o));
    let mut dw = vec![0f32; d * c];
    mm(
        &mut dw,
        Out::rm(0, c),
        View::rm(x, 0, b, d).t(),
        View::rm(&g, 0, b, c),
        1.0,
        false,
        par_for(d, c, b),
    )?;
    let mut dx = vec![0f32; b * d];
    mm(
        &mut dx,
        Out::rm(0, d),
        View::rm(&g, 0, b, c),
        View::rm(w, 0, d, c).t(),
        1.0,
        false,
        par_for(b, d, c),
    )?;
    // db: column sums, rows added in order within each block of columns.
    let mut db = vec![0f32; c];
    let cols = 1024;
    db.par_chunks_mut(cols).enumerate().for_each(|(k, out)| {
        let (c0, n) = (k * cols, out.len());
        for r in 0..b {
            for (o, v) in out.iter_mut().zip(&g[r * c + c0..r * c + c0 + n]) {
                *o += v;
            }
        }
    });
    Ok(LinearBce {
        loss,
        logits,
        dx,
        dw,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bce_with_logits;
    use candle_core::{Device, Tensor, Var};
    use rand::{Rng, SeedableRng};

    /// Loss, logits and all three gradients against candle's matmul + broadcast add + the
    /// BCE op under autograd.
    #[test]
    fn matches_composed_candle_ops() {
        let (b, d, c) = (7, 13, 2050);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut v = |n: usize, a: f32| (0..n).map(|_| rng.gen_range(-a..a)).collect::<Vec<f32>>();
        let (x, w, bias) = (v(b * d, 1.0), v(d * c, 0.5), v(c, 0.5));
        let y: Vec<f32> = v(b * c, 1.0)
            .iter()
            .map(|&t| (t > 0.6) as u8 as f32)
            .collect();
        let got = linear_bce(&x, &w, &bias, &y, (b, d, c)).unwrap();
        let dev = Device::Cpu;
        let xv = Var::from_vec(x, (b, d), &dev).unwrap();
        let wv = Var::from_vec(w, (d, c), &dev).unwrap();
        let bv = Var::from_vec(bias, c, &dev).unwrap();
        let z = xv
            .as_tensor()
            .matmul(wv.as_tensor())
            .unwrap()
            .broadcast_add(bv.as_tensor())
            .unwrap();
        let yt = Tensor::from_vec(y, (b, c), &dev).unwrap();
        let loss = bce_with_logits(&z, &yt).unwrap();
        let g = loss.backward().unwrap();
        let close = |a: &[f32], t: &Tensor, tol: f32| {
            let e: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = a
                .iter()
                .zip(&e)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(err <= tol * scale, "error {err} at scale {scale}");
        };
        assert!((got.loss - loss.to_scalar::<f32>().unwrap()).abs() < 1e-5);
        close(&got.logits, &z, 1e-5);
        close(&got.dx, g.get(xv.as_tensor()).unwrap(), 1e-4);
        close(&got.dw, g.get(wv.as_tensor()).unwrap(), 1e-4);
        close(&got.db, g.get(bv.as_tensor()).unwrap(), 1e-4);
        assert!(linear_bce(&[0.0; 3], &[0.0; 3], &[0.0], &[0.0], (1, 3, 2)).is_err());
    }
}

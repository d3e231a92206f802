//! `BatchNorm(GELU(z))` over the last (channel) axis as one fused CPU kernel with its own
//! backward; every GELU of the model is followed by a BatchNorm.
//!
//! candle's composed version makes ~6 passes forward (GELU, mean, centre, square, mean, affine)
//! and ~25 backward (GELU's derivative alone is 13 elementwise ops). Here: training forward = one
//! pass computing `a = GELU(z)`, `GELU'(z)` and per-channel sums, one pass writing `y`; backward =
//! one reduction pass and one elementwise pass. Evaluation: one pass `y = GELU(z)·s + t`.
//! Per-chunk sums are added in chunk order, so results do not depend on thread scheduling.
//! On other devices (or dtypes) the composed candle ops are used.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::storage::f32_slice;

pub use crate::ops::host::gelu_bn::BN_EPS;
use crate::ops::host::vmath::{gelu, gelu_and_grad};

/// Rows per parallel chunk.
const ROWS: usize = 64;

/// What the training forward keeps for the backward pass and the running statistics.
#[derive(Debug, Default)]
struct Saved {
    /// GELU(z), row-major [N, C].
    act: Vec<f32>,
    /// GELU'(z).
    dact: Vec<f32>,
    mean: Vec<f32>,
    /// Biased batch variance.
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// The fused op. `Train` normalises with batch statistics; `Eval` with the given running ones.
#[derive(Debug)]
enum GeluBn {
    /// Batch statistics; the op records them for the running-statistics update.
    Train { eps: f64, saved: Arc<Mutex<Saved>> },
    /// Running statistics `(mean, var)`.
    Eval {
        eps: f64,
        mean: Vec<f32>,
        var: Vec<f32>,
    },
}

fn bail<T>(msg: String) -> candle_core::Result<T> {
    Err(candle_core::Error::Msg(msg))
}

impl CustomOp3 for GeluBn {
    fn name(&self) -> &'static str {
        "gelu_batch_norm"
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
        let z = f32_slice(s1, l1, "gelu_bn input")?;
        let w = f32_slice(s2, l2, "gelu_bn weight")?;
        let b = f32_slice(s3, l3, "gelu_bn bias")?;
        let c = w.len();
        if c == 0 || z.len() % c != 0 || b.len() != c {
            return bail(format!("gelu_bn: {:?} vs {c} channels", l1.shape()));
        }
        let n = z.len() / c;
        let mut y = vec![0f32; z.len()];
        match self {
            GeluBn::Eval { eps, mean, var } => {
                let scale: Vec<f32> = (0..c)
                    .map(|j| w[j] / (var[j] as f64 + eps).sqrt() as f32)
                    .collect();
                let shift: Vec<f32> = (0..c).map(|j| b[j] - mean[j] * scale[j]).collect();
                y.par_chunks_mut(ROWS * c)
                    .zip(z.par_chunks(ROWS * c))
                    .for_each(|(yc, zc)| {
                        for (yr, zr) in yc.chunks_mut(c).zip(zc.chunks(c)) {
                            for j in 0..c {
                                yr[j] = gelu(zr[j]) * scale[j] + shift[j];
                            }
                        }
                    });
            }
            GeluBn::Train { eps, saved } => {
                let mut act = vec![0f32; z.len()];
                let mut dact = vec![0f32; z.len()];
                // Pass 1: activations, derivatives, per-chunk f64 sums.
                let sums = act
                    .par_chunks_mut(ROWS * c)
                    .zip(dact.par_chunks_mut(ROWS * c))
                    .zip(z.par_chunks(ROWS * c))
                    .map(|((ac, dc), zc)| {
                        let mut s = vec![0f64; 2 * c];
                        for ((ar, dr), zr) in
                            ac.chunks_mut(c).zip(dc.chunks_mut(c)).zip(zc.chunks(c))
                        {
                            for j in 0..c {
                                let (a, d) = gelu_and_grad(zr[j]);
                                ar[j] = a;
                                dr[j] = d;
                                s[j] += a as f64;
                                s[c + j] += (a as f64) * (a as f64);
                            }
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .fold(vec![0f64; 2 * c], add_vecs);
                let nf = n as f64;
                let mean: Vec<f64> = (0..c).map(|j| sums[j] / nf).collect();
                let var: Vec<f64> = (0..c)
                    .map(|j| (sums[c + j] / nf - mean[j] * mean[j]).max(0.0))
                    .collect();
                let inv_std: Vec<f32> = var
                    .iter()
                    .map(|v| (1.0 / (v + eps).sqrt()) as f32)
                    .collect();
                let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
                // Pass 2: y = (a − mean)·inv_std·w + b.
                let scale: Vec<f32> = (0..c).map(|j| inv_std[j] * w[j]).collect();
                let shift: Vec<f32> = (0..c).map(|j| b[j] - mean32[j] * scale[j]).collect();
                y.par_chunks_mut(ROWS * c)
                    .zip(act.par_chunks(ROWS * c))
                    .for_each(|(yc, ac)| {
                        for (yr, ar) in yc.chunks_mut(c).zip(ac.chunks(c)) {
                            for j in 0..c {
                                yr[j] = ar[j] * scale[j] + shift[j];
                            }
                        }
                    });
                let mut s = saved
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
                *s = Saved {
                    act,
                    dact,
                    mean: mean32,
                    var: var.iter().map(|&v| v as f32).collect(),
                    inv_std,
                };
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = z.shape().clone();
        let c = w.elem_count();
        let wv: Vec<f32> = w.to_vec1()?;
        let dy: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let n = dy.len() / c;
        let mut dz = vec![0f32; dy.len()];
        let (dw, db) = match self {
            GeluBn::Eval { eps, mean, var } => {
                let zv: Vec<f32> = z.flatten_all()?.to_vec1()?;
                let inv: Vec<f32> = var
                    .iter()
                    .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
                    .collect();
                let scale: Vec<f32> = (0..c).map(|j| wv[j] * inv[j]).collect();
                let sums = dz
                    .par_chunks_mut(ROWS * c)
                    .zip(dy.par_chunks(ROWS * c))
                    .zip(zv.par_chunks(ROWS * c))
                    .map(|((dzc, dyc), zc)| {
                        let mut s = vec![0f64; 2 * c];
                        for ((dzr, dyr), zr) in
                            dzc.chunks_mut(c).zip(dyc.chunks(c)).zip(zc.chunks(c))
                        {
                            for j in 0..c {
                                let (a, d) = gelu_and_grad(zr[j]);
                                dzr[j] = dyr[j] * scale[j] * d;
                                s[j] += (dyr[j] * (a - mean[j]) * inv[j]) as f64;
                                s[c + j] += dyr[j] as f64;
                            }
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .fold(vec![0f64; 2 * c], add_vecs);
                (sums[..c].to_vec(), sums[c..].to_vec())
            }
            GeluBn::Train { saved, .. } => {
                let s = saved
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
                if s.act.len() != dy.len() {
                    return bail("gelu_bn: backward without a matching forward".into());
                }
                let (mean, inv) = (&s.mean, &s.inv_std);
                // Reduction: Σ dy and Σ dy·x̂ per channel.
                let sums = dy
                    .par_chunks(ROWS * c)
                    .zip(s.act.par_chunks(ROWS * c))
                    .map(|(dyc, ac)| {
                        let mut t = vec![0f64; 2 * c];
                        for (dyr, ar) in dyc.chunks(c).zip(ac.chunks(c)) {
                            for j in 0..c {
                                let xh = (ar[j] - mean[j]) * inv[j];
                                t[j] += (dyr[j] * xh) as f64;
                                t[c + j] += dyr[j] as f64;
                            }
                        }
                        t
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .fold(vec![0f64; 2 * c], add_vecs);
                let nf = n as f64;
                let k1: Vec<f32> = (0..c).map(|j| wv[j] * inv[j]).collect();
                let m_dy: Vec<f32> = (0..c).map(|j| (sums[c + j] / nf) as f32).collect();
                let m_dyx: Vec<f32> = (0..c).map(|j| (sums[j] / nf) as f32).collect();
                // da = w·inv·(dy − mean(dy) − x̂·mean(dy·x̂)); dz = da·GELU'(z).
                dz.par_chunks_mut(ROWS * c)
                    .zip(dy.par_chunks(ROWS * c))
                    .zip(s.act.par_chunks(ROWS * c).zip(s.dact.par_chunks(ROWS * c)))
                    .for_each(|((dzc, dyc), (ac, dc))| {
                        for (((dzr, dyr), ar), dr) in dzc
                            .chunks_mut(c)
                            .zip(dyc.chunks(c))
                            .zip(ac.chunks(c))
                            .zip(dc.chunks(c))
                        {
                            for j in 0..c {
                                let xh = (ar[j] - mean[j]) * inv[j];
                                dzr[j] = k1[j] * (dyr[j] - m_dy[j] - xh * m_dyx[j]) * dr[j];
                            }
                        }
                    });
                (sums[..c].to_vec(), sums[c..].to_vec())
            }
        };
        let dev = z.device();
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        Ok((
            Some(Tensor::from_vec(dz, shape, dev)?),
            Some(Tensor::from_vec(to32(dw), c, dev)?),
            Some(Tensor::from_vec(to32(db), c, dev)?),
        ))
    }
}

fn add_vecs(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Applies the fused training op to `z` `[.., C]` and returns `(y, batch mean, biased batch var)`.
pub fn train(z: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = GeluBn::Train {
        eps,
        saved: saved.clone(),
    };
    let y = z.contiguous()?.apply_op3(w, b, op)?;
    let s = saved
        .lock()
        .map_err(|_| crate::Error::Poisoned("gelu_bn"))?;
    Ok((y, s.mean.clone(), s.var.clone()))
}

/// Applies the fused evaluation op with running statistics `(mean, var)`.
pub fn eval(
    z: &Tensor,
    w: &Tensor,
    b: &Tensor,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f64,
) -> Result<Tensor> {
    Ok(z.contiguous()?
        .apply_op3(w, b, GeluBn::Eval { eps, mean, var })?)
}

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

use crate::error::Error;
use crate::ops::vmath::{self, gelu, gelu_and_grad, BnBack};

/// BatchNorm's epsilon (PyTorch's default), the one value every BatchNorm of the model uses:
/// here, in the fused encoder's passes and in [`crate::model::batch_norm`].
pub const BN_EPS: f64 = 1e-5;

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

// The host kernels, on plain slices: the fused encoder's three BatchNorms and the plain head's
// hidden layer (`ops::bn_hidden`) call them directly, without candle.

/// A BatchNorm's affine parameters and running statistics.
#[derive(Debug, Clone, Default)]
pub struct BnParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

/// Batch statistics of one BatchNorm in a training forward: mean, biased variance, count.
#[derive(Debug, Clone, Default)]
pub struct BnStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub n: usize,
    inv: Vec<f32>,
}

/// Row `r` of sample `s` lives at buffer row `s·stride + off + r`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMap {
    pub(crate) stride: usize,
    pub(crate) off: usize,
}

/// `BN(GELU(z + bias))` over `C` channels for `valid` rows per sample, then the optional
/// dropout `mask` (compact `[B·valid, C]` order), written to `out` at `om`. Training: batch
/// statistics (returned), `act`/`dact` (compact) kept for the backward. Evaluation: running
/// statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gelu_bn_fwd(
    z: &[f32],
    zm: RowMap,
    (b, valid, c): (usize, usize, usize),
    bias: &[f32],
    bn: &BnParams,
    train: bool,
    act: &mut [f32],
    dact: &mut [f32],
    out: &mut [f32],
    om: RowMap,
    mask: Option<&[f32]>,
) -> Result<BnStats> {
    let n = b * valid;
    if zm.off + valid > zm.stride || om.off + valid > om.stride {
        return Err(Error::Shape("fused encoder: row layout".into()));
    }
    let zrow = |si: usize, r: usize| &z[(si * zm.stride + zm.off + r) * c..][..c];
    let outs = out[..b * om.stride * c].par_chunks_mut(om.stride * c);
    let eps = BN_EPS;
    if !train {
        let scale: Vec<f32> = (0..c)
            .map(|j| bn.weight[j] / (bn.running_var[j] as f64 + eps).sqrt() as f32)
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|j| bn.bias[j] - bn.running_mean[j] * scale[j])
            .collect();
        outs.enumerate().for_each(|(si, o)| {
            for r in 0..valid {
                let orow = &mut o[(om.off + r) * c..][..c];
                vmath::gelu_affine_row(zrow(si, r), bias, &scale, &shift, orow);
            }
        });
        return Ok(BnStats::default());
    }
    if n < 2 {
        return Err(Error::Shape(
            "BatchNorm in training needs more than one value per channel".into(),
        ));
    }
    // Pass 1: activations, derivatives, per-sample f32 sums added up in f64.
    let per_sample: Vec<Vec<f32>> = act
        .par_chunks_mut(valid * c)
        .zip(dact.par_chunks_mut(valid * c))
        .enumerate()
        .map(|(si, (ac, dc))| {
            let mut s12 = vec![0f32; 2 * c];
            let (s1, s2) = s12.split_at_mut(c);
            for r in 0..valid {
                vmath::gelu_grad_row(
                    zrow(si, r),
                    bias,
                    &mut ac[r * c..(r + 1) * c],
                    &mut dc[r * c..(r + 1) * c],
                    s1,
                    s2,
                );
            }
            s12
        })
        .collect();
    let sums = sum_in_order(&per_sample, 2 * c);
    let nf = n as f64;
    let mean: Vec<f64> = (0..c).map(|j| sums[j] / nf).collect();
    let var: Vec<f64> = (0..c)
        .map(|j| (sums[c + j] / nf - mean[j] * mean[j]).max(0.0))
        .collect();
    let inv: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v + eps).sqrt()) as f32)
        .collect();
    let scale: Vec<f32> = (0..c).map(|j| inv[j] * bn.weight[j]).collect();
    let shift: Vec<f32> = (0..c)
        .map(|j| bn.bias[j] - mean[j] as f32 * scale[j])
        .collect();
    let ones = vec![1f32; c];
    let act = &*act;
    // Pass 2: normalise, dropout, write in the next stage's layout.
    outs.enumerate().for_each(|(si, o)| {
        for r in 0..valid {
            let k = (si * valid + r) * c;
            let m = mask.map_or(&ones[..], |m| &m[k..k + c]);
            let orow = &mut o[(om.off + r) * c..][..c];
            vmath::affine_mask_row(&act[k..k + c], &scale, &shift, m, orow);
        }
    });
    Ok(BnStats {
        mean: mean.iter().map(|&m| m as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        n,
        inv,
    })
}

/// Backward of [`gelu_bn_fwd`] in training: `dz` written at `zm` (valid rows only); returns the
/// gradients of the BatchNorm weight and bias and of the pre-activation bias.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gelu_bn_bwd(
    dy: &[f32],
    ym: RowMap,
    mask: Option<&[f32]>,
    (b, valid, c): (usize, usize, usize),
    act: &[f32],
    dact: &[f32],
    st: &BnStats,
    bn: &BnParams,
    dz: &mut [f32],
    zm: RowMap,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let n = b * valid;
    if act.len() != n * c || st.n != n || zm.off + valid > zm.stride || ym.off + valid > ym.stride {
        return Err(Error::Shape(
            "fused encoder: BatchNorm backward without its forward".into(),
        ));
    }
    let (mean, inv) = (&st.mean, &st.inv);
    let ones = vec![1f32; c];
    let dyrow = |si: usize, r: usize| &dy[(si * ym.stride + ym.off + r) * c..][..c];
    let mrow = |k: usize| mask.map_or(&ones[..], |m| &m[k..k + c]);
    // Σ dy·x̂ and Σ dy per channel.
    let per_sample: Vec<Vec<f32>> = (0..b)
        .into_par_iter()
        .map(|si| {
            let mut t12 = vec![0f32; 2 * c];
            let (t1, t2) = t12.split_at_mut(c);
            for r in 0..valid {
                let k = (si * valid + r) * c;
                vmath::bn_sums_row(dyrow(si, r), mrow(k), &act[k..k + c], mean, inv, t1, t2);
            }
            t12
        })
        .collect();
    let sums = sum_in_order(&per_sample, 2 * c);
    let nf = n as f64;
    let k1: Vec<f32> = (0..c).map(|j| bn.weight[j] * inv[j]).collect();
    let m_dy: Vec<f32> = (0..c).map(|j| (sums[c + j] / nf) as f32).collect();
    let m_dyx: Vec<f32> = (0..c).map(|j| (sums[j] / nf) as f32).collect();
    let coef = BnBack {
        mean,
        inv,
        k1: &k1,
        m_dy: &m_dy,
        m_dyx: &m_dyx,
    };
    let per_sample: Vec<Vec<f32>> = dz
        .par_chunks_mut(zm.stride * c)
        .take(b)
        .enumerate()
        .map(|(si, o)| {
            let mut zs = vec![0f32; c];
            for r in 0..valid {
                let k = (si * valid + r) * c;
                let orow = &mut o[(zm.off + r) * c..][..c];
                vmath::bn_grad_row(
                    dyrow(si, r),
                    mrow(k),
                    &act[k..k + c],
                    &dact[k..k + c],
                    &coef,
                    orow,
                    &mut zs,
                );
            }
            zs
        })
        .collect();
    let zsum = sum_in_order(&per_sample, c);
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok((f32s(&sums[..c]), f32s(&sums[c..]), f32s(&zsum)))
}

/// Per-sample partial sums added up in f64 in sample order (not in the order threads finish),
/// so that results do not depend on scheduling: training runs are reproducible bit for bit.
fn sum_in_order(parts: &[Vec<f32>], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n];
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += *v as f64;
        }
    }
    out
}

//! `BatchNorm(GELU(z))` over the last (channel) axis as one fused CPU kernel with its own
//! backward; every GELU of the model is followed by a BatchNorm.
//!
//! candle's composed version makes ~6 passes forward (GELU, mean, centre, square, mean, affine)
//! and ~25 backward (GELU's derivative alone is 13 elementwise ops). Here the host kernels that
//! the fused encoder and the plain head's hidden layer also run ([`crate::ops::host::gelu_bn`]),
//! one GELU+BatchNorm implementation for its three callers: training forward = one pass
//! computing `a = GELU(z)`, `GELU'(z)` and per-channel sums, one pass writing `y`; backward =
//! one reduction pass and one elementwise pass. Evaluation: one pass `y = GELU(z)·s + t`. Partial
//! sums are added in row order, so results do not depend on thread scheduling. On other devices
//! (or dtypes) the composed candle ops are used.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
pub use crate::ops::host::gelu_bn::BN_EPS;
use crate::ops::host::gelu_bn::{gelu_bn_bwd, gelu_bn_fwd, BnParams, BnStats, RowMap};
use crate::ops::host::vmath::gelu_and_grad;
use crate::ops::storage::f32_slice;

/// Rows per parallel chunk of the evaluation-mode backward.
const ROWS: usize = 64;

/// Each row its own sample: the host kernels' layout for a plain `[N, C]` buffer.
const FLAT: RowMap = RowMap { stride: 1, off: 0 };

/// What the training forward keeps for the backward pass and the running statistics.
#[derive(Debug, Default)]
struct Saved {
    /// GELU(z), row-major [N, C].
    act: Vec<f32>,
    /// GELU'(z).
    dact: Vec<f32>,
    /// The batch statistics.
    stats: BnStats,
}

/// The fused op. `Train` normalises with batch statistics; `Eval` with the given running ones.
/// Both run the host kernels the fused encoder and hidden layer run
/// ([`crate::ops::host::gelu_bn`]), with [`BN_EPS`].
#[derive(Debug)]
enum GeluBn {
    /// Batch statistics; the op records them for the running-statistics update.
    Train { saved: Arc<Mutex<Saved>> },
    /// Running statistics `(mean, var)`.
    Eval { mean: Vec<f32>, var: Vec<f32> },
}

fn bail<T>(msg: String) -> candle_core::Result<T> {
    Err(candle_core::Error::Msg(msg))
}

fn host_err(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
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
        // No pre-activation bias here: the layer adds its own before the op.
        let zero = vec![0f32; c];
        let dims = (n, 1, c);
        match self {
            GeluBn::Eval { mean, var } => {
                let bn = BnParams {
                    weight: w.to_vec(),
                    bias: b.to_vec(),
                    running_mean: mean.clone(),
                    running_var: var.clone(),
                };
                gelu_bn_fwd(
                    z,
                    FLAT,
                    dims,
                    &zero,
                    &bn,
                    false,
                    &mut [],
                    &mut [],
                    &mut y,
                    FLAT,
                    None,
                )
                .map_err(host_err)?;
            }
            GeluBn::Train { saved } => {
                let bn = BnParams {
                    weight: w.to_vec(),
                    bias: b.to_vec(),
                    ..BnParams::default()
                };
                let mut act = vec![0f32; z.len()];
                let mut dact = vec![0f32; z.len()];
                let stats = gelu_bn_fwd(
                    z, FLAT, dims, &zero, &bn, true, &mut act, &mut dact, &mut y, FLAT, None,
                )
                .map_err(host_err)?;
                let mut s = saved
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
                *s = Saved { act, dact, stats };
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
            GeluBn::Eval { mean, var } => {
                let zv: Vec<f32> = z.flatten_all()?.to_vec1()?;
                let inv: Vec<f32> = var
                    .iter()
                    .map(|&v| (1.0 / (v as f64 + BN_EPS).sqrt()) as f32)
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
                let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                (to32(&sums[..c]), to32(&sums[c..]))
            }
            GeluBn::Train { saved } => {
                let s = saved
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
                if s.act.len() != dy.len() {
                    return bail("gelu_bn: backward without a matching forward".into());
                }
                let bn = BnParams {
                    weight: wv,
                    ..BnParams::default()
                };
                let (dw, db, _) = gelu_bn_bwd(
                    &dy,
                    FLAT,
                    None,
                    (n, 1, c),
                    &s.act,
                    &s.dact,
                    &s.stats,
                    &bn,
                    &mut dz,
                    FLAT,
                )
                .map_err(host_err)?;
                (dw, db)
            }
        };
        let dev = z.device();
        Ok((
            Some(Tensor::from_vec(dz, shape, dev)?),
            Some(Tensor::from_vec(dw, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

fn add_vecs(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Applies the fused training op to `z` `[.., C]` and returns `(y, batch mean, biased batch var)`.
pub fn train(z: &Tensor, w: &Tensor, b: &Tensor) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = GeluBn::Train {
        saved: saved.clone(),
    };
    let y = z.contiguous()?.apply_op3(w, b, op)?;
    let s = saved
        .lock()
        .map_err(|_| crate::Error::Poisoned("gelu_bn"))?;
    Ok((y, s.stats.mean.clone(), s.stats.var.clone()))
}

/// Applies the fused evaluation op with running statistics `(mean, var)`.
pub fn eval(z: &Tensor, w: &Tensor, b: &Tensor, mean: Vec<f32>, var: Vec<f32>) -> Result<Tensor> {
    Ok(z.contiguous()?
        .apply_op3(w, b, GeluBn::Eval { mean, var })?)
}

//! `BN(GELU(z + bias))` over the channels of row-major host buffers, forward (training or
//! evaluation) and backward, in two passes each: the fused encoder's three BatchNorms and the
//! plain head's hidden layer ([`crate::ops::host::bn_hidden`]) call them. Per-sample partial
//! sums are added in sample order, so results do not depend on thread scheduling. The candle op
//! over the same function is [`crate::ops::gelu_bn`].

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::host::vmath::{self, BnBack};

/// BatchNorm's epsilon (PyTorch's default), the one value every BatchNorm of the model uses:
/// here, in the fused encoder's passes and in [`crate::model::batch_norm`].
pub const BN_EPS: f64 = 1e-5;

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

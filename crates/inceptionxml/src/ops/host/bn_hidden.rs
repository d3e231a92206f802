//! Plain InceptionXML's hidden layer with its BatchNorm, residual and both dropouts, forward and
//! backward as host passes on the CPU (MODEL.md §4):
//!
//! `out = (BN(GELU(W·(h ⊙ m1) + b)) + h) ⊙ m2`
//!
//! with `h` `[B, D]`, the weight `W` `[D, D]` (out × in), BatchNorm over the D channels on the
//! batch's statistics, inverted-dropout masks `m1` (before the layer) and `m2` (after the
//! residual: the classifier's input dropout). Through candle's autograd this is a dozen ops,
//! most of them single-threaded, each with its own allocation and pass over `[B, D]`; here the
//! forward is one GEMM, the fused GELU + BatchNorm passes of the encoder
//! ([`crate::ops::host::encoder`]) and one row pass, the backward two GEMMs, those passes' backward
//! and one row pass.
//!
//! The masks are drawn by the caller from the model's [`crate::ops::dropout::Dropout`] in the
//! order the composed ops draw them, so a fused step and a composed step on twin models drop the
//! same values.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::host::gelu_bn::{gelu_bn_bwd, gelu_bn_fwd, BnParams, BnStats, RowMap};
use crate::ops::host::mm::{mm, par_for, Out, View};
use crate::ops::host::residual_hidden::{add_masked, linear_grads, masked};
use crate::ops::storage::zeros;

/// One row per sample in the GELU + BatchNorm passes.
const ROWS: RowMap = RowMap { stride: 1, off: 0 };

/// What the backward needs from the forward.
#[derive(Debug)]
pub struct BnHiddenTape {
    b: usize,
    d: usize,
    /// `h ⊙ m1` `[B, D]`.
    xd: Vec<f32>,
    /// GELU and its derivative at the pre-activation `[B, D]`.
    act: Vec<f32>,
    dact: Vec<f32>,
    stats: BnStats,
    m1: Option<Vec<f32>>,
    m2: Option<Vec<f32>>,
    /// `W` `[D, D]` (out × in).
    w: Vec<f32>,
    bn: BnParams,
}

impl BnHiddenTape {
    /// The batch's BatchNorm statistics (mean, biased variance, values per channel), for the
    /// running-statistics update.
    pub fn batch_stats(&self) -> (&[f32], &[f32], usize) {
        (&self.stats.mean, &self.stats.var, self.stats.n)
    }
}

/// The gradients of the layer.
#[derive(Debug)]
pub struct BnHiddenGrads {
    /// `[B, D]`.
    pub dh: Vec<f32>,
    /// `[D, D]` (out × in).
    pub dw: Vec<f32>,
    /// `[D]`: the pre-activation bias.
    pub db: Vec<f32>,
    /// `[D]` each: the BatchNorm weight and bias.
    pub bn_weight: Vec<f32>,
    pub bn_bias: Vec<f32>,
}

/// The training forward for `h` `[b, d]`, the weight `w` `[d, d]` (out × in), its bias `[d]`, the
/// BatchNorm's parameters and the dropout masks (`[b, d]` each, or none). Returns `out` and the
/// tape; the caller updates the running statistics from [`BnHiddenTape::batch_stats`].
pub fn forward(
    h: &[f32],
    w: Vec<f32>,
    bias: &[f32],
    bn: BnParams,
    (b, d): (usize, usize),
    m1: Option<Vec<f32>>,
    m2: Option<Vec<f32>>,
) -> Result<(Vec<f32>, BnHiddenTape)> {
    let n = b * d;
    let bad = |what: &str, len: usize| {
        Err(Error::Shape(format!(
            "bn_hidden: {what} has {len} values for [{b}, {d}]"
        )))
    };
    if h.len() != n {
        return bad("h", h.len());
    }
    if w.len() != d * d {
        return bad("weight", w.len());
    }
    for v in [bias, &bn.weight[..], &bn.bias[..]] {
        if v.len() != d {
            return bad("a per-channel vector", v.len());
        }
    }
    for m in [&m1, &m2].into_iter().flatten() {
        if m.len() != n {
            return bad("dropout mask", m.len());
        }
    }
    let xd = masked(h, m1.as_deref());
    let mut z = zeros(n);
    mm(
        &mut z,
        Out::rm(0, d),
        View::rm(&xd, 0, b, d),
        View::rm(&w, 0, d, d).t(),
        1.0,
        false,
        par_for(b, d, d),
    )?;
    let (mut act, mut dact, mut out) = (zeros(n), zeros(n), zeros(n));
    let stats = gelu_bn_fwd(
        &z,
        ROWS,
        (b, 1, d),
        bias,
        &bn,
        true,
        &mut act,
        &mut dact,
        &mut out,
        ROWS,
        None,
    )?;
    out.par_chunks_mut(d.max(1))
        .zip(h.par_chunks(d.max(1)))
        .enumerate()
        .for_each(|(r, (o, hr))| match &m2 {
            Some(m) => {
                let mr = &m[r * d..(r + 1) * d];
                for j in 0..d {
                    o[j] = (o[j] + hr[j]) * mr[j];
                }
            }
            None => o.iter_mut().zip(hr).for_each(|(a, x)| *a += x),
        });
    let tape = BnHiddenTape {
        b,
        d,
        xd,
        act,
        dact,
        stats,
        m1,
        m2,
        w,
        bn,
    };
    Ok((out, tape))
}

/// The backward from the gradient `dout` `[b, d]` of the forward's output.
pub fn backward(tape: &BnHiddenTape, dout: &[f32]) -> Result<BnHiddenGrads> {
    let BnHiddenTape {
        b,
        d,
        ref xd,
        ref act,
        ref dact,
        ref stats,
        ref m1,
        ref m2,
        ref w,
        ref bn,
    } = *tape;
    let n = b * d;
    if dout.len() != n {
        return Err(Error::Shape(format!(
            "bn_hidden: gradient has {} values for [{b}, {d}]",
            dout.len()
        )));
    }
    // g = dout ⊙ m2: the residual's gradient and the BatchNorm output's.
    let g = masked(dout, m2.as_deref());
    let mut dz = zeros(n);
    let (bn_weight, bn_bias, db) = gelu_bn_bwd(
        &g,
        ROWS,
        None,
        (b, 1, d),
        act,
        dact,
        stats,
        bn,
        &mut dz,
        ROWS,
    )?;
    let (dw, dxd) = linear_grads(&dz, xd, w, (b, d))?;
    let mut dh = g;
    add_masked(&mut dh, &dxd, m1.as_deref());
    Ok(BnHiddenGrads {
        dh,
        dw,
        db,
        bn_weight,
        bn_bias,
    })
}

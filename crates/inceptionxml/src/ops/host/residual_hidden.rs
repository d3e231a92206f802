//! InceptionXML+'s hidden layer with its residual and both dropouts, forward and backward in one
//! host pass each on the CPU (MODEL.md §5):
//!
//! `out = (GELU(SN(W)·(h ⊙ m1) + b) + h) ⊙ m2`
//!
//! with `h` `[B, D]`, the spectrally normalised weight `SN(W) = W / σ` `[hd, D]` (hd = D: the
//! residual is the identity), inverted-dropout masks `m1` (before the layer) and `m2` (after the
//! residual). Through candle's autograd this is eleven ops, each with its own allocation and
//! pass over `[B, D]` (the dropouts, the bias broadcast, GELU and its gradient, the residual
//! add, the transposes); here the forward is one GEMM and one row pass, the backward two GEMMs
//! and two row passes. The op sees the normalised weight; the caller carries its gradient to
//! the raw weight ([`crate::model::spectral_norm::sn_backward`]).
//!
//! The masks are drawn from the model's [`crate::ops::dropout::Dropout`] in the order the
//! composed ops draw them (none when p = 0), so a fused step and a composed step on twin models
//! drop the same values.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::host::mm::{mm, par_for, Out, View};
use crate::ops::host::vmath;
use crate::ops::storage::zeros;

/// What the backward needs from the forward.
#[derive(Debug)]
pub struct HiddenTape {
    b: usize,
    d: usize,
    /// `h ⊙ m1` `[B, D]`.
    xd: Vec<f32>,
    /// The pre-activation `[B, D]`.
    z: Vec<f32>,
    /// `m1`, `m2` `[B, D]` (None: no dropout there).
    m1: Option<Vec<f32>>,
    m2: Option<Vec<f32>>,
    /// `W / σ` `[D, D]`.
    w: Vec<f32>,
}

impl HiddenTape {
    /// The normalised weight the forward used.
    pub fn weight(&self) -> &[f32] {
        &self.w
    }
}

/// The gradients of one fused hidden layer.
#[derive(Debug)]
pub struct HiddenGrads {
    /// `[B, D]`.
    pub dh: Vec<f32>,
    /// Of the normalised weight `[D, D]`.
    pub dw: Vec<f32>,
    /// `[D]`.
    pub db: Vec<f32>,
}

/// The forward for `h` `[b, d]`, the normalised weight `w` `[d, d]` (out × in) and bias `[d]`,
/// with dropout masks `m1`, `m2` (`[b, d]` each, or none). Returns `out` and the tape.
pub fn forward(
    h: &[f32],
    w: Vec<f32>,
    bias: &[f32],
    (b, d): (usize, usize),
    m1: Option<Vec<f32>>,
    m2: Option<Vec<f32>>,
) -> Result<(Vec<f32>, HiddenTape)> {
    let n = b * d;
    let bad = |what: &str, len: usize| {
        Err(Error::Shape(format!(
            "residual_hidden: {what} has {len} values for [{b}, {d}]"
        )))
    };
    if h.len() != n {
        return bad("h", h.len());
    }
    if w.len() != d * d {
        return bad("weight", w.len());
    }
    if bias.len() != d {
        return bad("bias", bias.len());
    }
    for m in [&m1, &m2].into_iter().flatten() {
        if m.len() != n {
            return bad("dropout mask", m.len());
        }
    }
    let xd = masked(h, m1.as_deref());
    let mut z = vec![0f32; n];
    z.par_chunks_mut(d.max(1))
        .for_each(|row| row.copy_from_slice(bias));
    mm(
        &mut z,
        Out::rm(0, d),
        View::rm(&xd, 0, b, d),
        View::rm(&w, 0, d, d).t(),
        1.0,
        true,
        par_for(b, d, d),
    )?;
    let mut out = vec![0f32; n];
    out.par_chunks_mut(d.max(1))
        .zip(z.par_chunks(d.max(1)))
        .zip(h.par_chunks(d.max(1)))
        .enumerate()
        .for_each(|(r, ((o, zr), hr))| {
            vmath::gelu_row(zr, o);
            match &m2 {
                Some(m) => {
                    let mr = &m[r * d..(r + 1) * d];
                    for j in 0..d {
                        o[j] = (o[j] + hr[j]) * mr[j];
                    }
                }
                None => {
                    for j in 0..d {
                        o[j] += hr[j];
                    }
                }
            }
        });
    let tape = HiddenTape {
        b,
        d,
        xd,
        z,
        m1,
        m2,
        w,
    };
    Ok((out, tape))
}

/// The backward from the gradient `dout` `[b, d]` of the forward's output.
pub fn backward(tape: &HiddenTape, dout: &[f32]) -> Result<HiddenGrads> {
    let HiddenTape {
        b,
        d,
        ref xd,
        ref z,
        ref m1,
        ref m2,
        ref w,
    } = *tape;
    let n = b * d;
    if dout.len() != n {
        return Err(Error::Shape(format!(
            "residual_hidden: gradient has {} values for [{b}, {d}]",
            dout.len()
        )));
    }
    // df = dout ⊙ m2 (the residual's gradient, also the GELU's output gradient);
    // dz = df ⊙ GELU'(z).
    let df = masked(dout, m2.as_deref());
    let mut dz = vec![0f32; n];
    dz.par_chunks_mut(d.max(1))
        .zip(z.par_chunks(d.max(1)))
        .zip(df.par_chunks(d.max(1)))
        .for_each(|((o, zr), g)| vmath::gelu_bwd_row(zr, g, o));
    // dS = dzᵀ·xd, db = Σ_rows dz (row order: deterministic); dh = df + (dz·S) ⊙ m1.
    let (dw, dxd) = linear_grads(&dz, xd, w, (b, d))?;
    let db = (0..d)
        .into_par_iter()
        .map(|j| (0..b).map(|r| dz[r * d + j]).sum::<f32>())
        .collect();
    let mut dh = df;
    add_masked(&mut dh, &dxd, m1.as_deref());
    Ok(HiddenGrads { dh, dw, db })
}

/// `v ⊙ m` (a copy of `v` without a mask).
pub(crate) fn masked(v: &[f32], m: Option<&[f32]>) -> Vec<f32> {
    match m {
        Some(m) => v.par_iter().zip(m).map(|(x, k)| x * k).collect(),
        None => v.to_vec(),
    }
}

/// `dst += src ⊙ m` (`+= src` without a mask).
pub(crate) fn add_masked(dst: &mut [f32], src: &[f32], m: Option<&[f32]>) {
    match m {
        Some(m) => dst
            .par_iter_mut()
            .zip(src.par_iter().zip(m))
            .for_each(|(a, (v, k))| *a += v * k),
        None => dst.par_iter_mut().zip(src).for_each(|(a, v)| *a += v),
    }
}

/// The two products of a `[d, d]` layer's backward (weight `w` out × in) from the gradient `dz`
/// `[b, d]` of its output and its input `xd` `[b, d]`: `dW = dzᵀ·xd` (a short reduction over
/// the batch, split by output tiles) and `dxd = dz·W`.
pub(crate) fn linear_grads(
    dz: &[f32],
    xd: &[f32],
    w: &[f32],
    (b, d): (usize, usize),
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut dw = zeros(d * d);
    mm(
        &mut dw,
        Out::rm(0, d),
        View::rm(dz, 0, b, d).t(),
        View::rm(xd, 0, b, d),
        1.0,
        false,
        par_for(d, d, b),
    )?;
    let mut dxd = zeros(b * d);
    mm(
        &mut dxd,
        Out::rm(0, d),
        View::rm(dz, 0, b, d),
        View::rm(w, 0, d, d),
        1.0,
        false,
        par_for(b, d, d),
    )?;
    Ok((dw, dxd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    /// Σ out ⊙ c for fixed weights c: a scalar whose gradient is `c`.
    fn objective(
        h: &[f32],
        w: &[f32],
        bias: &[f32],
        dims: (usize, usize),
        masks: (&Option<Vec<f32>>, &Option<Vec<f32>>),
        c: &[f32],
    ) -> f64 {
        let (out, _) =
            forward(h, w.to_vec(), bias, dims, masks.0.clone(), masks.1.clone()).unwrap();
        out.iter().zip(c).map(|(a, b)| (a * b) as f64).sum()
    }

    /// Every gradient (input, weight, bias) against central finite differences, with both
    /// dropouts and without.
    #[test]
    fn gradients_match_finite_differences() {
        let (b, d) = (5, 6);
        let h = lcg(b * d, 1, 1.0);
        let w = lcg(d * d, 2, 0.6);
        let bias = lcg(d, 5, 0.3);
        let c = lcg(b * d, 9, 1.0);
        let dims = (b, d);
        let with = (
            Some(crate::ops::dropout::mask(b * d, 0.25, 7)),
            Some(crate::ops::dropout::mask(b * d, 0.5, 8)),
        );
        for (m1, m2) in [with, (None, None)] {
            let (_, tape) = forward(&h, w.clone(), &bias, dims, m1.clone(), m2.clone()).unwrap();
            assert_eq!(tape.weight(), &w[..]);
            let g = backward(&tape, &c).unwrap();
            let eps = 1e-3f32;
            let fd = |f: &dyn Fn(f32) -> f64| ((f(eps) - f(-eps)) / (2.0 * eps as f64)) as f32;
            let close = |a: f32, e: f32, what: &str| {
                assert!(
                    (a - e).abs() <= 2e-3 * (1.0 + e.abs()),
                    "{what}: {a} vs {e}"
                );
            };
            let masks = (&m1, &m2);
            for i in 0..b * d {
                let e = fd(&|t| {
                    let mut hh = h.clone();
                    hh[i] += t;
                    objective(&hh, &w, &bias, dims, masks, &c)
                });
                close(g.dh[i], e, &format!("dh[{i}]"));
            }
            for i in 0..d * d {
                let e = fd(&|t| {
                    let mut ww = w.clone();
                    ww[i] += t;
                    objective(&h, &ww, &bias, dims, masks, &c)
                });
                close(g.dw[i], e, &format!("dW[{i}]"));
            }
            for i in 0..d {
                let e = fd(&|t| {
                    let mut bb = bias.clone();
                    bb[i] += t;
                    objective(&h, &w, &bb, dims, masks, &c)
                });
                close(g.db[i], e, &format!("db[{i}]"));
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let w = vec![0f32; 9];
        assert!(forward(&[0.0; 5], w.clone(), &[0.0; 3], (2, 3), None, None).is_err());
        assert!(forward(&[0.0; 6], w.clone(), &[0.0; 2], (2, 3), None, None).is_err());
        assert!(forward(
            &[0.0; 6],
            w.clone(),
            &[0.0; 3],
            (2, 3),
            Some(vec![1.0; 5]),
            None
        )
        .is_err());
        let (_, tape) = forward(&[0.0; 6], w, &[0.0; 3], (2, 3), None, None).unwrap();
        assert!(backward(&tape, &[0.0; 5]).is_err());
    }
}

//! Per sample: the dual attention's mixing matrix and the projection (forward), and their
//! backward, on host slices.

use super::*;

/// Per-sample attention and projection forward for text `bi` with `nb` words whose `Y` rows
/// start at row `off` of `y`; `a` is the sample's scratch, `z` its `[d, F]` projection output
/// (before bias). Products with the d axis use the word rows only (padding rows are zero).
pub(super) fn attention_fwd(
    p: &Params,
    dm: &Dims,
    x: &[f32],
    y: &[f32],
    (bi, nb, off): (usize, usize, usize),
    a: &mut [f32],
    z: &mut [f32],
) -> Result<()> {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    let ss = s * s;
    let xb = View::rm(x, bi * s * d, nb, d);
    let yb = View::rm(y, off * d, nb, d);
    let none = Parallelism::None;
    let (am, rest) = a.split_at_mut(ss);
    let (aw1, rest) = rest.split_at_mut(ss);
    let (r, rest) = rest.split_at_mut(ss);
    let (n, rest) = rest.split_at_mut(ss);
    let (q, rest) = rest.split_at_mut(ss);
    let (pm, rest) = rest.split_at_mut(ss);
    let (m, t) = rest.split_at_mut(ss);
    am.fill(0.0);
    mm(am, Out::rm(0, s), xb, xb.t(), 1.0, false, none)?;
    mm(
        aw1,
        Out::rm(0, s),
        View::rm(am, 0, s, s),
        View::rm(&p.w1, 0, s, s),
        1.0,
        false,
        none,
    )?;
    for i in 0..s {
        for j in 0..s {
            r[i * s + j] = p.g1 * aw1[i * s + j] + if i == j { 1.0 } else { 0.0 };
        }
    }
    n.fill(0.0);
    mm(n, Out::rm(0, s), yb, xb.t(), 1.0, false, none)?;
    mm(
        q,
        Out::rm(0, s),
        View::rm(r, 0, s, s),
        View::rm(n, 0, s, s),
        1.0,
        false,
        none,
    )?;
    mm(
        pm,
        Out::rm(0, s),
        View::rm(q, 0, s, s),
        View::rm(r, 0, s, s),
        1.0,
        false,
        none,
    )?;
    for i in 0..ss {
        m[i] = r[i] + p.g2 * pm[i];
    }
    mm(
        t,
        Out::rm(0, s),
        View::rm(&p.wp, 0, f, s),
        View::rm(m, 0, s, s),
        1.0,
        false,
        none,
    )?;
    // z[i, c] = Σ_j X[j, i] T[c, j] over the word rows j < nb.
    let tw = View::rm(t, 0, f, s).block(f, nb);
    mm(z, Out::rm(0, f), xb.t(), tw.t(), 1.0, false, none)?;
    Ok(())
}

/// Per-sample sums of the attention backward (reduced over the batch).
pub(super) struct AttAcc {
    pub(super) wp: Vec<f32>,
    pub(super) w1: Vec<f32>,
    pub(super) g1: f64,
    pub(super) g2: f64,
}

impl AttAcc {
    pub(super) fn zero(dm: &Dims) -> Self {
        AttAcc {
            wp: vec![0.0; dm.f * dm.s],
            w1: vec![0.0; dm.s * dm.s],
            g1: 0.0,
            g2: 0.0,
        }
    }

    pub(super) fn add(&mut self, o: &AttAcc) {
        self.wp.iter_mut().zip(&o.wp).for_each(|(a, b)| *a += b);
        self.w1.iter_mut().zip(&o.w1).for_each(|(a, b)| *a += b);
        self.g1 += o.g1;
        self.g2 += o.g2;
    }
}

/// Per-sample attention and projection backward: writes the sample's `dY` (its `nb` word rows)
/// and its part of `dX` (word rows; without the `Y = X W2ᵀ` term, which is one GEMM over the
/// batch afterwards).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_bwd(
    p: &Params,
    dm: &Dims,
    (x, y, dz1): (&[f32], &[f32], &[f32]),
    a: &[f32],
    (bi, nb, off): (usize, usize, usize),
    da: &mut [f32],
    dyb: &mut [f32],
    dxb: &mut [f32],
) -> Result<AttAcc> {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    let ss = s * s;
    let none = Parallelism::None;
    let sq = |i: usize| View::rm(a, i * ss, s, s);
    // Saved: A, AW1, R, N, Q, P, M, T.
    let (am, aw1, r, n, q, pm, m) = (0, 1, 2, 3, 4, 5, 6);
    let t = View::rm(a, 7 * ss, f, s);
    let tw = t.block(f, nb);
    let xb = View::rm(x, bi * s * d, nb, d);
    let yb = View::rm(y, off * d, nb, d);
    // dU (F×d): element (c, i) = dz1[(bi·d + i)·F + c].
    let du = View::strided(dz1, bi * d * f, (f, d), (1, f));
    let (dt, rest) = da.split_at_mut(f * s);
    let (dmm, rest) = rest.split_at_mut(ss);
    let (dr, rest) = rest.split_at_mut(ss);
    let (dq, rest) = rest.split_at_mut(ss);
    let (dn, rest) = rest.split_at_mut(ss);
    let (dam, das) = rest.split_at_mut(ss);
    let das = &mut das[..ss];
    let mut acc = AttAcc::zero(dm);
    dt.fill(0.0);
    mm(dt, Out::rm(0, s), du, xb.t(), 1.0, false, none)?;
    mm(dxb, Out::rm(0, d), tw.t(), du, 1.0, false, none)?;
    let dtv = View::rm(dt, 0, f, s);
    mm(&mut acc.wp, Out::rm(0, s), dtv, sq(m).t(), 1.0, false, none)?;
    mm(
        dmm,
        Out::rm(0, s),
        View::rm(&p.wp, 0, f, s).t(),
        dtv,
        1.0,
        false,
        none,
    )?;
    acc.g2 = dot(dmm, &a[pm * ss..(pm + 1) * ss]);
    // M = R + γ2 Q R: dQ = γ2 dM Rᵀ, dR = dM + γ2 Qᵀ dM.
    let dmv = View::rm(dmm, 0, s, s);
    mm(dq, Out::rm(0, s), dmv, sq(r).t(), p.g2, false, none)?;
    dr.copy_from_slice(dmm);
    mm(dr, Out::rm(0, s), sq(q).t(), dmv, p.g2, true, none)?;
    // Q = R N: dR += dQ Nᵀ, dN = Rᵀ dQ.
    let dqv = View::rm(dq, 0, s, s);
    mm(dr, Out::rm(0, s), dqv, sq(n).t(), 1.0, true, none)?;
    mm(dn, Out::rm(0, s), sq(r).t(), dqv, 1.0, false, none)?;
    // N = Y Xᵀ (word block): dY = dN X, dX += dNᵀ Y.
    let dnv = View::rm(dn, 0, s, s).block(nb, nb);
    mm(dyb, Out::rm(0, d), dnv, xb, 1.0, false, none)?;
    mm(dxb, Out::rm(0, d), dnv.t(), yb, 1.0, true, none)?;
    // R = I + γ1 A W1: dγ1 = ⟨dR, A W1⟩, dA = γ1 dR W1ᵀ, dW1 = γ1 Aᵀ dR.
    acc.g1 = dot(dr, &a[aw1 * ss..(aw1 + 1) * ss]);
    let drv = View::rm(dr, 0, s, s);
    mm(
        dam,
        Out::rm(0, s),
        drv,
        View::rm(&p.w1, 0, s, s).t(),
        p.g1,
        false,
        none,
    )?;
    mm(
        &mut acc.w1,
        Out::rm(0, s),
        sq(am).t(),
        drv,
        p.g1,
        false,
        none,
    )?;
    // A = X Xᵀ: dX += (dA + dAᵀ) X.
    for i in 0..s {
        for j in 0..s {
            das[i * s + j] = dam[i * s + j] + dam[j * s + i];
        }
    }
    let dav = View::rm(das, 0, s, s).block(nb, nb);
    mm(dxb, Out::rm(0, d), dav, xb, 1.0, true, none)?;
    Ok(acc)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

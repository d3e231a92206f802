//! Row kernels of the fused GELU + BatchNorm passes, written branch-free (a polynomial `exp`,
//! selects instead of branches) so the compiler vectorises them; compiled a second time for
//! AVX2 + FMA and chosen at run time, like [`crate::ops::host::simd`].
//!
//! Each kernel works on one row of `C` channels; slices are cut to the common length first so
//! the loops carry no bounds checks.

#[cfg(target_arch = "x86_64")]
use crate::ops::host::cpu::simd_fn;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `eˣ` for x in f32 range, relative error below 3e-7 (two f32 ulps): `2ᵏ · p(r)` with `k = ⌊x·log₂e + ½⌋`,
/// `r = x − k·ln 2` (two-part ln 2) and a degree-6 Taylor polynomial on |r| ≤ ln2/2.
/// Branch-free (selects); 0 below −87 (where eˣ < 1.7e-38 is subnormal), the value at 88
/// above 88.
#[inline(always)]
pub fn exp(x0: f32) -> f32 {
    let x = x0.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ᵏ from the bits of k + 1.5·2²³ (an exact integer there), without a float-to-int
    // conversion, whose saturating semantics would keep the loop scalar.
    let kbits = (k + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let v = p * f32::from_bits(kbits.wrapping_add(127) << 23);
    if x0 < -87.0 {
        0.0
    } else {
        v
    }
}

/// `(Φ(z), φ(z))`: the standard normal CDF and density. Φ uses Abramowitz & Stegun 7.1.26 for
/// erf (absolute error < 1.5e-7), sharing its `exp(−z²/2)` with φ.
#[inline(always)]
pub fn normal_cdf_pdf(z: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let e = exp(-0.5 * z * z);
    let x = z.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * x);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 0.5 * poly * e; // = 1 − Φ(|z|)
    let cdf = if z >= 0.0 { 1.0 - tail } else { tail };
    (cdf, FRAC_1_SQRT_2PI * e)
}

/// `(GELU(z), GELU'(z))` with the exact (erf) GELU: `z·Φ(z)` and `Φ(z) + z·φ(z)`.
#[inline(always)]
pub fn gelu_and_grad(z: f32) -> (f32, f32) {
    let (cdf, pdf) = normal_cdf_pdf(z);
    (z * cdf, cdf + z * pdf)
}

/// `GELU(z)`.
#[inline(always)]
pub fn gelu(z: f32) -> f32 {
    z * normal_cdf_pdf(z).0
}

#[inline(always)]
fn gelu_grad_row_body(
    z: &[f32],
    bias: &[f32],
    act: &mut [f32],
    dact: &mut [f32],
    s1: &mut [f32],
    s2: &mut [f32],
) {
    let n = z.len();
    let (bias, act, dact, s1, s2) = (
        &bias[..n],
        &mut act[..n],
        &mut dact[..n],
        &mut s1[..n],
        &mut s2[..n],
    );
    for j in 0..n {
        let (a, g) = gelu_and_grad(z[j] + bias[j]);
        act[j] = a;
        dact[j] = g;
        s1[j] += a;
        s2[j] += a * a;
    }
}

#[inline(always)]
fn gelu_affine_row_body(z: &[f32], bias: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
    let n = z.len();
    let (bias, scale, shift, out) = (&bias[..n], &scale[..n], &shift[..n], &mut out[..n]);
    for j in 0..n {
        out[j] = gelu(z[j] + bias[j]) * scale[j] + shift[j];
    }
}

#[inline(always)]
fn affine_mask_row_body(a: &[f32], scale: &[f32], shift: &[f32], mask: &[f32], out: &mut [f32]) {
    let n = a.len();
    let (scale, shift, mask, out) = (&scale[..n], &shift[..n], &mask[..n], &mut out[..n]);
    for j in 0..n {
        out[j] = (a[j] * scale[j] + shift[j]) * mask[j];
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bn_sums_row_body(
    dy: &[f32],
    mask: &[f32],
    act: &[f32],
    mean: &[f32],
    inv: &[f32],
    t1: &mut [f32],
    t2: &mut [f32],
) {
    let n = dy.len();
    let (mask, act, mean, inv, t1, t2) = (
        &mask[..n],
        &act[..n],
        &mean[..n],
        &inv[..n],
        &mut t1[..n],
        &mut t2[..n],
    );
    for j in 0..n {
        let g = dy[j] * mask[j];
        t1[j] += g * (act[j] - mean[j]) * inv[j];
        t2[j] += g;
    }
}

/// Coefficients of the BatchNorm backward per channel: `k1 = w·inv`, mean of dy, mean of dy·x̂.
pub struct BnBack<'a> {
    pub mean: &'a [f32],
    pub inv: &'a [f32],
    pub k1: &'a [f32],
    pub m_dy: &'a [f32],
    pub m_dyx: &'a [f32],
}

#[inline(always)]
fn bn_grad_row_body(
    dy: &[f32],
    mask: &[f32],
    act: &[f32],
    dact: &[f32],
    c: &BnBack,
    out: &mut [f32],
    zsum: &mut [f32],
) {
    let n = dy.len();
    let (mask, act, dact, out, zsum) = (
        &mask[..n],
        &act[..n],
        &dact[..n],
        &mut out[..n],
        &mut zsum[..n],
    );
    let (mean, inv, k1, m_dy, m_dyx) = (
        &c.mean[..n],
        &c.inv[..n],
        &c.k1[..n],
        &c.m_dy[..n],
        &c.m_dyx[..n],
    );
    for j in 0..n {
        let xh = (act[j] - mean[j]) * inv[j];
        let v = k1[j] * (dy[j] * mask[j] - m_dy[j] - xh * m_dyx[j]) * dact[j];
        out[j] = v;
        zsum[j] += v;
    }
}

/// `ln(1 + t)` for t in [0, 1]: `2·atanh(z)` with `z = t/(2 + t)` ≤ 1/3, by its series to z¹¹
/// (absolute error below 1e-7).
#[inline(always)]
pub fn ln_1p_unit(t: f32) -> f32 {
    let z = t / (2.0 + t);
    let z2 = z * z;
    2.0 * z
        * (1.0
            + z2 * (1.0 / 3.0
                + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0))))))
}

/// BCE with logits of one entry, `max(x, 0) − x·y + ln(1 + e^(−|x|))`, and `σ(x)`.
#[inline(always)]
pub fn bce_and_sigmoid(x: f32, y: f32) -> (f32, f32) {
    let t = exp(-x.abs());
    let loss = x.max(0.0) - x * y + ln_1p_unit(t);
    let inv = 1.0 / (1.0 + t);
    let sig = if x >= 0.0 { inv } else { t * inv };
    (loss, sig)
}

#[inline(always)]
fn bce_sum_row_body(x: &[f32], y: &[f32], m: Option<&[f32]>) -> f64 {
    let n = x.len();
    let y = &y[..n];
    let mut total = 0f64;
    // 16 f32 lanes over blocks of 256 entries, added up in f64.
    for b in (0..n).step_by(256) {
        let e = (b + 256).min(n);
        let mut acc = [0f32; 16];
        let mut tail = 0f32;
        let (xs, ys) = (&x[b..e], &y[b..e]);
        let ones = [1f32; 256];
        let ms = m.map_or(&ones[..e - b], |m| &m[b..e]);
        let (cx, cy, cm) = (
            xs.chunks_exact(16),
            ys.chunks_exact(16),
            ms.chunks_exact(16),
        );
        let (rx, ry, rm) = (cx.remainder(), cy.remainder(), cm.remainder());
        for ((xc, yc), mc) in cx.zip(cy).zip(cm) {
            for l in 0..16 {
                acc[l] += bce_and_sigmoid(xc[l], yc[l]).0 * mc[l];
            }
        }
        for ((&xv, &yv), &w) in rx.iter().zip(ry).zip(rm) {
            tail += bce_and_sigmoid(xv, yv).0 * w;
        }
        total += acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

#[inline(always)]
fn bce_grad_row_body(x: &[f32], y: &[f32], m: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    let n = x.len();
    let (y, out) = (&y[..n], &mut out[..n]);
    match m {
        None => {
            for j in 0..n {
                out[j] = (bce_and_sigmoid(x[j], y[j]).1 - y[j]) * scale;
            }
        }
        Some(m) => {
            let m = &m[..n];
            for j in 0..n {
                out[j] = (bce_and_sigmoid(x[j], y[j]).1 - y[j]) * m[j] * scale;
            }
        }
    }
}

#[inline(always)]
fn gelu_row_body(z: &[f32], out: &mut [f32]) {
    let n = z.len();
    let out = &mut out[..n];
    for j in 0..n {
        out[j] = gelu(z[j]);
    }
}

#[inline(always)]
fn gelu_bwd_row_body(z: &[f32], g: &[f32], out: &mut [f32]) {
    let n = z.len();
    let (g, out) = (&g[..n], &mut out[..n]);
    for j in 0..n {
        out[j] = g[j] * gelu_and_grad(z[j]).1;
    }
}

simd_fn! {
    /// `out = GELU(z)`.
    pub fn gelu_row(z: &[f32], out: &mut [f32]) = gelu_row_body;
}

simd_fn! {
    /// `out = g·GELU'(z)`.
    pub fn gelu_bwd_row(z: &[f32], g: &[f32], out: &mut [f32]) = gelu_bwd_row_body;
}

simd_fn! {
    /// `Σ ℓ(x, y)·m` over a row of logits `x`, targets `y` and optional weights `m`.
    pub fn bce_sum_row(x: &[f32], y: &[f32], m: Option<&[f32]>) -> f64 = bce_sum_row_body;
}

simd_fn! {
    /// `out = (σ(x) − y)·m·scale`.
    pub fn bce_grad_row(
        x: &[f32],
        y: &[f32],
        m: Option<&[f32]>,
        scale: f32,
        out: &mut [f32],
    ) = bce_grad_row_body;
}

simd_fn! {
    /// `act = GELU(z + bias)`, `dact = GELU'(z + bias)`; `s1 += act`, `s2 += act²`.
    pub fn gelu_grad_row(
        z: &[f32],
        bias: &[f32],
        act: &mut [f32],
        dact: &mut [f32],
        s1: &mut [f32],
        s2: &mut [f32],
    ) = gelu_grad_row_body;
}

simd_fn! {
    /// `out = GELU(z + bias)·scale + shift`.
    pub fn gelu_affine_row(
        z: &[f32],
        bias: &[f32],
        scale: &[f32],
        shift: &[f32],
        out: &mut [f32],
    ) = gelu_affine_row_body;
}

simd_fn! {
    /// `out = (a·scale + shift)·mask`.
    pub fn affine_mask_row(
        a: &[f32],
        scale: &[f32],
        shift: &[f32],
        mask: &[f32],
        out: &mut [f32],
    ) = affine_mask_row_body;
}

simd_fn! {
    /// With `g = dy·mask`: `t1 += g·(act − mean)·inv`, `t2 += g`.
    pub fn bn_sums_row(
        dy: &[f32],
        mask: &[f32],
        act: &[f32],
        mean: &[f32],
        inv: &[f32],
        t1: &mut [f32],
        t2: &mut [f32],
    ) = bn_sums_row_body;
}

simd_fn! {
    /// `out = k1·(dy·mask − m_dy − x̂·m_dyx)·dact` with `x̂ = (act − mean)·inv`; `zsum += out`.
    pub fn bn_grad_row(
        dy: &[f32],
        mask: &[f32],
        act: &[f32],
        dact: &[f32],
        c: &BnBack,
        out: &mut [f32],
        zsum: &mut [f32],
    ) = bn_grad_row_body;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_each_close;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp(-1e4), 0.0);
    }

    #[test]
    fn gelu_matches_libm_erf() {
        let mut worst = (0f32, 0f32);
        for i in -4000..=4000 {
            let z = i as f32 / 400.0;
            let exact =
                0.5 * z as f64 * (1.0 + candle_core::cpu::erf::erf_f64(z as f64 / 2f64.sqrt()));
            let (g, d) = gelu_and_grad(z);
            let pdf = (-0.5 * (z as f64).powi(2)).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let dexact = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(z as f64 / 2f64.sqrt()))
                + z as f64 * pdf;
            worst.0 = worst.0.max((g as f64 - exact).abs() as f32);
            worst.1 = worst.1.max((d as f64 - dexact).abs() as f32);
        }
        assert!(worst.0 < 2e-6 && worst.1 < 2e-6, "{worst:?}");
    }

    #[test]
    fn bce_entry_matches_f64() {
        let mut worst = (0f64, 0f64);
        for i in -3000..=3000 {
            let x = i as f32 / 50.0;
            for y in [0f32, 1.0, 0.3] {
                let (l, s) = bce_and_sigmoid(x, y);
                let (xd, yd) = (x as f64, y as f64);
                let want = xd.max(0.0) - xd * yd + (-xd.abs()).exp().ln_1p();
                let sig = 1.0 / (1.0 + (-xd).exp());
                worst.0 = worst.0.max((l as f64 - want).abs() / want.max(1.0));
                worst.1 = worst.1.max((s as f64 - sig).abs());
            }
        }
        assert!(worst.0 < 1e-6 && worst.1 < 1e-6, "{worst:?}");
    }

    /// The dispatched (AVX2 where available) row kernels against their plain bodies.
    #[test]
    fn row_kernels_match_plain_bodies() {
        let n = 37;
        let v = |k: f32| {
            (0..n)
                .map(|i| ((i as f32 + k) * 0.731).sin() * 3.0)
                .collect::<Vec<f32>>()
        };
        let (z, b, sc, sh, m) = (v(0.0), v(1.0), v(2.0), v(3.0), v(4.0));
        let (mut a1, mut d1, mut s1, mut q1) =
            (vec![0.0; n], vec![0.0; n], vec![1.0; n], vec![2.0; n]);
        let (mut a2, mut d2, mut s2, mut q2) = (a1.clone(), d1.clone(), s1.clone(), q1.clone());
        gelu_grad_row(&z, &b, &mut a1, &mut d1, &mut s1, &mut q1);
        gelu_grad_row_body(&z, &b, &mut a2, &mut d2, &mut s2, &mut q2);
        let close = |x: &[f32], y: &[f32]| assert_each_close("row kernel", x, y, 1e-5);
        for (x, y) in [(&a1, &a2), (&d1, &d2), (&s1, &s2), (&q1, &q2)] {
            close(x, y);
        }
        let (mut o1, mut o2) = (vec![0.0; n], vec![0.0; n]);
        gelu_affine_row(&z, &b, &sc, &sh, &mut o1);
        gelu_affine_row_body(&z, &b, &sc, &sh, &mut o2);
        close(&o1, &o2);
        affine_mask_row(&z, &sc, &sh, &m, &mut o1);
        affine_mask_row_body(&z, &sc, &sh, &m, &mut o2);
        close(&o1, &o2);
        let (mut t1, mut t2, mut u1, mut u2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        bn_sums_row(&z, &m, &a1, &b, &sc, &mut t1, &mut t2);
        bn_sums_row_body(&z, &m, &a1, &b, &sc, &mut u1, &mut u2);
        close(&t1, &u1);
        close(&t2, &u2);
        let c = BnBack {
            mean: &b,
            inv: &sc,
            k1: &sh,
            m_dy: &m,
            m_dyx: &z,
        };
        let (mut g1, mut g2, mut zs1, mut zs2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        bn_grad_row(&z, &m, &a1, &d1, &c, &mut g1, &mut zs1);
        bn_grad_row_body(&z, &m, &a1, &d1, &c, &mut g2, &mut zs2);
        close(&g1, &g2);
        close(&zs1, &zs2);
    }
}

//! The fused encoder against finite differences; its shape checks.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rnd(rng: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-a..a)).collect()
}

fn bn(rng: &mut ChaCha8Rng, c: usize) -> BnParams {
    BnParams {
        weight: (0..c).map(|_| rng.gen_range(0.5..1.5)).collect(),
        bias: rnd(rng, c, 0.3),
        running_mean: rnd(rng, c, 0.3),
        running_var: (0..c).map(|_| rng.gen_range(0.5..1.5)).collect(),
    }
}

fn params(dm: &Dims, rng: &mut ChaCha8Rng) -> Params {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    Params {
        w1: rnd(rng, s * s, 0.4),
        g1: 0.3,
        w2: rnd(rng, d * d, 0.15),
        g2: -0.2,
        wp: rnd(rng, f * s, 0.5),
        bp: rnd(rng, f, 0.2),
        bn1: bn(rng, f),
        conv: [
            rnd(rng, 4 * f * f, 0.4),
            rnd(rng, 8 * f * f, 0.3),
            rnd(rng, 16 * f * f, 0.2),
        ],
        conv_bias: rnd(rng, 3 * f, 0.2),
        bn2: bn(rng, 3 * f),
        fin: rnd(rng, K * 3 * f * f, 0.1),
        fin_bias: rnd(rng, f, 0.2),
        bn3: bn(rng, f),
    }
}

/// Text lengths of the finite-difference batch: full, partly padded, empty.
const LENS: [usize; 3] = [5, 3, 0];

/// Loss Σ h·r in f64 for the training forward.
fn loss(p: &Params, dm: Dims, x: &[f32], drop: Dropouts, r: &[f32]) -> f64 {
    let h = Workspace::new()
        .forward(p, dm, x, &LENS, drop, true)
        .unwrap();
    h.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Every gradient of the fused backward against central differences of the fused forward
/// (training mode, with and without dropout), on a small encoder with every parameter
/// and both attention scales non-zero.
#[test]
fn gradients_match_finite_differences() {
    let dm = Dims::new(3, 5, 68, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let p = params(&dm, &mut rng);
    let mut x = rnd(&mut rng, dm.b * dm.s * dm.d, 0.8);
    for (t, &n) in LENS.iter().enumerate() {
        x[(t * dm.s + n) * dm.d..(t + 1) * dm.s * dm.d].fill(0.0);
    }
    let r = rnd(&mut rng, dm.b * dm.out_dim(), 1.0);
    for drop in [
        Dropouts::default(),
        Dropouts {
            embed: Some((0.25, 1)),
            proj: Some((0.25, 2)),
            merge: Some((0.25, 3)),
        },
    ] {
        let mut ws = Workspace::new();
        ws.forward(&p, dm, &x, &LENS, drop, true).unwrap();
        let g = ws.backward(&p, &r).unwrap();
        let mut worst = 0f64;
        let mut check = |name: &str,
                         analytic: f32,
                         set: &dyn Fn(&mut Params, &mut Vec<f32>, f32)| {
            let central = |eps: f32| {
                let (mut pp, mut xp) = (p.clone(), x.clone());
                set(&mut pp, &mut xp, eps);
                let up = loss(&pp, dm, &xp, drop, &r);
                let (mut pm, mut xm) = (p.clone(), x.clone());
                set(&mut pm, &mut xm, -eps);
                let down = loss(&pm, dm, &xm, drop, &r);
                (up - down) / (2.0 * eps as f64)
            };
            // Richardson extrapolation removes the O(eps²) term of the central difference.
            let fd = (4.0 * central(4e-3) - central(8e-3)) / 3.0;
            let err = (fd - analytic as f64).abs() / (fd.abs().max(analytic.abs() as f64) + 0.05);
            assert!(
                err < 4e-3,
                "{name}: finite difference {fd}, backward {analytic}"
            );
            worst = worst.max(err);
            if std::env::var_os("FD_VERBOSE").is_some() {
                eprintln!("{name} fd {fd:.6} bwd {analytic:.6} err {err:.2e}");
            }
        };
        // Word rows of texts 0 and 1 (text 1: rows 0..3 of 5, d = 68).
        for i in [0, 17, 333, 340 + 100, 340 + 2 * 68 + 5] {
            check("x", g.x[i], &|_, x, e| x[i] += e);
        }
        for i in [0, 7, 24] {
            check("w1", g.w1[i], &|p, _, e| p.w1[i] += e);
        }
        for i in [0, 1234, 4000] {
            check("w2", g.w2[i], &|p, _, e| p.w2[i] += e);
        }
        check("g1", g.g1, &|p, _, e| p.g1 += e);
        check("g2", g.g2, &|p, _, e| p.g2 += e);
        for i in [0, 8, 14] {
            check("wp", g.wp[i], &|p, _, e| p.wp[i] += e);
        }
        check("bp", g.bp[1], &|p, _, e| p.bp[1] += e);
        for j in 0..3 {
            for i in [0, 5, 30] {
                check("conv", g.conv[j][i], &|p, _, e| p.conv[j][i] += e);
            }
        }
        check("conv bias", g.conv_bias[4], &|p, _, e| p.conv_bias[4] += e);
        for i in [0, 77, 140] {
            check("final", g.fin[i], &|p, _, e| p.fin[i] += e);
        }
        check("final bias", g.fin_bias[2], &|p, _, e| p.fin_bias[2] += e);
        check("bn1 w", g.bn1.0[0], &|p, _, e| p.bn1.weight[0] += e);
        check("bn1 b", g.bn1.1[1], &|p, _, e| p.bn1.bias[1] += e);
        check("bn2 w", g.bn2.0[5], &|p, _, e| p.bn2.weight[5] += e);
        check("bn2 b", g.bn2.1[2], &|p, _, e| p.bn2.bias[2] += e);
        check("bn3 w", g.bn3.0[1], &|p, _, e| p.bn3.weight[1] += e);
        check("bn3 b", g.bn3.1[0], &|p, _, e| p.bn3.bias[0] += e);
        eprintln!("worst relative error {worst:.2e}");
    }
}

#[test]
fn backward_needs_a_training_forward_and_shapes_are_checked() {
    let dm = Dims::new(2, 4, 64, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let p = params(&dm, &mut rng);
    let x = rnd(&mut rng, 2 * 4 * 64, 1.0);
    let mut ws = Workspace::new();
    assert!(ws.backward(&p, &[0.0; 4]).is_err());
    let lens = [4, 4];
    let h = ws
        .forward(&p, dm, &x, &lens, Dropouts::default(), false)
        .unwrap();
    assert_eq!(h.len(), 2 * dm.out_dim());
    assert!(
        ws.backward(&p, &h).is_err(),
        "evaluation forward has no tape"
    );
    assert!(ws
        .forward(&p, dm, &x[1..], &lens, Dropouts::default(), true)
        .is_err());
    assert!(ws
        .forward(&p, dm, &x, &[4, 5], Dropouts::default(), true)
        .is_err());
    assert!(ws
        .forward(&p, dm, &x, &[4], Dropouts::default(), true)
        .is_err());
    let mut bad = p.clone();
    bad.fin.pop();
    assert!(ws
        .forward(&bad, dm, &x, &lens, Dropouts::default(), true)
        .is_err());
    assert!(Dims::new(2, 4, 40, 2).is_err());
}

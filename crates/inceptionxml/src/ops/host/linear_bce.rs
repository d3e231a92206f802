//! A classifier layer and its BCE-with-logits loss, forward and backward in one host pass on the
//! CPU: `logits = x·W + b` (x `[B, D]`, W `[D, C]` in × out), `loss = mean BCE(logits, y)`.
//!
//! Both classifiers of the model end this way: plain InceptionXML's `[B, L]` output layer and
//! InceptionXML+'s `[B, C]` meta classifier. Through candle's autograd their backward costs
//! about three times the two products it needs (fresh zeroed gradient tensors accumulated by
//! `add`, the bias gradient a single-threaded strided reduction, separate passes for the loss
//! gradient); here the loss gradient `G = (σ(logits) − y)/(B·C)` is one vectorised pass
//! ([`crate::ops::host::vmath::bce_grad_row`]), `dW = xᵀG` and `dx = G·Wᵀ` are two GEMMs, `db` a
//! column sum in row order (deterministic).
//!
//! The caller joins the result to candle's graph: `dx` is the gradient of `x`, so
//! `(x · dx.detach()).sum()` added to the rest of the loss carries it back through whatever
//! produced `x`, and `dW`, `db` go into the `GradStore` directly (see `train::step`).

use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::host::mm::{mm, par_for, Out, SharedDst, View};
use crate::ops::host::vmath;
use crate::ops::storage::zeros;

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
    let mut out = zeros(b * c);
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

/// Columns of the classifier per block of [`linear_bce`] at most: a block's weight columns
/// (`d × 512`) and its logits and loss gradient (`b × 512`) stay in a core's L2 cache from the
/// forward product through the three of the backward.
const COLS: usize = 512;

/// [`linear_bce`] cuts the classes into this many groups of equal width (fewer when a group
/// would be narrower than [`MIN_GROUP`]), each with its own partial `dx`, added in group order:
/// the result does not depend on the thread count or on scheduling, and equal groups keep the
/// threads equally busy.
const GROUPS: usize = 16;
const MIN_GROUP: usize = 128;

/// Forward and backward of `mean BCE(x·W + b, y)` for `x` `[b, d]`, `w` `[d, c]`, `bias` `[c]`,
/// targets `y` `[b, c]` (all row-major host slices).
///
/// Block by block of at most 512 classes, each group of blocks on one thread: the block's
/// logits `x·W_k + b_k`, the BCE sum and gradient `G_k` of those logits while they are in
/// cache, then `dW_k = xᵀG_k`, `db_k` and the group's `dx += G_k·W_kᵀ`. The `[b, c]` logits
/// and gradient are never read back from memory, and the threads work on their own groups with
/// no synchronisation between the products (the unblocked form, [`linear`] then
/// [`bce_backward`], makes five passes over `[b, c]`, each split between the threads).
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
    let groups = GROUPS.min(c.div_ceil(MIN_GROUP)).max(1);
    let scale = (1.0 / (b * c) as f64) as f32;
    let mut logits = zeros(b * c);
    let mut dw = zeros(d * c);
    let mut db = vec![0f32; c];
    let (zs, ws, bs) = (
        SharedDst::new(&mut logits),
        SharedDst::new(&mut dw),
        SharedDst::new(&mut db),
    );
    let xv = View::rm(x, 0, b, d);
    let parts: Vec<(f64, Vec<f32>)> = (0..groups)
        .into_par_iter()
        .map(|gi| -> Result<(f64, Vec<f32>)> {
            let (g0, g1) = (gi * c / groups, (gi + 1) * c / groups);
            let mut dx = vec![0f32; b * d];
            let mut gbuf = vec![0f32; b * COLS.min(g1 - g0)];
            let mut loss = 0f64;
            for c0 in (g0..g1).step_by(COLS) {
                let n = COLS.min(g1 - c0);
                let gk = &mut gbuf[..b * n];
                let wk = View::rm(w, c0, d, n).rs(c);
                // SAFETY: columns c0..c0 + n of the logits, dW and db are this block's, and
                // the block is this task's alone; each slice is dropped before the next product.
                unsafe {
                    for r in 0..b {
                        zs.slice_mut(r * c + c0, n)?
                            .copy_from_slice(&bias[c0..c0 + n]);
                    }
                    zs.mm(Out::rm(c0, c), xv, wk, 1.0, true, Parallelism::None)?;
                    let dbk = bs.slice_mut(c0, n)?;
                    for (r, gr) in gk.chunks_mut(n).enumerate() {
                        let z = &*zs.slice_mut(r * c + c0, n)?;
                        let t = &y[r * c + c0..r * c + c0 + n];
                        loss += vmath::bce_sum_row(z, t, None);
                        vmath::bce_grad_row(z, t, None, scale, gr);
                        dbk.iter_mut().zip(&*gr).for_each(|(o, v)| *o += v);
                    }
                    let gv = View::rm(gk, 0, b, n);
                    ws.mm(Out::rm(c0, c), xv.t(), gv, 1.0, false, Parallelism::None)?;
                }
                let gv = View::rm(gk, 0, b, n);
                mm(
                    &mut dx,
                    Out::rm(0, d),
                    gv,
                    wk.t(),
                    1.0,
                    true,
                    Parallelism::None,
                )?;
            }
            Ok((loss, dx))
        })
        .collect::<Result<_>>()?;
    let mut dx = vec![0f32; b * d];
    dx.par_chunks_mut(d).enumerate().for_each(|(r, o)| {
        for (_, p) in &parts {
            o.iter_mut()
                .zip(&p[r * d..(r + 1) * d])
                .for_each(|(a, v)| *a += v);
        }
    });
    let loss = (parts.iter().map(|p| p.0).sum::<f64>() / (b * c) as f64) as f32;
    Ok(LinearBce {
        loss,
        logits,
        dx,
        dw,
        db,
    })
}

/// The loss and gradients of [`linear_bce`] once the logits are known.
#[derive(Debug)]
pub struct BceGrads {
    /// Mean BCE over all `B·C` entries.
    pub loss: f32,
    /// `[B, D]`.
    pub dx: Vec<f32>,
    /// `[D, C]`.
    pub dw: Vec<f32>,
    /// `[C]`.
    pub db: Vec<f32>,
}

/// The second half of [`linear_bce`]: from `logits = x·W + b` (`[b, c]`, from [`linear`]) the
/// mean BCE against `y` and the gradients of `x`, `W` and `b`. `dW = xᵀG` and `dx = G·Wᵀ` run
/// side by side on the thread pool.
pub fn bce_backward(
    x: &[f32],
    w: &[f32],
    y: &[f32],
    logits: &[f32],
    (b, d, c): (usize, usize, usize),
) -> Result<BceGrads> {
    if x.len() != b * d
        || w.len() != d * c
        || y.len() != b * c
        || logits.len() != b * c
        || b * c == 0
    {
        return Err(Error::Shape(format!(
            "linear_bce: x {} w {} y {} logits {} for [{b}, {d}] × [{d}, {c}]",
            x.len(),
            w.len(),
            y.len(),
            logits.len()
        )));
    }
    let sums: Vec<f64> = logits
        .par_chunks(c)
        .zip(y.par_chunks(c))
        .map(|(z, t)| vmath::bce_sum_row(z, t, None))
        .collect();
    let n = (b * c) as f64;
    let loss = (sums.iter().sum::<f64>() / n) as f32;
    let scale = (1.0 / n) as f32;
    let mut g = zeros(b * c);
    g.par_chunks_mut(c)
        .zip(logits.par_chunks(c).zip(y.par_chunks(c)))
        .for_each(|(o, (z, t))| vmath::bce_grad_row(z, t, None, scale, o));
    let g = &g[..];
    let (dw, dx) = rayon::join(
        || -> Result<Vec<f32>> {
            let mut dw = zeros(d * c);
            mm(
                &mut dw,
                Out::rm(0, c),
                View::rm(x, 0, b, d).t(),
                View::rm(g, 0, b, c),
                1.0,
                false,
                par_for(d, c, b),
            )?;
            Ok(dw)
        },
        || -> Result<(Vec<f32>, Vec<f32>)> {
            let mut dx = vec![0f32; b * d];
            mm(
                &mut dx,
                Out::rm(0, d),
                View::rm(g, 0, b, c),
                View::rm(w, 0, d, c).t(),
                1.0,
                false,
                par_for(b, d, c),
            )?;
            Ok((dx, column_sums(g, b, c)))
        },
    );
    let (dx, db) = dx?;
    Ok(BceGrads {
        loss,
        dx,
        dw: dw?,
        db,
    })
}

/// Column sums of `g` `[b, c]`, rows added in order within each block of columns
/// (deterministic whatever the threads).
fn column_sums(g: &[f32], b: usize, c: usize) -> Vec<f32> {
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
    db
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bce_with_logits;
    use crate::testing::{host, max_rel_diff};
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
            let e = host(t);
            let err = max_rel_diff(a, &e, &e, 1e-6);
            assert!(err <= tol, "error {err} of the scale");
        };
        assert!((got.loss - loss.to_scalar::<f32>().unwrap()).abs() < 1e-5);
        close(&got.logits, &z, 1e-5);
        close(&got.dx, g.get(xv.as_tensor()).unwrap(), 1e-4);
        close(&got.dw, g.get(wv.as_tensor()).unwrap(), 1e-4);
        close(&got.db, g.get(bv.as_tensor()).unwrap(), 1e-4);
        assert!(linear_bce(&[0.0; 3], &[0.0; 3], &[0.0], &[0.0], (1, 3, 2)).is_err());
    }

    /// The blocked op against the unblocked form ([`linear`] then [`bce_backward`]) at a width
    /// with 16 groups of two blocks each, the last ones partial; and the same bits whatever
    /// the number of threads.
    #[test]
    fn blocks_match_the_unblocked_form_and_ignore_the_thread_count() {
        let (b, d, c) = (5, 9, 16 * 600 + 7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut v = |n: usize, a: f32| (0..n).map(|_| rng.gen_range(-a..a)).collect::<Vec<f32>>();
        let (x, w, bias) = (v(b * d, 1.0), v(d * c, 0.5), v(c, 0.5));
        let y: Vec<f32> = v(b * c, 1.0)
            .iter()
            .map(|&t| (t > 0.8) as u8 as f32)
            .collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| linear_bce(&x, &w, &bias, &y, (b, d, c)).unwrap())
        };
        let got = run(1);
        let logits = linear(&x, &w, &bias, (b, d, c)).unwrap();
        let want = bce_backward(&x, &w, &y, &logits, (b, d, c)).unwrap();
        let close = |p: &[f32], q: &[f32], what: &str| {
            let err = max_rel_diff(p, q, q, 1e-6);
            assert!(err <= 1e-4, "{what}: error {err} of the scale");
        };
        assert!((got.loss - want.loss).abs() < 1e-6);
        close(&got.logits, &logits, "logits");
        close(&got.dx, &want.dx, "dx");
        close(&got.dw, &want.dw, "dW");
        close(&got.db, &want.db, "db");
        for threads in [2, 3] {
            let other = run(threads);
            assert_eq!(other.loss.to_bits(), got.loss.to_bits());
            for (p, q) in [
                (&other.logits, &got.logits),
                (&other.dx, &got.dx),
                (&other.dw, &got.dw),
                (&other.db, &got.db),
            ] {
                assert!(p
                    .iter()
                    .zip(q.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}

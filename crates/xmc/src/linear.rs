//! One binary linear classifier over sparse rows, trained by dual coordinate descent: the
//! L2-regularised squared-hinge SVM of liblinear (`L2R_L2LOSS_SVC_DUAL`, Hsieh et al., ICML 2008),
//! as Parabel, Bonsai and omikuji train their tree nodes.
//!
//! Primal: `min_w ½‖w‖² + C Σ_i max(0, 1 − y_i w·x_i)²`. Dual: `min_α ½ αᵀQ̄α − Σα`, `α ≥ 0`, with
//! `Q̄ = Q + D`, `Q_ij = y_i y_j x_i·x_j`, `D_ii = 1 / (2C)`. Each coordinate step solves one `α_i`
//! exactly and keeps `w = Σ α_i y_i x_i` up to date; coordinates are visited in a seeded random
//! order and shrunk as liblinear does. It stops when the projected gradient's spread falls below
//! `eps` (liblinear's criterion) or after `max_iter` passes. Weights below `weight_threshold` in
//! magnitude are pruned (Parabel's 0.1), which keeps the model small; the bias feature is kept.
//!
//! [`solve_slow`] is the reference: plain projected gradient descent on the same primal, used by the
//! tests to check the coordinate descent's solution.

use crate::sparse::SparseMatrix;

/// Options of the linear classifiers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearParams {
    /// Cost `C` of the squared hinge loss (inverse regularisation).
    pub c: f32,
    /// Stopping tolerance on the projected gradient's spread.
    pub eps: f32,
    /// Most passes over the examples.
    pub max_iter: usize,
    /// Weights with `|w| < weight_threshold` are dropped after training (not the bias).
    pub weight_threshold: f32,
}

impl LinearParams {
    /// Parabel's and omikuji's values.
    pub const DEFAULT: LinearParams = LinearParams {
        c: 1.0,
        eps: 0.1,
        max_iter: 20,
        weight_threshold: 0.1,
    };
}

impl Default for LinearParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Reusable buffers of the solver: a dense weight vector over every feature, cleared through the
/// features it touched, and per-example dual state.
pub struct Solver {
    w: Vec<f32>,
    alpha: Vec<f32>,
    qd: Vec<f32>,
    order: Vec<u32>,
}

/// A small deterministic generator (xorshift64*) for the visiting order.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) * n as u64) >> 32) as usize
    }
}

impl Solver {
    /// A solver for rows with at most `n_features` columns.
    pub fn new(n_features: usize) -> Solver {
        Solver {
            w: vec![0.0; n_features],
            alpha: Vec::new(),
            qd: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Trains one classifier on the rows `rows` of `x`, row `rows[i]` labelled positive when
    /// `positive[i]`. `sq_norms[r]` is `‖x_r‖²`; `features` lists (sorted, unique) every column
    /// the rows use: the weights returned are those of these columns. `bias` is the column always kept by the pruning.
    /// Returns the pruned weights `(feature, w)` in increasing feature order.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &mut self,
        x: &SparseMatrix,
        sq_norms: &[f32],
        rows: &[u32],
        positive: &[bool],
        features: &[u32],
        bias: Option<u32>,
        params: &LinearParams,
        seed: u64,
    ) -> Vec<(u32, f32)> {
        assert_eq!(rows.len(), positive.len(), "one label per row");
        if self.w.len() < x.n_cols {
            self.w.resize(x.n_cols, 0.0);
        }
        let n = rows.len();
        let diag = 0.5 / params.c;
        self.alpha.clear();
        self.alpha.resize(n, 0.0);
        self.qd.clear();
        self.qd
            .extend(rows.iter().map(|&r| diag + sq_norms[r as usize]));
        self.order.clear();
        self.order.extend(0..n as u32);
        let w = &mut self.w;
        let mut rng = Rng::new(seed);
        // With no upper bound on α (the squared hinge), only the lower side shrinks.
        let mut pg_max_old = f32::INFINITY;
        let mut active = n;
        let mut iter = 0;
        while iter < params.max_iter {
            let (mut pg_max, mut pg_min) = (f32::NEG_INFINITY, f32::INFINITY);
            for i in 0..active {
                let j = i + rng.below(active - i);
                self.order.swap(i, j);
            }
            let mut s = 0;
            while s < active {
                let i = self.order[s] as usize;
                let y = if positive[i] { 1.0f32 } else { -1.0 };
                let (idx, val) = x.row(rows[i] as usize);
                let mut wx = 0.0f32;
                for (&j, &v) in idx.iter().zip(val) {
                    wx += w[j as usize] * v;
                }
                let g = y * wx - 1.0 + self.alpha[i] * diag;
                let mut pg = 0.0;
                if self.alpha[i] == 0.0 {
                    if g > pg_max_old {
                        active -= 1;
                        self.order.swap(s, active);
                        continue;
                    } else if g < 0.0 {
                        pg = g;
                    }
                } else {
                    pg = g;
                }
                pg_max = pg_max.max(pg);
                pg_min = pg_min.min(pg);
                if pg.abs() > 1e-12 {
                    let old = self.alpha[i];
                    let new = (old - g / self.qd[i]).max(0.0);
                    self.alpha[i] = new;
                    let d = (new - old) * y;
                    for (&j, &v) in idx.iter().zip(val) {
                        w[j as usize] += d * v;
                    }
                }
                s += 1;
            }
            iter += 1;
            if pg_max - pg_min <= params.eps {
                if active == n {
                    break;
                }
                active = n;
                pg_max_old = f32::INFINITY;
                continue;
            }
            pg_max_old = if pg_max <= 0.0 { f32::INFINITY } else { pg_max };
        }
        let mut out = Vec::new();
        for &f in features {
            let v = std::mem::take(&mut w[f as usize]);
            if v != 0.0 && (v.abs() >= params.weight_threshold || Some(f) == bias) {
                out.push((f, v));
            }
        }
        // Leave the scratch clean even if `features` missed a column of the rows.
        for &r in rows {
            for &j in x.row_indices(r as usize) {
                w[j as usize] = 0.0;
            }
        }
        out
    }
}

/// The squared-hinge primal objective `½‖w‖² + C Σ max(0, 1 − y w·x)²` of dense weights `w`.
pub fn objective(x: &SparseMatrix, rows: &[u32], positive: &[bool], w: &[f32], c: f32) -> f64 {
    let reg: f64 = w.iter().map(|&v| v as f64 * v as f64).sum::<f64>() * 0.5;
    let loss: f64 = rows
        .iter()
        .zip(positive)
        .map(|(&r, &p)| {
            let (idx, val) = x.row(r as usize);
            let wx: f64 = idx
                .iter()
                .zip(val)
                .map(|(&j, &v)| w[j as usize] as f64 * v as f64)
                .sum();
            let y = if p { 1.0 } else { -1.0 };
            let m = (1.0 - y * wx).max(0.0);
            m * m
        })
        .sum();
    reg + c as f64 * loss
}

/// Reference solver: gradient descent on the primal with a fixed step, dense weights, no pruning.
pub fn solve_slow(
    x: &SparseMatrix,
    rows: &[u32],
    positive: &[bool],
    c: f32,
    steps: usize,
    lr: f64,
) -> Vec<f32> {
    let mut w = vec![0f64; x.n_cols];
    for _ in 0..steps {
        let mut g: Vec<f64> = w.clone();
        for (&r, &p) in rows.iter().zip(positive) {
            let (idx, val) = x.row(r as usize);
            let wx: f64 = idx
                .iter()
                .zip(val)
                .map(|(&j, &v)| w[j as usize] * v as f64)
                .sum();
            let y = if p { 1.0 } else { -1.0 };
            let m = 1.0 - y * wx;
            if m > 0.0 {
                for (&j, &v) in idx.iter().zip(val) {
                    g[j as usize] += c as f64 * 2.0 * m * (-y) * v as f64;
                }
            }
        }
        for (wj, gj) in w.iter_mut().zip(&g) {
            *wj -= lr * gj;
        }
    }
    w.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 rows over 6 features plus a bias column 6: positives use features 0..3, negatives 3..6,
    /// with some overlap.
    fn toy() -> (SparseMatrix, Vec<u32>, Vec<bool>, Vec<f32>) {
        let mut rows = Vec::new();
        let mut pos = Vec::new();
        let mut rng = Rng::new(7);
        for i in 0..40 {
            let p = i % 3 == 0;
            let base = if p { 0 } else { 3 };
            let mut r = vec![(6u32, 1.0f32)];
            r.push((base + rng.below(3) as u32, 0.8));
            let other = rng.below(6) as u32;
            if !r.iter().any(|e| e.0 == other) {
                r.push((other, 0.4));
            }
            rows.push(r);
            pos.push(p);
        }
        let x = SparseMatrix::from_rows(7, rows).unwrap();
        let norms = (0..x.n_rows)
            .map(|r| x.row(r).1.iter().map(|v| v * v).sum())
            .collect();
        ((x), (0..40).collect(), pos, norms)
    }

    #[test]
    fn coordinate_descent_reaches_the_primal_optimum() {
        let (x, rows, pos, norms) = toy();
        let params = LinearParams {
            eps: 1e-4,
            max_iter: 1000,
            weight_threshold: 0.0,
            ..LinearParams::DEFAULT
        };
        let feats: Vec<u32> = (0..7).collect();
        let mut s = Solver::new(7);
        let sparse = s.train(&x, &norms, &rows, &pos, &feats, Some(6), &params, 1);
        let mut w = vec![0f32; 7];
        for (f, v) in sparse {
            w[f as usize] = v;
        }
        let reference = solve_slow(&x, &rows, &pos, 1.0, 20_000, 0.002);
        let (a, b) = (
            objective(&x, &rows, &pos, &w, 1.0),
            objective(&x, &rows, &pos, &reference, 1.0),
        );
        assert!((a - b).abs() < 1e-3 * b.max(1.0), "dual {a} vs primal {b}");
        for (u, v) in w.iter().zip(&reference) {
            assert!((u - v).abs() < 1e-2, "{w:?} vs {reference:?}");
        }
        // The scratch vector is left clean for the next classifier.
        assert!(s.w.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn separates_and_prunes_small_weights_but_keeps_the_bias() {
        let (x, rows, pos, norms) = toy();
        let feats: Vec<u32> = (0..7).collect();
        let mut s = Solver::new(7);
        let params = LinearParams {
            weight_threshold: 0.3,
            ..LinearParams::DEFAULT
        };
        let w = s.train(&x, &norms, &rows, &pos, &feats, Some(6), &params, 3);
        assert!(w.windows(2).all(|p| p[0].0 < p[1].0));
        assert!(w.iter().any(|e| e.0 == 6));
        assert!(w.iter().all(|e| e.0 == 6 || e.1.abs() >= 0.3));
        let mut dense = [0f32; 7];
        for (f, v) in &w {
            dense[*f as usize] = *v;
        }
        let correct = rows
            .iter()
            .zip(&pos)
            .filter(|(&r, &p)| {
                let (i, v) = x.row(r as usize);
                let s: f32 = i.iter().zip(v).map(|(&j, &x)| dense[j as usize] * x).sum();
                (s > 0.0) == p
            })
            .count();
        assert!(correct >= 36, "{correct} of 40");
    }

    #[test]
    fn same_seed_same_weights() {
        let (x, rows, pos, norms) = toy();
        let feats: Vec<u32> = (0..7).collect();
        let p = LinearParams::DEFAULT;
        let a = Solver::new(7).train(&x, &norms, &rows, &pos, &feats, Some(6), &p, 5);
        let b = Solver::new(7).train(&x, &norms, &rows, &pos, &feats, Some(6), &p, 5);
        assert_eq!(a, b);
    }
}

//! Spectral normalisation of a weight matrix, with PyTorch's semantics
//! (`torch.nn.utils.spectral_norm`, one power iteration per training forward).
//!
//! The weight `W` (out × in) is trainable; `u` (out) and `v` (in) are persistent buffers (saved
//! with the model, never trained). In training each call of [`SpectralNorm::weight`] does one
//! power iteration without gradient, `v = normalize(Wᵀu)`, `u = normalize(W v)`, then returns
//! `W / σ` with `σ = uᵀ W v` differentiated through `W` only. In evaluation `σ` comes from the
//! stored `u`, `v` without iterating.
//!
//! Deviation from the old PyTorch API: the constructor runs [`INIT_ITERATIONS`] power iterations
//! (as `torch.nn.utils.parametrizations.spectral_norm` does), so an untrained model already has a
//! sensible σ in evaluation mode.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{Device, Tensor, Var, D};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::init;
use crate::error::{Error, Result};

/// Power iterations run when the layer is created.
pub const INIT_ITERATIONS: usize = 15;
/// Guard against division by zero when normalising (PyTorch's default).
const EPS: f64 = 1e-12;

/// A spectrally normalised weight matrix.
#[derive(Debug, Clone)]
pub struct SpectralNorm {
    weight: Var,
    u: Var,
    v: Var,
    /// `(W / σ, σ)` kept for evaluation by [`Self::freeze_for_inference`]; a training forward
    /// drops it.
    frozen: Arc<Mutex<Option<(Tensor, Tensor)>>>,
}

impl SpectralNorm {
    /// Registers `{prefix}.weight` (out × in, from `weight`), `{prefix}.u` and `{prefix}.v`
    /// (random unit vectors from `rng`), then runs [`INIT_ITERATIONS`] power iterations.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        (out_dim, in_dim): (usize, usize),
        weight: Vec<f32>,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let w = init::register(
            varmap,
            &format!("{prefix}.weight"),
            (out_dim, in_dim),
            weight,
            device,
        )?;
        let u = unit(init::normal(rng, out_dim, 1.0));
        let v = unit(init::normal(rng, in_dim, 1.0));
        let u = init::register(varmap, &format!("{prefix}.u"), out_dim, u, device)?;
        let v = init::register(varmap, &format!("{prefix}.v"), in_dim, v, device)?;
        let sn = SpectralNorm {
            weight: w,
            u,
            v,
            frozen: Arc::default(),
        };
        for _ in 0..INIT_ITERATIONS {
            sn.power_iteration()?;
        }
        Ok(sn)
    }

    /// The raw (un-normalised) trainable weight.
    pub fn raw_weight(&self) -> &Var {
        &self.weight
    }

    /// The buffers `(u, v)`.
    pub fn buffers(&self) -> (&Var, &Var) {
        (&self.u, &self.v)
    }

    /// One power iteration on the stored vectors, without gradient.
    pub fn power_iteration(&self) -> Result<()> {
        let w = self.weight.as_tensor().detach();
        let u = self.u.as_tensor().detach();
        // v = normalize(Wᵀ u): as a row vector, uᵀ W.
        let v = normalize(&u.unsqueeze(0)?.matmul(&w)?.squeeze(0)?)?;
        // u = normalize(W v)
        let u = normalize(&w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?;
        self.v.set(&v)?;
        self.u.set(&u)?;
        Ok(())
    }

    /// `σ = uᵀ W v` as a scalar tensor, differentiable with respect to `W`.
    pub fn sigma(&self) -> Result<Tensor> {
        let u = self.u.as_tensor().detach().unsqueeze(0)?;
        let v = self.v.as_tensor().detach().unsqueeze(1)?;
        Ok(u.matmul(&self.weight.as_tensor().matmul(&v)?)?
            .reshape(())?)
    }

    /// The current estimate of the top singular value (no iteration, no gradient).
    pub fn sigma_estimate(&self) -> Result<f32> {
        Ok(self.sigma()?.detach().to_scalar::<f32>()?)
    }

    /// `W / σ`. With `train`, first one power iteration updates `u` and `v` in place.
    pub fn weight(&self, train: bool) -> Result<Tensor> {
        Ok(self.weight_and_sigma(train)?.0)
    }

    /// [`Self::weight`] and the `σ` it divided by (a scalar tensor).
    pub fn weight_and_sigma(&self, train: bool) -> Result<(Tensor, Tensor)> {
        let mut frozen = self.frozen_slot()?;
        if train {
            *frozen = None;
            self.power_iteration()?;
        } else if let Some((w, sigma)) = frozen.as_ref() {
            return Ok((w.clone(), sigma.clone()));
        }
        let sigma = self.sigma()?;
        Ok((self.weight.as_tensor().broadcast_div(&sigma)?, sigma))
    }

    /// Keeps the evaluation weight `W / σ` (and σ), so that prediction does not recompute σ and
    /// divide the whole matrix for every batch. For a model loaded to predict; the next training
    /// forward drops it.
    pub fn freeze_for_inference(&self) -> Result<()> {
        let held = self.weight_and_sigma(false)?;
        *self.frozen_slot()? = Some(held);
        Ok(())
    }

    fn frozen_slot(&self) -> Result<MutexGuard<'_, Option<(Tensor, Tensor)>>> {
        self.frozen
            .lock()
            .map_err(|_| Error::Poisoned("spectral-norm weight"))
    }

    /// `W / σ` as host values (row-major `[out, in]`) and the `(u, v, σ)` it used; with
    /// `train`, one power iteration first. The fused CPU ops take the weight this way.
    pub fn host_weight(&self, train: bool) -> Result<(Vec<f32>, SnState)> {
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?)
        };
        let (w, sigma) = self.weight_and_sigma(train)?;
        Ok((
            host(&w)?,
            (
                host(self.u.as_tensor())?,
                host(self.v.as_tensor())?,
                sigma.to_scalar::<f32>()?,
            ),
        ))
    }

    /// The top singular value of the current `W`, by power iteration on `WᵀW` in f64 until it
    /// converges (relative change below 1e-13, at most 100,000 iterations). Leaves `u`, `v` alone.
    pub fn exact_sigma(&self) -> Result<f64> {
        let w = self.weight.as_tensor().to_dtype(candle_core::DType::F64)?;
        let w: Vec<Vec<f64>> = w.to_vec2()?;
        Ok(top_singular_value(&w))
    }
}

/// The `(u, v, σ)` a normalised weight was made with ([`SpectralNorm::host_weight`]).
pub type SnState = (Vec<f32>, Vec<f32>, f32);

/// The gradient of the raw weight from that of `W/σ` (`σ = uᵀWv`, u and v constants):
/// `(G − ⟨G, W/σ⟩ u vᵀ) / σ`.
pub fn sn_backward(g: &[f32], w_sn: &[f32], (u, v, sigma): &SnState) -> Vec<f32> {
    use rayon::prelude::*;
    let n_in = v.len().max(1);
    // Row sums in f64, added in row order (deterministic whatever the threads).
    let gw: f64 = g
        .par_chunks(n_in)
        .zip(w_sn.par_chunks(n_in))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(n_in)
        .zip(g.par_chunks(n_in))
        .enumerate()
        .for_each(|(i, (o, gr))| {
            for (j, (o, gk)) in o.iter_mut().zip(gr).enumerate() {
                *o = ((*gk as f64 - gw * (u[i] * v[j]) as f64) / *sigma as f64) as f32;
            }
        });
    out
}

/// Top singular value of a dense matrix (rows), by power iteration on `WᵀW` in f64.
pub fn top_singular_value(w: &[Vec<f64>]) -> f64 {
    let n_in = w.first().map_or(0, |r| r.len());
    if n_in == 0 {
        return 0.0;
    }
    // Deterministic, generic start vector.
    let mut v: Vec<f64> = (0..n_in).map(|i| 1.0 + (i as f64 * 0.618).sin()).collect();
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    let n = norm(&v);
    v.iter_mut().for_each(|a| *a /= n);
    let mut sigma = 0.0f64;
    for _ in 0..100_000 {
        let wv: Vec<f64> = w
            .iter()
            .map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum())
            .collect();
        let mut wtwv = vec![0.0f64; n_in];
        for (r, s) in w.iter().zip(&wv) {
            for (o, a) in wtwv.iter_mut().zip(r) {
                *o += a * s;
            }
        }
        let lambda = norm(&wtwv);
        if lambda == 0.0 {
            return 0.0;
        }
        let new_sigma = lambda.sqrt();
        v = wtwv.into_iter().map(|a| a / lambda).collect();
        let done = (new_sigma - sigma).abs() <= 1e-13 * new_sigma;
        sigma = new_sigma;
        if done {
            break;
        }
    }
    sigma
}

fn unit(mut x: Vec<f32>) -> Vec<f32> {
    let n = x.iter().map(|a| a * a).sum::<f32>().sqrt().max(EPS as f32);
    x.iter_mut().for_each(|a| *a /= n);
    x
}

fn normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(EPS)?;
    Ok(x.broadcast_div(&n)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// An n×n orthogonal matrix: Gram–Schmidt on random columns, in f64.
    fn orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < n {
            let mut c: Vec<f64> = init::normal(rng, n, 1.0)
                .into_iter()
                .map(f64::from)
                .collect();
            for _ in 0..2 {
                for p in &q {
                    let d: f64 = p.iter().zip(&c).map(|(a, b)| a * b).sum();
                    c.iter_mut().zip(p).for_each(|(x, y)| *x -= d * y);
                }
            }
            let nrm = c.iter().map(|a| a * a).sum::<f64>().sqrt();
            c.iter_mut().for_each(|a| *a /= nrm);
            q.push(c);
        }
        q
    }

    #[test]
    fn estimate_converges_to_the_known_top_singular_value() {
        let n = 24;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let a = orthogonal(n, &mut rng);
        let b = orthogonal(n, &mut rng);
        // Known singular values: 3.0, 2.7, then decreasing.
        let s: Vec<f64> = (0..n)
            .map(|i| if i == 0 { 3.0 } else { 2.7 / i as f64 })
            .collect();
        // W = Σ_i s_i a_i b_iᵀ
        let mut w = vec![0.0f32; n * n];
        for r in 0..n {
            for c in 0..n {
                w[r * n + c] = (0..n).map(|i| s[i] * a[i][r] * b[i][c]).sum::<f64>() as f32;
            }
        }
        let vm = VarMap::new();
        let sn = SpectralNorm::new(&vm, "sn", (n, n), w, &mut rng, &Device::Cpu).unwrap();
        let exact = sn.exact_sigma().unwrap();
        assert!((exact - 3.0).abs() < 1e-5, "exact {exact}");
        for _ in 0..200 {
            sn.weight(true).unwrap();
        }
        let est = sn.sigma_estimate().unwrap() as f64;
        assert!((est - exact).abs() < 1e-3, "estimate {est} vs {exact}");
        // Normalised weight has spectral norm 1.
        let wn: Vec<Vec<f64>> = sn
            .weight(false)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert!((top_singular_value(&wn) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn random_matrix_estimate_matches_exact() {
        let (o, i) = (17, 29);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let w = init::xavier_normal(&mut rng, o * i, i, o);
        let vm = VarMap::new();
        let sn = SpectralNorm::new(&vm, "sn", (o, i), w, &mut rng, &Device::Cpu).unwrap();
        for _ in 0..500 {
            sn.weight(true).unwrap();
        }
        let exact = sn.exact_sigma().unwrap();
        let est = sn.sigma_estimate().unwrap() as f64;
        assert!((est - exact).abs() < 1e-3 * exact, "{est} vs {exact}");
    }

    #[test]
    fn eval_does_not_iterate_and_train_does() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let w = init::xavier_normal(&mut rng, 64, 8, 8);
        let vm = VarMap::new();
        let sn = SpectralNorm::new(&vm, "sn", (8, 8), w, &mut rng, &Device::Cpu).unwrap();
        let u0: Vec<f32> = sn.buffers().0.as_tensor().to_vec1().unwrap();
        let a: Vec<Vec<f32>> = sn.weight(false).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = sn.weight(false).unwrap().to_vec2().unwrap();
        assert_eq!(a, b);
        assert_eq!(u0, sn.buffers().0.as_tensor().to_vec1::<f32>().unwrap());
        sn.weight(true).unwrap();
        assert_ne!(u0, sn.buffers().0.as_tensor().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn frozen_weight_is_the_eval_weight_until_a_training_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let w = init::xavier_normal(&mut rng, 30, 5, 6);
        let vm = VarMap::new();
        let sn = SpectralNorm::new(&vm, "sn", (6, 5), w, &mut rng, &Device::Cpu).unwrap();
        let eval = |sn: &SpectralNorm| -> Vec<f32> {
            sn.weight(false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let before = eval(&sn);
        sn.freeze_for_inference().unwrap();
        assert_eq!(eval(&sn), before);
        // A changed weight is not seen while frozen (the point: no recomputation per batch)...
        let raw = sn.raw_weight().as_tensor().clone();
        // (Not a multiple of W: the normalised weight is the same for every scale of W.)
        sn.raw_weight().set(&(&raw + 0.3).unwrap()).unwrap();
        assert_eq!(eval(&sn), before);
        // ...and a training forward drops the frozen copy: evaluation follows the weights again.
        sn.weight(true).unwrap();
        let (w_now, sigma) = sn.weight_and_sigma(false).unwrap();
        let expect = (sn.raw_weight().as_tensor() / sigma.to_scalar::<f32>().unwrap() as f64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = w_now.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(got.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-6));
        assert_ne!(eval(&sn), before);
    }

    #[test]
    fn gradient_flows_to_the_weight_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let w = init::xavier_normal(&mut rng, 12, 3, 4);
        let vm = VarMap::new();
        let sn = SpectralNorm::new(&vm, "sn", (4, 3), w, &mut rng, &Device::Cpu).unwrap();
        let g = sn
            .weight(true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(sn.raw_weight().as_tensor()).is_some());
        assert!(g.get(sn.buffers().0.as_tensor()).is_none());
        assert!(g.get(sn.buffers().1.as_tensor()).is_none());
    }
}

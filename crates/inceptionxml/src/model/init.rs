//! Seeded parameter initialisation (MODEL.md §3) and registration in a [`VarMap`].
//!
//! Every initialiser draws from one [`ChaCha8Rng`] owned by the caller, so a model built with the
//! same seed and configuration is bit-for-bit the same.

use candle_core::{Device, Shape, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// `n` draws from U(-a, a).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-a..a)).collect()
}

/// `n` draws from N(0, std²) (Box–Muller, both outputs used).
pub fn normal(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32 * std);
        out.push((r * t.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// Xavier (Glorot) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(rng: &mut ChaCha8Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    uniform(rng, n, a)
}

/// Xavier (Glorot) normal: N(0, 2 / (fan_in + fan_out)).
pub fn xavier_normal(rng: &mut ChaCha8Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let std = (2.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    normal(rng, n, std)
}

/// Creates a variable from `data` and registers it in `varmap` under `name`.
/// Fails if the name is already taken (two layers must never share a name).
pub fn register(
    varmap: &VarMap,
    name: &str,
    shape: impl Into<Shape>,
    data: Vec<f32>,
    device: &Device,
) -> Result<Var> {
    // Straight into a variable: `Var::from_tensor` would copy the storage (3.4 GB transient for
    // a 2.8M-label table).
    let var = Var::from_vec(data, shape.into(), device)?;
    let mut map = varmap
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("VarMap"))?;
    if map.contains_key(name) {
        return Err(Error::Config(format!(
            "variable {name} registered twice in the VarMap"
        )));
    }
    map.insert(name.to_string(), var.clone());
    Ok(var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn normal_has_the_right_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = normal(&mut rng, 100_001, 2.0);
        assert_eq!(v.len(), 100_001);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03, "mean {m}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
    }

    #[test]
    fn xavier_uniform_bound() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = xavier_uniform(&mut rng, 10_000, 10, 14);
        let a = 0.5f32;
        assert!(v.iter().all(|x| x.abs() < a));
        assert!(v.iter().any(|x| x.abs() > 0.45));
    }

    #[test]
    fn register_rejects_duplicates() {
        let vm = VarMap::new();
        register(&vm, "a", 2, vec![1.0, 2.0], &Device::Cpu).unwrap();
        assert!(register(&vm, "a", 2, vec![1.0, 2.0], &Device::Cpu).is_err());
    }
}

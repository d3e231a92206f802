//! Seeded inverted dropout.
//!
//! The mask is drawn on the host with SplitMix64 (a fresh 64-bit seed per call from the model's
//! ChaCha stream, one sub-stream per 4,096-value chunk, chunks in parallel), then applied with a
//! single multiplication, so the backward pass is one multiplication too. Training runs are
//! reproducible from the model seed (for a fixed sequence of calls). This is about 10× faster than
//! `candle_nn::ops::dropout` on the CPU, which draws a float per value from a thread RNG and
//! builds the mask in four passes. On a GPU the same stream is evaluated in the kernel
//! (`dropout_f32`: value i's draw is a pure function of seed and i), so the mask is never built
//! on the host nor copied, and CPU and GPU runs drop the same values.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::host::cpu::simd_fn;

const CHUNK: usize = 4096;

/// A shareable, seeded dropout generator.
#[derive(Debug, Clone)]
pub struct Dropout {
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl Dropout {
    /// A generator seeded with `seed` (ChaCha stream `stream`).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Dropout {
            rng: Arc::new(Mutex::new(rng)),
        }
    }

    /// The generator's position in its stream (saved with a checkpoint, so that a resumed run
    /// draws the masks an uninterrupted one would).
    pub fn position(&self) -> Result<u128> {
        Ok(self
            .rng
            .lock()
            .map_err(|_| Error::Poisoned("dropout RNG"))?
            .get_word_pos())
    }

    /// Moves the generator to `pos` (from [`Dropout::position`]).
    pub fn set_position(&self, pos: u128) -> Result<()> {
        self.rng
            .lock()
            .map_err(|_| Error::Poisoned("dropout RNG"))?
            .set_word_pos(pos);
        Ok(())
    }

    /// The seed of the next mask: what [`Dropout::apply`] draws before building its mask, so a
    /// fused kernel that draws here and builds the mask with [`mask_into`] drops the same values.
    pub fn draw_seed(&self) -> Result<u64> {
        Ok(self
            .rng
            .lock()
            .map_err(|_| Error::Poisoned("dropout RNG"))?
            .gen())
    }

    /// The mask of `n` values [`Dropout::apply`] would multiply by in training (drawn the same
    /// way, so a fused host op that takes it drops the same values); none when `p` is 0.
    pub fn host_mask(&self, n: usize, p: f32) -> Result<Option<Vec<f32>>> {
        if p <= 0.0 {
            return Ok(None);
        }
        check_p(p)?;
        Ok(Some(mask(n, p, self.draw_seed()?)))
    }

    /// Inverted dropout with probability `p` when `train`; `x` itself otherwise.
    pub fn apply(&self, x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
        if !train || p <= 0.0 {
            return Ok(x.clone());
        }
        check_p(p)?;
        let seed = self.draw_seed()?;
        if !x.device().is_cpu() {
            return Ok(x.contiguous()?.apply_op1(DropoutOp { p, seed })?);
        }
        let mask = mask(x.elem_count(), p, seed);
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?)
    }
}

fn check_p(p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!(
            "dropout probability {p} outside [0, 1)"
        )));
    }
    Ok(())
}

/// `x · mask(p, seed)` as one op whose backward applies the same mask to the gradient.
#[derive(Debug, Clone, Copy)]
struct DropoutOp {
    p: f32,
    seed: u64,
}

impl candle_core::CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = crate::ops::storage::f32_slice(s, l, "dropout input")?;
        let m = mask(x.len(), self.p, self.seed);
        let out = x.iter().zip(&m).map(|(a, b)| a * b).collect();
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use crate::ops::cuda::{grid, launch_kernel, storage, view, zeros, Kernel};
        let dev = s.device.clone();
        let x = view(s, l, "dropout input")?;
        let n = x.len();
        let out = zeros(&dev, n)?;
        let (threshold, keep) = threshold_keep(self.p);
        let k = Kernel::new(&dev, "dropout_f32")?;
        launch_kernel!(k, grid(n); &x, &out, &n, &self.seed, &threshold, &keep, &CHUNK)?;
        Ok((storage(out, &dev), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// The 32-bit draw threshold below which a value is dropped, and the scale of the kept ones.
fn threshold_keep(p: f32) -> (u64, f32) {
    ((p as f64 * 4_294_967_296.0) as u64, 1.0 / (1.0 - p))
}

/// `n` values, each `1 / (1 − p)` with probability `1 − p` and `0` otherwise.
pub fn mask(n: usize, p: f32, seed: u64) -> Vec<f32> {
    let mut out = vec![0f32; n];
    mask_into(&mut out, p, seed);
    out
}

/// [`mask`] written into `out` (its length is the mask's).
pub fn mask_into(out: &mut [f32], p: f32, seed: u64) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| mask_range(chunk, p, seed, c * CHUNK));
}

/// Values `start..start + out.len()` of [`mask`]`(_, p, seed)`: value `i` is a pure function of
/// the seed and `i` (the `(i mod 4096)/2`-th SplitMix64 output of chunk `i / 4096`'s stream,
/// its low or high half), so any range can be drawn alone — the fused encoder draws the rows
/// of real words only.
pub fn mask_range(out: &mut [f32], p: f32, seed: u64, start: usize) {
    mask_range_dispatched(out, p, seed, start)
}

simd_fn! {
    /// [`mask_range`] with its body built for AVX2 where the CPU has it.
    fn mask_range_dispatched(out: &mut [f32], p: f32, seed: u64, start: usize) = mask_range_body;
}

#[inline(always)]
fn mask_range_body(out: &mut [f32], p: f32, seed: u64, start: usize) {
    // Keep when the 32-bit draw is >= p·2³².
    let (threshold, keep) = threshold_keep(p);
    for (k, v) in out.iter_mut().enumerate() {
        let i = start + k;
        let (c, w) = ((i / CHUNK) as u64, (i % CHUNK) as u64);
        let state = (seed ^ c.wrapping_mul(0xD1B5_4A32_D192_ED03))
            .wrapping_add((w / 2 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let draw = (mix64(state) >> (32 * (w & 1))) & 0xFFFF_FFFF;
        *v = if draw >= threshold { keep } else { 0.0 };
    }
}

#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The random-access draws are the sequential SplitMix64 streams the masks were defined by.
    #[test]
    fn ranges_match_the_sequential_streams() {
        let (p, seed, n) = (0.3f32, 77u64, 3 * CHUNK + 123);
        let (threshold, keep) = threshold_keep(p);
        let mut want = vec![0f32; n];
        for (c, chunk) in want.chunks_mut(CHUNK).enumerate() {
            let mut s = seed ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            for pair in chunk.chunks_mut(2) {
                let r = splitmix64(&mut s);
                for (k, v) in pair.iter_mut().enumerate() {
                    let draw = (r >> (32 * k)) & 0xFFFF_FFFF;
                    *v = if draw >= threshold { keep } else { 0.0 };
                }
            }
        }
        assert_eq!(mask(n, p, seed), want);
        for (a, b) in [(0, 5), (1, 4097), (4095, 4200), (n - 7, n)] {
            let mut part = vec![9f32; b - a];
            mask_range(&mut part, p, seed, a);
            assert_eq!(part, want[a..b], "range {a}..{b}");
        }
    }

    #[test]
    fn mask_rate_and_scale() {
        let m = mask(200_001, 0.25, 42);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.75).abs() < 0.005, "kept {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(m, mask(200_001, 0.25, 42));
        assert_ne!(m, mask(200_001, 0.25, 43));
    }

    #[test]
    fn the_op_applies_the_host_mask_and_its_backward_the_same_mask() {
        let x = candle_core::Var::from_vec(
            (0..5000)
                .map(|i| i as f32 * 0.01 - 7.0)
                .collect::<Vec<f32>>(),
            (50, 100),
            &Device::Cpu,
        )
        .unwrap();
        let op = DropoutOp { p: 0.3, seed: 9 };
        let y = x.as_tensor().apply_op1(op).unwrap();
        let m = mask(5000, 0.3, 9);
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..5000 {
            assert_eq!(yv[i], xv[i] * m[i]);
        }
        let g = y.sum_all().unwrap().backward().unwrap();
        let gv: Vec<f32> = g.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(gv, m);
    }

    #[test]
    fn seeded_and_identity_in_eval() {
        let x = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (d1, d2) = (Dropout::new(1, 5), Dropout::new(1, 5));
        let a: Vec<f32> = d1
            .apply(&x, 0.5, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = d2
            .apply(&x, 0.5, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
        let c: Vec<f32> = d1
            .apply(&x, 0.5, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(a, c);
        let e = d1.apply(&x, 0.5, false).unwrap();
        assert_eq!(e.id(), x.id());
    }
}

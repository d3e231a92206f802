//! The two parameter-light self-attention layers in front of the convolutions (MODEL.md §3).
//!
//! Per sample, with `X` the (dropped-out) embedded text, S×d:
//! - over words: `O1 = γ1 · (X Xᵀ)(W1 X) + X`, `W1` S×S spectrally normalised;
//! - over dims: with `H = O1ᵀ` (d×S), `O2 = γ2 · (H X)(W2 H) + H`, `W2` d×d spectrally
//!   normalised; the layer's output is `O2ᵀ` (S×d).
//!
//! Both are linear in their last factor, so the whole block is one S×S mixing matrix applied to
//! `X` from the left: `O1 = R X` with `R = I + γ1 (X Xᵀ) W1`, and
//! `O2ᵀ = γ2 (O1 W2ᵀ)(Xᵀ O1) + O1 = (I + γ2 R N) R X` with `N = (X W2ᵀ) Xᵀ`. [`DualAttention::mixing`]
//! returns `M = R + γ2 (R N) R` (S×S per sample) so the projection that follows can apply
//! `W_p M` to `X` directly. Cost per sample (multiply–adds):
//! `X Xᵀ` S²d, `(XXᵀ)W1` S³, `X W2ᵀ` d²S (one GEMM for the whole batch), `N` dS², `R N` S³,
//! `(RN)R` S³ — about 3.5 M for S = 32, d = 300, against 4.4 M for the textbook order even after
//! re-associating the dims layer, and without materialising `O1`/`O2` (S×d each).
//! [`DualAttention::forward`] computes the textbook order and is kept for tests.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::init;
use super::spectral_norm::SpectralNorm;
use crate::error::Result;

/// One `γ · (A B)(W C) + C` layer's parameters: a spectrally normalised square `W` and scalar `γ`.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    /// `W` (n×n, "1×1 convolution" without bias), spectrally normalised.
    pub sn: SpectralNorm,
    /// `γ`, shape `[1]`, initialised to 0.
    pub gamma: Var,
}

impl SelfAttention {
    /// Registers `{prefix}.weight` (Xavier-normal), `.u`, `.v` and `.gamma` (0).
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        n: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let w = init::xavier_normal(rng, n * n, n, n);
        let sn = SpectralNorm::new(varmap, prefix, (n, n), w, rng, device)?;
        let gamma = init::register(varmap, &format!("{prefix}.gamma"), 1, vec![0.0], device)?;
        Ok(SelfAttention { sn, gamma })
    }
}

/// Attention over words followed by attention over embedding dimensions.
#[derive(Debug, Clone)]
pub struct DualAttention {
    /// Over words: `W1` is S×S.
    pub words: SelfAttention,
    /// Over dimensions: `W2` is d×d.
    pub dims: SelfAttention,
    eye: Tensor,
}

impl DualAttention {
    /// Registers `attn_words.*` and `attn_dims.*` under `prefix`.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        seq_len: usize,
        dim: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let words = SelfAttention::new(varmap, &format!("{prefix}words"), seq_len, rng, device)?;
        let dims = SelfAttention::new(varmap, &format!("{prefix}dims"), dim, rng, device)?;
        let eye = Tensor::eye(seq_len, candle_core::DType::F32, device)?;
        Ok(DualAttention { words, dims, eye })
    }

    /// The mixing matrices `M` `[B, S, S]` with `O2ᵀ = M X` for `x` `[B, S, d]`.
    /// With `train`, each spectral norm does one power iteration.
    pub fn mixing(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w1 = self.words.sn.weight(train)?;
        let w2 = self.dims.sn.weight(train)?;
        let g1 = self.words.gamma.as_tensor();
        let g2 = self.dims.gamma.as_tensor();
        let xt = x.t()?;
        // R = I + γ1 (X Xᵀ) W1
        let a = x.matmul(&xt)?;
        let r = a
            .broadcast_matmul(&w1)?
            .broadcast_mul(g1)?
            .broadcast_add(&self.eye)?;
        // N = (X W2ᵀ) Xᵀ; X W2ᵀ is one [B·S, d]×[d, d] GEMM.
        let y = x.broadcast_matmul(&w2.t()?)?;
        let n = y.matmul(&xt)?;
        // M = R + γ2 (R N) R
        let rnr = r.matmul(&n)?.matmul(&r)?;
        Ok((r + rnr.broadcast_mul(g2)?)?)
    }

    /// The layer's output `O2ᵀ` `[B, S, d]`, computed in the textbook order (for tests and
    /// reference; [`Self::mixing`] is what the encoder uses).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let w1 = self.words.sn.weight(train)?;
        let w2 = self.dims.sn.weight(train)?;
        let g1 = self.words.gamma.as_tensor();
        let g2 = self.dims.gamma.as_tensor();
        // O1 = γ1 (X Xᵀ)(W1 X) + X
        let xxt = x.matmul(&x.t()?)?;
        let w1x = w1.broadcast_as((b, s, s))?.matmul(x)?;
        let o1 = (xxt.matmul(&w1x)?.broadcast_mul(g1)? + x)?;
        // H = O1ᵀ; O2 = γ2 (H X)(W2 H) + H
        let h = o1.t()?;
        let hx = h.matmul(x)?;
        let w2h = w2.broadcast_as((b, d, d))?.matmul(&h)?;
        let o2 = (hx.matmul(&w2h)?.broadcast_mul(g2)? + &h)?;
        Ok(o2.t()?.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, host};
    use rand::SeedableRng;

    fn setup(s: usize, d: usize) -> (DualAttention, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let vm = VarMap::new();
        let att = DualAttention::new(&vm, "attn_", s, d, &mut rng, &Device::Cpu).unwrap();
        let x = Tensor::from_vec(
            init::uniform(&mut rng, 3 * s * d, 0.5),
            (3, s, d),
            &Device::Cpu,
        )
        .unwrap();
        (att, x)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        testing::max_abs_diff(&host(a), &host(b))
    }

    #[test]
    fn gamma_zero_is_identity() {
        let (att, x) = setup(8, 20);
        let y = att.forward(&x, false).unwrap();
        assert_eq!(y.dims(), x.dims());
        assert_eq!(max_abs_diff(&y, &x), 0.0);
        let m = att.mixing(&x, true).unwrap();
        assert_eq!(m.dims(), &[3, 8, 8]);
        assert_eq!(max_abs_diff(&m.matmul(&x).unwrap(), &x), 0.0);
    }

    #[test]
    fn mixing_matches_textbook_order() {
        let (att, x) = setup(8, 20);
        att.words
            .gamma
            .set(&Tensor::new(&[0.3f32], &Device::Cpu).unwrap())
            .unwrap();
        att.dims
            .gamma
            .set(&Tensor::new(&[-0.2f32], &Device::Cpu).unwrap())
            .unwrap();
        let want = att.forward(&x, false).unwrap();
        let got = att.mixing(&x, false).unwrap().matmul(&x).unwrap();
        let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(max_abs_diff(&want, &got) < 1e-5 * scale.max(1.0));
        assert!(
            max_abs_diff(&want, &x) > 1e-2,
            "attention must change x when γ ≠ 0"
        );
    }
}

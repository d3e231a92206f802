//! The projection (MODEL.md §3): a 1×1 convolution from S word channels to F filters over the
//! length-d axis, then GELU (exact) and BatchNorm(F). The caller applies the dropout.
//!
//! Per sample this is `W_p Z + b` with `W_p` F×S and `Z` S×d. The encoder passes the attention's
//! mixing matrix `M` (`Z = M X`) and the product is taken as `(W_p M) X` (F·S² + F·S·d
//! multiply–adds). The output is laid out length-major, `[B, d, F]` (channels last), which is
//! what the inception convolutions and the channels-last BatchNorm want.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::batch_norm::BatchNorm;
use super::init;
use crate::error::Result;

/// 1×1 convolution S -> F (with bias), GELU, BatchNorm(F).
#[derive(Debug, Clone)]
pub struct Projection {
    /// `[F, S]` (PyTorch's `[F, S, 1]` without the kernel axis), Xavier-uniform.
    pub weight: Var,
    /// `[F]`, zero.
    pub bias: Var,
    /// BatchNorm over the F channels.
    pub bn: BatchNorm,
}

impl Projection {
    /// Registers `{prefix}.weight`, `{prefix}.bias` and `{prefix}_bn.*`.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        seq_len: usize,
        filters: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let w = init::xavier_uniform(rng, filters * seq_len, seq_len, filters);
        let weight = init::register(
            varmap,
            &format!("{prefix}.weight"),
            (filters, seq_len),
            w,
            device,
        )?;
        let bias = init::register(
            varmap,
            &format!("{prefix}.bias"),
            filters,
            vec![0.0; filters],
            device,
        )?;
        let bn = BatchNorm::new(varmap, &format!("{prefix}_bn"), filters, device)?;
        Ok(Projection { weight, bias, bn })
    }

    /// `x` `[B, S, d]`, optional mixing `m` `[B, S, S]` -> `BN(GELU(W_p (M) X + b))` as `[B, d, F]`.
    pub fn forward(&self, x: &Tensor, mix: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, s, _d) = x.dims3()?;
        let f = self.weight.dim(0)?;
        let wp = self.weight.as_tensor().broadcast_as((b, f, s))?;
        let t = match mix {
            Some(m) => wp.matmul(m)?,
            None => wp,
        };
        // [B, d, S] × [B, S, F] -> [B, d, F]
        let u = x
            .t()?
            .matmul(&t.t()?)?
            .broadcast_add(self.bias.as_tensor())?;
        self.bn.forward_gelu(&u, train)
    }
}

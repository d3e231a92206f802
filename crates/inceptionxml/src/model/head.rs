//! The full one-vs-all head of InceptionXML (MODEL.md §4):
//! `h_o = BN(GELU(Linear(D->D)(dropout(h_f))))`, `logits = Linear(D->L)(dropout_ext(h_o + h_f))`.
//!
//! The L-way weight is stored transposed, `[D, L]` (in × out), so that the logits are one plain
//! `[B, D]×[D, L]` GEMM and its gradient comes out contiguous in the same layout.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::batch_norm::BatchNorm;
use super::init;
use crate::error::Result;
use crate::ops::dropout::Dropout;

/// Residual hidden layer plus the L-way classifier.
#[derive(Debug, Clone)]
pub struct Head {
    /// `[D, D]` (out × in), Xavier-uniform.
    pub hidden_weight: Var,
    /// `[D]`, zero.
    pub hidden_bias: Var,
    /// BatchNorm(D) after the hidden layer's GELU.
    pub bn: BatchNorm,
    /// `[D, L]` (in × out, i.e. PyTorch's weight transposed), Xavier-uniform.
    pub out_weight: Var,
    /// `[L]`, zero.
    pub out_bias: Var,
    dropout_hidden: f32,
    dropout_ext: f32,
    dropout: Dropout,
}

impl Head {
    /// Registers `{prefix}.hidden.*`, `{prefix}.bn.*`, `{prefix}.out.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        dim: usize,
        n_labels: usize,
        dropout_hidden: f32,
        dropout_ext: f32,
        dropout: Dropout,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let hidden_weight = init::register(
            varmap,
            &format!("{prefix}.hidden.weight"),
            (dim, dim),
            init::xavier_uniform(rng, dim * dim, dim, dim),
            device,
        )?;
        let hidden_bias = init::register(
            varmap,
            &format!("{prefix}.hidden.bias"),
            dim,
            vec![0.0; dim],
            device,
        )?;
        let bn = BatchNorm::new(varmap, &format!("{prefix}.bn"), dim, device)?;
        let out_weight = init::register(
            varmap,
            &format!("{prefix}.out.weight"),
            (dim, n_labels),
            init::xavier_uniform(rng, dim * n_labels, dim, n_labels),
            device,
        )?;
        let out_bias = init::register(
            varmap,
            &format!("{prefix}.out.bias"),
            n_labels,
            vec![0.0; n_labels],
            device,
        )?;
        Ok(Head {
            hidden_weight,
            hidden_bias,
            bn,
            out_weight,
            out_bias,
            dropout_hidden,
            dropout_ext,
            dropout,
        })
    }

    /// `h_o + h_f`, the classifier's input before its dropout: `[B, D]`.
    pub fn features(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dropout.apply(h, self.dropout_hidden, train)?;
        let z = x
            .matmul(&self.hidden_weight.as_tensor().t()?)?
            .broadcast_add(self.hidden_bias.as_tensor())?;
        let h_o = self.bn.forward_gelu(&z, train)?;
        Ok((h_o + h)?)
    }

    /// The output layer's weight `[D, L]` (in × out) and bias `[L]`.
    pub fn output_layer(&self) -> (&Tensor, &Tensor) {
        (self.out_weight.as_tensor(), self.out_bias.as_tensor())
    }

    /// The classifier's input `dropout_ext(h_o + h_f)` `[B, D]`.
    pub fn classifier_input(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        self.dropout
            .apply(&self.features(h, train)?, self.dropout_ext, train)
    }

    /// The classifier's weight `[D, L]` and bias `[L]` variables.
    pub fn classifier(&self) -> (&Var, &Var) {
        (&self.out_weight, &self.out_bias)
    }

    /// `h_f` `[B, D]` -> logits `[B, L]`.
    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let z = self.classifier_input(h, train)?;
        Ok(z.matmul(self.out_weight.as_tensor())?
            .broadcast_add(self.out_bias.as_tensor())?)
    }
}

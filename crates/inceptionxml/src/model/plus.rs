//! The InceptionXML+ heads (MODEL.md §5): a meta head over C label clusters and an extreme head with
//! one weight row per label, both behind a spectrally normalised hidden layer with a residual.
//!
//! * meta: `h_m = GELU(SN-Linear(D->hd)(dropout(h_f)))`,
//!   `meta_logits = Linear(hd->C)(dropout_meta(h_m + r(h_f)))`;
//! * extreme: `g = dropout_ext(GELU(SN-Linear(D->hd)(dropout(h_f))) + r(h_f))`, and the logit of
//!   label `l` is `W_e[l]·g` (no bias), computed only for shortlisted candidates
//!   ([`crate::ops::candidate_logits`]).
//!
//! `r` is the identity when hd = D and an adaptive average pooling D -> hd otherwise (the paper's
//! AmazonTitles-3M setting, hd = 300). The label table `W_e` is kept in cluster order (the rows of
//! cluster `c` are contiguous) and, like the word table, outside autograd: it is trained by lazy
//! row Adam on the candidate rows only.
//!
//! `VarMap` names: `meta.hidden.{weight [hd,D], u*, v*, bias [hd]}`, `meta.out.{weight [hd,C]
//! (in × out), bias [C]}`, `extreme.hidden.{weight, u*, v*, bias}`, `extreme.table [L, hd]`.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::init;
use super::spectral_norm::{SnState, SpectralNorm};
use crate::config::PlusConfig;
use crate::error::Result;
use crate::ops::dropout::Dropout;
use crate::ops::residual_hidden;

/// Name of the label table in the `VarMap` (rows in cluster order).
pub const TABLE_NAME: &str = "extreme.table";

/// Spectrally normalised Linear(D -> hd) with bias, then GELU.
#[derive(Debug, Clone)]
pub struct SnHidden {
    pub sn: SpectralNorm,
    pub bias: Var,
}

impl SnHidden {
    fn new(
        varmap: &VarMap,
        prefix: &str,
        (out_dim, in_dim): (usize, usize),
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let w = init::xavier_uniform(rng, out_dim * in_dim, in_dim, out_dim);
        let sn = SpectralNorm::new(varmap, prefix, (out_dim, in_dim), w, rng, device)?;
        let bias = init::register(
            varmap,
            &format!("{prefix}.bias"),
            out_dim,
            vec![0.0; out_dim],
            device,
        )?;
        Ok(SnHidden { sn, bias })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.sn.weight(train)?;
        crate::ops::gelu::gelu(&x.matmul(&w.t()?)?.broadcast_add(self.bias.as_tensor())?)
    }
}

/// The `[D, hd]` matrix of adaptive average pooling from D to hd positions (PyTorch's
/// `AdaptiveAvgPool1d`: output i averages inputs ⌊iD/hd⌋..⌈(i+1)D/hd⌉).
pub fn pooling_matrix(d: usize, hd: usize) -> Vec<f32> {
    let mut m = vec![0f32; d * hd];
    for i in 0..hd {
        let a = i * d / hd;
        let b = ((i + 1) * d).div_ceil(hd);
        let w = 1.0 / (b - a) as f32;
        for j in a..b {
            m[j * hd + i] = w;
        }
    }
    m
}

/// Meta and extreme heads.
#[derive(Debug, Clone)]
pub struct PlusHeads {
    pub meta_hidden: SnHidden,
    /// `[hd, C]` (in × out).
    pub meta_weight: Var,
    /// `[C]`.
    pub meta_bias: Var,
    pub ext_hidden: SnHidden,
    /// `[L, hd]`, rows in cluster order.
    pub table: Var,
    /// `[D, hd]` residual pooling when hd != D.
    pool: Option<Tensor>,
    cfg: PlusConfig,
    dropout_hidden: f32,
    dropout_ext: f32,
    dropout: Dropout,
}

impl PlusHeads {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        varmap: &VarMap,
        cfg: &PlusConfig,
        dim: usize,
        n_labels: usize,
        dropout_hidden: f32,
        dropout_ext: f32,
        dropout: Dropout,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let (hd, c) = (cfg.hidden_dim, cfg.n_clusters);
        let meta_hidden = SnHidden::new(varmap, "meta.hidden", (hd, dim), rng, device)?;
        let meta_weight = init::register(
            varmap,
            "meta.out.weight",
            (hd, c),
            init::xavier_uniform(rng, hd * c, hd, c),
            device,
        )?;
        let meta_bias = init::register(varmap, "meta.out.bias", c, vec![0.0; c], device)?;
        let ext_hidden = SnHidden::new(varmap, "extreme.hidden", (hd, dim), rng, device)?;
        let table = init::register(
            varmap,
            TABLE_NAME,
            (n_labels, hd),
            init::xavier_uniform(rng, n_labels * hd, hd, n_labels),
            device,
        )?;
        let pool = if hd == dim {
            None
        } else {
            Some(Tensor::from_vec(
                pooling_matrix(dim, hd),
                (dim, hd),
                device,
            )?)
        };
        Ok(PlusHeads {
            meta_hidden,
            meta_weight,
            meta_bias,
            ext_hidden,
            table,
            pool,
            cfg: cfg.clone(),
            dropout_hidden,
            dropout_ext,
            dropout,
        })
    }

    pub fn config(&self) -> &PlusConfig {
        &self.cfg
    }

    fn residual(&self, h: &Tensor) -> Result<Tensor> {
        Ok(match &self.pool {
            None => h.clone(),
            Some(p) => h.matmul(p)?,
        })
    }

    /// h_f `[B, D]` -> the meta classifier's input `h_m + r(h_f)` `[B, hd]` (before its
    /// dropout).
    pub fn meta_features(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dropout.apply(h, self.dropout_hidden, train)?;
        Ok((self.meta_hidden.forward(&x, train)? + self.residual(h)?)?)
    }

    /// h_f `[B, D]` -> the meta classifier's input after its dropout `[B, hd]`.
    pub fn meta_input(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let hm = self.meta_features(h, train)?;
        self.dropout.apply(&hm, self.cfg.dropout_meta, train)
    }

    /// The meta classifier's weight `[hd, C]` and bias `[C]` variables.
    pub fn meta_vars(&self) -> (&Var, &Var) {
        (&self.meta_weight, &self.meta_bias)
    }

    /// h_f `[B, D]` -> meta logits `[B, C]`.
    pub fn meta_logits(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let hm = self.meta_input(h, train)?;
        Ok(hm
            .matmul(self.meta_weight.as_tensor())?
            .broadcast_add(self.meta_bias.as_tensor())?)
    }

    /// The meta classifier's weight `[hd, C]` (in × out) and bias `[C]`.
    pub fn meta_layer(&self) -> (&Tensor, &Tensor) {
        (self.meta_weight.as_tensor(), self.meta_bias.as_tensor())
    }

    /// h_f `[B, D]` -> the extreme head's features g `[B, hd]`.
    pub fn extreme_features(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dropout.apply(h, self.dropout_hidden, train)?;
        let g = (self.ext_hidden.forward(&x, train)? + self.residual(h)?)?;
        self.dropout.apply(&g, self.dropout_ext, train)
    }
}

/// Which hidden layer of the heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    Meta,
    Extreme,
}

impl PlusHeads {
    /// Whether the fused CPU hidden layers apply (hd = D: the residual is the identity).
    pub fn fusable(&self) -> bool {
        self.pool.is_none()
    }

    /// The training forward of hidden layer `which` as one fused host op ([`residual_hidden`]):
    /// one power iteration, then `dropout(GELU(SN(W)·dropout(h) + b) + h)` for `h` `[b, D]`
    /// (row-major host values), with the masks [`Self::meta_input`] /
    /// [`Self::extreme_features`] draw, in their order. Returns the output, the backward's tape
    /// and the spectral norm's state (for the raw weight's gradient, [`sn_backward`]).
    ///
    /// [`residual_hidden`]: crate::ops::residual_hidden
    /// [`sn_backward`]: super::spectral_norm::sn_backward
    pub fn hidden_train_fused(
        &self,
        which: Hidden,
        h: &[f32],
        b: usize,
    ) -> Result<(Vec<f32>, residual_hidden::HiddenTape, SnState)> {
        let (layer, p2) = match which {
            Hidden::Meta => (&self.meta_hidden, self.cfg.dropout_meta),
            Hidden::Extreme => (&self.ext_hidden, self.dropout_ext),
        };
        let d = self.cfg.hidden_dim;
        let m1 = self.dropout.host_mask(b * d, self.dropout_hidden)?;
        let (w, sn) = layer.sn.host_weight(true)?;
        let bias = layer.bias.as_tensor().to_vec1::<f32>()?;
        let m2 = self.dropout.host_mask(b * d, p2)?;
        let (out, tape) = residual_hidden::forward(h, w, &bias, (b, d), m1, m2)?;
        Ok((out, tape, sn))
    }

    /// Keeps both hidden layers' evaluation weights `W / σ`
    /// ([`SpectralNorm::freeze_for_inference`]).
    pub fn freeze_for_inference(&self) -> Result<()> {
        self.meta_hidden.sn.freeze_for_inference()?;
        self.ext_hidden.sn.freeze_for_inference()
    }

    /// The variables of hidden layer `which`: the raw SN weight and the bias.
    pub fn hidden_vars(&self, which: Hidden) -> (&Var, &Var) {
        let layer = match which {
            Hidden::Meta => &self.meta_hidden,
            Hidden::Extreme => &self.ext_hidden,
        };
        (layer.sn.raw_weight(), &layer.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_windows() {
        // 5 -> 3: windows [0,2), [1,4), [3,5)
        let m = pooling_matrix(5, 3);
        let col = |i: usize| (0..5).map(|j| m[j * 3 + i]).collect::<Vec<_>>();
        assert_eq!(col(0), vec![0.5, 0.5, 0.0, 0.0, 0.0]);
        let third = 1.0 / 3.0;
        assert_eq!(col(1), vec![0.0, third, third, third, 0.0]);
        assert_eq!(col(2), vec![0.0, 0.0, 0.0, 0.5, 0.5]);
        // 480 -> 300: every column sums to 1.
        let m = pooling_matrix(480, 300);
        for i in 0..300 {
            let s: f32 = (0..480).map(|j| m[j * 300 + i]).sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }
}

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

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xmc::shortlist::{self, ClusterIndex, Shortlist};

use super::classifier::{Classified, HeadGrads};
use super::init;
use super::spectral_norm::{sn_backward, SnState, SpectralNorm};
use crate::config::PlusConfig;
use crate::error::Result;
use crate::ops::bce::bce_masked_host;
use crate::ops::dropout::Dropout;
use crate::ops::host::linear_bce::{bce_backward, linear};
use crate::ops::host::residual_hidden;
use crate::ops::storage::{with_host_f32, with_host_f32s};
use crate::ops::{
    bce_with_logits_masked, candidate_logits, stable_sigmoid, CandidatePlan, TableGrad,
};
use crate::profile::{span, timed, Laps, Stage};

/// An InceptionXML+ training graph from [`PlusHeads::train_composed`]: the scalar whose
/// backward carries both heads' gradients (meta loss term + extreme loss), and what the step
/// needs after it.
pub struct PlusGraph {
    pub term: Tensor,
    /// The meta classifier (its fused weight gradients go in after the backward).
    pub meta: Classified,
    /// The candidates' masked BCE.
    pub ext_loss: Tensor,
    /// The label table's row gradient, filled by the backward.
    pub table_grad: TableGrad,
    pub plan: Arc<CandidatePlan>,
}

/// What [`PlusHeads::train_fused`] leaves: the heads' loss and gradients, and the candidates'
/// logit gradient `dlog` (`rows × width`) with the extreme features `g` (`rows × hd`), from
/// which the label-table update computes the table's gradient block by block.
pub struct PlusGrads {
    pub heads: HeadGrads,
    pub plan: Arc<CandidatePlan>,
    pub dlog: Vec<f32>,
    pub g: Vec<f32>,
}

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
    /// [`residual_hidden`]: crate::ops::host::residual_hidden
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

    /// The heads' training forward and loss as composed candle ops (the reference; any device,
    /// or hd ≠ D): meta head and its BCE against the cluster `targets` `[B, C]` (by the fused
    /// classifier op with `fused_meta`), the shortlist of each row's top-K clusters (its
    /// `positives`' clusters forced in), the extreme head over `h` (detached with `detach`) and
    /// the candidates' masked BCE. The caller runs the backward of [`PlusGraph::term`].
    pub fn train_composed(
        &self,
        index: &ClusterIndex,
        h: &Tensor,
        (targets, positives): (&Tensor, &[Vec<u32>]),
        detach: bool,
        fused_meta: bool,
    ) -> Result<PlusGraph> {
        timed(Stage::HeadsForwardLoss, || {
            let hm = timed(Stage::MetaHead, || self.meta_input(h, true))?;
            let meta = timed(Stage::MetaLoss, || {
                let (w, b) = self.meta_vars();
                Classified::new(&hm, w, b, targets, fused_meta)
            })?;
            let (plan, sl) = timed(Stage::Shortlist, || {
                self.shortlist_plan(&meta.scores()?, positives, index)
            })?;
            let g = timed(Stage::ExtremeFeatures, || {
                let hin = if detach { h.detach() } else { h.clone() };
                self.extreme_features(&hin, true)
            })?;
            let (ext_loss, table_grad) = timed(Stage::CandidateLoss, || {
                let (logits, table_grad) =
                    candidate_logits(&g, self.table.as_tensor(), plan.clone())?;
                let dev = logits.device().clone();
                let shape = (sl.rows, sl.width);
                let y = Tensor::from_vec(sl.targets, shape, &dev)?;
                let m = Tensor::from_vec(sl.mask, shape, &dev)?;
                Ok::<_, crate::Error>((bce_with_logits_masked(&logits, &y, &m)?, table_grad))
            })?;
            let term = (meta.term() + &ext_loss)?;
            Ok(PlusGraph {
                term,
                meta,
                ext_loss,
                table_grad,
                plan,
            })
        })
    }

    /// The heads' training forward, loss and backward as fused host ops (hd = D,
    /// [`Self::fusable`]), outside candle's graph: the two hidden layers
    /// ([`residual_hidden`]), the meta classifier + BCE ([`crate::ops::host::linear_bce`]), the
    /// shortlist, the candidates' scores and masked BCE and their input gradient. The meta
    /// classifier's backward runs beside the whole extreme head on the thread pool (it needs
    /// only the meta logits). With `detach` the extreme head's gradient does not reach h_f. The
    /// same values, masks and gradients as [`Self::train_composed`] and its backward (tested on
    /// twin models, `train::step`); the label table's gradient is left to the update
    /// ([`PlusGrads::dlog`], [`PlusGrads::g`]).
    pub fn train_fused(
        &self,
        index: &ClusterIndex,
        h: &Tensor,
        (targets, positives): (&Tensor, &[Vec<u32>]),
        detach: bool,
    ) -> Result<PlusGrads> {
        let _span = span(Stage::HeadsForwardBackward);
        let (b, d) = h.dims2()?;
        let hv = h.flatten_all()?.to_vec1::<f32>()?;
        let mut laps = Laps::start(Stage::PlusHidden);
        let (hm, tape_m, sn_m) = self.hidden_train_fused(Hidden::Meta, &hv, b)?;
        let (g, tape_e, sn_e) = self.hidden_train_fused(Hidden::Extreme, &hv, b)?;
        drop(hv);
        laps.next(Stage::PlusMetaLogits);
        let (mw, mb) = self.meta_vars();
        let c = mw.dim(1)?;
        let logits = with_host_f32s([mw.as_tensor(), mb.as_tensor()], |[wv, bv]| {
            linear(&hm, wv, bv, (b, d, c))
        })??;
        // The meta classifier's backward and the extreme head's whole forward and backward need
        // only the meta logits: the two run side by side on the thread pool.
        laps.next(Stage::PlusMetaBesideExtreme);
        let (meta, ext) = rayon::join(
            || {
                timed(Stage::SideMetaBackward, || -> Result<_> {
                    let meta = with_host_f32s([mw.as_tensor(), targets], |[wv, yv]| {
                        bce_backward(&hm, wv, yv, &logits, (b, d, c))
                    })??;
                    let gm = residual_hidden::backward(&tape_m, &meta.dx)?;
                    Ok((meta, gm))
                })
            },
            || -> Result<_> {
                let mut side = Laps::start(Stage::SideShortlist);
                let scores: Vec<f32> = logits.par_iter().map(|&x| stable_sigmoid(x)).collect();
                let (plan, sl) = self.shortlist_plan(&scores, positives, index)?;
                drop(scores);
                side.next(Stage::SideCandidateLoss);
                let (ext_loss, dlog) = with_host_f32(self.table.as_tensor(), |t| {
                    bce_masked_host(&plan.scores(&g, t, d), &sl.targets, &sl.mask)
                })??;
                side.next(Stage::SideCandidatesBackward);
                let dg = with_host_f32(self.table.as_tensor(), |t| plan.grad_input(&dlog, t, d))?;
                side.next(Stage::SideExtremeHiddenBackward);
                let ge = residual_hidden::backward(&tape_e, &dg)?;
                Ok((plan, ext_loss, dlog, ge))
            },
        );
        let ((meta, mut gm), (plan, ext_loss, dlog, ge)) = (meta?, ext?);
        drop(hm);
        laps.next(Stage::PlusHeadGradients);
        let mut dh = std::mem::take(&mut gm.dh);
        if !detach {
            dh.par_iter_mut().zip(&ge.dh).for_each(|(a, e)| *a += e);
        }
        let mut params = vec![(mw.clone(), meta.dw), (mb.clone(), meta.db)];
        for (which, tape, sn, hg) in [
            (Hidden::Meta, &tape_m, sn_m, gm),
            (Hidden::Extreme, &tape_e, sn_e, ge),
        ] {
            let (w, bias) = self.hidden_vars(which);
            params.push((w.clone(), sn_backward(&hg.dw, tape.weight(), &sn)));
            params.push((bias.clone(), hg.db));
        }
        Ok(PlusGrads {
            heads: HeadGrads {
                loss: meta.loss + ext_loss,
                dh,
                params,
            },
            plan,
            dlog,
            g,
        })
    }

    /// The shortlist of a batch from its meta scores (each row's `positives`' clusters forced
    /// in) and its candidate plan.
    fn shortlist_plan(
        &self,
        scores: &[f32],
        positives: &[Vec<u32>],
        index: &ClusterIndex,
    ) -> Result<(Arc<CandidatePlan>, Shortlist)> {
        let pos: Vec<&[u32]> = positives.iter().map(Vec::as_slice).collect();
        let sl = shortlist::build(scores, index, self.cfg.top_k, Some(&pos))?;
        let plan = Arc::new(CandidatePlan::new(&sl, index)?);
        Ok((plan, sl))
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

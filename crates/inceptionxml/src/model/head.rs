//! The full one-vs-all head of InceptionXML (MODEL.md §4):
//! `h_o = BN(GELU(Linear(D->D)(dropout(h_f))))`, `logits = Linear(D->L)(dropout_ext(h_o + h_f))`.
//!
//! The L-way weight is stored transposed, `[D, L]` (in × out), so that the logits are one plain
//! `[B, D]×[D, L]` GEMM and its gradient comes out contiguous in the same layout.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use super::batch_norm::BatchNorm;
use super::classifier::{Classified, HeadGrads};
use super::fused::{bn_params, host};
use super::init;
use crate::error::Result;
use crate::ops::dropout::Dropout;
use crate::ops::host::bn_hidden::{self, BnHiddenTape};
use crate::ops::host::linear_bce::{linear, linear_bce};
use crate::ops::storage::with_host_f32s;
use crate::profile::{timed, Stage};

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

    /// The training forward of [`Self::classifier_input`] as fused host ops
    /// ([`crate::ops::host::bn_hidden`]) for `h` `[b, D]` (row-major host values): the masks drawn as
    /// the composed ops draw them, in their order, and the BatchNorm's running statistics
    /// updated as theirs are. Returns the classifier's input and the backward's tape.
    pub fn classifier_input_fused(&self, h: &[f32], b: usize) -> Result<(Vec<f32>, BnHiddenTape)> {
        let d = self.hidden_bias.dim(0)?;
        let m1 = self.dropout.host_mask(b * d, self.dropout_hidden)?;
        let w = host(self.hidden_weight.as_tensor())?;
        let bias = host(self.hidden_bias.as_tensor())?;
        let bn = bn_params(&self.bn)?;
        let m2 = self.dropout.host_mask(b * d, self.dropout_ext)?;
        let (out, tape) = bn_hidden::forward(h, w, &bias, bn, (b, d), m1, m2)?;
        let (mean, var, n) = tape.batch_stats();
        self.bn.update_running(mean, var, n)?;
        Ok((out, tape))
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

    /// The head's training forward and loss as composed candle ops (the reference; any
    /// device): the classifier and its BCE against `targets` `[B, L]` as one unit of the step's
    /// graph, whose backward the caller runs.
    pub fn train_composed(&self, h: &Tensor, targets: &Tensor) -> Result<Classified> {
        timed(Stage::HeadsForwardLoss, || {
            let z = self.classifier_input(h, true)?;
            timed(Stage::PlainLoss, || {
                Classified::new(&z, &self.out_weight, &self.out_bias, targets, false)
            })
        })
    }

    /// The head's training forward, loss and backward as fused host ops, outside candle's
    /// graph: the hidden layer ([`bn_hidden`]) and the classifier + BCE
    /// ([`crate::ops::host::linear_bce`]) against `targets` `[B, L]`. The same values as
    /// [`Self::train_composed`] and its backward (tested on twin models, `train::step`).
    pub fn train_fused(&self, h: &Tensor, targets: &Tensor) -> Result<HeadGrads> {
        let (b, d) = h.dims2()?;
        let c = self.out_weight.dim(1)?;
        let (tape, cls) = timed(Stage::HeadsForwardLoss, || -> Result<_> {
            let hv = h.flatten_all()?.to_vec1::<f32>()?;
            let (z, tape) = timed(Stage::PlainHidden, || self.classifier_input_fused(&hv, b))?;
            drop(hv);
            let cls = timed(Stage::PlainLoss, || {
                let tensors = [
                    self.out_weight.as_tensor(),
                    self.out_bias.as_tensor(),
                    targets,
                ];
                with_host_f32s(tensors, |[wv, bv, yv]| {
                    linear_bce(&z, wv, bv, yv, (b, d, c))
                })
            })??;
            Ok((tape, cls))
        })?;
        timed(Stage::HeadsBackward, || {
            let hg = bn_hidden::backward(&tape, &cls.dx)?;
            drop(tape);
            let (bn_w, bn_b) = self.bn.params();
            let params = vec![
                (self.out_weight.clone(), cls.dw),
                (self.out_bias.clone(), cls.db),
                (self.hidden_weight.clone(), hg.dw),
                (self.hidden_bias.clone(), hg.db),
                (bn_w.clone(), hg.bn_weight),
                (bn_b.clone(), hg.bn_bias),
            ];
            Ok(HeadGrads {
                loss: cls.loss,
                dh: hg.dh,
                params,
            })
        })
    }

    /// The evaluation logits `[B, L]` for `h_f` `[B, D]` as row-major host values: on the CPU
    /// the output layer is one host product written straight into them
    /// ([`crate::ops::host::linear_bce::linear`]); elsewhere [`Self::forward`] copied to the host.
    pub fn eval_logits(&self, h: &Tensor) -> Result<Vec<f32>> {
        if !h.device().is_cpu() || h.dtype() != candle_core::DType::F32 {
            let logits = self.forward(h, false)?.to_dtype(candle_core::DType::F32)?;
            return Ok(logits.flatten_all()?.to_vec1()?);
        }
        let z = self.classifier_input(h, false)?.contiguous()?;
        let (w, b) = self.output_layer();
        let (n, d) = z.dims2()?;
        let l = w.dim(1)?;
        with_host_f32s([&z, w, b], |[zv, wv, bv]| linear(zv, wv, bv, (n, d, l)))?
    }

    /// `h_f` `[B, D]` -> logits `[B, L]`.
    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let z = self.classifier_input(h, train)?;
        Ok(z.matmul(self.out_weight.as_tensor())?
            .broadcast_add(self.out_bias.as_tensor())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_rel_diff;
    use rand::{Rng, SeedableRng};

    /// The fused hidden layer ([`Head::classifier_input_fused`] and [`bn_hidden::backward`])
    /// against the composed candle ops under autograd on twin heads (same weights, same dropout
    /// stream): the output, the gradient of the input and of every variable for a random
    /// upstream gradient, and the running statistics it leaves.
    #[test]
    fn fused_classifier_input_matches_composed_ops() {
        let (b, d, l) = (6, 16, 5);
        let dev = Device::Cpu;
        let make = || {
            let mut rng = ChaCha8Rng::seed_from_u64(4);
            let varmap = VarMap::new();
            let head = Head::new(
                &varmap,
                "head",
                d,
                l,
                0.3,
                0.4,
                Dropout::new(9, 2),
                &mut rng,
                &dev,
            )
            .unwrap();
            // Non-trivial BatchNorm parameters and bias.
            let set = |v: &Var, a: f32, s: u64| {
                let mut r = ChaCha8Rng::seed_from_u64(s);
                let vals: Vec<f32> = (0..d).map(|_| a + r.gen_range(-0.5..0.5)).collect();
                v.set(&Tensor::from_vec(vals, d, &dev).unwrap()).unwrap();
            };
            let (w, bias) = head.bn.params();
            set(w, 1.0, 1);
            set(bias, 0.0, 2);
            set(&head.hidden_bias, 0.0, 3);
            head
        };
        let (hc, hf) = (make(), make());
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let hv: Vec<f32> = (0..b * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let r: Vec<f32> = (0..b * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let host = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let close = |a: &[f32], b: &[f32], what: &str| {
            let e = max_rel_diff(a, b, b, 1.0);
            assert!(e < 1e-4, "{what}: off by {e} of the scale");
        };
        let h = Var::from_vec(hv.clone(), (b, d), &dev).unwrap();
        let z = hc.classifier_input(h.as_tensor(), true).unwrap();
        let rt = Tensor::from_vec(r.clone(), (b, d), &dev).unwrap();
        let grads = (&z * &rt).unwrap().sum_all().unwrap().backward().unwrap();
        let (out, tape) = hf.classifier_input_fused(&hv, b).unwrap();
        close(&out, &host(&z), "output");
        let g = bn_hidden::backward(&tape, &r).unwrap();
        let grad = |v: &Var| host(grads.get(v.as_tensor()).unwrap());
        close(&g.dh, &grad(&h), "dh");
        close(&g.dw, &grad(&hc.hidden_weight), "dW");
        close(&g.db, &grad(&hc.hidden_bias), "db");
        close(&g.bn_weight, &grad(hc.bn.params().0), "BatchNorm weight");
        close(&g.bn_bias, &grad(hc.bn.params().1), "BatchNorm bias");
        for (a, c) in [
            (hf.bn.buffers().0, hc.bn.buffers().0),
            (hf.bn.buffers().1, hc.bn.buffers().1),
        ] {
            close(
                &host(a.as_tensor()),
                &host(c.as_tensor()),
                "running statistics",
            );
        }
    }
}

//! The model's side of the fused CPU encoder ([`crate::ops::host::encoder`]): gathering the layers'
//! parameters as host vectors (spectral norms iterated as the composed encoder does), drawing
//! the dropout seeds in the composed encoder's order, updating the BatchNorm running
//! statistics, and turning the op's gradients back into gradients of the model's variables
//! (through the spectral norm's backward) in a candle `GradStore`.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::batch_norm::BatchNorm;
use super::inception::Conv1d;
use super::spectral_norm::{sn_backward, SnState};
use super::InceptionXml;
use crate::error::{Error, Result};
use crate::ops::host::encoder::{BnParams, Dims, Dropouts, Params, Workspace};
use crate::ops::storage::with_host_f32;

/// Words per text of `ids` (rows of `s` ids): the positions up to its last non-padding id;
/// the padding after it is skipped by the fused encoder and gets no gradient.
pub fn text_lengths(ids: &[u32], s: usize) -> Vec<usize> {
    ids.chunks(s.max(1))
        .map(|t| {
            t.iter()
                .rposition(|&i| i != xmc::vocab::PAD_ID)
                .map_or(0, |i| i + 1)
        })
        .collect()
}

/// What a fused training forward hands to its backward: the parameters it used and the
/// spectral norms' `(u, v, σ)` at that step.
#[derive(Debug)]
pub struct FusedTape {
    params: Params,
    sn: [SnState; 2],
    dims: Dims,
}

pub(crate) fn host(v: &Tensor) -> Result<Vec<f32>> {
    Ok(v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

pub(crate) fn bn_params(bn: &BatchNorm) -> Result<BnParams> {
    let (w, b) = bn.params();
    let (m, v) = bn.buffers();
    Ok(BnParams {
        weight: host(w.as_tensor())?,
        bias: host(b.as_tensor())?,
        running_mean: host(m.as_tensor())?,
        running_var: host(v.as_tensor())?,
    })
}

/// The held evaluation parameters ([`InceptionXml::freeze_for_inference`]).
fn frozen(slot: &Mutex<Option<Arc<Params>>>) -> Result<MutexGuard<'_, Option<Arc<Params>>>> {
    slot.lock()
        .map_err(|_| Error::Poisoned("encoder parameters"))
}

/// PyTorch layout `[out, in, k]` from the GEMM layout `[k·in, out]`.
fn conv_from_gemm(g: &[f32], (o, i, k): (usize, usize, usize)) -> Vec<f32> {
    let mut w = vec![0f32; o * i * k];
    for oo in 0..o {
        for ii in 0..i {
            for r in 0..k {
                w[(oo * i + ii) * k + r] = g[(r * i + ii) * o + oo];
            }
        }
    }
    w
}

fn conv_dims(c: &Conv1d) -> Result<(usize, usize, usize)> {
    Ok(c.weight.dims3()?)
}

impl InceptionXml {
    /// Whether [`Self::encode`] and the training step use the fused CPU ops — the encoder, and in
    /// training the classifier + BCE ([`crate::ops::host::linear_bce`]): on the CPU in f32, unless
    /// switched off with [`Self::set_fused`].
    pub fn uses_fused_encoder(&self) -> bool {
        self.fused
            && self.embedding_table().device().is_cpu()
            && self.embedding_table().dtype() == DType::F32
    }

    /// Switches the fused CPU ops on (the default) or off (the composed candle ops, kept as the
    /// reference and for other devices).
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    fn fused_params(&self, train: bool) -> Result<(Params, [SnState; 2])> {
        let att = &self.attention;
        let (w1, sn1) = att.words.sn.host_weight(train)?;
        let (w2, sn2) = att.dims.sn.host_weight(train)?;
        let inc = &self.inception;
        let gemm = |c: &Conv1d| host(&c.gemm_weight()?);
        let mut conv_bias = Vec::new();
        for c in &inc.branches {
            conv_bias.extend(host(c.bias.as_tensor())?);
        }
        let p = Params {
            w1,
            g1: host(att.words.gamma.as_tensor())?[0],
            w2,
            g2: host(att.dims.gamma.as_tensor())?[0],
            wp: host(self.projection.weight.as_tensor())?,
            bp: host(self.projection.bias.as_tensor())?,
            bn1: bn_params(&self.projection.bn)?,
            conv: [
                gemm(&inc.branches[0])?,
                gemm(&inc.branches[1])?,
                gemm(&inc.branches[2])?,
            ],
            conv_bias,
            bn2: bn_params(&inc.merge_bn)?,
            fin: gemm(&inc.final_conv)?,
            fin_bias: host(inc.final_conv.bias.as_tensor())?,
            bn3: bn_params(&inc.final_bn)?,
        };
        Ok((p, [sn1, sn2]))
    }

    fn fused_dims(&self, x: &Tensor) -> Result<Dims> {
        let (b, s, d) = x.dims3()?;
        let c = &self.cfg;
        if s != c.seq_len || d != c.embed_dim {
            return Err(Error::Shape(format!(
                "encoder input {:?}, the model takes [B, {}, {}]",
                x.dims(),
                c.seq_len,
                c.embed_dim
            )));
        }
        Dims::new(b, s, d, c.filters)
    }

    /// Keeps the evaluation parameters, so that prediction does not gather them for every
    /// batch: the fused encoder's on the host (spectral norms, convolution layouts: ~0.5 ms), and
    /// the InceptionXML+ hidden layers' normalised weights. For a model loaded to predict; the
    /// next training forward drops them.
    pub fn freeze_for_inference(&self) -> Result<()> {
        if let Some(p) = self.plus() {
            p.freeze_for_inference()?;
        }
        if self.uses_fused_encoder() {
            let (p, _) = self.fused_params(false)?;
            *frozen(&self.frozen)? = Some(Arc::new(p));
        }
        Ok(())
    }

    fn eval_params(&self) -> Result<Arc<Params>> {
        let held = frozen(&self.frozen)?.clone();
        match held {
            Some(p) => Ok(p),
            None => Ok(Arc::new(self.fused_params(false)?.0)),
        }
    }

    /// Evaluation-mode encoder through the fused op: x `[B, S, d]` -> h_f `[B, F·L2]`.
    pub(crate) fn encode_fused_eval(&self, x: &Tensor) -> Result<Tensor> {
        let dims = self.fused_dims(x)?;
        let p = self.eval_params()?;
        let xv = host(x)?;
        // A text's words are the rows up to its last non-zero one (padding rows are zero).
        let row = dims.d;
        let lens: Vec<usize> = xv
            .chunks(dims.s * row)
            .map(|t| {
                t.chunks(row)
                    .rposition(|r| r.iter().any(|&v| v != 0.0))
                    .map_or(0, |i| i + 1)
            })
            .collect();
        // Prediction may run on several threads with one model: use the shared buffers when
        // free, private ones otherwise.
        let mut shared = self.workspace.try_lock().ok();
        let mut private = Workspace::new();
        let ws = shared.as_deref_mut().unwrap_or(&mut private);
        let h = ws.forward(&p, dims, &xv, &lens, Dropouts::default(), false)?;
        Ok(Tensor::from_vec(h, (dims.b, dims.out_dim()), x.device())?)
    }

    /// Training-mode encoder through the fused op (dropout, batch statistics with the running
    /// statistics updated, one power iteration per spectral norm): h_f and the tape for
    /// [`Self::encode_fused_backward`]. `ids` `[B·S]` are the looked-up word ids: positions
    /// after a text's last non-padding id are its padding (zero vectors, no gradient).
    pub fn encode_fused_train(&self, x: &Tensor, ids: &[u32]) -> Result<(Tensor, FusedTape)> {
        let dims = self.fused_dims(x)?;
        if ids.len() != dims.b * dims.s {
            return Err(Error::Shape(format!(
                "{} ids for a [{}, {}] batch",
                ids.len(),
                dims.b,
                dims.s
            )));
        }
        let lens = text_lengths(ids, dims.s);
        let c = &self.cfg;
        let seed = |p: f32| -> Result<Option<(f32, u64)>> {
            Ok(if p > 0.0 {
                Some((p, self.dropout.draw_seed()?))
            } else {
                None
            })
        };
        *frozen(&self.frozen)? = None;
        let drop_embed = seed(c.dropout_embed)?;
        let (p, sn) = self.fused_params(true)?;
        // InceptionXML+ has no dropout after the projection (MODEL.md §3).
        let drop_proj = seed(if c.plus.is_some() {
            0.0
        } else {
            c.dropout_conv
        })?;
        let drop_merge = seed(c.dropout_conv)?;
        let drop = Dropouts {
            embed: drop_embed,
            proj: drop_proj,
            merge: drop_merge,
        };
        let mut ws = self
            .workspace
            .lock()
            .map_err(|_| Error::Poisoned("encoder workspace"))?;
        // The looked-up vectors are read in place (no host copy of the batch).
        let h = with_host_f32(x, |xv| ws.forward(&p, dims, xv, &lens, drop, true))??;
        let st = ws.batch_stats();
        let bns = [
            &self.projection.bn,
            &self.inception.merge_bn,
            &self.inception.final_bn,
        ];
        for (bn, s) in bns.iter().zip(st.iter()) {
            bn.update_running(&s.mean, &s.var, s.n)?;
        }
        let h = Tensor::from_vec(h, (dims.b, dims.out_dim()), x.device())?;
        Ok((
            h,
            FusedTape {
                params: p,
                sn,
                dims,
            },
        ))
    }

    /// Backward of [`Self::encode_fused_train`] for `dh` (the gradient of h_f): inserts the
    /// gradient of every encoder variable into `grads` and returns that of the input x.
    pub fn encode_fused_backward(
        &self,
        tape: FusedTape,
        dh: &Tensor,
        grads: &mut GradStore,
    ) -> Result<Tensor> {
        let dhv = host(dh)?;
        let g = {
            let mut ws = self
                .workspace
                .lock()
                .map_err(|_| Error::Poisoned("encoder workspace"))?;
            ws.backward(&tape.params, &dhv)?
        };
        let dev = dh.device();
        let mut put = |var: &Var, v: Vec<f32>| -> Result<()> {
            let t = Tensor::from_vec(v, var.shape(), dev)?;
            grads.insert(var.as_tensor(), t);
            Ok(())
        };
        let att = &self.attention;
        let p = &tape.params;
        put(
            att.words.sn.raw_weight(),
            sn_backward(&g.w1, &p.w1, &tape.sn[0]),
        )?;
        put(
            att.dims.sn.raw_weight(),
            sn_backward(&g.w2, &p.w2, &tape.sn[1]),
        )?;
        put(&att.words.gamma, vec![g.g1])?;
        put(&att.dims.gamma, vec![g.g2])?;
        put(&self.projection.weight, g.wp)?;
        put(&self.projection.bias, g.bp)?;
        let inc = &self.inception;
        let f = self.cfg.filters;
        for (j, c) in inc.branches.iter().enumerate() {
            put(&c.weight, conv_from_gemm(&g.conv[j], conv_dims(c)?))?;
            put(&c.bias, g.conv_bias[j * f..(j + 1) * f].to_vec())?;
        }
        put(
            &inc.final_conv.weight,
            conv_from_gemm(&g.fin, conv_dims(&inc.final_conv)?),
        )?;
        put(&inc.final_conv.bias, g.fin_bias)?;
        for (bn, (w, b)) in [
            (&self.projection.bn, g.bn1),
            (&inc.merge_bn, g.bn2),
            (&inc.final_bn, g.bn3),
        ] {
            let (wv, bv) = bn.params();
            put(wv, w)?;
            put(bv, b)?;
        }
        let d = tape.dims;
        Ok(Tensor::from_vec(g.x, (d.b, d.s, d.d), dev)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, PlusConfig, ScoreMode};
    use crate::testing::{host, max_rel_diff};
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn model(plus: bool) -> (InceptionXml, VarMap) {
        let mut cfg = ModelConfig::new(50, 20);
        cfg.embed_dim = 72;
        cfg.seq_len = 6;
        cfg.filters = 4;
        if plus {
            cfg.plus = Some(PlusConfig {
                n_clusters: 4,
                hidden_dim: cfg.feature_dim(),
                top_k: 2,
                dropout_meta: 0.3,
                score: ScoreMode::Extreme,
            });
        }
        let vm = VarMap::new();
        let m = InceptionXml::new(&cfg, &vm, &Device::Cpu, 5).unwrap();
        // Non-zero attention scales, so the attention is more than the identity.
        m.attention
            .words
            .gamma
            .set(&Tensor::new(&[0.4f32], &Device::Cpu).unwrap())
            .unwrap();
        m.attention
            .dims
            .gamma
            .set(&Tensor::new(&[-0.3f32], &Device::Cpu).unwrap())
            .unwrap();
        (m, vm)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (host(a), host(b));
        max_rel_diff(&a, &b, &a, 1e-3)
    }

    fn snapshot(vm: &VarMap) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The fused encoder against the composed candle encoder on twin models (same seed, so the
    /// same dropout masks and spectral-norm iterations): h_f in training and evaluation, the
    /// gradient of every encoder variable and of the input, and the buffers afterwards
    /// (BatchNorm running statistics, spectral-norm u, v).
    #[test]
    fn fused_encoder_matches_composed_ops() {
        for plus in [false, true] {
            let (ma, va) = model(plus);
            let (mb, vb) = model(plus);
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let (b, s, d) = (5, 6, 72);
            // Text 1 has 3 words and text 3 none: their padding rows are zero (id 0).
            let lens = [6usize, 3, 6, 0, 6];
            let mut xs: Vec<f32> = (0..b * s * d).map(|_| rng.gen_range(-0.6..0.6)).collect();
            let mut ids = vec![7u32; b * s];
            for (t, &n) in lens.iter().enumerate() {
                for r in n..s {
                    ids[t * s + r] = 0;
                    xs[(t * s + r) * d..(t * s + r + 1) * d].fill(0.0);
                }
            }
            let x = Tensor::from_vec(xs, (b, s, d), &Device::Cpu).unwrap();
            let f = ma.config().feature_dim();
            let rs: Vec<f32> = (0..b * f).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let r = Tensor::from_vec(rs, (b, f), &Device::Cpu).unwrap();
            // Composed, with autograd.
            let xv = Var::from_tensor(&x).unwrap();
            let ha = ma.encode_composed(xv.as_tensor(), true).unwrap();
            let ga = (&ha * &r).unwrap().sum_all().unwrap().backward().unwrap();
            // Fused.
            let (hb, tape) = mb.encode_fused_train(&x, &ids).unwrap();
            let mut gb = GradStore::default();
            let dx = mb.encode_fused_backward(tape, &r, &mut gb).unwrap();
            assert!(max_rel(&ha, &hb) < 1e-4, "plus {plus}: h_f differs");
            // The input gradient on the words' rows (padding rows get none in the fused op).
            let word_rows = |t: &Tensor| {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                let keep: Vec<f32> = v
                    .chunks(d)
                    .enumerate()
                    .filter(|(i, _)| i % s < lens[i / s])
                    .flat_map(|(_, r)| r.to_vec())
                    .collect();
                Tensor::new(keep, &Device::Cpu).unwrap()
            };
            let gx = ga.get(xv.as_tensor()).unwrap();
            assert!(
                max_rel(&word_rows(gx), &word_rows(&dx)) < 1e-3,
                "plus {plus}: dx"
            );
            let mut n = 0;
            for ((name, va), (_, vb)) in ma.trainable_vars().iter().zip(mb.trainable_vars()) {
                let Some(want) = ga.get(va.as_tensor()) else {
                    continue;
                };
                let got = gb
                    .get(vb.as_tensor())
                    .unwrap_or_else(|| panic!("no fused gradient for {name}"));
                let e = max_rel(want, got);
                assert!(e < 2e-3, "plus {plus}: gradient of {name} differs by {e}");
                n += 1;
            }
            assert_eq!(n, 20, "every encoder variable has a gradient");
            for ((name, a), (_, b)) in snapshot(&va).iter().zip(snapshot(&vb)) {
                assert!(
                    max_rel(a, &b) < 1e-5,
                    "plus {plus}: {name} differs after the step"
                );
            }
            // Evaluation mode (running statistics, no dropout).
            let ea = ma.encode_composed(&x, false).unwrap();
            let eb = mb.encode(&x, false).unwrap();
            assert!(max_rel(&ea, &eb) < 1e-4, "plus {plus}: evaluation h_f");
        }
    }
}

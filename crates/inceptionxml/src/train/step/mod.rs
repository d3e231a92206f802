//! One optimiser step of each model on a batch: forward in training mode, loss, backward, and
//! every optimiser's update ([`Optimizers::step`]). This module only orchestrates: the encoder's
//! passes are the model's ([`InceptionXml::encode_fused_train`], its composed ops), the heads'
//! are the heads' own (`train_composed` / `train_fused` of [`crate::model::head::Head`] and
//! [`crate::model::plus::PlusHeads`]), and the updates are the optimisers'.
//!
//! Per batch: look up the word vectors (detached from the table) → encode → head(s) → BCE →
//! backward → dense Adam on the model's dense parameters, lazy row Adam on the word rows the
//! batch looked up (from ∂loss/∂x) and, for InceptionXML+, on the label-table rows of the
//! shortlisted clusters ([`train_step_plus`]). The padding row never moves.
//!
//! On the CPU (the fused encoder) the heads run as fused host ops outside candle's graph, and
//! work that does not depend on each other runs side by side on the thread pool (`rayon::join`):
//! the meta classifier's backward beside the shortlist and the extreme head, and the updates
//! that need nothing from the encoder's backward (the heads' dense variables, the label table:
//! memory-bound) beside that backward (compute-bound) — `Early::beside_encoder`. Each side
//! writes only its own results, so a step gives the same values at any thread count.

mod plus;
#[cfg(test)]
mod tests;

pub use plus::train_step_plus;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::batches::Batch;
use crate::error::Result;
use crate::model::classifier::HeadGrads;
use crate::model::fused::FusedTape;
use crate::model::{Heads, InceptionXml};
use crate::optim::{Adam, LabelRows, Optimizers, TableUpdate};
use crate::profile::{span, timed, Stage};

/// What one step did besides its loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Real (unpadded) candidates over the batch (InceptionXML+).
    pub candidates: usize,
    /// Label-table rows updated (InceptionXML+).
    pub touched_rows: usize,
}

/// Host gradient values of variables as a gradient store (each a tensor of its variable's shape
/// on its device).
fn grad_store(params: Vec<(Var, Vec<f32>)>) -> Result<GradStore> {
    let mut grads = GradStore::default();
    for (v, g) in params {
        grads.insert(v.as_tensor(), Tensor::from_vec(g, v.shape(), v.device())?);
    }
    Ok(grads)
}

/// The gradient stores of a fused head pass: the heads' own variables, and h_f's (from which
/// the encoder's backward runs).
fn head_stores(pass: HeadGrads, h: &Var) -> Result<(GradStore, GradStore)> {
    Ok((
        grad_store(pass.params)?,
        grad_store(vec![(h.clone(), pass.dh)])?,
    ))
}

/// The batch's word vectors `[B, S, d]`.
fn lookup(model: &InceptionXml, batch: &Batch) -> Result<Tensor> {
    timed(Stage::WordLookup, || {
        model.embed(&batch.ids, batch.subwords.as_ref())
    })
}

/// The encoder's forward in a training step, by the fused CPU op or by candle's autograd.
enum Encoded {
    /// Composed candle ops: the looked-up vectors are a leaf variable.
    Composed { x: Var, h: Tensor },
    /// The fused op: h_f is a leaf variable of the heads' graph, the encoder's backward runs
    /// from its gradient.
    Fused {
        x: Tensor,
        h: Var,
        tape: Box<FusedTape>,
    },
}

impl Encoded {
    /// Encodes the looked-up word vectors `x` `[B, S, d]` in training mode.
    fn forward(model: &InceptionXml, x: Tensor, ids: &[u32]) -> Result<Self> {
        let _s = span(Stage::EncoderForward);
        if model.uses_fused_encoder() {
            let (h, tape) = model.encode_fused_train(&x, ids)?;
            Ok(Encoded::Fused {
                x,
                h: Var::from_tensor(&h)?,
                tape: Box::new(tape),
            })
        } else {
            let x = Var::from_tensor(&x)?;
            let h = model.encode_composed(x.as_tensor(), true)?;
            Ok(Encoded::Composed { x, h })
        }
    }

    /// h_f.
    fn h(&self) -> &Tensor {
        match self {
            Encoded::Composed { h, .. } => h,
            Encoded::Fused { h, .. } => h.as_tensor(),
        }
    }

    /// After the heads' backward: completes `grads` with the encoder's gradients and returns
    /// the looked-up vectors, whose gradient in `grads` moves the word rows.
    fn backward(self, model: &InceptionXml, grads: &mut GradStore) -> Result<Tensor> {
        match self {
            Encoded::Composed { x, .. } => Ok(x.as_tensor().clone()),
            Encoded::Fused { x, h, tape } => {
                if let Some(dh) = grads.get(h.as_tensor()).cloned() {
                    let dx = model.encode_fused_backward(*tape, &dh, grads)?;
                    grads.insert(&x, dx);
                }
                Ok(x)
            }
        }
    }
}

/// One optimiser step of whichever model `model` is; returns the batch loss. `detach` (only
/// meaningful for InceptionXML+) detaches the encoder output before the extreme head.
pub fn train_step(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
    detach: bool,
) -> Result<(f32, StepStats)> {
    // The whole step runs on a worker of the thread pool: called from outside it, each of the
    // step's parallel stages would hand its work to the pool and sleep until a worker woke and
    // finished it (see `predict::rank_ids`).
    rayon::scope(|_| match model.heads() {
        Heads::Plain(_) => Ok((
            train_step_plain(model, opt, batch, lr, beta1)?,
            StepStats::default(),
        )),
        Heads::Plus(_) => train_step_plus(model, opt, batch, lr, beta1, detach),
    })
}

/// One optimiser step of plain InceptionXML on `batch` (dense label targets); returns the loss.
/// With the fused encoder the head runs as fused host ops ([`crate::model::head::Head::train_fused`])
/// and its updates beside the encoder's backward (`Early::beside_encoder`); otherwise the
/// composed head's graph and one candle backward.
pub fn train_step_plain(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
) -> Result<f32> {
    let head = model.full_head()?;
    let x = lookup(model, batch)?;
    let enc = Encoded::forward(model, x, &batch.ids_host)?;
    let (grads, x, loss) = match &enc {
        Encoded::Fused { h, .. } => {
            let h = h.clone();
            let pass = head.train_fused(h.as_tensor(), &batch.targets)?;
            let loss = pass.loss;
            let (head_grads, mut grads) = timed(Stage::HeadsBackward, || head_stores(pass, &h))?;
            let (x, _) = Early::of(opt, lr, beta1).beside_encoder(
                enc,
                model,
                &mut grads,
                &head_grads,
                TableUpdate::None,
            )?;
            (grads, x, loss)
        }
        Encoded::Composed { .. } => {
            let cls = head.train_composed(enc.h(), &batch.targets)?;
            let mut grads = timed(Stage::HeadsBackward, || cls.term().backward())?;
            let x = timed(Stage::EncoderBackward, || enc.backward(model, &mut grads))?;
            (grads, x, cls.loss()?)
        }
    };
    timed(Stage::Optimiser, || {
        opt.step(
            &grads,
            (&x, &batch.ids_host, batch.subwords.as_ref()),
            TableUpdate::None,
            lr,
            beta1,
        )
    })?;
    Ok(loss)
}

/// Optimiser updates that need nothing from the encoder's backward: the heads' dense variables
/// and, for InceptionXML+, the label table. A fused step makes them beside that backward.
struct Early<'a> {
    adam: &'a mut Adam,
    labels: LabelRows<'a>,
    lr: f64,
    beta1: f64,
}

impl<'a> Early<'a> {
    fn of(opt: &'a mut Optimizers, lr: f64, beta1: f64) -> Self {
        let (adam, labels) = opt.split();
        Early {
            adam,
            labels,
            lr,
            beta1,
        }
    }

    /// The encoder's backward (completing `grads`) and, beside it on the thread pool, the dense
    /// updates of the head variables whose gradients are in `head` and the label-table update
    /// `table`: memory-bound updates beside compute-bound work instead of after it, in the
    /// same values (every variable moves once, by its own gradient). Returns the looked-up
    /// vectors and the number of label-table rows updated. `grads` must not hold the head's
    /// gradients, or [`Optimizers::step`] would move those variables a second time.
    fn beside_encoder(
        self,
        enc: Encoded,
        model: &InceptionXml,
        grads: &mut GradStore,
        head: &GradStore,
        table: TableUpdate<'_>,
    ) -> Result<(Tensor, usize)> {
        let _s = span(Stage::EncoderBackwardBesideUpdates);
        let Early {
            adam,
            labels,
            lr,
            beta1,
        } = self;
        let (x, touched) = rayon::join(
            || {
                let _s = span(Stage::SideEncoderBackward);
                enc.backward(model, grads)
            },
            || -> Result<usize> {
                let _s = span(Stage::SideEarlyUpdates);
                adam.step(head, lr, beta1)?;
                labels.step(table, lr, beta1)
            },
        );
        Ok((x?, touched?))
    }
}

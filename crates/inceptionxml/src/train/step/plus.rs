//! One optimiser step of InceptionXML+: the meta head over all C clusters, each row's shortlist,
//! the extreme head over its candidates, and the updates (dense, word rows, label-table rows).

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use super::{head_stores, lookup, Early, Encoded, StepStats};
use crate::error::{Error, Result};
use crate::model::InceptionXml;
use crate::ops::CandidatePlan;
use crate::optim::{Optimizers, TableUpdate};
use crate::profile::{timed, Stage};
use crate::train::batches::Batch;

/// One optimiser step of InceptionXML+ on `batch` (whose targets are cluster targets): meta BCE
/// over all C clusters + masked BCE over each row's shortlisted candidates. With `detach`, the
/// encoder output is detached before the extreme head (the encoder learns from the meta task
/// only; the extreme head and the label table still train). Returns the loss.
pub fn train_step_plus(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
    detach: bool,
) -> Result<(f32, StepStats)> {
    let PlusBackward {
        grads,
        x,
        table,
        plan,
        loss,
        candidates,
    } = plus_backward(model, batch, detach, Some(Early::of(opt, lr, beta1)))?;
    let touched = timed(Stage::Optimiser, || {
        // The gradient rows move into the update (no copy); the host values are lent to it.
        let update = match table {
            PlusTable::Rows(Some(rows)) => TableUpdate::Rows(rows),
            PlusTable::Rows(None) => TableUpdate::None,
            PlusTable::Candidates { ref dlog, ref g } => TableUpdate::Candidates {
                plan: &plan,
                dlog,
                g,
            },
            PlusTable::Done(n) => TableUpdate::Done(n),
        };
        opt.step(
            &grads,
            (&x, &batch.ids_host, batch.subwords.as_ref()),
            update,
            lr,
            beta1,
        )
    })?;
    let stats = StepStats {
        candidates,
        touched_rows: touched,
    };
    Ok((loss, stats))
}

/// An InceptionXML+ step's forward and backward, before any update.
pub(super) struct PlusBackward {
    /// Every dense variable's gradient, and that of `x`.
    pub(super) grads: GradStore,
    /// The looked-up word vectors.
    pub(super) x: Tensor,
    /// The candidate rows' gradient.
    pub(super) table: PlusTable,
    /// The batch's candidates.
    pub(super) plan: Arc<CandidatePlan>,
    pub(super) loss: f32,
    pub(super) candidates: usize,
}

/// The label table's gradient after an InceptionXML+ backward.
pub(super) enum PlusTable {
    /// Already applied during the backward; the rows updated.
    Done(usize),
    /// Gradient rows from candle's backward (none when the batch touched no row).
    Rows(Option<crate::ops::candidates::TableRows>),
    /// Computed block by block during the update from the logits' gradient `dlog` and the
    /// extreme features `g` (host values; [`TableUpdate::Candidates`]).
    Candidates { dlog: Vec<f32>, g: Vec<f32> },
}

/// The forward and backward of an InceptionXML+ step: with the fused encoder (and hd = D) the
/// heads by fused host ops ([`crate::model::plus::PlusHeads::train_fused`]), otherwise their
/// composed graph and one candle backward. With `early`, the fused path also makes the updates
/// that need nothing from the encoder's backward, beside it ([`Early::beside_encoder`]).
pub(super) fn plus_backward(
    model: &InceptionXml,
    batch: &Batch,
    detach: bool,
    early: Option<Early<'_>>,
) -> Result<PlusBackward> {
    let (plus, index) = match (model.plus(), model.clusters()) {
        (Some(p), Some(ix)) => (p, ix.clone()),
        _ => {
            return Err(Error::WrongModelKind(
                "train_step_plus needs an InceptionXML+ model with clusters".into(),
            ))
        }
    };
    let x = lookup(model, batch)?;
    let enc = Encoded::forward(model, x, &batch.ids_host)?;
    let data = (&batch.targets, batch.positives.as_slice());
    match &enc {
        Encoded::Fused { h, .. } if plus.fusable() => {
            let h = h.clone();
            let pass = plus.train_fused(&index, h.as_tensor(), data, detach)?;
            let (loss, plan) = (pass.heads.loss, pass.plan);
            let (head, mut grads) =
                timed(Stage::PlusHeadGradients, || head_stores(pass.heads, &h))?;
            let (x, table) = match early {
                Some(early) => {
                    let update = TableUpdate::Candidates {
                        plan: &plan,
                        dlog: &pass.dlog,
                        g: &pass.g,
                    };
                    let (x, touched) =
                        early.beside_encoder(enc, model, &mut grads, &head, update)?;
                    (x, PlusTable::Done(touched))
                }
                None => {
                    grads.extend(head)?;
                    let x = timed(Stage::EncoderBackward, || enc.backward(model, &mut grads))?;
                    (
                        x,
                        PlusTable::Candidates {
                            dlog: pass.dlog,
                            g: pass.g,
                        },
                    )
                }
            };
            Ok(PlusBackward {
                grads,
                x,
                table,
                loss,
                candidates: plan.n_candidates(),
                plan,
            })
        }
        _ => {
            let graph =
                plus.train_composed(&index, enc.h(), data, detach, model.uses_fused_encoder())?;
            let mut grads = timed(Stage::HeadsBackward, || -> Result<GradStore> {
                let mut grads = graph.term.backward()?;
                graph.meta.insert_grads(&mut grads);
                Ok(grads)
            })?;
            let x = timed(Stage::EncoderBackward, || enc.backward(model, &mut grads))?;
            Ok(PlusBackward {
                grads,
                x,
                table: PlusTable::Rows(graph.table_grad.take()),
                loss: graph.meta.loss()? + graph.ext_loss.to_scalar::<f32>()?,
                candidates: graph.plan.n_candidates(),
                plan: graph.plan,
            })
        }
    }
}

//! One optimiser step of each model on a batch: forward in training mode, loss, backward, and
//! every optimiser's update ([`Optimizers::step`]).
//!
//! Per batch: look up the word vectors (detached from the table) → make them a leaf variable
//! `x` → encode → head(s) → BCE-with-logits → backward → dense Adam on the model's dense
//! parameters, lazy row Adam on the word rows the batch looked up (from ∂loss/∂x) and, for
//! InceptionXML+, on the label-table rows of the shortlisted clusters. The padding row never
//! moves.
//!
//! On the CPU (the fused encoder) the heads run as fused host ops outside candle's graph, and
//! work that does not depend on each other runs side by side on the thread pool (`rayon::join`):
//! the meta classifier's backward beside the shortlist and the extreme head, and the updates
//! that need nothing from the encoder's backward (the heads' dense variables, the label table:
//! memory-bound) beside that backward (compute-bound) — `Early::beside_encoder`. Each side
//! writes only its own results, so a step gives the same values at any thread count.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rayon::prelude::*;
use xmc::shortlist::{self, ClusterIndex};

use super::batches::Batch;
use crate::error::{Error, Result};
use crate::model::fused::FusedTape;
use crate::model::plus::{Hidden, PlusHeads};
use crate::model::spectral_norm::sn_backward;
use crate::model::InceptionXml;
use crate::ops::bce::bce_masked_host;
use crate::ops::linear_bce::{bce_backward, linear, linear_bce};
use crate::ops::storage::with_host_f32;
use crate::ops::{
    bce_with_logits, bce_with_logits_masked, candidate_logits, stable_sigmoid, CandidatePlan,
};
use crate::ops::{bn_hidden, residual_hidden};
use crate::optim::{Adam, LabelRows, Optimizers, TableUpdate};
use crate::profile::span;

/// What one step did besides its loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Real (unpadded) candidates over the batch (InceptionXML+).
    pub candidates: usize,
    /// Label-table rows updated (InceptionXML+).
    pub touched_rows: usize,
}

/// Profile span names of a training step's stages ([`crate::profile`]), the top level of
/// `bench profile`: a step records some of them (a fused step "heads forward + backward" and
/// "encoder backward ‖ early updates" where a composed one has the heads' and the encoder's
/// backward apart). The encoder's own stages are [`crate::ops::encoder::FWD`] and
/// [`crate::ops::encoder::BWD`].
pub const STEP: [&str; 8] = [
    "word lookup",
    "encoder forward",
    "heads forward + loss",
    "heads backward",
    "encoder backward",
    "optimiser",
    "heads forward + backward",
    "encoder backward ‖ early updates",
];

/// Profile span names inside a fused InceptionXML+ step's "heads forward + backward".
pub const PLUS: [&str; 4] = [
    "hidden layers",
    "meta logits",
    "meta backward ‖ extreme head",
    "head gradients out",
];

/// Profile span names of the two sides of [`PLUS`]`[2]`, which run at the same time: the meta
/// classifier's and hidden layer's backward, and the extreme head's stages.
pub const PLUS_SIDE: [&str; 5] = [
    "‖ meta classifier + hidden backward",
    "‖ shortlist",
    "‖ candidate logits + loss",
    "‖ candidates backward",
    "‖ extreme hidden backward",
];

/// Profile span names inside a composed InceptionXML+ step's "heads forward + loss".
pub const PLUS_COMPOSED: [&str; 5] = [
    "meta head",
    "meta loss",
    "shortlist",
    "extreme features",
    "candidate logits + loss",
];

/// Profile span names inside "encoder backward ‖ early updates" (fused steps), two sides that
/// run at the same time: the encoder's backward, and the optimiser updates that need nothing
/// from it (the heads' dense variables, the label table).
pub const BESIDE: [&str; 2] = ["‖ encoder backward", "‖ heads' and label-table updates"];

/// Profile span name of the plain model's loss inside "heads forward + loss".
pub const PLAIN_LOSS: &str = "loss (B×L BCE)";

/// Profile span name of the plain model's hidden layer inside "heads forward + loss" (fused).
pub const PLAIN_HIDDEN: &str = "hidden layer";

/// Puts host gradient values `g` for variable `v` into `grads` (a tensor of `v`'s shape on its
/// device).
fn put_grad(grads: &mut GradStore, v: &Var, g: Vec<f32>) -> Result<()> {
    grads.insert(v.as_tensor(), Tensor::from_vec(g, v.shape(), v.device())?);
    Ok(())
}

/// The batch's word vectors `[B, S, d]`.
fn lookup(model: &InceptionXml, batch: &Batch) -> Result<Tensor> {
    let _s = span(STEP[0]);
    model.embed(&batch.ids)
}

/// A classifier `x·W + b` and its mean BCE against `targets`, as part of a step's graph: on the
/// CPU by the fused op ([`linear_bce`]), whose input gradient enters candle's backward through
/// `term` = `(x · dx).sum()` and whose weight gradients are inserted after it; elsewhere composed
/// candle ops, whose loss is itself the term.
enum Classified {
    Composed {
        loss: Tensor,
        logits: Tensor,
    },
    Fused {
        term: Tensor,
        loss: f32,
        logits: Vec<f32>,
        w: (Var, Tensor),
        b: (Var, Tensor),
    },
}

impl Classified {
    fn new(x: &Tensor, w: &Var, b: &Var, targets: &Tensor, fused: bool) -> Result<Self> {
        if !fused {
            let logits = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let loss = bce_with_logits(&logits, targets)?;
            return Ok(Classified::Composed { loss, logits });
        }
        let (n, d) = x.dims2()?;
        let c = w.dim(1)?;
        let xs = x.contiguous()?;
        let lb = with_host_f32(&xs, |xv| {
            with_host_f32(w.as_tensor(), |wv| {
                with_host_f32(b.as_tensor(), |bv| {
                    with_host_f32(targets, |yv| linear_bce(xv, wv, bv, yv, (n, d, c)))
                })
            })
        })????;
        let lb = lb?;
        let dev = x.device();
        let dx = Tensor::from_vec(lb.dx, (n, d), dev)?;
        Ok(Classified::Fused {
            term: (x * dx)?.sum_all()?,
            loss: lb.loss,
            logits: lb.logits,
            w: (w.clone(), Tensor::from_vec(lb.dw, (d, c), dev)?),
            b: (b.clone(), Tensor::from_vec(lb.db, c, dev)?),
        })
    }

    /// The scalar whose backward carries this classifier's gradients into the graph.
    fn term(&self) -> &Tensor {
        match self {
            Classified::Composed { loss, .. } => loss,
            Classified::Fused { term, .. } => term,
        }
    }

    /// The classifier's weight gradients, after the backward of [`Self::term`].
    fn insert_grads(&self, grads: &mut GradStore) {
        if let Classified::Fused { w, b, .. } = self {
            grads.insert(w.0.as_tensor(), w.1.clone());
            grads.insert(b.0.as_tensor(), b.1.clone());
        }
    }

    /// The mean loss.
    fn loss(&self) -> Result<f32> {
        match self {
            Classified::Composed { loss, .. } => Ok(loss.to_scalar::<f32>()?),
            Classified::Fused { loss, .. } => Ok(*loss),
        }
    }

    /// σ of the logits, row-major on the host.
    fn scores(&self) -> Result<Vec<f32>> {
        let sig = |v: &[f32]| v.par_iter().map(|&x| stable_sigmoid(x)).collect();
        match self {
            Classified::Composed { logits, .. } => {
                Ok(sig(&logits.detach().flatten_all()?.to_vec1::<f32>()?))
            }
            Classified::Fused { logits, .. } => Ok(sig(logits)),
        }
    }
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
        let _s = span(STEP[1]);
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
    rayon::scope(|_| match model.plus() {
        None => Ok((
            train_step_plain(model, opt, batch, lr, beta1)?,
            StepStats::default(),
        )),
        Some(_) => train_step_plus(model, opt, batch, lr, beta1, detach),
    })
}

/// One optimiser step of plain InceptionXML on `batch` (dense label targets); returns the loss.
pub fn train_step_plain(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    lr: f64,
    beta1: f64,
) -> Result<f32> {
    let x = lookup(model, batch)?;
    let enc = Encoded::forward(model, x, &batch.ids_host)?;
    if let Encoded::Fused { h, .. } = &enc {
        let h = h.clone();
        return plain_fused(model, opt, batch, (lr, beta1), (enc, h));
    }
    let sp = span(STEP[2]);
    let head = model.full_head()?;
    let z = head.classifier_input(enc.h(), true)?;
    let s2 = span(PLAIN_LOSS);
    let (w, b) = head.classifier();
    let cls = Classified::new(&z, w, b, &batch.targets, false)?;
    drop(s2);
    drop(sp);
    let sp = span(STEP[3]);
    let mut grads = cls.term().backward()?;
    drop(sp);
    let s2 = span(STEP[4]);
    let x = enc.backward(model, &mut grads)?;
    drop(s2);
    plain_updates(opt, batch, (&grads, &x), (lr, beta1))?;
    cls.loss()
}

/// The updates of a plain step after the encoder's backward ([`Optimizers::step`]: the dense
/// variables with a gradient in `grads`, the word rows from that of `x`).
fn plain_updates(
    opt: &mut Optimizers,
    batch: &Batch,
    (grads, x): (&GradStore, &Tensor),
    (lr, beta1): (f64, f64),
) -> Result<()> {
    let _sp = span(STEP[5]);
    opt.step(grads, (x, &batch.ids_host), TableUpdate::None, lr, beta1)?;
    Ok(())
}

/// The rest of a plain InceptionXML step after the fused encoder's forward, the head by fused
/// host ops: the hidden layer ([`bn_hidden`]) and the classifier + BCE ([`linear_bce`]) forward
/// and backward outside candle's graph, the head's updates beside the encoder's backward
/// ([`Early::beside_encoder`]). The same values as the composed head (tested on twin models).
fn plain_fused(
    model: &InceptionXml,
    opt: &mut Optimizers,
    batch: &Batch,
    (lr, beta1): (f64, f64),
    (enc, h): (Encoded, Var),
) -> Result<f32> {
    let sp = span(STEP[2]);
    let head = model.full_head()?;
    let (b, d) = h.as_tensor().dims2()?;
    let hv = h.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let s2 = span(PLAIN_HIDDEN);
    let (z, tape) = head.classifier_input_fused(&hv, b)?;
    drop(hv);
    drop(s2);
    let s2 = span(PLAIN_LOSS);
    let (w, bias) = head.classifier();
    let c = w.dim(1)?;
    let cls = with_host_f32(w.as_tensor(), |wv| {
        with_host_f32(bias.as_tensor(), |bv| {
            with_host_f32(&batch.targets, |yv| linear_bce(&z, wv, bv, yv, (b, d, c)))
        })
    })????;
    drop(z);
    drop(s2);
    drop(sp);
    let sp = span(STEP[3]);
    let hg = bn_hidden::backward(&tape, &cls.dx)?;
    drop(tape);
    let mut head_grads = GradStore::default();
    let (bn_w, bn_b) = head.bn.params();
    for (v, g) in [
        (w, cls.dw),
        (bias, cls.db),
        (&head.hidden_weight, hg.dw),
        (&head.hidden_bias, hg.db),
        (bn_w, hg.bn_weight),
        (bn_b, hg.bn_bias),
    ] {
        put_grad(&mut head_grads, v, g)?;
    }
    let mut grads = GradStore::default();
    put_grad(&mut grads, &h, hg.dh)?;
    drop(sp);
    let (x, _) = Early::of(opt, lr, beta1).beside_encoder(
        enc,
        model,
        &mut grads,
        &head_grads,
        TableUpdate::None,
    )?;
    plain_updates(opt, batch, (&grads, &x), (lr, beta1))?;
    Ok(cls.loss)
}

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
    let sp = span(STEP[5]);
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
    let touched = opt.step(&grads, (&x, &batch.ids_host), update, lr, beta1)?;
    drop(sp);
    let stats = StepStats {
        candidates,
        touched_rows: touched,
    };
    Ok((loss, stats))
}

/// An InceptionXML+ step's forward and backward, before any update.
struct PlusBackward {
    /// Every dense variable's gradient, and that of `x`.
    grads: GradStore,
    /// The looked-up word vectors.
    x: Tensor,
    /// The candidate rows' gradient.
    table: PlusTable,
    /// The batch's candidates.
    plan: Arc<CandidatePlan>,
    loss: f32,
    candidates: usize,
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
        let _s = span(STEP[7]);
        let Early {
            adam,
            labels,
            lr,
            beta1,
        } = self;
        let (x, touched) = rayon::join(
            || {
                let _s = span(BESIDE[0]);
                enc.backward(model, grads)
            },
            || -> Result<usize> {
                let _s = span(BESIDE[1]);
                adam.step(head, lr, beta1)?;
                labels.step(table, lr, beta1)
            },
        );
        Ok((x?, touched?))
    }
}

/// The label table's gradient after an InceptionXML+ backward.
enum PlusTable {
    /// Already applied during the backward; the rows updated.
    Done(usize),
    /// Gradient rows from candle's backward (none when the batch touched no row).
    Rows(Option<crate::ops::candidates::TableRows>),
    /// Computed block by block during the update from the logits' gradient `dlog` and the
    /// extreme features `g` (host values; [`TableUpdate::Candidates`]).
    Candidates { dlog: Vec<f32>, g: Vec<f32> },
}

/// The forward and backward of an InceptionXML+ step: with the fused encoder (and hd = D) the
/// heads by fused host ops ([`plus_fused`]), otherwise composed candle ops. With `early`, the
/// fused path also makes the updates that need nothing from the encoder's backward, beside it
/// ([`Early::beside_encoder`]).
fn plus_backward(
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
    if plus.fusable() {
        if let Encoded::Fused { h, .. } = &enc {
            let h = h.clone();
            return plus_fused(model, plus, &index, batch, (enc, h), detach, early);
        }
    }
    let sp = span(STEP[2]);
    let h = enc.h();
    let s2 = span(PLUS_COMPOSED[0]);
    let hm = plus.meta_input(h, true)?;
    drop(s2);
    let s2 = span(PLUS_COMPOSED[1]);
    let (w, b) = plus.meta_vars();
    let meta = Classified::new(&hm, w, b, &batch.targets, model.uses_fused_encoder())?;
    drop(s2);
    let s2 = span(PLUS_COMPOSED[2]);
    let scores = meta.scores()?;
    let (plan, sl) = shortlist_plan(&scores, batch, &index, plus)?;
    drop(s2);
    let s2 = span(PLUS_COMPOSED[3]);
    let hin = if detach { h.detach() } else { h.clone() };
    let g = plus.extreme_features(&hin, true)?;
    drop(s2);
    let (ext_loss, table_grad) = extreme_loss(&g, plus, plan.clone(), sl)?;
    let loss = (meta.term() + &ext_loss)?;
    drop(sp);
    let sp = span(STEP[3]);
    let mut grads = loss.backward()?;
    meta.insert_grads(&mut grads);
    drop(sp);
    let s2 = span(STEP[4]);
    let x = enc.backward(model, &mut grads)?;
    drop(s2);
    Ok(PlusBackward {
        grads,
        x,
        table: PlusTable::Rows(table_grad.take()),
        loss: meta.loss()? + ext_loss.to_scalar::<f32>()?,
        candidates: plan.n_candidates(),
        plan,
    })
}

/// The shortlist of a batch from its meta scores (positives forced in) and its candidate plan.
fn shortlist_plan(
    scores: &[f32],
    batch: &Batch,
    index: &ClusterIndex,
    plus: &PlusHeads,
) -> Result<(Arc<CandidatePlan>, shortlist::Shortlist)> {
    let pos: Vec<&[u32]> = batch.positives.iter().map(Vec::as_slice).collect();
    let sl = shortlist::build(scores, index, plus.config().top_k, Some(&pos))?;
    let plan = Arc::new(CandidatePlan::new(&sl, index)?);
    Ok((plan, sl))
}

/// The candidates' logits from the extreme features `g` and their masked BCE (candle graph,
/// for the label table's sparse gradient).
fn extreme_loss(
    g: &Tensor,
    plus: &PlusHeads,
    plan: Arc<CandidatePlan>,
    sl: shortlist::Shortlist,
) -> Result<(Tensor, crate::ops::TableGrad)> {
    let _s = span(PLUS_COMPOSED[4]);
    let (logits, table_grad) = candidate_logits(g, plus.table.as_tensor(), plan)?;
    let dev = logits.device().clone();
    let shape = (sl.rows, sl.width);
    let y = Tensor::from_vec(sl.targets, shape, &dev)?;
    let m = Tensor::from_vec(sl.mask, shape, &dev)?;
    Ok((bce_with_logits_masked(&logits, &y, &m)?, table_grad))
}

/// The rest of an InceptionXML+ step's forward and backward after the fused encoder's forward,
/// the heads by fused host ops: the two hidden layers ([`crate::ops::residual_hidden`]) and the
/// meta classifier + BCE ([`linear_bce`]) forward and backward outside candle's graph; only the
/// candidate scoring and its masked BCE go through autograd (for the table's sparse gradient).
/// The same values, masks and gradients as the composed heads (tested on twin models).
fn plus_fused(
    model: &InceptionXml,
    plus: &PlusHeads,
    index: &ClusterIndex,
    batch: &Batch,
    (enc, h): (Encoded, Var),
    detach: bool,
    early: Option<Early<'_>>,
) -> Result<PlusBackward> {
    let sp = span(STEP[6]);
    let (b, d) = h.as_tensor().dims2()?;
    let hv = h.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let s2 = span(PLUS[0]);
    let (hm, tape_m, sn_m) = plus.hidden_train_fused(Hidden::Meta, &hv, b)?;
    let (g, tape_e, sn_e) = plus.hidden_train_fused(Hidden::Extreme, &hv, b)?;
    drop(s2);
    let s2 = span(PLUS[1]);
    let (mw, mb) = plus.meta_vars();
    let c = mw.dim(1)?;
    let logits = with_host_f32(mw.as_tensor(), |wv| {
        with_host_f32(mb.as_tensor(), |bv| linear(&hm, wv, bv, (b, d, c)))
    })???;
    drop(s2);
    // The meta classifier's backward and the extreme head's whole forward and backward need
    // only the meta logits: the two run side by side on the thread pool.
    let s2 = span(PLUS[2]);
    let (meta, ext) = rayon::join(
        || -> Result<_> {
            let _s = span(PLUS_SIDE[0]);
            let meta = with_host_f32(mw.as_tensor(), |wv| {
                with_host_f32(&batch.targets, |yv| {
                    bce_backward(&hm, wv, yv, &logits, (b, d, c))
                })
            })???;
            let gm = residual_hidden::backward(&tape_m, &meta.dx)?;
            Ok((meta, gm))
        },
        || -> Result<_> {
            let s3 = span(PLUS_SIDE[1]);
            let scores: Vec<f32> = logits.par_iter().map(|&x| stable_sigmoid(x)).collect();
            let (plan, sl) = shortlist_plan(&scores, batch, index, plus)?;
            drop(scores);
            drop(s3);
            let s3 = span(PLUS_SIDE[2]);
            let (ext_loss, dlog) = with_host_f32(plus.table.as_tensor(), |t| {
                bce_masked_host(&plan.scores(&g, t, d), &sl.targets, &sl.mask)
            })??;
            drop(s3);
            let s3 = span(PLUS_SIDE[3]);
            let dg = with_host_f32(plus.table.as_tensor(), |t| plan.grad_input(&dlog, t, d))?;
            drop(s3);
            let _s3 = span(PLUS_SIDE[4]);
            let ge = residual_hidden::backward(&tape_e, &dg)?;
            Ok((plan, ext_loss, dlog, ge))
        },
    );
    drop(s2);
    let ((meta, mut gm), (plan, ext_loss, dlog, ge)) = (meta?, ext?);
    drop(hm);
    let _s2 = span(PLUS[3]);
    let mut dh = std::mem::take(&mut gm.dh);
    if !detach {
        dh.par_iter_mut().zip(&ge.dh).for_each(|(a, e)| *a += e);
    }
    // The heads' own gradients apart from the encoder's (`grads`, from h_f on).
    let mut head = GradStore::default();
    put_grad(&mut head, mw, meta.dw)?;
    put_grad(&mut head, mb, meta.db)?;
    for (which, tape, sn, hg) in [
        (Hidden::Meta, &tape_m, sn_m, gm),
        (Hidden::Extreme, &tape_e, sn_e, ge),
    ] {
        let (w, bias) = plus.hidden_vars(which);
        put_grad(&mut head, w, sn_backward(&hg.dw, tape.weight(), &sn))?;
        put_grad(&mut head, bias, hg.db)?;
    }
    let mut grads = GradStore::default();
    put_grad(&mut grads, &h, dh)?;
    drop(_s2);
    drop(sp);
    let (x, table) = match early {
        Some(early) => {
            let update = TableUpdate::Candidates {
                plan: &plan,
                dlog: &dlog,
                g: &g,
            };
            let (x, touched) = early.beside_encoder(enc, model, &mut grads, &head, update)?;
            (x, PlusTable::Done(touched))
        }
        None => {
            grads.extend(head)?;
            let _s = span(STEP[4]);
            let x = enc.backward(model, &mut grads)?;
            (x, PlusTable::Candidates { dlog, g })
        }
    };
    Ok(PlusBackward {
        grads,
        x,
        table,
        loss: meta.loss + ext_loss,
        candidates: plan.n_candidates(),
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, PlusConfig, ScoreMode};
    use crate::optim::AdamConsts;
    use crate::train::batches::make_batch;
    use crate::train::setup::optimizers_for;
    use candle_core::Device;
    use candle_nn::VarMap;
    use xmc::shortlist::ClusterIndex;
    use xmc::SparseMatrix;

    /// A 12-label InceptionXML+ model over 4 clusters (label l in cluster l % 4; in cluster
    /// order the table rows of cluster c are 3c..3c+3), encoder fused or composed.
    fn tiny_plus(seq_len: usize, top_k: usize, fused: bool) -> (InceptionXml, Arc<ClusterIndex>) {
        let mut cfg = ModelConfig::new(40, 12);
        cfg.embed_dim = 64;
        cfg.seq_len = seq_len;
        cfg.plus = Some(PlusConfig {
            n_clusters: 4,
            hidden_dim: cfg.feature_dim(),
            top_k,
            dropout_meta: 0.3,
            score: ScoreMode::Extreme,
        });
        let varmap = VarMap::new();
        let mut model = InceptionXml::new(&cfg, &varmap, &Device::Cpu, 3).unwrap();
        model.set_fused(fused);
        let assign: Vec<u32> = (0..12).map(|l| l % 4).collect();
        let index = Arc::new(ClusterIndex::new(assign, 4).unwrap());
        model.set_clusters(index.clone()).unwrap();
        (model, index)
    }

    /// The fused InceptionXML+ step (fused encoder and heads) against the composed candle ops
    /// on twin models (same masks, same power iterations), with and without the detached
    /// encoder: the loss, the gradient of every variable and of the looked-up vectors, and the
    /// label table's row gradient agree.
    #[test]
    fn fused_plus_step_matches_composed_ops() {
        let rel = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
        };
        let host = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        for detach in [false, true] {
            let make = |fused: bool| tiny_plus(8, 2, fused);
            let (ma, index) = make(false);
            let (mb, _) = make(true);
            assert!(mb.uses_fused_encoder() && !ma.uses_fused_encoder());
            let labels =
                SparseMatrix::from_index_rows(12, &[vec![5], vec![6, 1], vec![0], vec![11, 2]])
                    .unwrap();
            let ids: Vec<u32> = (0..32).map(|i| 1 + (i * 7) % 38).collect();
            let batch =
                make_batch(&ids, 8, &labels, &[0, 1, 2, 3], Some(&index), &Device::Cpu).unwrap();
            let a = plus_backward(&ma, &batch, detach, None).unwrap();
            let b = plus_backward(&mb, &batch, detach, None).unwrap();
            assert!(
                (a.loss - b.loss).abs() < 1e-5,
                "loss {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(a.candidates, b.candidates);
            let mut n = 0;
            for ((name, va), (_, vb)) in ma.trainable_vars().iter().zip(mb.trainable_vars()) {
                let ga = a.grads.get(va.as_tensor());
                let gb = b.grads.get(vb.as_tensor());
                let (Some(ga), Some(gb)) = (ga, gb) else {
                    panic!("detach {detach}: {name}: gradient on one side only");
                };
                let e = rel(&host(ga), &host(gb));
                assert!(
                    e < 2e-3,
                    "detach {detach}: gradient of {name} differs by {e}"
                );
                n += 1;
            }
            assert_eq!(
                n,
                ma.trainable_vars().len(),
                "every variable has a gradient"
            );
            let e = rel(
                &host(a.grads.get(&a.x).unwrap()),
                &host(b.grads.get(&b.x).unwrap()),
            );
            assert!(
                e < 2e-3,
                "detach {detach}: word-vector gradient differs by {e}"
            );
            let PlusTable::Rows(Some((ra, ta))) = a.table else {
                panic!("the composed step leaves gradient rows");
            };
            let PlusTable::Candidates { dlog, g } = &b.table else {
                panic!("the fused step leaves the candidates' gradient to the update");
            };
            let rb = b.plan.touched();
            assert_eq!(ra, rb);
            let d = ma.config().feature_dim();
            let e = rel(&host(&ta), &b.plan.grad_table(dlog, g, d));
            assert!(
                e < 2e-3,
                "detach {detach}: label-table gradient differs by {e}"
            );
        }
    }

    /// Fused steps make some updates beside the encoder's backward (the heads' dense variables
    /// and the label table, [`Early`]) and the rest after it. Two steps of each model kind on
    /// twin models, fused and composed (every update after the backward): every variable ends
    /// where the composed step puts it (a variable moved twice, or not at all, would be a whole
    /// step of about `lr` away), and every one has moved.
    #[test]
    fn fused_steps_move_every_variable_as_composed_steps_do() {
        let lr = 1e-2;
        let host = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let labels =
            SparseMatrix::from_index_rows(12, &[vec![5], vec![6, 1], vec![0], vec![11, 2]])
                .unwrap();
        for plus in [false, true] {
            let make = |fused: bool| {
                if plus {
                    let (m, ix) = tiny_plus(8, 2, fused);
                    (m, Some(ix))
                } else {
                    let mut cfg = ModelConfig::new(40, 12);
                    cfg.embed_dim = 64;
                    cfg.seq_len = 8;
                    let mut m = InceptionXml::new(&cfg, &VarMap::new(), &Device::Cpu, 3).unwrap();
                    m.set_fused(fused);
                    (m, None)
                }
            };
            let (ma, ix) = make(false);
            let (mb, _) = make(true);
            let start: Vec<Vec<f32>> = mb
                .trainable_vars()
                .iter()
                .map(|(_, v)| host(v.as_tensor()))
                .collect();
            let mut oa = optimizers_for(&ma, AdamConsts::default()).unwrap();
            let mut ob = optimizers_for(&mb, AdamConsts::default()).unwrap();
            for step in 0..2u32 {
                let ids: Vec<u32> = (0..32).map(|i| 1 + (i * 7 + step * 5) % 38).collect();
                let batch =
                    make_batch(&ids, 8, &labels, &[0, 1, 2, 3], ix.as_deref(), &Device::Cpu)
                        .unwrap();
                let (la, _) = train_step(&ma, &mut oa, &batch, lr, 0.9, false).unwrap();
                let (lb, _) = train_step(&mb, &mut ob, &batch, lr, 0.9, false).unwrap();
                assert!((la - lb).abs() < 1e-4, "plus {plus}: loss {la} vs {lb}");
            }
            for (((name, va), (_, vb)), v0) in ma
                .trainable_vars()
                .iter()
                .zip(mb.trainable_vars())
                .zip(&start)
            {
                let (a, b) = (host(va.as_tensor()), host(vb.as_tensor()));
                let e = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    e < 0.25 * lr as f32,
                    "plus {plus}: {name} is {e} away from the composed step's"
                );
                assert_ne!(&b, v0, "plus {plus}: {name} did not move");
            }
        }
    }

    /// One InceptionXML+ step moves exactly the label-table rows of the shortlisted clusters.
    #[test]
    fn a_plus_step_updates_only_candidate_rows() {
        let (model, index) = tiny_plus(ModelConfig::new(40, 12).seq_len, 1, true);
        let cfg = model.config().clone();
        let mut opt = optimizers_for(&model, AdamConsts::default()).unwrap();
        // Two rows, positives in clusters 1 and 2: with K = 1 the forced clusters are exactly those.
        let labels = SparseMatrix::from_index_rows(12, &[vec![5], vec![6]]).unwrap();
        let ids: Vec<u32> = (0..64).map(|i| 1 + i % 38).collect();
        let batch = make_batch(&ids, 32, &labels, &[0, 1], Some(&index), &Device::Cpu).unwrap();
        let before: Vec<f32> = model
            .plus()
            .unwrap()
            .table
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (loss, st) = train_step_plus(&model, &mut opt, &batch, 1e-2, 0.9, false).unwrap();
        assert!(loss.is_finite());
        assert_eq!(st.candidates, 6);
        assert_eq!(st.touched_rows, 6);
        let after: Vec<f32> = model
            .plus()
            .unwrap()
            .table
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let hd = cfg.feature_dim();
        for row in 0..12 {
            let (a, b) = (
                &before[row * hd..(row + 1) * hd],
                &after[row * hd..(row + 1) * hd],
            );
            let cluster = row / 3;
            if cluster == 1 || cluster == 2 {
                assert_ne!(a, b, "candidate row {row} did not move");
            } else {
                assert_eq!(a, b, "row {row} of an unlisted cluster moved");
            }
        }
    }
}

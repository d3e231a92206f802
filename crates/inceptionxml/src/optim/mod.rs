//! Optimisers and the learning-rate schedule: fused dense Adam ([`Adam`]), lazy row Adam for the
//! two big tables ([`RowAdam`], with [`RowGroups`] summing a batch's word-row gradients), the
//! one-cycle schedule ([`OneCycle`]) and [`Optimizers`], the one interface both training steps
//! use.

pub mod adam;
pub mod row_adam;
pub mod schedule;

pub use adam::{Adam, AdamConsts};
pub use row_adam::{RowAdam, RowGroups, PAD_ROW};
pub use schedule::OneCycle;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::model::InceptionXml;
use crate::ops::candidates::{CandidatePlan, TableRows};
use crate::profile::span;

/// The optimiser state of a run: dense Adam over the model's dense parameters, lazy row Adam
/// for the word table and, for InceptionXML+, lazy row Adam for the label table.
pub struct Optimizers {
    pub adam: Adam,
    pub words: RowAdam,
    pub labels: Option<RowAdam>,
}

/// The model's dense variables, never including the word table (it has its own optimiser).
pub fn dense_vars(model: &InceptionXml) -> Vec<(String, Var)> {
    let table = model.embedding_table().as_tensor().id();
    model
        .trainable_vars()
        .into_iter()
        .filter(|(_, v)| v.as_tensor().id() != table)
        .collect()
}

/// Profile span names inside a training step's "optimiser" ([`crate::profile`]).
pub const OPT: [&str; 3] = ["dense Adam", "label-table rows", "word rows"];

/// The label-table update of an InceptionXML+ step.
pub enum TableUpdate<'a> {
    /// No table rows (plain InceptionXML, or a batch that touched none).
    None,
    /// Gradient rows from a backward pass ([`crate::ops::TableGrad`]).
    Rows(TableRows),
    /// The candidates' rows, their gradient computed block by block during the update
    /// ([`RowAdam::step_runs`]) from the logits' gradient `dlog` (`rows × width`) and the
    /// extreme features `g` (`rows × hd`), host values.
    Candidates {
        plan: &'a CandidatePlan,
        dlog: &'a [f32],
        g: &'a [f32],
    },
    /// Already applied by [`Optimizers::step_labels`] during the backward (the fused
    /// InceptionXML+ step runs it beside the encoder's backward); the rows it updated.
    Done(usize),
}

impl Optimizers {
    /// Fresh state for `model` (moments zero, on the model's device).
    pub fn new(model: &InceptionXml, consts: AdamConsts) -> Result<Self> {
        let c = model.config();
        let dev = model.embedding_table().device();
        let labels = match &c.plus {
            Some(p) => {
                Some(RowAdam::named("extreme", None, c.n_labels, p.hidden_dim, consts).on(dev)?)
            }
            None => None,
        };
        Ok(Optimizers {
            adam: Adam::new(dense_vars(model), consts)?,
            words: RowAdam::new(c.vocab_size, c.embed_dim, consts).on(dev)?,
            labels,
        })
    }

    /// One step of every optimiser after a backward pass: dense Adam from `grads`; the word
    /// rows the batch looked up (`ids`, row-major) from the gradient of the looked-up vectors
    /// `x`; for InceptionXML+, the label-table rows of `table` (a step with no rows when the
    /// batch touched none, so every optimiser counts the same steps). Returns the number of
    /// label-table rows updated.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        model: &InceptionXml,
        grads: &GradStore,
        x: &Tensor,
        ids: &[u32],
        table: TableUpdate<'_>,
        lr: f64,
        beta1: f64,
    ) -> Result<usize> {
        let sp = span(OPT[0]);
        self.adam.step(grads, lr, beta1)?;
        drop(sp);
        let sp =
            (self.labels.is_some() && !matches!(table, TableUpdate::Done(_))).then(|| span(OPT[1]));
        let touched = Self::step_labels(self.labels.as_mut(), model, table, lr, beta1)?;
        drop(sp);
        let _sp = span(OPT[2]);
        let table = model.embedding_table();
        match grads.get(x) {
            Some(gx) => {
                // Grouped on the host from the batch's ids, summed where the gradient lives.
                let groups = RowGroups::new(ids);
                let g = groups.sum(gx)?;
                self.words.step_rows(table, &groups.ids, &g, lr, beta1)?;
            }
            None => self.words.step(table, &[], &[], lr, beta1)?,
        }
        Ok(touched)
    }

    /// The label-table part of [`Optimizers::step`] on its own: `labels` is that optimiser
    /// ([`Optimizers::labels`]), borrowed apart from the rest so the update can run while other
    /// work still needs the model. Returns the number of rows updated.
    pub fn step_labels(
        labels: Option<&mut RowAdam>,
        model: &InceptionXml,
        table: TableUpdate<'_>,
        lr: f64,
        beta1: f64,
    ) -> Result<usize> {
        let (Some(opt), Some(plus)) = (labels, model.plus()) else {
            return Ok(0);
        };
        Ok(match table {
            TableUpdate::Rows((rows, g)) => {
                opt.step_rows(&plus.table, &rows, &g, lr, beta1)?;
                rows.len()
            }
            TableUpdate::Candidates { plan, dlog, g } => {
                let dim = opt.dim();
                let grad = |u: usize, out: &mut [f32]| plan.grad_block(u, dlog, g, dim, out);
                opt.step_runs(&plus.table, plan.runs(), &grad, lr, beta1)?;
                plan.n_touched()
            }
            TableUpdate::None => {
                opt.step(&plus.table, &[], &[], lr, beta1)?;
                0
            }
            TableUpdate::Done(n) => n,
        })
    }

    /// The row-Adam states, word table first.
    pub fn tables(&self) -> Vec<&RowAdam> {
        std::iter::once(&self.words).chain(&self.labels).collect()
    }

    /// The same, mutable, with the dense Adam beside them (for loading a checkpoint).
    pub fn parts_mut(&mut self) -> (&mut Adam, Vec<&mut RowAdam>) {
        let tables = std::iter::once(&mut self.words)
            .chain(self.labels.as_mut())
            .collect();
        (&mut self.adam, tables)
    }

    /// Allocates every table's moments now (benchmarks measure memory with the state resident).
    pub fn make_resident(&mut self) {
        self.words.make_resident();
        if let Some(l) = self.labels.as_mut() {
            l.make_resident();
        }
    }
}

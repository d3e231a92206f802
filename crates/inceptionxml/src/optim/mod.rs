//! Optimisers and the learning-rate schedule: fused dense Adam ([`Adam`]), lazy row Adam for the
//! two big tables ([`RowAdam`], with [`RowGroups`] summing a batch's word-row gradients), the
//! one-cycle schedule ([`OneCycle`], built from the run's configuration) and [`Optimizers`],
//! the one interface both training steps use, bound to its variables ([`TrainVars`]) when built.
//! It knows variables, not the model.

pub mod adam;
pub mod row_adam;
pub mod schedule;

pub use adam::{Adam, AdamConsts};
pub use row_adam::{RowAdam, RowGroups, PAD_ROW};
pub use schedule::OneCycle;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use xmc::subwords::Subwords;

use crate::error::{Error, Result};
use crate::ops::candidates::{CandidatePlan, TableRows};
use crate::profile::{span, timed, Stage};

/// The variables a run's optimisers move, bound when [`Optimizers`] is built (as candle's
/// optimisers know their variables, not the model): the dense parameters, the word table and,
/// for InceptionXML+, the label table.
pub struct TrainVars {
    /// `(name, variable)` of every dense parameter, never a table.
    pub dense: Vec<(String, Var)>,
    /// The word table `[V, d]`; row [`PAD_ROW`] never moves.
    pub words: Var,
    /// InceptionXML+'s label table `[L, hd]`.
    pub labels: Option<Var>,
}

/// The optimiser state of a run: dense Adam over the dense parameters, lazy row Adam for the
/// word table and, for InceptionXML+, lazy row Adam for the label table; each bound to its
/// variables ([`TrainVars`]).
pub struct Optimizers {
    pub adam: Adam,
    pub words: RowAdam,
    pub labels: Option<RowAdam>,
    word_table: Var,
    label_table: Option<Var>,
}

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
    /// Already applied by [`LabelRows::step`] during the backward (the fused InceptionXML+ step
    /// runs it beside the encoder's backward); the rows it updated.
    Done(usize),
}

/// The label table's optimiser with its table, borrowed apart from the rest of [`Optimizers`]
/// ([`Optimizers::split`]) so its update can run while other work still needs the model.
pub struct LabelRows<'a> {
    opt: Option<(&'a mut RowAdam, &'a Var)>,
}

impl LabelRows<'_> {
    /// The label-table part of [`Optimizers::step`]: applies `table`; returns the number of rows
    /// updated (0 for a plain model).
    pub fn step(self, table: TableUpdate<'_>, lr: f64, beta1: f64) -> Result<usize> {
        let Some((opt, var)) = self.opt else {
            return Ok(0);
        };
        Ok(match table {
            TableUpdate::Rows((rows, g)) => {
                opt.step_rows(var, &rows, &g, lr, beta1)?;
                rows.len()
            }
            TableUpdate::Candidates { plan, dlog, g } => {
                let dim = opt.dim();
                let grad = |u: usize, out: &mut [f32]| plan.grad_block(u, dlog, g, dim, out);
                opt.step_runs(var, plan.runs(), &grad, lr, beta1)?;
                plan.n_touched()
            }
            TableUpdate::None => {
                opt.step(var, &[], &[], lr, beta1)?;
                0
            }
            TableUpdate::Done(n) => n,
        })
    }
}

/// The word table's gradient from the gradient `gx` `[B, S, d]` of vectors looked up with
/// subwords: each position's gradient moves its word row (weight 1) and its `m` n-gram rows
/// (weight `1/m`), gathered, weighted, then summed per table row. `(rows, [rows, d])`, None
/// when the batch looked nothing up.
pub fn subword_row_grads(
    gx: &Tensor,
    ids: &[u32],
    sub: &Subwords,
) -> Result<Option<(Vec<u32>, Tensor)>> {
    let l = sub.lookups(ids)?;
    let n = l.rows.len();
    if n == 0 {
        return Ok(None);
    }
    let dev = gx.device();
    let d = gx.dim(candle_core::D::Minus1)?;
    let pos = Tensor::from_slice(&l.positions, n, dev)?;
    let w = Tensor::from_slice(&l.weights, (n, 1), dev)?;
    let ge = gx
        .reshape(((), d))?
        .index_select(&pos, 0)?
        .broadcast_mul(&w)?;
    let groups = RowGroups::new(&l.rows);
    let g = groups.sum(&ge)?;
    Ok(Some((groups.ids, g)))
}

impl Optimizers {
    /// Fresh state for `vars` (moments zero, on the tables' device), sized by the tables.
    pub fn new(vars: TrainVars, consts: AdamConsts) -> Result<Self> {
        let (v, d) = vars.words.dims2()?;
        let words = RowAdam::new(v, d, consts).on(vars.words.device())?;
        let labels = match &vars.labels {
            Some(t) => {
                let (l, hd) = t.dims2()?;
                Some(RowAdam::named("extreme", None, l, hd, consts).on(t.device())?)
            }
            None => None,
        };
        let table = vars.words.as_tensor().id();
        if vars.dense.iter().any(|(_, v)| v.as_tensor().id() == table) {
            return Err(Error::Config(
                "the word table is among the dense variables (it has its own optimiser)".into(),
            ));
        }
        Ok(Optimizers {
            adam: Adam::new(vars.dense, consts)?,
            words,
            labels,
            word_table: vars.words,
            label_table: vars.labels,
        })
    }

    /// One step of every optimiser after a backward pass: dense Adam from `grads`; the word
    /// rows the batch looked up (`ids`, row-major) from the gradient of the looked-up vectors
    /// `x`; for InceptionXML+, the label-table rows of `table` (a step with no rows when the
    /// batch touched none, so every optimiser counts the same steps). Returns the number of
    /// label-table rows updated.
    pub fn step(
        &mut self,
        grads: &GradStore,
        (x, ids, subwords): (&Tensor, &[u32], Option<&Subwords>),
        table: TableUpdate<'_>,
        lr: f64,
        beta1: f64,
    ) -> Result<usize> {
        timed(Stage::DenseAdam, || self.adam.step(grads, lr, beta1))?;
        let touched = match (&self.labels, &table) {
            // Applied beside the encoder's backward already: nothing to time here.
            (None, _) | (_, TableUpdate::Done(_)) => self.split().1.step(table, lr, beta1)?,
            _ => timed(Stage::LabelRows, || self.split().1.step(table, lr, beta1))?,
        };
        let _sp = span(Stage::WordRows);
        match (grads.get(x), subwords) {
            (Some(gx), Some(sub)) => match subword_row_grads(gx, ids, sub)? {
                Some((rows, g)) => self
                    .words
                    .step_rows(&self.word_table, &rows, &g, lr, beta1)?,
                None => self.words.step(&self.word_table, &[], &[], lr, beta1)?,
            },
            (Some(gx), None) => {
                // Grouped on the host from the batch's ids, summed where the gradient lives.
                let groups = RowGroups::new(ids);
                let g = groups.sum(gx)?;
                self.words
                    .step_rows(&self.word_table, &groups.ids, &g, lr, beta1)?;
            }
            (None, _) => self.words.step(&self.word_table, &[], &[], lr, beta1)?,
        }
        Ok(touched)
    }

    /// The dense Adam and the label table's optimiser, borrowed apart (the fused steps update
    /// them beside the encoder's backward).
    pub fn split(&mut self) -> (&mut Adam, LabelRows<'_>) {
        let opt = self.labels.as_mut().zip(self.label_table.as_ref());
        (&mut self.adam, LabelRows { opt })
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

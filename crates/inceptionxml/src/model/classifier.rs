//! A classifier and its loss as one unit of a training step's graph, and what a head's fused
//! training pass hands back ([`HeadGrads`]). Both heads use them (MODEL.md §4–5).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::host::linear_bce::linear_bce;
use crate::ops::storage::with_host_f32s;
use crate::ops::{bce_with_logits, stable_sigmoid};

/// What a head's training pass by fused host ops leaves: its mean loss, the gradient of its
/// input h_f (row-major host values) and each of its variables' gradients (host values in the
/// variable's shape). The caller hands them to the encoder's backward and the optimisers.
pub struct HeadGrads {
    pub loss: f32,
    pub dh: Vec<f32>,
    pub params: Vec<(Var, Vec<f32>)>,
}

/// A classifier `x·W + b` and its mean BCE against `targets`, as part of a step's graph: on the
/// CPU by the fused op ([`linear_bce`]), whose input gradient enters candle's backward through
/// `term` = `(x · dx).sum()` and whose weight gradients are inserted after it; elsewhere composed
/// candle ops, whose loss is itself the term.
pub enum Classified {
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
    pub fn new(x: &Tensor, w: &Var, b: &Var, targets: &Tensor, fused: bool) -> Result<Self> {
        if !fused {
            let logits = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let loss = bce_with_logits(&logits, targets)?;
            return Ok(Classified::Composed { loss, logits });
        }
        let (n, d) = x.dims2()?;
        let c = w.dim(1)?;
        let xs = x.contiguous()?;
        let tensors = [&xs, w.as_tensor(), b.as_tensor(), targets];
        let lb = with_host_f32s(tensors, |[xv, wv, bv, yv]| {
            linear_bce(xv, wv, bv, yv, (n, d, c))
        })??;
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
    pub fn term(&self) -> &Tensor {
        match self {
            Classified::Composed { loss, .. } => loss,
            Classified::Fused { term, .. } => term,
        }
    }

    /// The classifier's weight gradients, after the backward of [`Self::term`].
    pub fn insert_grads(&self, grads: &mut GradStore) {
        if let Classified::Fused { w, b, .. } = self {
            grads.insert(w.0.as_tensor(), w.1.clone());
            grads.insert(b.0.as_tensor(), b.1.clone());
        }
    }

    /// The mean loss.
    pub fn loss(&self) -> Result<f32> {
        match self {
            Classified::Composed { loss, .. } => Ok(loss.to_scalar::<f32>()?),
            Classified::Fused { loss, .. } => Ok(*loss),
        }
    }

    /// σ of the logits, row-major on the host.
    pub fn scores(&self) -> Result<Vec<f32>> {
        let sig = |v: &[f32]| v.par_iter().map(|&x| stable_sigmoid(x)).collect();
        match self {
            Classified::Composed { logits, .. } => {
                Ok(sig(&logits.detach().flatten_all()?.to_vec1::<f32>()?))
            }
            Classified::Fused { logits, .. } => Ok(sig(logits)),
        }
    }
}

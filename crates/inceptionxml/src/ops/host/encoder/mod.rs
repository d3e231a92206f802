//! The whole encoder (MODEL.md §3) as one fused CPU op over the batch: forward in training or
//! evaluation mode, and its backward pass, on host buffers that are reused from step to step.
//!
//! candle's composed encoder spends about two thirds of a training step outside its matrix
//! products: every op allocates and zero-fills its result, broadcasts and narrows copy,
//! backward passes of `narrow`/`cat`/broadcasts scatter into fresh zeroed tensors, and
//! elementwise work runs in separate passes (`docs/BENCHMARKS.md`, "CPU speed"). This op
//! computes the same function with the same products (`ops::mm`, the `gemm` kernels
//! candle itself calls) and nothing else:
//!
//! - **attention + projection**, per sample in parallel: `A = X Xᵀ`, `R = I + γ1 A W1`,
//!   `N = (X W2ᵀ) Xᵀ` (`X W2ᵀ` one GEMM over the batch), `M = R + γ2 (R N) R`, `T = W_p M`, and
//!   the projection `Xᵀ Tᵀ` written channels-last;
//! - **GELU + BatchNorm** in two passes (activation, its derivative and the channel sums; then
//!   normalise, dropout), writing straight into the next stage's layout;
//! - **inception**: the projection output is kept per sample with its circular padding in place
//!   and a whole number of stride-4 windows (`rp = 4·wp` rows), so the three branches and the
//!   final convolution are single GEMMs over *overlapping strided views* of the activations — no
//!   im2col copy. The `wp − L1` windows per sample past the end are computed and ignored (their
//!   gradients are zero);
//! - **backward**: the transposed products, with the convolutions' input gradients as col2im
//!   (the final convolution as four block-shifted GEMMs; the branches through a per-chunk column
//!   buffer scattered back), the BatchNorm backward in two passes, and the attention's backward
//!   per sample.
//!
//! The dropout masks are those of [`crate::ops::dropout::mask`] for seeds the caller draws in
//! the composed encoder's order, over the same flat layouts (the word rows' values drawn alone
//! by [`crate::ops::dropout::mask_range`]), so both paths drop the same values.
//! `tests` check this op against the composed candle encoder (outputs, every parameter's
//! gradient, the input gradient, BatchNorm statistics) and against finite differences.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::dropout::{mask_into, mask_range};
use crate::ops::host::mm::{mm, mm_split_k, par_for, Out, View};
use crate::ops::storage::zeros;
use crate::profile::{Laps, Stage};

use crate::ops::host::gelu_bn::{gelu_bn_bwd, gelu_bn_fwd, RowMap};
pub use crate::ops::host::gelu_bn::{BnParams, BnStats};
use attention::{attention_bwd, attention_fwd, AttAcc};

mod attention;
mod backward;
mod forward;
#[cfg(test)]
mod tests;

/// Kernel sizes of the branches and their window offsets inside the 16-row window (circular
/// padding `2·(k/4 − 1)`, so the k-window starts `6 − pad` rows into the k = 16 one).
const BRANCHES: [(usize, usize); 3] = [(4, 6), (8, 4), (16, 0)];
const PAD: usize = 6;
const K: usize = 16;
const STRIDE: usize = 4;

/// Sizes of one batch through the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Batch.
    pub b: usize,
    /// Words per text.
    pub s: usize,
    /// Embedding width.
    pub d: usize,
    /// Filters.
    pub f: usize,
    /// Inception output length.
    pub l1: usize,
    /// Final convolution output length.
    pub l2: usize,
    /// Windows per sample in the padded layout (a multiple of 4, ≥ L1).
    pub wp: usize,
    /// Rows per sample of the padded projection output (`4·wp ≥ d + 12`).
    pub rp: usize,
    /// Final-convolution windows per sample in that layout (`wp / 4`).
    pub w2: usize,
}

impl Dims {
    pub fn new(b: usize, s: usize, d: usize, f: usize) -> Result<Self> {
        if b == 0 || s == 0 || f == 0 || d < 4 * K {
            return Err(Error::Shape(format!(
                "fused encoder: batch {b}, {s} words, width {d}, {f} filters (width must be >= {})",
                4 * K
            )));
        }
        let l1 = (d - 4) / STRIDE + 1;
        let l2 = (l1 - K) / STRIDE + 1;
        let wp = (d + 2 * PAD).div_ceil(STRIDE).next_multiple_of(4);
        Ok(Dims {
            b,
            s,
            d,
            f,
            l1,
            l2,
            wp,
            rp: STRIDE * wp,
            w2: wp / 4,
        })
    }

    /// Multiply–adds per batch of each stage named by its [`Stage`] (products only, as
    /// computed: padding windows included, padding word rows skipped), for texts of `words`
    /// words on average (at most S), for the profile's FLOP rates.
    pub fn macs(&self, words: f64) -> Vec<(Stage, f64)> {
        let (b, s, d, f) = (self.b as f64, self.s as f64, self.d as f64, self.f as f64);
        let n = words.clamp(0.0, s);
        let (wp, w2) = (self.wp as f64, self.w2 as f64);
        let s2 = s * s;
        let branches = 28.0 * f * f * wp * b;
        let fin = 48.0 * f * f * w2 * b;
        vec![
            // A, N: n²d; X W2ᵀ: d²n; AW1, RN, (RN)R: 3S³; W_p M: F·S²; projection: F·n·d.
            (
                Stage::EncFwdAttention,
                b * (2.0 * n * n * d + d * d * n + 3.0 * s2 * s + f * s2 + f * n * d),
            ),
            (Stage::EncFwdBranches, branches),
            (Stage::EncFwdFinal, fin),
            (Stage::EncBwdFinal, 2.0 * fin),
            (Stage::EncBwdBranchWeights, branches),
            (Stage::EncBwdBranchInputs, branches),
            // dT, dX(T): 2F·n·d; dWp, dM: 2F·S²; 6 S×S×S products; dY, dX(N), dX(A): 3n²d.
            (
                Stage::EncBwdAttention,
                b * (2.0 * f * n * d + 2.0 * f * s2 + 6.0 * s2 * s + 3.0 * n * n * d),
            ),
            (Stage::EncBwdXW2, b * 2.0 * d * d * n),
        ]
    }

    /// Width of the encoder output `F·L2`.
    pub fn out_dim(&self) -> usize {
        self.f * self.l2
    }

    /// Values per sample of the attention scratch: `A, AW1, R, N, Q, P, M` (S×S) and `T` (F×S).
    fn att(&self) -> usize {
        7 * self.s * self.s + self.f * self.s
    }
}

/// The encoder's parameters as host vectors. Convolution weights in GEMM layout `[k·in, out]`;
/// `w1`, `w2` already spectrally normalised.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub w1: Vec<f32>,
    pub g1: f32,
    pub w2: Vec<f32>,
    pub g2: f32,
    /// `[F, S]`.
    pub wp: Vec<f32>,
    pub bp: Vec<f32>,
    pub bn1: BnParams,
    /// k = 4, 8, 16: `[k·F, F]`.
    pub conv: [Vec<f32>; 3],
    /// The three branches' biases concatenated, `[3F]`.
    pub conv_bias: Vec<f32>,
    pub bn2: BnParams,
    /// `[16·3F, F]`.
    pub fin: Vec<f32>,
    pub fin_bias: Vec<f32>,
    pub bn3: BnParams,
}

/// Dropout probabilities and seeds (`None`: no dropout there).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dropouts {
    /// On the word vectors.
    pub embed: Option<(f32, u64)>,
    /// After the projection's BatchNorm.
    pub proj: Option<(f32, u64)>,
    /// After the inception merge's BatchNorm.
    pub merge: Option<(f32, u64)>,
}

/// The gradients of every encoder parameter and of the input. `w1`, `w2` are with respect to
/// the normalised weights (the caller applies the spectral norm's backward).
#[derive(Debug, Clone, Default)]
pub struct Grads {
    pub w1: Vec<f32>,
    pub g1: f32,
    pub w2: Vec<f32>,
    pub g2: f32,
    pub wp: Vec<f32>,
    pub bp: Vec<f32>,
    pub bn1: (Vec<f32>, Vec<f32>),
    pub conv: [Vec<f32>; 3],
    pub conv_bias: Vec<f32>,
    pub bn2: (Vec<f32>, Vec<f32>),
    pub fin: Vec<f32>,
    pub fin_bias: Vec<f32>,
    pub bn3: (Vec<f32>, Vec<f32>),
    /// `[B, S, d]`.
    pub x: Vec<f32>,
}

/// Host buffers of one forward (and what its backward reads), reused across steps.
#[derive(Debug, Default)]
pub struct Workspace {
    dims: Option<Dims>,
    train: bool,
    drop: Dropouts,
    x: Vec<f32>,
    mask0: Vec<f32>,
    /// Words per text (rows past it are padding: zero, no gradient).
    lens: Vec<usize>,
    /// Offsets of each text's rows in the compact buffers.
    offs: Vec<usize>,
    /// The words' rows of `x`, `[Σ lens, d]`, and `Y = X W2ᵀ` on them.
    xc: Vec<f32>,
    yc: Vec<f32>,
    att: Vec<f32>,
    z1: Vec<f32>,
    act1: Vec<f32>,
    dact1: Vec<f32>,
    mask1: Vec<f32>,
    ppad: Vec<f32>,
    z2: Vec<f32>,
    act2: Vec<f32>,
    dact2: Vec<f32>,
    mask2: Vec<f32>,
    h: Vec<f32>,
    z3: Vec<f32>,
    act3: Vec<f32>,
    dact3: Vec<f32>,
    y3: Vec<f32>,
    stats: [BnStats; 3],
    // backward
    dz3: Vec<f32>,
    dh: Vec<f32>,
    dz2: Vec<f32>,
    dcols: Vec<f32>,
    dppad: Vec<f32>,
    dy1: Vec<f32>,
    dz1: Vec<f32>,
    datt: Vec<f32>,
    dyc: Vec<f32>,
    dxc: Vec<f32>,
}

/// `v` resized to `n` values (contents unspecified; capacity kept).
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() != n {
        v.resize(n, 0.0);
    }
    v.as_mut_slice()
}

/// A compact `[Σ lens, d]` buffer cut into each text's rows.
fn split_rows<'a>(buf: &'a mut [f32], lens: &[usize], d: usize) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (head, tail) = rest.split_at_mut(n * d);
        parts.push(head);
        rest = tail;
    }
    parts
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch statistics of the last training forward's three BatchNorms (projection,
    /// inception merge, final), for the running-statistics update.
    pub fn batch_stats(&self) -> &[BnStats; 3] {
        &self.stats
    }
}

fn mask_for(buf: &mut Vec<f32>, drop: Option<(f32, u64)>, n: usize) -> Option<&[f32]> {
    drop.map(|(p, seed)| {
        let m = grow(buf, n);
        mask_into(m, p, seed);
        &m[..]
    })
}

fn check_params(p: &Params, dm: &Dims) -> Result<()> {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    let want = [
        ("attention W1", p.w1.len(), s * s),
        ("attention W2", p.w2.len(), d * d),
        ("projection", p.wp.len(), f * s),
        ("projection bias", p.bp.len(), f),
        ("branch 4", p.conv[0].len(), 4 * f * f),
        ("branch 8", p.conv[1].len(), 8 * f * f),
        ("branch 16", p.conv[2].len(), 16 * f * f),
        ("branch biases", p.conv_bias.len(), 3 * f),
        ("final convolution", p.fin.len(), K * 3 * f * f),
        ("final bias", p.fin_bias.len(), f),
    ];
    for (what, got, n) in want {
        if got != n {
            return Err(Error::Shape(format!(
                "fused encoder: {what} has {got} values, expected {n}"
            )));
        }
    }
    for (bn, c) in [(&p.bn1, f), (&p.bn2, 3 * f), (&p.bn3, f)] {
        if [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var]
            .iter()
            .any(|v| v.len() != c)
        {
            return Err(Error::Shape(format!(
                "fused encoder: BatchNorm parameters for {c} channels"
            )));
        }
    }
    Ok(())
}

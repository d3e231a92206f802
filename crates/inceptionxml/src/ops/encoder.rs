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
use crate::ops::mm::{mm, mm_split_k, par_for, Out, View};
use crate::ops::storage::zeros;
use crate::ops::vmath::{self, BnBack};
use crate::profile::span;

/// Kernel sizes of the branches and their window offsets inside the 16-row window (circular
/// padding `2·(k/4 − 1)`, so the k-window starts `6 − pad` rows into the k = 16 one).
const BRANCHES: [(usize, usize); 3] = [(4, 6), (8, 4), (16, 0)];
const PAD: usize = 6;
const K: usize = 16;
const STRIDE: usize = 4;

/// Profile span names of the forward stages ([`crate::profile`]).
pub const FWD: [&str; 7] = [
    "enc fwd: word dropout",
    "enc fwd: attention + projection",
    "enc fwd: GELU+BN (projection)",
    "enc fwd: inception branches",
    "enc fwd: GELU+BN (merge)",
    "enc fwd: final convolution",
    "enc fwd: GELU+BN (final)",
];
/// Profile span names of the backward stages.
pub const BWD: [&str; 9] = [
    "enc bwd: GELU+BN (final)",
    "enc bwd: final convolution",
    "enc bwd: GELU+BN (merge)",
    "enc bwd: branch weights",
    "enc bwd: branch inputs (col2im)",
    "enc bwd: GELU+BN (projection)",
    "enc bwd: attention + projection",
    "enc bwd: X W2ᵀ (dX, dW2)",
    "enc bwd: word dropout",
];

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

    /// Multiply–adds per batch of each stage named in [`FWD`] / [`BWD`] (products only, as
    /// computed: padding windows included, padding word rows skipped), for texts of `words`
    /// words on average (at most S), for the profile's FLOP rates.
    pub fn macs(&self, words: f64) -> Vec<(&'static str, f64)> {
        let (b, s, d, f) = (self.b as f64, self.s as f64, self.d as f64, self.f as f64);
        let n = words.clamp(0.0, s);
        let (wp, w2) = (self.wp as f64, self.w2 as f64);
        let s2 = s * s;
        let branches = 28.0 * f * f * wp * b;
        let fin = 48.0 * f * f * w2 * b;
        vec![
            // A, N: n²d; X W2ᵀ: d²n; AW1, RN, (RN)R: 3S³; W_p M: F·S²; projection: F·n·d.
            (
                FWD[1],
                b * (2.0 * n * n * d + d * d * n + 3.0 * s2 * s + f * s2 + f * n * d),
            ),
            (FWD[3], branches),
            (FWD[5], fin),
            (BWD[1], 2.0 * fin),
            (BWD[3], branches),
            (BWD[4], branches),
            // dT, dX(T): 2F·n·d; dWp, dM: 2F·S²; 6 S×S×S products; dY, dX(N), dX(A): 3n²d.
            (
                BWD[6],
                b * (2.0 * f * n * d + 2.0 * f * s2 + 6.0 * s2 * s + 3.0 * n * n * d),
            ),
            (BWD[7], b * 2.0 * d * d * n),
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

/// A BatchNorm's affine parameters and running statistics.
#[derive(Debug, Clone, Default)]
pub struct BnParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
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

/// Batch statistics of one BatchNorm in a training forward: mean, biased variance, count.
#[derive(Debug, Clone, Default)]
pub struct BnStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub n: usize,
    inv: Vec<f32>,
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

/// Row `r` of sample `s` lives at buffer row `s·stride + off + r`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMap {
    pub(crate) stride: usize,
    pub(crate) off: usize,
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

    /// Encoder forward of `x` `[B, S, d]`: returns `h_f` `[B, F·L2]` (channel-major). With
    /// `train`, BatchNorm uses batch statistics (see [`Self::batch_stats`]), the dropouts in
    /// `drop` apply, and what the backward pass needs is kept.
    pub fn forward(
        &mut self,
        p: &Params,
        dims: Dims,
        x0: &[f32],
        lens: &[usize],
        dropouts: Dropouts,
        train: bool,
    ) -> Result<Vec<f32>> {
        let Dims {
            b,
            s,
            d,
            f,
            l1,
            l2,
            wp,
            rp,
            w2,
        } = dims;
        if x0.len() != b * s * d {
            return Err(Error::Shape(format!(
                "fused encoder: input of {} values for {b}×{s}×{d}",
                x0.len()
            )));
        }
        check_params(p, &dims)?;
        if lens.len() != b || lens.iter().any(|&n| n > s) {
            return Err(Error::Shape(format!(
                "fused encoder: {} text lengths for {b} texts of {s} words",
                lens.len()
            )));
        }
        self.lens.clear();
        self.lens.extend_from_slice(lens);
        self.offs.clear();
        self.offs.push(0);
        for &n in lens {
            let last = self.offs[self.offs.len() - 1];
            self.offs.push(last + n);
        }
        let rows = self.offs[b];
        self.dims = Some(dims);
        self.train = train;
        self.drop = if train { dropouts } else { Dropouts::default() };
        let dr = self.drop;
        // Word-vector dropout on the words' rows (the padding rows stay zero), and the words'
        // rows gathered: xc [rows, d].
        let sp = span(FWD[0]);
        let x = grow(&mut self.x, b * s * d);
        let mask0 = grow(
            &mut self.mask0,
            if dr.embed.is_some() { b * s * d } else { 0 },
        );
        let xc = grow(&mut self.xc, rows * d);
        {
            let parts = split_rows(xc, lens, d);
            // One mask chunk per text, or none at all without word dropout (mask0 is empty).
            let mut chunks = mask0.chunks_mut(s * d);
            let masks: Vec<Option<&mut [f32]>> = (0..b).map(|_| chunks.next()).collect();
            x.par_chunks_mut(s * d)
                .zip(x0.par_chunks(s * d))
                .zip(parts.into_par_iter().zip(masks))
                .enumerate()
                .for_each(|(bi, ((xs, x0s), (xcs, m)))| {
                    let n = lens[bi] * d;
                    match (dr.embed, m) {
                        (Some((pr, seed)), Some(m)) => {
                            mask_range(&mut m[..n], pr, seed, bi * s * d);
                            for ((o, i), m) in xs[..n].iter_mut().zip(&x0s[..n]).zip(&m[..n]) {
                                *o = i * m;
                            }
                        }
                        _ => xs[..n].copy_from_slice(&x0s[..n]),
                    }
                    xs[n..].fill(0.0);
                    xcs.copy_from_slice(&xs[..n]);
                });
        }
        drop(sp);
        let sp = span(FWD[1]);
        let x = &self.x[..];
        // Y = X W2ᵀ on the words' rows only (padding rows give zero).
        let y = grow(&mut self.yc, rows * d);
        mm(
            y,
            Out::rm(0, d),
            View::rm(&self.xc, 0, rows, d),
            View::rm(&p.w2, 0, d, d).t(),
            1.0,
            false,
            par_for(rows, d, d),
        )?;
        let y = &self.yc[..];
        let (lens, offs) = (&self.lens[..], &self.offs[..]);
        // Attention and projection per sample: z1 [B·d, F] (pre-bias).
        let na = dims.att();
        let att = grow(&mut self.att, b * na);
        let z1 = grow(&mut self.z1, b * d * f);
        att.par_chunks_mut(na)
            .zip(z1.par_chunks_mut(d * f))
            .enumerate()
            .try_for_each(|(bi, (a, z))| {
                attention_fwd(p, &dims, x, y, (bi, lens[bi], offs[bi]), a, z)
            })?;
        drop(sp);
        // GELU + BatchNorm(F) (+ dropout) into the padded layout.
        let sp = span(FWD[2]);
        // Only the rows nothing below writes are zeroed: each sample's tail past its circular
        // padding and the K rows after the last sample (the windows' overhang).
        let ppad = grow(&mut self.ppad, (b * rp + K) * f);
        ppad[b * rp * f..].fill(0.0);
        let proj_mask = mask_for(&mut self.mask1, dr.proj, b * d * f);
        self.stats[0] = gelu_bn_fwd(
            &self.z1,
            RowMap { stride: d, off: 0 },
            (b, d, f),
            &p.bp,
            &p.bn1,
            train,
            grow(&mut self.act1, if train { b * d * f } else { 0 }),
            grow(&mut self.dact1, if train { b * d * f } else { 0 }),
            ppad,
            RowMap {
                stride: rp,
                off: PAD,
            },
            proj_mask,
        )?;
        // Circular padding: rows 0..6 repeat the last 6 positions, rows 6+d.. the first 6.
        ppad[..b * rp * f].par_chunks_mut(rp * f).for_each(|smp| {
            smp.copy_within(d * f..(d + PAD) * f, 0);
            smp.copy_within(PAD * f..2 * PAD * f, (PAD + d) * f);
            smp[(2 * PAD + d) * f..].fill(0.0);
        });
        drop(sp);
        let sp = span(FWD[3]);
        let ppad = &self.ppad[..];
        // The three branches: one GEMM each over overlapping windows (row stride 4F).
        let z2 = grow(&mut self.z2, b * wp * 3 * f);
        for (j, &(k, o)) in BRANCHES.iter().enumerate() {
            mm(
                z2,
                Out::rm(j * f, 3 * f),
                View::rm(ppad, o * f, b * wp, k * f).rs(STRIDE * f),
                View::rm(&p.conv[j], 0, k * f, f),
                1.0,
                false,
                par_for(b * wp, f, k * f),
            )?;
        }
        drop(sp);
        let sp = span(FWD[4]);
        let h = grow(&mut self.h, (b * wp + K) * 3 * f);
        // Rows l1..wp of each sample and the K rows after the last; the GELU+BN writes the rest.
        h[b * wp * 3 * f..].fill(0.0);
        h[..b * wp * 3 * f]
            .par_chunks_mut(wp * 3 * f)
            .for_each(|smp| smp[l1 * 3 * f..].fill(0.0));
        let merge_mask = mask_for(&mut self.mask2, dr.merge, b * l1 * 3 * f);
        self.stats[1] = gelu_bn_fwd(
            &self.z2,
            RowMap { stride: wp, off: 0 },
            (b, l1, 3 * f),
            &p.conv_bias,
            &p.bn2,
            train,
            grow(&mut self.act2, if train { b * l1 * 3 * f } else { 0 }),
            grow(&mut self.dact2, if train { b * l1 * 3 * f } else { 0 }),
            h,
            RowMap { stride: wp, off: 0 },
            merge_mask,
        )?;
        drop(sp);
        let sp = span(FWD[5]);
        // Final convolution: one GEMM over 16-row windows of H at stride 4.
        let z3 = grow(&mut self.z3, b * w2 * f);
        mm(
            z3,
            Out::rm(0, f),
            View::rm(&self.h, 0, b * w2, K * 3 * f).rs(STRIDE * 3 * f),
            View::rm(&p.fin, 0, K * 3 * f, f),
            1.0,
            false,
            par_for(b * w2, f, K * 3 * f),
        )?;
        drop(sp);
        let sp = span(FWD[6]);
        let y3 = grow(&mut self.y3, b * l2 * f);
        self.stats[2] = gelu_bn_fwd(
            &self.z3,
            RowMap { stride: w2, off: 0 },
            (b, l2, f),
            &p.fin_bias,
            &p.bn3,
            train,
            grow(&mut self.act3, if train { b * l2 * f } else { 0 }),
            grow(&mut self.dact3, if train { b * l2 * f } else { 0 }),
            y3,
            RowMap { stride: l2, off: 0 },
            None,
        )?;
        // Flatten channel-major.
        let mut out = vec![0f32; b * f * l2];
        out.par_chunks_mut(f * l2)
            .zip(self.y3.par_chunks(l2 * f))
            .for_each(|(o, yv)| {
                for t in 0..l2 {
                    for c in 0..f {
                        o[c * l2 + t] = yv[t * f + c];
                    }
                }
            });
        drop(sp);
        Ok(out)
    }

    /// Backward of the last training [`Self::forward`] for `dh` `[B, F·L2]`.
    pub fn backward(&mut self, p: &Params, dh_out: &[f32]) -> Result<Grads> {
        let dims = match (self.dims, self.train) {
            (Some(d), true) => d,
            _ => {
                return Err(Error::Shape(
                    "fused encoder: backward without a training forward".into(),
                ))
            }
        };
        let Dims {
            b,
            s,
            d,
            f,
            l1,
            l2,
            wp,
            rp,
            w2,
        } = dims;
        if dh_out.len() != b * f * l2 {
            return Err(Error::Shape(format!(
                "fused encoder: output gradient of {} values for {b}×{}",
                dh_out.len(),
                f * l2
            )));
        }
        check_params(p, &dims)?;
        let mut g = Grads::default();
        let sp = span(BWD[0]);
        // Final BatchNorm: dy3 compact [B·L2, F] from the channel-major gradient.
        let mut dy3 = vec![0f32; b * l2 * f];
        dy3.par_chunks_mut(l2 * f)
            .zip(dh_out.par_chunks(f * l2))
            .for_each(|(o, gv)| {
                for t in 0..l2 {
                    for c in 0..f {
                        o[t * f + c] = gv[c * l2 + t];
                    }
                }
            });
        // dz3 with three leading zero rows (for the shifted col2im GEMMs); padding windows zero.
        let dz3 = grow(&mut self.dz3, (3 + b * w2) * f);
        dz3.fill(0.0);
        let (dw, db, dbias) = gelu_bn_bwd(
            &dy3,
            RowMap { stride: l2, off: 0 },
            None,
            (b, l2, f),
            &self.act3,
            &self.dact3,
            &self.stats[2],
            &p.bn3,
            dz3,
            RowMap { stride: w2, off: 3 },
        )?;
        g.bn3 = (dw, db);
        g.fin_bias = dbias;
        drop(sp);
        let sp = span(BWD[1]);
        let dz3 = &self.dz3[..];
        // Final convolution's weight: windowsᵀ · dz3.
        g.fin = vec![0f32; K * 3 * f * f];
        mm_split_k(
            &mut g.fin,
            View::rm(&self.h, 0, b * w2, K * 3 * f)
                .rs(STRIDE * 3 * f)
                .t(),
            View::rm(dz3, 3 * f, b * w2, f),
        )?;
        // Its input gradient: block j (4 rows) of H gets Σ_q dz3[j − q] · W_qᵀ.
        let dh = grow(&mut self.dh, b * wp * 3 * f);
        let blk = STRIDE * 3 * f;
        for q in 0..K / STRIDE {
            mm(
                dh,
                Out::rm(0, blk),
                View::rm(dz3, (3 - q) * f, b * w2, f),
                View::strided(&p.fin, q * blk * f, (f, blk), (1, f)),
                1.0,
                q > 0,
                par_for(b * w2, blk, f),
            )?;
        }
        drop(sp);
        let sp = span(BWD[2]);
        // Merge BatchNorm (with its dropout).
        let dz2 = grow(&mut self.dz2, b * wp * 3 * f);
        // Rows l1..wp of each sample (the GELU+BN backward writes the rest).
        dz2.par_chunks_mut(wp * 3 * f)
            .for_each(|smp| smp[l1 * 3 * f..].fill(0.0));
        let merge_mask = self.drop.merge.map(|_| &self.mask2[..]);
        let (dw, db, dbias) = gelu_bn_bwd(
            &self.dh,
            RowMap { stride: wp, off: 0 },
            merge_mask,
            (b, l1, 3 * f),
            &self.act2,
            &self.dact2,
            &self.stats[1],
            &p.bn2,
            dz2,
            RowMap { stride: wp, off: 0 },
        )?;
        g.bn2 = (dw, db);
        g.conv_bias = dbias;
        drop(sp);
        let sp = span(BWD[3]);
        let dz2 = &self.dz2[..];
        // Branch weights: windowsᵀ · dz2 (column block j).
        for (j, &(k, o)) in BRANCHES.iter().enumerate() {
            let mut w = vec![0f32; k * f * f];
            mm_split_k(
                &mut w,
                View::rm(&self.ppad, o * f, b * wp, k * f)
                    .rs(STRIDE * f)
                    .t(),
                View::rm(dz2, j * f, b * wp, f).rs(3 * f),
            )?;
            g.conv[j] = w;
        }
        drop(sp);
        let sp = span(BWD[4]);
        // Branch inputs: per chunk of samples, columns dz2·Wᵀ then scattered back (col2im).
        let cw: usize = BRANCHES.iter().map(|(k, _)| k * f).sum();
        let dcols = grow(&mut self.dcols, b * wp * cw);
        // Zeroed chunk by chunk by the tasks that accumulate into it.
        let dppad = grow(&mut self.dppad, b * rp * f);
        let per = b.div_ceil(4 * rayon::current_num_threads()).max(1);
        dcols
            .par_chunks_mut(per * wp * cw)
            .zip(dppad.par_chunks_mut(per * rp * f))
            .enumerate()
            .try_for_each(|(ci, (cols, dp))| -> Result<()> {
                dp.fill(0.0);
                let ns = dp.len() / (rp * f);
                let mut col0 = 0;
                for (j, &(k, _)) in BRANCHES.iter().enumerate() {
                    mm(
                        cols,
                        Out::rm(col0, cw),
                        View::rm(dz2, (ci * per * wp) * 3 * f + j * f, ns * wp, f).rs(3 * f),
                        View::rm(&p.conv[j], 0, k * f, f).t(),
                        1.0,
                        false,
                        Parallelism::None,
                    )?;
                    col0 += k * f;
                }
                for si in 0..ns {
                    let dps = &mut dp[si * rp * f..(si + 1) * rp * f];
                    for t in 0..l1 {
                        let row = &cols[(si * wp + t) * cw..(si * wp + t + 1) * cw];
                        let mut col0 = 0;
                        for &(k, o) in &BRANCHES {
                            let dst = &mut dps[(STRIDE * t + o) * f..(STRIDE * t + o + k) * f];
                            for (a, v) in dst.iter_mut().zip(&row[col0..col0 + k * f]) {
                                *a += v;
                            }
                            col0 += k * f;
                        }
                    }
                }
                Ok(())
            })?;
        drop(sp);
        let sp = span(BWD[5]);
        // Fold the circular padding back: dy1 [B·d, F].
        let dy1 = grow(&mut self.dy1, b * d * f);
        dy1.par_chunks_mut(d * f)
            .zip(self.dppad.par_chunks(rp * f))
            .for_each(|(o, dp)| {
                o.copy_from_slice(&dp[PAD * f..(PAD + d) * f]);
                for (a, v) in o[(d - PAD) * f..].iter_mut().zip(&dp[..PAD * f]) {
                    *a += v;
                }
                for (a, v) in o[..PAD * f]
                    .iter_mut()
                    .zip(&dp[(PAD + d) * f..(2 * PAD + d) * f])
                {
                    *a += v;
                }
            });
        let dz1 = grow(&mut self.dz1, b * d * f);
        let proj_mask = self.drop.proj.map(|_| &self.mask1[..]);
        let (dw, db, dbias) = gelu_bn_bwd(
            &self.dy1,
            RowMap { stride: d, off: 0 },
            proj_mask,
            (b, d, f),
            &self.act1,
            &self.dact1,
            &self.stats[0],
            &p.bn1,
            dz1,
            RowMap { stride: d, off: 0 },
        )?;
        g.bn1 = (dw, db);
        g.bp = dbias;
        drop(sp);
        let sp = span(BWD[6]);
        // Attention and projection backward per sample.
        let na = dims.att();
        let nd = 6 * s * s + f * s;
        let datt = grow(&mut self.datt, b * nd);
        let rows = self.offs[b];
        let dy_parts = split_rows(grow(&mut self.dyc, rows * d), &self.lens, d);
        g.x = zeros(b * s * d);
        let (x, y, att, dz1) = (&self.x[..], &self.yc[..], &self.att[..], &self.dz1[..]);
        let (lens, offs) = (&self.lens[..], &self.offs[..]);
        let acc = datt
            .par_chunks_mut(nd)
            .zip(dy_parts.into_par_iter())
            .zip(g.x.par_chunks_mut(s * d))
            .enumerate()
            .map(|(bi, ((da, dyb), dxb))| {
                attention_bwd(
                    p,
                    &dims,
                    (x, y, dz1),
                    &att[bi * na..(bi + 1) * na],
                    (bi, lens[bi], offs[bi]),
                    da,
                    dyb,
                    dxb,
                )
            })
            .collect::<Result<Vec<AttAcc>>>()?
            .iter()
            .fold(AttAcc::zero(&dims), |mut a, o| {
                a.add(o);
                a
            });
        g.wp = acc.wp;
        g.w1 = acc.w1;
        g.g1 = acc.g1 as f32;
        g.g2 = acc.g2 as f32;
        drop(sp);
        let sp = span(BWD[7]);
        // Y = X W2ᵀ on the words' rows: dX += dY W2 (scattered back), dW2 = dYᵀ X.
        let dyc = &self.dyc[..];
        let dxc = grow(&mut self.dxc, rows * d);
        mm(
            dxc,
            Out::rm(0, d),
            View::rm(dyc, 0, rows, d),
            View::rm(&p.w2, 0, d, d),
            1.0,
            false,
            par_for(rows, d, d),
        )?;
        g.x.par_chunks_mut(s * d).enumerate().for_each(|(bi, gx)| {
            let src = &self.dxc[offs[bi] * d..offs[bi + 1] * d];
            for (a, v) in gx.iter_mut().zip(src) {
                *a += v;
            }
        });
        g.w2 = vec![0f32; d * d];
        mm(
            &mut g.w2,
            Out::rm(0, d),
            View::rm(dyc, 0, rows, d).t(),
            View::rm(&self.xc, 0, rows, d),
            1.0,
            false,
            par_for(d, d, rows),
        )?;
        drop(sp);
        let _sp = span(BWD[8]);
        if self.drop.embed.is_some() {
            let lens = &self.lens;
            g.x.par_chunks_mut(s * d)
                .zip(self.mask0.par_chunks(s * d))
                .enumerate()
                .for_each(|(bi, (o, m))| {
                    let n = lens[bi] * d;
                    o[..n].iter_mut().zip(&m[..n]).for_each(|(a, m)| *a *= m);
                });
        }
        Ok(g)
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

/// Per-sample attention and projection forward for text `bi` with `nb` words whose `Y` rows
/// start at row `off` of `y`; `a` is the sample's scratch, `z` its `[d, F]` projection output
/// (before bias). Products with the d axis use the word rows only (padding rows are zero).
fn attention_fwd(
    p: &Params,
    dm: &Dims,
    x: &[f32],
    y: &[f32],
    (bi, nb, off): (usize, usize, usize),
    a: &mut [f32],
    z: &mut [f32],
) -> Result<()> {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    let ss = s * s;
    let xb = View::rm(x, bi * s * d, nb, d);
    let yb = View::rm(y, off * d, nb, d);
    let none = Parallelism::None;
    let (am, rest) = a.split_at_mut(ss);
    let (aw1, rest) = rest.split_at_mut(ss);
    let (r, rest) = rest.split_at_mut(ss);
    let (n, rest) = rest.split_at_mut(ss);
    let (q, rest) = rest.split_at_mut(ss);
    let (pm, rest) = rest.split_at_mut(ss);
    let (m, t) = rest.split_at_mut(ss);
    am.fill(0.0);
    mm(am, Out::rm(0, s), xb, xb.t(), 1.0, false, none)?;
    mm(
        aw1,
        Out::rm(0, s),
        View::rm(am, 0, s, s),
        View::rm(&p.w1, 0, s, s),
        1.0,
        false,
        none,
    )?;
    for i in 0..s {
        for j in 0..s {
            r[i * s + j] = p.g1 * aw1[i * s + j] + if i == j { 1.0 } else { 0.0 };
        }
    }
    n.fill(0.0);
    mm(n, Out::rm(0, s), yb, xb.t(), 1.0, false, none)?;
    mm(
        q,
        Out::rm(0, s),
        View::rm(r, 0, s, s),
        View::rm(n, 0, s, s),
        1.0,
        false,
        none,
    )?;
    mm(
        pm,
        Out::rm(0, s),
        View::rm(q, 0, s, s),
        View::rm(r, 0, s, s),
        1.0,
        false,
        none,
    )?;
    for i in 0..ss {
        m[i] = r[i] + p.g2 * pm[i];
    }
    mm(
        t,
        Out::rm(0, s),
        View::rm(&p.wp, 0, f, s),
        View::rm(m, 0, s, s),
        1.0,
        false,
        none,
    )?;
    // z[i, c] = Σ_j X[j, i] T[c, j] over the word rows j < nb.
    let tw = View::rm(t, 0, f, s).block(f, nb);
    mm(z, Out::rm(0, f), xb.t(), tw.t(), 1.0, false, none)?;
    Ok(())
}

/// Per-sample sums of the attention backward (reduced over the batch).
struct AttAcc {
    wp: Vec<f32>,
    w1: Vec<f32>,
    g1: f64,
    g2: f64,
}

impl AttAcc {
    fn zero(dm: &Dims) -> Self {
        AttAcc {
            wp: vec![0.0; dm.f * dm.s],
            w1: vec![0.0; dm.s * dm.s],
            g1: 0.0,
            g2: 0.0,
        }
    }

    fn add(&mut self, o: &AttAcc) {
        self.wp.iter_mut().zip(&o.wp).for_each(|(a, b)| *a += b);
        self.w1.iter_mut().zip(&o.w1).for_each(|(a, b)| *a += b);
        self.g1 += o.g1;
        self.g2 += o.g2;
    }
}

/// Per-sample attention and projection backward: writes the sample's `dY` (its `nb` word rows)
/// and its part of `dX` (word rows; without the `Y = X W2ᵀ` term, which is one GEMM over the
/// batch afterwards).
#[allow(clippy::too_many_arguments)]
fn attention_bwd(
    p: &Params,
    dm: &Dims,
    (x, y, dz1): (&[f32], &[f32], &[f32]),
    a: &[f32],
    (bi, nb, off): (usize, usize, usize),
    da: &mut [f32],
    dyb: &mut [f32],
    dxb: &mut [f32],
) -> Result<AttAcc> {
    let (s, d, f) = (dm.s, dm.d, dm.f);
    let ss = s * s;
    let none = Parallelism::None;
    let sq = |i: usize| View::rm(a, i * ss, s, s);
    // Saved: A, AW1, R, N, Q, P, M, T.
    let (am, aw1, r, n, q, pm, m) = (0, 1, 2, 3, 4, 5, 6);
    let t = View::rm(a, 7 * ss, f, s);
    let tw = t.block(f, nb);
    let xb = View::rm(x, bi * s * d, nb, d);
    let yb = View::rm(y, off * d, nb, d);
    // dU (F×d): element (c, i) = dz1[(bi·d + i)·F + c].
    let du = View::strided(dz1, bi * d * f, (f, d), (1, f));
    let (dt, rest) = da.split_at_mut(f * s);
    let (dmm, rest) = rest.split_at_mut(ss);
    let (dr, rest) = rest.split_at_mut(ss);
    let (dq, rest) = rest.split_at_mut(ss);
    let (dn, rest) = rest.split_at_mut(ss);
    let (dam, das) = rest.split_at_mut(ss);
    let das = &mut das[..ss];
    let mut acc = AttAcc::zero(dm);
    dt.fill(0.0);
    mm(dt, Out::rm(0, s), du, xb.t(), 1.0, false, none)?;
    mm(dxb, Out::rm(0, d), tw.t(), du, 1.0, false, none)?;
    let dtv = View::rm(dt, 0, f, s);
    mm(&mut acc.wp, Out::rm(0, s), dtv, sq(m).t(), 1.0, false, none)?;
    mm(
        dmm,
        Out::rm(0, s),
        View::rm(&p.wp, 0, f, s).t(),
        dtv,
        1.0,
        false,
        none,
    )?;
    acc.g2 = dot(dmm, &a[pm * ss..(pm + 1) * ss]);
    // M = R + γ2 Q R: dQ = γ2 dM Rᵀ, dR = dM + γ2 Qᵀ dM.
    let dmv = View::rm(dmm, 0, s, s);
    mm(dq, Out::rm(0, s), dmv, sq(r).t(), p.g2, false, none)?;
    dr.copy_from_slice(dmm);
    mm(dr, Out::rm(0, s), sq(q).t(), dmv, p.g2, true, none)?;
    // Q = R N: dR += dQ Nᵀ, dN = Rᵀ dQ.
    let dqv = View::rm(dq, 0, s, s);
    mm(dr, Out::rm(0, s), dqv, sq(n).t(), 1.0, true, none)?;
    mm(dn, Out::rm(0, s), sq(r).t(), dqv, 1.0, false, none)?;
    // N = Y Xᵀ (word block): dY = dN X, dX += dNᵀ Y.
    let dnv = View::rm(dn, 0, s, s).block(nb, nb);
    mm(dyb, Out::rm(0, d), dnv, xb, 1.0, false, none)?;
    mm(dxb, Out::rm(0, d), dnv.t(), yb, 1.0, true, none)?;
    // R = I + γ1 A W1: dγ1 = ⟨dR, A W1⟩, dA = γ1 dR W1ᵀ, dW1 = γ1 Aᵀ dR.
    acc.g1 = dot(dr, &a[aw1 * ss..(aw1 + 1) * ss]);
    let drv = View::rm(dr, 0, s, s);
    mm(
        dam,
        Out::rm(0, s),
        drv,
        View::rm(&p.w1, 0, s, s).t(),
        p.g1,
        false,
        none,
    )?;
    mm(
        &mut acc.w1,
        Out::rm(0, s),
        sq(am).t(),
        drv,
        p.g1,
        false,
        none,
    )?;
    // A = X Xᵀ: dX += (dA + dAᵀ) X.
    for i in 0..s {
        for j in 0..s {
            das[i * s + j] = dam[i * s + j] + dam[j * s + i];
        }
    }
    let dav = View::rm(das, 0, s, s).block(nb, nb);
    mm(dxb, Out::rm(0, d), dav, xb, 1.0, true, none)?;
    Ok(acc)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

/// `BN(GELU(z + bias))` over `C` channels for `valid` rows per sample, then the optional
/// dropout `mask` (compact `[B·valid, C]` order), written to `out` at `om`. Training: batch
/// statistics (returned), `act`/`dact` (compact) kept for the backward. Evaluation: running
/// statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gelu_bn_fwd(
    z: &[f32],
    zm: RowMap,
    (b, valid, c): (usize, usize, usize),
    bias: &[f32],
    bn: &BnParams,
    train: bool,
    act: &mut [f32],
    dact: &mut [f32],
    out: &mut [f32],
    om: RowMap,
    mask: Option<&[f32]>,
) -> Result<BnStats> {
    let n = b * valid;
    if zm.off + valid > zm.stride || om.off + valid > om.stride {
        return Err(Error::Shape("fused encoder: row layout".into()));
    }
    let zrow = |si: usize, r: usize| &z[(si * zm.stride + zm.off + r) * c..][..c];
    let outs = out[..b * om.stride * c].par_chunks_mut(om.stride * c);
    let eps = crate::ops::gelu_bn::BN_EPS;
    if !train {
        let scale: Vec<f32> = (0..c)
            .map(|j| bn.weight[j] / (bn.running_var[j] as f64 + eps).sqrt() as f32)
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|j| bn.bias[j] - bn.running_mean[j] * scale[j])
            .collect();
        outs.enumerate().for_each(|(si, o)| {
            for r in 0..valid {
                let orow = &mut o[(om.off + r) * c..][..c];
                vmath::gelu_affine_row(zrow(si, r), bias, &scale, &shift, orow);
            }
        });
        return Ok(BnStats::default());
    }
    if n < 2 {
        return Err(Error::Shape(
            "BatchNorm in training needs more than one value per channel".into(),
        ));
    }
    // Pass 1: activations, derivatives, per-sample f32 sums added up in f64.
    let per_sample: Vec<Vec<f32>> = act
        .par_chunks_mut(valid * c)
        .zip(dact.par_chunks_mut(valid * c))
        .enumerate()
        .map(|(si, (ac, dc))| {
            let mut s12 = vec![0f32; 2 * c];
            let (s1, s2) = s12.split_at_mut(c);
            for r in 0..valid {
                vmath::gelu_grad_row(
                    zrow(si, r),
                    bias,
                    &mut ac[r * c..(r + 1) * c],
                    &mut dc[r * c..(r + 1) * c],
                    s1,
                    s2,
                );
            }
            s12
        })
        .collect();
    let sums = sum_in_order(&per_sample, 2 * c);
    let nf = n as f64;
    let mean: Vec<f64> = (0..c).map(|j| sums[j] / nf).collect();
    let var: Vec<f64> = (0..c)
        .map(|j| (sums[c + j] / nf - mean[j] * mean[j]).max(0.0))
        .collect();
    let inv: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v + eps).sqrt()) as f32)
        .collect();
    let scale: Vec<f32> = (0..c).map(|j| inv[j] * bn.weight[j]).collect();
    let shift: Vec<f32> = (0..c)
        .map(|j| bn.bias[j] - mean[j] as f32 * scale[j])
        .collect();
    let ones = vec![1f32; c];
    let act = &*act;
    // Pass 2: normalise, dropout, write in the next stage's layout.
    outs.enumerate().for_each(|(si, o)| {
        for r in 0..valid {
            let k = (si * valid + r) * c;
            let m = mask.map_or(&ones[..], |m| &m[k..k + c]);
            let orow = &mut o[(om.off + r) * c..][..c];
            vmath::affine_mask_row(&act[k..k + c], &scale, &shift, m, orow);
        }
    });
    Ok(BnStats {
        mean: mean.iter().map(|&m| m as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        n,
        inv,
    })
}

/// Backward of [`gelu_bn_fwd`] in training: `dz` written at `zm` (valid rows only); returns the
/// gradients of the BatchNorm weight and bias and of the pre-activation bias.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gelu_bn_bwd(
    dy: &[f32],
    ym: RowMap,
    mask: Option<&[f32]>,
    (b, valid, c): (usize, usize, usize),
    act: &[f32],
    dact: &[f32],
    st: &BnStats,
    bn: &BnParams,
    dz: &mut [f32],
    zm: RowMap,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let n = b * valid;
    if act.len() != n * c || st.n != n || zm.off + valid > zm.stride || ym.off + valid > ym.stride {
        return Err(Error::Shape(
            "fused encoder: BatchNorm backward without its forward".into(),
        ));
    }
    let (mean, inv) = (&st.mean, &st.inv);
    let ones = vec![1f32; c];
    let dyrow = |si: usize, r: usize| &dy[(si * ym.stride + ym.off + r) * c..][..c];
    let mrow = |k: usize| mask.map_or(&ones[..], |m| &m[k..k + c]);
    // Σ dy·x̂ and Σ dy per channel.
    let per_sample: Vec<Vec<f32>> = (0..b)
        .into_par_iter()
        .map(|si| {
            let mut t12 = vec![0f32; 2 * c];
            let (t1, t2) = t12.split_at_mut(c);
            for r in 0..valid {
                let k = (si * valid + r) * c;
                vmath::bn_sums_row(dyrow(si, r), mrow(k), &act[k..k + c], mean, inv, t1, t2);
            }
            t12
        })
        .collect();
    let sums = sum_in_order(&per_sample, 2 * c);
    let nf = n as f64;
    let k1: Vec<f32> = (0..c).map(|j| bn.weight[j] * inv[j]).collect();
    let m_dy: Vec<f32> = (0..c).map(|j| (sums[c + j] / nf) as f32).collect();
    let m_dyx: Vec<f32> = (0..c).map(|j| (sums[j] / nf) as f32).collect();
    let coef = BnBack {
        mean,
        inv,
        k1: &k1,
        m_dy: &m_dy,
        m_dyx: &m_dyx,
    };
    let per_sample: Vec<Vec<f32>> = dz
        .par_chunks_mut(zm.stride * c)
        .take(b)
        .enumerate()
        .map(|(si, o)| {
            let mut zs = vec![0f32; c];
            for r in 0..valid {
                let k = (si * valid + r) * c;
                let orow = &mut o[(zm.off + r) * c..][..c];
                vmath::bn_grad_row(
                    dyrow(si, r),
                    mrow(k),
                    &act[k..k + c],
                    &dact[k..k + c],
                    &coef,
                    orow,
                    &mut zs,
                );
            }
            zs
        })
        .collect();
    let zsum = sum_in_order(&per_sample, c);
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok((f32s(&sums[..c]), f32s(&sums[c..]), f32s(&zsum)))
}

/// Per-sample partial sums added up in f64 in sample order (not in the order threads finish),
/// so that results do not depend on scheduling: training runs are reproducible bit for bit.
fn sum_in_order(parts: &[Vec<f32>], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n];
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += *v as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rnd(rng: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-a..a)).collect()
    }

    fn bn(rng: &mut ChaCha8Rng, c: usize) -> BnParams {
        BnParams {
            weight: (0..c).map(|_| rng.gen_range(0.5..1.5)).collect(),
            bias: rnd(rng, c, 0.3),
            running_mean: rnd(rng, c, 0.3),
            running_var: (0..c).map(|_| rng.gen_range(0.5..1.5)).collect(),
        }
    }

    fn params(dm: &Dims, rng: &mut ChaCha8Rng) -> Params {
        let (s, d, f) = (dm.s, dm.d, dm.f);
        Params {
            w1: rnd(rng, s * s, 0.4),
            g1: 0.3,
            w2: rnd(rng, d * d, 0.15),
            g2: -0.2,
            wp: rnd(rng, f * s, 0.5),
            bp: rnd(rng, f, 0.2),
            bn1: bn(rng, f),
            conv: [
                rnd(rng, 4 * f * f, 0.4),
                rnd(rng, 8 * f * f, 0.3),
                rnd(rng, 16 * f * f, 0.2),
            ],
            conv_bias: rnd(rng, 3 * f, 0.2),
            bn2: bn(rng, 3 * f),
            fin: rnd(rng, K * 3 * f * f, 0.1),
            fin_bias: rnd(rng, f, 0.2),
            bn3: bn(rng, f),
        }
    }

    /// Text lengths of the finite-difference batch: full, partly padded, empty.
    const LENS: [usize; 3] = [5, 3, 0];

    /// Loss Σ h·r in f64 for the training forward.
    fn loss(p: &Params, dm: Dims, x: &[f32], drop: Dropouts, r: &[f32]) -> f64 {
        let h = Workspace::new()
            .forward(p, dm, x, &LENS, drop, true)
            .unwrap();
        h.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Every gradient of the fused backward against central differences of the fused forward
    /// (training mode, with and without dropout), on a small encoder with every parameter
    /// and both attention scales non-zero.
    #[test]
    fn gradients_match_finite_differences() {
        let dm = Dims::new(3, 5, 68, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let p = params(&dm, &mut rng);
        let mut x = rnd(&mut rng, dm.b * dm.s * dm.d, 0.8);
        for (t, &n) in LENS.iter().enumerate() {
            x[(t * dm.s + n) * dm.d..(t + 1) * dm.s * dm.d].fill(0.0);
        }
        let r = rnd(&mut rng, dm.b * dm.out_dim(), 1.0);
        for drop in [
            Dropouts::default(),
            Dropouts {
                embed: Some((0.25, 1)),
                proj: Some((0.25, 2)),
                merge: Some((0.25, 3)),
            },
        ] {
            let mut ws = Workspace::new();
            ws.forward(&p, dm, &x, &LENS, drop, true).unwrap();
            let g = ws.backward(&p, &r).unwrap();
            let mut worst = 0f64;
            let mut check =
                |name: &str, analytic: f32, set: &dyn Fn(&mut Params, &mut Vec<f32>, f32)| {
                    let central = |eps: f32| {
                        let (mut pp, mut xp) = (p.clone(), x.clone());
                        set(&mut pp, &mut xp, eps);
                        let up = loss(&pp, dm, &xp, drop, &r);
                        let (mut pm, mut xm) = (p.clone(), x.clone());
                        set(&mut pm, &mut xm, -eps);
                        let down = loss(&pm, dm, &xm, drop, &r);
                        (up - down) / (2.0 * eps as f64)
                    };
                    // Richardson extrapolation removes the O(eps²) term of the central difference.
                    let fd = (4.0 * central(4e-3) - central(8e-3)) / 3.0;
                    let err =
                        (fd - analytic as f64).abs() / (fd.abs().max(analytic.abs() as f64) + 0.05);
                    assert!(
                        err < 4e-3,
                        "{name}: finite difference {fd}, backward {analytic}"
                    );
                    worst = worst.max(err);
                    if std::env::var_os("FD_VERBOSE").is_some() {
                        eprintln!("{name} fd {fd:.6} bwd {analytic:.6} err {err:.2e}");
                    }
                };
            // Word rows of texts 0 and 1 (text 1: rows 0..3 of 5, d = 68).
            for i in [0, 17, 333, 340 + 100, 340 + 2 * 68 + 5] {
                check("x", g.x[i], &|_, x, e| x[i] += e);
            }
            for i in [0, 7, 24] {
                check("w1", g.w1[i], &|p, _, e| p.w1[i] += e);
            }
            for i in [0, 1234, 4000] {
                check("w2", g.w2[i], &|p, _, e| p.w2[i] += e);
            }
            check("g1", g.g1, &|p, _, e| p.g1 += e);
            check("g2", g.g2, &|p, _, e| p.g2 += e);
            for i in [0, 8, 14] {
                check("wp", g.wp[i], &|p, _, e| p.wp[i] += e);
            }
            check("bp", g.bp[1], &|p, _, e| p.bp[1] += e);
            for j in 0..3 {
                for i in [0, 5, 30] {
                    check("conv", g.conv[j][i], &|p, _, e| p.conv[j][i] += e);
                }
            }
            check("conv bias", g.conv_bias[4], &|p, _, e| p.conv_bias[4] += e);
            for i in [0, 77, 140] {
                check("final", g.fin[i], &|p, _, e| p.fin[i] += e);
            }
            check("final bias", g.fin_bias[2], &|p, _, e| p.fin_bias[2] += e);
            check("bn1 w", g.bn1.0[0], &|p, _, e| p.bn1.weight[0] += e);
            check("bn1 b", g.bn1.1[1], &|p, _, e| p.bn1.bias[1] += e);
            check("bn2 w", g.bn2.0[5], &|p, _, e| p.bn2.weight[5] += e);
            check("bn2 b", g.bn2.1[2], &|p, _, e| p.bn2.bias[2] += e);
            check("bn3 w", g.bn3.0[1], &|p, _, e| p.bn3.weight[1] += e);
            check("bn3 b", g.bn3.1[0], &|p, _, e| p.bn3.bias[0] += e);
            eprintln!("worst relative error {worst:.2e}");
        }
    }

    #[test]
    fn backward_needs_a_training_forward_and_shapes_are_checked() {
        let dm = Dims::new(2, 4, 64, 2).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = params(&dm, &mut rng);
        let x = rnd(&mut rng, 2 * 4 * 64, 1.0);
        let mut ws = Workspace::new();
        assert!(ws.backward(&p, &[0.0; 4]).is_err());
        let lens = [4, 4];
        let h = ws
            .forward(&p, dm, &x, &lens, Dropouts::default(), false)
            .unwrap();
        assert_eq!(h.len(), 2 * dm.out_dim());
        assert!(
            ws.backward(&p, &h).is_err(),
            "evaluation forward has no tape"
        );
        assert!(ws
            .forward(&p, dm, &x[1..], &lens, Dropouts::default(), true)
            .is_err());
        assert!(ws
            .forward(&p, dm, &x, &[4, 5], Dropouts::default(), true)
            .is_err());
        assert!(ws
            .forward(&p, dm, &x, &[4], Dropouts::default(), true)
            .is_err());
        let mut bad = p.clone();
        bad.fin.pop();
        assert!(ws
            .forward(&bad, dm, &x, &lens, Dropouts::default(), true)
            .is_err());
        assert!(Dims::new(2, 4, 40, 2).is_err());
    }
}

//! Ops, by kind:
//!
//! - candle ops, each one type with its CPU kernel and (with the `cuda` feature) its CUDA
//!   kernel side by side: numerically stable BCE-with-logits ([`bce`]), InceptionXML+'s
//!   candidate scoring with a sparse table gradient ([`candidates`]), GELU ([`gelu`]), GELU +
//!   BatchNorm ([`gelu_bn`]), im2col ([`im2col`]), seeded dropout ([`dropout`]);
//! - [`host`]: kernels on plain host slices, outside candle, that the fused CPU paths are made
//!   of (the whole encoder, the heads' hidden layers, the blocked classifier + BCE, GEMMs,
//!   vectorised row kernels), with one SIMD dispatch.
//!
//! The Adam kernels live with their optimisers in [`crate::optim`]; `cuda` (with the feature)
//! holds the launch helpers and the compiled kernels that every CUDA path uses.

pub mod bce;
pub mod candidates;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod dropout;
pub mod gelu;
pub mod gelu_bn;
pub mod host;
pub mod im2col;
pub(crate) mod storage;

pub use bce::{bce_with_logits, bce_with_logits_masked, stable_sigmoid};
pub use candidates::{candidate_logits, CandidatePlan, TableGrad};

//! Fused ops, each one type with its CPU kernel (and, with the `cuda` feature, its CUDA kernel)
//! side by side: numerically stable BCE-with-logits, InceptionXML+'s candidate scoring with a
//! sparse table gradient, GELU + BatchNorm, im2col, seeded dropout, SIMD dot/axpy. The Adam
//! kernels live with their optimisers in [`crate::optim`]; `cuda` (with the feature) holds the launch helpers
//! and the compiled kernels that every CUDA path uses.

pub mod bce;
pub mod bn_hidden;
pub mod candidates;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod dropout;
pub mod encoder;
pub mod gelu;
pub mod gelu_bn;
pub mod im2col;
pub mod linear_bce;
pub(crate) mod mm;
pub mod residual_hidden;
pub mod simd;
pub(crate) mod storage;
pub mod vmath;

pub use bce::{bce_with_logits, bce_with_logits_masked, stable_sigmoid};
pub use candidates::{candidate_logits, CandidatePlan, TableGrad};

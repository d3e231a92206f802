//! Fused ops: numerically stable BCE-with-logits, in-place dense Adam, lazy row Adam for big
//! tables, InceptionXML+'s candidate scoring with a sparse table gradient, SIMD dot/axpy.

pub mod adam;
pub mod bce;
pub mod candidates;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(all(test, kernel_emulation))]
mod emulation;
pub mod row_adam;
pub mod simd;
pub(crate) mod storage;

pub use adam::{Adam, AdamConsts};
pub use bce::{bce_with_logits, bce_with_logits_masked, stable_sigmoid};
pub use candidates::{candidate_logits, CandidatePlan, TableGrad};
pub use row_adam::{RowAdam, RowGroups, PAD_ROW};

//! `inceptionxml`: InceptionXML and InceptionXML+ for short-text extreme multi-label
//! classification, on candle. The framework-free parts (formats, text, metrics, clustering) live
//! in the `xmc` crate and are re-exported here.
//!
//! Each module has one job; dependencies point down this list only:
//!
//! | module | job |
//! |---|---|
//! | [`train`] | a training run: setup, steps, evaluation, reports, checkpoints |
//! | [`predict`] | ranking: one entry point; exact, int8 index and ensemble paths |
//! | [`model_dir`] | the model directory on disk: atomic writes, validated loads |
//! | [`optim`] | dense Adam, lazy row Adam, the one-cycle schedule |
//! | [`model`] | the layers and `InceptionXml` |
//! | [`ops`] | fused ops (CPU and CUDA kernels side by side) |
//! | [`config`] | every hyper-parameter, one default each, presets, `validate()` |
//! | [`device`], [`runtime`], [`error`] | device selection, process tuning, the error type |

pub mod config;
pub mod device;
pub mod error;
pub mod model;
pub mod model_dir;
pub mod ops;
pub mod optim;
pub mod predict;
pub mod profile;
pub mod runtime;
pub mod train;

// The CUDA kernels run as C++ on the host against the CPU kernels (ops and optimisers alike).
#[cfg(all(test, kernel_emulation))]
mod emulation;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use xmc;

//! `inceptionxml`: InceptionXML and InceptionXML+ for short-text extreme multi-label
//! classification, on candle. The framework-free parts (formats, text, metrics, clustering) live
//! in the `xmc` crate and are re-exported here.
//!
//! ## Quick start
//!
//! Train on a dataset folder in the Extreme Classification Repository layout, load the model
//! directory, rank labels for texts:
//!
//! ```no_run
//! # fn main() -> inceptionxml::Result<()> {
//! use inceptionxml::{Model, TrainOptions};
//!
//! let data = inceptionxml::xmc::dataset::XcDataset::open("data/cooking")?;
//! inceptionxml::train(&data, "runs/demo", &TrainOptions { force: true, ..Default::default() })?;
//!
//! let m = Model::load("runs/demo")?;
//! let top = m.predict(&["boil an egg"], 5)?;
//! for s in &top[0] {
//!     println!("{} {:.3}", s.label, s.score);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same, run as a test on a small slice of the bundled data:
//!
//! ```
//! # fn main() -> inceptionxml::Result<()> {
//! use inceptionxml::{Model, PredictOptions, TrainOptions};
//!
//! let data = inceptionxml::xmc::dataset::XcDataset::open("../../data/cooking")?;
//! let dir = std::env::temp_dir().join(format!("ixml-doctest-{}", std::process::id()));
//! let opts = TrainOptions {
//!     epochs: Some(1),
//!     max_train: Some(512),
//!     dim: Some(64),
//!     force: true,
//!     ..Default::default()
//! };
//! let summary = inceptionxml::train(&data, &dir, &opts)?;
//! assert_eq!(summary.epochs_done, 1);
//!
//! let m = Model::load(&dir)?;
//! let top = m.predict(&["how long to boil an egg", "sourdough starter"], 5)?;
//! assert_eq!(top.len(), 2);
//! assert!(top[0].windows(2).all(|w| w[0].score >= w[1].score));
//! // Label ids and scores only (the sparse XC format), in batches of 64:
//! let rows = m.rank(&["knife sharpening"], 3, &PredictOptions { batch_size: 64, ..Default::default() })?;
//! assert_eq!(rows[0].len(), 3);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Several directories make an ensemble: `Model::load_with(&[a, b], &LoadOptions::default())`.
//!
//! ## Modules
//!
//! Each module has one job; dependencies point down this list only (a module imports only
//! modules below it; `scripts/module_cycles.py` checks it):
//!
//! | module | job |
//! |---|---|
//! | [`api`] | the facade: [`Model`], [`train()`], options with defaults |
//! | [`mod@train`] | a training run: setup, steps, evaluation, reports, checkpoints |
//! | [`predict`] | ranking: one entry point; exact, int8 index and ensemble paths |
//! | [`model_dir`] | the model directory on disk: atomic writes, validated loads |
//! | [`optim`] | dense Adam, lazy row Adam, the one-cycle schedule; bound to variables, not the model |
//! | [`model`] | the layers and `InceptionXml` |
//! | [`config`] | every hyper-parameter, one default each, presets, `validate()` |
//! | [`ops`] | fused ops (CPU and CUDA kernels side by side) and host kernels |
//! | [`device`], [`runtime`], [`profile`], [`error`] | device selection, process tuning, stage timers, the error type |

pub mod api;
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
#[cfg(test)]
mod testing;

pub use api::{
    train, train_interruptible, train_with, Explained, LoadOptions, Model, PredictOptions,
    SparseMode, Suggestion, TrainOptions, WordWeight,
};
pub use config::ScoreMode;
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use xmc;

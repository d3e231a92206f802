//! The facade: what the command line, the HTTP server and the Python package go through.
//!
//! | item | job |
//! |---|---|
//! | [`Model`] | load a model directory (or an ensemble of several), rank texts, name the labels |
//! | [`train()`], [`train_with`] | train or resume a model directory from a dataset, with the CLI's defaults |
//! | [`TrainOptions`], [`LoadOptions`], [`PredictOptions`] | options as structs with defaults |
//!
//! It sits above [`mod@crate::train`] and [`crate::predict`] and sets up the process itself
//! ([`crate::runtime::init_threads`]: the thread pool, subnormals flushed to zero).

mod model;
mod train;

pub use crate::predict::{Explained, WordWeight};
pub use model::{LoadOptions, Model, PredictOptions, Suggestion};
pub use train::{
    train, train_interruptible, train_with, SparseMode, TrainDefaults, TrainOptions,
    DEFAULT_CORPUS_VECTORS, DEFAULT_SUBWORDS,
};

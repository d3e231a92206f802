//! The crate's single error type.

/// Every failure the `inceptionxml` library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data, format or parameter error from the framework-free layer.
    #[error(transparent)]
    Xmc(#[from] xmc::Error),
    /// A tensor-engine failure.
    #[error("tensor engine: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model directory whose files disagree with each other or with the data.
    #[error("model {path}: {msg}")]
    Model { path: String, msg: String },
    /// A hyper-parameter out of range.
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

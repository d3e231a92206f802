//! The crate's single error type: one variant per kind of failure, so callers can tell a bad
//! parameter from a diverged run or a corrupt model directory.

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
    /// A hyper-parameter out of range (checked before anything is allocated).
    #[error("invalid parameter: {0}")]
    Config(String),
    /// An input of the wrong shape or length (ids, gradients, tables).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An operation that needs the other kind of model (InceptionXML vs InceptionXML+).
    #[error("wrong model kind: {0}")]
    WrongModelKind(String),
    /// The training loss became non-finite.
    #[error("loss diverged ({loss}) at step {step}; try a smaller --lr")]
    Diverged { step: u64, loss: f32 },
    /// The background thread that builds an epoch's batches failed (it panicked, or stopped
    /// before the epoch's last batch): the epoch is not complete and is never saved as done.
    #[error("batch loader: {0}")]
    BatchLoader(String),
    /// A model that produced a non-finite score (NaN or infinite weights): reported, never
    /// written.
    #[error("row {row}: the model produced a non-finite score")]
    NonFinite { row: usize },
    /// A resumed run given options that differ from the saved run's, each as `name given
    /// (saved value)` (names are [`crate::TrainOptions`]'s fields).
    #[error(
        "resuming continues the saved run with its own settings; these options would change it: {}",
        .0.join(", ")
    )]
    ChangedOnResume(Vec<String>),
    /// No training rows to learn from.
    #[error("no training rows")]
    NoTrainingRows,
    /// A CUDA device asked of a build without the `cuda` feature.
    #[error(
        "device {device}: this binary was built without CUDA support; rebuild it with \
         `cargo build --release --features cuda` (scripts/cuda-toolchain.sh installs the toolkit)"
    )]
    NotBuiltWithCuda { device: String },
    /// A device that cannot be named or opened.
    #[error("device {0}")]
    Device(String),
    /// Training was asked to stop ([`crate::train::TrainJob::stop`]) between two steps; the
    /// model directory holds the last checkpoint, which `resume` continues.
    #[error("interrupted: the model directory keeps its last checkpoint (resume continues it)")]
    Interrupted,
    /// A lock held by a thread that panicked.
    #[error("internal: {0} lock poisoned")]
    Poisoned(&'static str),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

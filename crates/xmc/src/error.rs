//! The crate's single error type.
//!
//! Data errors carry the file and the 1-based line they were found on, so that every message
//! printed to a user names where to look: `path/to/trn_X_Y.txt:17: label index 900 >= 736 columns`.

use std::path::{Path, PathBuf};

/// Every failure the `xmc` crate reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's content is malformed at a given 1-based line.
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// The file is well-formed but disagrees with something else (another file, a model).
    #[error("{}: {msg}", path.display())]
    Mismatch { path: PathBuf, msg: String },
    /// A hyper-parameter or argument is out of its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// Two in-memory objects disagree in shape (rows, columns, lengths).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A long computation was asked to stop (Ctrl-C) before it finished.
    #[error("interrupted")]
    Interrupted,
}

/// The longest message an error about a file's content carries, in bytes.
pub const MAX_MESSAGE: usize = 400;

/// `msg` cut to at most [`MAX_MESSAGE`] bytes (at a character boundary), saying how much was
/// left out.
pub fn shorten(mut msg: String) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let total = msg.len();
    let mut cut = MAX_MESSAGE;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    msg.truncate(cut);
    msg.push_str(&format!("… ({} more bytes)", total - cut));
    msg
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A parse error on line `line` (1-based) of `path`. The message is cut to
    /// [`MAX_MESSAGE`] bytes ([`shorten`]): it may quote the input, which can be a line of
    /// megabytes.
    pub fn parse(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            msg: shorten(msg.into()),
        }
    }

    /// A file whose content disagrees with something else (the message cut as in
    /// [`Error::parse`]).
    pub fn mismatch(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Mismatch {
            path: path.as_ref().to_path_buf(),
            msg: shorten(msg.into()),
        }
    }

    /// An invalid parameter.
    pub fn param(msg: impl Into<String>) -> Self {
        Error::InvalidParam(msg.into())
    }
}

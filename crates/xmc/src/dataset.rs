//! TEMP stand-in (the real module lands from the integrator).

use std::path::Path;

use crate::error::{Error, Result};
use crate::sparse::SparseMatrix;
use crate::texts::read_texts;

/// Texts and their labels.
pub struct Split {
    pub texts: Vec<String>,
    pub labels: SparseMatrix,
}

/// An Extreme Classification Repository folder.
pub struct XcDataset {
    pub train: Split,
    pub test: Option<Split>,
    pub label_names: Option<Vec<String>>,
    pub n_labels: usize,
}

fn split(dir: &Path, p: &str) -> Result<Split> {
    let texts = read_texts(dir.join(format!("{p}_X.txt")))?;
    let yp = dir.join(format!("{p}_X_Y.txt"));
    let labels = SparseMatrix::read(&yp)?;
    if labels.n_rows != texts.len() {
        return Err(Error::mismatch(yp, "row count differs from texts"));
    }
    Ok(Split { texts, labels })
}

impl XcDataset {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let train = split(dir, "trn")?;
        let test = if dir.join("tst_X.txt").exists() {
            Some(split(dir, "tst")?)
        } else {
            None
        };
        let n_labels = train.labels.n_cols;
        let label_names = read_texts(dir.join("Y.txt")).ok();
        Ok(XcDataset {
            train,
            test,
            label_names,
            n_labels,
        })
    }
}

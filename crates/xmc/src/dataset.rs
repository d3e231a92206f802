//! A dataset folder in the Extreme Classification Repository layout:
//!
//! | file | content | required |
//! |---|---|---|
//! | `trn_X.txt` | training texts, one per line | yes |
//! | `trn_X_Y.txt` | training labels, sparse format (`rows L` header) | yes |
//! | `tst_X.txt`, `tst_X_Y.txt` | test texts and labels | both or neither |
//! | `Y.txt` | label names, one per line (line i = label i) | no |
//! | `Y.tsv` | label URIs: Annif's subject vocabulary, `<URI>\tlabel` per line, label order | no |
//!
//! Opening checks that texts and labels have the same number of rows, that the test labels have the
//! same label count as the training labels, and that `Y.txt` and `Y.tsv` name exactly L labels.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::io::{build_folder, write_atomic};
use crate::labels::Labels;
use crate::sparse::SparseMatrix;
use crate::texts::read_texts;

/// Texts and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub texts: Vec<String>,
    pub labels: SparseMatrix,
}

impl Split {
    /// Reads `texts` and `labels` and checks they have the same number of rows.
    pub fn read(texts: &Path, labels: &Path) -> Result<Split> {
        let (t, l) = rayon::join(|| read_texts(texts), || SparseMatrix::read(labels));
        // A label entry with a value <= 0 is not a positive (xmc::sparse::SparseMatrix::positives).
        let (texts_v, labels_m) = (t?, l?.positives());
        if texts_v.len() != labels_m.n_rows {
            return Err(Error::mismatch(
                labels,
                format!(
                    "{} label rows but {} has {} texts",
                    labels_m.n_rows,
                    texts.display(),
                    texts_v.len()
                ),
            ));
        }
        Ok(Split {
            texts: texts_v,
            labels: labels_m,
        })
    }

    /// Texts and labels from memory (the Python package's `train(texts=…, labels=…)`): the
    /// label matrix must have one row per text; entries with a value <= 0 are not positives,
    /// as in a file.
    pub fn new(texts: Vec<String>, labels: SparseMatrix) -> Result<Split> {
        if texts.len() != labels.n_rows {
            return Err(Error::Shape(format!(
                "{} label rows for {} texts",
                labels.n_rows,
                texts.len()
            )));
        }
        Ok(Split {
            texts,
            labels: labels.positives(),
        })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The rows `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Split {
        Split {
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            labels: self.labels.select_rows(rows),
        }
    }

    /// A seeded validation hold-out of `fraction` of the rows, checked by
    /// [`check_valid_fraction`] (the rule `train --valid-fraction` and `split` share):
    /// `(rest, held_out)`, each in file order.
    pub fn hold_out_valid(&self, fraction: f64, seed: u64) -> Result<(Split, Split)> {
        check_valid_fraction(self.len(), fraction)?;
        self.hold_out(fraction, seed)
    }

    /// A seeded hold-out ([`split`]): `(rest, held_out)`, each in file order;
    /// `held_out` has `round(len · fraction)` rows.
    pub fn hold_out(&self, fraction: f64, seed: u64) -> Result<(Split, Split)> {
        let (rest, held) = split(self.len(), fraction, seed)?;
        Ok((self.select(&rest), self.select(&held)))
    }

    /// Writes `{prefix}_X.txt` and `{prefix}_X_Y.txt` in `dir`.
    pub fn write(&self, dir: &Path, prefix: &str) -> Result<()> {
        if let Some(i) = self.texts.iter().position(|t| t.contains(['\n', '\r'])) {
            return Err(Error::param(format!("text {i} contains a line break")));
        }
        write_atomic(dir.join(format!("{prefix}_X.txt")), |f| {
            self.texts.iter().try_for_each(|t| writeln!(f, "{t}"))
        })?;
        self.labels.write(dir.join(format!("{prefix}_X_Y.txt")))
    }
}

/// A dataset folder: the training split, an optional test split and optional label names.
#[derive(Debug, Clone)]
pub struct XcDataset {
    pub dir: PathBuf,
    pub train: Split,
    pub test: Option<Split>,
    pub label_names: Option<Vec<String>>,
    /// `Y.tsv`: the labels' URIs (and names), when given.
    pub label_uris: Option<Labels>,
    pub n_labels: usize,
}

impl XcDataset {
    /// Opens and validates the folder `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<XcDataset> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "dataset folder not found"),
            ));
        }
        let train = Split::read(&dir.join("trn_X.txt"), &dir.join("trn_X_Y.txt"))?;
        let n_labels = train.labels.n_cols;
        let (tx, ty) = (dir.join("tst_X.txt"), dir.join("tst_X_Y.txt"));
        let test = match (tx.exists(), ty.exists()) {
            (true, true) => {
                let s = Split::read(&tx, &ty)?;
                if s.labels.n_cols != n_labels {
                    return Err(Error::mismatch(
                        &ty,
                        format!("{} labels but trn_X_Y.txt has {n_labels}", s.labels.n_cols),
                    ));
                }
                Some(s)
            }
            (false, false) => None,
            (true, false) => return Err(Error::mismatch(&tx, "tst_X_Y.txt is missing beside it")),
            (false, true) => return Err(Error::mismatch(&ty, "tst_X.txt is missing beside it")),
        };
        let yp = dir.join("Y.txt");
        let label_names = if yp.exists() {
            let names = read_texts(&yp)?;
            if names.len() != n_labels {
                return Err(Error::mismatch(
                    &yp,
                    format!(
                        "{} label names but trn_X_Y.txt has {n_labels} labels",
                        names.len()
                    ),
                ));
            }
            Some(names)
        } else {
            None
        };
        let up = dir.join("Y.tsv");
        let label_uris = if up.exists() {
            let l = Labels::read_tsv(&up)?;
            l.check_len(n_labels, &up)?;
            Some(l)
        } else {
            None
        };
        Ok(XcDataset {
            dir,
            train,
            test,
            label_names,
            label_uris,
            n_labels,
        })
    }

    /// A dataset held in memory (no folder): the same checks as [`XcDataset::open`] (the test
    /// split scores as many labels as the training split; `labels`, when given, names each of
    /// them). Errors name the in-memory argument instead of a file.
    pub fn from_memory(train: Split, test: Option<Split>, labels: Option<Labels>) -> Result<Self> {
        let n_labels = train.labels.n_cols;
        if let Some(t) = &test {
            if t.labels.n_cols != n_labels {
                return Err(Error::Shape(format!(
                    "the test labels have {} columns but the training labels {n_labels}",
                    t.labels.n_cols
                )));
            }
        }
        if let Some(l) = &labels {
            if l.len() != n_labels {
                return Err(Error::Shape(format!(
                    "{} label names for {n_labels} label columns",
                    l.len()
                )));
            }
        }
        let has_uris = labels
            .as_ref()
            .is_some_and(|l| l.uris.iter().any(Option::is_some));
        Ok(XcDataset {
            dir: PathBuf::from("<memory>"),
            train,
            test,
            label_names: labels.as_ref().map(|l| l.names.clone()),
            label_uris: labels.filter(|_| has_uris),
            n_labels,
        })
    }

    /// Writes the seeded hold-out of the training split ([`Split::hold_out`]) as the new dataset
    /// folder `out`: `trn_*` the rows kept for training, `tst_*` the `round(n · fraction)` rows held
    /// out, and the label files (`Y.txt`, `Y.tsv`) as they are. With the seed `train` uses, these
    /// are exactly its validation rows. Returns the row counts `(kept, held)`.
    pub fn write_hold_out(&self, out: &Path, fraction: f64, seed: u64) -> Result<(usize, usize)> {
        if fraction <= 0.0 {
            return Err(Error::param(format!(
                "valid fraction {fraction}: must be above 0"
            )));
        }
        let (rest, held) = self.train.hold_out_valid(fraction, seed)?;
        build_folder(out, |tmp| {
            rest.write(tmp, "trn")?;
            held.write(tmp, "tst")?;
            for name in ["Y.txt", "Y.tsv"] {
                let from = self.dir.join(name);
                if from.exists() {
                    std::fs::copy(&from, tmp.join(name)).map_err(|e| Error::io(&from, e))?;
                }
            }
            Ok((rest.len(), held.len()))
        })
    }

    /// Every label's name (from `Y.txt`, else `Y.tsv`, else its index) and URI (from `Y.tsv`).
    pub fn labels(&self) -> Labels {
        let mut l = match (&self.label_names, &self.label_uris) {
            (Some(n), _) => Labels::from_names(n.clone()),
            (None, Some(u)) => u.clone(),
            (None, None) => Labels::numbered(self.n_labels),
        };
        if let Some(u) = &self.label_uris {
            l.uris = u.uris.clone();
        }
        l
    }
}

/// The largest share of the training rows a validation hold-out may take.
pub const MAX_VALID_FRACTION: f64 = 0.5;

/// The one rule for a validation hold-out of `fraction` of `n` training rows (`train
/// --valid-fraction`, `split`): 0 is none; otherwise a share up to [`MAX_VALID_FRACTION`] that
/// holds out at least one row. Returns the rows held out.
pub fn check_valid_fraction(n: usize, fraction: f64) -> Result<usize> {
    if !(0.0..=MAX_VALID_FRACTION).contains(&fraction) {
        return Err(Error::param(format!(
            "valid fraction {fraction} outside [0, {MAX_VALID_FRACTION}]"
        )));
    }
    let held = n_held_out(n, fraction);
    if fraction > 0.0 && held == 0 {
        return Err(Error::param(format!(
            "valid fraction {fraction} of {n} training rows holds out no row: use 0 for no \
             validation split, or at least {:.2e}",
            0.5 / n.max(1) as f64
        )));
    }
    Ok(held)
}

/// How many of `n` rows [`split`] puts in the test (held-out) part at `test_fraction`
/// (rounded; never more than `n`).
pub fn n_held_out(n: usize, test_fraction: f64) -> usize {
    ((n as f64 * test_fraction).round().max(0.0) as usize).min(n)
}

/// The row indices of a seeded split: `(train, test)`, each in file order; the test split holds
/// `round(n · test_fraction)` rows.
pub fn split(n: usize, test_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(Error::param(format!(
            "test fraction {test_fraction} outside [0, 1)"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_test = n_held_out(n, test_fraction);
    let mut test = order[..n_test].to_vec();
    let mut train = order[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, s: &str) {
        fs::write(dir.join(name), s).unwrap();
    }

    #[test]
    fn opens_a_valid_folder() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "trn_X.txt", "a b\nc\n");
        write(d.path(), "trn_X_Y.txt", "2 3\n0:1\n1:1 2:1\n");
        write(d.path(), "tst_X.txt", "d\n");
        write(d.path(), "tst_X_Y.txt", "1 3\n2:1\n");
        write(d.path(), "Y.txt", "x\ny\nz\n");
        let ds = XcDataset::open(d.path()).unwrap();
        assert_eq!(ds.n_labels, 3);
        assert_eq!(ds.train.len(), 2);
        assert_eq!(ds.test.as_ref().map(|s| s.len()), Some(1));
        assert_eq!(ds.label_names.unwrap()[2], "z");
    }

    #[test]
    fn a_dataset_from_memory_is_checked_like_a_folder() {
        let texts = || vec!["a b".to_string(), "c".to_string()];
        let m = |rows: &[Vec<u32>]| SparseMatrix::from_index_rows(3, rows).unwrap();
        let train = Split::new(texts(), m(&[vec![0], vec![1, 2]])).unwrap();
        let ds = XcDataset::from_memory(
            train.clone(),
            None,
            Some(Labels::from_names(vec!["x".into(), "y".into(), "z".into()])),
        )
        .unwrap();
        assert_eq!((ds.n_labels, ds.train.len()), (3, 2));
        assert_eq!(ds.labels().name(2), "z");
        assert!(ds.label_uris.is_none());
        // One label row per text.
        let e = Split::new(texts(), m(&[vec![0]])).unwrap_err();
        assert!(e.to_string().contains("1 label rows for 2 texts"), "{e}");
        // The test split scores the same labels; names name every label.
        let other = Split::new(
            vec!["d".into()],
            SparseMatrix::from_index_rows(4, &[vec![3]]).unwrap(),
        )
        .unwrap();
        let e = XcDataset::from_memory(train.clone(), Some(other), None).unwrap_err();
        assert!(e.to_string().contains("4 columns"), "{e}");
        let e = XcDataset::from_memory(train, None, Some(Labels::numbered(2))).unwrap_err();
        assert!(e.to_string().contains("2 label names for 3"), "{e}");
    }

    #[test]
    fn hold_out_is_seeded_disjoint_and_keeps_labels_with_texts() {
        let texts: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let rows: Vec<Vec<(u32, f32)>> = (0..20).map(|i| vec![(i as u32 % 7, 1.0)]).collect();
        let split = Split {
            texts,
            labels: SparseMatrix::from_rows(7, rows).unwrap(),
        };
        let (rest, held) = split.hold_out(0.25, 3).unwrap();
        assert_eq!((rest.len(), held.len()), (15, 5));
        let (rest2, held2) = split.hold_out(0.25, 3).unwrap();
        assert_eq!(
            (rest.texts.clone(), held.texts.clone()),
            (rest2.texts, held2.texts)
        );
        assert_ne!(split.hold_out(0.25, 4).unwrap().1.texts, held.texts);
        for part in [&rest, &held] {
            for (r, t) in part.texts.iter().enumerate() {
                let i: u32 = t[1..].parse().unwrap();
                assert_eq!(part.labels.row_indices(r), &[i % 7]);
            }
        }
        assert!(held.texts.iter().all(|t| !rest.texts.contains(t)));
        assert!(split.hold_out(1.0, 0).is_err());
    }

    #[test]
    fn written_hold_out_is_the_hold_out_and_leaves_nothing_on_error() {
        let d = tempfile::tempdir().unwrap();
        let texts: String = (0..10).map(|i| format!("t{i}\n")).collect();
        write(d.path(), "trn_X.txt", &texts);
        let labels: String = (0..10).map(|i| format!("{}:1\n", i % 3)).collect();
        write(d.path(), "trn_X_Y.txt", &format!("10 3\n{labels}"));
        write(d.path(), "Y.txt", "x\ny\nz\n");
        let ds = XcDataset::open(d.path()).unwrap();
        let out = d.path().join("valid");
        assert_eq!(ds.write_hold_out(&out, 0.3, 5).unwrap(), (7, 3));
        let written = XcDataset::open(&out).unwrap();
        let (rest, held) = ds.train.hold_out(0.3, 5).unwrap();
        assert_eq!(written.train.texts, rest.texts);
        assert_eq!(written.train.labels, rest.labels);
        let test = written.test.unwrap();
        assert_eq!((test.texts, test.labels), (held.texts, held.labels));
        assert_eq!(written.label_names, ds.label_names);
        // An existing folder is refused and left as it is; a bad fraction writes nothing.
        let e = ds.write_hold_out(&out, 0.3, 5).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let other = d.path().join("other");
        assert!(ds.write_hold_out(&other, 0.0, 0).is_err());
        assert!(
            ds.write_hold_out(&other, 0.01, 0).is_err(),
            "no row held out"
        );
        assert!(!other.exists());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn non_positive_label_values_are_not_positives() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "trn_X.txt", "a b\nc\n");
        write(d.path(), "trn_X_Y.txt", "2 5\n0:1 3:0 4:-1\n2:0.5\n");
        let ds = XcDataset::open(d.path()).unwrap();
        assert_eq!(ds.train.labels.row_indices(0), &[0]);
        assert_eq!(ds.train.labels.row_indices(1), &[2]);
    }

    #[test]
    fn mismatches_are_reported() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "trn_X.txt", "a b\n");
        write(d.path(), "trn_X_Y.txt", "2 3\n0:1\n1:1 2:1\n");
        let e = XcDataset::open(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("trn_X_Y.txt: 2 label rows but") && e.contains("has 1 texts"),
            "{e}"
        );

        write(d.path(), "trn_X.txt", "a b\nc\n");
        write(d.path(), "tst_X.txt", "d\n");
        let e = XcDataset::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("tst_X_Y.txt is missing"), "{e}");

        write(d.path(), "tst_X_Y.txt", "1 4\n2:1\n");
        let e = XcDataset::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("4 labels but trn_X_Y.txt has 3"), "{e}");

        let e = XcDataset::open(d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset folder not found"), "{e}");
    }
}

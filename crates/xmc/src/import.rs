//! Corpora in other tools' formats turned into an XC dataset folder: Annif's document corpus TSV
//! (`text<TAB><URI> <URI> ...`, with a subject-vocabulary TSV giving the label order) and
//! fastText's supervised format (`__label__a __label__b text ...`).
//!
//! A malformed line is an error naming the file and line, or, with `skip_bad`, counted and left
//! out. The folder is written beside its destination and renamed into place at the end, so an
//! interrupted import leaves nothing half-written.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::dataset::Split;
use crate::error::{Error, Result};
use crate::io::{build_folder, lines, write_atomic};
use crate::labels::Labels;
use crate::sparse::SparseMatrix;

/// fastText's label prefix.
pub const FASTTEXT_PREFIX: &str = "__label__";

/// Texts with their label indices, and the labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    pub texts: Vec<String>,
    /// Per text, its labels (indices into `labels`), increasing, no repeats.
    pub rows: Vec<Vec<u32>>,
    pub labels: Labels,
    /// Malformed lines left out (with `skip_bad`).
    pub skipped: usize,
}

fn bad_or_skip(skip_bad: bool, skipped: &mut usize, err: Error) -> Result<()> {
    if skip_bad {
        *skipped += 1;
        Ok(())
    } else {
        Err(err)
    }
}

fn sorted_unique(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Reads an Annif document corpus (`text<TAB><URI> <URI> ...` per line; URIs in angle brackets)
/// whose subjects are those of `vocab` (labels in vocabulary order).
pub fn read_annif_tsv(path: &Path, vocab: &Labels, skip_bad: bool) -> Result<Corpus> {
    let index: HashMap<&str, u32> = vocab
        .uris
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.as_deref().map(|u| (u, i as u32)))
        .collect();
    let mut l = lines(path)?;
    let (mut texts, mut rows, mut skipped) = (Vec::new(), Vec::new(), 0);
    while let Some(bytes) = l.next_bytes()? {
        let Ok(line) = std::str::from_utf8(bytes) else {
            bad_or_skip(skip_bad, &mut skipped, l.error("invalid UTF-8"))?;
            continue;
        };
        let Some((text, subjects)) = line.split_once('\t') else {
            bad_or_skip(
                skip_bad,
                &mut skipped,
                l.error("expected `text<TAB><URI> ...`"),
            )?;
            continue;
        };
        let mut row = Vec::new();
        let mut problem = None;
        for s in subjects.split_whitespace() {
            let uri = s.strip_prefix('<').and_then(|s| s.strip_suffix('>'));
            match uri.map(|u| index.get(u)) {
                Some(Some(&i)) => row.push(i),
                Some(None) => {
                    problem = Some(format!("subject {s} is not in the vocabulary"));
                    break;
                }
                None => {
                    problem = Some(format!("subject {s:?}: expected <URI>"));
                    break;
                }
            }
        }
        if text.trim().is_empty() {
            problem = Some("empty text".into());
        } else if text.contains('\r') {
            problem = Some("the text holds a carriage return (a line break of its own)".into());
        }
        if let Some(msg) = problem {
            bad_or_skip(skip_bad, &mut skipped, l.error(msg))?;
            continue;
        }
        texts.push(text.trim().to_string());
        rows.push(sorted_unique(row));
    }
    if !rows.is_empty() && rows.iter().all(Vec::is_empty) {
        return Err(Error::param(format!(
            "{}: no line has a subject: nothing to train on",
            path.display()
        )));
    }
    Ok(Corpus {
        texts,
        rows,
        labels: vocab.clone(),
        skipped,
    })
}

/// Reads a fastText supervised file: every token starting with `__label__` is a label, the rest
/// is the text. Labels are numbered in order of first appearance.
pub fn read_fasttext(path: &Path, skip_bad: bool) -> Result<Corpus> {
    let mut l = lines(path)?;
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut names = Vec::new();
    let (mut texts, mut rows, mut skipped) = (Vec::new(), Vec::new(), 0);
    while let Some(bytes) = l.next_bytes()? {
        let Ok(line) = std::str::from_utf8(bytes) else {
            bad_or_skip(skip_bad, &mut skipped, l.error("invalid UTF-8"))?;
            continue;
        };
        let (mut words, mut found) = (Vec::new(), Vec::new());
        for tok in line.split_whitespace() {
            match tok.strip_prefix(FASTTEXT_PREFIX) {
                Some(name) if !name.is_empty() => found.push(name),
                _ => words.push(tok),
            }
        }
        let problem = match (found.is_empty(), words.is_empty()) {
            (true, _) => Some("no __label__ on the line"),
            (_, true) => Some("no text besides the labels"),
            _ => None,
        };
        if let Some(msg) = problem {
            if line.trim().is_empty() && skip_bad {
                skipped += 1;
                continue;
            }
            bad_or_skip(skip_bad, &mut skipped, l.error(msg))?;
            continue;
        }
        let row = found
            .into_iter()
            .map(|name| {
                let next = names.len() as u32;
                *ids.entry(name.to_string()).or_insert_with(|| {
                    names.push(name.to_string());
                    next
                })
            })
            .collect();
        texts.push(words.join(" "));
        rows.push(sorted_unique(row));
    }
    Ok(Corpus {
        texts,
        rows,
        labels: Labels::from_names(names),
        skipped,
    })
}

// The seeded hold-out lives with the dataset that it splits; re-exported for the importers.
pub use crate::dataset::{n_held_out, split};

impl Corpus {
    /// Writes the XC folder `out` (`trn_*`, `tst_*` when the test split is not empty, `Y.txt`,
    /// and `Y.tsv` when any label has a URI). `out` must not exist yet; the folder is built
    /// beside it and renamed into place.
    pub fn write_xc(&self, out: &Path, test_fraction: f64, seed: u64) -> Result<(usize, usize)> {
        let (train, test) = split(self.texts.len(), test_fraction, seed)?;
        if train.is_empty() {
            return Err(Error::param("no training rows to write".to_string()));
        }
        for (i, n) in self.labels.names.iter().enumerate() {
            if n.contains(['\n', '\r']) {
                return Err(Error::param(format!(
                    "label {i} name contains a line break"
                )));
            }
        }
        build_folder(out, |tmp| {
            self.write_split(tmp, "trn", &train)?;
            if !test.is_empty() {
                self.write_split(tmp, "tst", &test)?;
            }
            write_atomic(tmp.join("Y.txt"), |f| {
                self.labels
                    .names
                    .iter()
                    .try_for_each(|n| writeln!(f, "{n}"))
            })?;
            if self.labels.uris.iter().any(Option::is_some) {
                self.labels.write_tsv(tmp.join("Y.tsv"))?;
            }
            Ok((train.len(), test.len()))
        })
    }

    fn write_split(&self, dir: &Path, prefix: &str, rows: &[usize]) -> Result<()> {
        for &r in rows {
            if self.texts[r].contains(['\n', '\r']) {
                return Err(Error::param(format!("text {r} contains a line break")));
            }
        }
        let labels: Vec<Vec<u32>> = rows.iter().map(|&r| self.rows[r].clone()).collect();
        Split {
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            labels: SparseMatrix::from_index_rows(self.labels.len(), &labels)?,
        }
        .write(dir, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::XcDataset;

    #[test]
    fn annif_corpus_to_xc_folder() {
        let d = tempfile::tempdir().unwrap();
        let vocab = d.path().join("vocab.tsv");
        std::fs::write(&vocab, "<http://x/a>\tapples\n<http://x/b>\tbread\n").unwrap();
        let corpus = d.path().join("corpus.tsv");
        std::fs::write(
            &corpus,
            "red apples\t<http://x/a>\nfresh bread\t<http://x/b> <http://x/a>\nbad line\n",
        )
        .unwrap();
        let v = Labels::read_tsv(&vocab).unwrap();
        let e = read_annif_tsv(&corpus, &v, false).unwrap_err().to_string();
        assert!(e.contains("corpus.tsv:3"), "{e}");
        let c = read_annif_tsv(&corpus, &v, true).unwrap();
        assert_eq!((c.texts.len(), c.skipped), (2, 1));
        assert_eq!(c.rows[1], vec![0, 1]);
        let out = d.path().join("xc");
        assert_eq!(c.write_xc(&out, 0.5, 1).unwrap(), (1, 1));
        let ds = XcDataset::open(&out).unwrap();
        assert_eq!(ds.n_labels, 2);
        assert_eq!(ds.labels().uri_or_name(1), "http://x/b");
        assert_eq!(ds.labels().name(0), "apples");
        // An existing folder is refused and left as it is.
        assert!(c.write_xc(&out, 0.5, 1).is_err());
        assert!(XcDataset::open(&out).is_ok());
        // Unknown subjects name the line.
        std::fs::write(&corpus, "x\t<http://x/zzz>\n").unwrap();
        let e = read_annif_tsv(&corpus, &v, false).unwrap_err().to_string();
        assert!(
            e.contains("corpus.tsv:1") && e.contains("not in the vocabulary"),
            "{e}"
        );
        // Issue 27 D9: a non-UTF-8 line and a text holding a lone carriage return are named
        // by file and line, and skipped with --skip-bad (the whole import failed, the CR with a
        // message naming neither).
        std::fs::write(
            &corpus,
            b"bad \xff\t<http://x/a>\nred\rapples\t<http://x/a>\ngood bread\t<http://x/b>\n",
        )
        .unwrap();
        let e = read_annif_tsv(&corpus, &v, false).unwrap_err().to_string();
        assert!(e.contains("corpus.tsv:1") && e.contains("UTF-8"), "{e}");
        let c = read_annif_tsv(&corpus, &v, true).unwrap();
        assert_eq!(
            (c.texts.clone(), c.skipped),
            (vec!["good bread".to_string()], 2)
        );
        std::fs::write(&corpus, "red\rapples\t<http://x/a>\n").unwrap();
        let e = read_annif_tsv(&corpus, &v, false).unwrap_err().to_string();
        assert!(
            e.contains("corpus.tsv:1") && e.contains("carriage return"),
            "{e}"
        );
        // Issue 27 D14: a corpus where no line has a subject is refused (it imported and
        // trained with no warning).
        std::fs::write(&corpus, "red apples\t\nfresh bread\t\n").unwrap();
        let e = read_annif_tsv(&corpus, &v, false).unwrap_err().to_string();
        assert!(
            e.contains("corpus.tsv") && e.contains("no line has a subject"),
            "{e}"
        );
    }

    #[test]
    fn fasttext_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ft.txt");
        std::fs::write(
            &p,
            "__label__baking __label__bread how to knead\nno labels here\n",
        )
        .unwrap();
        let e = read_fasttext(&p, false).unwrap_err().to_string();
        assert!(e.contains("ft.txt:2") && e.contains("__label__"), "{e}");
        let c = read_fasttext(&p, true).unwrap();
        assert_eq!(c.texts, vec!["how to knead"]);
        assert_eq!(c.labels.names, vec!["baking", "bread"]);
        assert_eq!(c.rows, vec![vec![0, 1]]);
        // Issue 27 D9: a line that is not UTF-8 is skipped with --skip-bad, else named.
        std::fs::write(&p, b"__label__a bad \xff text\n__label__b good text\n").unwrap();
        let e = read_fasttext(&p, false).unwrap_err().to_string();
        assert!(e.contains("ft.txt:1") && e.contains("UTF-8"), "{e}");
        let c = read_fasttext(&p, true).unwrap();
        assert_eq!(
            (c.texts.clone(), c.skipped),
            (vec!["good text".to_string()], 1)
        );
    }

    #[test]
    fn split_is_seeded_and_sized() {
        let (a, b) = split(10, 0.3, 7).unwrap();
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(split(10, 0.3, 7).unwrap(), (a, b));
        assert!(split(10, 1.0, 7).is_err());
        for (n, f) in [(10, 0.3), (211_487, 0.05), (7, 0.0), (3, 0.5), (0, 0.2)] {
            assert_eq!(
                split(n, f, 1).unwrap().1.len(),
                n_held_out(n, f),
                "{n} rows at {f}"
            );
        }
        assert_eq!(n_held_out(211_487, 0.05), 10_574);
    }

    /// Issue 27 D14: one rule for a validation hold-out, `train --valid-fraction` and `split`
    /// alike: 0 (none), or up to 0.5 holding out at least one row.
    #[test]
    fn one_rule_for_the_validation_fraction() {
        use crate::dataset::check_valid_fraction;
        assert_eq!(check_valid_fraction(300, 0.0).unwrap(), 0);
        assert_eq!(check_valid_fraction(300, 0.5).unwrap(), 150);
        assert_eq!(check_valid_fraction(300, 0.002).unwrap(), 1);
        let e = check_valid_fraction(300, 0.001).unwrap_err().to_string();
        assert!(e.contains("holds out no row"), "{e}");
        for f in [0.9, 0.51, -0.1, f64::NAN] {
            let e = check_valid_fraction(300, f).unwrap_err().to_string();
            assert!(e.contains("valid fraction") && !e.contains("test"), "{e}");
        }
    }
}

//! Dataset statistics: rows, labels, labels per row, words per row, label-frequency percentiles,
//! empty rows and labels never seen in training. Every index was already checked to be in range
//! by the readers (an out-of-range index is a load error naming file and line).

use std::fmt;

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{Split, XcDataset};

/// Min / mean / max of a per-row count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub min: usize,
    pub mean: f64,
    pub max: usize,
}

impl Summary {
    fn of(counts: impl Iterator<Item = usize>) -> Summary {
        let (mut min, mut max, mut sum, mut n) = (usize::MAX, 0usize, 0usize, 0usize);
        for c in counts {
            min = min.min(c);
            max = max.max(c);
            sum += c;
            n += 1;
        }
        Summary {
            min: if n == 0 { 0 } else { min },
            mean: if n == 0 { 0.0 } else { sum as f64 / n as f64 },
            max,
        }
    }
}

/// Statistics of one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitStats {
    pub rows: usize,
    pub positives: usize,
    pub labels_per_row: Summary,
    pub words_per_row: Summary,
    /// Rows with no label.
    pub empty_label_rows: usize,
    /// Rows whose text has no word.
    pub empty_texts: usize,
    /// Distinct labels with at least one positive in this split.
    pub labels_used: usize,
}

impl SplitStats {
    pub fn compute(s: &Split) -> SplitStats {
        let words: Vec<usize> = s
            .texts
            .par_iter()
            .map(|t| t.split_whitespace().count())
            .collect();
        let counts = s.labels.col_counts();
        SplitStats {
            rows: s.len(),
            positives: s.labels.nnz(),
            labels_per_row: Summary::of((0..s.labels.n_rows).map(|r| s.labels.row_len(r))),
            words_per_row: Summary::of(words.iter().copied()),
            empty_label_rows: (0..s.labels.n_rows)
                .filter(|&r| s.labels.row_len(r) == 0)
                .count(),
            empty_texts: words.iter().filter(|&&w| w == 0).count(),
            labels_used: counts.iter().filter(|&&c| c > 0).count(),
        }
    }
}

/// Statistics of a dataset folder.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    pub labels: usize,
    pub train: SplitStats,
    pub test: Option<SplitStats>,
    /// Percentiles (0, 25, 50, 75, 90, 99, 100) of the training positives per label, over all labels.
    pub label_frequency_percentiles: Vec<(u32, usize)>,
    /// Labels with no training positive.
    pub labels_without_train_positive: usize,
    /// Test positives whose label has no training positive.
    pub test_positives_unseen_in_train: usize,
}

impl DatasetStats {
    pub fn compute(ds: &XcDataset) -> DatasetStats {
        let (train, test) = rayon::join(
            || SplitStats::compute(&ds.train),
            || ds.test.as_ref().map(SplitStats::compute),
        );
        let freq = ds.train.labels.col_counts();
        let mut sorted = freq.clone();
        sorted.sort_unstable();
        let pct = |q: u32| -> usize {
            if sorted.is_empty() {
                return 0;
            }
            let i = ((q as f64 / 100.0) * (sorted.len() - 1) as f64).round() as usize;
            sorted[i]
        };
        let unseen = ds.test.as_ref().map_or(0, |t| {
            t.labels
                .indices
                .iter()
                .filter(|&&l| freq[l as usize] == 0)
                .count()
        });
        DatasetStats {
            labels: ds.n_labels,
            train,
            test,
            label_frequency_percentiles: [0, 25, 50, 75, 90, 99, 100]
                .into_iter()
                .map(|q| (q, pct(q)))
                .collect(),
            labels_without_train_positive: freq.iter().filter(|&&c| c == 0).count(),
            test_positives_unseen_in_train: unseen,
        }
    }
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "labels: {}", self.labels)?;
        writeln!(
            f,
            "{:<6} {:>9} {:>10} {:>22} {:>22} {:>11} {:>11} {:>11}",
            "split",
            "rows",
            "positives",
            "labels/row min/mean/max",
            "words/row min/mean/max",
            "no-label",
            "empty-text",
            "labels-used"
        )?;
        let mut row = |name: &str, s: &SplitStats| {
            writeln!(
                f,
                "{:<6} {:>9} {:>10} {:>22} {:>22} {:>11} {:>11} {:>11}",
                name,
                s.rows,
                s.positives,
                format!(
                    "{}/{:.2}/{}",
                    s.labels_per_row.min, s.labels_per_row.mean, s.labels_per_row.max
                ),
                format!(
                    "{}/{:.2}/{}",
                    s.words_per_row.min, s.words_per_row.mean, s.words_per_row.max
                ),
                s.empty_label_rows,
                s.empty_texts,
                s.labels_used
            )
        };
        row("train", &self.train)?;
        if let Some(t) = &self.test {
            row("test", t)?;
        }
        write!(f, "training positives per label, percentiles:")?;
        for (q, v) in &self.label_frequency_percentiles {
            write!(f, " p{q}={v}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "labels with no training positive: {}",
            self.labels_without_train_positive
        )?;
        if self.test.is_some() {
            writeln!(
                f,
                "test positives whose label has no training positive: {}",
                self.test_positives_unseen_in_train
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::SparseMatrix;

    #[test]
    fn counts_rows_words_and_frequencies() {
        let train = Split {
            texts: vec!["a b c".into(), "".into(), "d".into()],
            labels: SparseMatrix::from_index_rows(4, &[vec![0, 1], vec![], vec![0]]).unwrap(),
        };
        let test = Split {
            texts: vec!["x y".into()],
            labels: SparseMatrix::from_index_rows(4, &[vec![0, 3]]).unwrap(),
        };
        let ds = XcDataset {
            dir: ".".into(),
            train,
            test: Some(test),
            label_names: None,
            label_uris: None,
            n_labels: 4,
        };
        let s = DatasetStats::compute(&ds);
        assert_eq!(s.train.rows, 3);
        assert_eq!(s.train.positives, 3);
        assert_eq!(
            s.train.labels_per_row,
            Summary {
                min: 0,
                mean: 1.0,
                max: 2
            }
        );
        assert_eq!(s.train.words_per_row.max, 3);
        assert_eq!(s.train.empty_label_rows, 1);
        assert_eq!(s.train.empty_texts, 1);
        assert_eq!(s.labels_without_train_positive, 2);
        assert_eq!(s.test_positives_unseen_in_train, 1);
        assert_eq!(s.label_frequency_percentiles.last(), Some(&(100, 2)));
        let text = s.to_string();
        assert!(
            text.contains("labels with no training positive: 2"),
            "{text}"
        );
    }
}

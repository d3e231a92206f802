//! PIFA label features (Positive Instance Feature Aggregation): for each label, the sum of the
//! L2-normalised feature rows of its training texts, pruned to its `top_n` largest features and
//! L2-normalised. The result is an `L × V` sparse matrix; nothing dense of size `L × V` is built.
//! A label without training texts (or whose texts have no features) gets an empty row.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::sparse::SparseMatrix;
use crate::tfidf::{from_sorted_rows, normalize, TfIdf, TfIdfParams};

/// Default number of features kept per label.
pub const DEFAULT_TOP_N: usize = 1000;

/// PIFA features of the labels. `features`: `N × V` (rows should be L2-normalised, see
/// [`crate::tfidf::normalize_rows`]); `labels`: `N × L`. Returns `L × V`, each non-empty row
/// L2-normalised with at most `top_n` entries (ties in the pruning go to the lower feature id).
/// Label values are ignored (a label is present or not). Deterministic whatever the thread count.
pub fn pifa(features: &SparseMatrix, labels: &SparseMatrix, top_n: usize) -> Result<SparseMatrix> {
    if features.n_rows != labels.n_rows {
        return Err(Error::Shape(format!(
            "pifa: {} feature rows but {} label rows",
            features.n_rows, labels.n_rows
        )));
    }
    if top_n == 0 {
        return Err(Error::param("pifa: top_n must be >= 1"));
    }
    let by_label = labels.transpose();
    let v = features.n_cols;
    let rows: Vec<Vec<(u32, f32)>> = (0..by_label.n_rows)
        .into_par_iter()
        .with_min_len(64)
        .map_init(
            || (vec![0f32; v], vec![false; v], Vec::<u32>::new()),
            |(acc, seen, touched), l| {
                // Texts are visited in increasing row order: the float sum is reproducible.
                for &r in by_label.row_indices(l) {
                    let (idx, val) = features.row(r as usize);
                    for (&j, &x) in idx.iter().zip(val) {
                        let j = j as usize;
                        if !seen[j] {
                            seen[j] = true;
                            touched.push(j as u32);
                        }
                        acc[j] += x;
                    }
                }
                let mut row: Vec<(u32, f32)> = Vec::with_capacity(touched.len().min(top_n));
                for &j in touched.iter() {
                    let j = j as usize;
                    if acc[j] != 0.0 {
                        row.push((j as u32, acc[j]));
                    }
                    acc[j] = 0.0;
                    seen[j] = false;
                }
                touched.clear();
                if row.len() > top_n {
                    let by_value = |a: &(u32, f32), b: &(u32, f32)| {
                        b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0))
                    };
                    row.select_nth_unstable_by(top_n - 1, by_value);
                    row.truncate(top_n);
                }
                row.sort_unstable_by_key(|e| e.0);
                normalize(&mut row);
                row
            },
        )
        .collect();
    Ok(from_sorted_rows(v, rows))
}

/// The whole feature pipeline from tokenised training texts: TF-IDF (rows L2-normalised) then
/// [`pifa`]. Returns the fitted TF-IDF model with the `L × V` label features.
pub fn pifa_from_tokens(
    docs: &[Vec<String>],
    labels: &SparseMatrix,
    params: TfIdfParams,
    top_n: usize,
) -> Result<(TfIdf, SparseMatrix)> {
    let (t, x) = TfIdf::fit_transform(docs, params)?;
    let p = pifa(&x, labels, top_n)?;
    Ok((t, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_normalises_and_handles_empty_labels() {
        let x = SparseMatrix::from_rows(
            3,
            vec![vec![(0, 0.6), (1, 0.8)], vec![(1, 1.0)], vec![(2, 1.0)]],
        )
        .unwrap();
        // Label 0: texts 0, 1; label 1: text 2; label 2: none.
        let y = SparseMatrix::from_index_rows(3, &[vec![0], vec![0], vec![1]]).unwrap();
        let p = pifa(&x, &y, 10).unwrap();
        assert_eq!((p.n_rows, p.n_cols), (3, 3));
        let (i, v) = p.row(0);
        assert_eq!(i, &[0, 1]);
        let n = (0.6f32 * 0.6 + 1.8 * 1.8).sqrt();
        assert!((v[0] - 0.6 / n).abs() < 1e-6 && (v[1] - 1.8 / n).abs() < 1e-6);
        assert_eq!(p.row(1), (&[2u32][..], &[1.0f32][..]));
        assert_eq!(p.row_len(2), 0);
    }

    #[test]
    fn prunes_to_top_n_with_ties_to_lower_ids() {
        let x =
            SparseMatrix::from_rows(4, vec![vec![(0, 1.0), (1, 3.0), (2, 3.0), (3, 2.0)]]).unwrap();
        let y = SparseMatrix::from_index_rows(1, &[vec![0]]).unwrap();
        let p = pifa(&x, &y, 2).unwrap();
        assert_eq!(p.row_indices(0), &[1, 2]);
        let s: f32 = p.row(0).1.iter().map(|x| x * x).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let x = SparseMatrix::from_index_rows(2, &[vec![0]]).unwrap();
        let y = SparseMatrix::from_index_rows(2, &[vec![0], vec![1]]).unwrap();
        assert!(pifa(&x, &y, 5).is_err());
    }
}

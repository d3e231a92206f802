//! Predictions in the Extreme Classification Repository sparse format, as pyxclib and napkinXC
//! read them: header `rows n_labels`, then one line per text with `label:score` entries, scores
//! descending (ties: lower label first). Scores are written as the shortest decimal that reads
//! back to the same `f32`, so `eval` on a written file ranks exactly as the writer did.

use std::cmp::Ordering;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io;
use crate::sparse::{FmtVal, SparseMatrix};

/// Orders `(label, score)` pairs by score descending, then label ascending; NaN ranks last.
pub fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    key(b.1)
        .partial_cmp(&key(a.1))
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// The `k` best `(label, score)` pairs of a dense score row, best first (in [`rank_order`]).
///
/// One pass keeps only scores above a running threshold — the k-th best of the candidates
/// buffered so far — so a row of L scores costs about L comparisons plus a few selections over
/// a buffer of `max(4k, 256)`, instead of a selection over all L pairs. Labels arrive in
/// increasing order, so a later score equal to the threshold ranks below the k-th kept one and
/// is rightly skipped.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let cap = (4 * k).max(256);
    if scores.len() <= cap {
        return top_k_all(scores, k);
    }
    let mut buf: Vec<(u32, f32)> = Vec::with_capacity(cap);
    let mut thr = f32::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        if s > thr {
            buf.push((i as u32, s));
            if buf.len() == cap {
                buf.select_nth_unstable_by(k - 1, rank_order);
                buf.truncate(k);
                thr = buf[k - 1].1;
            }
        }
    }
    if buf.len() < k {
        // Fewer than k scores above −∞ (NaN or −∞ fill the rest): rank them all.
        return top_k_all(scores, k);
    }
    top_k_sparse(buf, k)
}

fn top_k_all(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    top_k_sparse(
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u32, s))
            .collect(),
        k,
    )
}

/// The `k` best of a sparse candidate list (e.g. a shortlist), best first, in [`rank_order`].
pub fn top_k_sparse(mut cands: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let k = k.min(cands.len());
    if k == 0 {
        return Vec::new();
    }
    if k < cands.len() {
        cands.select_nth_unstable_by(k - 1, rank_order);
    }
    let best = &mut cands[..k];
    best.sort_unstable_by(rank_order);
    // A fresh k-sized vector: truncating would keep the whole candidate allocation alive.
    best.to_vec()
}

/// Writes one prediction row (`label:score ...`, newline-terminated) in rank order.
pub fn write_row<W: Write>(w: &mut W, row: &[(u32, f32)]) -> std::io::Result<()> {
    let mut sorted;
    let row = if row
        .windows(2)
        .all(|p| rank_order(&p[0], &p[1]) != Ordering::Greater)
    {
        row
    } else {
        sorted = row.to_vec();
        sorted.sort_unstable_by(rank_order);
        &sorted[..]
    };
    for (k, (l, s)) in row.iter().enumerate() {
        if k > 0 {
            w.write_all(b" ")?;
        }
        write!(w, "{l}:{}", FmtVal(*s))?;
    }
    w.write_all(b"\n")
}

/// Writes predictions to `w`: header `rows n_labels`, then each row in rank order.
pub fn write_predictions_to<W: Write>(
    w: &mut W,
    rows: &[Vec<(u32, f32)>],
    n_labels: usize,
) -> std::io::Result<()> {
    writeln!(w, "{} {}", rows.len(), n_labels)?;
    for r in rows {
        write_row(w, r)?;
    }
    Ok(())
}

/// Writes predictions to `path` atomically, or to standard output when `path` is `-`.
/// Every label must be `< n_labels`.
pub fn write_predictions(
    path: impl AsRef<Path>,
    rows: &[Vec<(u32, f32)>],
    n_labels: usize,
) -> Result<()> {
    let path = path.as_ref();
    if let Some((r, l)) = rows.iter().enumerate().find_map(|(r, row)| {
        row.iter()
            .find(|e| e.0 as usize >= n_labels)
            .map(|e| (r, e.0))
    }) {
        return Err(Error::Shape(format!(
            "prediction row {r} has label {l} >= {n_labels} labels"
        )));
    }
    if path.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        write_predictions_to(&mut lock, rows, n_labels)
            .and_then(|_| lock.flush())
            .map_err(|e| Error::io(path, e))
    } else {
        io::write_atomic(path, |w| write_predictions_to(w, rows, n_labels))
    }
}

/// Reads a prediction file: a [`SparseMatrix`] whose values are the scores.
pub fn read_predictions(path: impl AsRef<Path>) -> Result<SparseMatrix> {
    SparseMatrix::read(path)
}

/// Reads a prediction file for evaluation: each row's values become rank keys (its length down
/// to 1) in score order, equal scores keeping **the file's order**, so that another tool's
/// rounded scores are ranked as that tool ranked them, not re-ordered by label id.
pub fn read_predictions_file_order(path: impl AsRef<Path>) -> Result<SparseMatrix> {
    SparseMatrix::read_with(path, |row| {
        // A stable sort: ties stay in file order. NaN scores rank last.
        row.sort_by(|a, b| {
            let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
            key(b.1).total_cmp(&key(a.1))
        });
        let n = row.len();
        for (i, e) in row.iter_mut().enumerate() {
            e.1 = (n - i) as f32;
        }
    })
}

/// The rows of a prediction matrix in rank order (score descending, label ascending).
pub fn ranked_rows(pred: &SparseMatrix) -> Vec<Vec<(u32, f32)>> {
    (0..pred.n_rows)
        .map(|r| {
            let (i, v) = pred.row(r);
            let mut row: Vec<(u32, f32)> = i.iter().copied().zip(v.iter().copied()).collect();
            row.sort_unstable_by(rank_order);
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold scan gives exactly the full selection's ranking, ties and NaN included.
    #[test]
    fn dense_top_k_matches_full_selection() {
        let bits = |v: Vec<(u32, f32)>| {
            v.into_iter()
                .map(|(l, s)| (l, s.to_bits()))
                .collect::<Vec<_>>()
        };
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for n in [1usize, 100, 300, 5000, 22933] {
            for &k in &[1usize, 5, 100, 1000] {
                // Coarse scores (many ties), some NaN and −∞.
                let scores: Vec<f32> = (0..n)
                    .map(|_| match next() % 50 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => (v % 17) as f32 / 4.0 - 2.0,
                    })
                    .collect();
                assert_eq!(
                    bits(top_k(&scores, k)),
                    bits(top_k_all(&scores, k.min(n))),
                    "n {n} k {k}"
                );
            }
        }
        let nans = vec![f32::NAN; 1000];
        assert_eq!(bits(top_k(&nans, 3)), bits(top_k_all(&nans, 3)));
    }

    #[test]
    fn evaluation_reading_keeps_the_files_order_for_ties() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pred.txt");
        std::fs::write(&p, "1 10\n7:0.5 2:0.5 9:0.9 3:0.1\n").unwrap();
        let m = read_predictions_file_order(&p).unwrap();
        let ranked: Vec<u32> = ranked_rows(&m)[0].iter().map(|e| e.0).collect();
        assert_eq!(ranked, vec![9, 7, 2, 3]);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_label() {
        let s = [0.1, 0.9, 0.5, 0.9, f32::NAN, 0.2];
        assert_eq!(top_k(&s, 3), vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert_eq!(top_k(&s, 10).len(), 6);
        assert_eq!(top_k(&s, 10).last().map(|e| e.0), Some(4));
        assert!(top_k(&s, 0).is_empty());
        // The result owns only k entries, not the whole score row.
        let big = vec![0.5f32; 10_000];
        assert!(top_k(&big, 3).capacity() < 100);
    }

    #[test]
    fn written_predictions_read_back_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pred.txt");
        let rows = vec![
            vec![(7, 0.912_345_7), (2, 0.912_345_6), (0, 1e-9)],
            vec![],
            vec![(1, 0.5)],
        ];
        write_predictions(&p, &rows, 8).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("3 8\n7:0.9123457 2:0.9123456 0:0.000000001\n\n1:0.5\n"),
            "{text}"
        );
        let m = read_predictions(&p).unwrap();
        assert_eq!(ranked_rows(&m), rows);
    }

    #[test]
    fn out_of_range_label_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_predictions(dir.path().join("p"), &[vec![(9, 1.0)]], 5).unwrap_err();
        assert!(e.to_string().contains("label 9 >= 5"));
    }

    #[test]
    fn top_k_sparse_selects() {
        let c = vec![(10, 0.3), (4, 0.8), (6, 0.8), (1, 0.1)];
        assert_eq!(top_k_sparse(c, 2), vec![(4, 0.8), (6, 0.8)]);
    }
}

//! The Extreme Classification Repository's combined bag-of-words format:
//!
//! ```text
//! N D L                      <- rows, feature count, label count
//! 3,17 0:0.5 12:1.25         <- comma-separated labels, a space, then feature:value entries
//!  4:1.0                     <- a leading space: the row has no labels
//! ```

use std::io::{BufRead, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{self, Lines};
use crate::sparse::{parse_entry, parse_row, FmtVal, SparseMatrix};

/// Reads a combined BOW file: `(features N×D, labels N×L)`.
pub fn read_bow(path: impl AsRef<Path>) -> Result<(SparseMatrix, SparseMatrix)> {
    read_lines(&mut io::lines(path.as_ref())?)
}

/// Reads a combined BOW file from a buffered reader; `path` is used in messages.
pub fn read_bow_from<R: BufRead>(
    reader: R,
    path: impl AsRef<Path>,
) -> Result<(SparseMatrix, SparseMatrix)> {
    read_lines(&mut Lines::new(reader, path))
}

fn read_lines<R: BufRead>(lines: &mut Lines<R>) -> Result<(SparseMatrix, SparseMatrix)> {
    let header = match lines.next_line()? {
        None => {
            return Err(Error::parse(
                lines.path(),
                1,
                "empty file: expected a header `rows features labels`",
            ))
        }
        Some(h) => h.to_owned(),
    };
    let nums: Vec<usize> = header
        .split_ascii_whitespace()
        .map(|t| t.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            lines.error(format!(
                "bad header {header:?}: expected `rows features labels`"
            ))
        })?;
    let [n, d, l] = nums[..] else {
        return Err(lines.error(format!(
            "bad header {header:?}: expected three numbers `rows features labels`"
        )));
    };
    let mut feats = SparseMatrix::new(d);
    let mut labels = SparseMatrix::new(l);
    let mut frow = Vec::new();
    let mut lrow = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(raw) = lines.next_bytes()? {
        buf.clear();
        buf.extend_from_slice(raw);
        let line = &buf[..];
        if feats.n_rows == n {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Err(lines.error(format!("more rows than the {n} the header states")));
        }
        frow.clear();
        lrow.clear();
        // The label list is everything before the first space; empty when the line starts with one.
        let (lab, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &line[line.len()..]),
        };
        // A line without ':' before the first space is a label list; otherwise there are no labels.
        let (lab, rest) = if lab.contains(&b':') {
            (&line[..0], line)
        } else {
            (lab, rest)
        };
        for tok in lab.split(|b| *b == b',').filter(|t| !t.is_empty()) {
            let (i, _) = parse_entry(tok, l).map_err(|m| lines.error(format!("label: {m}")))?;
            lrow.push((i, 1.0));
        }
        parse_row(rest, d, &mut frow).map_err(|m| lines.error(format!("feature: {m}")))?;
        labels
            .push_row(&mut lrow)
            .map_err(|e| lines.error(e.to_string()))?;
        feats
            .push_row(&mut frow)
            .map_err(|e| lines.error(e.to_string()))?;
    }
    if feats.n_rows != n {
        return Err(Error::parse(
            lines.path(),
            lines.line_no().max(1),
            format!("header states {n} rows but the file has {}", feats.n_rows),
        ));
    }
    Ok((feats, labels))
}

/// Writes the combined BOW format to `w`.
pub fn write_bow_to<W: Write>(
    w: &mut W,
    feats: &SparseMatrix,
    labels: &SparseMatrix,
) -> std::io::Result<()> {
    writeln!(w, "{} {} {}", feats.n_rows, feats.n_cols, labels.n_cols)?;
    for r in 0..feats.n_rows {
        let ls = labels.row_indices(r);
        for (k, l) in ls.iter().enumerate() {
            if k > 0 {
                w.write_all(b",")?;
            }
            write!(w, "{l}")?;
        }
        let (fi, fv) = feats.row(r);
        for (i, v) in fi.iter().zip(fv) {
            write!(w, " {i}:{}", FmtVal(*v))?;
        }
        if ls.is_empty() && fi.is_empty() {
            w.write_all(b" ")?;
        }
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes the combined BOW format to `path` atomically. Both matrices must have the same rows.
pub fn write_bow(
    path: impl AsRef<Path>,
    feats: &SparseMatrix,
    labels: &SparseMatrix,
) -> Result<()> {
    if feats.n_rows != labels.n_rows {
        return Err(Error::Shape(format!(
            "{} feature rows vs {} label rows",
            feats.n_rows, labels.n_rows
        )));
    }
    io::write_atomic(path, |w| write_bow_to(w, feats, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<(SparseMatrix, SparseMatrix)> {
        read_bow_from(s.as_bytes(), "b.txt")
    }

    #[test]
    fn reads_labels_and_features() {
        let (f, l) = read("3 5 4\n3,1 0:0.5 4:2\n 2:1\n0\n").unwrap();
        assert_eq!(l.row_indices(0), &[1, 3]);
        assert_eq!(f.row(0), (&[0u32, 4][..], &[0.5f32, 2.0][..]));
        assert!(l.row_indices(1).is_empty());
        assert_eq!(f.row_indices(1), &[2]);
        assert_eq!(l.row_indices(2), &[0]);
        assert_eq!(f.row_len(2), 0);
    }

    #[test]
    fn roundtrip() {
        let src = "3 5 4\n1,3 0:0.5 4:2\n 2:1\n0\n";
        let (f, l) = read(src).unwrap();
        let mut out = Vec::new();
        write_bow_to(&mut out, &f, &l).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), src);
    }

    #[test]
    fn errors_name_line() {
        let e = |s: &str| read(s).unwrap_err().to_string();
        assert!(e("").starts_with("b.txt:1: empty file"));
        assert!(e("3 5\n").starts_with("b.txt:1: bad header"));
        assert!(e("1 5 4\n9 0:1\n").starts_with("b.txt:2: label: index 9 out of range"));
        assert!(e("1 5 4\n1 7:1\n").starts_with("b.txt:2: feature: index 7 out of range"));
        assert!(e("1 5 4\n1 2:x\n").starts_with("b.txt:2: feature: unparsable value"));
        assert!(e("2 5 4\n1 2:1\n").starts_with("b.txt:2: header states 2 rows"));
    }
}

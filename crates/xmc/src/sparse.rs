//! Compressed sparse rows, and the Extreme Classification Repository sparse text format:
//!
//! ```text
//! rows cols
//! idx:val idx:val ...      <- one line per row; an empty line is an empty row
//! ```
//!
//! Used for label matrices (`trn_X_Y.txt`), bag-of-words features (`trn_X_Xf.txt`) and predictions.
//! The reader accepts tabs and runs of spaces, unsorted indices (it sorts them) and a bare `idx`
//! (value 1). It rejects a bad header, a row count that disagrees with it, an index out of range,
//! a duplicate index in a row and an unparsable number, naming the file and line.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{self, Lines};

/// The entries sorted by index, the values of a repeated index summed (a row's term counts,
/// several models' top lists merged).
pub fn sum_duplicates(mut entries: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
    entries.sort_unstable_by_key(|e| e.0);
    entries.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
    entries
}

/// A sparse matrix in compressed sparse row form with `u32` column indices and `f32` values.
/// Within each row, indices are strictly increasing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseMatrix {
    pub n_rows: usize,
    pub n_cols: usize,
    /// `indptr[r]..indptr[r + 1]` is row `r`'s range in `indices` / `values`; length `n_rows + 1`.
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseMatrix {
    /// An empty matrix with `n_cols` columns and no rows.
    pub fn new(n_cols: usize) -> Self {
        SparseMatrix {
            n_rows: 0,
            n_cols,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Appends a row; `entries` may be unsorted but must not repeat an index.
    pub fn push_row(&mut self, entries: &mut [(u32, f32)]) -> Result<()> {
        entries.sort_unstable_by_key(|e| e.0);
        for w in entries.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::Shape(format!("duplicate index {} in a row", w[0].0)));
            }
        }
        if let Some(&(last, _)) = entries.last() {
            if last as usize >= self.n_cols {
                return Err(Error::Shape(format!(
                    "index {last} >= {} columns",
                    self.n_cols
                )));
            }
        }
        self.indices.extend(entries.iter().map(|e| e.0));
        self.values.extend(entries.iter().map(|e| e.1));
        self.indptr.push(self.indices.len());
        self.n_rows += 1;
        Ok(())
    }

    /// The same matrix without its entries whose value is not positive (> 0): what a label
    /// file means. An entry `3:0` or `3:-1` says label 3 is *not* a positive, so it is dropped.
    pub fn positives(&self) -> SparseMatrix {
        if self.values.iter().all(|&v| v > 0.0) {
            return self.clone();
        }
        let mut out = SparseMatrix::new(self.n_cols);
        out.indptr.reserve(self.n_rows);
        for r in 0..self.n_rows {
            for k in self.indptr[r]..self.indptr[r + 1] {
                if self.values[k] > 0.0 {
                    out.indices.push(self.indices[k]);
                    out.values.push(self.values[k]);
                }
            }
            out.indptr.push(out.indices.len());
        }
        out.n_rows = self.n_rows;
        out
    }

    /// Builds a matrix from rows of `(index, value)` pairs (any order within a row).
    pub fn from_rows(n_cols: usize, rows: Vec<Vec<(u32, f32)>>) -> Result<Self> {
        let mut m = SparseMatrix::new(n_cols);
        for mut r in rows {
            m.push_row(&mut r)?;
        }
        Ok(m)
    }

    /// Builds a binary matrix (all values 1) from rows of indices.
    pub fn from_index_rows(n_cols: usize, rows: &[Vec<u32>]) -> Result<Self> {
        Self::from_rows(
            n_cols,
            rows.iter()
                .map(|r| r.iter().map(|&i| (i, 1.0)).collect())
                .collect(),
        )
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row `r`'s indices and values.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// Row `r`'s indices.
    pub fn row_indices(&self, r: usize) -> &[u32] {
        &self.indices[self.indptr[r]..self.indptr[r + 1]]
    }

    /// Number of entries in row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }

    /// Number of entries in each column.
    pub fn col_counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.n_cols];
        for &i in &self.indices {
            c[i as usize] += 1;
        }
        c
    }

    /// The transpose (columns become rows), indices sorted.
    pub fn transpose(&self) -> SparseMatrix {
        let counts = self.col_counts();
        let mut indptr = Vec::with_capacity(self.n_cols + 1);
        indptr.push(0usize);
        for c in &counts {
            indptr.push(indptr.last().copied().unwrap_or(0) + c);
        }
        let mut next = indptr[..self.n_cols].to_vec();
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                let p = &mut next[c as usize];
                indices[*p] = r as u32;
                values[*p] = v;
                *p += 1;
            }
        }
        SparseMatrix {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            values,
        }
    }

    /// The rows `rows` (in that order) as a new matrix.
    pub fn select_rows(&self, rows: &[usize]) -> SparseMatrix {
        let mut m = SparseMatrix::new(self.n_cols);
        for &r in rows {
            let (i, v) = self.row(r);
            m.indices.extend_from_slice(i);
            m.values.extend_from_slice(v);
            m.indptr.push(m.indices.len());
            m.n_rows += 1;
        }
        m
    }

    /// Reads the sparse text format from `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::read_lines(&mut io::lines(path)?)
    }

    /// Reads the sparse text format from any buffered reader; `path` is used in messages.
    pub fn read_from<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Self> {
        Self::read_lines(&mut Lines::new(reader, path))
    }

    fn read_lines<R: BufRead>(lines: &mut Lines<R>) -> Result<Self> {
        Self::read_lines_with(lines, |_| {})
    }

    /// Reads the sparse format from `path`, passing each row (in the file's entry order) through
    /// `f` before it is stored.
    pub fn read_with(path: impl AsRef<Path>, f: impl FnMut(&mut Vec<(u32, f32)>)) -> Result<Self> {
        let path = path.as_ref();
        Self::read_lines_with(&mut io::lines(path)?, f)
    }

    fn read_lines_with<R: BufRead>(
        lines: &mut Lines<R>,
        mut f: impl FnMut(&mut Vec<(u32, f32)>),
    ) -> Result<Self> {
        let (n_rows, n_cols) = read_header(lines)?;
        let mut m = SparseMatrix::new(n_cols);
        // The header's count is not trusted for the allocation: the rows grow with the file.
        m.indptr.reserve(n_rows.min(io::MAX_PREALLOC));
        let mut row: Vec<(u32, f32)> = Vec::with_capacity(64);
        while let Some(line) = lines.next_bytes()? {
            if m.n_rows == n_rows {
                if line.iter().all(u8::is_ascii_whitespace) {
                    // Tolerate trailing blank lines after the last row only if they are blank.
                    continue;
                }
                return Err(lines.error(format!("more rows than the {n_rows} the header states")));
            }
            row.clear();
            parse_row(line, n_cols, &mut row).map_err(|msg| lines.error(msg))?;
            f(&mut row);
            m.push_row(&mut row)
                .map_err(|e| lines.error(e.to_string()))?;
        }
        if m.n_rows != n_rows {
            return Err(Error::parse(
                lines.path(),
                lines.line_no().max(1),
                format!("header states {n_rows} rows but the file has {}", m.n_rows),
            ));
        }
        Ok(m)
    }

    /// Writes the sparse text format to `w` (values exactly, see `FmtVal`).
    pub fn write_to<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        writeln!(w, "{} {}", self.n_rows, self.n_cols)?;
        for r in 0..self.n_rows {
            let (idx, val) = self.row(r);
            for (k, (i, v)) in idx.iter().zip(val).enumerate() {
                if k > 0 {
                    w.write_all(b" ")?;
                }
                write!(w, "{i}:{}", FmtVal(*v))?;
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Writes the sparse text format to `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        io::write_atomic(path, |w| self.write_to(w))
    }
}

/// Formats a value compactly and exactly: integers as `1`, others as the shortest decimal that
/// reads back to the same `f32` (so a ranking written and read back is the same ranking).
pub(crate) struct FmtVal(pub f32);

impl std::fmt::Display for FmtVal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v == v.trunc() && v.abs() < 1e7 {
            write!(f, "{}", v as i64)
        } else {
            write!(f, "{v}")
        }
    }
}

/// Reads and checks a `rows cols` header (the first line). Returns `(rows, cols)`.
pub(crate) fn read_header<R: BufRead>(lines: &mut Lines<R>) -> Result<(usize, usize)> {
    let header = match lines.next_line()? {
        None => {
            return Err(Error::parse(
                lines.path(),
                1,
                "empty file: expected a header `rows cols`",
            ))
        }
        Some(h) => h.to_owned(),
    };
    let fields: Vec<&str> = header.split_ascii_whitespace().collect();
    if fields.len() != 2 {
        return Err(lines.error(format!(
            "bad header {header:?}: expected two numbers `rows cols`"
        )));
    }
    let num = |s: &str, what: &str| -> Result<usize> {
        s.parse::<usize>().map_err(|_| {
            lines.error(format!(
                "bad header: {what} {s:?} is not a non-negative integer"
            ))
        })
    };
    let rows = num(fields[0], "row count")?;
    let cols = num(fields[1], "column count")?;
    if cols > u32::MAX as usize {
        return Err(lines.error(format!(
            "bad header: {cols} columns exceed the u32 index range"
        )));
    }
    Ok((rows, cols))
}

/// Parses one row `idx:val idx:val ...` (whitespace-separated; a bare `idx` has value 1).
pub(crate) fn parse_row(
    line: &[u8],
    n_cols: usize,
    out: &mut Vec<(u32, f32)>,
) -> std::result::Result<(), String> {
    for tok in line
        .split(|b| *b == b' ' || *b == b'\t' || *b == b'\r')
        .filter(|t| !t.is_empty())
    {
        out.push(parse_entry(tok, n_cols)?);
    }
    Ok(())
}

/// Parses one `idx:val` entry.
pub(crate) fn parse_entry(tok: &[u8], n_cols: usize) -> std::result::Result<(u32, f32), String> {
    let (i, v) = match tok.iter().position(|b| *b == b':') {
        Some(p) => (&tok[..p], Some(&tok[p + 1..])),
        None => (tok, None),
    };
    let show = || String::from_utf8_lossy(tok).into_owned();
    let idx = parse_u32(i).ok_or_else(|| format!("unparsable index in {:?}", show()))?;
    if idx as usize >= n_cols {
        return Err(format!(
            "index {idx} out of range: the header states {n_cols} columns"
        ));
    }
    let val = match v {
        None => 1.0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<f32>().ok())
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("unparsable value in {:?}", show()))?,
    };
    Ok((idx, val))
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    let mut x: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        x = x * 10 + (c - b'0') as u64;
    }
    u32::try_from(x).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<SparseMatrix> {
        SparseMatrix::read_from(s.as_bytes(), "m.txt")
    }

    #[test]
    fn reads_sorted_tabs_and_empty_rows() {
        let m = read("3 5\n4:1.0\t0:0.5  2:2\n\n1\n").unwrap();
        assert_eq!(m.n_rows, 3);
        assert_eq!(m.row(0), (&[0u32, 2, 4][..], &[0.5f32, 2.0, 1.0][..]));
        assert_eq!(m.row_len(1), 0);
        assert_eq!(m.row(2), (&[1u32][..], &[1.0f32][..]));
    }

    #[test]
    fn roundtrip() {
        let m = read("2 4\n0:1 3:0.25\n2:1\n").unwrap();
        let mut out = Vec::new();
        m.write_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "2 4\n0:1 3:0.25\n2:1\n");
    }

    #[test]
    fn trailing_empty_row_counts() {
        let m = read("2 4\n0:1\n\n").unwrap();
        assert_eq!(m.n_rows, 2);
    }

    fn err(s: &str) -> String {
        read(s).unwrap_err().to_string()
    }

    #[test]
    fn malformed_inputs_name_file_and_line() {
        assert!(err("").starts_with("m.txt:1: empty file"));
        assert!(err("3\n").starts_with("m.txt:1: bad header"));
        assert!(err("x 3\n").starts_with("m.txt:1: bad header"));
        assert!(err("2 3\n0:1\n").starts_with("m.txt:2: header states 2 rows but the file has 1"));
        assert!(err("1 3\n0:1\n1:1\n").starts_with("m.txt:3: more rows"));
        assert!(err("2 3\n0:1\n3:1\n").starts_with("m.txt:3: index 3 out of range"));
        assert!(err("1 3\n0:abc\n").starts_with("m.txt:2: unparsable value"));
        assert!(err("1 3\n-1:1\n").starts_with("m.txt:2: unparsable index"));
        assert!(err("1 3\n1:1 1:2\n").starts_with("m.txt:2: shape mismatch: duplicate index 1"));
        assert!(err("1 3\n0:nan\n").starts_with("m.txt:2: unparsable value"));
    }

    #[test]
    fn transpose_and_counts() {
        let m = SparseMatrix::from_index_rows(3, &[vec![0, 2], vec![2], vec![]]).unwrap();
        assert_eq!(m.col_counts(), vec![1, 0, 2]);
        let t = m.transpose();
        assert_eq!(t.n_rows, 3);
        assert_eq!(t.row_indices(2), &[0, 1]);
        assert_eq!(t.transpose(), m);
    }
}

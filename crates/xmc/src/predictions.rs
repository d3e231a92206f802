//! TEMP stand-in (the real module lands from the integrator).

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::sparse::SparseMatrix;

/// The `k` highest scores, descending.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (i as u32, s))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

fn write_rows<W: Write>(
    w: &mut W,
    rows: &[Vec<(u32, f32)>],
    n_labels: usize,
) -> std::io::Result<()> {
    writeln!(w, "{} {}", rows.len(), n_labels)?;
    for r in rows {
        let s: Vec<String> = r.iter().map(|(l, v)| format!("{l}:{v:.6}")).collect();
        writeln!(w, "{}", s.join(" "))?;
    }
    Ok(())
}

/// Sparse-format predictions to `path` (`-` = stdout).
pub fn write_predictions(
    path: impl AsRef<Path>,
    rows: &[Vec<(u32, f32)>],
    n_labels: usize,
) -> Result<()> {
    let path = path.as_ref();
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        write_rows(&mut out, rows, n_labels).map_err(|e| crate::Error::io(path, e))
    } else {
        crate::io::write_atomic(path, |f| write_rows(f, rows, n_labels))
    }
}

/// Reads predictions back.
pub fn read_predictions(path: impl AsRef<Path>) -> Result<SparseMatrix> {
    SparseMatrix::read(path)
}

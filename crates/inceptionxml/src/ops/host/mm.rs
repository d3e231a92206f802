//! A bounds-checked strided matrix product on host slices, over the `gemm` crate that candle's
//! CPU matmul also uses. Any row and column strides, so transposes, column slices and
//! overlapping windows (im2col without the copy) are views, not copies.
//!
//! Sound by construction: [`View`] and [`Out`] keep their fields private, so every view is built
//! by a constructor here; [`mm`] checks, with overflow-checked arithmetic, that every element
//! the product reads or writes lies inside its slice, and that no two elements of the product
//! land on the same destination value (rows and columns of `Out` must not overlap: with rayon's
//! parallelism an aliased write would be a data race). Crate-private: the fused ops' helper,
//! not part of the library's API.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A read-only strided matrix view: element `(i, j)` is `data[off + i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    data: &'a [f32],
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix starting at `off` (row stride `cols`).
    pub fn rm(data: &'a [f32], off: usize, rows: usize, cols: usize) -> Self {
        View {
            data,
            off,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// Any strides: element `(i, j)` at `data[off + i·rs + j·cs]` (checked when multiplied).
    pub fn strided(
        data: &'a [f32],
        off: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        View {
            data,
            off,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The top-left `rows × cols` block of this view (its strides and start kept).
    pub fn block(self, rows: usize, cols: usize) -> Self {
        View { rows, cols, ..self }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The same matrix with row stride `rs`.
    pub fn rs(self, rs: usize) -> Self {
        View { rs, ..self }
    }
}

/// Where a product goes: element `(i, j)` at `off + i·rs + j·cs` of the destination slice.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    off: usize,
    rs: usize,
    cs: usize,
}

impl Out {
    /// Any strides: element `(i, j)` at `off + i·rs + j·cs` (checked when written: rows and
    /// columns may not overlap).
    #[cfg(test)]
    pub fn strided(off: usize, rs: usize, cs: usize) -> Self {
        Out { off, rs, cs }
    }

    /// Row-major with row stride `rs`.
    pub fn rm(off: usize, rs: usize) -> Self {
        Out { off, rs, cs: 1 }
    }
}

/// The index of element `(rows − 1, cols − 1)`, None when it overflows `usize`.
fn last_index(off: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    let r = rows.saturating_sub(1).checked_mul(rs)?;
    let c = cols.saturating_sub(1).checked_mul(cs)?;
    off.checked_add(r)?.checked_add(c)
}

/// Whether the `rows × cols` elements at `i·rs + j·cs` are all distinct: rows that each fit
/// below the next row's start (`rs ≥ cols·cs`), or columns that do (`cs ≥ rows·rs`). Sufficient,
/// and every layout a product writes here (row-major, column-major, column blocks) meets it.
fn injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    let fits = |outer: usize, inner_n: usize, inner: usize| {
        inner >= 1 && inner_n.checked_mul(inner).is_some_and(|span| outer >= span)
    };
    match (rows, cols) {
        (0, _) | (_, 0) | (1, 1) => true,
        (1, _) => cs >= 1,
        (_, 1) => rs >= 1,
        _ => fits(rs, cols, cs) || fits(cs, rows, rs),
    }
}

fn check(
    what: &str,
    len: usize,
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    if rows > 0 && cols > 0 && last_index(off, rows, cols, rs, cs).is_none_or(|l| l >= len) {
        return Err(Error::Shape(format!(
            "mm: {what} view {rows}×{cols} at {off} (strides {rs}, {cs}) exceeds {len} values"
        )));
    }
    Ok(())
}

/// The parallelism for a product of this size: rayon's threads for large ones, none for small.
pub fn par_for(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst[out] = a·b` (or `+= a·b` with `acc`), scaled by `alpha`. Every index is checked against
/// the slices before the product runs.
pub fn mm(
    dst: &mut [f32],
    out: Out,
    a: View,
    b: View,
    alpha: f32,
    acc: bool,
    par: Parallelism,
) -> Result<()> {
    // SAFETY: `dst` is borrowed mutably for the call: nothing else reads or writes it.
    unsafe { mm_raw(dst.as_mut_ptr(), dst.len(), out, a, b, alpha, acc, par) }
}

/// [`mm`] into the `len` values at `dst`.
///
/// # Safety
/// `dst..dst + len` is valid for writes, and for the duration of the call no other code reads
/// or writes the elements the product writes, and `a`, `b` do not overlap them.
#[allow(clippy::too_many_arguments)]
unsafe fn mm_raw(
    dst: *mut f32,
    len: usize,
    out: Out,
    a: View,
    b: View,
    alpha: f32,
    acc: bool,
    par: Parallelism,
) -> Result<()> {
    if a.cols != b.rows {
        return Err(Error::Shape(format!(
            "mm: {}×{} times {}×{}",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    let (m, n, k) = (a.rows, b.cols, a.cols);
    check("lhs", a.data.len(), a.off, a.rows, a.cols, a.rs, a.cs)?;
    check("rhs", b.data.len(), b.off, b.rows, b.cols, b.rs, b.cs)?;
    check("dst", len, out.off, m, n, out.rs, out.cs)?;
    if !injective(m, n, out.rs, out.cs) {
        return Err(Error::Shape(format!(
            "mm: destination {m}×{n} with strides {}, {} writes some values twice",
            out.rs, out.cs
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    *dst.add(out.off + i * out.rs + j * out.cs) = 0.0;
                }
            }
        }
        return Ok(());
    }
    // SAFETY: every element the product reads or writes was checked above to lie inside its
    // slice or the destination; the caller guarantees nothing else touches what it writes.
    gemm::gemm(
        m,
        n,
        k,
        dst.add(out.off),
        out.cs as isize,
        out.rs as isize,
        acc,
        a.data.as_ptr().add(a.off),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr().add(b.off),
        b.cs as isize,
        b.rs as isize,
        1.0,
        alpha,
        false,
        false,
        false,
        par,
    );
    Ok(())
}

/// A destination that parallel tasks share, each writing its own part (the column blocks of a
/// row-major matrix, say: disjoint, but not contiguous, so `&mut` slices cannot split them).
/// Borrows the slice mutably for its lifetime; reads and writes go through [`SharedDst::mm`]
/// and [`SharedDst::slice_mut`], bounds-checked, whose callers promise the parts are disjoint.
pub struct SharedDst<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from a `&mut [f32]` held for 'a; which task touches which elements
// is the callers' promise (the unsafe methods).
unsafe impl Send for SharedDst<'_> {}
unsafe impl Sync for SharedDst<'_> {}

impl<'a> SharedDst<'a> {
    pub fn new(dst: &'a mut [f32]) -> Self {
        SharedDst {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// [`mm`] into the shared destination.
    ///
    /// # Safety
    /// While it runs, no other task reads or writes the elements this product writes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm(
        &self,
        out: Out,
        a: View,
        b: View,
        alpha: f32,
        acc: bool,
        par: Parallelism,
    ) -> Result<()> {
        mm_raw(self.ptr, self.len, out, a, b, alpha, acc, par)
    }

    /// The values `off..off + n`, mutably.
    ///
    /// # Safety
    /// While the slice lives, no other task reads or writes those values.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, off: usize, n: usize) -> Result<&mut [f32]> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => {
                Ok(std::slice::from_raw_parts_mut(self.ptr.add(off), n))
            }
            _ => Err(Error::Shape(format!(
                "shared destination: {n} values at {off} exceed {}",
                self.len
            ))),
        }
    }
}

/// `dst = a·b` for a long reduction (`a.cols` = `b.rows` large, the product small, as in a weight
/// gradient `Xᵀ·G` over a batch): the reduction is cut into a fixed number of slices computed in
/// parallel and their partial products added in slice order, so the result does not depend on
/// the thread count or on scheduling. `dst` is row-major `a.rows × b.cols`.
pub fn mm_split_k(dst: &mut [f32], a: View, b: View) -> Result<()> {
    const SLICES: usize = 8;
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if dst.len() != m * n || k != b.rows {
        return Err(Error::Shape(format!(
            "mm_split_k: {}×{} times {}×{} into {} values",
            a.rows,
            a.cols,
            b.rows,
            b.cols,
            dst.len()
        )));
    }
    let step = k.div_ceil(SLICES).max(1);
    let parts: Vec<Vec<f32>> = (0..k.div_ceil(step))
        .into_par_iter()
        .map(|i| -> Result<Vec<f32>> {
            let (k0, kn) = (i * step, step.min(k - i * step));
            let mut part = vec![0f32; m * n];
            let shifted = |off: usize, stride: usize| {
                k0.checked_mul(stride)
                    .and_then(|o| o.checked_add(off))
                    .ok_or_else(|| Error::Shape("mm_split_k: view offset overflows".into()))
            };
            let av = View {
                off: shifted(a.off, a.cs)?,
                cols: kn,
                ..a
            };
            let bv = View {
                off: shifted(b.off, b.rs)?,
                rows: kn,
                ..b
            };
            mm(
                &mut part,
                Out::rm(0, n),
                av,
                bv,
                1.0,
                false,
                Parallelism::None,
            )?;
            Ok(part)
        })
        .collect::<Result<_>>()?;
    dst.fill(0.0);
    for p in &parts {
        for (o, v) in dst.iter_mut().zip(p) {
            *o += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut o = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for l in 0..a.cols {
                    o[i * b.cols + j] +=
                        a.data[a.off + i * a.rs + l * a.cs] * b.data[b.off + l * b.rs + j * b.cs];
                }
            }
        }
        o
    }

    #[test]
    fn strided_views_and_accumulation_match_loops() {
        let data: Vec<f32> = (0..400)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        // a: 5×6 rows with stride 9 starting at 3; b: the transpose of a 7×6 block.
        let a = View::rm(&data, 3, 5, 6).rs(9);
        let b = View::rm(&data, 100, 7, 6).t();
        let want = naive(a, b);
        let mut dst = vec![1f32; 5 * 7];
        mm(&mut dst, Out::rm(0, 7), a, b, 1.0, false, Parallelism::None).unwrap();
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4);
        }
        mm(&mut dst, Out::rm(0, 7), a, b, -2.0, true, Parallelism::None).unwrap();
        for (x, y) in dst.iter().zip(&want) {
            assert!((x + y).abs() < 1e-4);
        }
        // Transposed destination.
        let mut dt = vec![0f32; 7 * 5];
        mm(
            &mut dt,
            Out {
                off: 0,
                rs: 1,
                cs: 5,
            },
            a,
            b,
            1.0,
            false,
            Parallelism::None,
        )
        .unwrap();
        for i in 0..5 {
            for j in 0..7 {
                assert!((dt[j * 5 + i] - want[i * 7 + j]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn split_reduction_matches_one_product() {
        let data: Vec<f32> = (0..4000)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        // aᵀ of a 301×5 block with row stride 7: a long reduction of 301.
        let a = View::rm(&data, 2, 301, 5).rs(7).t();
        let b = View::rm(&data, 1000, 301, 3);
        let want = naive(a, b);
        let mut got = vec![9f32; 15];
        mm_split_k(&mut got, a, b).unwrap();
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
        assert!(mm_split_k(&mut got[..14], a, b).is_err());
    }

    /// Products into column blocks of one shared destination, from parallel tasks, equal the
    /// whole product; out-of-range writes are errors.
    #[test]
    fn shared_destination_column_blocks_make_the_whole_product() {
        let data: Vec<f32> = (0..3000)
            .map(|i| ((i * 29 % 83) as f32 - 41.0) / 20.0)
            .collect();
        let (m, k, n) = (7, 11, 50);
        let a = View::rm(&data, 0, m, k);
        let b = View::rm(&data, 500, k, n);
        let want = naive(a, b);
        let mut dst = vec![f32::NAN; m * n];
        let shared = SharedDst::new(&mut dst);
        (0..n.div_ceil(8)).into_par_iter().for_each(|j| {
            let (c0, w) = (j * 8, 8.min(n - j * 8));
            let bj = View {
                off: b.off + c0,
                cols: w,
                ..b
            };
            // SAFETY: block j writes only columns c0..c0 + w.
            unsafe { shared.mm(Out::rm(c0, n), a, bj, 1.0, false, Parallelism::None) }.unwrap();
        });
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        let shared = SharedDst::new(&mut dst);
        // SAFETY: nothing else uses the destination here.
        unsafe {
            assert!(shared.slice_mut(m * n - 2, 3).is_err());
            assert!(shared.slice_mut(usize::MAX, 2).is_err());
            assert!(shared
                .mm(Out::rm(1, n), a, b, 1.0, false, Parallelism::None)
                .is_err());
            assert_eq!(shared.slice_mut(m * n - 2, 2).unwrap().len(), 2);
        }
    }

    /// Strides whose last index overflows `usize` are refused, not wrapped; so are
    /// destinations whose rows or columns overlap (aliased writes from parallel tasks).
    #[test]
    fn overflowing_strides_and_aliased_destinations_are_errors() {
        let data = vec![1f32; 16];
        let a = View::rm(&data, 0, 2, 2);
        let b = View::rm(&data, 0, 2, 2);
        let mut dst = vec![0f32; 16];
        let huge = View::strided(&data, 1, (2, 2), (usize::MAX / 2 + 1, 1));
        assert!(mm(
            &mut dst,
            Out::rm(0, 2),
            huge,
            b,
            1.0,
            false,
            Parallelism::None
        )
        .is_err());
        let wrap = Out::strided(1, usize::MAX, 1);
        assert!(mm(&mut dst, wrap, a, b, 1.0, false, Parallelism::None).is_err());
        for (rs, cs) in [(0, 1), (1, 1), (1, 0), (2, 2), (3, 2)] {
            let out = Out::strided(0, rs, cs);
            let r = mm(&mut dst, out, a, b, 1.0, false, Parallelism::Rayon(2));
            assert!(r.is_err(), "strides ({rs}, {cs}) alias");
        }
        for (rs, cs) in [(2, 1), (1, 2), (5, 1), (1, 3), (4, 2)] {
            let out = Out::strided(0, rs, cs);
            assert!(mm(&mut dst, out, a, b, 1.0, false, Parallelism::None).is_ok());
        }
        // A single row or column needs only its own stride.
        let row = View::rm(&data, 0, 1, 2);
        assert!(mm(
            &mut dst,
            Out::strided(0, 0, 1),
            row,
            b,
            1.0,
            false,
            Parallelism::None
        )
        .is_ok());
        assert!(mm(
            &mut dst,
            Out::strided(0, 0, 0),
            row,
            b,
            1.0,
            false,
            Parallelism::None
        )
        .is_err());
    }

    #[test]
    fn out_of_bounds_views_are_errors() {
        let data = vec![0f32; 10];
        let a = View::rm(&data, 0, 3, 4);
        let b = View::rm(&data, 0, 4, 2);
        let mut dst = vec![0f32; 6];
        assert!(mm(&mut dst, Out::rm(0, 2), a, b, 1.0, false, Parallelism::None).is_err());
        let a = View::rm(&data, 0, 2, 2);
        let b = View::rm(&data, 0, 2, 2);
        let mut small = vec![0f32; 3];
        assert!(mm(
            &mut small,
            Out::rm(0, 2),
            a,
            b,
            1.0,
            false,
            Parallelism::None
        )
        .is_err());
        assert!(mm(
            &mut dst,
            Out::rm(0, 2),
            a,
            View::rm(&data, 0, 3, 2),
            1.0,
            false,
            Parallelism::None
        )
        .is_err());
    }
}

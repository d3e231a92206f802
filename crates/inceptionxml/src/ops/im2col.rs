//! Strided 1-D im2col with circular padding, as a CPU kernel with its own backward (col2im).
//!
//! Input `[B, n, C]` (channels last). Output row `b·out + t` is the window of `k` positions
//! starting at padded position `stride·t`, i.e. input positions `(stride·t + r − pad) mod n` for
//! `r = 0..k`, each position's `C` channels in order: `[B·out, k·C]`. Without wrap-around a window
//! is one contiguous run of `k·C` values, so the kernel is a `memcpy` per row. The backward
//! scatter-adds each row back (per sample, in parallel). candle's `cat` of strided views, which
//! the composed version needs, is ~20× slower. Other devices use [`im2col_composed`].

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::storage::f32_slice;

/// Geometry of the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Window length (kernel size).
    pub k: usize,
    /// Step between windows.
    pub stride: usize,
    /// Circular padding on each side.
    pub pad: usize,
    /// Number of windows.
    pub out: usize,
}

impl Windows {
    /// `k`, `stride`, `pad` over length `n`: `out = ⌊(n + 2·pad − k)/stride⌋ + 1`.
    pub fn new(n: usize, k: usize, stride: usize, pad: usize) -> Result<Self> {
        if k == 0 || stride == 0 || n + 2 * pad < k || pad > n {
            return Err(Error::Shape(format!(
                "im2col: length {n}, kernel {k}, stride {stride}, padding {pad}"
            )));
        }
        Ok(Windows {
            k,
            stride,
            pad,
            out: (n + 2 * pad - k) / stride + 1,
        })
    }

    /// Input position of window `t`'s element `r`.
    #[inline]
    fn src(&self, t: usize, r: usize, n: usize) -> usize {
        (self.stride * t + r + n - self.pad) % n
    }
}

struct Im2Col(Windows);
struct Col2Im {
    w: Windows,
    n: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col_circular"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "im2col input")?;
        let (b, n, c) = l.shape().dims3()?;
        let w = self.0;
        let row = w.k * c;
        let mut y = vec![0f32; b * w.out * row];
        y.par_chunks_mut(w.out * row)
            .zip(x.par_chunks(n * c))
            .for_each(|(yb, xb)| {
                for (t, yr) in yb.chunks_mut(row).enumerate() {
                    let start = (w.stride * t) as isize - w.pad as isize;
                    if start >= 0 && start as usize + w.k <= n {
                        let s = start as usize * c;
                        yr.copy_from_slice(&xb[s..s + row]);
                    } else {
                        for r in 0..w.k {
                            let p = w.src(t, r, n) * c;
                            yr[r * c..(r + 1) * c].copy_from_slice(&xb[p..p + c]);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((b * w.out, row))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = arg.dim(1)?;
        let g = grad.contiguous()?;
        Ok(Some(
            g.apply_op1_no_bwd(&Col2Im { w: self.0, n })?
                .reshape(arg.shape())?,
        ))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im_circular"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, "col2im gradient")?;
        let (rows, row) = l.shape().dims2()?;
        let w = self.w;
        let n = self.n;
        let c = row / w.k;
        let b = rows / w.out;
        let mut dx = vec![0f32; b * n * c];
        dx.par_chunks_mut(n * c)
            .zip(g.par_chunks(w.out * row))
            .for_each(|(dxb, gb)| {
                for (t, gr) in gb.chunks(row).enumerate() {
                    for r in 0..w.k {
                        let p = w.src(t, r, n) * c;
                        for (d, v) in dxb[p..p + c].iter_mut().zip(&gr[r * c..(r + 1) * c]) {
                            *d += v;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(dx), Shape::from((b, n, c))))
    }
}

/// `x` `[B, n, C]` -> `[B·out, k·C]` (see the module doc).
pub fn im2col(x: &Tensor, w: Windows) -> Result<Tensor> {
    let (_b, n, _c) = x.dims3()?;
    if w.out == 0 || w.stride * (w.out - 1) + w.k > n + 2 * w.pad {
        return Err(Error::Shape(format!("im2col: {w:?} over length {n}")));
    }
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        Ok(x.contiguous()?.apply_op1(Im2Col(w))?)
    } else {
        im2col_composed(x, w)
    }
}

/// The same with candle's tensor ops (gather by `index_select` of the positions).
pub fn im2col_composed(x: &Tensor, w: Windows) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let idx: Vec<u32> = (0..w.out)
        .flat_map(|t| (0..w.k).map(move |r| w.src(t, r, n) as u32))
        .collect();
    let idx = Tensor::from_vec(idx, w.out * w.k, x.device())?;
    Ok(x.index_select(&idx, 1)?.reshape((b * w.out, w.k * c))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn kernel_matches_composed_forward_and_backward() {
        let dev = Device::Cpu;
        for (n, k, stride, pad) in [
            (300, 16, 4, 6),
            (75, 16, 4, 0),
            (10, 8, 4, 2),
            (66, 4, 4, 0),
            (9, 3, 2, 1),
        ] {
            let (b, c) = (3, 5);
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, n, c), &dev).unwrap()).unwrap();
            let w = Windows::new(n, k, stride, pad).unwrap();
            let a = im2col(x.as_tensor(), w).unwrap();
            let e = im2col_composed(x.as_tensor(), w).unwrap();
            assert_eq!(a.dims(), &[b * w.out, k * c]);
            assert_eq!(a.to_vec2::<f32>().unwrap(), e.to_vec2::<f32>().unwrap());
            let r = Tensor::randn(0f32, 1., a.shape(), &dev).unwrap();
            let ga = (a * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let ge = (e * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let d: f32 = (ga.get(x.as_tensor()).unwrap() - ge.get(x.as_tensor()).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-5, "n={n} k={k}: {d}");
        }
    }
}

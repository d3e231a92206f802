//! Dot product and `y += a·x` on f32 rows, with AVX2+FMA chosen at run time on x86-64 (the
//! binary itself targets baseline x86-64, so the wide path must be selected dynamically).
//! Sixteen independent accumulators let the compiler keep two 8-wide registers busy.

use crate::ops::host::cpu::dispatch;

const LANES: usize = 16;

macro_rules! kernels {
    ($dot:ident, $axpy:ident, $fma:expr) => {
        #[inline(always)]
        fn $dot(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let mut acc = [0f32; LANES];
            let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for j in 0..LANES {
                    acc[j] = $fma(x[j], y[j], acc[j]);
                }
            }
            let mut s = 0f32;
            for (x, y) in ra.iter().zip(rb) {
                s = $fma(*x, *y, s);
            }
            acc.iter().sum::<f32>() + s
        }

        #[inline(always)]
        fn $axpy(y: &mut [f32], a: f32, x: &[f32]) {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = $fma(a, x, *y);
            }
        }
    };
}

/// Values summed in i32 before the partial sum moves to i64 on the plain path: each product is
/// at most 128·32768 = 2²², so 256 of them (2³⁰) cannot overflow an i32.
const I8_CHUNK: usize = 256;

/// `Σ a[i]·b[i]` of int8 weights and int16 activations, exact for every length: i32 products
/// summed in chunks of [`I8_CHUNK`], the chunks in i64. The compiler turns the inner sum into
/// `pmaddwd`.
#[inline(always)]
fn dot_i8_body(a: &[i8], b: &[i16]) -> i64 {
    let n = a.len().min(b.len());
    a[..n]
        .chunks(I8_CHUNK)
        .zip(b[..n].chunks(I8_CHUNK))
        .map(|(a, b)| {
            let s: i32 = a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum();
            s as i64
        })
        .sum()
}

#[inline(always)]
fn mul_add_plain(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

kernels!(dot_plain, axpy_plain, mul_add_plain);

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::LANES;
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    kernels!(dot_fma, axpy_fma, fma);

    /// [`super::dot`] with FMA.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_fma(a, b)
    }

    /// The 8 i32 lanes of the int8·int16 products of blocks `blocks` (16 values each): sign-extend
    /// 16 int8 to int16 (`vpmovsxbw`), multiply by 16 int16 and add adjacent pairs into 8 int32
    /// (`vpmaddwd`), accumulate. A block adds at most 2 · 2²² to a lane, so up to 255 blocks
    /// cannot overflow one.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA, and `blocks.end · 16` is at most the length of both slices.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn madd_lanes(a: &[i8], b: &[i16], blocks: std::ops::Range<usize>) -> [i32; 8] {
        use std::arch::x86_64::*;
        let mut acc = _mm256_setzero_si256();
        for i in blocks {
            // SAFETY: i·16 + 16 ≤ the length of both slices (the caller's promise); unaligned.
            let (wa, xb) = unsafe {
                (
                    _mm_loadu_si128(a.as_ptr().add(i * 16) as *const __m128i),
                    _mm256_loadu_si256(b.as_ptr().add(i * 16) as *const __m256i),
                )
            };
            let wa = _mm256_cvtepi8_epi16(wa);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(wa, xb));
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds 8 i32 = 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        lanes
    }

    /// `Σ a[i]·b[i]` by 16-value blocks ([`madd_lanes`]): rows up to 511 values in one i32 pass
    /// (511 · 2²² < 2³¹), longer ones 255 blocks at a time with the lanes summed in i64: exact
    /// for every length.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA (checked by the caller, `ops::cpu::dispatch!`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i16]) -> i64 {
        const MAX_BLOCKS: usize = 255;
        let n = a.len().min(b.len());
        let blocks = n / 16;
        // Fewer than 16 products: exact in i32.
        let (ta, tb) = (&a[blocks * 16..n], &b[blocks * 16..n]);
        let tail: i32 = ta.iter().zip(tb).map(|(&x, &y)| x as i32 * y as i32).sum();
        if n <= 511 {
            // SAFETY: blocks · 16 ≤ n, the common length; AVX2 + FMA as this function's.
            let lanes = unsafe { madd_lanes(a, b, 0..blocks) };
            return (lanes.iter().sum::<i32>() + tail) as i64;
        }
        let mut total = tail as i64;
        for start in (0..blocks).step_by(MAX_BLOCKS) {
            let end = blocks.min(start + MAX_BLOCKS);
            // SAFETY: end · 16 ≤ blocks · 16 ≤ n; AVX2 + FMA as this function's.
            let lanes = unsafe { madd_lanes(a, b, start..end) };
            total += lanes.iter().map(|&l| l as i64).sum::<i64>();
        }
        total
    }

    /// [`super::axpy`] with FMA.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        axpy_fma(y, a, x)
    }
}

/// `Σ a[i]·b[i]` over the common length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dispatch!(wide::dot(a, b), dot_plain(a, b))
}

/// Exact integer dot product of int8 and int16 rows (over the common length, any length).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i16]) -> i64 {
    dispatch!(wide::dot_i8(a, b), dot_i8_body(a, b))
}

/// `y[i] += a·x[i]` over the common length.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    dispatch!(wide::axpy(y, a, x), axpy_plain(y, a, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_plain_loops() {
        for n in [0usize, 1, 15, 16, 17, 480, 301] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
            let qa: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as i32 as i8).collect();
            let qb: Vec<i16> = (0..n)
                .map(|i| ((i as i32 * 97) % 32000 - 16000) as i16)
                .collect();
            let want: i64 = qa.iter().zip(&qb).map(|(x, y)| *x as i64 * *y as i64).sum();
            assert_eq!(dot_i8(&qa, &qb), want);
        }
    }

    /// The largest products over rows far longer than an i32 sum holds (4,100 · 2²² ≈ 2³⁴),
    /// on the wide and the plain path alike.
    #[test]
    fn dot_i8_is_exact_for_long_rows_of_extreme_values() {
        for n in [255usize, 256, 257, 511, 512, 4_080, 4_100] {
            let a = vec![-128i8; n];
            let b = vec![-32768i16; n];
            let want = n as i64 * 128 * 32768;
            assert_eq!(dot_i8(&a, &b), want, "n = {n}");
            assert_eq!(dot_i8_body(&a, &b), want, "n = {n}");
        }
    }
}

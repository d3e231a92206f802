//! Access to the f32 data of a candle CPU storage from custom-op kernels.

use candle_core::{CpuStorage, Layout};

/// The contiguous f32 data `l` describes in `s`; `what` names the tensor in the error.
pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: expects a contiguous f32 tensor"),
    }
}

/// Like [`f32_slice`], mutable (for in-place ops).
pub(crate) fn f32_slice_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: expects a contiguous f32 tensor"),
    }
}

/// Runs `f` on the values of `t` (row-major): in place for a contiguous f32 CPU tensor, from a
/// host copy otherwise. Lets a big table be read (e.g. quantised) without a transient copy.
pub(crate) fn with_host_f32<R>(
    t: &candle_core::Tensor,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    {
        let (st, l) = t.storage_and_layout();
        if let candle_core::Storage::Cpu(cs) = &*st {
            if let Ok(v) = f32_slice(cs, l, "table") {
                return Ok(f(v));
            }
        }
    }
    let v: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(f(&v))
}

/// [`with_host_f32`] for several tensors at once: runs `f` on the values of each of `ts`
/// (row-major), in place where a tensor is a contiguous f32 CPU tensor, from a host copy
/// otherwise. Returns what `f` returns; a tensor that cannot be read is an error.
pub(crate) fn with_host_f32s<const N: usize, R>(
    ts: [&candle_core::Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> candle_core::Result<R> {
    let readable = |t: &candle_core::Tensor| {
        let (st, l) = t.storage_and_layout();
        matches!(&*st, candle_core::Storage::Cpu(cs) if f32_slice(cs, l, "").is_ok())
    };
    // Copies of the tensors that cannot be read in place, made before any storage is held.
    let mut copies: [Option<Vec<f32>>; N] = std::array::from_fn(|_| None);
    for (t, c) in ts.iter().zip(copies.iter_mut()) {
        if !readable(t) {
            let v = t.flatten_all()?.to_dtype(candle_core::DType::F32)?;
            *c = Some(v.to_vec1()?);
        }
    }
    let guards: [_; N] = std::array::from_fn(|i| ts[i].storage_and_layout());
    let mut values: [&[f32]; N] = [&[]; N];
    for ((v, copy), (st, l)) in values.iter_mut().zip(&copies).zip(&guards) {
        *v = match (copy, &**st) {
            (Some(c), _) => c,
            (None, candle_core::Storage::Cpu(cs)) => f32_slice(cs, l, "tensor")?,
            (None, _) => candle_core::bail!("tensor: not on the CPU"),
        };
    }
    Ok(f(values))
}

/// `n` zeros, written by the thread pool when `n` is large. A big `vec![0.0; n]` in a training
/// step is not free: once the allocator recycles the previous step's buffer, `calloc` clears it
/// with one `memset` on the calling thread (tens of MB for a classifier's gradient), which the
/// other threads wait out.
pub fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const SERIAL: usize = 1 << 16;
    if n <= SERIAL || rayon::current_num_threads() == 1 {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeros_are_zeros_of_the_length_asked() {
        for n in [0, 1, 1 << 16, (1 << 16) + 1, 3_000_017] {
            let v = super::zeros(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }
}

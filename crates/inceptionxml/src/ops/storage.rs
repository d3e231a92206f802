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

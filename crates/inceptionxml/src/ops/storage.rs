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

//! Launching the kernels of `kernels/ops.cu` (compiled to PTX by `build.rs`) on candle's CUDA
//! storage. Only built with the `cuda` feature.
//!
//! Every kernel uses grid-stride loops, so any element count runs with [`grid`]'s launch shape.
//! Tensors other than the op's own arguments (Adam moments, a mask, a scale) are reached through
//! [`with_cuda`], which holds their storage lock while the kernel is queued.

use std::sync::Arc;

pub(crate) use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchArgs,
    LaunchConfig,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));
const MODULE: &str = "inceptionxml_ops";
/// Threads per block (bce_sum_f32's shared arrays are sized for it).
pub(crate) const THREADS: u32 = 256;

/// A kernel of the project's module (loaded once per device) and the device's stream.
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    pub(crate) fn new(dev: &CudaDevice, name: &str) -> candle_core::Result<Self> {
        let func = dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function();
        Ok(Kernel {
            func,
            stream: dev.cuda_stream(),
        })
    }

    /// An argument list to fill with `.arg(..)` and pass to [`launch`].
    pub(crate) fn args(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// A launch shape for `n` work items (grid-stride loops cover any n).
pub(crate) fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Caps a launch's block count (reduction kernels: fewer blocks, fewer atomics).
pub(crate) trait CapBlocks {
    fn cap_blocks(self, max: u32) -> Self;
}

impl CapBlocks for LaunchConfig {
    fn cap_blocks(mut self, max: u32) -> Self {
        self.grid_dim.0 = self.grid_dim.0.min(max).max(1);
        self
    }
}

/// The contiguous f32 data `l` describes in `s`.
pub(crate) fn view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        None => candle_core::bail!("{what}: expects a contiguous f32 tensor"),
    }
}

/// Like [`view`], mutable (in-place ops).
pub(crate) fn view_mut<'a>(
    s: &'a mut CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<CudaViewMut<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b)),
        None => candle_core::bail!("{what}: expects a contiguous f32 tensor"),
    }
}

/// Runs `f` on the CUDA storage of `t` (an error names `what` if `t` is elsewhere).
pub(crate) fn with_cuda<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cuda(cs) => f(cs, l),
        _ => candle_core::bail!("{what}: expected a tensor on the CUDA device"),
    }
}

/// Runs `f` on the device views of Adam moments `m` and `v`, both checked to hold `n` values.
pub(crate) fn with_moments<R>(
    m: &Tensor,
    v: &Tensor,
    n: usize,
    f: impl FnOnce(&CudaView<'_, f32>, &CudaView<'_, f32>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    with_cuda(m, "adam m", |ms, ml| {
        with_cuda(v, "adam v", |vs, vl| {
            let (mv, vv) = (view(ms, ml, "adam m")?, view(vs, vl, "adam v")?);
            if mv.len() != n || vv.len() != n {
                candle_core::bail!("adam: parameter has {n} values, state {}", mv.len());
            }
            f(&mv, &vv)
        })
    })
}

/// Copies host values to a new device buffer (one zero element for an empty slice, so that a
/// kernel always gets a valid pointer).
pub(crate) fn upload<T: DeviceRepr + Default + Clone + 'static>(
    dev: &CudaDevice,
    data: &[T],
) -> candle_core::Result<CudaSlice<T>> {
    if data.is_empty() {
        return dev.clone_htod(&[T::default()][..]);
    }
    dev.clone_htod(data)
}

/// A new f32 device buffer of `n` zeros.
pub(crate) fn zeros(dev: &CudaDevice, n: usize) -> candle_core::Result<CudaSlice<f32>> {
    dev.alloc_zeros::<f32>(n.max(1))
}

/// Wraps a device buffer as candle storage.
pub(crate) fn storage(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// Pushes a kernel's arguments in order and queues the launch:
/// `launch_kernel!(kernel, config; arg, arg, ...)`, optionally ending in `; adam coef` to push an
/// [`crate::optim::adam::AdamCoef`]'s per-step scalars last. Evaluates to
/// `candle_core::Result<()>`.
macro_rules! launch_kernel {
    ($kernel:expr, $cfg:expr; $($arg:expr),* $(,)? $(; adam $coef:expr)?) => {{
        #[allow(unused_imports)]
        use $crate::ops::cuda::PushKernelArg as _;
        let mut b = $kernel.args();
        $( b.arg($arg); )*
        $( $coef.push_args(&mut b); )?
        $crate::ops::cuda::launch(b, $cfg)
    }};
}
pub(crate) use launch_kernel;

/// Queues a configured launch.
pub(crate) fn launch(mut b: LaunchArgs<'_>, cfg: LaunchConfig) -> candle_core::Result<()> {
    // SAFETY: every kernel of ops.cu bounds its accesses by the counts passed with its
    // pointers, which the callers derive from the same buffers.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

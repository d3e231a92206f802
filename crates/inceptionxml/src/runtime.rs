//! Process-wide allocator tuning for training and batch prediction on the CPU.
//!
//! candle allocates a fresh buffer for every op result and every gradient, many of them several
//! MB (a `[128, 22933]` logit matrix is 11 MB, the classifier's gradient 44 MB). With glibc's
//! defaults those come from `mmap` and go back with `munmap`, so every step pays page faults, page
//! zeroing and TLB shootdowns for all of them: about a third of the model's CPU time in a
//! training step (measured with `perf`). Keeping freed memory in the heap removes most of that.
//! Call [`tune_allocator`] once at program start (the binary's `train` / `predict`); it is a
//! no-op where the C library is not glibc.
//!
//! [`tune_runtime`] does that and also pins candle's thread count: without `RAYON_NUM_THREADS`
//! set, candle 0.11 asks `num_cpus::get_physical()` — which parses `/proc/cpuinfo` — on *every*
//! matmul (~5% of a batch-1 forward in `perf`).

use crate::error::{Error, Result};

/// [`tune_allocator`], and sets `RAYON_NUM_THREADS` to the available parallelism if it is unset.
/// Call it first thing in `main`, before any thread is started (it writes the environment).
pub fn tune_runtime() -> bool {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    tune_allocator()
}

/// Serves every allocation from the heap (no `mmap`: glibc would still map each buffer above its
/// 32 MiB threshold maximum, and an InceptionXML+ step at 670K labels frees and re-maps
/// hundreds of MB of them — half its time went to page zeroing and TLB shootdowns) and keeps
/// freed memory in the heap (trim threshold 2 GiB, top pad 64 MiB). Returns whether every
/// setting was accepted.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_MMAP_MAX: i32 = -4;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator parameters; valid at any time.
        unsafe {
            let a = mallopt(M_MMAP_THRESHOLD, 32 << 20);
            let b = mallopt(M_TRIM_THRESHOLD, i32::MAX);
            let c = mallopt(M_TOP_PAD, 64 << 20);
            let d = mallopt(M_MMAP_MAX, 0);
            a == 1 && b == 1 && c == 1 && d == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Makes the calling thread's SSE/AVX arithmetic flush subnormal results to zero and read
/// subnormal inputs as zero (MXCSR FTZ + DAZ). Returns whether it applies (x86_64 only).
///
/// Late in training some gradients, Adam moments and products fall below f32's normal range
/// (1.2e-38), and every operation on a subnormal takes a slow microcode path: an InceptionXML+
/// run on yso_finna_sv slowed from 1,871 to 1,163 samples/s between epochs 6 and 13; resumed
/// from epoch 13 with this set it trained epoch 14 at 1,854 samples/s (1.63x) to the same loss
/// and validation P@1 to the last printed digit (docs/BENCHMARKS.md). The binary sets it on
/// every worker thread.
pub fn flush_denormals() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr / ldmxcsr read and write this thread's SSE control register only;
        // setting FTZ (bit 15) and DAZ (bit 6) changes how subnormal floats are rounded, nothing
        // else.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= 0x8040;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Builds rayon's global pool (used by candle's CPU kernels too) with `threads` workers (None:
/// every core), each of them and the calling thread flushing subnormal floats to zero
/// ([`flush_denormals`]). Call it before any parallel work: once the pool exists it keeps its
/// settings, and a later call that names a different count is an error. The facade
/// ([`crate::train()`], [`crate::Model::load_with`]) calls it.
pub fn init_threads(threads: Option<usize>) -> Result<()> {
    flush_denormals();
    let mut pool = rayon::ThreadPoolBuilder::new().start_handler(|_| {
        flush_denormals();
    });
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Config("threads must be > 0".into()));
        }
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if n > 4 * cores {
            return Err(Error::Config(format!(
                "threads {n}: at most {} on this machine ({cores} cores; more threads only slow \
                 the work down)",
                4 * cores
            )));
        }
        if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(&n.to_string()) {
            // candle's gemm reads RAYON_NUM_THREADS; rayon's global pool is configured explicitly.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        pool = pool.num_threads(n);
    }
    match (pool.build_global(), threads) {
        (Ok(()), _) => Ok(()),
        // Already built with this count (a second call in one process): nothing to change.
        (Err(_), Some(n)) if rayon::current_num_threads() == n => Ok(()),
        (Err(e), Some(n)) => Err(Error::Config(format!(
            "threads {n}: the thread pool already runs {} threads ({e})",
            rayon::current_num_threads()
        ))),
        // Already built (a second call in one process): it keeps its settings.
        (Err(_), None) => Ok(()),
    }
}

/// Asks the kernel to back `buf` with transparent huge pages (2 MiB) where it is enabled in
/// `madvise` mode, the common default. For large tables read at scattered rows (the int8 indexes
/// of prediction): with 4 KiB pages nearly every row read there is also a TLB miss. Call it
/// before the buffer is first written; the part of `buf` outside whole 2 MiB pages is left as it
/// is. Returns whether the advice was taken (a hint: results never depend on it).
pub fn advise_huge_pages<T>(buf: &[T]) -> bool {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = buf.as_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
        if b <= a {
            return false;
        }
        // SAFETY: [a, b) lies inside `buf`'s allocation, which this process owns; MADV_HUGEPAGE
        // changes only how the kernel backs the pages, never their contents.
        unsafe { madvise(a as *mut std::ffi::c_void, b - a, MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormals_flush_to_zero_on_this_thread_only() {
        use std::hint::black_box;
        let sub = f32::MIN_POSITIVE / 4.0;
        let other = std::thread::spawn(move || black_box(sub) * black_box(1.0))
            .join()
            .unwrap();
        assert_eq!(other, sub, "other threads keep subnormals");
        assert!(super::flush_denormals());
        // DAZ: a subnormal input reads as zero; FTZ: a subnormal result is written as zero.
        assert_eq!(black_box(sub) * black_box(1.0), 0.0);
        assert_eq!(black_box(f32::MIN_POSITIVE) * black_box(0.25), 0.0);
        assert_eq!(black_box(1.5f32) * black_box(2.0), 3.0);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn settings_are_accepted() {
        assert!(super::tune_allocator());
    }
}

//! Process-wide allocator tuning for training and batch prediction on the CPU.
//!
//! candle allocates a fresh buffer for every op result and every gradient, many of them several
//! MB (a `[128, 22933]` logit matrix is 11 MB, the classifier's gradient 44 MB). With glibc's
//! defaults those come from `mmap` and go back with `munmap`, so every step pays page faults, page
//! zeroing and TLB shootdowns for all of them: about a third of the model's CPU time in a
//! training step (measured with `perf`). Keeping freed memory in the heap removes most of that.
//! Call [`tune_allocator`] once at program start (the binary's `train` / `predict`); it is a
//! no-op where the C library is not glibc.

/// Raises glibc's mmap threshold to its maximum (32 MiB) and keeps freed memory in the heap
/// (trim threshold 1 GiB, top pad 64 MiB). Returns whether every setting was accepted.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator parameters; valid at any time.
        unsafe {
            let a = mallopt(M_MMAP_THRESHOLD, 32 << 20);
            let b = mallopt(M_TRIM_THRESHOLD, 1 << 30);
            let c = mallopt(M_TOP_PAD, 64 << 20);
            a == 1 && b == 1 && c == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn settings_are_accepted() {
        assert!(super::tune_allocator());
    }
}

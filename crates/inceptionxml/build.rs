//! With the `cuda` feature, compiles `kernels/ops.cu` to PTX (embedded by `src/ops/cuda.rs`).
//! Needs `nvcc` (on PATH, or `$NVCC`, or `$CUDA_HOME/bin/nvcc`); `scripts/cuda-toolchain.sh`
//! installs one. Targets `sm_$CUDA_COMPUTE_CAP` (default 90: H100/H200).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/ops.cu");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("ops.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").ok().unwrap_or_else(|| {
        std::env::var("CUDA_HOME")
            .map(|h| format!("{h}/bin/nvcc"))
            .ok()
            .filter(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| "nvcc".into())
    });
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=sm_{cap}"))
        .arg("kernels/ops.cu")
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed ({s}) compiling kernels/ops.cu"),
        Err(e) => panic!(
            "cannot run {nvcc} ({e}): the cuda feature needs the CUDA toolkit \
             (source scripts/cuda-toolchain.sh)"
        ),
    }
}

//! 1. With the `cuda` feature, compiles `kernels/ops.cu` to PTX (embedded by `src/ops/cuda.rs`).
//!    Needs `nvcc` (on PATH, or `$NVCC`, or `$CUDA_HOME/bin/nvcc`); `scripts/cuda-toolchain.sh`
//!    installs one. Targets `sm_$CUDA_COMPUTE_CAP` (default 90: H100/H200).
//! 2. Always tries to compile the same kernels as plain C++ (`kernels/host_emulation.cpp`) into a
//!    static library for the unit tests that run them on the host (`cfg(kernel_emulation)`); a
//!    machine without a C++ compiler just skips those tests.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/ops.cu");
    println!("cargo:rerun-if-changed=kernels/host_emulation.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CXX");
    println!("cargo:rustc-check-cfg=cfg(kernel_emulation)");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    host_emulation(&out_dir);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx(&out_dir);
    }
}

fn host_emulation(out_dir: &Path) {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let obj = out_dir.join("ops_host.o");
    let lib = out_dir.join("libops_host.a");
    let compiled = Command::new(&cxx)
        .args([
            "-O2",
            "-std=c++17",
            "-fPIC",
            "-c",
            "kernels/host_emulation.cpp",
            "-o",
        ])
        .arg(&obj)
        .status()
        .is_ok_and(|s| s.success());
    let archived = compiled
        && Command::new("ar")
            .arg("crs")
            .arg(&lib)
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
    if archived {
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static=ops_host");
        println!("cargo:rustc-link-lib=pthread");
        println!("cargo:rustc-cfg=kernel_emulation");
    } else {
        println!(
            "cargo:warning=no C++ compiler ({cxx}) or ar: the host emulation tests of the CUDA kernels are skipped"
        );
    }
}

fn ptx(out_dir: &Path) {
    let out = out_dir.join("ops.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").ok().unwrap_or_else(|| {
        std::env::var("CUDA_HOME")
            .map(|h| format!("{h}/bin/nvcc"))
            .ok()
            .filter(|p| Path::new(p).exists())
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

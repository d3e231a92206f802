#!/usr/bin/env bash
# Installs a CUDA 13.0 *build* toolchain from Python packages (PyPI) on a machine without one, so that
# `cargo build --release --features cuda` works here. The binary then runs on a machine with an NVIDIA
# driver >= 580 and the CUDA 13 runtime libraries (LD_LIBRARY_PATH=/usr/local/cuda/lib64), with
# `--device cuda`. The project's own kernels (crates/inceptionxml/kernels/ops.cu) are compiled to PTX
# for sm_$CUDA_COMPUTE_CAP by nvcc at build time.
#
# Usage (from the repository root; it must be *sourced* so the exports reach your shell):
#     cargo fetch                                 # the driver stub below needs cudarc's sources
#     source scripts/cuda-toolchain.sh [PREFIX]   # default PREFIX=$HOME/.cuda13
#     cargo build --release --features cuda
#
# What it does: a venv with nvcc, nvvm, crt, cudart, cccl, nvrtc, cuBLAS and cuRAND pinned to the 13.0
# line (a newer nvvm emits PTX that the 13.0 ptxas and driver 580 reject); symlinks their libraries
# into PREFIX/lib64; builds a link-time stub of libcuda (the driver is not a Python package: cudarc links
# it at build time, the real libcuda.so.1 is loaded at run time); exports PATH, CUDA_HOME/CUDA_PATH/
# CUDA_ROOT, CUDA_COMPUTE_CAP=90 (Hopper: H100/H200), LIBRARY_PATH and RUSTFLAGS.
# A cold build of the cuda feature takes ~15 minutes on 2 cores.
# (Sourced: no `set -e`, it would leak into the caller's shell.)

PREFIX=${1:-$HOME/.cuda13}
_cuda_fail() { echo "cuda-toolchain: $*" >&2; return 1 2>/dev/null || exit 1; }

command -v python3 >/dev/null || { _cuda_fail "python3 not found"; return 1 2>/dev/null || exit 1; }
if [ ! -x "$PREFIX/venv/bin/pip" ]; then
  python3 -m venv "$PREFIX/venv" || { _cuda_fail "python3 -m venv failed (install python3-venv)"; return 1 2>/dev/null || exit 1; }
fi
"$PREFIX/venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 \
  || { _cuda_fail "pip install of the CUDA 13.0 packages failed"; return 1 2>/dev/null || exit 1; }

CU=$(ls -d "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)
[ -n "$CU" ] || { _cuda_fail "nvidia/cu13 not found in $PREFIX/venv"; return 1 2>/dev/null || exit 1; }
mkdir -p "$PREFIX/lib64"
for f in "$CU"/lib/*.so.*; do
  b=$(basename "$f"); ln -sf "$f" "$PREFIX/lib64/$b"; ln -sf "$f" "$PREFIX/lib64/${b%%.so*}.so"
done

if [ ! -f "$PREFIX/lib64/libcuda.so" ]; then
  syms=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | tail -n1)
  if [ -z "$syms" ]; then
    _cuda_fail "cudarc sources not found: run 'cargo fetch' in the project first, then source this again"
    return 1 2>/dev/null || exit 1
  fi
  grep -ohE "pub (unsafe )?fn (cu[A-Za-z0-9_]+)" "$syms" | awk '{print $NF}' | sort -u |
    sed 's/.*/void &(void){}/' > "$PREFIX/cuda_stub.c"
  gcc -shared -fPIC -o "$PREFIX/lib64/libcuda.so" -Wl,-soname,libcuda.so.1 "$PREFIX/cuda_stub.c" ||
    { _cuda_fail "building the libcuda link stub failed"; return 1 2>/dev/null || exit 1; }
fi

export PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_ROOT="$CU"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$PREFIX/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
case " ${RUSTFLAGS:-} " in
  *" -L $PREFIX/lib64 "*) ;;
  *) export RUSTFLAGS="-L $PREFIX/lib64${RUSTFLAGS:+ $RUSTFLAGS}" ;;
esac
echo "CUDA 13.0 build toolchain ready: $(nvcc --version | tail -n1); CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

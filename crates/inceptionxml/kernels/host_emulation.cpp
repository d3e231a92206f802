// Compiles kernels/ops.cu as plain C++ (build.rs, with any C++ compiler) so that the unit tests in
// src/ops/emulation.rs can run the grid-stride kernels on the host, as one block of one thread,
// and compare them with the CPU kernels: it checks the CUDA code's index arithmetic and formulas
// on machines without a GPU. Warp-level code (cand_scores_f32's shuffles) is compiled but not run.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

struct EmuDim3 {
  unsigned x, y, z;
};
static thread_local EmuDim3 threadIdx = {0, 0, 0};
static thread_local EmuDim3 blockIdx = {0, 0, 0};
static thread_local EmuDim3 blockDim = {1, 1, 1};
static thread_local EmuDim3 gridDim = {1, 1, 1};

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __syncthreads() ((void)0)
#define __shfl_down_sync(mask, v, off) (v)

static inline double atomicAdd(double* a, double v) {
  double old = *a;
  *a += v;
  return old;
}

#include "ops.cu"

// Compiles kernels/ops.cu as plain C++ (build.rs, with any C++ compiler) so that the unit tests in
// src/ops/emulation.rs can run the grid-stride kernels on the host, as one block of one thread,
// and compare them with the CPU kernels: it checks the CUDA code's index arithmetic and formulas
// on machines without a GPU. The warp-level kernel (cand_scores_f32) runs as one warp of 32 POSIX
// threads whose __shfl_down_sync exchanges values through a barrier-guarded array.
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

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

// One emulated warp at a time (the tests run a single warp kernel).
static pthread_barrier_t emu_warp_barrier;
static float emu_lanes[32];

static inline float emu_shfl_down(float v, unsigned off) {
  unsigned lane = threadIdx.x & 31;
  emu_lanes[lane] = v;
  pthread_barrier_wait(&emu_warp_barrier);
  float r = lane + off < 32 ? emu_lanes[lane + off] : v;
  pthread_barrier_wait(&emu_warp_barrier);
  return r;
}
#define __shfl_down_sync(mask, v, off) emu_shfl_down((v), (unsigned)(off))

static inline double atomicAdd(double* a, double v) {
  double old = *a;
  *a += v;
  return old;
}

#include "ops.cu"

struct EmuScoresArgs {
  const float* g;
  const float* table;
  const int32_t* slot_pos;
  size_t rows, width, dim;
  float* out;
  unsigned lane;
};

static void* emu_scores_lane(void* p) {
  const EmuScoresArgs* a = (const EmuScoresArgs*)p;
  threadIdx = {a->lane, 0, 0};
  blockIdx = {0, 0, 0};
  blockDim = {32, 1, 1};
  gridDim = {1, 1, 1};
  cand_scores_f32(a->g, a->table, a->slot_pos, a->rows, a->width, a->dim, a->out);
  return nullptr;
}

// cand_scores_f32 launched as one block of one warp (32 lanes); returns 0 on success.
extern "C" int emu_cand_scores_warp(const float* g, const float* table, const int32_t* slot_pos,
                                    size_t rows, size_t width, size_t dim, float* out) {
  if (pthread_barrier_init(&emu_warp_barrier, nullptr, 32) != 0) return 1;
  pthread_t threads[32];
  EmuScoresArgs args[32];
  for (unsigned lane = 0; lane < 32; ++lane) {
    args[lane] = {g, table, slot_pos, rows, width, dim, out, lane};
    // A lane that cannot start would leave the others waiting at the barrier: stop the test.
    if (pthread_create(&threads[lane], nullptr, emu_scores_lane, &args[lane]) != 0) abort();
  }
  for (unsigned lane = 0; lane < 32; ++lane) pthread_join(threads[lane], nullptr);
  pthread_barrier_destroy(&emu_warp_barrier);
  return 0;
}

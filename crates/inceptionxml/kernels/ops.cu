// CUDA kernels of inceptionxml's fused ops (compiled to PTX by build.rs with the `cuda` feature).
// Each mirrors a CPU kernel in src/ops or src/model; the Rust side (src/ops/cuda.rs) launches
// them with 256-thread blocks and grid-stride loops.
#include <stdint.h>

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
       i += (size_t)gridDim.x * blockDim.x)

// ---- Adam (src/ops/adam.rs AdamCoef::apply) -------------------------------------------------
__device__ __forceinline__ void adam_one(float* p, float g, float* m, float* v, float b1, float b2,
                                         float step_size, float inv_sqrt_bc2, float eps) {
  float mi = b1 * *m + (1.0f - b1) * g;
  float vi = b2 * *v + (1.0f - b2) * g * g;
  *m = mi;
  *v = vi;
  *p -= step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
}

// Dense Adam over n values.
extern "C" __global__ void adam_f32(float* __restrict__ p, const float* __restrict__ g,
                                    float* __restrict__ m, float* __restrict__ v, size_t n,
                                    float b1, float b2, float step_size, float inv_sqrt_bc2,
                                    float eps) {
  GRID_STRIDE(i, n) { adam_one(p + i, g[i], m + i, v + i, b1, b2, step_size, inv_sqrt_bc2, eps); }
}

// Lazy row Adam (src/ops/row_adam.rs): rows ids[0..n_ids) (distinct) of a dim-wide table get
// the gradient rows g[n_ids, dim].
extern "C" __global__ void row_adam_f32(float* __restrict__ p, const float* __restrict__ g,
                                        float* __restrict__ m, float* __restrict__ v,
                                        const uint32_t* __restrict__ ids, size_t n_ids,
                                        size_t dim, float b1, float b2, float step_size,
                                        float inv_sqrt_bc2, float eps) {
  GRID_STRIDE(k, n_ids * dim) {
    size_t i = k / dim, j = k - i * dim;
    size_t at = (size_t)ids[i] * dim + j;
    adam_one(p + at, g[k], m + at, v + at, b1, b2, step_size, inv_sqrt_bc2, eps);
  }
}

// Sum of gradient rows per unique id (src/ops/row_adam.rs scatter_rows): group u sums the rows
// order[starts[u]..starts[u+1]) of src[*, dim] into out[u, dim].
extern "C" __global__ void segment_sum_f32(const float* __restrict__ src,
                                           const uint32_t* __restrict__ order,
                                           const uint32_t* __restrict__ starts, size_t n_groups,
                                           size_t dim, float* __restrict__ out) {
  GRID_STRIDE(k, n_groups * dim) {
    size_t u = k / dim, j = k - u * dim;
    float acc = 0.0f;
    for (uint32_t q = starts[u]; q < starts[u + 1]; ++q) acc += src[(size_t)order[q] * dim + j];
    out[k] = acc;
  }
}

// ---- Stable BCE with logits (src/ops/bce.rs) -------------------------------------------------
__device__ __forceinline__ double bce_entry(float x, float y) {
  double xd = x, yd = y;
  return fmax(xd, 0.0) - xd * yd + log1p(exp(-fabs(xd)));
}

__device__ __forceinline__ float stable_sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

// acc[0] += Σ ℓ(x, y)·m, acc[1] += Σ m (m = 1 without a mask). Launched with 256 threads.
extern "C" __global__ void bce_sum_f32(const float* __restrict__ x, const float* __restrict__ y,
                                       const float* __restrict__ m, int has_mask, size_t n,
                                       double* __restrict__ acc) {
  __shared__ double ss[256];
  __shared__ double sc[256];
  double s = 0.0, c = 0.0;
  GRID_STRIDE(i, n) {
    if (has_mask) {
      float w = m[i];
      if (w != 0.0f) {
        s += bce_entry(x[i], y[i]) * (double)w;
        c += (double)w;
      }
    } else {
      s += bce_entry(x[i], y[i]);
      c += 1.0;
    }
  }
  ss[threadIdx.x] = s;
  sc[threadIdx.x] = c;
  __syncthreads();
  for (unsigned h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      ss[threadIdx.x] += ss[threadIdx.x + h];
      sc[threadIdx.x] += sc[threadIdx.x + h];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(acc, ss[0]);
    atomicAdd(acc + 1, sc[0]);
  }
}

// out = Σ / count (0 when nothing counts).
extern "C" __global__ void bce_finish(const double* __restrict__ acc, float* __restrict__ out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = acc[1] > 0.0 ? (float)(acc[0] / acc[1]) : 0.0f;
}

// out = (σ(x) − y)·m·scale[0] (m = 1 without a mask; 0 where m is 0).
extern "C" __global__ void bce_grad_f32(const float* __restrict__ x, const float* __restrict__ y,
                                        const float* __restrict__ m, int has_mask,
                                        const float* __restrict__ scale, size_t n,
                                        float* __restrict__ out) {
  float s = scale[0];
  GRID_STRIDE(i, n) {
    float d = stable_sigmoid(x[i]) - y[i];
    if (has_mask) {
      float w = m[i];
      out[i] = w != 0.0f ? d * w * s : 0.0f;
    } else {
      out[i] = d * s;
    }
  }
}

// ---- Dropout (src/model/dropout.rs mask): the same counter-based splitmix64 stream ----------
__device__ __forceinline__ uint64_t splitmix_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// out[i] = x[i]·keep where the draw of element i is >= threshold, else 0. Element i is value
// (i mod chunk) of chunk i / chunk; a chunk's stream starts at seed ^ chunk·K and each 64-bit draw
// serves two values (low half first).
extern "C" __global__ void dropout_f32(const float* __restrict__ x, float* __restrict__ out,
                                       size_t n, uint64_t seed, uint64_t threshold, float keep,
                                       size_t chunk) {
  GRID_STRIDE(i, n) {
    uint64_t c = i / chunk, w = i - c * chunk;
    uint64_t s = seed ^ (c * 0xD1B54A32D192ED03ull);
    uint64_t r = splitmix_mix(s + (w / 2 + 1) * 0x9E3779B97F4A7C15ull);
    uint64_t draw = (r >> (32 * (w & 1))) & 0xFFFFFFFFull;
    out[i] = draw >= threshold ? x[i] * keep : 0.0f;
  }
}

// ---- InceptionXML+ candidate scoring (src/ops/candidates.rs) ---------------------------------
// logits[r, s] = table[slot_pos[r, s]] · g[r] (0 where slot_pos < 0); one warp per slot.
extern "C" __global__ void cand_scores_f32(const float* __restrict__ g,
                                           const float* __restrict__ table,
                                           const int32_t* __restrict__ slot_pos, size_t rows,
                                           size_t width, size_t dim, float* __restrict__ out) {
  size_t lane = threadIdx.x & 31;
  size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
  size_t n_warps = ((size_t)gridDim.x * blockDim.x) >> 5;
  for (size_t w = warp; w < rows * width; w += n_warps) {
    int32_t p = slot_pos[w];
    float acc = 0.0f;
    if (p >= 0) {
      const float* a = table + (size_t)p * dim;
      const float* b = g + (w / width) * dim;
      for (size_t j = lane; j < dim; j += 32) acc += a[j] * b[j];
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) out[w] = acc;
  }
}

// dg[r, j] = Σ_s dlog[r, s]·table[slot_pos[r, s], j].
extern "C" __global__ void cand_grad_input_f32(const float* __restrict__ dlog,
                                               const float* __restrict__ table,
                                               const int32_t* __restrict__ slot_pos, size_t rows,
                                               size_t width, size_t dim,
                                               float* __restrict__ out) {
  GRID_STRIDE(k, rows * dim) {
    size_t r = k / dim, j = k - r * dim;
    float acc = 0.0f;
    for (size_t s = 0; s < width; ++s) {
      int32_t p = slot_pos[r * width + s];
      float d = dlog[r * width + s];
      if (p >= 0 && d != 0.0f) acc += d * table[(size_t)p * dim + j];
    }
    out[k] = acc;
  }
}

// dW[t, j] for touched row t (block t_block[t], offset t_off[t] inside it):
// Σ over the block's users k (row users_r[k], first slot users_slot[k]) of
// dlog[users_r[k], users_slot[k] + t_off[t]]·g[users_r[k], j].
extern "C" __global__ void cand_grad_table_f32(
    const float* __restrict__ dlog, const float* __restrict__ g,
    const uint32_t* __restrict__ t_block, const uint32_t* __restrict__ t_off,
    const uint32_t* __restrict__ users_off, const uint32_t* __restrict__ users_r,
    const uint32_t* __restrict__ users_slot, size_t n_touched, size_t width, size_t dim,
    float* __restrict__ out) {
  GRID_STRIDE(k, n_touched * dim) {
    size_t t = k / dim, j = k - t * dim;
    uint32_t u = t_block[t], i = t_off[t];
    float acc = 0.0f;
    for (uint32_t q = users_off[u]; q < users_off[u + 1]; ++q) {
      size_t r = users_r[q];
      float d = dlog[r * width + users_slot[q] + i];
      if (d != 0.0f) acc += d * g[r * dim + j];
    }
    out[k] = acc;
  }
}

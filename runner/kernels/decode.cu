// Decode kernels of our own: fp16 storage, fp32 accumulation, capture-safe (no library calls,
// every length that changes per token read from device memory), so a token can be one CUDA graph.
// Compiled at first use by NVRTC through cupy.RawModule; tests compile it with `nvcc --ptx`.
#include <cuda_fp16.h>

#ifndef INFINITY  // NVRTC has no math.h
#define INFINITY __int_as_float(0x7f800000)
#endif

#define WARP 32
#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

// Dot product of one fp16 row with x (fp16), one warp, 16-byte loads (8 halves per lane per step).
// cols must be a multiple of 256 (true for every preset; checked on the host).
__device__ __forceinline__ float row_dot(const half* __restrict__ w, const half* __restrict__ x, int cols) {
    const int lane = threadIdx.x & (WARP - 1);
    float acc = 0.f;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const uint4* x4 = reinterpret_cast<const uint4*>(x);
    const int n4 = cols >> 3;
    // Unrolled 8 deep so each lane has up to 8 independent 16-byte loads in flight: a 2048-wide row
    // is then one round trip to memory, not eight.
#pragma unroll 8
    for (int i = lane; i < n4; i += WARP) {
        uint4 a = __ldg(w4 + i);  // weights: read once, streamed
        uint4 b = x4[i];
        const half2* ah = reinterpret_cast<const half2*>(&a);
        const half2* bh = reinterpret_cast<const half2*>(&b);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            float2 fa = __half22float2(ah[k]);
            float2 fb = __half22float2(bh[k]);
            acc = fmaf(fa.x, fb.x, acc);
            acc = fmaf(fa.y, fb.y, acc);
        }
    }
    return warp_sum(acc);
}

// y = W x (W: rows x cols, row-major), one warp per row; y in fp16, times `scale`.
extern "C" __global__ void gemv(const half* __restrict__ W, const half* __restrict__ x, half* __restrict__ y,
                                int rows, int cols, float scale) {
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    float s = row_dot(W + (size_t)row * cols, x, cols);
    if ((threadIdx.x & 31) == 0) y[row] = __float2half(s * scale);
}

// Q, K and V projections in one launch: rows [0, ra) of Wa, then Wb, then Wc (no weight copy).
extern "C" __global__ void gemv_qkv(const half* __restrict__ Wa, const half* __restrict__ Wb,
                                    const half* __restrict__ Wc, const half* __restrict__ x,
                                    half* __restrict__ ya, half* __restrict__ yb, half* __restrict__ yc,
                                    int ra, int rb, int rc, int cols) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const half* W; half* y;
    if (row < ra) { W = Wa; y = ya; }
    else if (row < ra + rb) { row -= ra; W = Wb; y = yb; }
    else if (row < ra + rb + rc) { row -= ra + rb; W = Wc; y = yc; }
    else return;
    float s = row_dot(W + (size_t)row * cols, x, cols);
    if ((threadIdx.x & 31) == 0) y[row] = __float2half(s);
}

// resid += W x, the residual stream kept in fp32 (o_proj and down projection + residual add).
extern "C" __global__ void gemv_residual(const half* __restrict__ W, const half* __restrict__ x,
                                         float* __restrict__ resid, int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    float s = row_dot(W + (size_t)row * cols, x, cols);
    // Round the product to fp16 first: the same value the eager path adds (cuBLAS writes fp16).
    if ((threadIdx.x & 31) == 0) resid[row] += __half2float(__float2half(s));
}

// out = silu(Wg x) * (Wu x): the gate and up projections and the SwiGLU in one launch.
extern "C" __global__ void gemv_swiglu(const half* __restrict__ Wg, const half* __restrict__ Wu,
                                       const half* __restrict__ x, half* __restrict__ out, int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    float g = __half2float(__float2half(row_dot(Wg + (size_t)row * cols, x, cols)));
    float u = __half2float(__float2half(row_dot(Wu + (size_t)row * cols, x, cols)));
    if ((threadIdx.x & 31) == 0) out[row] = __float2half(g / (1.f + __expf(-g)) * u);
}

// out = x * rsqrt(mean(x^2) + eps) * gain; one block (x in fp32, n <= 8192).
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const half* __restrict__ gain,
                                   half* __restrict__ out, int n, float eps) {
    __shared__ float part[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i] * x[i];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
        t = warp_sum(t);
        if (threadIdx.x == 0) part[0] = rsqrtf(t / n + eps);
    }
    __syncthreads();
    const float inv = part[0];
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[i] = __float2half(x[i] * inv * __half2float(gain[i]));
}

// x (fp32 residual) = embedding row of the token id read from device memory.
extern "C" __global__ void embed(const half* __restrict__ E, const int* __restrict__ tok,
                                 float* __restrict__ x, int n) {
    const size_t base = (size_t)tok[0] * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] = __half2float(E[base + i]);
}

// RoPE (rotate-half) on q in place and on k, then k and v written into the cache at the slot read
// from device memory. One block per head (q heads first, then kv heads); blockDim = head_dim/2.
extern "C" __global__ void rope_kv(half* __restrict__ q, const half* __restrict__ k, const half* __restrict__ v,
                                   half* __restrict__ cache_k, half* __restrict__ cache_v,
                                   const int* __restrict__ pos, const int* __restrict__ slot,
                                   const float* __restrict__ inv_freq, int n_heads, int n_kv, int d, int max_ctx) {
    const int h = blockIdx.x, i = threadIdx.x, half_d = d >> 1;
    float sn, cs;
    sincosf((float)pos[0] * inv_freq[i], &sn, &cs);
    if (h < n_heads) {
        half* r = q + h * d;
        float a = __half2float(r[i]), b = __half2float(r[i + half_d]);
        r[i] = __float2half(a * cs - b * sn);
        r[i + half_d] = __float2half(a * sn + b * cs);
    } else {
        const int g = h - n_heads;
        const half* r = k + g * d;
        float a = __half2float(r[i]), b = __half2float(r[i + half_d]);
        const size_t row = ((size_t)g * max_ctx + slot[0]) * d;
        cache_k[row + i] = __float2half(a * cs - b * sn);
        cache_k[row + i + half_d] = __float2half(a * sn + b * cs);
        cache_v[row + i] = v[g * d + i];
        cache_v[row + i + half_d] = v[g * d + i + half_d];
    }
}

// Decode attention, split over the sequence (flash-decoding). Grid (n_heads, max_splits), block
// ATT_THREADS threads: split s covers positions [s*SPLIT, min(n, (s+1)*SPLIT)), n = pos[0] + 1 read
// from device memory, so one grid (and one graph) serves every position; splits past n exit at once.
// Each split writes its max m, sum l and unnormalised output o (fp32) for attn_combine.
// Short splits keep each block's dependent chain short: a score is ATT_LANES threads' partial dot
// products (a shuffle adds them), and P.V gives each thread SPLIT / (ATT_THREADS / d) positions.
// With 256-position splits the chain grew with the context (latency +22% from position 32 to 512).
#define SPLIT 64
#define ATT_THREADS 256
#define ATT_LANES (ATT_THREADS / SPLIT)
extern "C" __global__ void attn_split(const half* __restrict__ q, const half* __restrict__ cache_k,
                                      const half* __restrict__ cache_v, const int* __restrict__ pos,
                                      float* __restrict__ part_o, float* __restrict__ part_ml,
                                      int n_heads, int n_kv, int d, int max_ctx, float scale) {
    extern __shared__ float sh[];  // q (d floats), p (SPLIT), reduction scratch (2 * warps), o (ATT_THREADS)
    float* sq = sh;
    float* sp = sq + d;
    float* red = sp + SPLIT;
    const int h = blockIdx.x, s = blockIdx.y, tid = threadIdx.x;
    const int n = pos[0] + 1;
    const int start = s * SPLIT, end = min(n, start + SPLIT);
    const size_t pidx = (size_t)h * gridDim.y + s;
    if (start >= n) {  // empty split: contributes nothing
        if (tid == 0) { part_ml[2 * pidx] = -INFINITY; part_ml[2 * pidx + 1] = 0.f; }
        for (int i = tid; i < d; i += blockDim.x) part_o[pidx * d + i] = 0.f;
        return;
    }
    const int g = h / (n_heads / n_kv);
    const half* K = cache_k + (size_t)g * max_ctx * d;
    const half* V = cache_v + (size_t)g * max_ctx * d;
    for (int i = tid; i < d; i += blockDim.x) sq[i] = __half2float(q[h * d + i]);
    __syncthreads();
    // score of position j: ATT_LANES adjacent threads each take d / ATT_LANES of the dot product
    const int j = start + tid / ATT_LANES, lane = tid % ATT_LANES;
    const int per = (d >> 1) / ATT_LANES;  // half2 per lane
    float acc = 0.f;
    if (j < end) {
        const half2* kr = reinterpret_cast<const half2*>(K + (size_t)j * d) + lane * per;
        const float* qq = sq + 2 * lane * per;
#pragma unroll 4
        for (int i = 0; i < per; ++i) {
            float2 kk = __half22float2(kr[i]);
            acc = fmaf(kk.x, qq[2 * i], fmaf(kk.y, qq[2 * i + 1], acc));
        }
    }
    for (int o = ATT_LANES / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL, acc, o);
    // Round the score to fp16 as the eager path's fp16 matmul output is; one lane of each position holds it.
    float score = (j < end && lane == 0) ? __half2float(__float2half(acc)) * scale : -INFINITY;
    // block max
    float m = warp_max(score);
    if ((tid & 31) == 0) red[tid >> 5] = m;
    __syncthreads();
    m = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) m = fmaxf(m, red[w]);
    float p = (j < end && lane == 0) ? __expf(score - m) : 0.f;
    if (lane == 0) sp[tid / ATT_LANES] = p;
    __syncthreads();
    float l = warp_sum(p);
    __syncthreads();
    if ((tid & 31) == 0) red[tid >> 5] = l;
    __syncthreads();
    l = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) l += red[w];
    // o[dim] = sum_j p_j V[j, dim]: thread -> (dim, group of positions), then a reduction.
    const int groups = blockDim.x / d;
    const int dim = tid % d, grp = tid / d;
    float acc2 = 0.f;
    if (grp < groups) {
#pragma unroll 4
        for (int jj = start + grp; jj < end; jj += groups) acc2 = fmaf(sp[jj - start], __half2float(V[(size_t)jj * d + dim]), acc2);
    }
    float* so = red + 2 * (ATT_THREADS / 32);
    if (grp < groups) so[grp * d + dim] = acc2;
    __syncthreads();
    if (tid < d) {
        float o = 0.f;
        for (int k2 = 0; k2 < groups; ++k2) o += so[k2 * d + tid];
        part_o[pidx * d + tid] = o;
    }
    if (tid == 0) { part_ml[2 * pidx] = m; part_ml[2 * pidx + 1] = l; }
}

// out[h] = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M = max_s m_s. Grid n_heads, block d.
// Only the splits the context reaches are read (n = pos[0] + 1 from device memory, as attn_split).
extern "C" __global__ void attn_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                        half* __restrict__ out, int splits, int d, const int* __restrict__ pos) {
    const int h = blockIdx.x, i = threadIdx.x;
    const int used = min(splits, (pos[0] + SPLIT) / SPLIT);
    float M = -INFINITY;
    for (int s = 0; s < used; ++s) M = fmaxf(M, part_ml[2 * (h * splits + s)]);
    float num = 0.f, den = 0.f;
    for (int s = 0; s < used; ++s) {
        const size_t p = (size_t)h * splits + s;
        const float ms = part_ml[2 * p];
        if (ms == -INFINITY) continue;
        const float w = __expf(ms - M);
        num += w * part_o[p * d + i];
        den += w * part_ml[2 * p + 1];
    }
    out[h * d + i] = __float2half(num / den);
}

// Greedy pick: index of the largest logit, the first one on ties (as numpy.argmax), in two stages so
// the vocabulary is read by many SMs: argmax_partial gives each block's best (value, index) over a
// grid-strided share, argmax_final (one block) merges them. One block alone spent ~49 µs per token
// reading a 128k vocabulary (CUPTI, 1b, H100).
__device__ __forceinline__ void better(float& best, int& bi, float v, int i) {
    if (v > best || (v == best && i < bi)) { best = v; bi = i; }
}

// The block's best (value, lowest index on ties) lands in thread 0.
__device__ void block_argmax(float& best, int& bi) {
    __shared__ float sv[32];
    __shared__ int si[32];
    for (int o = 16; o > 0; o >>= 1)
        better(best, bi, __shfl_xor_sync(FULL, best, o), __shfl_xor_sync(FULL, bi, o));
    if ((threadIdx.x & 31) == 0) { sv[threadIdx.x >> 5] = best; si[threadIdx.x >> 5] = bi; }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) better(best, bi, sv[w], si[w]);
}

extern "C" __global__ void argmax(const half* __restrict__ x, int n, long long* __restrict__ out) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) better(best, bi, __half2float(x[i]), i);
    block_argmax(best, bi);
    if (threadIdx.x == 0) out[0] = bi;
}

extern "C" __global__ void argmax_partial(const half* __restrict__ x, int n, float* __restrict__ pv,
                                          int* __restrict__ pi) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        better(best, bi, __half2float(x[i]), i);
    block_argmax(best, bi);
    if (threadIdx.x == 0) { pv[blockIdx.x] = best; pi[blockIdx.x] = bi; }
}

extern "C" __global__ void argmax_final(const float* __restrict__ pv, const int* __restrict__ pi, int m,
                                        long long* __restrict__ out) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < m; j += blockDim.x) better(best, bi, pv[j], pi[j]);
    block_argmax(best, bi);
    if (threadIdx.x == 0) out[0] = bi;
}

// A calibrated busy wait on the device (sensitivity checks): spins on the global ns timer.
extern "C" __global__ void spin_ns(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}

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

// Programmatic dependent launch (sm_90, the `pdl` switch): a kernel launched with the PDL attribute may
// start while the previous kernel of its stream still runs. pdl_wait() returns once that kernel has
// finished and its writes are visible; every kernel calls it on every path before it reads or writes
// what another kernel touches, and reads only weights (never written) before it. So kernel N+1 runs
// its weight loads while kernel N drains, and N has waited for N-1 before N can finish. (In the SASS
// the weight loads come before the wait only where they are coherent loads: EARLY_LOADS, below.)
// PDL_TRIGGER says when a kernel lets the next one launch: 1 at its start (pdl_early), 2 once its own
// wait returned, 0 never (the next launches as this one ends). Without the attribute all are no-ops.
// 2 measured fastest on the 1b token (bench/pdl_variants.md: 1206 us against 1243 at the start and
// 1247 without PDL); triggering at the start fills the SMs with blocks of kernels further ahead.
// 1 (every kernel at its start) also changed the logits on an H200 with the early_loads build (max diff 6.6,
// another token: reports/bench/pdl_variants_triggers_pos*_h200_b266cd2.md) though no kernel stores before its
// wait (tested on the PTX): a race not yet found; only rmsnorm and attn_combine trigger at start (overlap_tuning).
#ifndef PDL_TRIGGER
#define PDL_TRIGGER 2
#endif
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
__device__ __forceinline__ void pdl_early() {
#if PDL_TRIGGER == 1
    pdl_launch_dependents();
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#if PDL_TRIGGER == 2
    pdl_launch_dependents();
#endif
}

// acc += a . b over 8 halves (fp32 products, in order).
__device__ __forceinline__ float dot8(uint4 a, uint4 b, float acc) {
    const half2* ah = reinterpret_cast<const half2*>(&a);
    const half2* bh = reinterpret_cast<const half2*>(&b);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        float2 fa = __half22float2(ah[k]);
        float2 fb = __half22float2(bh[k]);
        acc = fmaf(fa.x, fb.x, acc);
        acc = fmaf(fa.y, fb.y, acc);
    }
    return acc;
}

// The vector a GEMV reads, 8 halves (one 16-byte chunk) at a time: x(i) is chunk i (an fp16 vector
// another kernel wrote). Folding the RMSNorm in here (x computed from the fp32 residual and partial
// sums of squares its writer left) was measured slower under PDL and removed (reports/README.md:
// pdl_variants_fold_norm_*): the one-block norm kernel costs little while the next projection
// loads its weights, and folded, every warp waits for the partials and the residual first. Folded
// without partials (each warp gathering the residual's squares as it reads x, scaling at the end) it
// was slower again on the H200 and removed too: one token as a graph, 1b 980 against 928 µs, 8b 4243
// against 4107 (reports/bench/pdl_variants_loop_fold_h200_13bee16.md, the code at 13bee16).
struct PlainX {
    const uint4* p;
    __device__ __forceinline__ uint4 operator()(int i) const { return p[i]; }
};
struct SharedX {  // x staged in shared memory by the block
    const uint4* s;
    __device__ __forceinline__ uint4 operator()(int i) const { return s[i]; }
};

// X_STAGE 1: a GEMV's block copies x into shared memory once its wait returns, every chunk's copy in
// flight at once (cp.async: no registers), and its warps read x there (the launch gives the block cols * 2
// bytes of dynamic shared memory: OwnForward, x_stage_bytes). Read from global memory (0), x cost each
// warp a trip to L1/L2 per chunk of its row head after the wait: in the SASS of every GEMV the load of
// chunk k sat behind the bound check of chunk k - 1's product, so the loads went one after another
// (8 in a row for a 2048-wide row) on the critical path of every kernel boundary. Measured on an H200, one
// token as a graph at position 96 (reports/bench/pdl_variants_x_stage_pos96_h200_271324e.md): 1b 877.4 µs
// staged against 945.1 from global memory, 8b 3992.9 against 4155.5.
#ifndef X_STAGE
#define X_STAGE 1
#endif
// HOIST_LOADS 1: after its wait a kernel makes one trip to memory, not two or three. The SASS of
// CUDA 13.0 (sm_90, the optimized build) showed dependent trips after griddepcontrol.wait, each an L2
// round trip on the critical path of a kernel boundary: gemv_residual loaded resid[row] only after the
// row's warp_sum (a trip at its tail, 32 launches a 1b token); attn_split loaded inv_freq after the
// wait and only then its q, k and v (sincos and a barrier between); attn_combine loaded pos[0], then
// the splits' (m, l), then their outputs, each trip waiting for the one before (16 launches each).
// attn_split's warp with this token's row also loaded its k, then its v, then the query, one trip each.
// With it: resid[row] is loaded beside the row's products, attn_split's RoPE table is made before the
// wait (pos and inv_freq are the token's constants; see ATT_PREFETCH) and its k, v and q are copied
// into shared memory at once (cp.async), and attn_combine reads pos before the wait and its first
// COMBINE_AHEAD splits' outputs beside their (m, l). The same arithmetic in the same order (the same
// tokens); only when loads are issued moves. Off here; the early_loads switch (in optimized) sets both.
#ifndef HOIST_LOADS
#define HOIST_LOADS 0
#endif
// EARLY_LOADS 1: the loads meant to run before griddepcontrol.wait (a GEMV's row heads, rmsnorm's gain,
// attn_combine's pos with HOIST_LOADS) are coherent loads, ld.global.L1::no_allocate (past L1, as the
// weights stream). ptxas (CUDA 13.0, sm_90) keeps a coherent load before the wait where the source puts
// it, but places the wait (SASS ACQBULK) above non-coherent loads, ld.global.nc: __ldg and every load
// through a const __restrict__ pointer. In the SASS of the optimized build every GEMV and rmsnorm wait
// first and load their weights after (0 loads before ACQBULK); only attn_split's cache rows, coherent
// loads, come before it. So the weight loads "before the wait" described below never overlapped the
// kernel before; with 0 the code compiles as it was measured. Measured on the H100 (one token at position
// 96, both on): 1b 1033.3 against 1085.3 µs, 8b 5277.5 against 5294.0. Off here; on in optimized (early_loads).
#ifndef EARLY_LOADS
#define EARLY_LOADS 0
#endif
__device__ __forceinline__ uint4 ld_early(const uint4* p) {
#if EARLY_LOADS && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    uint4 v;
    asm volatile("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
#else
    return __ldg(p);
#endif
}
__device__ __forceinline__ float ld_early(const half* p) {
#if EARLY_LOADS && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    unsigned short v;
    asm volatile("ld.global.L1::no_allocate.b16 %0, [%1];" : "=h"(v) : "l"(p));
    return __half2float(__ushort_as_half(v));
#else
    return __half2float(__ldg(p));
#endif
}
__device__ __forceinline__ int ld_early(const int* p) {
#if EARLY_LOADS && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    int v;
    asm volatile("ld.global.L1::no_allocate.b32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
#else
    return *p;
#endif
}
// 16 bytes global -> shared without registers (sm_80's cp.async; a plain copy before it).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(d), "l"(src) : "memory");
#else
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
__device__ __forceinline__ void stage_x(uint4* xs, const half* __restrict__ x, int n4) {
    const uint4* x4 = reinterpret_cast<const uint4*>(x);
    for (int c = threadIdx.x; c < n4; c += blockDim.x) cp_async16(xs + c, x4 + c);
    cp_async_wait_all();
    __syncthreads();
}
// The dynamic shared memory every GEMV stages x in, declared once here as well as where each kernel uses it: the
// residual GEMV's body is a function template (residual_rows), where a declaration of its own alone drew nvcc's
// warning 1556 (linkage conflict with the kernels' declarations); the SASS is the same either way.
extern __shared__ uint4 xs[];
#if X_STAGE
#define GEMV_X(name, x, cols)        \
    extern __shared__ uint4 xs[];    \
    stage_x(xs, x, (cols) >> 3);     \
    const SharedX name{xs}
#else
#define GEMV_X(name, x, cols) const PlainX name{reinterpret_cast<const uint4*>(x)}
#endif

// rmsnorm's 1/rms for a block of 256 threads, bit for bit: rmsnorm's 1024 threads each sum the squares of
// NORM_PER_THREAD values (thread t: t, t + 1024, ...), each warp's sums by warp_sum, then the 32 warps' by
// warp_sum; here thread t plays t, t + 256, t + 512 and t + 768. ``at(i)``: x[i], from wherever it lies.
// ``part``: 33 floats of shared memory. Also the persistent token's (token.cu).
#define NORM_PER_THREAD 8
#define NORM_ROUNDS 4  // 256 threads play rmsnorm's 1024
// Thread t's values of x for rms_of: x[t + r * 256 + k * 1024] in v[r][k] (0 past n), every load issued
// before any is used (one trip to memory).
template <class At>
__device__ __forceinline__ void norm_values(At at, int n, float (&v)[NORM_ROUNDS][NORM_PER_THREAD]) {
#pragma unroll
    for (int r = 0; r < NORM_ROUNDS; ++r)
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const int i = threadIdx.x + r * 256 + k * 1024;
            v[r][k] = i < n ? at(i) : 0.f;
        }
}
// The reduction itself: ``at(r, k)`` gives thread t's x[t + r * 256 + k * 1024] (0 past n), with r and k
// known at compile time (unrolled), so a round's values are read as the round needs them.
template <class At>
__device__ __forceinline__ float rms_rounds(At at, int n, float eps, float* part) {
    const int t = threadIdx.x, lane = t & 31, w = t >> 5;
#pragma unroll
    for (int r = 0; r < NORM_ROUNDS; ++r) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const float v = at(r, k);
            s += v * v;
        }
        s = warp_sum(s);
        if (lane == 0) part[r * 8 + w] = s;  // the virtual warp (t + r * 256) / 32
    }
    __syncthreads();
    if (t < 32) {
        const float u = warp_sum(part[t]);
        if (t == 0) part[32] = rsqrtf(u / n + eps);
    }
    __syncthreads();
    return part[32];
}
// From values already in registers (norm_values).
__device__ __forceinline__ float rms_of(const float (&v)[NORM_ROUNDS][NORM_PER_THREAD], int n, float eps,
                                        float* part) {
    return rms_rounds([&](int r, int k) { return v[r][k]; }, n, eps, part);
}
// From ``at(i)`` = x[i], a round's 8 values at a time (few registers: the norm_in_proj GEMVs run under
// launch bounds, where all 32 at once spilled).
template <class At>
__device__ __forceinline__ float rms_scale(At at, int n, float eps, float* part) {
    return rms_rounds([&](int r, int k) {
        const int i = threadIdx.x + r * 256 + k * 1024;
        return i < n ? at(i) : 0.f;
    }, n, eps, part);
}

// NORM_IN_PROJ 1: the QKV and gate/up GEMVs compute the RMSNorm they read themselves, each block from the
// fp32 residual, and the norm's own launch before them goes (OwnForward.norm_in_proj; the final norm
// before the LM head stays a launch: its 16k blocks would each read the residual). The block copies the
// gain into shared memory before its wait (a weight) and the residual after it, both with cp.async, then
// rms_scale and rmsnorm's products, so x is rmsnorm's output bit for bit. Shared memory a block: x in
// fp16, the gain, the residual in fp32: 8 * cols bytes (x_stage_bytes). Two folds were measured slower
// before (PlainX's comment); both made every warp gather the residual, this one a block once. Measured
// slower too, on an H200 (271324e): one token at position 96 1b 1005.5 µs against 877.4, 8b 4385.9 against
// 3992.9; tg128 989.9 / 225.9 t/s against 1137.9 / 251.0. The norm's reduction now stands between every
// block's wait and its first product, where the launched norm ran once and under PDL's overlap.
// NORM_IN_PROJ 2 (the norm_in_dot switch): no reduction before the products at all. RMSNorm is a scale
// of the whole vector, so W (x * inv * g) = inv * W (x * g): each warp's row reads x * g (the residual and
// the gain staged in shared memory, fp32), sums the squares of the residual as it reads it (a warp's row
// covers every column, so the warp has the whole sum; no block barrier), and scales its product by
// inv = rsqrt(mean + eps) at the end. The first fold of this shape (13bee16) read the residual and the gain
// from global memory in every warp, chunk after chunk, before X_STAGE and early_loads; staged here, a
// block makes one trip after its wait, as for an fp16 x. Not rmsnorm's bits: x * inv * g is not rounded
// to fp16 before the products, and each warp sums the squares in its own order (float64 decides: the
// kernel checks). Shared memory a block: the residual (fp32) and the gain: 6 * cols bytes. Measured on the
// H100 (9bfb441, 23630ff): KERNELS PASS and the same tokens, but **slower**, and not for want of overlap:
// one token at position 96, 1b 1220.2 µs against 1009.6 / 1005.1 (A/A), 8b 5881.1 against 5230.1; without
// PDL 1341.5 against 1129.4 (the folded GEMVs themselves are the cost: 32 launches fewer, 212 µs more);
// tg128 1b -18.2% (reports/bench/pdl_variants_norm_in_dot_*, reports/h100-review-norm-in-dot/). Off.
#ifndef NORM_IN_PROJ
#define NORM_IN_PROJ 0
#endif
#if NORM_IN_PROJ && !X_STAGE
#error "NORM_IN_PROJ computes the norm where x is staged: it needs X_STAGE"
#endif
// Before the wait: the gain's copy in flight, to ``dst`` (mode 1: xs + cols / 8, after x's fp16 copy).
__device__ __forceinline__ void stage_gain(uint4* dst, const half* __restrict__ gain, int cols) {
    const uint4* g4 = reinterpret_cast<const uint4*>(gain);
    for (int c = threadIdx.x; c < (cols >> 3); c += blockDim.x) cp_async16(dst + c, g4 + c);
}
// After the wait: the residual copied (xs + cols / 4), every copy waited for, then x = RMSNorm(resid) * gain
// in fp16 into xs[0, cols / 8).
__device__ __forceinline__ void stage_norm_x(uint4* xs, const float* __restrict__ resid, int cols, float eps) {
    __shared__ float part[33];
    float* r32 = reinterpret_cast<float*>(xs + (cols >> 2));
    const uint4* r4 = reinterpret_cast<const uint4*>(resid);
    for (int c = threadIdx.x; c < (cols >> 2); c += blockDim.x) cp_async16(xs + (cols >> 2) + c, r4 + c);
    cp_async_wait_all();
    __syncthreads();
    const float inv = rms_scale([&](int i) { return r32[i]; }, cols, eps, part);
    half* x = reinterpret_cast<half*>(xs);
    const half* g = x + cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) x[i] = __float2half(r32[i] * inv * __half2float(g[i]));
    __syncthreads();
}
// Mode 2, after the wait: the residual's 16-byte pieces copied so that chunk i (8 floats) lies at float4 i
// (its first half) and float4 n4 + i (its second): a warp reading chunks lane + k * 32 reads two runs of
// consecutive float4s, not one float4 every 32 bytes (two ways a bank).
__device__ __forceinline__ void stage_resid_halves(uint4* xs, const float* __restrict__ resid, int cols) {
    const uint4* r4 = reinterpret_cast<const uint4*>(resid);
    const int n4 = cols >> 3;
    for (int c = threadIdx.x; c < (cols >> 2); c += blockDim.x) cp_async16(xs + (c & 1) * n4 + (c >> 1), r4 + c);
    cp_async_wait_all();
    __syncthreads();
}
struct X8 { float v[8]; };  // 8 columns of x in fp32 (NormedX's chunk)
// acc += a . b, a 8 halves, b 8 floats (fp32 products, in order).
__device__ __forceinline__ float dot8(uint4 a, const X8& b, float acc) {
    const half2* ah = reinterpret_cast<const half2*>(&a);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const float2 fa = __half22float2(ah[k]);
        acc = fmaf(fa.x, b.v[2 * k], acc);
        acc = fmaf(fa.y, b.v[2 * k + 1], acc);
    }
    return acc;
}
// Chunk i of x * gain (fp32) from the staged residual and gain; ``ss`` gathers the squares of the residual
// this lane read (mutable: the GEMV code takes its x as const), scale() gives the warp's inv.
struct NormedX {
    const float4* r;  // the residual, halves split (stage_resid_halves)
    const uint4* g;   // the gain, fp16
    int n4;
    float eps;
    mutable float ss;
    __device__ __forceinline__ X8 operator()(int i) const {
        const float4 a = r[i], b = r[n4 + i];
        const uint4 gg = g[i];
        const half2* gh = reinterpret_cast<const half2*>(&gg);
        const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        X8 out;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 gf = __half22float2(gh[k]);
            out.v[2 * k] = v[2 * k] * gf.x;
            out.v[2 * k + 1] = v[2 * k + 1] * gf.y;
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) ss = fmaf(v[k], v[k], ss);
        return out;
    }
    __device__ __forceinline__ float scale() const { return rsqrtf(warp_sum(ss) / (n4 * 8) + eps); }
};
// A row's product as the GEMV writes it: as summed, or (NormedX) times the warp's inv. Every lane of the
// warp calls it (scale() sums the lanes' squares).
template <class X>
__device__ __forceinline__ float normed(const X&, float s) { return s; }
__device__ __forceinline__ float normed(const NormedX& x, float s) { return s * x.scale(); }
// NORM_IN_PROJ 3 (the norm_as_scale switch): the norm as a scale again (W (x * inv * g) = inv * W (x * g)),
// but with nothing added to the products' loop and no reduction in the block. The writer of the residual
// (gemv_residual: o_proj, down; rmsnorm for the first layer) leaves x * g in fp16 where the norm's output
// went (hn) and the sums of squares of its blocks' rows in ``parts`` (one float a block of 8 rows: cols / 8),
// so QKV and gate/up stage hn as any GEMV stages x and the partials beside it after their wait, add them in a
// fixed order (the same sum in every warp and run) and scale each row's product by rsqrt(mean + eps) at the
// end. Shared memory a block: x and the partials, 2.5 * cols bytes. What goes: the 31 norm launches between
// the layers' GEMVs (the first after the embedding and the final one stay, the first writing x * g and the
// partials: rmsnorm's ``parts``). The vector is rounded to fp16 before the norm's scale, not after it (the
// float64 checks decide). Here the kernel argument ``resid`` of the QKV and gate/up GEMVs is the partials.
struct ScaledX {  // x * g staged in shared memory and the norm's inv, applied by normed()
    SharedX x;
    float inv;
    __device__ __forceinline__ uint4 operator()(int i) const { return x(i); }
};
__device__ __forceinline__ float normed(const ScaledX& x, float s) { return s * x.inv; }
// After the wait: the cols / 8 partials (cols a multiple of 32: whole 16-byte chunks) and x * g (cols / 8
// chunks of 8 halves) copied into shared memory in one batch (cp.async: no registers held while they come;
// stage_x waits for every copy), then each warp adds the partials, lane l taking l, l + 32, ... (the same
// order in every warp, block and run), and returns inv.
__device__ __forceinline__ float stage_x_parts(uint4* xs, const half* __restrict__ x, const float* __restrict__ parts,
                                               int cols, float eps) {
    const int n4 = cols >> 3, np = cols / 8;  // x's 16-byte chunks; the partials, a block of 8 rows each
    const uint4* p4 = reinterpret_cast<const uint4*>(parts);
    for (int c = threadIdx.x; c < (np >> 2); c += blockDim.x) cp_async16(xs + n4 + c, p4 + c);
    stage_x(xs, x, n4);
    const float* ps = reinterpret_cast<const float*>(xs + n4);
    float s = 0.f;
    for (int i = threadIdx.x & (WARP - 1); i < np; i += WARP) s += ps[i];
    return rsqrtf(warp_sum(s) / cols + eps);
}
#if NORM_IN_PROJ == 3
#define NORM_GAIN(gain, cols)
#define GEMV_NORMED_X(name, x, resid, cols, eps) \
    extern __shared__ uint4 xs[];                 \
    const float name##_inv = stage_x_parts(xs, x, resid, cols, eps); \
    const ScaledX name{SharedX{xs}, name##_inv}
#elif NORM_IN_PROJ == 2
#define NORM_GAIN(gain, cols)     \
    extern __shared__ uint4 xs[]; \
    stage_gain(xs + ((cols) >> 2), gain, cols)
#define GEMV_NORMED_X(name, x, resid, cols, eps) \
    stage_resid_halves(xs, resid, cols);          \
    const NormedX name{reinterpret_cast<const float4*>(xs), xs + ((cols) >> 2), (cols) >> 3, eps, 0.f}
#elif NORM_IN_PROJ
#define NORM_GAIN(gain, cols)     \
    extern __shared__ uint4 xs[]; \
    stage_gain(xs + ((cols) >> 3), gain, cols)
#define GEMV_NORMED_X(name, x, resid, cols, eps) \
    stage_norm_x(xs, resid, cols, eps);           \
    const SharedX name{xs}
#else
#define NORM_GAIN(gain, cols)
#define GEMV_NORMED_X(name, x, resid, cols, eps) GEMV_X(name, x, cols)
#endif

// Dot product of one fp16 row with x, one warp, 16-byte loads (8 halves per lane per step).
// Split in two so the weights can be read before waiting for the kernel that wrote x: row_load issues
// each lane's first D loads (D = 8: a 2048-wide row whole), row_dot finishes the row once x may be read.
// Each kernel's depth may differ (PRE_QKV, PRE_SWIGLU, PRE_RESID, PRE_GEMV): fewer registers let more
// blocks stay resident, which can matter more than loading more before the wait. Measured on the H200
// (bench/pdl_variants_prefetch_*): gate+up at 4 (62 registers, 4 blocks an SM instead of 2) and the
// QKV at 4 with 6 blocks an SM (the 8b's 768 blocks in one wave instead of 1.5): 1b 938 against 969 µs
// a token, 8b 4155 against 4219; the o_proj/down and lm_head keep 8.
// Those depths were chosen while no weight load came before the wait (EARLY_LOADS 0). With EARLY_LOADS
// the overlap_tuning switch (in optimized) sets QKV and gate/up to 8 (QKV 4 blocks an SM), the norm and merge
// triggers below to 1, and o_proj/down to 16 where their blocks fit one wave (own_kernels.resid_depth).
#ifndef PRE
#define PRE 8
#endif
#ifndef PRE_QKV
#define PRE_QKV 4
#endif
#ifndef PRE_SWIGLU
#define PRE_SWIGLU 4
#endif
#ifndef PRE_RESID
#define PRE_RESID PRE
#endif
#ifndef PRE_GEMV
#define PRE_GEMV PRE
#endif
template <int D>
struct RowHead { uint4 w[D]; };

template <int D>
__device__ __forceinline__ void row_load(RowHead<D>& r, const half* __restrict__ w, int cols) {
    const int lane = threadIdx.x & (WARP - 1), n4 = cols >> 3;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
#pragma unroll
    for (int k = 0; k < D; ++k) {
        const int i = lane + k * WARP;
        r.w[k] = i < n4 ? ld_early(w4 + i) : make_uint4(0, 0, 0, 0);  // weights: read once, streamed
    }
}

template <int D, class X>
__device__ __forceinline__ float row_dot(const RowHead<D>& r, const half* __restrict__ w, const X& x, int cols) {
    const int lane = threadIdx.x & (WARP - 1), n4 = cols >> 3;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < D; ++k) {
        const int i = lane + k * WARP;
        if (i < n4) acc = dot8(r.w[k], x(i), acc);
    }
    // The rest of a wide row, unrolled 8 deep so each lane keeps 8 independent loads in flight.
#pragma unroll 8
    for (int i = lane + D * WARP; i < n4; i += WARP) acc = dot8(__ldg(w4 + i), x(i), acc);
    return warp_sum(acc);
}

// The warp's row of W (one warp per row; the warps past the last row load the last one and return
// after the wait), its head loaded into ``r`` before the kernel waits for its input.
template <int D>
__device__ __forceinline__ const half* warp_row(RowHead<D>& r, const half* __restrict__ W, int rows, int cols,
                                                int& row) {
    row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const half* w = W + (size_t)min(row, rows - 1) * cols;
    row_load(r, w, cols);
    return w;
}

// resid[row] += the row's product, rounded to fp16 first: the same value the eager path adds (cuBLAS
// writes fp16); the residual stream stays fp32.
// Returns the row's new residual in every lane with HOIST_LOADS, in lane 0 without.
template <int D, class X>
__device__ __forceinline__ float add_row_product(const RowHead<D>& r, const half* __restrict__ w, const X& x,
                                                 float* __restrict__ resid, int row, int cols) {
#if HOIST_LOADS
    const float before = resid[row];  // every lane (one broadcast request): not sunk into lane 0's branch
    const float s = row_dot(r, w, x, cols);
    const float after = before + __half2float(__float2half(s));
    if ((threadIdx.x & 31) == 0) resid[row] = after;
    return after;
#else
    const float s = row_dot(r, w, x, cols);
    float after = 0.f;
    if ((threadIdx.x & 31) == 0) resid[row] = after = resid[row] + __half2float(__float2half(s));
    return after;
#endif
}

// Weights of a later kernel pulled into L2 by this kernel's warps once their own rows are read (the
// l2_ahead switch, OwnForward's ahead plan). Between the projections the memory sits nearly idle: the
// RMSNorms and the attention read a few KB, and a GEMV's register prefetch reaches only the rows its
// resident warps hold. So the QKV GEMV's warps pull o_proj's weights into L2 while the attention runs,
// o_proj's pull the first gate/up rows while the norm runs, and down's pull the next layer's QKV rows.
// AHEAD_RANGES (address, bytes) pairs, kernel parameters (bytes 0: unused; a table in device memory cost
// every warp a dependent load at its end, about 30 µs a 1b token); a warp takes its share of their
// concatenation in whole 128-byte lines. Weights are never written, so this needs no ordering.
// L2_AHEAD_MODE 1: one bulk prefetch a warp and range (cp.async.bulk.prefetch.L2, sm_90); 2: each lane
// one prefetch.global.L2 a line.
// Measured (one token as a graph at position 96, reports/bench/pdl_variants_l2_ahead_*): no faster on the
// H100 (1b 1144.2 µs at 4 MB a site against 1146.7 without, 1194.7 at 16 MB), slower on the H200;
// every MB pulled ahead competes with the latency-bound kernels' own loads. Off by default.
#define AHEAD_RANGES 3
#define AHEAD_PARAMS const char* ahead_p0, unsigned long long ahead_n0, const char* ahead_p1, \
                     unsigned long long ahead_n1, const char* ahead_p2, unsigned long long ahead_n2
#define AHEAD_ARGS ahead_p0, ahead_n0, ahead_p1, ahead_n1, ahead_p2, ahead_n2
#ifndef L2_AHEAD_MODE
#define L2_AHEAD_MODE 1
#endif
__device__ __forceinline__ void l2_ahead(AHEAD_PARAMS) {
    const char* const ptr[AHEAD_RANGES] = {ahead_p0, ahead_p1, ahead_p2};
    const unsigned long long len[AHEAD_RANGES] = {ahead_n0, ahead_n1, ahead_n2};
    const unsigned long long total = ahead_n0 + ahead_n1 + ahead_n2;
    if (total == 0) return;
    const unsigned long long warps = (unsigned long long)gridDim.x * (blockDim.x / WARP);
    const unsigned long long warp = (unsigned long long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const unsigned long long share = ((total + warps - 1) / warps + 127) & ~127ull;
    const unsigned long long lo = warp * share, hi = min(lo + share, total);
    const int lane = threadIdx.x & (WARP - 1);
    unsigned long long base = 0;  // where range r starts in the concatenation
#pragma unroll
    for (int r = 0; r < AHEAD_RANGES; ++r) {
        const unsigned long long a = max(lo, base), b = min(hi, base + len[r]);
        if (a < b) {  // range sizes are whole 16-byte chunks and ``lo`` whole lines: 16-byte aligned
            const char* s = ptr[r] + (a - base);
#if L2_AHEAD_MODE == 1 && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            if (lane == 0)
                asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(s), "r"((unsigned)(b - a)) : "memory");
#else
            for (unsigned long long o = (unsigned long long)lane * 128; o < b - a; o += WARP * 128)
                asm volatile("prefetch.global.L2 [%0];" :: "l"(s + o));
#endif
        }
        base += len[r];
    }
}

// y = W x (W: rows x cols, row-major), one warp per row; y in fp16, times `scale`.
extern "C" __global__ void gemv(const half* __restrict__ W, const half* __restrict__ x, half* __restrict__ y,
                                int rows, int cols, float scale) {
    pdl_early();
    int row;
    RowHead<PRE_GEMV> r;
    const half* w = warp_row(r, W, rows, cols, row);
    pdl_wait();
    GEMV_X(xv, x, cols);
    if (row >= rows) return;
    const float s = row_dot(r, w, xv, cols);
    if ((threadIdx.x & 31) == 0) y[row] = __float2half(s * scale);
}

// Q, K and V projections in one launch: rows [0, ra) of Wa, then Wb, then Wc, each times x.
#ifndef QKV_MIN_BLOCKS  // blocks of gemv_qkv an SM must hold (__launch_bounds__): 0 leaves it to ptxas
#define QKV_MIN_BLOCKS 6
#endif
#if QKV_MIN_BLOCKS
#define QKV_BOUNDS __launch_bounds__(256, QKV_MIN_BLOCKS)
#else
#define QKV_BOUNDS
#endif
extern "C" __global__ void QKV_BOUNDS gemv_qkv(const half* __restrict__ Wa, const half* __restrict__ Wb,
                                    const half* __restrict__ Wc, const half* __restrict__ x,
                                    half* __restrict__ ya, half* __restrict__ yb, half* __restrict__ yc,
                                    int ra, int rb, int rc, int cols, const float* __restrict__ resid,
                                    const half* __restrict__ gain, float eps, AHEAD_PARAMS) {
    pdl_early();
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, part = 0;  // part: 0 a, 1 b, 2 c
    if (row >= ra + rb + rc) row = -1;
    else if (row >= ra + rb) { row -= ra + rb; part = 2; }
    else if (row >= ra) { row -= ra; part = 1; }
    RowHead<PRE_QKV> r;
    const half* w = (part == 2 ? Wc : part == 1 ? Wb : Wa) + (size_t)max(row, 0) * cols;
    row_load(r, w, cols);
    NORM_GAIN(gain, cols);
    pdl_wait();
    GEMV_NORMED_X(xv, x, resid, cols, eps);
    if (row >= 0) {
        const float s = normed(xv, row_dot(r, w, xv, cols));
        // the output picked here, not held across the wait: one pointer fewer live (40 registers)
        if ((threadIdx.x & 31) == 0) (part == 2 ? yc : part == 1 ? yb : ya)[row] = __float2half(s);
    }
    l2_ahead(AHEAD_ARGS);
}

// NORM_IN_RESID 1 (the norm_in_residual switch): the residual GEMVs (o_proj, down) also write the RMSNorm the
// next projection reads, in the block that finishes last, so the 32 norm launches after them go (the first,
// after the embedding, stays). Each block stores its rows, fences them and takes a ticket (one atomic); the
// block that takes the last ticket reads the whole residual from L2 (ld.global.cg: past its L1, which may
// hold none of it but is not coherent), makes rmsnorm's arithmetic bit for bit (rms_of) and resets the
// ticket for the next launch, which cannot take one before this kernel has ended (its PDL wait). What
// goes: one kernel boundary a norm (the norm's wait for the GEMV's end, and the projection's for the
// norm's). What comes: a fence and an atomic in the last block. The earlier folds (PlainX's comment,
// NORM_IN_PROJ) moved the norm into every block of the projection after it; this leaves those as they are.
// The same fold was measured and reverted at 4d9a8ec (1b 1352 µs against 1199.5, before the weights loaded
// under the kernel before: reports/README.md); tried again on the build with early loads and overlap_tuning,
// it is measured slower on the H100 all the same (reports/bench/pdl_variants_norm_*_h100_*): one token at position 96,
// 1b 1052.2 µs against 999.4 (A/A 993.3), 8b 5374.1 against 5143.6; with NORM_TICKET 1 1038.1 and 5386.9. The
// launched norm's boundary costs less than the last block's serial tail (its ticket, then its trip for the
// residual), and on the 8b the tail grows with the grid (512 blocks a ticket: 3.6 µs a fold, 1.7 on the 1b).
#ifndef NORM_IN_RESID
#define NORM_IN_RESID 0
#endif
#ifndef NORM_TICKET  // 0: every thread fences its row before thread 0's ticket; 1: one acq_rel atomic a block
#define NORM_TICKET 0
#endif
__device__ __forceinline__ void norm_in_last_block(uint4* xs, const float* __restrict__ resid,
                                                   const half* __restrict__ gain, half* __restrict__ out, int n, float eps,
                                                   unsigned* __restrict__ ticket) {
    __shared__ float part[33];
    __shared__ unsigned last;
#if NORM_TICKET == 0
    __threadfence();  // this thread's residual row is visible to every block before the ticket is taken
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
#else
    // cooperative groups' grid barrier: the block's rows ordered before thread 0's ticket by the barrier,
    // and the ticket an acquire-release atomic at GPU scope (cumulative: it releases what the barrier
    // ordered before it), so no warp waits at a fence of its own
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned before;
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(ticket) : "memory");
        last = before == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
#endif
    // the gain into shared memory where x was staged (x's 2 * cols bytes are done with, and cols >= n), beside
    // the residual's loads into registers: one trip, and no registers for it (in registers too, the kernel
    // took 112 instead of 96 and its blocks left less room for the next projection's)
    const uint4* g4 = reinterpret_cast<const uint4*>(gain);
    for (int c = threadIdx.x; c < (n >> 3); c += blockDim.x) cp_async16(xs + c, g4 + c);
    float v[NORM_ROUNDS][NORM_PER_THREAD];
    norm_values([&](int i) { return __ldcg(resid + i); }, n, v);
    cp_async_wait_all();  // rms_of's barrier then makes every thread's copies visible to all
    const float inv = rms_of(v, n, eps, part);
    const half* g = reinterpret_cast<const half*>(xs);
#pragma unroll
    for (int r = 0; r < NORM_ROUNDS; ++r)
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const int i = threadIdx.x + r * 256 + k * 1024;
            if (i < n) out[i] = __float2half(v[r][k] * inv * __half2float(g[i]));  // rmsnorm's: (x * inv) * gain
        }
    if (threadIdx.x == 0) *ticket = 0u;
}
#if NORM_IN_RESID && !X_STAGE
#error "NORM_IN_RESID stages the gain where x was staged: it needs X_STAGE"
#endif

// resid += W x, the residual stream kept in fp32 (o_proj and down projection + residual add); with
// NORM_IN_RESID also out = RMSNorm(resid) * gain (a block of 256 threads; ``ticket``: a zeroed counter).
#ifndef RESID_MIN_BLOCKS  // blocks of gemv_residual an SM must hold (__launch_bounds__): 0 leaves it to ptxas
#define RESID_MIN_BLOCKS 0
#endif
#if RESID_MIN_BLOCKS
#define RESID_BOUNDS __launch_bounds__(256, RESID_MIN_BLOCKS)
#else
#define RESID_BOUNDS
#endif
// With NORM_IN_PROJ 3 (norm_as_scale) it also writes out[row] = resid[row] * gain[row] in fp16 and, a float
// a block, the sum of its rows' squared residuals in parts[blockIdx.x] (its 8 warps' in order): what the
// next QKV or gate/up GEMV reads in place of the norm's output.
__device__ __forceinline__ void scale_row_out(float after, float g, int row, int rows, half* __restrict__ out,
                                              float* __restrict__ parts) {
    __shared__ float sq[8];
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
        if (row < rows) out[row] = __float2half(after * g);
        sq[warp] = row < rows ? after * after : 0.f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int k = 0; k < (int)(blockDim.x >> 5); ++k) t += sq[k];
        parts[blockIdx.x] = t;
    }
}
#define RESID_PARAMS const half* __restrict__ W, const half* __restrict__ x, float* __restrict__ resid, int rows, \
                     int cols, AHEAD_PARAMS, const half* __restrict__ gain, half* __restrict__ out, float eps,     \
                     unsigned* __restrict__ ticket, float* __restrict__ parts
#define RESID_ARGS W, x, resid, rows, cols, AHEAD_ARGS, gain, out, eps, ticket, parts
template <int D>
__device__ __forceinline__ void residual_rows(RESID_PARAMS) {
    pdl_early();
    int row;
    RowHead<D> r;
    const half* w = warp_row(r, W, rows, cols, row);
#if NORM_IN_PROJ == 3
    const float g = ld_early(gain + min(row, rows - 1));  // a weight: before the wait
#endif
    pdl_wait();
    GEMV_X(xv, x, cols);
#if NORM_IN_PROJ == 3
    const float after = row < rows ? add_row_product(r, w, xv, resid, row, cols) : 0.f;
    scale_row_out(after, g, row, rows, out, parts);
#else
    if (row < rows) add_row_product(r, w, xv, resid, row, cols);
#endif
    l2_ahead(AHEAD_ARGS);
#if NORM_IN_RESID
    norm_in_last_block(xs, resid, gain, out, rows, eps, ticket);  // xs: where GEMV_X staged x
#endif
}
extern "C" __global__ void RESID_BOUNDS gemv_residual(RESID_PARAMS) { residual_rows<PRE_RESID>(RESID_ARGS); }
// The same GEMV at another depth, PRE_OPROJ chunks a lane (OwnForward launches it for o_proj only where the
// build defines PRE_OPROJ). The 1b's o_proj rows are 2048 wide, 8 chunks a lane: at PRE_RESID 16 half its
// prefetch registers hold zeros (112 registers against 64), and two of its blocks leave no room on an SM for a
// block of gate/up (96 registers allocated) to launch and load its rows before o_proj ends.
#ifndef PRE_OPROJ
#define PRE_OPROJ PRE_RESID
#endif
extern "C" __global__ void RESID_BOUNDS gemv_residual_short(RESID_PARAMS) { residual_rows<PRE_OPROJ>(RESID_ARGS); }

// out = silu(Wg x) * (Wu x): the gate and up projections and the SwiGLU in one launch, each chunk of x
// read once for both rows.
template <int D, class X>
__device__ __forceinline__ void swiglu_rows(const RowHead<D>& rg, const RowHead<D>& ru, const half* __restrict__ wg,
                                            const half* __restrict__ wu, const X& x, int cols, half* out) {
    const int lane = threadIdx.x & (WARP - 1), n4 = cols >> 3;
    const uint4* g4 = reinterpret_cast<const uint4*>(wg);
    const uint4* u4 = reinterpret_cast<const uint4*>(wu);
    float ag = 0.f, au = 0.f;
#pragma unroll
    for (int k = 0; k < D; ++k) {
        const int i = lane + k * WARP;
        if (i < n4) {
            const auto xi = x(i);
            ag = dot8(rg.w[k], xi, ag);
            au = dot8(ru.w[k], xi, au);
        }
    }
#pragma unroll 4
    for (int i = lane + D * WARP; i < n4; i += WARP) {
        const auto xi = x(i);
        ag = dot8(__ldg(g4 + i), xi, ag);
        au = dot8(__ldg(u4 + i), xi, au);
    }
    const float g = __half2float(__float2half(normed(x, warp_sum(ag))));
    const float u = __half2float(__float2half(normed(x, warp_sum(au))));
    if (lane == 0) *out = __float2half(g / (1.f + __expf(-g)) * u);
}

#ifndef SWIGLU_MIN_BLOCKS  // blocks of gemv_swiglu an SM must hold (__launch_bounds__): 0 leaves it to ptxas
#define SWIGLU_MIN_BLOCKS 0
#endif
#if SWIGLU_MIN_BLOCKS
#define SWIGLU_BOUNDS __launch_bounds__(256, SWIGLU_MIN_BLOCKS)
#else
#define SWIGLU_BOUNDS
#endif
extern "C" __global__ void SWIGLU_BOUNDS gemv_swiglu(const half* __restrict__ Wg, const half* __restrict__ Wu,
                                       const half* __restrict__ x, half* __restrict__ out, int rows, int cols,
                                       const float* __restrict__ resid, const half* __restrict__ gain, float eps) {
    pdl_early();
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    RowHead<PRE_SWIGLU> rg, ru;
    const size_t off = (size_t)min(row, rows - 1) * cols;
    row_load(rg, Wg + off, cols);
    row_load(ru, Wu + off, cols);
    NORM_GAIN(gain, cols);
    pdl_wait();
    GEMV_NORMED_X(xv, x, resid, cols, eps);
    if (row >= rows) return;
    swiglu_rows(rg, ru, Wg + off, Wu + off, xv, cols, out + row);
}

// out = x * rsqrt(mean(x^2) + eps) * gain; one block of 1024 threads (x in fp32, n <= 8192). The gain (a weight) is loaded before the wait
// for the residual's writer, and each thread keeps its NORM_PER_THREAD values of x in registers, so the
// kernel makes one trip to memory after the wait.
#ifndef NORM_TRIGGER_START  // 1: the norm lets the next projection launch (and load weights) at its start
#define NORM_TRIGGER_START 0
#endif
// ``parts`` (norm_as_scale's first norm, else null): out = x * gain in fp16 (not scaled) and the sum of the
// squares in parts[0], 0 in the other n / 8 - 1 partials, which the next GEMV adds (NORM_IN_PROJ 3).
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const half* __restrict__ gain,
                                   half* __restrict__ out, int n, float eps, float* __restrict__ parts) {
    __shared__ float part[32];
    pdl_early();
#if NORM_TRIGGER_START
    pdl_launch_dependents();
#endif
    float g[NORM_PER_THREAD], v[NORM_PER_THREAD];
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        g[k] = i < n ? ld_early(gain + i) : 0.f;
    }
    pdl_wait();
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = i < n ? x[i] : 0.f;
    }
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) s += v[k] * v[k];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
        t = warp_sum(t);
        if (threadIdx.x == 0) part[0] = parts ? t : rsqrtf(t / n + eps);
    }
    __syncthreads();
    if (parts) {
        for (int i = threadIdx.x; i < (n >> 3); i += blockDim.x) parts[i] = i == 0 ? part[0] : 0.f;
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < n) out[i] = __float2half(v[k] * g[k]);
        }
        return;
    }
    const float inv = part[0];
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < n) out[i] = __float2half(v[k] * inv * g[k]);
    }
}

// x (fp32 residual) = embedding row of the token id read from device memory. One element a thread.
extern "C" __global__ void embed(const half* __restrict__ E, const int* __restrict__ tok,
                                 float* __restrict__ x, int n) {
    pdl_early();
    pdl_wait();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __half2float(E[(size_t)tok[0] * n + i]);
}

// RoPE (rotate-half) of one 16-byte chunk c (dims 8c..8c+7) of a head's raw fp16 vector v: dim j pairs
// with j + d/2, so chunk c with chunk c ^ (lpr/2) (lpr = d/8 chunks a head, a power of two). cs/sn hold
// cos/sin(pos * inv_freq[f]) for f < d/2. The result rounded to fp16, as a separate RoPE kernel wrote it.
// ``own``: chunk c of the vector, ``other``: chunk c ^ (lpr / 2), its rotate-half partner.
__device__ __forceinline__ uint4 rope_pair(uint4 own, uint4 other, int c, int lpr, const float* cs, const float* sn) {
    const int hl = lpr >> 1, half_d = hl * 8;
    const half* o = reinterpret_cast<const half*>(&own);
    const half* p = reinterpret_cast<const half*>(&other);
    uint4 out;
    half* r = reinterpret_cast<half*>(&out);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const int j = c * 8 + e;
        if (c < hl) {  // first half: a = x[j], b = x[j + d/2]: a cos - b sin
            const float a = __half2float(o[e]), b = __half2float(p[e]);
            r[e] = __float2half(a * cs[j] - b * sn[j]);
        } else {  // second half: a = x[j - d/2], b = x[j]: a sin + b cos
            const float a = __half2float(p[e]), b = __half2float(o[e]);
            r[e] = __float2half(a * sn[j - half_d] + b * cs[j - half_d]);
        }
    }
    return out;
}
__device__ __forceinline__ uint4 rope_chunk(const half* v, int c, int lpr, const float* cs, const float* sn) {
    const int hl = lpr >> 1;
    return rope_pair(*reinterpret_cast<const uint4*>(v + c * 8), *reinterpret_cast<const uint4*>(v + (c ^ hl) * 8),
                     c, lpr, cs, sn);
}

// Decode attention, split over the sequence (flash-decoding), with RoPE and the KV-cache write of
// this token folded in (no kernel of their own: 16 launches fewer a 1b token). Grid (n_heads,
// max_splits), block ATT_THREADS threads: split s covers positions [s*SPLIT, min(n, (s+1)*SPLIT)),
// n = pos[0] + 1 read from device memory, so one grid (and one graph) serves every position; splits
// past n exit at once (attn_combine reads only the splits the context reaches). Each split writes its
// max m, sum l and unnormalised output o (fp32) for attn_combine.
// q, k, v are the projections' raw outputs: every block rotates q itself; the row at this token's
// slot is taken from k (rotated) and v directly, never from the cache, and block (first head of the
// kv group, split 0) writes that row into the cache for the tokens after this one.
// Thread t holds 8 dims (one 16-byte load) of a position row: LPR = d/8 lanes a row, SLOTS =
// ATT_THREADS/LPR rows at a time, each thread SPLIT/SLOTS positions. Every K and V load of the split
// is issued at once, before any arithmetic, so a split costs one trip to memory: a P.V loop that
// loaded V position by position made 8 trips and took ~8 us a layer (CUPTI, 1b, H100).
// The cache rows of earlier tokens, the position and the slot were written before the kernel just
// before this one started, so (ATT_PREFETCH) they are loaded before waiting for it: that kernel
// starts this one only after its own wait returned, i.e. once everything before it had finished
// (PDL_TRIGGER 2; with 0 it has finished itself). Triggering at the start (1) gives no such order.
// Needs d % 16 == 0, 32 % (d/8) == 0 and SPLIT / SLOTS <= ATT_POS (d <= 128; checked on the host).
#ifndef ATT_PREFETCH
#define ATT_PREFETCH (PDL_TRIGGER != 1)
#endif
#ifndef SPLIT  // positions a split (own_kernels.py's CHUNK)
#define SPLIT 64
#endif
#define ATT_THREADS 256
// ATT_MIN_BLOCKS: blocks of attn_split an SM must hold (__launch_bounds__); 0 leaves it to ptxas (84
// registers: 2 blocks an SM, 264 on the H200). A context of n positions has n_heads * ceil(n / SPLIT)
// working blocks: 288 at position 512 for 32 heads, past one wave at 2 an SM, and the token jumps
// (one token as a graph, H200: 8b 4175 µs at position 500, 4270 at 512; 1b 952 -> 997). Bounded to 3
// (76 registers, 396 blocks: one wave to 768 positions): 4181 -> 4202 and 959 -> 970
// (reports/bench/pdl_variants_att_wave_pos{500,512}_h200_8b12950.md, with A/A rows). In the
// decode, though, the bound costs tokens/s at the reviews' positions (32-160) in every run: 8b 239.6 t/s (84.8% of the copy
// bandwidth) at 6bd12fc, where it was the default, against 242.6 (86.3%) at 70d2983 and 240.3 (85.4%)
// at ece4ec6 unbounded; the latency growth to 512 falls from +2.9% to +0.8% (8b), +6.3% to +2.8%
// (1b). 0 stays the default (the bandwidth target); 3 is the attn_one_wave switch (long contexts).
// Splits of 128 positions (SPLIT=128, ATT_POS=8, 127 registers at 2 an SM) were slower at both.
// ATT_GROUP=1 (the attn_group_heads switch): past one wave, a block takes several query heads of
// one KV head (below). H200, one token as a graph at 512: 1b 986.5 against 996.4 µs, 8b 4256.3
// against 4268.5; free at 96 (reports/bench/pdl_variants_att_group_pos*_h200_acc9a16); the 1b's
// tg128 0.6-1.1% slower in every decode run, so it stays a switch. 0 compiles the measured kernel.
#ifndef ATT_GROUP
#define ATT_GROUP 0
#endif
#ifndef ATT_POS  // positions a thread of attn_split holds (own_kernels.py's ATT_POS)
#define ATT_POS 4
#endif
// More than 4 positions a thread (attn_fit_wave's 5) take 127 registers unbounded, 130 at 6: bounded
// to 2 blocks an SM so that ptxas keeps them to 128 and the H200 still holds 264 blocks.
#ifndef ATT_MIN_BLOCKS
#define ATT_MIN_BLOCKS (ATT_POS > 4 ? 2 : 0)
#endif
#if ATT_MIN_BLOCKS
#define ATT_BOUNDS __launch_bounds__(ATT_THREADS, ATT_MIN_BLOCKS)
#else
#define ATT_BOUNDS
#endif
// ATT_FILL: how long a split is. 0: SPLIT. 1: every position the block's threads hold,
// ATT_THREADS / (d/8) * ATT_POS: 64 at d = 128 (as SPLIT), 128 at d = 64, where SPLIT leaves half
// the threads without a position (1b: 32 heads x 9 splits = 288 blocks at position 512, past the 264
// the H200 holds at once; filled, 160). Filled, the 1b's token at 512 fell from 993 to 965 µs but
// rose at 96 from 926 to 947 (more positions a thread; reports/bench/pdl_variants_att_fill_pos*_90f17ab).
// 2 (the attn_fill_split switch): SPLIT while a block per head and split fits ``resident`` (one
// wave), filled past it. 3 (the attn_fit_wave switch, built with 5 positions a thread): past one
// wave, the shortest split that keeps a block per head and split in one wave, in whole rows of the
// block's threads, at most what they hold: the 8b (head_dim 128, 16 rows at a time) gets 80-position
// splits at 513 positions (7 a head, 224 blocks) where 64 made 288, past the 264 an H200 holds; the
// 1b 96 (6 a head) where filling made 128 (5). attn_split and attn_combine decide alike from the
// device position. Mirrored by own_kernels.split_at.
#ifndef ATT_FILL
#define ATT_FILL 0
#endif
// 4 (the attn_share_kv switch, attn_share's rule): ``resident`` is the splits a KV head gets (the SMs
// over the KV heads, from the host: a block an SM), the split the shortest in whole rows that keeps
// to them, at least a row, at most what the block's threads hold.
// A split's cache rows, every load issued at once: thread (slot_i, c) holds positions start + slot_i +
// k * slots (k < ATT_POS), dims 8c..8c+7 of KV head g; ``ok``: inside the split and the context;
// ``fresh``: this token's row (slot ``at``), taken from k and v by the caller, not from the cache.
__device__ __forceinline__ void load_split_rows(uint4 (&kr)[ATT_POS], uint4 (&vr)[ATT_POS], bool (&ok)[ATT_POS],
                                                bool (&fresh)[ATT_POS], const half* cache_k, const half* cache_v,
                                                int g, int c, int slot_i, int slots, int start, int end, int chunk,
                                                int at, int d, int max_ctx) {
    const half* K = cache_k + (size_t)g * max_ctx * d + c * 8;
    const half* V = cache_v + (size_t)g * max_ctx * d + c * 8;
#pragma unroll
    for (int k = 0; k < ATT_POS; ++k) {
        const int r = slot_i + k * slots, j = start + r;
        ok[k] = r < chunk && j < end;
        fresh[k] = ok[k] && j == at;
        const bool load = ok[k] && !fresh[k];
        kr[k] = load ? *reinterpret_cast<const uint4*>(K + (size_t)j * d) : make_uint4(0, 0, 0, 0);
        vr[k] = load ? *reinterpret_cast<const uint4*>(V + (size_t)j * d) : make_uint4(0, 0, 0, 0);
    }
}
// The splits a context of n positions reaches with splits of ``chunk`` (at most ``splits``): what attn_split
// writes and what the merge reads (attn_combine, gemv_residual_merge, attn_split's last block).
__device__ __forceinline__ int splits_used(int n, int chunk, int splits) { return min(splits, (n + chunk - 1) / chunk); }
__device__ __forceinline__ int att_chunk(int d, int n, int n_heads, int resident) {
    const int rows = ATT_THREADS / (d >> 3), full = rows * ATT_POS;
    if (ATT_FILL == 4) {
        const int per_kv = max(1, resident), shortest = (n + per_kv - 1) / per_kv;
        return min(full, (shortest + rows - 1) / rows * rows);
    }
    if (ATT_FILL == 3) {
        const int per_head = max(1, resident / n_heads), shortest = (n + per_head - 1) / per_head;
        return min(full, max(SPLIT, (shortest + rows - 1) / rows * rows));
    }
    if (ATT_FILL == 1 || (ATT_FILL == 2 && n_heads * ((n + SPLIT - 1) / SPLIT) > resident)) return full;
    return SPLIT;
}
#define MAX_SPLITS 64  // 4096 positions; checked on the host
// COMBINE_AHEAD (HOIST_LOADS): the splits' outputs a thread loads beside their (m, l); a head with more
// splits loads the rest after its barrier, one more L2 trip after the wait. 8 cover 512 positions, and the
// growth to 512 is the merge's (CUPTI, H100, 84a617c: attn_combine 25.3 µs a 1b token at positions 32-63,
// 69.8 at 512-543, where 513 positions make 9 splits of 64; the 8b's 71.2 and 134.2). 16 cover 1024 (the
// attn_merge_ahead switch). Measured no faster (H100, 774b7b8, one token at 512: 1b 1006.9 µs against 1010.5,
// A/A 1006.1): the merge's CUPTI time is mostly its PDL wait for attn_split's second wave; not in optimized.
#ifndef COMBINE_AHEAD
#define COMBINE_AHEAD 8
#endif
// The log-sum-exp merge of head h's first ``used`` split partials into out[h * d + i], thread i < d
// (attn_combine: a block of d threads, so GUARD false and no bound check; attn_split's last block with
// MERGE_LAST: 256 threads, GUARD true). ``ld`` reads a partial: plainly in attn_combine, past L1 in
// attn_split (other blocks of the same launch wrote them). sw, sl: MAX_SPLITS floats of shared memory each.
template <bool GUARD, class Ld>
__device__ __forceinline__ void merge_head(Ld ld, const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                           half* __restrict__ out, int h, int splits, int d, int used, int i,
                                           float* sw, float* sl) {
    const bool mine = !GUARD || i < d;
#if HOIST_LOADS
    float ahead[COMBINE_AHEAD];  // the first splits' outputs, on their way with the (m, l) below
#pragma unroll
    for (int s = 0; s < COMBINE_AHEAD; ++s) ahead[s] = mine && s < used ? ld(part_o + ((size_t)h * splits + s) * d + i) : 0.f;
#endif
    for (int s = i; s < used; s += blockDim.x) {
        sw[s] = ld(part_ml + 2 * ((size_t)h * splits + s));
        sl[s] = ld(part_ml + 2 * ((size_t)h * splits + s) + 1);
    }
    __syncthreads();
    if (!mine) return;
    float M = -INFINITY;
    for (int s = 0; s < used; ++s) M = fmaxf(M, sw[s]);
    float num = 0.f, den = 0.f;
    int s0 = 0;
#if HOIST_LOADS
#pragma unroll
    for (int s = 0; s < COMBINE_AHEAD; ++s) {
        if (s < used) {
            const float w = sw[s] == -INFINITY ? 0.f : __expf(sw[s] - M);
            num += w * ahead[s];
            den += w * sl[s];
        }
    }
    s0 = COMBINE_AHEAD;
#endif
#pragma unroll 8
    for (int s = s0; s < used; ++s) {
        const float w = sw[s] == -INFINITY ? 0.f : __expf(sw[s] - M);
        num += w * ld(part_o + ((size_t)h * splits + s) * d + i);
        den += w * sl[s];
    }
    out[h * d + i] = __float2half(num / den);
}
// MERGE_LAST (the attn_merge_last switch): attn_split's block that writes a head's last split merges
// the head's splits itself (merge_head, attn_combine's arithmetic in its order: the same fp16 output),
// so no attn_combine launch follows (16 a 1b token, 32 an 8b one) and o_proj waits on attn_split. Every
// writer fences its partials before the block takes a ticket (tickets[h], one counter a query head,
// reset by the block that merges, so the next layer and token find it 0), as norm_in_last_block does.
#ifndef MERGE_LAST
#define MERGE_LAST 0
#endif
#if MERGE_LAST
#define ATT_MERGE_PARAMS , half* __restrict__ out, unsigned* __restrict__ tickets
#else
#define ATT_MERGE_PARAMS
#endif
extern "C" __global__ void ATT_BOUNDS attn_split(const half* __restrict__ q, const half* __restrict__ k_new,
                                      const half* __restrict__ v_new, half* __restrict__ cache_k,
                                      half* __restrict__ cache_v, const int* __restrict__ pos,
                                      const int* __restrict__ slot, const float* __restrict__ inv_freq,
                                      float* __restrict__ part_o, float* __restrict__ part_ml,
                                      int n_heads, int n_kv, int d, int max_ctx, float scale, int splits,
                                      int resident ATT_MERGE_PARAMS) {
    __shared__ float so[ATT_THREADS * 8];  // per slot, its 8-dim partial outputs: SLOTS x d
    __shared__ float red_m[ATT_THREADS / 32], red_l[ATT_THREADS / 32];
    __shared__ float cs[64], sn[64];  // cos / sin(pos * inv_freq), d / 2 <= 64
    pdl_early();
#if !ATT_PREFETCH
    pdl_wait();
#endif
    const int h = blockIdx.x, tid = threadIdx.x;
    const int p0 = pos[0], n = p0 + 1, at = slot[0], chunk = att_chunk(d, n, n_heads, resident);
#if ATT_GROUP
    // The query heads of one KV head share its cache rows. While a block per head and split fits in
    // one wave (``resident``: the blocks of this kernel the GPU holds at once, from the host), every head
    // has its own blocks; past that, ``hpb`` heads of a group take one block and read the rows once,
    // so the attention stays one wave to hpb times the context (the jump at 512 positions, above).
    // Chosen here from the position, so one captured graph serves every context. Mirrored by
    // own_kernels.heads_per_block.
    const int working = min((n + chunk - 1) / chunk, (int)gridDim.y), heads_a_kv = n_heads / n_kv;
    int hpb = 1;
    while (2 * hpb <= heads_a_kv && heads_a_kv % (2 * hpb) == 0 && (n_heads / hpb) * working > resident) hpb *= 2;
    if (h % hpb) return;  // its heads are done by block h - h % hpb
#endif
    // A block per split (grid y = splits) or fewer blocks taking turns (OwnForward's att_grid_splits: 4, 8
    // or 16 a head, no better on the H200). This loop form against the kernel without it, one token as a
    // graph, same rounds (reports/bench/pdl_variants_loop_fold_h200_13bee16.md): 8b 4107 against 4118 µs,
    // beyond the A/A pair's 1-3 µs; 1b 928 against 934, inside the A/A pair's 14 µs: undecided.
    for (int s = blockIdx.y; s < splits; s += gridDim.y) {
        const int start = s * chunk, end = min(n, start + chunk);
        if (start >= n) break;
        const int group = n_heads / n_kv, g = h / group;
        const int lpr = d >> 3, slots = ATT_THREADS / lpr, c = tid % lpr, slot_i = tid / lpr;
        uint4 kr[ATT_POS], vr[ATT_POS];
        bool ok[ATT_POS], fresh[ATT_POS];
        load_split_rows(kr, vr, ok, fresh, cache_k, cache_v, g, c, slot_i, slots, start, end, chunk, at, d, max_ctx);
    #if HOIST_LOADS  // the table once, from the token's constants, while the cache rows are on their way
        if (s == (int)blockIdx.y)
            for (int i = tid; i < (d >> 1); i += ATT_THREADS) sincosf((float)p0 * inv_freq[i], &sn[i], &cs[i]);
    #endif
    #if ATT_PREFETCH
        pdl_wait();  // q, k, v come from the projection just before
    #endif
    #if HOIST_LOADS
        // This token's k and v and the block's first query head, copied into shared memory at once (one trip
        // after the wait; the cache write, each fresh row's branch and the query made one each, in turn,
        // and as plain loads ptxas issued v and q only after k's RoPE). d <= 128: 16 chunks a vector.
        __shared__ uint4 kvq[3 * 16];
        if (tid < 3 * lpr) {
            const int part = tid / lpr, ch = tid % lpr;
            const half* src = part == 0 ? k_new + g * d : part == 1 ? v_new + g * d : q + h * d;
            cp_async16(kvq + part * 16 + ch, src + ch * 8);
        }
        cp_async_wait_all();
    #else
        for (int i = tid; i < (d >> 1); i += ATT_THREADS) sincosf((float)p0 * inv_freq[i], &sn[i], &cs[i]);
    #endif
        __syncthreads();
        const half* kn = k_new + g * d;
        const half* vn = v_new + g * d;
    #if HOIST_LOADS
        // Thread tid < lpr has c == tid, so its k_rot is the cache row's chunk.
        const int hl = lpr >> 1;
        const uint4 k_rot = rope_pair(kvq[c], kvq[c ^ hl], c, lpr, cs, sn), v_own = kvq[16 + c];
        if (s == 0 && h == g * group && tid < lpr && at >= 0 && at < max_ctx) {  // this token's cache row
            const size_t row = ((size_t)g * max_ctx + at) * d + tid * 8;
            *reinterpret_cast<uint4*>(cache_k + row) = k_rot;
            *reinterpret_cast<uint4*>(cache_v + row) = v_own;
        }
    #pragma unroll
        for (int k = 0; k < ATT_POS; ++k) {
            if (fresh[k]) {
                kr[k] = k_rot;
                vr[k] = v_own;
            }
        }
    #else
        if (s == 0 && h == g * group && tid < lpr && at >= 0 && at < max_ctx) {  // this token's cache row
            const size_t row = ((size_t)g * max_ctx + at) * d + tid * 8;
            *reinterpret_cast<uint4*>(cache_k + row) = rope_chunk(kn, tid, lpr, cs, sn);
            *reinterpret_cast<uint4*>(cache_v + row) = *reinterpret_cast<const uint4*>(vn + tid * 8);
        }
    #pragma unroll
        for (int k = 0; k < ATT_POS; ++k) {
            if (fresh[k]) {
                kr[k] = rope_chunk(kn, c, lpr, cs, sn);
                vr[k] = *reinterpret_cast<const uint4*>(vn + c * 8);
            }
        }
    #endif
#if ATT_GROUP
        for (int hq = h; hq < h + hpb; ++hq) {  // the block's query heads, one after the other
#else
        {
        const int hq = h;
#endif
    #if HOIST_LOADS
        const uint4 qv = hq == h ? rope_pair(kvq[32 + c], kvq[32 + (c ^ hl)], c, lpr, cs, sn)
                                 : rope_chunk(q + hq * d, c, lpr, cs, sn);
    #else
        const uint4 qv = rope_chunk(q + hq * d, c, lpr, cs, sn);
    #endif
        // Scores: each row's LPR lanes (adjacent, within one warp) add their 8-dim partial products.
        float sc[ATT_POS], m = -INFINITY;
    #pragma unroll
        for (int k = 0; k < ATT_POS; ++k) {
            float a = dot8(kr[k], qv, 0.f);
            for (int o = lpr >> 1; o > 0; o >>= 1) a += __shfl_xor_sync(FULL, a, o);
            // Rounded to fp16 as the eager path's fp16 matmul output is.
            sc[k] = ok[k] ? __half2float(__float2half(a)) * scale : -INFINITY;
            m = fmaxf(m, sc[k]);
        }
        m = warp_max(m);
        if ((tid & 31) == 0) red_m[tid >> 5] = m;
        __syncthreads();
        m = -INFINITY;
        for (int w = 0; w < ATT_THREADS / 32; ++w) m = fmaxf(m, red_m[w]);
        float l = 0.f, o[8];
    #pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = 0.f;
    #pragma unroll
        for (int k = 0; k < ATT_POS; ++k) {
            const float p = ok[k] ? __expf(sc[k] - m) : 0.f;
            l += p;
            const half2* vh = reinterpret_cast<const half2*>(&vr[k]);
    #pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 f = __half22float2(vh[e]);
                o[2 * e] = fmaf(p, f.x, o[2 * e]);
                o[2 * e + 1] = fmaf(p, f.y, o[2 * e + 1]);
            }
        }
        // Every lane of a row holds that row's p: count each row once (lane c == 0).
        l = warp_sum(c == 0 ? l : 0.f);
        if ((tid & 31) == 0) red_l[tid >> 5] = l;
    #pragma unroll
        for (int e = 0; e < 8; ++e) so[slot_i * d + c * 8 + e] = o[e];
        __syncthreads();
        const size_t pidx = (size_t)hq * splits + s;
        for (int i = tid; i < d; i += ATT_THREADS) {
            float acc = 0.f;
            for (int k2 = 0; k2 < min(slots, chunk); ++k2) acc += so[k2 * d + i];
            part_o[pidx * d + i] = acc;
        }
        if (tid == 0) {
            float lt = 0.f;
            for (int w = 0; w < ATT_THREADS / 32; ++w) lt += red_l[w];
            part_ml[2 * pidx] = m;
            part_ml[2 * pidx + 1] = lt;
        }
    #if MERGE_LAST
        __threadfence();  // this thread's partials are visible to every block before the ticket is taken
        __syncthreads();
        __shared__ unsigned last;
        const int used = splits_used(n, chunk, splits);
        if (tid == 0) last = atomicAdd(tickets + hq, 1u) == (unsigned)used - 1;
        __syncthreads();
        if (last) {
            __threadfence();
            merge_head<true>([](const float* x) { return __ldcg(x); }, part_o, part_ml, out, hq, splits, d, used, tid,
                             so, so + MAX_SPLITS);
            if (tid == 0) tickets[hq] = 0u;
        }
    #endif
        __syncthreads();  // the shared arrays are reused by the block's next head or split
        }
    }
}

// attn_split with a KV head's query heads sharing its rows (the attn_share_kv switch, ATT_SHARE_KV = the
// query heads a KV head has, 4 in both presets; built with ATT_FILL=4): grid (n_kv, splits), so each
// cache row is read once a token instead of once per query head, and the splits are sized so that
// the blocks are about one an SM at every context (att_chunk's rule 4: 16 a KV head on 132 SMs; at
// 512 positions the 8b's 128 blocks read 32 positions each, where attn_split's 288 read 64 for one
// head). The heads are not taken one after another (as attn_group_heads does): every thread scores
// its positions against all of them, and the block's reductions (max, sum, the output over the
// rows) carry every head in the same steps, so a block has attn_split's barriers for G heads.
// 96 registers and 33.5 KB of shared memory at G = 4 (ptxas of CUDA 13.0, sm_90; 154 before the split's
// work moved into share_split, 128 bounded to two blocks an SM).
// The arithmetic per head and split is attn_split's (fp16-rounded scores, the same exp and sums),
// so attn_combine merges the partials as before; only the split boundaries differ.
#ifndef ATT_SHARE_KV
#define ATT_SHARE_KV 0
#endif
// ATT_SHARE_MIN_BLOCKS: 2 makes sure of at most 128 registers without spills, so an SM holds two
// blocks: a second split when the host asks for more than a block an SM, or a block beside the QKV
// GEMV's last blocks while it drains (PDL).
#ifndef ATT_SHARE_MIN_BLOCKS
#define ATT_SHARE_MIN_BLOCKS 2
#endif
#if ATT_SHARE_KV
// The shared memory one split of attn_share uses (the persistent token kernel, token.cu, places it in
// its own dynamic shared memory).
struct ShareSmem {
    float so[ATT_SHARE_KV * ATT_THREADS * 8];  // per head and row slot, its partial outputs: G x SLOTS x d
    float red_m[ATT_SHARE_KV][ATT_THREADS / 32], red_l[ATT_SHARE_KV][ATT_THREADS / 32];
    float cs[64], sn[64];
};
// One split s of KV head g: the block's work in attn_share, and an item of token.cu's attention phase.
// ``WAIT``: pdl_wait() once the cache rows are loaded (attn_share under PDL); the pointers carry no
// __restrict__ so that the persistent kernel, whose other blocks wrote q, k and v in the same launch,
// never reads them through the non-coherent path.
template <bool WAIT>
__device__ __forceinline__ void share_split(ShareSmem& sm, int g, int s, const half* q, const half* k_new,
                                            const half* v_new, half* cache_k, half* cache_v, int p0, int at,
                                            const float* __restrict__ inv_freq, float* part_o, float* part_ml,
                                            int d, int max_ctx, float scale, int splits, int chunk) {
    constexpr int G = ATT_SHARE_KV;
    const int tid = threadIdx.x, n = p0 + 1;
    const int lpr = d >> 3, slots = ATT_THREADS / lpr, c = tid % lpr, slot_i = tid / lpr;
    const int warp = tid >> 5, lane = tid & 31;
    const int start = s * chunk, end = min(n, start + chunk);
    uint4 kr[ATT_POS], vr[ATT_POS];
    bool ok[ATT_POS], fresh[ATT_POS];
    load_split_rows(kr, vr, ok, fresh, cache_k, cache_v, g, c, slot_i, slots, start, end, chunk, at, d, max_ctx);
    if (WAIT) pdl_wait();  // q, k, v come from the projection just before
    for (int i = tid; i < (d >> 1); i += ATT_THREADS) sincosf((float)p0 * inv_freq[i], &sm.sn[i], &sm.cs[i]);
    __syncthreads();
    const half* kn = k_new + g * d;
    const half* vn = v_new + g * d;
    if (s == 0 && tid < lpr && at >= 0 && at < max_ctx) {  // this token's cache row
        const size_t row = ((size_t)g * max_ctx + at) * d + tid * 8;
        *reinterpret_cast<uint4*>(cache_k + row) = rope_chunk(kn, tid, lpr, sm.cs, sm.sn);
        *reinterpret_cast<uint4*>(cache_v + row) = *reinterpret_cast<const uint4*>(vn + tid * 8);
    }
#pragma unroll
    for (int k = 0; k < ATT_POS; ++k) {
        if (fresh[k]) {
            kr[k] = rope_chunk(kn, c, lpr, sm.cs, sm.sn);
            vr[k] = *reinterpret_cast<const uint4*>(vn + c * 8);
        }
    }
    float sc[G][ATT_POS], m[G];
#pragma unroll
    for (int hh = 0; hh < G; ++hh) {
        const uint4 qv = rope_chunk(q + (g * G + hh) * d, c, lpr, sm.cs, sm.sn);
        m[hh] = -INFINITY;
#pragma unroll
        for (int k = 0; k < ATT_POS; ++k) {
            float a = dot8(kr[k], qv, 0.f);
            for (int o = lpr >> 1; o > 0; o >>= 1) a += __shfl_xor_sync(FULL, a, o);
            sc[hh][k] = ok[k] ? __half2float(__float2half(a)) * scale : -INFINITY;
            m[hh] = fmaxf(m[hh], sc[hh][k]);
        }
        m[hh] = warp_max(m[hh]);
        if (lane == 0) sm.red_m[hh][warp] = m[hh];
    }
    __syncthreads();
    float l[G], o[G][8];
#pragma unroll
    for (int hh = 0; hh < G; ++hh) {
        m[hh] = -INFINITY;
        for (int w = 0; w < ATT_THREADS / 32; ++w) m[hh] = fmaxf(m[hh], sm.red_m[hh][w]);
        l[hh] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) o[hh][e] = 0.f;
    }
#pragma unroll
    for (int k = 0; k < ATT_POS; ++k) {
        const half2* vh = reinterpret_cast<const half2*>(&vr[k]);
        float f[8];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 t = __half22float2(vh[e]);
            f[2 * e] = t.x;
            f[2 * e + 1] = t.y;
        }
#pragma unroll
        for (int hh = 0; hh < G; ++hh) {
            const float p = ok[k] ? __expf(sc[hh][k] - m[hh]) : 0.f;
            l[hh] += p;
#pragma unroll
            for (int e = 0; e < 8; ++e) o[hh][e] = fmaf(p, f[e], o[hh][e]);
        }
    }
#pragma unroll
    for (int hh = 0; hh < G; ++hh) {
        const float lw = warp_sum(c == 0 ? l[hh] : 0.f);  // each row once (lane c == 0)
        if (lane == 0) sm.red_l[hh][warp] = lw;
#pragma unroll
        for (int e = 0; e < 8; ++e) sm.so[(hh * slots + slot_i) * d + c * 8 + e] = o[hh][e];
    }
    __syncthreads();
    const int rows_used = min(slots, chunk);
    for (int i = tid; i < G * d; i += ATT_THREADS) {
        const int hh = i / d, dim = i - hh * d;
        float acc = 0.f;
        for (int k2 = 0; k2 < rows_used; ++k2) acc += sm.so[(hh * slots + k2) * d + dim];
        part_o[((size_t)(g * G + hh) * splits + s) * d + dim] = acc;
    }
    if (tid < G) {
        float mt = -INFINITY, lt = 0.f;
        for (int w = 0; w < ATT_THREADS / 32; ++w) {
            mt = fmaxf(mt, sm.red_m[tid][w]);
            lt += sm.red_l[tid][w];
        }
        const size_t pidx = (size_t)(g * G + tid) * splits + s;
        part_ml[2 * pidx] = mt;
        part_ml[2 * pidx + 1] = lt;
    }
    __syncthreads();  // the shared arrays are reused by the block's next split
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS, ATT_SHARE_MIN_BLOCKS)
attn_share(const half* __restrict__ q, const half* __restrict__ k_new, const half* __restrict__ v_new,
           half* __restrict__ cache_k, half* __restrict__ cache_v, const int* __restrict__ pos,
           const int* __restrict__ slot, const float* __restrict__ inv_freq, float* __restrict__ part_o,
           float* __restrict__ part_ml, int n_heads, int n_kv, int d, int max_ctx, float scale, int splits,
           int resident) {
    __shared__ ShareSmem sm;
    pdl_early();
#if !ATT_PREFETCH
    pdl_wait();
#endif
    const int p0 = pos[0], at = slot[0], chunk = att_chunk(d, p0 + 1, n_heads, resident);
    for (int s = blockIdx.y; s < splits; s += gridDim.y) {
        if (s * chunk > p0) break;  // past the context
        share_split<ATT_PREFETCH != 0>(sm, blockIdx.x, s, q, k_new, v_new, cache_k, cache_v, p0, at, inv_freq,
                                       part_o, part_ml, d, max_ctx, scale, splits, chunk);
    }
}
#endif

// out[h] = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M = max_s m_s. Grid n_heads, block d.
// Only the splits the context reaches are read (n = pos[0] + 1 from device memory, as attn_split).
// Each thread loads one split's (m, l) into shared memory, so all of them arrive in one trip (a
// loop over the splits made a trip per split: latency grew with the context); the weighted sum
// then reads the splits' outputs with up to 8 loads in flight.
#ifndef COMBINE_TRIGGER_START  // 1: o_proj launches (and loads its weights) as the merge starts
#define COMBINE_TRIGGER_START 0
#endif
extern "C" __global__ void attn_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                        half* __restrict__ out, int splits, int d, const int* __restrict__ pos,
                                        int resident) {
    __shared__ float sw[MAX_SPLITS], sl[MAX_SPLITS];
    pdl_early();
#if COMBINE_TRIGGER_START
    pdl_launch_dependents();
#endif
#if HOIST_LOADS && ATT_PREFETCH
    const int p0 = ld_early(pos);  // the token's position: written before the kernel before this one started
    pdl_wait();
#else
    pdl_wait();
    const int p0 = pos[0];
#endif
    const int h = blockIdx.x, i = threadIdx.x;
    const int chunk = att_chunk(d, p0 + 1, gridDim.x, resident), used = splits_used(p0 + 1, chunk, splits);
    merge_head<false>([](const float* x) { return *x; }, part_o, part_ml, out, h, splits, d, used, i, sw, sl);
}

// o_proj with the attention merge in its prologue (the attn_merge_in_oproj switch): resid += Wo a, where
// a = attn_combine's output, computed by every block into shared memory (cols halves, dynamic) from the
// splits' partials once attn_split has finished, so the merge is no launch of its own (16 a 1b token).
// The weight rows are loaded before the wait as in gemv_residual. Each thread merges 4 dims of a head
// at a time with attn_combine's arithmetic in its order (the same fp16 values: same tokens); block 0
// also stores a, as attn_combine does, for whatever reads it after (the kernel checks).
// Measured slower (H200, one token as a graph, reports/bench/pdl_variants_merge_pos*_h200_3996db1.md):
// 8b 4222.7 against 4188.4 µs at 96 (A/A 6.5 apart), 4564.0 against 4311.7 at 512; 1b 974.6 against
// 948.0 at 512: every block merges every head after the wait, where attn_combine did it once.
#ifndef MERGE_MIN_BLOCKS  // gemv_residual_merge: 4 blocks an SM (64 registers), gemv_residual's occupancy
#define MERGE_MIN_BLOCKS 4
#endif
extern "C" __global__ void __launch_bounds__(256, MERGE_MIN_BLOCKS) gemv_residual_merge(const half* __restrict__ W,
                                                const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                half* __restrict__ attn, float* __restrict__ resid, int rows,
                                                int cols, int d, int splits, const int* __restrict__ pos,
                                                int resident) {
    extern __shared__ uint4 xs[];  // cols / 8 chunks of a
    pdl_early();
    int row;
    RowHead<PRE_RESID> r;
    const half* w = warp_row(r, W, rows, cols, row);
    pdl_wait();
    const int n_heads = cols / d;
    const int chunk = att_chunk(d, pos[0] + 1, n_heads, resident), used = splits_used(pos[0] + 1, chunk, splits);
    // 4 dims a thread at a time (8 spilled the row heads at 4 blocks an SM)
    for (int c = threadIdx.x; c < (cols >> 2); c += blockDim.x) {
        const int h = (c << 2) / d, e0 = (c << 2) % d;
        const float* ml = part_ml + 2 * (size_t)h * splits;
        float M = -INFINITY;
        for (int s = 0; s < used; ++s) M = fmaxf(M, ml[2 * s]);
        float num[4] = {0.f, 0.f, 0.f, 0.f}, den = 0.f;
    #pragma unroll 1  // one split's loads live at a time: the row heads keep their registers
        for (int s = 0; s < used; ++s) {
            const float m = ml[2 * s], wt = m == -INFINITY ? 0.f : __expf(m - M);
            const float4 a = *reinterpret_cast<const float4*>(part_o + ((size_t)h * splits + s) * d + e0);
            num[0] += wt * a.x; num[1] += wt * a.y; num[2] += wt * a.z; num[3] += wt * a.w;
            den += wt * ml[2 * s + 1];
        }
        uint2 v;
        half* vh = reinterpret_cast<half*>(&v);
    #pragma unroll
        for (int e = 0; e < 4; ++e) vh[e] = __float2half(num[e] / den);
        reinterpret_cast<uint2*>(xs)[c] = v;
        if (blockIdx.x == 0) reinterpret_cast<uint2*>(attn)[c] = v;
    }
    __syncthreads();
    if (row >= rows) return;
    add_row_product(r, w, SharedX{xs}, resid, row, cols);
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
    pdl_early();
    pdl_wait();
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) better(best, bi, __half2float(x[i]), i);
    block_argmax(best, bi);
    if (threadIdx.x == 0) out[0] = bi;
}

extern "C" __global__ void argmax_partial(const half* __restrict__ x, int n, float* __restrict__ pv,
                                          int* __restrict__ pi) {
    pdl_early();
    pdl_wait();
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        better(best, bi, __half2float(x[i]), i);
    block_argmax(best, bi);
    if (threadIdx.x == 0) { pv[blockIdx.x] = best; pi[blockIdx.x] = bi; }
}

extern "C" __global__ void argmax_final(const float* __restrict__ pv, const int* __restrict__ pi, int m,
                                        long long* __restrict__ out) {
    pdl_early();
    pdl_wait();
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < m; j += blockDim.x) better(best, bi, pv[j], pi[j]);
    block_argmax(best, bi);
    if (threadIdx.x == 0) out[0] = bi;
}

// sm_config_reset: every SM given blocks that need CONFIGURE_SMEM bytes of shared memory (two an SM, launched
// with our kernels' carveout preference), so that each SM takes the shared-memory configuration our kernels
// prefer, whatever kernel of another library ran on it last. On the H100 (drift_which_fills_h100_b5e2899) CuPy's
// fills between our tokens slow every later token of the process by 1.5%; the guess that the SMs' configuration
// is why was wrong (drift_carveout_*_h100_0aa491b: a fill of ours preferring our carveout steps the token too,
// and this kernel does not set it back), so the switch stays out of optimized. Its dependents start after its
// blocks have taken the memory.
extern "C" __global__ void configure_sms(int* __restrict__ sink) {
    extern __shared__ int held[];
    pdl_wait();
    held[threadIdx.x] = threadIdx.x;
    __syncthreads();
    if (held[(threadIdx.x + 1) % blockDim.x] < 0) sink[0] = 1;  // never: the store keeps the shared memory used
    pdl_early();
}

// own_reset: the KV caches emptied at a sequence's start by a kernel of this module, not by CuPy's memset: on the
// H100 any operation from outside the token's module between its launches (CuPy's fills, a fill kernel of another
// module) slowed every later token of the process by 1.5% (drift_carveout_*_h100_0aa491b), why not found. Launched
// without PDL, in a graph of its own (Pipeline.reset), after the previous sequence's last kernel has finished.
extern "C" __global__ void fill_words(unsigned* __restrict__ p, unsigned v, long long n) {
    pdl_wait();
    pdl_early();  // as every kernel here (the token's first kernel waits for it anyway)
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) p[i] = v;
}

// A calibrated busy wait on the device (sensitivity checks): spins on the global ns timer.
extern "C" __global__ void spin_ns(unsigned long long ns) {
    pdl_early();
    pdl_wait();
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}

// run_ahead: the token feeds the next one on the device (its greedy pick becomes the next input,
// the position and KV slot move on by one, the pick is kept in hist[pos]), so the host can queue
// decode tokens without copying inputs in or waiting for each pick.
extern "C" __global__ void advance(const long long* __restrict__ next, int* __restrict__ tok,
                                   int* __restrict__ pos, int* __restrict__ slot,
                                   long long* __restrict__ hist, int max_hist) {
    pdl_early();
    pdl_wait();
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        const int p = pos[0];
        const long long t = next[0];
        if (p >= 0 && p < max_hist) hist[p] = t;
        tok[0] = (int)t;
        pos[0] = p + 1;
        slot[0] = slot[0] + 1;
    }
}

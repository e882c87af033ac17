// A whole decode token as ONE persistent launch: the probe of bench/persistent_token.py (issue 12).
// bench/persistent_chain.py measured the projections alone: with the growing-counter barrier
// (chain.cu's BARRIER_FLAGS=2, 1.77 µs a boundary on the H200) a grid-wide barrier costs less than a
// launch, so this asks what the whole token gains. Appended to decode.cu (the row code, RoPE,
// attn_share's share_split, built with ATT_SHARE_KV and ATT_FILL=4) and chain.cu (the barriers).
// Every phase does what decode.cu's kernels do, in their arithmetic order, so the token's logits are
// OwnForward's with the same attn_share build (bench/persistent_token.py compares them):
//   embed | per layer: RMSNorm + QKV | attention splits | merge | o_proj + residual |
//   RMSNorm + gate/up/SwiGLU | down + residual | final RMSNorm + LM head | argmax per block | argmax
// with a grid barrier between phases (6 a layer). The RMSNorm has no phase of its own: every block
// computes it from the residual (8 KB for the 1b) into shared memory, in rmsnorm's order, before its
// rows. The warps' first rows of the next projection are loaded before each barrier, as chain does.
// Data written in this launch by other blocks (x, q, k, v, attn, ff, logits, partials) is read through
// L2 (__ldcg, or plain loads after the barrier's acquire), never through the non-coherent path.

struct TokenLayer {  // 11 pointers, 88 bytes (bench/persistent_token.py's LAYER_DTYPE)
    const half* wq; const half* wk; const half* wv; const half* wo; const half* wg; const half* wu;
    const half* wd; const half* attn_norm; const half* ffn_norm; half* cache_k; half* cache_v;
};

struct TokenArgs {  // pointers, then ints, then floats (bench/persistent_token.py's ARGS_DTYPE)
    const TokenLayer* layers; const half* embed; const half* lm_head; const half* final_norm;
    const float* inv_freq; const int* tok; const int* pos; const int* slot;
    float* x; half* q; half* k; half* v; half* attn; half* ff; half* logits;
    float* part_o; float* part_ml; float* arg_v; int* arg_i; long long* next_id; unsigned long long* stamps;
    int n_layers, hidden, kv_dim, ffn, vocab, n_heads, n_kv, d, max_ctx, splits, per_kv, pad;
    float eps, scale, lm_scale, pad2;
};

#define TOKEN_THREADS 256
#define TOKEN_WARPS (TOKEN_THREADS / WARP)

// The block's copy of RMSNorm(x) * gain in fp16 (rmsnorm's output), in shared memory.
__device__ __forceinline__ void stage_norm(half* hs, const float* x, const half* __restrict__ gain, int n, float eps,
                                           float* part) {
    const float inv = rms_scale([&](int i) { return __ldcg(x + i); }, n, eps, part);  // TOKEN_THREADS is 256
    for (int i = threadIdx.x; i < n; i += TOKEN_THREADS) hs[i] = __float2half(__ldcg(x + i) * inv * __half2float(gain[i]));
    __syncthreads();
}

// The block's copy of an fp16 vector another block wrote (n halves, n % 8 == 0).
__device__ __forceinline__ void stage_vector(uint4* xs, const half* v, int n) {
    const uint4* v4 = reinterpret_cast<const uint4*>(v);
    for (int c = threadIdx.x; c < (n >> 3); c += TOKEN_THREADS) xs[c] = __ldcg(v4 + c);
    __syncthreads();
}

// TOKEN_AHEAD=1: a warp loads the head of its next row of the phase before it reduces the current one,
// twice the bytes in flight a warp (chain.cu's CHAIN_AHEAD: the projections alone went from 69% to 89%
// of the copy bandwidth on the 8b, bench/persistent_chain_h200_0f2153d). 0: one row at a time.
#ifndef TOKEN_AHEAD
#define TOKEN_AHEAD 0
#endif

// The grid's warps over rows [0, rows), row += warps: ``load(head, row)`` loads a row's head (the warp's
// first before the barrier, by the caller), ``dot(head, row)`` finishes the row from it. One loop for
// every projection of the token, so TOKEN_AHEAD's order is written once.
template <class Head, class Load, class Dot>
__device__ __forceinline__ void warp_rows(Head& r, int rows, Load load, Dot dot) {
    const int warps = gridDim.x * TOKEN_WARPS, warp = blockIdx.x * TOKEN_WARPS + threadIdx.x / WARP;
    for (int row = warp; row < rows; row += warps) {
#if TOKEN_AHEAD
        Head n;
        if (row + warps < rows) load(n, row + warps);
#else
        if (row != warp) load(r, row);
#endif
        dot(r, row);
#if TOKEN_AHEAD
        r = n;
#endif
    }
}

// Rows [0, rows) of W, y[row] = fp16(W x * scale) (``resid``: resid[row] += fp16(W x) instead).
template <int D>
__device__ __forceinline__ void project(RowHead<D>& r, const half* __restrict__ W, const uint4* xs, int rows,
                                        int cols, half* y, float* resid, float scale) {
    const SharedX x{xs};
    warp_rows(r, rows, [&](RowHead<D>& h, int row) { row_load(h, W + (size_t)row * cols, cols); },
              [&](RowHead<D>& h, int row) {
                  const float s = row_dot(h, W + (size_t)row * cols, x, cols);
                  if ((threadIdx.x & 31) == 0) {
                      if (resid) __stcg(resid + row, __ldcg(resid + row) + __half2float(__float2half(s)));
                      else y[row] = __float2half(s * scale);
                  }
              });
}

// A gate row's head and its up row's, loaded together (the SwiGLU phase's rows).
struct GateUp {
    RowHead<4> g, u;
};

// The head of the warp's first row of W (rows x cols), before the barrier that precedes its phase.
template <int D>
__device__ __forceinline__ void first_row(RowHead<D>& r, const half* __restrict__ W, int rows, int cols) {
    const int warp = blockIdx.x * TOKEN_WARPS + threadIdx.x / WARP;
    if (warp < rows) row_load(r, W + (size_t)warp * cols, cols);
}

// Row ``row`` of the fused QKV (gemv_qkv's rows: wq's, then wk's, then wv's): its weights and output.
__device__ __forceinline__ const half* qkv_row(const TokenArgs& A, const TokenLayer& L, int row, half*& y) {
    const int H = A.hidden, KV = A.kv_dim;
    if (row < H) { y = A.q + row; return L.wq + (size_t)row * H; }
    if (row < H + KV) { y = A.k + (row - H); return L.wk + (size_t)(row - H) * H; }
    y = A.v + (row - H - KV);
    return L.wv + (size_t)(row - H - KV) * H;
}

template <int D>
__device__ __forceinline__ void first_qkv_row(RowHead<D>& r, const TokenArgs& A, const TokenLayer& L) {
    const int warp = blockIdx.x * TOKEN_WARPS + threadIdx.x / WARP;
    half* y;
    if (warp < A.hidden + 2 * A.kv_dim) row_load(r, qkv_row(A, L, warp, y), A.hidden);
}

// TOKEN_STAMPS=1: where the launch's time goes, phase by phase (bench/persistent_token.py's phase table).
// Thread 0 of each block writes the global timer (ns, common to all SMs) into
// stamps[(slot * gridDim.x + block) * 2 + kind]: slot g < phases - 1 is barrier g, kind 0 when the
// block's warps were all done with the phase, kind 1 when the block left the barrier; slot phases - 1
// holds the block's end (0) and start (1). 0 writes nothing (the stamps pointer may be null).
#ifndef TOKEN_STAMPS
#define TOKEN_STAMPS 0
#endif
__device__ __forceinline__ void stamp(const TokenArgs& A, int slot, int kind) {
#if TOKEN_STAMPS
    if (kind == 0) __syncthreads();  // every warp of the block done, not just warp 0
    if (threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        A.stamps[((size_t)slot * gridDim.x + blockIdx.x) * 2 + kind] = t;
    }
#endif
}

// The phases a launch passes through: embed, 6 a layer, the LM head, the argmax's two (bench/persistent_token.py).
__device__ __forceinline__ int token_phases(int n_layers) { return 1 + 6 * n_layers + 3; }

// chain.cu's phase_barrier with the block's stamps on either side of it (TOKEN_STAMPS).
__device__ __forceinline__ void token_barrier(const TokenArgs& A, unsigned* bar, unsigned& gen,
                                              unsigned long long base, long long spin_limit) {
    stamp(A, gen, 0);
    phase_barrier(bar, gen, base, spin_limit);
    stamp(A, gen - 1, 1);
}

// TOKEN_MIN_BLOCKS: blocks an SM (__launch_bounds__). 1: 224 registers (228 with TOKEN_AHEAD), no spills
// (ptxas, sm_90, ATT_SHARE_KV=4); 2: 128 registers with spills (192 bytes stored, 180 with TOKEN_AHEAD;
// 216 and 488 before warp_rows, whose loads and their order are the same). Measured on the H200 before
// warp_rows (bench/persistent_token_h200_911be93.md): 1 block an SM with TOKEN_AHEAD is the fastest, still 37%
// slower than one launch a kernel; the phase stamps put the loss in the attention phase (a few blocks
// work, the rest wait) and in projections that stream at 8 warps an SM, not in the barriers.
#ifndef TOKEN_MIN_BLOCKS
#define TOKEN_MIN_BLOCKS 1
#endif
extern "C" __global__ void __launch_bounds__(TOKEN_THREADS, TOKEN_MIN_BLOCKS)
token_persistent(const TokenArgs* __restrict__ args, unsigned* bar, long long spin_limit) {
    const TokenArgs& A = *args;  // read-only for the launch: the host writes it once
    extern __shared__ uint4 smem[];  // each phase's staging, or attention's ShareSmem
    __shared__ float part[33];
    half* hs = reinterpret_cast<half*>(smem);
    const int tid = threadIdx.x, lane = tid & 31;
    const int H = A.hidden, KV = A.kv_dim, F = A.ffn, d = A.d;
    unsigned gen = 0;
    const unsigned long long base = grow_base(bar, token_phases(A.n_layers));
    stamp(A, token_phases(A.n_layers) - 1, 1);
    RowHead<PRE_GEMV> r;
    GateUp gu;
    // embed
    const int tok = A.tok[0], p0 = A.pos[0], at = A.slot[0];
    for (int i = blockIdx.x * TOKEN_THREADS + tid; i < H; i += gridDim.x * TOKEN_THREADS)
        __stcg(A.x + i, __half2float(A.embed[(size_t)tok * H + i]));
    first_qkv_row(r, A, A.layers[0]);
    token_barrier(A, bar, gen, base, spin_limit);
    const int chunk = att_chunk(d, p0 + 1, A.n_heads, A.per_kv), used = (p0 + chunk) / chunk;
    for (int li = 0; li < A.n_layers; ++li) {
        const TokenLayer& L = A.layers[li];
        // RMSNorm + QKV: rows [0, H) of wq, then wk, then wv (gemv_qkv's rows)
        stage_norm(hs, A.x, L.attn_norm, H, A.eps, part);
        {
            const SharedX x{smem};
            half* unused;
            warp_rows(r, H + 2 * KV, [&](RowHead<PRE_GEMV>& h, int row) { row_load(h, qkv_row(A, L, row, unused), H); },
                      [&](RowHead<PRE_GEMV>& h, int row) {
                          half* y;
                          const float s = row_dot(h, qkv_row(A, L, row, y), x, H);
                          if (lane == 0) *y = __float2half(s);
                      });
        }
        token_barrier(A, bar, gen, base, spin_limit);
        // attention: every (KV head, split) the context reaches, as attn_share's blocks
        for (int item = blockIdx.x; item < A.n_kv * used; item += gridDim.x) {
            share_split<false>(*reinterpret_cast<ShareSmem*>(smem), item / used, item % used, A.q, A.k, A.v,
                               L.cache_k, L.cache_v, p0, at, A.inv_freq, A.part_o, A.part_ml, d, A.max_ctx,
                               A.scale, A.splits, chunk);
        }
        token_barrier(A, bar, gen, base, spin_limit);
        // the merge: attn_combine's arithmetic in its order, a thread a (head, dim)
        for (int e = blockIdx.x * TOKEN_THREADS + tid; e < A.n_heads * d; e += gridDim.x * TOKEN_THREADS) {
            const int h = e / d, i = e - h * d;
            const float* ml = A.part_ml + 2 * (size_t)h * A.splits;
            float M = -INFINITY;
            for (int s = 0; s < used; ++s) M = fmaxf(M, __ldcg(ml + 2 * s));
            float num = 0.f, den = 0.f;
            for (int s = 0; s < used; ++s) {
                const float m = __ldcg(ml + 2 * s), w = m == -INFINITY ? 0.f : __expf(m - M);
                num += w * __ldcg(A.part_o + ((size_t)h * A.splits + s) * d + i);
                den += w * __ldcg(ml + 2 * s + 1);
            }
            A.attn[h * d + i] = __float2half(num / den);
        }
        first_row(r, L.wo, H, H);
        token_barrier(A, bar, gen, base, spin_limit);
        // o_proj + residual
        stage_vector(smem, A.attn, H);
        project(r, L.wo, smem, H, H, nullptr, A.x, 1.f);
        first_row(gu.g, L.wg, F, H);
        first_row(gu.u, L.wu, F, H);
        token_barrier(A, bar, gen, base, spin_limit);
        // RMSNorm + gate/up + SwiGLU
        stage_norm(hs, A.x, L.ffn_norm, H, A.eps, part);
        warp_rows(gu, F, [&](GateUp& h, int row) {
                      row_load(h.g, L.wg + (size_t)row * H, H);
                      row_load(h.u, L.wu + (size_t)row * H, H);
                  },
                  [&](GateUp& h, int row) {
                      swiglu_rows(h.g, h.u, L.wg + (size_t)row * H, L.wu + (size_t)row * H, SharedX{smem}, H, A.ff + row);
                  });
        first_row(r, L.wd, H, F);
        token_barrier(A, bar, gen, base, spin_limit);
        // down + residual
        stage_vector(smem, A.ff, F);
        project(r, L.wd, smem, H, F, nullptr, A.x, 1.f);
        if (li + 1 < A.n_layers) first_qkv_row(r, A, A.layers[li + 1]);
        else first_row(r, A.lm_head, A.vocab, H);
        token_barrier(A, bar, gen, base, spin_limit);
    }
    // final RMSNorm + LM head (gemv with lm_scale)
    stage_norm(hs, A.x, A.final_norm, H, A.eps, part);
    project(r, A.lm_head, smem, A.vocab, H, A.logits, nullptr, A.lm_scale);
    token_barrier(A, bar, gen, base, spin_limit);
    // argmax: the block's best (value, lowest index), then block 0 merges the blocks'
    {
        float bv = -INFINITY;
        int bi = 0x7fffffff;
        for (int i = blockIdx.x * TOKEN_THREADS + tid; i < A.vocab; i += gridDim.x * TOKEN_THREADS) {
            const float v = __half2float(__ldcg(A.logits + i));
            if (v > bv) { bv = v; bi = i; }  // i grows: the first of equal values stays
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL, bv, o);
            const int oi = __shfl_xor_sync(FULL, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        float* wv = reinterpret_cast<float*>(smem);
        int* wi = reinterpret_cast<int*>(wv + TOKEN_WARPS);
        if (lane == 0) { wv[tid / WARP] = bv; wi[tid / WARP] = bi; }
        __syncthreads();
        if (tid == 0) {
            for (int w = 1; w < TOKEN_WARPS; ++w)
                if (wv[w] > bv || (wv[w] == bv && wi[w] < bi)) { bv = wv[w]; bi = wi[w]; }
            __stcg(A.arg_v + blockIdx.x, bv);
            __stcg(A.arg_i + blockIdx.x, bi);
        }
    }
    token_barrier(A, bar, gen, base, spin_limit);
    if (blockIdx.x == 0 && tid == 0) {
        float bv = -INFINITY;
        int bi = 0x7fffffff;
        for (int b = 0; b < gridDim.x; ++b) {
            const float v = __ldcg(A.arg_v + b);
            const int i = __ldcg(A.arg_i + b);
            if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
        }
        A.next_id[0] = bi;
    }
    stamp(A, token_phases(A.n_layers) - 1, 0);
}

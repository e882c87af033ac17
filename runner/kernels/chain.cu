// A token's projections streamed by ONE launch, phases separated by a grid-wide barrier: the probe of
// bench/persistent_chain.py (issue 12), which asks what a persistent kernel could gain over one launch
// per projection before anyone writes the whole token that way. Appended to decode.cu's source
// (WARP, RowHead, row_load, row_dot come from there), so each row is the same code as decode.cu's gemv.

struct ChainPhase {  // y[0:rows] = W x, W rows x cols row-major; 32 bytes (bench/persistent_chain.py)
    const half* W;
    const half* x;
    half* y;
    int rows;
    int cols;
};

// x was written by other blocks of this same launch: read it through L2 (ld.global.cg), never through
// the non-coherent path that __ldg or a const __restrict__ pointer lets the compiler pick.
struct CoherentX {
    const uint4* p;
    __device__ __forceinline__ uint4 operator()(int i) const { return __ldcg(p + i); }
};

// The same vector staged once per phase in the block's shared memory (CHAIN_X_SMEM=1): every warp of
// the block reads it at shared-memory latency instead of a trip to L2 beside each row's weights.
#ifndef CHAIN_AHEAD
#define CHAIN_AHEAD 0
#endif
#ifndef CHAIN_X_SMEM
#define CHAIN_X_SMEM 1
#endif
// SharedX (x staged in shared memory) is decode.cu's, which this file is compiled after.

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// No block leaves before every block arrived. bar[0] counts arrivals, bar[1] is the generation,
// bar[2] is set when a block gave up waiting after `spin_limit` clocks: a grid larger than the GPU
// holds at once would hang instead; the host reads it and refuses the numbers.
__device__ __forceinline__ void grid_barrier(unsigned* bar, long long spin_limit) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned gen = load_acquire(bar + 1);
        __threadfence();  // this block's writes, before its arrival
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            const long long t0 = clock64();
            while (load_acquire(bar + 1) == gen) {
                if (clock64() - t0 > spin_limit) {
                    atomicExch(bar + 2, 1u);
                    break;
                }
            }
        }
        __threadfence();
    }
    __syncthreads();
}

// BARRIER_FLAGS=0 (grid_barrier above), 1 or 2 (below): how chain_ring's blocks wait for each other.
// BARRIER_FLAGS=1: no counter that every block adds to. Block b stores its generation into its own
// flag (a 128-byte line each: bar + 32 * (b + 1)) and the block's first warp polls every block's flag
// until all reached that generation. `gen` is the caller's count of barriers so far (every block passes
// the same number, so it starts from the block's own flag at launch).
#ifndef BARRIER_FLAGS
#define BARRIER_FLAGS 0
#endif
__device__ __forceinline__ void store_release(unsigned* p, unsigned v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void grid_barrier_flags(unsigned* bar, unsigned gen, long long spin_limit) {
    __syncthreads();
    if (threadIdx.x < WARP) {
        if (threadIdx.x == 0) {
            __threadfence();  // the block's writes (ordered before by __syncthreads) before its flag
            store_release(bar + 32 * (blockIdx.x + 1), gen);
        }
        const long long t0 = clock64();
        for (int b = threadIdx.x; b < gridDim.x; b += WARP) {
            while (static_cast<int>(load_acquire(bar + 32 * (b + 1)) - gen) < 0) {
                if (clock64() - t0 > spin_limit) {
                    atomicExch(bar + 2, 1u);
                    break;
                }
            }
        }
        __syncwarp();
        __threadfence();
    }
    __syncthreads();
}
// BARRIER_FLAGS=2: one 64-bit counter that only grows (bar + 4, 8-byte aligned). A block adds 1 without
// waiting for a reply (red.release) and polls until the counter reaches its target: the arrival is one
// way, not an atomic's round trip plus a second write by the last block. A launch adds
// (n_phases - 1) * gridDim.x; when a block starts, the counter holds every earlier launch's arrivals
// plus at most gridDim.x - 1 of this one's first barrier, so rounding down to a whole launch gives the base.
// Measured (H200, reports/bench/persistent_chain_*_h200_{0f2153d,40a1fc7}.md): 1.76 µs a boundary on the
// 1b against 2.77 for grid_barrier; chain_ring on it streams the 1b's projections at 78% of the copy
// bandwidth (750-754 µs) against 74-75% for one launch a projection, the 8b's at 95-96% against 92-93%.
__device__ __forceinline__ unsigned long long load_acquire64(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void grid_barrier_grow(unsigned* bar, unsigned long long target, long long spin_limit) {
    unsigned long long* count = reinterpret_cast<unsigned long long*>(bar + 4);
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(count) : "memory");
        const long long t0 = clock64();
        while (load_acquire64(count) < target) {
            if (clock64() - t0 > spin_limit) {
                atomicExch(bar + 2, 1u);
                break;
            }
        }
    }
    __syncthreads();
}
__device__ __forceinline__ unsigned long long grow_base(unsigned* bar, int n_phases) {
    const unsigned long long per_launch = (unsigned long long)(n_phases - 1) * gridDim.x;
    const unsigned long long now = load_acquire64(reinterpret_cast<unsigned long long*>(bar + 4));
    return per_launch ? now / per_launch * per_launch : 0;
}
// `gen`: barriers passed so far (1, 2, ... after each); `base`: the growing counter's base (BARRIER_FLAGS=2)
__device__ __forceinline__ void phase_barrier(unsigned* bar, unsigned& gen, unsigned long long base,
                                              long long spin_limit) {
#if BARRIER_FLAGS == 1
    grid_barrier_flags(bar, ++gen, spin_limit);
#elif BARRIER_FLAGS == 2
    grid_barrier_grow(bar, base + (unsigned long long)(++gen) * gridDim.x, spin_limit);
#else
    grid_barrier(bar, spin_limit);
#endif
}

// Warp w takes rows w, w + warps, ... of each phase. Before the barrier it loads the head of its first
// row of the next phase (weights only, which nothing writes): what PDL's early loads do between kernels.
// barriers = 0 leaves the phases racing: a bandwidth ceiling, not a result.
#ifndef CHAIN_MIN_BLOCKS  // blocks an SM must hold (__launch_bounds__): 0 leaves it to ptxas (76 registers: 3 an SM; 4 spills)
#define CHAIN_MIN_BLOCKS 0
#endif
#if CHAIN_MIN_BLOCKS
#define CHAIN_BOUNDS __launch_bounds__(256, CHAIN_MIN_BLOCKS)
#else
#define CHAIN_BOUNDS
#endif
extern "C" __global__ void CHAIN_BOUNDS chain(const ChainPhase* __restrict__ phases, int n_phases, unsigned* bar,
                                 int barriers, long long spin_limit) {
    const int warps = gridDim.x * (blockDim.x / WARP);
    const int warp = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const int lane = threadIdx.x & (WARP - 1);
    RowHead<PRE_GEMV> r;
    // a phase's fields are read where they are used (L1-cached), not held: registers go to the row heads
    if (warp < phases[0].rows) row_load(r, phases[0].W + (size_t)warp * phases[0].cols, phases[0].cols);
#if CHAIN_X_SMEM
    extern __shared__ uint4 xs[];  // the phase's x: cols / 8 chunks (the launch sizes it for the widest)
#endif
    unsigned gen = BARRIER_FLAGS == 1 ? load_acquire(bar + 32 * (blockIdx.x + 1)) : 0;
    const unsigned long long base = BARRIER_FLAGS == 2 ? grow_base(bar, n_phases) : 0;
    for (int i = 0;; ++i) {
        const ChainPhase* ph = phases + i;
        const int rows = ph->rows, cols = ph->cols;
        const uint4* x4 = reinterpret_cast<const uint4*>(ph->x);
#if CHAIN_X_SMEM
        __syncthreads();  // every warp is done with the last phase's x
        for (int c = threadIdx.x; c < (cols >> 3); c += blockDim.x) xs[c] = __ldcg(x4 + c);
        __syncthreads();
        const SharedX x{xs};
#else
        const CoherentX x{x4};
#endif
#if CHAIN_AHEAD  // the warp's next row loaded while this one is reduced: twice the bytes in flight a warp
        for (int row = warp; row < rows; row += warps) {
            const half* w = ph->W + (size_t)row * cols;
            RowHead<PRE_GEMV> n;
            if (row + warps < rows) row_load(n, w + (size_t)warps * cols, cols);
            const float s = row_dot(r, w, x, cols);
            if (lane == 0) ph->y[row] = __float2half(s);
            r = n;
        }
#else
        for (int row = warp; row < rows; row += warps) {
            const half* w = ph->W + (size_t)row * cols;
            if (row != warp) row_load(r, w, cols);
            const float s = row_dot(r, w, x, cols);
            if (lane == 0) ph->y[row] = __float2half(s);
        }
#endif
        if (i + 1 == n_phases) break;
        const ChainPhase* next = ph + 1;
        if (warp < next->rows) row_load(r, next->W + (size_t)warp * next->cols, next->cols);
        if (barriers) phase_barrier(bar, gen, base, spin_limit);
    }
}

// ---- chain_ring: the weights streamed ahead of the dependencies --------------------------------------
// Each warp walks its work in a fixed order (phase by phase, its rows, each row in chunks of 2048
// columns: 8 16-byte loads a lane) and copies the chunks it will need into its own ring of RING slots
// in shared memory (cp.async), RING chunks ahead of the one it reduces, across the phase boundaries:
// weights depend on nothing, so the copies for the next phase run while the grid waits at the barrier
// and while x is staged. A lane reads back only the 16-byte pieces it copied itself, so waiting for its
// own copies (cp.async.wait_group) is all the ordering it needs. The sums run in decode.cu's gemv order.
#ifndef RING
#define RING 4
#endif
#define RING_COLS 2048  // columns a chunk: 32 lanes x 8 x 8 halves
#define RING_CHUNK 256  // 16-byte pieces a chunk

// cp_async16: decode.cu's
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_ring() { asm volatile("cp.async.wait_group %0;" ::"n"(RING - 1) : "memory"); }

struct RingCursor {  // the next chunk a warp copies: phase, row, chunk (phase == n_phases: none left)
    int phase, row, chunk;
    __device__ __forceinline__ void seek(const ChainPhase* ph, int n, int warp) {
        while (phase < n && warp >= ph[phase].rows) ++phase;
        row = warp;
        chunk = 0;
    }
    __device__ __forceinline__ void next(const ChainPhase* ph, int n, int warp, int warps) {
        if (++chunk < (ph[phase].cols + RING_COLS - 1) / RING_COLS) return;
        chunk = 0;
        row += warps;
        if (row < ph[phase].rows) return;
        ++phase;
        seek(ph, n, warp);
    }
};

extern "C" __global__ void __launch_bounds__(256) chain_ring(const ChainPhase* __restrict__ phases, int n_phases,
                                                             unsigned* bar, int barriers, long long spin_limit,
                                                             int x_chunks) {
    const int warps = gridDim.x * (blockDim.x / WARP);
    const int warp = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const int lane = threadIdx.x & (WARP - 1);
    extern __shared__ uint4 smem[];
    uint4* xs = smem;  // the phase's x (x_chunks pieces: the widest phase)
    uint4* ring = smem + x_chunks + (threadIdx.x / WARP) * RING * RING_CHUNK;  // this warp's slots
    RingCursor cur{0, 0, 0};
    cur.seek(phases, n_phases, warp);
    unsigned issued = 0, consumed = 0;
    auto issue = [&]() {  // one chunk's copies, one commit group (empty once the work is done)
        if (cur.phase < n_phases) {
            const ChainPhase* p = phases + cur.phase;
            const uint4* w4 = reinterpret_cast<const uint4*>(p->W + (size_t)cur.row * p->cols);
            const int n4 = p->cols >> 3;
            uint4* slot = ring + (issued % RING) * RING_CHUNK;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                const int i = cur.chunk * RING_CHUNK + lane + k * WARP;
                if (i < n4) cp_async16(slot + lane + k * WARP, w4 + i);
            }
            cur.next(phases, n_phases, warp, warps);
        }
        cp_async_commit();
        ++issued;
    };
    for (int k = 0; k < RING; ++k) issue();
    unsigned gen = BARRIER_FLAGS == 1 ? load_acquire(bar + 32 * (blockIdx.x + 1)) : 0;
    const unsigned long long base = BARRIER_FLAGS == 2 ? grow_base(bar, n_phases) : 0;
    for (int i = 0;; ++i) {
        const ChainPhase* ph = phases + i;
        const int rows = ph->rows, cols = ph->cols, n4 = cols >> 3;
        const uint4* x4 = reinterpret_cast<const uint4*>(ph->x);
        __syncthreads();  // every warp is done with the last phase's x
        for (int c = threadIdx.x; c < n4; c += blockDim.x) xs[c] = __ldcg(x4 + c);
        __syncthreads();
        for (int row = warp; row < rows; row += warps) {
            float acc = 0.f;
            for (int c = 0; c * RING_COLS < cols; ++c) {
                cp_async_wait_ring();  // the oldest of the RING chunks in flight has landed
                const uint4* slot = ring + (consumed % RING) * RING_CHUNK;
#pragma unroll
                for (int k = 0; k < 8; ++k) {
                    const int j = c * RING_CHUNK + lane + k * WARP;
                    if (j < n4) acc = dot8(slot[lane + k * WARP], xs[j], acc);
                }
                ++consumed;
                issue();  // the slot just read takes the chunk RING ahead
            }
            acc = warp_sum(acc);
            if (lane == 0) ph->y[row] = __float2half(acc);
        }
        if (i + 1 == n_phases) break;
        if (barriers) phase_barrier(bar, gen, base, spin_limit);
    }
    asm volatile("cp.async.wait_all;" ::: "memory");
}

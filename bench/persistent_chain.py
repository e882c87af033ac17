"""GPU task (issue 12), one device call: what one persistent launch could gain over one launch per
projection, measured on the projections alone before anyone writes a whole token that way.

Per preset (random fp16 weights): a token's projections in order, each reading the vector the one
before it wrote (per layer QKV, o_proj, gate+up, down; then the LM head; no norms, attention or
activation, so the chain holds only the weight bytes and the dependencies between them). The chain
runs as one launch of decode.cu's ``gemv`` per projection (plain, then with programmatic dependent
launch), and as ONE launch of runner/kernels/chain.cu that streams every projection with a grid-wide
barrier between them, each warp loading its next row's weights before the barrier (``chain``), or
copying its chunks of weights into shared memory several chunks ahead of the one it reduces, across
the barriers (``chain_ring``). Every variant is captured as a CUDA graph and replayed back to back:
µs per chain = time of REPLAYS replays / REPLAYS, median over the rounds, in which the variants take
turns in a random order. Weight bytes over that time gives the fraction of the device-copy bandwidth
measured in the same run. Each variant's last output is compared with a float64 chain (each
projection's output rounded to fp16, as the kernels store it) and with the one-launch-a-projection
row. The rows without barriers race (their output is wrong on purpose): the bandwidth this row code
reaches with no dependency at all.
Writes persistent_chain.json/.md under --out; prints the table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pdl_variants import chosen_variants, graph_replay_us, probe_header, probe_parser, run_probe  # noqa: E402
from runner.device import capture_graph  # noqa: E402
from runner.own_kernels import SOURCE, PdlKernel, resident_blocks, x_stage_bytes  # noqa: E402
from runner.presets import Preset, get_preset  # noqa: E402

CHAIN_SOURCE = SOURCE.parent / "chain.cu"
THREADS = 256  # decode.cu's ROWS_PER_BLOCK warps a block, as its gemv is launched
REPLAYS = 20
BLOCKS_MAX = 2048  # chain.cu's barrier words: 32 (a 128-byte line) for each block and one for the counter
SPIN_LIMIT = 2_000_000_000  # clocks a block waits at a barrier before it gives up (about a second)
# ChainPhase in chain.cu: three pointers, two ints
PHASE_DTYPE = np.dtype([("W", np.uint64), ("x", np.uint64), ("y", np.uint64), ("rows", np.int32),
                        ("cols", np.int32)])


@dataclass(frozen=True)
class Phase:
    """y[:rows] = W x[:cols]: ``weight`` names the matrix, ``x`` and ``y`` the buffers."""
    weight: str
    x: str
    y: str
    rows: int
    cols: int


def plan(p: Preset) -> list[Phase]:
    """The token's projections in order. Buffer ``a`` holds the residual-sized vector, ``b`` the QKV
    output (o_proj reads its first ``hidden``: where attention's output would be), ``c`` gate+up (down
    reads its first ``ffn``: where SwiGLU's would be)."""
    h, kv, f = p.hidden, p.kv_dim, p.ffn
    out: list[Phase] = []
    for li in range(p.n_layers):
        out += [Phase(f"qkv{li}", "a", "b", h + 2 * kv, h), Phase(f"o{li}", "b", "a", h, h),
                Phase(f"gate_up{li}", "a", "c", 2 * f, h), Phase(f"down{li}", "c", "a", h, f)]
    return out + [Phase("lm_head", "a", "logits", p.vocab, h)]


def buffer_sizes(p: Preset) -> dict[str, int]:
    return {"a": p.hidden, "b": p.hidden + 2 * p.kv_dim, "c": 2 * p.ffn, "logits": p.vocab}


def plan_bytes(phases: list[Phase]) -> int:
    """Weight bytes the chain reads (fp16)."""
    return sum(2 * ph.rows * ph.cols for ph in phases)


def chain_reference(phases: list[Phase], weights: dict, x0: np.ndarray, xp=np) -> np.ndarray:
    """The chain in float64, each projection's output rounded to fp16 as the kernels store it;
    returns the last output. ``weights``: name -> fp16 matrix of ``xp`` (NumPy or CuPy)."""
    bufs = {"a": xp.asarray(x0, dtype=xp.float16)}
    for ph in phases:
        w = weights[ph.weight].astype(xp.float64)
        y = (w @ bufs[ph.x][: ph.cols].astype(xp.float64)).astype(xp.float16)
        bufs[ph.y] = y if ph.y not in bufs else xp.concatenate([y, bufs[ph.y][ph.rows:]])
    return bufs[phases[-1].y]


RING_COLS = 2048  # chain.cu: columns a chunk of chain_ring's ring


def ring_copy_order(shapes: list[tuple[int, int]], warp: int, warps: int) -> list[tuple[int, int, int]]:
    """(phase, row, chunk) in the order chain_ring's RingCursor copies a warp's chunks (a mirror of its
    seek/next in chain.cu); ``shapes``: (rows, cols) a phase. Must equal ``ring_reduce_order``: a lane
    reads back only what it copied, slot by slot, so the two orders are the whole correctness argument."""
    out: list[tuple[int, int, int]] = []
    n = len(shapes)
    phase, row, chunk = 0, warp, 0

    def seek(ph: int) -> int:
        while ph < n and warp >= shapes[ph][0]:
            ph += 1
        return ph

    phase = seek(phase)
    while phase < n:
        out.append((phase, row, chunk))
        chunk += 1
        if chunk < -(-shapes[phase][1] // RING_COLS):
            continue
        chunk, row = 0, row + warps
        if row < shapes[phase][0]:
            continue
        phase, row = seek(phase + 1), warp
    return out


def ring_reduce_order(shapes: list[tuple[int, int]], warp: int, warps: int) -> list[tuple[int, int, int]]:
    """(phase, row, chunk) in the order chain_ring's loops reduce them for one warp."""
    return [(i, row, c) for i, (rows, cols) in enumerate(shapes) for row in range(warp, rows, warps)
            for c in range(-(-cols // RING_COLS))]


def phase_table(phases: list[Phase], weight_ptr: dict[str, int], buffer_ptr: dict[str, int]) -> np.ndarray:
    """The ChainPhase array chain.cu reads."""
    t = np.zeros(len(phases), PHASE_DTYPE)
    for i, ph in enumerate(phases):
        t[i] = (weight_ptr[ph.weight], buffer_ptr[ph.x], buffer_ptr[ph.y], ph.rows, ph.cols)
    return t


@dataclass(frozen=True)
class Variant:
    """How one row of the table runs the chain: ``kernel`` is decode.cu's ``gemv`` (a launch a
    projection), ``chain`` or ``chain_ring`` (one launch); ``defines`` build chain.cu's knobs; ``ring``
    and ``threads`` size chain_ring's shared memory and blocks (they must match its RING define);
    ``barriers`` 0 lets the phases race; ``empty`` gives every phase no rows (the boundaries alone)."""
    kernel: str
    defines: tuple[str, ...] = ()
    pdl: bool = False
    barriers: int = 1
    ring: int = 4
    threads: int = THREADS
    empty: bool = False


VARIANTS = {
    "one launch a projection": Variant("gemv"),
    "one launch a projection, PDL": Variant("gemv", pdl=True),
    # chain.cu's chain: x staged in shared memory once a phase, 3 blocks an SM (80 registers)
    "one persistent launch, grid barrier": Variant("chain"),
    "one persistent launch, grid barrier (A/A)": Variant("chain"),
    # 25bbe9b's form: every warp reads x from L2 beside each row (49% of copy bandwidth on the 1b)
    "one persistent launch, x read through L2": Variant("chain", ("-DCHAIN_X_SMEM=0",)),
    "one persistent launch, next row loaded ahead": Variant("chain", ("-DCHAIN_AHEAD=1",)),
    "one persistent launch, 4 blocks an SM": Variant("chain", ("-DCHAIN_MIN_BLOCKS=4",)),
    "one persistent launch, no barrier (races: a ceiling)": Variant("chain", barriers=0),
    # chain_ring: each warp copies its chunks of 2048 columns RING ahead into shared memory (cp.async),
    # across the barriers; RING 4 and 6: one block an SM, 2: two
    "ring of 4 chunks a warp": Variant("chain_ring"),
    "ring of 4 chunks a warp (A/A)": Variant("chain_ring"),
    "ring of 2 chunks a warp": Variant("chain_ring", ("-DRING=2",), ring=2),
    "ring of 6 chunks a warp": Variant("chain_ring", ("-DRING=6",), ring=6),
    "ring of 4 chunks a warp, no barrier (races: a ceiling)": Variant("chain_ring", barriers=0),
    # a flag a block instead of one counter (no atomics on one address): BARRIER_FLAGS=1
    "ring of 4, flag barrier": Variant("chain_ring", ("-DBARRIER_FLAGS=1",)),
    "ring of 6, flag barrier": Variant("chain_ring", ("-DBARRIER_FLAGS=1", "-DRING=6"), ring=6),
    # one counter that only grows, added to without awaiting a reply (red.release): BARRIER_FLAGS=2
    "ring of 4, growing counter": Variant("chain_ring", ("-DBARRIER_FLAGS=2",)),
    # a deeper ring a warp with fewer warps a block (the shared memory holds about 200 KB of ring an SM):
    # ring 4 and 6 measured alike, so a ring as deep as the boundary's 2.7 µs of streaming, or deeper
    "ring of 12, 4 warps a block": Variant("chain_ring", ("-DRING=12",), ring=12, threads=128),
    "ring of 24, 2 warps a block": Variant("chain_ring", ("-DRING=24",), ring=24, threads=64),
    "ring of 12, 4 warps a block, growing counter": Variant("chain_ring", ("-DRING=12", "-DBARRIER_FLAGS=2"),
                                                            ring=12, threads=128),
    "ring of 6, growing counter": Variant("chain_ring", ("-DRING=6", "-DBARRIER_FLAGS=2"), ring=6),
    # chain (3 blocks an SM, no ring) on the growing counter: more blocks arrive at each barrier
    "one persistent launch, growing counter": Variant("chain", ("-DBARRIER_FLAGS=2",)),
    "one persistent launch, next row loaded ahead, growing counter": Variant("chain", ("-DCHAIN_AHEAD=1",
                                                                                      "-DBARRIER_FLAGS=2")),
    # every phase without rows: x staged and the barrier passed, nothing read: what the boundaries cost
    "ring of 4, boundaries only (no rows)": Variant("chain_ring", empty=True),
    "ring of 4, flag barrier, boundaries only (no rows)": Variant("chain_ring", ("-DBARRIER_FLAGS=1",), empty=True),
    "ring of 4, growing counter, boundaries only (no rows)": Variant("chain_ring", ("-DBARRIER_FLAGS=2",),
                                                                     empty=True),
}
RING_CHUNK_BYTES = 2 * RING_COLS  # a chunk of chain_ring's ring: RING_COLS halves


def chain_launches(v: Variant, launch, bufs: dict, x0, phases: list, weights: dict, args: tuple, grid: int | None,
                   smem: int) -> None:
    """What a variant's graph holds: x0 copied in, then the phases as GEMV launches or one chain kernel."""
    bufs["a"][:] = x0
    if v.kernel == "gemv":
        for ph in phases:
            launch(((ph.rows * 32 + THREADS - 1) // THREADS,), (THREADS,),
                   (weights[ph.weight], bufs[ph.x], bufs[ph.y], np.int32(ph.rows), np.int32(ph.cols),
                    np.float32(1.0)), shared_mem=x_stage_bytes(v.defines, ph.cols))
    else:
        launch((grid,), (v.threads,), args, shared_mem=smem)


def run_preset(cp, name: str, rounds: int, variants: dict) -> dict:
    p = get_preset(name)
    phases = plan(p)
    rng = cp.random.default_rng(0)
    weights = {}
    for ph in phases:
        if ph.weight not in weights:
            weights[ph.weight] = (rng.standard_normal((ph.rows, ph.cols), dtype=cp.float32)
                                  * ph.cols ** -0.5).astype(cp.float16)
    x0 = rng.standard_normal(p.hidden, dtype=cp.float32).astype(cp.float16)
    ref = chain_reference(phases, weights, x0, cp).astype(cp.float64)
    source = SOURCE.read_text() + CHAIN_SOURCE.read_text()
    stream = cp.cuda.Stream(non_blocking=True)
    x_bytes = 2 * max(ph.cols for ph in phases)  # chain.cu's shared x, sized for the widest phase
    graphs, outputs, owners, grids, bars, smem = {}, {}, [], {}, {}, {}
    for label in variants:
        v = VARIANTS[label]
        # module, buffers and phase table made before the capture (no loads or copies inside it)
        mod = cp.RawModule(code=source, options=("--std=c++17", *v.defines))
        bufs = {k: cp.zeros(n, cp.float16) for k, n in buffer_sizes(p).items()}
        bars[label] = bar = cp.zeros(32 * (BLOCKS_MAX + 1), cp.uint32)  # counter, generation, flag a block
        if v.kernel == "gemv":
            gemv = mod.get_function("gemv")
            launch = PdlKernel(cp, gemv) if v.pdl else gemv
            grids[label] = None
        else:
            launch = mod.get_function(v.kernel)
            ring = v.threads // 32 * v.ring * RING_CHUNK_BYTES if v.kernel == "chain_ring" else 0
            smem[label] = x_bytes + ring
            launch.max_dynamic_shared_size_bytes = smem[label]
            # every block resident at once: the barrier needs it
            grids[label] = resident_blocks(cp, launch, v.threads, smem[label])
            if grids[label] > BLOCKS_MAX:
                raise RuntimeError(f"{label}: {grids[label]} blocks, the barrier words hold {BLOCKS_MAX}")
            t = phase_table(phases, {k: int(w.data.ptr) for k, w in weights.items()},
                            {k: int(b.data.ptr) for k, b in bufs.items()})
            if v.empty:
                t["rows"] = 0
            table = cp.asarray(t.view(np.uint8))
            owners.append(table)
        owners.append((mod, bufs))
        cp.cuda.Device().synchronize()
        args = ()
        if v.kernel != "gemv":
            args = (table, np.int32(len(phases)), bar, np.int32(v.barriers), np.int64(SPIN_LIMIT))
            if v.kernel == "chain_ring":
                args += (np.int32(x_bytes // 16),)
        with stream:
            graphs[label] = capture_graph(stream, partial(chain_launches, v, launch, bufs, x0, phases, weights, args,
                                                          grids[label], smem.get(label, 0)))
            graphs[label].launch(stream)
        stream.synchronize()
        outputs[label] = bufs[phases[-1].y].astype(cp.float64)
    # a variant whose first run gave up at a barrier is not timed (each replay would wait seconds)
    timed = [k for k in variants if not int(bars[k][2].get())]
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = np.random.default_rng(3)
    for _ in range(rounds):
        for label in order.permutation(timed):
            times[label].append(graph_replay_us(cp, graphs[label], stream, REPLAYS, warmup=3))
    first = outputs[next(iter(variants))]
    nbytes = plan_bytes(phases)
    out = {"weights_mb": nbytes / 1e6, "phases": len(phases), "variants": {}}
    for label in variants:
        t = times[label] or [float("nan")]  # not timed: its barrier gave up on the first run
        us = float(np.median(t))
        y = outputs[label]
        out["variants"][label] = {
            "us": us, "min_us": float(np.min(t)), "max_us": float(np.max(t)),
            "gbs": nbytes / us / 1e3, "grid": grids[label], "us_per_phase": us / len(phases),
            "shared_mem": smem.get(label, 0), "no_rows": VARIANTS[label].empty,
            "rel_l2_vs_float64": float(cp.linalg.norm(y - ref) / cp.linalg.norm(ref)),
            "max_diff_vs_first": float(cp.max(cp.abs(y - first))),
            # a block that gave up waiting at a barrier, in any replay (the flag stays set)
            "barrier_timeouts": int(bars[label][2].get())}
    del graphs, owners, weights
    cp.get_default_memory_pool().free_all_blocks()
    return out


def main() -> int:
    ap = probe_parser(__doc__, VARIANTS, 9, position=False)
    args = ap.parse_args()
    variants = chosen_variants(ap, args.variants, VARIANTS)
    import cupy as cp

    run_probe(args.out, "persistent_chain", probe_header(cp, REPLAYS, args.rounds), args.presets.split(","),
              lambda name: run_preset(cp, name, args.rounds, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())

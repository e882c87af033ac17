"""GPU task (issue 12), one device call: whether one token's graph at position 96 is slower on the pipeline's memory
than in bench/pdl_variants.py (~991 against ~967 µs, H100, 1b, 774b7b8, in two processes: token_marks_h100_774b7b8
"one token at 96 again" against pdl_variants_merge_ahead_pos96_h100_774b7b8 "optimized"). It is not: in one
process every row below is within 0.2% of the pipeline's (token_gap_h100_cc618b3, _7437051); the two processes
differed in how long they had run (bench/footprint.py). Same kernels (optimized's build), same launches
(pdl_variants.token), same position; the rows differ only in what the token reads:
- ``pipeline``: the pipeline's own forward (runner Session, optimized) on its weights, arena and KV caches;
- ``pipeline, buffers_first``: another pipeline of the session, optimized with the buffers_first switch (its small
  buffers at its arena's start, the caches at its end);
- ``bench``: pdl_variants' forward on its weights (std 1/sqrt(fan-in), drawn on the GPU) and random caches;
- ``bench, pipeline's weight arrays``: the same forward reading the pipeline's weight arrays (init_weights' values);
- ``bench, copies of the pipeline's weights``: fresh device copies of those arrays (the pipeline's values, placed
  after the bench's own);
- ``bench, pipeline's weights and caches``: the pipeline's weight arrays and KV caches;
- ``bench, the pipeline's arena layout``: the bench's weights, its caches' values copied into one allocation laid
  out as the pipeline's (runner/arena.py: both caches, the token's inputs, the mask, then the forward's buffers);
- ``bench, buffers before the caches``: the same allocation with the forward's buffers at its start and the caches
  after them.
So ``bench`` against ``copies`` is the weights' values (where they lie changes too), ``copies`` against
``pipeline's weight arrays`` where the same values lie, ``pipeline's weights and caches`` the caches, and the last
two where the token's small buffers lie (an A/A pair from CuPy's pool once sat 18.7 µs apart, b266cd2).
Each round every row once, in a random order: REPLAYS graph launches back to back between two events (5
before them, not timed), with the board's mean power over a row's rounds from NVML's energy counter (where
they span a second or more) and the SM clock read after. Median µs a token [95% CI] and the paired ratio
against the first row, rounds as units. Writes token_gap.json/.md under --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outputs import save  # noqa: E402
from bench.pdl_variants import OPTIMIZED_DEFINES, graph_replay_us, token_inputs, weights  # noqa: E402
from bench.token_marks import FIXED, at_position, in_rounds, summarize, token_graph  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.arena import Arena, kv_caches, token_buffers_capacity  # noqa: E402
from runner.arena import capacity as arena_capacity  # noqa: E402
from runner.loop import Session, generate  # noqa: E402
from runner.own_kernels import OwnForward  # noqa: E402

REPLAYS = 64
ROWS = ("pipeline", "pipeline, buffers_first", "bench", "bench, pipeline's weight arrays",
        "bench, copies of the pipeline's weights", "bench, pipeline's weights and caches",
        "bench, the pipeline's arena layout", "bench, buffers before the caches")
MIN_ENERGY_S = 1.0  # the least time a row's watts are read over (all its rounds together)
LAYOUTS = {"bench, the pipeline's arena layout": False, "bench, buffers before the caches": True}


def optimized_forward(cp: Any, p: Any, w: dict, layers: list, lm_scale: Any, inv: Any, k: Any, v: Any, tok: Any,
                      pos: Any, slot: Any, zeros: Any = None) -> Any:
    """pdl_variants' forward in optimized's build (PDL, OPTIMIZED_DEFINES) over these weights and inputs, its
    buffers from ``zeros`` or from an arena of its own."""
    return OwnForward(cp, p, w, layers, lm_scale, inv, k, v, tok, pos, slot, pdl=True, defines=OPTIMIZED_DEFINES,
                      zeros=zeros or Arena(cp, token_buffers_capacity(p)).zeros)


def first_run_graph(stream: Any, own: Any, layers: list, w: dict) -> Any:
    """One token of ``own`` (pdl_variants' launches) captured on ``stream`` and run once."""
    graph = token_graph(stream, own, layers, w)
    graph.launch(stream)
    stream.synchronize()
    return graph


def _copies(cp: Any, w: dict, layers: list) -> tuple[dict, list]:
    """Fresh device arrays holding the values of ``w`` and ``layers`` (a tied head stays tied)."""
    w2 = {k: cp.array(v, copy=True) for k, v in w.items() if k != "lm_head"}
    w2["lm_head"] = w2["embed"] if w["lm_head"] is w["embed"] else cp.array(w["lm_head"], copy=True)
    return w2, [{k: cp.array(v, copy=True) for k, v in layer.items()} for layer in layers]


def _arena_inputs(cp: Any, p: Any, ck: Any, cv: Any, buffers_first: bool) -> tuple[Arena, tuple]:
    """One allocation as the pipeline's (its capacity), carved as runner/pipeline.py carves it without and with
    buffers_first: the caches (``ck``, ``cv`` copied in) first and then the token's inputs and mask, or the caches
    at its end and every buffer of the token from its start."""
    mem = Arena(cp, arena_capacity(p))
    k, v = kv_caches(mem, ck.shape, ck.dtype, at_end=buffers_first)
    k[...], v[...] = ck, cv
    d_tok, d_pos, d_slot = (mem.zeros((1,), np.int32) for _ in range(3))
    mem.zeros((p.max_ctx,), np.float32)  # the pipeline's mask
    d_tok.fill(7)
    d_pos.fill(FIXED)
    d_slot.fill(FIXED)
    return mem, (k, v, d_tok, d_pos, d_slot)


def _timed(cp: Any, dev: Any, graph: Any, stream: Any) -> tuple[float, float, float | None, float, int | None]:
    """GPU µs a token, host µs a token, the energy counter's rise (mJ; None without one) and the seconds it spans,
    and the SM clock (MHz) after, over REPLAYS launches (5 before them, waited for, so that neither the energy nor
    the host clock holds them)."""
    for _ in range(5):
        graph.launch(stream)
    stream.synchronize()
    mj0, t0 = dev.energy_mj(), time.perf_counter_ns()
    gpu_us = graph_replay_us(cp, graph, stream, REPLAYS, warmup=0)
    t1, mj1 = time.perf_counter_ns(), dev.energy_mj()
    mj = float(mj1 - mj0) if mj0 is not None and mj1 is not None else None
    return gpu_us, (t1 - t0) / 1e3 / REPLAYS, mj, (t1 - t0) / 1e9, dev.clocks().get("sm_clock_mhz")


def mean_watts(windows: list[tuple[float | None, float]], least_s: float = MIN_ENERGY_S) -> float | None:
    """Board watts over a row's rounds: the energy counter's summed rise over their summed seconds. None where
    there is no counter or the rounds span under ``least_s``: NVML's counter moves in steps (on the H100 a 64 ms
    window read 0 or 777 W while 330 ms ones agreed at 509-519 W, token_gap_h100_cc618b3), so short windows
    say nothing."""
    if not windows or any(mj is None for mj, _ in windows):
        return None
    seconds = sum(s for _, s in windows)
    return sum(mj for mj, _ in windows) / 1e3 / seconds if seconds >= least_s else None


def run_preset(name: str, rounds: int) -> tuple[dict, dict]:
    """The preset's rows, and the device it ran on."""
    session = Session(name, "cuda", seed=0)
    cp, dev, p = session.device.cp, session.device, session.preset
    graphs, pipes = {}, {}
    for row, side in (("pipeline", "optimized"), ("pipeline, buffers_first", "optimized,buffers_first=on")):
        pipe, _ = session.pipeline(cfg.parse_side(side), "tokens")
        generate(pipe, session.prompt(32), 8)  # compile, fill the cache from 0, warm up
        at_position(pipe)
        graphs[row], pipes[row] = first_run_graph(pipe.main, pipe.own, pipe.layers, pipe.w), pipe
    pipe = pipes["pipeline"]
    stream = cp.cuda.Stream(non_blocking=True)
    bw, blayers, _ = weights(cp, p)
    ck, cv, inv, d_tok, d_pos, d_slot = token_inputs(cp, p, FIXED)
    cw, clayers = _copies(cp, pipe.w, pipe.layers)
    cp.cuda.Device().synchronize()  # the inputs were written on the legacy stream
    owners = []  # a graph needs its forward's module and buffers alive
    reads = {"bench": (bw, blayers, None, ck, cv),
             "bench, pipeline's weight arrays": (pipe.w, pipe.layers, pipe.lm_scale, ck, cv),
             "bench, copies of the pipeline's weights": (cw, clayers, pipe.lm_scale, ck, cv),
             "bench, pipeline's weights and caches": (pipe.w, pipe.layers, pipe.lm_scale, pipe.cache_k, pipe.cache_v)}
    for label, (w, layers, lm_scale, k, v) in reads.items():
        own = optimized_forward(cp, p, w, layers, lm_scale, inv, k, v, d_tok, d_pos, d_slot)
        owners.append(own)
        graphs[label] = first_run_graph(stream, own, layers, w)
    for label, buffers_first in LAYOUTS.items():
        mem, (k, v, tok, pos, slot) = _arena_inputs(cp, p, ck, cv, buffers_first)
        own = optimized_forward(cp, p, bw, blayers, None, inv, k, v, tok, pos, slot, zeros=mem.zeros)
        if mem.fallbacks:
            raise SystemExit(f"token_gap: {label}: the forward's buffers did not fit the arena")
        owners.append(own)  # its arena lives as long as its buffers (views of it)
        cp.cuda.Device().synchronize()
        graphs[label] = first_run_graph(stream, own, blayers, bw)
    same_build = all(o.defines == pipe.own.defines for o in [*owners, pipes["pipeline, buffers_first"].own])
    res = in_rounds(ROWS, rounds,
                    lambda row: _timed(cp, dev, graphs[row], pipes[row].main if row in pipes else stream))
    table = summarize({r: [x[0] for x in v] for r, v in res.items()},
                      {r: [x[1] for x in v] for r, v in res.items()})
    for r, v in res.items():
        table[r]["watts"] = mean_watts([(x[2], x[3]) for x in v])
        table[r]["sm_clock_mhz"] = float(np.median([x[4] or 0 for x in v]))
    kv_bytes = 2 * p.n_layers * p.n_kv_heads * (FIXED + 1) * p.head_dim * 2
    out = {"position": FIXED, "rounds": rounds, "replays": REPLAYS, "same_build": same_build,
           "defines": list(pipe.own.defines), "weights_mb": p.weight_bytes_per_token() / 1e6,
           "kv_mb": kv_bytes / 1e6, "rows": table}
    return out, dev.info()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="1b")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    report: dict = {"git": git_info(), "presets": {}}
    t0 = time.time()
    for name in args.presets.split(","):
        report["presets"][name], report["device"] = run_preset(name, args.rounds)
        print(f"[{time.time() - t0:.0f}s] {name} done", flush=True)
    save(args.out, "token_gap", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

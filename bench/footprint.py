"""GPU task (issue 12), one device call: whether what else the process holds on the GPU slows one token.

bench/pdl_variants.py's 1b token at position 96 took 966-970 µs on the H100 (a process holding its weights and
caches alone), while the same kernels and launches took 978-991 µs in processes that also held a runner Session
and its pipelines (token_marks_h100_774b7b8, token_gap_h100_cc618b3), and the tg128 decode 989 µs a token
(decode_h100_14b1eeb). One process here, phases in order, each the same rows in rounds:
1. ``alone``: pdl_variants' forward on its own weights and caches, nothing else allocated;
2. ``with a session``: a runner Session (its weights) and an optimized pipeline, warmed up;
3. ``with N GB more``: an extra allocation of that size, written once (every page mapped);
4. ``extra freed``: that allocation returned to the driver;
5. ``session freed``: the session and its pipeline gone, as in phase 1 (did the card drift?).
Rows: ``bench token`` (pdl_variants' token as one graph, REPLAYS launches back to back), and where the session
exists ``pipeline token at 96`` (the same token on the pipeline's kernels and memory) and ``pipeline tg128``
(the pipeline's own graph, its advance kernel moving the position, 128 launches after the prompt). GPU µs a
token from one event pair, median [95% CI] over rounds. The device-copy bandwidth is measured first.
Writes footprint.json/.md under --out.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decode import median_ci  # noqa: E402
from bench.outputs import save  # noqa: E402
from bench.pdl_variants import graph_replay_us, token_inputs, weights  # noqa: E402
from bench.token_gap import first_run_graph, optimized_forward  # noqa: E402
from bench.token_marks import FIXED, PROMPT, at_position, fixed_token_graph, in_rounds  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.device import CudaDevice  # noqa: E402
from runner.loop import Session, generate  # noqa: E402
from runner.presets import get_preset  # noqa: E402
from scripts.gpu_runner import copy_bandwidth_gbs  # noqa: E402

REPLAYS = 64
TOKENS = 128


def _bench(cp: Any, name: str) -> tuple[Any, Any, list]:
    """pdl_variants' forward of preset ``name`` as one graph on a stream of its own: (graph, stream, what it
    needs alive)."""
    p = get_preset(name)
    w, layers, _ = weights(cp, p)
    ck, cv, inv, d_tok, d_pos, d_slot = token_inputs(cp, p, FIXED)
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the inputs were written on the legacy stream
    own = optimized_forward(cp, p, w, layers, None, inv, ck, cv, d_tok, d_pos, d_slot)
    return first_run_graph(stream, own, layers, w), stream, [own, w, layers, ck, cv]


class _Pipeline:
    """An optimized pipeline of a session, with its token at FIXED captured beside its own graph."""

    def __init__(self, name: str) -> None:
        self.session = Session(name, "cuda", seed=0)
        self.pipe, _ = self.session.pipeline(cfg.parse_side("optimized"), "tokens")
        if not self.pipe.run_ahead:
            raise SystemExit("footprint: optimized does not run ahead on this device")
        self.prompt = self.session.prompt(PROMPT)
        generate(self.pipe, self.prompt, 16)  # compile, capture the graph, warm up
        self.fixed = fixed_token_graph(self.pipe)

    def at_96(self, cp: Any) -> float:
        at_position(self.pipe)
        return graph_replay_us(cp, self.fixed, self.pipe.main, REPLAYS, warmup=5)

    def tg128(self, cp: Any) -> float:
        """The pipeline's graph launched TOKENS times after the prompt (run again first), as tg128 runs."""
        generate(self.pipe, self.prompt, 0)
        self.pipe.start_queue(PROMPT)
        self.pipe.dev.synchronize(self.pipe.main)
        return graph_replay_us(cp, self.pipe.graph, self.pipe.main, TOKENS, warmup=0)


def _phase(rows: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    res = in_rounds(list(rows), rounds, lambda r: rows[r]())
    out = {}
    for row, x in res.items():
        med, lo, hi = median_ci(x)
        out[row] = {"us_per_token": med, "ci95": [lo, hi], "samples": x}
    return out


def _with_session(cp: Any, name: str, bench: Callable[[], float], rounds: int, extra_gb: float) -> dict[str, dict]:
    """Phases 2-4; the session and its pipeline are gone once this returns."""
    pl = _Pipeline(name)
    rows = {"bench token": bench, "pipeline token at 96": lambda: pl.at_96(cp), "pipeline tg128": lambda: pl.tg128(cp)}
    phases = {"with a session": _phase(rows, rounds)}
    extra = cp.ones(int(extra_gb * 2 ** 30), cp.uint8)  # written: every page mapped
    cp.cuda.Device().synchronize()
    phases[f"with {extra_gb:g} GB more"] = _phase(rows, rounds)
    del extra
    cp.get_default_memory_pool().free_all_blocks()
    phases["extra freed"] = _phase(rows, rounds)
    return phases


def run_preset(cp: Any, name: str, rounds: int, extra_gb: float) -> dict:
    graph, stream, keep = _bench(cp, name)

    def bench() -> float:
        return graph_replay_us(cp, graph, stream, REPLAYS, warmup=5)

    phases: dict[str, dict] = {"alone": _phase({"bench token": bench}, rounds)}
    phases.update(_with_session(cp, name, bench, rounds, extra_gb))
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    phases["session freed"] = _phase({"bench token": bench}, rounds)
    del keep
    return {"position": FIXED, "replays": REPLAYS, "tokens": TOKENS, "rounds": rounds,
            "weights_mb": get_preset(name).weight_bytes_per_token() / 1e6, "phases": phases}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="1b")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--extra-gb", type=float, default=40.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    dev = CudaDevice()
    cp = dev.cp
    report: dict = {"git": git_info(), "device": dev.info(), "copy_bw_gbs": copy_bandwidth_gbs(cp), "presets": {}}
    t0 = time.time()
    for name in args.presets.split(","):
        report["presets"][name] = run_preset(cp, name, args.rounds, args.extra_gb)
        print(f"[{time.time() - t0:.0f}s] {name} done", flush=True)
    save(args.out, "footprint", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU task (issue 13): does a pipeline instance's speed depend on when it was made? In one process,
TRIALS times: free every pipeline, make N new ones of one config one after another, warm each, then
time each one's token graph replayed back to back (events), the instances taking turns. Prints each
instance's GPU time per token relative to the trial's mean, by creation position, and the spread
between instances, for three ways of making them (an experiment, the runner is not changed):
``as is`` (the runner: since `runner/arena.py`, every device buffer of an instance carved from one
allocation); ``pool`` (each buffer its own allocation from CuPy's pool, as before the arena); ``one
module`` (the kernels' module loaded once and shared, not once per instance); ``one arena`` (before the
runner had one: CuPy's zeros patched to carve from one allocation per instance).
Usage: bench/instance_order.py [--config C] [--instances N] [--trials T]"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.noise import replay_s  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.loop import Session, generate  # noqa: E402


@contextlib.contextmanager
def variant(cp, name: str):
    """Patches CuPy while pipelines are made (see the module docstring)."""
    if name == "pool":
        import runner.pipeline as pipeline_mod

        real_arena = pipeline_mod.Arena

        class Pool(real_arena):  # every buffer its own allocation, as before runner/arena.py
            def zeros(self, shape, dtype):
                return self.xp.zeros(shape, dtype=dtype)

        pipeline_mod.Arena = Pool
        try:
            yield
        finally:
            pipeline_mod.Arena = real_arena
    elif name == "one module":
        real = cp.RawModule
        cached = functools.lru_cache(maxsize=None)(lambda code, options: real(code=code, options=options))
        cp.RawModule = lambda code, options=(): cached(code, tuple(options))
        try:
            yield
        finally:
            cp.RawModule = real
    elif name == "one arena":
        real_zeros = cp.zeros
        arena = real_zeros(256 << 20, cp.uint8)
        state = {"at": 0}

        def zeros(shape, dtype=float, *a, **k):
            dt = np.dtype(dtype)
            n = int(np.prod(shape)) * dt.itemsize
            at = -(-state["at"] // 256) * 256
            if at + n > arena.size:
                return real_zeros(shape, dtype, *a, **k)
            state["at"] = at + n
            out = arena[at:at + n].view(dt).reshape(shape)
            out.fill(0)
            return out

        cp.zeros = zeros
        try:
            yield
        finally:
            cp.zeros = real_zeros
    else:
        yield


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--config", default="baseline,cuda_graph=on,run_ahead=on")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    session = Session(args.preset, "cuda", seed=0)
    cp = session.device.cp
    config = cfg.parse_side(args.config)
    prompt = session.prompt(8)
    for name in ("as is", "pool"):
        pipes: list = []
        rel, spreads = [], []
        for trial in range(args.trials):
            pipes.clear()
            gc.collect()
            for _ in range(args.instances):
                with variant(cp, name):
                    pipe, _ = session.pipeline(config, "tokens")
                generate(pipe, prompt, 8)  # warm-up and capture, as the runner does
                pipes.append(pipe)
                del pipe
            times = np.array([[replay_s(session, p, args.tokens) * 1e6 / args.tokens for p in pipes]
                              for _ in range(args.turns)])
            per = np.median(times, axis=0)
            r = (per / per.mean() - 1) * 100
            rel.append(r)
            spreads.append(float(r.max() - r.min()))
            print(f"{name}, trial {trial}: " + "  ".join(f"#{i} {t:.1f} µs ({x:+.2f}%)"
                                                        for i, (t, x) in enumerate(zip(per, r))))
        rel = np.array(rel)
        print(f"{name}: by creation position (mean %): "
              + "  ".join(f"#{i} {m:+.3f}" for i, m in enumerate(rel.mean(axis=0)))
              + f"; fastest-to-slowest spread per trial, median {np.median(spreads):.2f}%")
        pipes.clear()
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU task (issue 12), one device call: what the run-ahead loop's token marks cost.

``optimized`` queues its decode tokens as one CUDA graph launch each (run_ahead) and the recorder puts a
CUDA event on the stream before and after every launch (``Recorder.mark``: the token's GPU window). One
token's graph replayed back to back takes 966-970 µs on the H100's 1b at position 96
(pdl_variants_*_h100_14b1eeb), the tg128 decode 989 µs a token (decode_h100_14b1eeb): this measures how much
of that gap the events between the launches are. Per preset (tg128 after a 32-token prompt, the prompt
run again before every repeat), in rounds with the variants in a random order each round:
- ``two marks a token``: the loop as it ships (``Pipeline.queue``, an event before and after each launch);
- ``one mark a token``: only the event after each launch;
- ``no marks``: ``Pipeline.queue`` without events;
- ``launches alone``: the graph launched 128 times, no host ranges, no events;
- ``one token at 96 again``: bench/pdl_variants.py's token (no advance kernel: the same position every time)
  captured from this pipeline's kernels, weights and buffers, launched 128 times at position 96: whether the
  gap to pdl_variants is the pipeline's graph and positions or its memory.
Each repeat is timed by one event pair around the 128 tokens (the picks' copy and the wait included) and by
the host clock; the table gives the median µs a token [95% CI] and each variant against the first, paired
by round. Writes token_marks.json and token_marks.md under --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decode import median_ci  # noqa: E402
from bench.outputs import save  # noqa: E402
from perfreview.compare import stats  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.device import capture_graph  # noqa: E402
from runner.loop import Session, generate  # noqa: E402

VARIANTS = ("two marks a token", "one mark a token", "no marks", "launches alone", "one token at 96 again")
FIXED = 96
PROMPT = 32


def _queue_tokens(pipe: Any, rec: Any, tokens: int) -> None:
    """The run-ahead loop of runner.loop.generate after its prompt, token by token."""
    pipe.start_queue(PROMPT)
    for i in range(tokens):
        rec.token, rec.phase = PROMPT + i, "decode"
        pipe.queue(last=i == tokens - 1)


def _replay(pipe: Any, graph: Any, tokens: int) -> None:
    """``graph`` launched ``tokens`` times on the pipeline's stream with nothing between the launches, then
    one wait."""
    s = pipe.main
    with pipe.dev.use(s):
        for _ in range(tokens):
            graph.launch(s)
    pipe.dev.synchronize(s)


def token_graph(stream: Any, own: Any, layers: list, w: dict) -> Any:
    """pdl_variants' token of ``own`` (its kernels and buffers, these weights) captured on ``stream`` as one graph,
    uploaded (no advance: its position stays where the inputs put it)."""
    from bench.pdl_variants import token

    with stream:
        return capture_graph(stream, lambda: token(own, layers, w))


def fixed_token_graph(pipe: Any) -> Any:
    """pdl_variants' token on the pipeline's own kernels and buffers, as one graph."""
    return token_graph(pipe.dev.use(pipe.main), pipe.own, pipe.layers, pipe.w)


def at_position(pipe: Any, pos: int = FIXED) -> None:
    """The token's position and cache slot set to ``pos``, on the pipeline's stream (ordered before the launches)."""
    with pipe.dev.use(pipe.main):
        pipe.d_pos.fill(pos)
        pipe.d_slot.fill(pos)


def _marks(rec: Any, variant: str) -> Callable[[str, Any], None]:
    """The recorder's mark for ``variant`` (the shipped one, or one that skips some events)."""
    shipped = type(rec).mark.__get__(rec)
    if variant == "one mark a token":
        return lambda name, stream: shipped(name, stream) if name == "token_end" else None
    if variant == "no marks":
        return lambda name, stream: None
    return shipped


def in_rounds(names: Sequence[str], rounds: int, measure: Callable[[str], Any]) -> dict[str, list[Any]]:
    """``measure(name)`` for every name once a round, in a random order each round (seeded), for ``rounds`` rounds
    after one that warms every name up and is dropped: name -> its results, round by round."""
    out: dict[str, list[Any]] = {n: [] for n in names}
    order = np.random.default_rng(0)
    for r in range(rounds + 1):
        for i in order.permutation(len(names)):
            result = measure(names[int(i)])
            if r:
                out[names[int(i)]].append(result)
    return out


def summarize(us: dict[str, list[float]], host_us: dict[str, list[float]]) -> dict[str, dict]:
    """Per variant: median µs a token [95% CI] (GPU events, host clock) and against the first variant
    the paired ratio [95% CI] of the GPU times (rounds as units, the review's statistics)."""
    first = next(iter(us))
    out = {}
    for name, x in us.items():
        med, lo, hi = median_ci(x)
        row = {"us_per_token": med, "ci95": [lo, hi], "host_us_per_token": float(np.median(host_us[name])),
               "samples": x}
        if name != first:
            est = stats.paired(np.asarray(us[first]), np.asarray(x), 0.05)
            row["vs_first"] = {"ratio": est.ratio, "ci95": [est.ci_low, est.ci_high], "method": est.method}
        out[name] = row
    return out


def run_preset(name: str, rounds: int, tokens: int) -> tuple[dict, dict]:
    """The preset's table, and the device it ran on."""
    session = Session(name, "cuda", seed=0)
    cp = session.device.cp
    pipe, rec = session.pipeline(cfg.parse_side("optimized"), "tokens")
    if not pipe.run_ahead:
        raise SystemExit("token_marks: optimized does not run ahead on this device")
    prompt = session.prompt(PROMPT)
    generate(pipe, prompt[:16], 16)  # compile, capture the graph, warm up
    fixed = fixed_token_graph(pipe)

    def one(variant: str) -> tuple[float, float]:
        """GPU and host µs a token of one repeat of ``variant``."""
        rec.start_repeat()
        generate(pipe, prompt, 0)  # the prompt again: the cache from position 0, inputs for the queue
        rec.mark = _marks(rec, variant)
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        e0.record(pipe.main)
        t0 = time.perf_counter_ns()
        if variant == "launches alone":
            _replay(pipe, pipe.graph, tokens)
        elif variant == "one token at 96 again":
            at_position(pipe)
            _replay(pipe, fixed, tokens)
        else:
            _queue_tokens(pipe, rec, tokens)
        e1.record(pipe.main)
        e1.synchronize()
        t1 = time.perf_counter_ns()
        del rec.mark  # the class's mark again
        return cp.cuda.get_elapsed_time(e0, e1) * 1e3 / tokens, (t1 - t0) / 1e3 / tokens

    res = in_rounds(VARIANTS, rounds, one)
    us = {v: [x[0] for x in r] for v, r in res.items()}
    host = {v: [x[1] for x in r] for v, r in res.items()}
    return ({"tokens": tokens, "prompt": PROMPT, "rounds": rounds, "variants": summarize(us, host)},
            session.device.info())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="1b,8b")
    ap.add_argument("--rounds", default="1b=21,8b=11", help="rounds per preset (each variant once a round)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rounds = {k: int(v) for k, v in (x.split("=") for x in args.rounds.split(","))}
    report: dict = {"git": git_info(), "presets": {}}
    t0 = time.time()
    for name in args.presets.split(","):
        report["presets"][name], report["device"] = run_preset(name, rounds.get(name, 11), args.tokens)
        print(f"[{time.time() - t0:.0f}s] {name} done", flush=True)
    save(args.out, "token_marks", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic runs with known effects: host-only event tables shaped like the runner's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfreview.trace import runs, schema
from perfreview.trace.meta import RepeatInfo, RunMeta

FUNCS = {"embedding": 20_000, "attention": 300_000, "ffn": 250_000, "lm_head": 80_000, "sample": 10_000}


def make_run(root: Path, run_id: str, repeats: int = 20, tokens: int = 32, scale: dict | None = None,
             cv: float = 0.02, seed: int = 0, names: dict | None = None, meta_extra: dict | None = None,
             sync_ns: int = 2_000, partners: tuple[str, ...] = (), step: tuple[int, float] = (0, 1.0)) -> Path:
    """Per token: token > input_copy, functions..., output_copy, sync. ``scale`` multiplies a
    function's duration (the injected effect); noise is lognormal with coefficient ``cv`` per call
    plus a per-repeat drift of cv/2 (repeats are the independent samples). ``partners``: the runs this
    one was interleaved with (round i of each pairs up), as ``ab`` records it. ``step``: (repeat, factor), every
    duration from that repeat on times the factor (the machine slowing down part way through)."""
    rng = np.random.default_rng(seed)
    scale = scale or {}
    names = names or {}
    rows = []
    for r in range(repeats):
        drift = rng.lognormal(0, cv / 2) * (step[1] if r >= step[0] else 1.0)
        t = 1_000_000 * (r + 1) * 100
        for k in range(tokens):
            tok_start = t
            t += 5_000
            rows.append(dict(repeat=r, token=k, phase="decode", kind="range", name="input_copy", depth=1,
                             start_ns=tok_start, end_ns=t))
            for f, base in FUNCS.items():
                d = int(base * scale.get(f, 1.0) * drift * rng.lognormal(0, cv))
                rows.append(dict(repeat=r, token=k, phase="decode", kind="range", name=names.get(f, f), depth=1,
                                 start_ns=t, end_ns=t + d))
                t += d + 1_000
            rows.append(dict(repeat=r, token=k, phase="decode", kind="range", name="output_copy", depth=1,
                             start_ns=t, end_ns=t + 3_000))
            t += 3_000
            d = int(sync_ns * rng.lognormal(0, cv))
            rows.append(dict(repeat=r, token=k, phase="decode", kind="range", name="sync", depth=1,
                             start_ns=t, end_ns=t + d))
            t += d
            rows.append(dict(repeat=r, token=k, phase="decode", kind="token", name="token", depth=0,
                             start_ns=tok_start, end_ns=t))
            t += 4_000
    for row in rows:
        row.update(source="host", track="host/main")
    meta = RunMeta(run=run_id, interleaved_with=list(partners), preset="tiny", tokens=tokens, prompt_tokens=0,
                   timing="tokens", repeats=repeats,
                   config_label=run_id, device={"name": "synthetic", "backend": "numpy"},
                   git={"commit": "0" * 40, "dirty": False}, per_repeat=[RepeatInfo(r) for r in range(repeats)],
                   tool_version="test", clock="synthetic", clock_alignment="host only",
                   host={"hostname": "test", "python": "3"}, not_measured=[{"what": "energy", "why": "synthetic"}],
                   **(meta_extra or {}))
    return runs.write_run(root, schema.from_records(rows, run_id), meta)


def make_pair(root: Path, a: dict | None = None, b: dict | None = None, **common) -> tuple[Path, Path]:
    """Two runs recorded as interleaved with each other (paired by round), A and B."""
    pa = make_run(root, "a", partners=("b",), **{"seed": 1, **common, **(a or {})})
    pb = make_run(root, "b", partners=("a",), **{"seed": 2, **common, **(b or {})})
    return pa, pb

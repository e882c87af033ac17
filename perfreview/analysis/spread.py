"""Where a run's repeat-to-repeat spread comes from: host stalls against the GPU's own spread.

Measured on the lent H100 (1b optimized, 20 repeats of 128 tokens): tokens/s per repeat spread 2.6%
(CV) while the GPU compute per token spread 0.3%; the slow repeats each held one host stall, the
runner's host work per token (input copies, graph launch) 10x its usual ~30 µs for a few dozen
tokens, decaying back (a descheduled or slowed CPU, not the GPU). So per token the host time outside
the device's compute window is what tells a stall apart, and a repeat's tokens/s is only as steady
as its host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

STALL_FACTOR = 3.0  # a token whose host overhead is above 3x the run's median ...
STALL_MIN_NS = 20_000  # ... and at least 20 µs above it is host-stalled


@dataclass(frozen=True)
class SpreadSources:
    repeats: int
    tokens_per_s_cv: float  # per-repeat tokens/s, sample SD over mean
    gpu_compute_cv: float  # per-repeat median GPU compute per token (NaN without CUDA events)
    host_overhead_us: float  # median host time per token outside the device's compute window
    tokens: int
    stalled_tokens: int
    stalled_repeats: int
    stall_share: float  # time the stalls added (over the median overhead) / all decode time
    tokens_per_s_cv_unstalled: float  # over the repeats without a stall (NaN with fewer than 2)
    stall_factor: float = STALL_FACTOR
    queued: bool = False  # run_ahead: the host queues tokens ahead of the device and waits once a repeat


def _cv(x: pd.Series) -> float:
    x = x.dropna().astype(float)
    return float(x.std(ddof=1) / x.mean()) if len(x) > 1 and x.mean() else math.nan


def spread_sources(tokens: pd.DataFrame, per_repeat: pd.DataFrame, queued: bool = False) -> SpreadSources | None:
    """``tokens``: analysis.tokens.token_table; ``per_repeat``: the run's headline figures per repeat
    (analysis.headline.per_repeat: ``repeat``, ``tokens_per_s``, ``median_gpu_compute_ms``).
    ``queued``: a run-ahead run, whose host only queues each token (its one wait, after the last
    token, holds the whole decode): the host's time per token is then the queueing, and a host
    stall reaches the device only if it outlasts the queue, so none is counted.
    None when the run's tokens have no device compute window (CUDA events) to compare with."""
    t = tokens[(tokens["phase"] == "decode") & (tokens["window_source"] == "cuda_event")]
    if t.empty or len(per_repeat) < 2:
        return None
    if queued:
        last = t.groupby(["run", "repeat"])["token"].transform("max") == t["token"]
        return SpreadSources(
            repeats=len(per_repeat), tokens_per_s_cv=_cv(per_repeat["tokens_per_s"]),
            gpu_compute_cv=_cv(per_repeat["median_gpu_compute_ms"]),
            host_overhead_us=float(t.loc[~last, "host_ns"].median()) / 1e3, tokens=len(t), stalled_tokens=0,
            stalled_repeats=0, stall_share=0.0, tokens_per_s_cv_unstalled=math.nan, queued=True)
    overhead = (t["host_ns"] - (t["compute_end"] - t["compute_start"])).clip(lower=0)
    median = float(overhead.median())
    stalled = (overhead > STALL_FACTOR * median) & (overhead > median + STALL_MIN_NS)
    extra = (overhead - median).where(stalled, 0.0)
    stalled_reps = set(t.loc[stalled, "repeat"])
    clean = per_repeat[~per_repeat["repeat"].isin(stalled_reps)]
    return SpreadSources(
        repeats=len(per_repeat), tokens_per_s_cv=_cv(per_repeat["tokens_per_s"]),
        gpu_compute_cv=_cv(per_repeat["median_gpu_compute_ms"]), host_overhead_us=median / 1e3,
        tokens=len(t), stalled_tokens=int(stalled.sum()), stalled_repeats=len(stalled_reps),
        stall_share=float(extra.sum() / t["host_ns"].sum()) if t["host_ns"].sum() else math.nan,
        tokens_per_s_cv_unstalled=_cv(clean["tokens_per_s"]),
    )


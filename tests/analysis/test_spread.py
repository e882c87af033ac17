"""Where the spread between repeats comes from: host stalls told apart from the GPU's own spread,
on token tables built with known answers (a stall as measured on the H100: the host's time per token
10x its usual for a run of tokens, the GPU compute unchanged)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from perfreview.analysis import spread, tokens


def heads(toks: pd.DataFrame) -> pd.DataFrame:
    """The headline columns the spread reads (analysis.headline.per_repeat names them so)."""
    rep = tokens.per_repeat(toks)
    return rep.assign(median_gpu_compute_ms=rep["median_gpu_compute_ns"] / 1e6)


def token_rows(repeats: int, n: int, stalls: dict[int, range], compute_ns: int = 1_200_000,
               overhead_ns: int = 30_000, stall_ns: int = 300_000) -> pd.DataFrame:
    rows, t = [], 0
    for r in range(repeats):
        for i in range(n):
            host = compute_ns + (stall_ns if i in stalls.get(r, range(0)) else overhead_ns)
            rows.append({"run": "x", "repeat": r, "token": i, "phase": "decode", "host_start": t, "host_end": t + host,
                         "host_ns": host, "gpu_ns": compute_ns, "compute_start": t + 10_000,
                         "compute_end": t + 10_000 + compute_ns, "window_source": "cuda_event"})
            t += host + 5_000
    return pd.DataFrame(rows)


def test_stalls_are_counted_and_the_unstalled_repeats_are_steady():
    toks = token_rows(10, 64, {2: range(10, 30), 7: range(40, 50)})
    s = spread.spread_sources(toks, heads(toks))
    assert s.repeats == 10 and s.tokens == 640
    assert (s.stalled_tokens, s.stalled_repeats) == (30, 2)
    assert s.host_overhead_us == pytest.approx(30.0)
    assert s.tokens_per_s_cv > 0.01 and s.tokens_per_s_cv_unstalled < 1e-3  # the stalls are the spread
    assert s.gpu_compute_cv == pytest.approx(0.0)
    extra = 30 * (300_000 - 30_000)
    assert s.stall_share == pytest.approx(extra / toks["host_ns"].sum())


def test_a_quiet_run_has_no_stalls_and_a_run_without_events_has_no_answer():
    toks = token_rows(5, 32, {})
    s = spread.spread_sources(toks, heads(toks))
    assert s.stalled_tokens == 0 and s.stall_share == 0 and s.tokens_per_s_cv < 1e-3
    host_only = toks.assign(window_source="host")
    assert spread.spread_sources(host_only, heads(host_only)) is None
    one = token_rows(1, 32, {})
    assert spread.spread_sources(one, heads(one)) is None  # no spread with one repeat
    assert math.isnan(spread._cv(pd.Series([np.nan, 1.0])))


def test_a_queued_run_counts_no_stall_for_its_one_wait_and_gives_the_queueing_cost():
    """run_ahead: each token's host range is only its launch (12 µs), the last one holds the wait for
    the whole queue. That wait is not a stall, and the host's time per token is the queueing."""
    rows, t = [], 0
    for r in range(4):
        for i in range(16):
            host = 12_000 if i < 15 else 16 * 1_200_000
            rows.append({"run": "x", "repeat": r, "token": i, "phase": "decode", "host_start": t,
                         "host_end": t + host, "host_ns": host, "gpu_ns": 1_200_000, "compute_start": t,
                         "compute_end": t + 1_200_000, "window_source": "cuda_event"})
            t += host
    toks = pd.DataFrame(rows)
    plain = spread.spread_sources(toks, heads(toks))
    assert plain.stalled_tokens == 4  # read as a per-token loop, the wait looks like a stall a repeat
    s = spread.spread_sources(toks, heads(toks), queued=True)
    assert s.queued and s.stalled_tokens == 0 and s.stall_share == 0
    assert s.host_overhead_us == pytest.approx(12.0)

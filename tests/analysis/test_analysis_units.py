"""The analysis functions on small hand-built event tables with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from perfreview.analysis import functions, gaps, intervals, streams, tokens
from perfreview.trace import schema

HOST = "host/main"


def host(token, name, start, end, depth=1, kind="range", repeat=0, phase="decode"):
    return dict(kind=kind, name=name, start_ns=start, end_ns=end, depth=depth, token=token, repeat=repeat,
                phase=phase, track=HOST, source="host")


def gpu(token, name, start, end, stream=0, kind="gpu_range", repeat=0, phase="decode"):
    return dict(kind=kind, name=name, start_ns=start, end_ns=end, token=token, repeat=repeat, phase=phase,
                stream=stream, track=schema.stream_track(0, stream), source="cuda_event")


def table(rows):
    return schema.from_records(rows, "r")


def two_tokens():
    """Two decode tokens on the host (0-100, 100-220) with GPU marks: token n's GPU work ends at 80,
    token n+1's input copy ends (its compute starts) at 130: a 50 ns gap, of which the host spent
    80-95 in sync, 100-110 in the input_copy frame, 112-125 launching ``attention``."""
    return table([
        host(0, "token", 0, 100, depth=0, kind="token"), host(0, "input_copy", 0, 10), host(0, "attention", 12, 60),
        host(0, "sync", 80, 95),
        host(1, "token", 100, 220, depth=0, kind="token"), host(1, "input_copy", 100, 110),
        host(1, "attention", 112, 125), host(1, "sync", 190, 215),
        gpu(0, "token", 2, 80), gpu(0, "input_copy", 2, 15), gpu(1, "token", 102, 200), gpu(1, "input_copy", 102, 130),
    ])


def test_token_table_windows_and_throughput():
    t = tokens.token_table(two_tokens())
    assert list(t["host_ns"]) == [100, 120]
    assert list(t["gpu_ns"]) == [78, 98]
    assert list(t["compute_start"]) == [15, 130] and list(t["compute_end"]) == [80, 200]
    assert set(t["window_source"]) == {"cuda_event"}
    rep = tokens.per_repeat(t)
    assert rep["tokens_per_s"].iloc[0] == pytest.approx(2 * 1e9 / 220)
    assert rep["median_token_ns"].iloc[0] == 110
    assert rep["median_gpu_compute_ns"].iloc[0] == (65 + 70) / 2  # input copies done -> last GPU work


def test_sync_gap_and_its_host_breakdown():
    g = gaps.sync_gaps(two_tokens())
    assert len(g) == 1
    row = g.iloc[0]
    assert row["gap_ns"] == 50  # 80 -> 130
    assert row["blocked_sync_ns"] == 15  # 80-95
    assert row["copies_ns"] == 0  # input_copy is a frame, not a copy call
    assert row["launch_ns"] == 13  # attention 112-125
    # the input_copy frame (100-110) holds no copy call here: its time is other host work
    assert row["other_ns"] == 50 - 15 - 13


def test_gap_skips_boundaries_without_gpu_windows():
    ev = table([host(0, "token", 0, 100, depth=0, kind="token"), host(2, "token", 200, 300, depth=0, kind="token"),
                host(0, "input_copy", 0, 10), host(2, "input_copy", 200, 210),
                host(0, "output_copy", 90, 95), host(2, "output_copy", 290, 295)])
    assert gaps.sync_gaps(ev).empty  # tokens 0 and 2 are not neighbours


def test_self_time_subtracts_direct_children_only():
    ev = table([host(0, "token", 0, 100, depth=0, kind="token"), host(0, "qkv", 10, 50, depth=1),
                host(0, "q_proj", 12, 22, depth=2), host(0, "k_proj", 25, 35, depth=2),
                host(0, "inner", 26, 30, depth=3)])
    h = functions.host_ranges_with_self(ev).set_index("name")
    assert h.loc["token", "self_ns"] == 100 - 40
    assert h.loc["qkv", "self_ns"] == 40 - 10 - 10
    assert h.loc["k_proj", "self_ns"] == 10 - 4
    assert h.loc["inner", "self_ns"] == 4


def test_per_token_sums_calls_and_joins_gpu_time():
    ev = table([host(0, "token", 0, 100, depth=0, kind="token"), host(0, "rmsnorm", 10, 20), host(0, "rmsnorm", 30, 45),
                gpu(0, "rmsnorm", 11, 14), gpu(0, "rmsnorm", 31, 36), gpu(0, "token", 0, 99)])
    pt = functions.per_token(ev).set_index("name")
    assert pt.loc["rmsnorm", "calls"] == 2
    assert pt.loc["rmsnorm", "host_ns"] == 25 and pt.loc["rmsnorm", "gpu_ns"] == 8
    assert "token" not in pt.index  # the frame is not a function


def test_stream_overlap_from_intervals():
    ev = table([gpu(0, "q", 0, 100, stream=1, kind="kernel"), gpu(0, "k", 50, 150, stream=2, kind="kernel"),
                gpu(0, "v", 140, 160, stream=3, kind="kernel"), gpu(0, "o", 200, 300, stream=0, kind="kernel")])
    s = streams.stream_summary(ev)
    assert dict(zip(s["stream"], s["busy_ns"])) == {0: 100, 1: 100, 2: 100, 3: 20}
    assert s["overlap_ns"].iloc[0] == 50 + 10  # 50-100 (q,k) and 140-150 (k,v)


def test_streams_that_never_overlap_have_zero_overlap():
    ev = table([gpu(0, "a", 0, 10, stream=7, kind="kernel"), gpu(0, "b", 10, 20, stream=8, kind="kernel")])
    assert streams.stream_summary(ev)["overlap_ns"].iloc[0] == 0


def test_kernel_added_time_leaves_out_the_wait_of_early_launched_kernels():
    """Programmatic dependent launch starts b while a drains; b waits inside. Its duration counts the
    wait, its added time does not, and a stream's added times sum to its busy time."""
    from perfreview.analysis import traced

    ev = table([gpu(0, "a", 0, 10, stream=0, kind="kernel"), gpu(0, "b", 5, 20, stream=0, kind="kernel"),
                gpu(0, "a", 25, 30, stream=0, kind="kernel"), gpu(0, "b", 0, 4, stream=1, kind="kernel"),
                gpu(0, "c", 26, 28, stream=0, kind="kernel")])  # inside a: adds nothing
    ks = traced.kernel_summary(ev).set_index("name")
    assert ks.loc["b", "total_ns"] == 15 + 4 and ks.loc["b", "added_ns"] == 10 + 4
    assert ks.loc["a", "added_ns"] == 10 + 5 and ks.loc["c", "added_ns"] == 0
    assert ks["added_ns"].sum() == 25 + 4 and ks["added_share"].sum() == pytest.approx(1.0)


def test_interval_union_and_clipping():
    s, e = intervals.union(np.array([5, 0, 20]), np.array([12, 10, 30]))
    assert list(s) == [0, 20] and list(e) == [12, 30]
    assert intervals.total(np.array([0, 5]), np.array([10, 8])) == 10
    assert intervals.clipped_total(np.array([0, 20]), np.array([12, 30]), 10, 25) == 2 + 5


def test_traced_summaries_and_findings():
    from perfreview.analysis import traced

    ev = table([
        host(0, "token", 0, 1_000_000, 0, "token"),
        dict(kind="api", name="cudaLaunchKernel", start_ns=10, end_ns=20, depth=1, token=0, repeat=0, phase="decode",
             track=HOST, source="cupti", correlation=1),
        dict(kind="api", name="cudaStreamSynchronize", start_ns=30, end_ns=900, depth=1, token=0, repeat=0,
             phase="decode", track=HOST, source="cupti", correlation=2),
        dict(kind="api", name="cudaLaunchKernel", start_ns=100_000, end_ns=100_010, depth=1, token=0, repeat=0,
             phase="decode", track=HOST, source="cupti", correlation=3),
        gpu(0, "k", 100, 200, stream=7, kind="kernel") | {"correlation": 1},
        gpu(0, "k", 210, 410, stream=7, kind="kernel"),
        gpu(0, "big", 100_020, 100_520, stream=7, kind="kernel") | {"correlation": 3},
        gpu(0, "memcpy HtoD", 500, 550, stream=7, kind="memcpy") | {"bytes": 64, "copy_kind": "HtoD",
                                                                     "mem_kind": "pageable->device"},
    ])
    ks = traced.kernel_summary(ev).set_index("name")
    assert ks.loc["big", "total_ns"] == 500 and ks.loc["k", "count"] == 2 and ks.loc["k", "median_ns"] == 150
    assert ks["share"].sum() == pytest.approx(1.0)
    assert ks.loc["k", "repeats"] == 1 and np.isnan(ks.loc["k", "repeat_cv"])  # one repeat: no spread
    two = pd.concat([ev, ev.assign(repeat=1, start_ns=ev["start_ns"] + 10**7,
                                   end_ns=ev["end_ns"] + 10**7 + (ev["name"] == "big") * 100)])
    ks2 = traced.kernel_summary(two).set_index("name")
    assert ks2.loc["k", "repeat_cv"] == 0 and ks2.loc["big", "repeat_cv"] == pytest.approx(np.std([500, 600], ddof=1)
                                                                                          / 550)
    cs = traced.copy_summary(ev).iloc[0]
    assert (cs["copy_kind"], cs["mem_kind"], cs["count"], cs["bytes"]) == ("HtoD", "pageable->device", 1, 64)
    idle = traced.stream_idle(ev).iloc[0]
    # gaps on stream 7: 200->210 (10 ns, kernel wait), 410->500 (90 ns, kernel wait), 550->100020 (launched at
    # 100010, after the stream went idle: host wait)
    assert idle["host_wait_ns"] == 100_020 - 550 and idle["kernel_wait_ns"] == 10 + 90 and idle["other_ns"] == 0
    rules = {f.rule: f for f in traced.findings(ev)}
    assert rules["async copies from pageable memory"].count == 1 and rules["synchronize calls"].per_token == 1


def test_function_summary_says_in_how_many_tokens_a_function_runs():
    """A run-ahead loop waits once, after its last token: the wait's figures are per token that has
    it, and token_share says it is 1 token in 4 (not one call in every token)."""
    per_tok = pd.DataFrame([
        {"run": "r", "repeat": 0, "token": t, "name": name, "calls": 1, "host_ns": ns, "self_ns": ns,
         "gpu_ns": float("nan")}
        for t in range(4) for name, ns in (("graph_launch", 3_000), ("sync", 4_000_000)) if name != "sync" or t == 3
    ])
    gpu_only = pd.DataFrame([{"run": "r", "repeat": 0, "token": t, "name": "gemv", "calls": 2, "host_ns": float("nan"),
                              "self_ns": float("nan"), "gpu_ns": 9_000.0} for t in range(4)])
    out = functions.summary(pd.concat([per_tok, gpu_only])).set_index("name")
    assert out.loc["gemv", "token_share"] == 1.0  # a function seen only on the device (CUPTI) is in every token
    assert out.loc["graph_launch", "token_share"] == 1.0
    assert out.loc["sync", "token_share"] == 0.25 and out.loc["sync", "median_ns"] == 4_000_000


def test_a_function_in_some_tokens_is_figured_per_token_over_the_repeat():
    """Compared figures: a function in every token keeps its median; the run-ahead loop's one wait
    (1.2 ms x 4 tokens, in the last token only) counts as 1.2 ms per token, not 4.8 ms."""
    per_tok = pd.DataFrame([
        {"run": "r", "repeat": 0, "token": t, "name": name, "calls": 1, "host_ns": ns, "self_ns": ns,
         "gpu_ns": float("nan")}
        for t in range(4) for name, ns in (("graph_launch", 3_000 + t), ("sync", 4_800_000)) if name != "sync" or t == 3
    ])
    out = functions.per_repeat(per_tok).set_index("name")
    assert out.loc["graph_launch", "host_ns"] == 3_001.5
    assert out.loc["sync", "host_ns"] == 1_200_000 and out.loc["sync", "calls"] == 0.25
    assert math.isnan(out.loc["sync", "gpu_ns"])

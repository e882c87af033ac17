"""What a trace of GPU work (CUPTI, nsys, Kineto records) supports on its own, with or without
tokens: the kernel summary (as ``nsys stats`` cuda_gpu_kern_sum), copies by direction and memory
kind, the idle time of each stream (split as HTA's idle-time breakdown does), and the findings of
nsys' expert rules that matter between tokens (pageable async copies, synchronize calls)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfreview.analysis.gaps import is_sync
from perfreview.trace.schema import TRACED_DEVICE_KINDS, Kind

KERNEL_WAIT_NS = 30_000  # HTA's consecutive_kernel_delay, effectively 30 µs (see the HTA reference)


def kernel_summary(events: pd.DataFrame, by_function: bool = False) -> pd.DataFrame:
    """Per kernel name: count, total, mean, median, min, max, stddev (ns) and share of kernel time,
    largest total first (cuda_gpu_kern_sum's columns); ``added_ns``: the stream time the kernels add,
    each from the later of its start and the end of the kernel before it on its stream. When kernels
    overlap (programmatic dependent launch starts one while the previous drains; it then waits inside)
    a duration counts that wait; the added time does not, and the added times of a stream sum to its
    busy time. ``by_function``: one row per function and kernel name (``function: kernel``, see
    :func:`kernel_functions`), so a kernel that several functions launch (one GEMV for o_proj and
    the down projection) is told apart; kernels with no function keep their name."""
    k = events[events["kind"] == Kind.KERNEL.value]
    if k.empty:
        return pd.DataFrame(columns=["name", "count", "total_ns", "mean_ns", "median_ns", "min_ns", "max_ns",
                                     "std_ns", "share", "added_ns", "added_share", "repeat_cv", "repeats"])
    dur = k["end_ns"] - k["start_ns"]
    label = k["name"].astype(str)
    if by_function:
        func = kernel_functions(events).loc[k.index]
        label = (func + ": " + label).where(func != "", label)
    d = dur.groupby(label)
    out = pd.DataFrame({"count": d.size(), "total_ns": d.sum(), "mean_ns": d.mean(), "median_ns": d.median(),
                        "min_ns": d.min(), "max_ns": d.max(), "std_ns": d.std().fillna(0.0)})
    out["share"] = out["total_ns"] / out["total_ns"].sum()
    added = _added_ns(k)
    out["added_ns"] = added.groupby(label).sum()
    out["added_share"] = out["added_ns"] / out["added_ns"].sum() if out["added_ns"].sum() else float("nan")
    # Repeat to repeat: each kernel's mean duration per repeat, and the CV of those means (NaN with
    # one repeat). A kernel whose time moves between repeats is where a run's spread comes from.
    per_repeat = dur.groupby([label, k["repeat"].to_numpy()]).mean()
    out["repeat_cv"] = per_repeat.groupby(level=0).std() / per_repeat.groupby(level=0).mean()
    out["repeats"] = per_repeat.groupby(level=0).size()
    return out.sort_values("total_ns", ascending=False).reset_index(names="name")


def kernel_functions(events: pd.DataFrame) -> pd.Series:
    """Per kernel row of ``events``: the function that launched it, or "". A traced kernel's function
    is the GPU range the producer wrote beside it (runner/cupti_trace.py: same repeat, track,
    correlation and times; on the graph path the function that launched it at capture)."""
    k = events[events["kind"] == Kind.KERNEL.value]
    g = events[events["kind"] == Kind.GPU_RANGE.value]
    if g.empty:
        return pd.Series("", index=k.index, dtype=object)
    keys = ["repeat", "track", "correlation", "start_ns", "end_ns"]  # one frame: the same track categories
    named = g[keys].assign(function=g["name"].astype(str).to_numpy()).drop_duplicates(keys)
    joined = k[keys].reset_index(names="row").merge(named, on=keys, how="left")  # "row": whatever the index is named
    return pd.Series(joined["function"].fillna("").to_numpy(), index=joined["row"].to_numpy(),
                     dtype=object).reindex(k.index)


def _added_ns(kernels: pd.DataFrame) -> pd.Series:
    """Per kernel: end - max(start, the latest end of the kernels before it on its stream), >= 0."""
    k = kernels.sort_values(["track", "start_ns", "end_ns"], kind="stable")
    ends = k["end_ns"].to_numpy()
    track = k["track"].astype(str).to_numpy()
    prev_end = np.empty(len(k), dtype=np.int64)
    if len(k):
        running = pd.Series(ends).groupby(track).cummax().to_numpy()  # latest end so far on the stream
        new_track = np.r_[True, track[1:] != track[:-1]]
        prev_end[:] = np.where(new_track, np.iinfo(np.int64).min, np.r_[0, running[:-1]])
    start = k["start_ns"].to_numpy()
    added = np.clip(ends - np.maximum(start, prev_end), 0, None)
    return pd.Series(added, index=k.index).reindex(kernels.index)


def copy_summary(events: pd.DataFrame) -> pd.DataFrame:
    """Per direction and memory kinds: count, bytes and time of the copies."""
    c = events[events["kind"] == Kind.MEMCPY.value]
    if c.empty:
        return pd.DataFrame(columns=["copy_kind", "mem_kind", "count", "bytes", "total_ns"])
    g = c.assign(dur=c["end_ns"] - c["start_ns"], copy_kind=c["copy_kind"].astype(str),
                 mem_kind=c["mem_kind"].astype(str)).groupby(["copy_kind", "mem_kind"])
    out = pd.DataFrame({"count": g.size(), "bytes": g["bytes"].apply(lambda b: int(b[b > 0].sum())),
                        "total_ns": g["dur"].sum()})
    return out.sort_values("total_ns", ascending=False).reset_index()


def stream_idle(events: pd.DataFrame) -> pd.DataFrame:
    """Per stream: busy and idle time between its first and last work, the idle split as HTA does:
    host_wait (the next work's launch came after the stream went idle), kernel_wait (a gap under
    30 µs), other."""
    work = events[events["kind"].isin(TRACED_DEVICE_KINDS)].sort_values("start_ns")
    if work.empty:
        return pd.DataFrame(columns=["stream", "busy_ns", "idle_ns", "host_wait_ns", "kernel_wait_ns", "other_ns"])
    launch_end = dict(zip(events.loc[events["kind"] == Kind.API.value, "correlation"],
                          events.loc[events["kind"] == Kind.API.value, "end_ns"]))
    rows = []
    for stream, w in work.groupby("stream"):
        s, e = w["start_ns"].to_numpy(), np.maximum.accumulate(w["end_ns"].to_numpy())
        gaps = np.clip(s[1:] - e[:-1], 0, None)
        launched = w["correlation"].map(launch_end).to_numpy(dtype=float)[1:]
        host = np.isfinite(launched) & (launched > e[:-1])
        small = ~host & (gaps < KERNEL_WAIT_NS)
        busy = int((w["end_ns"] - w["start_ns"]).sum())
        rows.append({"stream": int(stream), "busy_ns": busy, "idle_ns": int(gaps.sum()),
                     "host_wait_ns": int(gaps[host].sum()), "kernel_wait_ns": int(gaps[small].sum()),
                     "other_ns": int(gaps[~host & ~small].sum())})
    return pd.DataFrame(rows).sort_values("busy_ns", ascending=False).reset_index(drop=True)


@dataclass
class Finding:
    rule: str  # after nsys' expert rules
    count: int
    per_token: float | None
    advice: str


def findings(events: pd.DataFrame) -> list[Finding]:
    """Pageable async copies (cuda_memcpy_async) and synchronize calls (cuda_api_sync)."""
    out = []
    tokens = int((events["kind"] == Kind.TOKEN.value).sum()) or None
    copies = events[events["kind"] == Kind.MEMCPY.value]
    pageable = int(copies["mem_kind"].astype(str).str.contains("pageable").sum())
    if pageable:
        out.append(Finding("async copies from pageable memory", pageable, pageable / tokens if tokens else None,
                           "the driver stages them synchronously: copy from pinned buffers (PR 17795's change)"))
    api = events[events["kind"] == Kind.API.value]
    syncs = int(is_sync(api["name"].astype(str)).sum())
    if syncs:
        out.append(Finding("synchronize calls", syncs, syncs / tokens if tokens else None,
                           "each one makes the host wait for the GPU: one per token is enough"))
    return out

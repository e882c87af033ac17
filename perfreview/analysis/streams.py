"""Streams: busy time per GPU stream (union of its work) and how much ran concurrently.

Work rows are function-level ``gpu_range`` rows (and kernels/copies from traces); the token
frame rows are not work. Concurrency = time when two or more streams were busy at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfreview.analysis.intervals import union
from perfreview.analysis.tokens import GPU_FRAME_NAMES
from perfreview.trace.schema import DEVICE_KINDS


def work_rows(events: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    ev = events[events["kind"].isin(DEVICE_KINDS) & ~events["name"].isin(GPU_FRAME_NAMES)]
    return ev[ev["phase"] == phase] if phase else ev


def stream_summary(events: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    """Per (run, repeat, stream): busy ns; plus ``overlap_ns`` (>= 2 streams busy) per repeat."""
    ev = work_rows(events, phase)
    rows = []
    for (run, repeat), g in ev.groupby([ev["run"].astype(str), ev["repeat"]], observed=True):
        per_stream = {int(sid): union(sg["start_ns"].to_numpy(), sg["end_ns"].to_numpy())
                      for sid, sg in g.groupby("stream")}
        overlap = _overlap(list(per_stream.values()))
        for sid, (s, e) in per_stream.items():
            rows.append({"run": run, "repeat": repeat, "stream": sid, "busy_ns": int((e - s).sum()),
                         "overlap_ns": overlap})
    return pd.DataFrame(rows, columns=["run", "repeat", "stream", "busy_ns", "overlap_ns"])


def _overlap(streams: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Time covered by at least two of the streams' (already disjoint) intervals."""
    if len(streams) < 2:
        return 0
    s = np.concatenate([x[0] for x in streams])
    e = np.concatenate([x[1] for x in streams])
    points = np.concatenate([s, e])
    steps = np.concatenate([np.ones(len(s), int), -np.ones(len(e), int)])
    order = np.lexsort((steps, points))  # ends before starts at equal times
    points, depth = points[order], np.cumsum(steps[order])
    busy2 = depth[:-1] >= 2
    return int((np.diff(points)[busy2]).sum())


def concurrency(events: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    """Per run: streams used, median busy per stream per repeat, and the share of side-stream work
    that overlapped other work. The main stream is the busiest one of the run, whatever its id
    (Kineto's default stream is 7, ours 0)."""
    summ = stream_summary(events, phase)
    if summ.empty:
        return pd.DataFrame(columns=["run", "streams", "overlap_ns", "side_busy_ns", "overlap_share"])
    main = summ.groupby(["run", "stream"])["busy_ns"].sum().groupby(level="run").idxmax().map(lambda k: k[1])
    summ = summ.assign(side=summ["stream"] != summ["run"].map(main))
    per_rep = summ.groupby(["run", "repeat"]).agg(
        streams=("stream", "nunique"), overlap_ns=("overlap_ns", "first"),
        side_busy_ns=("busy_ns", lambda b: b[summ.loc[b.index, "side"]].sum()))
    out = per_rep.groupby("run").median()
    out["overlap_share"] = np.where(out["side_busy_ns"] > 0, out["overlap_ns"] / out["side_busy_ns"], np.nan)
    return out.reset_index()


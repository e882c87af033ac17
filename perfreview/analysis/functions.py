"""Per function: host inclusive and self time, GPU time, per token and per repeat.

Host ranges nest (token > function > sub-range); self time = a range's duration minus its
direct children's. GPU time comes from ``gpu_range`` rows of the same name (CUDA event pairs),
kernels or copies from traces are their own names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfreview.analysis.tokens import GPU_FRAME_NAMES
from perfreview.trace.schema import DEVICE_KINDS, HOST_KINDS, Kind

METRICS = ("host_ns", "self_ns", "gpu_ns")


def host_ranges_with_self(events: pd.DataFrame) -> pd.DataFrame:
    """Host ``range`` and ``api`` rows (and ``token`` rows, their parents) with ``dur_ns`` and
    ``self_ns``."""
    ev = events[events["kind"].isin([*HOST_KINDS, Kind.TOKEN.value]) & (events["depth"] >= 0)].copy()
    ev["run"] = ev["run"].astype(str)
    ev["track"] = ev["track"].astype(str)
    ev["dur_ns"] = ev["end_ns"] - ev["start_ns"]
    ev["row_id"] = np.arange(len(ev))
    ev["child_ns"] = 0
    keys = ["run", "repeat", "track"]
    for depth in range(int(ev["depth"].max()) if len(ev) else 0):
        parents = ev.loc[ev["depth"] == depth, keys + ["start_ns", "row_id"]].sort_values("start_ns")
        kids = ev.loc[ev["depth"] == depth + 1, keys + ["start_ns", "dur_ns"]].sort_values("start_ns")
        if parents.empty or kids.empty:
            continue
        linked = pd.merge_asof(kids, parents.rename(columns={"row_id": "parent"}), on="start_ns", by=keys,
                               direction="backward")
        sums = linked.groupby("parent")["dur_ns"].sum()
        ev.loc[ev["row_id"].isin(sums.index), "child_ns"] = (
            ev.loc[ev["row_id"].isin(sums.index), "row_id"].map(sums).to_numpy())
    ev["self_ns"] = ev["dur_ns"] - ev["child_ns"]
    return ev.drop(columns=["row_id", "child_ns"])


def per_token(events: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    """Per (run, repeat, token, name): host inclusive, self and GPU time summed over the calls in
    that token (a per-layer function is called once per layer), and the call count."""
    host = host_ranges_with_self(events)
    host = host[(host["phase"] == phase) & (host["kind"] != "token")]
    keys = ["run", "repeat", "token", "name"]
    h = host.assign(name=host["name"].astype(str)).groupby(keys, observed=True).agg(
        calls=("dur_ns", "size"), host_ns=("dur_ns", "sum"), self_ns=("self_ns", "sum"))
    gpu = events[events["kind"].isin(DEVICE_KINDS)
                 & (events["phase"] == phase) & ~events["name"].isin(GPU_FRAME_NAMES)]
    g = pd.DataFrame({
        "run": gpu["run"].astype(str), "repeat": gpu["repeat"], "token": gpu["token"],
        "name": gpu["name"].astype(str), "gpu_ns": gpu["end_ns"] - gpu["start_ns"],
        "is_range": (gpu["kind"] == Kind.GPU_RANGE.value).to_numpy(),
    })
    # A function's gpu_range rows (events, or its kernels attributed by CUPTI) are its GPU time; a name
    # that is only traced work (a kernel) counts its own rows. A name that is both (a function named
    # like its kernel) is not counted twice.
    ranges = g[g["is_range"]].groupby(keys)["gpu_ns"].agg(gpu_ns="sum", gpu_calls="size")
    work = g[~g["is_range"]].groupby(keys)["gpu_ns"].agg(gpu_ns="sum", gpu_calls="size")
    g = ranges.combine_first(work)
    out = h.join(g, how="outer").reset_index()
    # Device-only names (kernels, copies from a trace): count their launches instead.
    out["calls"] = out["calls"].fillna(out["gpu_calls"]).fillna(0).astype(int)
    out = out.drop(columns="gpu_calls")
    return out


def per_repeat(per_tok: pd.DataFrame) -> pd.DataFrame:
    """Per (run, repeat, name): the median over tokens of each metric: the figure compared. A function
    missing from some of the repeat's tokens (a run-ahead loop's one wait, after its last token) is
    figured as its total over the repeat per token instead: the median of the tokens that have it
    would make one wait for 128 tokens look like a 128x slower wait each token."""
    keys = ["run", "repeat", "name"]
    cols = ["calls", *METRICS]
    g = per_tok.groupby(keys)
    out = g[cols].median()
    if out.empty:
        return out.reset_index()
    tokens = per_tok.groupby(["run", "repeat"])["token"].nunique()
    n = tokens.reindex(out.index.droplevel("name")).to_numpy()
    some = (g["token"].nunique().to_numpy() < n)
    if some.any():
        totals = g[cols].sum(min_count=1)
        out.loc[some, cols] = totals.loc[some, cols].div(n[some], axis=0).to_numpy()
    return out.reset_index()


def summary(per_tok: pd.DataFrame) -> pd.DataFrame:
    """Per (run, name) over all tokens and repeats: count, total, mean, median, p5, p95, std, CV of
    the host inclusive time per token, plus median self and GPU time per token."""
    g = per_tok.groupby(["run", "name"])
    host = g["host_ns"]
    # Some functions run in only some tokens (a run-ahead loop waits once, after its last token): the
    # figures below are per token that has the call, and token_share says how many tokens do.
    all_tokens = per_tok[["run", "repeat", "token"]].drop_duplicates().groupby("run").size()
    out = pd.DataFrame({
        "calls_per_token": g["calls"].median(),
        "token_share": g.size() / all_tokens.reindex(g.size().index.get_level_values("run")).to_numpy(),
        "tokens": host.count(),
        "total_ns": host.sum(),
        "mean_ns": host.mean(),
        "median_ns": host.median(),
        "p5_ns": host.quantile(0.05),
        "p95_ns": host.quantile(0.95),
        "std_ns": host.std(),
        "self_median_ns": g["self_ns"].median(),
        "gpu_median_ns": g["gpu_ns"].median(),
    })
    out["cv"] = out["std_ns"] / out["mean_ns"]
    return out.reset_index().sort_values(["run", "total_ns"], ascending=[True, False])

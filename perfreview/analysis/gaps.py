"""Sync gaps: the device idle time between two decode tokens, and what the host did in it.

For the boundary before token t: gap = compute_start(t) - compute_end(t-1), where a token's
compute window runs from the end of its input copies to its last device work (GPU events when
the run has them; host ranges on the CPU backend). That is the span between the seed PRs'
"cudaStreamSynchronize" of token n and the "cudaGraphLaunch" of token n+1. The host time in the
window is split into: blocked in synchronize, copying inputs/outputs, launching the next token's
work, and other host work (Python, bookkeeping: nothing instrumented).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfreview.analysis.intervals import clipped_total, union
from perfreview.analysis.tokens import token_table
from perfreview.trace.schema import HOST_KINDS, TRACED_DEVICE_KINDS

COPY_NAMES = ("memcpy_h2d", "memcpy_d2h")
NOT_LAUNCH = ("token", "input_copy", "output_copy", "sync", *COPY_NAMES)
CATEGORIES = ("blocked_sync", "copies", "launch", "other")


def is_sync(names: pd.Series) -> np.ndarray:
    """Our ``sync`` ranges, cudaStreamSynchronize / cuCtxSynchronize ... calls, and tracers' sync
    records ("Stream Sync", "stream sync")."""
    return names.str.contains(r"Synchronize|(?i:\bsync\b)", regex=True).to_numpy()


def is_sync_name(name: str) -> bool:
    return bool(is_sync(pd.Series([name], dtype=str))[0])


def is_copy(names: pd.Series) -> np.ndarray:
    return (names.isin(COPY_NAMES) | names.str.match(r"^cu(da)?Memcpy")).to_numpy()


def sync_gaps(events: pd.DataFrame, tokens: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per decode->decode token boundary: gap_ns and its host breakdown (ns)."""
    tokens = token_table(events) if tokens is None else tokens
    dec = tokens[tokens["phase"] == "decode"].sort_values(["run", "repeat", "token"])
    host = events[events["kind"].isin(HOST_KINDS) & (events["phase"] == "decode")]
    host = host.assign(run=host["run"].astype(str)).sort_values(["run", "repeat", "token", "start_ns"])
    names = host["name"].astype(str)
    # Per host row: its category, once (the per-boundary work is then array slicing only).
    cat = np.full(len(host), -1)
    # The runner's own function ranges are launches; an imported trace's NVTX ranges may frame the token.
    ours = ((host["source"] == "host") & (host["kind"] == "range") & (host["depth"] == 1)).to_numpy() \
        & ~names.isin(NOT_LAUNCH).to_numpy()
    cat[ours | names.str.contains("Launch", regex=False).to_numpy()] = 2  # launching the next token's work
    cat[is_copy(names)] = 1
    cat[is_sync(names)] = 0
    s_all, e_all = host["start_ns"].to_numpy(), host["end_ns"].to_numpy()
    keys = list(zip(host["run"], host["repeat"], host["token"]))
    spans: dict[tuple, tuple[int, int]] = {}
    for i, k in enumerate(keys):
        lo_hi = spans.get(k)
        spans[k] = (lo_hi[0], i + 1) if lo_hi else (i, i + 1)
    rows = []
    for (run, repeat), g in dec.groupby(["run", "repeat"]):
        toks = g["token"].to_numpy()
        ends = g["compute_end"].to_numpy()
        starts = g["compute_start"].to_numpy()
        for i in range(1, len(toks)):
            if toks[i] != toks[i - 1] + 1 or np.isnan(ends[i - 1]) or np.isnan(starts[i]):
                continue
            lo, hi = int(ends[i - 1]), int(starts[i])
            first, last = spans.get((run, repeat, toks[i - 1])), spans.get((run, repeat, toks[i]))
            sel = slice((first or last or (0, 0))[0], (last or first or (0, 0))[1])
            parts = _breakdown(cat[sel], s_all[sel], e_all[sel], lo, hi)
            rows.append({"run": run, "repeat": repeat, "token": int(toks[i]), "gap_ns": max(0, hi - lo),
                         "source": g["window_source"].iloc[0], **parts})
    cols = ["run", "repeat", "token", "gap_ns", "source", *(f"{c}_ns" for c in CATEGORIES)]
    return pd.DataFrame(rows, columns=cols)


def _breakdown(cat: np.ndarray, s: np.ndarray, e: np.ndarray, lo: int, hi: int) -> dict[str, int]:
    if hi <= lo or len(cat) == 0:
        return {f"{c}_ns": 0 for c in CATEGORIES}
    inside = (e > lo) & (s < hi)
    cat, s, e = cat[inside], s[inside], e[inside]
    parts = [clipped_total(s[cat == k], e[cat == k], lo, hi) for k in (0, 1, 2)]
    known = cat >= 0
    covered = clipped_total(*union(s[known], e[known]), lo, hi)
    return {"blocked_sync_ns": parts[0], "copies_ns": parts[1], "launch_ns": parts[2],
            "other_ns": (hi - lo) - covered}


def per_repeat(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per (run, repeat): median gap and the median of each breakdown part (ns)."""
    cols = ["gap_ns", *(f"{c}_ns" for c in CATEGORIES)]
    return gaps.groupby(["run", "repeat"])[cols].median().reset_index()


def counts_per_token(events: pd.DataFrame) -> pd.DataFrame:
    """Synchronize calls and copies per decode token (median over tokens), per run."""
    ev = events[events["kind"].isin(HOST_KINDS) & (events["phase"] == "decode")]
    names = ev["name"].astype(str)
    per_tok = pd.DataFrame({
        "run": ev["run"].astype(str), "repeat": ev["repeat"], "token": ev["token"],
        "syncs": is_sync(names), "copies": is_copy(names),
    }).groupby(["run", "repeat", "token"])[["syncs", "copies"]].sum()
    return per_tok.groupby("run").median().reset_index()


def traced_gaps(events: pd.DataFrame) -> pd.DataFrame:
    """GPU idle between decode tokens from traced GPU work (CUPTI, nsys, Kineto records): the first
    kernel/copy of token n+1 minus the last one of token n, per boundary; empty without such rows."""
    dev = events[events["kind"].isin(TRACED_DEVICE_KINDS) & (events["phase"] == "decode") & (events["token"] >= 0)]
    if dev.empty:
        return pd.DataFrame(columns=["run", "repeat", "token", "gap_ns"])
    span = dev.groupby([dev["run"].astype(str), "repeat", "token"], observed=True).agg(
        first=("start_ns", "min"), last=("end_ns", "max")).reset_index()
    span = span.sort_values(["run", "repeat", "token"])
    prev = span.groupby(["run", "repeat"])[["token", "last"]].shift(1)
    ok = prev["token"].notna() & (span["token"] == prev["token"] + 1)
    out = span[ok].assign(gap_ns=(span["first"] - prev["last"])[ok].clip(lower=0))
    return out[["run", "repeat", "token", "gap_ns"]].reset_index(drop=True)

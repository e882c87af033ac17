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

from perfreview.analysis.intervals import union_lengths
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
    """One row per decode->decode token boundary: gap_ns and its host breakdown (ns). All
    boundaries at once (an imported trace has 100k+ of them): each host row of tokens t-1 and t is
    clipped to the window of boundary t, and the union per (boundary, category) is summed."""
    tokens = token_table(events) if tokens is None else tokens
    dec = tokens[tokens["phase"] == "decode"].sort_values(["run", "repeat", "token"]).reset_index(drop=True)
    cols = ["run", "repeat", "token", "gap_ns", "source", *(f"{c}_ns" for c in CATEGORIES)]
    same = (dec["run"] == dec["run"].shift()) & (dec["repeat"] == dec["repeat"].shift())
    lo, hi = dec["compute_end"].shift(), dec["compute_start"]
    ok = (same & (dec["token"] == dec["token"].shift() + 1) & lo.notna() & hi.notna()).to_numpy()
    bounds = pd.DataFrame({"run": dec["run"][ok], "repeat": dec["repeat"][ok], "token": dec["token"][ok],
                           "lo": lo[ok].astype("int64"), "hi": hi[ok].astype("int64"),
                           "source": dec["window_source"][ok]}).reset_index(drop=True)
    if bounds.empty:
        return pd.DataFrame(columns=cols)
    host = events[events["kind"].isin(HOST_KINDS) & (events["phase"] == "decode")]
    host = pd.DataFrame({"run": host["run"].astype(str), "repeat": host["repeat"].to_numpy(),
                         "token": host["token"].to_numpy(), "s": host["start_ns"].to_numpy(),
                         "e": host["end_ns"].to_numpy(), "cat": _categories(host)})
    b = bounds.reset_index(names="b")[["run", "repeat", "token", "b", "lo", "hi"]]
    rows = pd.concat([host.merge(b, on=["run", "repeat", "token"]),  # token t's rows
                      host.merge(b.assign(token=b["token"] - 1), on=["run", "repeat", "token"])])
    s = rows["s"].clip(lower=rows["lo"], upper=rows["hi"]).to_numpy()
    e = rows["e"].clip(lower=rows["lo"], upper=rows["hi"]).to_numpy()
    cat, grp = rows["cat"].to_numpy(), rows["b"].to_numpy()
    keep = e > s
    width = (bounds["hi"] - bounds["lo"]).clip(lower=0).to_numpy()
    part = {k: union_lengths(grp[keep & (cat == k)], s[keep & (cat == k)], e[keep & (cat == k)], len(bounds))
            for k in (0, 1, 2)}
    known = keep & (cat >= 0)
    covered = union_lengths(grp[known], s[known], e[known], len(bounds))
    return pd.DataFrame({"run": bounds["run"], "repeat": bounds["repeat"], "token": bounds["token"].astype(int),
                         "gap_ns": width, "source": bounds["source"], "blocked_sync_ns": part[0],
                         "copies_ns": part[1], "launch_ns": part[2], "other_ns": width - covered})[cols]


def _categories(host: pd.DataFrame) -> np.ndarray:
    """Per host row: 0 blocked in a sync, 1 copying, 2 launching the next token's work, -1 other.
    Decided once per distinct name (a category column), then spread to the rows."""
    names = host["name"].astype("category")
    uniq = pd.Series(names.cat.categories.astype(str))
    codes = names.cat.codes.to_numpy()
    launch = np.asarray(uniq.str.contains("Launch", regex=False))[codes]
    # The runner's own function ranges are launches; an imported trace's NVTX ranges may frame the token.
    ours = ((host["source"] == "host") & (host["kind"] == "range") & (host["depth"] == 1)).to_numpy() \
        & ~np.asarray(uniq.isin(NOT_LAUNCH))[codes]
    cat = np.full(len(host), -1)
    cat[ours | launch] = 2
    cat[np.asarray(is_copy(uniq))[codes]] = 1
    cat[np.asarray(is_sync(uniq))[codes]] = 0
    return cat


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

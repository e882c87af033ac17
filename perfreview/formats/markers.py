"""Token markers and host nesting: cutting another program's timeline into tokens at a call or range
that happens once per token, blocks of tokens as repeats, and the nesting depth of host ranges.
Shared by every importer (nsys SQLite, Kineto)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perfreview.trace.schema import HOST_KINDS, TRACED_DEVICE_KINDS, Kind, Phase


class TokenError(ValueError):
    pass


def block_repeats(events: pd.DataFrame, blocks: int, path: Path) -> pd.DataFrame:
    """Number consecutive runs of tokens as repeats 0..blocks-1 ("batch means"): one trace then
    gives ``blocks`` samples per figure for a comparison. Blocks of a trace are less independent
    than separate runs (slow drifts span blocks); the run's metadata says so."""
    n = int(events["token"].max()) + 1 if (events["token"] >= 0).any() else 0
    if blocks < 2 or n < 2 * blocks:
        raise TokenError(f"{path}: {n} tokens cannot make {blocks} blocks of at least 2 tokens")
    rep = np.where(events["token"] >= 0, events["token"].to_numpy() * blocks // n, -1)
    return events.assign(repeat=rep.astype("int16"))


def cut_tokens(frame: pd.DataFrame, marker: str, path: Path, source: str = "nsys") -> pd.DataFrame:
    """Token i runs from the i-th occurrence of ``marker`` (host side) to the next; every row gets
    its token (device rows through the API call that launched them, else by start time), host
    ``token`` rows frame them, and ranges nest one level below (unknown depths count as 0).
    ``frame`` has the schema's columns but not yet its dtypes (``schema.from_records`` follows)."""
    host = frame[frame["kind"].isin(HOST_KINDS)]  # host-side rows, whatever the trace names its tracks
    marks = host[host["name"] == marker].sort_values("start_ns")
    if marks.empty:  # the marker may be a GPU annotation only (a range the profiler put on a stream)
        marks = frame[(frame["kind"] == Kind.GPU_ANNOTATION.value) & (frame["name"] == marker)].sort_values("start_ns")
    if len(marks) < 2:
        raise TokenError(f"{path}: token marker {marker!r} occurs {len(marks)} time(s); need one per token")
    starts = marks["start_ns"].to_numpy()
    token = np.searchsorted(starts, frame["start_ns"].to_numpy(), side="right") - 1
    api = (frame["kind"] == Kind.API).to_numpy()
    by_corr = dict(zip(frame.loc[api, "correlation"], token[api]))
    device = frame["kind"].isin(TRACED_DEVICE_KINDS).to_numpy()
    corr_tok = frame["correlation"].map(by_corr).to_numpy(dtype=float)
    token = np.where(device & ~np.isnan(corr_tok), np.nan_to_num(corr_tok, nan=-1).astype(int), token)
    frame = frame.assign(token=token, phase=np.where(token >= 0, Phase.DECODE.value, ""), repeat=0)
    ends = np.append(starts[1:], frame["end_ns"].max())
    track = str(marks["track"].iloc[0])
    tokens = pd.DataFrame({"kind": Kind.TOKEN.value, "source": source, "name": "token", "track": track,
                           "start_ns": starts, "end_ns": ends, "token": np.arange(len(starts)),
                           "phase": Phase.DECODE.value, "repeat": 0, "depth": 0})
    nested = frame["kind"].isin(HOST_KINDS) & (frame["token"] >= 0)
    frame.loc[nested, "depth"] = frame.loc[nested, "depth"].fillna(0).clip(lower=0) + 1
    return pd.concat([frame, tokens], ignore_index=True).sort_values("start_ns", kind="stable").reset_index(drop=True)


def nesting_depths(ranges: pd.DataFrame) -> np.ndarray:
    """Nesting depth of each host range on its track (0 = outermost), from the intervals alone: a
    range starts inside the last open one that has not ended (sorted by start, longer first on
    ties). Traces that do not record depth (nsys NVTX, Kineto ops) get their self times from this."""
    depth = np.zeros(len(ranges), dtype=int)
    if len(ranges) == 0:
        return depth
    frame = pd.DataFrame({"track": ranges["track"].astype(str).to_numpy(), "start": ranges["start_ns"].to_numpy(),
                          "end": ranges["end_ns"].to_numpy()})
    order = np.lexsort((frame["start"] - frame["end"], frame["start"], frame["track"]))
    track, start, end = frame["track"].to_numpy(), frame["start"].to_numpy(), frame["end"].to_numpy()
    stack: list[tuple[str, int]] = []
    for i in order:
        while stack and (stack[-1][0] != track[i] or stack[-1][1] <= start[i]):
            stack.pop()
        depth[i] = len(stack)
        stack.append((track[i], end[i]))
    return depth

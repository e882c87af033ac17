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
    named = (frame["name"] == marker).to_numpy()
    marks = frame.loc[named & frame["kind"].isin(HOST_KINDS).to_numpy(), ["track", "start_ns"]]
    if marks.empty:  # the marker may be a GPU annotation only (a range the profiler put on a stream)
        marks = frame.loc[named & (frame["kind"] == Kind.GPU_ANNOTATION.value).to_numpy(), ["track", "start_ns"]]
    if len(marks):  # one track's marks (several ranks each mark the same steps: the lowest track counts)
        marks = marks[marks["track"].astype(str) == min(marks["track"].astype(str))]
    marks = marks.sort_values("start_ns")
    if len(marks) < 2:
        raise TokenError(f"{path}: token marker {marker!r} occurs {len(marks)} time(s); need one per token")
    starts = marks["start_ns"].to_numpy()
    token = np.searchsorted(starts, frame["start_ns"].to_numpy(), side="right") - 1
    token = _by_launch(frame, token)
    phase = pd.Categorical.from_codes((token >= 0).astype(np.int8), categories=["", Phase.DECODE.value])
    frame = frame.assign(token=token, phase=phase, repeat=0)
    ends = np.append(starts[1:], frame["end_ns"].max())
    tokens = pd.DataFrame({"kind": Kind.TOKEN.value, "source": source, "name": "token",
                           "track": str(marks["track"].iloc[0]), "start_ns": starts, "end_ns": ends,
                           "token": np.arange(len(starts)), "phase": Phase.DECODE.value, "repeat": 0, "depth": 0})
    nested = (frame["kind"].isin(HOST_KINDS) & (frame["token"] >= 0)).to_numpy()
    depth = pd.to_numeric(frame["depth"], errors="coerce").fillna(0).to_numpy(np.int64)
    frame["depth"] = np.where(nested, np.maximum(depth, 0) + 1, depth)
    both = pd.concat([frame, _like(tokens, frame)], ignore_index=True)
    return both.take(np.argsort(both["start_ns"].to_numpy(), kind="stable")).reset_index(drop=True)


def _like(rows: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``frame``'s categorical columns as categoricals too (so that a concat keeps them
    categorical instead of turning millions of rows into objects), with the new values added."""
    rows = rows.copy()
    for col in rows.columns:
        if col in frame.columns and isinstance(frame[col].dtype, pd.CategoricalDtype):
            new = [v for v in pd.unique(rows[col].astype(str)) if v not in frame[col].cat.categories]
            if new:
                frame[col] = frame[col].cat.add_categories(new)
            rows[col] = pd.Categorical(rows[col].astype(str), dtype=frame[col].dtype)
    return rows


def _by_launch(frame: pd.DataFrame, token: np.ndarray) -> np.ndarray:
    """Device rows take the token of the API call that launched them (same correlation id)."""
    corr = pd.to_numeric(frame["correlation"], errors="coerce").fillna(-1).to_numpy(np.int64)
    api = (frame["kind"] == Kind.API.value).to_numpy() & (corr >= 0)
    order = np.argsort(corr[api], kind="stable")
    api_corr, api_tok = corr[api][order], token[api][order]
    device = frame["kind"].isin(TRACED_DEVICE_KINDS).to_numpy() & (corr >= 0)
    if not len(api_corr) or not device.any():
        return token
    at = np.clip(np.searchsorted(api_corr, corr[device]), 0, len(api_corr) - 1)
    hit = api_corr[at] == corr[device]
    out = token.copy()
    out[np.flatnonzero(device)[hit]] = api_tok[at[hit]]
    return out


def nesting_depths(ranges: pd.DataFrame) -> np.ndarray:
    """Nesting depth of each host range on its track (0 = outermost), from the intervals alone: the
    number of ranges of its track that started before it (sorted by start, longer first on ties)
    and have not ended by its start. For properly nested ranges this is the depth a stack walk
    gives; it is computed per track with sorts and binary searches (millions of Kineto ops).
    Traces that do not record depth (nsys NVTX, Kineto ops) get their self times from this."""
    depth = np.zeros(len(ranges), dtype=np.int64)
    if len(ranges) == 0:
        return depth
    track = pd.Categorical(ranges["track"].astype(str)).codes
    start, end = ranges["start_ns"].to_numpy(np.int64), ranges["end_ns"].to_numpy(np.int64)
    order = np.lexsort((start - end, start, track))
    bounds = np.flatnonzero(np.diff(track[order])) + 1
    for rows in np.split(order, bounds):
        ended = np.searchsorted(np.sort(end[rows]), start[rows], side="right")
        depth[rows] = np.arange(len(rows)) - ended
    return np.maximum(depth, 0)

"""Interval arithmetic shared by the analyses (unions, overlaps, clipping), on int64 ns arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd


def union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping [start, end) intervals; returns sorted disjoint intervals."""
    if len(starts) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(starts, kind="stable")
    s, e = np.asarray(starts)[order], np.asarray(ends)[order]
    run_end = np.maximum.accumulate(e)
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > run_end[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.maximum.reduceat(e, idx) if len(idx) else e[:0]


def total(starts: np.ndarray, ends: np.ndarray) -> int:
    s, e = union(starts, ends)
    return int((e - s).sum())


def clipped_total(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int) -> int:
    """Length of the union of intervals inside [lo, hi]."""
    if hi <= lo or len(starts) == 0:
        return 0
    s = np.clip(np.asarray(starts), lo, hi)
    e = np.clip(np.asarray(ends), lo, hi)
    keep = e > s
    return total(s[keep], e[keep])



def union_lengths(group: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group id 0..n_groups-1: the length of the union of its intervals (all groups at once:
    sorted by group and start, an interval adds what reaches past the furthest end before it)."""
    out = np.zeros(n_groups, dtype=np.int64)
    if len(group) == 0:
        return out
    order = np.lexsort((starts, group))
    g, s, e = group[order], np.asarray(starts)[order], np.asarray(ends)[order]
    reach = pd.Series(e).groupby(g).cummax().to_numpy()
    before = np.empty_like(reach)
    before[1:] = reach[:-1]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    before[first] = np.iinfo(np.int64).min
    np.add.at(out, g, np.maximum(0, e - np.maximum(s, before)))
    return out

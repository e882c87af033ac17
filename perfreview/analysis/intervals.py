"""Interval arithmetic shared by the analyses (unions, overlaps, clipping), on int64 ns arrays."""

from __future__ import annotations

import numpy as np


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


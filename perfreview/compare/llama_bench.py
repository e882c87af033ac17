"""llama-bench results of two builds -> one :class:`Row` per test both files have: each repetition's
t/s is a sample, and the same rule as every other comparison decides."""

from __future__ import annotations

from typing import Any

import numpy as np

from perfreview.compare import stats
from perfreview.compare.comparison import Comparison, MismatchError, NoiseThreshold, Row, decide


def compare_tests(pairs: list[tuple[str, list[float], list[float]]], unmatched: int = 0,
                  theta: float = stats.DEFAULT_THETA, alpha: float = 0.05) -> Comparison:
    """``pairs``: (test name, A's per-repetition t/s, B's) for every test in both files."""
    if not pairs:
        raise MismatchError("no llama-bench test is in both files (same model and parameters)")
    rows = []
    for name, sa, sb in pairs:
        va, vb = np.asarray(sa, float), np.asarray(sb, float)
        eff = stats.effect(va, vb)
        rows.append(Row(name=name, kind="headline", metric="", unit="t/s", higher_is_better=True, resolution=None,
                        a=float(np.median(va)), b=float(np.median(vb)), n_a=len(va), n_b=len(vb),
                        ratio=eff.ratio, ci_low=eff.ci_low, ci_high=eff.ci_high, p=eff.p_value,
                        mean_a=float(va.mean()), std_a=_std(va), mean_b=float(vb.mean()), std_b=_std(vb)))
    noise = NoiseThreshold(theta, floor=theta)
    decide(rows, noise, alpha)
    n = min(min(r.n_a, r.n_b) for r in rows)
    notes: list[str] = [] if n >= stats.MIN_REPEATS else [
        f"only {n} repetitions per test (llama-bench -r {n}); use -r 20 or more for intervals that can decide 1%"]
    if unmatched:
        notes.append(f"{unmatched} test(s) of A have no match in B and are left out")
    return Comparison(rows, noise, n, n, notes)


def _std(v: Any) -> float:
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

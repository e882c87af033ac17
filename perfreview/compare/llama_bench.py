"""llama-bench results of two builds -> one :class:`Row` per test both files have.

Each file is one llama-bench process per build, so the repetitions are the only units there are:
they are compared with Welch's t on their logs (the sides were not interleaved), and the review
says that a process's own offset is not captured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfreview.compare import stats
from perfreview.compare.comparison import RUNS, Comparison, Design, MismatchError, Row, decide

NOTE = ("llama-bench repetitions of one process per build are the units (Welch's t on their logs): an offset of a "
        "whole process (clocks, placement) is not captured; run each build several times to include it")


def compare_tests(pairs: list[tuple[Any, Any]], unmatched: int = 0,
                  threshold: float = stats.DEFAULT_THRESHOLD) -> Comparison:
    """``pairs``: the two sides of every test in both files (perfreview.formats.llama_bench.Test:
    name, per-repetition t/s, per-record means). Each test is a primary figure of its own (α = 0.04):
    llama-bench users read them one by one."""
    if not pairs:
        raise MismatchError("no llama-bench test is in both files (same model and parameters)")
    design = Design(RUNS, threshold, stats.ALPHA_PRIMARY)
    rows = []
    approximate = 0
    for ta, tb in pairs:
        sa, sb = ta.summary(), tb.summary()  # (mean, SD, n) of the pooled repetitions
        va, vb = np.asarray(ta.samples_ts or ta.avg_ts, float), np.asarray(tb.samples_ts or tb.avg_ts, float)
        if ta.has_samples and tb.has_samples:
            est = stats.unpaired(va, vb, design.alpha_primary)
        else:  # a file without per-repetition samples: the interval from mean ± SD, marked approximate
            approximate += 1
            est = stats.unpaired_summary(sa, sb, design.alpha_primary)
        rows.append(Row.measured((ta.name, "headline", ""), "t/s", True, None, va, vb, est, "primary",
                                 mean_a=ta.mean_ts, std_a=sa[1], mean_b=tb.mean_ts, std_b=sb[1]))
    decide(rows, design)
    n = min(r.n for r in rows)
    notes: list[str] = [NOTE]
    if approximate:
        notes.append(f"{approximate} test(s) compared from mean ± SD only (a CSV, SQL or markdown file has no "
                     f"per-repetition samples; {pairs[0][0].assumed_repetitions} repetitions assumed, llama-bench's "
                     "default -r): those intervals are approximate; write -o json or jsonl for exact ones")
    if n < stats.MIN_UNITS:
        notes.append(f"only {n} repetitions per test (llama-bench -r {n}); use -r 20 or more for intervals "
                     "that can decide 1%")
    if unmatched:
        notes.append(f"{unmatched} test(s) of A have no match in B and are left out")
    return Comparison(rows, design, n, notes)

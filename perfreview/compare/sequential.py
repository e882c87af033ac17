"""The review's rule on arrays of per-round values: one primary figure looked at sequentially (10,
20, 40 ... rounds, Pocock α'), the other figures decided once at the stopping look as one
Benjamini-Hochberg family. ``ab`` applies the same rule to live runs; this form replays recorded
rounds offline and drives the simulation tests (thousands of trials from real or modelled noise)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfreview.compare import stats
from perfreview.compare.comparison import ROUNDS, Design, Row, decide


@dataclass
class Outcome:
    verdict: str  # the primary figure's
    rounds: int
    look: int
    stopped_because: str
    decided_family: int  # family figures called improved or regressed at the stopping look
    ratio: float  # the primary figure's estimate at the stopping look

    @property
    def any_decided(self) -> bool:
        """Any improved/regressed verdict in the whole review (what an A/A must not show)."""
        return self.verdict in (stats.IMPROVED, stats.REGRESSED) or self.decided_family > 0


def rows_for(a: dict[str, np.ndarray], b: dict[str, np.ndarray], primary: str, design: Design,
             higher_is_better: dict[str, bool] | None = None) -> list[Row]:
    """Paired rows (one per figure) decided by the review's rule."""
    rows = []
    for name in a:
        role = "primary" if name == primary else "family"
        est = stats.paired(a[name], b[name], design.alpha(role))
        rows.append(Row.measured((name, "headline", ""), "", (higher_is_better or {}).get(name, True), None,
                                 a[name], b[name], est, role))
    decide(rows, design)
    return rows


def review(a: dict[str, np.ndarray], b: dict[str, np.ndarray], primary: str, threshold: float = stats.DEFAULT_THRESHOLD,
           seconds_per_round: float = 0.0, budget_s: float = math.inf,
           higher_is_better: dict[str, bool] | None = None) -> Outcome:
    """Looks at the first 10, 20, 40 ... rounds of ``a``/``b`` (figure -> per-round values, paired by
    index) until the primary figure is decided, the rounds run out or the budget would be passed."""
    available = len(a[primary])
    design = Design(ROUNDS, threshold, stats.ALPHA_POCOCK)
    row, n, look, why = None, 0, 0, ""
    for look, n in enumerate((k for k in stats.LOOKS if k <= available), start=1):
        design.look = look
        row = rows_for({primary: a[primary][:n]}, {primary: b[primary][:n]}, primary, design, higher_is_better)[0]
        why = stats.stop_reason(row.verdict, n, seconds_per_round, budget_s)
        nxt = stats.next_look(n)
        if not why and (nxt is None or nxt > available):
            why = f"the recorded rounds ran out after {n}"
        if why:
            break
    if row is None:
        raise ValueError(f"{available} rounds: fewer than the first look ({stats.LOOKS[0]})")
    family = rows_for({k: v[:n] for k, v in a.items()}, {k: v[:n] for k, v in b.items()}, primary, design,
                      higher_is_better)
    decided = sum(r.decided for r in family if r.role == "family")
    return Outcome(row.verdict, n, look, why, decided, row.ratio)

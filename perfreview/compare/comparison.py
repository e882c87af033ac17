"""Two groups of runs -> one :class:`Row` per figure (headlines and every function) with a verdict.

A figure is one value per repeat (perfreview.analysis.samples). Repeats of every run on a side are
pooled as independent samples. Numbers only: the report turns rows into text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfreview.analysis import samples
from perfreview.compare import stats
from perfreview.trace.runs import Run

# Fields that must agree between the two sides (unless --force); the first that differs is named.
MATCH_FIELDS = ("preset", "tokens", "prompt_tokens", "timing", "device.name", "device.backend")

FigureKey = tuple[str, str, str]  # (name, kind, metric)


class MismatchError(ValueError):
    pass


@dataclass
class Row:
    """One figure compared: medians, effect with its interval, test, verdict."""

    name: str
    kind: str  # headline or function
    metric: str  # "" for headlines; host, self or GPU for functions
    unit: str
    higher_is_better: bool
    resolution: float | None  # timer resolution in the figure's unit
    a: float  # median of side A's samples
    b: float
    n_a: int
    n_b: int
    ratio: float
    ci_low: float
    ci_high: float
    p: float
    cv_a: float = math.nan
    q: float = math.nan
    theta: float = stats.DEFAULT_THETA
    verdict: str = stats.INCONCLUSIVE
    repeats_needed: int | None = None
    # llama-bench rows: mean and sample stddev of each side, as llama-bench prints them
    mean_a: float = math.nan
    std_a: float = math.nan
    mean_b: float = math.nan
    std_b: float = math.nan

    @property
    def key(self) -> FigureKey:
        return (self.name, self.kind, self.metric)

    @property
    def impact(self) -> float:
        """For ranking: absolute per-token time moved (µs) for functions; % change for headlines."""
        return abs(self.b - self.a) if self.kind == "function" else abs(self.ratio - 1) * 100

    @property
    def decided(self) -> bool:
        return self.verdict in (stats.IMPROVED, stats.REGRESSED)


@dataclass
class OneSided:
    """A function found on one side only (HTA's TraceDiff "added"/"deleted"): listed, not tested."""

    name: str
    metric: str
    median: float
    unit: str


@dataclass
class NoiseThreshold:
    """θ for every figure, and where it came from (an A/A pair's interval, or the default)."""

    theta: float  # θ of tokens/s
    per_figure: dict[FigureKey, float] = field(default_factory=dict)
    floor: float = stats.DEFAULT_THETA
    aa_row: Row | None = None  # the A/A pair's tokens/s row, when θ came from one

    def of(self, key: FigureKey) -> float:
        return max(self.floor, self.per_figure.get(key, self.floor))


@dataclass
class Comparison:
    rows: list[Row]
    noise: NoiseThreshold
    n_a: int
    n_b: int
    warnings: list[str] = field(default_factory=list)
    only_a: list[OneSided] = field(default_factory=list)
    only_b: list[OneSided] = field(default_factory=list)

    @property
    def theta(self) -> float:
        return self.noise.theta

    def row(self, name: str, kind: str = "headline", metric: str = "") -> Row | None:
        return next((r for r in self.rows if r.key == (name, kind, metric)), None)


def _field(meta: Any, dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        value = (value or {}).get(part)
    return value


def check_compatible(a: list[Run], b: list[Run], force: bool = False) -> list[str]:
    """Raise MismatchError naming the first differing field; with ``force``, return warnings."""
    notes = []
    ref = a[0]
    for run in a[1:] + b:
        for f in MATCH_FIELDS:
            if _field(run.meta, f) != _field(ref.meta, f):
                msg = (f"runs differ in {f}: {_field(ref.meta, f)!r} ({ref.path.name}) vs "
                       f"{_field(run.meta, f)!r} ({run.path.name})")
                if not force:
                    raise MismatchError(msg + "; use --force to compare anyway")
                notes.append(msg + " (compared anyway: --force)")
    return notes


def compare(a: list[Run], b: list[Run], noise: NoiseThreshold | None = None, force: bool = False,
            alpha: float = 0.05) -> Comparison:
    """Every figure both sides have, with θ per figure from ``noise`` (default: 0.5% everywhere)."""
    noise = noise or NoiseThreshold(stats.DEFAULT_THETA)
    notes = check_compatible(a, b, force)
    fa = pd.concat([samples.samples(r) for r in a])
    fb = pd.concat([samples.samples(r) for r in b])
    n_a = fa[["run", "repeat"]].drop_duplicates().shape[0]
    n_b = fb[["run", "repeat"]].drop_duplicates().shape[0]
    notes += design_notes(a, b, min(n_a, n_b))
    keys = ["name", "kind", "metric"]
    ga = {k: g for k, g in fa.groupby(keys, sort=False)}
    gb = {k: g for k, g in fb.groupby(keys, sort=False)}
    rows = []
    for key in [k for k in ga if k in gb]:
        va, vb = ga[key]["value"].to_numpy(), gb[key]["value"].to_numpy()
        first = ga[key].iloc[0]
        if np.median(va) == 0:
            continue
        resolution = first["resolution"]
        resolution = None if resolution is None or not math.isfinite(resolution) else float(resolution)
        eff = stats.effect(va, vb)
        rows.append(Row(
            name=key[0], kind=key[1], metric=key[2], unit=first["unit"],
            higher_is_better=bool(first["higher_is_better"]), resolution=resolution,
            a=float(np.median(va)), b=float(np.median(vb)), n_a=len(va), n_b=len(vb),
            cv_a=float(np.std(va, ddof=1) / np.mean(va)) if len(va) > 1 else math.nan,
            ratio=eff.ratio, ci_low=eff.ci_low, ci_high=eff.ci_high, p=eff.p_value))

    def only(mine: dict, other: dict) -> list[OneSided]:
        return [OneSided(k[0], k[2], float(np.median(g["value"])), g["unit"].iloc[0])
                for k, g in mine.items() if k not in other and k[1] == "function"]

    decide(rows, noise, alpha)
    return Comparison(rows, noise, n_a, n_b, notes, only(ga, gb), only(gb, ga))


def design_notes(a: list[Run], b: list[Run], n: int) -> list[str]:
    """What the reader must know about how the repeats were made before trusting the rows."""
    notes = []
    if n < stats.MIN_REPEATS:
        notes.append(f"only {n} repeats on a side (fewer than {stats.MIN_REPEATS}): "
                     "intervals are wide and verdicts rarely decisive")
    notes += clock_notes(a, b)
    if any(r.meta.repeats_are.startswith("blocks") for r in a + b):
        notes.append("repeats here are blocks of consecutive tokens of one trace (batch means), not separate runs: "
                     "drift that spans blocks is not averaged out, so intervals may be too narrow")
    for side, runs in (("A", a), ("B", b)):
        ignored = sorted({s for r in runs for s in r.meta.switches_without_effect})
        if ignored:
            backend = runs[0].meta.device.get("backend")
            notes.append(f"side {side}: switch(es) {', '.join(ignored)} have no effect on the {backend} backend "
                         "(GPU-only); they were recorded, not run")
    return notes


def decide(rows: list[Row], noise: NoiseThreshold, alpha: float = 0.05) -> None:
    """Fill each row's q (Benjamini-Hochberg across ``rows``), θ, verdict and repeats needed."""
    for row, q in zip(rows, stats.benjamini_hochberg([r.p for r in rows])):
        row.q = q
        row.theta = noise.of(row.key)
        row.verdict = stats.verdict(row.ratio, row.ci_low, row.ci_high, q, row.theta, row.higher_is_better,
                                    None if row.resolution is None else abs(row.b - row.a),
                                    row.resolution or 0.0, alpha)
        row.repeats_needed = (stats.repeats_needed(row.ratio, row.ci_low, row.ci_high, min(row.n_a, row.n_b),
                                                   row.theta)
                              if row.verdict == stats.INCONCLUSIVE else None)


def clock_notes(a: list[Run], b: list[Run]) -> list[str]:
    def median_clock(runs: list[Run]) -> float | None:
        clocks = [r.sm_clock_mhz for run in runs for r in run.meta.per_repeat if r.sm_clock_mhz]
        return float(np.median(clocks)) if clocks else None

    ca, cb = median_clock(a), median_clock(b)
    if ca and cb and abs(cb / ca - 1) > 0.01:
        return [f"SM clocks differ between the sides: median {ca:.0f} MHz (A) vs {cb:.0f} MHz (B); "
                "part of any change may be the clock"]
    return []


def noise_threshold(aa: Comparison | None, floor: float = stats.DEFAULT_THETA) -> NoiseThreshold:
    """θ: ``floor`` (0.5%), raised per figure to the half-width of that figure's interval in an A/A
    comparison (two runs of the same config) when one is given."""
    if aa is None:
        return NoiseThreshold(floor, floor=floor)
    per_figure = {r.key: stats.noise_from_aa(r.ci_low, r.ci_high, floor) for r in aa.rows}
    tps = per_figure.get(("tokens_per_s", "headline", ""), floor)
    return NoiseThreshold(tps, per_figure, floor, aa.row("tokens_per_s"))

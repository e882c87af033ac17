"""Two groups of runs -> one :class:`Row` per figure (headlines and every function) with a verdict.

A figure is one value per repeat (perfreview.analysis.samples). How the repeats pair up decides the
test (perfreview.compare.stats): runs that were interleaved in rounds pair round by round; runs of
separate processes (``ab rev=``) pair process by process; runs that were not interleaved are
compared per run (Welch on the logs of per-run values), never repeat by repeat, because repeats of
one process share its offset. Numbers only: the report turns rows into text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfreview.analysis import samples
from perfreview.compare import stats
from perfreview.trace import figures
from perfreview.trace.runs import Run

# Fields that must agree between the two sides (unless --force); the first that differs is named.
MATCH_FIELDS = ("preset", "tokens", "prompt_tokens", "timing", "trace", "device.name", "device.backend")
# The unit a comparison pairs or pools: rounds of one process, processes, whole runs, or blocks of
# consecutive tokens of one imported trace (batch means: the only units a single trace has).
ROUNDS, PROCESSES, RUNS, BLOCKS = "rounds", "processes", "runs", "blocks"

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
    a: float  # median of side A's per-unit values
    b: float
    n: int  # units compared (rounds, processes or runs per side)
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    p: float
    sd: float  # SD of the per-unit log-differences
    method: str
    role: str = "family"  # primary, family (BH-tested) or shown (a near-duplicate, not tested)
    q: float = math.nan
    verdict: str = stats.INCONCLUSIVE
    smaller_than_threshold: bool = False
    units_needed: int | None = None
    # llama-bench rows: mean and sample stddev of each side, as llama-bench prints them
    mean_a: float = math.nan
    std_a: float = math.nan
    mean_b: float = math.nan
    std_b: float = math.nan

    @classmethod
    def measured(cls, key: FigureKey, unit: str, higher_is_better: bool, resolution: float | None,
                 va: np.ndarray, vb: np.ndarray, est: stats.Estimate, role: str, **extra: Any) -> "Row":
        """A row from both sides' per-unit values and the estimate the rule made of them."""
        return cls(name=key[0], kind=key[1], metric=key[2], unit=unit, higher_is_better=higher_is_better,
                   resolution=resolution, a=float(np.median(va)), b=float(np.median(vb)), n=est.n, ratio=est.ratio,
                   ci_low=est.ci_low, ci_high=est.ci_high, confidence=est.confidence, p=est.p, sd=est.sd,
                   method=est.method, role=role, **extra)

    @property
    def estimate(self) -> stats.Estimate:
        return stats.Estimate(self.ratio, self.ci_low, self.ci_high, self.p, self.n, self.sd, self.method,
                              self.confidence)

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
class Design:
    """How the comparison was made and decided."""

    unit: str  # rounds, processes or runs
    threshold: float  # Δ
    alpha_primary: float
    alpha_family: float = stats.ALPHA_FAMILY
    look: int | None = None  # sequential: which look (1-based) this is, of len(stats.LOOKS)
    seconds_per_unit: float | None = None  # device time one round took (for the budget estimate)
    stopped_because: str = ""

    def alpha(self, role: str) -> float:
        """The primary figure's own α, or the family's."""
        return self.alpha_primary if role == "primary" else self.alpha_family


@dataclass
class Comparison:
    rows: list[Row]
    design: Design
    n: int
    warnings: list[str] = field(default_factory=list)
    only_a: list[OneSided] = field(default_factory=list)
    only_b: list[OneSided] = field(default_factory=list)

    def row(self, name: str, kind: str = "headline", metric: str = "") -> Row | None:
        return next((r for r in self.rows if r.key == (name, kind, metric)), None)

    @property
    def primary(self) -> Row | None:
        return self.row(figures.PRIMARY)


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


def pairing(a: list[Run], b: list[Run], processes: bool = False) -> str:
    """ROUNDS when the two sides are single runs interleaved with each other (one process, rounds);
    PROCESSES when the caller ran them as alternating processes (``ab rev=``); RUNS otherwise."""
    if len(a) == 1 and len(b) == 1 and b[0].id in a[0].meta.interleaved_with:
        return ROUNDS
    if processes and len(a) == len(b):
        return PROCESSES
    if len(a) == 1 and len(b) == 1 and all(r.meta.repeats_are.startswith("blocks") for r in a + b):
        return BLOCKS
    return RUNS


def unit_values(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Per figure and unit, one value: the repeat itself (rounds), or the geometric mean of a run's
    repeats (processes, runs); index (name, kind, metric, unit id)."""
    keys = ["name", "kind", "metric"]
    if unit in (ROUNDS, BLOCKS):
        return frame.set_index(keys + ["repeat"])["value"]
    logs = frame.assign(value=np.log(frame["value"].clip(lower=1e-300)))
    return np.exp(logs.groupby(keys + ["run_index"])["value"].mean())


def compare(a: list[Run], b: list[Run], threshold: float = stats.DEFAULT_THRESHOLD, force: bool = False,
            alpha_primary: float = stats.ALPHA_PRIMARY, processes: bool = False, look: int | None = None) -> Comparison:
    """Every figure both sides have, decided with the rule of perfreview.compare.stats."""
    notes = check_compatible(a, b, force)
    unit = pairing(a, b, processes)
    fa = pd.concat([samples.samples(r).assign(run_index=i) for i, r in enumerate(a)])
    fb = pd.concat([samples.samples(r).assign(run_index=i) for i, r in enumerate(b)])
    ua, ub = unit_values(fa, unit).sort_index(), unit_values(fb, unit).sort_index()
    info = pd.concat([fa, fb]).drop_duplicates(["name", "kind", "metric"]).set_index(["name", "kind", "metric"])
    design = Design(unit, threshold, alpha_primary, look=look, seconds_per_unit=seconds_per_round(a + b, unit))
    rows, machine = [], None
    for key in info.index:
        if key not in ua.index.droplevel(-1) or key not in ub.index.droplevel(-1):
            continue
        va, vb = ua.loc[key], ub.loc[key]
        if unit in (ROUNDS, PROCESSES):  # paired: the units both sides have
            common = va.index.intersection(vb.index)
            va, vb = va.loc[common], vb.loc[common]
        va, vb = va.to_numpy(float), vb.to_numpy(float)
        if len(va) == 0 or len(vb) == 0 or np.median(va) <= 0 or np.any(va <= 0) or np.any(vb <= 0):
            continue
        rows.append(_row(key, info.loc[key], va, vb, design))
        if unit == ROUNDS and rows[-1].role == "primary":  # both sides' round by round: the machine's speed
            machine = (np.sqrt(va * vb), figures.HEADLINES[key[0]])
    decide(rows, design)
    n = max((r.n for r in rows), default=0)
    notes += design_notes(a, b, design, n)
    if machine is not None:
        notes += step_notes(*machine)

    def only(mine: pd.Series, other: pd.Series) -> list[OneSided]:
        theirs = set(other.index.droplevel(-1))
        out = []
        for k in dict.fromkeys(mine.index.droplevel(-1)):
            if k not in theirs and k[1] == "function":
                out.append(OneSided(k[0], k[2], float(np.median(mine.loc[k])), figures.FUNCTION_UNIT))
        return out

    return Comparison(rows, design, n, notes, only(ua, ub), only(ub, ua))


def _row(key: FigureKey, info: pd.Series, va: np.ndarray, vb: np.ndarray, design: Design) -> Row:
    role = _role(key)
    alpha = design.alpha(role)
    paired = design.unit in (ROUNDS, PROCESSES)
    est = stats.paired(va, vb, alpha) if paired else stats.unpaired(va, vb, alpha)
    res = info["resolution"]
    return Row.measured(key, info["unit"], bool(info["higher_is_better"]),
                        None if res is None or not math.isfinite(res) else float(res), va, vb, est, role)


def _role(key: FigureKey) -> str:
    fig = figures.HEADLINES.get(key[0]) if key[1] == "headline" else None
    if fig is not None and fig.primary:
        return "primary"
    if fig is not None and fig.shadows:
        return "shown"
    return "family"


def decide(rows: list[Row], design: Design) -> None:
    """Verdicts: the primary figure on its own α, the family through Benjamini-Hochberg at α_family,
    near-duplicates shown with their interval but not tested."""
    family = [r for r in rows if r.role == "family"]
    for row, q in zip(family, stats.benjamini_hochberg([r.p for r in family])):
        row.q = q
    for row in rows:
        if row.role == "shown":
            row.verdict = stats.SHOWN
            continue
        significant = row.role == "primary" or row.q <= design.alpha_family
        v = stats.verdict(row.estimate, design.threshold, row.higher_is_better, row.a, row.resolution, significant)
        row.verdict, row.smaller_than_threshold = v.verdict, v.smaller_than_threshold
        if row.verdict == stats.INCONCLUSIVE:
            row.units_needed = stats.units_needed(row.estimate, design.threshold, design.alpha(row.role))


def seconds_per_round(runs: list[Run], unit: str) -> float | None:
    """Wall time one unit of every side took (a round: one repeat of each side)."""
    walls = [[r.wall_ns for r in run.meta.per_repeat if r.wall_ns] for run in runs]
    if not all(walls):
        return None
    if unit == ROUNDS:
        return float(sum(np.median(w) for w in walls)) / 1e9
    return float(sum(np.sum(w) for w in walls) / len(runs) * 2) / 1e9


def design_notes(a: list[Run], b: list[Run], design: Design, n: int) -> list[str]:
    """What the reader must know about how the units were made before trusting the rows."""
    notes = []
    if design.unit == RUNS:
        # what would decide it: for our own runs, rounds (ab); for imported traces, ab cannot rerun someone else's
        # program, so blocks of each trace's tokens (import --blocks) or more traces a side
        imported = any(r.meta.imported for r in a + b)
        remedy = ("import each trace with --blocks N, or two or more traces a side"
                  if imported else "store two or more runs per side, or use perfreview ab")
        notes.append(f"the sides were not interleaved: each run is one unit ({len(a)} vs {len(b)} runs), compared "
                     "with Welch's t on the logs of per-run values; repeats inside one process are not independent "
                     "samples. " + ("Import each trace with --blocks N to compare blocks of its tokens" if imported
                                    else "Interleave the sides (perfreview ab) to compare round by round"))
        if min(len(a), len(b)) < 2:
            notes.append("one run per side cannot separate a change from one process's offset: no verdict is possible "
                         f"({remedy})")
    elif n < stats.MIN_UNITS:
        notes.append(f"only {n} {design.unit} (fewer than {stats.MIN_UNITS}): Student t on the log-differences, "
                     "wide intervals")
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


def step_notes(both: np.ndarray, figure: figures.Figure) -> list[str]:
    """A note where the primary figure of both sides together (the geometric mean of a round's two values) stepped
    once over the rounds: the card's state changed during the run (an H100 1b token went 1.5% slower a few seconds
    into a process's load, reports/bench/footprint_h100_7437051)."""
    step = stats.named_step(both)
    if step is None:
        return []
    return [f"the machine's speed stepped during the run: {figure.title} of both sides together "
            f"{100 * (step.ratio - 1):+.1f}% from round {step.at + 1} of {step.n} on "
            f"({step.before:.4g} -> {step.after:.4g} {figure.unit}; permutation test of the round order, p = "
            f"{step.p:.3f}). The rounds pair the sides, so the comparison holds; a measurement of one side at a time "
            "(or a short probe) sees whichever state it ran in"]


def clock_notes(a: list[Run], b: list[Run]) -> list[str]:
    def median_clock(runs: list[Run]) -> float | None:
        clocks = [r.sm_clock_mhz for run in runs for r in run.meta.per_repeat if r.sm_clock_mhz]
        return float(np.median(clocks)) if clocks else None

    ca, cb = median_clock(a), median_clock(b)
    if ca and cb and abs(cb / ca - 1) > 0.01:
        return [f"SM clocks differ between the sides: median {ca:.0f} MHz (A) vs {cb:.0f} MHz (B); "
                "part of any change may be the clock"]
    return []

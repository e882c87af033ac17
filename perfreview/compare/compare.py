"""Two groups of runs -> one row per figure (headlines and every function) with a verdict.

A figure is one value per repeat: a headline (tokens/s, median token latency, median sync gap,
energy per token) or, for each function, the median over the repeat's tokens of the time the
function took per token (host inclusive, host self, GPU). Repeats of every run on a side are
pooled as independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfreview.analysis import functions, headline, of_run
from perfreview.compare import stats
from perfreview.trace.runs import Run

# Fields that must agree between the two sides (unless --force); the first that differs is named.
MATCH_FIELDS = ("preset", "tokens", "prompt_tokens", "timing", "device.name", "device.backend")
# Timer resolution per figure source, ns: a change must be at least twice this to count.
HOST_RESOLUTION_NS = 100.0  # perf_counter_ns around Python calls: call overhead, not the tick
EVENT_RESOLUTION_NS = 500.0  # cudaEventElapsedTime, "around 0.5 microseconds"
METRIC_LABELS = {"host_ns": "host", "self_ns": "self", "gpu_ns": "GPU"}


class MismatchError(ValueError):
    pass


Thetas = dict  # (name, kind, metric) -> θ for that figure, from an A/A pair


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    theta: float
    theta_source: str
    n_a: int
    n_b: int
    warnings: list[str] = field(default_factory=list)
    only_a: list[dict[str, Any]] = field(default_factory=list)  # functions A has and B does not
    only_b: list[dict[str, Any]] = field(default_factory=list)


def _field(meta: dict[str, Any], dotted: str) -> Any:
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


def figures(run: Run) -> pd.DataFrame:
    """Long table: repeat, name, kind, metric, value, unit, higher_is_better, resolution."""
    rows = []
    heads = of_run.headlines(run)
    gpu_run = (run.meta.get("device") or {}).get("backend") == "cupy"
    for name, (unit, higher) in headline.HEADLINES.items():
        res = {"median_token_ms": HOST_RESOLUTION_NS / 1e6, "time_to_first_token_ms": HOST_RESOLUTION_NS / 1e6,
               "median_sync_gap_us": (EVENT_RESOLUTION_NS if gpu_run else HOST_RESOLUTION_NS) / 1e3}.get(name)
        for rep, value in zip(heads["repeat"], heads[name]):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append((f"{run.id}", rep, name, "headline", "", float(value), unit, higher, res))
    per_rep = functions.per_repeat(of_run.functions_per_token(run))
    # A leaf range's self time is its inclusive time: one row for it, not two (and one test fewer).
    leaf = per_rep.groupby("name")[["host_ns", "self_ns"]].apply(lambda g: bool((g["host_ns"] == g["self_ns"]).all()))
    per_rep.loc[per_rep["name"].map(leaf), "self_ns"] = np.nan
    for metric, label in METRIC_LABELS.items():
        res = (EVENT_RESOLUTION_NS if metric == "gpu_ns" else HOST_RESOLUTION_NS) / 1e3
        sub = per_rep[["repeat", "name", metric]].dropna()
        for rep, name, value in sub.itertuples(index=False):
            rows.append((run.id, rep, name, "function", label, float(value) / 1e3, "us", False, res))
    return pd.DataFrame(rows, columns=["run", "repeat", "name", "kind", "metric", "value", "unit",
                                       "higher_is_better", "resolution"])


def compare(a: list[Run], b: list[Run], theta: float = stats.DEFAULT_THETA, theta_source: str = "default",
            force: bool = False, alpha: float = 0.05, thetas: Thetas | None = None) -> Comparison:
    """``theta`` applies to every figure; ``thetas`` (from :func:`noise_threshold`) raises it per
    figure to that figure's A/A interval."""
    notes = check_compatible(a, b, force)
    fa = pd.concat([figures(r) for r in a])
    fb = pd.concat([figures(r) for r in b])
    n_a = fa[["run", "repeat"]].drop_duplicates().shape[0]
    n_b = fb[["run", "repeat"]].drop_duplicates().shape[0]
    if min(n_a, n_b) < stats.MIN_REPEATS:
        notes.append(f"only {min(n_a, n_b)} repeats on a side (fewer than {stats.MIN_REPEATS}): "
                     "intervals are wide and verdicts rarely decisive")
    notes += clock_notes(a, b)
    if any(r.meta.get("repeats_are", "").startswith("blocks") for r in a + b):
        notes.append("repeats here are blocks of consecutive tokens of one trace (batch means), not separate runs: "
                     "drift that spans blocks is not averaged out, so intervals may be too narrow")
    for side, runs in (("A", a), ("B", b)):
        ignored = sorted({s for r in runs for s in r.meta.get("switches_without_effect", [])})
        if ignored:
            backend = (runs[0].meta.get("device") or {}).get("backend")
            notes.append(f"side {side}: switch(es) {', '.join(ignored)} have no effect on the {backend} backend "
                         "(GPU-only); they were recorded, not run")
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
        rows.append({
            "name": key[0], "kind": key[1], "metric": key[2], "unit": first["unit"],
            "higher_is_better": bool(first["higher_is_better"]), "resolution": resolution,
            "a": float(np.median(va)), "b": float(np.median(vb)), "n_a": len(va), "n_b": len(vb),
            "cv_a": float(np.std(va, ddof=1) / np.mean(va)) if len(va) > 1 else math.nan,
            "ratio": eff.ratio, "ci_low": eff.ci_low, "ci_high": eff.ci_high, "p": eff.p_value,
        })
    def only(mine: dict, other: dict) -> list[dict[str, Any]]:  # HTA's TraceDiff "added"/"deleted"
        return [{"name": k[0], "metric": k[2], "median": float(np.median(g["value"])), "unit": g["unit"].iloc[0]}
                for k, g in mine.items() if k not in other and k[1] == "function"]

    decide(rows, theta, thetas, alpha)
    return Comparison(rows, theta, theta_source, n_a, n_b, notes, only(ga, gb), only(gb, ga))


def decide(rows: list[dict[str, Any]], theta: float, thetas: Thetas | None = None, alpha: float = 0.05) -> None:
    """Fill each row's q (Benjamini-Hochberg across ``rows``), θ, verdict, repeats needed and impact."""
    for row, q in zip(rows, stats.benjamini_hochberg([r["p"] for r in rows])):
        row["q"] = q
        res = row["resolution"]
        row["theta"] = max(theta, (thetas or {}).get((row["name"], row["kind"], row["metric"]), theta))
        row["verdict"] = stats.verdict(row["ratio"], row["ci_low"], row["ci_high"], q, row["theta"],
                                       row["higher_is_better"], None if res is None else abs(row["b"] - row["a"]),
                                       res or 0.0, alpha)
        row["repeats_needed"] = (stats.repeats_needed(row["ratio"], row["ci_low"], row["ci_high"],
                                                      min(row["n_a"], row["n_b"]), row["theta"])
                                 if row["verdict"] == stats.INCONCLUSIVE else None)
        row["impact"] = _impact(row)


def _impact(row: dict[str, Any]) -> float:
    """Absolute per-token time moved (us) for functions; % change for headlines (for ranking)."""
    if row["kind"] == "function":
        return abs(row["b"] - row["a"])
    return abs(row["ratio"] - 1) * 100


def clock_notes(a: list[Run], b: list[Run]) -> list[str]:
    def median_clock(runs: list[Run]) -> float | None:
        clocks = [r.get("sm_clock_mhz") for run in runs for r in run.meta.get("per_repeat", [])]
        clocks = [c for c in clocks if c]
        return float(np.median(clocks)) if clocks else None

    ca, cb = median_clock(a), median_clock(b)
    if ca and cb and abs(cb / ca - 1) > 0.01:
        return [f"SM clocks differ between the sides: median {ca:.0f} MHz (A) vs {cb:.0f} MHz (B); "
                "part of any change may be the clock"]
    return []


def noise_threshold(aa: Comparison | None, floor: float = stats.DEFAULT_THETA) -> tuple[float, str, Thetas]:
    """θ: ``floor`` (0.5%), raised per figure to the half-width of that figure's interval in an A/A
    comparison (two runs of the same config) when one is given. Returns (θ of tokens/s, a line
    saying where θ came from, θ per figure)."""
    if aa is None:
        return floor, f"default {floor:.1%}", {}
    thetas = {(r["name"], r["kind"], r["metric"]): stats.noise_from_aa(r["ci_low"], r["ci_high"], floor)
              for r in aa.rows}
    tps = thetas.get(("tokens_per_s", "headline", ""), floor)
    row = next((r for r in aa.rows if r["name"] == "tokens_per_s"), None)
    where = (f"A/A tokens/s interval [{(row['ci_low'] - 1) * 100:+.2f}%, {(row['ci_high'] - 1) * 100:+.2f}%]"
             if row else "A/A pair")
    return tps, (f"per figure from the A/A pair, never below {floor:.1%}; tokens/s: {where} -> θ = {tps:.2%}"), thetas


def compare_llama_bench(a: list[dict[str, Any]], b: list[dict[str, Any]], theta: float = stats.DEFAULT_THETA,
                        alpha: float = 0.05) -> Comparison:
    """llama-bench records (perfreview.importers.llama_bench) of two builds -> one row per matched
    test: each repetition's t/s is a sample; same rule as every other comparison."""
    from perfreview.importers import llama_bench as lb

    pairs = lb.pair(a, b)
    if not pairs:
        raise MismatchError("no llama-bench test is in both files (same model and parameters)")
    rows = []
    for ra, rb in pairs:
        va, vb = np.asarray(ra["samples_ts"], float), np.asarray(rb["samples_ts"], float)
        eff = stats.effect(va, vb)
        rows.append({"name": f"{ra.get('model_type', '?')} {lb.test_name(ra)}", "kind": "headline", "metric": "",
                     "unit": "t/s", "higher_is_better": True, "resolution": None, "a": float(np.median(va)),
                     "b": float(np.median(vb)), "n_a": len(va), "n_b": len(vb), "ratio": eff.ratio,
                     "ci_low": eff.ci_low, "ci_high": eff.ci_high, "p": eff.p_value,
                     "mean_a": float(va.mean()), "std_a": float(va.std(ddof=1)) if len(va) > 1 else 0.0,
                     "mean_b": float(vb.mean()), "std_b": float(vb.std(ddof=1)) if len(vb) > 1 else 0.0})
    decide(rows, theta, alpha=alpha)
    n = min(min(r["n_a"], r["n_b"]) for r in rows)
    notes = [] if n >= stats.MIN_REPEATS else [
        f"only {n} repetitions per test (llama-bench -r {n}); use -r 20 or more for intervals that can decide 1%"]
    unmatched = len(a) - len(pairs)
    if unmatched:
        notes.append(f"{unmatched} test(s) of A have no match in B and are left out")
    return Comparison(rows, theta, f"default {theta:.1%}", n, n, notes)

"""Summaries of a group of runs that the reports show beside the comparison: throughput as
llama-bench prints it, the gap between tokens and its host breakdown, stream concurrency, the spread
of each headline over repeats, and the per-function table. Numbers only; the report renders them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfreview.analysis import functions, gaps, samples, spread, streams
from perfreview.trace import figures
from perfreview.trace.runs import Run


@dataclass
class Throughput:
    mean: float  # t/s over repeats, as llama-bench prints it
    std: float


@dataclass
class GapSummary:
    n: int  # token boundaries
    source: str  # what timed the compute windows (cuda_event, kernels, host)
    gap_us: float
    blocked_sync_us: float
    copies_us: float
    launch_us: float
    other_us: float
    syncs: float  # synchronize calls per token
    copies: float  # copies per token
    traced_gap_us: float = math.nan  # the same gap from traced GPU work (CUPTI/nsys/Kineto records)


@dataclass
class StreamSummary:
    streams: int
    overlap_share: float
    overlap_us: float


@dataclass
class Spread:
    median: float
    p5: float
    p95: float


def throughput(runs: list[Run]) -> Throughput:
    tps = np.concatenate([samples.headlines(r)["tokens_per_s"].to_numpy(dtype=float) for r in runs])
    return Throughput(float(tps.mean()), float(tps.std(ddof=1)) if len(tps) > 1 else 0.0)


def gap_summary(runs: list[Run]) -> GapSummary:
    g = pd.concat([samples.sync_gaps(r) for r in runs])
    events = pd.concat([r.events for r in runs])
    counts, traced = gaps.counts_per_token(events), gaps.traced_gaps(events)

    def med(col: str) -> float:
        return float(g[col].median() / 1e3) if len(g) else math.nan

    return GapSummary(
        n=len(g), source=str(g["source"].iloc[0]) if len(g) else "n/a", gap_us=med("gap_ns"),
        blocked_sync_us=med("blocked_sync_ns"), copies_us=med("copies_ns"), launch_us=med("launch_ns"),
        other_us=med("other_ns"),
        syncs=float(counts["syncs"].median()) if len(counts) else math.nan,
        copies=float(counts["copies"].median()) if len(counts) else math.nan,
        traced_gap_us=float(traced["gap_ns"].median() / 1e3) if len(traced) else math.nan,
    )


def stream_summary(runs: list[Run]) -> StreamSummary:
    events = pd.concat([r.events for r in runs])
    phase = "decode" if (events["phase"] == "decode").any() else ""  # a trace not cut into tokens: all of it
    conc = streams.concurrency(events, phase)
    if conc.empty:
        return StreamSummary(0, math.nan, math.nan)
    return StreamSummary(int(conc["streams"].max()), float(conc["overlap_share"].median()),
                         float(conc["overlap_ns"].median() / 1e3))


def headline_spread(run: Run) -> dict[str, Spread]:
    """Per headline figure: median, 5th and 95th percentile over the run's repeats."""
    heads = samples.headlines(run)
    out = {}
    for name in figures.HEADLINES:
        values = heads[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        out[name] = (Spread(float(np.median(values)), float(np.percentile(values, 5)),
                            float(np.percentile(values, 95))) if len(values) else Spread(math.nan, math.nan, math.nan))
    return out


def spread_sources(run: Run) -> spread.SpreadSources | None:
    """Where the run's repeat-to-repeat spread comes from (host stalls against the GPU's spread)."""
    return spread.spread_sources(samples.token_table(run), samples.headlines(run), queued=run.meta.runs_ahead)


def function_table(run: Run) -> pd.DataFrame:
    """functions.summary of the run with plain string names."""
    summ = functions.summary(samples.functions_per_token(run))
    return summ.assign(name=summ["name"].astype(str))


@dataclass(frozen=True)
class InjectedDelay:
    """The busy wait a run added per token: what was asked, and what the device spent on it."""

    asked_us: float  # inject_delay_us plus the calibrated part
    slowdown_pct: float  # inject_slowdown_pct (NaN when only a fixed delay was asked)
    token_us: float  # the token time the calibration measured just before the run (NaN without one)
    measured_us: float  # median GPU time per token of inject_delay (host time on the CPU backend; NaN: not recorded)
    measured_share: float  # measured_us over the median GPU time per token (token latency on the host)
    on_host: bool = False  # the CPU backend: the delay is a busy wait of the host, timed there


def injected_delay(run: Run, table: pd.DataFrame | None = None,
                   heads: dict[str, Spread] | None = None) -> InjectedDelay | None:
    """None when the run injected nothing. ``table``/``heads``: function_table(run) and
    headline_spread(run), when the caller has them already."""
    meta = run.meta
    fixed = float(meta.switches_in_effect.get("inject_delay_us") or 0)
    calibrated = meta.injected or {}
    asked = fixed + float(calibrated.get("delay_us") or 0)
    if not asked:
        return None
    table = function_table(run) if table is None else table
    row = table[table["name"] == "inject_delay"]
    measured = float(row["gpu_median_ns"].iloc[0]) / 1e3 if len(row) else math.nan
    on_host = meta.device.get("backend") == "numpy"  # the CPU backend's delay is a busy wait on the host
    if on_host and len(row):
        measured = float(row["median_ns"].iloc[0]) / 1e3
    heads = headline_spread(run) if heads is None else heads
    token_us = heads["median_token_ms" if on_host else "median_gpu_token_ms"].median * 1e3
    return InjectedDelay(asked, float(calibrated.get("slowdown_pct", math.nan)),
                         float(calibrated.get("token_us", math.nan)), measured,
                         measured / token_us if token_us else math.nan, on_host)

"""Comparison charts: per-figure % change with its interval, and token latency distributions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


from perfreview.plots.style import save, short  # noqa: E402  (sets the backend and plain-text labels first)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402
import numpy as np  # noqa: E402

from perfreview.analysis import samples  # noqa: E402
from perfreview.compare.stats import SHOWN  # noqa: E402
from perfreview.trace import figures  # noqa: E402
from perfreview.trace.runs import Run  # noqa: E402

VERDICT_COLORS = {"improved": "#2ca02c", "regressed": "#d62728", "no change": "#7f7f7f",
                  "inconclusive": "#ff9f1c", "shown, not tested": "#9ecae1"}


def rows_with_intervals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare's JSON rows that the deltas chart can draw: a ratio and its interval."""
    return [r for r in rows if r.get("ratio") is not None and r.get("ci_low") is not None
            and r.get("ci_high") is not None]


def deltas(rows: list[dict[str, Any]], out: Path, top: int = 25, threshold: float | None = None,
           dpi: int = 110, size: tuple[float, float] | None = None) -> Path:
    """Horizontal bars of % change (B/A - 1) with 95% interval whiskers, coloured by verdict,
    sorted by impact (headline figures first). ``rows`` are compare's JSON rows."""
    usable = rows_with_intervals(rows)
    if not usable:
        raise ValueError("no comparison rows with an interval to draw")
    heads = [r for r in usable if r["kind"] == "headline"]
    funcs = sorted((r for r in usable if r["kind"] == "function"),
                   key=lambda r: -abs((r["b"] or 0) - (r["a"] or 0)))
    chosen = (heads + funcs)[:top]
    labels = [short(figures.title(r["name"])) + (f" ({r['metric']})" if r.get("metric") else "") for r in chosen]
    change = np.array([(r["ratio"] - 1) * 100 for r in chosen])
    lo = np.array([(r["ci_low"] - 1) * 100 for r in chosen])
    hi = np.array([(r["ci_high"] - 1) * 100 for r in chosen])
    y = np.arange(len(chosen))
    fig, ax = plt.subplots(figsize=size or (9, 1.2 + 0.32 * len(chosen)))
    ax.barh(y, change, color=[VERDICT_COLORS.get(r["verdict"], "#7f7f7f") for r in chosen], alpha=0.85)
    ax.errorbar(change, y, xerr=[change - lo, hi - change], fmt="none", ecolor="black", capsize=3, lw=1)
    for yi, r in zip(y, chosen):  # each tested row's own Δ band: "no change" means its interval inside it
        t = r.get("threshold") or threshold
        if t and r.get("verdict") in VERDICT_COLORS and r.get("verdict") != SHOWN:
            ax.fill_betweenx([yi - 0.45, yi + 0.45], -t * 100, t * 100, color="#bbbbbb", alpha=0.45, lw=0,
                             zorder=0)
    ax.axvline(0, color="black", lw=0.8)
    span = float(np.nanmax(np.abs(np.concatenate([lo, hi])))) if len(chosen) else 0.0
    if span > 20:  # a few huge changes would flatten every small one: linear within ±5%, log beyond
        ax.set_xscale("symlog", linthresh=5, linscale=1.5)
        # plain numbers: log ticks are mathtext by default, and pictures parse no math (names are text)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    limits = _x_limits(change, lo, hi, max((r.get("threshold") or threshold or 0) for r in chosen) * 100,
                       symlog=span > 20)
    ax.set_xlim(*limits)
    if span > 20:
        ax.xaxis.set_major_locator(FixedLocator(_symlog_ticks(*limits)))
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    scale_note = " (linear within ±5%, log beyond)" if span > 20 else ""
    # a function row's interval can miss 0 and its colour still say inconclusive: the verdict also takes the
    # family's q (Benjamini-Hochberg) and twice the timer's resolution, as the review's methodology says
    ax.set_xlabel("change B vs A (%), interval of the review's rule\n(throughput at its own α, the rest at 99%)"
                  + scale_note + "\ncolour: the verdict, which also weighs the family's q and the timer's resolution",
                  fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=v) for v, c in VERDICT_COLORS.items()]
    if any(r.get("threshold") or threshold for r in chosen):
        handles.append(plt.Rectangle((0, 0), 1, 1, color="#bbbbbb", alpha=0.45, label="±Δ of a tested row"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, out, dpi)
    plt.close(fig)
    return Path(out)


def _x_limits(change: np.ndarray, lo: np.ndarray, hi: np.ndarray, band: float, symlog: bool) -> tuple[float, float]:
    """Every bar, whisker and Δ band inside the axis. Matplotlib's own limits drop a whisker to -100% beside
    one to +1e6% (its margin stops at the bars' sticky edge at 0), hiding every bar and whisker below 0."""
    values = np.concatenate([change, lo, hi, [0.0, -band, band]])
    left, right = float(np.nanmin(values)), float(np.nanmax(values))
    if symlog:  # a pad that reads the same at every decade
        return (left * 1.6 - 1 if left < 0 else -1.0), (right * 1.6 + 1 if right > 0 else 1.0)
    pad = 0.06 * (right - left) or 0.1
    return left - pad, right + pad


def _symlog_ticks(left: float, right: float, most: int = 5) -> list[float]:
    """0 and whole decades from 1 out to each limit, every k-th decade so that a side has at most ``most`` labels
    (every decade of an interval to +1e9% runs the labels into each other); 2 and 5 too within two decades."""
    ticks = [0.0]
    for sign, reach in ((-1, -left), (1, right)):
        decades = int(math.floor(math.log10(reach))) + 1 if reach >= 1 else 0
        step = max(1, math.ceil(decades / most))
        mantissas = (1, 2, 5) if decades <= 2 else (1,)  # a short axis would read 1, 10 and nothing else
        ticks += [sign * m * 10.0 ** e for e in range(0, decades, step) for m in mantissas
                  if m * 10.0 ** e <= reach]
    return sorted(ticks)


def latency(runs: list[Run], out: Path, labels: list[str] | None = None, dpi: int = 110,
            size: tuple[float, float] | None = None) -> Path:
    """Distribution of decode token latency (host wall time per token, ms; the GPU's time per token for
    a run-ahead loop, as in the headline table) per run, medians marked."""
    data, names = [], []
    for i, run in enumerate(runs):
        t = samples.token_table(run)
        d = t[t["phase"] == "decode"]["gpu_ns" if run.meta.runs_ahead else "host_ns"].to_numpy() / 1e6
        if len(d) == 0:
            raise ValueError(f"{run.path}: no decode tokens")
        data.append(d)
        names.append(short(labels[i] if labels else run.meta.config_label or run.id))
    fig, ax = plt.subplots(figsize=size or (8, 1.6 + 0.9 * len(runs)))
    parts = ax.violinplot(data, orientation="horizontal", showextrema=False)
    for body in parts["bodies"]:
        body.set_alpha(0.35)
    ax.boxplot(data, orientation="horizontal", widths=0.15, showfliers=False)
    for i, (d, run) in enumerate(zip(data, runs), start=1):
        # the table's statistic: the median over repeats of each repeat's median token latency
        med = float(np.nanmedian(samples.headlines(run)["median_token_ms"].to_numpy(float)))
        ax.plot([med], [i], "o", color="black", ms=4)
        ax.annotate(f"median {med:.3f} ms", (med, i + 0.3), fontsize=8, ha="center")
    ax.set_yticks(range(1, len(runs) + 1))
    ax.set_yticklabels(names, fontsize=8)
    medians = [float(np.median(d)) for d in data]
    log = max(medians) / max(min(medians), 1e-9) > 5  # sides an order of magnitude apart
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # pictures parse no math text
    else:  # a few stray tokens would squeeze every distribution into a corner: show to the 99.5th percentile
        ax.set_xlim(0, 1.15 * max(float(np.percentile(d, 99.5)) for d in data))
    ahead = any(run.meta.runs_ahead for run in runs)
    ax.set_xlabel("decode token latency (ms, host wall clock" + ("; a run-ahead loop: the GPU's time per token" if ahead
                                                                  else "")
                  + ")\ndot: median of per-repeat medians, as in the table" + (", log scale" if log else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, out, dpi)
    plt.close(fig)
    return Path(out)

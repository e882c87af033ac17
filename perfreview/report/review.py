"""Comparison rows + run metadata -> the PR review (templates/review.md.j2), one run ->
templates/run.md.j2, llama-bench rows -> templates/llama_bench.md.j2. Renders, never computes:
the numbers come from perfreview.compare and perfreview.analysis.summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfreview.analysis import gaps, summary, traced
from perfreview.compare import overhead, stats
from perfreview.compare.comparison import Comparison
from perfreview.report import render
from perfreview.trace.runs import Run


@dataclass
class Side:
    """How a side is named in the review."""

    label: str
    config: str
    build: str
    commit: str
    runs: list[str]
    switches: dict[str, Any]


def describe_side(runs: list[Run]) -> Side:
    m = runs[0].meta
    labels = sorted({r.meta.build or r.meta.config_label for r in runs})
    return Side(label=", ".join(labels), config=m.config_label, build=m.build, commit=render.commit(m.git),
                runs=[r.path.name for r in runs],
                switches={k: v for k, v in m.switches_in_effect.items() if v not in (False, 0)})


def conclusion(cmp: Comparison, a: str, b: str) -> str:
    tps = cmp.primary
    if tps is None:
        return "No throughput figure could be compared."
    a, b = render.md(a), render.md(b)
    d = cmp.design
    bounded = math.isfinite(tps.ci_low) and math.isfinite(tps.ci_high)
    if bounded:
        head = (f"{b} vs {a}: decode throughput {render.pct_ci(tps.ratio, tps.ci_low, tps.ci_high)} "
                f"({tps.confidence:.1%} interval, {render.count(tps.n, d.unit)})")
    else:  # one unit on a side: a change, but nothing to put an interval on
        head = (f"{b} vs {a}: decode throughput {render.pct(tps.ratio)} with no interval "
                f"({render.count(tps.n, d.unit)})")
    if tps.verdict in (stats.IMPROVED, stats.REGRESSED):
        kind = "speedup" if tps.verdict == stats.IMPROVED else "slowdown"
        text = f"{head}: a real {kind}; the interval excludes no change"
        text += (f", though it may be smaller than the ±{d.threshold:.1%} threshold." if tps.smaller_than_threshold
                 else f" and lies beyond ±{d.threshold:.1%}.")
    elif tps.verdict == stats.NO_CHANGE:
        text = f"{head}: no change; the interval lies inside the ±{d.threshold:.1%} threshold."
    else:
        need = ""
        if tps.units_needed:
            secs = f" (about {tps.units_needed * d.seconds_per_unit:.0f} s of measuring)" if d.seconds_per_unit else ""
            need = f" About {tps.units_needed} {d.unit} would decide it{secs}."
        why = (f"the interval neither excludes no change nor fits inside ±{d.threshold:.1%}" if bounded
               else f"with one unit on a side there is no interval to hold against ±{d.threshold:.1%} (the notes "
                    "below say what would give one)")
        text = f"{head}: inconclusive; {why}.{need}"
    if d.stopped_because:
        text += f" Stopped because {d.stopped_because}."
    others = [r for r in cmp.rows if r.decided and r.role != "primary"]
    if others:
        top = sorted(others, key=lambda r: -r.impact)[:3]
        text += " Real changes elsewhere: " + "; ".join(
            f"{render.md(render.figure_label(r))} {render.pct(r.ratio)}" for r in top) + "."
    else:
        text += " No other figure changed beyond what the family test allows."
    return text


def review_markdown(cmp: Comparison, a: list[Run], b: list[Run], plots: dict[str, str] | None = None,
                    control: Comparison | None = None) -> str:
    rows = cmp.rows
    heads = [r for r in rows if r.kind == "headline"]
    funcs = sorted([r for r in rows if r.kind == "function"], key=lambda r: -r.impact)
    significant = [r for r in funcs if r.decided]
    rest = [r for r in funcs if not r.decided]
    findings = sorted([r for r in rows if r.decided], key=lambda r: (r.kind != "headline", -r.impact))
    side_a, side_b = describe_side(a), describe_side(b)
    if side_a.label == side_b.label:
        side_a.label, side_b.label = side_a.label + " (A)", side_b.label + " (B)"
    meta = a[0].meta
    counts = {v: sum(r.verdict == v for r in rows) for v in
              (stats.IMPROVED, stats.REGRESSED, stats.NO_CHANGE, stats.INCONCLUSIVE, stats.SHOWN)}
    waits_grew = any(r.verdict == stats.REGRESSED and gaps.is_sync_name(r.name) for r in significant)
    return render.render(
        "review.md.j2", a=side_a, b=side_b, meta=meta, b_meta=b[0].meta, device=render.known(meta.device),
        host=render.known(meta.host),
        heads=heads,
        findings=findings, significant=significant, rest=rest, counts=counts, design=cmp.design,
        n=cmp.n, notes=cmp.warnings, control=control.primary if control else None,
        control_decided=[r for r in control.rows if r.decided] if control else [],
        bench={"a": summary.throughput(a), "b": summary.throughput(b), "row": cmp.primary,
               "test": f"tg{meta.tokens}", "model": render.model_label(meta)},
        gaps={"a": summary.gap_summary(a), "b": summary.gap_summary(b)},
        streams={"a": summary.stream_summary(a), "b": summary.stream_summary(b)},
        energy=cmp.row("energy_j_per_token"),
        energy_window_s=float(np.median([r.wall_ns or 0 for run in a for r in run.meta.per_repeat] or [0])) / 1e9,
        conclusion=conclusion(cmp, side_a.label, side_b.label),
        plots=plots or {}, not_measured=meta.not_measured, only_a=cmp.only_a, only_b=cmp.only_b,
        waits_grew=waits_grew,
    )


def run_markdown(run: Run, plots: dict[str, str] | None = None) -> str:
    table, heads = summary.function_table(run), summary.headline_spread(run)
    return render.render(
        "run.md.j2", meta=run.meta, device=render.known(run.meta.device), side=describe_side([run]),
        figures=heads, functions=table.to_dict("records"), injected=summary.injected_delay(run, table, heads),
        gaps=summary.gap_summary([run]), streams=summary.stream_summary([run]), plots=plots or {},
        not_measured=run.meta.not_measured,
        kernels=traced.kernel_summary(run.events, by_function=True).head(15).to_dict("records"),
        copies=traced.copy_summary(run.events).to_dict("records"),
        idle=traced.stream_idle(run.events).to_dict("records"), findings=traced.findings(run.events),
        overhead=overhead.tracing(run), spread=summary.spread_sources(run),
    )


def llama_bench_markdown(cmp: Comparison, a: dict[str, str], b: dict[str, str]) -> str:
    """``a``/``b``: label, commit and file of each llama-bench result."""
    return render.render("llama_bench.md.j2", rows=cmp.rows, a=a, b=b, design=cmp.design, notes=cmp.warnings)


def llama_bench_run_markdown(run: Run, tests: list[dict]) -> str:
    """An imported llama-bench result: its tests (``flows.llama_bench.test_rows``)."""
    return render.render("llama_bench_run.md.j2", meta=run.meta, device=render.known(run.meta.device), tests=tests)

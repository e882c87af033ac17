"""Comparison rows + run metadata -> the PR review (markdown through templates/review.md.j2),
and one run -> templates/run.md.j2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfreview.analysis import functions, gaps, headline, of_run, streams
from perfreview.compare import stats
from perfreview.compare.compare import Comparison
from perfreview.report import render
from perfreview.trace.runs import Run

HEADLINE_TITLES = {
    "tokens_per_s": "decode throughput (t/s)",
    "median_token_ms": "token latency, median (ms)",
    "time_to_first_token_ms": "time to first token (prefill, ms)",
    "median_sync_gap_us": "sync gap between tokens, median (µs)",
    "energy_j_per_token": "energy per token (J)",
}


def cell(row: dict[str, Any], which: str) -> str:
    """Median of side ``which`` with as many digits as the interval supports."""
    value = row[which]
    half = abs(value) * (row["ci_high"] - row["ci_low"]) / 2 if math.isfinite(row["ci_high"]) else 0
    return f"{value:,.{render.decimals_for(half)}f}"


def change(row: dict[str, Any]) -> str:
    """``+1.4% [+0.9, +1.9]``; a "no change" row says only how tightly it is bounded."""
    if row["verdict"] == stats.NO_CHANGE:
        bound = max(abs(row["ci_low"] - 1), abs(row["ci_high"] - 1)) * 100
        return f"within ±{bound:.1f}%"
    return render.pct_ci(row["ratio"], row["ci_low"], row["ci_high"])


def verdict_text(row: dict[str, Any]) -> str:
    v = row["verdict"]
    need = row.get("repeats_needed")
    if v == stats.INCONCLUSIVE and need:
        return f"inconclusive (needs ≈{need} repeats)" if need <= 1000 else "inconclusive (needs > 1000 repeats)"
    return v


def describe_side(runs: list[Run]) -> dict[str, Any]:
    m = runs[0].meta
    git = m.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + ("-dirty" if git.get("dirty") else "")
    labels = sorted({r.meta.get("build") or r.meta.get("config_label") for r in runs})
    return {
        "label": ", ".join(labels),
        "config": m.get("config_label"),
        "build": m.get("build") or "",
        "commit": commit,
        "runs": [r.path.name for r in runs],
        "repeats": sum(len(r.meta.get("per_repeat", [])) for r in runs),
        "switches": {k: v for k, v in (m.get("switches_in_effect") or {}).items() if v not in (False, 0)},
    }


def _tps_summary(runs: list[Run]) -> tuple[float, float]:
    tps = np.concatenate([of_run.headlines(r)["tokens_per_s"].to_numpy() for r in runs])
    return float(tps.mean()), float(tps.std(ddof=1)) if len(tps) > 1 else 0.0


def gap_section(runs: list[Run]) -> dict[str, Any]:
    g = pd.concat([of_run.sync_gaps(r) for r in runs])
    counts = gaps.counts_per_token(pd.concat([r.events for r in runs]))
    out = {"n": len(g), "source": g["source"].iloc[0] if len(g) else "n/a"}
    for col in ["gap_ns", *(f"{c}_ns" for c in gaps.CATEGORIES)]:
        out[col.replace("_ns", "_us")] = float(g[col].median() / 1e3) if len(g) else math.nan
    out["syncs"] = float(counts["syncs"].median()) if len(counts) else math.nan
    out["copies"] = float(counts["copies"].median()) if len(counts) else math.nan
    return out


def stream_section(runs: list[Run]) -> dict[str, Any]:
    conc = streams.concurrency(pd.concat([r.events for r in runs]))
    if conc.empty:
        return {"streams": 0, "overlap_share": math.nan, "overlap_us": math.nan}
    return {"streams": int(conc["streams"].max()), "overlap_share": float(conc["overlap_share"].median()),
            "overlap_us": float(conc["overlap_ns"].median() / 1e3)}


def conclusion(rows: list[dict[str, Any]], theta: float, a: str, b: str) -> str:
    tps = next((r for r in rows if r["name"] == "tokens_per_s"), None)
    sig = [r for r in rows if r["verdict"] in (stats.IMPROVED, stats.REGRESSED)]
    if tps is None:
        return "No throughput figure could be compared."
    a, b = render.md(a), render.md(b)
    head = f"{b} vs {a}: decode throughput {render.pct_ci(tps['ratio'], tps['ci_low'], tps['ci_high'])}"
    theta = tps.get("theta", theta)
    if tps["verdict"] == stats.IMPROVED:
        text = f"{head}, a real speedup (outside the ±{theta:.1%} noise threshold, q = {tps['q']:.2g})."
    elif tps["verdict"] == stats.REGRESSED:
        text = f"{head}, a real slowdown (outside the ±{theta:.1%} noise threshold, q = {tps['q']:.2g})."
    elif tps["verdict"] == stats.NO_CHANGE:
        text = f"{head}: no change in throughput; the interval lies inside ±{theta:.1%}."
    else:
        need = f" About {tps['repeats_needed']} repeats per side would decide it." if tps.get("repeats_needed") else ""
        text = (f"{head}: inconclusive; the interval straddles the ±{theta:.1%} noise threshold, so this "
                f"measurement cannot say whether throughput changed.{need}")
    others = [r for r in sig if r["name"] != "tokens_per_s"]
    if others:
        top = sorted(others, key=lambda r: -r["impact"])[:3]
        text += " Real changes elsewhere: " + "; ".join(
            f"{render.md(HEADLINE_TITLES.get(r['name'], r['name']))}{' (' + r['metric'] + ')' if r['metric'] else ''} "
            f"{render.pct(r['ratio'])}"
            for r in top) + "."
    else:
        text += " No function changed beyond noise."
    return text


def review_markdown(cmp: Comparison, a: list[Run], b: list[Run], plots: dict[str, str] | None = None) -> str:
    rows = cmp.rows
    for r in rows:
        r["a_txt"], r["b_txt"] = cell(r, "a"), cell(r, "b")
        r["change_txt"], r["verdict_txt"] = change(r), verdict_text(r)
        r["title"] = HEADLINE_TITLES.get(r["name"], r["name"])
    heads = [r for r in rows if r["kind"] == "headline"]
    funcs = sorted([r for r in rows if r["kind"] == "function"], key=lambda r: -r["impact"])
    significant = [r for r in funcs if r["verdict"] in (stats.IMPROVED, stats.REGRESSED)]
    rest = [r for r in funcs if r not in significant]
    findings = sorted([r for r in rows if r["verdict"] in (stats.IMPROVED, stats.REGRESSED)],
                      key=lambda r: (r["kind"] != "headline", -r["impact"]))
    side_a, side_b = describe_side(a), describe_side(b)
    if side_a["label"] == side_b["label"]:
        side_a["label"], side_b["label"] = side_a["label"] + " (A)", side_b["label"] + " (B)"
    tps_a, tps_b = _tps_summary(a), _tps_summary(b)
    tps_row = next((r for r in heads if r["name"] == "tokens_per_s"), None)
    meta = a[0].meta
    counts = {v: sum(r["verdict"] == v for r in rows) for v in
              (stats.IMPROVED, stats.REGRESSED, stats.NO_CHANGE, stats.INCONCLUSIVE)}
    return render.render(
        "review.md.j2", a=side_a, b=side_b, meta=meta, device=meta.get("device", {}), heads=heads,
        findings=findings, significant=significant, rest=rest, counts=counts, theta=cmp.theta,
        theta_source=cmp.theta_source, n_a=cmp.n_a, n_b=cmp.n_b, notes=cmp.warnings,
        bench={"a": tps_a, "b": tps_b, "row": tps_row, "test": f"tg{meta.get('tokens')}",
               "model": f"llama {meta.get('preset')} F16"},
        gaps={"a": gap_section(a), "b": gap_section(b)},
        streams={"a": stream_section(a), "b": stream_section(b)},
        energy=next((r for r in heads if r["name"] == "energy_j_per_token"), None),
        energy_window_s=float(np.median([r.get("wall_ns", 0) for run in a for r in run.meta.get("per_repeat", [])]
                                        or [0])) / 1e9,
        conclusion=conclusion(rows, cmp.theta, side_a["label"], side_b["label"]),
        plots=plots or {}, not_measured=meta.get("not_measured", []), only_a=cmp.only_a, only_b=cmp.only_b,
        waits_grew=bool(len(significant)) and bool(gaps.is_sync(pd.Series(
            [r["name"] for r in significant if r["verdict"] == stats.REGRESSED], dtype=str)).any()),
    )


def run_markdown(run: Run, plots: dict[str, str] | None = None) -> str:
    per_tok = of_run.functions_per_token(run)
    summ = functions.summary(per_tok)
    summ = summ.assign(name=summ["name"].astype(str))
    heads = of_run.headlines(run)
    figures = {
        name: {"median": float(np.nanmedian(heads[name])) if heads[name].notna().any() else math.nan,
               "p5": float(np.nanpercentile(heads[name], 5)) if heads[name].notna().any() else math.nan,
               "p95": float(np.nanpercentile(heads[name], 95)) if heads[name].notna().any() else math.nan}
        for name in headline.HEADLINES
    }
    return render.render(
        "run.md.j2", meta=run.meta, device=run.meta.get("device", {}), side=describe_side([run]),
        figures=figures, titles=HEADLINE_TITLES, functions=summ.to_dict("records"),
        gaps=gap_section([run]), streams=stream_section([run]), plots=plots or {},
        not_measured=run.meta.get("not_measured", []),
    )


def llama_bench_markdown(cmp: Comparison, a: dict[str, str], b: dict[str, str]) -> str:
    """``a``/``b``: label, commit and file of each llama-bench result."""
    for r in cmp.rows:
        r["verdict_txt"] = verdict_text(r)
    return render.render("llama_bench.md.j2", rows=cmp.rows, a=a, b=b, theta=cmp.theta, notes=cmp.warnings)


def json_rows(cmp: Comparison) -> list[dict[str, Any]]:
    keep = ("name", "kind", "metric", "unit", "a", "b", "ratio", "ci_low", "ci_high", "p", "q", "theta", "verdict",
            "repeats_needed", "n_a", "n_b")
    return [{k: _clean(r.get(k)) for k in keep} for r in cmp.rows]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write(path: Path, text: str) -> Path:
    return render.write(path, text)

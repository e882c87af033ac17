"""The review as a user runs it: two groups of runs -> comparison -> markdown, pictures and JSON
side by side. ``compare`` and ``ab`` both end here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perfreview.compare import compare as cmp_mod
from perfreview.plots import charts, timeline
from perfreview.report import review as review_md
from perfreview.trace.runs import Run

LARGE_NOISE = 0.05


def review(a: list[Run], b: list[Run], out: Path | None, *, noise: float, aa_pair: tuple | None = None,
           force: bool = False, plots: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare A and B (θ from ``aa_pair``, two groups of the same config, when given); with ``out``,
    write the review there, its pictures and ``<out>.json`` beside it. Returns the JSON payload."""
    theta, source, thetas = cmp_mod.noise_threshold(None, noise)
    if aa_pair is not None:
        theta, source, thetas = cmp_mod.noise_threshold(cmp_mod.compare(*aa_pair, force=force), noise)
    result = cmp_mod.compare(a, b, theta=noise, theta_source=source, force=force, thetas=thetas)
    result.theta = theta
    if theta > LARGE_NOISE:
        result.warnings.append(
            f"this machine's noise is large: the A/A pair spans ±{theta:.0%} in throughput, so changes smaller "
            "than that cannot be seen here and 'no change' means 'none larger than that'; quieten the host or "
            "add repeats")
    payload: dict[str, Any] = {
        "a": [r.id for r in a], "b": [r.id for r in b], "noise_threshold": theta, "noise_source": source,
        "warnings": result.warnings, "rows": review_md.json_rows(result), "report": None, "plots": {},
        **(extra or {}),
    }
    if out:
        out = Path(out)
        pictures = review_plots(out, a, b, payload) if plots else {}
        review_md.write(out, review_md.review_markdown(result, a, b, pictures))
        payload["report"], payload["plots"] = str(out), pictures
        review_md.write(out.with_suffix(".json"), json.dumps(payload, indent=1, default=str))
    return payload


def review_plots(md_path: Path, a: list[Run], b: list[Run], payload: dict[str, Any]) -> dict[str, str]:
    """Timeline, deltas and latency pictures named after the review; returns relative names."""
    stem = md_path.with_suffix("")
    made = {
        "timeline": timeline.timeline([a[0], b[0]], Path(f"{stem}_timeline.png")),
        "deltas": charts.deltas(payload["rows"], Path(f"{stem}_deltas.png"), theta=payload["noise_threshold"]),
        "latency": charts.latency([a[0], b[0]], Path(f"{stem}_latency.png"),
                                  labels=[f"{side}: {runs[0].meta.get('config_label')}"
                                          for side, runs in (("A", a), ("B", b))]),
    }
    return {k: v.name for k, v in made.items()}


def summary_text(payload: dict[str, Any]) -> str:
    """The console summary: θ, warnings, headline rows and every real change."""
    lines = [f"noise threshold θ = ±{payload['noise_threshold']:.2%} ({payload['noise_source']})"]
    lines += [f"warning: {w}" for w in payload["warnings"]]
    for r in payload["rows"]:
        if r["kind"] == "headline" or r["verdict"] in ("improved", "regressed"):
            ci = (f"[{(r['ci_low'] - 1) * 100:+.2f}%, {(r['ci_high'] - 1) * 100:+.2f}%]"
                  if r["ci_low"] is not None else "[n/a]")
            metric = f" ({r['metric']})" if r["metric"] else ""
            lines.append(f"{r['name']}{metric}: {r['a']:.4g} -> {r['b']:.4g} {r['unit']}  {ci}  {r['verdict']}")
    if payload["report"]:
        lines.append(f"report: {payload['report']}")
    return "\n".join(lines)

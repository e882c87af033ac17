"""The review as a user runs it: two groups of runs -> comparison -> markdown, pictures and JSON
side by side. ``compare`` and ``ab`` both end here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from perfreview.compare import comparison
from perfreview.compare.comparison import Comparison, Row
from perfreview.plots import charts, timeline
from perfreview.report import render
from perfreview.report import review as review_md
from perfreview.trace.runs import Run

LARGE_NOISE = 0.05
JSON_ROW_KEYS = ("name", "kind", "metric", "unit", "a", "b", "ratio", "ci_low", "ci_high", "p", "q", "theta",
                 "verdict", "repeats_needed", "n_a", "n_b")


def json_rows(rows: list[Row]) -> list[dict[str, Any]]:
    return [{k: _clean(getattr(r, k)) for k in JSON_ROW_KEYS} for r in rows]


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def review(a: list[Run], b: list[Run], out: Path | None, *, noise: float, aa_pair: tuple | None = None,
           force: bool = False, plots: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare A and B (θ from ``aa_pair``, two groups of the same config, when given); with ``out``,
    write the review there, its pictures and ``<out>.json`` beside it. Returns the JSON payload."""
    aa = comparison.compare(*aa_pair, force=force) if aa_pair is not None else None
    threshold = comparison.noise_threshold(aa, noise)
    result = comparison.compare(a, b, threshold, force=force)
    if threshold.theta > LARGE_NOISE:
        result.warnings.append(
            f"this machine's noise is large: the A/A pair spans ±{threshold.theta:.0%} in throughput, so changes "
            "smaller than that cannot be seen here and 'no change' means 'none larger than that'; quieten the host "
            "or add repeats")
    payload: dict[str, Any] = {
        "a": [r.id for r in a], "b": [r.id for r in b], "noise_threshold": threshold.theta,
        "noise_source": render.noise_source(threshold), "warnings": result.warnings,
        "rows": json_rows(result.rows), "report": None, "plots": {}, **(extra or {}),
    }
    if out:
        write_review(Path(out), result, a, b, payload, plots)
    return payload


def write_review(out: Path, result: Comparison, a: list[Run], b: list[Run], payload: dict[str, Any],
                 plots: bool) -> None:
    pictures = review_plots(out, a, b, payload) if plots else {}
    render.write(out, review_md.review_markdown(result, a, b, pictures))
    payload["report"], payload["plots"] = str(out), pictures
    render.write(out.with_suffix(".json"), json.dumps(payload, indent=1, default=str))


def review_plots(md_path: Path, a: list[Run], b: list[Run], payload: dict[str, Any]) -> dict[str, str]:
    """Timeline, deltas and latency pictures named after the review; returns relative names."""
    stem = md_path.with_suffix("")
    made = {
        "timeline": timeline.timeline([a[0], b[0]], Path(f"{stem}_timeline.png")),
        "deltas": charts.deltas(payload["rows"], Path(f"{stem}_deltas.png"), theta=payload["noise_threshold"]),
        "latency": charts.latency([a[0], b[0]], Path(f"{stem}_latency.png"),
                                  labels=[f"A: {a[0].meta.config_label}", f"B: {b[0].meta.config_label}"]),
    }
    return {k: v.name for k, v in made.items()}

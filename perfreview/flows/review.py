"""The review as a user runs it: two groups of runs -> comparison -> markdown, pictures and JSON
side by side. ``compare`` and ``ab`` both end here."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from perfreview.compare import comparison, stats
from perfreview.compare.comparison import Comparison, Row
from perfreview.plots import charts, timeline
from perfreview.report import render
from perfreview.report import review as review_md
from perfreview.trace.runs import Run

JSON_ROW_KEYS = ("name", "kind", "metric", "unit", "a", "b", "ratio", "ci_low", "ci_high", "confidence", "p", "q",
                 "role", "verdict", "smaller_than_threshold", "units_needed", "n", "method")


def json_rows(rows: list[Row]) -> list[dict[str, Any]]:
    return [{k: _clean(getattr(r, k)) for k in JSON_ROW_KEYS} for r in rows]


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def negative_control(a: list[Run], a2: list[Run], threshold: float, force: bool) -> tuple[Comparison, list[str]]:
    """A against A' (the same config, interleaved): any decided figure means the units are not
    independent or the setup drifts in a way the design does not absorb: a loud warning."""
    aa = comparison.compare(a, a2, threshold, force=force)
    decided = [r for r in aa.rows if r.decided]
    if not decided:
        return aa, []
    names = ", ".join(f"{render.figure_label(r)} {render.pct_ci(r.ratio, r.ci_low, r.ci_high)}" for r in decided[:5])
    return aa, [f"NEGATIVE CONTROL FAILED: A against A' (the same config) gave {len(decided)} decided figure(s) "
                f"({names}): the repeats are not independent or the machine drifted; do not trust this review's "
                "verdicts until an A/A comparison comes back clean"]


def review(a: list[Run], b: list[Run], out: Path | None, *, threshold: float = stats.DEFAULT_THRESHOLD,
           aa_pair: tuple | None = None, force: bool = False, plots: bool = True, processes: bool = False,
           alpha_primary: float = stats.ALPHA_PRIMARY, look: int | None = None, stopped_because: str = "",
           extra: dict[str, Any] | None = None, step: Callable[[str], None] = lambda what: None) -> dict[str, Any]:
    """Compare A and B (and, with ``aa_pair``, the negative control A vs A'); with ``out``, write
    the review there, its pictures and ``<out>.json`` beside it. Returns the JSON payload."""
    result = comparison.compare(a, b, threshold, force=force, alpha_primary=alpha_primary, processes=processes,
                                look=look)
    result.design.stopped_because = stopped_because
    control = None
    if aa_pair is not None:
        control, loud = negative_control(*aa_pair, threshold, force)
        result.warnings[:0] = loud
    primary = result.primary
    payload: dict[str, Any] = {
        "a": [r.id for r in a], "b": [r.id for r in b], "threshold": threshold, "design": asdict(result.design),
        "verdict": primary.verdict if primary else None, "warnings": result.warnings,
        "rows": json_rows(result.rows),
        "negative_control": None if control is None else {
            "decided": [r.key for r in control.rows if r.decided],
            "primary": json_rows([control.primary])[0] if control.primary else None},
        "report": None, "plots": {}, **(extra or {}),
    }
    if out:
        step("writing the review and its pictures")
        write_review(Path(out), result, control, a, b, payload, plots)
    return payload


def check_review_out(out: Path | None) -> None:
    """Before any work: the review is markdown with ``<out>.json`` and the pictures beside it, so an ``--out``
    ending in .json would have the JSON written over the review."""
    if out is not None and Path(out).suffix.lower() == ".json":
        raise render.OutputError(f"{out}: the review is markdown and its JSON is written beside it: name it "
                                 f"{Path(out).with_suffix('.md').name}")


def write_review(out: Path, result: Comparison, control: Comparison | None, a: list[Run], b: list[Run],
                 payload: dict[str, Any], plots: bool) -> None:
    """The review, its pictures and its JSON, all or none: a failure part way removes what it wrote."""
    written: list[Path] = []
    try:
        pictures = review_plots(out, a, b, payload, written) if plots else {}
        render.write(out, review_md.review_markdown(result, a, b, pictures, control))
        written.append(out)
        payload["report"], payload["plots"] = str(out), pictures
        render.write(out.with_suffix(".json"), json.dumps(payload, indent=1, default=str))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def review_plots(md_path: Path, a: list[Run], b: list[Run], payload: dict[str, Any],
                 written: list[Path]) -> dict[str, str]:
    """Timeline, deltas and latency pictures named after the review (each appended to ``written`` once
    made); returns relative names. No deltas picture where no figure has an interval (one unit on a side)."""
    stem = md_path.with_suffix("")
    drawers: dict[str, Callable[[Path], Path]] = {
        "timeline": lambda path: timeline.timeline([a[0], b[0]], path),
        "deltas": lambda path: charts.deltas(payload["rows"], path, threshold=payload["threshold"]),
        "latency": lambda path: charts.latency([a[0], b[0]], path,
                                               labels=[f"A: {a[0].meta.config_label}", f"B: {b[0].meta.config_label}"]),
    }
    if not charts.rows_with_intervals(payload["rows"]):
        del drawers["deltas"]
    made = {}
    for name, draw in drawers.items():
        written.append(draw(Path(f"{stem}_{name}.png")))
        made[name] = written[-1].name
    return made

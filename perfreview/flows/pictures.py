"""One run's report, pictures and exports, as the CLI's report/plot/export commands make them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from perfreview.flows.llama_bench import records_of, test_rows
from perfreview.formats import perfetto
from perfreview.plots import charts, timeline
from perfreview.report import render
from perfreview.report.review import llama_bench_run_markdown, run_markdown
from perfreview.trace.runs import Run

PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


class PictureError(ValueError):
    pass


def run_report(run: Run, out: Path, plots: bool = True,
               step: Callable[[str], None] = lambda what: None) -> dict[str, str]:
    """Markdown report of one run (and its timeline beside it); returns the pictures made."""
    if run.meta.format == "llama-bench":  # tests, no timeline
        step("writing the markdown")
        render.write(out, llama_bench_run_markdown(run, test_rows(records_of(run.path))))
        return {}
    made = {}
    if plots:
        step("drawing the timeline")
        made["timeline"] = timeline.timeline([run], out.with_name(out.stem + "_timeline.png")).name
    step("analysing and writing the markdown")
    render.write(out, run_markdown(run, made))
    return made


def plot(what: str, runs: list[Run] | None, review_json: Path | None, out: Path,
         tokens: tuple[int, int] | None = None, repeat: int | None = None,
         size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise PictureError(f"{out}: use a .png, .svg or .pdf file name")
    for run in runs or []:
        _need_timeline(run, "draw (compare it with another: perfreview compare A B)")
    if what == "timeline":
        return timeline.timeline(runs or [], out, tokens, repeat, size=size, dpi=dpi)
    if what == "latency":
        return charts.latency(runs or [], out, size=size, dpi=dpi)
    assert review_json is not None
    try:
        payload = json.loads(review_json.read_text())
        rows = payload["rows"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PictureError(f"{review_json}: not a perfreview review JSON ({type(exc).__name__})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PictureError(f"{review_json}: not a perfreview review JSON (its rows are not a list of objects)")
    if not charts.rows_with_intervals(rows):
        raise PictureError(f"{review_json}: no figure of this review has an interval to draw (one unit on a "
                           "side)")
    return charts.deltas(rows, out, threshold=payload.get("threshold"), size=size, dpi=dpi)


def export_perfetto(run: Run, out: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    if not Path(out).name.lower().endswith((".json", ".json.gz")):  # e.g. not over a run's events.parquet
        raise PictureError(f"{out}: use a .json or .json.gz file name (gzipped when it ends in .gz)")
    _need_timeline(run, "export")
    return perfetto.export(run, out, progress)


def _need_timeline(run: Run, what: str) -> None:
    if run.meta.format == "llama-bench":
        raise PictureError(f"{run.path}: a llama-bench result has no timeline to {what}")

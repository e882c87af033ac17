"""One run, or another tool's trace, from Python (a notebook): each method is one call into an analyzer module and
returns what the reports are made from (DataFrames, dataclasses), as HTA's TraceAnalysis does for Kineto traces.

    from perfreview.flows.trace_analysis import TraceAnalysis
    before = TraceAnalysis.from_trace("before.json.gz", token_marker="token", blocks=10)
    after = TraceAnalysis.from_trace("after.json.gz", token_marker="token", blocks=10)
    before.kernels(by_function=True).head()      # as nsys stats cuda_gpu_kern_sum
    before.compare(after).query("verdict != 'inconclusive'")
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perfreview.analysis import samples, summary, traced
from perfreview.compare import comparison, stats
from perfreview.flows.imports import read_trace
from perfreview.flows.pictures import run_report
from perfreview.flows.review import json_rows
from perfreview.plots import timeline
from perfreview.trace.runs import Run, read_run

TRACE_FORMATS = ("kineto", "chrome", "nsys")  # what from_trace reads (llama-bench results have no timeline)


class TraceAnalysis:
    """A run's analyses. ``run``: a stored run (``open``) or a trace read in memory (``from_trace``), never
    written anywhere by this class."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @classmethod
    def open(cls, path: str | Path) -> TraceAnalysis:
        """A run folder that ``perfreview run``, ``ab`` or ``import`` stored."""
        return cls(read_run(Path(path)))

    @classmethod
    def from_trace(cls, file: str | Path, fmt: str = "kineto", token_marker: str | None = None,
                   blocks: int | None = None) -> TraceAnalysis:
        """A Kineto/Chrome trace (``.json``, ``.json.gz``, a folder of ranks) or an nsys SQLite export, read as
        ``perfreview import`` reads it, kept in memory; ``token_marker`` cuts it into tokens, ``blocks`` makes
        blocks of them the repeats (so that ``compare`` has units)."""
        if fmt not in TRACE_FORMATS:
            raise ValueError(f"{file}: format {fmt!r} (use {', '.join(TRACE_FORMATS)})")
        events, meta = read_trace(fmt, Path(file), token_marker, blocks)
        return cls(Run(Path(file), meta, events))

    @property
    def events(self) -> pd.DataFrame:
        """The event table (perfreview.trace.schema): every range, token, kernel, copy and call."""
        return self.run.events

    def tokens(self) -> pd.DataFrame:
        """One row per token: host and GPU windows, the gap before it."""
        return samples.token_table(self.run)

    def headlines(self) -> pd.DataFrame:
        """One row per repeat: throughput, token latency, GPU time per token, sync gap, ..."""
        return samples.headlines(self.run)

    def functions(self) -> pd.DataFrame:
        """Per function, time per decode token: host inclusive, self and GPU (the run report's table)."""
        return summary.function_table(self.run)

    def kernels(self, by_function: bool = False) -> pd.DataFrame:
        """Per kernel name (or function and kernel): count, total, mean, median, min, max, stddev, share, added."""
        return traced.kernel_summary(self.run.events, by_function)

    def copies(self) -> pd.DataFrame:
        """Copies by direction and memory kind: count, bytes, time."""
        return traced.copy_summary(self.run.events)

    def stream_idle(self) -> pd.DataFrame:
        """Each stream's idle time, split as HTA's idle-time breakdown."""
        return traced.stream_idle(self.run.events)

    def gaps(self) -> summary.GapSummary:
        """The gap between tokens and what the host did in it (medians per token boundary)."""
        return summary.gap_summary([self.run])

    def streams(self) -> summary.StreamSummary:
        """Streams with work and how much of the side streams' work overlapped other work."""
        return summary.stream_summary([self.run])

    def findings(self) -> list[traced.Finding]:
        """nsys-style expert findings that matter between tokens (pageable async copies, synchronize calls)."""
        return traced.findings(self.run.events)

    def compare(self, other: TraceAnalysis, threshold: float = stats.DEFAULT_THRESHOLD,
                force: bool = False) -> pd.DataFrame:
        """This run (A) against ``other`` (B) by the review's rule: one row per figure with its interval and
        verdict (the rows of ``compare --json``)."""
        return pd.DataFrame(json_rows(comparison.compare([self.run], [other.run], threshold, force=force).rows))

    def report(self, out: str | Path, plots: bool = True) -> Path:
        """The run's markdown report (``perfreview report``), its timeline beside it unless ``plots`` is off."""
        run_report(self.run, Path(out), plots=plots)
        return Path(out)

    def timeline(self, out: str | Path, other: TraceAnalysis | None = None) -> Path:
        """The timeline picture (``plot timeline``), beside ``other``'s where given."""
        return timeline.timeline([self.run] + ([other.run] if other else []), Path(out))

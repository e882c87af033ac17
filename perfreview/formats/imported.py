"""The metadata of an imported trace: what the file tells, and what it cannot (no preset, no
energy, no switches). Shared by every importer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perfreview.trace.meta import RepeatInfo, RunMeta
from perfreview.trace.schema import Kind

FORMATS = {"nsys": "nsys-sqlite", "chrome": "chrome-trace", "kineto": "chrome-trace", "llama-bench": "llama-bench"}


def imported_meta(path: Path, run_id: str, events: pd.DataFrame, token_marker: str | None, fmt: str,
                  identity: dict | None = None) -> RunMeta:
    """``identity``: what the file says about where it ran (``device`` name, ``rank``)."""
    identity = identity or {}
    device = {"name": identity.get("device") or f"unknown (from a {fmt} trace)", "backend": fmt}
    for key in ("rank", "ranks"):  # one rank's trace, or a folder of them
        if key in identity:
            device[key] = identity[key]
    tokens = events[events["kind"] == Kind.TOKEN]
    repeats = sorted(int(r) for r in tokens["repeat"].unique()) or [0]
    return RunMeta(
        run=run_id, imported_from=str(path), format=FORMATS.get(fmt, fmt), token_marker=token_marker,
        preset="imported", config="imported", config_label=run_id, tokens=len(tokens),
        repeats=len(repeats), per_repeat=[RepeatInfo(r) for r in repeats], timing=fmt,
        repeats_are=("blocks of consecutive tokens of one trace (batch means)" if len(repeats) > 1 else "one trace"),
        device=device, git={"commit": None, "dirty": None},
        host={"hostname": "", "python": ""}, clock=f"{fmt} trace clock, ns",
        clock_alignment="timestamps as the trace recorded them", tool_version="import",
        not_measured=[{"what": "energy", "why": f"not in a {fmt} trace"}],
    )


def llama_bench_meta(path: Path, run_id: str, records: list[dict], tests: int) -> RunMeta:
    """A llama-bench result as a run: its build, GPU and backend from the records; no timeline."""
    first = records[0]
    build = str(first.get("build_commit") or "")
    device = {"name": str(first.get("gpu_info") or "unknown (not in the llama-bench result)"),
              "backend": str(first.get("backends") or "llama-bench"), "cpu": str(first.get("cpu_info") or "")}
    return RunMeta(
        run=run_id, imported_from=str(path), format="llama-bench", preset="imported", config="llama-bench",
        config_label=run_id, tokens=0, repeats=tests, timing="llama-bench", build=build,
        repeats_are=f"{tests} llama-bench tests of one process, each with its own repetitions",
        device=device, git={"commit": build or None, "dirty": None}, host={"hostname": "", "python": ""},
        clock="none (llama-bench records times per repetition, not a timeline)", tool_version="import",
        not_measured=[{"what": "timeline, kernels, sync gaps, energy",
                       "why": "llama-bench writes only each repetition's time"}],
    )

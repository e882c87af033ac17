"""Another tool's trace -> a stored run, so report, plot, export and compare work on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from perfreview.flows.measure import Stored, save
from perfreview.flows.llama_bench import RECORDS, test_rows
from perfreview.formats import chrome_trace, llama_bench, markers, nsys_sqlite
from perfreview.formats.imported import imported_meta, llama_bench_meta
from perfreview.trace import schema
from perfreview.trace.meta import RunMeta
from perfreview.trace.schema import TRACED_DEVICE_KINDS, Kind

FORMATS = ("kineto", "chrome", "nsys", "llama-bench")  # chrome: an alias of kineto (the same reader)


def summary(stored: Stored, events: pd.DataFrame, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``import --json`` object: what was imported, counted from the stored event table (and,
    for a llama-bench result, its tests: no timeline, so no events)."""
    kernels = events[events["kind"] == Kind.KERNEL]
    on_streams = events[events["kind"].isin(TRACED_DEVICE_KINDS)]
    counts = {str(k): int(v) for k, v in events["kind"].value_counts().items() if v}
    extra = {"tests": test_rows(records)} if records else {}
    return extra | {"run": str(stored.path), "events": counts,
            "kernel_count": len(kernels), "kernel_time_ns": int((kernels["end_ns"] - kernels["start_ns"]).sum()),
            "streams": sorted(int(x) for x in on_streams["stream"].unique()), "tokens": stored.meta.tokens,
            "device": stored.meta.device}


def import_llama_bench(file: Path, out: Path, name: str | None = None) -> tuple[Stored, list[dict[str, Any]]]:
    """A llama-bench result (any of its formats) -> a stored run that keeps the records: listed in the
    store, reported, and compared with another by ``compare`` or ``compare-llama-bench``."""
    records = llama_bench.load(file)
    run_id = name or Path(file.name).stem
    meta = llama_bench_meta(file, run_id, records, len(llama_bench.tests(records)))
    stored = save(out, schema.from_records([], run_id), meta, {RECORDS: json.dumps(records, indent=1) + "\n"})
    return stored, records


def import_trace(fmt: str, file: Path, out: Path, token_marker: str | None = None, blocks: int | None = None,
                 name: str | None = None, progress: Callable[[int, int], None] | None = None,
                 ) -> tuple[Stored, pd.DataFrame]:
    """The stored run and its event table; ``progress(MiB read, MiB in all)`` while a trace is read."""
    events, meta = read_trace(fmt, file, token_marker, blocks, name, progress)
    return save(out, events, meta), events


def read_trace(fmt: str, file: Path, token_marker: str | None = None, blocks: int | None = None,
               name: str | None = None, progress: Callable[[int, int], None] | None = None,
               ) -> tuple[pd.DataFrame, RunMeta]:
    """Another tool's trace as an event table and its run metadata, in memory (import_trace stores them)."""
    if blocks is not None and not token_marker:  # --blocks 0 or 1 too: refused below, not taken as none
        raise ValueError("--blocks needs --token-marker (blocks are runs of tokens)")
    run_id = name or (file.name if file.is_dir() else Path(file.name.removesuffix(".gz")).stem)  # t.json.gz -> t
    identity: dict = {}
    if fmt == "nsys":
        events = nsys_sqlite.load(file, token_marker, run=run_id)
    else:
        events, info = chrome_trace.load(file, run=run_id, token_marker=token_marker, progress=progress)
        identity = {k: info[k] for k in ("device", "rank", "ranks") if k in info}
    if blocks is not None:
        events = markers.block_repeats(events, blocks, file)
    return events, imported_meta(file, run_id, events, token_marker, fmt, identity)

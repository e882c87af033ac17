"""Another tool's trace -> a stored run, so report, plot, export and compare work on it."""

from __future__ import annotations

from pathlib import Path

from perfreview.flows.measure import Stored, save
from perfreview.formats import chrome_trace, markers, nsys_sqlite
from perfreview.formats.imported import imported_meta

FORMATS = ("nsys", "chrome")


def import_trace(fmt: str, file: Path, out: Path, token_marker: str | None = None, blocks: int | None = None,
                 name: str | None = None) -> tuple[Stored, int]:
    """The stored run and how many events it has."""
    if blocks and not token_marker:
        raise ValueError("--blocks needs --token-marker (blocks are runs of tokens)")
    run_id = name or file.stem
    if fmt == "nsys":
        events = nsys_sqlite.load(file, token_marker, run=run_id)
    else:
        events, _ = chrome_trace.load(file, run=run_id, token_marker=token_marker)
    if blocks:
        events = markers.block_repeats(events, blocks, file)
    return save(out, events, imported_meta(file, run_id, events, token_marker, fmt)), len(events)

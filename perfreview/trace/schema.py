"""The one event table of perfreview: every producer writes it, every consumer reads it.

One row per interval (an instant has ``end_ns == start_ns``). Columns:

=============  ========  ==================================================================
column         dtype     meaning
=============  ========  ==================================================================
run            category  run id
repeat         int16     repeat index; -1 where not applicable (imported traces, warm-up pass)
token          int32     token index within the repeat (prompt tokens first); -1 outside tokens
phase          category  ``warmup``, ``prefill``, ``decode`` or ``""`` (outside tokens)
source         category  ``host`` (host clock around a call), ``cuda_event`` (CUDA event pairs),
                         ``cupti``, ``kineto``, ``nsys``, ``llama_bench``
kind           category  ``token`` (one generated/prefilled token, host side), ``range`` (a
                         pipeline function on the host), ``gpu_range`` (the same function on a
                         stream, from CUDA events), ``kernel``, ``memcpy``, ``memset``, ``api``
                         (runtime/driver call), ``sync`` (synchronisation record), ``marker``,
                         ``gpu_annotation`` (a host range mirrored on a stream: a label, never work)
name           category  function, kernel or API name as the producer gives it
track          category  one timeline row: ``host/<thread>`` or ``gpu<device>/stream<id>``
stream         int64     CUDA stream id; -1 on the host
start_ns       int64     start, ns, on the run's one clock (``run.json: clock``)
end_ns         int64     end, ns, same clock; duration is derived (end - start), never stored
depth          int16     nesting depth of host ranges (token = 0); -1 for device rows
correlation    int64     API call <-> GPU work; -1 when none
bytes          int64     bytes of a copy or memset; -1 otherwise
copy_kind      category  ``HtoD``, ``DtoH``, ``DtoD``... for copies; ``""`` otherwise
mem_kind       category  ``pageable->device``, ``pinned->device``... for copies; ``""`` otherwise
=============  ========  ==================================================================

Category columns keep million-row tables small. :func:`normalize` is the single gate: every
producer passes its rows through it, so consumers can rely on names, dtypes and order.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

COLUMNS: dict[str, str] = {
    "run": "category",
    "repeat": "int16",
    "token": "int32",
    "phase": "category",
    "source": "category",
    "kind": "category",
    "name": "category",
    "track": "category",
    "stream": "int64",
    "start_ns": "int64",
    "end_ns": "int64",
    "depth": "int16",
    "correlation": "int64",
    "bytes": "int64",
    "copy_kind": "category",
    "mem_kind": "category",
}

# What a producer may leave out: filled with these.
DEFAULTS: dict[str, Any] = {
    "repeat": -1,
    "token": -1,
    "phase": "",
    "stream": -1,
    "depth": -1,
    "correlation": -1,
    "bytes": -1,
    "copy_kind": "",
    "mem_kind": "",
}


class Kind(str, Enum):
    """What a row is. ``str`` values, so ``frame["kind"] == Kind.KERNEL`` works on the table."""

    TOKEN = "token"
    RANGE = "range"
    GPU_RANGE = "gpu_range"
    KERNEL = "kernel"
    MEMCPY = "memcpy"
    MEMSET = "memset"
    API = "api"
    SYNC = "sync"
    MARKER = "marker"
    GPU_ANNOTATION = "gpu_annotation"  # a host range mirrored on a stream (Kineto): a label, not GPU work


class Phase(str, Enum):
    NONE = ""
    WARMUP = "warmup"
    PREFILL = "prefill"
    DECODE = "decode"


class Source(str, Enum):
    HOST = "host"
    CUDA_EVENT = "cuda_event"
    CUPTI = "cupti"
    KINETO = "kineto"
    NSYS = "nsys"
    LLAMA_BENCH = "llama_bench"


KINDS = tuple(k.value for k in Kind)
PHASES = tuple(p.value for p in Phase)
SOURCES = tuple(s.value for s in Source)
# Kinds that occupy a GPU stream (HTA's "GPU events": stream != -1).
DEVICE_KINDS = tuple(k.value for k in (Kind.GPU_RANGE, Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET))
# GPU work recorded by a tracer (kernels, copies, memsets), as opposed to our event-pair ranges.
TRACED_DEVICE_KINDS = tuple(k.value for k in (Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET))
# Host-side rows that nest on a thread: our ranges, or runtime/driver API calls from a tracer.
HOST_KINDS = tuple(k.value for k in (Kind.RANGE, Kind.API))


class SchemaError(ValueError):
    """An event table that breaks the schema; the message names the column and the problem."""


def empty() -> pd.DataFrame:
    """An event table with no rows and every column typed."""
    return normalize(pd.DataFrame({c: [] for c in COLUMNS}))


def from_records(records: Iterable[Mapping[str, Any]], run: str) -> pd.DataFrame:
    """Build an event table from dict rows (the producers' buffer), filling defaults."""
    frame = pd.DataFrame.from_records(list(records))
    if frame.empty:
        frame = pd.DataFrame({c: [] for c in COLUMNS})
    frame["run"] = run
    return normalize(frame)


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and coerce ``frame`` to the schema: column set, order, dtypes, end >= start.

    Raises :class:`SchemaError` naming the first problem. Returns a new frame.
    """
    frame = frame.copy(deep=False)  # columns are replaced, never written into: the input stays as it was
    for col, value in DEFAULTS.items():
        if col not in frame.columns:
            frame[col] = value
        elif frame[col].isna().any():  # rows from producers that left this column out
            frame[col] = frame[col].fillna(value)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in COLUMNS]
    if extra:
        raise SchemaError(f"unknown column(s): {', '.join(extra)}")
    frame = frame[list(COLUMNS)]
    for col, dtype in COLUMNS.items():
        if dtype == "category":
            frame[col] = _categorical(frame[col])
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any():
            raise SchemaError(f"column {col!r} has a missing or non-numeric value")
        info = np.iinfo(dtype)
        if len(values) and (values.min() < info.min or values.max() > info.max):
            raise SchemaError(f"column {col!r} has a value outside {dtype}")
        frame[col] = values.astype(dtype)
    bad_kind = set(frame["kind"].unique()) - set(KINDS)
    if bad_kind:
        raise SchemaError(f"column 'kind' has unknown value(s): {', '.join(sorted(map(str, bad_kind)))}")
    if (frame["end_ns"] < frame["start_ns"]).any():
        row = frame.index[(frame["end_ns"] < frame["start_ns"]).to_numpy()][0]
        raise SchemaError(f"row {row}: end_ns is before start_ns")
    return frame.reset_index(drop=True)


def _categorical(column: pd.Series) -> pd.Series:
    """A column as a categorical of strings ("" for missing), by category where it is one already
    (10M rows of an import: no string per row)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = list(column.cat.categories)
        if all(type(c) is str for c in cats):
            if column.isna().any():
                column = (column.cat.add_categories("") if "" not in cats else column).fillna("")
            return column
    return column.fillna("").astype(str).astype("category")


def duration_ns(frame: pd.DataFrame) -> pd.Series:
    """Durations in ns (derived, never stored)."""
    return frame["end_ns"] - frame["start_ns"]


def host_track(thread: Any = "main") -> str:
    """The timeline row of a host thread: ``host/<thread>``."""
    return f"host/{thread}"


def stream_track(device: Any, stream: Any) -> str:
    """The timeline row of a CUDA stream: ``gpu<device>/stream<id>``."""
    return f"gpu{device}/stream{stream}"


def host_tracks(threads: pd.Series) -> pd.Series:
    """:func:`host_track` for a column of thread ids (importers build whole columns at once)."""
    return "host/" + threads.astype(str)


def stream_tracks(devices: pd.Series, streams: pd.Series) -> pd.Series:
    """:func:`stream_track` for columns of device and stream ids."""
    return "gpu" + devices.astype(str) + "/stream" + streams.astype(str)


def sync_track(device: Any) -> str:
    """Synchronisation records of a device (not tied to one stream) get a row of their own."""
    return f"gpu{device}/sync"


def parse_stream_track(track: str) -> tuple[int, int] | None:
    """``gpu0/stream7`` -> (0, 7); None for host and other rows (``gpu0/sync``)."""
    if not track.startswith("gpu"):
        return None
    dev, sep, stream = track[3:].partition("/stream")
    if not sep or not dev.isdigit() or not stream.lstrip("-").isdigit():
        return None
    return int(dev), int(stream)

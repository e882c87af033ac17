"""Chrome Trace Event JSON (perfreview's Perfetto export, or a PyTorch profiler/Kineto trace, plain or
gzipped) -> event table.

Reads ``[...]`` or ``{"traceEvents": [...]}``. Complete events (``ph: "X"``) become rows; ``M``
thread names give the tracks. perfreview's own ``args`` (kind, repeat, token, ...) restore its rows
exactly; for Kineto, ``cat`` gives the kind: kernels, copies (direction and memory kinds from the
name), memsets, runtime/driver calls, ``cuda_sync`` records, host ops (nested by their intervals),
and ``gpu_user_annotation`` kept as annotations, never as GPU work. Profiler bookkeeping is dropped.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from perfreview.formats.markers import cut_tokens, nesting_depths
from perfreview.trace import schema
from perfreview.trace.schema import Kind

KINETO_KINDS = {"kernel": Kind.KERNEL, "gpu_memcpy": Kind.MEMCPY, "gpu_memset": Kind.MEMSET,
                "cuda_runtime": Kind.API, "cuda_driver": Kind.API, "cuda_sync": Kind.SYNC, "cpu_op": Kind.RANGE,
                "user_annotation": Kind.RANGE, "python_function": Kind.RANGE,
                "gpu_user_annotation": Kind.GPU_ANNOTATION}
BOOKKEEPING_CATS = {"trace", "overhead"}  # the profiler's own activity, not the program's
BOOKKEEPING_NAMES = {"Activity Buffer Request", "Iteration Start: PyTorch Profiler"}
ON_STREAM = {Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET, Kind.GPU_ANNOTATION}
MAX_BYTES = 4 << 30  # a trace that decompresses to more is refused (gzip bombs)
# "Memcpy HtoD (Pageable -> Device)"
_COPY = re.compile(r"Memcpy (\w+) \((\w+) -> (\w+)\)")


class TraceError(ValueError):
    pass


def read_json(path: Path, max_bytes: int = MAX_BYTES) -> Any:
    """A JSON document from ``path``, gunzipped when it is gzip (by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(path, "rb") as fh:
                raw = fh.read(max_bytes + 1)
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from None
    if len(raw) > max_bytes:
        raise TraceError(f"{path}: decompresses to more than {max_bytes >> 20} MiB; refused")
    try:
        return json.loads(raw)
    except RecursionError:
        raise TraceError(f"{path}: JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: not a readable JSON trace ({exc})") from None


def _ns(value: Any, what: str, path: Path, i: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > 1e15:
        raise TraceError(f"{path}: event {i} has a bad {what} ({str(value)[:40]!r})")
    return int(round(float(value) * 1000))


def load(path: Path, run: str | None = None,
         token_marker: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trace's complete events as the event table (cut into tokens at ``token_marker``, if
    given), and what the file says about itself: ``otherData``, ``device`` and ``rank``."""
    path = Path(path)
    if path.is_dir():
        raise TraceError(f"{path}: a folder; give one rank's trace file")
    doc = read_json(path)
    other = doc.get("otherData", {}) if isinstance(doc, dict) else {}
    items = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise TraceError(f"{path}: no traceEvents list")
    if not isinstance(other, dict):
        other = {}
    origin = other.get("origin_ns", 0)
    origin = origin if isinstance(origin, int) and not isinstance(origin, bool) else 0
    tracks: dict[tuple, str] = {}
    for e in items:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name":
            args = e.get("args") if isinstance(e.get("args"), dict) else {}
            track = args.get("track")
            tracks[(str(e.get("pid")), str(e.get("tid")))] = (
                str(track) if track else f"pid{e.get('pid')}/{args.get('name')}")
    rows = []
    for i, e in enumerate(items):
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        if "ts" not in e or "dur" not in e or "name" not in e:
            raise TraceError(f"{path}: event {i} lacks ts, dur or name")
        row = _row(e, i, path, origin, tracks)
        if row is not None:
            rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        nest = frame["kind"].isin([Kind.RANGE.value, Kind.API.value]) & (frame["depth"] < 0)
        if nest.any():  # Kineto does not record nesting: derive it from the intervals
            frame.loc[nest, "depth"] = nesting_depths(frame[nest])
    try:
        if token_marker:
            frame = cut_tokens(frame, token_marker, path, source="kineto")
        table = schema.from_records(frame.to_dict("records"), run or str(other.get("perfreview_run") or path.stem))
    except schema.SchemaError as exc:
        raise TraceError(f"{path}: {exc}") from None
    return table, {"otherData": other, **_identity(doc)}


def _row(e: dict, i: int, path: Path, origin: int, tracks: dict[tuple, str]) -> dict[str, Any] | None:
    args = e.get("args") if isinstance(e.get("args"), dict) else {}
    cat, name = str(e.get("cat", "")).lower(), str(e["name"])
    if cat in BOOKKEEPING_CATS or name in BOOKKEEPING_NAMES:
        return None
    ours = "kind" in args and args.get("kind") in schema.KINDS  # perfreview's own export
    kind = Kind(args["kind"]) if ours else KINETO_KINDS.get(cat, Kind.RANGE)
    start = origin + _ns(e["ts"], "ts", path, i)
    dur = _ns(e["dur"], "dur", path, i)
    if dur < 0:
        raise TraceError(f"{path}: event {i} has a negative dur")
    pid, tid = str(e.get("pid")), str(e.get("tid"))
    stream = _int(args.get("stream"), _int(e.get("tid"), -1)) if kind in ON_STREAM else _int(args.get("stream"), -1)
    if ours:
        track = tracks.get((pid, tid), f"pid{pid}/tid{tid}")
    elif kind in ON_STREAM:
        track = schema.stream_track(_int(args.get("device"), _int(e.get("pid"), 0)), stream)
    elif kind == Kind.SYNC:  # Kineto's cuda_sync records sit on the device, not a host thread
        track = schema.sync_track(_int(args.get("device"), _int(e.get("pid"), 0)))
    else:
        track = schema.host_track(f"{pid}.{tid}")
    copy_kind, mem_kind = str(args.get("copy_kind", "")), str(args.get("mem_kind", ""))
    if kind == Kind.MEMCPY and not copy_kind and (m := _COPY.search(name)):
        copy_kind, mem_kind = m.group(1), f"{m.group(2).lower()}->{m.group(3).lower()}"
    return {
        "name": name, "kind": kind.value, "source": str(args.get("source", "kineto")), "track": track,
        "start_ns": start, "end_ns": start + dur, "repeat": _int(args.get("repeat"), -1),
        "token": _int(args.get("token"), -1), "phase": str(args.get("phase", "")), "depth": _int(args.get("depth"), -1),
        "stream": stream, "bytes": _int(args.get("bytes"), -1), "copy_kind": copy_kind, "mem_kind": mem_kind,
        "correlation": _int(args.get("correlation"), -1),
    }


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return int(value)


def _identity(doc: Any) -> dict[str, Any]:
    """Device name and rank, where a Kineto trace says them (deviceProperties, distributedInfo)."""
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    props = doc.get("deviceProperties")
    if isinstance(props, list) and props and isinstance(props[0], dict) and props[0].get("name"):
        out["device"] = str(props[0]["name"])
    dist = doc.get("distributedInfo")
    if isinstance(dist, dict) and isinstance(dist.get("rank"), int):
        out["rank"] = dist["rank"]
    return out

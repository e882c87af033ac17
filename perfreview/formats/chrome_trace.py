"""Chrome Trace Event JSON (perfreview's Perfetto export, or a Kineto trace) -> event table.

Reads ``[...]`` or ``{"traceEvents": [...]}``. Complete events (``ph: "X"``) become rows; ``M``
thread names give the tracks. perfreview's own ``args`` (kind, repeat, token, ...) restore the
rows exactly; for Kineto, ``cat`` maps to a kind (kernel, gpu_memcpy, cuda_runtime, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from perfreview.formats.markers import cut_tokens
from perfreview.trace import schema

KINETO_KINDS = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset", "cuda_runtime": "api",
                "cuda_driver": "api", "cpu_op": "range", "user_annotation": "range",
                "gpu_user_annotation": "gpu_range", "python_function": "range"}


class TraceError(ValueError):
    pass


def load(path: Path, run: str | None = None,
         token_marker: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trace's complete events as the event table (cut into tokens at ``token_marker``, if
    given), and its ``otherData``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: not a readable JSON trace ({exc})") from None
    other = doc.get("otherData", {}) if isinstance(doc, dict) else {}
    items = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise TraceError(f"{path}: no traceEvents list")
    origin = int(other.get("origin_ns", 0))
    tracks: dict[tuple, str] = {}
    for e in items:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name":
            args = e.get("args") or {}
            tracks[(e.get("pid"), e.get("tid"))] = args.get("track") or f"pid{e.get('pid')}/{args.get('name')}"
    rows = []
    for i, e in enumerate(items):
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        if "ts" not in e or "dur" not in e or "name" not in e:
            raise TraceError(f"{path}: event {i} lacks ts, dur or name")
        args = e.get("args") or {}
        start = origin + int(round(float(e["ts"]) * 1000))
        kind = args.get("kind") or KINETO_KINDS.get(str(e.get("cat", "")).lower(), "range")
        stream = args.get("stream", -1 if kind in ("range", "api", "token") else int(e.get("tid", -1)))
        rows.append({
            "name": e["name"], "kind": kind, "source": args.get("source", "kineto"),
            "track": tracks.get((e.get("pid"), e.get("tid")), f"pid{e.get('pid')}/tid{e.get('tid')}"),
            "start_ns": start, "end_ns": start + int(round(float(e["dur"]) * 1000)),
            "repeat": args.get("repeat", -1), "token": args.get("token", -1), "phase": args.get("phase", ""),
            "depth": args.get("depth", -1), "stream": stream, "bytes": args.get("bytes", -1),
            "copy_kind": args.get("copy_kind", ""), "mem_kind": args.get("mem_kind", ""),
            "correlation": args.get("correlation", -1),
        })
    try:
        if token_marker:
            rows = cut_tokens(pd.DataFrame(rows), token_marker, path, source="kineto").to_dict("records")
        frame = schema.from_records(rows, run or other.get("perfreview_run") or path.stem)
    except schema.SchemaError as exc:
        raise TraceError(f"{path}: {exc}") from None
    return frame, other

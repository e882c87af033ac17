"""Export a run as Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing).

Complete ("X") events with process/thread name metadata: one process for the host, one per GPU;
one thread per host thread and per stream. ``ts``/``dur`` are µs from the run's first event with
three decimals, so nanoseconds survive; ``args`` carry repeat, token, phase, kind and depth, which
lets :mod:`perfreview.formats.chrome_trace` read the file back into the same event table.
Events are written one by one (large runs are not built in memory twice).
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator

from perfreview.trace.files import written_whole
from perfreview.trace.runs import Run
from perfreview.trace.schema import TRACED_DEVICE_KINDS, Kind, parse_stream_track


def _ids(track: str) -> tuple[int, int, str, str]:
    """(pid, tid, process name, thread name) for a track."""
    stream = parse_stream_track(track)
    if stream is not None:
        d, s = stream
        return 100 + d, 1000 + s, f"GPU {d}", f"stream {s}"
    if track.startswith("gpu"):  # a device row that is not a stream (nsys' synchronisation records)
        dev, _, rest = track[3:].partition("/")
        d = int(dev) if dev.isdigit() else 0
        return 100 + d, 1 + zlib.crc32(rest.encode()) % 997, f"GPU {d}", rest or "device"
    thread = track.partition("/")[2] or "main"
    return 1, 1 + zlib.crc32(thread.encode()) % 997, "Host", f"host thread {thread}"


FLOW_ENDS = (Kind.API.value, *TRACED_DEVICE_KINDS)  # launch call -> GPU work, joined by correlation


def events(run: Run) -> Iterator[dict]:
    ev = run.events.sort_values(["start_ns", "end_ns"])
    origin = int(ev["start_ns"].min()) if len(ev) else 0
    seen: dict[str, tuple[int, int]] = {}
    for track in ev["track"].astype(str).unique():
        pid, tid, pname, tname = _ids(track)
        seen[track] = (pid, tid)
        yield {"ph": "M", "name": "process_name", "pid": pid, "tid": tid, "args": {"name": pname}}
        yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": tname, "track": track}}
    cols = ["name", "kind", "track", "source", "start_ns", "end_ns", "repeat", "token", "phase", "depth",
            "stream", "bytes", "copy_kind", "mem_kind", "correlation"]
    for row in ev[cols].itertuples(index=False):
        pid, tid = seen[str(row.track)]
        args = {"repeat": int(row.repeat), "token": int(row.token), "phase": str(row.phase), "kind": str(row.kind),
                "source": str(row.source), "depth": int(row.depth), "stream": int(row.stream)}
        if row.bytes >= 0:
            args.update(bytes=int(row.bytes), copy_kind=str(row.copy_kind), mem_kind=str(row.mem_kind))
        ts = round((int(row.start_ns) - origin) / 1e3, 3)
        if row.correlation >= 0:
            args["correlation"] = int(row.correlation)
        yield {"ph": "X", "name": str(row.name), "cat": str(row.kind), "pid": pid, "tid": tid, "ts": ts,
               "dur": round((int(row.end_ns) - int(row.start_ns)) / 1e3, 3), "args": args}
        if row.correlation >= 0 and str(row.kind) in FLOW_ENDS:
            # An arrow from the launching call to its GPU work (flow v1, bound to the enclosing slice),
            # as Kineto's "ac2g" flows: Perfetto draws it between the two slices.
            yield {"ph": "s" if str(row.kind) == "api" else "f", "bp": "e", "id": int(row.correlation),
                   "cat": "launch", "name": "launch", "pid": pid, "tid": tid, "ts": ts}


def export(run: Run, out: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the run as Chrome trace JSON, whole or not at all (trace.files), gzipped where ``out`` ends in
    ``.gz`` (Perfetto opens it as it is; a 775k-event trace is 224 MB of JSON); ``progress(rows written,
    rows in all)`` every 250k rows."""
    out = Path(out)
    origin = int(run.events["start_ns"].min()) if len(run.events) else 0
    if out.suffix.lower() == ".gz":
        with (written_whole(out, "wb") as raw,  # named in the gzip header as the JSON it holds, not the temp file
              gzip.GzipFile(out.name.removesuffix(".gz"), "wb", 6, raw) as packed,
              io.TextIOWrapper(packed, encoding="utf-8") as fh):
            _write(fh, run, origin, progress)
    else:
        with written_whole(out) as fh:
            _write(fh, run, origin, progress)
    return out


def _write(fh: IO[str], run: Run, origin: int, progress: Callable[[int, int], None] | None = None) -> None:
    header = {"displayTimeUnit": "ns", "otherData": {"perfreview_run": run.id, "origin_ns": origin,
                                                      "config": run.meta.config_label}}
    fh.write(json.dumps(header)[:-1] + ', "traceEvents": [\n')
    first, rows = True, 0
    for e in events(run):
        fh.write(("" if first else ",\n") + json.dumps(e, separators=(",", ":")))
        first = False
        if e["ph"] == "X":  # one per row of the run (the rest: track names, launch arrows)
            rows += 1
            if progress is not None and rows % 250_000 == 0:
                progress(rows, len(run.events))
    fh.write("\n]}\n")


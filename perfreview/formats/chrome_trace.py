"""Chrome Trace Event JSON (perfreview's Perfetto export, or a PyTorch profiler/Kineto trace, plain or
gzipped, one file or a folder of rank traces) -> event table.

Reads ``[...]`` or ``{"traceEvents": [...]}``. Complete events (``ph: "X"``) become rows; ``M``
thread names give the tracks. perfreview's own ``args`` (kind, repeat, token, ...) restore its rows
exactly; for Kineto, ``cat`` gives the kind: kernels, copies (direction and memory kinds from the
name), memsets, runtime/driver calls, ``cuda_sync`` records, host ops (nested by their intervals),
and ``gpu_user_annotation`` kept as annotations, never as GPU work. Profiler bookkeeping is dropped.

Memory stays bounded: the events are streamed (``json_stream``) in batches that worker processes
parse and turn into columns (a batch's Python objects live only in its worker); the table is
built from the columns.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import numpy as np
import pandas as pd

from perfreview.formats import json_stream
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
PARALLEL_FROM = 64 << 20  # files smaller than this are parsed in this process (no pool to start)
TRACE_SUFFIXES = (".json", ".json.gz")
# "Memcpy HtoD (Pageable -> Device)"
_COPY = re.compile(r"Memcpy (\w+) \((\w+) -> (\w+)\)")
_INTS = ("repeat", "token", "depth", "stream", "bytes", "correlation")
_STRS = ("name", "kind", "source", "track", "phase", "copy_kind", "mem_kind")


class TraceError(ValueError):
    pass


@dataclass
class Columns:
    """One batch of events as columns (what a worker sends back), or where it failed."""

    n_items: int = 0
    ints: dict[str, np.ndarray] = field(default_factory=dict)
    strs: dict[str, pd.Categorical] = field(default_factory=dict)
    start_ns: np.ndarray | None = None
    end_ns: np.ndarray | None = None
    threads: dict[str, str] = field(default_factory=dict)  # "pid{p}/tid{t}" -> track, from M events
    error: tuple[int, str] | None = None  # (item index in the batch, problem)

    @property
    def rows(self) -> int:
        return 0 if self.start_ns is None else len(self.start_ns)


class _ItemError(Exception):
    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index, self.problem = index, problem


class Args(msgspec.Struct, gc=False):
    """The ``args`` fields read; any others are skipped by the parser (never built)."""

    stream: Any = None
    device: Any = None
    correlation: Any = None
    bytes: Any = None
    kind: Any = None
    repeat: Any = None
    token: Any = None
    phase: Any = None
    depth: Any = None
    source: Any = None
    copy_kind: Any = None
    mem_kind: Any = None
    track: Any = None  # thread_name records
    name: Any = None


class Event(msgspec.Struct, gc=False):
    """One trace event, the fields read (typed loosely: each is checked when it becomes a column)."""

    ph: Any = None
    name: Any = None
    cat: Any = None
    ts: Any = None
    dur: Any = None
    pid: Any = None
    tid: Any = None
    args: Args | None = None


_DECODE = msgspec.json.Decoder(list[Event])
_AT = re.compile(r"at `\$\[(\d+)\]\.?([\w.]*)`")


def convert(batch: bytes) -> Columns:
    """Parse one batch (``json_stream`` text) into columns; errors come back as values."""
    try:
        items = _DECODE.decode(json_stream.wrap(batch))
    except msgspec.ValidationError as exc:  # an item of the wrong type: name it
        at = _AT.search(str(exc))
        why = str(exc).split(" - ")[0]
        problem = f"has a bad {at.group(2)} ({why})" if at and at.group(2) else f"is not a trace event ({why})"
        return Columns(error=(int(at.group(1)), problem) if at else (-1, f"not a trace ({exc})"))
    except msgspec.DecodeError as exc:
        problem = "JSON nested too deeply" if "recursion" in str(exc).lower() else f"not a readable JSON trace ({exc})"
        return Columns(error=(-1, problem))
    try:
        return _columns(items)
    except _ItemError as exc:
        return Columns(n_items=len(items), error=(exc.index, exc.problem))


def _columns(items: list[Event]) -> Columns:
    """The batch's X events as columns, built a column at a time (a Python loop per field, not
    per row and field), with Kineto's meaning of each field."""
    threads: dict[str, str] = {}
    for e in items:
        if e.ph == "M" and e.name == "thread_name":
            a = e.args or _NO_ARGS
            threads[f"pid{e.pid}/tid{e.tid}"] = str(a.track) if a.track else f"pid{e.pid}/{a.name}"
    events = [e for e in items if e.ph == "X"]
    index = _Index(items)
    out = Columns(n_items=len(items), threads=threads)
    ts, dur, names = _field(events, "ts"), _field(events, "dur"), _field(events, "name")
    for values in (ts, dur, names):
        if type(None) in set(map(type, values)):
            raise _ItemError(index[values.index(None)], "lacks ts, dur or name")
    start, dur = _times(ts, "ts", index), _times(dur, "dur", index)
    if (dur < 0).any():
        raise _ItemError(index[int(np.flatnonzero(dur < 0)[0])], "has a negative dur")
    args = [e.args or _NO_ARGS for e in events]
    cat = _strings(_field(events, "cat"), lower=True, none="")
    name = _strings(names)
    arg_kind = _field(args, "kind")
    ours = np.zeros(len(events), dtype=bool) if set(map(type, arg_kind)) <= {type(None)} else np.fromiter(
        (type(k) is str and k in _KIND_SET for k in arg_kind), dtype=bool, count=len(events))
    kind = np.asarray([KINETO_KINDS.get(c, Kind.RANGE).value for c in cat.categories], dtype=object)[cat.codes]
    if ours.any():
        kind[ours] = np.asarray(arg_kind, dtype=object)[ours]
    keep = ~(np.asarray(cat.isin(list(BOOKKEEPING_CATS))) | np.asarray(name.isin(list(BOOKKEEPING_NAMES))))
    ints = {c: _ints(_field(args, c), -1) for c in ("repeat", "token", "depth", "bytes", "correlation")}
    pid, tid = _field(events, "pid"), _field(events, "tid")
    on_stream = np.isin(kind, _ON_STREAM_VALUES)
    stream = _ints(_field(args, "stream"), _NONE)
    stream = np.where(stream == _NONE, np.where(on_stream, _ints(tid, -1), -1), stream)
    device = _ints(_field(args, "device"), _NONE)
    device = np.where(device == _NONE, _ints(pid, 0), device)
    track = _tracks(kind, ours, on_stream, device, stream, pid, tid)
    copy_kind = _strings(_field(args, "copy_kind"), none="")
    mem_kind = _strings(_field(args, "mem_kind"), none="")
    copy_kind, mem_kind = _copies_from_names(kind, name, copy_kind, mem_kind)
    out.start_ns, out.end_ns = start[keep], (start + dur)[keep]
    out.ints = {**{c: v[keep] for c, v in ints.items()}, "stream": stream[keep]}
    strs = {"name": name, "kind": pd.Categorical(kind), "track": track, "copy_kind": copy_kind,
            "mem_kind": mem_kind, "source": _strings(_field(args, "source"), none="kineto"),
            "phase": _strings(_field(args, "phase"), none="")}
    out.strs = {c: v[keep].remove_unused_categories() for c, v in strs.items()}
    return out


_NO_ARGS = Args()


class _Index:
    """Position in the batch of the j-th X event (wanted only to name a bad event)."""

    def __init__(self, items: list[Event]) -> None:
        self.items = items

    def __getitem__(self, j: int) -> int:
        return [i for i, e in enumerate(self.items) if e.ph == "X"][j]


_KIND_SET = frozenset(schema.KINDS)
_ON_STREAM_VALUES = [k.value for k in ON_STREAM]
_NONE = np.iinfo(np.int64).min  # "not given" in an int column, before its default is chosen


def _field(structs: list, name: str) -> list:
    """One field of every struct (``map`` with ``attrgetter``: no Python frame per element)."""
    return list(map(attrgetter(name), structs))


def _times(values: list, what: str, index: _Index) -> np.ndarray:
    """µs (int or float) -> int ns; a bad value names its event."""
    if not set(map(type, values)) <= {int, float}:
        j = next(j for j, v in enumerate(values) if type(v) not in (int, float))
        raise _ItemError(index[j], f"has a bad {what} ({str(values[j])[:40]!r})")
    try:
        us = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an int beyond float range: bad, below
        us = np.asarray([v if abs(v) < 1e300 else float("inf") for v in values], dtype=np.float64)
    bad = ~np.isfinite(us) | (np.abs(us) > 1e15)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise _ItemError(index[j], f"has a bad {what} ({str(values[j])[:40]!r})")
    return np.rint(us * 1000).astype(np.int64)


def _ints(values: list, default: int) -> np.ndarray:
    """An int column: ints kept, finite floats truncated, anything else (None, bool, str) -> default."""
    types = set(map(type, values))
    if types <= {type(None)}:  # the field is absent (most args of a Kineto trace)
        return np.full(len(values), default, dtype=np.int64)
    if types <= {int, type(None)}:
        try:
            return np.array(values if types == {int} else [default if v is None else v for v in values],
                            dtype=np.int64)
        except OverflowError:
            pass
    return np.asarray([_int(v, default) for v in values], dtype=np.int64)


def _int(value: Any, default: int) -> int:
    t = type(value)
    if t is int:
        return value if -(1 << 62) < value < (1 << 62) else default
    if t is float and math.isfinite(value) and abs(value) < 1e18:
        return int(value)
    return default


def _strings(values: list, lower: bool = False, none: str = "None") -> pd.Categorical:
    """A str categorical of any JSON values (``str()`` of non-strings, ``none`` for null or absent)."""
    try:
        where = {v: i for i, v in enumerate(dict.fromkeys(values))}  # first-seen order: the same in any process
    except TypeError:  # unhashable values (lists, objects)
        return _strings([v if isinstance(v, str) or v is None else str(v) for v in values], lower, none)
    labels = [none if v is None else str(v).lower() if lower else str(v) for v in where]
    if len(where) <= 1:
        return pd.Categorical.from_codes(np.zeros(len(values), dtype=np.int32), categories=labels or [none])
    codes = np.fromiter(map(where.__getitem__, values), dtype=np.int32, count=len(values))
    uniq = list(dict.fromkeys(labels))  # str() may merge values (1 and "1")
    if len(uniq) < len(labels):
        at = {c: i for i, c in enumerate(uniq)}
        codes = np.asarray([at[c] for c in labels], dtype=np.int32)[codes]
    return pd.Categorical.from_codes(codes, categories=uniq)


def _tracks(kind: np.ndarray, ours: np.ndarray, on_stream: np.ndarray, device: np.ndarray, stream: np.ndarray,
            pid: list, tid: list) -> pd.Categorical:
    """Per row: perfreview's own rows ``pid{p}/tid{t}`` (renamed by thread_name records later), GPU
    work ``gpu<device>/stream<id>``, sync records ``gpu<device>/sync``, the rest ``host/<pid>.<tid>``."""
    n = len(kind)
    names: dict[str, int] = {}
    codes = np.zeros(n, dtype=np.int64)
    sync = (kind == Kind.SYNC.value) & ~ours
    gpu = on_stream & ~ours
    host = ~(gpu | sync)
    if host.any():
        p, t = _strings(pid), _strings(tid)
        width = len(t.categories)
        combo = p.codes.astype(np.int64) * width + t.codes
        uniq, inv = np.unique(combo[host], return_inverse=True)
        pc, tc = list(p.categories), list(t.categories)
        own = _codes(names, [f"pid{pc[u // width]}/tid{tc[u % width]}" for u in uniq])
        theirs = _codes(names, [schema.host_track(f"{pc[u // width]}.{tc[u % width]}") for u in uniq])
        codes[host] = np.where(ours[host], own[inv], theirs[inv])
    if gpu.any():
        uniq, inv = np.unique(np.stack([device[gpu], stream[gpu]]), axis=1, return_inverse=True)
        codes[gpu] = _codes(names, [schema.stream_track(d, s) for d, s in uniq.T.tolist()])[inv.ravel()]
    if sync.any():
        uniq, inv = np.unique(device[sync], return_inverse=True)
        codes[sync] = _codes(names, [schema.sync_track(d) for d in uniq.tolist()])[inv]
    return pd.Categorical.from_codes(codes, categories=list(names) or [""]).remove_unused_categories()


def _codes(names: dict[str, int], labels: list[str]) -> np.ndarray:
    return np.asarray([names.setdefault(label, len(names)) for label in labels], dtype=np.int64)


def _copies_from_names(kind: np.ndarray, name: pd.Categorical, copy_kind: pd.Categorical,
                       mem_kind: pd.Categorical) -> tuple[pd.Categorical, pd.Categorical]:
    """Kineto names its copies ``Memcpy HtoD (Pageable -> Device)``: direction and memory kinds."""
    need = kind == Kind.MEMCPY.value
    if not need.any():
        return copy_kind, mem_kind
    need &= np.asarray(copy_kind.categories == "")[copy_kind.codes]
    if not need.any():
        return copy_kind, mem_kind
    parsed = {c: _COPY.search(c) for c in name.categories}
    ck, mk = np.asarray(copy_kind, dtype=object), np.asarray(mem_kind, dtype=object)
    for i, x in zip(np.flatnonzero(need).tolist(), np.asarray(name, dtype=object)[need].tolist()):
        if (m := parsed[x]) is not None:
            ck[i], mk[i] = m.group(1), f"{m.group(2).lower()}->{m.group(3).lower()}"
    return pd.Categorical(ck), pd.Categorical(mk)


# --- the file ------------------------------------------------------------------------------------
Progress = Callable[[int, int], None]


def _batches(path: Path, doc: json_stream.Document, chunk: int, progress: Progress | None) -> Iterator[bytes]:
    try:
        fh = json_stream.open_bytes(path)
        size = path.stat().st_size
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from None
    raw = getattr(fh, "fileobj", fh)  # a gzip file's position in the compressed bytes
    with fh:
        try:
            for batch in json_stream.stream_items(fh, doc, chunk=chunk):
                if progress is not None:
                    progress(raw.tell() >> 20, size >> 20)
                yield batch
        except json_stream.StreamError as exc:
            raise TraceError(f"{path}: {exc}") from None


def _convert_all(path: Path, doc: json_stream.Document, workers: int, chunk: int,
                 progress: Progress | None = None) -> list[Columns]:
    """Every batch converted, in file order; ``workers`` > 1 parses in that many processes with at
    most two batches in flight per worker (the reader waits rather than piling batches up)."""
    done: list[Columns] = []
    if workers <= 1:
        for batch in _batches(path, doc, chunk, progress):
            done.append(_checked(convert(batch), done, path))
        return done
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        flight: list[Future] = []
        for batch in _batches(path, doc, chunk, progress):
            flight.append(pool.submit(convert, batch))
            while len(flight) >= 2 * workers:
                done.append(_checked(flight.pop(0).result(), done, path))
        for fut in flight:
            done.append(_checked(fut.result(), done, path))
    return done


def _checked(cols: Columns, done: list[Columns], path: Path) -> Columns:
    if cols.error is not None:
        index, problem = cols.error
        if index < 0:
            raise TraceError(f"{path}: {problem}")
        raise TraceError(f"{path}: event {sum(c.n_items for c in done) + index} {problem}")
    return cols


def _frame(parts: list[Columns], origin: int) -> pd.DataFrame:
    """The batches' columns as one frame (schema columns, not yet normalised)."""
    parts = [p for p in parts if p.rows] or [_columns([])]
    data: dict[str, Any] = {
        "start_ns": np.concatenate([p.start_ns for p in parts]) + origin,
        "end_ns": np.concatenate([p.end_ns for p in parts]) + origin,
    }
    for c in _INTS:
        data[c] = np.concatenate([p.ints[c] for p in parts])
    for c in _STRS:
        data[c] = pd.api.types.union_categoricals([p.strs[c] for p in parts])
    threads: dict[str, str] = {}
    for p in parts:
        threads.update(p.threads)
    frame = pd.DataFrame(data)
    frame["track"] = _renamed(frame["track"], threads)
    return frame


def _renamed(column: pd.Series, names: dict[str, str]) -> pd.Series:
    """A categorical column with some values renamed (by category, not by row, where names stay unique)."""
    old = list(column.cat.categories)
    new = [names.get(t, t) for t in old]
    if new == old:
        return column
    if len(set(new)) == len(new):
        return column.cat.rename_categories(new)
    return column.astype(str).map(lambda t: names.get(t, t)).astype("category")


def _read(path: Path, workers: int | None, chunk: int,
          progress: Progress | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One trace file -> (frame before normalising, the document outside the events)."""
    doc = json_stream.Document()
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if path.stat().st_size >= PARALLEL_FROM else 1
    parts = _convert_all(path, doc, workers, chunk, progress)
    import json

    try:
        rest = json.loads(bytes(doc.outside)) if doc.outside.strip() else None
    except RecursionError:
        raise TraceError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:
        raise TraceError(f"{path}: not a readable JSON trace ({exc})") from None
    if not doc.found:
        raise TraceError(f"{path}: no traceEvents list")
    rest = rest if isinstance(rest, dict) else {}
    other = rest.get("otherData", {})
    other = other if isinstance(other, dict) else {}
    origin = other.get("origin_ns", 0)
    origin = origin if type(origin) is int and abs(origin) < (1 << 62) else 0
    return _frame(parts, origin), {"otherData": other, **_identity(rest)}


def load(path: Path, run: str | None = None, token_marker: str | None = None, workers: int | None = None,
         chunk: int = json_stream.CHUNK, progress: Progress | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trace's complete events as the event table (cut into tokens at ``token_marker``, if
    given), and what the file says about itself: ``otherData``, ``device`` and ``rank``. A folder
    is read as one trace per rank (see :func:`load_folder`)."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path, run, token_marker, workers, chunk, progress)
    frame, info = _read(path, workers, chunk, progress)
    return _table(frame, path, run or str(info["otherData"].get("perfreview_run") or path.stem), token_marker), info


def load_folder(folder: Path, run: str | None = None, token_marker: str | None = None,
                workers: int | None = None, chunk: int = json_stream.CHUNK,
                progress: Progress | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A folder of rank traces (HTA's input): one event table, each rank's GPU rows on ``gpu<rank>``
    and its host rows on ``host/rank<r>.<pid>.<tid>`` (ranks on different hosts may share device
    and process ids). Tokens are cut at the lowest rank's marker (the ranks step together)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES))
    if not files:
        raise TraceError(f"{folder}: no .json or .json.gz trace in the folder")
    frames, ranks, device = [], [], None
    for i, f in enumerate(files):
        frame, info = _read(f, workers, chunk, progress)
        rank = int(info.get("rank", i))
        if rank in ranks:
            raise TraceError(f"{f}: rank {rank} appears twice in {folder}")
        ranks.append(rank)
        device = device or info.get("device")
        frames.append(_per_rank(frame, rank))
    frame = pd.concat(frames, ignore_index=True)
    for c in _STRS:
        frame[c] = frame[c].astype("category")
    info = {"otherData": {}, "ranks": sorted(ranks), **({"device": device} if device else {})}
    return _table(frame, folder, run or folder.name, token_marker), info


def _per_rank(frame: pd.DataFrame, rank: int) -> pd.DataFrame:
    def retrack(track: str) -> str:
        on = schema.parse_stream_track(track)
        if on is not None:
            return schema.stream_track(rank, on[1])
        if track.startswith("gpu"):
            return f"gpu{rank}/" + track.partition("/")[2]
        return f"host/rank{rank}." + track.partition("/")[2]

    track = frame["track"].astype("category")
    return frame.assign(track=_renamed(track, {str(t): retrack(str(t)) for t in track.cat.categories}))


def _table(frame: pd.DataFrame, path: Path, run: str, token_marker: str | None) -> pd.DataFrame:
    if not len(frame):  # a run without a single timed event would store, report and compare nothing
        raise TraceError(f'{path}: no complete events (ph "X", profiler bookkeeping aside) to import')
    nest = (frame["kind"].isin([Kind.RANGE.value, Kind.API.value]) & (frame["depth"] < 0)).to_numpy()
    if nest.any():  # Kineto does not record nesting: derive it from the intervals
        depth = frame["depth"].to_numpy().copy()
        depth[nest] = nesting_depths(frame.loc[nest, ["track", "start_ns", "end_ns"]])
        frame["depth"] = depth
    try:
        if token_marker:
            frame = cut_tokens(frame, token_marker, path, source="kineto")
        frame["run"] = run
        return schema.normalize(frame)
    except schema.SchemaError as exc:
        raise TraceError(f"{path}: {exc}") from None


def _identity(doc: dict) -> dict[str, Any]:
    """Device name and rank, where a Kineto trace says them (deviceProperties, distributedInfo)."""
    out: dict[str, Any] = {}
    props = doc.get("deviceProperties")
    if isinstance(props, list) and props and isinstance(props[0], dict) and props[0].get("name"):
        out["device"] = str(props[0]["name"])
    dist = doc.get("distributedInfo")
    if isinstance(dist, dict) and type(dist.get("rank")) is int:
        out["rank"] = dist["rank"]
    return out

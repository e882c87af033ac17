"""CUPTI activity tracing in-process (``--trace cupti``): kernels, copies, memsets, runtime and driver
calls and synchronisations of every token, as rows of the one event schema.

Two halves: :class:`Collector` talks to CUPTI through NVIDIA's ``cupti-python`` and keeps each
record as a plain tuple of fields (:data:`FIELDS`); :func:`to_rows` turns those tuples into event
rows on the run's clock, with no CUPTI needed, so it is tested on the CPU against records saved
from a real run. Attribution:

- a runtime/driver call belongs to the token and host range whose external correlation id was
  pushed when the call was made (EXTERNAL_CORRELATION records: the recorder pushes one id per
  range, naming the range and its token); without such a record, to the token and innermost host
  range its start falls in;
- GPU work belongs to the call that launched it (same correlation id): its token, and the host
  range the launch happened in, as the function;
- on the graph path every kernel of a token correlates to the one ``cudaGraphLaunch``; the i-th
  kernel of a replay is the i-th launch recorded while the graph was captured, whose function the
  recorder knew then (``capture_log``), so per-function GPU time exists there too.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_right
from typing import Any, Iterable

from perfreview.trace.schema import Kind, Source, host_track, stream_track, sync_track
from runner.device import DeviceError

# kind (ActivityKind's name), name, start, end, correlation, stream, device, bytes, copy_kind,
# src_kind, dst_kind, graph_node, sync_type, external_id (records saved before it had 13 fields)
FIELDS = ("kind", "name", "start", "end", "correlation", "stream", "device", "bytes", "copy_kind", "src_kind",
          "dst_kind", "graph_node", "sync_type", "external_id")
KINDS = ("CONCURRENT_KERNEL", "MEMCPY", "MEMSET", "RUNTIME", "DRIVER", "SYNCHRONIZATION", "EXTERNAL_CORRELATION")
TOKEN_SHIFT = 20  # an external id is (token + 1) << TOKEN_SHIFT | the range's name index
COPY_KINDS = {1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA", 8: "DtoD", 9: "HtoH",
              10: "PtoP"}
MEM_KINDS = {0: "unknown", 1: "pageable", 2: "pinned", 3: "device", 4: "array", 5: "managed", 6: "device_static",
             7: "managed_static"}
SYNC_TYPES = {1: "event sync", 2: "stream wait event", 3: "stream sync", 4: "context sync"}
INSTALL = "--trace cupti needs NVIDIA's cupti-python: pip install -e '.[cupti]' (or carry its wheel)"
# NVTX through CUPTI (NVTX_INJECTION64_PATH naming libcupti) measured on the lent H100 with cupti-python
# 13.4 (reports/h100-cupti/nvtx_probe_b54d9e8.json): no MARKER record in any variant, and kernel records
# lost (1 of 9 with a named NVTX domain, as the recorder uses). The recorder's external correlation ids
# give the ranges' attribution instead, so a run refuses the variable rather than lose kernels.
NVTX_INJECTION = ("NVTX_INJECTION64_PATH is set: with it CUPTI lost kernel records and gave no NVTX records "
                  "(measured, cupti-python 13.4); unset it (perfreview ties kernels to functions by CUPTI "
                  "external correlation)")


class CuptiUnavailable(DeviceError):
    """cupti-python is missing or CUPTI cannot start (the message says what to install)."""


_COLLECTOR: "Collector | None" = None


def active() -> "Collector | None":
    """The collector if this process made one (an untraced side pauses it for its repeats)."""
    return _COLLECTOR


def collector() -> "Collector":
    """The process's one collector (CUPTI's callbacks are per process; every side shares it)."""
    global _COLLECTOR
    if _COLLECTOR is None:
        _COLLECTOR = Collector()
    return _COLLECTOR


class Collector:
    """Enables the activity kinds once; :meth:`take` flushes and returns the records so far."""

    def __init__(self) -> None:
        if os.environ.get("NVTX_INJECTION64_PATH"):
            raise CuptiUnavailable(NVTX_INJECTION)
        try:
            from cupti import cupti
        except Exception as exc:  # ImportError, or the CUPTI library not found
            raise CuptiUnavailable(f"{INSTALL} ({type(exc).__name__}: {exc})") from None
        self.c = cupti
        self.raw: list[tuple] = []
        self._names: dict[tuple[int, int], str] = {}
        self._kinds = {int(getattr(cupti.ActivityKind, k)): k for k in KINDS}
        self._ext_kind = int(cupti.ExternalCorrelationKind.CUSTOM0)
        cupti.activity_register_callbacks(self._requested, self._completed)
        self.enabled = False
        self.resume()

    def resume(self) -> None:
        if not self.enabled:
            for k in self._kinds:
                self.c.activity_enable(k)
            self.enabled = True

    def pause(self) -> None:
        """No records (and no tracing cost) until :meth:`resume`: an untraced side's repeats."""
        if self.enabled:
            for k in self._kinds:
                self.c.activity_disable(k)
            self.enabled = False

    @staticmethod
    def _requested() -> tuple[int, int]:
        return 8 << 20, 0  # 8 MiB buffers, as many records as fit

    def _completed(self, activities: Iterable[Any]) -> None:
        kinds, raw = self._kinds, self.raw
        for a in activities:
            kind = kinds.get(int(a.kind))
            if kind is None:
                continue
            if kind == "EXTERNAL_CORRELATION":  # (API call's correlation id -> the id pushed then)
                raw.append((kind, "", 0, 0, int(a.correlation_id), -1, 0, -1, 0, 0, 0, 0, 0, int(a.external_id)))
                continue
            name = getattr(a, "name", None) or self._api_name(kind, a)
            raw.append((kind, name, int(a.start), int(a.end), int(getattr(a, "correlation_id", -1)),
                        int(getattr(a, "stream_id", -1)), int(getattr(a, "device_id", 0)),
                        int(getattr(a, "bytes", -1)), int(getattr(a, "copy_kind", 0)),
                        int(getattr(a, "src_kind", 0)), int(getattr(a, "dst_kind", 0)),
                        int(getattr(a, "graph_node_id", 0)), int(getattr(a, "type", 0)), 0))

    def push(self, external_id: int) -> None:
        """Calls made until :meth:`pop` carry ``external_id`` (an EXTERNAL_CORRELATION record each)."""
        if self.enabled:
            self.c.activity_push_external_correlation_id(self._ext_kind, external_id)

    def pop(self) -> None:
        if self.enabled:
            self.c.activity_pop_external_correlation_id(self._ext_kind)

    def _api_name(self, kind: str, a: Any) -> str:
        if kind not in ("RUNTIME", "DRIVER"):
            return kind.lower()
        key = (kind == "RUNTIME", int(a.cbid))
        if key not in self._names:
            domain = self.c.CallbackDomain.RUNTIME_API if key[0] else self.c.CallbackDomain.DRIVER_API
            try:
                self._names[key] = str(self.c.get_callback_name(domain, key[1])).split("_v")[0]
            except Exception:
                self._names[key] = f"{kind.lower()} call {key[1]}"
        return self._names[key]

    def clock_offset(self, tries: int = 9) -> tuple[int, int]:
        """(host clock - CUPTI clock, ns) from the tightest of ``tries`` bracketed reads, and its
        uncertainty (half the bracket)."""
        best = None
        for _ in range(tries):
            h0 = time.perf_counter_ns()
            c = int(self.c.get_timestamp())
            h1 = time.perf_counter_ns()
            if best is None or h1 - h0 < best[1]:
                best = ((h0 + h1) // 2 - c, h1 - h0)
        assert best is not None
        return best[0], best[1] // 2

    def take(self) -> list[tuple]:
        self.c.activity_flush_all(1)
        out, self.raw = self.raw, []
        return out



def external_id(token: int, name_index: int) -> int:
    """The id the recorder pushes for a range: its token and its name (an index into the names)."""
    return (token + 1) << TOKEN_SHIFT | name_index


def split_external_id(ext: int) -> tuple[int, int]:
    """:func:`external_id` undone: (token, name index)."""
    return (ext >> TOKEN_SHIFT) - 1, ext & ((1 << TOKEN_SHIFT) - 1)


def to_rows(raw: list[tuple | list], offset_ns: int, repeat: int, host_rows: list[dict],
            capture_log: list[tuple[str, str]] | None = None, thread: str = "main",
            stream_ids: dict[int, int] | None = None, external_names: list[str] | None = None) -> list[dict]:
    """Event rows from CUPTI records (:data:`FIELDS` order) of one repeat. ``host_rows``: that
    repeat's host rows from the recorder (tokens and ranges, run clock); ``offset_ns``: host clock
    minus CUPTI clock; ``capture_log``: (function, kernel) per launch of the captured token graph;
    ``stream_ids``: the driver's stream id -> the runner's stream index (the same timeline row as
    that stream's CUDA events; ids not in it, a graph's own streams, are kept); ``external_names``:
    the range names the recorder's external ids index."""
    records = [dict(zip(FIELDS, r)) for r in raw]
    pushed = {r["correlation"]: r.get("external_id", 0) for r in records if r["kind"] == "EXTERNAL_CORRELATION"}
    if stream_ids:
        for r in records:
            r["stream"] = stream_ids.get(r["stream"], r["stream"])
    tokens = sorted((r["start_ns"], r["end_ns"], r["token"], r["phase"]) for r in host_rows
                    if r["kind"] == Kind.TOKEN.value)
    starts = [t[0] for t in tokens]
    ranges = sorted((r["start_ns"], r["end_ns"], r["depth"], r["name"]) for r in host_rows
                    if r["kind"] == Kind.RANGE.value and r["depth"] >= 1)

    def token_at(t: int) -> tuple[int, str]:
        i = bisect_right(starts, t) - 1
        return (tokens[i][2], tokens[i][3]) if i >= 0 and t <= tokens[i][1] else (-1, "")

    apis = sorted((r for r in records if r["kind"] in ("RUNTIME", "DRIVER")), key=lambda r: r["start"])
    enclosing = _innermost([r["start"] + offset_ns for r in apis], ranges)

    out: list[dict] = []
    api_of: dict[int, tuple[int, str, str]] = {}  # correlation -> (token, phase, function)
    phases = {t[2]: t[3] for t in tokens}
    for r, (func, depth) in zip(apis, enclosing):
        s, e = r["start"] + offset_ns, r["end"] + offset_ns
        token, phase = token_at(s)
        ext = pushed.get(r["correlation"], 0)
        ext_token, name_index = split_external_id(ext)
        if ext and external_names and name_index < len(external_names):
            # the range and token that were open when the call was made, as CUPTI recorded them
            func, token = external_names[name_index], ext_token
            phase = phases.get(token, phase)
        api_of[r["correlation"]] = (token, phase, func)
        out.append({"repeat": repeat, "token": token, "phase": phase, "source": Source.CUPTI.value,
                    "kind": Kind.API.value, "name": r["name"], "track": host_track(thread), "start_ns": s,
                    "end_ns": max(s, e), "depth": depth + 1, "correlation": r["correlation"]})
    device = [r for r in records if r["kind"] in ("CONCURRENT_KERNEL", "MEMCPY", "MEMSET")]
    by_launch: dict[int, list[dict]] = {}
    for r in device:
        by_launch.setdefault(r["correlation"], []).append(r)
    for corr, group in by_launch.items():
        token, phase, func = api_of.get(corr, (-1, "", ""))
        kernels = sorted((r for r in group if r["kind"] == "CONCURRENT_KERNEL"), key=lambda r: r["start"])
        names = _graph_functions(kernels, capture_log) if capture_log and len(kernels) > 1 else {}
        for r in group:
            s, e = r["start"] + offset_ns, r["end"] + offset_ns
            if token < 0:
                token, phase = token_at(s)
            kind = {"CONCURRENT_KERNEL": Kind.KERNEL, "MEMCPY": Kind.MEMCPY, "MEMSET": Kind.MEMSET}[r["kind"]]
            row = {"repeat": repeat, "token": token, "phase": phase, "source": Source.CUPTI.value, "kind": kind.value,
                   "name": r["name"] if kind == Kind.KERNEL else _copy_name(r), "track": stream_track(r["device"],
                   r["stream"]), "stream": r["stream"], "start_ns": s, "end_ns": max(s, e), "correlation": corr}
            if kind != Kind.KERNEL:
                row["bytes"] = r["bytes"]
            if kind == Kind.MEMCPY:
                row["copy_kind"] = COPY_KINDS.get(r["copy_kind"], "other")
                row["mem_kind"] = f"{MEM_KINDS.get(r['src_kind'], '?')}->{MEM_KINDS.get(r['dst_kind'], '?')}"
            out.append(row)
            function = names.get(id(r), func if func not in ("graph_launch", "") else "")
            if function and kind == Kind.KERNEL:  # the function's GPU time, from the kernel itself
                out.append({**row, "kind": Kind.GPU_RANGE.value, "name": function})
    for r in records:
        if r["kind"] == "SYNCHRONIZATION":
            s, e = r["start"] + offset_ns, r["end"] + offset_ns
            token, phase = token_at(s)
            out.append({"repeat": repeat, "token": token, "phase": phase, "source": Source.CUPTI.value,
                        "kind": Kind.SYNC.value, "name": SYNC_TYPES.get(r["sync_type"], "sync"),
                        "track": sync_track(r["device"]), "stream": r["stream"] if r["stream"] < 2**32 - 1 else -1,
                        "start_ns": s, "end_ns": max(s, e), "correlation": r["correlation"]})
    return out


def _innermost(times: list[int], ranges: list[tuple[int, int, int, str]]) -> list[tuple[str, int]]:
    """For each time (ascending), the innermost host range open then: (name, depth), or ("", 0).
    One sweep with a stack: the recorder's ranges nest properly on one thread."""
    out, stack, i = [], [], 0
    for t in times:
        while i < len(ranges) and ranges[i][0] <= t:
            while stack and stack[-1][1] < ranges[i][0]:
                stack.pop()
            stack.append(ranges[i])
            i += 1
        while stack and stack[-1][1] < t:
            stack.pop()
        out.append((stack[-1][3], stack[-1][2]) if stack else ("", 0))
    return out


def _copy_name(r: dict) -> str:
    if r["kind"] == "MEMSET":
        return "memset"
    return f"memcpy {COPY_KINDS.get(r['copy_kind'], 'other')}"


def _graph_functions(kernels: list[dict], log: list[tuple[str, str]]) -> dict[int, str]:
    """Kernels of one graph replay (in start order) -> the function that launched each at capture:
    walk both sequences, matching names in order (a kernel the log does not have is left out)."""
    out, j = {}, 0
    for r in kernels:
        k = j
        while k < len(log) and log[k][1] != r["name"]:
            k += 1
        if k < len(log):
            out[id(r)] = log[k][0]
            j = k + 1
    return out

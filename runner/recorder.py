"""Instrumentation: NVTX ranges, host timestamps, CUDA event pairs -> event-table rows.

Host ranges use ``time.perf_counter_ns`` (the run's one clock). GPU times come from CUDA event
pairs: each repeat records an anchor event on an idle device, bracketed by host-clock reads (record,
spin until done; the tightest of a few tries), and every event's time is ``anchor_host +
elapsed(anchor, event)``. Durations and gaps between GPU events are exact to the event resolution
(~0.5 us); their placement on the host axis is off by at most half the anchor's bracket, which
matters for pictures (and for lining events up with CUPTI's records), not for the figures.

Levels: ``tokens`` records three events per token (start, compute start, end);
``functions`` adds an event pair around every device function in one token of every
``function_every`` (token index divisible by it). A pair costs about 2 µs of host time per function,
which a host-bound (eager) loop pays in tokens/s: 21.6% on the 1b eager path of our kernels when
every token had them (reports/bench/instrumentation.md). Decode tokens repeat the same functions,
so a sample of tokens gives each function's GPU time at a fraction of that cost; the unsampled
tokens keep their host ranges and token events.
"""

from __future__ import annotations

import time
from typing import Any

from perfreview.trace.schema import Kind, Source, host_track, stream_track

try:  # NVTX is a no-op without an attached tool; absent on some machines altogether.
    import nvtx as _nvtx
except ImportError:  # pragma: no cover - nvtx is a dependency, but stay usable without it
    _nvtx = None

LEVELS = ("tokens", "functions")

# Host rows: (token, phase, kind, name, start, end, depth, stream, bytes, copy_kind, mem_kind)
_clock = time.perf_counter_ns


class _Span:
    __slots__ = ("rec", "name", "kind", "stream", "extra", "t0", "ev0", "depth")

    def __init__(self, rec: "Recorder", name: str, kind: str, stream: Any, extra: tuple) -> None:
        self.rec, self.name, self.kind, self.stream, self.extra = rec, name, kind, stream, extra

    def __enter__(self) -> "_Span":
        rec = self.rec
        rec._push(self.name)
        self.depth = rec.depth
        rec.depth += 1
        self.ev0 = rec._record(self.stream) if self.stream is not False else None
        self.t0 = _clock()
        return self

    def __exit__(self, *exc: Any) -> None:
        rec = self.rec
        if self.ev0 is not None:
            rec.pairs.append((rec.token, rec.phase, self.name, self.stream, self.ev0, rec._record(self.stream)))
        t1 = _clock()
        rec.depth -= 1
        rec._pop()
        rec.rows.append((rec.token, rec.phase, self.kind, self.name, self.t0, t1, self.depth) + self.extra)


_NO_EXTRA = (-1, -1, "", "")


class Recorder:
    """Collects host ranges and GPU event pairs for one run; emits schema rows per repeat."""

    def __init__(self, device: Any, level: str, nvtx_domain: str = "perfreview", trace: str = "",
                 function_every: int = 1) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown timing level {level!r} (use {' or '.join(LEVELS)})")
        if function_every < 1:
            raise ValueError(f"function_every must be at least 1, got {function_every}")
        self.function_every = function_every
        self.cupti = None
        if trace == "cupti":
            if not device.is_gpu:
                raise ValueError("--trace cupti needs the CUDA backend (a GPU)")
            from runner.cupti_trace import collector, external_id

            self.cupti = collector()
            self._external_id = external_id  # bound once: _push is on the per-range path
        self.stack: list[str] = []  # open spans, innermost last (the capture log names functions by it)
        self.capture_log: list[tuple[str, str]] = []  # (function, kernel) per launch captured in a graph
        self.clock_residual_ns = 0
        self.dev = device
        self.level = level
        self.gpu_functions = level == "functions" and device.is_gpu
        self.rows: list[tuple] = []
        self.pairs: list[tuple] = []
        self.marks: list[tuple] = []  # (token, phase, name, stream, event) instants
        self.token, self.phase, self.depth = -1, "", 0
        self._pool: list[Any] = []
        self._used = 0
        self._anchor_event: Any = None
        self._anchor_ns = 0
        self._domain = _nvtx.get_domain(nvtx_domain) if _nvtx else None
        self._attrs: dict[str, Any] = {}
        self.external_names: list[str] = [""]  # CUPTI external ids index these (0: none)
        self._external_index: dict[str, int] = {}

    # NVTX with cached attributes: the ranges must stay cheap.
    def _push(self, name: str) -> None:
        self.stack.append(name)
        if self.cupti is not None:  # every call made inside carries (token, range): exact attribution
            idx = self._external_index.get(name)
            if idx is None:
                idx = self._external_index[name] = len(self.external_names)
                self.external_names.append(name)
            self.cupti.push(self._external_id(self.token, idx))
        if self._domain is None:
            return
        attrs = self._attrs.get(name)
        if attrs is None:
            attrs = self._attrs[name] = self._domain.get_event_attributes(message=name)
        self._domain.push_range(attrs)

    def _pop(self) -> None:
        self.stack.pop()
        if self.cupti is not None:
            self.cupti.pop()
        if self._domain is not None:
            self._domain.pop_range()

    def _record(self, stream: Any) -> Any:
        if self._used == len(self._pool):
            self._pool.append(self.dev.event())
        ev = self._pool[self._used]
        self._used += 1
        self.dev.record(ev, stream)
        return ev

    def span(self, name: str, stream: Any = False, kind: str = Kind.RANGE.value,
             nbytes: int = -1, copy_kind: str = "", mem_kind: str = "") -> _Span:
        """A host range; with ``stream`` given at the functions level, also a GPU event pair."""
        sampled = self.gpu_functions and self.token % self.function_every == 0
        gpu = stream if (sampled and stream is not False) else False
        extra = _NO_EXTRA if nbytes < 0 else (nbytes, -1, copy_kind, mem_kind)
        return _Span(self, name, kind, gpu, extra)

    def mark(self, name: str, stream: Any) -> None:
        """A GPU timestamp (event) at this point of ``stream`` (token boundaries, any level)."""
        if self.dev.is_gpu:
            self.marks.append((self.token, self.phase, name, stream, self._record(stream)))

    def start_repeat(self) -> None:
        """Call with the device idle: reads the host clock and records the anchor event."""
        self.rows, self.pairs, self.marks, self._used = [], [], [], 0
        if self.cupti is not None:
            self.cupti.resume()
            self.cupti.take()  # what ran before this repeat (other sides, warm-up) is not this repeat's
        elif self.dev.is_gpu:
            from runner.cupti_trace import active

            if active() is not None:  # a traced side shares this process: no tracing cost here
                active().pause()
        if self.dev.is_gpu:
            self._anchor_event, self._anchor_ns = self._anchor()

    def _anchor(self, tries: int = 5) -> tuple[Any, int]:
        """An event on the idle device and the host time it happened at: each try reads the host clock,
        records the event, spins until it is done and reads the clock again, so the event's device
        time lies inside that bracket; the tightest bracket's midpoint is taken (its half-width is the
        placement's residual). Reading the clock only before the record put every GPU row early by the
        launch latency: 9-35 µs against CUPTI's kernels on the H100 (bench/cupti_alignment.py)."""
        stream, best = self.dev.streams[0], None
        for _ in range(tries):
            h0 = _clock()
            ev = self._record(stream)
            self.dev.spin_until(ev)
            h1 = _clock()
            if best is None or h1 - h0 < best[2] - best[1]:
                best = (ev, h0, h1)
        ev, h0, h1 = best
        return ev, (h0 + h1) // 2

    def finish_repeat(self, repeat: int, thread: str = "main") -> list[dict]:
        """After the device is synchronised: this repeat's rows as schema dicts."""
        host = host_track(thread)
        out = [
            {"repeat": repeat, "token": t, "phase": ph, "source": Source.HOST.value, "kind": kind, "name": name,
             "track": host, "start_ns": s, "end_ns": e, "depth": d, "bytes": b,
             "copy_kind": ck, "mem_kind": mk}
            for (t, ph, kind, name, s, e, d, b, _, ck, mk) in self.rows
        ]
        if not self.dev.is_gpu:
            return out
        if self.cupti is not None:
            from runner.cupti_trace import to_rows

            offset, self.clock_residual_ns = self.cupti.clock_offset()
            out += to_rows(self.cupti.take(), offset, repeat, out, self.capture_log, thread, self.dev.stream_ids(),
                           self.external_names)
        dev, anchor, base = self.dev, self._anchor_event, self._anchor_ns
        dev_id = getattr(dev, "device_id", 0)

        def gpu_row(token: int, phase: str, name: str, stream: Any, s: int, e: int) -> dict:
            idx = dev.stream_index(stream)
            return {"repeat": repeat, "token": token, "phase": phase, "source": Source.CUDA_EVENT.value,
                    "kind": Kind.GPU_RANGE.value, "name": name, "track": stream_track(dev_id, idx),
                    "stream": idx, "start_ns": s, "end_ns": e}

        for token, phase, name, stream, e0, e1 in self.pairs:
            s = base + dev.elapsed_ns(anchor, e0)
            out.append(gpu_row(token, phase, name, stream, s, max(s, base + dev.elapsed_ns(anchor, e1))))
        # Token boundaries: marks come in (token_start, compute_start, token_end) triples, or pairs.
        marks: dict[tuple, dict[str, int]] = {}
        for token, phase, name, stream, ev in self.marks:
            marks.setdefault((token, phase), {})[name] = base + dev.elapsed_ns(anchor, ev)
            marks[(token, phase)]["_stream"] = stream
        for (token, phase), m in marks.items():
            stream = m["_stream"]
            out.append(gpu_row(token, phase, "token", stream, m["token_start"], m["token_end"]))
            if "compute_start" in m:  # a queued (run-ahead) token copies nothing in: its compute starts with it
                out.append(gpu_row(token, phase, "input_copy", stream, m["token_start"], m["compute_start"]))
        return out

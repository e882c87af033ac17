"""A synthetic PyTorch-profiler (Kineto) trace of a decode loop, written streaming so that traces of
millions of events cost no memory to make. The shape follows real Kineto output: per token a
``token`` user annotation mirrored on the GPU, nested ``aten::`` ops, ``cudaLaunchKernel`` calls
with correlation ids, kernels with Kineto's launch args on the default stream and a side stream,
a copy, a ``cudaStreamSynchronize`` with its ``cuda_sync`` record, and ``ac2g`` flow events."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

KERNELS_PER_TOKEN = 16
EVENTS_PER_TOKEN = 2 + 2 * KERNELS_PER_TOKEN * 2 + 5  # see _token: annotations, op+launch, kernel+flow, copy..


def _token(t: int, corr: int) -> list[dict]:
    base = 1_000_000.0 + 2000.0 * t
    ev = [{"ph": "X", "cat": "user_annotation", "name": "token", "pid": 1234, "tid": 1234, "ts": base, "dur": 1900.0,
           "args": {"External id": corr, "Record function id": 0, "Ev Idx": corr}},
          {"ph": "X", "cat": "gpu_user_annotation", "name": "token", "pid": 0, "tid": 7, "ts": base + 20.5,
           "dur": 1700.25, "args": {"External id": corr, "device": 0, "stream": 7}}]
    for k in range(KERNELS_PER_TOKEN):
        c = corr + k
        ts = base + 10 + 100 * k
        stream = 7 if k % 4 else 13
        ev += [
            {"ph": "X", "cat": "cpu_op", "name": f"aten::linear_{k % 5}", "pid": 1234, "tid": 1234, "ts": ts,
             "dur": 30.5, "args": {"External id": c, "Record function id": 0, "Sequence number": c,
                                   "Fwd thread id": 0, "Ev Idx": c}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1234, "tid": 1234, "ts": ts + 5,
             "dur": 4.25, "args": {"External id": c, "cbid": 211, "correlation": c}},
            {"ph": "X", "cat": "kernel", "name": f"void gemv_kernel<__half, {k % 3}>(float const*, int)",
             "pid": 0, "tid": stream, "ts": ts + 20, "dur": 90.0,
             "args": {"External id": c, "queued": 0, "device": 0, "context": 1, "stream": stream,
                      "correlation": c, "registers per thread": 32, "shared memory": 0, "blocks per SM": 1.5,
                      "warps per SM": 6.0, "grid": [132, 1, 1], "block": [128, 1, 1],
                      "est. achieved occupancy %": 9}},
            {"ph": "s", "id": c, "pid": 1234, "tid": 1234, "ts": ts + 5, "cat": "ac2g", "name": "ac2g"},
        ]
    c = corr + KERNELS_PER_TOKEN
    ev += [
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "pid": 1234, "tid": 1234, "ts": base + 1700,
         "dur": 6.0, "args": {"External id": c, "cbid": 41, "correlation": c}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pinned)", "pid": 0, "tid": 7,
         "ts": base + 1710, "dur": 2.0, "args": {"External id": c, "device": 0, "context": 1, "stream": 7,
                                                 "correlation": c, "bytes": 8, "memory bandwidth (GB/s)": 0.004}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "pid": 1234, "tid": 1234,
         "ts": base + 1720, "dur": 150.0, "args": {"External id": c + 1, "cbid": 131, "correlation": c + 1}},
        {"ph": "X", "cat": "cuda_sync", "name": "Stream Sync", "pid": 0, "tid": 7, "ts": base + 1720,
         "dur": 150.0, "args": {"device": 0, "stream": 7, "correlation": c + 1}},
        {"ph": "f", "id": c, "pid": 0, "tid": 7, "ts": base + 1710, "cat": "ac2g", "name": "ac2g", "bp": "e"},
    ]
    return ev


def write_kineto(path: Path, events: int, rank: int = 0) -> int:
    """Write a trace of at least ``events`` events to ``path`` (gzipped when it ends .gz); returns
    how many events were written."""
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    with opener(path, "wt") as fh:
        head = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3",
                                                          "totalGlobalMem": 85024112640}],
                "distributedInfo": {"backend": "nccl", "rank": rank, "world_size": 1}}
        fh.write(json.dumps(head)[:-1] + ', "traceEvents": [\n')
        meta = [{"ph": "M", "name": "thread_name", "pid": 1234, "tid": 1234, "args": {"name": "python"}},
                {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans", "tid": "PyTorch Profiler",
                 "ts": 1_000_000.0, "dur": 1.0}]
        fh.write(",\n".join(json.dumps(e) for e in meta))
        n += len(meta)
        t = 0
        while n < events:
            ev = _token(t, 10 * (KERNELS_PER_TOKEN + 4) * t)
            fh.write(",\n" + ",\n".join(json.dumps(e) for e in ev))
            n += len(ev)
            t += 1
        fh.write('\n], "traceName": "synthetic", "displayTimeUnit": "ms", "baseTimeNanoseconds": 1700000000000000000}')
    return n

"""A small Nsight Systems SQLite export made per the documented schema (SQLite Schema Reference):
llama.cpp-style tokens, each a graph launch of kernels, with the copies and syncs between them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

GLOBAL_TID = (1234 << 24) + 1234  # PID 1234, TID 1234
NAMES = {1: "cudaStreamSynchronize_v3020", 2: "cudaMemcpyAsync_v3020", 3: "cudaGraphLaunch_v10000",
         4: "void mul_mat_vec<half, 4>(const half*, float*) | `q`", 5: "rms_norm_f32<1024>", 6: "llama_decode"}


def make(path: Path, pattern: str, tokens: int = 6) -> Path:
    """``pattern``: what the host does between tokens, e.g. ``sasassas`` (s = sync, a = async copy)
    before each ``g`` (graph launch), as the seed PR writes it."""
    con = sqlite3.connect(path)
    con.executescript("""
    CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT);
    CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT, end INT, eventClass INT, globalTid INT, correlationId INT,
        nameId INT, returnValue INT, callchainId INT);
    CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT, contextId INT, streamId INT,
        correlationId INT, globalPid INT, demangledName INT, shortName INT, mangledName INT, graphId INT);
    CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INT, end INT, deviceId INT, contextId INT, streamId INT,
        correlationId INT, globalPid INT, bytes INT, copyKind INT, srcKind INT, dstKind INT);
    CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, textId INT, globalTid INT);
    """)
    con.executemany("INSERT INTO StringIds VALUES (?, ?)", NAMES.items())
    t, corr = 1_000_000, 1
    api, kern, copies, nvtx = [], [], [], []
    for _ in range(tokens):
        tok_start = t
        for step in pattern:
            if step == "s":
                api.append((t, t + 8_000, 0, GLOBAL_TID, corr, 1, 0, 0))
                t += 9_000
            else:
                api.append((t, t + 4_000, 0, GLOBAL_TID, corr, 2, 0, 0))
                copies.append((t + 2_000, t + 3_500, 0, 1, 7, corr, 1234, 64, 1, 0, 2))
                t += 5_000
            corr += 1
        api.append((t, t + 6_000, 0, GLOBAL_TID, corr, 3, 0, 0))  # cudaGraphLaunch
        k = t + 10_000
        for i in range(20):
            kern.append((k, k + 40_000, 0, 1, 7, corr, 1234, 4 if i % 2 else 5, 5, 5, 1))
            k += 41_000
        corr += 1
        api.append((t + 7_000, k + 2_000, 0, GLOBAL_TID, corr, 1, 0, 0))  # the token's final sync
        corr += 1
        nvtx.append((tok_start, k + 2_000, 59, "llama_decode", None, GLOBAL_TID))
        t = k + 12_000
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?,?,?,?,?,?,?,?)", api)
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?,?,?,?,?,?,?,?,?,?,?)", kern)
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (?,?,?,?,?,?,?,?,?,?,?)", copies)
    con.executemany("INSERT INTO NVTX_EVENTS VALUES (?,?,?,?,?,?)", nvtx)
    con.commit()
    con.close()
    return path

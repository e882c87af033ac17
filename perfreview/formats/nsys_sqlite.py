"""Nsight Systems SQLite export (``nsys export --type sqlite``) -> the event table.

Reads the CUPTI activity tables (kernels, memcpy, memset, runtime/driver API, synchronisation) and
NVTX ranges, as the Nsight Systems "SQLite Schema Reference" documents them; absent tables are
skipped (nsys creates them lazily). With ``token_marker`` (an NVTX range or API name that occurs
once per token, e.g. ``cudaGraphLaunch`` for llama.cpp's CUDA backend) the timeline is cut into
tokens, so the per-token and sync-gap analyses apply to someone else's program too.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

from perfreview.formats.markers import cut_tokens, nesting_depths
from perfreview.trace import schema

COPY_KINDS = {1: "HtoD", 2: "DtoH", 8: "DtoD", 10: "PtoP"}
MEM_KINDS = {0: "pageable", 1: "pinned", 2: "device", 3: "array", 4: "managed"}
NVTX_RANGES = (59, 60)  # PushPop, StartEnd
_SUFFIX = re.compile(r"_v\d+$")  # cudaLaunchKernel_v7000 -> cudaLaunchKernel


class NsysError(ValueError):
    pass


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _strings(con: sqlite3.Connection, tables: set[str]) -> dict[int, str]:
    return dict(con.execute("SELECT id, value FROM StringIds")) if "StringIds" in tables else {}


def _host_tracks(global_tid: pd.Series) -> pd.Series:
    """nsys' globalTid packs pid and tid; the low 24 bits are the thread id."""
    return schema.host_tracks(global_tid.astype("int64") % 0x1000000)


def load(path: Path, token_marker: str | None = None, run: str | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise NsysError(f"{path}: no such file")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = _tables(con)
            if not tables & {"CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME", "NVTX_EVENTS"}:
                raise NsysError("not an Nsight Systems SQLite export (no CUPTI or NVTX tables)")
            names = _strings(con, tables)
            parts = [_kernels(con, tables, names), _copies(con, tables), _api(con, tables, names),
                     _syncs(con, tables), _nvtx(con, tables, names)]
    except sqlite3.DatabaseError as exc:
        raise NsysError(f"{path}: not a readable SQLite file ({exc})") from None
    except NsysError as exc:
        raise NsysError(f"{path}: {exc}") from None
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if frame is None:
        raise NsysError(f"{path}: no events in the CUPTI or NVTX tables")
    frame = frame.sort_values("start_ns", kind="stable").reset_index(drop=True)
    if token_marker:
        frame = cut_tokens(frame, token_marker, path)
    try:
        return schema.normalize(frame.assign(run=run or path.stem))
    except schema.SchemaError as exc:
        raise NsysError(f"{path}: {exc}") from None


# Columns read as numbers: text or blobs there (another nsys version, a damaged file) are named.
NUMERIC = ("start", "end", "deviceId", "streamId", "correlationId", "bytes", "copyKind", "srcKind", "dstKind",
           "globalTid", "syncType", "eventType")


def _query(con: sqlite3.Connection, sql: str) -> pd.DataFrame:
    table = sql.rsplit("FROM", 1)[-1].split()[0]
    try:
        frame = pd.read_sql_query(sql, con)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise NsysError(f"table {table}: {str(exc).split(': ')[-1]} (an export of another nsys version?)") from None
    for col in NUMERIC:
        if col in frame.columns:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = values.isna() & frame[col].notna() | (col in ("start", "end")) & values.isna()
            if bad.any():
                raise NsysError(f"table {table}: column {col} holds a value that is not a number "
                                f"({str(frame[col][bad].iloc[0])[:30]!r})")
            frame[col] = values
    if {"start", "end"} <= set(frame.columns) and (frame["end"] < frame["start"]).any():
        raise NsysError(f"table {table}: a row ends before it starts")
    return frame


def _kernels(con: sqlite3.Connection, tables: set[str], names: dict[int, str]) -> pd.DataFrame:
    if "CUPTI_ACTIVITY_KIND_KERNEL" not in tables:
        return pd.DataFrame()
    k = _query(con, "SELECT start, end, deviceId, streamId, correlationId, demangledName, shortName "
                    "FROM CUPTI_ACTIVITY_KIND_KERNEL")
    name_id = k["demangledName"].fillna(k["shortName"])
    return pd.DataFrame({
        "kind": "kernel", "source": "nsys", "name": name_id.map(names).astype(object).fillna("kernel").astype(str),
        "track": schema.stream_tracks(k["deviceId"], k["streamId"]),
        "stream": k["streamId"], "start_ns": k["start"], "end_ns": k["end"], "correlation": k["correlationId"],
    })


def _copies(con: sqlite3.Connection, tables: set[str]) -> pd.DataFrame:
    out = []
    if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
        m = _query(con, "SELECT start, end, deviceId, streamId, correlationId, bytes, copyKind, srcKind, dstKind "
                        "FROM CUPTI_ACTIVITY_KIND_MEMCPY")
        kind = m["copyKind"].map(COPY_KINDS).fillna("other")
        out.append(pd.DataFrame({
            "kind": "memcpy", "source": "nsys", "name": "memcpy " + kind,
            "track": schema.stream_tracks(m["deviceId"], m["streamId"]),
            "stream": m["streamId"], "start_ns": m["start"], "end_ns": m["end"], "correlation": m["correlationId"],
            "bytes": m["bytes"], "copy_kind": kind,
            "mem_kind": m["srcKind"].map(MEM_KINDS).fillna("?") + "->" + m["dstKind"].map(MEM_KINDS).fillna("?"),
        }))
    if "CUPTI_ACTIVITY_KIND_MEMSET" in tables:
        m = _query(con, "SELECT start, end, deviceId, streamId, correlationId, bytes FROM CUPTI_ACTIVITY_KIND_MEMSET")
        out.append(pd.DataFrame({
            "kind": "memset", "source": "nsys", "name": "memset",
            "track": schema.stream_tracks(m["deviceId"], m["streamId"]),
            "stream": m["streamId"], "start_ns": m["start"], "end_ns": m["end"], "correlation": m["correlationId"],
            "bytes": m["bytes"],
        }))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _api(con: sqlite3.Connection, tables: set[str], names: dict[int, str]) -> pd.DataFrame:
    if "CUPTI_ACTIVITY_KIND_RUNTIME" not in tables:
        return pd.DataFrame()
    r = _query(con, "SELECT start, end, globalTid, correlationId, nameId FROM CUPTI_ACTIVITY_KIND_RUNTIME")
    return pd.DataFrame({
        "kind": "api", "source": "nsys",
        "name": r["nameId"].map(names).astype(object).fillna("api").astype(str).str.replace(_SUFFIX, "", regex=True),
        "track": _host_tracks(r["globalTid"]), "start_ns": r["start"], "end_ns": r["end"],
        "correlation": r["correlationId"], "depth": 1,
    })


def _syncs(con: sqlite3.Connection, tables: set[str]) -> pd.DataFrame:
    if "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION" not in tables:
        return pd.DataFrame()
    s = _query(con, "SELECT start, end, deviceId, streamId, correlationId, syncType "
                    "FROM CUPTI_ACTIVITY_KIND_SYNCHRONIZATION")
    kinds = {1: "event sync", 2: "stream wait event", 3: "stream sync", 4: "context sync"}
    stream = s["streamId"].where(s["streamId"] < 4294967295, -1)  # N/A is 4294967295
    return pd.DataFrame({
        "kind": "sync", "source": "nsys", "name": s["syncType"].map(kinds).fillna("sync"),
        "track": s["deviceId"].map(schema.sync_track), "stream": stream,
        "start_ns": s["start"], "end_ns": s["end"], "correlation": s["correlationId"],
    })


def _nvtx(con: sqlite3.Connection, tables: set[str], names: dict[int, str]) -> pd.DataFrame:
    if "NVTX_EVENTS" not in tables:
        return pd.DataFrame()
    n = _query(con, f"SELECT start, end, text, textId, globalTid FROM NVTX_EVENTS "
                    f"WHERE eventType IN {NVTX_RANGES} AND end IS NOT NULL")
    text = n["text"].astype(object).fillna(n["textId"].map(names)).fillna("range").astype(str)
    out = pd.DataFrame({"kind": "range", "source": "nsys", "name": text, "track": _host_tracks(n["globalTid"]),
                        "start_ns": n["start"], "end_ns": n["end"]})
    out["depth"] = nesting_depths(out)
    return out

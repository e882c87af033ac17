"""llama-bench results (``-o json``, ``jsonl``, ``csv``, ``sql`` or the markdown table ``-o md``) ->
per-test samples, for an honest comparison.

llama-bench writes one record per (parameters x test). JSON and JSONL carry the per-repetition
timings ``samples_ns`` / ``samples_ts``: each repetition is a sample, so the same statistics as for
our own runs apply. CSV, SQL and the markdown table carry only ``avg_ts ± stddev_ts``: the interval
is then computed from those and marked approximate (the repetitions are not in the file; llama-bench's
default ``-r 5`` is assumed). compare-llama-bench.py averages ``avg_ts`` and divides, with no interval
and no test. Records are matched on every field that is not a result or a build/host label (as
compare-llama-bench self-joins on its key properties); parse by key, never by position.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fields that are results or labels, not part of what was tested.
NOT_KEY = {"build_commit", "build_number", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
           "samples_ns", "samples_ts", "cpu_info", "gpu_info", "backends", "model_filename", "t/s"}
DEFAULT_REPETITIONS = 5  # llama-bench -r: what a file without samples is assumed to hold
MAX_TEXT = 64 << 20


class LlamaBenchError(ValueError):
    pass


def load(path: Path) -> list[dict[str, Any]]:
    """Records of a llama-bench file in any of its output formats (told apart by content); each
    must carry ``samples_ts`` (JSON, JSONL) or ``avg_ts`` and ``stddev_ts`` (CSV, SQL, markdown)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT:
            raise LlamaBenchError(f"{path}: larger than {MAX_TEXT >> 20} MiB; not a llama-bench result")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LlamaBenchError(f"{path}: cannot read ({exc})") from None
    head = text.lstrip()
    if head.startswith(("[", "{")):
        records = _json(text, path)
    elif re.match(r"(?is)(--[^\n]*\n\s*)*(CREATE|INSERT|BEGIN|ATTACH|PRAGMA|WITH|SELECT|DROP|DELETE|UPDATE)\b",
                  head):
        records = _sql(text, path)
    elif head.startswith("|"):
        records = _markdown(text, path)
    else:
        records = _csv(text, path)
    return checked(records, path)


def checked(records: Any, path: Path) -> list[dict[str, Any]]:
    """``records`` when they are llama-bench records (also for a run folder's stored copy)."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise LlamaBenchError(f"{path}: no llama-bench records")
    for i, r in enumerate(records):
        problem = _check(r)
        if problem:
            raise LlamaBenchError(f"{path}: record {i}: {problem}")
    return records


def tests(records: list[dict[str, Any]]) -> list[Test]:
    """The tests of one file, repeated records pooled, in file order."""
    return list(group(records, _fields(records)).values())


def _json(text: str, path: Path) -> Any:
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # JSONL: a record a line
    except json.JSONDecodeError as exc:
        raise LlamaBenchError(f"{path}: not llama-bench JSON or JSONL ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise LlamaBenchError(f"{path}: JSON nested too deeply") from None


def _value(text: str) -> Any:
    """A CSV/SQL/markdown cell as the JSON value llama-bench wrote (int, float, bool or text)."""
    t = text.strip()
    if re.fullmatch(r"-?\d{1,18}", t):
        return int(t)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", t):
        return float(t)
    return {"true": True, "false": False}.get(t, t)


def _csv(text: str, path: Path) -> list[dict[str, Any]]:
    """``-o csv``: a header of field names, every value double-quoted."""
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise LlamaBenchError(f"{path}: not llama-bench CSV ({exc})") from None
    if not rows or "avg_ts" not in rows[0]:
        raise LlamaBenchError(f"{path}: not a llama-bench result (JSON, JSONL, CSV, SQL or markdown) with avg_ts")
    return [{k: _value(v) for k, v in r.items() if k is not None and v is not None} for r in rows]


def _sql(text: str, path: Path) -> list[dict[str, Any]]:
    """``-o sql``: CREATE TABLE llama_bench (``test`` before llama.cpp #15003) and INSERTs, run in an
    in-memory SQLite that may only create that table, insert into it and read it."""
    import sqlite3

    def allow(action: int, arg1: Any, *_: Any) -> int:
        ok = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ,
              sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_FUNCTION}
        schema_row = action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master"  # CREATE TABLE writes it
        return sqlite3.SQLITE_OK if action in ok or schema_row else sqlite3.SQLITE_DENY

    con = sqlite3.connect(":memory:")
    steps = [0]

    def budget() -> int:  # a statement that never ends (a recursive CTE) is stopped
        steps[0] += 1
        return 1 if steps[0] > 50_000 else 0

    try:
        con.set_authorizer(allow)
        con.set_progress_handler(budget, 1000)
        con.executescript(text)
        table = next((t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
                      if t in ("llama_bench", "test")), None)
        if table is None:
            raise LlamaBenchError(f"{path}: no llama_bench table in the SQL")
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        return [{k: _value(str(v)) if isinstance(v, str) else v for k, v in zip(names, row)} for row in cur]
    except sqlite3.Error as exc:
        raise LlamaBenchError(f"{path}: not llama-bench SQL ({exc})") from None
    finally:
        con.close()


MD_COLUMNS = {"ngl": "n_gpu_layers", "fa": "flash_attn", "threads": "n_threads", "n_batch": "n_batch",
              "n_ubatch": "n_ubatch", "type_k": "type_k", "type_v": "type_v", "sm": "split_mode", "mmap": "use_mmap"}
_TEST = re.compile(r"(?:pp(\d+))?\+?(?:tg(\d+))?(?:@d(\d+))?")
_CELL = re.compile(r"^\s*([0-9.eE+-]+)\s*±\s*([0-9.eE+-]+)\s*$")


def _markdown(text: str, path: Path) -> list[dict[str, Any]]:
    """``-o md`` (the table pasted in a PR): ``| model | size | params | backend | ngl | ... | test |
    t/s |``, cells ``mean ± stddev``, footer ``build: <commit> (<number>)``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 3:
        raise LlamaBenchError(f"{path}: not a llama-bench markdown table")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    if "t/s" not in header or "test" not in header:
        raise LlamaBenchError(f"{path}: a markdown table without 'test' and 't/s' columns")
    build = re.search(r"build:\s*(\S+)\s*\((\d+)\)", text)
    records = []
    for n, ln in enumerate(lines[2:], start=3):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(header):
            raise LlamaBenchError(f"{path}: table row {n} has {len(cells)} cells, the header {len(header)}")
        r: dict[str, Any] = {h: _value(c) for h, c in zip(header, cells) if h not in ("t/s",)}
        m = _CELL.match(cells[header.index("t/s")])
        if not m:
            raise LlamaBenchError(f"{path}: table row {n}: t/s is not 'mean ± stddev'")
        r["avg_ts"], r["stddev_ts"] = _value(m.group(1)), _value(m.group(2))
        r["model_type"] = str(r.pop("model", ""))
        for column, name in MD_COLUMNS.items():  # the table's short names for the record's fields
            if column in r:
                r[name] = r.pop(column)
        t = _TEST.fullmatch(str(r.get("test", "")).replace(" ", ""))
        if t:  # pp512+tg128@d512 -> n_prompt, n_gen, n_depth (what JSON records carry)
            r["n_prompt"], r["n_gen"], r["n_depth"] = (int(g or 0) for g in t.groups())
            r.pop("test")
        if build:
            r["build_commit"], r["build_number"] = build.group(1), int(build.group(2))
        records.append(r)
    return records


MAX_SAMPLES = 1_000_000


def _check(r: dict[str, Any]) -> str:
    """What is wrong with one record, or "" (the fields this module reads, with their types)."""
    samples = r.get("samples_ts")
    if not samples:
        if "avg_ts" not in r:
            return "no samples_ts or avg_ts (write it with llama-bench -o json, jsonl, csv, sql or md)"
        sd = r.get("stddev_ts")
        if not (_number(r["avg_ts"]) and r["avg_ts"] > 0 and _number(sd) and sd >= 0):
            return "avg_ts ± stddev_ts is not a positive number ± a number >= 0"
        return ""
    if not isinstance(samples, list) or len(samples) > MAX_SAMPLES:
        return f"samples_ts is not a list of at most {MAX_SAMPLES} numbers"
    if not all(_number(x) and x > 0 for x in samples):
        return "samples_ts holds a value that is not a positive finite number"
    for k in ("n_prompt", "n_gen", "n_depth"):
        if k in r and r[k] is not None and not (isinstance(r[k], int) and not isinstance(r[k], bool) and r[k] >= 0):
            return f"{k} is not a whole number >= 0 ({str(r[k])[:30]!r})"
    if "avg_ts" in r and not (_number(r["avg_ts"]) and r["avg_ts"] > 0):
        return "avg_ts is not a positive finite number"
    if "model_type" in r and not isinstance(r["model_type"], str):
        return "model_type is not text"
    return ""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_name(r: dict[str, Any]) -> str:
    """``pp512``, ``tg128``, ``pp512+tg128``, with `` @ d512`` for depth (llama-bench's names)."""
    if "n_prompt" not in r and "n_gen" not in r and isinstance(r.get("test"), str):
        return r["test"]  # the markdown table names its tests
    p, g, d = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0) or 0)
    name = f"pp{p}+tg{g}" if p and g else (f"pp{p}" if p else f"tg{g}")
    return name + (f" @ d{d}" if d else "")


def key(r: dict[str, Any], fields: set[str]) -> tuple:
    """What was tested, comparable across formats (a bool as 0/1: the markdown table and CSV write
    1 where JSON writes true)."""
    return tuple(sorted((k, json.dumps(int(v) if isinstance(v := r.get(k), bool) else v, sort_keys=True))
                        for k in fields))


@dataclass
class Test:
    """One test of one file: every record of it pooled (a test run twice in a file is one test, as
    compare-llama-bench.py averages it)."""

    name: str
    samples_ts: list[float]  # every repetition of every record (JSON, JSONL)
    avg_ts: list[float]  # each record's mean t/s, as llama-bench wrote it
    stddev_ts: list[float] = field(default_factory=list)  # each record's stddev (files without samples)
    assumed_repetitions = DEFAULT_REPETITIONS  # per record, where the file has no samples

    @property
    def mean_ts(self) -> float:
        """compare-llama-bench.py's figure: AVG(avg_ts) over the test's records (not weighted by -r)."""
        return sum(self.avg_ts) / len(self.avg_ts)

    @property
    def has_samples(self) -> bool:
        return bool(self.samples_ts)

    def summary(self) -> tuple[float, float, int]:
        """(mean, sample SD, n) over the pooled repetitions; from the records' mean ± SD when the file
        has no samples (each record taken as ``reps`` repetitions)."""
        if self.samples_ts:
            x = self.samples_ts
            mean = sum(x) / len(x)
            sd = (sum((v - mean) ** 2 for v in x) / (len(x) - 1)) ** 0.5 if len(x) > 1 else 0.0
            return mean, sd, len(x)
        reps = self.assumed_repetitions
        n = reps * len(self.avg_ts)
        mean = sum(self.avg_ts) / len(self.avg_ts)
        within = sum((reps - 1) * s ** 2 for s in self.stddev_ts)
        between = sum(reps * (m - mean) ** 2 for m in self.avg_ts)
        return mean, ((within + between) / (n - 1)) ** 0.5 if n > 1 else 0.0, n


def _fields(records: list[dict[str, Any]]) -> set[str]:
    return set().union(*(r.keys() for r in records)) - NOT_KEY


def group(records: list[dict[str, Any]], fields: set[str]) -> dict[tuple, Test]:
    tests: dict[tuple, Test] = {}
    for r in records:
        t = tests.setdefault(key(r, fields), Test(f"{r.get('model_type', '?')} {test_name(r)}", [], []))
        if r.get("samples_ts"):
            t.samples_ts += [float(x) for x in r["samples_ts"]]
            t.avg_ts.append(float(r.get("avg_ts", sum(r["samples_ts"]) / len(r["samples_ts"]))))
        else:
            t.avg_ts.append(float(r["avg_ts"]))
            t.stddev_ts.append(float(r.get("stddev_ts", 0.0)))
    return tests


def pair(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[list[tuple[Test, Test]], int]:
    """Tests of the two files with the same tested parameters, in A's order, and how many of A's
    tests have no match. Only the fields both files know are compared: a newer llama-bench's extra
    fields (repack, fit_target ...) do not split a test in two."""
    fields = _fields(a) & _fields(b)
    ta, tb = group(a, fields), group(b, fields)
    pairs = [(t, tb[k]) for k, t in ta.items() if k in tb]
    return pairs, len(ta) - len(pairs)

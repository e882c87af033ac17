"""llama-bench results (``-o json`` or ``-o jsonl``) -> per-test samples, for an honest comparison.

llama-bench writes one record per (parameters x test) with the per-repetition timings
``samples_ns`` / ``samples_ts``; compare-llama-bench.py averages ``avg_ts`` and divides, with no
interval and no test. Here each repetition is a sample, so the same statistics as for our own runs
apply. Records are matched on every field that is not a result or a build/host label (as
compare-llama-bench self-joins on its key properties); parse by key, never by position.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields that are results or labels, not part of what was tested.
NOT_KEY = {"build_commit", "build_number", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
           "samples_ns", "samples_ts", "cpu_info", "gpu_info", "backends", "model_filename"}


class LlamaBenchError(ValueError):
    pass


def load(path: Path) -> list[dict[str, Any]]:
    """Records of a llama-bench JSON array or JSONL file; each must carry ``samples_ts``."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LlamaBenchError(f"{path}: cannot read ({exc})") from None
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:  # JSONL: one record a line
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise LlamaBenchError(f"{path}: not llama-bench JSON or JSONL ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise LlamaBenchError(f"{path}: JSON nested too deeply") from None
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise LlamaBenchError(f"{path}: no llama-bench records")
    for i, r in enumerate(records):
        problem = _check(r)
        if problem:
            raise LlamaBenchError(f"{path}: record {i}: {problem}")
    return records


MAX_SAMPLES = 1_000_000


def _check(r: dict[str, Any]) -> str:
    """What is wrong with one record, or "" (the fields this module reads, with their types)."""
    samples = r.get("samples_ts")
    if not samples:
        return "no samples_ts (write it with llama-bench -o json or jsonl)"
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
    p, g, d = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0) or 0)
    name = f"pp{p}+tg{g}" if p and g else (f"pp{p}" if p else f"tg{g}")
    return name + (f" @ d{d}" if d else "")


def key(r: dict[str, Any], fields: set[str]) -> tuple:
    return tuple(sorted((k, json.dumps(r.get(k), sort_keys=True)) for k in fields))


@dataclass
class Test:
    """One test of one file: every record of it pooled (a test run twice in a file is one test, as
    compare-llama-bench.py averages it)."""

    name: str
    samples_ts: list[float]  # every repetition of every record
    avg_ts: list[float]  # each record's mean t/s, as llama-bench wrote it

    @property
    def mean_ts(self) -> float:
        """compare-llama-bench.py's figure: AVG(avg_ts) over the test's records (not weighted by -r)."""
        return sum(self.avg_ts) / len(self.avg_ts)


def _fields(records: list[dict[str, Any]]) -> set[str]:
    return set().union(*(r.keys() for r in records)) - NOT_KEY


def group(records: list[dict[str, Any]], fields: set[str]) -> dict[tuple, Test]:
    tests: dict[tuple, Test] = {}
    for r in records:
        t = tests.setdefault(key(r, fields), Test(f"{r.get('model_type', '?')} {test_name(r)}", [], []))
        t.samples_ts += [float(x) for x in r["samples_ts"]]
        t.avg_ts.append(float(r.get("avg_ts", sum(r["samples_ts"]) / len(r["samples_ts"]))))
    return tests


def pair(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[list[tuple[Test, Test]], int]:
    """Tests of the two files with the same tested parameters, in A's order, and how many of A's
    tests have no match. Only the fields both files know are compared: a newer llama-bench's extra
    fields (repack, fit_target ...) do not split a test in two."""
    fields = _fields(a) & _fields(b)
    ta, tb = group(a, fields), group(b, fields)
    pairs = [(t, tb[k]) for k, t in ta.items() if k in tb]
    return pairs, len(ta) - len(pairs)

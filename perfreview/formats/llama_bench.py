"""llama-bench results (``-o json`` or ``-o jsonl``) -> per-test samples, for an honest comparison.

llama-bench writes one record per (parameters x test) with the per-repetition timings
``samples_ns`` / ``samples_ts``; compare-llama-bench.py averages ``avg_ts`` and divides, with no
interval and no test. Here each repetition is a sample, so the same statistics as for our own runs
apply. Records are matched on every field that is not a result or a build/host label (as
compare-llama-bench self-joins on its key properties); parse by key, never by position.
"""

from __future__ import annotations

import json
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
    if not records or not all(isinstance(r, dict) for r in records):
        raise LlamaBenchError(f"{path}: no llama-bench records")
    for i, r in enumerate(records):
        if not r.get("samples_ts"):
            raise LlamaBenchError(f"{path}: record {i} has no samples_ts (write it with llama-bench -o json or jsonl)")
    return records


def test_name(r: dict[str, Any]) -> str:
    """``pp512``, ``tg128``, ``pp512+tg128``, with `` @ d512`` for depth (llama-bench's names)."""
    p, g, d = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0) or 0)
    name = f"pp{p}+tg{g}" if p and g else (f"pp{p}" if p else f"tg{g}")
    return name + (f" @ d{d}" if d else "")


def key(r: dict[str, Any]) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in r.items() if k not in NOT_KEY))


def pair(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Matching records of the two files (same tested parameters), in A's order."""
    by_key = {key(r): r for r in b}
    return [(r, by_key[key(r)]) for r in a if key(r) in by_key]


def paired_samples(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[str, list[float], list[float]]]:
    """(test name, A's per-repetition t/s, B's) for each test both files have."""
    return [(f"{ra.get('model_type', '?')} {test_name(ra)}", ra["samples_ts"], rb["samples_ts"])
            for ra, rb in pair(a, b)]

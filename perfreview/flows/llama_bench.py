"""``compare-llama-bench``: two llama-bench result files -> rows with intervals -> markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfreview.compare.comparison import MismatchError
from perfreview.compare.llama_bench import compare_tests
from perfreview.flows.review import json_rows
from perfreview.formats import llama_bench
from perfreview.report import render
from perfreview.report.review import llama_bench_markdown


def compare_files(a_file: Path, b_file: Path, out: Path | None, threshold: float) -> tuple[dict[str, Any], str]:
    """Returns the ``--json`` payload and the markdown (written to ``out`` when given)."""
    recs = [llama_bench.load(p) for p in (a_file, b_file)]
    pairs, unmatched = llama_bench.pair(*recs)
    if not pairs:
        raise MismatchError(f"{a_file}, {b_file}: no llama-bench test is in both files (same model and parameters)")
    result = compare_tests(pairs, unmatched=unmatched, threshold=threshold)
    sides = []
    for path, records in zip((a_file, b_file), recs):
        commit = str(records[0].get("build_commit", "?"))
        sides.append({"label": commit, "commit": commit, "file": path.name})
    if sides[0]["label"] == sides[1]["label"]:
        sides[0]["label"], sides[1]["label"] = "A", "B"
    text = llama_bench_markdown(result, *sides)
    if out:
        render.write(out, text)
    rows = json_rows(result.rows)
    for row, r in zip(rows, result.rows):  # compare-llama-bench.py's Speedup: mean t/s of B over A, two decimals
        row["speedup"] = round(r.mean_b / r.mean_a, 2)
    payload = {"a": str(a_file), "b": str(b_file), "threshold": threshold, "warnings": result.warnings,
               "rows": rows, "report": str(out) if out else None}
    return payload, text

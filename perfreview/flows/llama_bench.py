"""``compare-llama-bench``: two llama-bench result files -> rows with intervals -> markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfreview.compare.llama_bench import compare_tests
from perfreview.flows.review import json_rows
from perfreview.formats import llama_bench
from perfreview.report import render
from perfreview.report.review import llama_bench_markdown


def compare_files(a_file: Path, b_file: Path, out: Path | None, threshold: float) -> tuple[dict[str, Any], str]:
    """Returns the ``--json`` payload and the markdown (written to ``out`` when given)."""
    recs = [llama_bench.load(p) for p in (a_file, b_file)]
    pairs = llama_bench.paired_samples(*recs)
    result = compare_tests(pairs, unmatched=len(recs[0]) - len(pairs), threshold=threshold)
    sides = []
    for path, records in zip((a_file, b_file), recs):
        commit = str(records[0].get("build_commit", "?"))
        sides.append({"label": commit, "commit": commit, "file": path.name})
    if sides[0]["label"] == sides[1]["label"]:
        sides[0]["label"], sides[1]["label"] = "A", "B"
    text = llama_bench_markdown(result, *sides)
    if out:
        render.write(out, text)
    payload = {"a": str(a_file), "b": str(b_file), "threshold": threshold, "warnings": result.warnings,
               "rows": json_rows(result.rows), "report": str(out) if out else None}
    return payload, text

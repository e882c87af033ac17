"""``compare-llama-bench`` (and ``compare`` of two imported llama-bench runs): two llama-bench
results -> rows with intervals -> markdown. A result is a file in any of llama-bench's formats, or a
run folder that ``perfreview import llama-bench`` made (it keeps the records beside the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfreview.compare.comparison import MismatchError
from perfreview.compare.llama_bench import compare_tests
from perfreview.flows.review import json_rows
from perfreview.formats import llama_bench
from perfreview.report import render
from perfreview.report.review import llama_bench_markdown
from perfreview.trace import runs

RECORDS = "llama_bench.json"  # the imported records, in a run folder beside run.json


def records_of(path: Path) -> list[dict[str, Any]]:
    """A llama-bench file's records, or those an imported run folder keeps."""
    if not Path(path).is_dir():
        return llama_bench.load(path)
    stored = runs.read_attachment(path, RECORDS)
    if stored is None:
        raise llama_bench.LlamaBenchError(f"{path}: a run folder without a llama-bench result "
                                          "(make one with 'perfreview import llama-bench FILE')")
    return llama_bench.checked(stored, Path(path) / RECORDS)


def test_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each test of one result: mean t/s ± SD over its repetitions, as llama-bench prints them."""
    out = []
    for t in llama_bench.tests(records):
        _, sd, n = t.summary()
        out.append({"test": t.name, "mean_ts": t.mean_ts, "stddev_ts": sd, "repetitions": n,
                    "repetitions_in_file": t.has_samples})
    return out


def compare_files(a_file: Path, b_file: Path, out: Path | None, threshold: float) -> tuple[dict[str, Any], str]:
    """Returns the ``--json`` payload and the markdown (written to ``out`` when given)."""
    recs = [records_of(p) for p in (a_file, b_file)]  # read first: a broken file says what is wrong with it
    if Path(a_file).resolve() == Path(b_file).resolve():
        raise MismatchError(f"{a_file}: compared with itself, a result says nothing (as a run in compare)")
    pairs, unmatched = llama_bench.pair(*recs)
    if not pairs:
        raise MismatchError(f"{a_file}, {b_file}: no llama-bench test is in both files (same model and parameters)")
    result = compare_tests(pairs, unmatched=unmatched, threshold=threshold)
    sides = []
    for path, records in zip((a_file, b_file), recs):
        commit = str(records[0].get("build_commit", "?"))
        sides.append({"label": commit, "commit": commit, "file": path.name or str(path)})
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

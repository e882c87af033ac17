"""The GPU scripts' tables render through templates: fed the JSON of the committed H100 runs,
they reproduce the committed markdown's rows (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

from perfreview.report import render

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def table_lines(text: str) -> list[str]:
    """Table rows, with the markdown escaping of names undone (the old scripts did not escape)."""
    return [line.replace("\\_", "_") for line in text.splitlines() if line.startswith("| ") and "---" not in line]


def test_gpu_runner_table_matches_the_committed_run():
    report = json.loads((REPORTS / "h100-runner" / "gpu_runner.json").read_text())
    text = render.render("gpu_runner.md.j2", dev=report["device"], git=report["git"],
                         bw=report["copy_bandwidth_gbs"], tokens=report["tokens"], rows=report["rows"],
                         functions=report["functions"])
    committed = (REPORTS / "h100-runner" / "gpu_runner.md").read_text()
    assert table_lines(text) == table_lines(committed)


def test_gpu_kernels_table_matches_the_committed_run():
    report = json.loads((REPORTS / "h100-kernels" / "gpu_kernels.json").read_text())
    text = render.render("gpu_kernels.md.j2", checks=report["checks"], copy_bw=report["copy_gbs"], gemv=report["gemv"])
    committed = (REPORTS / "h100-kernels" / "gpu_kernels.md").read_text()
    assert table_lines(text) == table_lines(committed)


def test_persistent_chain_table_matches_the_committed_run():
    report = json.loads((REPORTS / "bench" / "persistent_chain_h200_f50472b.json").read_text())
    text = render.render("persistent_chain.md.j2", r=report)
    committed = (REPORTS / "bench" / "persistent_chain_h200_f50472b.md").read_text()
    assert table_lines(text) == table_lines(committed)
    for preset in report["presets"].values():  # a run that marks its rows without weights shows no bandwidth
        for label, v in preset["variants"].items():
            v["no_rows"] = "boundaries only" in label
    lines = render.render("persistent_chain.md.j2", r=report).splitlines()
    marked = [line for line in lines if "boundaries only" in line]
    assert marked and all("| - | - |" in line for line in marked)

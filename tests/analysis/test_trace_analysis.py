"""The Python facade (perfreview.flows.trace_analysis): each method gives what the CLI's reports are made of, for
a stored run and for another tool's trace read in memory."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from perfreview.cli import main
from perfreview.flows.trace_analysis import TraceAnalysis
from synthetic import make_pair


def test_stored_runs_give_the_tables_and_the_same_comparison_as_the_cli(tmp_path, capsys):
    a_path, b_path = make_pair(tmp_path, b={"scale": {"attention": 1.2}}, repeats=12, tokens=8)
    a, b = TraceAnalysis.open(a_path), TraceAnalysis.open(b_path)
    assert len(a.headlines()) == 12 and (a.headlines()["tokens_per_s"] > 0).all()
    assert len(a.tokens()) == 12 * 8
    assert "attention" in set(a.functions()["name"])
    rows = a.compare(b)
    assert main(["compare", str(a_path), str(b_path), "--json", "--no-plots"]) == 0
    cli = json.loads(capsys.readouterr().out)["rows"]
    pd.testing.assert_frame_equal(rows, pd.DataFrame(cli))  # one comparison, two ways to ask for it
    attention = rows[(rows["name"] == "attention") & (rows["metric"] == "host")].iloc[0]
    assert attention["verdict"] == "regressed" and attention["ratio"] == pytest.approx(1.2, rel=0.05)


def test_a_kineto_trace_read_in_memory_gives_the_kernel_level_tables_and_writes_nothing(tmp_path):
    from formats.test_kineto import kineto_trace, write_gz

    path = write_gz(tmp_path / "decode.json.gz", kineto_trace())
    t = TraceAnalysis.from_trace(path, token_marker="token")
    kernels = t.kernels()
    assert kernels["count"].sum() == 12 and set(t.stream_idle()["stream"]) == {7, 9}
    assert len(t.tokens()) == 6 and t.gaps().n == 5 and t.streams().streams == 2
    assert t.run.meta.config_label == "decode" and t.run.meta.imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decode.json.gz"]  # nothing stored
    out = tmp_path / "out"
    out.mkdir()
    md = t.report(out / "decode.md")
    assert md.read_text().startswith("## Run report: decode") and (out / "decode_timeline.png").is_file()
    with pytest.raises(ValueError, match="decode.json.gz: format 'llama-bench'"):
        TraceAnalysis.from_trace(path, fmt="llama-bench")

"""Pictures from a CPU run (format and size as asked) and the Perfetto export's round trip."""

from __future__ import annotations

import gzip
import json
import struct

import pandas as pd
import pytest

from perfreview.cli import main
from perfreview.formats import chrome_trace
from perfreview.trace import runs, schema


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("what", ["timeline", "latency"])
def test_plot_commands_write_png_of_requested_size(cpu_runs, tmp_path, what):
    out = tmp_path / f"{what}.png"
    code = main(["plot", what, str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--out", str(out),
                 "--size", "1000x500"])
    assert code == 0 and out.stat().st_size > 5000
    assert png_size(out) == (1000, 500)


def test_timeline_token_window_and_svg(cpu_runs, tmp_path):
    out = tmp_path / "t.svg"
    assert main(["plot", "timeline", str(cpu_runs["functions"]), "--tokens", "1:3", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "host/main" in text


def test_deltas_from_review_json(cpu_runs, tmp_path):
    md = tmp_path / "review.md"
    assert main(["compare", str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--out", str(md)]) == 0
    review = md.with_suffix(".json")
    out = tmp_path / "deltas.png"
    assert main(["plot", "deltas", str(review), "--out", str(out), "--size", "900x700"]) == 0
    assert png_size(out) == (900, 700)
    # compare wrote its own pictures next to the markdown, and links them
    text = md.read_text()
    for name in ("review_timeline.png", "review_deltas.png", "review_latency.png"):
        assert (tmp_path / name).stat().st_size > 5000 and name in text


def test_deltas_axis_holds_every_whisker(tmp_path, monkeypatch):
    # two rounds: whiskers from -99.9% to +1e8%. Matplotlib's own limits stopped at 0 (the bars' sticky edge),
    # so every bar and whisker below 0 was cut off; and a label a decade ran into each other
    import matplotlib.pyplot as plt

    from perfreview.plots import charts

    rows = [dict(name=n, kind="headline", metric="", ratio=r, ci_low=lo, ci_high=hi, verdict="inconclusive")
            for n, r, lo, hi in [("tokens_per_s", 1.13, 0.49, 2.6), ("median_token_ms", 0.9, 0.001, 1e6)]]
    axes = []
    monkeypatch.setattr(plt, "close", lambda fig: axes.append(fig.axes[0]))
    charts.deltas(rows, tmp_path / "d.png", threshold=0.005)
    left, right = axes[0].get_xlim()
    assert left < -99.9 and right > (1e6 - 1) * 100
    ticks = [t for t in axes[0].get_xticks() if left <= t <= right]
    assert 0 in ticks and -100 in ticks and len([t for t in ticks if t > 0]) <= 5
    assert charts._symlog_ticks(-1.6, 30) == [-1, 0, 1, 2, 5, 10, 20]


def test_perfetto_export_validates_and_round_trips(cpu_runs, tmp_path):
    run = runs.read_run(cpu_runs["functions"])
    out = tmp_path / "trace.json"
    assert main(["export", "perfetto", str(cpu_runs["functions"]), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    evs = doc["traceEvents"]
    assert all({"ph", "ts", "pid", "tid"} <= set(e) or e["ph"] == "M" for e in evs)
    xs = [e for e in evs if e["ph"] == "X"]
    assert len(xs) == len(run.events) and all(e["dur"] >= 0 for e in xs)
    names = {(e["name"], e["pid"], e["tid"]) for e in evs if e["ph"] == "M"}
    pids_tids = {(e["pid"], e["tid"]) for e in xs}
    assert {(p, t) for (_, p, t) in names} >= pids_tids
    assert any(n == "process_name" for n, _, _ in names) and any(n == "thread_name" for n, _, _ in names)
    back, _ = chrome_trace.load(out)
    cols = [c for c in schema.COLUMNS if c != "run"]
    key = ["start_ns", "end_ns", "track", "name", "kind", "depth"]

    def norm(f: pd.DataFrame) -> pd.DataFrame:
        f = f[cols].astype({c: str for c in cols if schema.COLUMNS[c] == "category"})
        return f.sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(back), norm(run.events), check_dtype=False)
    # a .gz name gets a gzipped trace (it was the same JSON under a name that said gzip), read back the same
    packed = tmp_path / "trace.json.gz"
    assert main(["export", "perfetto", str(cpu_runs["functions"]), "--out", str(packed)]) == 0
    assert packed.read_bytes()[:2] == b"\x1f\x8b" and packed.stat().st_size < out.stat().st_size / 4
    assert json.loads(gzip.decompress(packed.read_bytes())) == doc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json", "trace.json.gz"]  # no temp file left
    assert main(["export", "perfetto", str(cpu_runs["functions"]), "--out", str(tmp_path / "events.parquet")]) == 2
    assert not (tmp_path / "events.parquet").exists()


def test_bad_trace_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad_run"
    bad.mkdir()
    (bad / "run.json").write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("argv", [
    ["plot", "latency", "{run}", "--out", "{missing}/x.png"],
    ["export", "perfetto", "{run}", "--out", "{missing}/t.json"],
    ["compare", "{run}", "{run}", "--out", "{missing}/r.md"],
    ["report", "{run}", "--out", "{missing}/r.md"],
])
def test_output_in_a_missing_folder_fails_first(cpu_runs, tmp_path, capsys, argv):
    missing = tmp_path / "nope"
    args = [a.format(run=cpu_runs["baseline"], missing=missing) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not missing.exists()

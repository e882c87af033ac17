"""PyTorch profiler (Kineto) traces: gzipped, the token range mirrored on the GPU as
gpu_user_annotation, nested host ops, the default stream 7 and a side stream, bookkeeping rows."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from perfreview.analysis import functions, streams
from perfreview.cli import main
from perfreview.formats import chrome_trace, json_stream
from perfreview.trace import runs


def kineto_trace(tokens: int = 6, side_overlaps: bool = False, side: bool = True) -> dict:
    """Per token (1000 µs apart): host ``token`` (user_annotation) > ``aten::mm`` (cpu_op) >
    cudaLaunchKernel; the kernel on stream 7, a memcpy, and a small kernel on side stream 9; the
    token range mirrored on stream 7 as gpu_user_annotation; profiler bookkeeping."""
    ev = [{"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": 1, "tid": 1, "ts": 0, "dur": 99999},
          {"ph": "X", "cat": "overhead", "name": "Activity Buffer Request", "pid": 1, "tid": 1, "ts": 1, "dur": 5}]
    for t in range(tokens):
        base = 100 + 1000 * t
        corr = 10 * t
        ev += [
            {"ph": "X", "cat": "user_annotation", "name": "token", "pid": 1, "tid": 1, "ts": base, "dur": 900},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": base + 10, "dur": 100},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": base + 20,
             "dur": 10, "args": {"correlation": corr}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "pid": 1, "tid": 1, "ts": base + 40,
             "dur": 5, "args": {"correlation": corr + 1}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "pid": 1, "tid": 1, "ts": base + 600,
             "dur": 250, "args": {"correlation": corr + 2}},
            {"ph": "X", "cat": "kernel", "name": "void gemv<__half, 4>(T*) $_0 | x", "pid": 0, "tid": 7,
             "ts": base + 50, "dur": 400, "args": {"stream": 7, "device": 0, "correlation": corr}},
            {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "pid": 0, "tid": 7,
             "ts": base + 460, "dur": 20, "args": {"stream": 7, "device": 0, "correlation": corr + 1, "bytes": 64}},
            {"ph": "X", "cat": "kernel", "name": "side_kernel", "pid": 0, "tid": 9,
             "ts": base + (100 if side_overlaps else 500), "dur": 50, "args": {"stream": 9, "device": 0}},
            {"ph": "X", "cat": "gpu_user_annotation", "name": "token", "pid": 0, "tid": 7, "ts": base + 50,
             "dur": 430, "args": {"stream": 7, "device": 0}},
            {"ph": "X", "cat": "cuda_sync", "name": "Stream Sync", "pid": 0, "tid": 7, "ts": base + 600,
             "dur": 250, "args": {"stream": 7, "device": 0}},
            {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": corr, "pid": 1, "tid": 1, "ts": base + 20},
        ]
    if not side:
        ev = [e for e in ev if e.get("name") != "side_kernel"]
    return {"deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3"}], "distributedInfo": {"rank": 3},
            "traceEvents": ev}


def write_gz(path, doc):
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh)
    return path


def test_kineto_mapping(tmp_path):
    ev, info = chrome_trace.load(write_gz(tmp_path / "t.json.gz", kineto_trace()))
    kinds = ev.groupby("kind", observed=True).size().to_dict()
    assert kinds == {"api": 18, "gpu_annotation": 6, "kernel": 12, "memcpy": 6, "range": 12, "sync": 6}
    assert info["device"] == "NVIDIA H100 80GB HBM3" and info["rank"] == 3
    assert "Activity Buffer Request" not in set(ev["name"]) and "PyTorch Profiler (0)" not in set(ev["name"])
    copy = ev[ev["kind"] == "memcpy"].iloc[0]
    assert copy["copy_kind"] == "HtoD" and copy["mem_kind"] == "pageable->device" and copy["bytes"] == 64
    host = ev[ev["kind"].isin(["range", "api"])]
    depth = dict(zip(host["name"].astype(str), host["depth"]))
    assert depth == {"token": 0, "aten::mm": 1, "cudaLaunchKernel": 2, "cudaMemcpyAsync": 2, "cudaStreamSynchronize": 1}
    self_mm = functions.host_ranges_with_self(ev)
    mm = self_mm[self_mm["name"] == "aten::mm"].iloc[0]
    assert mm["self_ns"] == 100_000 - 10_000 - 5_000  # the launch and the copy call nested inside are not its own


@pytest.mark.parametrize("overlaps, expected_ns", [(False, 0), (True, 6 * 50_000)])
def test_stream_overlap_counts_gpu_work_only(tmp_path, overlaps, expected_ns):
    """The annotation spans the kernel on stream 7; it must not make side-stream work look
    concurrent. The main stream is the busiest (7 here), not stream 0."""
    ev, _ = chrome_trace.load(write_gz(tmp_path / "t.json.gz", kineto_trace(side_overlaps=overlaps)))
    summ = streams.stream_summary(ev, phase="")
    assert set(summ["stream"]) == {7, 9}
    assert (summ["overlap_ns"] == expected_ns).all()
    conc = streams.concurrency(ev, phase="")
    assert conc["overlap_share"].iloc[0] == pytest.approx(1.0 if overlaps else 0.0)


def test_kineto_import_report_and_timeline_with_a_mirrored_token(tmp_path, capsys):
    path = write_gz(tmp_path / "decode.json.gz", kineto_trace())
    assert main(["import", "kineto", str(path), "--token-marker", "token", "--out", str(tmp_path / "runs"),
                 "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["tokens"] == 6 and obj["kernel_count"] == 12 and obj["kernel_time_ns"] == 6 * (400 + 50) * 1000
    assert obj["streams"] == [7, 9] and obj["device"]["name"] == "NVIDIA H100 80GB HBM3"
    assert obj["device"]["rank"] == 3 and obj["events"]["gpu_annotation"] == 6
    run = tmp_path / "runs" / "decode"
    assert runs.read_meta(run).device["name"] == "NVIDIA H100 80GB HBM3"
    md = tmp_path / "r.md"
    assert main(["report", str(run), "--out", str(md)]) == 0
    text = md.read_text()
    assert "llama" not in text.split("###")[0]  # no runner boilerplate for an imported run
    assert main(["plot", "timeline", str(run), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_two_imported_traces_compare_without_blocks_and_say_how_to_decide(tmp_path, capsys):
    # one trace a side, no --blocks: one unit a side, so no interval; the review is still written (it failed after
    # its timeline once) and names import --blocks, not perfreview ab (which cannot rerun someone else's program)
    for name in ("before", "after"):
        path = write_gz(tmp_path / f"{name}.json.gz", kineto_trace())
        assert main(["import", "kineto", str(path), "--token-marker", "token", "--out", str(tmp_path / "runs"),
                     "--quiet"]) == 0
    capsys.readouterr()
    md = tmp_path / "review.md"
    assert main(["compare", str(tmp_path / "runs" / "before"), str(tmp_path / "runs" / "after"), "--out", str(md),
                 "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["verdict"] == "inconclusive" and set(obj["plots"]) == {"timeline", "latency"}
    notes = " ".join(obj["warnings"])
    assert "--blocks N" in notes and "perfreview ab" not in notes
    assert (tmp_path / "review_timeline.png").is_file() and not (tmp_path / "review_deltas.png").exists()
    # the review speaks of the two traces, not of our runner's prompt, KV cache and warm-up
    text = md.read_text()
    assert text.startswith("## Performance review: after vs before")  # after.json.gz's run is "after"
    overview = text.split("### Key findings")[0]
    # the paths as code spans, as written (a backslash escape would show inside one)
    assert f"A `{tmp_path / 'before.json.gz'}` (6 tokens) and B `{tmp_path / 'after.json.gz'}` (6), cut at each " \
           "`token`" in overview
    assert "prompt" not in text and "KV cache" not in text and "warm-up" not in text and "Python" not in text


@pytest.mark.parametrize("content, message", [
    (b"\x1f\x8b\x08\x00garbage", "cannot read"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"traceEvents": [{"ph": "X", "name": "k", "ts": 1e400, "dur": 1}]}', "bad ts"),
    (b'{"traceEvents": [{"ph": "X", "name": "k", "ts": "abc", "dur": 1}]}', "bad ts"),
    (b'{"traceEvents": 5}', "no traceEvents list"),
    (b'{"traceEvents": []}', "no complete events"),
    (b'[{"ph": "B", "name": "a", "ts": 1, "pid": 1, "tid": 1}]', "no complete events"),  # never closed
    (b'{"traceEvents": [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "x"}}]}',
     "no complete events"),
])
def test_broken_kineto_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert main(["import", "kineto", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfreview: error: ") and str(path) in err and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad").exists()


def test_gzip_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.json.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"traceEvents": [' + b" " * (2 << 20))
    monkeypatch.setattr(json_stream, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(json_stream.stream_items, "__defaults__", (json_stream.CHUNK, 1 << 20))
    with pytest.raises(chrome_trace.TraceError, match="decompresses to more than"):
        chrome_trace.load(path)


def test_a_large_trace_parsed_by_workers_equals_the_one_parsed_here(tmp_path):
    path = write_gz(tmp_path / "t.json.gz", kineto_trace(tokens=200))
    here, _ = chrome_trace.load(path, token_marker="token", workers=1, chunk=4096)
    pool, _ = chrome_trace.load(path, token_marker="token", workers=2, chunk=4096)
    pd.testing.assert_frame_equal(here, pool)
    assert here["token"].max() == 199 and (here["kind"] == "kernel").sum() == 400


def test_a_trace_without_a_marker_still_gets_its_kernel_level_report(tmp_path, capsys):
    path = write_gz(tmp_path / "uncut.json.gz", kineto_trace())
    assert main(["import", "kineto", str(path), "--out", str(tmp_path / "runs")]) == 0
    md = tmp_path / "r.md"
    assert main(["report", str(tmp_path / "runs" / "uncut"), "--out", str(md)]) == 0
    text = md.read_text()
    assert "not cut into tokens" in text and "--token-marker" in text
    assert "### Kernels" in text and "### Copies" in text and "### Stream idle time" in text
    assert "async copies from pageable memory" in text and "Streams with work: 2" in text
    assert "### Headline figures" not in text  # nothing per token to show
    assert (tmp_path / "r_timeline.png").stat().st_size > 1000


def test_a_gpu_annotation_can_be_the_token_marker(tmp_path, capsys):
    doc = kineto_trace()
    for e in doc["traceEvents"]:  # only the GPU mirror carries the name
        if e.get("cat") == "user_annotation":
            e["name"] = "step"
    path = write_gz(tmp_path / "annot.json.gz", doc)
    assert main(["import", "kineto", str(path), "--token-marker", "token", "--out", str(tmp_path / "runs"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 6


def test_a_folder_of_rank_traces_is_one_run_with_a_row_per_rank(tmp_path, capsys):
    folder = tmp_path / "ranks"
    folder.mkdir()
    for rank in (1, 0):  # both ranks ran on their host's device 0 with the same pid
        doc = kineto_trace(tokens=4)
        doc["distributedInfo"] = {"rank": rank}
        write_gz(folder / f"rank{rank}.pt.trace.json.gz", doc)
    (folder / "notes.txt").write_text("not a trace")
    assert main(["import", "kineto", str(folder), "--token-marker", "token", "--out", str(tmp_path / "runs"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 4  # the ranks step together: tokens cut once, at rank 0's marker
    assert out["kernel_count"] == 2 * 8 and out["device"]["ranks"] == [0, 1]
    ev = runs.read_run(tmp_path / "runs" / "ranks").events
    tracks = set(ev["track"].astype(str))
    assert {"gpu0/stream7", "gpu1/stream7", "gpu0/stream9", "gpu1/stream9"} <= tracks
    assert {"host/rank0.1.1", "host/rank1.1.1"} <= tracks
    tok = ev[ev["kind"] == "token"]
    assert set(tok["track"].astype(str)) == {"host/rank0.1.1"}


def test_a_folder_with_a_rank_twice_is_refused(tmp_path, capsys):
    folder = tmp_path / "ranks"
    folder.mkdir()
    for name in ("a.json", "b.json"):
        (folder / name).write_text(json.dumps(kineto_trace(tokens=2)))
    assert main(["import", "kineto", str(folder), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfreview: error: ") and "rank 3 appears twice" in err
    assert not (tmp_path / "runs" / "ranks").exists()


@pytest.mark.parametrize("overlaps, says", [(True, "so the streams did run concurrently"),
                                            (False, "the streams mostly took turns")])
def test_a_review_says_whether_extra_streams_ran_concurrently(tmp_path, capsys, overlaps, says):
    a = write_gz(tmp_path / "one.json.gz", kineto_trace(tokens=8, side=False))
    b = write_gz(tmp_path / "two.json.gz", kineto_trace(tokens=8, side_overlaps=overlaps))
    for path in (a, b):
        assert main(["import", "kineto", str(path), "--token-marker", "token", "--blocks", "2",
                     "--out", str(tmp_path / "runs")]) == 0
    out = tmp_path / "review.md"
    assert main(["compare", str(tmp_path / "runs" / "one"), str(tmp_path / "runs" / "two"), "--out", str(out),
                 "--no-plots"]) == 0
    text = out.read_text()
    assert "B spreads its GPU work over 2 streams (A over 1)" in text and says in text

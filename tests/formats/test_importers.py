"""Importers: llama-bench results compared with intervals; Kineto traces into the event table."""

from __future__ import annotations

import json
import sqlite3
import zlib

import numpy as np
import pytest
from markdown_it import MarkdownIt

from perfreview.cli import main
from perfreview.formats import chrome_trace, llama_bench


def bench_record(n_gen: int, tps: np.ndarray, commit: str, n_prompt: int = 0) -> dict:
    ns = (1e9 * (n_gen + n_prompt) / tps).astype(int)
    return {"build_commit": commit, "build_number": 1, "model_type": "llama 8B Q5_K - Small", "n_prompt": n_prompt,
            "n_gen": n_gen, "n_depth": 0, "n_gpu_layers": 99, "flash_attn": True, "test_time": "2026-01-01T00:00:00Z",
            "avg_ts": float(tps.mean()), "stddev_ts": float(tps.std(ddof=1)), "samples_ns": ns.tolist(),
            "samples_ts": tps.tolist()}


def write_bench(tmp_path, name, commit, effects, jsonl=False):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # fixed per file: deterministic
    recs = [bench_record(g, 120 * eff * (1 + cv * rng.standard_normal(30)), commit) for g, (eff, cv) in effects.items()]
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in recs) if jsonl else json.dumps(recs))
    return path


def test_compare_llama_bench_verdicts(tmp_path, capsys):
    a = write_bench(tmp_path, "a.json", "aaaa111", {32: (1.0, 0.001), 64: (1.0, 0.001), 128: (1.0, 0.08)})
    b = write_bench(tmp_path, "b.jsonl", "bbbb222", {32: (1.03, 0.001), 64: (1.0, 0.001), 128: (1.0, 0.08)},
                    jsonl=True)
    out = tmp_path / "bench.md"
    assert main(["compare-llama-bench", str(a), str(b), "--out", str(out), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["llama 8B Q5_K - Small tg32"]["verdict"] == "improved"
    assert rows["llama 8B Q5_K - Small tg64"]["verdict"] == "no change"
    assert rows["llama 8B Q5_K - Small tg128"]["verdict"] == "inconclusive"
    md = out.read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    assert any(t.type == "table_open" for t in tokens) and "aaaa111" in md and "bbbb222" in md


def test_import_llama_bench_stores_a_run_that_reports_and_compares(tmp_path, capsys):
    a = write_bench(tmp_path, "a.json", "aaaa111", {32: (1.0, 0.001), 64: (1.0, 0.001)})
    b = write_csv(tmp_path / "b.csv", [bench_record(32, 120 * 1.03 * (1 + 0.001 * np.arange(-2, 3)), "bbbb222"),
                                       bench_record(64, 120 * (1 + 0.001 * np.arange(-2, 3)), "bbbb222")])
    runs = tmp_path / "runs"
    assert main(["import", "llama-bench", str(a), "--out", str(runs), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["events"] == {} and got["kernel_count"] == 0 and got["kernel_time_ns"] == 0 and got["tokens"] == 0
    assert got["streams"] == [] and got["device"]["name"].startswith("unknown")
    assert [t["test"] for t in got["tests"]] == ["llama 8B Q5_K - Small tg32", "llama 8B Q5_K - Small tg64"]
    assert all(t["repetitions"] == 30 and t["repetitions_in_file"] for t in got["tests"])
    assert main(["import", "llama-bench", str(b), "--out", str(runs)]) == 0
    line = capsys.readouterr().out
    assert "imported 2 llama-bench tests" in line and "(assumed: not in the file)" in line
    # listed in the store under its build, so --a build=X finds it
    assert main(["list", "--out", str(runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["build"] for r in listed} == {"aaaa111", "bbbb222"}
    # report: the tests, no timeline
    md = tmp_path / "a.md"
    assert main(["report", str(runs / "a"), "--out", str(md), "--quiet"]) == 0
    capsys.readouterr()
    text = md.read_text()
    assert "tg32" in text and "no kernels" in text and not (tmp_path / "a_timeline.png").exists()
    # compare of the two runs = compare-llama-bench of the two files
    assert main(["compare", "--a", "build=aaaa111", "--b", "build=bbbb222", "--runs-dir", str(runs), "--json",
                 "--fail-on", "regressed"]) == 0
    rows = {r["name"].split()[-1]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert main(["compare-llama-bench", str(a), str(b), "--json"]) == 0
    direct = {r["name"].split()[-1]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows == direct and rows["tg32"]["verdict"] == "improved"
    assert main(["compare", str(runs / "b"), str(runs / "a"), "--fail-on", "regressed", "--quiet"]) == 1
    capsys.readouterr()
    # no timeline: plot and export say so in one line
    for args in (["plot", "timeline", str(runs / "a"), "--out", str(tmp_path / "t.png")],
                 ["export", "perfetto", str(runs / "a"), "--out", str(tmp_path / "t.json")],
                 ["import", "llama-bench", str(a), "--out", str(runs), "--name", "x", "--token-marker", "tok"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("perfreview: error: ") and len(err.strip().splitlines()) == 1 and "timeline" in err
    assert not (tmp_path / "t.png").exists() and not (runs / "x").exists()


def test_import_llama_bench_bad_file_stores_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"build_commit": "x", "n_gen": 32')
    runs = tmp_path / "runs"
    assert main(["import", "llama-bench", str(bad), "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfreview: error: ") and "bad.json" in err and len(err.strip().splitlines()) == 1
    assert not runs.exists() or not any(runs.iterdir())


def test_llama_bench_without_samples_or_means_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rec = bench_record(32, np.array([100.0, 101.0]), "c")
    del rec["samples_ts"], rec["avg_ts"]
    path.write_text(json.dumps([rec]))
    assert main(["compare-llama-bench", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert "bench.json" in err and "samples_ts" in err and len(err.strip().splitlines()) == 1


FIELDS = ["build_commit", "build_number", "model_type", "n_prompt", "n_gen", "n_depth", "n_gpu_layers", "flash_attn",
          "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts"]


def write_csv(path, recs):
    """As llama-bench -o csv writes it: a header, every value double-quoted."""
    def cell(v):
        return f'"{str(v).lower() if isinstance(v, bool) else v}"'
    lines = [",".join(FIELDS)] + [",".join(cell(r.get(k, "")) for k in FIELDS) for r in recs]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sql(path, recs):
    """As llama-bench -o sql writes it: CREATE TABLE IF NOT EXISTS llama_bench, single-quoted values."""
    cols = ", ".join(f"{k} {'TEXT' if k in ('build_commit', 'model_type', 'test_time') else 'REAL'}" for k in FIELDS)
    out = [f"CREATE TABLE IF NOT EXISTS llama_bench (\n  {cols}\n);"]
    for r in recs:
        vals = ", ".join(f"'{int(r[k]) if isinstance(r[k], bool) else r[k]}'" for k in FIELDS if k in r)
        cols = ", ".join(k for k in FIELDS if k in r)
        out.append(f"INSERT INTO llama_bench ({cols}) VALUES ({vals});")
    path.write_text("\n".join(out) + "\n")
    return path


def write_md(path, recs, commit="3f1ae2e3"):
    """As llama-bench -o md writes it (the table pasted in a PR)."""
    out = ["| model | size | params | backend | ngl | fa | test | t/s |",
           "| ------------------------------ | ---------: | ---------: | ---------- | --: | -: | ------: | ---: |"]
    for r in recs:
        out.append(f"| {r['model_type']} | 5.21 GiB | 8.03 B | CUDA | 99 | 1 | {llama_bench.test_name(r)} | "
                   f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    path.write_text("\n".join(out) + f"\n\nbuild: {commit} (6800)\n")
    return path


def test_llama_bench_csv_sql_and_markdown_compare_with_approximate_intervals(tmp_path, capsys):
    rng = np.random.default_rng(3)
    a = [bench_record(g, 120 * (1 + 0.002 * rng.standard_normal(10)), "aaa") for g in (32, 64)]
    b = [bench_record(32, 120 * 1.05 * (1 + 0.002 * rng.standard_normal(10)), "bbb"),
         bench_record(64, 120 * (1 + 0.002 * rng.standard_normal(10)), "bbb")]
    verdicts = {}
    for fmt, write in (("csv", write_csv), ("sql", write_sql), ("md", write_md)):
        pa, pb = write(tmp_path / f"a.{fmt}", a), write(tmp_path / f"b.{fmt}", b)
        out = tmp_path / f"{fmt}.md"
        assert main(["compare-llama-bench", str(pa), str(pb), "--out", str(out), "--json"]) == 0, fmt
        payload = json.loads(capsys.readouterr().out)
        rows = {r["name"].split()[-1]: r for r in payload["rows"]}
        verdicts[fmt] = (rows["tg32"]["verdict"], rows["tg64"]["verdict"])
        assert rows["tg32"]["speedup"] == round(b[0]["avg_ts"] / a[0]["avg_ts"], 2)
        assert all("approximate" in r["method"] for r in payload["rows"])
        assert "approximate" in out.read_text()
    assert set(verdicts.values()) == {("improved", "no change")}
    # a JSON file (samples) against a pasted markdown table (mean ± SD): pairs on the fields both have
    pj = tmp_path / "a.json"
    pj.write_text(json.dumps(a))
    assert main(["compare-llama-bench", str(pj), str(tmp_path / "b.md"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2


@pytest.mark.parametrize("sql, problem", [
    ("ATTACH DATABASE 'x.db' AS x;", "not authorized"),
    ("CREATE TABLE llama_bench (a);\nINSERT INTO llama_bench WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
     "SELECT x + 1 FROM c) SELECT x FROM c;", "not authorized"),
    ("CREATE TABLE other (a);", "no llama_bench table"),
    ("CREATE TABLE llama_bench (avg_ts);\nINSERT INTO llama_bench VALUES ('abc');", "avg_ts"),
])
def test_hostile_llama_bench_sql_is_refused_in_one_line(tmp_path, capsys, sql, problem):
    path = tmp_path / "bad.sql"
    path.write_text(sql)
    assert main(["compare-llama-bench", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfreview: error: ") and "bad.sql" in err and problem in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.db").exists()


def test_test_names_follow_llama_bench():
    assert llama_bench.test_name({"n_prompt": 512, "n_gen": 0}) == "pp512"
    assert llama_bench.test_name({"n_prompt": 512, "n_gen": 128}) == "pp512+tg128"
    assert llama_bench.test_name({"n_prompt": 0, "n_gen": 128, "n_depth": 512}) == "tg128 @ d512"


def test_kineto_trace_imports_into_the_event_table(tmp_path):
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 10.0, "dur": 5.5},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 11.0, "dur": 2.0,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "kernel", "name": "void gemm<float, 128>(T*) | `x`", "pid": 0, "tid": 7, "ts": 14.0,
         "dur": 3.25, "args": {"correlation": 7, "stream": 7}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "pid": 0, "tid": 7,
         "ts": 20.0, "dur": 1.0, "args": {"stream": 7}},
        {"ph": "i", "name": "instant, ignored", "pid": 1, "tid": 1, "ts": 1.0},
    ]}
    path = tmp_path / "kineto.json"
    path.write_text(json.dumps(trace))
    ev, _ = chrome_trace.load(path)
    assert list(ev["kind"].astype(str)) == ["range", "api", "kernel", "memcpy"]
    kern = ev[ev["kind"] == "kernel"].iloc[0]
    assert kern["stream"] == 7 and kern["correlation"] == 7 and kern["end_ns"] - kern["start_ns"] == 3250
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "name": "a"}]}')
    try:
        chrome_trace.load(bad)
    except chrome_trace.TraceError as exc:
        assert "bad.json" in str(exc) and "lacks ts" in str(exc)
    else:
        raise AssertionError("a trace event without ts must be refused")


def test_nsys_export_imports_and_the_gap_analysis_applies(tmp_path, capsys):
    from nsys_fixture import make

    from perfreview.analysis import gaps
    from perfreview.trace import runs

    base = make(tmp_path / "sasassasg.sqlite", "sasassas")
    pr = make(tmp_path / "saaaasg.sqlite", "aaaas")
    for f in (base, pr):
        assert main(["import", "nsys", str(f), "--token-marker", "llama_decode", "--out", str(tmp_path / "runs"),
                     "--json"]) == 0
    capsys.readouterr()
    a, b = runs.read_run(tmp_path / "runs" / "sasassasg"), runs.read_run(tmp_path / "runs" / "saaaasg")
    kinds = set(a.events["kind"].astype(str))
    assert {"kernel", "memcpy", "api", "range", "token"} <= kinds
    names = set(a.events["name"].astype(str))
    assert "cudaStreamSynchronize" in names and "void mul_mat_vec<half, 4>(const half*, float*) | `q`" in names
    ga, gb = gaps.sync_gaps(a.events), gaps.sync_gaps(b.events)
    assert len(ga) == 5 and (ga["gap_ns"] > gb["gap_ns"].max()).all()  # fewer syncs, shorter gap
    assert (ga["blocked_sync_ns"] > 0).all() and (ga["copies_ns"] > 0).all()
    counts = {r.run: (r.syncs, r.copies) for r in gaps.counts_per_token(pd_concat(a, b)).itertuples()}
    assert counts == {"sasassasg": (6, 3), "saaaasg": (2, 4)}  # pattern + the final sync of each token
    # the same pictures and reports as for our own runs
    assert main(["plot", "timeline", str(a.path), str(b.path), "--out", str(tmp_path / "t.png")]) == 0
    assert main(["report", str(a.path), "--out", str(tmp_path / "r.md")]) == 0
    assert "mul\\_mat\\_vec" in (tmp_path / "r.md").read_text()


def pd_concat(*rs):
    import pandas as pd

    return pd.concat([r.events for r in rs])


def test_nsys_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 10)
    assert main(["import", "nsys", str(junk), "--out", str(tmp_path / "runs")]) == 2
    assert "junk.sqlite" in capsys.readouterr().err
    other = tmp_path / "other.sqlite"  # a database, but not an nsys export
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    assert main(["import", "nsys", str(other), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == f"perfreview: error: {other}: not an Nsight Systems SQLite export (no CUPTI or NVTX tables)\n"
    from nsys_fixture import make

    f = make(tmp_path / "t.sqlite", "s")
    assert main(["import", "nsys", str(f), "--token-marker", "nope", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "t.sqlite" in err and "'nope' occurs 0 time" in err
    assert not (tmp_path / "runs" / "t").exists()


def test_perfetto_export_of_an_nsys_import_links_launches_to_kernels(tmp_path, capsys):
    from nsys_fixture import make

    f = make(tmp_path / "t.sqlite", "sa", tokens=3)
    assert main(["import", "nsys", str(f), "--token-marker", "llama_decode", "--out", str(tmp_path / "runs")]) == 0
    out = tmp_path / "t.json"
    assert main(["export", "perfetto", str(tmp_path / "runs" / "t"), "--out", str(out)]) == 0
    evs = json.loads(out.read_text())["traceEvents"]
    starts = {e["id"] for e in evs if e["ph"] == "s"}
    ends = {e["id"] for e in evs if e["ph"] == "f"}
    assert ends and ends <= starts  # every GPU op's arrow starts at its launching call
    xs = {(e["ts"], e["pid"], e["tid"]) for e in evs if e["ph"] == "X"}
    assert all((e["ts"], e["pid"], e["tid"]) in xs for e in evs if e["ph"] in "sf")  # bound to a slice


def test_two_nsys_traces_compared_with_token_blocks(tmp_path, capsys):
    from nsys_fixture import make

    for name, pattern in (("before", "sasassas"), ("after", "aaaas")):
        f = make(tmp_path / f"{name}.sqlite", pattern, tokens=41)
        assert main(["import", "nsys", str(f), "--token-marker", "llama_decode", "--blocks", "10",
                     "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "runs" / "before"), str(tmp_path / "runs" / "after"), "--json",
                 "--no-plots"]) == 0
    obj = json.loads(capsys.readouterr().out)
    gap = next(r for r in obj["rows"] if r["name"] == "median_sync_gap_us")
    assert gap["verdict"] == "improved" and gap["b"] < gap["a"]
    assert any("batch means" in w for w in obj["warnings"])
    before = str(tmp_path / "before.sqlite")
    assert main(["import", "nsys", before, "--blocks", "3", "--out", str(tmp_path / "r2")]) == 2  # no marker
    capsys.readouterr()
    for blocks in ("0", "1", "-2"):  # 0 was taken as no blocks: one unit, though blocks were asked for
        assert main(["import", "nsys", before, "--token-marker", "llama_decode", "--blocks", blocks,
                     "--out", str(tmp_path / "r3")]) == 2
        assert capsys.readouterr().err.strip() == (f"perfreview: error: {before}: 41 tokens cannot make {blocks} "
                                                   "blocks of at least 2 tokens")
    assert not (tmp_path / "r3").exists()


def test_chrome_trace_cut_into_tokens(tmp_path, capsys):
    evs = []
    for i in range(4):
        t = 100.0 * i
        evs += [{"ph": "X", "cat": "user_annotation", "name": "decode_step", "pid": 1, "tid": 1, "ts": t, "dur": 80.0},
                {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": t + 1,
                 "dur": 2.0, "args": {"correlation": i + 1}},
                {"ph": "X", "cat": "kernel", "name": "gemv", "pid": 0, "tid": 7, "ts": t + 5, "dur": 60.0,
                 "args": {"correlation": i + 1, "stream": 7}}]
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"traceEvents": evs}))
    assert main(["import", "chrome", str(path), "--token-marker", "decode_step", "--out", str(tmp_path / "runs"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 4
    from perfreview.analysis import gaps
    from perfreview.trace import runs

    run = runs.read_run(tmp_path / "runs" / "k")
    assert run.meta.format == "chrome-trace"
    g = gaps.sync_gaps(run.events)
    assert list(g["gap_ns"]) == [40_000] * 3  # kernel ends at t+65 µs, the next starts at t+105 µs


def test_llama_bench_newer_fields_repeated_tests_and_the_speedup_column(tmp_path, capsys):
    """A newer llama-bench adds fields (repack, fit_target ...): tests still pair; a test run twice in
    one file is pooled; the Speedup column is compare-llama-bench.py's mean-of-avg_ts ratio."""
    rng = np.random.default_rng(1)
    a = [bench_record(64, 100 + rng.normal(0, 0.1, 10), "aaa"), bench_record(64, 102 + rng.normal(0, 0.1, 10), "aaa")]
    b = [dict(bench_record(64, 105 + rng.normal(0, 0.1, 10), "bbb"), repack=True, fit_target=1024, n_gen_warmup=1)]
    pa, pb = tmp_path / "a.json", tmp_path / "b.jsonl"
    pa.write_text(json.dumps(a))
    pb.write_text("\n".join(json.dumps(r) for r in b))
    assert main(["compare-llama-bench", str(pa), str(pb), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 1 and rows[0]["n"] == 10  # A's two records pooled into one test (20 vs 10 repetitions)
    mean_a = (a[0]["avg_ts"] + a[1]["avg_ts"]) / 2
    assert rows[0]["speedup"] == round(b[0]["avg_ts"] / mean_a, 2)
    assert rows[0]["verdict"] == "improved"


@pytest.mark.parametrize("name", ["../beside", "a/b", "/abs", ".hidden", "", "results.sqlite"])
def test_import_name_must_be_one_folder_name_in_the_runs_folder(tmp_path, capsys, name):
    # --name ../beside wrote beside the runs folder's parent (or failed by chance), .hidden made a run that store
    # check takes for a crashed writer's folder, results.sqlite took the store's place
    from nsys_fixture import make

    trace = make(tmp_path / "t.sqlite", "sas", tokens=4)
    runs_dir = tmp_path / "runs"
    assert main(["import", "nsys", str(trace), "--token-marker", "llama_decode", "--name", name,
                 "--out", str(runs_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perfreview: error: {runs_dir}: run id {name!r}") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sqlite"]  # nothing written anywhere

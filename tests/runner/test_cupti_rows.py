"""CUPTI records -> event rows (runner.cupti_trace.to_rows) on hand-built records with known answers:
tokens and functions through correlation ids, graph replays through the capture log, copies' memory
kinds, the clock offset; the traced gap; the one-line error without cupti-python."""

from __future__ import annotations

import pandas as pd
import pytest

from perfreview.analysis import functions, gaps
from perfreview.cli import main
from perfreview.trace import schema
from runner.cupti_trace import FIELDS, to_rows

OFFSET = 1_000_000  # host clock = CUPTI clock + 1 ms


def host(token, name, start, end, depth=1, kind="range"):
    return {"repeat": 0, "token": token, "phase": "decode", "source": "host", "kind": kind, "name": name,
            "track": "host/main", "start_ns": start, "end_ns": end, "depth": depth}


def rec(kind, name, start, end, corr, stream=7, nbytes=-1, copy_kind=0, src=0, dst=0, sync=0, ext=0):
    """A raw record in FIELDS order; times on the CUPTI clock."""
    values = dict(kind=kind, name=name, start=start - OFFSET, end=end - OFFSET, correlation=corr, stream=stream,
                  device=0, bytes=nbytes, copy_kind=copy_kind, src_kind=src, dst_kind=dst, graph_node=0,
                  sync_type=sync, external_id=ext)
    return [values[f] for f in FIELDS]


HOST = [host(0, "token", 0, 10_000, 0, "token"), host(0, "attention", 100, 900),
        host(1, "token", 10_000, 20_000, 0, "token"), host(1, "graph_launch", 10_100, 10_300)]
RAW = [
    rec("DRIVER", "cuLaunchKernel", 200, 260, 1),  # eager: inside attention, token 0
    rec("CONCURRENT_KERNEL", "attn_split", 300, 2_300, 1),
    rec("RUNTIME", "cudaMemcpyAsync", 400, 420, 2),
    rec("MEMCPY", "", 2_400, 2_450, 2, nbytes=16, copy_kind=1, src=1, dst=3),  # pageable -> device
    rec("RUNTIME", "cudaGraphLaunch", 10_150, 10_250, 3),  # graph: token 1
    rec("CONCURRENT_KERNEL", "rmsnorm", 10_400, 10_500, 3),
    rec("CONCURRENT_KERNEL", "gemv_qkv", 10_500, 11_500, 3),
    rec("CONCURRENT_KERNEL", "rmsnorm", 11_600, 11_700, 3),
    rec("RUNTIME", "cudaStreamSynchronize", 11_000, 12_000, 4),
    rec("SYNCHRONIZATION", "", 11_000, 12_000, 4, sync=3),
]
LOG = [("rmsnorm", "rmsnorm"), ("qkv", "gemv_qkv"), ("rmsnorm", "rmsnorm")]


def rows():
    return to_rows(RAW, OFFSET, 0, HOST, LOG)


def test_external_correlation_ids_name_the_range_and_token_of_each_call():
    """The recorder pushes (token, range) as CUPTI's external id: a call is attributed by that id,
    even where its timestamp would put it elsewhere (a launch CUPTI stamped after the range closed),
    and GPU work follows its call."""
    from runner.cupti_trace import external_id

    names = ["", "token", "attention", "ffn"]
    raw = [rec("DRIVER", "cuLaunchKernel", 950, 990, 1),  # after attention closed (900): time says token only
           rec("EXTERNAL_CORRELATION", "", OFFSET, OFFSET, 1, ext=external_id(0, 2)),
           rec("CONCURRENT_KERNEL", "attn_split", 1_000, 2_000, 1),
           rec("DRIVER", "cuLaunchKernel", 10_150, 10_160, 2),
           rec("EXTERNAL_CORRELATION", "", OFFSET, OFFSET, 2, ext=external_id(1, 3)),
           rec("CONCURRENT_KERNEL", "gemv_swiglu", 10_200, 10_900, 2)]
    ev = pd.DataFrame(to_rows(raw, OFFSET, 0, HOST, None, external_names=names))
    fn = ev[ev["kind"] == "gpu_range"].set_index("name")
    assert set(fn.index) == {"attention", "ffn"}
    assert fn.loc["attention", "token"] == 0 and fn.loc["ffn", "token"] == 1
    assert not (ev["kind"] == "external_correlation").any()  # bookkeeping, not rows
    # Without the ids (13-field records saved before them), by time: the first call falls after
    # attention closed and the second inside graph_launch (not a function): no function for either.
    old = pd.DataFrame(to_rows([r[:-1] for r in raw if r[0] != "EXTERNAL_CORRELATION"], OFFSET, 0, HOST, None))
    assert not (old["kind"] == "gpu_range").any() and len(old[old["kind"] == "kernel"]) == 2


def test_calls_and_gpu_work_land_in_their_tokens_and_functions():
    ev = pd.DataFrame(rows())
    api = ev[ev["kind"] == "api"].set_index("name")
    assert api.loc["cuLaunchKernel", "token"] == 0 and api.loc["cuLaunchKernel", "depth"] == 2  # inside attention
    assert api.loc["cudaGraphLaunch", "token"] == 1 and api.loc["cuLaunchKernel", "start_ns"] == 200
    kernels = ev[ev["kind"] == "kernel"]
    assert list(kernels["token"]) == [0, 1, 1, 1]
    assert set(kernels["track"]) == {"gpu0/stream7"}
    fn = ev[ev["kind"] == "gpu_range"]
    assert list(zip(fn["name"], fn["end_ns"] - fn["start_ns"])) == [
        ("attention", 2_000), ("rmsnorm", 100), ("qkv", 1_000), ("rmsnorm", 100)]
    copy = ev[ev["kind"] == "memcpy"].iloc[0]
    assert (copy["copy_kind"], copy["mem_kind"], copy["bytes"], copy["token"]) == ("HtoD", "pageable->device", 16, 0)
    sync = ev[ev["kind"] == "sync"].iloc[0]
    assert sync["name"] == "stream sync" and sync["track"] == "gpu0/sync"


def test_per_function_gpu_time_on_the_graph_path():
    table = schema.from_records([*HOST, *rows()], "r")
    pt = functions.per_token(table).set_index(["token", "name"])
    assert pt.loc[(1, "rmsnorm"), "gpu_ns"] == 200 and pt.loc[(1, "qkv"), "gpu_ns"] == 1_000
    assert pt.loc[(1, "gemv_qkv"), "gpu_ns"] == 1_000  # and per kernel name


def test_kernel_summary_tells_apart_the_functions_that_launch_one_kernel():
    """One GEMV kernel serves o_proj and the down projection: by function, each gets its own row, with
    the added stream time of its own launches; a kernel no function launched keeps its name."""
    from perfreview.analysis import traced

    host_rows = [host(0, "token", 0, 20_000, 0, "token"), host(0, "graph_launch", 100, 300)]
    raw = [rec("RUNTIME", "cudaGraphLaunch", 150, 250, 1),
           rec("CONCURRENT_KERNEL", "gemv_residual", 1_000, 1_300, 1),  # o_proj: adds 300
           rec("CONCURRENT_KERNEL", "gemv_swiglu", 1_300, 3_300, 1),
           rec("CONCURRENT_KERNEL", "gemv_residual", 3_200, 4_200, 1),  # down: starts under PDL, adds 900
           rec("CONCURRENT_KERNEL", "gemv_residual", 4_200, 4_500, 1),  # o_proj again
           rec("CONCURRENT_KERNEL", "gemv_residual", 4_600, 4_700, 9)]  # another stream, no capture: no function
    log = [("o_proj", "gemv_residual"), ("ffn", "gemv_swiglu"), ("ffn", "gemv_residual"), ("o_proj", "gemv_residual")]
    table = schema.from_records([*host_rows, *to_rows(raw, OFFSET, 0, host_rows, log)], "r")
    by_fn = traced.kernel_summary(table, by_function=True).set_index("name")
    assert by_fn.loc["o_proj: gemv_residual", "count"] == 2 and by_fn.loc["o_proj: gemv_residual", "added_ns"] == 600
    assert by_fn.loc["ffn: gemv_residual", "added_ns"] == 900 and by_fn.loc["ffn: gemv_residual", "total_ns"] == 1_000
    assert by_fn.loc["ffn: gemv_swiglu", "added_ns"] == 2_000
    by_name = traced.kernel_summary(table).set_index("name")  # the same kernels, one row a name
    assert by_name.loc["gemv_residual", "added_ns"] == by_fn.filter(like="gemv_residual", axis=0)["added_ns"].sum()


def test_traced_gap_between_tokens():
    table = schema.from_records([*HOST, *rows()], "r")
    g = gaps.traced_gaps(table)
    assert list(g["gap_ns"]) == [10_400 - 2_450]  # last copy of token 0 -> first kernel of token 1


def test_trace_cupti_without_a_gpu_is_one_line(tmp_path, capsys):
    assert main(["run", "--device", "cpu", "--trace", "cupti", "--tokens", "2", "--repeats", "1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfreview: error: ") and "cupti" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_cupti_python_says_what_to_install(monkeypatch):
    import builtins

    from runner import cupti_trace

    real = builtins.__import__

    def no_cupti(name, *a, **k):
        if name == "cupti":
            raise ImportError("No module named 'cupti'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cupti)
    with pytest.raises(cupti_trace.CuptiUnavailable, match=r"pip install -e '.\[cupti\]'"):
        cupti_trace.Collector()


def test_nvtx_injection_is_refused_before_cupti_loads(monkeypatch):
    """Measured on the H100: with NVTX_INJECTION64_PATH set CUPTI lost kernel records, so the collector
    says so and stops instead of tracing with holes (checked before cupti-python is even imported)."""
    from runner import cupti_trace

    monkeypatch.setenv("NVTX_INJECTION64_PATH", "/usr/lib/libcupti.so")
    with pytest.raises(cupti_trace.CuptiUnavailable, match="NVTX_INJECTION64_PATH is set"):
        cupti_trace.Collector()


def real(which: str) -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "cupti_h100.json").read_text())[which]


def test_real_graph_replay_records_from_the_h100():
    """Records saved from the 1b optimized config (one CUDA graph per token, Q/K/V on three streams):
    every kernel of a decode token lands in that token, and through the capture log in the function
    that launched it; the graph's 180 launches are the token's 180 kernels."""
    fx = real("graph")
    ev = pd.DataFrame(to_rows(fx["raw"], fx["offset_ns"], 0, fx["host_rows"], [tuple(x) for x in fx["capture_log"]]))
    decode = ev[ev["phase"] == "decode"]
    kernels = decode[decode["kind"] == "kernel"]
    assert kernels.groupby("token").size().to_dict() == {2: 180, 3: 180} == {t: len(fx["capture_log"]) for t in (2, 3)}
    launches = decode[(decode["kind"] == "api") & (decode["name"] == "cudaGraphLaunch")]
    assert launches.groupby("token").size().to_dict() == {2: 1, 3: 1}
    fns = decode[decode["kind"] == "gpu_range"]
    assert len(fns) == len(kernels)  # every kernel attributed
    expected = {"rmsnorm", "q_proj", "k_proj", "v_proj", "attention", "o_proj", "ffn", "lm_head", "sample"}
    assert expected <= set(fns["name"])
    assert kernels["track"].nunique() == 4  # the compute stream and the three Q/K/V streams
    assert (ev["end_ns"] >= ev["start_ns"]).all() and fx["residual_ns"] < 1_000


def test_cupti_stream_ids_map_to_the_runner_streams():
    """The driver's id of our compute stream (13 in the H100 records) becomes the runner's index 0,
    the row its CUDA events are on; the streams a replayed graph runs kernels on keep their ids."""
    fx = real("graph")
    ev = pd.DataFrame(to_rows(fx["raw"], fx["offset_ns"], 0, fx["host_rows"], [tuple(x) for x in fx["capture_log"]],
                              stream_ids={13: 0}))
    work = ev[ev["kind"].isin(["kernel", "memcpy"])]
    assert set(work["stream"]) == {0, 19, 20, 21}
    assert set(work.loc[work["kind"] == "memcpy", "track"]) == {"gpu0/stream0"}


def test_real_eager_records_from_the_h100():
    """The eager baseline (CuPy + cuBLAS): kernels take the function of the range their launch was
    made in; pageable input copies keep their memory kinds."""
    fx = real("eager")
    ev = pd.DataFrame(to_rows(fx["raw"], fx["offset_ns"], 0, fx["host_rows"]))
    kernels = ev[ev["kind"] == "kernel"]
    fns = ev[ev["kind"] == "gpu_range"]
    assert len(kernels) > 0 and len(fns) == len(kernels) and (kernels["token"] == 2).all()
    copies = ev[ev["kind"] == "memcpy"]
    assert len(copies) and set(copies["mem_kind"]) <= {"pageable->device", "device->pageable"}
    api_names = set(ev.loc[ev["kind"] == "api", "name"])
    assert "cudaMemcpyAsync" in api_names and "cudaStreamSynchronize" in api_names

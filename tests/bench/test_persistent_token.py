"""bench/persistent_token.py on the CPU: its argument tables match token.cu's structs field for field,
the kernel compiles for sm_90 without spills at one block an SM, the table renders, and bad options
are one line, exit 2, nothing written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import persistent_token as pt
from perfreview.report import render

ROOT = Path(__file__).resolve().parents[2]


def c_fields(struct: str) -> list[tuple[str, str]]:
    """(type, name) of each field of ``struct`` in token.cu, in order."""
    body = re.search(rf"struct {struct} \{{(.*?)\n\}};", pt.TOKEN_SOURCE.read_text(), flags=re.S).group(1)
    body = re.sub(r"//[^\n]*", "", body)
    fields = []
    for decl in (d.strip() for d in body.split(";") if d.strip()):
        kind, names = re.match(r"(.*?[\w*])\s+(\w+(?:\s*,\s*\w+)*)$", decl).groups()
        fields += [(kind, n.strip()) for n in names.split(",")]
    return fields


def test_argument_tables_match_the_c_structs():
    layer = c_fields("TokenLayer")
    assert [n for _, n in layer] == list(pt.LAYER_FIELDS) and all(k.endswith("*") for k, _ in layer)
    assert pt.LAYER_DTYPE.itemsize == 88
    args = c_fields("TokenArgs")
    assert [n for _, n in args] == [*pt.ARG_POINTERS, *pt.ARG_INTS, *pt.ARG_FLOATS]
    kinds = [k for k, _ in args]
    n_ptr, n_int = len(pt.ARG_POINTERS), len(pt.ARG_INTS)
    assert all(k.endswith("*") for k in kinds[:n_ptr]) and set(kinds[n_ptr:n_ptr + n_int]) == {"int"}
    assert set(kinds[n_ptr + n_int:]) == {"float"}
    assert pt.ARGS_DTYPE.itemsize == 8 * n_ptr + 4 * n_int + 4 * len(pt.ARG_FLOATS) == 232


def test_phases_match_the_kernel():
    assert "return 1 + 6 * n_layers + 3;" in pt.TOKEN_SOURCE.read_text() and pt.phases(16) == 100


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("group,defines", [(4, ()), (2, ()), (4, ("-DTOKEN_AHEAD=1",)), (2, ("-DTOKEN_AHEAD=1",)),
                                           (4, ("-DTOKEN_AHEAD=1", "-DTOKEN_STAMPS=1"))])
def test_token_kernel_compiles_without_spills(tmp_path, group, defines):
    src = tmp_path / "token.cu"
    src.write_text(pt.SOURCE.read_text() + pt.CHAIN_SOURCE.read_text() + pt.TOKEN_SOURCE.read_text())
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "--std=c++17", f"-DATT_SHARE_KV={group}", "-DATT_FILL=4",
                           "-DBARRIER_FLAGS=2", *defines, "-Xptxas", "-v",
                           "-o", str(tmp_path / "t.cubin"), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = re.search(r"entry function 'token_persistent'.*?(\d+) bytes spill stores, (\d+) bytes spill loads",
                      done.stderr, flags=re.S)
    assert found and found.groups() == ("0", "0")


def test_shared_memory_holds_every_phase():
    from runner.presets import get_preset

    for name in ("1b", "8b"):
        p = get_preset(name)
        need = pt.smem_bytes(p, p.n_heads // p.n_kv_heads)
        assert need >= 2 * p.ffn and need >= 4 * 4 * 256 * 8 and need <= 48 * 1024  # no opt-in above 48 KB


def test_table_renders_timed_and_untimed_rows():
    row = {"grid": 132, "shared_mem": 33536, "same_pick": True, "finite": True, "max_logit_diff": 0.0,
           "barrier_gave_up": False, "timed": True, "us": 800.0, "min_us": 799.0, "max_us": 801.0, "gbs": 3093.0}
    bad = {**row, "timed": False, "same_pick": False, "max_logit_diff": float("inf"), "us": float("nan")}
    report = {"git": {"commit": "abc"}, "device": {"name": "GPU <x> | y"}, "copy_bw_gbs": 4200.0, "replays": 20,
              "rounds": 9, "presets": {"1b": {"weights_mb": 2471.6, "kv_mb": 3.1, "position": 96, "phases": 100,
                                              "per_kv": 16, "variants": {"persistent, 1 block an SM": row,
                                                                         "persistent | `x`": bad}}}}
    text = render.render("persistent_token.md.j2", r=report)
    assert "| persistent, 1 block an SM | 800.0 | 799.0 | 801.0 | 3093 | 73.6% | 132 | yes | 0 | no |" in text
    assert "not timed" in text and "| NO |" in text and "persistent \\| \\`x\\`" in text


@pytest.mark.parametrize("args", [["--variants", "persistent, 1 block an SM;nope"], ["--position", "2048"],
                                  ["--presets", "huge"]])
def test_bad_options_are_one_line_exit_2(tmp_path, args):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "bench/persistent_token.py", *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ": error: " in done.stderr.strip().splitlines()[-1] and not out.exists()


def test_layer_table_names_every_weight_the_probe_makes():
    """Each weight field of TokenLayer is a matrix or gain bench/pdl_variants.weights makes (NumPy stands
    in for CuPy: the same calls)."""
    from bench.pdl_variants import weights
    from runner.presets import get_preset

    _, layers, _ = weights(np, get_preset("tiny"))
    for f in pt.LAYER_FIELDS[:9]:
        assert pt.WEIGHT_KEYS.get(f, f) in layers[0]
    assert set(pt.LAYER_FIELDS[9:]) == {"cache_k", "cache_v"}


def synthetic_stamps(n_layers: int, blocks: int = 4, launches: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of launches where phase i's work takes 10 * (i + 1) µs on the slowest block (block 0) and
    half that on the others, and every barrier releases 2 µs after the last arrival (the first block
    leaves then, the rest 1 µs later); with the phases' expected µs."""
    n = pt.phases(n_layers)
    st = np.zeros((launches, n, blocks, 2), np.uint64)
    expected = np.zeros(n)
    for k in range(launches):
        t = 1_000_000 * (k + 1)  # ns
        st[k, n - 1, :, 1] = t + np.arange(blocks)  # starts: the first block at t
        release = t
        for i in range(n):
            work = 10_000 * (i + 1)
            arrive = release + np.array([work] + [work // 2] * (blocks - 1))
            if i < n - 1:
                st[k, i, :, 0] = arrive
                st[k, i, :, 1] = arrive.max() + 2_000 + np.arange(blocks) * 1_000
                expected[i] = (arrive.max() + 2_000 - release) / 1e3
                release = arrive.max() + 2_000
            else:  # the last phase: its blocks' ends
                st[k, n - 1, :, 0] = arrive
                expected[i] = (arrive.max() - release) / 1e3
    return st, expected


def test_phase_table_splits_each_phase_into_work_and_barrier():
    st, expected = synthetic_stamps(n_layers=2)
    rows = {r["phase"]: r for r in pt.phase_table(st, 2)}
    kinds = pt.phase_kinds(2)
    assert list(rows) == list(dict.fromkeys(kinds)) and rows["attention"]["count"] == 2
    assert sum(r["us"] for r in rows.values()) == pytest.approx(expected.sum())
    qkv = [i for i, k in enumerate(kinds) if k == "RMSNorm + QKV"]
    assert rows["RMSNorm + QKV"]["us"] == pytest.approx(sum(expected[i] for i in qkv))
    assert rows["RMSNorm + QKV"]["barrier_us"] == pytest.approx(2 * 2.0)  # 2 µs at each of its 2 barriers
    assert rows["RMSNorm + QKV"]["work_us"] == pytest.approx(sum(10.0 * (i + 1) for i in qkv))
    assert rows["RMSNorm + QKV"]["spread_us"] == pytest.approx(sum(5.0 * (i + 1) for i in qkv))
    assert rows["argmax merge"]["barrier_us"] == 0  # no barrier after the last phase
    assert pt.timer_step_ns(st) == 1


def test_phase_table_renders_with_bytes_and_bandwidth():
    from runner.presets import get_preset

    st, _ = synthetic_stamps(n_layers=2)
    p = get_preset("tiny")
    mb = pt.phase_mb(p, p.kv_bytes_per_token(97))
    assert set(mb) <= set(pt.phase_kinds(2)) and mb["attention"] == p.kv_bytes_per_token(97) / 1e6
    phases = [{**r, "mb": mb.get(r["phase"])} for r in pt.phase_table(st, 2)]
    row = {"grid": 4, "shared_mem": 0, "same_pick": True, "finite": True, "max_logit_diff": 0.0,
           "barrier_gave_up": False, "timed": True, "us": 800.0, "min_us": 799.0, "max_us": 801.0, "gbs": 3093.0,
           "phases": phases, "timer_step_ns": 32}
    report = {"git": {"commit": "abc"}, "device": {"name": "GPU"}, "copy_bw_gbs": 4200.0, "replays": 20,
              "rounds": 9, "stamped_launches": 3,
              "presets": {"tiny": {"weights_mb": 1.0, "kv_mb": 0.1, "position": 96, "phases": pt.phases(2),
                                   "per_kv": 16, "variants": {"persistent, stamps": row,
                                                              "one launch a kernel": {**row, "phases": None}}}}}
    text = render.render("persistent_token.md.j2", r=report)
    assert text.count("Where the time of") == 1 and "smallest step seen: 32 ns" in text
    qkv = next(r for r in phases if r["phase"] == "RMSNorm + QKV")
    assert f"| RMSNorm + QKV | 2 | {qkv['us']:.1f} |" in text
    assert f"| {qkv['mb']:.1f} | {qkv['mb'] / qkv['us'] * 1e3:.0f} |" in text
    assert f"| all | {pt.phases(2)} | {sum(r['us'] for r in phases):.1f} | 100% |" in text

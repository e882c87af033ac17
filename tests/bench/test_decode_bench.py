"""bench/decode.py's latency-by-position rule and its table, on made-up samples (no GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.decode import POSITIONS, cupy_stream_of, flatness
from perfreview.report import render

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def samples(growth: dict[int, float], n: int = 15, noise: float = 0.001, seed: int = 0) -> dict[int, list[float]]:
    """n rounds of latencies at each position: 1 ms times (1 + growth[pos]), a shared round effect and
    a small independent noise."""
    rng = np.random.default_rng(seed)
    rounds = 1 + rng.normal(0, 0.01, n)  # a round effect (clocks, neighbours): pairing removes it
    return {p: list(1.0 * (1 + growth[p]) * rounds * (1 + rng.normal(0, noise, n))) for p in growth}


def test_latency_that_grows_only_by_the_kv_bytes_is_flat():
    kv_per_pos, bw_gbs = 32768.0, 3000.0  # 1b: 32 KB of cache a position, 3 TB/s
    kv = {p: kv_per_pos * (p - 32) / (bw_gbs * 1e9) / 1e-3 for p in POSITIONS}  # share of a 1 ms token
    out = flatness(samples(kv), kv_per_pos, bw_gbs)
    assert out[32].get("verdict") is None and out[32]["samples"] == 15
    for p in POSITIONS[1:]:
        assert out[p]["verdict"] == "flat", out[p]
        assert abs(out[p]["kv_share"] / kv[p] - 1) < 0.01  # of the measured first-position median
        lo, hi = out[p]["vs_first"]["ci95"]
        assert lo <= 1 + kv[p] + 0.003 and hi >= 1 + kv[p] - 0.003


def test_latency_that_grows_past_the_kv_bytes_is_called_so():
    out = flatness(samples({32: 0.0, 96: 0.0, 160: 0.004, 512: 0.05}), 32768.0, 3000.0)
    assert out[96]["verdict"] == "flat"
    assert out[512]["verdict"] == "grows"
    assert out[512]["vs_first"]["ratio"] > 1.04


def test_noisy_latency_is_undecided_not_flat():
    out = flatness(samples({32: 0.0, 96: 0.006}, n=6, noise=0.02, seed=3), 32768.0, 3000.0)
    assert out[96]["verdict"] == "undecided"


def test_decode_table_shows_medians_intervals_and_verdicts():
    flat = {"optimized": flatness(samples({32: 0.0, 96: 0.0, 160: 0.001, 512: 0.05}), 32768.0, 3000.0)}
    flat = json.loads(json.dumps(flat))  # as decode.json holds it: positions as strings
    report = json.loads((REPORTS / "bench" / "decode.json").read_text())
    pr = next(iter(report["presets"].values()))
    pr.update(latency_by_position=flat, latency_rounds=15)
    text = render.render("decode.md.j2", r=report, positions=POSITIONS)
    rows = [line for line in text.splitlines() if line.startswith("| optimized |") and line.count("[") == 4]
    assert len(rows) == 1 and rows[0].count(", ") == 4
    growth = next(line for line in text.splitlines() if line.startswith("| optimized: growth |"))
    assert growth.count("flat") == 2 and growth.count("grows") == 1


def test_decode_table_still_reads_the_single_sample_files():
    report = json.loads((REPORTS / "bench" / "decode.json").read_text())
    text = render.render("decode.md.j2", r=report, positions=POSITIONS)
    committed = (REPORTS / "bench" / "decode.md").read_text()
    def rows(md: str) -> list[list[str]]:  # the fraction of the copy now has a decimal (84.57% read as 85%)
        cells = [x.split("|") for x in md.splitlines() if x.startswith("| optimized |")]
        return [c[:4] + [f"{float(c[4].strip(' %')):.0f}%" if c[4].strip().endswith("%") else c[4]] + c[5:]
                for c in cells]
    assert rows(text) == rows(committed) and rows(text)


def test_kernel_table_puts_each_kernel_beside_its_floor():
    """with_floors: the bytes a kernel must read per token and their time at the copy bandwidth; the
    table shows what is over it, and rows without a floor (older files, unknown kernels) show '-'."""
    from bench.decode import with_floors
    from runner.presets import get_preset

    p = get_preset("1b")
    rows = [{"kernel": "gemv", "count_per_token": 1, "gpu_us_per_token": 130.0, "share": 0.5,
             "duration_us_per_token": 131.0},
            {"kernel": "spin<int>|x", "count_per_token": 1, "gpu_us_per_token": 2.0, "share": 0.01},
            {"kernel": "o_proj: gemv_residual", "count_per_token": 16, "gpu_us_per_token": 9.0, "share": 0.01},
            {"kernel": "o_proj: gemv_residual_short", "count_per_token": 16, "gpu_us_per_token": 9.0, "share": 0.01}]
    out = with_floors(rows, p, 48, 4000.0)
    assert out[2]["mb_per_token"] == 2 * p.n_layers * p.hidden ** 2 / 1e6  # by function: o_proj's Wo alone
    assert out[3]["mb_per_token"] == out[2]["mb_per_token"]  # o_proj's kernel with oproj_short_prefetch
    lm_head = 2 * p.vocab * p.hidden
    assert out[0]["mb_per_token"] == lm_head / 1e6 and out[0]["floor_us"] == lm_head / 4e12 * 1e6
    assert "floor_us" not in out[1] and "floor_us" not in rows[0]  # the input is left as it was
    report = json.loads((REPORTS / "bench" / "decode.json").read_text())
    pr = next(iter(report["presets"].values()))
    pr["where_time_goes_optimized"] = out
    text = render.render("decode.md.j2", r=report, positions=POSITIONS)
    gemv = next(line for line in text.splitlines() if line.startswith("| gemv |"))
    assert gemv.endswith(f"| {lm_head / 1e6:.1f} | {lm_head / 4e6:.1f} | {130.0 - lm_head / 4e6:.1f} |")
    assert any(line.endswith("| - | - | - |") and "spin\\<int\\>\\|x" in line for line in text.splitlines())


def test_cpu_dry_run_writes_the_issue_contract(tmp_path):
    """``bench/decode.py --device cpu`` is the tiny preset (the 1b in NumPy took over 24 GB) and writes
    decode.json with what the issue names: device, copy_bw_gbs, per preset bytes_per_token and, per
    config, tokens_per_s and copy_bw_fraction; every config of ours gives the baseline's tokens."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "decode.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--rounds", "tiny=2", "--tokens", "4",
                           "--latency-rounds", "2", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    assert {"device", "copy_bw_gbs", "presets"} <= set(report) and list(report["presets"]) == ["tiny"]
    tiny = report["presets"]["tiny"]
    assert tiny["bytes_per_token"] > tiny["weight_bytes_per_token"] > 0
    assert {"baseline", "optimized", "optimized+attn_share_kv"} <= set(tiny["configs"])
    for row in tiny["configs"].values():
        assert row["tokens_per_s"] > 0 and "copy_bw_fraction" in row
    assert set(tiny["token_agreement_with_baseline"].values()) == {1.0}
    assert "| optimized+attn_share_kv |" in (tmp_path / "decode.md").read_text()


def test_torch_stream_reaches_cupy_through_the_stream_protocol_where_cupy_has_it():
    class Stream:  # CuPy 14: Stream.from_external takes any object with __cuda_stream__
        @staticmethod
        def from_external(obj):
            return ("from_external", obj.__cuda_stream__())

    class Cuda:
        pass

    class Cp:
        cuda = Cuda()

    Cp.cuda.Stream = Stream
    Cp.cuda.ExternalStream = lambda ptr: ("ExternalStream", ptr)
    assert cupy_stream_of(Cp, 0x1234) == ("from_external", (0, 0x1234))
    del Stream.from_external  # an older CuPy: the one it has
    assert cupy_stream_of(Cp, 0x1234) == ("ExternalStream", 0x1234)


def test_decode_refuses_unknown_config_rows(tmp_path):
    """--configs names rows of the table; an unknown one is refused before anything runs or is written."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "bench" / "decode.py"), "--device", "cpu", "--configs",
                           "optimized,bogus", "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown bogus" in done.stderr
    assert not (tmp_path / "d").exists()


def test_growth_by_kernel_puts_the_largest_difference_first_beside_its_bytes():
    """growth_by_kernel: per kernel the stream time at the short and the long contexts, the difference
    (a kernel seen at one end only counts 0 at the other) and what its extra bytes explain; the table
    lists them, the largest first, with a total, and escapes the kernels' names."""
    from bench.decode import growth_by_kernel

    short = [{"kernel": "attn_split", "gpu_us_per_token": 70.0, "floor_us": 0.5},
             {"kernel": "gemv", "gpu_us_per_token": 160.0, "floor_us": 174.0},
             {"kernel": "spin<int>|x", "gpu_us_per_token": 2.0}]
    long = [{"kernel": "gemv", "gpu_us_per_token": 161.0, "floor_us": 174.0},
            {"kernel": "attn_split", "gpu_us_per_token": 100.0, "floor_us": 5.5},
            {"kernel": "attn_combine", "gpu_us_per_token": 4.0}]
    rows = growth_by_kernel(short, long)
    assert [r["kernel"] for r in rows] == ["attn_split", "attn_combine", "spin<int>|x", "gemv"]
    assert rows[0]["delta_us"] == 30.0 and rows[0]["floor_delta_us"] == 5.0
    assert rows[1]["short_us"] == 0.0 and "floor_delta_us" not in rows[1]
    assert rows[2]["long_us"] == 0.0 and rows[2]["delta_us"] == -2.0
    report = json.loads((REPORTS / "bench" / "decode.json").read_text())
    pr = next(iter(report["presets"].values()))
    pr["growth_by_kernel"] = {"short_positions": [32, 63], "long_positions": [512, 543], "rows": rows}
    lines = render.render("decode.md.j2", r=report, positions=POSITIONS).splitlines()
    assert "| attn\\_split | 70.0 | 100.0 | +30.0 | +5.0 |" in lines
    assert "| spin\\<int\\>\\|x | 2.0 | 0.0 | -2.0 | - |" in lines
    assert "| all kernels | 232.0 | 265.0 | +33.0 | |" in lines
    assert any("at 512-543" in x for x in lines)


def test_traced_only_dry_run_writes_the_kernel_tables_alone(tmp_path):
    """``--traced-only``: no tokens/s table, no latency rounds; each preset's copy bandwidth and the CUPTI
    tables (empty on the CPU, where CUPTI has nothing to trace), and a header that says so."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "decode.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--traced-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    assert report["traced_only"] is True and set(report["presets"]["tiny"]) == {"copy_bw_gbs",
                                                                                "where_time_goes_optimized"}
    text = (tmp_path / "decode.md").read_text()
    assert "--traced-only" in text and "t/s median" not in text and "tg128" not in text


def test_traced_tables_are_wired_from_both_ends(tmp_path, monkeypatch):
    """main's traced part as on a GPU, with CUPTI's rows made up: the kernel table from positions 32-63,
    the growth table from the same rows against those after a 512-token prompt, floors at each context."""
    import sys
    from types import SimpleNamespace

    import bench.decode as dec
    from runner.presets import get_preset

    calls = []

    def rows(session, tokens, prompt_tokens=32):
        calls.append((tokens, prompt_tokens))
        attn = 70.0 if prompt_tokens == 32 else 110.0
        return [{"kernel": "rope_kv_attention: attn_split", "count_per_token": 16, "gpu_us_per_token": attn,
                 "share": 0.1}, {"kernel": "lm_head: gemv", "count_per_token": 1, "gpu_us_per_token": 160.0,
                                 "share": 0.2}]

    class FakeSession:
        def __init__(self, name, device, seed=0):
            self.preset = get_preset(name)
            self.device = SimpleNamespace(is_gpu=True, cp=None, info=lambda: {"name": "fake GPU"})

    monkeypatch.setattr(dec, "Session", FakeSession)
    monkeypatch.setattr(dec, "where_time_goes", rows)
    monkeypatch.setattr(dec, "copy_bandwidth_gbs", lambda cp: 3000.0)
    monkeypatch.setattr(sys, "argv", ["decode.py", "--traced-only", "--presets", "1b", "--out", str(tmp_path)])
    assert dec.main() == 0
    assert calls == [(dec.GROWTH_TOKENS, 32), (dec.GROWTH_TOKENS, dec.POSITIONS[-1])]
    g = json.loads((tmp_path / "decode.json").read_text())["presets"]["1b"]["growth_by_kernel"]
    assert g["short_positions"] == [32, 63] and g["long_positions"] == [512, 543]
    top = g["rows"][0]
    assert top["kernel"] == "rope_kv_attention: attn_split" and top["delta_us"] == 40.0
    p = get_preset("1b")
    assert abs(top["floor_delta_us"] - p.kv_bytes_per_token(1) * (528 - 48) / 3e6) < 1e-6  # the extra KV reads
    assert "| rope\\_kv\\_attention: attn\\_split | 70.0 | 110.0 | +40.0 |" in (tmp_path / "decode.md").read_text()


def test_the_table_says_the_copy_was_read_after_every_round_where_it_was():
    """A decode.json of the H100 (14b1eeb, one copy at the start) renders as it did; with the copy read after each
    round, the header gives their median, how many, and the one at the start."""
    from bench.decode import POSITIONS
    from perfreview.report import render

    path = Path(__file__).resolve().parents[2] / "reports" / "bench" / "decode_h100_14b1eeb.json"
    report = json.loads(path.read_text())
    before = render.render("decode.md.j2", r=report, positions=POSITIONS)
    assert "device copy 3009 GB/s\n\n| config |" in before and "at the start" not in before
    report["presets"]["1b"].update(copy_bw_gbs=2950.0, copy_bw_gbs_at_start=3009.4, copy_bw_gbs_rounds=[2950.0] * 7)
    after = render.render("decode.md.j2", r=report, positions=POSITIONS)
    assert "device copy 2950 GB/s (median of 7, one after each round; 3009 at the start)" in after
    assert "The card after each round" not in after  # no NVML reads, no line
    report["presets"]["1b"]["card_ranges"] = ["SM 1980 MHz", "HBM 80-86 °C"]
    shown = render.render("decode.md.j2", r=report, positions=POSITIONS)
    assert "at the start)\n\nThe card after each round (NVML): SM 1980 MHz; HBM 80-86 °C\n\n| config |" in shown


def test_the_cards_state_over_the_rounds_is_given_as_ranges():
    from bench.decode import card_ranges

    rounds = [{"sm_clock_mhz": 1980, "temperature_c": 61, "memory_temperature_c": 80, "power_w": 501.2,
               "clock_event_reasons": 0},
              {"sm_clock_mhz": 1980, "temperature_c": 66, "memory_temperature_c": 86.4, "power_w": 517.8,
               "clock_event_reasons": 4}]
    assert card_ranges(rounds) == ["SM 1980 MHz", "GPU 61-66 °C", "HBM 80-86 °C", "board 501-518 W",
                                   "clock event reasons 0x0, 0x4"]
    assert card_ranges([]) == [] and card_ranges([{"sm_clock_mhz": None}]) == []


def test_isolated_dry_run_measures_each_row_in_a_worker_of_its_own(tmp_path):
    """``--isolate``: one worker process a row (the table says so, and gives each row its process's copy); the
    contract of decode.json holds and the rows still agree with baseline's tokens; no worker's file is left."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "decode.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--rounds", "tiny=2", "--tokens", "4",
                           "--latency-rounds", "2", "--configs", "optimized+own_reset", "--isolate",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    tiny = report["presets"]["tiny"]
    assert report["isolated"] and tiny["isolated"]
    assert list(tiny["configs"]) == ["baseline", "optimized", "optimized+own_reset"]
    assert list(tiny["copy_bw_gbs_by_process"]) == ["baseline", "optimized", "optimized+own_reset"]
    assert all("copy_bw_gbs" in c and c["tokens_per_s"] > 0 for c in tiny["configs"].values())
    assert set(tiny["token_agreement_with_baseline"].values()) == {1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decode.json", "decode.md"]
    assert "worker process of its own" in (tmp_path / "decode.md").read_text()


def _part(rows: dict[str, float], bw: float, gen: dict[str, list[int]]) -> dict:
    return {"bytes_per_token": 1e9, "copy_bw_gbs": bw, "copy_bw_gbs_rounds": [bw, bw], "card_rounds": [],
            "configs": {k: {"tokens_per_s": v, "ci95": [v, v], "copy_bw_fraction": v / bw} for k, v in rows.items()},
            "latency_ms_by_position": {}, "latency_by_position": {}, "latency_samples_ms": {}, "generated": gen}


def test_merged_rows_keep_their_own_process_copy_and_pytorch_comes_last():
    from bench.decode import merge_isolated

    parts = {"baseline": _part({"baseline": 100.0, "torch_eager": 50.0, "torch_graph": 80.0}, 3000.0,
                               {"baseline": [1, 2, 3], "torch_eager": [1, 2, 3], "torch_graph": [1, 2, 4]}),
             "optimized": _part({"optimized": 1000.0}, 2900.0, {"optimized": [1, 2, 3]}),
             "optimized+own_reset": _part({"optimized+own_reset": 990.0}, 2950.0, {"optimized+own_reset": [1, 9, 9]})}
    out = merge_isolated(parts)
    assert list(out["configs"]) == ["baseline", "optimized", "optimized+own_reset", "torch_eager", "torch_graph"]
    assert out["configs"]["optimized"]["copy_bw_gbs"] == 2900.0
    assert out["configs"]["optimized"]["copy_bw_fraction"] == 1000.0 / 2900.0  # its own process's copy
    assert out["configs"]["torch_graph"]["copy_bw_gbs"] == 3000.0
    assert out["copy_bw_gbs"] == 2950.0 and len(out["copy_bw_gbs_rounds"]) == 6
    agree = out["token_agreement_with_baseline"]
    assert agree["optimized"] == 1.0 and agree["torch_graph"] == 2 / 3 and agree["optimized+own_reset"] == 1 / 3


def test_the_workers_command_line_carries_the_presets_rounds_and_the_run_settings(tmp_path):
    import argparse

    from bench.decode import worker_argv

    args = argparse.Namespace(tokens=128, fresh_every=1, latency_rounds=15, device="cuda", rounds="1b=7,8b=5")
    argv = worker_argv(args, "8b", "optimized", tmp_path / "w")
    assert argv[argv.index("--worker") + 1] == "optimized" and argv[argv.index("--presets") + 1] == "8b"
    assert argv[argv.index("--rounds") + 1] == "8b=5" and argv[argv.index("--tokens") + 1] == "128"
    assert argv[argv.index("--out") + 1] == str(tmp_path / "w") and "--isolate" not in argv


def test_rows_measured_apart_render_as_one_table_with_their_latency():
    """Parts as the workers write them (JSON: positions as strings), cut from a committed H100 table, merge into a
    table that says how it was measured and keeps each row's latency and interval."""
    import copy

    from bench.decode import POSITIONS, merge_isolated

    report = json.loads((REPORTS / "bench" / "decode_reset_h100_0aa491b.json").read_text())
    pr = report["presets"]["1b"]

    def part(rows: tuple[str, ...]) -> dict:
        p = copy.deepcopy(pr)
        for field in ("configs", "latency_ms_by_position", "latency_by_position", "latency_samples_ms"):
            p[field] = {k: v for k, v in p[field].items() if k in rows}
        p["generated"] = {k: [1, 2, 3] for k in rows}
        return p
    merged = merge_isolated({"baseline": part(("baseline", "torch_eager", "torch_graph")),
                             "optimized": part(("optimized",)),
                             "optimized+sm_config_reset": part(("optimized+sm_config_reset",))})
    report["presets"] = {"1b": merged}
    text = render.render("decode.md.j2", r=report, positions=POSITIONS)
    assert "worker process of its own" in text and "process copy GB/s" in text
    row = next(x for x in text.splitlines() if x.startswith("| optimized |"))
    assert "1021.9" in row and "84.6%" in row and "| 2990 |" in row
    assert "| optimized: growth |" in text and "| torch_graph: growth |" in text


def test_decode_refuses_malformed_rounds_before_writing_anything(tmp_path):
    import subprocess
    import sys

    from bench.decode import rounds_of

    assert rounds_of("1b=7,8b=5", "8b") == 5 and rounds_of("1b=7", "8b") == 5 and rounds_of("1b=7", "1b") == 7
    script = Path(__file__).resolve().parents[2] / "bench" / "decode.py"
    for bad in ("1b=x", "1b", "=,"):
        done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--rounds", bad,
                               "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "--rounds: PRESET=N pairs" in done.stderr.splitlines()[-1]
        assert not (tmp_path / "out").exists()

"""bench/drift.py's binning and table, on made-up rounds (no GPU)."""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bench.drift import Actions, by_second, known, main, take
from perfreview.report import render


def test_rounds_are_binned_by_second_with_the_fraction_of_that_seconds_copy():
    rows = [{"t_s": 0.2, "token_us": 969.0, "copy_gbs": 3000.0, "sm_clock_mhz": 1980, "clock_event_reasons": 0},
            {"t_s": 0.9, "token_us": 971.0, "copy_gbs": 3000.0, "sm_clock_mhz": 1980, "clock_event_reasons": 0},
            {"t_s": 1.5, "token_us": 984.0, "copy_gbs": 2960.0, "sm_clock_mhz": 1980, "clock_event_reasons": 4}]
    sec = by_second(rows, weights_mb=2471.6)
    assert [s["second"] for s in sec] == [0, 1] and [s["rounds"] for s in sec] == [2, 1]
    assert sec[0]["token_us"] == 970.0 and sec[0]["reasons"] == [0] and sec[1]["reasons"] == [4]
    assert abs(sec[0]["fraction"] - 2471.6 / 970.0 / 3000.0 * 1e3) < 1e-12
    report = {"git": {"commit": "abc"}, "device": {"name": "H100"}, "preset": "1b", "replays": 64, "copy_mb": 1024,
              "load_s": 20.0, "idle_s": 5.0, "again_s": 8.0, "weights_mb": 2471.6, "seconds": sec}
    text = render.render("drift.md.j2", r=report)
    assert "| 0 | 2 | 970.0 | 3000 | 84.9% | 1980 | - | - | - | - | 0 |" in text and "| 4 |" in text


def test_power_state_reads_power_reasons_and_the_memorys_temperature_and_skips_what_fails():
    from runner.device import _Nvml

    field = SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=87))
    fake = SimpleNamespace(nvmlDeviceGetPowerUsage=lambda h: 512_345, NVML_FI_DEV_MEMORY_TEMP=82,
                           nvmlDeviceGetCurrentClocksEventReasons=lambda h: 4,
                           nvmlDeviceGetFieldValues=lambda h, ids: [field] if ids == [82] else [])
    nvml = _Nvml.__new__(_Nvml)
    nvml.handle, nvml.nvml = object(), fake
    assert nvml.power_state() == {"power_w": 512.345, "clock_event_reasons": 4, "memory_temperature_c": 87}
    field.nvmlReturn = 3  # not supported on this board: left out, not 0
    assert "memory_temperature_c" not in nvml.power_state()
    nvml.handle = None
    assert nvml.power_state() == {}


def test_rounds_after_actions_name_the_action_of_their_second_and_the_table_gains_its_column():
    rows = [{"t_s": 0.5, "token_us": 970.0, "copy_gbs": 3000.0, "step": "alone"},
            {"t_s": 1.2, "token_us": 970.0, "copy_gbs": 3000.0, "step": "alone"},
            {"t_s": 1.8, "token_us": 990.0, "copy_gbs": 3000.0, "step": "session"}]
    sec = by_second(rows, weights_mb=2471.6)
    assert [s["step"] for s in sec] == ["alone", "alone+session"] and "step" not in sec[0]["reasons"]
    report = {"git": {"commit": "abc"}, "device": {"name": "H100"}, "preset": "1b", "replays": 64, "copy_mb": 1024,
              "load_s": 20.0, "idle_s": 5.0, "again_s": 8.0, "weights_mb": 2471.6, "step_s": 6.0, "seconds": sec,
              "steps": [{"action": "alone", "at_s": 0.0, "took_s": 0.0},
                        {"action": "session", "at_s": 1.3, "took_s": 0.4}]}
    text = render.render("drift.md.j2", r=report)
    assert "after each action in turn (alone at 0.0 s, took 0.0 s; session at 1.3 s, took 0.4 s)" in text
    assert "| second | after | rounds |" in text and "| 1 | alone+session | 2 | 980.0 |" in text
    assert "CUDA_MODULE_LOADING" not in text  # the driver's default: nothing to say
    assert "CUDA_MODULE_LOADING=EAGER" in render.render("drift.md.j2", r={**report, "module_loading": "EAGER"})


def test_only_known_actions_are_taken():
    assert all(known(a) for a in ("alone", "session", "pipeline", "tg16", "tg128x3", "tgb16x24", "pf160", "ev2048",
                                  "gl1024", "gt64", "free", "torch"))
    assert not any(known(a) for a in ("reboot", "tg", "pf160x2", "ev4x2", "tg12y", "tokens", "events"))
    done = []
    fake = Actions.__new__(Actions)
    fake.tokens = lambda n, times=1, bounded=False: done.append(("tg", n, times, bounded))
    fake.prefill = lambda n: done.append(("pf", n))
    fake.events = lambda n: done.append(("ev", n))
    fake.launches = lambda n: done.append(("gl", n))
    fake.fixed_launches = lambda n: done.append(("gt", n))
    for a in ("tg16", "tg128x3", "tgb16x24", "pf160", "ev2048", "gl1024", "gt64"):
        take(fake, a)
    assert done == [("tg", 16, 1, False), ("tg", 128, 3, False), ("tg", 16, 24, True), ("pf", 160), ("ev", 2048),
                    ("gl", 1024), ("gt", 64)]
    old = sys.argv
    sys.argv = ["drift.py", "--steps", "alone,reboot", "--out", "/nonexistent"]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = old
    assert e.value.code == 2


def test_the_token_actions_run_the_pipeline_and_only_bounded_runs_return_the_recorders_events():
    acts = Actions(None, "tiny", device="cpu")
    take(acts, "session")
    take(acts, "pipeline")
    rec, starts = acts.held["rec"], []
    real_start = rec.start_repeat
    rec.start_repeat = lambda: (starts.append(1), real_start())
    for a in ("tg4x2", "pf6"):
        take(acts, a)
    assert starts == []
    take(acts, "tgb3x2")
    assert starts == [1, 1]
    acts.cp = SimpleNamespace(get_default_memory_pool=lambda: SimpleNamespace(free_all_blocks=lambda: None))
    take(acts, "free")
    assert acts.held == {}


def test_graph_launches_set_the_position_back_every_16_so_the_cache_is_never_written_past_48():
    pos, slot, seen, waits = np.zeros(1, np.int32), np.zeros(1, np.int32), [], []

    def launch(stream):  # the graph's advance kernel: position and slot one on
        seen.append(int(pos[0]))
        pos[0] += 1
        slot[0] += 1

    pipe = SimpleNamespace(graph=SimpleNamespace(launch=launch), main="s", d_pos=pos, d_slot=slot,
                           dev=SimpleNamespace(use=lambda s: contextlib.nullcontext(),
                                               synchronize=lambda s: waits.append(len(seen))))
    acts = Actions(None, "1b")
    acts.held["pipe"] = pipe
    take(acts, "gl40")
    assert len(seen) == 40 and min(seen) == 32 and max(seen) == 47
    assert seen[:17] == list(range(32, 48)) + [32]
    assert waits == [16, 32, 40]


def test_fixed_launches_capture_the_token_once_and_launch_it_at_96(monkeypatch):
    import bench.token_marks

    made, launched, waits = [], [], []
    graph = SimpleNamespace(launch=lambda s: launched.append(int(pipe.d_pos[0])))
    monkeypatch.setattr(bench.token_marks, "fixed_token_graph", lambda *a: made.append(a) or graph)
    pipe = SimpleNamespace(main="s", own="own", layers=[], w={}, d_pos=np.zeros(1, np.int32),
                           d_slot=np.zeros(1, np.int32),
                           dev=SimpleNamespace(use=lambda s: contextlib.nullcontext(),
                                               synchronize=lambda s: waits.append(len(launched))))
    acts = Actions(None, "1b")
    acts.held["pipe"] = pipe
    take(acts, "gt20")
    take(acts, "gt4")
    assert len(made) == 1 and launched == [96] * 24 and int(pipe.d_slot[0]) == 96
    assert waits == [16, 20, 24]


def test_a_second_bench_token_is_built_once_and_launched_in_sixteens(monkeypatch):
    import bench.drift

    built, launched, waits = [], [], []
    stream = SimpleNamespace(synchronize=lambda: waits.append(len(launched)))
    graph = SimpleNamespace(launch=lambda s: launched.append(s))
    monkeypatch.setattr(bench.drift, "_bench", lambda cp, preset: built.append(preset) or (graph, stream, []))
    acts = Actions(None, "1b")
    assert known("bt1024") and not known("bt16x2")
    take(acts, "bt20")
    take(acts, "bt12")
    assert built == ["1b"] and launched == [stream] * 32
    assert waits == [16, 20, 32]  # each run counts its own sixteens
    own, own_waits = [], []
    acts.measured = (SimpleNamespace(launch=lambda s: own.append(s)),
                     SimpleNamespace(synchronize=lambda: own_waits.append(len(own))))
    take(acts, "bo17")
    assert len(own) == 17 and own_waits == [16, 17] and built == ["1b"]


def test_decode_task_asks_drift_only_for_actions_it_knows():
    """A typo in scripts/decode_task.sh's --steps lists would cost a device call: every action is known."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "scripts" / "decode_task.sh").read_text()
    lists = re.findall(r"bench/drift\.py --steps (\S+)", text)
    assert len(lists) >= 9
    assert all(known(a) for steps in lists for a in steps.split(","))


def test_a_filled_bench_token_fills_its_position_and_slot_before_each_16(monkeypatch):
    import bench.drift

    launched, waits = [], []
    own = SimpleNamespace(d_pos=np.zeros(1, np.int32), d_slot=np.zeros(1, np.int32))
    stream = type("S", (), {"synchronize": lambda self: waits.append(len(launched)),
                            "__enter__": lambda self: self, "__exit__": lambda self, *a: None})()

    def launch(s):  # a token that moves its position on, so that only the fills bring it back to 96
        launched.append(int(own.d_pos[0]))
        own.d_pos[0] += 1
    graph = SimpleNamespace(launch=launch)
    monkeypatch.setattr(bench.drift, "_bench", lambda cp, preset: (graph, stream, [own]))
    acts = Actions(None, "1b")
    assert known("bf1024") and not known("bf16x2")
    take(acts, "bf20")
    assert launched == list(range(96, 112)) + list(range(96, 100)) and int(own.d_slot[0]) == 96
    assert waits == [16, 20]


def _step_rows():
    """Rounds after three actions: alone at ~961.8 µs, bt1024 the same, gl1024 stepped to ~976.6."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (action, us) in enumerate([("alone", 961.8), ("bt1024", 961.8), ("gl1024", 976.6)]):
        for k in range(12):
            rows.append({"t_s": 4.0 * i + k / 3, "token_us": us + rng.normal(0, 0.1), "copy_gbs": 2990.0,
                         "step": action, "step_index": i})
    return rows


def test_by_action_says_which_action_the_token_stepped_after():
    from bench.drift import by_action

    acts = by_action(_step_rows())
    assert [a["action"] for a in acts] == ["alone", "bt1024", "gl1024"] and [a["rounds"] for a in acts] == [12] * 3
    assert "change_pct" not in acts[0]
    assert acts[1]["ci_low_pct"] < 0 < acts[1]["ci_high_pct"]  # no step after bt1024
    assert 1.4 < acts[2]["ci_low_pct"] < acts[2]["change_pct"] < acts[2]["ci_high_pct"] < 1.7
    assert abs(acts[2]["change_us"] - 14.8) < 0.3


def test_the_same_action_twice_is_two_rows_and_the_table_renders_before_the_seconds():
    from bench.drift import by_action

    rows = _step_rows()
    for r in rows:
        if r["step"] == "bt1024":
            r["step"] = "alone"  # alone, alone, gl1024: two stretches of one name stay apart
    acts = by_action(rows)
    assert [(a["index"], a["action"]) for a in acts] == [(0, "alone"), (1, "alone"), (2, "gl1024")]
    report = {"git": {"commit": "abc"}, "device": {"name": "H100"}, "preset": "1b", "replays": 64, "copy_mb": 1024,
              "load_s": 20.0, "idle_s": 5.0, "again_s": 8.0, "step_s": 4.0, "weights_mb": 2471.6,
              "steps": [{"action": a["action"], "at_s": 4.0 * a["index"], "took_s": 0.1} for a in acts],
              "seconds": by_second(rows, 2471.6), "actions": acts}
    text = render.render("drift.md.j2", r=report)
    assert text.index("By action") < text.index("| second |")
    line = next(t for t in text.splitlines() if t.startswith("| 3 | gl1024 | 12 |"))
    assert "+1.5" in line and line.count("|") == 9
    assert "| 1 | alone | 12 |" in text and "| - | - |" in text


def test_decode_task_prints_the_by_action_table_alone():
    """scripts/decode_task.sh's by_action filter keeps the by-action rows, not the seconds' (output is short)."""
    import re
    import subprocess
    from pathlib import Path

    from bench.drift import by_action

    script = (Path(__file__).resolve().parents[2] / "scripts" / "decode_task.sh").read_text()
    awk = re.search(r"by_action\(\) \{ (awk .*); \}", script)[1]
    rows = _step_rows()
    report = {"git": {"commit": "abc"}, "device": {"name": "H100"}, "preset": "1b", "replays": 64, "copy_mb": 1024,
              "load_s": 20.0, "idle_s": 5.0, "again_s": 8.0, "step_s": 4.0, "weights_mb": 2471.6, "steps": [],
              "seconds": by_second(rows, 2471.6), "actions": by_action(rows)}
    text = render.render("drift.md.j2", r=report)
    out = subprocess.run(["bash", "-c", awk], input=text, capture_output=True, text=True, check=True).stdout
    kept = out.splitlines()
    assert len(kept) == 2 + 3 and kept[0].startswith("| # |") and kept[-1].startswith("| 3 | gl1024")


def test_own_fills_and_the_reconfiguring_kernel_launch_as_written(monkeypatch):
    import bench.drift

    calls, launched, built = [], [], []
    own = SimpleNamespace(d_pos=np.zeros(1, np.int32), d_slot=np.zeros(1, np.int32),
                          configure_sms=lambda: calls.append("configure"))
    stream = type("S", (), {"synchronize": lambda self: calls.append("wait"),
                            "__enter__": lambda self: calls.append("on stream") or self,
                            "__exit__": lambda self, *a: None})()
    graph = SimpleNamespace(launch=lambda s: launched.append(s))

    def kernel(name):
        def launch(grid, block, args, shared_mem=0):
            calls.append((name, grid, block, shared_mem))
            args[0][:] = int(args[1])
        return launch
    kernels = {n: kernel(n) for n in ("fill_plain", "fill_pref")}
    monkeypatch.setattr(bench.drift, "_bench", lambda cp, preset: built.append(preset) or (graph, stream, [own]))
    monkeypatch.setattr(bench.drift, "probe_kernels", lambda cp: kernels)
    acts = Actions(None, "1b", measured=(graph, stream))
    assert all(known(a) for a in ("bn1024", "bk1024", "rc")) and not known("rc16")
    take(acts, "bn20")
    assert [c[0] for c in calls if isinstance(c, tuple)] == ["fill_plain"] * 4 and len(launched) == 20
    assert all(c[1:] == ((1,), (32,), 0) for c in calls if isinstance(c, tuple))
    assert int(own.d_pos[0]) == 96 and int(own.d_slot[0]) == 96
    calls.clear()
    take(acts, "bk16")
    assert [c[0] for c in calls if isinstance(c, tuple)] == ["fill_pref"] * 2
    calls.clear()
    take(acts, "rc")  # the switch's own kernel, on the measured token's stream, then a wait
    assert calls == ["on stream", "configure", "wait"] and built == ["1b"]


def test_the_probe_kernels_compile_to_ptx_for_sm90(tmp_path):
    """PROBE_SOURCE as nvcc sees it on the GPU machine (skipped where nvcc is missing)."""
    import shutil
    import subprocess

    from bench.drift import PROBE_SOURCE

    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc")
    src = tmp_path / "probe.cu"
    src.write_text(PROBE_SOURCE)
    subprocess.run(["nvcc", "--ptx", "-arch=sm_90", str(src), "-o", str(tmp_path / "probe.ptx")], check=True)
    ptx = (tmp_path / "probe.ptx").read_text()
    assert all(f".entry {n}" in ptx for n in ("fill_plain", "fill_pref"))


def test_the_reset_pipeline_is_the_optimized_one_with_sm_config_reset():
    made = []
    acts = Actions(None, "1b")
    acts.held["session"] = SimpleNamespace(pipeline=lambda config, timing: made.append((config, timing)) or ("p", "r"))
    assert known("pipeline_reset")
    take(acts, "pipeline_reset")
    (config, timing), = made
    assert config.switches.get("sm_config_reset") and timing == "tokens" and acts.held["pipe"] == "p"
    take(acts, "pipeline")
    assert not made[1][0].switches.get("sm_config_reset")


def test_the_module_memset_and_copy_fills_launch_as_written(monkeypatch):
    """bw: fill_words of the measured token's own module; bm: memsetAsync; bh: a copy in; bd: a copy out; each on
    the second token's stream before each 16 of its launches."""
    import bench.drift

    calls, launched = [], []
    stream = type("S", (), {"synchronize": lambda self: calls.append("wait"),
                            "__enter__": lambda self: calls.append("on stream") or self,
                            "__exit__": lambda self, *a: None})()

    class Buf:
        def __init__(self, name):
            self.name, self.nbytes, self.shape, self.dtype = name, 4, (1,), np.int32
            self.data = SimpleNamespace(memset_async=lambda v, n: calls.append(("memset", name, v, n)))

        def set(self, host, stream=None):
            calls.append(("h2d", self.name, int(host[0])))

        def get(self, stream=None):
            calls.append(("d2h", self.name))

    second = SimpleNamespace(d_pos=Buf("pos"), d_slot=Buf("slot"))
    measured_own = SimpleNamespace(zero=lambda a: calls.append(("own zero", a.name)))
    graph = SimpleNamespace(launch=lambda s: launched.append(s))
    monkeypatch.setattr(bench.drift, "_bench", lambda cp, preset: (graph, stream, [second]))
    cp = SimpleNamespace(cuda=SimpleNamespace(get_current_stream=lambda: "current"))
    acts = Actions(cp, "1b", measured=(graph, stream), measured_own=measured_own)
    assert all(known(a) for a in ("bw1024", "bm1024", "bh1024", "bd1024", "pipeline_own"))
    expect = {"bw32": [("own zero", "pos"), ("own zero", "slot")],
              "bm32": [("memset", "pos", 0, 4), ("memset", "slot", 0, 4)],
              "bh32": [("h2d", "pos", 96), ("h2d", "slot", 96)], "bd32": [("d2h", "pos"), ("d2h", "slot")]}
    for action, fills in expect.items():
        calls.clear()
        launched.clear()
        take(acts, action)
        assert [c for c in calls if isinstance(c, tuple)] == fills * 2 and len(launched) == 32, action
        assert calls.count("on stream") == 2  # one set of fills a 16, on its stream


def test_the_own_reset_pipeline_is_optimized_emptying_its_cache_by_its_own_kernel():
    made = []
    acts = Actions(None, "1b")
    acts.held["session"] = SimpleNamespace(pipeline=lambda config, timing: made.append(config) or ("p", "r"))
    take(acts, "pipeline_own")
    take(acts, "pipeline")
    assert made[0].switches.get("own_reset") and not made[1].switches.get("own_reset")
    assert {k: v for k, v in made[0].switches.items() if k != "own_reset"} == \
        {k: v for k, v in made[1].switches.items() if k != "own_reset"}


def test_graph_fills_are_captured_once_and_launched_before_each_16(monkeypatch):
    """bg: the measured module's two fills captured as one graph on the second token's stream, launched ahead of
    each 16 of its launches; a second bg reuses the graph."""
    import bench.drift

    calls = []

    class Stream:
        capturing = False

        def begin_capture(self):
            self.capturing = True

        def end_capture(self):
            self.capturing = False
            calls.append("captured")
            return SimpleNamespace(launch=lambda s: calls.append("fills"), upload=lambda s: calls.append("upload"))

        def synchronize(self):
            calls.append("wait")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return None
    stream = Stream()
    second = SimpleNamespace(d_pos="pos", d_slot="slot")
    own = SimpleNamespace(zero=lambda a: calls.append(("zero", a, stream.capturing)))
    graph = SimpleNamespace(launch=lambda s: calls.append("token"))
    monkeypatch.setattr(bench.drift, "_bench", lambda cp, preset: (graph, stream, [second]))
    acts = Actions(None, "1b", measured=(graph, stream), measured_own=own)
    assert known("bg1024")
    take(acts, "bg32")
    assert calls[:4] == [("zero", "pos", True), ("zero", "slot", True), "captured", "upload"]
    assert calls.count("fills") == 2 and calls.count("token") == 32 and calls[4] == "fills"
    calls.clear()
    take(acts, "bg16")
    assert "captured" not in calls and calls.count("fills") == 1


def test_the_foreign_stage_returns_its_six_processes_as_one_tar(tmp_path):
    """scripts/decode_task.sh foreign on a stand-in python3 that writes what drift.py writes: $OUT holds foreign.tar
    alone (a device call returns 8 files at most), with each process's table and JSON, and EAGER reached the
    last process only."""
    import os
    import subprocess
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
                    'mkdir -p "$out" && echo "{\\"loading\\": \\"${CUDA_MODULE_LOADING:-default}\\"}" > '
                    '"$out/drift.json" && echo "| # | after |" > "$out/drift.md"\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "OUT": str(out)}
    subprocess.run(["bash", str(root / "scripts" / "decode_task.sh"), "foreign"], env=env, check=True,
                   capture_output=True, text=True)
    assert [p.name for p in out.iterdir()] == ["foreign.tar"]
    with tarfile.open(out / "foreign.tar") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        loading = {n: tar.extractfile(n).read().decode() for n in names if n.endswith(".json")}
    assert names == sorted(f"f{i}/drift.{ext}" for i in range(1, 7) for ext in ("json", "md"))
    assert [n for n, text in loading.items() if "EAGER" in text] == ["f6/drift.json"]

"""--timing functions on a GPU: event pairs around the functions of one token in N, so the eager
loop keeps its speed; the function table's GPU time comes from those tokens (no GPU needed: a
device that counts its events)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from perfreview.analysis import functions
from perfreview.trace import schema
from runner import config as cfg
from runner.provenance import function_every
from runner.recorder import Recorder
from runner.spec import RunSpec, check_spec


class CountingDevice:
    """Events are numbers; an event 'happens' at 10 ns times its number (recording order)."""

    is_gpu = True
    device_id = 0

    def __init__(self) -> None:
        self.streams = ["s0"]
        self.recorded = 0
        self._ids = itertools.count(1)

    def event(self) -> dict:
        return {"id": next(self._ids), "t": 0}

    def record(self, ev: dict, stream: object) -> None:
        self.recorded += 1
        ev["t"] = 10 * self.recorded

    def spin_until(self, ev: dict) -> None:
        pass

    def elapsed_ns(self, a: dict, b: dict) -> int:
        return b["t"] - a["t"]

    def stream_index(self, stream: object) -> int:
        return 0

    def stream_ids(self) -> dict[int, int]:
        return {}


def run_tokens(every: int, tokens: range) -> tuple[Recorder, list[dict]]:
    dev = CountingDevice()
    rec = Recorder(dev, "functions", nvtx_domain="perfreview-test", function_every=every)
    rec.start_repeat()
    for t in tokens:
        rec.token, rec.phase = t, "decode"
        with rec.span("token", kind=schema.Kind.TOKEN.value):
            rec.mark("token_start", "s0")
            for name in ("qkv", "attention", "ffn"):
                with rec.span(name, "s0"):
                    pass
            rec.mark("token_end", "s0")
    return rec, rec.finish_repeat(0)


def test_event_pairs_only_in_sampled_tokens_host_ranges_in_all():
    rec, rows = run_tokens(4, range(16, 28))  # tokens 16, 20, 24 are sampled
    ranges = [r for r in rows if r["kind"] == "gpu_range" and r["name"] not in ("token", "input_copy")]
    assert sorted({r["token"] for r in ranges}) == [16, 20, 24]
    assert len(ranges) == 3 * 3
    host = [r for r in rows if r["source"] == "host" and r["name"] == "qkv"]
    assert len(host) == 12  # every token keeps its host ranges
    assert sum(1 for r in rows if r["name"] == "token" and r["kind"] == "gpu_range") == 12  # and its token events


def test_every_token_when_asked():
    _, rows = run_tokens(1, range(0, 5))
    assert {r["token"] for r in rows if r["kind"] == "gpu_range" and r["name"] == "ffn"} == set(range(5))


def test_function_table_takes_gpu_time_from_the_sampled_tokens():
    _, rows = run_tokens(4, range(16, 28))
    events = schema.from_records(rows, "r")
    per_tok = functions.per_token(events)
    qkv = per_tok[per_tok["name"] == "qkv"]
    assert len(qkv) == 12 and qkv["gpu_ns"].notna().sum() == 3
    out = functions.summary(per_tok).set_index("name")
    assert out.loc["qkv", "token_share"] == 1.0  # the host range is in every token
    assert out.loc["qkv", "gpu_median_ns"] == 10  # two consecutive records, 10 ns apart
    rep = functions.per_repeat(per_tok).set_index("name")
    assert rep.loc["qkv", "gpu_ns"] == 10 and rep.loc["qkv", "calls"] == 1


def test_run_metadata_says_which_tokens_carry_events():
    gpu = SimpleNamespace(device=SimpleNamespace(is_gpu=True))
    cpu = SimpleNamespace(device=SimpleNamespace(is_gpu=False))
    eager = RunSpec(preset="tiny", timing="functions", config=cfg.resolve("baseline"), function_every=16)
    assert function_every(gpu, eager) == 16
    assert function_every(cpu, eager) == 0  # no GPU events on the NumPy backend
    graph = RunSpec(preset="tiny", timing="functions", config=cfg.resolve("optimized"))
    assert function_every(gpu, graph) == 0  # a replayed graph has no events inside the token
    assert function_every(gpu, RunSpec(preset="tiny", timing="tokens")) == 0


def test_function_every_is_checked_and_passed_to_child_runs():
    with pytest.raises(ValueError, match="function-every"):
        check_spec(RunSpec(preset="tiny", function_every=0))
    args = RunSpec(preset="tiny", timing="functions", function_every=8).cli_args("config=baseline", "out")
    assert args[args.index("--function-every") + 1] == "8"
    assert "--function-every" not in RunSpec(preset="tiny").cli_args("config=baseline", "out")
    with pytest.raises(ValueError, match="function_every"):
        Recorder(CountingDevice(), "functions", function_every=0)


def test_a_cli_run_records_it(tmp_path):
    from perfreview.cli import main
    from perfreview.trace.runs import read_meta

    assert main(["run", "--device", "cpu", "--preset", "tiny", "--tokens", "4", "--repeats", "1",
                 "--timing", "functions", "--function-every", "2", "--out", str(tmp_path), "--quiet"]) == 0
    meta = read_meta(next(p for p in tmp_path.iterdir() if (p / "run.json").exists()))
    assert meta.timing == "functions" and meta.function_every == 0  # CPU backend: no GPU events at all
    assert main(["run", "--device", "cpu", "--preset", "tiny", "--tokens", "4", "--repeats", "1",
                 "--function-every", "0", "--out", str(tmp_path), "--quiet"]) == 2

"""GPU task (issue 12), one device call: whether the token and the device copy slow down together under load.

bench/footprint.py (footprint_h100_7437051) saw the 1b token at 96 take 969-970 µs for the first seconds of a
process and 984 from then on, every row at once (the pipeline's tg128 976.6 -> 992.2), whatever the process then
held or freed; a new process started fast again. The fraction of the copy bandwidth that issue 12 asks for is read
against one copy measured at a process's start. Here, in one process: rounds of the bench's token (REPLAYS graph
launches back to back), a device copy (ROUND_COPY_BYTES, the median of ROUND_COPY_REPS, as bench/decode.py reads it
after each round) and NVML's SM and memory clocks, GPU and memory temperatures, power and clock event reasons, for
LOAD_S seconds; then IDLE_S seconds of nothing; then AGAIN_S seconds of rounds again. Per second of the run: median
token µs, copy GB/s, their ratio as a fraction of the copy bandwidth, and the NVML reads. One guess it can test, not a
finding: the HBM's temperature (DRAM refreshes more often when hot, which costs bandwidth). Writes drift.json/.md
under --out.

--steps a,b,...: the same rounds, STEP_S seconds after each of these actions in turn (ACTIONS and COUNTED: a runner
Session, its optimized pipeline, tg<N>x<K>: N tokens after a 32-token prompt K times, pf<N>: an N-token prompt
alone, ev<N>: N CUDA events, gl<N>: N launches of the pipeline's graph, gt<N>: of its token at 96 without the
advance, bt<N>: of a second bench token, bf<N>: the same with CuPy's position fills, bo<N>: of the measured one 16
at a time, bn<N>/bk<N>: bf<N> with fills of our own without/with our carveout preference, bw<N>: by the measured
token's own module (own_reset's kernel), bg<N>: the same launched as a graph, bm<N>: by memsetAsync, bh<N>: by a
copy from the host, bd<N>: with a copy to the host, rc: sm_config_reset's kernel (every SM given blocks that prefer
it), pipeline_own: the optimized pipeline emptying its KV cache by its own kernel (own_reset), freeing them, a
cuBLAS matmul, torch), to find which of what bench/decode.py and bench/footprint.py do first moves the token from
~970 to ~990 µs for the rest of the process (drift_h100_4be043e: the bench's token alone stayed at 974 µs for 48 s
of load; drift_cause_*_h100_3ea05f0: 1024 launches of the pipeline's token step it, 2048 CUDA events alive do not).
With --steps the report opens with a table by action: the token's rounds after each one and their change from
the action before, with an interval (by_action).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decode import ROUND_COPY_BYTES, ROUND_COPY_REPS  # noqa: E402
from bench.footprint import _bench  # noqa: E402
from bench.outputs import save  # noqa: E402
from bench.pdl_variants import graph_replay_us  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner.device import CudaDevice, capture_graph  # noqa: E402
from runner.presets import get_preset  # noqa: E402
from scripts.gpu_runner import copy_bandwidth_gbs  # noqa: E402

REPLAYS = 64
# The fills of the carveout probes (bn, bk): two identical kernels, since a carveout preference belongs to a kernel
# function; fill_pref is given the one our kernels prefer.
PROBE_SOURCE = r"""
extern "C" __global__ void fill_plain(int* p, int v, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}
extern "C" __global__ void fill_pref(int* p, int v, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}
"""


def probe_kernels(cp: Any) -> dict[str, Any]:
    """PROBE_SOURCE's kernels; fill_pref prefers the carveout optimized's kernels prefer."""
    from runner.config import KERNEL_DEFINES
    from runner.own_kernels import define_value
    mod = cp.RawModule(code=PROBE_SOURCE)
    k = {n: mod.get_function(n) for n in ("fill_plain", "fill_pref")}
    k["fill_pref"].preferred_shared_memory_carveout = define_value(KERNEL_DEFINES["smem_carveout"], "SMEM_CARVEOUT",
                                                                   -1)
    return k


def rounds_for(seconds: float, t_start: float, one_round: Any) -> list[dict]:
    """``one_round()`` until ``seconds`` pass; each result stamped with its time since ``t_start``."""
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        row = one_round()
        row["t_s"] = time.perf_counter() - t_start
        out.append(row)
    return out


def by_action(rows: list[dict], alpha: float = 0.01) -> list[dict]:
    """The rounds after each action (``step_index`` in order): the token's median µs, its range, and its change
    from the rounds after the action before, as a ratio with a (1 - ``alpha``) interval (Welch t on the logs, the
    statistics module's test for sides that were not interleaved). Descriptive: the rounds of one action follow
    each other in time, so the interval says how far the two stretches differ, not why."""
    from perfreview.compare.stats import unpaired
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(int(r["step_index"]), []).append(r)
    out, before = [], None
    for i, rs in sorted(groups.items()):
        us = np.array([r["token_us"] for r in rs], dtype=float)
        row = {"index": i, "action": rs[0]["step"], "rounds": len(us), "token_us": float(np.median(us)),
               "min_us": float(us.min()), "max_us": float(us.max())}
        if before is not None:
            est = unpaired(before, us, alpha)
            row.update(change_pct=100 * (est.ratio - 1), ci_low_pct=100 * (est.ci_low - 1),
                       ci_high_pct=100 * (est.ci_high - 1), change_us=row["token_us"] - float(np.median(before)))
        out.append(row)
        before = us
    return out


def by_second(rows: list[dict], weights_mb: float) -> list[dict]:
    """Rows binned by whole seconds of the run: medians of each read, and the token's bytes over its time as a
    fraction of the copy bandwidth of the same second."""
    bins: dict[int, list[dict]] = {}
    for r in rows:
        bins.setdefault(int(r["t_s"]), []).append(r)
    out = []
    for sec, rs in sorted(bins.items()):
        med = {k: float(np.median([r[k] for r in rs if r.get(k) is not None]))
               for k in rs[0] if k not in ("t_s", "step", "step_index") and any(r.get(k) is not None for r in rs)}
        med["step"] = "+".join(dict.fromkeys(r["step"] for r in rs if "step" in r))
        med["reasons"] = sorted({int(r["clock_event_reasons"]) for r in rs if r.get("clock_event_reasons") is not None})
        med.pop("clock_event_reasons", None)
        med["second"], med["rounds"] = sec, len(rs)
        med["fraction"] = weights_mb / med["token_us"] / med["copy_gbs"] * 1e3
        out.append(med)
    return out


def _sixteens(graph: Any, stream: Any, n: int, wait: Any, before: Any = None) -> None:
    """``graph`` launched ``n`` times on ``stream``, 16 back to back (``before()`` ahead of each 16) then
    ``wait()``, and a wait at the end."""
    for i in range(n):
        if before is not None and i % 16 == 0:
            before()
        graph.launch(stream)
        if i % 16 == 15:
            wait()
    wait()


def _in_sixteens(pipe: Any, graph: Any, n: int, pos: int) -> None:
    """``_sixteens`` on the pipeline's stream, from position ``pos`` (set before each 16), waiting as it waits."""
    from bench.token_marks import at_position
    _sixteens(graph, pipe.main, n, lambda: pipe.dev.synchronize(pipe.main), lambda: at_position(pipe, pos))


class Actions:
    """What bench/footprint.py's process does before its token steps up, one action at a time; each keeps what
    it made alive (the next needs it) until ``free``."""

    def __init__(self, cp: Any, preset: str, device: str = "cuda", measured: tuple[Any, Any] | None = None,
                 measured_own: Any = None) -> None:
        self.cp, self.preset, self.device = cp, preset, device  # device: "cpu" in the tests
        self.measured = measured  # the bench's (graph, stream) that the rounds time
        self.measured_own = measured_own  # the measured token's OwnForward (its module's kernels)
        self.held: dict[str, Any] = {}

    def alone(self) -> None:
        pass

    def session(self) -> None:
        from runner.loop import Session
        self.held["session"] = Session(self.preset, self.device, seed=0)

    def pipeline(self, side: str = "optimized") -> None:
        from runner import config as cfg
        self.held["pipe"], self.held["rec"] = self.held["session"].pipeline(cfg.parse_side(side), "tokens")

    def pipeline_reset(self) -> None:
        """The optimized pipeline with sm_config_reset: each run's reset sets every SM to our kernels'
        shared-memory configuration after CuPy's fills (whether a tg<N> after bf<N> sets the token back)."""
        self.pipeline("optimized,sm_config_reset=on")

    def tokens(self, n: int, times: int = 1, bounded: bool = False) -> None:
        """``tg<n>x<times>``: generate ``n`` tokens after the 32-token prompt, ``times`` times (run ahead, one
        graph launch a token, as bench/decode.py's tg128). Each token's marks take new CUDA events from the
        recorder's pool, which only a repeat's start returns: ``tgb`` (``bounded``) starts a repeat before each
        run, as bench/decode.py's rounds do, so the events in use stay one run's."""
        from runner.loop import generate
        for _ in range(times):
            if bounded:
                self.held["rec"].start_repeat()
            generate(self.held["pipe"], self.held["session"].prompt(32), n)

    def prefill(self, n: int) -> None:
        """``pf<n>``: an ``n``-token prompt alone, one step() a position (the KV cache written to ``n``)."""
        from runner.loop import generate
        generate(self.held["pipe"], self.held["session"].prompt(n), 0)

    def events(self, n: int) -> None:
        """``ev<n>``: ``n`` CUDA events made, each recorded once on a stream of their own, and kept alive."""
        stream = self.cp.cuda.Stream(non_blocking=True)
        evs = [self.cp.cuda.Event() for _ in range(n)]
        for e in evs:
            e.record(stream)
        stream.synchronize()
        self.held.setdefault("events", []).extend(evs)

    def launches(self, n: int) -> None:
        """``gl<n>``: the pipeline's token graph launched ``n`` times, no events: 16 back to back from position 32
        (its advance kernel moves the position and slot on; set back before each 16, so that the KV cache is never
        written past its end), then a wait. The graph is captured by a first token if no token ran yet."""
        from runner.loop import generate
        pipe = self.held["pipe"]
        if pipe.graph is None:
            generate(pipe, self.held["session"].prompt(32), 1)
        _in_sixteens(pipe, pipe.graph, n, 32)

    def fixed_launches(self, n: int) -> None:
        """``gt<n>``: pdl_variants' token on the pipeline's kernels and buffers (bench/token_marks.fixed_token_graph:
        no sampling's advance, the position fixed at 96, as footprint's "pipeline token at 96" row) launched ``n``
        times, 16 back to back then a wait."""
        from bench.token_marks import FIXED, fixed_token_graph
        pipe = self.held["pipe"]
        if "fixed" not in self.held:
            self.held["fixed"] = fixed_token_graph(pipe)
        _in_sixteens(pipe, self.held["fixed"], n, FIXED)

    def second_bench(self, n: int) -> None:
        """``bt<n>``: a second bench token (pdl_variants' forward as one graph on weights, caches and a stream of
        its own, built as the measured one is) launched ``n`` times, 16 back to back then a wait. The pipeline's
        token launched 1024 times steps the bench's (drift_cause_*_h100_3ea05f0) where the bench's own thousands
        never do: this says whether any second token's launches do, or only the pipeline's."""
        self._launch_second(n)

    def filled_bench(self, n: int) -> None:
        """``bf<n>``: the second bench token launched as ``bt<n>`` launches it, with its position and slot filled
        (CuPy fill kernels, no carveout of ours) before each 16 as gl<n> and gt<n> fill the pipeline's: the one
        thing those two launch that bt<n> does not. Our kernels prefer 75% of L1 as shared memory (smem_carveout),
        CuPy's take the driver's choice, so each fill may reconfigure the SMs it runs on. The H100 (drift_which_
        fills_h100_b5e2899): this steps the token +1.51%; bt<n> alone does not."""
        def cupy_fill(arr: Any, v: int) -> None:
            arr.fill(v)
        self._launch_second(n, cupy_fill)

    def plain_filled_bench(self, n: int) -> None:
        """``bn<n>``: as ``bf<n>`` with the fills made by a kernel of our own that has no carveout preference
        (PROBE_SOURCE's fill_plain): whether any kernel without our preference steps the token, or CuPy's."""
        self._launch_second(n, self._kernel_fill("fill_plain"))

    def pref_filled_bench(self, n: int) -> None:
        """``bk<n>``: as ``bn<n>`` with the fill kernel preferring our kernels' carveout (fill_pref): if the
        step is the SMs' shared-memory configuration, these fills leave the token as it was."""
        self._launch_second(n, self._kernel_fill("fill_pref"))

    def own_module_filled_bench(self, n: int) -> None:
        """``bw<n>``: as ``bn<n>`` with the fills (to 0) made by fill_words of the measured token's own module (the
        kernel own_reset empties the KV cache with): whether a kernel of the token's module steps it, as one of
        another module does."""
        own = self.measured_own
        self._launch_second(n, lambda arr, v: own.zero(arr))

    def graph_filled_bench(self, n: int) -> None:
        """``bg<n>``: as ``bw<n>`` with the two fills captured once as a graph and that graph launched before each
        16 (as own_reset launches the pipeline's): whether a kernel launched outside a graph steps the token where
        the same kernel in a graph does not."""
        graph, stream, keep = self._second()
        if "fill_graph" not in self.held:
            own, second = self.measured_own, keep[0]

            def fills() -> None:
                own.zero(second.d_pos)
                own.zero(second.d_slot)
            with stream:
                self.held["fill_graph"] = capture_graph(stream, fills)
        fills = self.held["fill_graph"]
        _sixteens(graph, stream, n, stream.synchronize, lambda: fills.launch(stream))

    def memset_bench(self, n: int) -> None:
        """``bm<n>``: as ``bn<n>`` with the fills (to 0) made by memsetAsync, as CuPy's fill(0) empties the
        pipeline's KV cache: whether a memset steps the token."""
        self._launch_second(n, lambda arr, v: arr.data.memset_async(0, arr.nbytes))

    def h2d_bench(self, n: int) -> None:
        """``bh<n>``: as ``bn<n>`` with the values copied in from the host, as the pipeline's step() copies its
        inputs: whether a host-to-device copy steps the token."""
        self._launch_second(n, lambda arr, v: arr.set(np.full(arr.shape, v, arr.dtype),
                                                      stream=self.cp.cuda.get_current_stream()))

    def d2h_bench(self, n: int) -> None:
        """``bd<n>``: the second bench token launched as ``bt<n>`` with its position copied out to the host before
        each 16, as the pipeline copies its pick out: whether a device-to-host copy steps the token."""
        self._launch_second(n, lambda arr, v: arr.get(stream=self.cp.cuda.get_current_stream()))

    def pipeline_own(self) -> None:
        """The optimized pipeline with its KV cache emptied by its own kernel (own_reset), not by CuPy's memset as
        ``pipeline``'s: whether its runs (tg<N> after it) step the token as optimized's do."""
        self.pipeline("optimized,own_reset=on")

    def reconfigure(self) -> None:
        """``rc``: sm_config_reset's own launch (OwnForward.configure_sms of the second bench token's build: every
        SM given blocks that need shared memory and prefer our carveout) on the measured token's stream, then a
        wait: whether the kernel the switch adds sets a stepped token back."""
        _, _, keep = self._second()
        _, stream = self.measured
        with stream:
            keep[0].configure_sms()
        stream.synchronize()

    rc = reconfigure  # the action's name in --steps

    def _second(self) -> tuple[Any, Any, list]:
        """The second bench token (graph, stream, what it needs alive), built at its first use."""
        if "bench" not in self.held:
            self.held["bench"] = _bench(self.cp, self.preset)
        return self.held["bench"]

    def _kernel_fill(self, name: str) -> Any:
        """``fill(array, value)`` by PROBE_SOURCE's kernel ``name``, one block (the arrays hold one int)."""
        if "probe" not in self.held:
            self.held["probe"] = probe_kernels(self.cp)
        k = self.held["probe"][name]
        return lambda arr, v: k((1,), (32,), (arr, np.int32(v), np.int32(arr.size)))

    def _launch_second(self, n: int, fill: Any = None) -> None:
        """The second bench token launched ``n`` times, 16 back to back then a wait; with ``fill(array, value)``,
        its position and slot set to FIXED by it on its stream before each 16."""
        from bench.token_marks import FIXED
        graph, stream, keep = self._second()

        def at_fixed() -> None:
            own = keep[0]
            with stream:
                fill(own.d_pos, FIXED)
                fill(own.d_slot, FIXED)
        _sixteens(graph, stream, n, stream.synchronize, at_fixed if fill else None)

    def own_bench(self, n: int) -> None:
        """``bo<n>``: the measured bench token itself launched ``n`` times as bt<n> launches the second one (16 back
        to back then a wait, where the rounds launch it REPLAYS back to back): whether that pattern, not a second
        token, is what steps it."""
        graph, stream = self.measured
        _sixteens(graph, stream, n, stream.synchronize)

    def free(self) -> None:
        self.held.clear()
        self.cp.get_default_memory_pool().free_all_blocks()

    def cublas(self) -> None:
        a = self.cp.ones((4096, 4096), self.cp.float16)
        (a @ a).sum().item()

    def torch(self) -> None:
        import torch
        a = torch.ones((4096, 4096), dtype=torch.float16, device="cuda")
        (a @ a).sum().item()


ACTIONS = ("alone", "session", "pipeline", "pipeline_reset", "pipeline_own", "free", "cublas", "torch", "rc")
# Actions with counts, by prefix: tg<N>[x<K>] N tokens K times, tgb<N>[x<K>] the same with the recorder's events
# returned before each run, pf<N> an N-token prompt, ev<N> N events, gl<N> N launches of the pipeline's graph,
# gt<N> N launches of its token at a fixed position, bt<N> N launches of a second bench token, bf<N> the same with
# its position filled by CuPy before each 16 (as gl and gt fill theirs), bn<N> and bk<N> the same with a fill of
# our own without and with our carveout preference, bw<N> by the measured token's own module, bg<N> the same as a
# graph, bm<N> by memsetAsync, bh<N> by a copy from the host, bd<N> with a copy to the host, bo<N> N of the
# measured one in the same pattern
COUNTED = {"tg": "tokens", "tgb": "tokens", "pf": "prefill", "ev": "events", "gl": "launches",
           "gt": "fixed_launches", "bt": "second_bench", "bf": "filled_bench", "bn": "plain_filled_bench",
           "bk": "pref_filled_bench", "bw": "own_module_filled_bench", "bg": "graph_filled_bench", "bm": "memset_bench",
           "bh": "h2d_bench", "bd": "d2h_bench", "bo": "own_bench"}
_COUNTED = re.compile(r"(tgb|tg|pf|ev|gl|gt|bt|bf|bn|bk|bw|bg|bm|bh|bd|bo)(\d+)(?:x(\d+))?$")


def take(actions: Actions, name: str) -> None:
    """Run the action ``name`` (one of ACTIONS, or a counted one of COUNTED)."""
    m = _COUNTED.match(name)
    if not m:
        getattr(actions, name)()
    elif m[1] in ("tg", "tgb"):
        actions.tokens(int(m[2]), int(m[3] or 1), bounded=m[1] == "tgb")
    else:
        getattr(actions, COUNTED[m[1]])(int(m[2]))


def known(name: str) -> bool:
    m = _COUNTED.match(name)
    if m:  # only tokens take a repeat count
        return m[1] in ("tg", "tgb") or not m[3]
    return name in ACTIONS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--load-s", type=float, default=20.0)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--again-s", type=float, default=8.0)
    ap.add_argument("--steps", help=f"comma-separated actions in order, each followed by --step-s of rounds "
                    f"(of {', '.join(ACTIONS)}, or {', '.join(COUNTED)} with a count) in place of load, idle and again")
    ap.add_argument("--step-s", type=float, default=6.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    steps = args.steps.split(",") if args.steps else []
    if not all(known(a) for a in steps):
        ap.error(f"--steps: each of {', '.join(ACTIONS)}, or {', '.join(COUNTED)} with a count")
    dev = CudaDevice()
    cp = dev.cp
    graph, stream, keep = _bench(cp, args.preset)
    weights_mb = get_preset(args.preset).weight_bytes_per_token() / 1e6

    def one_round() -> dict:
        row = {"token_us": graph_replay_us(cp, graph, stream, REPLAYS, warmup=5),
               "copy_gbs": copy_bandwidth_gbs(cp, nbytes=ROUND_COPY_BYTES, reps=ROUND_COPY_REPS)}
        return {**row, **dev.clocks(), **dev.power_state()}

    t0 = time.perf_counter()
    if steps:
        rows, actions, took = [], Actions(cp, args.preset, measured=(graph, stream), measured_own=keep[0]), []
        for i, a in enumerate(steps):
            t = time.perf_counter()
            take(actions, a)
            cp.cuda.Device().synchronize()
            took.append({"action": a, "at_s": t - t0, "took_s": time.perf_counter() - t})
            rows += [{**r, "step": a, "step_index": i} for r in rounds_for(args.step_s, t0, one_round)]
        actions.free()
    else:
        rows = rounds_for(args.load_s, t0, one_round)
        time.sleep(args.idle_s)
        rows += rounds_for(args.again_s, t0, one_round)
        took = []
    # CUDA_MODULE_LOADING (LAZY by default): whether the step follows a function's first load into the context
    report = {"git": git_info(), "device": dev.info(), "preset": args.preset, "weights_mb": weights_mb,
              "module_loading": os.environ.get("CUDA_MODULE_LOADING", "default"),
              "replays": REPLAYS, "copy_mb": ROUND_COPY_BYTES >> 20, "load_s": args.load_s, "idle_s": args.idle_s,
              "again_s": args.again_s, "step_s": args.step_s, "steps": took,
              "seconds": by_second(rows, weights_mb), "actions": by_action(rows) if steps else [], "rounds": rows}
    del keep
    save(args.out, "drift", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

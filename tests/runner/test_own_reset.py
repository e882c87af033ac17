"""own_reset: the pipeline's KV cache emptied by decode.cu's fill_words (a kernel of the token's own module) instead
of CuPy's fill; fill_words' launch covers every 32-bit word of the array once (no GPU)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from runner import config as cfg
from runner.own_kernels import FILL_BLOCKS, FILL_THREADS, OwnForward
from runner.pipeline import Pipeline


class _Stream:
    """A stream that records captures; what is launched while capturing goes into the graph, not to ``calls``."""

    def __init__(self, calls: list) -> None:
        self.calls, self.captured = calls, None

    def begin_capture(self) -> None:
        self.captured = []

    def end_capture(self) -> SimpleNamespace:
        ops, self.captured = self.captured, None
        self.calls.append(("captured", tuple(ops)))
        return SimpleNamespace(upload=lambda s: self.calls.append("upload"),
                               launch=lambda s: self.calls.extend(["launch", *ops]))

    def record(self, op) -> None:
        (self.captured if self.captured is not None else self.calls).append(op)


def _pipeline(switches: dict, calls: list, own: bool = True) -> Pipeline:
    pipe = Pipeline.__new__(Pipeline)
    pipe.sw, pipe.main, pipe.reset_graph = switches, _Stream(calls), None
    pipe.own_reset = bool(own and switches.get("own_reset"))  # as __init__ sets it: the switch with our kernels
    pipe.dev = SimpleNamespace(use=lambda s: contextlib.nullcontext())
    pipe.cache_k = SimpleNamespace(fill=lambda v: calls.append(("fill k", v)), name="k")
    pipe.cache_v = SimpleNamespace(fill=lambda v: calls.append(("fill v", v)), name="v")
    pipe.own = SimpleNamespace(zero=lambda a: pipe.main.record(("zero", a.name)),
                               configure_sms=lambda: calls.append("configure")) if own else None
    return pipe


def test_reset_empties_the_caches_by_our_kernel_as_a_graph_only_with_the_switch_and_our_kernels():
    calls: list = []
    pipe = _pipeline({"own_reset": True}, calls)
    pipe.reset()  # captured once, then launched; every later reset launches the same graph
    zeros = [("zero", "k"), ("zero", "v")]
    assert calls == [("captured", tuple(zeros)), "upload", "launch", *zeros]
    calls.clear()
    pipe.reset()
    assert calls == ["launch", *zeros]
    calls.clear()
    _pipeline({"own_reset": True, "sm_config_reset": True}, calls).reset()
    assert calls == [("captured", tuple(zeros)), "upload", "launch", *zeros, "configure"]
    calls.clear()
    _pipeline({}, calls).reset()
    assert calls == [("fill k", 0), ("fill v", 0)]
    calls.clear()
    _pipeline({"own_reset": True}, calls, own=False).reset()  # the CPU's pipeline has no kernels of ours
    assert calls == [("fill k", 0), ("fill v", 0)]


def _emulated(own: OwnForward) -> list:
    """fill_words as decode.cu runs it: a grid-stride loop over the words, on a NumPy view of the array."""
    launched = []

    def filler(grid, block, args):
        arr, value, n = args
        words = arr.reshape(-1).view(np.uint32)
        stride = grid[0] * block[0]
        for i in range(min(stride, int(n))):
            words[i: int(n): stride] = value
        launched.append((grid, block, int(n)))
    own.filler = filler
    return launched


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 300, 512)])
def test_zero_sets_every_word_once_in_a_bounded_grid(shape):
    own = OwnForward.__new__(OwnForward)
    launched = _emulated(own)
    cache = np.ones(shape, np.float16)
    own.zero(cache)
    (grid, block, n), = launched
    assert n == cache.nbytes // 4 and block == (FILL_THREADS,)
    assert 1 <= grid[0] <= FILL_BLOCKS and grid[0] * FILL_THREADS >= min(n, FILL_BLOCKS * FILL_THREADS)
    assert not cache.any()


def test_zero_refuses_an_array_that_is_not_whole_words_or_not_contiguous():
    own = OwnForward.__new__(OwnForward)
    _emulated(own)
    with pytest.raises(ValueError, match="32-bit words"):
        own.zero(np.ones(3, np.float16))
    with pytest.raises(ValueError, match="strided view"):
        own.zero(np.ones((4, 4), np.float16)[:, :2])


def test_own_reset_is_kernel_tuning_out_of_optimized_until_measured_and_brings_our_kernels():
    assert "own_reset" in cfg.KERNEL_TUNING and not cfg.CONFIGS["optimized"].get("own_reset")
    assert cfg.effective(cfg.parse_side("baseline,own_reset=on"), True)["own_kernels"]
    assert cfg.parse_side("optimized,own_reset=on").switches.get("own_reset")


def test_the_pipelines_caches_are_what_fill_words_can_zero():
    """The arena's KV caches (runner/arena.py): contiguous runs of whole 32-bit words, in every preset's shape."""
    from runner.loop import Session

    session = Session("tiny", "cpu", seed=0)
    pipe, _ = session.pipeline(cfg.parse_side("optimized,own_reset=on"), "tokens")
    for cache in (pipe.cache_k, pipe.cache_v):
        assert cache.flags.c_contiguous and cache.nbytes % 4 == 0


def test_a_capture_ends_where_the_launches_raise():
    from runner.device import capture_graph

    calls: list = []
    stream = _Stream(calls)

    def failing() -> None:
        stream.record("first")
        raise RuntimeError("launch failed")
    with pytest.raises(RuntimeError, match="launch failed"):
        capture_graph(stream, failing)
    assert stream.captured is None and calls == [("captured", ("first",))]  # ended, never uploaded


def test_token_capture_restores_the_recorder_and_kernels_where_the_forward_raises():
    # Pipeline._capture times nothing inside the graph and logs which function launched each kernel: both undone
    # after the capture, also where a launch raises (the capture itself ended by runner.device.capture_graph)
    calls: list = []
    kernels = {"gemv": lambda *a: None}
    pipe = _pipeline({}, calls)
    pipe.rec, pipe.own.k, pipe.captures = SimpleNamespace(gpu_functions=True, capture_log=None), kernels, 0

    def failing() -> None:
        assert pipe.rec.gpu_functions is False and pipe.own.k is not kernels
        pipe.main.record("launch in the capture")
        raise RuntimeError("launch failed")
    pipe._forward_own = failing
    with pytest.raises(RuntimeError):
        pipe._capture()
    assert pipe.rec.gpu_functions is True and pipe.own.k is kernels and pipe.captures == 0
    assert calls == [("captured", ("launch in the capture",))]
    pipe._forward_own = lambda: pipe.main.record("token")
    pipe._capture()
    assert pipe.captures == 1 and calls[-2:] == [("captured", ("token",)), "upload"]
    pipe.graph.launch(pipe.main)
    assert calls[-2:] == ["launch", "token"]


@pytest.mark.parametrize("own_reset", [False, True])
def test_own_reset_zeroes_the_arena_by_our_kernel_not_a_memset(monkeypatch, own_reset):
    # with fresh instances each round, the memset that zeroed a new instance's arena landed between the tokens of
    # the instance before: with own_reset the arena is allocated as it is and zeroed by fill_words, before
    # anything reads it
    import runner.arena
    import runner.own_kernels
    from runner.loop import Session
    from runner.pipeline import Pipeline as Pipe
    from runner.recorder import Recorder

    calls: list = []
    xp = SimpleNamespace(zeros=lambda n, dtype: calls.append("zeros") or np.zeros(n, dtype),
                         empty=lambda n, dtype: calls.append("empty") or np.full(n, 7, dtype))  # as left

    class Own:
        def __init__(self, *args, **kwargs) -> None:
            calls.append("module")

        def zero(self, arr) -> None:
            calls.append(("zero", arr.nbytes))
            arr[...] = 0
    monkeypatch.setattr(runner.own_kernels, "OwnForward", Own)
    monkeypatch.setattr(runner.pipeline, "Arena", lambda _xp, cap, zeroed=True: runner.arena.Arena(xp, cap, zeroed))
    session = Session("tiny", "cpu", seed=0)
    switches = {**cfg.effective(cfg.resolve("optimized", {"own_reset": own_reset}), gpu=True)}
    pipe = Pipe(session.preset, session.weights, session.device, switches, Recorder(session.device, "tokens"))
    assert not pipe.arena.buf.any()  # zero before anything reads it, either way
    size = pipe.arena.buf.nbytes
    assert calls == (["empty", "module", ("zero", size)] if own_reset else ["zeros", "module"])

"""sm_config_reset: the pipeline's reset launches configure_sms after emptying the caches, only with the switch, and
configure_sms launches two blocks an SM with its shared memory only where the build prefers a carveout (no GPU)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np

from runner import config as cfg
from runner.own_kernels import CONFIGURE_SMEM, OwnForward
from runner.pipeline import Pipeline


def _pipeline(switches: dict, calls: list) -> Pipeline:
    pipe = Pipeline.__new__(Pipeline)
    pipe.sw, pipe.main = switches, "main"
    pipe.own_reset = bool(switches.get("own_reset"))  # as __init__ sets it (our kernels are on here)
    pipe.dev = SimpleNamespace(use=lambda s: contextlib.nullcontext())
    pipe.cache_k = SimpleNamespace(fill=lambda v: calls.append(("fill k", v)))
    pipe.cache_v = SimpleNamespace(fill=lambda v: calls.append(("fill v", v)))
    pipe.own = SimpleNamespace(configure_sms=lambda: calls.append("configure"))
    return pipe


def test_reset_configures_the_sms_after_the_fills_only_with_the_switch():
    calls: list = []
    _pipeline({"sm_config_reset": True}, calls).reset()
    assert calls == [("fill k", 0), ("fill v", 0), "configure"]
    calls.clear()
    _pipeline({}, calls).reset()
    assert calls == [("fill k", 0), ("fill v", 0)]


def test_configure_sms_launches_two_blocks_an_sm_where_the_build_prefers_a_carveout():
    launched = []
    own = OwnForward.__new__(OwnForward)
    own.sink = None
    own.configure = lambda grid, block, args, shared_mem=0: launched.append((grid, block, shared_mem))
    own.cp = SimpleNamespace(int32=np.int32, zeros=lambda n, dt: np.zeros(n, dt), cuda=SimpleNamespace(
        Device=lambda: SimpleNamespace(id=0),
        runtime=SimpleNamespace(getDeviceProperties=lambda i: {"multiProcessorCount": 132})))
    own.carveout = -1
    own.configure_sms()
    assert launched == []
    own.carveout = 75
    own.configure_sms()
    assert launched == [((264,), (256,), CONFIGURE_SMEM)] and own.sink.shape == (1,)
    sink = own.sink
    own.configure_sms()
    assert own.sink is sink and len(launched) == 2  # made once


def test_the_switch_is_kernel_tuning_left_out_of_optimized_until_measured():
    assert "sm_config_reset" in cfg.KERNEL_TUNING and "sm_config_reset" not in cfg.CONFIGS["optimized"]
    assert cfg.effective(cfg.parse_side("baseline,sm_config_reset=on"), True)["own_kernels"]

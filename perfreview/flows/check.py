"""``perfreview check``: every config against the float64 reference (teacher forced) and each other."""

from __future__ import annotations

from typing import Any, Callable

from runner import config as cfg
from runner.check import check_configs
from runner.loop import Session


def configs_to_check() -> list[cfg.Config]:
    """baseline, optimized, and baseline with each optimization or kernel tuning alone."""
    return [cfg.resolve("baseline"), cfg.resolve("optimized")] + [
        cfg.resolve("baseline", {k: "on"}) for k in cfg.OPTIMIZATIONS + cfg.KERNEL_TUNING if cfg.SWITCHES[k].built]


def check(preset: str, device: str, seed: int, steps: int,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    session = Session(preset, device, seed)
    return check_configs(session, configs_to_check(), n_steps=steps, n_generate=steps, prompt_tokens=4,
                         progress=progress)

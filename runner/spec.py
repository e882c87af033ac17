"""What to run: the one description of a measurement, checked before any device is touched, and
turned into a ``perfreview run`` command line in one place (``ab rev=`` runs old revisions that way)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from runner import config as cfg
from runner.presets import Preset, get_preset

TIMINGS = ("tokens", "functions")


@dataclass
class RunSpec:
    preset: str = "tiny"
    config: cfg.Config = field(default_factory=lambda: cfg.resolve("baseline"))
    tokens: int = 32
    repeats: int = 5
    device: str = "auto"
    timing: str = "tokens"
    seed: int = 0
    prompt_tokens: int = 16
    warmup_tokens: int = 8  # one unrecorded pass of this many tokens before the first repeat
    build: str = ""
    cpu: int | None = None  # pin the process to this CPU while measuring (less host jitter)
    order_seed: int = 0  # seeds the random order of the sides inside each round
    host_wait: str = "block"  # how the host waits at a synchronize: the driver's wait, or a spin
    trace: str = ""  # "cupti": every kernel, copy, call and sync of each token, through CUPTI
    # Interleaved sides get fresh pipeline instances (buffers, streams, graph) every this many
    # rounds, made in a random order: two instances of one config differ by a few tenths of a
    # percent on the H100 (memory placement), which paired rounds would take for an effect. 0: never.
    fresh_every: int = 0
    # --timing functions: the event pairs around functions in one token of every this many (token
    # index divisible by it): a pair costs host time, which the eager loop pays in tokens/s
    function_every: int = 32

    def cli_args(self, side: str, out: str) -> list[str]:
        """``perfreview run`` arguments that measure this spec with ``side`` (``config=NAME,switch=v``)
        as one run under ``out``, printing its JSON summary. Options older revisions lack are left out."""
        parts = side.split(",")
        args = ["run", "--config", parts[0].split("=", 1)[-1], "--preset", self.preset, "--tokens", str(self.tokens),
                "--repeats", str(self.repeats), "--device", self.device, "--timing", self.timing,
                "--seed", str(self.seed), "--prompt-tokens", str(self.prompt_tokens),
                "--warmup-tokens", str(self.warmup_tokens), "--out", out, "--build", self.build, "--json"]
        for p in parts[1:]:
            args += ["--set", p]
        if self.host_wait != "block":  # only when asked: older revisions lack the flag
            args += ["--host-wait", self.host_wait]
        if self.trace:
            args += ["--trace", self.trace]
        if self.timing == "functions":  # both builds sample alike; a revision without the flag says so
            args += ["--function-every", str(self.function_every)]
        return args  # --cpu: the child inherits the parent's affinity (older revisions lack the flag)


def check_spec(spec: RunSpec) -> Preset:
    """Validate what can be validated before touching a device; errors say what is wrong."""
    preset = get_preset(spec.preset)
    if spec.tokens < 1 or spec.repeats < 1:
        raise ValueError("--tokens and --repeats must be at least 1")
    if spec.prompt_tokens < 1:
        raise ValueError("--prompt-tokens must be at least 1")
    if spec.warmup_tokens < 0:
        raise ValueError("--warmup-tokens must be 0 or more")
    if spec.seed < 0:  # NumPy's own refusal names no option
        raise ValueError(f"--seed {spec.seed}: must be 0 or more")
    if spec.prompt_tokens + spec.tokens > preset.max_ctx:
        raise ValueError(f"prompt + tokens = {spec.prompt_tokens + spec.tokens} exceeds the context "
                         f"of preset {preset.name} ({preset.max_ctx})")
    if spec.cpu is not None and (not hasattr(os, "sched_setaffinity") or spec.cpu not in os.sched_getaffinity(0)):
        raise ValueError(f"--cpu {spec.cpu}: not a CPU this process may run on")
    if spec.trace not in ("", "cupti"):
        raise ValueError(f"unknown --trace {spec.trace!r} (use cupti)")
    if spec.fresh_every < 0:
        raise ValueError("--fresh-every must be 0 (never) or more")
    if spec.function_every < 1:
        raise ValueError("--function-every must be at least 1 (1: every token)")
    if spec.timing not in TIMINGS:
        raise ValueError(f"unknown timing level {spec.timing!r} (use tokens or functions)")
    return preset

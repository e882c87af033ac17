"""Driving the decode loop: weights once per device, one pipeline per config, repeats.

A repeat = empty KV cache, prefill the prompt token by token, decode N tokens greedily (each
feeding the next). Every repeat does the same work, so repeats are comparable samples.
"""

from __future__ import annotations

import datetime as _dt
import gc
import getpass
import os
import platform
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner import config as cfg
from runner.device import open_device
from runner.model import init_weights
from runner.pipeline import Pipeline
from runner.presets import Preset, get_preset
from runner.recorder import Recorder

TOOL_VERSION = "0.1.0"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


@dataclass
class RunResult:
    """What a run produced: schema rows and metadata (perfreview.trace turns these into files)."""

    run_id: str
    rows: list[dict]
    meta: dict[str, Any]
    generated: list[int]


class Session:
    """A device and one model's weights (shared by every config run on it)."""

    def __init__(self, preset: str, device: str, seed: int) -> None:
        self.preset: Preset = get_preset(preset)
        self.device = open_device(device)
        self.seed = seed
        self.weights = init_weights(self.preset, seed, self.device.xp)
        self.device.synchronize_all()

    def prompt(self, n: int) -> list[int]:
        rng = np.random.default_rng(self.seed + 1)
        return [int(t) for t in rng.integers(0, self.preset.vocab, size=n)]

    def pipeline(self, config: cfg.Config, timing: str) -> tuple[Pipeline, Recorder]:
        missing = cfg.not_built(config.switches) if self.device.is_gpu else []
        if missing:
            raise cfg.NotBuiltError(f"switch {', '.join(missing)} is reserved but not built yet on the GPU")
        switches = cfg.effective(config, self.device.is_gpu)
        rec = Recorder(self.device, timing)
        return Pipeline(self.preset, self.weights, self.device, switches, rec), rec


def check_spec(spec: RunSpec) -> Preset:
    """Validate what can be validated before touching a device; errors say what is wrong."""
    preset = get_preset(spec.preset)
    if spec.tokens < 1 or spec.repeats < 1:
        raise ValueError("--tokens and --repeats must be at least 1")
    if spec.prompt_tokens < 1:
        raise ValueError("--prompt-tokens must be at least 1")
    if spec.prompt_tokens + spec.tokens > preset.max_ctx:
        raise ValueError(f"prompt + tokens = {spec.prompt_tokens + spec.tokens} exceeds the context "
                         f"of preset {preset.name} ({preset.max_ctx})")
    if spec.cpu is not None and (not hasattr(os, "sched_setaffinity") or spec.cpu not in os.sched_getaffinity(0)):
        raise ValueError(f"--cpu {spec.cpu}: not a CPU this process may run on")
    if spec.timing not in ("tokens", "functions"):
        raise ValueError(f"unknown timing level {spec.timing!r} (use tokens or functions)")
    return preset


def generate(pipe: Pipeline, prompt: list[int], n_tokens: int, rec: Recorder | None = None) -> list[int]:
    """Prefill then greedy decode; returns the ``n_tokens`` decoded ids."""
    pipe.reset()
    nxt = 0
    for pos, tok in enumerate(prompt):
        if rec:
            rec.token, rec.phase = pos, "prefill"
        nxt = pipe.step(tok, pos)
    out = []
    for i in range(n_tokens):
        pos = len(prompt) + i
        if rec:
            rec.token, rec.phase = pos, "decode"
        nxt = pipe.step(nxt, pos)
        out.append(nxt)
    return out


def run_repeat(session: Session, pipe: Pipeline, rec: Recorder, spec: RunSpec, repeat: int,
               prompt: list[int]) -> tuple[list[dict], dict[str, Any], list[int]]:
    dev = session.device
    for stream in dev.streams:
        dev.synchronize(stream)
    energy0 = dev.energy_mj() if dev.is_gpu else None
    # The collector's pauses land on random tokens; collect now, none during the repeat.
    gc.collect()
    gc.disable()
    t0 = time.perf_counter_ns()
    rec.start_repeat()
    try:
        generated = generate(pipe, prompt, spec.tokens, rec)
    finally:
        gc.enable()
    for stream in dev.streams:
        dev.synchronize(stream)
    t1 = time.perf_counter_ns()
    energy1 = dev.energy_mj() if dev.is_gpu else None
    rows = rec.finish_repeat(repeat)
    meta: dict[str, Any] = {"repeat": repeat, "wall_ns": t1 - t0}
    if energy0 is not None and energy1 is not None:
        meta["energy_j"] = (energy1 - energy0) / 1000.0
    if dev.is_gpu:
        meta.update(dev.clocks())
    return rows, meta, generated


def new_run_id(preset: str, label: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = "".join(c if c.isalnum() or c in "._+=-" else "_" for c in label)
    return f"{stamp}-{preset}-{safe}-{secrets.token_hex(2)}"


def git_info(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    if not commit and os.environ.get("PERFREVIEW_GIT_COMMIT"):
        # A copy of the tree without .git (e.g. a remote GPU machine): the caller says which commit.
        return {"commit": os.environ["PERFREVIEW_GIT_COMMIT"],
                "dirty": os.environ.get("PERFREVIEW_GIT_DIRTY", "0") == "1", "from": "PERFREVIEW_GIT_COMMIT"}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def base_meta(session: Session, spec: RunSpec, run_id: str) -> dict[str, Any]:
    dev = session.device
    gpu = dev.is_gpu
    not_measured = []
    if not gpu:
        not_measured.append({"what": "GPU timings, energy, clocks", "why": "CPU backend (NumPy): no GPU"})
    elif dev.energy_mj() is None:
        not_measured.append({"what": "energy", "why": dev._nvml.why or "NVML energy counter unavailable"})
    ignored = cfg.not_in_effect(spec.config, gpu)
    if gpu and spec.timing == "functions" and cfg.effective(spec.config, gpu).get("cuda_graph"):
        not_measured.append({"what": "GPU time per function", "why": "cuda_graph: the token is one graph "
                             "launch; events inside a replayed graph are overwritten each token"})
    return {
        "schema_version": 1,
        "tool": "perfreview",
        "tool_version": TOOL_VERSION,
        "run": run_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "build": spec.build,
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "python": platform.python_version(), "user": _user(), "cpus": os.cpu_count(),
                 # what pyperf records too: a loaded host makes a noisy host-bound run
                 "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                 "pinned_cpu": spec.cpu},
        "device": dev.info(),
        "preset": spec.preset,
        "model": session.preset.as_dict(),
        "config": spec.config.base,
        "config_label": spec.config.label,
        "switches": spec.config.switches,
        "switches_in_effect": cfg.effective(spec.config, gpu),
        "switches_without_effect": ignored,
        "seed": spec.seed,
        "prompt_tokens": spec.prompt_tokens,
        "tokens": spec.tokens,
        "repeats": spec.repeats,
        "warmup_tokens": spec.warmup_tokens,
        "timing": spec.timing,
        "clock": "time.perf_counter_ns (CLOCK_MONOTONIC), ns",
        "gc": "Python's garbage collector disabled during each repeat (collected before it)",
        "clock_alignment": ("GPU events placed on the host clock through an anchor event recorded on an "
                            "idle device at each repeat start; offset <= launch latency (a few us)")
        if gpu else "host only",
        "not_measured": not_measured,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "")


def run_configs(spec: RunSpec, configs: list[cfg.Config], session: Session | None = None) -> list[RunResult]:
    """Run each config ``spec.repeats`` times, interleaved repeat by repeat (A B A B ...), so drift
    of the machine hits every config alike. One config gives a plain run."""
    check_spec(spec)
    session = session or Session(spec.preset, spec.device, spec.seed)
    prompt = session.prompt(spec.prompt_tokens)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    try:
        return _run_configs(spec, configs, session, prompt)
    finally:
        if spec.cpu is not None and allowed:
            os.sched_setaffinity(0, allowed)


def _run_configs(spec: RunSpec, configs: list[cfg.Config], session: Session, prompt: list[int]) -> list[RunResult]:
    sides = []
    for config in configs:
        side_spec = RunSpec(**{**spec.__dict__, "config": config})
        pipe, rec = session.pipeline(config, spec.timing)
        # Warm-up: compile kernels, create handles, touch memory; nothing recorded.
        generate(pipe, prompt[: max(1, min(len(prompt), spec.warmup_tokens))], spec.warmup_tokens)
        run_id = new_run_id(spec.preset, config.label)
        sides.append({"spec": side_spec, "pipe": pipe, "rec": rec, "id": run_id,
                      "rows": [], "repeats": [], "generated": None})
    for r in range(spec.repeats):
        for side in sides:
            rows, meta, generated = run_repeat(session, side["pipe"], side["rec"], side["spec"], r, prompt)
            side["rows"].extend(rows)
            side["repeats"].append(meta)
            if side["generated"] is None:
                side["generated"] = generated
    results = []
    for side in sides:
        meta = base_meta(session, side["spec"], side["id"])
        meta["per_repeat"] = side["repeats"]
        meta["prompt"] = prompt
        meta["generated"] = side["generated"]
        meta["interleaved_with"] = [s["id"] for s in sides if s is not side]
        meta["graph_captures"] = side["pipe"].captures
        results.append(RunResult(side["id"], side["rows"], meta, side["generated"]))
    return results

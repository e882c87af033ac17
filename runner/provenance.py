"""What a run of the workload says about itself in run.json: device, host, model, config, how it
was timed and what it could not measure."""

from __future__ import annotations

from typing import Any

from perfreview.trace.meta import RunMeta, git_info, host_info
from runner import config as cfg
from runner.spec import RunSpec


def not_measured(session: Any, spec: RunSpec) -> list[dict[str, str]]:
    dev = session.device
    out = []
    if not dev.is_gpu:
        out.append({"what": "GPU timings, energy, clocks", "why": "CPU backend (NumPy): no GPU"})
    elif dev.energy_mj() is None:
        out.append({"what": "energy", "why": dev.why_no_energy() or "NVML energy counter unavailable"})
    if dev.is_gpu and spec.timing == "functions" and not spec.trace and cfg.effective(spec.config, True).get(
            "cuda_graph"):
        out.append({"what": "GPU time per function", "why": "cuda_graph: the token is one graph "
                    "launch; events inside a replayed graph are overwritten each token"})
    return out


def function_every(session: Any, spec: RunSpec) -> int:
    """One token of every N carries GPU event pairs around its functions; 0 where none are recorded
    (tokens level, the CPU backend, or a graph-replayed token)."""
    if spec.timing != "functions" or not session.device.is_gpu or cfg.effective(spec.config, True).get("cuda_graph"):
        return 0
    return spec.function_every


def run_meta(session: Any, spec: RunSpec, run_id: str) -> RunMeta:
    dev = session.device
    gpu = dev.is_gpu
    return RunMeta(
        run=run_id, git=git_info(), build=spec.build, host=host_info(spec.cpu), device=dev.info(),
        preset=spec.preset, model=session.preset.as_dict(), config=spec.config.base,
        config_label=spec.config.label, switches=dict(spec.config.switches),
        switches_in_effect=cfg.effective(spec.config, gpu), switches_without_effect=cfg.not_in_effect(spec.config, gpu),
        seed=spec.seed, host_wait=spec.host_wait if gpu else "", trace=spec.trace, prompt_tokens=spec.prompt_tokens,
        tokens=spec.tokens, repeats=spec.repeats,
        warmup_tokens=spec.warmup_tokens, timing=spec.timing, function_every=function_every(session, spec),
        clock="time.perf_counter_ns (CLOCK_MONOTONIC), ns",
        gc="Python's garbage collector disabled during each repeat (collected before it)",
        clock_alignment=("GPU events placed on the host clock through an anchor event recorded on an "
                         "idle device at each repeat start, at the midpoint of the tightest of 5 host-clock "
                         "brackets (record, spin until done); residual: half that bracket"
                         + ("; CUPTI records shifted by (host - CUPTI) clock read at each repeat's end, "
                            "bracketed to within about a microsecond" if spec.trace == "cupti" else ""))
        if gpu else "host only",
        not_measured=not_measured(session, spec),
    )

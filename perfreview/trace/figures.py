"""The figures perfreview measures and compares: one registry that the analysis (which computes
them), the store (which indexes them), the comparison (which tests them) and the templates (which
title them) all read.

A figure has one value per repeat. Headline figures describe the whole token; function figures
(one per pipeline function and metric) describe where its time went.
"""

from __future__ import annotations

from dataclasses import dataclass

# Timer resolution, ns: a change must be at least twice this to count.
HOST_RESOLUTION_NS = 100.0  # perf_counter_ns around Python calls: call overhead, not the tick
EVENT_RESOLUTION_NS = 500.0  # cudaEventElapsedTime, "around 0.5 microseconds"


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    higher_is_better: bool
    title: str
    # ns per unit (to turn a timer resolution into the figure's unit); 0 for figures that are not times
    ns_per_unit: float = 0.0
    gpu_timed: bool = False  # timed by CUDA events on a GPU run (else by the host clock)
    primary: bool = False  # the figure whose verdict is the review's verdict
    shadows: str = ""  # a near-duplicate of this figure: shown, not tested

    def resolution(self, gpu_run: bool) -> float | None:
        """The timer's resolution in this figure's unit; None when no timer bounds it."""
        if not self.ns_per_unit:
            return None
        ns = EVENT_RESOLUTION_NS if (self.gpu_timed and gpu_run) else HOST_RESOLUTION_NS
        return ns / self.ns_per_unit


HEADLINES: dict[str, Figure] = {f.name: f for f in (
    Figure("tokens_per_s", "t/s", True, "decode throughput (t/s)", primary=True),
    Figure("median_token_ms", "ms", False, "token latency, median (ms)", 1e6, shadows="tokens_per_s"),
    Figure("median_gpu_token_ms", "ms", False, "GPU time per token, median (ms)", 1e6, gpu_timed=True),
    # The device's own part of the token (input copies done -> last work), CUDA events: host jitter
    # stays out, so a change on the GPU can be decided at the GPU's own noise.
    Figure("median_gpu_compute_ms", "ms", False, "GPU compute per token, median (ms)", 1e6, gpu_timed=True),
    Figure("time_to_first_token_ms", "ms", False, "time to first token (prefill, ms)", 1e6),
    Figure("median_sync_gap_us", "us", False, "sync gap between tokens, median (µs)", 1e3, gpu_timed=True),
    Figure("energy_j_per_token", "J", False, "energy per token (J)"),
)}

# Per-function metrics: column of the per-token function table -> label in reviews.
FUNCTION_METRICS: dict[str, str] = {"host_ns": "host", "self_ns": "self", "gpu_ns": "GPU"}
FUNCTION_UNIT = "us"


def function_resolution(metric: str) -> float:
    """Timer resolution (µs) of a function metric: CUDA events for GPU time, the host clock else."""
    return (EVENT_RESOLUTION_NS if metric == "gpu_ns" else HOST_RESOLUTION_NS) / 1e3


def title(name: str) -> str:
    """A headline's title, or the name itself (a function) where the registry has none."""
    fig = HEADLINES.get(name)
    return fig.title if fig else name


PRIMARY = next(f.name for f in HEADLINES.values() if f.primary)

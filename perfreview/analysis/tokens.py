"""Per token: host latency, GPU time, compute windows; tokens/s per repeat."""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["run", "repeat", "token"]
# GPU rows the runner records to frame a token (from its three marks), not work of their own.
GPU_FRAME_NAMES = ("token", "input_copy")


def token_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, repeat, token): phase, host start/end and latency, GPU token time, and the
    compute window [compute_start, compute_end] on the device (GPU events when the run has them,
    else host ranges), which the sync-gap analysis uses."""
    ev = events[events["token"] >= 0]
    host = ev[ev["kind"] == "token"]
    out = host[KEYS + ["phase", "start_ns", "end_ns"]].rename(columns={"start_ns": "host_start", "end_ns": "host_end"})
    out = out.astype({"run": str, "phase": str})
    out["host_ns"] = out["host_end"] - out["host_start"]
    gpu = ev[ev["kind"] == "gpu_range"]
    g_tok = _by_token(gpu, "token", ["start_ns", "end_ns"], "gpu")
    g_in = _by_token(gpu, "input_copy", ["end_ns"], "gpu_in")
    h_in = _by_token(ev[ev["kind"] == "range"], "input_copy", ["end_ns"], "host_in")
    h_out = _by_token(ev[ev["kind"] == "range"], "output_copy", ["start_ns"], "host_out")
    for part in (g_tok, g_in, h_in, h_out):
        out = out.merge(part, on=KEYS, how="left")
    # Imported traces have no runner marks: the token's kernels bound its compute window.
    kern = ev[ev["kind"] == "kernel"]
    kw = kern.groupby([kern["run"].astype(str), kern["repeat"], kern["token"]], observed=True).agg(
        kern_start=("start_ns", "min"), kern_end=("end_ns", "max")).reset_index()
    out = out.merge(kw, on=KEYS, how="left")
    # A token without input copies (run_ahead) has no input_copy frame: its compute starts with it.
    out["gpu_in_end_ns"] = out["gpu_in_end_ns"].fillna(out["gpu_start_ns"])
    has_gpu = out["gpu_start_ns"].notna()
    has_kern = ~has_gpu & out["kern_start"].notna()
    out["gpu_ns"] = np.where(has_gpu, out["gpu_end_ns"] - out["gpu_start_ns"], out["kern_end"] - out["kern_start"])
    out["compute_start"] = np.select([has_gpu, has_kern], [out["gpu_in_end_ns"], out["kern_start"]],
                                     out["host_in_end_ns"])
    out["compute_end"] = np.select([has_gpu, has_kern], [out["gpu_end_ns"], out["kern_end"]], out["host_out_start_ns"])
    out["window_source"] = np.select([has_gpu, has_kern], ["cuda_event", "kernels"], "host")
    keep = KEYS + ["phase", "host_start", "host_end", "host_ns", "gpu_ns", "compute_start", "compute_end",
                   "window_source"]
    return out[keep].sort_values(KEYS).reset_index(drop=True)


def _by_token(rows: pd.DataFrame, name: str, cols: list[str], prefix: str) -> pd.DataFrame:
    sel = rows[rows["name"] == name]
    sel = sel.groupby([sel["run"].astype(str), sel["repeat"], sel["token"]], observed=True)[cols].first()
    sel = sel.reset_index()
    return sel.rename(columns={c: f"{prefix}_{c}" for c in cols})


def per_repeat(tokens: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    """Per (run, repeat): tokens/s over the phase's tokens (wall clock from the first token's start
    to the last token's end, host overhead included, as llama-bench times tg), the median
    host/GPU token latency, the median GPU compute per token, and the time to first token (the
    prefill's wall time)."""
    t = tokens[tokens["phase"] == phase]
    # The device's own part of a token: from the end of its input copies to its last work (CUDA
    # events only: host-timed windows would bring the host's jitter back in).
    compute = (t["compute_end"] - t["compute_start"]).where(t["window_source"] == "cuda_event")
    g = t.assign(compute_ns=compute).groupby(["run", "repeat"])
    out = pd.DataFrame({
        "tokens": g.size(),
        "span_ns": g["host_end"].max() - g["host_start"].min(),
        "median_token_ns": g["host_ns"].median(),
        "median_gpu_token_ns": g["gpu_ns"].median(),
        "median_gpu_compute_ns": g["compute_ns"].median(),
    })
    out["tokens_per_s"] = out["tokens"] * 1e9 / out["span_ns"]
    out = out.reset_index()
    # Time to first token: the prefill (the prompt processed; its last step yields the first token).
    pre = tokens[tokens["phase"] == "prefill"].groupby(["run", "repeat"])
    ttft = (pre["host_end"].max() - pre["host_start"].min()).rename("ttft_ns").reset_index()
    return out.merge(ttft, on=["run", "repeat"], how="left")

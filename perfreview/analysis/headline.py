"""Headline figures per repeat (perfreview.trace.figures.HEADLINES): tokens/s, token latency, GPU
time per token, time to first token, median sync gap, energy per token.

These go to the results store, the run table and the comparison's headline rows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from perfreview.analysis import gaps as gaps_mod
from perfreview.analysis import tokens as tokens_mod
from perfreview.trace.figures import HEADLINES
from perfreview.trace.meta import RunMeta


def per_repeat(events: pd.DataFrame, meta: RunMeta, toks: pd.DataFrame | None = None,
               gap_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per repeat of one run with every headline figure (NaN where not measured).
    ``toks``/``gap_rows``: the token table and sync gaps when the caller has them already."""
    toks = tokens_mod.token_table(events) if toks is None else toks
    rep = tokens_mod.per_repeat(toks)
    g = gaps_mod.per_repeat(gaps_mod.sync_gaps(events, toks) if gap_rows is None else gap_rows)
    out = rep.merge(g[["run", "repeat", "gap_ns"]], on=["run", "repeat"], how="left")
    # A run-ahead loop's host never waits for a token, so its host range is only the launch: the
    # token is ready when the device finishes it, and its latency is the GPU's time per token.
    out["median_token_ms"] = (out["median_gpu_token_ns"] if meta.runs_ahead else out["median_token_ns"]) / 1e6
    out["median_gpu_token_ms"] = out["median_gpu_token_ns"] / 1e6
    out["median_gpu_compute_ms"] = out["median_gpu_compute_ns"] / 1e6
    out["time_to_first_token_ms"] = out["ttft_ns"] / 1e6
    out["median_sync_gap_us"] = out["gap_ns"] / 1e3
    # Energy covers the whole repeat (prefill + decode): joules over every token of the repeat.
    all_tokens = toks.groupby("repeat").size()
    energy = {r.repeat: r.energy_j for r in meta.per_repeat}
    out["energy_j_per_token"] = [
        (energy[r] / all_tokens.get(r)) if energy.get(r) is not None else float("nan") for r in out["repeat"]
    ]
    return out[["repeat", *HEADLINES]].sort_values("repeat").reset_index(drop=True)


def records(events: pd.DataFrame, meta: RunMeta) -> list[dict[str, Any]]:
    """``per_repeat`` as plain dicts with NaN as None (for JSON and SQLite)."""
    frame = per_repeat(events, meta).astype(object)
    return frame.where(frame.notna(), None).to_dict("records")

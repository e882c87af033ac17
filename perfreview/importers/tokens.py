"""Imported traces: cutting a timeline into tokens at a marker, blocks of tokens as repeats, and
the metadata of an imported run. Shared by every importer (nsys SQLite, Chrome/Kineto JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfreview.trace import schema


FORMATS = {"nsys": "nsys-sqlite", "chrome": "chrome-trace"}


class TokenError(ValueError):
    pass


def block_repeats(events: pd.DataFrame, blocks: int, path: Path) -> pd.DataFrame:
    """Number consecutive runs of tokens as repeats 0..blocks-1 ("batch means"): one trace then
    gives ``blocks`` samples per figure for a comparison. Blocks of a trace are less independent
    than separate runs (slow drifts span blocks); the run's metadata says so."""
    n = int(events["token"].max()) + 1 if (events["token"] >= 0).any() else 0
    if blocks < 2 or n < 2 * blocks:
        raise TokenError(f"{path}: {n} tokens cannot make {blocks} blocks of at least 2 tokens")
    rep = np.where(events["token"] >= 0, events["token"].to_numpy() * blocks // n, -1)
    return events.assign(repeat=rep.astype("int16"))


def cut_tokens(frame: pd.DataFrame, marker: str, path: Path, source: str = "nsys") -> pd.DataFrame:
    """Token i runs from the i-th occurrence of ``marker`` (host side) to the next; every row gets
    its token (device rows through the API call that launched them, else by start time), host
    ``token`` rows frame them, and ranges nest one level below (unknown depths count as 0).
    ``frame`` has the schema's columns but not yet its dtypes (``schema.from_records`` follows)."""
    host = frame[frame["kind"].isin(["range", "api"])]  # host-side rows, whatever the trace names its tracks
    marks = host[host["name"] == marker].sort_values("start_ns")
    if len(marks) < 2:
        raise TokenError(f"{path}: token marker {marker!r} occurs {len(marks)} time(s); need one per token")
    starts = marks["start_ns"].to_numpy()
    token = np.searchsorted(starts, frame["start_ns"].to_numpy(), side="right") - 1
    by_corr = dict(zip(frame.loc[frame["kind"] == "api", "correlation"],
                       token[(frame["kind"] == "api").to_numpy()]))
    device = frame["kind"].isin(["kernel", "memcpy", "memset"]).to_numpy()
    corr_tok = frame["correlation"].map(by_corr).to_numpy(dtype=float)
    token = np.where(device & ~np.isnan(corr_tok), np.nan_to_num(corr_tok, nan=-1).astype(int), token)
    frame = frame.assign(token=token, phase=np.where(token >= 0, "decode", ""), repeat=0)
    ends = np.append(starts[1:], frame["end_ns"].max())
    track = str(marks["track"].iloc[0])
    tokens = pd.DataFrame({"kind": "token", "source": source, "name": "token", "track": track, "start_ns": starts,
                           "end_ns": ends, "token": np.arange(len(starts)), "phase": "decode", "repeat": 0, "depth": 0})
    nested = frame["kind"].isin(["range", "api"]) & (frame["token"] >= 0)
    frame.loc[nested, "depth"] = frame.loc[nested, "depth"].fillna(0).clip(lower=0) + 1
    return pd.concat([frame, tokens], ignore_index=True).sort_values("start_ns", kind="stable").reset_index(drop=True)


def meta_for(path: Path, run_id: str, events: pd.DataFrame, token_marker: str | None, fmt: str) -> dict[str, Any]:
    """A run.json for an imported trace: what is known, and what is not."""
    n_tokens = int((events["kind"] == "token").sum())
    repeats = sorted(int(r) for r in events.loc[events["kind"] == "token", "repeat"].unique()) or [0]
    return {
        "schema_version": schema.SCHEMA_VERSION, "tool": "perfreview", "tool_version": "import", "run": run_id,
        "imported_from": str(path), "format": FORMATS.get(fmt, fmt), "token_marker": token_marker,
        "preset": "imported", "config": "imported", "config_label": Path(path).stem, "switches": {},
        "switches_in_effect": {}, "switches_without_effect": [], "tokens": n_tokens, "prompt_tokens": 0,
        "repeats": len(repeats), "per_repeat": [{"repeat": r} for r in repeats], "warmup_tokens": 0,
        "timing": fmt, "repeats_are": ("blocks of consecutive tokens of one trace (batch means)"
                                          if len(repeats) > 1 else "one trace"),
        "device": {"name": f"from {fmt} trace", "backend": fmt}, "git": {"commit": None, "dirty": None},
        "host": {"hostname": "", "python": ""}, "clock": f"{fmt} trace clock, ns",
        "clock_alignment": "timestamps as the trace recorded them", "build": "",
        "not_measured": [{"what": "energy", "why": f"not in a {fmt} trace"}],
    }

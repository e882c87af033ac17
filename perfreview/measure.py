"""Run the workload and store what it produced: runner -> event table -> run folder -> store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfreview.analysis import headline
from perfreview.report import render
from perfreview.trace import runs, schema, store
from runner import config as cfg
from runner.session import RunSpec, Session, check_spec, run_configs


@dataclass
class Stored:
    path: Path
    meta: dict[str, Any]
    headlines: list[dict[str, Any]]


def measure(spec: RunSpec, configs: list[cfg.Config], out: Path, session: Session | None = None) -> list[Stored]:
    """Run ``configs`` (interleaved when several) and store each as a run under ``out``."""
    check_spec(spec)
    session = session or Session(spec.preset, spec.device, spec.seed)  # a missing device fails here, first
    runs.check_writable(out)  # before minutes of work, not after
    stored = []
    for result in run_configs(spec, configs, session):
        events = schema.from_records(result.rows, result.run_id)
        heads = headline.records(events, result.meta)
        path = runs.write_run(out, result.run_id, events, result.meta)
        store.register(store.store_path(out), path, result.meta, heads)
        stored.append(Stored(path, result.meta, heads))
    return stored


def summary(s: Stored) -> dict[str, Any]:
    """The stable ``--json`` object of one run."""
    tps = [h["tokens_per_s"] for h in s.headlines]
    gaps = [h["median_sync_gap_us"] for h in s.headlines if h["median_sync_gap_us"] is not None]
    energy = [h["energy_j_per_token"] for h in s.headlines if h["energy_j_per_token"] is not None]
    m = s.meta
    return {
        "run": str(s.path),
        "run_id": m["run"],
        "preset": m["preset"],
        "config": m["config"],
        "config_label": m["config_label"],
        "switches": m["switches"],
        "switches_without_effect": m["switches_without_effect"],
        "device": m["device"],
        "timing": m["timing"],
        "tokens": m["tokens"],
        "repeats": m["repeats"],
        "generated": m["generated"],
        "tokens_per_s": tps,
        "sync_gap_us_median": float(np.median(gaps)) if gaps else None,
        "time_to_first_token_ms": [h["time_to_first_token_ms"] for h in s.headlines],
        "energy_j_per_token_median": float(np.median(energy)) if energy else None,
        "git": m["git"],
    }


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def table(stored: list[Stored]) -> str:
    """llama-bench-like table of the runs (markdown through the template)."""
    rows = []
    for s in stored:
        m = s.meta
        model = m["model"]
        tps = np.array([h["tokens_per_s"] for h in s.headlines], dtype=float)
        std = tps.std(ddof=1) if len(tps) > 1 else 0.0
        dev = m["device"]
        rows.append({
            "model": f"llama {m['preset']} F16",
            "size": _size(model["params"] * 2),
            "params": f"{model['params'] / 1e9:.2f} B" if model["params"] >= 1e8 else f"{model['params'] / 1e6:.2f} M",
            "backend": f"CUDA ({dev['name']})" if dev["backend"] == "cupy" else "CPU (NumPy)",
            "config": m["config_label"],
            "timing": m["timing"],
            "test": f"tg{m['tokens']}",
            "tps": f"{tps.mean():.2f} ± {std:.2f}",
        })
    git = stored[0].meta["git"] if stored else {}
    commit = (git.get("commit") or "unknown")[:10] + ("-dirty" if git.get("dirty") else "")
    footer = (f"perfreview {stored[0].meta['tool_version']}, commit {commit}, {len(stored[0].headlines)} "
              "repeats (mean ± sample stddev of per-repeat t/s)")
    return render.render("run_table.md.j2", rows=rows, footer=footer)

"""Run the workload and store what it produced: runner -> event table -> run folder -> store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from perfreview.analysis import headline
from perfreview.trace import runs, schema, store
from perfreview.flows.store import reconcile
from perfreview.trace.meta import RunMeta
from runner import config as cfg
from runner.loop import Session, run_configs
from runner.spec import RunSpec, check_spec


@dataclass
class Stored:
    path: Path
    meta: RunMeta
    headlines: list[dict[str, Any]]


def save(out: Path, events: Any, meta: RunMeta, files: dict[str, str] | None = None) -> Stored:
    """Write the run folder, then register it in the store (a run is listed only once complete).
    A kill between the two leaves a complete run that the next command adopts (flows.store)."""
    reconcile(out)  # what an earlier crash left
    heads = headline.records(events, meta)
    path = runs.write_run(out, events, meta, files)
    store.register(store.store_path(out), path, meta, heads)
    return Stored(path, meta, heads)


def measure(spec: RunSpec, configs: list[cfg.Config], out: Path, session: Session | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[Stored]:
    """Run ``configs`` (in rounds when several) and store each as a run under ``out``."""
    check_spec(spec)
    session = session or Session(spec.preset, spec.device, spec.seed, spec.host_wait)  # a missing device fails here
    runs.check_writable(out)  # before minutes of work, not after
    return [save(out, schema.from_records(result.rows, result.run_id), result.meta)
            for result in run_configs(spec, configs, session, progress)]


def summary(s: Stored) -> dict[str, Any]:
    """The stable ``--json`` object of one run."""
    tps = [h["tokens_per_s"] for h in s.headlines]
    gaps = [h["median_sync_gap_us"] for h in s.headlines if h["median_sync_gap_us"] is not None]
    energy = [h["energy_j_per_token"] for h in s.headlines if h["energy_j_per_token"] is not None]
    m = s.meta
    return {
        "run": str(s.path), "run_id": m.run, "preset": m.preset, "config": m.config,
        "config_label": m.config_label, "switches": m.switches, "switches_without_effect": m.switches_without_effect,
        "device": m.device, "timing": m.timing, "tokens": m.tokens, "repeats": m.repeats, "generated": m.generated,
        "tokens_per_s": tps, "sync_gap_us_median": float(np.median(gaps)) if gaps else None,
        "time_to_first_token_ms": [h["time_to_first_token_ms"] for h in s.headlines],
        "energy_j_per_token_median": float(np.median(energy)) if energy else None, "git": m.git,
    }

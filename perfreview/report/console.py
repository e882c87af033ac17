"""Everything perfreview prints to the terminal (besides --json payloads and errors): one place, so
the wording stays consistent and the CLI only chooses what to print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perfreview.report import render


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def run_table(stored: list[Any]) -> str:
    """llama-bench-like table of stored runs (``flows.measure.Stored``), markdown through the template."""
    rows = []
    for s in stored:
        m = s.meta
        params = m.model.get("params", 0)
        tps = np.array([h["tokens_per_s"] for h in s.headlines], dtype=float)
        std = tps.std(ddof=1) if len(tps) > 1 else 0.0
        dev = m.device
        rows.append({
            "model": render.model_label(m), "size": _size(params * 2),
            "params": f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.2f} M",
            "backend": f"CUDA ({dev['name']})" if dev.get("backend") == "cupy" else "CPU (NumPy)",
            "config": m.config_label, "timing": m.timing, "test": f"tg{m.tokens}",
            "tps": f"{tps.mean():.2f} ± {std:.2f}",
        })
    first = stored[0].meta
    footer = (f"perfreview {first.tool_version}, commit {render.commit(first.git)}, {len(stored[0].headlines)} "
              "repeats (mean ± sample stddev of per-repeat t/s)")
    return render.render("run_table.md.j2", rows=rows, footer=footer)


def stored_runs(stored: list[Any]) -> str:
    return run_table(stored) + "\n" + "\n".join(f"stored: {s.path}" for s in stored)


def check_lines(res: dict[str, Any]) -> str:
    lines = [f"{label}: {'ok' if r['ok'] else 'FAILED'}  max|Δ|/std {r['max_err_over_std']:.2e}  "
             f"rel L2 {r['rel_l2']:.2e}  greedy agrees on {r['greedy_agree_decisive']}/{r['decisive_steps']} "
             f"decisive steps" for label, r in res["configs"].items()]
    lines.append(f"same tokens within each kernel family: {res['same_tokens']}")
    lines.append("CHECK PASSED" if res["ok"] else "CHECK FAILED")
    return "\n".join(lines)


def run_list(found: list[dict[str, Any]]) -> str:
    lines = [f"{r['run']}  {r['preset']}  {r['config_label']}  build={r['build'] or '-'}  {r['device']}  "
             f"{r['timing']}  tg{r['tokens']} x{r['repeats']}  {(r['git_commit'] or '')[:10]}" for r in found]
    return "\n".join(lines) or "no runs"


def review_summary(payload: dict[str, Any]) -> str:
    """The verdict, warnings, headline rows and every real change."""
    d = payload["design"]
    lines = [f"verdict: {payload['verdict']}  (Δ = ±{payload['threshold']:.1%}, {d['unit']}, "
             f"primary α = {d['alpha_primary']:g}" + (f", look {d['look']}" if d.get("look") else "") + ")"]
    if d.get("stopped_because"):
        lines.append(f"stopped because {d['stopped_because']}")
    lines += [f"warning: {w}" for w in payload["warnings"]]
    for r in payload["rows"]:
        if r["kind"] == "headline" or r["verdict"] in ("improved", "regressed"):
            ci = render.pct_ci(r["ratio"], r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else "[n/a]"
            metric = f" ({r['metric']})" if r["metric"] else ""
            lines.append(f"{r['name']}{metric}: {r['a']:.4g} -> {r['b']:.4g} {r['unit']}  {ci}  {r['verdict']}")
    if payload["report"]:
        lines.append(f"report: {payload['report']}")
    return "\n".join(lines)


def look_line(look: Any) -> str:
    """Progress of a sequential ``ab``: one line per look."""
    row = look.primary
    where = (f"tokens/s {render.pct_ci(row.ratio, row.ci_low, row.ci_high)} {row.verdict}" if row is not None
             else "tokens/s n/a")
    return f"look {look.number}: {look.rounds} rounds, {where} ({look.seconds:.0f} s measured)"


def imported(path: Path, events: int, tokens: int) -> str:
    return f"imported {events} events, {tokens} tokens: {path}"


def imported_llama_bench(path: Path, tests: list[dict[str, Any]]) -> str:
    """One line per test: mean t/s ± SD over its repetitions (as llama-bench prints them)."""
    lines = [f"imported {len(tests)} llama-bench tests: {path}"]
    for t in tests:
        n = f"{t['repetitions']} repetitions" + ("" if t["repetitions_in_file"] else " (assumed: not in the file)")
        lines.append(f"  {t['test']}: {t['mean_ts']:.2f} ± {t['stddev_ts']:.2f} t/s, {n}")
    return "\n".join(lines)


def wrote(what: str, path: Any, hint: str = "") -> str:
    return f"{what}: {path}" + (f" ({hint})" if hint else "")


def doctor_lines(checks: list[Any]) -> str:
    """``perfreview doctor``: one line per check, advice under the ones that hurt measurements."""
    mark = {True: "ok  ", False: "WARN", None: "    "}
    lines = []
    for c in checks:
        lines.append(f"{mark[c.ok]}  {c.what}: {c.value}")
        if c.advice:
            lines.append(f"        -> {c.advice}")
    return "\n".join(lines)


def store_report(r: Any) -> str:
    lines = [f"adopted (complete runs a crash left unregistered): {len(r.adopted)}",
             f"removed (half-written folders of writers that are gone): {len(r.removed_tmp)}",
             f"store rows whose folder is gone: {len(r.missing)}" + (f", pruned {len(r.pruned)}" if r.pruned else
                                                                     (" (perfreview store prune removes them)"
                                                                      if r.missing else "")),
             f"unreadable run folders: {len(r.unreadable)}"]
    lines += [f"  {name}" for name in r.unreadable]
    return "\n".join(lines)


class Progress:
    """``repeat 3/10 (2.1 s)`` lines on stderr, only once a command has run for a second (quick
    ones stay quiet), never under --json or --quiet."""

    def __init__(self, what: str, quiet: bool, every_s: float = 0.0) -> None:
        import time

        self.what, self.quiet, self.t0, self.clock = what, quiet, time.monotonic(), time.monotonic
        self.every_s, self.last = every_s, -1e9  # at most a line per every_s (a big file's batches)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        self.say(f"{self.what} {done}/{total}")

    def step(self, what: str) -> None:
        """A stage of a long command (``report: drawing the timeline (3.2 s)``)."""
        self.say(f"{self.what}: {what}")

    def say(self, text: str) -> None:
        import sys

        elapsed = self.clock() - self.t0
        if not self.quiet and elapsed >= 1.0:
            print(f"{text} ({elapsed:.1f} s)", file=sys.stderr, flush=True)

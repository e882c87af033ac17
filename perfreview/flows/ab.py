"""``perfreview ab``: measure two sides interleaved, so machine drift hits both alike.

A side is ``config=NAME[,switch=value...]`` (this checkout's code; the sides run in one process,
in rounds of one repeat each) or ``rev=<git rev>[,config=...]`` (that revision checked out into a
temporary git worktree and run with its own code, in blocks of repeats alternating between the
revisions: "compare two builds").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from perfreview.compare import comparison, stats
from perfreview.flows import measure
from perfreview.trace import runs as runs_mod
from perfreview.trace import schema
from perfreview.trace.meta import PROJECT_ROOT
from perfreview.trace.runs import Run
from runner import config as cfg
from runner.affinity import pinned
from runner.loop import Interleaved
from runner.spec import RunSpec

PROCESSES = 10  # processes per rev side, in a random alternation: the process is the unit
DEFAULT_BUDGET_S = 300.0


@dataclass
class Sides:
    """What ``ab`` measured: run folders per side, and how the measurement ended."""

    paths: list[list[Path]]
    processes: bool = False  # rev sides: each run is one process, paired by position
    alpha_primary: float = stats.ALPHA_PRIMARY
    look: int | None = None
    stopped_because: str = ""


@dataclass
class Look:
    """One sequential look, for the progress line."""

    number: int
    rounds: int
    seconds: float
    primary: comparison.Row | None


class AbError(ValueError):
    pass


def parse(side: str) -> tuple[str | None, str]:
    """``rev=abc,config=optimized`` -> ("abc", "config=optimized"); ``config=...`` -> (None, ...)."""
    parts = [p.strip() for p in side.split(",") if p.strip()]
    rev = next((p.split("=", 1)[1] for p in parts if p.startswith("rev=")), None)
    rest_parts = [p for p in parts if not p.startswith("rev=")]
    if not rest_parts or ("=" in rest_parts[0] and not rest_parts[0].startswith("config=")):
        rest_parts.insert(0, "config=baseline")  # switches alone apply to the baseline
    rest = ",".join(rest_parts)
    if rev is not None and not rev:
        raise AbError(f"side {side!r}: rev= needs a git revision")
    cfg.parse_side(rest)  # validate now, before any work
    return rev, rest


def run_sides(a: str, b: str, spec: RunSpec, out: Path, aa: bool = False, sequential: bool = False,
              threshold: float = stats.DEFAULT_THRESHOLD, budget_s: float = DEFAULT_BUDGET_S,
              progress: Callable[[Look], None] | None = None, processes: int = PROCESSES) -> Sides:
    """Run side A, side B and, with ``aa``, a second A (A' in every round: the negative control).
    ``sequential``: rounds until the primary figure is decided at a look (10, 20, 40 ... rounds) or
    the next look would pass ``budget_s`` seconds of measuring; else ``spec.repeats`` rounds."""
    sides = [parse(a), parse(b)] + ([parse(a)] if aa else [])
    if any(rev is not None for rev, _ in sides):
        return Sides(_run_revs([(rev or "HEAD", conf) for rev, conf in sides], spec, out, processes), processes=True)
    configs = [cfg.parse_side(conf) for _, conf in sides]
    if not sequential:
        return Sides([[s.path] for s in measure.measure(spec, configs, out)])
    return _sequential(spec, configs, out, threshold, budget_s, progress)


def in_memory(rounds: Interleaved) -> list[Run]:
    """The runs so far, as Run objects that were never written (for a look)."""
    return [Run(Path(r.run_id), r.meta, schema.from_records(r.rows, r.run_id)) for r in rounds.results()]


def _sequential(spec: RunSpec, configs: list[cfg.Config], out: Path, threshold: float, budget_s: float,
                progress: Callable[[Look], None] | None) -> Sides:
    runs_mod.check_writable(out)
    rounds = Interleaved(spec, configs)
    why, look = "", 0
    for look, n in enumerate(stats.LOOKS, start=1):
        rounds.run(n - rounds.rounds)
        every = in_memory(rounds)
        result = comparison.compare(every[:1], every[1:2], threshold, alpha_primary=stats.ALPHA_POCOCK, look=look)
        seconds = comparison.seconds_per_round(every, comparison.ROUNDS) or 0.0  # A, B and A' when present
        if progress:
            progress(Look(look, n, seconds * n, result.primary))
        primary = result.primary
        why = stats.stop_reason(primary.verdict if primary else stats.INCONCLUSIVE, n, seconds, budget_s)
        if why:
            break
    paths = [[measure.save(out, schema.from_records(r.rows, r.run_id), r.meta).path] for r in rounds.results()]
    return Sides(paths, alpha_primary=stats.ALPHA_POCOCK, look=look, stopped_because=why)


def _run_revs(sides: list[tuple[str, str]], spec: RunSpec, out: Path, processes: int) -> list[list[Path]]:
    """Each side as ``processes`` processes (at least one repeat each), in a seeded random order per
    round of processes; run i of each side is the pair of round i."""
    sizes = [max(1, spec.repeats // processes)] * processes
    rng = np.random.default_rng(spec.order_seed)
    with tempfile.TemporaryDirectory(prefix="perfreview-ab-") as tmp, pinned(spec.cpu):
        trees: dict[str, Path] = {}
        try:
            for rev, _ in sides:
                if rev not in trees:
                    trees[rev] = _worktree(rev, Path(tmp) / f"tree{len(trees)}")
            paths: list[list[Path]] = [[] for _ in sides]
            for size in sizes:
                for side in rng.permutation(len(sides)):
                    rev, conf = sides[int(side)]
                    child = replace(spec, repeats=size, build=spec.build or f"rev={rev}")
                    paths[int(side)].append(_run_in(trees[rev], rev, child.cli_args(conf, str(Path(out).resolve()))))
            return paths
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=PROJECT_ROOT,
                               capture_output=True, check=False)


def _worktree(rev: str, path: Path) -> Path:
    done = subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["git gave no reason"]
        raise AbError(f"rev={rev}: cannot check it out ({last[0]})")
    return path


def _run_in(tree: Path, rev: str, args: list[str]) -> Path:
    """``perfreview run`` with the revision's own code (its tree first on sys.path)."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from perfreview.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          cwd=tree)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AbError(f"rev={rev}: its run failed: {last}")
    return Path(json.loads(done.stdout)["run"])

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
from dataclasses import replace
from pathlib import Path

from perfreview.flows import measure
from perfreview.trace.meta import PROJECT_ROOT
from runner import config as cfg
from runner.affinity import pinned
from runner.spec import RunSpec

BLOCKS = 5  # processes per rev side: A B A B ... blocks of repeats


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


def run_sides(a: str, b: str, spec: RunSpec, out: Path, aa: bool = False) -> list[list[Path]]:
    """Run folders of side A, side B and, with ``aa``, a second A (interleaved A B A' ...), whose
    comparison with A measures this machine's noise."""
    sides = [parse(a), parse(b)] + ([parse(a)] if aa else [])
    if all(rev is None for rev, _ in sides):
        stored = measure.measure(spec, [cfg.parse_side(conf) for _, conf in sides], out)
        return [[s.path] for s in stored]
    return _run_revs([(rev or "HEAD", conf) for rev, conf in sides], spec, out)


def _run_revs(sides: list[tuple[str, str]], spec: RunSpec, out: Path) -> list[list[Path]]:
    blocks = max(1, min(BLOCKS, spec.repeats))
    sizes = [spec.repeats // blocks + (i < spec.repeats % blocks) for i in range(blocks)]
    with tempfile.TemporaryDirectory(prefix="perfreview-ab-") as tmp, pinned(spec.cpu):
        trees: dict[str, Path] = {}
        try:
            for rev, _ in sides:
                if rev not in trees:
                    trees[rev] = _worktree(rev, Path(tmp) / f"tree{len(trees)}")
            paths: list[list[Path]] = [[] for _ in sides]
            for n in sizes:
                for side, (rev, conf) in enumerate(sides):
                    child = replace(spec, repeats=n, build=spec.build or f"rev={rev}")
                    paths[side].append(_run_in(trees[rev], rev, child.cli_args(conf, str(Path(out).resolve()))))
            return paths
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=PROJECT_ROOT,
                               capture_output=True, check=False)


def _worktree(rev: str, path: Path) -> Path:
    done = subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AbError(f"rev={rev}: cannot check it out ({done.stderr.strip().splitlines()[-1:] or '?'})")
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

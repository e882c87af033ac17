"""The results store: one SQLite file indexing runs, with per-repeat headline figures, so that
listings and ``compare --a build=X --b build=Y`` need no Parquet reads.

A run is registered only after its files are complete, in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable

from perfreview.trace.meta import RunMeta

STORE_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run TEXT PRIMARY KEY, path TEXT NOT NULL, created TEXT, build TEXT, git_commit TEXT,
  git_dirty INTEGER, config TEXT, config_label TEXT, switches TEXT, preset TEXT, device TEXT,
  backend TEXT, timing TEXT, tokens INTEGER, repeats INTEGER
);
CREATE TABLE IF NOT EXISTS figures (
  run TEXT NOT NULL REFERENCES runs(run), repeat INTEGER NOT NULL, figure TEXT NOT NULL, value REAL,
  PRIMARY KEY (run, repeat, figure)
);
"""
# One row per (run, repeat, figure) of perfreview.trace.figures.HEADLINES: a new figure needs no
# new column, so stores written by older versions stay readable.

# Filter keys a user may give (``build=X``) -> how they match.
FILTERS = ("build", "commit", "config", "config_label", "preset", "device", "timing", "run")


class StoreError(Exception):
    pass


def store_path(runs_root: Path) -> Path:
    return Path(runs_root) / STORE_NAME


def _connect(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(path, timeout=30)  # parallel writers wait for each other, not fail
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a usable results store ({exc})") from None
    return con


def register(path: Path, run_dir: Path, meta: RunMeta, headlines: Iterable[dict[str, Any]]) -> None:
    """Index a complete run folder with its per-repeat headline figures, in one transaction."""
    git = meta.git
    row = (
        meta.run, str(Path(run_dir).resolve()), meta.created, meta.build, git.get("commit"),
        None if git.get("dirty") is None else int(git["dirty"]), meta.config, meta.config_label,
        json.dumps(meta.switches, sort_keys=True), meta.preset, meta.device.get("name"),
        meta.device.get("backend"), meta.timing, meta.tokens, meta.repeats,
    )
    values = [(meta.run, h["repeat"], k, v) for h in headlines for k, v in h.items() if k != "repeat"]
    with closing(_connect(path)) as con, con:
        con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        con.execute("DELETE FROM figures WHERE run = ?", (meta.run,))
        con.executemany("INSERT INTO figures VALUES (?,?,?,?)", values)


def find(path: Path, **filters: str) -> list[dict[str, Any]]:
    """Runs matching every filter, oldest first. ``build`` matches the label or a commit prefix."""
    if not Path(path).is_file():
        raise StoreError(f"{path}: no results store here (run 'perfreview run --out' first)")
    clauses, args = [], []
    for key, value in filters.items():
        if key not in FILTERS:
            raise StoreError(f"unknown filter {key!r} (known: {', '.join(FILTERS)})")
        if key == "build":
            clauses.append("(build = ? OR git_commit LIKE ?)")
            args += [value, value + "%"]
        elif key == "commit":
            clauses.append("git_commit LIKE ?")
            args.append(value + "%")
        else:
            clauses.append(f"{key} = ?")
            args.append(value)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY created, run"
    with closing(_connect(Path(path))) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]


def repeats(path: Path, run: str) -> list[dict[str, Any]]:
    """Per repeat of ``run``: ``{"repeat": r, figure: value, ...}``."""
    with closing(_connect(Path(path))) as con:
        rows = con.execute("SELECT repeat, figure, value FROM figures WHERE run = ? ORDER BY repeat", (run,))
        out: dict[int, dict[str, Any]] = {}
        for rep, fig, value in rows:
            out.setdefault(rep, {"repeat": rep})[fig] = value
        return list(out.values())


def registered(path: Path) -> dict[str, str]:
    """run id -> folder of every run in the store (none when there is no store yet)."""
    if not Path(path).is_file():
        return {}
    with closing(_connect(Path(path))) as con:
        return dict(con.execute("SELECT run, path FROM runs"))


def remove(path: Path, run_ids: Iterable[str]) -> None:
    with closing(_connect(Path(path))) as con, con:
        for run in run_ids:
            con.execute("DELETE FROM figures WHERE run = ?", (run,))
            con.execute("DELETE FROM runs WHERE run = ?", (run,))

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

STORE_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run TEXT PRIMARY KEY, path TEXT NOT NULL, created TEXT, build TEXT, git_commit TEXT,
  git_dirty INTEGER, config TEXT, config_label TEXT, switches TEXT, preset TEXT, device TEXT,
  backend TEXT, timing TEXT, tokens INTEGER, repeats INTEGER
);
CREATE TABLE IF NOT EXISTS repeats (
  run TEXT NOT NULL REFERENCES runs(run), repeat INTEGER NOT NULL, tokens_per_s REAL,
  median_token_ms REAL, time_to_first_token_ms REAL, median_sync_gap_us REAL, energy_j_per_token REAL,
  PRIMARY KEY (run, repeat)
);
"""

# Filter keys a user may give (``build=X``) -> how they match.
FILTERS = ("build", "commit", "config", "config_label", "preset", "device", "timing", "run")


class StoreError(Exception):
    pass


def store_path(runs_root: Path) -> Path:
    return Path(runs_root) / STORE_NAME


def _connect(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(path)
        con.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a usable results store ({exc})") from None
    return con


def register(path: Path, run_dir: Path, meta: dict[str, Any], headlines: Iterable[dict[str, Any]]) -> None:
    git = meta.get("git") or {}
    row = (
        meta["run"], str(Path(run_dir).resolve()), meta.get("created"), meta.get("build") or "",
        git.get("commit"), None if git.get("dirty") is None else int(git["dirty"]), meta.get("config"),
        meta.get("config_label"), json.dumps(meta.get("switches", {}), sort_keys=True), meta.get("preset"),
        (meta.get("device") or {}).get("name"), (meta.get("device") or {}).get("backend"), meta.get("timing"),
        meta.get("tokens"), meta.get("repeats"),
    )
    with closing(_connect(path)) as con, con:
        con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        con.execute("DELETE FROM repeats WHERE run = ?", (meta["run"],))
        con.executemany(
            "INSERT INTO repeats VALUES (?,?,?,?,?,?,?)",
            [(meta["run"], h["repeat"], h.get("tokens_per_s"), h.get("median_token_ms"),
              h.get("time_to_first_token_ms"), h.get("median_sync_gap_us"), h.get("energy_j_per_token"))
             for h in headlines],
        )


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
    with closing(_connect(Path(path))) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM repeats WHERE run = ? ORDER BY repeat", (run,))]

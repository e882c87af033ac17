"""A run on disk: ``<root>/<run id>/events.parquet`` (the event table) and ``run.json`` (metadata).

Writes go to a hidden temporary folder renamed into place at the end, so a failed write leaves
nothing half-written. Reads check everything and fail with one line naming the file and problem.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from perfreview.trace import schema
from perfreview.trace.meta import MetaError, RunMeta
from perfreview.trace.store import STORE_NAME

EVENTS = "events.parquet"
META = "run.json"
TMP_PREFIX = ".tmp-"
WRITER = "writer.pid"


class RunError(Exception):
    """A run that cannot be read or written; ``str()`` is one line naming the file and problem."""


@dataclass
class Run:
    path: Path
    meta: RunMeta
    events: pd.DataFrame
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.meta.run

    def derived(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run: the comparison, the review and the plots all need the same
        token table and gaps, and the event table does not change once read."""
        if name not in self._derived:
            self._derived[name] = compute()
        return self._derived[name]


def check_writable(root: Path) -> None:
    """Fail early (before any work) when ``root`` cannot hold runs."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{root}: cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(f"{root}: output folder is not writable")


def check_run_id(root: Path, run_id: str) -> None:
    """A run id is one folder name inside ``root``: no separator (``--name ../x`` would write beside the
    runs), no leading dot (hidden, and ``.tmp-`` folders are what store check cleans up), not the store's file."""
    if not run_id or Path(run_id).name != run_id or "\\" in run_id or run_id.startswith("."):
        raise RunError(f"{Path(root)}: run id {run_id!r} is not one folder name (no '/', not starting with '.')")
    if run_id == STORE_NAME:
        raise RunError(f"{Path(root)}: run id {run_id!r} is the runs folder's store")


def write_run(root: Path, events: pd.DataFrame, meta: RunMeta, files: dict[str, str] | None = None) -> Path:
    """``<root>/<meta.run>/``: the event table, run.json and ``files`` (name -> text: what a producer
    keeps beside the events, e.g. an imported llama-bench result), complete or not at all."""
    root = Path(root)
    run_id = meta.run
    check_run_id(root, run_id)
    check_writable(root)
    final = root / run_id
    if final.exists():
        raise RunError(f"{final}: a run with this id exists already")
    tmp = root / f"{TMP_PREFIX}{run_id}"
    try:
        tmp.mkdir()
        (tmp / WRITER).write_text(str(os.getpid()))  # whose it is: a crash leaves it for store check
        schema.normalize(events).to_parquet(tmp / EVENTS, index=False)
        (tmp / META).write_text(json.dumps(meta.to_json(), indent=1, default=_json_default) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        (tmp / WRITER).unlink()
        tmp.rename(final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise RunError(f"{final}: cannot write the run ({exc.strerror or exc})") from None
        raise
    return final


def read_meta(path: Path) -> RunMeta:
    path = _run_dir(Path(path))
    meta_file = path / META
    if not meta_file.is_file():
        raise RunError(f"{meta_file}: missing (not a perfreview run folder)")
    try:
        data = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RunError(f"{meta_file}: not valid JSON ({type(exc).__name__})") from None
    try:
        return RunMeta.from_json(data, str(meta_file))
    except MetaError as exc:
        raise RunError(str(exc)) from None


def read_run(path: Path) -> Run:
    path = _run_dir(Path(path))
    meta = read_meta(path)
    events_file = path / EVENTS
    if not events_file.is_file():
        raise RunError(f"{events_file}: missing")
    try:
        events = pd.read_parquet(events_file)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise RunError(f"{events_file}: not a readable Parquet file ({type(exc).__name__})") from None
    try:
        events = schema.normalize(events)
    except schema.SchemaError as exc:
        raise RunError(f"{events_file}: {exc}") from None
    return Run(path, meta, events)


def read_attachment(path: Path, name: str) -> Any | None:
    """The JSON file ``name`` kept beside a run's events, or None when the run has none."""
    file = _run_dir(Path(path)) / name
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RunError(f"{file}: not valid JSON ({type(exc).__name__})") from None


def _run_dir(path: Path) -> Path:
    if path.name in (META, EVENTS):
        path = path.parent
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunError(f"{path}: not a run folder")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in run.json")


def leftovers(root: Path) -> list[Path]:
    """Temporary run folders whose writer is gone (killed mid-write): safe to remove. A folder whose
    writer still runs (a parallel ``run``) is not listed."""
    out = []
    for tmp in Path(root).glob(f"{TMP_PREFIX}*"):
        try:
            pid = int((tmp / WRITER).read_text())
        except (OSError, ValueError):
            pid = -1
        if pid <= 0 or not _alive(pid):
            out.append(tmp)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_folders(root: Path) -> list[Path]:
    """Complete run folders under ``root`` (both files present)."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / META).is_file() and (p / EVENTS).is_file()) if Path(root).is_dir() else []

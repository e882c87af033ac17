"""Keeping the runs folder and its store in step after a crash: a run killed after its folder was
renamed into place but before it was registered is adopted (registered now); a temporary folder
whose writer is gone is removed; store rows whose folders are gone are pruned on request. Every
command that writes or lists runs calls :func:`reconcile` first."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from perfreview.analysis import headline
from perfreview.trace import runs, store


@dataclass
class StoreReport:
    adopted: list[str] = field(default_factory=list)  # complete runs that had no store row
    removed_tmp: list[str] = field(default_factory=list)  # half-written folders of dead writers
    missing: list[str] = field(default_factory=list)  # store rows whose folder is gone
    pruned: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders that look like runs but do not read


def reconcile(root: Path, prune: bool = False) -> StoreReport:
    root = Path(root)
    report = StoreReport()
    if not root.is_dir():
        return report
    for tmp in runs.leftovers(root):
        shutil.rmtree(tmp, ignore_errors=True)
        report.removed_tmp.append(tmp.name)
    db = store.store_path(root)
    known = store.registered(db)
    for folder in runs.run_folders(root):
        if folder.name in known:
            continue
        try:
            run = runs.read_run(folder)
        except runs.RunError:
            report.unreadable.append(folder.name)
            continue
        store.register(db, folder, run.meta, headline.records(run.events, run.meta))
        report.adopted.append(run.id)
    report.missing = [r for r, p in known.items() if not (Path(p) / runs.META).is_file()]
    if prune and report.missing:
        store.remove(db, report.missing)
        report.pruned = list(report.missing)
    return report

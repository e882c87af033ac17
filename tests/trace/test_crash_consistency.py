"""The runs folder and its store after real kill -9s of writer processes at chosen points: the next
command adopts a complete run that was never registered and removes a dead writer's half-written
folder; a live writer's folder is left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from perfreview.cli import main
from perfreview.trace import runs, store

ROOT = Path(__file__).resolve().parents[2]

WRITE = """
import os, signal, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import pandas as pd
from perfreview.trace import runs
from synthetic import make_run
point = {point!r}
if point == "during_write":  # die while the event table is being written
    real = pd.DataFrame.to_parquet
    def dying(self, *a, **k):
        real(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    pd.DataFrame.to_parquet = dying
make_run({out!r}, "r1", repeats=3, tokens=4)  # writes the folder; the store is not touched yet
os.kill(os.getpid(), signal.SIGKILL)  # "after_rename": killed before registering
"""


def kill_at(point: str, out: Path) -> int:
    code = WRITE.format(root=str(ROOT), tests=str(ROOT / "tests"), point=point, out=str(out))
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode


def test_kill_after_rename_is_adopted_by_the_next_command(tmp_path, capsys):
    assert kill_at("after_rename", tmp_path) == -signal.SIGKILL
    assert (tmp_path / "r1" / "run.json").is_file() and store.registered(store.store_path(tmp_path)) == {}
    assert main(["list", "--out", str(tmp_path), "--json"]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)] == ["r1"]


def test_kill_during_write_leaves_nothing_visible_and_is_cleaned(tmp_path, capsys):
    assert kill_at("during_write", tmp_path) == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir()] == [".tmp-r1"] and not (tmp_path / "r1").exists()
    assert main(["store", "check", "--runs-dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["removed_tmp"] == [".tmp-r1"] and report["adopted"] == []
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert store.registered(store.store_path(tmp_path)) == {}  # nothing half-written became a run


def test_a_live_writers_folder_is_left_alone(tmp_path):
    tmp = tmp_path / ".tmp-live"
    tmp.mkdir()
    (tmp / runs.WRITER).write_text(str(os.getpid()))  # this process: alive
    assert runs.leftovers(tmp_path) == []


def test_prune_removes_rows_whose_folders_are_gone(tmp_path, capsys):
    assert kill_at("after_rename", tmp_path) == -signal.SIGKILL
    assert main(["list", "--out", str(tmp_path)]) == 0  # adopts r1
    import shutil

    shutil.rmtree(tmp_path / "r1")
    capsys.readouterr()
    assert main(["store", "check", "--runs-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["r1"]
    assert main(["store", "prune", "--runs-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pruned"] == ["r1"]
    assert store.registered(store.store_path(tmp_path)) == {}

from __future__ import annotations

import pandas as pd
import pytest

from perfreview.trace import runs, schema
from perfreview.trace.meta import RunMeta


def test_from_records_fills_columns_left_out_by_some_rows():
    rows = [
        {"kind": "range", "name": "a", "track": "host/main", "source": "host", "start_ns": 0, "end_ns": 5, "depth": 1},
        {"kind": "gpu_range", "name": "a", "track": "gpu0/stream0", "source": "cuda_event", "stream": 0,
         "start_ns": 1, "end_ns": 4},
    ]
    ev = schema.from_records(rows, "r1")
    assert list(ev["stream"]) == [-1, 0] and list(ev["depth"]) == [1, -1]
    assert str(ev["name"].dtype) == "category"


def test_normalize_leaves_its_input_as_it_was():
    """normalize shallow-copies (10M-row imports) and only replaces columns: the caller's frame keeps
    its NaNs, dtypes and columns."""
    rows = [{"run": "r", "kind": "range", "name": "a", "track": "host/main", "source": "host", "start_ns": 0,
             "end_ns": 5, "depth": float("nan"), "token": 1.0}]
    frame = pd.DataFrame(rows)
    before = frame.copy(deep=True)
    out = schema.normalize(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert out["depth"].tolist() == [-1] and list(out.columns) == list(schema.COLUMNS)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["name"]), "missing column"),
    (lambda f: f.assign(extra=1), "unknown column"),
    (lambda f: f.assign(end_ns=-5), "before start"),
    (lambda f: f.assign(kind="bogus"), "unknown value"),
])
def test_normalize_rejects_bad_tables(change, message):
    good = schema.from_records([{"kind": "range", "name": "x", "track": "t", "source": "host",
                                 "start_ns": 0, "end_ns": 1}], "r")
    with pytest.raises(schema.SchemaError, match=message):
        schema.normalize(change(good))


def test_corrupt_run_files_one_line_errors(tmp_path):
    ev = schema.from_records([{"kind": "range", "name": "x", "track": "t", "source": "host",
                               "start_ns": 0, "end_ns": 1}], "r")
    path = runs.write_run(tmp_path, ev, RunMeta(run="r"))
    assert runs.read_run(path).events.shape[0] == 1
    (path / "events.parquet").write_bytes(b"garbage")
    with pytest.raises(runs.RunError, match="events.parquet: not a readable Parquet"):
        runs.read_run(path)
    (path / "run.json").write_text("{")
    with pytest.raises(runs.RunError, match="run.json: not valid JSON"):
        runs.read_meta(path)
    with pytest.raises(runs.RunError, match="no such run folder"):
        runs.read_run(tmp_path / "nope")


def test_failed_write_leaves_nothing(tmp_path):
    bad = pd.DataFrame({"kind": ["nope"]})
    with pytest.raises(schema.SchemaError):
        runs.write_run(tmp_path, bad, RunMeta(run="r"))
    assert list(tmp_path.iterdir()) == []

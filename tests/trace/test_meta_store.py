"""run.json through RunMeta (round trip, typed reading) and the store's per-figure index."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from perfreview.trace import runs, schema, store
from perfreview.trace.meta import MetaError, RepeatInfo, RunMeta


def one_row():
    return schema.from_records([{"kind": "range", "name": "x", "track": schema.host_track(), "source": "host",
                                 "start_ns": 0, "end_ns": 1}], "r")


def test_run_meta_round_trips(tmp_path):
    meta = RunMeta(run="r", preset="tiny", tokens=8, per_repeat=[RepeatInfo(0, wall_ns=5, round=0, order=1)],
                   device={"name": "cpu", "backend": "numpy"})
    path = runs.write_run(tmp_path, one_row(), meta)
    back = runs.read_meta(path)
    assert back == meta
    assert back.per_repeat[0].order == 1 and not back.gpu and not back.imported


@pytest.mark.parametrize("key, value, message", [
    ("tokens", "8", "key 'tokens' is str, expected int"),
    ("device", [], "key 'device' is list, expected dict"),
    ("per_repeat", [{"repeat": "0"}], "per_repeat\\[0\\]"),
    ("per_repeat", {"repeat": 0}, "expected a list"),
    ("schema_version", 99, "schema version 99"),
])
def test_wrong_types_in_run_json_are_named(tmp_path, key, value, message):
    path = runs.write_run(tmp_path, one_row(), RunMeta(run="r"))
    data = json.loads((path / "run.json").read_text())
    data[key] = value
    (path / "run.json").write_text(json.dumps(data))
    with pytest.raises(runs.RunError, match=message):
        runs.read_meta(path)
    with pytest.raises(MetaError):
        RunMeta.from_json(data)


def test_unknown_keys_from_a_newer_writer_are_ignored():
    meta = RunMeta.from_json({"run": "r", "schema_version": schema.SCHEMA_VERSION, "future_key": 1})
    assert meta.run == "r"


def test_store_indexes_figures_per_repeat(tmp_path):
    meta = RunMeta(run="r", build="pr", git={"commit": "abc123", "dirty": False})
    path = runs.write_run(tmp_path, one_row(), meta)
    db = store.store_path(tmp_path)
    store.register(db, path, meta, [{"repeat": 0, "tokens_per_s": 10.0, "new_figure": 2.0},
                                    {"repeat": 1, "tokens_per_s": 11.0, "new_figure": None}])
    assert [r["run"] for r in store.find(db, build="pr")] == ["r"]
    assert [r["run"] for r in store.find(db, build="abc")] == ["r"]  # a commit prefix
    assert store.repeats(db, "r") == [{"repeat": 0, "tokens_per_s": 10.0, "new_figure": 2.0},
                                      {"repeat": 1, "tokens_per_s": 11.0, "new_figure": None}]
    with pytest.raises(store.StoreError, match="unknown filter"):
        store.find(db, colour="red")


def test_track_helpers_agree_with_the_parser():
    assert schema.parse_stream_track(schema.stream_track(1, 7)) == (1, 7)
    assert schema.parse_stream_track(schema.sync_track(0)) is None
    assert schema.parse_stream_track(schema.host_track("42")) is None
    assert list(schema.stream_tracks(pd.Series([0, 1]), pd.Series([0, 7]))) == ["gpu0/stream0", "gpu1/stream7"]

"""bench/token_gap.py's weight copies and table, on NumPy arrays and made-up timings (no GPU)."""

from __future__ import annotations

import numpy as np

from bench.token_gap import ROWS, _copies
from bench.token_marks import summarize
from perfreview.report import render


def test_copies_hold_the_values_elsewhere_and_keep_a_tied_head_tied():
    emb = np.arange(12, dtype=np.float16).reshape(4, 3)
    w = {"embed": emb, "lm_head": emb, "final_norm": np.ones(3, np.float16)}
    layers = [{"wq": np.full((3, 3), 2, np.float16)}]
    w2, layers2 = _copies(np, w, layers)
    assert w2["lm_head"] is w2["embed"] and not np.shares_memory(w2["embed"], emb)
    assert np.array_equal(w2["embed"], emb) and np.array_equal(layers2[0]["wq"], layers[0]["wq"])
    assert not np.shares_memory(layers2[0]["wq"], layers[0]["wq"])
    untied = {**w, "lm_head": emb.copy()}
    assert _copies(np, untied, layers)[0]["lm_head"] is not _copies(np, untied, layers)[0]["embed"]


def test_the_table_names_every_row_with_its_power_and_clock():
    rng = np.random.default_rng(0)
    us = {r: list(967 + 24 * (r == "pipeline") + rng.normal(0, 0.3, 9)) for r in ROWS}
    rows = summarize(us, us)
    for i, r in enumerate(ROWS):
        rows[r].update(watts=None if i == 1 else 400.0 + i, sm_clock_mhz=1980.0)
    report = {"git": {"commit": "abc"}, "device": {"name": "H100 | x"},
              "presets": {"1b": {"position": 96, "rounds": 9, "replays": 64, "same_build": True, "weights_mb": 2471.5,
                                 "kv_mb": 3.18, "rows": rows}}}
    text = render.render("token_gap.md.j2", r=report)
    for r in ROWS:
        assert f"| {r} |" in text
    assert "| 400 | 1980 |" in text and "| - | 1980 |" in text and "one build: yes" in text
    assert rows["bench"]["vs_first"]["ci95"][1] < 1  # 24 µs faster than the pipeline row, decided

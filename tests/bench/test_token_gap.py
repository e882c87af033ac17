"""bench/token_gap.py's weight copies and table, on NumPy arrays and made-up timings (no GPU)."""

from __future__ import annotations

import numpy as np
import pytest

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
        assert f"| {r.replace('_', chr(92) + '_')} |" in text  # the table escapes markdown's emphasis
    assert "| 400 | 1980 |" in text and "| - | 1980 |" in text and "one build: yes" in text
    assert rows["bench"]["vs_first"]["ci95"][1] < 1  # 24 µs faster than the pipeline row, decided


def _offset(mem, a) -> int:
    return a.__array_interface__["data"][0] - mem.buf.__array_interface__["data"][0]


def test_the_two_arena_layouts_put_the_caches_first_or_past_the_buffers():
    from bench.token_gap import _arena_inputs
    from runner.arena import token_buffers_capacity
    from runner.presets import get_preset

    p = get_preset("tiny")
    shape = (p.n_layers, p.n_kv_heads, p.max_ctx, p.head_dim)
    ck = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    cv = -ck
    mem, (k, v, tok, pos, slot) = _arena_inputs(np, p, ck, cv, buffers_first=False)
    assert _offset(mem, k) == 0 and _offset(mem, tok) >= 2 * ck.nbytes and np.array_equal(v, cv)
    mem, (k, v, tok, pos, slot) = _arena_inputs(np, p, ck, cv, buffers_first=True)
    assert _offset(mem, tok) == 0 and int(pos[0]) == 96 and int(tok[0]) == 7
    last = mem.zeros((token_buffers_capacity(p) // 2,), np.uint8)  # the forward's buffers fill from the start
    assert _offset(mem, last) + last.nbytes <= _offset(mem, k) and _offset(mem, v) == _offset(mem, k) + ck.nbytes
    assert np.array_equal(k, ck) and np.array_equal(v, cv) and _offset(mem, v) + cv.nbytes <= mem.buf.size



def test_watts_come_from_a_rows_rounds_together_and_not_from_short_windows():
    from bench.token_gap import mean_watts

    steps = [(0.0, 0.064), (66_000.0, 0.064)]  # a counter that moved in one window of two
    assert mean_watts(steps * 5) is None  # 0.64 s in all: under the second its steps need
    assert mean_watts(steps * 8) == pytest.approx(515.625)  # 1.02 s: 528 J over it
    assert mean_watts([(None, 2.0)]) is None and mean_watts([]) is None  # no counter

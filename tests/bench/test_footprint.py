"""bench/footprint.py's phases and table, on made-up timings (no GPU)."""

from __future__ import annotations

import itertools

from bench.footprint import _phase
from perfreview.report import render


def test_a_phase_gives_each_row_its_median_and_interval_over_the_rounds():
    ticks = itertools.count()
    rows = {"bench token": lambda: 967.0 + next(ticks) % 3, "pipeline tg128": lambda: 990.0}
    out = _phase(rows, rounds=9)
    assert set(out) == set(rows) and len(out["bench token"]["samples"]) == 9  # the warm-up round dropped
    assert out["pipeline tg128"]["us_per_token"] == 990.0 and out["pipeline tg128"]["ci95"] == [990.0, 990.0]
    lo, hi = out["bench token"]["ci95"]
    assert 967.0 <= lo <= out["bench token"]["us_per_token"] <= hi <= 969.0


def test_the_table_gives_every_phase_and_row_against_the_copy_bandwidth():
    row = {"us_per_token": 969.2, "ci95": [968.0, 970.0]}
    report = {"git": {"commit": "abc"}, "device": {"name": "NVIDIA H100 | x"}, "copy_bw_gbs": 3000.0,
              "presets": {"1b": {"rounds": 11, "position": 96, "replays": 64, "tokens": 128, "weights_mb": 2471.6,
                                 "phases": {"alone": {"bench token": row},
                                            "with 40 GB more": {"bench token": row, "pipeline tg128": row}}}}}
    text = render.render("footprint.md.j2", r=report)
    assert "| alone | bench token | 969.2 | [968.0, 970.0] | 85.0% |" in text  # 2471.6 MB / 969.2 µs / 3000 GB/s
    assert "| with 40 GB more | pipeline tg128 |" in text and "H100 \\| x" in text

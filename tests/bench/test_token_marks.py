"""bench/token_marks.py's summary and table, on made-up timings (no GPU)."""

from __future__ import annotations

import numpy as np

from bench.token_marks import VARIANTS, _marks, summarize
from perfreview.report import render


def made_up(cost_us: dict[str, float], n: int = 21, seed: int = 0) -> dict[str, list[float]]:
    """n rounds of µs a token: 970 plus each variant's cost, a shared round effect and a little noise."""
    rng = np.random.default_rng(seed)
    rounds = rng.normal(0, 3.0, n)
    return {v: list(970 + cost_us[v] + rounds + rng.normal(0, 0.2, n)) for v in cost_us}


def test_a_cost_of_the_marks_shows_as_a_paired_ratio():
    us = made_up({"two marks a token": 20.0, "one mark a token": 10.0, "no marks": 0.0, "launches alone": 0.0})
    out = summarize(us, us)
    assert "vs_first" not in out["two marks a token"]
    none = out["no marks"]["vs_first"]
    assert none["ci95"][1] < 1 and abs(none["ratio"] - 970 / 990) < 0.002  # pairing removes the round effect
    lo, hi = out["one mark a token"]["vs_first"]["ci95"]
    assert lo < 980 / 990 < hi


def test_the_table_names_every_variant_and_its_interval():
    us = made_up(dict.fromkeys(VARIANTS, 0.0))
    report = {"git": {"commit": "abc"}, "device": {"name": "H100 | x"},
              "presets": {"1b": {"tokens": 128, "prompt": 32, "rounds": 21, "variants": summarize(us, us)}}}
    text = render.render("token_marks.md.j2", r=report)
    for v in VARIANTS:
        assert f"| {v} |" in text
    assert "H100 \\| x" in text and "### 1b: tg128" in text


class _Rec:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def mark(self, name: str, stream: object) -> None:
        self.seen.append(name)


def test_the_variants_marks_skip_what_they_say():
    rec = _Rec()
    for variant in ("two marks a token", "one mark a token", "no marks"):
        mark = _marks(rec, variant)
        mark("token_start", None)
        mark("token_end", None)
    assert rec.seen == ["token_start", "token_end", "token_end"]


def test_in_rounds_measures_each_name_once_a_round_and_drops_the_warm_up_round():
    from bench.token_marks import in_rounds

    calls: list[str] = []

    def measure(name: str) -> tuple[str, int]:
        calls.append(name)
        return name, len(calls)

    out = in_rounds(("a", "b", "c"), 4, measure)
    assert len(calls) == 15 and {n: len(v) for n, v in out.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(x[0] == n for n, v in out.items() for x in v)
    assert sorted(calls[:3]) == ["a", "b", "c"] and all(x[1] > 3 for v in out.values() for x in v)  # round 0 dropped
    assert calls != ["a", "b", "c"] * 5  # a random order, not the given one

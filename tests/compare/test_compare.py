"""Verdicts: known injected deltas are found, noise is called noise, mismatches are refused."""

from __future__ import annotations

import pytest

from perfreview.compare import stats
from perfreview.compare.comparison import MismatchError, compare
from perfreview.trace import runs
from synthetic import make_run


def verdicts(cmp, metric="host"):
    return {r.name: r.verdict for r in cmp.rows if r.kind == "function" and r.metric == metric}


def test_injected_five_percent_regression_is_found(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", seed=1))
    b = runs.read_run(make_run(tmp_path, "b", seed=2, scale={"ffn": 1.05}))
    v = verdicts(compare([a], [b]))
    assert v["ffn"] == stats.REGRESSED
    others = {k: x for k, x in v.items() if k != "ffn"}
    assert stats.REGRESSED not in others.values() and stats.IMPROVED not in others.values(), others


def test_injected_speedup_shows_in_throughput(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", seed=3))
    b = runs.read_run(make_run(tmp_path, "b", seed=4, scale={"attention": 0.8, "ffn": 0.8}))
    cmp = compare([a], [b])
    heads = {r.name: r for r in cmp.rows if r.kind == "headline"}
    assert heads["tokens_per_s"].verdict == stats.IMPROVED
    assert heads["tokens_per_s"].ci_low > 1.0
    assert heads["median_token_ms"].verdict == stats.IMPROVED


def test_tiny_change_inside_noise_is_no_change_not_a_finding(tmp_path):
    """The bot's "+0.063 ns": a real but negligible change must not become a finding."""
    a = runs.read_run(make_run(tmp_path, "a", seed=5, cv=0.002))
    b = runs.read_run(make_run(tmp_path, "b", seed=6, cv=0.002, scale={"sample": 1.0005}))
    v = verdicts(compare([a], [b]))
    assert v["sample"] == stats.NO_CHANGE


def test_noise_with_few_repeats_is_inconclusive_with_a_repeat_estimate(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", repeats=4, seed=7, cv=0.05))
    b = runs.read_run(make_run(tmp_path, "b", repeats=4, seed=8, cv=0.05, scale={"ffn": 1.02}))
    cmp = compare([a], [b])
    row = next(r for r in cmp.rows if r.name == "ffn" and r.metric == "host")
    assert row.verdict == stats.INCONCLUSIVE
    assert row.repeats_needed is None or row.repeats_needed > 4
    assert any("fewer than" in w for w in cmp.warnings)


def test_aa_real_cpu_runs_have_no_improved_or_regressed(cpu_runs):
    a, b = runs.read_run(cpu_runs["aa1"]), runs.read_run(cpu_runs["aa2"])
    cmp = compare([a], [b])
    assert len(cmp.rows) > 20
    bad = [(r.name, r.metric, r.verdict) for r in cmp.rows
           if r.verdict in (stats.IMPROVED, stats.REGRESSED)]
    assert bad == []


def test_mismatched_runs_are_refused_naming_the_field(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", tokens=8, repeats=3))
    b = runs.read_run(make_run(tmp_path, "b", tokens=16, repeats=3))
    with pytest.raises(MismatchError, match="tokens"):
        compare([a], [b])
    assert compare([a], [b], force=True).warnings[0].startswith("runs differ in tokens")


def test_benjamini_hochberg_and_verdict_rules():
    q = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # sorted p 0.01, 0.03, 0.04, 0.5 -> p*n/rank 0.04, 0.06, 0.0533, 0.5 -> running min from the top
    assert q == pytest.approx([0.04, 0.053333, 0.053333, 0.5], rel=1e-4)
    assert stats.verdict(1.02, 1.01, 1.03, 0.01, 0.005, higher_is_better=False) == stats.REGRESSED
    assert stats.verdict(1.02, 1.01, 1.03, 0.2, 0.005, higher_is_better=False) == stats.INCONCLUSIVE
    assert stats.verdict(1.001, 0.998, 1.004, 0.5, 0.005, higher_is_better=True) == stats.NO_CHANGE
    # A change smaller than twice the timer resolution is never a finding.
    assert stats.verdict(1.5, 1.4, 1.6, 0.001, 0.005, False, abs_change=0.3, resolution=0.5) != stats.REGRESSED


def test_functions_on_one_side_only_are_listed_not_tested(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", repeats=5, seed=9))
    b = runs.read_run(make_run(tmp_path, "b", repeats=5, seed=10, names={"sample": "sample_v2"}))
    cmp = compare([a], [b])
    assert [f.name for f in cmp.only_a] == ["sample"] and [f.name for f in cmp.only_b] == ["sample_v2"]
    assert cmp.only_b[0].median > 5  # µs per token, ~10 µs in the synthetic run
    assert all(r.name not in ("sample", "sample_v2") for r in cmp.rows)


def test_a_huge_noise_threshold_never_calls_a_big_slowdown_noise():
    # θ = 150% from a wild A/A pair: the band is [0.4, 2.5], so 10x slower is still outside it
    assert stats.band(1.5) == pytest.approx((0.4, 2.5))
    assert stats.verdict(0.1, 0.08, 0.12, 0.001, 1.5, higher_is_better=True) == stats.REGRESSED
    assert stats.noise_from_aa(0.80, 1.10) == pytest.approx(0.15)  # the half-width, as the rule says

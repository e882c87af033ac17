"""Comparisons of runs: known injected deltas are found, noise is called noise, mismatches are
refused, and how the runs were made (rounds or separate processes) decides the test."""

from __future__ import annotations

import math

import pytest

from perfreview.compare import stats
from perfreview.compare.comparison import MismatchError, compare
from perfreview.trace import runs
from synthetic import make_pair, make_run


def verdicts(cmp, metric="host"):
    return {r.name: r.verdict for r in cmp.rows if r.kind == "function" and r.metric == metric}


def read(*paths):
    return [runs.read_run(p) for p in paths]


def test_injected_five_percent_regression_is_found(tmp_path):
    a, b = read(*make_pair(tmp_path, b={"scale": {"ffn": 1.05}}))
    cmp = compare([a], [b])
    assert cmp.design.unit == "rounds"
    v = verdicts(cmp)
    assert v["ffn"] == stats.REGRESSED
    others = {k: x for k, x in v.items() if k != "ffn"}
    assert stats.REGRESSED not in others.values() and stats.IMPROVED not in others.values(), others


def test_injected_speedup_shows_in_throughput(tmp_path):
    a, b = read(*make_pair(tmp_path, b={"scale": {"attention": 0.8, "ffn": 0.8}}))
    cmp = compare([a], [b])
    tps = cmp.primary
    assert tps.verdict == stats.IMPROVED and tps.ci_low > 1.0 and tps.role == "primary"
    assert tps.confidence == pytest.approx(1 - stats.ALPHA_PRIMARY)
    assert cmp.row("median_token_ms").verdict == stats.SHOWN  # a near-duplicate of throughput: not tested again


def test_tiny_change_inside_the_threshold_is_no_change_not_a_finding(tmp_path):
    """The bot's "+0.063 ns": a real but negligible change must not become a finding."""
    a, b = read(*make_pair(tmp_path, b={"scale": {"attention": 1.0005}}, cv=0.002))
    v = verdicts(compare([a], [b]))
    assert v["attention"] == stats.NO_CHANGE
    # a 10 µs function timed by a 0.1 µs clock cannot be bounded to ±0.5%: the resolution widens it
    assert v["sample"] == stats.INCONCLUSIVE


def test_noise_with_few_rounds_is_inconclusive_with_the_rounds_needed(tmp_path):
    a, b = read(*make_pair(tmp_path, b={"scale": {"ffn": 1.02}}, repeats=4, cv=0.05))
    cmp = compare([a], [b])
    row = cmp.row("ffn", "function", "host")
    assert row.verdict == stats.INCONCLUSIVE and row.method == "paired t"
    assert row.units_needed is None or row.units_needed > 4
    assert any("fewer than" in w for w in cmp.warnings)


def test_aa_real_cpu_runs_get_verdicts_that_follow_their_intervals(cpu_runs):
    """A real A/A on a shared CPU may decide a figure: α = 0.04 for the primary figure, and two
    pipeline instances of one config can differ for real (memory placement). That is what the
    review's negative control reports, so it is no test failure; how often the rule decides an A/A
    is tested with known noise in test_simulation. What must hold on any machine: every verdict is
    the one its own interval gives."""
    a, b = read(cpu_runs["aa1"], cpu_runs["aa2"])
    cmp = compare([a], [b])
    assert cmp.design.unit == "rounds" and len(cmp.rows) > 20
    m = math.log1p(cmp.design.threshold)
    for r in (r for r in cmp.rows if r.role != "shown"):
        lo, hi = math.log(r.ci_low), math.log(r.ci_high)
        assert lo <= math.log(r.ratio) <= hi, r.key
        if r.decided:
            assert lo > 0 or hi < 0, r.key  # the interval excludes no change
            assert (r.verdict == stats.IMPROVED) == ((lo > 0) == r.higher_is_better), r.key
        if r.verdict == stats.NO_CHANGE:
            assert -m < lo and hi < m, r.key


def test_separately_stored_runs_of_identical_code_are_compared_per_run(tmp_path):
    """Several stored runs per side that were never interleaved: each run is a unit (Welch on the logs
    of per-run values); identical code gives no improved/regressed verdict."""
    a = read(*(make_run(tmp_path, f"a{i}", seed=10 + i, repeats=6, cv=0.03) for i in range(4)))
    b = read(*(make_run(tmp_path, f"b{i}", seed=20 + i, repeats=6, cv=0.03) for i in range(4)))
    cmp = compare(a, b)
    assert cmp.design.unit == "runs" and cmp.n == 4
    assert [r.key for r in cmp.rows if r.decided] == []
    assert all(r.method == "Welch t" for r in cmp.rows if r.role != "shown")
    assert any("not interleaved" in w for w in cmp.warnings)


def test_one_run_per_side_not_interleaved_gives_no_verdict(tmp_path):
    a = runs.read_run(make_run(tmp_path, "x", seed=1))
    b = runs.read_run(make_run(tmp_path, "y", seed=2, scale={"ffn": 2.0}))
    cmp = compare([a], [b])
    assert cmp.primary.verdict == stats.INCONCLUSIVE
    assert any("cannot separate a change from one process" in w for w in cmp.warnings)


def test_mismatched_runs_are_refused_naming_the_field(tmp_path):
    a = runs.read_run(make_run(tmp_path, "a", tokens=8, repeats=3))
    b = runs.read_run(make_run(tmp_path, "b", tokens=16, repeats=3))
    with pytest.raises(MismatchError, match="tokens"):
        compare([a], [b])
    assert compare([a], [b], force=True).warnings[0].startswith("runs differ in tokens")


def test_functions_on_one_side_only_are_listed_not_tested(tmp_path):
    a, b = read(*make_pair(tmp_path, b={"names": {"sample": "sample_v2"}}, repeats=5))
    cmp = compare([a], [b])
    assert [f.name for f in cmp.only_a] == ["sample"] and [f.name for f in cmp.only_b] == ["sample_v2"]
    assert cmp.only_b[0].median > 5  # µs per token, ~10 µs in the synthetic run
    assert all(r.name not in ("sample", "sample_v2") for r in cmp.rows)


def test_family_figures_go_through_benjamini_hochberg(tmp_path):
    a, b = read(*make_pair(tmp_path, b={"scale": {"ffn": 1.05}}))
    family = [r for r in compare([a], [b]).rows if r.role == "family"]
    assert family and all(0 <= r.q <= 1 and r.q >= r.p for r in family)


def test_a_step_of_the_machine_under_both_sides_is_named_and_cancels_in_the_pairs(tmp_path):
    """Both sides 3% slower from round 6 of 30 on (as the H100 stepped a few seconds into a process's load): a
    note names the step and where; the paired verdict is unmoved by it."""
    a, b = read(*make_pair(tmp_path, repeats=30, cv=0.004, step=(5, 1.03)))
    cmp = compare([a], [b])
    notes = [w for w in cmp.warnings if "stepped" in w]
    assert len(notes) == 1 and "-2.9% from round 6 of 30 on" in notes[0] and "decode throughput" in notes[0]
    assert cmp.primary.verdict == stats.NO_CHANGE


def test_no_step_is_named_in_a_steady_run(tmp_path):
    a, b = read(*make_pair(tmp_path, repeats=30, cv=0.004))
    assert not [w for w in compare([a], [b]).warnings if "stepped" in w]

"""The rule of perfreview.compare.stats on small cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from perfreview.compare import stats


@pytest.mark.parametrize("n, c", [(6, 0), (8, 3), (10, 8), (15, 25), (20, 52), (30, 137)])
def test_signed_rank_critical_values_match_the_tables(n, c):
    # two-sided α = 0.05 critical values of Wilcoxon's T (e.g. Conover, Practical Nonparametric Statistics)
    assert stats.signed_rank_k(n, 0.05) == c + 1


def test_exact_distribution_sums_to_one_and_is_symmetric():
    cdf = stats._signed_rank_cdf(12)
    pmf = np.diff(np.concatenate([[0.0], cdf]))
    assert cdf[-1] == pytest.approx(1.0) and np.allclose(pmf, pmf[::-1])


def test_hl_estimate_and_interval_on_a_hand_case():
    # d = ln(b/a) = 0.01 * [1..10]: Walsh averages are 0.01 * (i + j) / 2; HL = median = 0.055
    a = np.ones(10)
    b = np.exp(0.01 * np.arange(1, 11))
    est = stats.paired(a, b, 0.05)
    assert math.log(est.ratio) == pytest.approx(0.055)
    w = stats.walsh_averages(np.log(b))
    assert math.log(est.ci_low) == pytest.approx(w[8]) and math.log(est.ci_high) == pytest.approx(w[55 - 9])
    assert est.method == "HL/signed-rank" and est.n == 10


def test_interval_inverts_the_exact_signed_rank_test():
    """A shift just outside the interval is rejected by the exact test at α, one just inside is not."""
    rng = np.random.default_rng(3)
    d = rng.normal(0.01, 0.02, 14)
    est = stats.paired(np.ones(14), np.exp(d), 0.05)
    lo, hi = math.log(est.ci_low), math.log(est.ci_high)
    eps = 1e-9

    def p(mu: float) -> float:
        return sps.wilcoxon(d - mu, method="exact").pvalue

    assert p(lo - eps) < 0.05 <= p(lo + eps)
    assert p(hi + eps) < 0.05 <= p(hi - eps)


def test_ties_and_zeros_do_not_break_the_interval():
    a = np.full(12, 100.0)
    b = np.array([100.0] * 4 + [101.0] * 8)  # timer-quantised: many identical differences
    est = stats.paired(a, b, 0.05)
    assert est.ci_low <= est.ratio <= est.ci_high and np.isfinite(est.p)
    assert stats.paired(a, a, 0.05).p == 1.0


def test_few_units_use_student_t():
    est = stats.paired(np.ones(5), np.exp([0.01, 0.02, 0.015, 0.012, 0.018]), 0.05)
    assert est.method == "paired t" and est.ci_low > 1.0


def test_welch_for_sides_that_were_not_interleaved():
    rng = np.random.default_rng(0)
    a, b = np.exp(rng.normal(0, 0.01, 8)), np.exp(rng.normal(0.05, 0.01, 12))
    est = stats.unpaired(a, b, 0.05)
    ref = sps.ttest_ind(np.log(b), np.log(a), equal_var=False)
    assert est.p == pytest.approx(ref.pvalue) and est.method == "Welch t"
    ci = ref.confidence_interval(0.95)
    assert math.log(est.ci_low) == pytest.approx(ci.low) and math.log(est.ci_high) == pytest.approx(ci.high)


def est(lo: float, hi: float, ratio: float | None = None) -> stats.Estimate:
    return stats.Estimate(ratio or math.sqrt(lo * hi), lo, hi, 0.001, 20, 0.01, "HL/signed-rank", 0.96)


def test_verdicts_against_the_threshold():
    v = stats.verdict
    assert v(est(0.998, 1.003), 0.005, True, 100.0).verdict == stats.NO_CHANGE
    assert v(est(0.985, 0.995), 0.005, True, 100.0).verdict == stats.REGRESSED
    assert v(est(0.985, 0.995), 0.005, False, 100.0).verdict == stats.IMPROVED  # lower is better
    small = v(est(0.990, 0.998), 0.005, True, 100.0)
    assert small.verdict == stats.REGRESSED and small.smaller_than_threshold
    assert v(est(0.990, 1.004), 0.005, True, 100.0).verdict == stats.INCONCLUSIVE
    # a change under twice the timer's resolution is never a finding, and the resolution widens "no change"
    assert v(est(1.02, 1.04), 0.005, False, 10.0, resolution=0.5).verdict == stats.INCONCLUSIVE
    assert v(est(0.999, 1.001), 0.005, False, 10.0, resolution=0.5).verdict == stats.INCONCLUSIVE
    # a family figure whose q-value did not pass is not decided
    assert v(est(0.985, 0.995), 0.005, True, 100.0, significant=False).verdict == stats.INCONCLUSIVE


def test_units_needed_is_the_t_based_power_calculation():
    # ((t_{.98,ν} + t_{.95,ν}) · 1.02 · s / δ)², ν = N - 1: s = 2.3%, δ = ln 1.01 -> 79 rounds at α = 0.04
    e = stats.Estimate(1.01, 0.99, 1.03, 0.3, 10, 0.023, "HL/signed-rank", 0.96)
    n = stats.units_needed(e, 0.005, 0.04)
    nu = n - 1
    assert ((sps.t.ppf(0.98, nu) + sps.t.ppf(0.95, nu)) * 0.023 * 1.02 / math.log(1.01)) ** 2 <= n
    assert n == 79
    # an estimate near 0: rounds to fit the interval inside ±Δ
    near = stats.Estimate(1.0005, 0.99, 1.01, 0.8, 10, 0.005, "HL/signed-rank", 0.96)
    assert 10 < stats.units_needed(near, 0.005, 0.04) < 60


def test_sequential_stopping():
    assert stats.stop_reason(stats.REGRESSED, 20, 1.0, 300).startswith("the primary figure was decided at look 2")
    assert stats.stop_reason(stats.INCONCLUSIVE, 20, 1.0, 300) == ""  # next look at 40 rounds = 40 s
    assert "budget" in stats.stop_reason(stats.INCONCLUSIVE, 80, 2.0, 300)  # next: 160 rounds = 320 s
    assert "last planned look" in stats.stop_reason(stats.INCONCLUSIVE, 320, 0.1, 300)
    assert stats.next_look(10) == 20 and stats.next_look(320) is None


def test_benjamini_hochberg():
    q = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert q == pytest.approx([0.04, 0.053333, 0.053333, 0.5], rel=1e-4)


def test_tracing_overhead_from_the_untraced_twin(tmp_path):
    from perfreview.compare import overhead
    from perfreview.trace import runs, schema
    from perfreview.trace.meta import RepeatInfo, RunMeta

    rng = np.random.default_rng(0)
    reps = []
    for r in range(20):
        base = 1_000_000 * rng.lognormal(0, 0.01)
        reps.append(RepeatInfo(r, decode_ns=int(base * 1.15), untraced_decode_ns=int(base)))  # tracing: +15% time
    ev = schema.from_records([{"kind": "range", "name": "x", "track": "host/main", "source": "host", "start_ns": 0,
                               "end_ns": 1}], "r")
    run = runs.read_run(runs.write_run(tmp_path, ev, RunMeta(run="r", trace="cupti", per_repeat=reps)))
    est = overhead.tracing(run)
    assert est.ratio == pytest.approx(1 / 1.15, rel=1e-3) and est.ci_high < 1 and est.n == 20
    assert overhead.tracing(runs.read_run(runs.write_run(tmp_path, ev, RunMeta(run="plain")))) is None


def test_runs_record_their_decode_span(cpu_runs):
    from perfreview.trace import runs

    meta = runs.read_meta(cpu_runs["baseline"])
    assert all(r.decode_ns and r.decode_ns > 0 and r.untraced_decode_ns is None for r in meta.per_repeat)


def test_rounds_needed_use_the_interval_when_outliers_inflate_the_sd():
    """A few very slow repeats make the SD of the differences large while the rank interval stays
    narrow: the estimate of the rounds still needed follows the interval, not the outliers."""
    narrow = stats.Estimate(1.001, 0.996, 1.005, 0.5, 320, 0.12, "HL/signed-rank", 1 - stats.ALPHA_POCOCK)
    n = stats.units_needed(narrow, 0.005, stats.ALPHA_POCOCK)
    assert 320 < n < 2000
    wide_sd = stats.units_needed(stats.Estimate(1.001, math.nan, math.nan, 0.5, 320, 0.12, "x", 0.99), 0.005,
                                 stats.ALPHA_POCOCK)
    assert wide_sd > 10 * n  # without an interval only the SD is there


def test_step_change_finds_one_step_where_it_is():
    rng = np.random.default_rng(1)
    x = np.r_[np.full(3, 1000.0), np.full(20, 985.0)] * np.exp(rng.normal(0, 0.0005, 23))
    step = stats.step_change(x)
    assert step.at == 3 and step.n == 23 and step.p <= stats.STEP_ALPHA
    assert step.ratio == pytest.approx(0.985, abs=1e-3) and stats.named_step(x) == step


def test_step_change_calls_noise_noise_and_names_no_small_or_short_step():
    rng = np.random.default_rng(2)
    assert stats.step_change(1000 * np.exp(rng.normal(0, 0.01, 320))).p > 0.05  # no step in i.i.d. noise
    small = np.r_[np.full(10, 1000.0), np.full(10, 998.0)] * np.exp(rng.normal(0, 1e-5, 20))
    assert stats.step_change(small).p <= stats.STEP_ALPHA and stats.named_step(small) is None  # sure, but 0.2%
    assert stats.step_change(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) is None  # under two segments of 3
    assert stats.step_change(np.full(12, 7.0)) is None  # nothing varies

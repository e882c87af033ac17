"""The rule under simulated noise: per-round values drawn from the noise models measured on the H100
(normal, heavy-tailed, drifting, bimodal host-loop clusters) and per-process offsets. Checks the
goals of the sensitivity work with enough trials to tell: a whole 16-figure A/A review decided in
at most 5% of trials, a true 1% slowdown called "regressed" in at least 95%."""

from __future__ import annotations

import numpy as np
import pytest

from perfreview.compare import stats
from perfreview.compare.sequential import review

CV = 0.015  # per-repeat CV of tokens/s measured on the 1b graph path (issue 13)
FIGURES = 16


def noise(model: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-noise of n rounds for one side (shared drift is added by the caller)."""
    if model == "normal":
        return rng.normal(0, CV, n)
    if model == "heavy":  # Student t with 3 degrees of freedom, scaled to the same SD
        return rng.standard_t(3, n) * CV / np.sqrt(3)
    if model == "bimodal":  # the host loop's two clusters (222-224 ms and 228-238 ms)
        return rng.normal(0, CV / 2, n) + np.where(rng.random(n) < 0.3, 2 * CV, 0.0)
    raise ValueError(model)


def trial(model: str, effect: float, rng: np.random.Generator, rounds: int = 320) -> bool | str:
    """One review: every figure drifts together across rounds (the machine), each side has its own
    noise; the primary figure is tokens/s, B is slower by ``effect``."""
    drift = np.cumsum(rng.normal(0, CV / 4, rounds)) if model == "drift" else np.zeros(rounds)
    base = "normal" if model == "drift" else model
    a, b = {}, {}
    for f in range(FIGURES):
        a[f"f{f}"] = 100 * np.exp(drift + noise(base, rng, rounds))
        b[f"f{f}"] = 100 * np.exp(drift + noise(base, rng, rounds)) * ((1 - effect) if f == 0 else 1.0)
    return review(a, b, "f0", seconds_per_round=0.7, budget_s=300)


MODELS = ("normal", "heavy", "drift", "bimodal")


def test_aa_reviews_rarely_decide_anything():
    rng = np.random.default_rng(2026)
    outcomes = [trial(m, 0.0, rng) for m in MODELS for _ in range(75)]
    rate = np.mean([o.any_decided for o in outcomes])
    assert rate <= 0.05, rate  # 300 whole reviews of 16 figures
    assert all(o.rounds <= 320 for o in outcomes)


def test_one_percent_slowdown_is_found():
    rng = np.random.default_rng(7)
    outcomes = [trial(m, 0.01, rng) for m in MODELS for _ in range(50)]
    found = np.mean([o.verdict == stats.REGRESSED for o in outcomes])
    assert found >= 0.95, found  # 200 trials
    rounds = np.median([o.rounds for o in outcomes])
    assert rounds <= 160 and rounds * 0.7 <= 300  # inside the default budget of GPU-seconds


def test_half_percent_slowdown_is_never_called_a_speedup():
    rng = np.random.default_rng(11)
    outcomes = [trial("normal", 0.005, rng) for _ in range(60)]
    assert not any(o.verdict == stats.IMPROVED for o in outcomes)


def test_per_process_offsets_are_not_taken_for_a_change():
    """Stored runs that were not interleaved: each process has its own 1% offset; per-run Welch
    (the unit is the process) keeps the A/A false-verdict rate at α, repeat pooling would not."""
    rng = np.random.default_rng(5)
    false = 0
    trials = 300
    for _ in range(trials):
        runs_a = [np.exp(rng.normal(rng.normal(0, 0.01), CV, 10)) for _ in range(4)]
        runs_b = [np.exp(rng.normal(rng.normal(0, 0.01), CV, 10)) for _ in range(4)]
        per_run_a = np.exp([np.log(r).mean() for r in runs_a])
        per_run_b = np.exp([np.log(r).mean() for r in runs_b])
        est = stats.unpaired(per_run_a, per_run_b, stats.ALPHA_PRIMARY)
        false += est.ci_low > 1 or est.ci_high < 1
    assert false / trials <= 0.07  # α = 0.04, with room for 300 trials' binomial spread


@pytest.mark.parametrize("rounds", [5, 9])
def test_too_few_recorded_rounds_are_refused(rounds):
    with pytest.raises(ValueError, match="fewer than the first look"):
        review({"x": np.ones(rounds)}, {"x": np.ones(rounds)}, "x")

"""The one statistics module: bootstrap intervals, rank tests, false-discovery control, verdicts.

The rule (shared/reference/statistics-for-comparisons.md, section 6):

1. each side is N independent repeats; each figure is one value per repeat (a median over tokens);
2. effect = ratio of medians B/A, with a 95% BCa bootstrap interval resampling repeats;
3. Mann-Whitney U per figure, Benjamini-Hochberg across all figures of a comparison;
4. improved/regressed only when q < alpha, the whole interval lies outside ±θ and the change is at
   least twice the timer's resolution; "no change" when the interval lies inside ±θ;
   "inconclusive" otherwise, with the repeats it would need.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

IMPROVED, REGRESSED, NO_CHANGE, INCONCLUSIVE = "improved", "regressed", "no change", "inconclusive"
DEFAULT_THETA = 0.005
MIN_REPEATS = 10


@dataclass
class Effect:
    ratio: float  # median(B) / median(A)
    ci_low: float
    ci_high: float
    p_value: float


def ratio_of_medians_ci(a: np.ndarray, b: np.ndarray, confidence: float = 0.95,
                        n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio median(b)/median(a) with a BCa bootstrap interval (independent resampling of the two
    groups of repeats). Falls back to percentile where BCa is degenerate (e.g. ties)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ratio = float(np.median(b) / np.median(a))
    if len(a) < 2 or len(b) < 2:
        return ratio, math.nan, math.nan

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(y, axis=axis) / np.median(x, axis=axis)

    rng = np.random.default_rng(seed)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap((a, b), stat, n_resamples=n_resamples, confidence_level=confidence,
                                method=method, vectorized=True, random_state=rng)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return ratio, min(lo, ratio), max(hi, ratio)
    return ratio, math.nan, math.nan


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.ptp(np.concatenate([a, b])) == 0):
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def effect(a: np.ndarray, b: np.ndarray, seed: int = 0) -> Effect:
    ratio, lo, hi = ratio_of_medians_ci(a, b, seed=seed)
    return Effect(ratio, lo, hi, mann_whitney_p(a, b))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """q-values (BH-adjusted p-values), same order as given."""
    p = np.asarray(p_values, float)
    n = len(p)
    if n == 0:
        return []
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.tolist()


def verdict(ratio: float, lo: float, hi: float, q: float, theta: float, higher_is_better: bool,
            abs_change: float | None = None, resolution: float = 0.0, alpha: float = 0.05) -> str:
    """Classify one figure. ``abs_change`` (|median B - median A|, in the figure's unit) must be at
    least twice ``resolution`` (the timer's) for a real change."""
    if not all(math.isfinite(x) for x in (ratio, lo, hi)):
        return INCONCLUSIVE
    low_band, high_band = band(theta)
    above, below = lo > high_band, hi < low_band
    big_enough = abs_change is None or abs_change >= 2 * resolution
    if q < alpha and (above or below) and big_enough:
        better = above if higher_is_better else below
        return IMPROVED if better else REGRESSED
    if lo >= low_band and hi <= high_band:
        return NO_CHANGE
    return INCONCLUSIVE


def band(theta: float) -> tuple[float, float]:
    """The noise band of ratios, [1/(1+θ), 1+θ]: symmetric on the log scale, so a large θ never
    makes a 10x slowdown "within noise" (1-θ would reach 0); for θ = 0.5% it is ±0.5%."""
    return 1 / (1 + theta), 1 + theta


def repeats_needed(ratio: float, lo: float, hi: float, n: int, theta: float, cap: int = 10_000) -> int | None:
    """Repeats per side that would shrink the interval enough to decide (width ~ 1/sqrt(n)):
    outside ±θ if the estimate is outside it, inside ±θ if inside. None when it cannot decide."""
    if not all(math.isfinite(x) for x in (ratio, lo, hi)) or n < 2:
        return None
    half = (hi - lo) / 2
    low_band, high_band = band(theta)
    room = min(abs(ratio - low_band), abs(ratio - high_band))
    if room <= 0 or half <= 0:
        return None
    need = math.ceil(n * (half / room) ** 2)
    return min(max(need, n + 1), cap)


def noise_from_aa(ci_low: float, ci_high: float, floor: float = DEFAULT_THETA) -> float:
    """θ from an A/A comparison (two groups of the same config): its interval's half-width, never
    below ``floor``."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return floor
    return max(floor, (ci_high - ci_low) / 2)

"""The one statistics module (shared/reference/statistics-for-comparisons.md, section 6).

1. Units: rounds of interleaved repeats (each round ran A and B once, in a random order), or
   processes. Per figure, paired log-differences d_i = ln B_i - ln A_i.
2. Estimate: Hodges-Lehmann (median of the Walsh averages), ratio exp(HL); interval from the
   Wilcoxon signed-rank distribution (exact for n <= 60, normal approximation above); Student t
   on d below 10 units. Sides that were not interleaved: Welch t on the logs of per-unit values.
3. Verdict against a practical threshold Δ, m = ln(1 + Δ): "no change" when the interval (widened
   by the timer's resolution) lies inside ±m; "improved"/"regressed" when it excludes 0 and the
   change is at least twice the timer resolution ("may be smaller than Δ" when it crosses ±m);
   otherwise "inconclusive", with the units a t-based power calculation says would decide it.
4. One primary figure (decode tokens/s, α = 0.04) sets the review's verdict; near-duplicates are
   shown, not tested; every other figure is one Benjamini-Hochberg family at α = 0.01.
5. Sequential looks at 10, 20, 40, 80, 160, 320 rounds with a Pocock boundary (α' = 0.0085 per
   look for 0.04 overall).
6. Not a verdict, a note on the design: one step in the machine's speed over the rounds (both sides
   together), found by the largest CUSUM excursion of the per-round logs and a permutation test of
   the round order (step_change). Pairing cancels it; a measurement that is not interleaved would not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

IMPROVED, REGRESSED, NO_CHANGE, INCONCLUSIVE = "improved", "regressed", "no change", "inconclusive"
SHOWN = "shown, not tested"
DEFAULT_THRESHOLD = 0.005  # Δ: the smallest change that matters, 0.5%
ALPHA_PRIMARY = 0.04
ALPHA_FAMILY = 0.01
LOOKS = (10, 20, 40, 80, 160, 320)
ALPHA_POCOCK = 0.0085  # per look: 6 looks at 0.04 overall (critical value 2.63)
POWER = 0.95  # β = 0.05 for the rounds needed
MIN_UNITS = 10  # below this the signed-rank interval is too coarse: Student t instead
EXACT_MAX = 60  # exact signed-rank distribution up to this many units
HL_EFFICIENCY = 1.02  # the HL interval is about 2% wider than t's under normal noise


@dataclass
class Estimate:
    """One figure's effect: ratio B/A with its interval, on ``n`` units."""

    ratio: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    sd: float  # SD of the per-unit log-differences (paired) or pooled per-unit SD of the logs (unpaired)
    method: str  # "HL/signed-rank", "paired t", "Welch t"
    confidence: float


def _logs(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    if np.any(x <= 0) or not np.all(np.isfinite(x)):
        raise ValueError("figures must be positive and finite to be compared as ratios")
    return np.log(x)


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n)


def walsh_averages(d: np.ndarray, sort: bool = True) -> np.ndarray:
    """(d_i + d_j) / 2 for i <= j (sorted unless asked not to)."""
    i, j = _pairs(len(d))
    w = (d[i] + d[j]) / 2
    return np.sort(w) if sort else w


@lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(T <= t) for t = 0 .. n(n+1)/2 under the null (each rank's sign a fair coin)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):  # add rank k to the subsets: counts[t] += counts[t - k]
        counts[k:] = counts[k:] + counts[:-k].copy()
    return np.cumsum(counts) / 2.0**n


def signed_rank_k(n: int, alpha: float) -> int:
    """k for the interval [W_(k), W_(N+1-k)]: k = c + 1, c the largest value with
    P(T <= c) <= alpha / 2 (exact up to EXACT_MAX units, normal approximation above)."""
    if n <= EXACT_MAX:
        cdf = _signed_rank_cdf(n)
        c = int(np.searchsorted(cdf, alpha / 2, side="right")) - 1
        return max(c + 1, 1)
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return max(int(math.floor(mean - sps.norm.ppf(1 - alpha / 2) * sd + 0.5)), 1)


def paired(a: np.ndarray, b: np.ndarray, alpha: float) -> Estimate:
    """Paired units (rounds or processes): ``a[i]`` and ``b[i]`` ran in the same round."""
    d = _logs(b) - _logs(a)
    n = len(d)
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    if n < 2:
        return Estimate(float(np.exp(d.mean())) if n else math.nan, math.nan, math.nan, 1.0, n, sd, "none", 1 - alpha)
    if n < MIN_UNITS:
        mean = float(d.mean())
        half = sps.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n) if sd > 0 else 0.0
        p = float(sps.ttest_1samp(d, 0.0).pvalue) if sd > 0 else (1.0 if mean == 0 else 0.0)
        return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), p, n, sd, "paired t", 1 - alpha)
    w = walsh_averages(d, sort=False)
    k, big = signed_rank_k(n, alpha), len(w)
    mid = [(big - 1) // 2, big // 2]  # the median's order statistics (one, or two to average)
    w = np.partition(w, sorted({k - 1, big - k, *mid}))  # only these order statistics are needed
    hl = (w[mid[0]] + w[mid[1]]) / 2
    return Estimate(float(np.exp(hl)), float(np.exp(w[k - 1])), float(np.exp(w[big - k])), signed_rank_p(d), n, sd,
                    "HL/signed-rank", 1 - alpha)


def signed_rank_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (exact where scipy can, zeros dropped)."""
    nz = d[d != 0]
    if len(nz) == 0:
        return 1.0
    method = "exact" if len(nz) <= EXACT_MAX and len(np.unique(np.abs(nz))) == len(nz) else "approx"
    return float(sps.wilcoxon(nz, method=method).pvalue)


def unpaired(a: np.ndarray, b: np.ndarray, alpha: float) -> Estimate:
    """Sides that were not interleaved: Welch t on the logs of per-unit (per-run) values."""
    la, lb = _logs(a), _logs(b)
    n = min(len(la), len(lb))
    diff = float(lb.mean() - la.mean())
    if n < 2:
        return Estimate(math.exp(diff), math.nan, math.nan, 1.0, n, math.nan, "none", 1 - alpha)
    va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    se = math.sqrt(va + vb)
    sd = math.sqrt((la.var(ddof=1) + lb.var(ddof=1)) / 2)
    if se == 0:
        return Estimate(math.exp(diff), math.exp(diff), math.exp(diff), 1.0 if diff == 0 else 0.0, n, 0.0,
                        "Welch t", 1 - alpha)
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))
    half = sps.t.ppf(1 - alpha / 2, df) * se
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    return Estimate(math.exp(diff), math.exp(diff - half), math.exp(diff + half), p, n, sd, "Welch t", 1 - alpha)


def unpaired_summary(a: tuple[float, float, int], b: tuple[float, float, int], alpha: float) -> Estimate:
    """Welch t from each side's (mean, sample SD, n) alone, when the samples are not in the file
    (llama-bench CSV, SQL, markdown): logs by the delta method (mean of logs ~ ln mean, SD of logs ~
    SD / mean). Approximate: the method says so."""
    (ma, sa, na), (mb, sb, nb) = a, b
    diff = math.log(mb) - math.log(ma)
    n = min(na, nb)
    method = "Welch t from mean ± SD (approximate)"
    if n < 2:
        return Estimate(math.exp(diff), math.nan, math.nan, 1.0, n, math.nan, method, 1 - alpha)
    va, vb = (sa / ma) ** 2 / na, (sb / mb) ** 2 / nb
    se = math.sqrt(va + vb)
    sd = math.sqrt(((sa / ma) ** 2 + (sb / mb) ** 2) / 2)
    if se == 0:
        return Estimate(math.exp(diff), math.exp(diff), math.exp(diff), 1.0 if diff == 0 else 0.0, n, 0.0, method,
                        1 - alpha)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    half = sps.t.ppf(1 - alpha / 2, df) * se
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    return Estimate(math.exp(diff), math.exp(diff - half), math.exp(diff + half), p, n, sd, method, 1 - alpha)


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


@dataclass
class Verdict:
    verdict: str
    smaller_than_threshold: bool = False  # decided, but the interval reaches inside ±Δ


def verdict(est: Estimate, threshold: float, higher_is_better: bool, median_a: float,
            resolution: float | None = None, significant: bool = True) -> Verdict:
    """Classify one figure (see the module's docstring, step 3). ``significant``: for a figure of the
    BH family, whether its q-value passed; the primary figure passes its own α through the interval."""
    if not all(math.isfinite(x) for x in (est.ratio, est.ci_low, est.ci_high)):
        return Verdict(INCONCLUSIVE)
    m = math.log1p(threshold)
    lo, hi = math.log(est.ci_low), math.log(est.ci_high)
    res = (resolution or 0.0) / abs(median_a) if median_a else 0.0
    if lo - res > -m and hi + res < m:
        return Verdict(NO_CHANGE)
    change = abs(est.ratio - 1) * abs(median_a)
    big_enough = resolution is None or change >= 2 * resolution
    if (lo > 0 or hi < 0) and big_enough and significant:
        up = lo > 0
        return Verdict(IMPROVED if up == higher_is_better else REGRESSED, smaller_than_threshold=(lo < m and hi > -m))
    return Verdict(INCONCLUSIVE)


def units_needed(est: Estimate, threshold: float, alpha: float, cap: int = 100_000) -> int | None:
    """Units (rounds) that would likely decide an inconclusive figure: enough to exclude 0 when the
    estimate lies outside ±Δ/2, else enough to fit the interval inside ±Δ (power 95%), from the
    paired SD or, if smaller, the spread the measured interval implies."""
    sd = est.sd
    if not math.isfinite(sd) or sd <= 0 or not math.isfinite(est.ratio):
        return None
    # Heavy tails (a few slow repeats) inflate the SD far beyond what the rank interval needs: take
    # the spread the measured interval implies when it is the smaller one.
    if est.n > 2 and est.ci_low > 0 and math.isfinite(est.ci_high) and est.ci_high > est.ci_low:
        half = (math.log(est.ci_high) - math.log(est.ci_low)) / 2
        sd = min(sd, half * math.sqrt(est.n) / sps.t.ppf(1 - alpha / 2, est.n - 1))
    m, eff = math.log1p(threshold), abs(math.log(est.ratio))
    delta = eff if eff >= m / 2 else m - eff
    if delta <= 0:
        return None
    s = sd * HL_EFFICIENCY

    def need(n: int) -> float:  # ((t_{1-α/2,ν} + t_{1-β,ν}) s / δ)² with ν = n - 1
        nu = n - 1
        return ((sps.t.ppf(1 - alpha / 2, nu) + sps.t.ppf(POWER, nu)) * s / delta) ** 2

    if need(cap) > cap:
        return None
    lo, hi = 2, cap  # the smallest n that needs no more than itself (need falls as n grows)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if need(mid) <= mid else (mid + 1, hi)
    return lo


def next_look(n: int) -> int | None:
    """The next planned look after ``n`` rounds, or None after the last."""
    return next((k for k in LOOKS if k > n), None)


def stop_reason(verdict: str, n: int, seconds_per_unit: float, budget_s: float) -> str:
    """After a look at ``n`` rounds: why to stop, or "" to go on to the next look."""
    if verdict in (IMPROVED, REGRESSED, NO_CHANGE):
        return f"the primary figure was decided at look {LOOKS.index(n) + 1 if n in LOOKS else '?'} ({n} rounds)"
    nxt = next_look(n)
    if nxt is None:
        return f"the last planned look ({n} rounds) left the primary figure undecided"
    if seconds_per_unit * nxt > budget_s:
        return (f"the next look ({nxt} rounds, about {seconds_per_unit * nxt:.0f} s) would pass the budget "
                f"of {budget_s:.0f} s")
    return ""


STEP_ALPHA = 0.01  # a step is named only when the round order explains it this surely (a note, not a verdict) ...
STEP_MIN = 0.005  # ... and it moved the machine at least Δ
STEP_PERMUTATIONS = 999


@dataclass(frozen=True)
class Step:
    """One step in a series over time: ``at`` is the first unit after it; ``ratio`` the geometric mean after it over
    the one before; ``p`` the share of shuffled orders whose largest CUSUM excursion reached the series' own."""

    at: int
    n: int
    before: float
    after: float
    ratio: float
    p: float


def _cusum_peak(logs: np.ndarray, min_segment: int) -> tuple[int, float]:
    """Where the cumulative sum of deviations from the mean peaks (the best single split) and how far, in units of
    the series' SD times sqrt(n) (the standard CUSUM statistic)."""
    n = len(logs)
    dev = np.cumsum(logs - logs.mean())[min_segment - 1:n - min_segment]
    i = int(np.argmax(np.abs(dev)))
    sd = float(np.std(logs, ddof=1)) or 1e-300
    return i + min_segment, float(abs(dev[i]) / (sd * math.sqrt(n)))


def step_change(x: np.ndarray, min_segment: int = 3, permutations: int = STEP_PERMUTATIONS,
                seed: int = 0) -> Step | None:
    """The one step that best splits the positive series ``x`` (in time order), with its permutation p-value; None
    below 2 * ``min_segment`` values or when the series does not vary."""
    logs = _logs(x)
    n = len(logs)
    if n < 2 * min_segment or np.ptp(logs) == 0:
        return None
    at, peak = _cusum_peak(logs, min_segment)
    rng = np.random.default_rng(seed)
    reached = sum(_cusum_peak(rng.permutation(logs), min_segment)[1] >= peak for _ in range(permutations))
    before, after = float(np.exp(logs[:at].mean())), float(np.exp(logs[at:].mean()))
    return Step(at, n, before, after, after / before, (reached + 1) / (permutations + 1))


def named_step(x: np.ndarray) -> Step | None:
    """step_change's step where it is sure (p <= STEP_ALPHA) and at least STEP_MIN in size, else None."""
    step = step_change(x)
    if step is None or step.p > STEP_ALPHA or abs(math.log(step.ratio)) < math.log1p(STEP_MIN):
        return None
    return step

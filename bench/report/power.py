"""The statistics of one paired comparison, from its per-seed differences: the paired t-test and
its CI, the equivalence test (TOST), the power (minimum detectable effect, seeds needed), the
Wilcoxon signed-rank p where it can reject, and the probability of improvement.

Why from (mean, sd, n) and not from scipy.stats.ttest_rel on the raw values: accuracy is
quantised (one test image = 100 / N pp), so a difference that is equal on every seed has sd 0,
t = ±inf and p = 0, which would call a one-image difference "worse". The paired sd is therefore
floored at the resolution (one test image): below it the seeds cannot tell spreads apart, so an
observed sd under it is no evidence of a smaller one. With sd ≥ the resolution the numbers are
exactly those of scipy's ttest_rel and of statsmodels' ttost_paired (tests/test_report_power.py).

Power: statsmodels' TTestPower for the one-sample t-test of the differences. A two-sided test at
α is solved as the one-sided test at α/2: the opposite tail adds under 1e-6 to the power at 80 %,
and statsmodels' two-sided power is NaN at n = 3-7 with Holm-sized α (scipy's noncentral t lower
tail underflows), so the one-sided form is both exact enough and defined everywhere.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
POI_MIN_N = 5          # the probability of improvement and its bootstrap CI need this many seeds
BOOTSTRAP_RESAMPLES = 2000
TIE = 1e-9             # |difference| below this (pp) is a tie: identical accuracies


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison's numbers; p-values unadjusted, the CI at the level it was asked for."""

    n: int
    mean: float
    sd: float          # observed sample sd of the differences (ddof = 1)
    sd_used: float     # max(sd, resolution): what the test, CI, TOST and MDE use
    p: float           # two-sided paired t-test, H0: mean difference 0
    ci_low: float
    ci_high: float
    p_tost: float      # TOST, H0: |mean difference| >= margin


def paired_test(diffs: Iterable[float], *, resolution: float, margin: float, ci_alpha: float = ALPHA) -> PairedTest:
    """The paired t-test, its (1 - ci_alpha) CI and the TOST p for differences `diffs` (variant
    minus reference per seed), with the sd floored at `resolution`. n < 2: NaN statistics."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    n = len(d)
    if n < 2:
        return PairedTest(n, float(d.mean()) if n else np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)
    if not resolution > 0:
        raise ValueError(f"resolution must be > 0 (one test image in pp), got {resolution}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    sd_used = max(sd, resolution)
    se, df = sd_used / np.sqrt(n), n - 1
    half = float(stats.t.ppf(1 - ci_alpha / 2, df) * se)
    p_lower = stats.t.sf((mean + margin) / se, df)   # H0: difference <= -margin
    p_upper = stats.t.cdf((mean - margin) / se, df)  # H0: difference >= +margin
    return PairedTest(n, mean, sd, sd_used, float(2 * stats.t.sf(abs(mean) / se, df)), mean - half, mean + half,
                      float(max(p_lower, p_upper)))


def mde(n: int, sd: float, alpha: float, power: float = POWER) -> float:
    """Minimum detectable effect (same units as `sd`): the true mean difference a two-sided
    paired t-test at `alpha` over n seeds detects with `power`. NaN for n < 2 or no sd."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha / 2, power=power, alternative="larger")
    return float(d * sd) if np.isfinite(d) else np.nan


def seeds_needed(effect: float, sd: float, alpha: float, power: float = POWER) -> int | None:
    """Seeds a two-sided paired t-test at `alpha` needs to detect a true difference `effect` with
    `power` (at least 2); None when the solver finds none."""
    from statsmodels.stats.power import TTestPower

    if not (np.isfinite(sd) and sd > 0 and effect > 0):
        return None
    es, tp = effect / sd, TTestPower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tp.power(effect_size=es, nobs=2, alpha=alpha / 2, alternative="larger") >= power:
            return 2
        n = tp.solve_power(effect_size=es, nobs=None, alpha=alpha / 2, power=power, alternative="larger")
    return int(np.ceil(n - 1e-9)) if np.isfinite(n) else None


def wilcoxon_min_p(n: int) -> float:
    """The smallest two-sided p of the exact Wilcoxon signed-rank test at n pairs: 2 / 2^n."""
    return 2.0 / 2 ** n if n > 0 else 1.0


def wilcoxon_p(diffs: Iterable[float], alpha: float) -> float:
    """The Wilcoxon signed-rank p, or NaN where it can never fall below `alpha` at this n (the
    column would look like evidence it cannot be): n <= 5 at 0.05, n <= 8 at 0.05 / 12."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    if wilcoxon_min_p(len(d)) >= alpha:
        return np.nan
    if np.all(np.abs(d) <= TIE):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def _poi(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over strata of the share of seeds where the variant wins (ties count half)."""
    return np.mean([np.mean((s > TIE) + 0.5 * (np.abs(s) <= TIE), axis=axis) for s in strata], axis=0)


def probability_of_improvement(strata: list[Iterable[float]], confidence: float = 1 - ALPHA
                               ) -> tuple[float, float, float]:
    """(P(variant beats the reference on a seed), CI low, CI high), averaged over strata (the
    datasets) with equal weight as rliable does over tasks; paired per seed, since both ran on
    the same base. The CI is scipy's percentile bootstrap that resamples seeds within each
    stratum (stratified). NaN unless every stratum has >= POI_MIN_N seeds."""
    data = [np.asarray([x for x in s if np.isfinite(x)], dtype=float) for s in strata]
    if not data or min(len(s) for s in data) < POI_MIN_N:
        return np.nan, np.nan, np.nan
    res = stats.bootstrap(tuple(data), _poi, vectorized=True, paired=False, method="percentile",
                          confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                          random_state=np.random.default_rng(0))  # `rng=` needs scipy >= 1.15
    ci = res.confidence_interval
    return float(_poi(*data)), float(ci.low), float(ci.high)

"""Statistics over a comparison's seeds: intervals of the mean, median and geometric mean, and the one-sided
tests behind the table's verdicts (docs/statistics.md says what each is and when to trust it)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from banel.eval.success import SuccessRate

CONFIDENCE = 0.95
"""Level of every interval."""
ALPHA = 0.05
"""Significance level of the verdicts."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap resampling, so a table is reproducible from its run folders."""


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean over seeds (the mean itself for one seed or equal values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Distribution-free interval of the median from order statistics, and its exact coverage.

    [x_(k), x_(n+1-k)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k); k is the largest
    with coverage >= confidence, or 1 (the range) when even that falls short (n < 6 at 95%: 5 seeds give
    93.75%).
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * stats.binom.cdf(k, n, 0.5) >= confidence:
        k += 1
    coverage = 1 - 2 * stats.binom.cdf(k - 1, n, 0.5) if n else 0.0
    return float(x[k - 1]), float(x[n - k]), float(coverage)


def geometric_mean_interval(
    values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float] | tuple[None, None, None]:
    """Geometric mean over seeds and its Student-t interval on log rates (None if a rate is not positive)."""
    values = np.asarray(values, dtype=float)
    if not len(values) or np.any(values <= 0) or not np.all(np.isfinite(values)):
        return None, None, None
    logs = np.log(values)
    centre = float(logs.mean())
    if len(values) < 2 or np.all(logs == logs[0]):
        return math.exp(centre), math.exp(centre), math.exp(centre)
    low, high = stats.t.interval(confidence, len(logs) - 1, loc=centre, scale=stats.sem(logs))
    return math.exp(centre), math.exp(low), math.exp(high)


def improvement_interval(
    values: np.ndarray, prior: SuccessRate, confidence: float = CONFIDENCE
) -> tuple[float, float] | tuple[None, None]:
    """Interval of the geometric-mean improvement over the prior, with the prior estimate's own uncertainty.

    On the log scale the factor is mean(log r_i) - log p; its standard error combines the seeds' (sem of the
    logs) and the prior's (its Clopper-Pearson interval read as +-z standard errors of log p, the delta
    method), with Student t on n - 1 degrees of freedom. None with fewer than 2 seeds or a zero rate.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.any(values <= 0) or prior.rate <= 0:
        return None, None
    logs = np.log(values)
    se_prior = 0.0
    if not prior.exact and prior.low > 0:
        se_prior = (math.log(prior.high) - math.log(prior.low)) / (2 * stats.norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(float(stats.sem(logs)) ** 2 + se_prior**2)
    centre = float(logs.mean()) - math.log(prior.rate)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * se
    return math.exp(centre - half), math.exp(centre + half)


def _log(values: np.ndarray) -> np.ndarray:
    # a rate of 0 ranks below every positive rate; the floor keeps it finite for the rank tests
    return np.log(np.maximum(np.asarray(values, dtype=float), 1e-300))


def above_prior_p(values: np.ndarray, prior: float) -> float | None:
    """One-sided Wilcoxon signed-rank p-value that the seeds' rates lie above the prior (log scale); None
    when every seed equals it."""
    d = _log(values) - math.log(max(prior, 1e-300))
    if not np.any(d != 0):
        return None
    return float(stats.wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)


def pooled_above_prior_p(successes: list[int], samples: list[int], prior: SuccessRate) -> float | None:
    """One-sided exact p-value that the seeds' pooled Monte-Carlo re-estimates beat the prior's estimate.

    Given K successes in N re-estimation samples and k_p in n_p prior samples, under equal rates K is
    Binomial(K + k_p, N / (N + n_p)) (the conditional test of two binomial rates): it carries the noise of
    the shared prior estimate too, which a test across seeds against a fixed number cannot. None for exact
    rates.
    """
    n, k = sum(samples), sum(successes)
    if prior.exact or not n or not prior.n:
        return None
    if k + prior.successes == 0:
        return 1.0  # not one success on either side: no evidence of a difference
    return float(stats.binomtest(k, k + prior.successes, n / (n + prior.n), alternative="greater").pvalue)


def better_than_prior(
    best: np.ndarray, successes: list[int], samples: list[int], prior: SuccessRate
) -> tuple[float | None, float | None, bool]:
    """(signed-rank p across seeds, pooled exact p, verdict): better only if both tests reject at ALPHA.

    Across seeds (consistency) and pooled against the prior's own sampling noise (for Monte-Carlo rates);
    with exact rates the only noise is the seeds', and the signed-rank test alone decides.
    """
    p_seeds = above_prior_p(best, prior.rate)
    p_pooled = pooled_above_prior_p(successes, samples, prior)
    verdict = p_seeds is not None and p_seeds < ALPHA and (p_pooled is None or p_pooled < ALPHA)
    if p_pooled is None and not prior.exact:
        verdict = False  # estimates without their sample counts cannot be weighed against the prior's noise
    return p_seeds, p_pooled, verdict


def above_other_p(values: np.ndarray, other: np.ndarray) -> float | None:
    """One-sided Mann-Whitney p-value that one method's seeds lie above another's (runs are independent)."""
    if not len(values) or not len(other):
        return None
    return float(stats.mannwhitneyu(_log(values), _log(other), alternative="greater").pvalue)


def smallest_signed_rank_p(n: int) -> float:
    """The smallest one-sided p-value the exact signed-rank test can give with n seeds: every seed on one side,
    1 / 2**n (3 seeds: 0.125, so it cannot reject at 5% below 5 seeds)."""
    return 0.5**n


def smallest_rank_sum_p(n: int, m: int) -> float:
    """The smallest one-sided p-value the exact Mann-Whitney test can give with n against m seeds: every seed of
    one above every seed of the other, 1 / C(n + m, n) (3 against 3: 1/20 = 0.05, never below 5%)."""
    return 1 / math.comb(n + m, n)

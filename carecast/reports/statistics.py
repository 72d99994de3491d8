"""The statistics of the report, in closed form: comparing two proportions, and an interval for their difference.

* ``compare_proportions``: a two-sided two-proportion z-test (pooled variance), or Fisher's exact
  test when an expected cell count is under 5, where the normal approximation is poor;
* ``holm``: Holm's step-down adjustment, for several variants each compared with the control;
* ``newcombe_interval``: the hybrid score interval for a difference of proportions (Newcombe 1998,
  method 10), built from the Wilson score interval of each proportion. Unlike the Wald interval it
  stays inside [-1, 1] and keeps its coverage near 0 and 1, where conversion rates often are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054
"""The two-sided 95 % quantile of the standard normal distribution."""
_MIN_EXPECTED = 5
_FISHER_TIE = 1e-7
"""Tables as likely as the observed one, up to rounding, count as "as extreme" (as in R and SciPy)."""


@dataclass(frozen=True)
class TestResult:
    method: str
    statistic: float | None
    """z for the z-test; none for Fisher's exact test."""
    p_value: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z_95) -> tuple[float, float, float]:
    """``p1 - p2`` and its hybrid score interval: (difference, low, high)."""
    p1, p2 = x1 / n1, x2 / n2
    low1, high1 = wilson_interval(x1, n1, z)
    low2, high2 = wilson_interval(x2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    high = difference + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return difference, low, high


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return TestResult("two-proportion z-test", 0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return TestResult("two-proportion z-test", z, math.erfc(abs(z) / math.sqrt(2)))


def fisher_exact_test(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """Two-sided: the probability, given the margins, of a table no more likely than the one observed."""
    successes, total = x1 + x2, n1 + n2

    def log_probability(k: int) -> float:
        return _log_choose(successes, k) + _log_choose(total - successes, n1 - k) - _log_choose(total, n1)

    observed = log_probability(x1)
    support = range(max(0, n1 - (total - successes)), min(n1, successes) + 1)
    threshold = observed + math.log1p(_FISHER_TIE)
    p = sum(math.exp(log_probability(k)) for k in support if log_probability(k) <= threshold)
    return TestResult("Fisher's exact test", None, min(1.0, p))


def compare_proportions(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """The z-test when every expected count is 5 or more, Fisher's exact test otherwise."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("each group needs at least one trial")
    successes, total = x1 + x2, n1 + n2
    expected = [n * k / total for n in (n1, n2) for k in (successes, total - successes)]
    if min(expected) < _MIN_EXPECTED:
        return fisher_exact_test(x1, n1, x2, n2)
    return two_proportion_z_test(x1, n1, x2, n2)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: reject where the adjusted value is under alpha."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

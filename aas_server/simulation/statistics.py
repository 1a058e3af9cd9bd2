"""Statistics over replications: means with Student-t confidence intervals, and Welch comparisons.

Each replication is one independent observation of every figure; the interval of a mean over n
replications is ``mean ± t(1-α/2, n-1) · s/√n``. Two scenarios are compared with Welch's t interval
for the difference of means (unequal variances, Welch–Satterthwaite degrees of freedom); the
difference is significant when its interval excludes 0. ``scipy.stats`` (for the t quantiles) is
imported when first needed, so that a worker process that only runs replications does not load it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aas_server.simulation.model import ReplicationResult


@dataclass(frozen=True)
class Estimate:
    """A mean over replications with its confidence interval (``half_width`` is infinite for one replication)."""

    mean: float
    half_width: float
    std: float
    count: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _t_quantile(probability: float, freedom: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(probability, freedom))


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The mean of ``values`` with its Student-t confidence interval."""
    count = len(values)
    mean = math.fsum(values) / count
    if count < 2:
        return Estimate(mean, math.inf, math.nan, count)
    std = statistics.stdev(values)
    quantile = _t_quantile((1 + confidence) / 2, count - 1)
    return Estimate(mean, quantile * std / math.sqrt(count), std, count)


@dataclass(frozen=True)
class ScenarioResult:
    """Every replication of one scenario, the estimates over them, the bottleneck and the mean time series.

    ``bottleneck`` is the station most often the bottleneck of a replication (highest active share,
    working or down; ties to the least blocked and starved), ``bottleneck_share`` the share of
    replications in which it was.
    """

    name: str
    replications: list[ReplicationResult]
    estimates: dict[str, Estimate]
    bottleneck: str
    bottleneck_share: float
    series_times: list[float]
    series: dict[str, list[float]]


def aggregate(name: str, replications: Sequence[ReplicationResult], confidence: float = 0.95) -> ScenarioResult:
    """Estimates over ``replications`` (ordered by index), the bottleneck and the mean of each time series."""
    ordered = sorted(replications, key=lambda result: result.index)
    estimates = {
        metric: estimate([result.metrics[metric] for result in ordered], confidence) for metric in ordered[0].metrics
    }
    votes = Counter(result.bottleneck for result in ordered)
    bottleneck, count = max(votes.items(), key=lambda item: (item[1], -list(votes).index(item[0])))
    series = {
        key: [
            math.fsum(column) / len(ordered) for column in zip(*(result.series[key] for result in ordered), strict=True)
        ]
        for key in ordered[0].series
    }
    return ScenarioResult(
        name, ordered, estimates, bottleneck, count / len(ordered), list(ordered[0].series_times), series
    )


@dataclass(frozen=True)
class Difference:
    """``candidate - baseline`` of one figure, with its Welch confidence interval and whether it excludes 0."""

    baseline: float
    candidate: float
    difference: float
    half_width: float
    degrees_of_freedom: float
    significant: bool

    @property
    def low(self) -> float:
        return self.difference - self.half_width

    @property
    def high(self) -> float:
        return self.difference + self.half_width


def welch(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's confidence interval for ``mean(candidate) - mean(baseline)``; needs two values on each side."""
    if len(baseline) < 2 or len(candidate) < 2:
        raise ValueError("a comparison needs at least two replications on each side")
    mean_a, mean_b = math.fsum(baseline) / len(baseline), math.fsum(candidate) / len(candidate)
    term_a = statistics.variance(baseline) / len(baseline)
    term_b = statistics.variance(candidate) / len(candidate)
    difference = mean_b - mean_a
    standard_error = math.sqrt(term_a + term_b)
    if standard_error == 0:
        return Difference(mean_a, mean_b, difference, 0.0, math.inf, difference != 0)
    freedom = (term_a + term_b) ** 2 / (term_a**2 / (len(baseline) - 1) + term_b**2 / (len(candidate) - 1))
    half_width = _t_quantile((1 + confidence) / 2, freedom) * standard_error
    return Difference(mean_a, mean_b, difference, half_width, freedom, abs(difference) > half_width)


def paired(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> Difference:
    """The paired-t confidence interval for ``mean(candidate - baseline)``, replication by replication.

    The analysis for common random numbers: replication i of both scenarios drew the same random
    numbers, so their figures are correlated and the spread of the differences is what counts.
    """
    if len(baseline) != len(candidate) or len(baseline) < 2:
        raise ValueError("a paired comparison needs the same number (at least two) of replications on each side")
    differences = [b - a for a, b in zip(baseline, candidate, strict=True)]
    mean_a, mean_b = math.fsum(baseline) / len(baseline), math.fsum(candidate) / len(candidate)
    difference = math.fsum(differences) / len(differences)
    standard_error = statistics.stdev(differences) / math.sqrt(len(differences))
    freedom = float(len(differences) - 1)
    if standard_error == 0:
        return Difference(mean_a, mean_b, difference, 0.0, freedom, difference != 0)
    half_width = _t_quantile((1 + confidence) / 2, freedom) * standard_error
    return Difference(mean_a, mean_b, difference, half_width, freedom, abs(difference) > half_width)


def compare(
    baseline: ScenarioResult, candidate: ScenarioResult, confidence: float = 0.95, pair: bool = False
) -> dict[str, Difference]:
    """Every figure the two scenarios share, as ``candidate - baseline`` with Welch's interval.

    ``pair``: the paired-t interval instead (``paired``), for two scenarios run with the same seed and
    number of replications (common random numbers), where it is much narrower.
    """
    method = paired if pair else welch
    return {
        metric: method(
            [result.metrics[metric] for result in baseline.replications],
            [result.metrics[metric] for result in candidate.replications],
            confidence,
        )
        for metric in baseline.estimates
        if metric in candidate.estimates
    }

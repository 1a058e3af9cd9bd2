"""The line model against queueing theory, and its reproducibility (issue 14, "Validation against theory").

Each check runs the model with several replications and asks that the theoretical value lies in the
replications' Student-t confidence interval (95 %), and that the interval is narrow enough to mean
something. Seeds are fixed, so each check is deterministic.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from scipy import stats

from aas_server.simulation.description import LineDescription, Scenario, parse_line
from aas_server.simulation.runner import run_replications, run_scenario, worker_pool
from aas_server.simulation.statistics import compare, welch


def _exponential(mean: float) -> dict[str, Any]:
    return {"kind": "exponential", "mean": mean}


def _constant(value: float) -> dict[str, Any]:
    return {"kind": "constant", "value": value}


def test_a_single_station_with_poisson_arrivals_matches_m_m_1() -> None:
    """M/M/1 (Kleinrock, Queueing Systems I, 1975, section 3.2): utilisation ρ = λ/μ, queue length ρ²/(1-ρ)."""
    arrival_rate, service_rate = 0.5, 1.0
    rho = arrival_rate / service_rate
    line = parse_line(
        {
            "stations": [{"name": "server", "cycle_time": _exponential(1 / service_rate)}],
            "arrivals": {"interarrival": _exponential(1 / arrival_rate)},
            "horizon": 12_000,
            "warmup": 500,
            "replications": 16,
            "seed": 7,
        }
    )
    result = run_scenario(line)
    utilisation = result.estimates["stations.server.utilisation"]
    queue = result.estimates["arrivals.mean_queue"]
    assert utilisation.contains(rho), utilisation
    assert queue.contains(rho**2 / (1 - rho)), queue
    assert utilisation.half_width < 0.02
    assert queue.half_width < 0.1
    assert result.estimates["throughput"].contains(arrival_rate * 3600)


def test_a_deterministic_two_station_line_runs_at_the_pace_of_its_slowest_station() -> None:
    """No failures, constant cycle times: throughput = 1/max(c_i) once the line is full.

    The slow station is the bottleneck.
    """
    line = parse_line(
        {
            "stations": [
                {"name": "filler", "cycle_time": _constant(2.0)},
                {"name": "capper", "cycle_time": _constant(3.0)},
            ],
            "buffers": [{"capacity": 5}],
            "horizon": 3_660,
            "warmup": 60,
            "replications": 2,
        }
    )
    result = run_scenario(line)
    assert result.estimates["throughput"].mean == pytest.approx(3600 / 3.0, abs=1.0)
    assert result.bottleneck == "capper"
    assert result.estimates["stations.capper.utilisation"].mean == pytest.approx(1.0, abs=1e-3)
    # The filler is faster: it fills the buffer and then waits for room a third of the time.
    assert result.estimates["stations.filler.blocked"].mean == pytest.approx(1 / 3, abs=0.01)
    assert result.estimates["buffers.filler->capper.mean_level"].mean == pytest.approx(5, abs=0.05)


def test_two_exponential_stations_with_a_finite_buffer_match_the_markov_chain() -> None:
    """Two exponential machines, infinite source, buffer of b parts, blocking after service.

    With n = parts in the buffer and at machine 2, plus the finished part machine 1 holds while
    blocked, n runs over 0..K with K = b + 2; n rises at rate μ1 (n < K) and falls at rate μ2
    (n > 0), a birth-death chain with π_n ∝ r^n, r = μ1/μ2 (Buzacott & Shanthikumar, Stochastic
    Models of Manufacturing Systems, 1993, ch. 5; Gershwin, Manufacturing Systems Engineering, 1994,
    ch. 3). Machine 2 works unless n = 0: throughput = μ2 (1 - π_0), π_0 = (1 - r)/(1 - r^(K+1)).
    """
    mu_1, mu_2, capacity = 1.0, 0.8, 2
    ratio, states = mu_1 / mu_2, capacity + 2
    pi_0 = (1 - ratio) / (1 - ratio ** (states + 1))
    expected = mu_2 * (1 - pi_0) * 3600
    line = parse_line(
        {
            "stations": [
                {"name": "first", "cycle_time": _exponential(1 / mu_1)},
                {"name": "second", "cycle_time": _exponential(1 / mu_2)},
            ],
            "buffers": [{"capacity": capacity}],
            "horizon": 10_000,
            "warmup": 200,
            "replications": 16,
            "seed": 3,
        }
    )
    result = run_scenario(line)
    throughput = result.estimates["throughput"]
    assert throughput.contains(expected), (throughput, expected)
    assert throughput.half_width < 0.02 * expected
    assert result.estimates["stations.second.starved"].contains(pi_0)


def test_two_stations_with_failures_and_a_large_buffer_are_limited_by_the_least_available() -> None:
    """Operation-dependent failures: a part costs c plus, on average, (c/MTBF)·MTTR of repair, so a
    station alone makes A_i/c_i parts per second with A_i = MTBF/(MTBF+MTTR) (renewal-reward on
    operating time; Buzacott & Shanthikumar 1993, section 2.3). With a buffer large against the
    repairs of the faster station, the slower one is never starved: throughput = min_i A_i/c_i.
    """
    line = parse_line(
        {
            "stations": [
                {"name": "filler", "cycle_time": _constant(1.0), "mtbf": _exponential(100), "mttr": _exponential(5)},
                {"name": "capper", "cycle_time": _constant(1.0), "mtbf": _exponential(40), "mttr": _exponential(5)},
            ],
            "buffers": [{"capacity": 50}],
            "horizon": 9_000,
            "warmup": 1_000,
            "replications": 12,
            "seed": 11,
        }
    )
    expected = min(100 / 105 / 1.0, 40 / 45 / 1.0) * 3600
    result = run_scenario(line)
    throughput = result.estimates["throughput"]
    assert throughput.contains(expected), (throughput, expected)
    assert throughput.half_width < 0.03 * expected
    assert result.bottleneck == "capper"
    assert result.estimates["stations.capper.availability"].contains(40 / 45)
    # OEE factors multiply to OEE, quality is 1 without scrap.
    oee = result.estimates["oee"].mean
    factors = [result.estimates[name].mean for name in ("availability", "performance", "quality")]
    assert result.estimates["quality"].mean == 1.0
    assert math.prod(factors) == pytest.approx(oee, rel=0.01)


def _bottling(**run: Any) -> LineDescription:
    return parse_line(
        {
            "name": "bottling",
            "stations": [
                {
                    "name": "filler",
                    "cycle_time": {"kind": "normal", "mean": 2.0, "std": 0.2},
                    "mtbf": _exponential(1800),
                    "mttr": {"kind": "lognormal", "mean": 120, "std": 60},
                    "scrap_rate": 0.01,
                },
                {
                    "name": "capper",
                    "cycle_time": {"kind": "empirical", "values": [2.1, 2.2, 2.3]},
                    "mtbf": _exponential(2400),
                    "mttr": _exponential(90),
                },
            ],
            "buffers": [{"name": "conveyor", "capacity": 30}],
            "horizon": 7_200,
            "warmup": 300,
            "series_interval": 690,
            **run,
        }
    )


def test_the_same_seed_gives_identical_results_and_another_seed_does_not() -> None:
    first = run_replications(_bottling(replications=3, seed=5))
    again = run_replications(_bottling(replications=3, seed=5))
    other = run_replications(_bottling(replications=3, seed=6))
    assert [result.metrics for result in first] == [result.metrics for result in again]
    assert [result.series for result in first] == [result.series for result in again]
    assert [result.metrics for result in first] != [result.metrics for result in other]
    # Replications are independent draws, not copies of each other.
    assert len({result.metrics["throughput"] for result in first}) == 3


def test_results_do_not_depend_on_the_number_of_worker_processes() -> None:
    line = _bottling(replications=4, seed=21)
    inline = run_scenario(line, workers=1)
    parallel = run_scenario(line, workers=2)
    assert [result.metrics for result in parallel.replications] == [result.metrics for result in inline.replications]
    assert parallel.estimates == inline.estimates
    with worker_pool(2) as pool:
        pooled = [run_scenario(line, executor=pool) for _ in range(2)]
    assert all(result.estimates == inline.estimates for result in pooled)


def test_time_series_add_up_to_the_throughput() -> None:
    result = run_scenario(_bottling(replications=2, seed=1))
    series = result.series["throughput"]
    assert len(series) == len(result.series_times) == 10
    assert result.series_times[-1] == pytest.approx(7_200)
    assert math.fsum(series) / len(series) == pytest.approx(result.estimates["throughput"].mean, rel=1e-9)
    levels = result.series["buffers.conveyor.level"]
    assert all(0 <= level <= 30 for level in levels)
    assert result.estimates["quality"].mean < 1.0


def test_a_faster_filler_is_compared_with_the_baseline() -> None:
    """The "filler +10 %" what-if: Welch's interval on the difference, with common random numbers."""
    base = _bottling(replications=8, seed=2)
    baseline = run_scenario(base)
    faster = run_scenario(Scenario(name="filler +10 %", overrides={"stations[filler].speed_factor": 1.1}).apply(base))
    same = run_scenario(base)
    differences = compare(baseline, faster)
    assert faster.name == "filler +10 %"
    assert differences["stations.filler.utilisation"].significant
    assert differences["stations.filler.utilisation"].difference < 0
    assert not compare(baseline, same)["throughput"].significant
    assert compare(baseline, same)["throughput"].difference == 0


def test_welch_interval_agrees_with_scipy_welch_test() -> None:
    baseline = [10.0, 11.5, 9.8, 10.7, 10.1, 10.9]
    candidate = [11.9, 12.4, 11.1, 12.8, 11.7]
    difference = welch(baseline, candidate)
    test = stats.ttest_ind(candidate, baseline, equal_var=False)
    assert difference.significant == (test.pvalue < 0.05)
    assert difference.difference == pytest.approx(sum(candidate) / 5 - sum(baseline) / 6)
    low, high = test.confidence_interval(0.95)
    assert (difference.low, difference.high) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="two replications"):
        welch([1.0], candidate)

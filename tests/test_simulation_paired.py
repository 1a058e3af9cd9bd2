"""Comparing two scenarios run with common random numbers: the paired-t interval (issue 14)."""

from __future__ import annotations

import pytest
from scipy import stats

from aas_server.simulation.description import apply_overrides, parse_line
from aas_server.simulation.runner import run_scenario
from aas_server.simulation.statistics import compare, paired


def test_the_paired_interval_is_scipys_paired_t_test() -> None:
    baseline = [10.0, 12.0, 9.5, 11.0, 10.5]
    candidate = [10.6, 12.4, 10.3, 11.5, 11.2]
    difference = paired(baseline, candidate)
    test = stats.ttest_rel(candidate, baseline)
    interval = test.confidence_interval(0.95)
    assert difference.low == pytest.approx(interval.low)
    assert difference.high == pytest.approx(interval.high)
    assert difference.significant == (test.pvalue < 0.05)
    with pytest.raises(ValueError, match="same number"):
        paired(baseline, candidate[:4])


def test_common_random_numbers_make_a_small_real_gain_visible() -> None:
    line = parse_line(
        {
            "stations": [
                {
                    "name": "filler",
                    "cycle_time": {"kind": "constant", "value": 1.0},
                    "mtbf": {"kind": "exponential", "mean": 300},
                    "mttr": {"kind": "lognormal", "mean": 60, "std": 30},
                },
                {"name": "capper", "cycle_time": {"kind": "constant", "value": 1.0}},
            ],
            "buffers": [{"capacity": 3}],
            "horizon": 7200,
            "replications": 8,
            "seed": 4,
        }
    )
    faster = apply_overrides(line, {"stations[filler].speed_factor": 1.1})
    baseline, candidate = run_scenario(line), run_scenario(faster)
    unpaired = compare(baseline, candidate)["throughput"]
    with_pairs = compare(baseline, candidate, pair=True)["throughput"]
    assert with_pairs.difference == pytest.approx(unpaired.difference)
    assert with_pairs.difference > 0  # the faster filler is blocked part of the time, so it fails less often
    assert with_pairs.half_width < unpaired.half_width / 2
    assert with_pairs.significant

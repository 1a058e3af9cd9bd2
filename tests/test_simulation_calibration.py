"""Calibration (issue 14): distributions fitted from recorded machine states and counts, with fallbacks reported."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from aas_server.simulation.calibration import (
    StationRecord,
    calibrate,
    cycle_times,
    failure_samples,
    repair_samples,
    repair_times,
    times_to_failure,
)
from aas_server.simulation.description import SimulationError
from aas_server.simulation.twin import line_from_twin


def _record(seed: int, failures: int, poll: float = 1.0) -> tuple[StationRecord, list[float], list[float]]:
    """A station that runs at 4 parts/s between Weibull failures and lognormal repairs, polled every second."""
    generator = np.random.default_rng(seed)
    up = stats.weibull_min(2.0, scale=1200.0).rvs(failures + 1, random_state=generator)
    down = stats.lognorm(0.5, scale=200.0).rvs(failures, random_state=generator)
    periods: list[tuple[float, float, str]] = []
    counts: list[tuple[float, int]] = []
    now = 0.0
    for index, length in enumerate(up):
        start, end = now, now + float(length)
        periods.append((start, end, "running"))
        moment = start + poll
        while moment <= end:
            counts.append((moment, 4))
            moment += poll
        now = end
        if index < failures:
            periods.append((now, now + float(down[index]), "down"))
            counts.append((now + float(down[index]), 0))
            now += float(down[index])
    return StationRecord("press", periods, counts, technical_data={"CycleTime": 0.25}), list(up), list(down)


def test_samples_are_taken_from_complete_episodes_only() -> None:
    periods = [
        (0.0, 10.0, "down"),  # touches the start: censored
        (10.0, 100.0, "running"),
        (100.0, 110.0, "idle"),
        (110.0, 150.0, "running"),
        (150.0, 170.0, "down"),
        (170.0, 175.0, "down"),  # another reason, same episode
        (175.0, 275.0, "running"),
        (275.0, 300.0, "down"),
        (300.0, 400.0, "running"),
    ]
    assert repair_times(periods) == [25.0, 25.0]
    # running time between the episodes (idle does not age the machine); the stretch before the first is censored
    assert times_to_failure(periods) == [130.0, 100.0]
    assert failure_samples([(0.0, 50.0, "running"), (50.0, 60.0, "down"), (60.0, 90.0, "running")]) == ([50.0], [30.0])
    # the running time after the last failure and the repair under way at the start are lower bounds: censored;
    # (the running time before the first failure is complete: a failure was seen)
    assert failure_samples(periods) == ([130.0, 100.0], [100.0])
    assert repair_samples(periods) == ([25.0, 25.0], [10.0])
    # 0 parts while running ends a run; an increment spanning a failure is no cycle
    counts = [(11.0, 5), (12.0, 5), (13.0, 0), (14.0, 5), (15.0, 5), (151.0, 5), (180.0, 5), (181.0, 10)]
    assert cycle_times(periods, counts, min_parts=10) == [0.2, 0.1]


def test_a_recorded_history_gives_back_its_distributions_with_goodness_of_fit() -> None:
    record, _up, down = _record(seed=3, failures=300)
    report = calibrate([record])
    station = report.stations[0]
    assert station.mtbf.source == "history"
    assert station.mtbf.samples == 300
    assert station.mtbf.censored == 1  # the running time after the last failure
    assert station.mtbf.family == "weibull"
    assert station.mtbf.distribution is not None
    assert station.mtbf.distribution["shape"] == pytest.approx(2.0, rel=0.15)
    assert station.mttr.family == "lognormal"
    assert station.mttr.mean == pytest.approx(float(np.mean(down)), rel=0.1)
    assert station.mtbf.ks_p_value is not None
    assert station.mtbf.ks_p_value > 0.01
    assert station.cycle_time.mean == pytest.approx(0.25, rel=1e-9)
    families = [candidate.family for candidate in station.mtbf.candidates]
    assert sorted(families) == ["exponential", "gamma", "lognormal", "normal", "weibull"]
    document = report.to_dict()["stations"][0]
    assert document["mtbf"]["family"] == "weibull"
    assert document["mtbf"]["samples"] == 300
    assert {"ks_statistic", "ks_p_value", "candidates", "distribution"} <= document["mtbf"].keys()


def test_too_few_samples_fall_back_to_technical_data_and_the_report_says_so() -> None:
    record, _, _ = _record(seed=4, failures=4)
    record = StationRecord(
        record.name, record.periods, record.counts, technical_data={"CycleTime": 0.25, "MTBF": 3600, "MTTR": 90}
    )
    station = calibrate([record], min_samples=10).stations[0]
    assert station.mttr.source == "technical_data"
    assert station.mttr.distribution == {"kind": "exponential", "mean": 90.0}
    assert station.mttr.fallback is not None
    assert "4 samples in the range, fewer than 10" in station.mttr.fallback
    assert "Technical Data MTTR 90 s" in station.mttr.fallback
    assert station.mtbf.source == "technical_data"
    assert station.scrap_rate.fallback is not None
    assert "no scrap counter" in station.scrap_rate.fallback


def test_without_technical_data_the_station_goes_without_failures_and_the_line_is_built() -> None:
    record, _, _ = _record(seed=5, failures=2)
    report = calibrate([record, StationRecord("packer", record.periods, record.counts)])
    station = report.stations[0]
    assert station.mtbf.distribution is None
    assert station.mtbf.source == "none"
    assert station.mtbf.fallback is not None
    assert "no MTBF in Technical Data either" in station.mtbf.fallback
    line = line_from_twin(
        report.process_data([{"name": "belt", "capacity": 5}], {"horizon": 3600, "replications": 2}, "press line")
    )
    assert [item.name for item in line.stations] == ["press", "packer"]
    assert line.stations[0].mtbf is None
    assert line.stations[0].rated_cycle_time == 0.25


def test_a_bad_technical_value_is_refused_with_its_place() -> None:
    record, _, _ = _record(seed=6, failures=2)
    bad = StationRecord("press", record.periods, record.counts, technical_data={"CycleTime": -1.0})
    with pytest.raises(SimulationError, match=r"stations\[press\]\.technical_data\.CycleTime: must be a number > 0"):
        calibrate([bad])

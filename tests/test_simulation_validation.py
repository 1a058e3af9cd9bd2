"""Validation against the twin (issue 14): over a recorded demo day, the calibrated baseline's throughput and OEE
are within 5 % of the recorded ones (recorded with the hub's machine states and ISO 22400 KPI functions)."""

from __future__ import annotations

import pytest

from aas_server.runtime.demo_day import FILLER, FaultSchedule, validate_against_demo_day


@pytest.mark.timeout(600)
def test_the_calibrated_baseline_reproduces_a_recorded_demo_day_within_5_percent() -> None:
    schedule = FaultSchedule(mtbf=1800.0, mttr_mean=300.0, mttr_std=150.0, seed=7)
    validation = validate_against_demo_day(replications=4, workers=2, schedule=schedule)
    day = validation.day
    # the record is what the fault schedule played: every jam is a failure event of the filler
    assert day.kpis[FILLER].failure_events == len(day.jams)
    filler = validation.report.stations[0]
    assert filler.mtbf.source == "history"
    assert filler.mttr.source == "history"
    assert filler.mttr.samples >= len(day.jams) - 1  # a jam cut by the end of the day is censored
    assert filler.cycle_time.mean == pytest.approx(0.3, rel=0.01)
    capper = validation.report.stations[1]
    assert capper.mtbf.fallback is not None  # the capper never fails: the report says it is modelled without failures
    figures = validation.figures()
    for name, (recorded, simulated, _, relative) in figures.items():
        print(f"{name}: recorded {recorded:.4g}, simulated {simulated:.4g} ({relative:+.2%})")
        assert abs(relative) <= 0.05, f"{name}: simulated {simulated:.4g} vs recorded {recorded:.4g}"

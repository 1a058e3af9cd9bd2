"""Line descriptions, scenarios and the line built from twin data: bad input is refused with its parameter path."""

from __future__ import annotations

from typing import Any

import pytest

from aas_server.errors import InvalidRequestError
from aas_server.simulation.description import (
    Constant,
    Exponential,
    Scenario,
    SimulationError,
    apply_overrides,
    parse_line,
)
from aas_server.simulation.twin import line_from_twin


def _line(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "stations": [
            {"name": "filler", "cycle_time": {"kind": "constant", "value": 2.0}},
            {"name": "capper", "cycle_time": {"kind": "exponential", "mean": 2.5}},
        ],
        "buffers": [{"capacity": 10}],
        "horizon": 3600,
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"stations": [{"name": "a", "cycle_time": {"kind": "exponential", "mean": -1}}]},
            "stations[0].cycle_time.mean: must be > 0",
        ),
        (
            {
                "stations": [
                    {"name": "a", "cycle_time": {"kind": "constant", "value": 1}},
                    {"name": "b", "cycle_time": {"kind": "normal", "mean": 0, "std": 1}},
                ]
            },
            "stations[1].cycle_time.mean: must be > 0",
        ),
        ({"buffers": [{"capacity": 0}]}, "buffers[0].capacity: must be >= 1"),
        ({"buffers": []}, "buffers: 2 stations need 1 buffers, got 0"),
        ({"horizon": 10**9}, "horizon: must be <= 2.592e+06 (the configured maximum)"),
        ({"warmup": 3600}, "warmup: must be < horizon"),
        ({"replications": 0}, "replications: must be >= 1"),
        ({"series_interval": 0.01}, "series_interval: must be >= 0.36 (at most 10000 intervals)"),
        ({"speed": 2}, "speed: is not a parameter"),
        (
            {
                "stations": [
                    {
                        "name": "a",
                        "cycle_time": {"kind": "constant", "value": 1},
                        "mtbf": {"kind": "exponential", "mean": 60},
                    }
                ]
            },
            "stations[0].mttr: needed when mtbf is given",
        ),
        ({"stations": [{"name": "a", "cycle_time": {"kind": "weibull", "mean": 1}}]}, "stations[0].cycle_time"),
        (
            {"stations": [{"name": "a", "cycle_time": {"kind": "empirical", "values": [1, -2]}}]},
            "stations[0].cycle_time.values[1]: must be > 0",
        ),
        (
            {"stations": [{"name": "a", "cycle_time": {"kind": "constant", "value": 1}, "scrap_rate": 1}]},
            "stations[0].scrap_rate: must be < 1",
        ),
    ],
)
def test_an_impossible_line_is_refused_naming_the_parameter(change: dict[str, Any], message: str) -> None:
    document = _line(**change)
    if "stations" in change and len(change["stations"]) == 1 and "buffers" not in change:
        document["buffers"] = []
    with pytest.raises(SimulationError) as caught:
        parse_line(document)
    assert message in str(caught.value)
    assert isinstance(caught.value, InvalidRequestError)


def test_the_configured_maximum_horizon_and_replications_bound_a_line() -> None:
    assert parse_line(_line(horizon=7200), max_horizon=7200).horizon == 7200
    with pytest.raises(SimulationError, match=r"^horizon: must be <= 3600 \(the configured maximum\)$"):
        parse_line(_line(horizon=7200), max_horizon=3600)
    with pytest.raises(SimulationError, match=r"^replications: must be <= 5"):
        parse_line(_line(replications=6), max_replications=5)


def test_a_scenario_overrides_parameters_by_path_and_name() -> None:
    base = parse_line(_line())
    scenario = Scenario(
        name="bigger buffer, faster filler",
        overrides={
            "buffers[0].capacity": 20,
            "stations[filler].speed_factor": 1.1,
            "stations[1].cycle_time.mean": 2.2,
            "stations[capper].mtbf": {"kind": "exponential", "mean": 600},
            "stations[capper].mttr": {"kind": "constant", "value": 30},
            "horizon": 7200,
        },
    )
    line = scenario.apply(base)
    assert line.name == "bigger buffer, faster filler"
    assert line.buffers[0].capacity == 20
    assert line.stations[0].speed_factor == 1.1
    assert line.stations[1].cycle_time == Exponential(mean=2.2)
    assert line.stations[1].mttr == Constant(value=30)
    assert line.horizon == 7200
    assert base.buffers[0].capacity == 10  # the base is untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"stations[0].cycle_time.mean": 2},
            "stations[0].cycle_time.mean: no such parameter",
        ),  # a constant has a value
        ({"stations[press].speed_factor": 2}, "stations[press].speed_factor: no such parameter"),
        ({"stations[5].speed_factor": 2}, "stations[5].speed_factor: no such parameter"),
        ({"buffers[0].size": 2}, "buffers[0].size: no such parameter"),
        ({"stations[0].mtbf.mean": 2}, "stations[0].mtbf.mean: no such parameter"),
        ({"stations..x": 2}, "stations..x: not a parameter path"),
        ({"buffers[0].capacity": 0}, "buffers[0].capacity: must be >= 1"),
        ({"stations[capper].cycle_time.mean": -2.0}, "stations[1].cycle_time.mean: must be > 0"),
        ({"horizon": 10**8}, "horizon: must be <= 2.592e+06"),
    ],
)
def test_a_bad_override_is_refused_naming_its_path(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SimulationError) as caught:
        apply_overrides(parse_line(_line()), overrides)
    assert message in str(caught.value)


def _bottling_twin() -> dict[str, Any]:
    return {
        "name": "bottling",
        "stations": [
            {
                "name": "Capper",
                "order": 2,
                "technical_data": {"NominalSpeed": 1500},
                "failure_statistics": {"MTBF": 2400, "MTTR": 90},
            },
            {
                "name": "Filler",
                "order": 1,
                "technical_data": {"CycleTime": "2.0"},
                "failure_statistics": {"MTBF": 1800, "MTTR": 120, "ScrapRate": 0.01},
                "set_points": {"SpeedFactor": 1.1},
            },
        ],
        "buffers": [{"name": "Conveyor", "capacity": 30}],
        "run": {"horizon": 28_800, "warmup": 600, "replications": 5, "seed": 4},
    }


def test_a_line_is_built_from_the_twin_data_of_a_process() -> None:
    line = line_from_twin(_bottling_twin())
    assert [station.name for station in line.stations] == ["Filler", "Capper"]
    filler, capper = line.stations
    assert filler.cycle_time == Constant(value=2.0)
    assert filler.speed_factor == 1.1
    assert filler.scrap_rate == 0.01
    assert filler.mtbf == Exponential(mean=1800)
    assert capper.cycle_time == Constant(value=2.4)  # 3600 s / 1500 parts per hour
    assert capper.mttr == Exponential(mean=90)
    assert line.buffer_name(0) == "Conveyor"
    assert (line.horizon, line.replications, line.seed) == (28_800, 5, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"technical_data": {}}, "stations[Capper].technical_data: needs CycleTime (s) or NominalSpeed (parts/h)"),
        ({"technical_data": {"NominalSpeed": 0}}, "stations[Capper].technical_data.NominalSpeed: must be > 0"),
        ({"technical_data": {"CycleTime": "fast"}}, "stations[Capper].technical_data.CycleTime: must be a number"),
        ({"failure_statistics": {"MTBF": 100}}, "stations[Capper].failure_statistics: needs both MTBF and MTTR"),
        ({"failure_statistics": {"MTBF": -5, "MTTR": 5}}, "stations[1].mtbf.mean: must be > 0"),
    ],
)
def test_bad_twin_data_is_refused_naming_the_station(change: dict[str, Any], message: str) -> None:
    twin = _bottling_twin()
    twin["stations"][0].update(change)
    with pytest.raises(SimulationError) as caught:
        line_from_twin(twin)
    assert message in str(caught.value)

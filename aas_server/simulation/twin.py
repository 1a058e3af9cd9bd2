"""Building a line description from plain data extracted from the twin (a pure function over dicts).

The caller (``runtime/``) walks the process twin's hierarchy and hands over, for each asset of the
process in flow order, the values of its Technical Data (IDTA 02003) and its failure statistics
(from the analytics machine states), with the buffers between the assets::

    {"name": "bottling",
     "stations": [{"name": "Filler", "order": 1,
                   "technical_data": {"CycleTime": 2.0} | {"NominalSpeed": 1800},
                   "failure_statistics": {"MTBF": 3600, "MTTR": 120, "ScrapRate": 0.01},
                   "set_points": {"SpeedFactor": 1.0}}, ...],
     "buffers": [{"name": "Conveyor", "capacity": 40}, ...],
     "run": {"horizon": 28800, "warmup": 600, "replications": 10, "seed": 1}}

``CycleTime`` is seconds per part; ``NominalSpeed`` parts per hour (used when no cycle time is
given). ``MTBF`` is mean operating time between failures and ``MTTR`` mean repair time, in seconds,
both taken as exponential (the maximum-entropy choice when only means are known); fitted
distributions from calibration replace them. A station's ``cycle_time_distribution`` (a
distribution in the form of ``description``) replaces the constant cycle time, and its
``mtbf_distribution`` and ``mttr_distribution`` (from ``calibration``) replace the exponential ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aas_server.simulation.description import LineDescription, SimulationError, parse_line


def _number(station: Mapping[str, Any], section: str, key: str, path: str) -> float | None:
    values = station.get(section) or {}
    if not isinstance(values, Mapping):
        raise SimulationError(f"{path}.{section}: must be a mapping")
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SimulationError(f"{path}.{section}.{key}: must be a number")
    try:
        return float(value)
    except ValueError:
        raise SimulationError(f"{path}.{section}.{key}: must be a number, got {value!r}") from None


def line_from_twin(process: Mapping[str, Any], **limits: Any) -> LineDescription:
    """The line description of a process from its stations' Technical Data, failure statistics and set-points.

    Stations are taken in ascending ``order`` when every station has one, else in list order.
    ``SimulationError`` names the station path and the missing or bad value.
    """
    stations = list(process.get("stations") or [])
    if not stations:
        raise SimulationError("stations: a process needs at least one station")
    if all(isinstance(item, Mapping) and "order" in item for item in stations):
        stations.sort(key=lambda item: item["order"])
    built: list[dict[str, Any]] = []
    for position, station in enumerate(stations):
        path = f"stations[{position}]"
        if not isinstance(station, Mapping):
            raise SimulationError(f"{path}: must be a mapping")
        name = station.get("name") or f"station{position + 1}"
        path = f"stations[{name}]"
        distribution = station.get("cycle_time_distribution")
        cycle_time = _number(station, "technical_data", "CycleTime", path)
        speed = _number(station, "technical_data", "NominalSpeed", path)
        if distribution is None:
            if cycle_time is None and speed is None:
                raise SimulationError(f"{path}.technical_data: needs CycleTime (s) or NominalSpeed (parts/h)")
            if cycle_time is None:
                assert speed is not None
                if speed <= 0:
                    raise SimulationError(f"{path}.technical_data.NominalSpeed: must be > 0")
                cycle_time = 3600.0 / speed
            distribution = {"kind": "constant", "value": cycle_time}
        entry: dict[str, Any] = {"name": name, "cycle_time": distribution}
        if cycle_time is not None:
            entry["ideal_cycle_time"] = cycle_time
        mtbf = _number(station, "failure_statistics", "MTBF", path)
        mttr = _number(station, "failure_statistics", "MTTR", path)
        if mtbf is not None:
            entry["mtbf"] = {"kind": "exponential", "mean": mtbf}
        if mttr is not None:
            entry["mttr"] = {"kind": "exponential", "mean": mttr}
        for key in ("mtbf", "mttr"):
            if station.get(f"{key}_distribution") is not None:
                entry[key] = station[f"{key}_distribution"]
        if ("mtbf" in entry) != ("mttr" in entry):
            raise SimulationError(f"{path}.failure_statistics: needs both MTBF and MTTR, or neither")
        scrap = _number(station, "failure_statistics", "ScrapRate", path)
        if scrap is not None:
            entry["scrap_rate"] = scrap
        speed_factor = _number(station, "set_points", "SpeedFactor", path)
        if speed_factor is not None:
            entry["speed_factor"] = speed_factor
        built.append(entry)
    document: dict[str, Any] = {
        "name": process.get("name", "line"),
        "stations": built,
        "buffers": list(process.get("buffers") or []),
        **dict(process.get("run") or {}),
    }
    return parse_line(document, **limits)

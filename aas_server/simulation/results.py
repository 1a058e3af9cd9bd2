"""A job's results as a Simulation Results submodel of the process shell (pure: basyx objects from results).

There is no IDTA template for simulation results; the submodel has the semanticId
``urn:aas-server:simulation:SimulationResults:1:0`` and, per scenario of the job, a collection with:

- ``Scenario``: ``Name``, ``Overrides`` (JSON), ``Horizon``, ``Replications``, ``Seed``, and
  ``SimulationModel``, a ReferenceElement to the Simulation Models submodel (IDTA 02005) the
  scenario was applied to: the link between results, scenario and model;
- ``Line``: ``Throughput`` (parts/h), ``OEE``, ``Availability``, ``Performance``, ``Quality``,
  ``Good``, ``Scrapped``; each an estimate collection (``Mean``, ``Low``, ``High`` over the
  replications, at the scenario's confidence; no bounds for a single replication);
- ``Stations``: per station ``Utilisation``, ``Blocked``, ``Starved``, ``Down``, ``Availability``;
- ``Buffers``: per buffer ``MeanLevel``;
- ``Bottleneck`` and ``BottleneckShare``;
- ``TimeSeries``: ``Times`` (s of simulated time) and one Property per series, the values as a JSON array.

A job of two scenarios adds ``Comparison``: per line figure, the difference candidate − baseline
with Welch's interval and ``Significant``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from basyx.aas import model

from aas_server.model.templates import global_reference
from aas_server.simulation.statistics import Difference, Estimate, ScenarioResult

SIMULATION_RESULTS_SEMANTIC_ID = "urn:aas-server:simulation:SimulationResults:1:0"
_SEMANTIC = "urn:aas-server:simulation:{}:1:0"
LINE_FIGURES = {
    "throughput": "Throughput",
    "oee": "OEE",
    "availability": "Availability",
    "performance": "Performance",
    "quality": "Quality",
    "good": "Good",
    "scrapped": "Scrapped",
}
STATION_FIGURES = {
    "utilisation": "Utilisation",
    "blocked": "Blocked",
    "starved": "Starved",
    "down": "Down",
    "availability": "Availability",
}


def id_short_of(name: str) -> str:
    """A valid idShort made of ``name`` (other characters become ``_``; a leading digit gets a prefix)."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)[:120]
    return text if text[:1].isalpha() else f"N_{text}"


def _unique_id_shorts(names: Sequence[str]) -> list[str]:
    """``id_short_of`` each name, numbered where two give the same one (``A b``, ``A_b``: ``A_b``, ``A_b_2``)."""
    taken: set[str] = set()
    found = []
    for name in names:
        base = id_short_of(name)[:110]
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate)
        found.append(candidate)
    return found


def _property(id_short: str, value: Any, value_type: Any = float) -> model.Property:
    return model.Property(id_short, value_type, value, semantic_id=global_reference(_SEMANTIC.format(id_short)))


def _bound(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _estimate(id_short: str, estimate: Estimate) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(
        id_short,
        value=[
            _property("Mean", estimate.mean),
            _property("Low", _bound(estimate.low)),
            _property("High", _bound(estimate.high)),
        ],
        semantic_id=global_reference(_SEMANTIC.format(id_short)),
    )


def _collection(id_short: str, elements: Sequence[model.SubmodelElement]) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(
        id_short, value=list(elements), semantic_id=global_reference(_SEMANTIC.format(id_short))
    )


def _scenario_results(
    result: ScenarioResult,
    scenario: Mapping[str, Any],
    description: Mapping[str, Any],
    model_reference: model.ModelReference[model.Submodel] | None,
) -> list[model.SubmodelElement]:
    estimates = result.estimates
    scenario_elements: list[model.SubmodelElement] = [
        _property("Name", result.name, str),
        _property("Overrides", json.dumps(scenario.get("overrides", {}), sort_keys=True), str),
        _property("Horizon", float(description["horizon"])),
        _property("Replications", int(description["replications"]), int),
        _property("Seed", int(description["seed"]), int),
    ]
    if model_reference is not None:
        scenario_elements.append(
            model.ReferenceElement(
                "SimulationModel", model_reference, semantic_id=global_reference(_SEMANTIC.format("SimulationModel"))
            )
        )
    line = [_estimate(name, estimates[key]) for key, name in LINE_FIGURES.items() if key in estimates]
    stations = []
    names = [station["name"] for station in description["stations"]]
    for name_of_station, id_short in zip(names, _unique_id_shorts(names), strict=True):
        figures = [
            _estimate(name, estimates[f"stations.{name_of_station}.{key}"])
            for key, name in STATION_FIGURES.items()
            if f"stations.{name_of_station}.{key}" in estimates
        ]
        stations.append(_collection(id_short, figures))
    levels = [
        (key.removeprefix("buffers.").removesuffix(".mean_level"), estimate)
        for key, estimate in estimates.items()
        if key.startswith("buffers.") and key.endswith(".mean_level")
    ]
    buffers = [
        _collection(id_short, [_estimate("MeanLevel", estimate)])
        for (_, estimate), id_short in zip(levels, _unique_id_shorts([name for name, _ in levels]), strict=True)
    ]
    series = [_property("Times", json.dumps(result.series_times), str)]
    series_names = list(result.series)
    series += [
        _property(id_short, json.dumps(result.series[name]), str)
        for name, id_short in zip(series_names, _unique_id_shorts(["Times", *series_names])[1:], strict=True)
    ]
    return [
        _collection("Scenario", scenario_elements),
        _collection("Line", line),
        _collection("Stations", stations),
        _collection("Buffers", buffers),
        _property("Bottleneck", result.bottleneck, str),
        _property("BottleneckShare", result.bottleneck_share),
        _collection("TimeSeries", series),
    ]


def _comparison(comparison: Mapping[str, Difference]) -> model.SubmodelElementCollection:
    figures = []
    for key, name in LINE_FIGURES.items():
        difference = comparison.get(key)
        if difference is None:
            continue
        figures.append(
            _collection(
                name,
                [
                    _property("Difference", difference.difference),
                    _property("Low", _bound(difference.low)),
                    _property("High", _bound(difference.high)),
                    _property("Significant", difference.significant, bool),
                ],
            )
        )
    return _collection("Comparison", figures)


def simulation_results_submodel(
    submodel_id: str,
    job_id: str,
    results: Sequence[ScenarioResult],
    scenarios: Sequence[Mapping[str, Any]],
    descriptions: Sequence[Mapping[str, Any]],
    model_submodel_id: str | None,
    comparison: Mapping[str, Difference] | None = None,
) -> model.Submodel:
    """The Simulation Results submodel of one job (see the module docstring for its structure).

    ``scenarios`` are the requests (``name``, ``overrides``), ``descriptions`` the lines they ran
    (``LineDescription.model_dump()``), in the order of ``results``.
    """
    reference: model.ModelReference[model.Submodel] | None = None
    if model_submodel_id is not None:
        reference = model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, model_submodel_id),), model.Submodel)
    elements: list[model.SubmodelElement] = [_property("Job", job_id, str)]
    for position, (result, scenario, description) in enumerate(zip(results, scenarios, descriptions, strict=True)):
        label = "Baseline" if len(results) == 2 and position == 0 else "Candidate" if len(results) == 2 else "Result"
        elements.append(_collection(label, _scenario_results(result, scenario, description, reference)))
    if comparison is not None:
        elements.append(_comparison(comparison))
    return model.Submodel(
        submodel_id,
        id_short=f"SimulationResults_{id_short_of(job_id)}"[:128],
        semantic_id=global_reference(SIMULATION_RESULTS_SEMANTIC_ID),
        submodel_element=elements,
    )

"""The line description as an IDTA 02005 Simulation Models submodel, exchanged through AAS JSON and back."""

from __future__ import annotations

import io

import pytest
from basyx.aas import model
from basyx.aas.adapter import json as aas_json

from aas_server.simulation.description import SimulationError, parse_line
from aas_server.simulation.submodel import (
    SIMULATION_MODELS_SEMANTIC_ID,
    line_from_submodel,
    simulation_models_submodel,
)

_LINE = {
    "name": "bottling",
    "stations": [
        {
            "name": "filler",
            "cycle_time": {"kind": "normal", "mean": 2.0, "std": 0.2},
            "mtbf": {"kind": "exponential", "mean": 1800},
            "mttr": {"kind": "lognormal", "mean": 120, "std": 60},
            "scrap_rate": 0.01,
        },
        {"name": "capper", "cycle_time": {"kind": "empirical", "values": [2.1, 2.2, 2.3]}},
    ],
    "buffers": [{"name": "conveyor", "capacity": 30}],
    "horizon": 28_800,
    "warmup": 600,
    "replications": 12,
    "seed": 9,
}


def _round_trip(submodel: model.Submodel) -> model.Submodel:
    """Write the submodel as AAS JSON (as in an AASX) and read it back."""
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore([submodel])
    text = io.StringIO()
    aas_json.write_aas_json_file(text, store)
    text.seek(0)
    read = aas_json.read_aas_json_file(text, failsafe=False)
    result = read.get_item(submodel.id)
    assert isinstance(result, model.Submodel)
    return result


def test_a_line_goes_out_as_a_simulation_models_submodel_and_comes_back_unchanged() -> None:
    line = parse_line(_LINE)
    submodel = _round_trip(simulation_models_submodel(line, "urn:example:bottling:simulation"))
    assert submodel.semantic_id is not None
    assert submodel.semantic_id.key[0].value == SIMULATION_MODELS_SEMANTIC_ID
    simulation_model = submodel.get_referable("SimulationModel")
    assert isinstance(simulation_model, model.SubmodelElementCollection)
    # The template's mandatory features (IDTA 02005-1-0: minimumInstances = 1)
    present = {element.id_short for element in simulation_model.value}
    assert {"SimPurpose", "ScopeOfModel", "ModelFile", "ParamMethod", "InitStateMethod"} <= present
    default_time = simulation_model.get_referable("DefaultSimTime")
    assert isinstance(default_time, model.Property)
    assert default_time.value == 28_800
    parameters = simulation_model.get_referable("Parameters")
    assert isinstance(parameters, model.SubmodelElementCollection)
    filler = parameters.get_referable("Station01")
    assert isinstance(filler, model.SubmodelElementCollection)
    cycle = filler.get_referable("CycleTime")
    assert isinstance(cycle, model.SubmodelElementCollection)
    assert {element.id_short: getattr(element, "value", None) for element in cycle.value} == {
        "Kind": "normal",
        "Mean": 2.0,
        "Std": 0.2,
    }
    buffer = parameters.get_referable("Buffer01")
    assert isinstance(buffer, model.SubmodelElementCollection)
    capacity = buffer.get_referable("Capacity")
    assert isinstance(capacity, model.Property)
    assert capacity.value == 30
    assert line_from_submodel(submodel) == line


def test_a_submodel_without_a_usable_description_is_refused_naming_the_element() -> None:
    empty = model.Submodel("urn:example:empty", id_short="SimulationModels")
    with pytest.raises(SimulationError, match=r"^SimulationModel\.Parameters\.LineDescription: missing$"):
        line_from_submodel(empty)
    submodel = simulation_models_submodel(parse_line(_LINE), "urn:example:bottling:simulation")
    parameters = submodel.get_referable("SimulationModel").get_referable("Parameters")  # type: ignore[attr-defined]
    parameters.get_referable("LineDescription").value = '{"stations": [], "horizon": 10}'
    with pytest.raises(SimulationError, match=r"stations: needs at least 1 item"):
        line_from_submodel(submodel)
    parameters.get_referable("LineDescription").value = "{not json"
    with pytest.raises(SimulationError, match=r"LineDescription: not JSON"):
        line_from_submodel(submodel)

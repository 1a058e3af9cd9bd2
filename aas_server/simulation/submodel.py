"""The line description as a Simulation Models submodel (IDTA 02005-1-0 *Provision of Simulation Models*).

The submodel holds one ``SimulationModel`` collection with the template's mandatory features that fit
a line model made by the hub: ``SimPurpose/PosSimPurpose``, ``TypeOfModel``, ``ScopeOfModel``,
``ParamMethod``, ``InitStateMethod``, ``DefaultSimTime``, ``ModelFile/ModelFileType`` and
``Environment/SimulationTool/SimToolName``. The parameters follow in a ``Parameters`` collection
(not part of the template, semanticId under the hub's own namespace): one collection per station
and buffer with the values a scenario overrides, and ``LineDescription``, the whole description as
JSON, so that the model goes out and comes back in an AASX unchanged (``line_from_submodel``).

Left out of the template: ``Summary`` translations, ``LicenseModel``, ``EngineeringDomain``,
``RefSimDocumentation``, ``ParamFile``, ``InitStateFile``, ``SimModManufacturerInformation``,
``Ports``, ``SolverAndTolerances`` (a discrete-event model has no solver step) and the model file
versions (``ModelFileVersion``): the model file is the ``LineDescription`` property itself.
"""

from __future__ import annotations

import json
from typing import Any

from basyx.aas import model

from aas_server.model.templates import global_reference
from aas_server.simulation.description import LineDescription, SimulationError, parse_line

SIMULATION_MODELS_SEMANTIC_ID = "https://admin-shell.io/idta/SimulationModels/SimulationModels/1/0"
_TEMPLATE = "https://admin-shell.io/idta/SimulationModels/{}/1/0"
_PARAMETERS = "urn:aas-server:simulation:{}:1:0"
MODEL_FILE_TYPE = "application/vnd.aas-server.line-description+json"


def _property(id_short: str, value: Any, semantic_id: str, value_type: Any = str) -> model.Property:
    return model.Property(id_short, value_type, value, semantic_id=global_reference(semantic_id), category="PARAMETER")


def _template(id_short: str, value: Any, value_type: Any = str) -> model.Property:
    return _property(id_short, value, _TEMPLATE.format(id_short), value_type)


def _distribution(id_short: str, distribution: Any) -> model.SubmodelElementCollection:
    values = distribution.model_dump(mode="json")
    kind = values.pop("kind")
    elements: list[model.SubmodelElement] = [_property("Kind", kind, _PARAMETERS.format("DistributionKind"))]
    for key, value in values.items():
        if isinstance(value, list):
            elements.append(_property("Values", " ".join(f"{item:g}" for item in value), _PARAMETERS.format("Values")))
        else:
            elements.append(_property(key.capitalize(), float(value), _PARAMETERS.format(key), float))
    return model.SubmodelElementCollection(
        id_short, value=elements, semantic_id=global_reference(_PARAMETERS.format(id_short))
    )


def simulation_models_submodel(description: LineDescription, submodel_id: str) -> model.Submodel:
    """The IDTA 02005 Simulation Models submodel describing ``description`` and its parameters."""
    stations: list[model.SubmodelElement] = []
    for position, station in enumerate(description.stations, start=1):
        elements: list[model.SubmodelElement] = [
            _property("Name", station.name, _PARAMETERS.format("StationName")),
            _distribution("CycleTime", station.cycle_time),
            _property("SpeedFactor", station.speed_factor, _PARAMETERS.format("SpeedFactor"), float),
            _property("ScrapRate", station.scrap_rate, _PARAMETERS.format("ScrapRate"), float),
        ]
        if station.mtbf is not None and station.mttr is not None:
            elements += [_distribution("MTBF", station.mtbf), _distribution("MTTR", station.mttr)]
        stations.append(
            model.SubmodelElementCollection(
                f"Station{position:02d}", value=elements, semantic_id=global_reference(_PARAMETERS.format("Station"))
            )
        )
    for position in range(len(description.buffers)):
        stations.append(
            model.SubmodelElementCollection(
                f"Buffer{position + 1:02d}",
                value=[
                    _property("Name", description.buffer_name(position), _PARAMETERS.format("BufferName")),
                    _property("Capacity", description.buffers[position].capacity, _PARAMETERS.format("Capacity"), int),
                ],
                semantic_id=global_reference(_PARAMETERS.format("Buffer")),
            )
        )
    parameters = model.SubmodelElementCollection(
        "Parameters",
        value=[
            *stations,
            _property("Replications", description.replications, _PARAMETERS.format("Replications"), int),
            _property("Seed", description.seed, _PARAMETERS.format("Seed"), int),
            _property("Warmup", description.warmup, _PARAMETERS.format("Warmup"), float),
            _property(
                "LineDescription",
                json.dumps(description.model_dump(mode="json"), sort_keys=True),
                _PARAMETERS.format("LineDescription"),
            ),
        ],
        semantic_id=global_reference(_PARAMETERS.format("Parameters")),
    )
    simulation_model = model.SubmodelElementCollection(
        "SimulationModel",
        semantic_id=global_reference(_TEMPLATE.format("SimulationModel")),
        value=[
            model.MultiLanguageProperty(
                "Summary",
                model.MultiLanguageTextType(
                    {"en": f"Discrete-event model of line {description.name}: {len(description.stations)} stations"}
                ),
                semantic_id=global_reference(_TEMPLATE.format("Summary")),
            ),
            model.SubmodelElementCollection(
                "SimPurpose",
                semantic_id=global_reference(_TEMPLATE.format("SimPurpose")),
                value=[_template("PosSimPurpose", "Throughput, OEE and bottleneck what-if analysis of a line")],
            ),
            _template("TypeOfModel", "Discrete-event simulation"),
            _template("ScopeOfModel", "Material flow: cycle times, failures, repairs, scrap, buffers"),
            _template("ParamMethod", "Parameters collection; fitted from history by calibration"),
            _template("InitStateMethod", "Empty line at time 0; statistics after the warm-up"),
            _template("DefaultSimTime", description.horizon, float),
            model.SubmodelElementCollection(
                "ModelFile",
                semantic_id=global_reference(_TEMPLATE.format("ModelFile")),
                value=[_template("ModelFileType", MODEL_FILE_TYPE)],
            ),
            model.SubmodelElementCollection(
                "Environment",
                semantic_id=global_reference(_TEMPLATE.format("Environment")),
                value=[
                    _template("OperatingSystem", "any (Python 3.11+)"),
                    model.SubmodelElementCollection(
                        "SimulationTool",
                        semantic_id=global_reference(_TEMPLATE.format("simulationTool")),
                        value=[_template("SimToolName", "SimPy 4 in aas-server")],
                    ),
                ],
            ),
            parameters,
        ],
    )
    return model.Submodel(
        submodel_id,
        id_short="SimulationModels",
        semantic_id=global_reference(SIMULATION_MODELS_SEMANTIC_ID),
        submodel_element=[simulation_model],
    )


def line_from_submodel(submodel: model.Submodel, **limits: Any) -> LineDescription:
    """The line description a Simulation Models submodel carries (``SimulationModel.Parameters.LineDescription``)."""
    path = "SimulationModel.Parameters.LineDescription"
    try:
        element: Any = submodel.get_referable("SimulationModel").get_referable("Parameters")  # type: ignore[attr-defined]
        element = element.get_referable("LineDescription")
    except (KeyError, AttributeError):
        raise SimulationError(f"{path}: missing") from None
    if not isinstance(element, model.Property) or not isinstance(element.value, str):
        raise SimulationError(f"{path}: must be a string Property")
    try:
        document = json.loads(element.value)
    except json.JSONDecodeError as error:
        raise SimulationError(f"{path}: not JSON ({error.msg})") from None
    if not isinstance(document, dict):
        raise SimulationError(f"{path}: must be a JSON object")
    return parse_line(document, **limits)

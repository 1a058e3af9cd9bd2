"""The conformance data set: what the server holds while the IDTA test engines and schemathesis run.

The data set is the demo bottling plant (seven shells with Nameplate, Technical Data, Operational
Data and Hierarchical Structures submodels) preceded by a handmade ``ConformanceShell`` whose two
submodels each hold every one of the 14 submodel element kinds of Part 1 (5.3.7), nested ones
included. The engines pick "the first shell" (``/shells?limit=1``), its first submodel reference
and "the first submodel" (``/submodels?limit=1``); the store lists identifiables in insertion
order, so those are always the handmade ones and every element kind is exercised.

``environment_json`` is the Part 1 JSON environment of a data set (the form the engines' file
check reads); ``file_check_failures`` runs that check (``aas_test_engines.file.check_json_data``).
"""

from __future__ import annotations

import datetime
import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from aas_test_engines import file
from basyx.aas import model
from basyx.aas.adapter.json import read_aas_json_file, write_aas_json_file

from aas_server.model.twins import build_environment, load_twins
from tests.support import ROOT

PLANT_FILE = ROOT / "examples" / "bottling-line" / "plant.yaml"

CONFORMANCE_SHELL_ID = "urn:aas-server:conformance:aas:all-elements"
CONFORMANCE_ASSET_ID = "urn:aas-server:conformance:asset:all-elements"
ALL_ELEMENTS_SUBMODEL_ID = "urn:aas-server:conformance:sm:all-elements"
SECOND_SUBMODEL_ID = "urn:aas-server:conformance:sm:all-elements-2"
CONCEPT_ID = "urn:aas-server:conformance:cd:temperature"

ELEMENT_KINDS: tuple[str, ...] = (
    "SubmodelElementCollection",
    "SubmodelElementList",
    "Entity",
    "BasicEventElement",
    "Capability",
    "Operation",
    "Property",
    "MultiLanguageProperty",
    "Range",
    "ReferenceElement",
    "RelationshipElement",
    "AnnotatedRelationshipElement",
    "Blob",
    "File",
)
"""The submodel element kinds of Part 1; the conformance submodels hold one of each at top level."""


def _global_reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


_Observable = model.AssetAdministrationShell | model.Submodel | model.SubmodelElement


def _element_reference(submodel_id: str, id_short: str) -> model.ModelReference[_Observable]:
    keys = (model.Key(model.KeyTypes.SUBMODEL, submodel_id), model.Key(model.KeyTypes.PROPERTY, id_short))
    return cast("model.ModelReference[_Observable]", model.ModelReference(keys, model.Property))


def _all_elements(submodel_id: str) -> list[model.SubmodelElement]:
    """One element of every kind, with nested children where the kind has any."""
    temperature_reference = _element_reference(submodel_id, "Temperature")
    return [
        model.Property(
            "Temperature",
            model.datatypes.Double,
            21.5,
            semantic_id=model.ModelReference(
                (model.Key(model.KeyTypes.CONCEPT_DESCRIPTION, CONCEPT_ID),), model.ConceptDescription
            ),
        ),
        model.Property("Counter", model.datatypes.Int, 7),
        model.Property("Running", model.datatypes.Boolean, True),
        model.Property("Label", model.datatypes.String, "filler"),
        model.MultiLanguageProperty("Name", value=model.MultiLanguageTextType({"en": "Press", "de": "Presse"})),
        model.Range("Limits", model.datatypes.Double, min=0.0, max=100.0),
        model.ReferenceElement("Sensor", value=temperature_reference),
        model.RelationshipElement("Feeds", first=temperature_reference, second=_global_reference(CONCEPT_ID)),
        model.AnnotatedRelationshipElement(
            "Annotated",
            first=temperature_reference,
            second=_global_reference(CONCEPT_ID),
            annotation=[model.Property("Note", model.datatypes.String, "checked")],
        ),
        model.Blob("Firmware", content_type="application/octet-stream", value=b"\x01\x02\x03"),
        model.File("Manual", content_type="application/pdf", value="/aasx/files/manual.pdf"),
        model.Capability("Fill"),
        model.Operation(
            "Calibrate",
            input_variable=[model.Property("Offset", model.datatypes.Double, 0.0)],
            output_variable=[model.Property("Done", model.datatypes.Boolean, False)],
        ),
        model.BasicEventElement(
            "TemperatureChanged",
            observed=temperature_reference,
            direction=model.Direction.OUTPUT,
            state=model.StateOfEvent.ON,
            last_update=model.datatypes.DateTime(2025, 1, 31, 10, 0, 0, tzinfo=datetime.UTC),
        ),
        model.Entity(
            "Motor",
            entity_type=model.EntityType.SELF_MANAGED_ENTITY,
            global_asset_id="urn:aas-server:conformance:asset:motor",
            statement=[model.Property("Current", model.datatypes.Double, 3.2)],
        ),
        model.SubmodelElementCollection(
            "Bearing",
            value=[
                model.Property("Temperature", model.datatypes.Double, 40.0),
                model.SubmodelElementCollection(
                    "Vibration", value=[model.Property("Velocity", model.datatypes.Double, 1.5)]
                ),
            ],
        ),
        model.SubmodelElementList(
            "Readings",
            type_value_list_element=model.Property,
            value_type_list_element=model.datatypes.Double,
            value=[
                model.Property(None, model.datatypes.Double, 1.0),
                model.Property(None, model.datatypes.Double, 2.0),
            ],
        ),
    ]


def conformance_identifiables() -> list[model.Identifiable]:
    """The handmade shell, its two all-element-kinds submodels and one concept description."""
    submodels = [
        model.Submodel(
            submodel_id,
            id_short=id_short,
            semantic_id=_global_reference("urn:aas-server:conformance:semantics:all-elements"),
            submodel_element=_all_elements(submodel_id),
        )
        for submodel_id, id_short in ((ALL_ELEMENTS_SUBMODEL_ID, "AllElements"), (SECOND_SUBMODEL_ID, "AllElements2"))
    ]
    shell = model.AssetAdministrationShell(
        model.AssetInformation(
            model.AssetKind.INSTANCE,
            global_asset_id=CONFORMANCE_ASSET_ID,
            specific_asset_id=[model.SpecificAssetId("serialNumber", "SN-0001")],
        ),
        CONFORMANCE_SHELL_ID,
        id_short="ConformanceShell",
        submodel={model.ModelReference.from_referable(submodel) for submodel in submodels},
    )
    concept = model.ConceptDescription(CONCEPT_ID, id_short="Temperature")
    return [shell, *submodels, concept]


def conformance_data_set() -> list[model.Identifiable]:
    """The data set served during conformance runs: the handmade identifiables, then the demo plant."""
    return [*conformance_identifiables(), *build_environment(load_twins(PLANT_FILE))]


def _without_empty_arrays(data: Any) -> Any:
    """Drop empty JSON arrays: Part 1 JSON allows no empty array, basyx writes ``specificAssetIds: []``."""
    if isinstance(data, dict):
        return {key: _without_empty_arrays(value) for key, value in data.items() if value != []}
    if isinstance(data, list):
        return [_without_empty_arrays(item) for item in data]
    return data


def environment_json(identifiables: Iterable[model.Identifiable]) -> dict[str, Any]:
    """The Part 1 JSON environment of ``identifiables`` (basyx serialization, empty arrays left out)."""
    text = io.StringIO()
    write_aas_json_file(text, model.DictIdentifiableStore(identifiables))
    result = _without_empty_arrays(json.loads(text.getvalue()))
    assert isinstance(result, dict)
    return result


def read_environment(data: dict[str, Any]) -> list[model.Identifiable]:
    """The identifiables of a Part 1 JSON environment, in file order (strict basyx parsing)."""
    store = read_aas_json_file(io.StringIO(json.dumps(data)), failsafe=False)
    order = [item["id"] for key in ("assetAdministrationShells", "submodels", "conceptDescriptions")
             for item in data.get(key, [])]  # fmt: skip
    by_id = {identifiable.id: identifiable for identifiable in store}
    return [by_id[identifier] for identifier in order]


def _failures(result: Any, trail: tuple[str, ...] = ()) -> Iterator[str]:
    if result.ok():
        return
    if not result.sub_results:
        yield " / ".join((*trail, result.message))
    for sub_result in result.sub_results:
        yield from _failures(sub_result, (*trail, result.message))


_LOCATION = re.compile(r"@ /(asset_administration_shells|submodels|concept_descriptions)/(\d+)")
_SECTIONS = {
    "asset_administration_shells": "assetAdministrationShells",
    "submodels": "submodels",
    "concept_descriptions": "conceptDescriptions",
}


def file_check_failures(data: dict[str, Any]) -> list[str]:
    """The failures of the engines' file check (meta-model, constraints, templates) on ``data``.

    Each names the failing identifiable by its id after the engine's JSON location.
    """

    def with_id(match: re.Match[str]) -> str:
        identifiable = data[_SECTIONS[match.group(1)]][int(match.group(2))]
        return f"{match.group(0)} ({identifiable['id']})"

    return [_LOCATION.sub(with_id, failure) for failure in _failures(file.check_json_data(data))]


def write_data_set(path: Path) -> Path:
    """Write the conformance data set as a Part 1 JSON environment file (for ``aas-server serve``)."""
    path.write_text(json.dumps(environment_json(conformance_data_set()), indent=1), encoding="utf-8")
    return path

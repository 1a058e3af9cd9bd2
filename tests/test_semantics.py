"""ConceptDescriptions for mapped semanticIds (IEC 61360) and the semanticId agreement of points and elements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from basyx.aas import model

from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.exchange import read_package, write_package
from aas_server.mapping.schema import MappingFile, load_mapping, parse_mapping
from aas_server.model import twins
from aas_server.model.paths import resolve
from aas_server.model.twins import IEC61360_DATA_SPECIFICATION
from aas_server.model.units import lookup_unit
from aas_server.semantics.concepts import (
    concept_description,
    concept_descriptions_for,
    semantic_conflicts,
    unit_iri,
)
from tests.support import ROOT

BOTTLING_LINE = ROOT / "mappings" / "bottling-line.yaml"
PLANT = ROOT / "examples" / "bottling-line" / "plant.yaml"
IRDI = "0173-1#02-AAB381#003"


@pytest.fixture(scope="module")
def environment() -> list[model.Identifiable]:
    return twins.build_environment(twins.load_twins(PLANT))


def _element_finder(identifiables: list[model.Identifiable]) -> Callable[[str, str], model.SubmodelElement | None]:
    submodels = {item.id: item for item in identifiables if isinstance(item, model.Submodel)}

    def element_at(submodel_id: str, path: str) -> model.SubmodelElement | None:
        submodel = submodels.get(submodel_id)
        if submodel is None:
            return None
        try:
            return resolve(submodel, path)
        except (NotFoundError, InvalidRequestError):
            return None

    return element_at


def _content(description: model.ConceptDescription) -> model.DataSpecificationIEC61360:
    (embedded,) = description.embedded_data_specifications
    assert embedded.data_specification.key[0].value == IEC61360_DATA_SPECIFICATION
    content = embedded.data_specification_content
    assert isinstance(content, model.DataSpecificationIEC61360)
    return content


def _by_id(descriptions: list[model.ConceptDescription]) -> dict[str, model.ConceptDescription]:
    return {description.id: description for description in descriptions}


def test_every_semantic_id_of_the_bottling_line_gets_one_description() -> None:
    mapping = load_mapping(BOTTLING_LINE)
    made = _by_id(concept_descriptions_for(mapping, {}))
    assert set(made) == {point.semantic_id for point in mapping.points}
    assert len(made) < len(mapping.points)  # the two motors share their concepts

    speed = _content(made["urn:aas-server:concept:RotationalSpeed:1:0"])
    assert dict(speed.preferred_name) == {"en": "Rotational speed"}
    assert speed.data_type is model.DataTypeIEC61360.REAL_MEASURE
    assert speed.unit == "r/min"
    assert speed.unit_id is not None
    assert speed.unit_id.key[0].value == "https://vocabulary.uncefact.org/UnitMeasureCode#RPM"
    assert dict(speed.definition or {}) == {"en": "Rotational speed"}

    current = _content(made["urn:aas-server:concept:MotorCurrent:1:0"])
    assert current.data_type is model.DataTypeIEC61360.REAL_MEASURE  # uint16 registers scaled by 0.01
    assert current.unit == "A"
    bottles = _content(made["urn:aas-server:concept:BottlesFilled:1:0"])
    assert bottles.data_type is model.DataTypeIEC61360.INTEGER_COUNT
    running = _content(made["urn:aas-server:concept:LineRunning:1:0"])
    assert running.data_type is model.DataTypeIEC61360.BOOLEAN
    assert (running.unit, running.unit_id) == (None, None)
    assert made["urn:aas-server:concept:LineRunning:1:0"].id_short == "LineRunning"


def test_existing_descriptions_are_kept(environment: list[model.Identifiable]) -> None:
    mapping = load_mapping(BOTTLING_LINE)
    existing = {item.id: item for item in environment if isinstance(item, model.ConceptDescription)}
    assert concept_descriptions_for(mapping, existing) == []
    partial = {key: value for key, value in existing.items() if "Vibration" not in key}
    assert [description.id for description in concept_descriptions_for(mapping, partial)] == [
        "urn:aas-server:concept:Vibration:1:0"
    ]


def test_descriptions_agree_with_the_twins_own(environment: list[model.Identifiable]) -> None:
    """Given the target's valueType, a point describes its concept as the twin definitions do."""
    mapping = load_mapping(BOTTLING_LINE)
    element_at = _element_finder(environment)
    twin_descriptions = {item.id: item for item in environment if isinstance(item, model.ConceptDescription)}
    value_types = {}
    for point in mapping.points:
        element = element_at(point.target.submodel, point.target.path)
        assert isinstance(element, model.Property)
        value_types[point.name] = model.datatypes.XSD_TYPE_NAMES[element.value_type]
    made = _by_id(concept_descriptions_for(mapping, {}, value_types))
    for identifier, description in made.items():
        ours, theirs = _content(description), _content(twin_descriptions[identifier])
        assert (ours.data_type, ours.unit) == (theirs.data_type, theirs.unit), identifier


def _point(**fields: Any) -> MappingFile:
    return parse_mapping(
        {
            "devices": [{"name": "broker", "protocol": "mqtt", "host": "127.0.0.1"}],
            "points": [
                {
                    "name": "tank.Level",
                    "device": "broker",
                    "topic": "tank/level",
                    "target": {"submodel": "urn:example:sm:tank", "path": "Levels[0].FillLevel"},
                    **fields,
                }
            ],
        }
    )


def test_value_types_and_descriptions_shape_the_concept() -> None:
    mapping = _point(semantic_id=IRDI, unit="P1", description="Fill level of the tank")
    (guessed,) = concept_descriptions_for(mapping, {})
    assert _content(guessed).data_type is model.DataTypeIEC61360.REAL_MEASURE
    (typed,) = concept_descriptions_for(mapping, {}, {"tank.Level": "xs:int"})
    content = _content(typed)
    assert typed.id == IRDI
    assert typed.id_short == "FillLevel"
    assert content.data_type is model.DataTypeIEC61360.INTEGER_MEASURE
    assert dict(content.definition or {}) == {"en": "Fill level of the tank"}
    assert dict(content.preferred_name) == {"en": "Fill level"}
    assert dict(typed.description or {}) == {"en": "Fill level of the tank"}
    text = _point(semantic_id=IRDI, enum={0: "Empty", 1: "Full"})
    assert _content(concept_description(text.points[0])).data_type is model.DataTypeIEC61360.STRING
    assert concept_descriptions_for(_point(), {}) == []


def test_unit_iris_name_the_unece_code() -> None:
    assert unit_iri(lookup_unit("°C")) == "https://vocabulary.uncefact.org/UnitMeasureCode#CEL"


def test_descriptions_serialise_and_read_back_strictly() -> None:
    made = concept_descriptions_for(load_mapping(BOTTLING_LINE), {})
    for package_format in ("json", "xml"):
        result = read_package(write_package(made, None, package_format), f"cds.{package_format}", strict=True)
        back = _by_id([item for item in result.identifiables if isinstance(item, model.ConceptDescription)])
        assert set(back) == {description.id for description in made}
        speed = _content(back["urn:aas-server:concept:RotationalSpeed:1:0"])
        assert (speed.data_type, speed.unit) == (model.DataTypeIEC61360.REAL_MEASURE, "r/min")


def test_semantic_ids_of_the_bottling_line_agree_with_its_twins(environment: list[model.Identifiable]) -> None:
    assert semantic_conflicts(load_mapping(BOTTLING_LINE), _element_finder(environment)) == []


def test_a_point_that_contradicts_its_element_is_named(environment: list[model.Identifiable]) -> None:
    mapping = load_mapping(BOTTLING_LINE)
    data = mapping.model_dump(mode="json", exclude_defaults=True)
    data["points"][3]["semantic_id"] = IRDI
    changed = parse_mapping(data)
    assert semantic_conflicts(changed, _element_finder(environment)) == [
        (
            "points[3] (filler-motor.Vibration).semantic_id",
            f"semanticId {IRDI!r} conflicts with the semanticId 'urn:aas-server:concept:Vibration:1:0' of "
            "'Vibration' in 'urn:aas-server:demo:sm:filler-motor:operational-data'",
        )
    ]


def test_missing_elements_and_semantic_ids_never_conflict() -> None:
    mapping = _point(semantic_id=IRDI)
    plain = model.Property("FillLevel", model.datatypes.Double)
    assert semantic_conflicts(mapping, lambda submodel, path: None) == []
    assert semantic_conflicts(mapping, lambda submodel, path: plain) == []
    assert semantic_conflicts(_point(), lambda submodel, path: plain) == []

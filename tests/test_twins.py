"""The demo plant's twin model: templates, composition, semantics, round trips and definition errors."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

import pytest
from basyx.aas import model
from basyx.aas.adapter import json as aas_json
from basyx.aas.adapter import xml as aas_xml
from basyx.aas.model import datatypes

from aas_server.errors import ConfigurationError
from aas_server.model import templates, twins

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "examples" / "bottling-line" / "plant.yaml"
DATA = Path(__file__).resolve().parent / "data" / "twins"
PREFIX = "urn:aas-server:demo:"
Store: TypeAlias = model.DictIdentifiableStore[model.Identifiable]

NAMEPLATE = "https://admin-shell.io/idta/nameplate/3/0/Nameplate"
TECHNICAL_DATA = "0173-1#01-AHX837#002"
HIERARCHICAL_STRUCTURES = "https://admin-shell.io/idta/HierarchicalStructures/1/1/Submodel"
NODE = "https://admin-shell.io/idta/HierarchicalStructures/Node/1/0"
HAS_PART = "https://admin-shell.io/idta/HierarchicalStructures/HasPart/1/0"
OPERATIONAL_DATA = "urn:aas-server:submodel:OperationalData:1:0"

SHELLS = {
    "plant": ("BottlingPlant", "system"),
    "bottling-process": ("BottlingProcess", "process"),
    "filler": ("Filler", "asset"),
    "capper": ("Capper", "asset"),
    "filler-motor": ("FillerMotor", "component"),
    "capper-motor": ("CapperMotor", "component"),
    "filler-temperature-sensor": ("FillerTemperatureSensor", "component"),
}
MOTOR: list[tuple[str, str, str | None]] = [
    ("RotationalSpeed", "xs:double", "r/min"),
    ("SpeedSetpoint", "xs:double", "r/min"),
    ("MotorCurrent", "xs:double", "A"),
    ("Vibration", "xs:double", "mm/s"),
    ("OperatingHours", "xs:double", "h"),
]
OPERATIONAL: dict[str, list[tuple[str, str, str | None]]] = {
    "filler-motor": MOTOR,
    "capper-motor": MOTOR,
    "filler-temperature-sensor": [("Temperature", "xs:double", "°C")],
    "filler": [
        ("BottlesFilled", "xs:unsignedInt", "piece"),
        ("FillVolumeSetpoint", "xs:double", "ml"),
        ("FaultCode", "xs:int", None),
    ],
    "capper": [("BottlesCapped", "xs:unsignedInt", "piece"), ("CapTorqueSetpoint", "xs:double", "N·m")],
    "bottling-process": [
        ("Throughput", "xs:double", "1/h"),
        ("RejectedBottles", "xs:int", "piece"),
        ("LineRunning", "xs:boolean", None),
        ("BottlesProduced", "xs:unsignedInt", "piece"),
        ("MachinesRunning", "xs:int", "piece"),
    ],
    "plant": [
        ("ActivePower", "xs:double", "kW"),
        ("EnergyConsumed", "xs:double", "kW·h"),
        ("Availability", "xs:double", "1"),
        ("TotalMotorCurrent", "xs:double", "A"),
        ("BottlesProduced", "xs:unsignedInt", "piece"),
        ("WorstQuality", "xs:string", None),
    ],
}


@pytest.fixture(scope="module")
def environment() -> list[model.Identifiable]:
    return twins.build_environment(twins.load_twins(PLANT))


@pytest.fixture(scope="module")
def store(environment: list[model.Identifiable]) -> Store:
    return model.DictIdentifiableStore(environment)


def semantic_id_of(element: model.HasSemantics) -> str | None:
    return element.semantic_id.key[0].value if element.semantic_id is not None else None


def shells_of(objects: Iterable[model.Identifiable]) -> list[model.AssetAdministrationShell]:
    return [item for item in objects if isinstance(item, model.AssetAdministrationShell)]


def submodels_of(shell: model.AssetAdministrationShell, store: Store) -> dict[str, model.Submodel]:
    """The shell's submodels by semanticId, found through its model references."""
    result = {}
    for reference in shell.submodel:
        submodel = reference.resolve(store)
        semantic_id = semantic_id_of(submodel)
        assert semantic_id is not None
        result[semantic_id] = submodel
    return result


def test_demo_plant_has_seven_shells_with_ids_from_the_plant_spec(environment: list[model.Identifiable]) -> None:
    shells = {shell.id: shell for shell in shells_of(environment)}
    assert set(shells) == {f"{PREFIX}aas:{key}" for key in SHELLS}
    for key, (id_short, level) in SHELLS.items():
        shell = shells[f"{PREFIX}aas:{key}"]
        assert shell.id_short == id_short
        assert shell.asset_information.asset_kind is model.AssetKind.INSTANCE
        assert shell.asset_information.global_asset_id == f"{PREFIX}asset:{key}"
        assert shell.extension.get_object_by_attribute("name", "CompositionLevel").value == level
    for key in ("filler", "capper", "filler-motor", "capper-motor", "filler-temperature-sensor"):
        assert shells[f"{PREFIX}aas:{key}"].asset_information.asset_type is not None


def test_each_shell_references_the_expected_submodels(environment: list[model.Identifiable], store: Store) -> None:
    for shell in shells_of(environment):
        key = shell.id.removeprefix(f"{PREFIX}aas:")
        submodels = submodels_of(shell, store)
        expected = {NAMEPLATE, OPERATIONAL_DATA}
        if SHELLS[key][1] in ("asset", "component"):
            expected.add(TECHNICAL_DATA)
        if SHELLS[key][1] != "component":
            expected.add(HIERARCHICAL_STRUCTURES)
        assert set(submodels) == expected, key
        kinds = {
            NAMEPLATE: ("nameplate", "Nameplate"),
            TECHNICAL_DATA: ("technical-data", "TechnicalData"),
            HIERARCHICAL_STRUCTURES: ("hierarchical-structures", "HierarchicalStructures"),
            OPERATIONAL_DATA: ("operational-data", "OperationalData"),
        }
        for semantic_id, submodel in submodels.items():
            kind, id_short = kinds[semantic_id]
            assert submodel.id == f"{PREFIX}sm:{key}:{kind}"
            assert submodel.id_short == id_short


def test_nameplate_carries_idta_semantic_ids_and_values(store: Store) -> None:
    nameplate = store.get_item(f"{PREFIX}sm:filler-motor:nameplate")
    assert isinstance(nameplate, model.Submodel)
    manufacturer = nameplate.get_referable("ManufacturerName")
    assert isinstance(manufacturer, model.MultiLanguageProperty)
    assert manufacturer.value is not None
    assert manufacturer.value["en"] == "Example Bottling Machines GmbH"
    assert semantic_id_of(manufacturer) == "0112/2///61987#ABA565#009"
    serial = nameplate.get_referable("SerialNumber")
    assert isinstance(serial, model.Property)
    assert serial.value == "ASM22-24-10452"
    date = nameplate.get_referable("DateOfManufacture")
    assert isinstance(date, model.Property)
    assert date.value_type is datatypes.Date
    address = nameplate.get_referable("AddressInformation")
    assert isinstance(address, model.SubmodelElementCollection)
    city = address.get_referable("CityTown")
    assert isinstance(city, model.MultiLanguageProperty)
    assert semantic_id_of(city) == "0173-1#02-AAO132#002"


def test_technical_data_has_rated_values_and_a_measuring_range(store: Store) -> None:
    motor = store.get_item(f"{PREFIX}sm:filler-motor:technical-data")
    assert isinstance(motor, model.Submodel)
    areas = motor.get_referable("TechnicalPropertyAreas")
    assert isinstance(areas, model.SubmodelElementList)
    area = areas.value[0]
    assert isinstance(area, model.SubmodelElementCollection)
    rated_power = area.get_referable("RatedPower")
    assert isinstance(rated_power, model.Property)
    assert rated_power.value == 2.2
    general = motor.get_referable("GeneralInformation")
    assert isinstance(general, model.SubmodelElementCollection)
    order_code = general.get_referable("ManufacturerOrderCode")
    assert isinstance(order_code, model.Property)
    assert order_code.value == "ASM-2200-B3-400V"

    sensor = store.get_item(f"{PREFIX}sm:filler-temperature-sensor:technical-data")
    assert isinstance(sensor, model.Submodel)
    sensor_areas = sensor.get_referable("TechnicalPropertyAreas")
    assert isinstance(sensor_areas, model.SubmodelElementList)
    sensor_area = sensor_areas.value[0]
    assert isinstance(sensor_area, model.SubmodelElementCollection)
    measuring_range = sensor_area.get_referable("MeasuringRange")
    assert isinstance(measuring_range, model.Range)
    assert (measuring_range.min, measuring_range.max) == (-50.0, 150.0)


def walk_composition(start_key: str, store: Store) -> dict[str, list[str]]:
    """Follow HierarchicalStructures from a shell, using only AAS objects: shell idShort → part idShorts."""
    shells = shells_of(store)
    by_asset = {shell.asset_information.global_asset_id: shell for shell in shells}
    pending = [by_asset[f"{PREFIX}asset:{start_key}"]]
    found: dict[str, list[str]] = {}
    while pending:
        shell = pending.pop()
        assert shell.id_short is not None
        structures = submodels_of(shell, store).get(HIERARCHICAL_STRUCTURES)
        found[shell.id_short] = []
        if structures is None:
            continue
        entry_node = structures.get_referable("EntryNode")
        assert isinstance(entry_node, model.Entity)
        assert entry_node.entity_type is model.EntityType.SELF_MANAGED_ENTITY
        assert entry_node.global_asset_id == shell.asset_information.global_asset_id
        archetype = structures.get_referable("ArcheType")
        assert isinstance(archetype, model.Property)
        assert archetype.value == "OneDown"
        nodes = [
            statement
            for statement in entry_node.statement
            if isinstance(statement, model.Entity) and semantic_id_of(statement) == NODE
        ]
        relationships = [
            statement
            for statement in entry_node.statement
            if isinstance(statement, model.RelationshipElement) and semantic_id_of(statement) == HAS_PART
        ]
        assert len(relationships) == len(nodes)
        for relationship in relationships:
            assert isinstance(relationship.first, model.ModelReference)
            assert isinstance(relationship.second, model.ModelReference)
            assert relationship.first.resolve(store) is entry_node
            assert relationship.second.resolve(store) in nodes
        for node in nodes:
            assert node.entity_type is model.EntityType.SELF_MANAGED_ENTITY
            part = by_asset[node.global_asset_id]
            assert part.id_short is not None
            found[shell.id_short].append(part.id_short)
            pending.append(part)
    return found


def test_composition_walk_from_the_plant_reaches_every_component(store: Store) -> None:
    found = walk_composition("plant", store)
    assert found == {
        "BottlingPlant": ["BottlingProcess"],
        "BottlingProcess": ["Filler", "Capper"],
        "Filler": ["FillerMotor", "FillerTemperatureSensor"],
        "Capper": ["CapperMotor"],
        "FillerMotor": [],
        "CapperMotor": [],
        "FillerTemperatureSensor": [],
    }


def test_composition_helper_matches_the_definition() -> None:
    assert twins.composition(twins.load_twins(PLANT)) == {
        "plant": ["bottling-process"],
        "bottling-process": ["filler", "capper"],
        "filler": ["filler-motor", "filler-temperature-sensor"],
        "capper": ["capper-motor"],
        "filler-motor": [],
        "capper-motor": [],
        "filler-temperature-sensor": [],
    }


def test_every_operational_property_has_its_type_and_a_concept_with_its_unit(
    store: Store,
) -> None:
    properties: list[tuple[str, str, str | None]]
    for key, properties in OPERATIONAL.items():
        submodel = store.get_item(f"{PREFIX}sm:{key}:operational-data")
        assert isinstance(submodel, model.Submodel)
        assert {element.id_short for element in submodel.submodel_element} == {name for name, _, _ in properties}
        for id_short, value_type, unit in properties:
            element = submodel.get_referable(id_short)
            assert isinstance(element, model.Property)
            assert datatypes.XSD_TYPE_NAMES[element.value_type] == value_type
            semantic_id = semantic_id_of(element)
            assert semantic_id == f"urn:aas-server:concept:{id_short}:1:0"
            concept = store.get_item(semantic_id)
            assert isinstance(concept, model.ConceptDescription)
            (specification,) = concept.embedded_data_specifications
            content = specification.data_specification_content
            assert isinstance(content, model.DataSpecificationIEC61360)
            assert content.unit == unit, (key, id_short)
            assert "en" in content.preferred_name
            assert content.data_type is not None


def test_operational_units_names_the_unece_code() -> None:
    units = twins.operational_units(twins.load_twins(PLANT))
    assert units[(f"{PREFIX}sm:filler-motor:operational-data", "RotationalSpeed")].unece_code == "RPM"
    assert (f"{PREFIX}sm:bottling-process:operational-data", "LineRunning") not in units


def identifiable_ids(store: Store) -> set[str]:
    return {item.id for item in store}


def test_json_round_trip_keeps_every_object(store: Store) -> None:
    buffer = io.StringIO()
    aas_json.write_aas_json_file(buffer, store)
    buffer.seek(0)
    read_back = aas_json.read_aas_json_file(buffer, failsafe=False)
    assert len(read_back) == len(store) == 60
    assert identifiable_ids(read_back) == identifiable_ids(store)
    assert walk_composition("plant", read_back)["Filler"] == ["FillerMotor", "FillerTemperatureSensor"]


def test_xml_round_trip_keeps_every_object(store: Store) -> None:
    buffer = io.BytesIO()
    aas_xml.write_aas_xml_file(buffer, store)
    buffer.seek(0)
    read_back = aas_xml.read_aas_xml_file(buffer, failsafe=False)
    assert len(read_back) == len(store)
    assert identifiable_ids(read_back) == identifiable_ids(store)
    motor = read_back.get_item(f"{PREFIX}sm:capper-motor:operational-data")
    assert isinstance(motor, model.Submodel)
    assert isinstance(motor.get_referable("SpeedSetpoint"), model.Property)


@pytest.mark.parametrize(
    ("file_name", "twin_key", "field"),
    [
        ("missing-manufacturer-name.yaml", "pump", "nameplate.ManufacturerName"),
        ("unknown-part.yaml", "pump", "parts[1]"),
        ("unknown-unit.yaml", "pump", "operational_data[FlowRate].unit"),
    ],
)
def test_invalid_definition_is_rejected_naming_file_twin_and_field(file_name: str, twin_key: str, field: str) -> None:
    path = DATA / file_name
    with pytest.raises(ConfigurationError) as caught:
        twins.load_twins(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"twins[{twin_key}].{field}" in message


def test_missing_mandatory_value_names_the_template() -> None:
    with pytest.raises(ConfigurationError, match=r"mandatory element missing .*IDTA 02006-3-0"):
        twins.load_twins(DATA / "missing-manufacturer-name.yaml")


def test_all_template_descriptions_load_with_semantic_ids() -> None:
    loaded = templates.load_templates(templates.DEFAULT_TEMPLATES_DIRECTORY)
    assert set(loaded) == {
        "nameplate-3.0",
        "technical-data-2.0",
        "hierarchical-structures-1.1",
        "operational-data-1.0",
    }
    nameplate = loaded["nameplate-3.0"]
    assert nameplate.semantic_id == NAMEPLATE
    mandatory = {element.id_short for element in nameplate.elements if element.cardinality.mandatory}
    assert mandatory == {
        "URIOfTheProduct",
        "ManufacturerName",
        "ManufacturerProductDesignation",
        "AddressInformation",
        "OrderCodeOfManufacturer",
    }
    assert loaded["hierarchical-structures-1.1"].element("EntryNode.HasPart").semantic_id == HAS_PART


def test_invalid_template_description_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "template: broken-1.0\nversion: '1.0'\ntitle: Broken\nid_short: Broken\nsemantic_id: urn:x\n"
        "elements:\n  - id_short: Speed\n    model_type: Property\n    semantic_id: urn:x:speed\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: elements\[0\]: .*needs a value_type"):
        templates.load_template(path)


def test_instantiate_rejects_a_value_of_the_wrong_type() -> None:
    nameplate = templates.load_templates(templates.DEFAULT_TEMPLATES_DIRECTORY)["nameplate-3.0"]
    values: dict[str, object] = {
        "URIOfTheProduct": "https://www.example.com/p",
        "ManufacturerName": {"en": "Example"},
        "ManufacturerProductDesignation": {"en": "Thing"},
        "AddressInformation": {"CityTown": {"de": "Musterstadt"}},
        "OrderCodeOfManufacturer": "T-1",
        "DateOfManufacture": "yesterday",
    }
    with pytest.raises(ConfigurationError) as caught:
        templates.instantiate(nameplate, "urn:test:sm:nameplate", values)
    assert caught.value.location == "DateOfManufacture"
    values["DateOfManufacture"] = "2024-05-01"
    submodel = templates.instantiate(nameplate, "urn:test:sm:nameplate", values)
    assert [element.id_short for element in submodel.submodel_element][-1] == "DateOfManufacture"

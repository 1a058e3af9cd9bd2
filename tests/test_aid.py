"""Mapping files as Asset Interfaces Description (IDTA 02017) and Mapping Configuration (IDTA 02027) submodels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from basyx.aas import model

from aas_server.errors import MappingError
from aas_server.exchange import PackageFormat, read_package, read_package_file, write_package
from aas_server.mapping.aid import EXTENSION_NAME, aid_submodel_ids, mapping_from_aid, mapping_to_aid, mapping_to_aids
from aas_server.mapping.schema import DataType, MappingFile, OpcUaDevice, RegisterPoint, load_mapping, parse_mapping
from aas_server.model.templates import global_reference
from tests.support import ROOT

BOTTLING_LINE = ROOT / "mappings" / "bottling-line.yaml"
AID_TEMPLATE = "IDTA_02017-1-1_Template_Asset_Interfaces_Description"
AIMC_TEMPLATE = "IDTA_02027-1-0_Template_AIMC"
SHELL = "urn:example:aas:oven-line"
OPERATIONAL = "urn:example:sm:oven:operational-data"

SYNTHETIC: dict[str, Any] = {
    "devices": [
        {
            "name": "line-plc",
            "protocol": "modbus-tcp",
            "shell": SHELL,
            "host": "192.0.2.10",
            "port": 1502,
            "unit_id": 3,
            "addressing": "one-based",
            "timeout": 2.5,
            "retries": 3,
            "merge_gap": 4,
            "reconnect_backoff": {"initial": 0.5, "maximum": 30},
        },
        {
            "name": "oven",
            "protocol": "opcua",
            "shell": SHELL,
            "endpoint": "opc.tcp://192.0.2.20:4840/oven",
            "security_policy": "Basic256Sha256",
            "security_mode": "sign-and-encrypt",
            "certificate": "pki/hub.der",
            "private_key": "pki/hub.pem",
            "username": "operator",
            "password_env": "OVEN_PASSWORD",
            "acquisition": "poll",
            "publishing_interval": 0.5,
        },
        {
            "name": "weather",
            "protocol": "mqtt",
            "shell": SHELL,
            "host": "broker.example",
            "port": 8883,
            "tls": True,
            "client_id": "hub-1",
            "username": "hub",
            "qos": 2,
            "stale_after": 30,
        },
    ],
    "points": [
        {
            "name": "zone1.Temperature",
            "device": "line-plc",
            "table": "input_register",
            "unit_id": 7,
            "address": 1,
            "data_type": "float32",
            "word_order": "little",
            "byte_order": "little",
            "scale": 0.5,
            "offset": -10,
            "unit": "CEL",
            "target_unit": "KEL",
            "limits": {"min": 200, "max": 600, "action": "bad"},
            "deadband": {"absolute": 0.5},
            "filter": {"kind": "moving-average", "window": 5},
            "rate_limit": 2,
            "semantic_id": "0173-1#02-AAB381#003",
            "description": "Temperature of oven zone 1",
            "target": {"submodel": OPERATIONAL, "path": "Zones[0].Temperature"},
            "poll_interval": 0.25,
        },
        {
            "name": "recipe.Name",
            "device": "line-plc",
            "table": "holding_register",
            "address": 100,
            "data_type": "string",
            "length": 8,
            "encoding": "utf-8",
            "access": "read-write",
            "target": {"submodel": OPERATIONAL, "path": "RecipeName"},
        },
        {
            "name": "door.Open",
            "device": "line-plc",
            "table": "holding_register",
            "address": 110,
            "data_type": "bool",
            "bit": 3,
            "target": {"submodel": OPERATIONAL, "path": "DoorOpen"},
        },
        {
            "name": "oven.State",
            "device": "line-plc",
            "table": "holding_register",
            "address": 111,
            "data_type": "uint16",
            "enum": {0: "Stopped", 1: "Heating", 2: "Fault"},
            "access": "read-write",
            "target": {"submodel": OPERATIONAL, "path": "State"},
        },
        {
            "name": "conveyor.Run",
            "device": "line-plc",
            "table": "coil",
            "address": 1,
            "access": "read-write",
            "target": {"submodel": OPERATIONAL, "path": "ConveyorRun"},
        },
        {
            "name": "guard.Closed",
            "device": "line-plc",
            "table": "discrete_input",
            "address": 5,
            "target": {"submodel": OPERATIONAL, "path": "GuardClosed"},
            "poll_interval": 0.05,
        },
        {
            "name": "oven.Energy",
            "device": "line-plc",
            "table": "holding_register",
            "address": 120,
            "data_type": "int32",
            "unit": "KWH",
            "limits": {"min": 0, "max": 1000},
            "deadband": {"percent": 1.5},
            "filter": {"kind": "first-order", "time_constant": 10},
            "target": {"submodel": OPERATIONAL, "path": "Energy"},
        },
        {
            "name": "oven.Pressure",
            "device": "line-plc",
            "table": "holding_register",
            "address": 130,
            "data_type": "float64",
            "unit": "BAR",
            "limits": {"max": 4},
            "target": {"submodel": OPERATIONAL, "path": "Pressure"},
        },
        {
            "name": "oven.AirTemperature",
            "device": "oven",
            "node_id": "ns=2;s=Oven.Air.Temperature",
            "acquisition": "subscribe",
            "sampling_interval": 0.5,
            "unit": "CEL",
            "semantic_id": "https://example.com/ids/cd/AirTemperature",
            "target": {"submodel": OPERATIONAL, "path": "AirTemperature"},
        },
        {
            "name": "oven.DoorCount",
            "device": "oven",
            "browse_path": "2:Oven/2:Door/2:Count",
            "poll_interval": 5,
            "target": {"submodel": OPERATIONAL, "path": "DoorCount"},
        },
        {
            "name": "oven.Start",
            "device": "oven",
            "object_node_id": "ns=2;s=Oven",
            "method_node_id": "ns=2;s=Oven.Start",
            "timeout": 20,
            "target": {"submodel": OPERATIONAL, "path": "Start"},
        },
        {
            "name": "oven.Stop",
            "device": "oven",
            "object_browse_path": "2:Oven",
            "method_browse_name": "2:Stop",
            "target": {"submodel": OPERATIONAL, "path": "Stop"},
        },
        {
            "name": "outside.Temperature",
            "device": "weather",
            "topic": "weather/+/temperature",
            "value_path": "$.t",
            "timestamp_path": "$.ts",
            "timestamp_format": "epoch-ms",
            "unit": "CEL",
            "target": {"submodel": OPERATIONAL, "path": "OutsideTemperature"},
        },
        {
            "name": "vent.Setpoint",
            "device": "weather",
            "topic": "vent/setpoint/state",
            "write_topic": "vent/setpoint/set",
            "access": "read-write",
            "unit": "P1",
            "target": {"submodel": OPERATIONAL, "path": "VentSetpoint"},
        },
    ],
}


def _synthetic() -> MappingFile:
    return parse_mapping(SYNTHETIC, "synthetic")


def _round_trip_through_package(
    aid: model.Submodel, aimc: model.Submodel, package_format: PackageFormat
) -> tuple[model.Submodel, model.Submodel]:
    data = write_package([aid, aimc], None, package_format)
    result = read_package(data, f"aid.{package_format}", strict=True)
    submodels = {identifiable.id: identifiable for identifiable in result.identifiables}
    read_aid, read_aimc = submodels[aid.id], submodels[aimc.id]
    assert isinstance(read_aid, model.Submodel)
    assert isinstance(read_aimc, model.Submodel)
    return read_aid, read_aimc


def _element(parent: model.Submodel | model.SubmodelElement, path: str) -> model.SubmodelElement:
    current: Any = parent
    for id_short in path.split("."):
        children = current.submodel_element if isinstance(current, model.Submodel) else current.value
        current = next(child for child in children if child.id_short == id_short)
    assert isinstance(current, model.SubmodelElement)
    return current


def _value(parent: model.Submodel | model.SubmodelElement, path: str) -> object:
    element = _element(parent, path)
    assert isinstance(element, model.Property)
    return element.value


def _extension_of(element: model.Referable) -> dict[str, Any]:
    for extension in element.extension:
        if extension.name == EXTENSION_NAME:
            fields = json.loads(str(extension.value))
            assert isinstance(fields, dict)
            return fields
    return {}


# --- export and round trip -----------------------------------------------------------------------


def test_bottling_line_survives_aid_and_aimc_unchanged() -> None:
    mapping = load_mapping(BOTTLING_LINE)
    aid, aimc = mapping_to_aid(mapping, "bottling-plc")
    assert (aid.id, aimc.id) == ("urn:aas-server:aid:bottling-plc", "urn:aas-server:aimc:bottling-plc")
    assert len(mapping.points) == 21
    assert mapping_from_aid(aid, aimc) == mapping


@pytest.mark.parametrize("package_format", ["json", "xml", "aasx"])
def test_exported_submodels_serialise_and_read_back_without_issues(package_format: PackageFormat) -> None:
    mapping = load_mapping(BOTTLING_LINE)
    aid, aimc = mapping_to_aid(mapping, "bottling-plc")
    read_aid, read_aimc = _round_trip_through_package(aid, aimc, package_format)
    assert mapping_from_aid(read_aid, read_aimc) == mapping


def test_synthetic_mapping_of_three_protocols_survives_unchanged() -> None:
    mapping = _synthetic()
    aid, aimc = mapping_to_aid(mapping, "oven")
    assert (aid.id, aimc.id) == (f"{SHELL}/aid", f"{SHELL}/aimc")
    interfaces = [element.id_short for element in aid.submodel_element]
    assert interfaces == ["line_plc", "oven", "weather"]
    assert mapping_from_aid(aid, aimc) == mapping
    read_aid, read_aimc = _round_trip_through_package(aid, aimc, "json")
    assert mapping_from_aid(read_aid, read_aimc) == mapping


def test_modbus_points_use_the_wot_modbus_binding_terms() -> None:
    mapping = _synthetic()
    aid, _ = mapping_to_aid(mapping, "line-plc")
    interface = _element(aid, "line_plc")
    assert _value(interface, "title") == "line-plc"
    assert _value(interface, "EndpointMetadata.base") == "modbus+tcp://192.0.2.10:1502"
    assert _value(interface, "EndpointMetadata.securityDefinitions.nosec_sc.scheme") == "nosec"
    temperature = _element(interface, "InteractionMetadata.properties.zone1_Temperature")
    assert _value(temperature, "key") == "zone1.Temperature"
    assert _value(temperature, "type") == "number"
    assert _value(temperature, "unit") == "CEL"
    semantics = _element(temperature, "valueSemantics")
    assert isinstance(semantics, model.ReferenceElement)
    assert semantics.value == global_reference("0173-1#02-AAB381#003")
    assert temperature.description is not None
    assert temperature.description["en"] == "Temperature of oven zone 1"
    forms = _element(temperature, "forms")
    assert {
        term: _value(forms, term)
        for term in (
            "href",
            "modv_function",
            "modv_entity",
            "modv_type",
            "modv_zeroBasedAddressing",
            "modv_pollingTime",
            "modv_timeout",
            "modv_mostSignificantByte",
            "modv_mostSignificantWord",
        )
    } == {
        "href": "/7/1?quantity=2",
        "modv_function": "readInputRegisters",
        "modv_entity": "InputRegister",
        "modv_type": "xsd:float",
        "modv_zeroBasedAddressing": "false",
        "modv_pollingTime": "250",
        "modv_timeout": "2500",
        "modv_mostSignificantByte": "false",
        "modv_mostSignificantWord": "false",
    }
    # The normalisation AID cannot express travels in the extension; limits are in kelvin there
    # (target_unit), so no min_max is written in the device's unit.
    assert _extension_of(temperature) == {
        "deadband": {"absolute": 0.5},
        "filter": {"kind": "moving-average", "window": 5},
        "limits": {"action": "bad", "max": 600.0, "min": 200.0},
        "offset": -10.0,
        "rate_limit": 2.0,
        "scale": 0.5,
        "target_unit": "KEL",
    }
    pressure = _element(interface, "InteractionMetadata.properties.oven_Pressure")
    limits = _element(pressure, "min_max")
    assert isinstance(limits, model.Range)
    assert (limits.min, limits.max) == (None, 4.0)
    assert _extension_of(pressure) == {}
    assert _extension_of(interface) == {
        "merge_gap": 4,
        "reconnect_backoff": {"initial": 0.5, "maximum": 30.0},
        "retries": 3,
        "shell": SHELL,
        "unit_id": 3,
    }


def test_opcua_and_mqtt_interfaces_use_their_bindings() -> None:
    aid, _ = mapping_to_aid(_synthetic(), "weather")
    oven = _element(aid, "oven")
    assert _value(oven, "EndpointMetadata.base") == "opc.tcp://192.0.2.20:4840/oven"
    channel = _element(oven, "EndpointMetadata.securityDefinitions.opcua_channel_sc")
    assert (_value(channel, "uav_securityMode"), _value(channel, "uav_securityPolicy")) == (
        "SignAndEncrypt",
        "Basic256Sha256",
    )
    assert _value(oven, "EndpointMetadata.securityDefinitions.opcua_authentication_sc.uav_userIdentityToken") == (
        "username"
    )
    assert _value(oven, "InteractionMetadata.properties.oven_AirTemperature.forms.href") == (
        "/?id=ns=2;s=Oven.Air.Temperature"
    )
    assert _value(oven, "InteractionMetadata.properties.oven_DoorCount.forms.uav_browsePath") == "2:Oven/2:Door/2:Count"
    assert _value(oven, "InteractionMetadata.actions.oven_Start.forms.href") == "/?id=ns=2;s=Oven.Start"
    weather = _element(aid, "weather")
    assert _value(weather, "EndpointMetadata.base") == "mqtts://broker.example:8883"
    forms = _element(weather, "InteractionMetadata.properties.outside_Temperature.forms")
    assert (_value(forms, "href"), _value(forms, "mqv_controlPacket"), _value(forms, "mqv_qos")) == (
        "/weather/+/temperature",
        "subscribe",
        "2",
    )


def _paths(element: model.SubmodelElement, prefix: str) -> Iterator[tuple[str, model.SubmodelElement]]:
    path = f"{prefix}.{element.id_short}" if prefix else str(element.id_short)
    yield path, element
    if isinstance(element, model.SubmodelElementCollection):
        for child in element.value:
            yield from _paths(child, path)


def _template_paths(elements: list[dict[str, Any]], prefix: str) -> Iterator[tuple[str, str | None]]:
    """idShort paths and semanticIds of the template's JSON (read raw: the reader drops its bare enum lists)."""
    for element in elements:
        path = f"{prefix}.{element['idShort']}" if prefix else element["idShort"]
        keys = (element.get("semanticId") or {}).get("keys") or [{}]
        yield path, keys[0].get("value", "").strip() or None
        if element["modelType"] == "SubmodelElementCollection":
            yield from _template_paths(element.get("value") or [], path)


def _semantic_id(element: model.SubmodelElement) -> str | None:
    if element.semantic_id is None or not element.semantic_id.key:
        return None
    return element.semantic_id.key[0].value.strip()


@pytest.mark.parametrize(
    ("device", "template_interface"),
    [
        ("line-plc", "InterfaceTemplateForMODBUS"),
        ("oven", "InterfaceTemplateForOPCUA"),
        ("weather", "InterfaceTemplateForMQTT"),
    ],
)
def test_exported_interfaces_follow_the_template_structure(
    reference: Path, device: str, template_interface: str
) -> None:
    """Every element an interface holds sits where the IDTA 02017-1-1 template puts it, with its semanticId."""
    document = json.loads((reference / "idta-templates" / f"{AID_TEMPLATE}.json").read_text(encoding="utf-8"))
    (template,) = document["submodels"]
    expected = dict(_template_paths(template["submodelElements"], ""))
    assert template_interface in expected
    aid, _ = mapping_to_aid(_synthetic(), device)
    interface = _element(aid, aid_interface_id_short(device))
    checked = 0
    for path, element in _paths(interface, ""):
        parts = path.split(".")
        parts[0] = template_interface
        if parts[1:3] == ["InteractionMetadata", "actions"] and len(parts) > 3:
            continue  # the template leaves actions undetailed
        if parts[1:3] == ["InteractionMetadata", "properties"] and len(parts) > 3:
            parts[3] = "property_name"
        template_path = ".".join(parts)
        assert template_path in expected, f"{path}: not in the template"
        assert _semantic_id(element) == expected[template_path], path
        checked += 1
    assert checked > 20


def aid_interface_id_short(device: str) -> str:
    return device.replace("-", "_")


def test_password_is_never_written() -> None:
    data = json.loads(json.dumps(SYNTHETIC))
    data["devices"][1].pop("password_env")
    data["devices"][1]["password"] = "s3cret-Value"
    mapping = parse_mapping(data, "with-password")
    aid, aimc = mapping_to_aid(mapping, "oven")
    assert b"s3cret-Value" not in write_package([aid, aimc], None, "json")
    back = mapping_from_aid(aid, aimc)
    oven = back.device("oven")
    assert isinstance(oven, OpcUaDevice)
    assert (oven.username, oven.password, oven.password_env) == ("operator", None, None)


def test_devices_without_shell_get_one_pair_each() -> None:
    data = json.loads(json.dumps(SYNTHETIC))
    for device in data["devices"]:
        device.pop("shell")
    mapping = parse_mapping(data, "no-shells")
    pairs = mapping_to_aids(mapping)
    assert [aid.id for aid, _ in pairs] == [
        "urn:aas-server:aid:line-plc",
        "urn:aas-server:aid:oven",
        "urn:aas-server:aid:weather",
    ]
    parts = [mapping_from_aid(aid, aimc) for aid, aimc in pairs]
    assert [device for part in parts for device in part.devices] == mapping.devices
    assert [point for part in parts for point in part.points] == mapping.points
    assert aid_submodel_ids(mapping.devices[0], "urn:example:aas:plc") == (
        "urn:example:aas:plc/aid",
        "urn:example:aas:plc/aimc",
    )


def test_shells_the_hub_resolved_group_devices_into_one_pair() -> None:
    data = json.loads(json.dumps(SYNTHETIC))
    for device in data["devices"]:
        device.pop("shell")
    mapping = parse_mapping(data, "no-shells")
    shells = {"line-plc": "urn:example:aas:line", "oven": "urn:example:aas:line", "weather": "urn:example:aas:roof"}
    pairs = mapping_to_aids(mapping, shells=shells)
    assert [(aid.id, [element.id_short for element in aid.submodel_element]) for aid, _ in pairs] == [
        ("urn:example:aas:line/aid", ["line_plc", "oven"]),
        ("urn:example:aas:roof/aid", ["weather"]),
    ]
    aid, aimc = pairs[0]
    assert mapping_from_aid(aid, aimc).points == mapping.points_of("line-plc") + mapping.points_of("oven")
    with pytest.raises(MappingError, match="no device 'boiler' in the mapping"):
        mapping_to_aid(mapping, "boiler")


def test_points_come_back_grouped_by_device() -> None:
    data = json.loads(json.dumps(SYNTHETIC))
    data["points"].insert(0, data["points"].pop())  # an MQTT point first
    mapping = parse_mapping(data, "interleaved")
    aid, aimc = mapping_to_aid(mapping, "oven")
    back = mapping_from_aid(aid, aimc)
    assert back.devices == mapping.devices
    order = [device.name for device in mapping.devices]
    assert back.points == sorted(mapping.points, key=lambda point: order.index(point.device))


def test_exact_target_key_types_come_from_the_resolver() -> None:
    mapping = load_mapping(BOTTLING_LINE)
    submodels: dict[str, model.Submodel] = {}
    for point in mapping.points:
        submodel = submodels.setdefault(point.target.submodel, model.Submodel(point.target.submodel))
        submodel.submodel_element.add(model.Property(point.target.path, model.datatypes.Double))

    def resolve(submodel_id: str, path: str) -> model.SubmodelElement | None:
        element = submodels[submodel_id].get_referable(path)
        assert isinstance(element, model.SubmodelElement)
        return element

    aid, aimc = mapping_to_aid(mapping, "bottling-plc", resolve=resolve)
    relation = _first_relation(aimc)
    assert relation.second == model.ModelReference.from_referable(
        submodels[mapping.points[0].target.submodel].get_referable("RotationalSpeed")
    )
    assert mapping_from_aid(aid, aimc) == mapping


def _first_relation(aimc: model.Submodel) -> model.RelationshipElement:
    configurations = _element(aimc, "MappingConfigurations")
    assert isinstance(configurations, model.SubmodelElementList)
    relations = _element(configurations.value[0], "MappingSourceSinkRelations")
    assert isinstance(relations, model.SubmodelElementList)
    relation = relations.value[0]
    assert isinstance(relation, model.RelationshipElement)
    return relation


def test_relations_lead_from_the_aid_property_to_the_target_element() -> None:
    mapping = _synthetic()
    aid, aimc = mapping_to_aid(mapping, "line-plc")
    relation = _first_relation(aimc)
    assert relation.first is not None
    assert [key.value for key in relation.first.key] == [
        aid.id,
        "line_plc",
        "InteractionMetadata",
        "properties",
        "zone1_Temperature",
    ]
    assert relation.second is not None
    assert [(key.type, key.value) for key in relation.second.key] == [
        (model.KeyTypes.SUBMODEL, OPERATIONAL),
        (model.KeyTypes.SUBMODEL_ELEMENT_LIST, "Zones"),
        (model.KeyTypes.SUBMODEL_ELEMENT, "0"),
        (model.KeyTypes.PROPERTY, "Temperature"),
    ]


# --- reading descriptions written elsewhere ------------------------------------------------------


def _template_submodel(reference: Path, name: str) -> model.Submodel:
    result = read_package_file(reference / "idta-templates" / f"{name}.aasx")
    submodels = [identifiable for identifiable in result.identifiables if isinstance(identifiable, model.Submodel)]
    assert len(submodels) == 1
    return submodels[0]


def test_templates_read_and_name_what_they_lack(reference: Path) -> None:
    aid = _template_submodel(reference, AID_TEMPLATE)
    aimc = _template_submodel(reference, AIMC_TEMPLATE)
    with pytest.raises(MappingError) as wired:
        mapping_from_aid(aid, aimc)
    assert "MappingConfigurations[0].InterfaceReference" in str(wired.value)
    assert "placeholder" in str(wired.value)
    with pytest.raises(MappingError) as unwired:
        mapping_from_aid(aid, None)
    assert str(unwired.value) == (
        f"submodel {aid.id}: InterfaceTemplateForHTTP.EndpointMetadata.base: "
        "is empty; it names the device (modbus+tcp://host:port, ...)"
    )


def _set(parent: model.SubmodelElement, path: str, value: object) -> None:
    element = _element(parent, path)
    assert isinstance(element, model.Property | model.ReferenceElement)
    element.value = value


def _filled_templates(reference: Path) -> tuple[model.Submodel, model.Submodel]:
    """The templates' Modbus interface and mapping configuration filled in, as an engineering tool would."""
    aid = _template_submodel(reference, AID_TEMPLATE)
    aimc = _template_submodel(reference, AIMC_TEMPLATE)
    interface = _element(aid, "InterfaceTemplateForMODBUS")
    _set(interface, "title", "pump-plc")
    _set(interface, "EndpointMetadata.base", "modbus+tcp://192.0.2.30:502")
    _set(interface, "EndpointMetadata.modv_mostSignificantWord", "false")
    prop = _element(interface, "InteractionMetadata.properties.property_name")
    prop.description = model.MultiLanguageTextType({"en": "Pump casing temperature"})
    _set(prop, "key", "pump.Temperature")
    _set(prop, "type", "integer")
    _set(prop, "unit", "CEL")
    _set(prop, "valueSemantics", global_reference("0173-1#02-AAB381#003"))
    limits = _element(prop, "min_max")
    assert isinstance(limits, model.Range)
    limits.min, limits.max = "-40", "150"
    for term, value in {
        "href": "/1/100?quantity=1",
        "modv_function": "readHoldingRegisters",
        "modv_type": "xsd:short",
        "modv_zeroBasedAddressing": "true",
        "modv_pollingTime": "500",
        "modv_timeout": "2000",
    }.items():
        _set(prop, f"forms.{term}", value)

    configurations = _element(aimc, "MappingConfigurations")
    assert isinstance(configurations, model.SubmodelElementList)
    configuration = configurations.value[0]
    interface_reference = model.ModelReference.from_referable(interface)
    _set(configuration, "InterfaceReference", interface_reference)
    relations = _element(configuration, "MappingSourceSinkRelations")
    assert isinstance(relations, model.SubmodelElementList)
    relation = relations.value[0]
    assert isinstance(relation, model.RelationshipElement)
    relation.first = model.ModelReference.from_referable(prop)
    relation.second = model.ModelReference(
        (
            model.Key(model.KeyTypes.SUBMODEL, "urn:example:sm:pump:operational-data"),
            model.Key(model.KeyTypes.PROPERTY, "CasingTemperature"),
        ),
        model.Property,
    )
    return aid, aimc


def test_a_filled_template_reads_with_modbus_defaults(reference: Path) -> None:
    aid, aimc = _filled_templates(reference)
    mapping = mapping_from_aid(aid, aimc)
    assert mapping == parse_mapping(
        {
            "devices": [
                {
                    "name": "pump-plc",
                    "protocol": "modbus-tcp",
                    "host": "192.0.2.30",
                    "port": 502,
                    "addressing": "zero-based",
                    "timeout": 2.0,
                }
            ],
            "points": [
                {
                    "name": "pump.Temperature",
                    "device": "pump-plc",
                    "description": "Pump casing temperature",
                    "semantic_id": "0173-1#02-AAB381#003",
                    "table": "holding_register",
                    "address": 100,
                    "data_type": "int16",
                    "word_order": "little",
                    "unit": "CEL",
                    "limits": {"min": -40, "max": 150},
                    "poll_interval": 0.5,
                    "target": {"submodel": "urn:example:sm:pump:operational-data", "path": "CasingTemperature"},
                }
            ],
        }
    )


def test_a_filled_template_read_back_from_a_package(reference: Path) -> None:
    aid, aimc = _filled_templates(reference)
    data = write_package([aid, aimc], None, "json")
    result = read_package(data, "filled.json")
    by_id = {identifiable.id: identifiable for identifiable in result.identifiables}
    read_aid, read_aimc = by_id[aid.id], by_id[aimc.id]
    assert isinstance(read_aid, model.Submodel)
    assert isinstance(read_aimc, model.Submodel)
    assert mapping_from_aid(read_aid, read_aimc) == mapping_from_aid(aid, aimc)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("forms.href", "/1/x", "InterfaceTemplateForMODBUS.InteractionMetadata.properties.property_name.forms.href: "),
        ("forms.modv_type", "xsd:hexBinary", ".property_name.forms.modv_type: payload type 'xsd:hexBinary'"),
        ("forms.modv_function", "readDeviceIdentification", ".forms.modv_function: function"),
        ("forms.href", "/1/100?quantity=2", ".forms.href: quantity 2 does not fit int16 (1 register)"),
        ("unit", "furlong", ".property_name: points[0] (pump.Temperature).unit: unknown engineering unit 'furlong'"),
        ("type", "object", ".property_name.type: 'object' values are not supported"),
    ],
)
def test_invalid_descriptions_name_the_idshort_path(reference: Path, path: str, value: str, expected: str) -> None:
    aid, aimc = _filled_templates(reference)
    _set(_element(aid, "InterfaceTemplateForMODBUS.InteractionMetadata.properties.property_name"), path, value)
    with pytest.raises(MappingError) as error:
        mapping_from_aid(aid, aimc)
    assert str(error.value).startswith(f"submodel {aid.id}: InterfaceTemplateForMODBUS.")
    assert expected in str(error.value)


def test_a_relation_to_nothing_in_the_aid_is_named(reference: Path) -> None:
    aid, aimc = _filled_templates(reference)
    relation = _first_relation(aimc)
    relation.first = model.ModelReference(
        (
            model.Key(model.KeyTypes.SUBMODEL, aid.id),
            model.Key(model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "InterfaceTemplateForMODBUS"),
            model.Key(model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "InteractionMetadata"),
            model.Key(model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "properties"),
            model.Key(model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "no_such_property"),
        ),
        model.SubmodelElementCollection,
    )
    with pytest.raises(MappingError) as error:
        mapping_from_aid(aid, aimc)
    assert str(error.value).startswith(
        f"submodel {aimc.id}: MappingConfigurations[0].MappingSourceSinkRelations[0].first: is not a property"
    )


def test_an_unsupported_protocol_is_named_when_wired(reference: Path) -> None:
    aid, aimc = _filled_templates(reference)
    _set(_element(aid, "InterfaceTemplateForMODBUS"), "EndpointMetadata.base", "http://192.0.2.30/api")
    with pytest.raises(MappingError) as error:
        mapping_from_aid(aid, aimc)
    assert "InterfaceTemplateForMODBUS.EndpointMetadata.base: protocol 'http' is not supported" in str(error.value)


def test_without_aimc_a_described_property_has_no_target() -> None:
    aid, _ = mapping_to_aid(load_mapping(BOTTLING_LINE), "bottling-plc")
    with pytest.raises(MappingError) as error:
        mapping_from_aid(aid, None)
    assert str(error.value).startswith(
        f"submodel {aid.id}: bottling_plc.InteractionMetadata.properties.filler_motor_RotationalSpeed: has no target"
    )


def test_forms_that_disagree_on_addressing_are_rejected() -> None:
    aid, aimc = mapping_to_aid(load_mapping(BOTTLING_LINE), "bottling-plc")
    forms = _element(aid, "bottling_plc.InteractionMetadata.properties.plant_ActivePower.forms")
    _set(forms, "modv_zeroBasedAddressing", "false")
    with pytest.raises(MappingError) as error:
        mapping_from_aid(aid, aimc)
    assert "plant_ActivePower.forms.modv_zeroBasedAddressing: differs from" in str(error.value)


def test_an_aid_without_extension_reads_from_standard_terms_alone() -> None:
    """Another tool's AID: the extension stripped, the standard terms still give a working mapping."""
    mapping = load_mapping(BOTTLING_LINE)
    aid, aimc = mapping_to_aid(mapping, "bottling-plc")
    for _, element in _paths(_element(aid, "bottling_plc"), ""):
        for extension in list(element.extension):
            element.extension.remove(extension)
    back = mapping_from_aid(aid, aimc)
    current = back.point("filler-motor.MotorCurrent")
    assert (current.scale, current.unit, current.access.value) == (1.0, "AMP", "read")
    assert back.points[0] == mapping.points[0]
    assert [(point.name, point.target) for point in back.points] == [
        (point.name, point.target) for point in mapping.points
    ]


def test_without_modv_type_the_property_type_and_quantity_decide(reference: Path) -> None:
    aid, aimc = _filled_templates(reference)
    prop = _element(aid, "InterfaceTemplateForMODBUS.InteractionMetadata.properties.property_name")
    _set(prop, "forms.modv_type", None)
    _set(prop, "type", "float")  # the template's own example value
    _set(prop, "forms.href", "/1/100?quantity=2")
    point = mapping_from_aid(aid, aimc).points[0]
    assert isinstance(point, RegisterPoint)
    assert (point.data_type, point.register_count) == (DataType.FLOAT32, 2)


def test_a_submodel_without_interfaces_is_not_an_aid() -> None:
    _, aimc = mapping_to_aid(load_mapping(BOTTLING_LINE), "bottling-plc")
    with pytest.raises(MappingError, match="has no interfaces"):
        mapping_from_aid(aimc, None)

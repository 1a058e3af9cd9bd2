"""Mapping files as Asset Interfaces Description (IDTA 02017-1-1) and Mapping Configuration (IDTA 02027-1-0).

:func:`mapping_to_aid` describes the devices of a mapping file and their points as an AID submodel
(one interface SubmodelElementCollection per device, following the IDTA 02017-1-1 template and the
W3C WoT Thing Description 1.1 and binding templates) and the wiring of each point to its target
element as an AIMC submodel (one ``MappingConfiguration`` per device: an ``InterfaceReference`` to the
AID interface and one ``MappingSourceSinkRelation`` per point, from the AID property to the target
element). :func:`mapping_from_aid` reads such a pair back into a validated :class:`MappingFile`.
Both are pure: basyx objects in and out.

Standard terms carry what they can:

- interface: ``title`` (the device name), ``EndpointMetadata/base`` (``modbus+tcp://host:port``,
  the OPC UA endpoint, ``mqtt://`` or ``mqtts://host:port``), ``contentType``, ``security`` and
  ``securityDefinitions`` (``nosec_sc``; ``opcua_channel_sc`` with ``uav_securityMode`` and
  ``uav_securityPolicy``; ``opcua_authentication_sc`` / ``basic_sc`` for a user name);
- property (``InteractionMetadata/properties``; OPC UA methods under ``actions``): ``key`` (the
  point name, since idShorts cannot hold every name), ``type``, ``unit`` (UNECE code, schema.org
  ``unitCode``), ``min_max`` (limits, when no unit conversion applies), ``enum`` (the device's
  integers), ``valueSemantics`` (the point's ``semantic_id``) and the description;
- form: ``href``, and the binding terms: Modbus ``modv_function``, ``modv_entity``, ``modv_type``,
  ``modv_zeroBasedAddressing``, ``modv_pollingTime``, ``modv_timeout``, ``modv_mostSignificantByte``,
  ``modv_mostSignificantWord``, with the unit id, address and quantity in the href
  (``/{unitID}/{address}?quantity={n}``, WoT Modbus binding, URL format); OPC UA ``href``
  ``/?id=<NodeId>`` or ``uav_browsePath``; MQTT ``href`` ``/<topic>``, ``mqv_controlPacket`` and
  ``mqv_qos``.

Whatever these terms cannot say (scale, offset, target unit, deadband, filter, the enum's names,
rate limit, access (AID 1.1 has no readOnly term), bit, string encoding, OPC UA acquisition, MQTT
JSONPaths, reconnect backoff, ...) travels in an Extension named :data:`EXTENSION_NAME` on the
interface (device fields) and on the property (point fields): its value is a JSON object of
mapping-file fields, laid over what the standard terms give when the description is read. An AID
without the extension (one written by another tool) is read from the standard terms alone, with the
mapping file's defaults.

Identifiers: a pair belongs to a shell (the device's ``shell``, else the one the caller resolved)
and is ``<shell>/aid`` and ``<shell>/aimc``, with an interface for each device of that shell; a
device with no known shell gets ``urn:aas-server:aid:<device>`` and ``urn:aas-server:aimc:<device>``.
See ``docs/mapping-descriptions.md``.

Reading back gives the same mapping file, except that points come grouped by device (in device
order) and a device's ``password`` is never written (``password_env`` is).

Left out: HTTP, BACnet and IO-Link interfaces (reading one that an AIMC configuration names is an
error), WoT events, nested object and array schemas (``properties``, ``items``), URI variables,
forms with more than one operation, ``ExternalDescriptor``, and AIMC relations between two elements
outside the AID.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

from basyx.aas import model
from basyx.aas.model import datatypes
from pydantic import BaseModel, ValidationError

from aas_server.errors import InvalidRequestError, MappingError
from aas_server.mapping.protocols.sparkplug import SparkplugDevice, SparkplugPoint
from aas_server.mapping.schema import (
    PROTOCOLS,
    Addressing,
    AnyDevice,
    AnyPoint,
    BitPoint,
    DataType,
    MappingFile,
    ModbusTcpDevice,
    MqttDevice,
    MqttPoint,
    OpcUaDevice,
    OpcUaMethodPoint,
    OpcUaVariablePoint,
    Order,
    RegisterPoint,
    Table,
    format_mapping_errors,
    parse_mapping,
    protocol_named,
)
from aas_server.model.paths import Segment, format_id_short_path, parse_id_short_path
from aas_server.model.templates import global_reference

EXTENSION_NAME = "urn:aas-server:mapping:1.0"
"""Name (and semanticId) of the Extension carrying the mapping-file fields the standard terms lack."""

AID_SUBMODEL_SEMANTIC_ID = "https://admin-shell.io/idta/AssetInterfacesDescription/1/1/Submodel"
AIMC_SUBMODEL_SEMANTIC_ID = "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/Submodel"

_AID = "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/"
_AIMC = "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/"
_TD = "https://www.w3.org/2019/wot/td#"
_HCTL = "https://www.w3.org/2019/wot/hypermedia#"
_JSON_SCHEMA = "https://www.w3.org/2019/wot/json-schema#"
_WOT_SECURITY = "https://www.w3.org/2019/wot/security#"
_MODBUS = "https://www.w3.org/2019/wot/modbus#"
_MQTT = "https://www.w3.org/2019/wot/mqtt#"
_OPCUA = "http://opcfoundation.org/UA/WoT-Binding/"
_RDF_TYPE = "https://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_UNIT_CODE = "https://schema.org/unitCode"
_SECURITY_POLICY_URI = "http://opcfoundation.org/UA/SecurityPolicy#"

_SCHEMES = {scheme: protocol.name for protocol in PROTOCOLS for scheme in protocol.aid.schemes}
"""``EndpointMetadata/base`` URI scheme -> protocol, from the protocol registry."""

_ENTITIES = {
    Table.HOLDING_REGISTER: "HoldingRegister",
    Table.INPUT_REGISTER: "InputRegister",
    Table.COIL: "Coil",
    Table.DISCRETE_INPUT: "DiscreteInput",
}
_READ_FUNCTIONS = {
    Table.HOLDING_REGISTER: "readHoldingRegisters",
    Table.INPUT_REGISTER: "readInputRegisters",
    Table.COIL: "readCoil",
    Table.DISCRETE_INPUT: "readDiscreteInput",
}
_FUNCTION_TABLES: dict[str, tuple[Table, bool]] = {
    "readholdingregisters": (Table.HOLDING_REGISTER, False),
    "readinputregisters": (Table.INPUT_REGISTER, False),
    "readcoil": (Table.COIL, False),
    "readcoils": (Table.COIL, False),
    "readdiscreteinput": (Table.DISCRETE_INPUT, False),
    "readdiscreteinputs": (Table.DISCRETE_INPUT, False),
    "writesinglecoil": (Table.COIL, True),
    "writemultiplecoils": (Table.COIL, True),
    "writesingleholdingregister": (Table.HOLDING_REGISTER, True),
    "writemultipleholdingregisters": (Table.HOLDING_REGISTER, True),
    "1": (Table.COIL, False),
    "2": (Table.DISCRETE_INPUT, False),
    "3": (Table.HOLDING_REGISTER, False),
    "4": (Table.INPUT_REGISTER, False),
    "5": (Table.COIL, True),
    "6": (Table.HOLDING_REGISTER, True),
    "15": (Table.COIL, True),
    "16": (Table.HOLDING_REGISTER, True),
}
_ENTITY_TABLES = {name.lower(): table for table, name in _ENTITIES.items()}
_PAYLOAD_TYPES = {
    DataType.INT16: "xsd:short",
    DataType.UINT16: "xsd:unsignedShort",
    DataType.INT32: "xsd:int",
    DataType.UINT32: "xsd:unsignedInt",
    DataType.INT64: "xsd:long",
    DataType.UINT64: "xsd:unsignedLong",
    DataType.FLOAT32: "xsd:float",
    DataType.FLOAT64: "xsd:double",
    DataType.BOOL: "xsd:boolean",
    DataType.STRING: "xsd:string",
}
_DATA_TYPES = {name.split(":")[1].lower(): data_type for data_type, name in _PAYLOAD_TYPES.items()}
_SIZED_TYPES = {
    "integer": {1: DataType.INT16, 2: DataType.INT32, 4: DataType.INT64},
    "decimal": {2: DataType.FLOAT32, 4: DataType.FLOAT64},
    "number": {2: DataType.FLOAT32, 4: DataType.FLOAT64},
    "float": {2: DataType.FLOAT32, 4: DataType.FLOAT64},  # the 02017 template's example value for type
}
_SECURITY_MODES = {"none": "none", "sign": "sign", "signandencrypt": "sign-and-encrypt"}
_SECURITY_MODE_TERMS = {"none": "None", "sign": "Sign", "sign-and-encrypt": "SignAndEncrypt"}

_E = TypeVar("_E", bound=model.SubmodelElement)
_MISSING = object()

ElementResolver = Callable[[str, str], model.SubmodelElement | None]
"""``(submodel_id, id_short_path) -> element``: the target elements, for exact reference key types."""


# --- identifiers ---------------------------------------------------------------------------------


def aid_submodel_ids(device: AnyDevice, shell_id: str | None = None) -> tuple[str, str]:
    """The ids of the AID and AIMC submodels describing ``device``: ``<shell>/aid`` and ``<shell>/aimc``.

    ``shell_id`` (else the device's ``shell``) names the shell; without one the ids derive from the
    device name: ``urn:aas-server:aid:<device>``, ``urn:aas-server:aimc:<device>``.
    """
    shell = shell_id or device.shell
    if shell:
        return f"{shell}/aid", f"{shell}/aimc"
    return f"urn:aas-server:aid:{device.name}", f"urn:aas-server:aimc:{device.name}"


def _id_short(name: str, taken: set[str], prefix: str) -> str:
    candidate = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not candidate[:1].isalpha():
        candidate = prefix + candidate
    stem = candidate = candidate[:120]
    number = 2
    while candidate.lower() in taken:
        candidate = f"{stem}_{number}"
        number += 1
    taken.add(candidate.lower())
    return candidate


# --- building elements ---------------------------------------------------------------------------


def _property(id_short: str | None, value: object, semantic_id: str, value_type: type[Any] = str) -> model.Property:
    return model.Property(id_short, value_type, value, semantic_id=global_reference(semantic_id))


def _collection(
    id_short: str | None,
    elements: Iterable[model.SubmodelElement],
    semantic_id: str,
    supplemental: Sequence[str] = (),
) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(
        id_short,
        list(elements),
        semantic_id=global_reference(semantic_id),
        supplemental_semantic_id=[global_reference(identifier) for identifier in supplemental],
    )


def _extension(fields: dict[str, Any]) -> model.Extension:
    return model.Extension(
        EXTENSION_NAME,
        datatypes.String,
        json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        semantic_id=global_reference(EXTENSION_NAME),
    )


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _milliseconds(seconds: float) -> str:
    milliseconds = round(seconds * 1000, 6)
    return str(int(milliseconds)) if milliseconds == int(milliseconds) else repr(milliseconds)


def _model_reference(
    keys: Sequence[tuple[model.KeyTypes, str]], kind: type[model.Referable]
) -> model.ModelReference[Any]:
    return model.ModelReference(tuple(model.Key(key_type, value) for key_type, value in keys), kind)


def _list(
    id_short: str, kind: type[model.SubmodelElement], items: Sequence[Any], semantic_id: str, item_semantic_id: str
) -> model.SubmodelElementList[Any]:
    return model.SubmodelElementList(
        id_short,
        kind,
        items,
        semantic_id=global_reference(semantic_id),
        semantic_id_list_element=global_reference(item_semantic_id),
    )


def _security_list(references: Sequence[model.ModelReference[Any]]) -> model.SubmodelElementList[Any]:
    term = _TD + "hasSecurityConfiguration"
    return _list(
        "security",
        model.ReferenceElement,
        [model.ReferenceElement(None, reference, semantic_id=global_reference(term)) for reference in references],
        term,
        term,
    )


@dataclass(frozen=True, slots=True)
class _InterfacePlace:
    submodel_id: str
    id_short: str

    def keys(self, *path: tuple[model.KeyTypes, str]) -> list[tuple[model.KeyTypes, str]]:
        return [
            (model.KeyTypes.SUBMODEL, self.submodel_id),
            (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, self.id_short),
            *path,
        ]


def _security_definitions(
    device: AnyDevice, place: _InterfacePlace
) -> tuple[model.SubmodelElementCollection, list[model.ModelReference[Any]]]:
    schemes = _aid_of(device.protocol).security_schemes(device)
    if not schemes:
        schemes.append(
            _collection(
                "nosec_sc",
                [_property("scheme", "nosec", _WOT_SECURITY + "SecurityScheme")],
                _WOT_SECURITY + "NoSecurityScheme",
            )
        )
    references = [
        _model_reference(
            place.keys(
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "EndpointMetadata"),
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "securityDefinitions"),
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, scheme.id_short or ""),
            ),
            model.SubmodelElementCollection,
        )
        for scheme in schemes
    ]
    return _collection("securityDefinitions", schemes, _TD + "definesSecurityScheme"), references


def _host(device: ModbusTcpDevice | MqttDevice) -> str:
    """The device's host as a URI authority has it (an IPv6 address in brackets)."""
    return f"[{device.host}]" if ":" in device.host else device.host


def _endpoint_metadata(device: AnyDevice, place: _InterfacePlace) -> model.SubmodelElementCollection:
    definitions, references = _security_definitions(device, place)
    return _collection(
        "EndpointMetadata",
        [
            _property("base", _aid_of(device.protocol).base(device), _TD + "baseURI", datatypes.AnyURI),
            _property("contentType", _aid_of(device.protocol).content_type, _HCTL + "forContentType"),
            _security_list(references),
            definitions,
        ],
        _AID + "EndpointMetadata",
    )


def _modbus_form_terms(device: ModbusTcpDevice, point: RegisterPoint | BitPoint) -> list[model.SubmodelElement]:
    quantity = point.register_count
    href = f"/{device.point_unit_id(point)}/{point.address}?quantity={quantity}"
    terms: list[model.SubmodelElement] = [
        _property("href", href, _HCTL + "hasTarget"),
        _property("modv_function", _READ_FUNCTIONS[point.table], _MODBUS + "hasFunction"),
        _property("modv_entity", _ENTITIES[point.table], _MODBUS + "hasEntity"),
        _property(
            "modv_zeroBasedAddressing",
            _bool_text(device.addressing is Addressing.ZERO_BASED),
            _MODBUS + "hasZeroBasedAddressingFlag",
        ),
        _property("modv_pollingTime", _milliseconds(point.poll_interval), _MODBUS + "hasPollingTime"),
        _property("modv_timeout", _milliseconds(device.timeout), _MODBUS + "hasTimeout"),
        _property("modv_type", _PAYLOAD_TYPES[point.data_type], _MODBUS + "hasPayloadDataType"),
    ]
    if isinstance(point, RegisterPoint) and point.data_type is not DataType.BOOL:
        terms.append(
            _property(
                "modv_mostSignificantByte",
                _bool_text(point.byte_order is Order.BIG),
                _MODBUS + "hasMostSignificantByte",
            )
        )
        terms.append(
            _property(
                "modv_mostSignificantWord",
                _bool_text(point.word_order is Order.BIG),
                _MODBUS + "hasMostSignificantWord",
            )
        )
    return terms


def _form(
    device: AnyDevice, point: AnyPoint, security: Sequence[model.ModelReference[Any]]
) -> model.SubmodelElementCollection:
    terms = _aid_of(device.protocol).form_terms(device, point)
    terms.insert(1, _security_list(security))
    return _collection("forms", terms, _TD + "hasForm")


def _schema_type(point: AnyPoint) -> str | None:
    if isinstance(point, BitPoint):
        return "boolean"
    if isinstance(point, RegisterPoint):
        if point.data_type is DataType.BOOL:
            return "boolean"
        if point.data_type is DataType.STRING:
            return "string"
        return "number" if point.data_type.is_float else "integer"
    return None


def _affordance(
    device: AnyDevice,
    point: AnyPoint,
    id_short: str,
    security: Sequence[model.ModelReference[Any]],
) -> model.SubmodelElementCollection:
    elements: list[model.SubmodelElement] = [
        _property("key", point.name, _AID + "key"),
    ]
    schema_type = _schema_type(point)
    if schema_type is not None:
        elements.append(_property("type", schema_type, _RDF_TYPE))
    if point.enum is not None:
        elements.append(
            model.SubmodelElementList(
                "enum",
                model.Property,
                [model.Property(None, datatypes.Integer, number) for number in point.enum],
                value_type_list_element=datatypes.Integer,
                semantic_id=global_reference(_JSON_SCHEMA + "enum"),
            )
        )
    if point.unit is not None:
        elements.append(_property("unit", point.unit, _UNIT_CODE))
    if point.limits is not None and point.target_unit is None:
        elements.append(
            model.Range(
                "min_max",
                datatypes.Double,
                point.limits.min,
                point.limits.max,
                semantic_id=global_reference(_AID + "minMaxRange"),
                supplemental_semantic_id=[
                    global_reference(_JSON_SCHEMA + "minimum"),
                    global_reference(_JSON_SCHEMA + "maximum"),
                ],
            )
        )
    if point.semantic_id is not None:
        elements.append(
            model.ReferenceElement(
                "valueSemantics",
                global_reference(point.semantic_id),
                semantic_id=global_reference(_AID + "valueSemantics"),
            )
        )
    elements.append(_form(device, point, security))
    if isinstance(point, OpcUaMethodPoint):
        semantic_id, supplemental = _TD + "ActionAffordance", [_TD + "name"]
    else:
        semantic_id, supplemental = _AID + "PropertyDefinition", [_TD + "name"]
    affordance = _collection(id_short, elements, semantic_id, supplemental)
    if point.description:
        affordance.description = model.MultiLanguageTextType({"en": point.description})
    return affordance


def _target_reference(point: AnyPoint, resolve: ElementResolver | None) -> model.ModelReference[Any]:
    if resolve is not None:
        element = resolve(point.target.submodel, point.target.path)
        if element is not None:
            return model.ModelReference.from_referable(element)
    segments = parse_id_short_path(point.target.path)
    keys: list[tuple[model.KeyTypes, str]] = [(model.KeyTypes.SUBMODEL, point.target.submodel)]
    last_kind = model.KeyTypes.OPERATION if isinstance(point, OpcUaMethodPoint) else model.KeyTypes.PROPERTY
    for index, segment in enumerate(segments):
        if index == len(segments) - 1:
            key_type = last_kind
        elif isinstance(segments[index + 1], int):
            key_type = model.KeyTypes.SUBMODEL_ELEMENT_LIST
        else:
            key_type = model.KeyTypes.SUBMODEL_ELEMENT
        keys.append((key_type, str(segment)))
    kind: type[model.Referable] = model.Operation if isinstance(point, OpcUaMethodPoint) else model.Property
    return _model_reference(keys, kind)


def _field_difference(
    source: BaseModel, standard: dict[str, Any], leave_out: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The fields of ``source`` that ``standard`` (what the standard terms say) lacks or gets wrong."""
    declared = source.model_dump(mode="json", exclude_defaults=True)
    everything = source.model_dump(mode="json")
    difference = {
        key: value for key, value in declared.items() if key not in leave_out and standard.get(key, _MISSING) != value
    }
    for key, value in standard.items():
        if key not in declared and key not in leave_out and everything.get(key) != value:
            difference[key] = everything.get(key)
    return difference


def _shell_of(device: AnyDevice, shells: Mapping[str, str]) -> str | None:
    return device.shell or shells.get(device.name)


def _group(mapping: MappingFile, device_name: str, shells: Mapping[str, str]) -> list[AnyDevice]:
    try:
        device = mapping.device(device_name)
    except KeyError:
        known = ", ".join(repr(device.name) for device in mapping.devices) or "none"
        raise MappingError(f"no device {device_name!r} in the mapping (devices: {known})") from None
    shell = _shell_of(device, shells)
    if shell is None:
        return [device]
    return [other for other in mapping.devices if _shell_of(other, shells) == shell]


def mapping_to_aid(
    mapping: MappingFile,
    device_name: str,
    *,
    shells: Mapping[str, str] | None = None,
    resolve: ElementResolver | None = None,
) -> tuple[model.Submodel, model.Submodel]:
    """The AID (IDTA 02017-1-1) and AIMC (IDTA 02027-1-0) submodels describing a device's wiring.

    The submodels belong to the device's shell and describe every device of ``mapping`` in the same
    shell, one interface each (just the device when no shell is known); their ids follow
    :func:`aid_submodel_ids`. A device's shell is its ``shell``, else ``shells[device name]`` (the
    hub's default: the shell holding the submodel of the device's first point). ``resolve`` gives
    the target elements so that the AIMC references carry their exact key types; without it,
    intermediate keys are ``SubmodelElement`` (``SubmodelElementList`` before an index) and the last
    ``Property`` (``Operation`` for methods). Raises ``MappingError`` for an unknown device.
    """
    known_shells = shells or {}
    devices = _group(mapping, device_name, known_shells)
    named = mapping.device(device_name)
    aid_id, aimc_id = aid_submodel_ids(named, _shell_of(named, known_shells))
    taken: set[str] = set()
    interfaces: list[model.SubmodelElementCollection] = []
    configurations: list[model.SubmodelElementCollection] = []
    for device in devices:
        place = _InterfacePlace(aid_id, _id_short(device.name, taken, "Interface_"))
        try:
            interface, configuration = _describe_device(device, mapping.points_of(device.name), place, resolve)
        except _Problem as problem:
            raise MappingError(problem.message, f"device {device.name!r}: {problem.path}") from None
        interfaces.append(interface)
        configurations.append(configuration)
    aid = model.Submodel(
        aid_id,
        id_short="AssetInterfacesDescription",
        submodel_element=interfaces,
        semantic_id=global_reference(AID_SUBMODEL_SEMANTIC_ID),
        kind=model.ModellingKind.INSTANCE,
    )
    aimc = model.Submodel(
        aimc_id,
        id_short="AssetInterfacesMappingConfiguration",
        submodel_element=[
            _list(
                "MappingConfigurations",
                model.SubmodelElementCollection,
                configurations,
                _AIMC + "MappingConfigurations",
                _AIMC + "MappingConfiguration",
            )
        ],
        semantic_id=global_reference(AIMC_SUBMODEL_SEMANTIC_ID),
        kind=model.ModellingKind.INSTANCE,
    )
    return aid, aimc


def mapping_to_aids(
    mapping: MappingFile,
    *,
    shells: Mapping[str, str] | None = None,
    resolve: ElementResolver | None = None,
) -> list[tuple[model.Submodel, model.Submodel]]:
    """:func:`mapping_to_aid` for every shell (or shell-less device) of ``mapping``, once each."""
    result: list[tuple[model.Submodel, model.Submodel]] = []
    done: set[str] = set()
    for device in mapping.devices:
        if device.name in done:
            continue
        done.update(member.name for member in _group(mapping, device.name, shells or {}))
        result.append(mapping_to_aid(mapping, device.name, shells=shells, resolve=resolve))
    return result


def _describe_device(
    device: AnyDevice,
    points: Sequence[AnyPoint],
    place: _InterfacePlace,
    resolve: ElementResolver | None,
) -> tuple[model.SubmodelElementCollection, model.SubmodelElementCollection]:
    endpoint = _endpoint_metadata(device, place)
    security = _security_references(endpoint)
    affordances: dict[str, list[model.SubmodelElementCollection]] = {"properties": [], "actions": []}
    taken: dict[str, set[str]] = {"properties": set(), "actions": set()}
    relations: list[model.RelationshipElement] = []
    for point in points:
        kind = "actions" if isinstance(point, OpcUaMethodPoint) else "properties"
        id_short = _id_short(point.name, taken[kind], "Point_")
        affordance = _affordance(device, point, id_short, security)
        affordances[kind].append(affordance)
        source = _model_reference(
            place.keys(
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "InteractionMetadata"),
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, kind),
                (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, id_short),
            ),
            model.SubmodelElementCollection,
        )
        sink = _target_reference(point, resolve)
        relations.append(
            model.RelationshipElement(
                None, source, sink, semantic_id=global_reference(_AIMC + "MappingSourceSinkRelation")
            )
        )
    interaction = _collection(
        "InteractionMetadata",
        [
            _collection(kind, members, _TD + ("PropertyAffordance" if kind == "properties" else "ActionAffordance"))
            for kind, members in affordances.items()
            if members
        ],
        _AID + "InteractionMetadata",
        [_TD + "InteractionAffordance"],
    )
    interface = _collection(
        place.id_short,
        [_property("title", device.name, _TD + "title"), endpoint, interaction],
        _AID + "Interface",
        [protocol_named(device.protocol).aid.semantic_id, "https://www.w3.org/2019/wot/td"],
    )
    context = _read_interface(place.submodel_id, interface)
    device_fields = _field_difference(device, _standard_device(context), frozenset({"password"}))
    if device_fields:
        interface.extension.add(_extension(device_fields))
    for point, relation in zip(points, relations, strict=True):
        kind = "actions" if isinstance(point, OpcUaMethodPoint) else "properties"
        found = context.affordance(relation.first, kind)
        if found is None:
            raise MappingError(f"point {point.name!r}: its AID property could not be found again")
        target = _target_of(relation.second)
        if target is None:
            raise MappingError(f"point {point.name!r}: target reference {relation.second} cannot be read back")
        point_fields = _field_difference(point, _standard_point(context, found, device, target))
        if point_fields:
            found.element.extension.add(_extension(point_fields))
    configuration = model.SubmodelElementCollection(
        None,
        [
            model.ReferenceElement(
                "InterfaceReference",
                _model_reference(place.keys(), model.SubmodelElementCollection),
                semantic_id=global_reference(_AIMC + "InterfaceReference"),
            ),
            _list(
                "MappingSourceSinkRelations",
                model.RelationshipElement,
                relations,
                _AIMC + "MappingSourceSinkRelations",
                _AIMC + "MappingSourceSinkRelation",
            ),
        ],
        semantic_id=global_reference(_AIMC + "MappingConfiguration"),
    )
    return interface, configuration


def _security_references(endpoint: model.SubmodelElementCollection) -> list[model.ModelReference[Any]]:
    security = _child(endpoint, "security")
    if not isinstance(security, model.SubmodelElementList):
        return []
    return [
        element.value
        for element in security.value
        if isinstance(element, model.ReferenceElement) and isinstance(element.value, model.ModelReference)
    ]


# --- reading -------------------------------------------------------------------------------------


class _Problem(Exception):
    """A problem at an idShort path of the submodel being read."""

    def __init__(self, path: str, message: str, submodel: str | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.submodel = submodel


def _child(element: model.SubmodelElement | model.Submodel, id_short: str) -> model.SubmodelElement | None:
    children: Iterable[model.SubmodelElement]
    if isinstance(element, model.Submodel):
        children = element.submodel_element
    elif isinstance(element, model.SubmodelElementCollection | model.SubmodelElementList):
        children = element.value
    else:
        return None
    for child in children:
        if child.id_short == id_short:
            return child
    return None


def _typed_child(
    element: model.SubmodelElement, id_short: str, kind: type[_E], path: str, submodel: str | None = None
) -> _E | None:
    child = _child(element, id_short)
    if child is None:
        return None
    if not isinstance(child, kind):
        raise _Problem(f"{path}.{id_short}", f"is a {type(child).__name__}, expected a {kind.__name__}", submodel)
    return child


def _text(element: model.SubmodelElement, id_short: str, path: str) -> str | None:
    """The value of the Property ``id_short`` of ``element`` as text; ``None`` when absent or empty."""
    child = _typed_child(element, id_short, model.Property, path)
    if child is None or child.value is None:
        return None
    if isinstance(child.value, bool):
        return _bool_text(child.value)
    text = str(child.value).strip()
    return text or None


def _flag(element: model.SubmodelElement, id_short: str, path: str) -> bool | None:
    text = _text(element, id_short, path)
    if text is None:
        return None
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise _Problem(f"{path}.{id_short}", f"{text!r} is neither true nor false")


def _number(element: model.SubmodelElement, id_short: str, path: str) -> float | None:
    text = _text(element, id_short, path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise _Problem(f"{path}.{id_short}", f"{text!r} is not a number") from None


def _extension_fields(element: model.Referable, path: str) -> dict[str, Any]:
    for extension in element.extension:
        if extension.name != EXTENSION_NAME:
            continue
        try:
            fields = json.loads(str(extension.value)) if extension.value is not None else {}
        except json.JSONDecodeError as error:
            raise _Problem(path, f"extension {EXTENSION_NAME} is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise _Problem(path, f"extension {EXTENSION_NAME} is not a JSON object")
        return fields
    return {}


def _description(element: model.Referable) -> str | None:
    if not element.description:
        return None
    return element.description.get("en") or next(iter(element.description.values()))


@dataclass(frozen=True, slots=True)
class _Affordance:
    kind: str
    id_short: str
    element: model.SubmodelElementCollection
    path: str


@dataclass(frozen=True, slots=True)
class _PointForm:
    """The form of a point's affordance as read, and what reading the point's fields from it needs."""

    element: model.SubmodelElementCollection
    view: _InterfaceView
    affordance: _Affordance
    device: Any
    schema_type: str | None
    """The affordance's JSON schema ``type``, if given."""

    @property
    def path(self) -> str:
        return f"{self.affordance.path}.forms"

    def href(self) -> str:
        return _href(self.element, self.path)

    def properties_only(self, protocol: str, what: str) -> None:
        """``_Problem`` for an action: the binding of ``protocol`` describes ``what`` as properties only."""
        if self.affordance.kind == "actions":
            raise _Problem(self.affordance.path, f"{protocol} actions are not supported; describe {what} as properties")


@dataclass(slots=True)
class _InterfaceView:
    """An AID interface as read: where it is, its protocol, endpoint and affordances."""

    submodel_id: str
    element: model.SubmodelElementCollection
    path: str
    protocol: str
    base: str
    endpoint: model.SubmodelElementCollection
    affordances: dict[tuple[str, str], _Affordance]

    def affordance(self, reference: model.Reference | None, kind: str | None = None) -> _Affordance | None:
        """The affordance ``reference`` points at (or into), if it is one of this interface's."""
        if not isinstance(reference, model.ModelReference):
            return None
        keys = [key.value for key in reference.key]
        if len(keys) < 5 or keys[0] != self.submodel_id or keys[1] != self.element.id_short:
            return None
        if keys[2] != "InteractionMetadata" or (kind is not None and keys[3] != kind):
            return None
        return self.affordances.get((keys[3], keys[4]))

    def forms(self) -> Iterator[tuple[model.SubmodelElementCollection, str]]:
        for affordance in self.affordances.values():
            form = _typed_child(affordance.element, "forms", model.SubmodelElementCollection, affordance.path)
            if form is not None:
                yield form, f"{affordance.path}.forms"


def _read_interface(submodel_id: str, element: model.SubmodelElementCollection) -> _InterfaceView:
    path = element.id_short or ""
    endpoint = _typed_child(element, "EndpointMetadata", model.SubmodelElementCollection, path)
    if endpoint is None:
        raise _Problem(path, "has no EndpointMetadata")
    base = _text(endpoint, "base", f"{path}.EndpointMetadata")
    if base is None:
        raise _Problem(f"{path}.EndpointMetadata.base", "is empty; it names the device (modbus+tcp://host:port, ...)")
    scheme = urlsplit(base).scheme.lower()
    protocol = _SCHEMES.get(scheme)
    if protocol is None:
        raise _Problem(
            f"{path}.EndpointMetadata.base",
            f"protocol {scheme or base!r} is not supported ({', '.join(_SCHEMES)})",
        )
    affordances: dict[tuple[str, str], _Affordance] = {}
    interaction = _typed_child(element, "InteractionMetadata", model.SubmodelElementCollection, path)
    if interaction is not None:
        for kind in ("properties", "actions"):
            group = _typed_child(interaction, kind, model.SubmodelElementCollection, f"{path}.InteractionMetadata")
            if group is None:
                continue
            for member in group.value:
                member_path = f"{path}.InteractionMetadata.{kind}.{member.id_short}"
                if not isinstance(member, model.SubmodelElementCollection):
                    raise _Problem(member_path, f"is a {type(member).__name__}, expected a SubmodelElementCollection")
                affordances[(kind, member.id_short or "")] = _Affordance(
                    kind, member.id_short or "", member, member_path
                )
    return _InterfaceView(submodel_id, element, path, protocol, base, endpoint, affordances)


def _host_and_port(base: str, path: str) -> tuple[str, int | None]:
    parts = urlsplit(base)
    try:
        port = parts.port
    except ValueError:
        raise _Problem(path, f"{base!r} has an invalid port") from None
    if not parts.hostname:
        raise _Problem(path, f"{base!r} names no host")
    return parts.hostname, port


def _security_schemes(view: _InterfaceView) -> dict[str, model.SubmodelElementCollection]:
    """The security schemes the interface applies (``security``), by ``scheme`` value."""
    path = f"{view.path}.EndpointMetadata"
    definitions = _typed_child(view.endpoint, "securityDefinitions", model.SubmodelElementCollection, path)
    if definitions is None:
        return {}
    applied = {reference.key[-1].value for reference in _security_references(view.endpoint) if reference.key}
    schemes: dict[str, model.SubmodelElementCollection] = {}
    for definition in definitions.value:
        if not isinstance(definition, model.SubmodelElementCollection) or definition.id_short not in applied:
            continue
        scheme = _text(definition, "scheme", f"{path}.securityDefinitions.{definition.id_short}")
        if scheme is not None:
            schemes[scheme] = definition
    return schemes


def _first_term(view: _InterfaceView, id_short: str) -> tuple[str, str] | None:
    """The first value of a form term in the interface's forms, with its path."""
    for form, path in view.forms():
        value = _text(form, id_short, path)
        if value is not None:
            return value, f"{path}.{id_short}"
    return None


def _standard_device(view: _InterfaceView) -> dict[str, Any]:
    """The device fields the interface's standard terms give."""
    fields: dict[str, Any] = {
        "name": _text(view.element, "title", view.path) or view.element.id_short,
        "protocol": view.protocol,
    }
    _aid_of(view.protocol).device_fields(view, fields)
    return fields


def _modbus_href(href: str, base: str, path: str) -> tuple[int | None, int, int | None]:
    """``(unit id, address, quantity)`` from a Modbus form's href (WoT Modbus binding, URL format)."""
    parts = urlsplit(href)
    if parts.scheme or href.startswith("/"):
        segments = [segment for segment in parts.path.split("/") if segment]
    else:
        base_segments = [segment for segment in urlsplit(base).path.split("/") if segment]
        segments = base_segments + [segment for segment in parts.path.split("/") if segment]
    if not segments or len(segments) > 2 or not all(segment.isdigit() for segment in segments):
        raise _Problem(path, f"{href!r} is not /{{unitID}}/{{address}}?quantity={{n}}")
    unit_id = int(segments[0]) if len(segments) == 2 else None
    address = int(segments[-1])
    quantities = parse_qs(parts.query).get("quantity")
    if quantities is None:
        return unit_id, address, None
    if len(quantities) != 1 or not quantities[0].isdigit():
        raise _Problem(path, f"{href!r}: quantity must be one whole number")
    return unit_id, address, int(quantities[0])


def _payload_type(text: str) -> str:
    return re.split(r"[#:]", text)[-1].lower()


def _modbus_table(form: model.SubmodelElementCollection, path: str) -> tuple[Table, bool]:
    entity = _text(form, "modv_entity", path)
    function = _text(form, "modv_function", path)
    from_entity = _ENTITY_TABLES.get(entity.lower()) if entity is not None else None
    if entity is not None and from_entity is None:
        raise _Problem(
            f"{path}.modv_entity", f"unknown entity {entity!r} (Coil, DiscreteInput, HoldingRegister, InputRegister)"
        )
    from_function = _FUNCTION_TABLES.get(function.lower()) if function is not None else None
    if function is not None and from_function is None:
        raise _Problem(f"{path}.modv_function", f"function {function!r} reads or writes no coil or register")
    if from_entity is not None and from_function is not None and from_entity != from_function[0]:
        raise _Problem(f"{path}.modv_function", f"{function!r} does not fit modv_entity {entity!r}")
    if from_entity is not None:
        return from_entity, from_function[1] if from_function is not None else False
    if from_function is not None:
        return from_function
    raise _Problem(path, "gives neither modv_entity nor modv_function, so the Modbus table is unknown")


def _modbus_point(
    fields: dict[str, Any],
    form: model.SubmodelElementCollection,
    form_path: str,
    view: _InterfaceView,
    device: ModbusTcpDevice,
    schema_type: str | None,
) -> None:
    table, writes = _modbus_table(form, form_path)
    fields["table"] = table.value
    if writes:
        fields["access"] = "read-write"
    href = _text(form, "href", form_path)
    if href is None:
        raise _Problem(f"{form_path}.href", "is empty; it gives the unit id and address")
    unit_id, address, quantity = _modbus_href(href, view.base, f"{form_path}.href")
    fields["address"] = address
    if unit_id is not None and unit_id != device.unit_id:
        fields["unit_id"] = unit_id
    payload = _text(form, "modv_type", form_path)
    data_type: DataType | None = None
    if payload is not None:
        name = _payload_type(payload)
        data_type = _DATA_TYPES.get(name)
        if data_type is None and name in _SIZED_TYPES:
            data_type = _SIZED_TYPES[name].get(quantity or 0)
        if data_type is None:
            raise _Problem(
                f"{form_path}.modv_type", f"payload type {payload!r} with quantity {quantity} is not supported"
            )
    elif table.is_bit_table or schema_type == "boolean":
        data_type = DataType.BOOL
    elif schema_type == "string":
        data_type = DataType.STRING
    elif schema_type in _SIZED_TYPES:
        data_type = _SIZED_TYPES[schema_type].get(quantity or (1 if schema_type == "integer" else 2))
        if data_type is None:
            raise _Problem(f"{form_path}.href", f"quantity {quantity} does not fit a {schema_type} payload")
    if table.is_bit_table:
        if data_type not in (None, DataType.BOOL):
            raise _Problem(f"{form_path}.modv_type", f"a {table.value} holds one bit, not {payload}")
        if quantity not in (None, 1):
            raise _Problem(f"{form_path}.href", f"quantity {quantity}: this hub maps one {table.value} per point")
    else:
        if data_type is None:
            raise _Problem(form_path, "gives neither modv_type nor a property type, so the register layout is unknown")
        fields["data_type"] = data_type.value
        if data_type is DataType.STRING:
            if quantity is not None:
                fields["length"] = quantity
        elif quantity is not None and data_type is not DataType.BOOL and quantity != data_type.register_count:
            raise _Problem(
                f"{form_path}.href",
                f"quantity {quantity} does not fit {data_type.value} "
                f"({data_type.register_count} register{'s' if data_type.register_count > 1 else ''})",
            )
        for term, field in (("modv_mostSignificantByte", "byte_order"), ("modv_mostSignificantWord", "word_order")):
            flag = _flag(form, term, form_path)
            if flag is None:
                flag = _flag(view.endpoint, term, f"{view.path}.EndpointMetadata")
            if flag is False:
                fields[field] = "little"
    polling = _number(form, "modv_pollingTime", form_path)
    if polling is not None:
        fields["poll_interval"] = polling / 1000


def _node_id(href: str, path: str) -> str | None:
    """The NodeId of an OPC UA form's href ``/?id=<NodeId>``; ``None`` for a bare ``/``."""
    query = href.split("?", 1)[1] if "?" in href else ""
    if not query:
        if href.strip("/") == "" or urlsplit(href).scheme == "opc.tcp":
            return None
        raise _Problem(path, f"{href!r} is not /?id=<NodeId>")
    if not query.startswith("id="):
        raise _Problem(path, f"{href!r} is not /?id=<NodeId>")
    return query.removeprefix("id=") or None


def _standard_point(
    view: _InterfaceView, affordance: _Affordance, device: AnyDevice, target: dict[str, str]
) -> dict[str, Any]:
    """The point fields the affordance's standard terms give."""
    element, path = affordance.element, affordance.path
    fields: dict[str, Any] = {
        "name": _text(element, "key", path) or affordance.id_short,
        "device": device.name,
        "target": target,
    }
    semantics = _typed_child(element, "valueSemantics", model.ReferenceElement, path)
    if semantics is not None and semantics.value is not None and semantics.value.key:
        fields["semantic_id"] = semantics.value.key[0].value
    unit = _text(element, "unit", path)
    if unit is not None:
        fields["unit"] = unit
    description = _description(element)
    if description:
        fields["description"] = description
    schema_type = _text(element, "type", path)
    if schema_type is not None and schema_type.lower() in ("object", "array", "null"):
        raise _Problem(f"{path}.type", f"{schema_type!r} values are not supported (numbers, booleans, strings)")
    limits = _typed_child(element, "min_max", model.Range, path)
    if (
        limits is not None
        and schema_type not in ("boolean", "string")
        and (limits.min is not None or limits.max is not None)
    ):
        bounds: dict[str, float] = {}
        for name, bound in (("min", limits.min), ("max", limits.max)):
            if bound is None:
                continue
            try:
                bounds[name] = float(bound)
            except (TypeError, ValueError):
                raise _Problem(f"{path}.min_max", f"{name} {bound!r} is not a number") from None
        fields["limits"] = bounds
    form = _typed_child(element, "forms", model.SubmodelElementCollection, path)
    if form is None:
        raise _Problem(path, "has no forms; they say where the value is read")
    _aid_of(device.protocol).point_fields(fields, _PointForm(form, view, affordance, device, schema_type))
    return fields


def _target_of(reference: model.Reference | None) -> dict[str, str] | None:
    """``{"submodel", "path"}`` of a ModelReference to a submodel element; ``None`` if it is none."""
    if not isinstance(reference, model.ModelReference) or len(reference.key) < 2:
        return None
    first = reference.key[0]
    if first.type is not model.KeyTypes.SUBMODEL:
        return None
    segments: list[Segment] = [int(key.value) if key.value.isdigit() else key.value for key in reference.key[1:]]
    if isinstance(segments[0], int):
        return None
    try:
        path = format_id_short_path(tuple(segments))
        parse_id_short_path(path)
    except InvalidRequestError:
        return None
    return {"submodel": first.value, "path": path}


def _points_to(reference: model.Reference | None, submodel_id: str) -> bool:
    return (
        isinstance(reference, model.ModelReference)
        and bool(reference.key)
        and reference.key[0].type is model.KeyTypes.SUBMODEL
        and reference.key[0].value == submodel_id
    )


@dataclass(frozen=True, slots=True)
class _Wiring:
    interface: _InterfaceView
    relations: list[tuple[_Affordance, dict[str, str]]]


def _wirings(
    aid: model.Submodel, aimc: model.Submodel, view_of: Callable[[str], _InterfaceView | None]
) -> list[_Wiring]:
    """The AIMC configurations that concern ``aid``, in order, with their relations resolved."""
    configurations = _child(aimc, "MappingConfigurations")
    if not isinstance(configurations, model.SubmodelElementList | model.SubmodelElementCollection):
        raise _Problem("MappingConfigurations", "is missing (IDTA 02027-1-0: a SubmodelElementList)", aimc.id)
    wirings: list[_Wiring] = []
    configured: dict[str, str] = {}
    for index, configuration in enumerate(configurations.value):
        path = f"MappingConfigurations[{index}]"
        if not isinstance(configuration, model.SubmodelElementCollection):
            raise _Problem(path, f"is a {type(configuration).__name__}, expected a SubmodelElementCollection", aimc.id)
        reference = _typed_child(configuration, "InterfaceReference", model.ReferenceElement, path, aimc.id)
        if reference is None:
            raise _Problem(path, "has no InterfaceReference", aimc.id)
        value = reference.value
        if (
            not isinstance(value, model.ModelReference)
            or not value.key
            or value.key[0].type is not model.KeyTypes.SUBMODEL
        ):
            raise _Problem(
                f"{path}.InterfaceReference",
                "is not a ModelReference to an interface of an AID submodel (still the template's placeholder?)",
                aimc.id,
            )
        if value.key[0].value != aid.id:
            continue
        view = view_of(value.key[1].value) if len(value.key) == 2 else None
        if view is None:
            raise _Problem(f"{path}.InterfaceReference", f"names no interface of {aid.id}: {value}", aimc.id)
        if view.path in configured:
            raise _Problem(
                f"{path}.InterfaceReference", f"configures {view.path!r} again (also {configured[view.path]})", aimc.id
            )
        configured[view.path] = path
        relations_element = _child(configuration, "MappingSourceSinkRelations")
        if not isinstance(relations_element, model.SubmodelElementList | model.SubmodelElementCollection):
            raise _Problem(path, "has no MappingSourceSinkRelations", aimc.id)
        relations: list[tuple[_Affordance, dict[str, str]]] = []
        seen: dict[tuple[str, str], int] = {}
        for position, relation in enumerate(relations_element.value):
            relation_path = f"{path}.MappingSourceSinkRelations[{position}]"
            if not isinstance(relation, model.RelationshipElement):
                raise _Problem(
                    relation_path, f"is a {type(relation).__name__}, expected a RelationshipElement", aimc.id
                )
            source, sink = relation.first, relation.second
            if not _points_to(source, aid.id) and _points_to(sink, aid.id):
                source, sink = sink, source
            affordance = view.affordance(source)
            if affordance is None:
                raise _Problem(
                    f"{relation_path}.first",
                    f"is not a property of interface {view.path!r} of {aid.id} "
                    "(a ModelReference to InteractionMetadata.properties.<name>)",
                    aimc.id,
                )
            target = _target_of(sink)
            if target is None:
                raise _Problem(
                    f"{relation_path}.second",
                    "is not a ModelReference to a submodel element (Submodel key, then idShorts and list indexes)",
                    aimc.id,
                )
            key = (affordance.kind, affordance.id_short)
            if key in seen:
                raise _Problem(
                    relation_path,
                    f"maps {affordance.path} again (also relation {seen[key]}); one target per datapoint",
                    aimc.id,
                )
            seen[key] = position
            relations.append((affordance, target))
        wirings.append(_Wiring(view, relations))
    if not wirings:
        raise _Problem("MappingConfigurations", f"no configuration wires an interface of {aid.id}", aimc.id)
    return wirings


def _is_interface(element: model.SubmodelElementCollection) -> bool:
    identifier = element.semantic_id.key[0].value if element.semantic_id and element.semantic_id.key else ""
    return identifier.startswith("https://admin-shell.io/idta/AssetInterfacesDescription/") and identifier.endswith(
        "/Interface"
    )


def mapping_from_aid(aid: model.Submodel, aimc: model.Submodel | None) -> MappingFile:
    """Read an AID submodel, with the AIMC submodel that wires it, into a validated mapping file.

    Interfaces are those an AIMC configuration names (configurations for other AID submodels are
    passed over); each becomes a device, each relation a point feeding the relation's sink, in
    relation order. AID properties no relation maps are left out. Targets come only from the AIMC:
    without it, an interface with properties is an error. Standard terms give the fields they can;
    the :data:`EXTENSION_NAME` extension, where present, is laid over them.

    Raises ``MappingError`` naming the submodel, the idShort path and the reason.
    """
    candidates = {
        element.id_short or "": element
        for element in aid.submodel_element
        if isinstance(element, model.SubmodelElementCollection)
        and (_child(element, "EndpointMetadata") is not None or _is_interface(element))
    }
    if not candidates:
        raise MappingError(
            "has no interfaces (SubmodelElementCollections with EndpointMetadata, IDTA 02017-1-1)", f"submodel {aid.id}"
        )
    read: dict[str, _InterfaceView] = {}

    def view_of(id_short: str) -> _InterfaceView | None:
        if id_short not in candidates:
            return None
        if id_short not in read:
            read[id_short] = _read_interface(aid.id, candidates[id_short])
        return read[id_short]

    try:
        if aimc is None:
            wirings: list[_Wiring] = []
            for id_short in candidates:
                view = view_of(id_short)
                assert view is not None
                if view.affordances:
                    first = next(iter(view.affordances.values()))
                    raise _Problem(
                        first.path,
                        "has no target: targets come from the MappingSourceSinkRelations of an AIMC submodel "
                        "(IDTA 02027), and none was given",
                    )
                wirings.append(_Wiring(view, []))
        else:
            wirings = _wirings(aid, aimc, view_of)
        data = _mapping_data(aid, wirings)
    except _Problem as problem:
        location = f"submodel {problem.submodel or aid.id}"
        raise MappingError(problem.message, f"{location}: {problem.path}" if problem.path else location) from None
    return parse_mapping(data, f"submodel {aid.id}")


def _validated_device(fields: dict[str, Any], where: str) -> AnyDevice:
    try:
        kind = protocol_named(str(fields.get("protocol"))).device
    except KeyError:
        raise MappingError(f"unknown protocol {fields.get('protocol')!r}", where) from None
    try:
        return cast(AnyDevice, kind.model_validate(fields))
    except ValidationError as error:
        raise MappingError(format_mapping_errors(error, where, fields)) from None


def _mapping_data(aid: model.Submodel, wirings: Sequence[_Wiring]) -> dict[str, Any]:
    devices: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for wiring in wirings:
        view = wiring.interface
        where = f"submodel {aid.id}: {view.path}"
        fields = _standard_device(view) | _extension_fields(view.element, view.path)
        device = _validated_device(fields, where)
        device_data = device.model_dump(mode="json", exclude_defaults=True)
        devices.append(device_data)
        for affordance, target in wiring.relations:
            point = _standard_point(view, affordance, device, target) | _extension_fields(
                affordance.element, affordance.path
            )
            parse_mapping({"devices": [device_data], "points": [point]}, f"submodel {aid.id}: {affordance.path}")
            points.append(point)
    return {"devices": devices, "points": points}


# --- what each protocol says in an AID -------------------------------------------------------------


def _href(form: model.SubmodelElementCollection, form_path: str) -> str:
    href = _text(form, "href", form_path)
    if href is None:
        raise _Problem(f"{form_path}.href", "is empty")
    return href


def _host_fields(view: _InterfaceView, fields: dict[str, Any]) -> None:
    host, port = _host_and_port(view.base, f"{view.path}.EndpointMetadata.base")
    fields["host"] = host
    if port is not None:
        fields["port"] = port


def _does_not_fit(device: AnyDevice, point: AnyPoint) -> MappingError:
    return MappingError(f"point {point.name!r} does not fit device {device.name!r} ({device.protocol})")


class _ProtocolAid(Protocol):
    """How one protocol is written into an AID interface and read back from one (its binding's terms)."""

    content_type: str

    def base(self, device: Any) -> str:
        """``EndpointMetadata/base``: where the device is."""
        ...

    def security_schemes(self, device: Any) -> list[model.SubmodelElementCollection]:
        """The interface's security schemes (none: ``nosec_sc`` is added)."""
        ...

    def form_terms(self, device: Any, point: AnyPoint) -> list[model.SubmodelElement]:
        """A point's form, ``href`` first; ``MappingError`` for a point of another protocol."""
        ...

    def device_fields(self, view: _InterfaceView, fields: dict[str, Any]) -> None:
        """Add the device fields the interface's standard terms give."""
        ...

    def point_fields(self, fields: dict[str, Any], form: _PointForm) -> None:
        """Add the point fields its form gives."""
        ...


class _ModbusAid:
    """WoT Modbus binding: ``modbus+tcp://host:port``, ``modv_*`` terms, ``/{unitID}/{address}?quantity={n}``."""

    content_type = "application/octet-stream"

    def base(self, device: ModbusTcpDevice) -> str:
        return f"modbus+tcp://{_host(device)}:{device.port}"

    def security_schemes(self, device: ModbusTcpDevice) -> list[model.SubmodelElementCollection]:
        return []

    def form_terms(self, device: ModbusTcpDevice, point: AnyPoint) -> list[model.SubmodelElement]:
        if not isinstance(point, RegisterPoint | BitPoint):
            raise _does_not_fit(device, point)
        return _modbus_form_terms(device, point)

    def device_fields(self, view: _InterfaceView, fields: dict[str, Any]) -> None:
        _host_fields(view, fields)
        addressing: tuple[bool, str] | None = None
        for form, path in view.forms():
            zero_based = _flag(form, "modv_zeroBasedAddressing", path)
            if zero_based is None:
                continue
            if addressing is not None and addressing[0] != zero_based:
                raise _Problem(
                    f"{path}.modv_zeroBasedAddressing",
                    f"differs from {addressing[1]}; this hub takes one addressing per device",
                )
            addressing = (zero_based, f"{path}.modv_zeroBasedAddressing")
        # WoT Modbus binding, default mappings: modv_zeroBasedAddressing is false unless stated.
        fields["addressing"] = "zero-based" if addressing is not None and addressing[0] else "one-based"
        timeout = _first_term(view, "modv_timeout")
        if timeout is not None:
            try:
                fields["timeout"] = float(timeout[0]) / 1000
            except ValueError:
                raise _Problem(timeout[1], f"{timeout[0]!r} is not a number of milliseconds") from None

    def point_fields(self, fields: dict[str, Any], form: _PointForm) -> None:
        form.properties_only("Modbus", "registers")
        schema_type = form.schema_type.lower() if form.schema_type else None
        _modbus_point(fields, form.element, form.path, form.view, form.device, schema_type)


class _OpcUaAid:
    """OPC UA WoT binding: the endpoint URL, ``/?id=<NodeId>`` or ``uav_browsePath``, channel and user security."""

    content_type = "application/octet-stream"

    def base(self, device: OpcUaDevice) -> str:
        return device.endpoint

    def security_schemes(self, device: OpcUaDevice) -> list[model.SubmodelElementCollection]:
        schemes: list[model.SubmodelElementCollection] = []
        if device.security_mode.value != "none":
            schemes.append(
                _collection(
                    "opcua_channel_sc",
                    [
                        _property("scheme", "ua_channelsec", _WOT_SECURITY + "SecurityScheme"),
                        _property(
                            "uav_securityMode",
                            _SECURITY_MODE_TERMS[device.security_mode.value],
                            _OPCUA + "securityMode",
                        ),
                        _property("uav_securityPolicy", device.security_policy.value, _OPCUA + "securityPolicy"),
                    ],
                    _OPCUA + "OPCUASecurityChannelScheme",
                )
            )
        if device.username is not None:
            schemes.append(
                _collection(
                    "opcua_authentication_sc",
                    [
                        _property("scheme", "ua_authentication", _WOT_SECURITY + "SecurityScheme"),
                        _property("uav_userIdentityToken", "username", _OPCUA + "userIdentityToken"),
                    ],
                    _OPCUA + "OPCUASecurityAuthenticationScheme",
                )
            )
        return schemes

    def form_terms(self, device: OpcUaDevice, point: AnyPoint) -> list[model.SubmodelElement]:
        if isinstance(point, OpcUaVariablePoint):
            node_id, browse_path = point.node_id, point.browse_path
        elif isinstance(point, OpcUaMethodPoint):
            node_id, browse_path = point.method_node_id, point.object_browse_path
        else:
            raise _does_not_fit(device, point)
        if node_id is not None:
            return [_property("href", f"/?id={node_id}", _HCTL + "hasTarget")]
        return [
            _property("href", "/", _HCTL + "hasTarget"),
            _property("uav_browsePath", browse_path, _OPCUA + "browsePath"),
        ]

    def device_fields(self, view: _InterfaceView, fields: dict[str, Any]) -> None:
        fields["endpoint"] = view.base
        channel = _security_schemes(view).get("ua_channelsec")
        if channel is None:
            return
        channel_path = f"{view.path}.EndpointMetadata.securityDefinitions.{channel.id_short}"
        mode = _text(channel, "uav_securityMode", channel_path)
        policy = _text(channel, "uav_securityPolicy", channel_path)
        if mode is not None:
            if mode.lower() not in _SECURITY_MODES:
                raise _Problem(f"{channel_path}.uav_securityMode", f"unknown security mode {mode!r}")
            fields["security_mode"] = _SECURITY_MODES[mode.lower()]
        if policy is not None:
            fields["security_policy"] = policy.removeprefix(_SECURITY_POLICY_URI)

    def point_fields(self, fields: dict[str, Any], form: _PointForm) -> None:
        node_id = _node_id(form.href(), f"{form.path}.href")
        browse_path = _text(form.element, "uav_browsePath", form.path)
        method = form.affordance.kind == "actions"
        if node_id is not None:
            fields["method_node_id" if method else "node_id"] = node_id
        if browse_path is not None:
            fields["object_browse_path" if method else "browse_path"] = browse_path


class _MqttAid:
    """WoT MQTT binding: ``mqtt(s)://host:port``, the topic as ``href``, ``mqv_controlPacket`` and ``mqv_qos``."""

    content_type = "application/json"

    def base(self, device: MqttDevice) -> str:
        return f"{'mqtts' if device.tls else 'mqtt'}://{_host(device)}:{device.port}"

    def security_schemes(self, device: MqttDevice) -> list[model.SubmodelElementCollection]:
        if device.username is None:
            return []
        return [
            _collection(
                "basic_sc",
                [_property("scheme", "basic", _WOT_SECURITY + "SecurityScheme")],
                _WOT_SECURITY + "BasicSecurityScheme",
            )
        ]

    def form_terms(self, device: MqttDevice, point: AnyPoint) -> list[model.SubmodelElement]:
        if not isinstance(point, MqttPoint):
            raise _does_not_fit(device, point)
        return [
            _property("href", f"/{point.topic}", _HCTL + "hasTarget"),
            _property("mqv_controlPacket", "subscribe", _MQTT + "ControlPacket"),
            _property("mqv_qos", str(device.qos), _MQTT + "hasQoSFlag"),
        ]

    def device_fields(self, view: _InterfaceView, fields: dict[str, Any]) -> None:
        _host_fields(view, fields)
        if urlsplit(view.base).scheme.lower() == "mqtts":
            fields["tls"] = True
        qos = _first_term(view, "mqv_qos")
        if qos is not None:
            if qos[0] not in ("0", "1", "2"):
                raise _Problem(qos[1], f"QoS {qos[0]!r} is not 0, 1 or 2")
            fields["qos"] = int(qos[0])

    def point_fields(self, fields: dict[str, Any], form: _PointForm) -> None:
        href = form.href()
        form.properties_only("MQTT", "topics")
        parts = urlsplit(href)
        topic = (
            href[1:]
            if not parts.scheme and href.startswith("/")
            else parts.path.removeprefix("/")
            if parts.scheme
            else href
        )
        if not topic:
            raise _Problem(f"{form.path}.href", f"{href!r} names no topic")
        fields["topic"] = topic


class _SparkplugAid(_MqttAid):
    """Sparkplug B on the WoT MQTT binding: ``spbv1.0+mqtt://host:port``, ``/spBv1.0/group/DDATA/node/device#metric``.

    AID 1.0 has no Sparkplug interface: the base URI's scheme tells the hub's Sparkplug interfaces
    from plain MQTT ones, and the metric name rides in the href's fragment (``docs/mapping.md``).
    """

    content_type = "application/protobuf"

    def base(self, device: SparkplugDevice) -> str:  # type: ignore[override]
        host = f"[{device.host}]" if ":" in device.host else device.host
        return f"{'spbv1.0+mqtts' if device.tls else 'spbv1.0+mqtt'}://{host}:{device.port}"

    def form_terms(self, device: SparkplugDevice, point: AnyPoint) -> list[model.SubmodelElement]:  # type: ignore[override]
        if not isinstance(point, SparkplugPoint):
            raise _does_not_fit(device, point)
        if point.sparkplug_device is None:
            topic = f"spBv1.0/{point.group_id}/NDATA/{point.edge_node}"
        else:
            topic = f"spBv1.0/{point.group_id}/DDATA/{point.edge_node}/{point.sparkplug_device}"
        return [
            _property("href", f"/{topic}#{quote(point.metric, safe='')}", _HCTL + "hasTarget"),
            _property("mqv_controlPacket", "subscribe", _MQTT + "ControlPacket"),
            _property("mqv_qos", "0", _MQTT + "hasQoSFlag"),
        ]

    def device_fields(self, view: _InterfaceView, fields: dict[str, Any]) -> None:
        _host_fields(view, fields)
        if urlsplit(view.base).scheme.lower() == "spbv1.0+mqtts":
            fields["tls"] = True

    def point_fields(self, fields: dict[str, Any], form: _PointForm) -> None:
        href = form.href()
        form.properties_only("Sparkplug B", "metrics")
        topic, _, metric = href.removeprefix("/").partition("#")
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[0] != "spBv1.0" or levels[2] not in ("NDATA", "DDATA") or not metric:
            raise _Problem(f"{form.path}.href", f"{href!r} is not /spBv1.0/group/NDATA|DDATA/node[/device]#metric")
        fields["group_id"] = levels[1]
        fields["edge_node"] = levels[3]
        if len(levels) == 5:
            fields["sparkplug_device"] = levels[4]
        fields["metric"] = unquote(metric)


_PROTOCOL_AIDS: dict[str, _ProtocolAid] = {
    "modbus-tcp": _ModbusAid(),
    "opcua": _OpcUaAid(),
    "mqtt": _MqttAid(),
    "sparkplug-b": _SparkplugAid(),
}
"""What each protocol of the registry (``mapping.schema.PROTOCOLS``) says in an AID, by protocol name."""


def _aid_of(protocol: str) -> _ProtocolAid:
    try:
        return _PROTOCOL_AIDS[protocol]
    except KeyError:
        raise MappingError(f"protocol {protocol!r} has no Asset Interfaces Description binding") from None

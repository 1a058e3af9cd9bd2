"""Device mapping files: which device point feeds which submodel element, and how its value is normalised.

A mapping file is YAML with two lists, ``devices`` and ``points``. It is validated once, at load,
by pydantic models (``ARCHITECTURE.md``, house rule 3): unknown keys, unknown devices, points whose
kind does not fit their device's protocol, duplicate names or targets, overlapping register ranges,
writes to read-only tables, addresses past the 16-bit Modbus address space (Modbus Application
Protocol V1.1b3, section 4.3), unknown UNECE units, unit pairs that cannot be converted and
read-write points whose normalisation chain cannot be inverted are rejected with a message naming
file, item and field.

What every point shares is in ``mapping.point_base``; each protocol's device and point models are
in a module of their own (``mapping.protocols.modbus``, ``.opcua``, ``.mqtt``, ``.sparkplug``), and
this module unions them through the protocol registry ``PROTOCOLS`` (their names are re-exported
here). Devices are discriminated by ``protocol`` (``modbus-tcp``, ``opcua``, ``mqtt``,
``sparkplug-b``); points by the keys that say where their value comes from (``table`` for Modbus,
``node_id``/``browse_path`` for OPC UA variables, ``method_node_id`` for OPC UA methods, ``topic``
for MQTT, ``metric`` for Sparkplug B).

Every point's value runs through the same declared chain (``aas_server.mapping.normalize``)::

    decode -> enum map | (scale and offset -> unit -> target_unit -> limits -> filter) -> deadband -> rate limit

and, for a read-write point, back through its inverse.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from aas_server.config import load_yaml
from aas_server.errors import ConfigurationError, MappingError
from aas_server.mapping.point_base import Access as Access
from aas_server.mapping.point_base import Deadband as Deadband
from aas_server.mapping.point_base import FirstOrder as FirstOrder
from aas_server.mapping.point_base import LimitAction as LimitAction
from aas_server.mapping.point_base import Limits as Limits
from aas_server.mapping.point_base import MovingAverage as MovingAverage
from aas_server.mapping.point_base import PointBase, StrictModel, cross_reference_error, format_errors, repeated_names
from aas_server.mapping.point_base import ReconnectBackoff as ReconnectBackoff
from aas_server.mapping.point_base import Target as Target
from aas_server.mapping.protocols.modbus import Addressing as Addressing
from aas_server.mapping.protocols.modbus import BitPoint as BitPoint
from aas_server.mapping.protocols.modbus import DataType as DataType
from aas_server.mapping.protocols.modbus import ModbusPoint as ModbusPoint
from aas_server.mapping.protocols.modbus import ModbusTcpDevice as ModbusTcpDevice
from aas_server.mapping.protocols.modbus import Order as Order
from aas_server.mapping.protocols.modbus import RegisterPoint as RegisterPoint
from aas_server.mapping.protocols.modbus import StringEncoding as StringEncoding
from aas_server.mapping.protocols.modbus import Table as Table
from aas_server.mapping.protocols.mqtt import MqttDevice as MqttDevice
from aas_server.mapping.protocols.mqtt import MqttPoint as MqttPoint
from aas_server.mapping.protocols.mqtt import TimestampFormat as TimestampFormat
from aas_server.mapping.protocols.opcua import Acquisition as Acquisition
from aas_server.mapping.protocols.opcua import OpcUaDevice as OpcUaDevice
from aas_server.mapping.protocols.opcua import OpcUaMethodPoint as OpcUaMethodPoint
from aas_server.mapping.protocols.opcua import OpcUaSecurityMode as OpcUaSecurityMode
from aas_server.mapping.protocols.opcua import OpcUaSecurityPolicy as OpcUaSecurityPolicy
from aas_server.mapping.protocols.opcua import OpcUaVariablePoint as OpcUaVariablePoint
from aas_server.mapping.protocols.sparkplug import SparkplugDevice as SparkplugDevice
from aas_server.mapping.protocols.sparkplug import SparkplugPoint as SparkplugPoint

_CROSS_REFERENCE_ERROR = "mapping_cross_reference"


# --- the protocol registry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointKind:
    """One kind of point: its tag, the keys that give it away in a mapping file, and its models."""

    tag: str
    label: str
    """How the error for a point of no known kind names it (``OPC UA method``)."""
    keys: tuple[str, ...]
    models: tuple[type[PointBase], ...]
    codec: str = "value"
    """How its raw values are decoded and encoded (``mapping.protocol_codecs.CODECS``)."""
    annotation: Any = None
    """What the point union holds for this kind; the one model unless it is itself a union (Modbus)."""

    @property
    def member(self) -> Any:
        return Annotated[self.annotation if self.annotation is not None else self.models[0], Tag(self.tag)]


@dataclass(frozen=True, slots=True)
class AidBinding:
    """How an Asset Interfaces Description (IDTA 02017) names the protocol."""

    semantic_id: str
    """The interface's protocol semanticId (the WoT binding's namespace)."""
    schemes: tuple[str, ...]
    """URI schemes of ``EndpointMetadata/base`` that mean this protocol."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """One southbound protocol: device and point models, connector, codec and AID description.

    ``connector`` names the module (in ``aas_server.connectors``) whose ``create_connector`` and
    ``with_endpoint`` the hub uses; the mapping layer does not import connectors, the hub resolves it
    (``aas_server.connectors.registry``). Each point kind names its value codec
    (``mapping.protocol_codecs``); ``aid`` says how an AID interface names the protocol.
    """

    name: str
    """The devices' ``protocol`` value."""
    device: type[StrictModel]
    points: tuple[PointKind, ...]
    connector: str
    aid: AidBinding

    @property
    def point_models(self) -> tuple[type[PointBase], ...]:
        return tuple(model for kind in self.points for model in kind.models)


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        "modbus-tcp",
        ModbusTcpDevice,
        (PointKind("modbus", "Modbus", ("table",), (RegisterPoint, BitPoint), "modbus", ModbusPoint),),
        "aas_server.connectors.modbus",
        AidBinding("http://www.w3.org/2011/modbus", ("modbus+tcp",)),
    ),
    Protocol(
        "opcua",
        OpcUaDevice,
        (
            PointKind("opcua-variable", "OPC UA", ("node_id", "browse_path"), (OpcUaVariablePoint,)),
            PointKind("opcua-method", "OPC UA method", ("method_node_id", "method_browse_name"), (OpcUaMethodPoint,)),
        ),
        "aas_server.connectors.opcua_client",
        AidBinding("http://opcfoundation.org/UA/WoT-Binding", ("opc.tcp",)),
    ),
    Protocol(
        "mqtt",
        MqttDevice,
        (PointKind("mqtt", "MQTT", ("topic",), (MqttPoint,)),),
        "aas_server.connectors.mqtt",
        AidBinding("http://www.w3.org/2011/mqtt", ("mqtt", "mqtts")),
    ),
    Protocol(
        "sparkplug-b",
        SparkplugDevice,
        (PointKind("sparkplug", "Sparkplug B", ("metric",), (SparkplugPoint,)),),
        "aas_server.connectors.sparkplug",
        # Sparkplug B rides on MQTT; its AID interface is an MQTT one told apart by its scheme
        AidBinding("http://www.w3.org/2011/mqtt", ("spbv1.0+mqtt", "spbv1.0+mqtts")),
    ),
)
"""Every southbound protocol, in the order of the device and point unions. A new protocol adds its
models (its own module) and one entry here; the unions, the point-kind detection, the hub's connector
start-up and the AID protocol names follow from it."""

_PROTOCOL_BY_NAME = {protocol.name: protocol for protocol in PROTOCOLS}
_POINT_KINDS = [kind for protocol in PROTOCOLS for kind in protocol.points]
_TAG_OF_MODEL: dict[type, str] = {model: kind.tag for kind in _POINT_KINDS for model in kind.models}
_PROTOCOL_OF_POINT: dict[type, str] = {model: entry.name for entry in PROTOCOLS for model in entry.point_models}


def protocol_named(name: str) -> Protocol:
    """The registry entry of protocol ``name``; ``KeyError`` for an unknown one."""
    return _PROTOCOL_BY_NAME[name]


def _point_kind(data: Any) -> str | None:
    """Which kind of point ``data`` is, from the keys that say where its value comes from."""
    if isinstance(data, BaseModel):
        return _TAG_OF_MODEL.get(type(data))
    if not isinstance(data, dict):
        return None
    for kind in _POINT_KINDS:
        if any(key in data for key in kind.keys):
            return kind.tag
    return None


def _kind_hint(kind: PointKind) -> str:
    return f"{' or '.join(kind.keys)} ({kind.label})"


_POINT_KIND_ERROR = (
    "cannot tell the kind of point: give "
    + ", ".join(_kind_hint(kind) for kind in _POINT_KINDS[:-1])
    + f" or {_kind_hint(_POINT_KINDS[-1])}"
)

if TYPE_CHECKING:  # the same unions, spelled out for the type checker
    AnyDevice = ModbusTcpDevice | OpcUaDevice | MqttDevice | SparkplugDevice
    AnyPoint = RegisterPoint | BitPoint | OpcUaVariablePoint | OpcUaMethodPoint | MqttPoint | SparkplugPoint
    Device = AnyDevice
    Point = AnyPoint
else:
    AnyDevice = Union[tuple(entry.device for entry in PROTOCOLS)]  # noqa: UP007
    AnyPoint = Union[tuple(model for entry in PROTOCOLS for model in entry.point_models)]  # noqa: UP007
    Device = Annotated[AnyDevice, Field(discriminator="protocol")]
    Point = Annotated[
        Union[tuple(kind.member for kind in _POINT_KINDS)],  # noqa: UP007
        Discriminator(_point_kind, custom_error_type="point_kind", custom_error_message=_POINT_KIND_ERROR),
    ]
"""``Device``: a device, discriminated by its ``protocol``; ``Point``: a mapped point of any protocol."""

_TABLE_TAGS = frozenset(table.value for table in Table) | {kind.tag for kind in _POINT_KINDS}
_ENUM_MEMBER = re.compile(r"<\w+\.\w+: '([^']*)'>")


class MappingFile(StrictModel):
    """A whole mapping file: devices and the points read from (and written to) them."""

    devices: list[Device] = Field(default_factory=list)
    points: list[Point] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_references(self) -> MappingFile:
        problems = _cross_reference_problems(self)
        if problems:
            raise cross_reference_error(_CROSS_REFERENCE_ERROR, problems)
        return self

    def device(self, name: str) -> AnyDevice:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def points_of(self, device_name: str) -> list[AnyPoint]:
        return [point for point in self.points if point.device == device_name]

    def modbus_points_of(self, device_name: str) -> list[RegisterPoint | BitPoint]:
        return [p for p in self.points if p.device == device_name and isinstance(p, RegisterPoint | BitPoint)]

    def point(self, name: str) -> AnyPoint:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


def _cross_reference_problems(mapping: MappingFile) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, _ in repeated_names(device.name for device in mapping.devices):
        name = mapping.devices[index].name
        problems.append((f"devices[{index}] ({name}).name", f"duplicate device name {name!r}"))
    devices = {name: mapping.device(name) for name in dict.fromkeys(device.name for device in mapping.devices)}
    repeated_points = dict(repeated_names(point.name for point in mapping.points))
    targets: dict[tuple[str, str], int] = {}
    ranges: dict[tuple[str, int, Table], list[tuple[int, int, int]]] = defaultdict(list)
    for index, point in enumerate(mapping.points):
        item = f"points[{index}] ({point.name})"
        if index in repeated_points:
            problems.append((f"{item}.name", f"duplicate point name, also points[{repeated_points[index]}]"))
        target_key = (point.target.submodel, point.target.path)
        if target_key in targets:
            other = mapping.points[targets[target_key]].name
            problems.append(
                (
                    f"{item}.target",
                    f"target {point.target.path!r} in {point.target.submodel!r} is fed by {other!r} already",
                )
            )
        targets.setdefault(target_key, index)
        point_device = devices.get(point.device)
        if point_device is None:
            known = ", ".join(repr(name) for name in devices) or "none"
            problems.append((f"{item}.device", f"unknown device {point.device!r} (devices: {known})"))
            continue
        expected_protocol = _PROTOCOL_OF_POINT[type(point)]
        if point_device.protocol != expected_protocol:
            problems.append(
                (
                    f"{item}.device",
                    f"device {point_device.name!r} speaks {point_device.protocol}, "
                    f"but this is a {expected_protocol} point",
                )
            )
            continue
        if not isinstance(point, RegisterPoint | BitPoint) or not isinstance(point_device, ModbusTcpDevice):
            continue
        if point.writable and not point.table.is_writable:
            problems.append((f"{item}.access", f"{point.table.value} points are read-only in Modbus; use access: read"))
        if point_device.addressing is Addressing.ONE_BASED and point.address == 0:
            problems.append(
                (f"{item}.address", f"device {point_device.name!r} uses one-based addressing; 0 is not valid")
            )
            continue
        start = point_device.wire_address(point)
        end = start + point.register_count - 1
        if end > 65535:
            problems.append(
                (
                    f"{item}.address",
                    f"{point.data_type.value} at {point.address} needs {point.register_count} registers "
                    f"and runs past the last Modbus address 65535",
                )
            )
            continue
        if point.register_count > point_device.max_read_count(point.table):
            problems.append(
                (
                    f"{item}.length" if isinstance(point, RegisterPoint) and point.length else f"{item}.data_type",
                    f"needs {point.register_count} registers, more than device {point_device.name!r} reads at once "
                    f"({point_device.max_read_count(point.table)})",
                )
            )
            continue
        if isinstance(point, RegisterPoint) and point.bit is not None:
            continue  # several bit points share one register
        ranges[(point_device.name, point_device.point_unit_id(point), point.table)].append((start, end, index))

    for (device_name, unit_id, table), spans in ranges.items():
        spans.sort()
        for (_, previous_end, previous_index), (start, _end, index) in itertools.pairwise(spans):
            if start <= previous_end:
                other = mapping.points[previous_index].name
                problems.append(
                    (
                        f"points[{index}] ({mapping.points[index].name}).address",
                        f"overlaps {other!r} in {table.value}s of device {device_name!r} unit {unit_id}",
                    )
                )
    return problems


def _is_point_tag(part: str, previous: int | str | None) -> bool:
    return part in _TABLE_TAGS and (isinstance(previous, int) or previous in _TABLE_TAGS)


def _enum_members_plain(item: ErrorDetails, location: str, message: str) -> tuple[str, str]:
    return location, _ENUM_MEMBER.sub(r"'\1'", message)


def format_mapping_errors(error: ValidationError, source: str, data: object) -> str:
    """One line per problem: ``source: points[3] (filler-motor.speed).data_type: message``.

    Like ``aas_server.config.format_validation_error``, plus the item's name, without the
    discriminator tag pydantic puts into the location, and with cross-reference problems expanded.
    """
    return format_errors(
        error,
        source,
        data,
        cross_reference=_CROSS_REFERENCE_ERROR,
        is_tag=_is_point_tag,
        adjust=_enum_members_plain,
    )


def parse_mapping(data: object, source: str = "<mapping>") -> MappingFile:
    """Validate already parsed YAML/JSON data; ``MappingError`` names ``source``, the item and the field."""
    if data is None:
        data = {}
    try:
        return MappingFile.model_validate(data)
    except ValidationError as error:
        raise MappingError(format_mapping_errors(error, source, data)) from None


def load_mapping(path: Path) -> MappingFile:
    """Load and validate a mapping file; every problem raises ``MappingError``.

    YAML syntax errors carry ``file:line:column``; validation errors ``file: item.field: message``.
    """
    try:
        data = load_yaml(path)
    except MappingError:
        raise
    except ConfigurationError as error:
        raise MappingError(error.reason, error.location) from None
    return parse_mapping(data, str(path))


def mapping_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a mapping file, for editors and the ``schema`` command."""
    schema = MappingFile.model_json_schema()
    schema["title"] = "AAS server device mapping file"
    return schema

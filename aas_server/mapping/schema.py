"""Device mapping files: which device point feeds which submodel element, and how its value is normalised.

A mapping file is YAML with two lists, ``devices`` and ``points``. It is validated once, at load,
by the pydantic models below (``ARCHITECTURE.md``, house rule 3): unknown keys, unknown devices,
points whose kind does not fit their device's protocol, duplicate names or targets, overlapping
register ranges, writes to read-only tables, addresses past the 16-bit Modbus address space (Modbus
Application Protocol V1.1b3, section 4.3), unknown UNECE units, unit pairs that cannot be converted
and read-write points whose normalisation chain cannot be inverted are rejected with a message
naming file, item and field.

Devices are discriminated by ``protocol`` (``modbus-tcp``, ``opcua``, ``mqtt``, ``sparkplug-b``); points
by the keys that say where their value comes from (``table`` for Modbus, ``node_id``/``browse_path``
for OPC UA variables, ``method_node_id`` for OPC UA methods, ``topic`` for MQTT, ``metric`` for
Sparkplug B, whose models live in ``mapping.protocols.sparkplug``).

Every point's value runs through the same declared chain (``aas_server.mapping.normalize``)::

    decode -> enum map | (scale and offset -> unit -> target_unit -> limits -> filter) -> deadband -> rate limit

and, for a read-write point, back through its inverse. Register counts are derived from the data
type; the on-the-wire (zero-based) address from the device's stated addressing.

Left out: Modbus RTU/ASCII, BCD, per-point byte swaps other than whole words and bytes.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from aas_server.config import load_yaml
from aas_server.errors import ConfigurationError, MappingError
from aas_server.mapping.json_paths import check_json_path
from aas_server.mapping.point_base import FIELD_ERROR, NAME_PATTERN, PointBase, StrictModel, field_error
from aas_server.mapping.point_base import Access as Access
from aas_server.mapping.point_base import Deadband as Deadband
from aas_server.mapping.point_base import FirstOrder as FirstOrder
from aas_server.mapping.point_base import LimitAction as LimitAction
from aas_server.mapping.point_base import Limits as Limits
from aas_server.mapping.point_base import MovingAverage as MovingAverage
from aas_server.mapping.point_base import ReconnectBackoff as ReconnectBackoff
from aas_server.mapping.point_base import Target as Target
from aas_server.mapping.protocols.sparkplug import SparkplugDevice, SparkplugPoint

_CROSS_REFERENCE_ERROR = "mapping_cross_reference"


class Table(enum.StrEnum):
    """The four Modbus data tables (Modbus Application Protocol V1.1b3, section 4.3)."""

    HOLDING_REGISTER = "holding_register"
    INPUT_REGISTER = "input_register"
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"

    @property
    def is_bit_table(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def is_writable(self) -> bool:
        return self in (Table.HOLDING_REGISTER, Table.COIL)

    @property
    def max_read_count(self) -> int:
        """The most items one read request may ask for (sections 6.1-6.4)."""
        return 2000 if self.is_bit_table else 125


class DataType(enum.StrEnum):
    """How a point's registers encode its value."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"
    """A coil or discrete input; in a register table, the single bit ``bit`` of one register."""
    STRING = "string"
    """``length`` registers of text, two characters per register, NUL- and space-padded at the end."""

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers (or, for ``bool``, bits) one value occupies; strings: see ``length``."""
        return _REGISTER_COUNTS[self]

    @property
    def is_integer(self) -> bool:
        return self not in (DataType.FLOAT32, DataType.FLOAT64, DataType.BOOL, DataType.STRING)

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self.is_float


_REGISTER_COUNTS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
    DataType.STRING: 1,
}


class Order(enum.StrEnum):
    """Order of the words in a multi-register value, or of the two bytes in a register.

    ``big`` puts the most significant part first (the Modbus convention for bytes).
    """

    BIG = "big"
    LITTLE = "little"


class Addressing(enum.StrEnum):
    """Whether the addresses written in the file are zero-based (on the wire) or one-based (manuals)."""

    ZERO_BASED = "zero-based"
    ONE_BASED = "one-based"


class StringEncoding(enum.StrEnum):
    ASCII = "ascii"
    UTF8 = "utf-8"
    LATIN1 = "latin-1"


# --- devices -------------------------------------------------------------------------------------


class ModbusTcpDevice(StrictModel):
    """A Modbus TCP server (a PLC, a gateway with several unit ids behind it) the hub polls as a client."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    protocol: Literal["modbus-tcp"]
    shell: Annotated[str | None, Field(min_length=1)] = None
    """Id of the AAS of the device; it gets the AID and AIMC submodels that describe this wiring.

    Defaults to the shell that holds the submodel of the device's first point.
    """
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    """Default unit identifier (slave id) of the device's points."""
    addressing: Addressing
    """Stated explicitly for every device: an off-by-one here reads the wrong register silently."""
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    """Seconds to wait for a connection or an answer to one request."""
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    """Extra attempts of a request that got no answer before the connection is considered lost."""
    reconnect_backoff: ReconnectBackoff = ReconnectBackoff()
    merge_gap: Annotated[int, Field(ge=0, le=64)] = 8
    """Largest run of unmapped registers read to merge two neighbouring reads into one (x16 for bits)."""
    max_read_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_read_bits: Annotated[int, Field(ge=1, le=2000)] = 2000

    def wire_address(self, point: ModbusPoint) -> int:
        """The zero-based protocol address of ``point`` on this device."""
        return point.address - 1 if self.addressing is Addressing.ONE_BASED else point.address

    def point_unit_id(self, point: ModbusPoint) -> int:
        """The unit identifier ``point`` is read from: its own, else the device's."""
        return self.unit_id if point.unit_id is None else point.unit_id

    def max_read_count(self, table: Table) -> int:
        return self.max_read_bits if table.is_bit_table else self.max_read_registers


class OpcUaSecurityPolicy(enum.StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class OpcUaSecurityMode(enum.StrEnum):
    NONE = "none"
    SIGN = "sign"
    SIGN_AND_ENCRYPT = "sign-and-encrypt"


class Acquisition(enum.StrEnum):
    """How an OPC UA client connector obtains a variable's value."""

    SUBSCRIBE = "subscribe"
    POLL = "poll"


class OpcUaDevice(StrictModel):
    """A (legacy) OPC UA server the hub reads and writes as a client."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    protocol: Literal["opcua"]
    shell: Annotated[str | None, Field(min_length=1)] = None
    """Id of the AAS of the device; it gets the AID and AIMC submodels that describe this wiring.

    Defaults to the shell that holds the submodel of the device's first point.
    """
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://.+")]
    security_policy: OpcUaSecurityPolicy = OpcUaSecurityPolicy.NONE
    security_mode: OpcUaSecurityMode = OpcUaSecurityMode.NONE
    certificate: Path | None = None
    """The hub's client certificate (DER or PEM) for a secure channel; generated under the data dir if absent."""
    private_key: Path | None = None
    server_certificate: Path | None = None
    """The server's certificate, when it cannot be taken from the endpoint description."""
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps secrets out of mapping files)."""
    timeout: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 4.0
    acquisition: Acquisition = Acquisition.SUBSCRIBE
    """Default for the device's variable points."""
    publishing_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 0.1
    """Seconds between notifications of a subscription (OPC 10000-4, 5.13.2)."""
    reconnect_backoff: ReconnectBackoff = ReconnectBackoff()

    @model_validator(mode="after")
    def _consistent_security(self) -> OpcUaDevice:
        plain = self.security_policy is OpcUaSecurityPolicy.NONE
        if plain != (self.security_mode is OpcUaSecurityMode.NONE):
            raise ValueError("security_policy None goes with security_mode none, and only with it")
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        return self


class TimestampFormat(enum.StrEnum):
    ISO8601 = "iso8601"
    EPOCH_SECONDS = "epoch-s"
    EPOCH_MILLISECONDS = "epoch-ms"


class MqttDevice(StrictModel):
    """An MQTT broker the hub subscribes to for device data (MQTT 3.1.1 or 5, QoS 1)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    protocol: Literal["mqtt"]
    shell: Annotated[str | None, Field(min_length=1)] = None
    """Id of the AAS of the device; it gets the AID and AIMC submodels that describe this wiring.

    Defaults to the shell that holds the submodel of the device's first point.
    """
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str | None, Field(max_length=128)] = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
    """Seconds to wait for a connection or a publish acknowledgement (writes)."""
    stale_after: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    """Seconds without a message after which a point's value turns uncertain (last usable value)."""
    reconnect_backoff: ReconnectBackoff = ReconnectBackoff()

    @model_validator(mode="after")
    def _consistent_credentials(self) -> MqttDevice:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls: true")
        return self


def _reject_numeric_normalisation(point: PointBase, data_type: DataType) -> None:
    numeric = [f for f in ("unit", "limits", "deadband", "filter", "enum") if getattr(point, f) is not None]
    if not point.is_identity:
        numeric[:0] = ["scale" if point.scale != 1 else "offset"]
    if numeric:
        field_error(numeric[0], f"a {data_type.value} point takes no {', '.join(numeric)} (they apply to numbers)")


class RegisterPoint(PointBase):
    """A value held in one or more 16-bit registers; engineering value = raw * scale + offset."""

    table: Literal[Table.HOLDING_REGISTER, Table.INPUT_REGISTER]
    unit_id: Annotated[int | None, Field(ge=0, le=255)] = None
    address: Annotated[int, Field(ge=0, le=65535)]
    data_type: DataType
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    bit: Annotated[int | None, Field(ge=0, le=15)] = None
    """For ``data_type: bool``: the bit of the register (0 = least significant)."""
    length: Annotated[int | None, Field(ge=1, le=125)] = None
    """For ``data_type: string``: number of registers (two characters each)."""
    encoding: StringEncoding = StringEncoding.ASCII
    poll_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0

    @property
    def register_count(self) -> int:
        if self.data_type is DataType.STRING:
            return self.length or 1
        return self.data_type.register_count

    @model_validator(mode="after")
    def _data_type_fields(self) -> RegisterPoint:
        if (self.data_type is DataType.BOOL) != (self.bit is not None):
            field_error("bit", "a bool in a register table needs bit (0-15), and bit needs data_type bool")
        if (self.data_type is DataType.STRING) != (self.length is not None):
            field_error("length", "data_type string needs length (registers), and length needs data_type string")
        if not self.data_type.is_numeric:
            _reject_numeric_normalisation(self, self.data_type)
        if self.enum is not None and not self.data_type.is_integer:
            field_error("enum", "enum needs an integer data_type")
        return self


class BitPoint(PointBase):
    """A single coil or discrete input, mapped to a boolean."""

    table: Literal[Table.COIL, Table.DISCRETE_INPUT]
    unit_id: Annotated[int | None, Field(ge=0, le=255)] = None
    address: Annotated[int, Field(ge=0, le=65535)]
    data_type: Literal[DataType.BOOL] = DataType.BOOL
    poll_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0

    @property
    def register_count(self) -> int:
        return 1

    @model_validator(mode="after")
    def _no_numeric_normalisation(self) -> BitPoint:
        _reject_numeric_normalisation(self, self.data_type)
        return self


ModbusPoint = Annotated[RegisterPoint | BitPoint, Field(discriminator="table")]
"""A Modbus point, discriminated by its ``table``."""


class OpcUaVariablePoint(PointBase):
    """A variable of an OPC UA server, by NodeId or by browse path from the Objects folder."""

    node_id: str | None = None
    """NodeId in the string form ``ns=2;s=Boiler.Temperature`` (or ``nsu=<uri>;...``)."""
    browse_path: str | None = None
    """Qualified browse names from Objects, ``/``-separated: ``2:Boiler/2:Temperature`` (``<ns>:`` optional)."""
    acquisition: Acquisition | None = None
    """Defaults to the device's."""
    sampling_interval: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 0.1
    """Seconds; the server samples the variable this often for a subscription (0: as fast as it can)."""
    poll_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0
    """Seconds between reads when the point is polled."""

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaVariablePoint:
        if (self.node_id is None) == (self.browse_path is None):
            field_error("node_id", "give exactly one of node_id or browse_path")
        return self


class OpcUaMethodPoint(PointBase):
    """An OPC UA method that implements the target Operation element (inputs and outputs in order)."""

    object_node_id: str | None = None
    method_node_id: str | None = None
    object_browse_path: str | None = None
    method_browse_name: str | None = None
    """With ``object_browse_path``: the method's browse name (``2:Start``) on that object."""
    timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10.0

    @model_validator(mode="after")
    def _addressed(self) -> OpcUaMethodPoint:
        by_id = self.object_node_id is not None and self.method_node_id is not None
        by_path = self.object_browse_path is not None and self.method_browse_name is not None
        if by_id == by_path:
            field_error(
                "method_node_id", "give object_node_id and method_node_id, or object_browse_path and method_browse_name"
            )
        numeric = [f for f in ("unit", "limits", "deadband", "filter", "enum", "rate_limit") if getattr(self, f)]
        if numeric or not self.is_identity:
            field_error("method_node_id", "a method point takes no normalisation")
        return self


class MqttPoint(PointBase):
    """A value in the JSON payloads of an MQTT topic."""

    topic: Annotated[str, Field(min_length=1, max_length=65535)]
    """Topic filter to subscribe to (``+`` and ``#`` wildcards allowed)."""
    value_path: str = "$"
    """JSONPath (``$.data.temperature``, ``$.values[0]``) of the value in the payload; ``$`` is the payload."""
    timestamp_path: str | None = None
    """JSONPath of the source timestamp in the payload; without it, the time the message arrived."""
    timestamp_format: TimestampFormat = TimestampFormat.ISO8601
    write_topic: str | None = None
    """For read-write points: the topic a new value is published to, as ``{"value": <value>}``."""

    @field_validator("value_path", "timestamp_path")
    @classmethod
    def _valid_json_path(cls, path: str | None) -> str | None:
        if path is not None:
            check_json_path(path)
        return path

    @field_validator("topic")
    @classmethod
    def _valid_topic_filter(cls, topic: str) -> str:
        levels = topic.split("/")
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != len(levels) - 1):
                raise ValueError(f"'#' must be a whole last level of the topic filter (MQTT 3.1.1, 4.7.1.2): {topic!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of the topic filter (MQTT 3.1.1, 4.7.1.3): {topic!r}")
            if "\0" in level:
                raise ValueError(f"a topic filter must not contain NUL (MQTT 3.1.1, 4.7.3): {topic!r}")
        return topic

    @model_validator(mode="after")
    def _write_topic(self) -> MqttPoint:
        if self.writable and self.write_topic is None:
            field_error("write_topic", "a read-write MQTT point needs write_topic")
        if self.write_topic is not None and ("+" in self.write_topic or "#" in self.write_topic):
            field_error("write_topic", "write_topic must not contain wildcards")
        return self


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
            raise PydanticCustomError(
                _CROSS_REFERENCE_ERROR,
                "{message}",
                {"message": "; ".join(f"{where}: {what}" for where, what in problems), "problems": problems},
            )
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
    devices: dict[str, AnyDevice] = {}
    for index, device in enumerate(mapping.devices):
        if device.name in devices:
            problems.append((f"devices[{index}] ({device.name}).name", f"duplicate device name {device.name!r}"))
        devices.setdefault(device.name, device)

    names: dict[str, int] = {}
    targets: dict[tuple[str, str], int] = {}
    ranges: dict[tuple[str, int, Table], list[tuple[int, int, int]]] = defaultdict(list)
    for index, point in enumerate(mapping.points):
        item = f"points[{index}] ({point.name})"
        if point.name in names:
            problems.append((f"{item}.name", f"duplicate point name, also points[{names[point.name]}]"))
        names.setdefault(point.name, index)
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


def _describe_location(location: Sequence[int | str], data: object) -> str:
    parts: list[str] = []
    current: object = data
    previous: int | str | None = None
    for part in location:
        if isinstance(part, str) and part in _TABLE_TAGS and (isinstance(previous, int) or previous in _TABLE_TAGS):
            previous = part
            continue
        if isinstance(part, int):
            text = f"[{part}]"
            if isinstance(current, list) and 0 <= part < len(current):
                current = current[part]
                name = current.get("name") if isinstance(current, dict) else None
                if isinstance(name, str) and name:
                    text += f" ({name})"
            else:
                current = None
            parts.append(text)
        else:
            parts.append(f".{part}" if parts else part)
            current = current.get(part) if isinstance(current, dict) else None
        previous = part
    return "".join(parts) or "(top level)"


def format_mapping_errors(error: ValidationError, source: str, data: object) -> str:
    """One line per problem: ``source: points[3] (filler-motor.speed).data_type: message``.

    Like ``aas_server.config.format_validation_error``, plus the item's name, without the
    discriminator tag pydantic puts into the location, and with cross-reference problems expanded.
    """
    lines: list[str] = []
    for item in error.errors():
        if item["type"] == _CROSS_REFERENCE_ERROR:
            context = item.get("ctx") or {}
            for where, what in context.get("problems", ()):
                lines.append(f"{source}: {where}: {what}")
            continue
        location = _describe_location(item["loc"], data)
        if item["type"] == FIELD_ERROR:
            location += f".{(item.get('ctx') or {}).get('field', '')}"
        message = _ENUM_MEMBER.sub(r"'\1'", item["msg"]).removeprefix("Value error, ")
        lines.append(f"{source}: {location}: {message}")
    return "\n".join(lines)


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

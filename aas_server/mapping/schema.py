"""Device mapping files: which device register feeds which submodel element.

A mapping file is YAML with two lists, ``devices`` and ``points``. It is validated once, at load,
by the pydantic models below (``ARCHITECTURE.md``, house rule 3): unknown keys, unknown devices,
duplicate names or targets, overlapping register ranges, writes to read-only tables, addresses past
the 16-bit Modbus address space (Modbus Application Protocol V1.1b3, section 4.3), unknown UNECE
units and non-invertible read-write points are rejected with a message naming file, item and field.

Register counts are derived from the data type; the on-the-wire (zero-based) address from the
device's stated addressing. Left out: string and bit-field data types, per-point byte swaps other
than whole words and bytes, protocols other than Modbus TCP.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from aas_server.config import load_yaml
from aas_server.errors import ConfigurationError, InvalidRequestError, MappingError
from aas_server.model.paths import parse_id_short_path
from aas_server.model.units import EngineeringUnit, UnitCode, lookup_unit

_CROSS_REFERENCE_ERROR = "mapping_cross_reference"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


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

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers (or, for ``bool``, bits) one value occupies."""
        return _REGISTER_COUNTS[self]

    @property
    def is_integer(self) -> bool:
        return self not in (DataType.FLOAT32, DataType.FLOAT64, DataType.BOOL)

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)


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


class Access(enum.StrEnum):
    READ = "read"
    READ_WRITE = "read-write"


class ReconnectBackoff(_Strict):
    """Capped exponential backoff between connection attempts, in seconds."""

    initial: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.2
    maximum: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 5.0

    @model_validator(mode="after")
    def _maximum_not_below_initial(self) -> ReconnectBackoff:
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum}) must not be below initial ({self.initial})")
        return self


class ModbusTcpDevice(_Strict):
    """A Modbus TCP server (a PLC, a gateway) the hub polls as a client."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN, max_length=128)]
    protocol: Literal["modbus-tcp"]
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

    def wire_address(self, point: Point) -> int:
        """The zero-based protocol address of ``point`` on this device."""
        return point.address - 1 if self.addressing is Addressing.ONE_BASED else point.address

    def point_unit_id(self, point: Point) -> int:
        """The unit identifier ``point`` is read from: its own, else the device's."""
        return self.unit_id if point.unit_id is None else point.unit_id

    def max_read_count(self, table: Table) -> int:
        return self.max_read_bits if table.is_bit_table else self.max_read_registers


Device = ModbusTcpDevice
"""Devices by protocol; becomes a union discriminated by ``protocol`` when a second protocol arrives."""


class Target(_Strict):
    """The submodel element a point feeds: submodel id and idShort path (AAS Part 2, *idShortPath*)."""

    submodel: Annotated[str, Field(min_length=1)]
    path: Annotated[str, Field(min_length=1)]

    @field_validator("path")
    @classmethod
    def _valid_path(cls, path: str) -> str:
        try:
            parse_id_short_path(path)
        except InvalidRequestError as error:
            raise ValueError(str(error)) from None
        return path


class _PointBase(_Strict):
    name: Annotated[str, Field(pattern=_NAME_PATTERN, max_length=256)]
    device: str
    unit_id: Annotated[int | None, Field(ge=0, le=255)] = None
    address: Annotated[int, Field(ge=0, le=65535)]
    unit: UnitCode | None = None
    """UNECE Recommendation 20 code (or its symbol); stored as the code."""
    semantic_id: Annotated[str | None, Field(min_length=1)] = None
    target: Target
    access: Access = Access.READ
    poll_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0
    description: str | None = None

    @property
    def engineering_unit(self) -> EngineeringUnit | None:
        return lookup_unit(self.unit) if self.unit else None

    @property
    def writable(self) -> bool:
        return self.access is Access.READ_WRITE


class RegisterPoint(_PointBase):
    """A value held in one or more 16-bit registers; engineering value = raw * scale + offset."""

    table: Literal[Table.HOLDING_REGISTER, Table.INPUT_REGISTER]
    data_type: Literal[
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.INT64,
        DataType.UINT64,
        DataType.FLOAT32,
        DataType.FLOAT64,
    ]
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    offset: Annotated[float, Field(allow_inf_nan=False)] = 0.0

    @property
    def register_count(self) -> int:
        return self.data_type.register_count

    @property
    def is_identity(self) -> bool:
        """Whether scale and offset leave the raw value unchanged."""
        return self.scale == 1 and self.offset == 0


class BitPoint(_PointBase):
    """A single coil or discrete input, mapped to a boolean."""

    table: Literal[Table.COIL, Table.DISCRETE_INPUT]
    data_type: Literal[DataType.BOOL] = DataType.BOOL

    @property
    def register_count(self) -> int:
        return 1


Point = Annotated[RegisterPoint | BitPoint, Field(discriminator="table")]
"""A mapped point, discriminated by its ``table``."""

_TABLE_TAGS = frozenset(table.value for table in Table)
_ENUM_MEMBER = re.compile(r"<\w+\.\w+: '([^']*)'>")


class MappingFile(_Strict):
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

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def points_of(self, device_name: str) -> list[RegisterPoint | BitPoint]:
        return [point for point in self.points if point.device == device_name]

    def point(self, name: str) -> RegisterPoint | BitPoint:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


def _cross_reference_problems(mapping: MappingFile) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    devices: dict[str, Device] = {}
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
        if point.writable and not point.table.is_writable:
            problems.append((f"{item}.access", f"{point.table.value} points are read-only in Modbus; use access: read"))
        if isinstance(point, RegisterPoint) and point.writable and point.scale == 0:
            problems.append((f"{item}.scale", "scale 0 cannot be inverted, so the point cannot be read-write"))
        point_device = devices.get(point.device)
        if point_device is None:
            known = ", ".join(repr(name) for name in devices) or "none"
            problems.append((f"{item}.device", f"unknown device {point.device!r} (devices: {known})"))
            continue
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
        if isinstance(part, str) and part in _TABLE_TAGS and isinstance(previous, int):
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
        message = _ENUM_MEMBER.sub(r"'\1'", item["msg"])
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

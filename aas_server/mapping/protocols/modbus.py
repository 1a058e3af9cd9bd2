"""Modbus TCP: the device and point models of a mapping file (Modbus Application Protocol V1.1b3).

Register counts are derived from the data type; the on-the-wire (zero-based) address from the
device's stated addressing. Left out: Modbus RTU/ASCII, BCD, per-point byte swaps other than whole
words and bytes.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from aas_server.mapping.point_base import DeviceBase, PointBase, field_error


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


class ModbusTcpDevice(DeviceBase):
    """A Modbus TCP server (a PLC, a gateway with several unit ids behind it) the hub polls as a client."""

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

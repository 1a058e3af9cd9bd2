"""Events that flow through the hub (``ARCHITECTURE.md``, *Data flow*).

All are dataclasses over plain data so that the pure core (mapping engine, projection planning)
can create and compare them without I/O. Timestamps are always timezone-aware UTC. Treat them as
immutable: derive a changed copy with ``dataclasses.replace``. ``RawSample`` and ``ValueChanged``
are not declared frozen only because a frozen dataclass costs five times as much to construct
(1.8 µs against 0.4 µs), and every device sample creates both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC ``datetime``."""
    return datetime.now(UTC)


class Quality(enum.Enum):
    """Quality of a value, in the spirit of OPC UA status code severities."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class QualityReason(enum.Enum):
    """Why a value is not good; maps to a specific OPC UA status code."""

    NONE = "none"
    NO_COMMUNICATION = "no_communication"  # device unreachable -> BadNoCommunication
    COMMUNICATION_ERROR = "communication_error"  # device answered with an error -> BadCommunicationError
    SENSOR_FAILURE = "sensor_failure"
    OUT_OF_RANGE = "out_of_range"
    DECODE_ERROR = "decode_error"  # frame could not be decoded -> BadDecodingError
    LAST_USABLE = "last_usable"  # uncertain: last usable value
    NOT_YET_READ = "not_yet_read"  # no sample since start -> BadWaitingForInitialData


@dataclass(slots=True)
class RawSample:
    """What a connector read for one point: register words, bits, a protocol value, or nothing on failure.

    ``raw`` holds, by protocol: Modbus, the 16-bit register words of a register point or one boolean
    of a coil or discrete input, in the order the device returned them (a tuple); OPC UA, the
    variable's value as asyncua decodes it (``int``, ``float``, ``bool``, ``str``, ``datetime``, a
    list); MQTT, the JSON value found at the point's ``value_path``. On a failed read ``raw`` is
    ``None`` and ``quality`` says why.
    """

    source: str
    point: str
    raw: Any
    source_time: datetime
    quality: Quality = Quality.GOOD
    reason: QualityReason = QualityReason.NONE


RawT = TypeVar("RawT", covariant=True)
"""What a protocol writes to a device point: ``ModbusRaw`` or ``ProtocolValue``."""

ModbusRaw = tuple[int, ...] | tuple[bool]
"""A Modbus write: the register words of a register point, or ``(bool,)`` for a coil or a register bit."""

ProtocolValue = int | float | bool | str | datetime | list[Any]
"""A typed protocol value in the device's unit (OPC UA variables, MQTT and Sparkplug B metrics)."""


@dataclass(frozen=True, slots=True)
class RawWrite(Generic[RawT]):
    """What a connector must write to a device for one point (the inverse of a ``RawSample``), typed per protocol.

    ``RawWrite[ModbusRaw]`` (``ModbusWrite``): register words for a register point, ``(bool,)`` for a
    coil or a register bit (written with a mask write); ``RawWrite[ProtocolValue]`` (``ValueWrite``,
    OPC UA, MQTT, Sparkplug B): the value in the device's unit and type. Each point kind's codec in
    the protocol registry (``mapping.protocol_codecs``) says which.
    """

    source: str
    point: str
    raw: RawT


ModbusWrite = RawWrite[ModbusRaw]
ValueWrite = RawWrite[ProtocolValue]


@dataclass(slots=True)
class ValueChanged:
    """A submodel element's value, time and quality changed.

    ``value`` is the native Python value of the element's ``valueType`` (``float`` for xs:double,
    ``int`` for xs:int, ``bool`` for xs:boolean, ...). When a device fails, ``value`` is the last
    value kept and ``quality`` is bad: a value is never replaced by a fake 0.
    ``origin`` names who caused it: ``device:<name>``, ``rest``, ``opcua``, ``restore``.
    """

    submodel_id: str
    id_short_path: str
    value: Any
    source_time: datetime
    quality: Quality = Quality.GOOD
    reason: QualityReason = QualityReason.NONE
    server_time: datetime = field(default_factory=utc_now)
    origin: str = "device"

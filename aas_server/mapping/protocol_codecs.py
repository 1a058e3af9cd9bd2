"""The value codecs of the protocol registry: a point's raw device value to a number or text, and back.

Each kind of point in ``mapping.schema.PROTOCOLS`` names its codec (``PointKind.codec``); the
mapping engine asks ``codec_of(point)`` for the decoder of the read path and for the raw value of a
write. Pure, like the engine.

- ``modbus``: register words decoded by data type (numbers through ``struct``, strings and register
  bits through ``codecs``), coils and discrete inputs as ``(bool,)``;
- ``value``: the protocol's own value (OPC UA, MQTT). A point with numeric normalisation takes
  numbers, and text holding a decimal number (``"21.5"``); an enum point also takes its names;
  other points take any value unchanged. Writes carry the value in the device's unit.

A new protocol whose values arrive typed (a Sparkplug B metric, say) uses ``value``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from aas_server.errors import TypeMismatchError
from aas_server.mapping import codecs, normalize
from aas_server.mapping.normalize import Chain
from aas_server.mapping.schema import PROTOCOLS, AnyPoint, BitPoint, DataType, Order, RegisterPoint
from aas_server.model.events import ModbusRaw, ProtocolValue

Decoder = Callable[[Any], Any]
"""A point's raw value to the number or text the normalisation chain takes; ``CodecError`` if it cannot."""


# --- decoders -------------------------------------------------------------------------------------


def _number_decoder(point: RegisterPoint) -> Decoder:
    """Register words to a number: ``struct`` formats built once (same results as ``codecs.decode``)."""
    count = point.register_count
    words = struct.Struct(("<" if point.byte_order is Order.LITTLE else ">") + "H" * count)
    number = struct.Struct(">" + codecs.struct_code(point.data_type))
    reverse = point.word_order is Order.LITTLE
    pack, unpack = words.pack, number.unpack

    def decode(raw: Any) -> Any:
        if len(raw) != count:
            raise codecs.CodecError(f"{point.data_type.value} needs {count} registers, got {len(raw)}")
        for word in raw:
            if word.__class__ is bool:
                raise codecs.CodecError("register points need register words, got bits")
        try:
            return unpack(pack(*(raw[::-1] if reverse else raw)))[0]
        except struct.error:
            raise codecs.CodecError(f"register words must be unsigned 16-bit integers, got {raw!r}") from None

    return decode


def _register_decoder(point: RegisterPoint) -> Decoder:
    if point.data_type.is_numeric:
        return _number_decoder(point)

    def decode(raw: Any) -> Any:
        return codecs.decode_register_point(point, raw)

    return decode


def _decode_bit(raw: Any) -> bool:
    if len(raw) != 1 or not isinstance(raw[0], bool | int) or raw[0] not in (0, 1):
        raise codecs.CodecError(f"a bit point needs one bit, got {raw!r}")
    return bool(raw[0])


def _pass(raw: Any) -> Any:
    return raw


def _protocol_value_decoder(chain: Chain) -> Decoder:
    """OPC UA and MQTT values: numbers, and text holding numbers, for numeric and enum points."""
    if not chain.numeric and chain.enum is None:
        return _pass
    names = chain.enum_codes or {}

    def decode(raw: Any) -> Any:
        kind = raw.__class__
        if kind is float or kind is int:
            return raw
        if isinstance(raw, str):
            number = normalize.parse_number(raw)
            if number is not None:
                return number
            if raw in names:
                return raw
            raise codecs.CodecError(f"{raw!r} is not a number")
        if isinstance(raw, bool):
            if chain.enum is None:
                raise codecs.CodecError(f"a numeric point needs a number, got {raw!r}")
            return int(raw)
        if isinstance(raw, int | float):
            return raw
        raise codecs.CodecError(f"a numeric point needs a number, got {type(raw).__name__}")

    return decode


class PointCodec(Protocol):
    """How the raw values of one kind of point are read and written."""

    def decoder(self, point: Any, chain: Chain) -> Decoder:
        """The read path's decoder of ``point``, built once."""
        ...

    def to_raw(self, point: Any, chain: Chain, value: Any) -> ModbusRaw | ProtocolValue:
        """What to write so that the device reads ``value`` (an element value), of the type the protocol's
        ``RawWrite`` carries (``ModbusRaw`` or ``ProtocolValue``); ``TypeMismatchError`` if none."""
        ...


class ModbusCodec:
    """Register words and bits (Modbus Application Protocol V1.1b3, section 4.3)."""

    def decoder(self, point: RegisterPoint | BitPoint, chain: Chain) -> Decoder:
        return _register_decoder(point) if isinstance(point, RegisterPoint) else _decode_bit

    def to_raw(self, point: RegisterPoint | BitPoint, chain: Chain, value: Any) -> ModbusRaw:
        if isinstance(point, BitPoint) or point.data_type is DataType.BOOL:
            if not isinstance(value, bool):
                kind = point.table.value if isinstance(point, BitPoint) else "register bit"
                raise TypeMismatchError(f"point {point.name!r} is a {kind}: needs a boolean, got {value!r}")
            return (value,)
        if point.data_type is DataType.STRING:
            if not isinstance(value, str):
                raise TypeMismatchError(f"point {point.name!r} is a string: needs text, got {value!r}")
        else:
            value = normalize.to_device(chain, value)
        try:
            return codecs.encode_register_point(point, value)
        except codecs.CodecError as error:
            raise TypeMismatchError(f"point {point.name!r}: {error}") from None


class ValueCodec:
    """The protocol's own typed value (OPC UA variables, MQTT JSON values)."""

    def decoder(self, point: AnyPoint, chain: Chain) -> Decoder:
        return _protocol_value_decoder(chain)

    def to_raw(self, point: AnyPoint, chain: Chain, value: Any) -> ProtocolValue:
        raw: ProtocolValue | None = normalize.to_device(chain, value)
        if raw is None:
            raise TypeMismatchError(f"point {point.name!r} needs a value, got None")
        return raw


CODECS: dict[str, PointCodec] = {"modbus": ModbusCodec(), "value": ValueCodec()}
"""The codecs point kinds may name."""

_CODEC_OF_MODEL: dict[type, PointCodec] = {
    model: CODECS[kind.codec] for protocol in PROTOCOLS for kind in protocol.points for model in kind.models
}


def codec_of(point: AnyPoint) -> PointCodec:
    """The codec of ``point``'s kind in the protocol registry."""
    return _CODEC_OF_MODEL[type(point)]

"""Register codecs: numbers to and from 16-bit Modbus register words (pure, ``struct`` based).

Modbus itself transfers each register big-endian (Modbus Application Protocol V1.1b3, section 4.2)
and says nothing about values wider than one register, so devices differ: ``word_order`` says
whether the most significant register comes first (``big``) or last (``little``); ``byte_order``
whether the two bytes inside each register are in the standard order (``big``) or swapped.

Strings take two characters per register (the first in the high byte unless ``byte_order`` is
``little``), padded with NUL or space at the end. A ``bool`` in a register table is one bit of one
register (bit 0 the least significant); it is written with the AND and OR masks of Mask Write
Register (function code 22, section 6.16), or by reading the register and writing it back whole.

Left out: BCD, multi-bit fields inside registers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aas_server.mapping.schema import DataType, Order, RegisterPoint, StringEncoding

_FORMATS = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}

_INTEGER_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}

FLOAT32_MAX = 3.4028234663852886e38
"""Largest finite IEEE 754 binary32 value."""


class CodecError(ValueError):
    """Register words or a value do not fit the data type."""


def integer_range(data_type: DataType) -> tuple[int, int] | None:
    """The inclusive range of an integer data type, ``None`` for floats and bool."""
    return _INTEGER_RANGES.get(data_type)


def struct_code(data_type: DataType) -> str:
    """The ``struct`` format character of a numeric register data type; ``CodecError`` for others."""
    try:
        return _FORMATS[data_type]
    except KeyError:
        raise CodecError(f"{data_type.value} is not a register data type") from None


def _words_from_bytes(data: bytes, word_order: Order, byte_order: Order) -> tuple[int, ...]:
    words = [data[index : index + 2] for index in range(0, len(data), 2)]
    if byte_order is Order.LITTLE:
        words = [word[::-1] for word in words]
    if word_order is Order.LITTLE:
        words.reverse()
    return tuple(int.from_bytes(word, "big") for word in words)


def _bytes_from_words(words: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    ordered = list(reversed(words)) if word_order is Order.LITTLE else list(words)
    parts = []
    for word in ordered:
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise CodecError(f"register word {word!r} is not an unsigned 16-bit integer")
        part = word.to_bytes(2, "big")
        parts.append(part[::-1] if byte_order is Order.LITTLE else part)
    return b"".join(parts)


def decode(
    data_type: DataType,
    words: Sequence[int],
    word_order: Order = Order.BIG,
    byte_order: Order = Order.BIG,
) -> int | float:
    """Decode register words (as the device returned them) into an ``int`` or ``float``.

    Raises ``CodecError`` if the number of words or a word's value does not fit.
    """
    code = struct_code(data_type)
    if len(words) != data_type.register_count:
        raise CodecError(f"{data_type.value} needs {data_type.register_count} registers, got {len(words)}")
    value: int | float = struct.unpack(">" + code, _bytes_from_words(words, word_order, byte_order))[0]
    return value


def encode(
    data_type: DataType,
    value: int | float,
    word_order: Order = Order.BIG,
    byte_order: Order = Order.BIG,
) -> tuple[int, ...]:
    """Encode a value into register words in the device's order.

    Integer types take an ``int`` within their range; float types any finite number within range
    (float32 rounds to the nearest binary32). Raises ``CodecError`` otherwise.
    """
    code = struct_code(data_type)
    bounds = _INTEGER_RANGES.get(data_type)
    if bounds is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"{data_type.value} needs an integer, got {value!r}")
        if not bounds[0] <= value <= bounds[1]:
            raise CodecError(f"{value} is out of range for {data_type.value} [{bounds[0]}, {bounds[1]}]")
    elif data_type is DataType.FLOAT32 and abs(value) > FLOAT32_MAX:
        raise CodecError(f"{value} is out of range for float32 [-{FLOAT32_MAX:.7g}, {FLOAT32_MAX:.7g}]")
    try:
        data = struct.pack(">" + code, value)
    except (struct.error, OverflowError) as error:
        raise CodecError(f"{value!r} cannot be encoded as {data_type.value}: {error}") from None
    return _words_from_bytes(data, word_order, byte_order)


def decode_string(
    words: Sequence[int], encoding: StringEncoding = StringEncoding.ASCII, byte_order: Order = Order.BIG
) -> str:
    """Text from registers, two characters per register, trailing NUL and space padding removed."""
    data = _bytes_from_words(words, Order.BIG, byte_order)
    try:
        text = data.decode(encoding.value)
    except UnicodeDecodeError as error:
        raise CodecError(f"registers are not {encoding.value} text: {error.reason} at byte {error.start}") from None
    return text.rstrip("\x00 ")


def encode_string(
    text: str, length: int, encoding: StringEncoding = StringEncoding.ASCII, byte_order: Order = Order.BIG
) -> tuple[int, ...]:
    """``length`` registers holding ``text``, NUL-padded; ``CodecError`` if it does not fit or encode."""
    try:
        data = text.encode(encoding.value)
    except UnicodeEncodeError as error:
        raise CodecError(f"{text!r} cannot be encoded as {encoding.value}: {error.reason}") from None
    if len(data) > 2 * length:
        raise CodecError(f"{text!r} needs {len(data)} bytes; {length} registers hold {2 * length}")
    return _words_from_bytes(data.ljust(2 * length, b"\x00"), Order.BIG, byte_order)


def decode_register_point(point: RegisterPoint, words: Sequence[int]) -> int | float | bool | str:
    """The value ``point`` holds in ``words`` (exactly its ``register_count`` words), before scaling."""
    if len(words) != point.register_count:
        raise CodecError(f"{point.data_type.value} needs {point.register_count} registers, got {len(words)}")
    if any(isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF for word in words):
        raise CodecError(f"register words must be unsigned 16-bit integers, got {list(words)!r}")
    if point.data_type is DataType.BOOL:
        assert point.bit is not None
        return bool((words[0] >> point.bit) & 1)
    if point.data_type is DataType.STRING:
        return decode_string(words, point.encoding, point.byte_order)
    return decode(point.data_type, words, point.word_order, point.byte_order)


def encode_register_point(point: RegisterPoint, value: int | float | str) -> tuple[int, ...]:
    """Register words for ``value`` (already unscaled); bool bits are written by mask, not by this."""
    if point.data_type is DataType.BOOL:
        raise CodecError("a register bit is written with a mask write, not as whole words")
    if point.data_type is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(f"a string point needs text, got {value!r}")
        return encode_string(value, point.register_count, point.encoding, point.byte_order)
    if isinstance(value, str):
        raise CodecError(f"{point.data_type.value} needs a number, got {value!r}")
    return encode(point.data_type, value, point.word_order, point.byte_order)


def register_bit_masks(bit: int, value: bool) -> tuple[int, int]:
    """The AND and OR masks of a Mask Write Register request (section 6.16) that set ``bit`` to ``value``.

    The device computes ``(current AND and_mask) OR (or_mask AND NOT and_mask)``: every other bit stays.
    """
    if not 0 <= bit <= 15:
        raise CodecError(f"bit {bit} is not a bit of a 16-bit register (0-15)")
    and_mask = 0xFFFF & ~(1 << bit)
    return and_mask, (1 << bit) if value else 0


def apply_register_masks(word: int, and_mask: int, or_mask: int) -> int:
    """What Mask Write Register (section 6.16) leaves in a register that held ``word``."""
    return ((word & and_mask) | (or_mask & ~and_mask)) & 0xFFFF


def with_register_bit(word: int, bit: int, value: bool) -> int:
    """``word`` with ``bit`` set to ``value`` and every other bit unchanged."""
    if isinstance(word, bool) or not 0 <= word <= 0xFFFF:
        raise CodecError(f"register word {word!r} is not an unsigned 16-bit integer")
    return apply_register_masks(word, *register_bit_masks(bit, value))

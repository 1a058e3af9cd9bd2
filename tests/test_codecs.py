"""Golden tables for the register codecs: every data type in every byte and word order, strings and bits.

Each expected register tuple is written out by hand from the value's IEEE 754 / two's complement
bytes (Modbus Application Protocol V1.1b3, section 4.2: a register travels high byte first), so
the tables check the codec rather than restate it.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest

from aas_server.mapping import codecs
from aas_server.mapping.codecs import CodecError, decode_register_point, encode_register_point
from aas_server.mapping.schema import DataType, Order, RegisterPoint, StringEncoding

BIG, LITTLE = Order.BIG, Order.LITTLE

# (data type, value, {(word order, byte order): words})
GOLDEN: list[tuple[DataType, int | float, dict[tuple[Order, Order], tuple[int, ...]]]] = [
    (
        DataType.INT16,
        -12345,  # 0xCFC7
        {(BIG, BIG): (0xCFC7,), (LITTLE, BIG): (0xCFC7,), (BIG, LITTLE): (0xC7CF,), (LITTLE, LITTLE): (0xC7CF,)},
    ),
    (
        DataType.UINT16,
        48879,  # 0xBEEF
        {(BIG, BIG): (0xBEEF,), (LITTLE, BIG): (0xBEEF,), (BIG, LITTLE): (0xEFBE,), (LITTLE, LITTLE): (0xEFBE,)},
    ),
    (
        DataType.INT32,
        -123456789,  # 0xF8A432EB
        {
            (BIG, BIG): (0xF8A4, 0x32EB),
            (LITTLE, BIG): (0x32EB, 0xF8A4),
            (BIG, LITTLE): (0xA4F8, 0xEB32),
            (LITTLE, LITTLE): (0xEB32, 0xA4F8),
        },
    ),
    (
        DataType.UINT32,
        3735928559,  # 0xDEADBEEF
        {
            (BIG, BIG): (0xDEAD, 0xBEEF),
            (LITTLE, BIG): (0xBEEF, 0xDEAD),
            (BIG, LITTLE): (0xADDE, 0xEFBE),
            (LITTLE, LITTLE): (0xEFBE, 0xADDE),
        },
    ),
    (
        DataType.INT64,
        -1234567890123456789,  # 0xEEDDEF0B82167EEB
        {
            (BIG, BIG): (0xEEDD, 0xEF0B, 0x8216, 0x7EEB),
            (LITTLE, BIG): (0x7EEB, 0x8216, 0xEF0B, 0xEEDD),
            (BIG, LITTLE): (0xDDEE, 0x0BEF, 0x1682, 0xEB7E),
            (LITTLE, LITTLE): (0xEB7E, 0x1682, 0x0BEF, 0xDDEE),
        },
    ),
    (
        DataType.UINT64,
        81985529216486895,  # 0x0123456789ABCDEF
        {
            (BIG, BIG): (0x0123, 0x4567, 0x89AB, 0xCDEF),
            (LITTLE, BIG): (0xCDEF, 0x89AB, 0x4567, 0x0123),
            (BIG, LITTLE): (0x2301, 0x6745, 0xAB89, 0xEFCD),
            (LITTLE, LITTLE): (0xEFCD, 0xAB89, 0x6745, 0x2301),
        },
    ),
    (
        DataType.FLOAT32,
        123.456,  # 0x42F6E979, the nearest binary32
        {
            (BIG, BIG): (0x42F6, 0xE979),
            (LITTLE, BIG): (0xE979, 0x42F6),
            (BIG, LITTLE): (0xF642, 0x79E9),
            (LITTLE, LITTLE): (0x79E9, 0xF642),
        },
    ),
    (
        DataType.FLOAT32,
        -1.5,  # 0xBFC00000
        {
            (BIG, BIG): (0xBFC0, 0x0000),
            (LITTLE, BIG): (0x0000, 0xBFC0),
            (BIG, LITTLE): (0xC0BF, 0x0000),
            (LITTLE, LITTLE): (0x0000, 0xC0BF),
        },
    ),
    (
        DataType.FLOAT64,
        math.pi,  # 0x400921FB54442D18
        {
            (BIG, BIG): (0x4009, 0x21FB, 0x5444, 0x2D18),
            (LITTLE, BIG): (0x2D18, 0x5444, 0x21FB, 0x4009),
            (BIG, LITTLE): (0x0940, 0xFB21, 0x4454, 0x182D),
            (LITTLE, LITTLE): (0x182D, 0x4454, 0xFB21, 0x0940),
        },
    ),
    (
        DataType.FLOAT64,
        -1234.5,  # 0xC0934A0000000000
        {
            (BIG, BIG): (0xC093, 0x4A00, 0x0000, 0x0000),
            (LITTLE, BIG): (0x0000, 0x0000, 0x4A00, 0xC093),
            (BIG, LITTLE): (0x93C0, 0x004A, 0x0000, 0x0000),
            (LITTLE, LITTLE): (0x0000, 0x0000, 0x004A, 0x93C0),
        },
    ),
]

GOLDEN_CASES = [
    pytest.param(data_type, value, word_order, byte_order, words, id=f"{data_type}-{value}-w{word_order}-b{byte_order}")
    for data_type, value, table in GOLDEN
    for (word_order, byte_order), words in table.items()
]


def register_point(data_type: DataType | str, **extra: Any) -> RegisterPoint:
    return RegisterPoint.model_validate(
        {
            "name": "p",
            "device": "plc",
            "table": "holding_register",
            "address": 0,
            "data_type": data_type,
            "target": {"submodel": "urn:test:sm", "path": "P"},
            **extra,
        }
    )


def expected_value(data_type: DataType, value: int | float) -> int | float:
    """What the device's registers can hold: float32 values round to the nearest binary32."""
    if data_type is DataType.FLOAT32:
        rounded: float = struct.unpack(">f", struct.pack(">f", value))[0]
        return rounded
    return value


def test_the_golden_table_covers_every_numeric_type_in_all_four_orders() -> None:
    covered = {(data_type, orders) for data_type, _, table in GOLDEN for orders in table}
    numeric = [data_type for data_type in DataType if data_type.is_numeric]
    assert covered == {(data_type, (word, byte)) for data_type in numeric for word in Order for byte in Order}


@pytest.mark.parametrize(("data_type", "value", "word_order", "byte_order", "words"), GOLDEN_CASES)
def test_register_words_decode_to_the_value(
    data_type: DataType, value: int | float, word_order: Order, byte_order: Order, words: tuple[int, ...]
) -> None:
    decoded = codecs.decode(data_type, words, word_order, byte_order)
    assert decoded == expected_value(data_type, value)
    assert type(decoded) is (float if data_type.is_float else int)
    point = register_point(data_type, word_order=word_order.value, byte_order=byte_order.value)
    assert decode_register_point(point, words) == decoded


@pytest.mark.parametrize(("data_type", "value", "word_order", "byte_order", "words"), GOLDEN_CASES)
def test_a_value_encodes_to_the_register_words(
    data_type: DataType, value: int | float, word_order: Order, byte_order: Order, words: tuple[int, ...]
) -> None:
    assert codecs.encode(data_type, value, word_order, byte_order) == words
    point = register_point(data_type, word_order=word_order.value, byte_order=byte_order.value)
    assert encode_register_point(point, value) == words


@pytest.mark.parametrize("data_type", [data_type for data_type in DataType if data_type.is_numeric])
@pytest.mark.parametrize(("word_order", "byte_order"), [(word, byte) for word in Order for byte in Order])
def test_any_register_words_survive_a_decode_encode_round_trip(
    data_type: DataType, word_order: Order, byte_order: Order
) -> None:
    generator = random.Random(f"{data_type}{word_order}{byte_order}")
    for _ in range(300):
        words = tuple(generator.randrange(0x10000) for _ in range(data_type.register_count))
        value = codecs.decode(data_type, words, word_order, byte_order)
        if isinstance(value, float) and math.isnan(value):
            continue  # NaN payloads need not survive a float conversion
        assert codecs.encode(data_type, value, word_order, byte_order) == words


# --- strings -------------------------------------------------------------------------------------

STRINGS = [
    # (encoding, byte order, length, text, words)
    (StringEncoding.ASCII, BIG, 4, "PUMP-01", (0x5055, 0x4D50, 0x2D30, 0x3100)),
    (StringEncoding.ASCII, LITTLE, 4, "PUMP-01", (0x5550, 0x504D, 0x302D, 0x0031)),
    (StringEncoding.UTF8, BIG, 5, "Ölpumpe", (0xC396, 0x6C70, 0x756D, 0x7065, 0x0000)),
    (StringEncoding.UTF8, LITTLE, 5, "Ölpumpe", (0x96C3, 0x706C, 0x6D75, 0x6570, 0x0000)),
    (StringEncoding.LATIN1, BIG, 1, "Öl", (0xD66C,)),
    (StringEncoding.LATIN1, LITTLE, 1, "Öl", (0x6CD6,)),
]


@pytest.mark.parametrize(("encoding", "byte_order", "length", "text", "words"), STRINGS)
def test_string_registers_decode_and_encode(
    encoding: StringEncoding, byte_order: Order, length: int, text: str, words: tuple[int, ...]
) -> None:
    point = register_point("string", length=length, encoding=encoding.value, byte_order=byte_order.value)
    assert point.register_count == length
    assert decode_register_point(point, words) == text
    assert encode_register_point(point, text) == words


def test_strings_lose_their_nul_and_space_padding_and_word_order_does_not_apply() -> None:
    point = register_point("string", length=3, word_order="little")
    assert decode_register_point(point, (0x4142, 0x2020, 0x2000)) == "AB"
    assert decode_register_point(point, (0x4142, 0x4300, 0x0000)) == "ABC"
    assert encode_register_point(point, "AB") == (0x4142, 0x0000, 0x0000)


def test_strings_that_do_not_fit_or_decode_are_codec_errors() -> None:
    point = register_point("string", length=2)
    with pytest.raises(CodecError, match="needs 5 bytes; 2 registers hold 4"):
        encode_register_point(point, "HELLO")
    with pytest.raises(CodecError, match="cannot be encoded as ascii"):
        encode_register_point(point, "Öl")
    with pytest.raises(CodecError, match="not ascii text"):
        decode_register_point(point, (0xC396, 0x0000))
    with pytest.raises(CodecError, match="needs text"):
        encode_register_point(point, 12)
    with pytest.raises(CodecError, match="needs 2 registers, got 1"):
        decode_register_point(point, (0x4142,))


# --- register bits and masks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "bit", "expected"),
    [
        (0x8001, 0, True),
        (0x8001, 15, True),
        (0x8001, 1, False),
        (0x7FFE, 0, False),
        (0x7FFE, 15, False),
        (0x7FFE, 14, True),
        (0x0010, 4, True),
    ],
)
def test_a_register_bit_decodes_to_a_boolean(word: int, bit: int, expected: bool) -> None:
    point = register_point("bool", bit=bit)
    assert decode_register_point(point, (word,)) is expected


def test_register_bits_are_written_by_masks_that_keep_the_other_bits() -> None:
    assert codecs.register_bit_masks(0, True) == (0xFFFE, 0x0001)
    assert codecs.register_bit_masks(0, False) == (0xFFFE, 0x0000)
    assert codecs.register_bit_masks(15, True) == (0x7FFF, 0x8000)
    assert codecs.register_bit_masks(15, False) == (0x7FFF, 0x0000)
    # The worked example of Mask Write Register, Modbus Application Protocol V1.1b3, section 6.16.
    assert codecs.apply_register_masks(0x12, 0xF2, 0x25) == 0x17
    assert codecs.with_register_bit(0x0000, 15, True) == 0x8000
    assert codecs.with_register_bit(0xFFFF, 0, False) == 0xFFFE
    assert codecs.with_register_bit(0x1234, 4, True) == 0x1234
    with pytest.raises(CodecError, match="bit 16"):
        codecs.register_bit_masks(16, True)
    with pytest.raises(CodecError, match="mask write"):
        encode_register_point(register_point("bool", bit=3), 1)


# --- what does not fit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "value", "message"),
    [
        (DataType.INT16, 32768, "out of range for int16"),
        (DataType.UINT16, -1, "out of range for uint16"),
        (DataType.UINT32, 2**32, "out of range for uint32"),
        (DataType.INT64, 2**63, "out of range for int64"),
        (DataType.UINT64, 2**64, "out of range for uint64"),
        (DataType.INT32, 1.5, "needs an integer"),
        (DataType.FLOAT32, 1e39, "out of range for float32"),
    ],
)
def test_values_outside_the_data_type_are_codec_errors(data_type: DataType, value: int | float, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codecs.encode(data_type, value)


def test_words_that_are_not_registers_are_codec_errors() -> None:
    point = register_point("uint32")
    with pytest.raises(CodecError, match="needs 2 registers, got 3"):
        decode_register_point(point, (1, 2, 3))
    with pytest.raises(CodecError, match="unsigned 16-bit"):
        decode_register_point(point, (0x1_0000, 0))
    with pytest.raises(CodecError, match="unsigned 16-bit"):
        decode_register_point(point, (True, 0))
    with pytest.raises(CodecError, match="needs a number"):
        encode_register_point(point, "12")

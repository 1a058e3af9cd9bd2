"""The normalisation chain (units, scale, limits, filters, deadband, rate limit, enums); the engine per point kind."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aas_server.errors import MappingError, NotWritableError, TypeMismatchError
from aas_server.mapping import codecs, normalize
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import DataType, Order, parse_mapping
from aas_server.mapping.units import PINT_EXPRESSIONS, check_conversion, exact_conversion, linear_conversion
from aas_server.model.events import Quality, QualityReason, RawSample, ValueChanged
from aas_server.model.units import UNITS_BY_CODE

START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
OUT_OF_RANGE = QualityReason.OUT_OF_RANGE

DEVICES = [
    {"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1", "addressing": "zero-based"},
    {"name": "ua", "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"},
    {"name": "broker", "protocol": "mqtt", "host": "127.0.0.1"},
]


def mapping_of(*points: dict[str, Any]) -> dict[str, Any]:
    return {
        "devices": DEVICES,
        "points": [{"target": {"submodel": "urn:test:sm", "path": point["name"].title()}, **point} for point in points],
    }


def engine_of(*points: dict[str, Any]) -> MappingEngine:
    return MappingEngine(parse_mapping(mapping_of(*points), "line1.yaml"))


def register(name: str = "x", data_type: str = "float32", address: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "device": "plc",
        "table": "holding_register",
        "address": address,
        "data_type": data_type,
        **fields,
    }


def variable(name: str = "x", **fields: Any) -> dict[str, Any]:
    return {"name": name, "device": "ua", "node_id": f"ns=2;s={name}", **fields}


def topic(name: str = "x", **fields: Any) -> dict[str, Any]:
    return {"name": name, "device": "broker", "topic": f"plant/{name}", "value_path": "$.value", **fields}


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def sample(point: str, raw: Any, seconds: float = 0.0, **kwargs: Any) -> RawSample:
    return RawSample("dev", point, raw, at(seconds), **kwargs)


def seen(change: ValueChanged | None) -> tuple[Any, Quality, QualityReason] | None:
    return None if change is None else (change.value, change.quality, change.reason)


# --- units ----------------------------------------------------------------------------------------

CONVERSIONS = [
    # source unit, target unit, source value, target value
    ("FAH", "CEL", 32, 0),
    ("FAH", "CEL", 212, 100),
    ("FAH", "CEL", -40, -40),
    ("CEL", "FAH", 100, 212),
    ("BAR", "KPA", 1, 100),
    ("MBR", "KPA", 1013.25, 101.325),
    ("RPM", "C97", 60, 1),
    ("RPM", "HTZ", 90, 1.5),
    ("RPS", "RPM", 1, 60),
    ("KEL", "CEL", 273.15, 0),
    ("KEL", "CEL", 300, 26.85),
    ("CEL", "KEL", -273.15, 0),
    ("KWH", "MWH", 1500, 1.5),
    ("P1", "C62", 50, 0.5),
    ("MLT", "LTR", 250, 0.25),
]


@pytest.mark.parametrize(("source", "target", "source_value", "target_value"), CONVERSIONS)
def test_unit_conversions_and_their_inverse(source: str, target: str, source_value: float, target_value: float) -> None:
    step = normalize.Affine.of(*exact_conversion(source, target))
    assert step(source_value) == target_value
    inverse = step.inverse()
    assert inverse is not None
    assert inverse(target_value) == pytest.approx(source_value, rel=1e-15, abs=1e-12)
    factor, offset = linear_conversion(source, target)
    assert source_value * factor + offset == pytest.approx(target_value, rel=1e-12, abs=1e-12)


def test_affine_units_keep_their_offset() -> None:
    assert linear_conversion("FAH", "CEL") == (5 / 9, -160 / 9)
    assert linear_conversion("KEL", "CEL") == (1.0, -273.15)
    assert linear_conversion("RPM", "C97") == (1 / 60, 0.0)
    assert linear_conversion("PS", "KPA")[0] == pytest.approx(6.894757293168361)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("RPM", "AMP", "cannot convert 'RPM' (revolutions per minute) to 'AMP' (ampere): different dimensions"),
        ("H87", "P1", "cannot convert 'H87' (piece) to 'P1' (percent): different dimensions"),
        ("E32", "HTZ", "cannot convert 'E32' (piece per hour) to 'HTZ' (hertz): different dimensions"),
        ("NU", "KWH", "different quantities of the same dimensions (torque and energy)"),
        ("CEL", "FURLONG", "unknown engineering unit 'FURLONG'"),
    ],
)
def test_units_that_cannot_be_converted_are_named(source: str, target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_conversion(source, target)


def test_every_unece_unit_has_a_pint_expression() -> None:
    assert set(PINT_EXPRESSIONS) == set(UNITS_BY_CODE)
    for code in UNITS_BY_CODE:
        check_conversion(code, code)
        assert linear_conversion(code, code) == (1.0, 0.0)


# --- scale, offset, limits ------------------------------------------------------------------------

SCALINGS = [
    # data type, scale, offset, unit, target unit, device number, element value
    ("int16", 0.1, 0.0, None, None, 235, 23.5),
    ("int16", 0.1, 0.0, None, None, -10, -1.0),
    ("uint16", 0.1, 100.0, "MLT", None, 4000, 500.0),
    ("int16", 0.1, 0.0, "FAH", "CEL", 2120, 100.0),
    ("int16", 1.0, -32.0, "FAH", "CEL", 244, 100.0),
    ("uint16", 0.1, 0.0, "BAR", "KPA", 250, 2500.0),
    ("int32", 1.0, 0.0, "RPM", "C97", 1500, 25.0),
    ("uint16", 0.1, 0.0, "KEL", "CEL", 3000, 26.85),
    ("float32", 2.0, 1.0, None, None, 1.5, 4.0),
]


@pytest.mark.parametrize(
    ("data_type", "scale", "offset", "unit", "target_unit", "device_number", "element_value"), SCALINGS
)
def test_scale_offset_and_units_both_ways(
    data_type: str,
    scale: float,
    offset: float,
    unit: str | None,
    target_unit: str | None,
    device_number: float,
    element_value: float,
) -> None:
    fields: dict[str, Any] = {"scale": scale, "offset": offset, "access": "read-write"}
    if unit is not None:
        fields["unit"] = unit
    if target_unit is not None:
        fields["target_unit"] = target_unit
    engine = engine_of(register(data_type=data_type, **fields))
    words = codecs.encode(DataType(data_type), device_number)
    change = engine.on_sample(sample("x", words))
    assert change is not None
    assert change.value == element_value
    assert isinstance(change.value, float)
    assert engine.to_raw("x", element_value).raw == words


def test_steps_that_cancel_out_leave_integers_alone() -> None:
    engine = engine_of(register(data_type="uint64", scale=0.01, unit="BAR", target_unit="KPA"))
    change = engine.on_sample(sample("x", codecs.encode(DataType.UINT64, 2**64 - 1)))
    assert change is not None
    assert (change.value, type(change.value)) == (2**64 - 1, int)


def test_limits_clamp_with_uncertain_quality() -> None:
    engine = engine_of(variable(limits={"min": 0, "max": 100}))
    assert seen(engine.on_sample(sample("x", 50.5))) == (50.5, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", 120.0))) == (100.0, UNCERTAIN, OUT_OF_RANGE)
    clamped_int = engine.on_sample(sample("x", -3))
    assert clamped_int is not None
    assert (clamped_int.value, type(clamped_int.value), clamped_int.quality) == (0, int, UNCERTAIN)


def test_limits_bad_drop_the_value() -> None:
    engine = engine_of(variable(limits={"min": 0, "max": 100, "action": "bad"}))
    assert seen(engine.on_sample(sample("x", 101.0))) == (None, BAD, OUT_OF_RANGE)
    assert seen(engine.on_sample(sample("x", 99.0))) == (99.0, GOOD, QualityReason.NONE)


def test_writes_outside_the_limits_are_refused_naming_range_and_unit() -> None:
    engine = engine_of(variable(unit="CEL", limits={"min": -20, "max": 150}, access="read-write"))
    with pytest.raises(TypeMismatchError, match=r"'x': 151\.0 is outside the limits \[-20, 150\] CEL"):
        engine.to_raw("x", 151.0)
    only_max = engine_of(variable(limits={"max": 10}, access="read-write"))
    with pytest.raises(TypeMismatchError, match=r"outside the limits \[-inf, 10\]"):
        only_max.to_raw("x", 11)
    assert engine.to_raw("x", 150).raw == 150


# --- deadband and rate limit ----------------------------------------------------------------------


def test_absolute_deadband_compares_with_the_last_published_value() -> None:
    engine = engine_of(variable(deadband={"absolute": 0.5}))
    published = [seen(engine.on_sample(sample("x", value, index))) for index, value in enumerate([10, 10.3, 10.6])]
    assert published == [(10, GOOD, QualityReason.NONE), None, (10.6, GOOD, QualityReason.NONE)]
    assert engine.on_sample(sample("x", 11.1, 4)) is None  # exactly the deadband from 10.6: held back
    assert seen(engine.on_sample(sample("x", 11.2, 5))) == (11.2, GOOD, QualityReason.NONE)


def test_percent_deadband_uses_the_span_of_the_limits() -> None:
    engine = engine_of(variable(limits={"min": 0, "max": 200}, deadband={"percent": 1}))
    assert engine.chain("x").deadband == 2.0
    assert engine.on_sample(sample("x", 100.0)) is not None
    assert engine.on_sample(sample("x", 101.9)) is None
    assert engine.on_sample(sample("x", 98.1)) is None
    assert seen(engine.on_sample(sample("x", 102.5))) == (102.5, GOOD, QualityReason.NONE)


def test_a_change_of_quality_passes_deadband_and_rate_limit() -> None:
    engine = engine_of(variable(deadband={"absolute": 5}, rate_limit=10))
    assert engine.on_sample(sample("x", 20.0, 0)) is not None
    lost = engine.on_sample(sample("x", None, 1, quality=BAD, reason=QualityReason.NO_COMMUNICATION))
    assert seen(lost) == (None, BAD, QualityReason.NO_COMMUNICATION)
    assert engine.on_sample(sample("x", None, 2, quality=BAD, reason=QualityReason.NO_COMMUNICATION)) is None
    assert seen(engine.on_sample(sample("x", 20.0, 3))) == (20.0, GOOD, QualityReason.NONE)
    uncertain = engine.on_sample(sample("x", 20.1, 4, quality=UNCERTAIN, reason=QualityReason.LAST_USABLE))
    assert seen(uncertain) == (20.1, UNCERTAIN, QualityReason.LAST_USABLE)


def test_rate_limit_by_source_time() -> None:
    engine = engine_of(topic(rate_limit=1.0))
    times = [0.0, 0.4, 0.99, 1.0, 1.5, 2.2]
    published = [engine.on_sample(sample("x", index, seconds)) for index, seconds in enumerate(times)]
    assert [change.value for change in published if change is not None] == [0, 3, 5]


# --- filters --------------------------------------------------------------------------------------


def test_moving_average_over_the_last_window() -> None:
    engine = engine_of(variable(filter={"kind": "moving-average", "window": 3}))
    values = [3.0, 6.0, 9.0, 12.0, 0.0, 3.0, 3.0]
    averages = [engine.on_sample(sample("x", value, index)) for index, value in enumerate(values)]
    assert [change.value for change in averages if change is not None] == pytest.approx(
        [3.0, 4.5, 6.0, 9.0, 7.0, 5.0, 2.0]
    )


def test_moving_average_does_not_drift_over_many_samples() -> None:
    state = normalize.PointState()
    for index in range(100_000):
        normalize.moving_average(state, 7, 0.1 * (index % 13) + 1e6)
    assert state.window_total / len(state.window) == pytest.approx(math.fsum(state.window) / 7, rel=1e-15)


def test_first_order_filter_follows_a_step_with_its_time_constant() -> None:
    engine = engine_of(variable(filter={"kind": "first-order", "time_constant": 2.0}))
    first = engine.on_sample(sample("x", 0.0, 0))
    assert first is not None
    assert first.value == 0.0
    step = [engine.on_sample(sample("x", 10.0, seconds)) for seconds in (1.0, 2.0, 4.0)]
    expected = 10 * (1 - math.exp(-0.5))
    expected = expected + (10 - expected) * (1 - math.exp(-0.5))
    at_four = expected + (10 - expected) * (1 - math.exp(-1.0))
    assert [change.value for change in step if change is not None] == pytest.approx(
        [10 * (1 - math.exp(-0.5)), expected, at_four], rel=1e-12
    )
    after_two_time_constants = 10 * (1 - math.exp(-2.0))
    assert at_four == pytest.approx(after_two_time_constants, rel=1e-12)


def test_first_order_filter_ignores_samples_that_are_not_later() -> None:
    state = normalize.PointState()
    assert normalize.first_order(state, 1.0, 5.0, at(1)) == 5.0
    assert normalize.first_order(state, 1.0, 100.0, at(1)) == 5.0
    assert normalize.first_order(state, 1.0, 100.0, at(0.5)) == 5.0


# --- enums ----------------------------------------------------------------------------------------


def test_enum_maps_device_numbers_to_names_and_back() -> None:
    engine = engine_of(register(data_type="uint16", enum={0: "stopped", 1: "running", 2: "fault"}, access="read-write"))
    assert seen(engine.on_sample(sample("x", (1,)))) == ("running", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", (7,)))) == (None, BAD, OUT_OF_RANGE)
    assert engine.to_raw("x", "fault").raw == (2,)
    with pytest.raises(TypeMismatchError, match="'paused' is not one of 'stopped', 'running', 'fault'"):
        engine.to_raw("x", "paused")
    with pytest.raises(TypeMismatchError, match="is not one of"):
        engine.to_raw("x", 1)


def test_enum_over_mqtt_takes_numbers_numeric_text_and_names() -> None:
    engine = engine_of(topic(enum={0: "off", 1: "on"}))
    assert seen(engine.on_sample(sample("x", 1))) == ("on", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", "0"))) == ("off", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", "on"))) == ("on", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", "dimmed"))) == (None, BAD, QualityReason.DECODE_ERROR)
    assert seen(engine.on_sample(sample("x", 1.5))) == (None, BAD, OUT_OF_RANGE)


# --- integer data types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "value", "message"),
    [
        ({"data_type": "int16"}, 2.5, r"resolution 1 \(offset 0\)"),
        ({"data_type": "uint16", "scale": 0.1, "unit": "MLT"}, 50.05, r"resolution 0\.1 MLT"),
        (
            {"data_type": "int16", "scale": 0.1, "unit": "FAH", "target_unit": "CEL"},
            10.01,
            r"resolution 0\.0555556 CEL",
        ),
        ({"data_type": "int16", "scale": 0.1}, 3276.8, r"out of range \[-3276\.8, 3276\.7\]"),
        ({"data_type": "uint32"}, -1, r"out of range \[0, 4\.29497e\+09\] \(uint32 raw range \[0, 4294967295\]\)"),
    ],
)
def test_integer_writes_that_would_be_truncated_or_overflow_are_refused(
    fields: dict[str, Any], value: float, message: str
) -> None:
    engine = engine_of(register(access="read-write", **fields))
    with pytest.raises(TypeMismatchError, match=message):
        engine.to_raw("x", value)


@pytest.mark.parametrize(
    ("data_type", "value"),
    [("int64", -(2**63)), ("int64", 2**63 - 1), ("int64", 2**53 + 1), ("uint64", 2**64 - 1), ("uint64", 2**53 + 1)],
)
def test_64_bit_integers_stay_exact_both_ways(data_type: str, value: int) -> None:
    engine = engine_of(register(data_type=data_type, access="read-write"))
    words = engine.to_raw("x", value).raw
    assert words == codecs.encode(DataType(data_type), value)
    change = engine.on_sample(sample("x", words))
    assert change is not None
    assert (change.value, type(change.value)) == (value, int)


def test_integers_stay_int_through_identity_and_limits_on_protocol_values() -> None:
    engine = engine_of(variable(limits={"min": 0, "max": 2**64}), topic("y"))
    change = engine.on_sample(sample("x", 2**63 + 3))
    assert change is not None
    assert (change.value, type(change.value)) == (2**63 + 3, int)
    other = engine.on_sample(sample("y", 2**60 + 1))
    assert other is not None
    assert other.value == 2**60 + 1


# --- the fast register decoder agrees with the codecs ---------------------------------------------

REGISTER_VALUES = [
    ("int16", -1),
    ("uint16", 65535),
    ("int32", -2),
    ("uint32", 70000),
    ("int64", -(2**62) - 5),
    ("uint64", 0x0102030405060708),
    ("float32", -2.5),
    ("float64", 1.0 / 3.0),
]


@pytest.mark.parametrize(("data_type", "value"), REGISTER_VALUES)
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_engine_decodes_registers_like_the_codecs(
    data_type: str, value: float, word_order: str, byte_order: str
) -> None:
    engine = engine_of(register(data_type=data_type, word_order=word_order, byte_order=byte_order))
    words = codecs.encode(DataType(data_type), value, Order(word_order), Order(byte_order))
    change = engine.on_sample(sample("x", words))
    assert change is not None
    assert change.value == codecs.decode(DataType(data_type), words, Order(word_order), Order(byte_order))


@pytest.mark.parametrize("raw", [(1,), (1, 2, 3), (70000, 0), (-1, 0), (1.5, 0), (True, False), "ab", 7])
def test_engine_reports_frames_that_do_not_fit_as_decode_errors(raw: Any) -> None:
    engine = engine_of(register(data_type="float32"))
    assert seen(engine.on_sample(sample("x", raw))) == (None, BAD, QualityReason.DECODE_ERROR)


# --- the engine per point kind --------------------------------------------------------------------


def test_opcua_variable_values_through_the_chain() -> None:
    engine = engine_of(
        variable("temperature", unit="FAH", target_unit="CEL", access="read-write"),
        variable("name"),
        variable("count"),
    )
    assert seen(engine.on_sample(sample("temperature", 212.0))) == (100.0, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("temperature", 50))) == (10.0, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("temperature", True))) == (None, BAD, QualityReason.DECODE_ERROR)
    assert seen(engine.on_sample(sample("temperature", math.nan))) == (None, BAD, QualityReason.SENSOR_FAILURE)
    assert seen(engine.on_sample(sample("name", "Filler 1"))) == ("Filler 1", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("name", [1, 2]))) == ([1, 2], GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("count", math.inf))) == (None, BAD, QualityReason.SENSOR_FAILURE)
    write = engine.to_raw("temperature", 100.0)
    assert (write.source, write.point, write.raw) == ("ua", "temperature", 212.0)
    assert type(engine.to_raw("temperature", 0).raw) is float


def test_opcua_writes_keep_integers_without_conversion() -> None:
    engine = engine_of(variable("limit", access="read-write"), variable("scaled", scale=0.5, access="read-write"))
    assert (engine.to_raw("limit", 7).raw, type(engine.to_raw("limit", 7).raw)) == (7, int)
    assert engine.to_raw("limit", "on").raw == "on"
    assert (engine.to_raw("scaled", 7).raw, type(engine.to_raw("scaled", 7).raw)) == (14.0, float)


def test_opcua_methods_are_not_written() -> None:
    engine = engine_of(
        {"name": "start", "device": "ua", "object_node_id": "ns=2;s=Line", "method_node_id": "ns=2;s=Line.Start"}
    )
    with pytest.raises(NotWritableError, match="'start' is an OPC UA method: it is called, not written"):
        engine.to_raw("start", True)


def test_mqtt_json_values_and_text_holding_numbers() -> None:
    engine = engine_of(
        topic("temperature", unit="CEL", deadband={"absolute": 0.2}),
        topic("pressure", unit="BAR"),
        topic("state"),
        topic("setpoint", scale=0.1, access="read-write", write_topic="plant/setpoint/set"),
    )
    assert seen(engine.on_sample(sample("temperature", "21.5"))) == (21.5, GOOD, QualityReason.NONE)
    assert engine.on_sample(sample("temperature", "21.6", 1)) is None
    assert seen(engine.on_sample(sample("temperature", 22))) == (22, GOOD, QualityReason.NONE)
    for undecodable in ("warm", "", "1,5", "0x10", {"value": 1}, [1.5], True):
        change = seen(engine.on_sample(sample("pressure", undecodable)))
        assert change == (None, BAD, QualityReason.DECODE_ERROR), undecodable
    assert seen(engine.on_sample(sample("pressure", " 1.25 "))) == (1.25, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("pressure", None))) == (None, BAD, QualityReason.NO_COMMUNICATION)
    assert seen(engine.on_sample(sample("state", "running"))) == ("running", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("state", False))) == (False, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("setpoint", "-3e2"))) == (-30.0, GOOD, QualityReason.NONE)
    write = engine.to_raw("setpoint", 12.5)
    assert (write.source, write.raw) == ("broker", 125.0)
    with pytest.raises(TypeMismatchError, match="needs a finite number"):
        engine.to_raw("setpoint", "12.5")


def test_mqtt_staleness_keeps_the_last_value_as_uncertain() -> None:
    engine = engine_of(topic())
    stale_before_any = engine.on_sample(sample("x", None, 0, quality=UNCERTAIN, reason=QualityReason.LAST_USABLE))
    assert seen(stale_before_any) == (None, BAD, QualityReason.LAST_USABLE)
    engine.on_sample(sample("x", 4.5, 1))
    stale = engine.on_sample(sample("x", None, 2, quality=UNCERTAIN))
    assert seen(stale) == (4.5, UNCERTAIN, QualityReason.LAST_USABLE)


def test_string_registers_both_ways() -> None:
    engine = engine_of(register(data_type="string", length=4, access="read-write"))
    words = engine.to_raw("x", "AB-12").raw
    assert words == (0x4142, 0x2D31, 0x3200, 0x0000)
    assert seen(engine.on_sample(sample("x", words))) == ("AB-12", GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", (0xFFFF, 0, 0, 0)))) == (None, BAD, QualityReason.DECODE_ERROR)
    with pytest.raises(TypeMismatchError, match="needs 9 bytes; 4 registers hold 8"):
        engine.to_raw("x", "ABCDEFGHI")
    with pytest.raises(TypeMismatchError, match="needs text"):
        engine.to_raw("x", 12)
    assert engine.encode_value("x", "ABCDEFGHI") == codecs.encode_string("ABCDEFGH", 4)


def test_register_bits_both_ways() -> None:
    engine = engine_of(register(data_type="bool", bit=3, access="read-write"), register("y", "bool", bit=4))
    assert seen(engine.on_sample(sample("x", (0b1000,)))) == (True, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("y", (0b1000,)))) == (False, GOOD, QualityReason.NONE)
    assert engine.to_raw("x", True).raw == (True,)
    with pytest.raises(TypeMismatchError, match="register bit: needs a boolean"):
        engine.to_raw("x", 1)
    assert engine.encode_value("y", 1) == (True,)


def test_coils_both_ways() -> None:
    engine = engine_of({"name": "x", "device": "plc", "table": "coil", "address": 0, "access": "read-write"})
    assert seen(engine.on_sample(sample("x", (True,)))) == (True, GOOD, QualityReason.NONE)
    assert seen(engine.on_sample(sample("x", (2,)))) == (None, BAD, QualityReason.DECODE_ERROR)
    assert engine.to_raw("x", False).raw == (False,)


def test_decode_sample_leaves_the_point_state_alone() -> None:
    engine = engine_of(variable(deadband={"absolute": 1}))
    assert engine.on_sample(sample("x", 10.0)) is not None
    assert engine.decode_sample(sample("x", 10.5)).value == 10.5
    assert engine.on_sample(sample("x", 10.5)) is None
    assert engine.on_sample(sample("x", 11.5)) is not None


def test_simulator_helpers_round_and_clamp() -> None:
    engine = engine_of(
        register(data_type="int16", scale=0.1, unit="FAH", target_unit="CEL"),
        topic("y", scale=0.5),
    )
    assert engine.encode_value("x", 100.0) == (2120,)
    assert engine.encode_value("x", 1e9) == (32767,)
    assert engine.device_value("y", 3.0) == 6.0
    with pytest.raises(TypeMismatchError, match="not a Modbus point"):
        engine.encode_value("y", 3.0)


# --- load-time errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (
            variable(unit="RPM", target_unit="AMP"),
            "line1.yaml: points[0] (x).target_unit: cannot convert 'RPM' (revolutions per minute) "
            "to 'AMP' (ampere): different dimensions",
        ),
        (
            variable(filter={"kind": "moving-average", "window": 4}, access="read-write"),
            "line1.yaml: points[0] (x).filter: a filter cannot be inverted",
        ),
        (
            register(data_type="uint16", enum={0: "off", 1: "off"}, access="read-write"),
            "line1.yaml: points[0] (x).enum: the enum maps two numbers to one name",
        ),
        (
            topic(deadband={"percent": 2}),
            "line1.yaml: points[0] (x).deadband: a percent deadband needs limits with min and max",
        ),
        (
            variable(target_unit="CEL"),
            "line1.yaml: points[0] (x).target_unit: target_unit needs unit",
        ),
    ],
)
def test_chains_that_cannot_work_are_refused_at_load(point: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(mapping_of(point), "line1.yaml")
    assert str(caught.value).startswith(message), str(caught.value)

"""Mapping files, register codecs and the mapping engine (all pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aas_server.errors import MappingError, NotWritableError, TypeMismatchError
from aas_server.mapping import codecs
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import (
    BitPoint,
    DataType,
    ModbusTcpDevice,
    Order,
    RegisterPoint,
    Table,
    load_mapping,
    mapping_json_schema,
    parse_mapping,
)
from aas_server.model.events import Quality, QualityReason, RawSample, ValueChanged

ROOT = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).resolve().parent / "data" / "mappings"
DEMO_MAPPING = ROOT / "mappings" / "bottling-line.yaml"
TIME = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

# --- codecs: golden tables -----------------------------------------------------------------------

BIG, LITTLE = Order.BIG, Order.LITTLE

GOLDEN = [
    # data type, value, word order, byte order, register words
    (DataType.INT16, -1, BIG, BIG, (0xFFFF,)),
    (DataType.INT16, -32768, BIG, BIG, (0x8000,)),
    (DataType.INT16, 235, BIG, BIG, (0x00EB,)),
    (DataType.INT16, 235, BIG, LITTLE, (0xEB00,)),
    (DataType.UINT16, 65535, BIG, BIG, (0xFFFF,)),
    (DataType.UINT16, 4660, BIG, BIG, (0x1234,)),
    (DataType.UINT32, 70000, BIG, BIG, (0x0001, 0x1170)),
    (DataType.UINT32, 70000, LITTLE, BIG, (0x1170, 0x0001)),
    (DataType.UINT32, 70000, BIG, LITTLE, (0x0100, 0x7011)),
    (DataType.UINT32, 70000, LITTLE, LITTLE, (0x7011, 0x0100)),
    (DataType.INT32, -2, BIG, BIG, (0xFFFF, 0xFFFE)),
    (DataType.INT32, -2, LITTLE, BIG, (0xFFFE, 0xFFFF)),
    (DataType.FLOAT32, 123.456, BIG, BIG, (0x42F6, 0xE979)),
    (DataType.FLOAT32, 123.456, LITTLE, BIG, (0xE979, 0x42F6)),
    (DataType.FLOAT32, 123.456, BIG, LITTLE, (0xF642, 0x79E9)),
    (DataType.FLOAT32, 1.0, BIG, BIG, (0x3F80, 0x0000)),
    (DataType.FLOAT32, -2.5, BIG, BIG, (0xC020, 0x0000)),
    (DataType.INT64, -1, BIG, BIG, (0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF)),
    (DataType.UINT64, 0x0102030405060708, BIG, BIG, (0x0102, 0x0304, 0x0506, 0x0708)),
    (DataType.UINT64, 0x0102030405060708, LITTLE, BIG, (0x0708, 0x0506, 0x0304, 0x0102)),
    (DataType.FLOAT64, 1.5, BIG, BIG, (0x3FF8, 0x0000, 0x0000, 0x0000)),
    (DataType.FLOAT64, 1.5, LITTLE, BIG, (0x0000, 0x0000, 0x0000, 0x3FF8)),
]


@pytest.mark.parametrize(("data_type", "value", "word_order", "byte_order", "words"), GOLDEN)
def test_codec_golden_table(
    data_type: DataType, value: float, word_order: Order, byte_order: Order, words: tuple[int, ...]
) -> None:
    assert codecs.encode(data_type, value, word_order, byte_order) == words
    decoded = codecs.decode(data_type, words, word_order, byte_order)
    if data_type is DataType.FLOAT32:
        assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert decoded == value
        assert type(decoded) is type(value)


@pytest.mark.parametrize(
    ("data_type", "value", "message"),
    [
        (DataType.INT16, 32768, "out of range for int16 [-32768, 32767]"),
        (DataType.UINT16, -1, "out of range for uint16 [0, 65535]"),
        (DataType.UINT32, 2**32, "out of range for uint32"),
        (DataType.INT16, 1.5, "needs an integer"),
        (DataType.FLOAT32, 1e39, "out of range for float32"),
    ],
)
def test_codec_rejects_values_that_do_not_fit(data_type: DataType, value: float, message: str) -> None:
    with pytest.raises(codecs.CodecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        codecs.encode(data_type, value)


def test_codec_rejects_wrong_frames() -> None:
    with pytest.raises(codecs.CodecError, match="needs 2 registers, got 1"):
        codecs.decode(DataType.FLOAT32, (0x42F6,))
    with pytest.raises(codecs.CodecError, match="not an unsigned 16-bit"):
        codecs.decode(DataType.UINT16, (70000,))


# --- engine --------------------------------------------------------------------------------------

ENGINE_MAPPING = {
    "devices": [{"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1", "addressing": "zero-based"}],
    "points": [
        {
            "name": "temperature",
            "device": "plc",
            "table": "holding_register",
            "address": 0,
            "data_type": "int16",
            "scale": 0.1,
            "unit": "CEL",
            "target": {"submodel": "urn:test:sm", "path": "Temperature"},
        },
        {
            "name": "setpoint",
            "device": "plc",
            "table": "holding_register",
            "address": 2,
            "data_type": "float32",
            "word_order": "little",
            "unit": "RPM",
            "access": "read-write",
            "target": {"submodel": "urn:test:sm", "path": "Speed.Setpoint"},
        },
        {
            "name": "fill-volume",
            "device": "plc",
            "table": "holding_register",
            "address": 4,
            "data_type": "uint16",
            "scale": 0.1,
            "offset": 100.0,
            "unit": "MLT",
            "access": "read-write",
            "target": {"submodel": "urn:test:sm", "path": "FillVolume"},
        },
        {
            "name": "counter",
            "device": "plc",
            "table": "input_register",
            "address": 0,
            "data_type": "uint32",
            "target": {"submodel": "urn:test:sm", "path": "Counter"},
        },
        {
            "name": "running",
            "device": "plc",
            "table": "coil",
            "address": 0,
            "access": "read-write",
            "target": {"submodel": "urn:test:sm", "path": "Running"},
        },
        {
            "name": "count-limit",
            "device": "plc",
            "table": "holding_register",
            "address": 10,
            "data_type": "int16",
            "access": "read-write",
            "target": {"submodel": "urn:test:sm", "path": "CountLimit"},
        },
    ],
}


@pytest.fixture
def engine() -> MappingEngine:
    return MappingEngine(parse_mapping(ENGINE_MAPPING))


def sample(point: str, raw: tuple[int, ...] | tuple[bool, ...] | None, **kwargs: object) -> RawSample:
    return RawSample("plc", point, raw, TIME, **kwargs)  # type: ignore[arg-type]


def read(engine: MappingEngine, sample: RawSample) -> ValueChanged:
    """The change a sample gives (these points have no deadband or rate limit, so there always is one)."""
    change = engine.on_sample(sample)
    assert change is not None
    return change


def test_engine_decodes_scaled_values_into_element_changes(engine: MappingEngine) -> None:
    change = read(engine, sample("temperature", (235,)))
    assert (change.submodel_id, change.id_short_path) == ("urn:test:sm", "Temperature")
    assert change.value == 23.5
    assert isinstance(change.value, float)
    assert change.quality is Quality.GOOD
    assert change.source_time == TIME
    assert change.origin == "device:plc"

    assert read(engine, sample("temperature", (0xFFF6,))).value == -1.0
    assert read(engine, sample("fill-volume", (4000,))).value == 500.0
    counter = read(engine, sample("counter", (0x0001, 0x1170))).value
    assert counter == 70000
    assert type(counter) is int
    assert read(engine, sample("running", (True,))).value is True
    assert read(engine, sample("setpoint", (0xE979, 0x42F6))).value == pytest.approx(123.456, rel=1e-7)


def test_engine_keeps_bad_quality_without_a_value(engine: MappingEngine) -> None:
    change = read(engine, sample("temperature", None, quality=Quality.BAD, reason=QualityReason.NO_COMMUNICATION))
    assert change.value is None
    assert change.quality is Quality.BAD
    assert change.reason is QualityReason.NO_COMMUNICATION
    refused = read(engine, sample("counter", None, quality=Quality.BAD, reason=QualityReason.COMMUNICATION_ERROR))
    assert refused.reason is QualityReason.COMMUNICATION_ERROR


def test_engine_reports_undecodable_frames(engine: MappingEngine) -> None:
    short = read(engine, sample("setpoint", (0x42F6,)))
    assert (short.value, short.quality, short.reason) == (None, Quality.BAD, QualityReason.DECODE_ERROR)
    bits_for_registers = read(engine, sample("temperature", (True,)))
    assert bits_for_registers.reason is QualityReason.DECODE_ERROR
    not_a_number = read(engine, sample("setpoint", (0x0000, 0x7FC0)))
    assert (not_a_number.quality, not_a_number.reason) == (Quality.BAD, QualityReason.SENSOR_FAILURE)


@pytest.mark.parametrize(
    ("point", "value"),
    [("setpoint", 1450.5), ("setpoint", -3.25), ("fill-volume", 500.0), ("fill-volume", 123.4), ("running", False)],
)
def test_engine_round_trips_writes_through_reads(engine: MappingEngine, point: str, value: object) -> None:
    raw_write = engine.to_raw(point, value)
    assert raw_write.source == "plc"
    assert raw_write.point == point
    back = read(engine, sample(point, raw_write.raw)).value
    assert back == pytest.approx(value, rel=1e-7)


def test_engine_inverse_produces_the_device_words(engine: MappingEngine) -> None:
    assert engine.to_raw("fill-volume", 500.0).raw == (4000,)
    assert engine.to_raw("setpoint", 123.456).raw == (0xE979, 0x42F6)
    assert engine.to_raw("running", True).raw == (True,)
    assert engine.to_raw("count-limit", -1).raw == (0xFFFF,)


def test_engine_inverse_rejects_out_of_range_values(engine: MappingEngine) -> None:
    with pytest.raises(TypeMismatchError, match=r"out of range \[100, 6653.5\] MLT"):
        engine.to_raw("fill-volume", 7000.0)
    with pytest.raises(TypeMismatchError, match=r"out of range \[100, 6653.5\] MLT"):
        engine.to_raw("fill-volume", 99.0)
    with pytest.raises(TypeMismatchError, match=r"\[-32768, 32767\]"):
        engine.to_raw("count-limit", 40000)
    with pytest.raises(TypeMismatchError, match="out of range for float32"):
        engine.to_raw("setpoint", 1e39)


def test_engine_inverse_rejects_truncation_and_wrong_types(engine: MappingEngine) -> None:
    with pytest.raises(TypeMismatchError, match=r"resolution 0\.1 MLT"):
        engine.to_raw("fill-volume", 500.05)
    with pytest.raises(TypeMismatchError, match="resolution 1"):
        engine.to_raw("count-limit", 2.5)
    assert engine.to_raw("count-limit", 3.0).raw == (3,)
    with pytest.raises(TypeMismatchError, match="needs a finite number"):
        engine.to_raw("setpoint", "fast")
    with pytest.raises(TypeMismatchError, match="needs a finite number"):
        engine.to_raw("setpoint", math.nan)
    with pytest.raises(TypeMismatchError, match="needs a boolean"):
        engine.to_raw("running", 1)


def test_engine_inverse_refuses_read_only_points(engine: MappingEngine) -> None:
    with pytest.raises(NotWritableError, match="'temperature' is read-only"):
        engine.to_raw("temperature", 20.0)
    with pytest.raises(NotWritableError):
        engine.to_raw("counter", 1)


# --- mapping files -------------------------------------------------------------------------------

BROKEN_CASES = [
    ("unknown-device.yaml", "points[1] (motor.current).device", "unknown device 'plc-2'"),
    ("duplicate-point.yaml", "points[1] (motor.speed).name", "duplicate point name"),
    ("duplicate-target.yaml", "points[1] (motor.current).target", "is fed by 'motor.speed' already"),
    ("overlapping-registers.yaml", "points[1] (motor.current).address", "overlaps 'motor.speed'"),
    ("read-write-input-register.yaml", "points[1] (motor.current).access", "read-only in Modbus"),
    ("address-beyond-65535.yaml", "points[1] (motor.current).address", "runs past the last Modbus address 65535"),
    ("unknown-unit.yaml", "points[1] (motor.current).unit", "unknown engineering unit 'FURLONG'"),
    ("bad-data-type.yaml", "points[1] (motor.current).data_type", "Input should be 'int16', 'uint16'"),
    ("scale-zero-read-write.yaml", "points[1] (motor.setpoint).scale", "scale 0 cannot be inverted"),
    ("scale-on-coil.yaml", "points[1] (motor.running).scale", "a bool point takes no scale"),
]


@pytest.mark.parametrize(("file_name", "item_and_field", "problem"), BROKEN_CASES)
def test_broken_mapping_files_are_rejected_naming_file_item_and_field(
    file_name: str, item_and_field: str, problem: str
) -> None:
    path = BROKEN / file_name
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {item_and_field}: "), message
    assert problem in message
    assert len(message.splitlines()) == 1, message


def test_yaml_syntax_errors_name_line_and_column() -> None:
    path = BROKEN / "syntax-error.yaml"
    with pytest.raises(MappingError, match=r"syntax-error\.yaml:18:4: YAML syntax error"):
        load_mapping(path)


def test_missing_mapping_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read file"):
        load_mapping(tmp_path / "absent.yaml")


def test_one_based_addressing_shifts_the_wire_address() -> None:
    data = {
        "devices": [{"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "one-based"}],
        "points": [
            {
                "name": "p",
                "device": "plc",
                "table": "holding_register",
                "address": 1,
                "data_type": "uint16",
                "target": {"submodel": "s", "path": "P"},
            }
        ],
    }
    mapping = parse_mapping(data, "inline.yaml")
    device, point = mapping.devices[0], mapping.points[0]
    assert isinstance(device, ModbusTcpDevice)
    assert isinstance(point, RegisterPoint)
    assert device.wire_address(point) == 0
    data["points"][0]["address"] = 0  # type: ignore[index]
    with pytest.raises(MappingError, match=r"inline\.yaml: points\[0\] \(p\)\.address: .*one-based"):
        parse_mapping(data, "inline.yaml")


def test_the_demo_mapping_maps_every_operational_data_property() -> None:
    mapping = load_mapping(DEMO_MAPPING)
    assert [device.name for device in mapping.devices] == ["bottling-plc"]
    device = mapping.devices[0]
    assert isinstance(device, ModbusTcpDevice)
    assert (device.host, device.port, device.unit_id) == ("127.0.0.1", 5020, 1)
    modbus_points = mapping.modbus_points_of(device.name)
    assert len(modbus_points) == len(mapping.points)
    targets = {(point.target.submodel.split(":")[4], point.target.path): point for point in mapping.points}
    expected = {
        (motor, id_short)
        for motor in ("filler-motor", "capper-motor")
        for id_short in ("RotationalSpeed", "SpeedSetpoint", "MotorCurrent", "Vibration", "OperatingHours")
    } | {
        ("filler-temperature-sensor", "Temperature"),
        ("filler", "BottlesFilled"),
        ("filler", "FillVolumeSetpoint"),
        ("filler", "FaultCode"),
        ("capper", "BottlesCapped"),
        ("capper", "CapTorqueSetpoint"),
        ("bottling-process", "Throughput"),
        ("bottling-process", "RejectedBottles"),
        ("bottling-process", "LineRunning"),
        ("plant", "ActivePower"),
        ("plant", "EnergyConsumed"),
    }
    assert set(targets) == expected
    for (key, id_short), point in targets.items():
        assert point.target.submodel == f"urn:aas-server:demo:sm:{key}:operational-data"
        assert point.semantic_id == f"urn:aas-server:concept:{id_short}:1:0"
        writable = id_short.endswith("Setpoint") or id_short == "LineRunning"
        assert point.writable is writable, point.name
    line_running = targets[("bottling-process", "LineRunning")]
    assert isinstance(line_running, BitPoint)
    assert line_running.table is Table.COIL
    assert targets[("filler-temperature-sensor", "Temperature")].unit == "CEL"
    data_types = {point.data_type for point in modbus_points}
    assert {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.FLOAT32} <= data_types
    float_orders = {
        point.word_order
        for point in modbus_points
        if isinstance(point, RegisterPoint) and point.data_type is DataType.FLOAT32
    }
    assert float_orders == {Order.BIG, Order.LITTLE}


def test_mapping_json_schema_describes_devices_and_points() -> None:
    schema = mapping_json_schema()
    assert set(schema["properties"]) == {"devices", "points"}
    assert "RegisterPoint" in schema["$defs"]
    assert "BitPoint" in schema["$defs"]
    assert schema["$defs"]["ModbusTcpDevice"]["additionalProperties"] is False

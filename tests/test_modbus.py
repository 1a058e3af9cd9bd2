"""The Modbus TCP connector against a real ``ModbusDeviceServer`` on loopback, and the read planner."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aas_server.connectors.modbus import ModbusConnector
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import DeviceError, DeviceTimeoutError, MappingError, NotFoundError, TypeMismatchError
from aas_server.mapping.codecs import decode_register_point, encode_register_point
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.planner import ReadRequest, plan_reads
from aas_server.mapping.schema import (
    BitPoint,
    DataType,
    MappingFile,
    ModbusTcpDevice,
    RegisterPoint,
    Table,
    parse_mapping,
)
from aas_server.model.events import ModbusWrite, Quality, QualityReason, RawSample, RawWrite, ValueChanged
from tests.support import wait_until

CONNECTOR_LOGGER = "aas_server.connectors.modbus"


def point(name: str, table: str, address: int, data_type: str | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "device": "plc",
        "table": table,
        "address": address,
        "target": {"submodel": "urn:test:sm:motor", "path": name.replace("-", "")},
        "poll_interval": 0.05,
        **extra,
    }
    if data_type is not None:
        entry["data_type"] = data_type
    return entry


def make_mapping(port: int, *points: dict[str, Any], timeout: float = 0.3) -> MappingFile:
    device = {
        "name": "plc",
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "addressing": "zero-based",
        "timeout": timeout,
        "retries": 0,
        "reconnect_backoff": {"initial": 0.05, "maximum": 0.2},
    }
    return parse_mapping({"devices": [device], "points": list(points)}, "test.yaml")


MOTOR_POINTS = (
    point("Speed", "holding_register", 0, "float32", unit="RPM"),
    point("Setpoint", "holding_register", 2, "float32", word_order="little", access="read-write", unit="RPM"),
    point("Temperature", "holding_register", 4, "int16", scale=0.1, unit="CEL"),
    point("Counter", "input_register", 0, "uint32"),
    point("Running", "coil", 3, access="read-write"),
    point("Alarm", "discrete_input", 5),
)


class Recorder:
    """The sink: every sample, and the latest decoded value change per point."""

    def __init__(self, engine: MappingEngine) -> None:
        self.engine = engine
        self.samples: list[RawSample] = []
        self.latest: dict[str, ValueChanged] = {}

    def __call__(self, sample: RawSample) -> None:
        self.samples.append(sample)
        change = self.engine.on_sample(sample)
        if change is not None:
            self.latest[sample.point] = change

    def value(self, name: str) -> Any:
        change = self.latest.get(name)
        return None if change is None or change.quality is not Quality.GOOD else change.value

    def quality(self, name: str) -> tuple[Quality, QualityReason] | None:
        change = self.latest.get(name)
        return None if change is None else (change.quality, change.reason)


@pytest.fixture
async def server() -> AsyncIterator[ModbusDeviceServer]:
    async with ModbusDeviceServer() as device_server:
        yield device_server


def modbus_device(mapping: MappingFile) -> ModbusTcpDevice:
    device = mapping.devices[0]
    assert isinstance(device, ModbusTcpDevice)
    return device


def plan(mapping: MappingFile) -> list[ReadRequest]:
    device = modbus_device(mapping)
    return plan_reads(device, mapping.modbus_points_of(device.name))


def connector_for(mapping: MappingFile) -> tuple[ModbusConnector, Recorder]:
    engine = MappingEngine(mapping)
    recorder = Recorder(engine)
    device = modbus_device(mapping)
    return ModbusConnector(device, mapping.modbus_points_of(device.name), recorder), recorder


async def test_values_set_on_the_device_arrive_decoded(server: ModbusDeviceServer) -> None:
    mapping = make_mapping(server.port, *MOTOR_POINTS)
    engine = MappingEngine(mapping)
    connector, recorder = connector_for(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        server.set_registers(Table.HOLDING_REGISTER, 0, engine.encode_value("Speed", 1450.5))
        server.set_registers(Table.HOLDING_REGISTER, 4, [0xFF1A])  # -23.0 degC
        server.set_registers(Table.INPUT_REGISTER, 0, [0x0001, 0x1170])
        server.set_bits(Table.COIL, 3, [True])
        server.set_bits(Table.DISCRETE_INPUT, 5, [True])
        await wait_until(
            lambda: (
                recorder.value("Speed") == 1450.5
                and recorder.value("Temperature") == -23.0
                and recorder.value("Counter") == 70000
                and recorder.value("Running") is True
                and recorder.value("Alarm") is True
            ),
            within=1.0,
        )
        assert recorder.latest["Speed"].origin == "device:plc"
        assert all(sample.source == "plc" for sample in recorder.samples)


async def test_writes_land_in_the_device_registers(server: ModbusDeviceServer) -> None:
    mapping = make_mapping(server.port, *MOTOR_POINTS)
    engine = MappingEngine(mapping)
    connector, recorder = connector_for(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        await connector.write(engine.to_raw("Setpoint", 1234.5))
        assert server.get_registers(Table.HOLDING_REGISTER, 2, 2) == (0x5000, 0x449A)
        await wait_until(lambda: recorder.value("Setpoint") == 1234.5)

        await connector.write(engine.to_raw("Running", True))
        assert server.get_bits(Table.COIL, 0, 5) == (False, False, False, True, False)
        await connector.write(engine.to_raw("Running", False))
        assert server.get_bits(Table.COIL, 3, 1) == (False,)


async def test_single_register_write_and_refused_write(server: ModbusDeviceServer) -> None:
    mapping = make_mapping(
        server.port,
        point("Limit", "holding_register", 7, "int16", access="read-write"),
        point("Beyond", "holding_register", 2000, "uint16", access="read-write"),
    )
    engine = MappingEngine(mapping)
    connector, recorder = connector_for(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        await connector.write(engine.to_raw("Limit", -2))
        assert server.get_registers(Table.HOLDING_REGISTER, 7, 1) == (0xFFFE,)
        with pytest.raises(DeviceError, match="exception code 2 \\(illegal data address\\)"):
            await connector.write(engine.to_raw("Beyond", 1))
        # An exception response for one request leaves the connection and other points alone.
        await wait_until(lambda: recorder.quality("Beyond") == (Quality.BAD, QualityReason.COMMUNICATION_ERROR))
        await wait_until(lambda: recorder.value("Limit") == -2)
        assert connector.connected


async def test_outage_and_recovery_are_reported_once(
    server: ModbusDeviceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    mapping = make_mapping(server.port, *MOTOR_POINTS)
    engine = MappingEngine(mapping)
    connector, recorder = connector_for(mapping)

    def records(level: int, text: str) -> list[logging.LogRecord]:
        return [
            record
            for record in caplog.records
            if record.name == CONNECTOR_LOGGER and record.levelno == level and text in record.getMessage()
        ]

    async with connector:
        server.set_registers(Table.HOLDING_REGISTER, 0, engine.encode_value("Speed", 100.0))
        await wait_until(lambda: recorder.value("Speed") == 100.0)

        await server.stop()
        await wait_until(
            lambda: all(
                recorder.quality(name) == (Quality.BAD, QualityReason.NO_COMMUNICATION) for name in recorder.latest
            )
        )
        bad_before = len(recorder.samples)
        # Let several polls and reconnect attempts fail.
        await wait_until(lambda: len(recorder.samples) >= bad_before + 40)
        assert not connector.connected
        assert len(records(logging.WARNING, "unreachable")) == 1

        server.set_registers(Table.HOLDING_REGISTER, 0, engine.encode_value("Speed", 200.0))
        await server.start()
        await wait_until(lambda: recorder.value("Speed") == 200.0, within=3.0)
        await wait_until(
            lambda: all(recorder.quality(name) == (Quality.GOOD, QualityReason.NONE) for name in recorder.latest)
        )
        good_before = len(recorder.samples)
        await wait_until(lambda: len(recorder.samples) >= good_before + 20)
        await wait_until(lambda: connector.connected)
    assert len(records(logging.WARNING, "unreachable")) == 1
    assert len(records(logging.INFO, "reachable again")) == 1


async def test_write_to_a_stopped_device_fails_quickly(server: ModbusDeviceServer) -> None:
    mapping = make_mapping(server.port, *MOTOR_POINTS, timeout=0.5)
    engine = MappingEngine(mapping)
    connector, _ = connector_for(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        await server.stop()
        started = time.monotonic()
        with pytest.raises(DeviceError, match="'plc'") as caught:
            await connector.write(engine.to_raw("Setpoint", 10.0))
        assert time.monotonic() - started < 0.5 + 0.5
        assert caught.value.device == "plc"


async def test_a_device_down_at_start_is_picked_up_when_it_appears() -> None:
    probe = ModbusDeviceServer()
    await probe.start()
    port = probe.port
    await probe.stop()
    mapping = make_mapping(port, *MOTOR_POINTS)
    connector, recorder = connector_for(mapping)
    async with connector:
        await wait_until(lambda: recorder.quality("Speed") == (Quality.BAD, QualityReason.NO_COMMUNICATION))
        assert not connector.connected
        probe.set_registers(Table.HOLDING_REGISTER, 4, [215])
        await probe.start()
        try:
            await wait_until(lambda: recorder.value("Temperature") == 21.5, within=3.0)
        finally:
            await probe.stop()


async def test_a_silent_device_times_out_without_stalling_another(
    server: ModbusDeviceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts requests, never answers
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        silent_mapping = make_mapping(silent_port, *MOTOR_POINTS, timeout=0.2)
        live_mapping = make_mapping(server.port, *MOTOR_POINTS)
        silent_connector, silent_recorder = connector_for(silent_mapping)
        live_connector, live_recorder = connector_for(live_mapping)
        engine = MappingEngine(live_mapping)
        async with silent_connector, live_connector:
            server.set_registers(Table.HOLDING_REGISTER, 0, engine.encode_value("Speed", 42.0))
            await wait_until(lambda: live_recorder.value("Speed") == 42.0)
            await wait_until(lambda: silent_recorder.quality("Speed") == (Quality.BAD, QualityReason.NO_COMMUNICATION))
            server.set_registers(Table.HOLDING_REGISTER, 0, engine.encode_value("Speed", 43.0))
            await wait_until(lambda: live_recorder.value("Speed") == 43.0, within=0.5)
            with pytest.raises(DeviceError):
                await silent_connector.write(engine.to_raw("Setpoint", 1.0))
            # It accepts connections but never answers: that is one outage, not a flapping recovery.
            silent_samples = len(silent_recorder.samples)
            await wait_until(lambda: len(silent_recorder.samples) >= silent_samples + 30)
        messages = [record.getMessage() for record in caplog.records if record.name == CONNECTOR_LOGGER]
        assert len([message for message in messages if "unreachable" in message]) == 1
        assert not [message for message in messages if "reachable again" in message]
    finally:
        silent.close()
        await silent.wait_closed()


async def test_write_timeout_is_a_device_timeout_error() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        mapping = make_mapping(
            silent.sockets[0].getsockname()[1],
            point("Limit", "holding_register", 0, "int16", access="read-write", poll_interval=60),
            timeout=0.2,
        )
        engine = MappingEngine(mapping)
        connector, _ = connector_for(mapping)
        async with connector:
            await wait_until(lambda: connector.connected)
            started = time.monotonic()
            with pytest.raises(DeviceTimeoutError):
                await connector.write(engine.to_raw("Limit", 1))
            assert time.monotonic() - started < 0.2 + 0.6
    finally:
        silent.close()
        await silent.wait_closed()


# --- read planner --------------------------------------------------------------------------------


def _registers(count: int, start: int = 0, step: int = 1) -> MappingFile:
    points = [
        {
            "name": f"r{index}",
            "device": "plc",
            "table": "holding_register",
            "address": start + index * step,
            "data_type": "uint16",
            "target": {"submodel": "s", "path": f"R{index}"},
        }
        for index in range(count)
    ]
    device = {"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "zero-based"}
    return parse_mapping({"devices": [device], "points": points})


def test_planner_reads_100_adjacent_registers_in_one_request() -> None:
    mapping = _registers(100)
    requests = plan(mapping)
    assert [(request.address, request.count) for request in requests] == [(0, 100)]
    assert [planned.offset for planned in requests[0].points] == list(range(100))


def test_planner_splits_200_registers_at_the_125_register_limit() -> None:
    mapping = _registers(200)
    requests = plan(mapping)
    assert [(request.address, request.count) for request in requests] == [(0, 125), (125, 75)]


def test_planner_bridges_small_gaps_but_not_big_ones() -> None:
    device = {"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "zero-based"}

    def point(name: str, address: int, data_type: str = "uint16", **extra: object) -> dict[str, object]:
        return {
            "name": name,
            "device": "plc",
            "table": "holding_register",
            "address": address,
            "data_type": data_type,
            "target": {"submodel": "s", "path": name},
            **extra,
        }

    mapping = parse_mapping(
        {
            "devices": [device],
            "points": [
                point("A", 0, "float32"),
                point("B", 10),  # gap of 8: bridged
                point("C", 1000),  # big gap: its own request
                point("D", 1001, poll_interval=5.0),  # another poll interval: its own request
            ],
        }
    )
    requests = plan(mapping)
    assert [(request.address, request.count, request.poll_interval) for request in requests] == [
        (0, 11, 1.0),
        (1000, 1, 1.0),
        (1001, 1, 5.0),
    ]
    assert [(planned.name, planned.offset, planned.count) for planned in requests[0].points] == [
        ("A", 0, 2),
        ("B", 10, 1),
    ]


# --- register bits, strings, unit ids, function codes ---------------------------------------------


class RawRecorder:
    """A sink that decodes with the register codecs alone: latest sample and decoded value per point."""

    def __init__(self, mapping: MappingFile) -> None:
        self.points = {point.name: point for point in mapping.modbus_points_of(mapping.devices[0].name)}
        self.latest: dict[str, RawSample] = {}
        self.count = 0

    def __call__(self, sample: RawSample) -> None:
        self.latest[sample.point] = sample
        self.count += 1

    def value(self, name: str) -> Any:
        sample = self.latest.get(name)
        if sample is None or sample.quality is not Quality.GOOD:
            return None
        point = self.points[name]
        if isinstance(point, BitPoint):
            return sample.raw[0]
        return decode_register_point(point, sample.raw)

    def quality(self, name: str) -> tuple[Quality, QualityReason] | None:
        sample = self.latest.get(name)
        return None if sample is None else (sample.quality, sample.reason)


def gateway_mapping(port: int, *points: dict[str, Any], addressing: str = "zero-based", **device: Any) -> MappingFile:
    entry = {
        "name": "plc",
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "addressing": addressing,
        "timeout": 0.3,
        "retries": 0,
        "reconnect_backoff": {"initial": 0.05, "maximum": 0.2},
        **device,
    }
    return parse_mapping({"devices": [entry], "points": list(points)}, "test.yaml")


def raw_connector(mapping: MappingFile) -> tuple[ModbusConnector, RawRecorder]:
    device = modbus_device(mapping)
    recorder = RawRecorder(mapping)
    return ModbusConnector(device, mapping.modbus_points_of(device.name), recorder), recorder


def raw_write(mapping: MappingFile, name: str, value: Any) -> ModbusWrite:
    point = mapping.point(name)
    if isinstance(point, RegisterPoint) and point.data_type is not DataType.BOOL:
        return RawWrite("plc", name, encode_register_point(point, value))
    return RawWrite("plc", name, (value,))


BIT_POINTS = (
    point("Ready", "holding_register", 10, "bool", bit=0, access="read-write"),
    point("Fault", "holding_register", 10, "bool", bit=15, access="read-write"),
    point("Warning", "holding_register", 10, "bool", bit=7),
    point("Mode", "holding_register", 11, "uint16", access="read-write"),
)


async def test_register_bits_share_one_read_and_are_written_with_mask_write(server: ModbusDeviceServer) -> None:
    mapping = gateway_mapping(server.port, *BIT_POINTS)
    connector, recorder = raw_connector(mapping)
    assert [(request.address, request.count) for request in connector.read_requests] == [(10, 2)]
    server.set_registers(Table.HOLDING_REGISTER, 10, [0x8081, 3])
    async with connector:
        await wait_until(lambda: recorder.value("Fault") is True and recorder.value("Mode") == 3)
        assert (recorder.value("Ready"), recorder.value("Warning")) == (True, True)
        assert recorder.latest["Fault"].raw == (0x8081,)  # the whole word; the mapping engine picks the bit

        server.reset_request_counts()
        await connector.write(raw_write(mapping, "Ready", False))
        assert server.get_registers(Table.HOLDING_REGISTER, 10, 1) == (0x8080,)
        await connector.write(raw_write(mapping, "Fault", False))
        assert server.get_registers(Table.HOLDING_REGISTER, 10, 1) == (0x0080,)
        await connector.write(raw_write(mapping, "Fault", True))
        assert server.get_registers(Table.HOLDING_REGISTER, 10, 1) == (0x8080,)
        assert server.request_count(function_code=22) == 3
        assert server.request_count(function_code=6) == 0
        await wait_until(lambda: recorder.value("Ready") is False and recorder.value("Fault") is True)


async def test_register_bits_fall_back_to_read_modify_write_without_mask_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    async with ModbusDeviceServer(refused_function_codes={22}) as server:
        mapping = gateway_mapping(server.port, *BIT_POINTS)
        connector, _ = raw_connector(mapping)
        server.set_registers(Table.HOLDING_REGISTER, 10, [0x0080])
        async with connector:
            await wait_until(lambda: connector.connected)
            server.reset_request_counts()
            await asyncio.gather(
                connector.write(raw_write(mapping, "Ready", True)),
                connector.write(raw_write(mapping, "Fault", True)),
            )
            assert server.get_registers(Table.HOLDING_REGISTER, 10, 1) == (0x8081,)
            await connector.write(raw_write(mapping, "Ready", False))
            assert server.get_registers(Table.HOLDING_REGISTER, 10, 1) == (0x8080,)
        # Function code 22 was tried once; the device's refusal is remembered.
        assert server.request_count(function_code=22) == 1
        assert server.request_count(function_code=6) == 3
    notes = [record for record in caplog.records if "does not support mask write" in record.getMessage()]
    assert len(notes) == 1


async def test_each_write_uses_its_function_code(server: ModbusDeviceServer) -> None:
    mapping = gateway_mapping(
        server.port,
        point("Name", "holding_register", 20, "string", length=5, encoding="utf-8", access="read-write"),
        point("Limit", "holding_register", 30, "int16", access="read-write"),
        point("Total", "holding_register", 31, "uint64", word_order="little", access="read-write"),
        point("Pump", "coil", 7, access="read-write"),
    )
    connector, recorder = raw_connector(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        server.reset_request_counts()
        await connector.write(raw_write(mapping, "Name", "Ölpumpe"))
        await connector.write(raw_write(mapping, "Limit", -300))
        await connector.write(raw_write(mapping, "Total", 81985529216486895))
        await connector.write(raw_write(mapping, "Pump", True))
        assert server.get_registers(Table.HOLDING_REGISTER, 20, 5) == (0xC396, 0x6C70, 0x756D, 0x7065, 0)
        assert server.get_registers(Table.HOLDING_REGISTER, 30, 5) == (0xFED4, 0xCDEF, 0x89AB, 0x4567, 0x0123)
        assert server.get_bits(Table.COIL, 7, 1) == (True,)
        writes = {code: server.request_count(function_code=code) for code in (5, 6, 16, 22)}
        assert writes == {5: 1, 6: 1, 16: 2, 22: 0}
        await wait_until(
            lambda: (
                recorder.value("Name") == "Ölpumpe"
                and recorder.value("Total") == 81985529216486895
                and recorder.value("Pump") is True
            )
        )


async def test_raw_writes_that_do_not_fit_the_point_are_type_mismatches(server: ModbusDeviceServer) -> None:
    mapping = gateway_mapping(server.port, *BIT_POINTS)
    connector, _ = raw_connector(mapping)
    async with connector:
        await wait_until(lambda: connector.connected)
        with pytest.raises(TypeMismatchError, match="needs 1 register words, got 2"):
            await connector.write(RawWrite("plc", "Mode", (1, 2)))
        with pytest.raises(TypeMismatchError, match=r"0\.\.65535"):
            await connector.write(RawWrite("plc", "Mode", (70000,)))
        with pytest.raises(TypeMismatchError, match="one bit"):
            await connector.write(RawWrite("plc", "Ready", (0x0001, 0)))
        with pytest.raises(NotFoundError):
            await connector.write(RawWrite("plc", "Nothing", (1,)))
        assert server.request_count(function_code=6) + server.request_count(function_code=22) == 0


async def test_unit_ids_behind_a_gateway_with_one_based_addresses() -> None:
    async with ModbusDeviceServer(unit_ids=(1, 2, 7)) as server:
        mapping = gateway_mapping(
            server.port,
            point("A.Speed", "holding_register", 1, "float32", unit_id=1),
            point("B.Speed", "holding_register", 1, "float32", unit_id=2),
            point("B.Count", "input_register", 3, "uint32", unit_id=2),
            point("C.Alarm", "discrete_input", 1, unit_id=7),
            point("C.Pump", "coil", 16, unit_id=7, access="read-write"),
            addressing="one-based",
            unit_id=1,
        )
        connector, recorder = raw_connector(mapping)
        server.set_registers(Table.HOLDING_REGISTER, 0, [0x42F6, 0xE979], unit_id=1)  # 123.456
        server.set_registers(Table.HOLDING_REGISTER, 0, [0xBFC0, 0x0000], unit_id=2)  # -1.5
        server.set_registers(Table.INPUT_REGISTER, 2, [0x0001, 0x1170], unit_id=2)  # 70000
        server.set_bits(Table.DISCRETE_INPUT, 0, [True], unit_id=7)
        async with connector:
            await wait_until(
                lambda: (
                    recorder.value("A.Speed") == pytest.approx(123.456)
                    and recorder.value("B.Speed") == -1.5
                    and recorder.value("B.Count") == 70000
                    and recorder.value("C.Alarm") is True
                    and recorder.value("C.Pump") is False
                )
            )
            await connector.write(raw_write(mapping, "C.Pump", True))
            assert server.get_bits(Table.COIL, 15, 1, unit_id=7) == (True,)
            assert server.get_bits(Table.COIL, 15, 1, unit_id=1) == (False,)
        counts = server.request_counts
        assert {unit for unit, _ in counts} == {1, 2, 7}
        assert counts[(7, 5)] == 1


async def test_a_silent_unit_behind_a_gateway_leaves_the_others_polling(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    async with ModbusDeviceServer(unit_ids=(1, 2)) as server:
        mapping = gateway_mapping(
            server.port,
            point("Fast", "holding_register", 0, "uint16", unit_id=1),
            point("Slow", "holding_register", 0, "uint16", unit_id=2),
            timeout=0.2,
        )
        connector, recorder = raw_connector(mapping)
        server.set_registers(Table.HOLDING_REGISTER, 0, [1], unit_id=1)
        server.set_registers(Table.HOLDING_REGISTER, 0, [2], unit_id=2)
        arrivals: list[float] = []

        def sink(sample: RawSample) -> None:
            recorder(sample)
            if sample.point == "Fast" and sample.quality is Quality.GOOD:
                arrivals.append(time.monotonic())

        connector._supervisor.sink = sink
        async with connector:
            await wait_until(lambda: recorder.value("Slow") == 2)
            server.unit_response_delays[2] = 5.0  # far beyond the 0.2 s timeout: unit 2 is silent
            await wait_until(lambda: recorder.quality("Slow") == (Quality.BAD, QualityReason.NO_COMMUNICATION))
            watched_from = time.monotonic()
            await wait_until(lambda: time.monotonic() - watched_from > 1.0, within=2.0)
            gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals) if earlier >= watched_from]
            # Polled every 0.05 s; a probe of the silent unit costs at most one 0.2 s timeout.
            assert len(gaps) >= 8
            assert max(gaps) < 0.05 + 0.2 + 0.15
            assert recorder.value("Fast") == 1
            assert connector.connected
            probes = server.request_count(unit_id=2)
            assert probes <= 8  # backed off (0.05 s doubling to 0.2 s), not tried on every 0.05 s poll

            server.unit_response_delays.clear()
            server.set_registers(Table.HOLDING_REGISTER, 0, [3], unit_id=2)
            await wait_until(lambda: recorder.value("Slow") == 3, within=1.0)
    messages = [record.getMessage() for record in caplog.records if record.name == CONNECTOR_LOGGER]
    assert len([message for message in messages if "unit 2 does not answer" in message]) == 1
    assert len([message for message in messages if "unit 2 answers again" in message]) == 1
    assert not [message for message in messages if "unreachable" in message]


async def test_retries_give_a_device_slower_than_the_timeout_its_answer() -> None:
    async with ModbusDeviceServer(response_delay=0.15) as server:
        server.set_registers(Table.HOLDING_REGISTER, 0, [42])
        # Each attempt waits 0.1 s; the answer to the first comes during the second (same transaction id).
        mapping = gateway_mapping(server.port, point("Slow", "holding_register", 0, "uint16"), timeout=0.1, retries=2)
        connector, recorder = raw_connector(mapping)
        async with connector:
            await wait_until(lambda: recorder.value("Slow") == 42)
            await connector.write(RawWrite("plc", "Slow", (43,)))
            assert server.get_registers(Table.HOLDING_REGISTER, 0, 1) == (43,)
            assert connector.connected
            assert recorder.quality("Slow") == (Quality.GOOD, QualityReason.NONE)
        assert server.request_count(function_code=6) >= 2  # the write was sent again before its answer came

    async with ModbusDeviceServer(response_delay=0.15) as server:
        mapping = gateway_mapping(server.port, point("Slow", "holding_register", 0, "uint16"), timeout=0.1, retries=0)
        connector, recorder = raw_connector(mapping)
        async with connector:
            await wait_until(lambda: recorder.quality("Slow") == (Quality.BAD, QualityReason.NO_COMMUNICATION))
            with pytest.raises(DeviceError, match="'plc'"):  # timed out, or not connected again yet
                await connector.write(RawWrite("plc", "Slow", (1,)))
            assert recorder.value("Slow") is None


async def test_a_gateway_whose_units_all_fall_silent_is_one_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    async with ModbusDeviceServer(unit_ids=(1, 2)) as server:
        mapping = gateway_mapping(
            server.port,
            point("One", "holding_register", 0, "uint16", unit_id=1),
            point("Two", "holding_register", 0, "uint16", unit_id=2),
            timeout=0.1,
        )
        connector, recorder = raw_connector(mapping)
        server.set_registers(Table.HOLDING_REGISTER, 0, [1], unit_id=1)
        async with connector:
            await wait_until(lambda: recorder.value("One") == 1)
            server.response_delay = 10.0
            await wait_until(
                lambda: all(
                    recorder.quality(name) == (Quality.BAD, QualityReason.NO_COMMUNICATION) for name in ("One", "Two")
                )
            )
            # Every unit id timed out: the connection is dropped and opened again, with backoff.
            await wait_until(lambda: server.request_count() >= 6, within=3.0)
            server.response_delay = 0.0
            server.set_registers(Table.HOLDING_REGISTER, 0, [2], unit_id=1)
            await wait_until(lambda: recorder.value("One") == 2 and recorder.value("Two") == 0, within=2.0)
    messages = [record.getMessage() for record in caplog.records if record.name == CONNECTOR_LOGGER]
    assert len([message for message in messages if "is unreachable" in message]) == 1
    assert len([message for message in messages if "reachable again" in message]) == 1
    for unit_id in (1, 2):
        assert len([message for message in messages if f"unit {unit_id} does not answer" in message]) == 1
        assert len([message for message in messages if f"unit {unit_id} answers again" in message]) == 1


async def test_a_unit_id_the_gateway_does_not_reach_is_bad_without_touching_the_others() -> None:
    async with ModbusDeviceServer(unit_ids=(1,)) as server:
        mapping = gateway_mapping(
            server.port,
            point("Here", "holding_register", 0, "uint16", unit_id=1),
            point("Gone", "holding_register", 0, "uint16", unit_id=9),
        )
        connector, recorder = raw_connector(mapping)
        server.set_registers(Table.HOLDING_REGISTER, 0, [5])
        async with connector:
            await wait_until(
                lambda: (
                    recorder.value("Here") == 5
                    and recorder.quality("Gone") == (Quality.BAD, QualityReason.NO_COMMUNICATION)
                )
            )
            with pytest.raises(DeviceError, match="exception code 11"):
                await connector.write(RawWrite("plc", "Gone", (1,)))
            assert connector.connected


# --- more planning -------------------------------------------------------------------------------


def test_planner_reads_bits_of_one_register_once_and_strings_whole() -> None:
    device = {"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "one-based", "merge_gap": 2}

    def entry(name: str, address: int, data_type: str, **extra: object) -> dict[str, object]:
        return {
            "name": name,
            "device": "plc",
            "table": "holding_register",
            "address": address,
            "data_type": data_type,
            "target": {"submodel": "s", "path": name},
            **extra,
        }

    mapping = parse_mapping(
        {
            "devices": [device],
            "points": [
                *(entry(f"Bit{bit}", 1, "bool", bit=bit) for bit in (0, 5, 15)),
                entry("Word", 2, "uint16"),
                entry("Name", 5, "string", length=120),  # gap of 2: bridged; ends at wire address 123
                entry("After", 126, "uint16"),  # gap of 1, but the read would be 126 registers long
                entry("Far", 130, "uint16"),  # gap of 3 after After: not bridged
            ],
        }
    )
    requests = plan(mapping)
    assert [(request.address, request.count, request.function_code) for request in requests] == [
        (0, 124, 3),
        (125, 1, 3),
        (129, 1, 3),
    ]
    assert [(planned.name, planned.offset, planned.count) for planned in requests[0].points] == [
        ("Bit0", 0, 1),
        ("Bit15", 0, 1),
        ("Bit5", 0, 1),
        ("Word", 1, 1),
        ("Name", 4, 120),
    ]


def test_a_point_wider_than_the_device_reads_is_refused_when_the_mapping_loads() -> None:
    device = {"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "zero-based"}
    document = {
        "devices": [{**device, "max_read_registers": 8}],
        "points": [
            {
                "name": "Name",
                "device": "plc",
                "table": "input_register",
                "address": 0,
                "data_type": "string",
                "length": 10,
                "target": {"submodel": "s", "path": "Name"},
            }
        ],
    }
    with pytest.raises(MappingError, match=r"points\[0\] \(Name\)\.length: needs 10 registers, more than device 'plc'"):
        parse_mapping(document, "line.yaml")

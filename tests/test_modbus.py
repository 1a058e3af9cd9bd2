"""The Modbus TCP connector against a real ``ModbusDeviceServer`` on loopback, and the read planner."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aas_server.connectors.modbus import ModbusConnector, ModbusDeviceServer
from aas_server.errors import DeviceError, DeviceTimeoutError
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.planner import plan_reads
from aas_server.mapping.schema import MappingFile, Table, parse_mapping
from aas_server.model.events import Quality, QualityReason, RawSample, ValueChanged
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
        self.latest[sample.point] = self.engine.on_sample(sample)

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


def connector_for(mapping: MappingFile) -> tuple[ModbusConnector, Recorder]:
    engine = MappingEngine(mapping)
    recorder = Recorder(engine)
    return ModbusConnector(mapping.devices[0], mapping.points, recorder), recorder


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
    requests = plan_reads(mapping.devices[0], mapping.points)
    assert [(request.address, request.count) for request in requests] == [(0, 100)]
    assert [planned.offset for planned in requests[0].points] == list(range(100))


def test_planner_splits_200_registers_at_the_125_register_limit() -> None:
    mapping = _registers(200)
    requests = plan_reads(mapping.devices[0], mapping.points)
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
    requests = plan_reads(mapping.devices[0], mapping.points)
    assert [(request.address, request.count, request.poll_interval) for request in requests] == [
        (0, 11, 1.0),
        (1000, 1, 1.0),
        (1001, 1, 5.0),
    ]
    assert [(planned.name, planned.offset, planned.count) for planned in requests[0].points] == [
        ("A", 0, 2),
        ("B", 10, 1),
    ]

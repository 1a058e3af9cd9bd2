"""The connector contract and the ``ConnectionSupervisor`` every connector shares, against real devices on loopback.

The same checks run on the Modbus connector (a ``ModbusDeviceServer`` that stops and starts again)
and on the MQTT connector (a private Mosquitto broker that stops and restarts): an outage is logged
once however often the connector retries, and its end once; a sink that raises does not stop the
samples; leaving the connector ends every task it started.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import logging
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from basyx.aas import model

from aas_server.connectors.base import Backoff, ConnectionSupervisor, Connector, ConnectorContext
from aas_server.connectors.modbus import ModbusConnector
from aas_server.connectors.mqtt import MqttConnector
from aas_server.connectors.opcua_client import OpcUaClientConnector
from aas_server.connectors.registry import connector_module, create_connector
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import ConfigurationError, MappingError, TypeMismatchError
from aas_server.mapping.aid import mapping_from_aid, mapping_to_aid
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.protocol_codecs import CODECS
from aas_server.mapping.protocols.sparkplug import SparkplugDevice, SparkplugPoint
from aas_server.mapping.schema import (
    PROTOCOLS,
    AnyPoint,
    BitPoint,
    ModbusTcpDevice,
    MqttDevice,
    MqttPoint,
    OpcUaDevice,
    OpcUaVariablePoint,
    RegisterPoint,
    Table,
    parse_mapping,
    protocol_named,
)
from aas_server.model.events import Quality, QualityReason, RawSample, utc_now
from tests.mqtt_broker import MosquittoBroker
from tests.support import ROOT, wait_until

TARGET = {"submodel": "urn:test:sm:contract", "path": "Value"}
BACKOFF = {"initial": 0.05, "maximum": 0.2}


def modbus_device(port: int) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {
            "name": "plc",
            "protocol": "modbus-tcp",
            "host": "127.0.0.1",
            "port": port,
            "addressing": "zero-based",
            "timeout": 0.3,
            "retries": 0,
            "reconnect_backoff": BACKOFF,
        }
    )


def register(name: str, address: int, poll_interval: float = 0.05) -> RegisterPoint:
    return RegisterPoint.model_validate(
        {
            "name": name,
            "device": "plc",
            "table": "holding_register",
            "address": address,
            "data_type": "uint16",
            "poll_interval": poll_interval,
            "target": {**TARGET, "path": name},
        }
    )


def mqtt_device(broker: MosquittoBroker) -> MqttDevice:
    return MqttDevice.model_validate(
        {
            "name": "site-broker",
            "protocol": "mqtt",
            "host": broker.host,
            "port": broker.port,
            "timeout": 2.0,
            "reconnect_backoff": BACKOFF,
        }
    )


def mqtt_point(name: str, topic: str) -> MqttPoint:
    return MqttPoint.model_validate(
        {"name": name, "device": "site-broker", "topic": topic, "target": {**TARGET, "path": name}}
    )


class Samples:
    """A sink that records every sample."""

    def __init__(self) -> None:
        self.items: list[RawSample] = []

    def __call__(self, sample: RawSample) -> None:
        self.items.append(sample)

    def good_values(self, name: str) -> list[Any]:
        return [s.raw for s in self.items if s.point == name and s.quality is Quality.GOOD]


@dataclass
class Rig:
    """A connector and its real device, which can be taken away and brought back."""

    connector: ModbusConnector | MqttConnector
    logger: str
    go_away: Callable[[], Awaitable[None]]
    come_back: Callable[[], Awaitable[None]]


@asynccontextmanager
async def modbus_rig(samples: Samples) -> AsyncIterator[Rig]:
    server = ModbusDeviceServer()
    await server.start()
    try:
        connector = ModbusConnector(modbus_device(server.port), [register("Value", 0)], samples)
        yield Rig(connector, "aas_server.connectors.modbus", server.stop, server.start)
    finally:
        await server.stop()


@asynccontextmanager
async def mqtt_rig(samples: Samples, broker: MosquittoBroker) -> AsyncIterator[Rig]:
    async def go_away() -> None:
        await asyncio.to_thread(broker.stop)

    async def come_back() -> None:
        await asyncio.to_thread(broker.restart)

    connector = MqttConnector(mqtt_device(broker), [mqtt_point("Value", "contract/value")], samples)
    yield Rig(connector, "aas_server.connectors.mqtt", go_away, come_back)


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger and record.levelno == level and text in record.getMessage()
    ]


@pytest.mark.parametrize("protocol", ["modbus", "mqtt"])
async def test_an_outage_is_logged_once_and_its_end_once_however_often_the_connector_retries(
    protocol: str, mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    samples = Samples()
    rig_of = modbus_rig(samples) if protocol == "modbus" else mqtt_rig(samples, mosquitto_factory())
    async with rig_of as rig:
        caplog.set_level(logging.DEBUG, logger=rig.logger)
        async with rig.connector as connector:
            assert isinstance(connector, Connector)
            await wait_until(lambda: connector.reachable is True, within=5.0, what="the first answer")

            await rig.go_away()
            await wait_until(lambda: connector.reachable is False, within=5.0, what="the outage to be noticed")
            assert not connector.connected
            await wait_until(
                lambda: len(messages(caplog, rig.logger, logging.DEBUG, "still unreachable")) >= 3,
                within=5.0,
                what="three more failed attempts",
            )
            bad = [s for s in samples.items if s.quality is Quality.BAD]
            assert bad
            assert all(s.reason is QualityReason.NO_COMMUNICATION and s.raw is None for s in bad)

            await rig.come_back()
            await wait_until(
                lambda: connector.reachable is True and connector.connected, within=10.0, what="the recovery"
            )
    assert len(messages(caplog, rig.logger, logging.WARNING, "is unreachable")) == 1
    assert len(messages(caplog, rig.logger, logging.INFO, "reachable again")) == 1
    # one bad sample per point for the whole outage, not one per reconnect attempt (MQTT; Modbus
    # reports each poll that could not be read, as a poll that did not happen)
    if protocol == "mqtt":
        assert len([s for s in samples.items if s.quality is Quality.BAD]) == 1


async def test_a_sink_that_raises_neither_stops_the_connector_nor_loses_later_samples(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="aas_server.connectors.modbus")
    seen: list[RawSample] = []
    failures = 0

    def sink(sample: RawSample) -> None:
        nonlocal failures
        if sample.raw == (1,):
            failures += 1
            raise RuntimeError("the store is not ready")
        seen.append(sample)

    async with ModbusDeviceServer() as server:
        server.set_registers(Table.HOLDING_REGISTER, 0, [1])
        async with ModbusConnector(modbus_device(server.port), [register("Value", 0)], sink):
            await wait_until(lambda: failures >= 3, what="the sink to fail three times")
            server.set_registers(Table.HOLDING_REGISTER, 0, [2])
            await wait_until(lambda: any(s.raw == (2,) for s in seen), what="the value after the failures")
    logged = messages(caplog, "aas_server.connectors.modbus", logging.ERROR, "sample sink failed for point 'Value'")
    assert len(logged) >= 3
    assert all(record.exc_info is not None for record in caplog.records if record.levelno == logging.ERROR)


async def test_leaving_a_connector_cancels_and_awaits_every_task_it_started() -> None:
    points = [register("Fast", 0, 0.05), register("Slow", 1, 0.5)]
    async with ModbusDeviceServer() as server:
        connector = ModbusConnector(modbus_device(server.port), points, Samples())
        async with connector:
            owned = [task for task in asyncio.all_tasks() if task.get_name().startswith("modbus plc ")]
            # one connection task and one per poll interval
            assert sorted(task.get_name() for task in owned) == [
                "modbus plc connection",
                "modbus plc poll 0.05s",
                "modbus plc poll 0.5s",
            ]
            await wait_until(lambda: connector.connected, what="the connection")
        assert all(task.done() for task in owned)
        assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("modbus plc ")]
        assert not connector.connected


async def test_stop_ends_a_task_that_swallows_one_cancellation() -> None:
    """As Python 3.11's ``asyncio.wait_for`` inside pymodbus and asyncua can: ``stop`` cancels again."""
    supervisor = ConnectionSupervisor(logging.getLogger("test"), "test device", Samples(), Backoff(0.1, 1.0))
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.Event().wait()

    task = supervisor.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0)  # let the task start waiting
    await supervisor.stop()
    assert swallowed.is_set()
    assert task.cancelled()
    assert not supervisor.tasks
    assert supervisor.stopping


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_an_answer() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.step() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next_delay == 0.1
    with pytest.raises(ValueError, match="initial"):
        Backoff(1.0, 0.5)


def test_every_connector_fulfils_the_contract(tmp_path: Path) -> None:
    opcua_device = OpcUaDevice.model_validate({"name": "legacy", "protocol": "opcua", "endpoint": "opc.tcp://x:4840"})
    opcua_point = OpcUaVariablePoint.model_validate(
        {"name": "Value", "device": "legacy", "node_id": "ns=2;s=Value", "target": TARGET}
    )
    bit = BitPoint.model_validate({"name": "Bit", "device": "plc", "table": "coil", "address": 0, "target": TARGET})
    connectors: list[object] = [
        ModbusConnector(modbus_device(502), [bit], Samples()),
        OpcUaClientConnector(opcua_device, [opcua_point], Samples(), pki_dir=tmp_path),
        MqttConnector(
            MqttDevice.model_validate({"name": "site-broker", "protocol": "mqtt", "host": "127.0.0.1"}),
            [mqtt_point("Value", "contract/value")],
            Samples(),
        ),
    ]
    for connector in connectors:
        assert isinstance(connector, Connector), type(connector).__name__
        assert connector.reachable is None
        assert connector.connected is False


# --- the protocol registry -------------------------------------------------------------------------


def test_every_registered_protocol_has_a_connector_module_that_builds_its_connector(tmp_path: Path) -> None:
    samples = Samples()
    context = ConnectorContext(samples, tmp_path)
    examples: dict[str, tuple[Any, list[Any]]] = {
        "modbus-tcp": (modbus_device(502), [register("Value", 0)]),
        "opcua": (
            OpcUaDevice.model_validate({"name": "legacy", "protocol": "opcua", "endpoint": "opc.tcp://x:4840"}),
            [
                OpcUaVariablePoint.model_validate(
                    {"name": "Value", "device": "legacy", "node_id": "ns=2;s=Value", "target": TARGET}
                )
            ],
        ),
        "mqtt": (
            MqttDevice.model_validate({"name": "site-broker", "protocol": "mqtt", "host": "127.0.0.1"}),
            [mqtt_point("Value", "contract/value")],
        ),
        "sparkplug-b": (
            SparkplugDevice.model_validate({"name": "plant", "protocol": "sparkplug-b", "host": "127.0.0.1"}),
            [
                SparkplugPoint.model_validate(
                    {"name": "Value", "device": "plant", "group_id": "g", "edge_node": "n", "metric": "m"}
                    | {"target": TARGET}
                )
            ],
        ),
    }
    assert {entry.name for entry in PROTOCOLS} == set(examples)
    for entry in PROTOCOLS:
        device, points = examples[entry.name]
        assert isinstance(device, entry.device)
        assert all(isinstance(point, entry.point_models) for point in points)
        module = connector_module(entry)
        assert module.__name__.startswith("aas_server.connectors.")  # type: ignore[attr-defined]
        connector = create_connector(examples[entry.name][0], points, context)
        assert isinstance(connector, Connector)
        assert connector.reachable is None


def test_a_device_endpoint_override_reaches_the_connector() -> None:
    device = modbus_device(502)
    connector = create_connector(device, [register("Value", 0)], ConnectorContext(Samples(), Path()), "10.1.2.3:1502")
    assert isinstance(connector, ModbusConnector)
    assert (connector.device.host, connector.device.port) == ("10.1.2.3", 1502)
    opcua = OpcUaDevice.model_validate({"name": "legacy", "protocol": "opcua", "endpoint": "opc.tcp://x:4840"})
    moved = connector_module(protocol_named("opcua")).with_endpoint(opcua, "opc.tcp://127.0.0.1:4841")
    assert moved.endpoint == "opc.tcp://127.0.0.1:4841"


def test_a_registry_entry_can_only_name_a_connector_module() -> None:
    rogue = dataclasses.replace(protocol_named("mqtt"), connector="os")
    with pytest.raises(ConfigurationError, match="is not a connector"):
        connector_module(rogue)
    incomplete = dataclasses.replace(protocol_named("mqtt"), connector="aas_server.connectors.base")
    with pytest.raises(ConfigurationError, match="has no create_connector"):
        connector_module(incomplete)


def test_the_unions_spelled_out_for_the_type_checker_list_exactly_the_registered_models() -> None:
    """mypy reads ``AnyDevice`` and ``AnyPoint`` from a TYPE_CHECKING branch; pydantic builds them from the registry."""
    tree = ast.parse((ROOT / "aas_server" / "mapping" / "schema.py").read_text(encoding="utf-8"))
    spelled: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                    names = {name.id for name in ast.walk(statement.value) if isinstance(name, ast.Name)}
                    spelled[statement.targets[0].id] = names
    assert spelled["AnyDevice"] == {entry.device.__name__ for entry in PROTOCOLS}
    assert spelled["AnyPoint"] == {model.__name__ for entry in PROTOCOLS for model in entry.point_models}
    assert set(typing.get_args(AnyPoint)) == {model for entry in PROTOCOLS for model in entry.point_models}


def test_a_point_of_no_known_kind_is_told_every_registered_kind() -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(
            {
                "devices": [{"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "zero-based"}],
                "points": [{"name": "Value", "device": "plc", "target": TARGET}],
            },
            "line.yaml",
        )
    message = str(caught.value)
    assert "line.yaml: points[0] (Value)" in message
    for entry in PROTOCOLS:
        for kind in entry.points:
            assert f"{' or '.join(kind.keys)} ({kind.label})" in message


def test_every_point_kind_reads_and_writes_through_the_codec_it_names() -> None:
    mapping = parse_mapping(
        {
            "devices": [
                {"name": "plc", "protocol": "modbus-tcp", "host": "h", "addressing": "zero-based"},
                {"name": "broker", "protocol": "mqtt", "host": "h"},
            ],
            "points": [
                {
                    "name": "Speed",
                    "device": "plc",
                    "table": "holding_register",
                    "address": 0,
                    "data_type": "int16",
                    "scale": 0.1,
                    "access": "read-write",
                    "target": {**TARGET, "path": "Speed"},
                },
                {
                    "name": "Flow",
                    "device": "broker",
                    "topic": "line/flow",
                    "write_topic": "line/flow/set",
                    "scale": 0.1,
                    "access": "read-write",
                    "target": {**TARGET, "path": "Flow"},
                },
            ],
        }
    )
    assert {kind.codec for entry in PROTOCOLS for kind in entry.points} <= set(CODECS)
    engine = MappingEngine(mapping)
    now = utc_now()
    speed = engine.on_sample(RawSample("plc", "Speed", (0xFFF6,), now))  # -10 register counts
    flow = engine.on_sample(RawSample("broker", "Flow", "215", now))  # text holding a number
    assert speed is not None
    assert flow is not None
    assert (speed.value, flow.value) == (-1.0, 21.5)
    assert engine.to_raw("Speed", -1.0).raw == (0xFFF6,)
    assert engine.to_raw("Flow", 21.5).raw == 215
    with pytest.raises(TypeMismatchError, match="point 'Flow'"):
        engine.to_raw("Flow", None)


def test_every_registered_protocol_is_described_as_an_aid_interface_and_read_back() -> None:
    """The AID binding of each registry entry: written as an interface, read back to the same device and point."""
    devices: list[dict[str, Any]] = [
        {"name": "plc", "protocol": "modbus-tcp", "host": "10.0.0.5", "port": 1502, "addressing": "zero-based"},
        {"name": "legacy", "protocol": "opcua", "endpoint": "opc.tcp://10.0.0.6:4840"},
        {"name": "broker", "protocol": "mqtt", "host": "10.0.0.7", "qos": 2},
        {"name": "plant", "protocol": "sparkplug-b", "host": "10.0.0.8"},
    ]
    points: list[dict[str, Any]] = [
        {
            "name": "plc.Speed",
            "device": "plc",
            "table": "holding_register",
            "address": 7,
            "data_type": "float32",
            "target": {**TARGET, "path": "Speed"},
        },
        {"name": "legacy.Level", "device": "legacy", "node_id": "ns=2;s=Level", "target": {**TARGET, "path": "Level"}},
        {"name": "broker.Flow", "device": "broker", "topic": "line/flow", "target": {**TARGET, "path": "Flow"}},
        {
            "name": "plant.Pressure",
            "device": "plant",
            "group_id": "site",
            "edge_node": "line-1",
            "sparkplug_device": "pump",
            "metric": "Inputs/Pressure",
            "target": {**TARGET, "path": "Pressure"},
        },
    ]
    assert {device["protocol"] for device in devices} == {entry.name for entry in PROTOCOLS}
    for device, point in zip(devices, points, strict=True):
        mapping = parse_mapping({"devices": [device], "points": [point]}, "one.yaml")
        aid, aimc = mapping_to_aid(mapping, str(device["name"]))
        entry = protocol_named(str(device["protocol"]))
        interface = next(iter(aid.submodel_element))
        assert isinstance(interface, model.SubmodelElementCollection)
        semantic_ids = {key.value for reference in interface.supplemental_semantic_id for key in reference.key}
        assert entry.aid.semantic_id in semantic_ids
        read_back = mapping_from_aid(aid, aimc)
        assert read_back.devices == mapping.devices
        assert read_back.points == mapping.points

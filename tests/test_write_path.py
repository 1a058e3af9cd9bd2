"""Values typed once and the write path (issue 12, item 2).

- The mapping engine's plan binds the target Property's valueType: the change it emits is already
  of that type (or bad, out of range), with no fitting by the hub afterwards.
- A client write of a device-bound Property reaches its device through the store's ``DeviceWriter``
  (the hub's ``DeviceGateway``) without holding the submodel's lock: a slow PLC delays neither a
  write of another element of the same submodel nor a model change of it.
- Writes of one device point reach the device in the order they were sent.

The hub tests run a real hub (REST on loopback) fed by two real Modbus TCP devices
(``ModbusDeviceServer``), one of them made slow by holding back its answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.connectors.modbus import ModbusConnector
from aas_server.connectors.mqtt import MqttConnector
from aas_server.connectors.opcua_client import OpcUaClientConnector
from aas_server.connectors.sparkplug import SparkplugConnector
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.mapping import codecs
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import DataType, Table, parse_mapping
from aas_server.model.events import ModbusWrite, Quality, QualityReason, RawSample, RawWrite, ValueChanged, ValueWrite
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import eventually, wait_until

SUBMODEL = "urn:test:write-path:sm:line"
WRITE_SINGLE_REGISTER = 6
QUICK = 0.3
"""Seconds within which a write or model change must be answered while the slow device holds a write."""


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def prop(id_short: str, value_type: str, value: str) -> dict[str, Any]:
    return {"modelType": "Property", "idShort": id_short, "valueType": value_type, "value": value}


def environment() -> dict[str, Any]:
    return {
        "assetAdministrationShells": [],
        "submodels": [
            {
                "modelType": "Submodel",
                "id": SUBMODEL,
                "idShort": "Line",
                "submodelElements": [
                    prop("SlowSetpoint", "xs:int", "0"),
                    prop("FastSetpoint", "xs:int", "0"),
                    prop("Temperature", "xs:float", "0"),
                    prop("Running", "xs:boolean", "false"),
                    prop("Note", "xs:string", ""),
                    prop("Other", "xs:string", "before"),
                ],
            }
        ],
        "conceptDescriptions": [],
    }


def device(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "addressing": "zero-based",
        "timeout": 3.0,
        "retries": 0,
        "reconnect_backoff": {"initial": 0.05, "maximum": 0.2},
    }


def register_point(name: str, device_name: str, address: int, data_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "device": device_name,
        "table": "holding_register",
        "address": address,
        "data_type": data_type,
        "target": {"submodel": SUBMODEL, "path": name},
        "poll_interval": 0.05,
        **extra,
    }


def mapping_document(slow_port: int, fast_port: int) -> dict[str, Any]:
    return {
        "devices": [device("slow", slow_port), device("fast", fast_port)],
        "points": [
            register_point("SlowSetpoint", "slow", 0, "uint16", access="read-write"),
            register_point("FastSetpoint", "fast", 0, "uint16", access="read-write"),
            register_point("Temperature", "fast", 1, "float32"),
            {
                "name": "Running",
                "device": "fast",
                "table": "coil",
                "address": 0,
                "target": {"submodel": SUBMODEL, "path": "Running"},
                "poll_interval": 0.05,
            },
        ],
    }


@dataclass
class Plant:
    hub: Hub
    http: aiohttp.ClientSession
    slow: ModbusDeviceServer
    fast: ModbusDeviceServer

    def url(self, id_short_path: str, suffix: str = "") -> str:
        return f"{self.hub.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements/{id_short_path}{suffix}"

    async def patch_value(self, id_short_path: str, value: Any) -> tuple[int, str]:
        async with self.http.patch(self.url(id_short_path, "/$value"), json=value) as response:
            return response.status, await response.text()

    async def value(self, id_short_path: str) -> Any:
        async with self.http.get(self.url(id_short_path, "/$value")) as response:
            assert response.status == 200, await response.text()
            return (await response.json())[id_short_path]

    def writes_received(self, server: ModbusDeviceServer) -> int:
        return server.request_counts.get((1, WRITE_SINGLE_REGISTER), 0)


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with ModbusDeviceServer() as slow, ModbusDeviceServer() as fast:
        twin = tmp_path / "line.json"
        twin.write_text(json.dumps(environment()))
        mapping = tmp_path / "line-mapping.yaml"
        mapping.write_text(yaml.safe_dump(mapping_document(slow.port, fast.port)))
        fast.set_registers(Table.HOLDING_REGISTER, 1, list(codecs.encode(DataType.FLOAT32, 21.5)))
        fast.set_bits(Table.COIL, 0, [True])
        settings = HubSettings(
            data_dir=tmp_path / "data",
            twins=[twin],
            mappings=[mapping],
            rest=RestSettings(port=0),
            opcua=OpcUaSettings(enabled=False),
            history=HistorySettings(enabled=False),
            security=SecuritySettings(enabled=False),
        )
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            plant = Plant(hub, http, slow, fast)
            await wait_until(
                lambda: all(
                    (state := hub.store.state(SUBMODEL, path)) is not None and state.quality is Quality.GOOD
                    for path in ("SlowSetpoint", "FastSetpoint", "Temperature", "Running")
                ),
                within=5.0,
                what="first reads of both devices",
            )
            yield plant


async def test_a_slow_device_write_holds_up_no_other_write_or_model_change_of_its_submodel(plant: Plant) -> None:
    before = plant.writes_received(plant.slow)
    plant.slow.response_delay = 1.0
    slow_write = asyncio.ensure_future(plant.patch_value("SlowSetpoint", 5))
    await wait_until(lambda: plant.writes_received(plant.slow) > before, what="the slow device received the write")

    started = time.monotonic()
    assert await plant.patch_value("FastSetpoint", 7) == (204, "")
    fast_device_write = time.monotonic() - started

    started = time.monotonic()
    assert await plant.patch_value("Note", "written meanwhile") == (204, "")
    plain_write = time.monotonic() - started

    started = time.monotonic()
    async with plant.http.put(plant.url("Other"), json=prop("Other", "xs:string", "replaced")) as response:
        assert response.status == 204, await response.text()
    model_change = time.monotonic() - started

    assert not slow_write.done(), "the slow device answered before the other changes were timed"
    assert fast_device_write < QUICK, f"a write to another device of the submodel took {fast_device_write:.3f} s"
    assert plain_write < QUICK, f"a write of an unbound element of the submodel took {plain_write:.3f} s"
    assert model_change < QUICK, f"a PUT of an element of the submodel took {model_change:.3f} s"

    assert await slow_write == (204, "")
    assert plant.slow.get_registers(Table.HOLDING_REGISTER, 0, 1) == (5,)
    assert plant.fast.get_registers(Table.HOLDING_REGISTER, 0, 1) == (7,)
    assert await plant.value("SlowSetpoint") == 5
    assert await plant.value("Note") == "written meanwhile"
    assert await plant.value("Other") == "replaced"


async def test_writes_of_one_point_reach_the_device_in_the_order_sent(plant: Plant) -> None:
    before = plant.writes_received(plant.slow)
    plant.slow.response_delay = 0.6
    acknowledged: list[int] = []

    async def write(value: int) -> None:
        assert await plant.patch_value("SlowSetpoint", value) == (204, "")
        acknowledged.append(value)

    first = asyncio.ensure_future(write(11))
    await wait_until(lambda: plant.writes_received(plant.slow) > before, what="the first write at the device")
    # the device would answer a second write at once (one Modbus TCP connection answers in order anyway;
    # the store's own order is shown with a pipelining device below)
    plant.slow.response_delay = 0.0
    second = asyncio.ensure_future(write(22))
    await asyncio.gather(first, second)

    assert acknowledged == [11, 22]
    assert plant.slow.get_registers(Table.HOLDING_REGISTER, 0, 1) == (22,)
    assert await eventually(lambda: plant.value("SlowSetpoint"), lambda value: value == 22) == 22
    state = plant.hub.store.state(SUBMODEL, "SlowSetpoint")
    assert state is not None
    assert state.value == 22


async def test_device_values_arrive_in_the_store_typed_as_their_properties(plant: Plant) -> None:
    values = {path: plant.hub.store.state(SUBMODEL, path) for path in ("SlowSetpoint", "Temperature", "Running")}
    assert {path: type(state.value if state else None) for path, state in values.items()} == {
        "SlowSetpoint": datatypes.Int,
        "Temperature": datatypes.Float,
        "Running": bool,
    }
    assert await plant.value("Temperature") == 21.5
    assert await plant.value("Running") is True


# --- the engine alone ------------------------------------------------------------------------------


def _coil(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "device": "plc",
        "table": "coil",
        "address": 0,
        "target": {"submodel": SUBMODEL, "path": name},
    }


def _engine(value_types: dict[str, Any] | None) -> MappingEngine:
    document = {
        "devices": [device("plc", 502)],
        "points": [
            register_point("Count", "plc", 0, "uint16"),
            register_point("Level", "plc", 1, "float32"),
            register_point("Small", "plc", 3, "uint16"),
            register_point("Scaled", "plc", 4, "int16", scale=0.5),
            _coil("Pump"),
        ],
    }
    return MappingEngine(parse_mapping(document, "typed.yaml"), value_types)


def _sample(point: str, raw: Any) -> RawSample:
    return RawSample("plc", point, raw, datetime(2026, 1, 1, tzinfo=UTC))


def test_the_engine_emits_values_of_the_target_value_type() -> None:
    engine = _engine(
        {
            "Count": datatypes.Int,
            "Level": datatypes.Float,
            "Small": datatypes.Byte,
            "Scaled": datatypes.Int,
            "Pump": bool,
        }
    )
    count = engine.on_sample(_sample("Count", (1200,)))
    level = engine.on_sample(_sample("Level", codecs.encode(DataType.FLOAT32, 2.5)))
    pump = engine.on_sample(_sample("Pump", (True,)))
    assert count is not None
    assert level is not None
    assert pump is not None
    assert (type(count.value), count.value, count.quality) == (datatypes.Int, 1200, Quality.GOOD)
    assert (type(level.value), level.value, level.quality) == (datatypes.Float, 2.5, Quality.GOOD)
    assert (type(pump.value), pump.value) == (bool, True)
    # 7 * 0.5 is a whole number for an xs:int; 300 does not fit an xs:byte, nor 3.5 an xs:int
    whole = engine.on_sample(_sample("Scaled", (14,)))
    assert whole is not None
    assert (type(whole.value), whole.value) == (datatypes.Int, 7)
    too_big = engine.on_sample(_sample("Small", (300,)))
    fraction = engine.on_sample(_sample("Scaled", (7,)))
    for change in (too_big, fraction):
        assert change is not None
        assert (change.value, change.quality, change.reason) == (None, Quality.BAD, QualityReason.OUT_OF_RANGE)


def test_without_value_types_the_engine_leaves_values_as_the_chain_gives_them() -> None:
    engine = _engine(None)
    count = engine.on_sample(_sample("Count", (1200,)))
    assert count is not None
    assert type(count.value) is int


def test_the_engine_sink_hands_only_emitted_changes_on() -> None:
    engine = _engine({"Count": datatypes.Int})
    applied: list[Any] = []
    sink = engine.sink(applied.append)
    sink(_sample("Count", (5,)))
    sink(_sample("Count", None))
    assert [(change.value, change.quality) for change in applied] == [(5, Quality.GOOD), (None, Quality.BAD)]
    assert type(applied[0].value) is datatypes.Int


# --- the store's write order -----------------------------------------------------------------------


class PipelinedDevice:
    """A device taking requests as they come and answering each on its own (a protocol with pipelining, such
    as OPC UA or Sparkplug over MQTT): the first write is answered only once ``answer_first`` is set, later
    ones at once. A write takes effect when it is answered, so an overtaking write would be undone."""

    def __init__(self) -> None:
        self.arrived: list[Any] = []
        self.value: Any = None
        self.answer_first = asyncio.Event()

    async def write(self, submodel_id: str, id_short_path: str, value: Any) -> None:
        self.arrived.append(value)
        if len(self.arrived) == 1:
            await self.answer_first.wait()
        self.value = value


async def test_writes_of_one_property_are_carried_to_the_device_one_at_a_time_in_order() -> None:
    store = TwinStore()
    submodel = model.Submodel(SUBMODEL, id_short="Line")
    submodel.submodel_element.add(model.Property("Setpoint", model.datatypes.Int, 0))
    store.add(submodel)
    device = PipelinedDevice()
    store.bind(SUBMODEL, "Setpoint", ElementBinding("device:plc", writable=True), device)

    first = asyncio.ensure_future(store.write_value(SUBMODEL, "Setpoint", 11, "rest"))
    await wait_until(lambda: device.arrived == [11], what="the first write at the device")
    second = asyncio.ensure_future(store.write_value(SUBMODEL, "Setpoint", 22, "rest"))
    for _ in range(20):  # let the second write run as far as it can; it must wait for the first's answer
        await asyncio.sleep(0)
    assert device.arrived == [11]
    assert not second.done()
    device.answer_first.set()
    changes = await asyncio.gather(first, second)

    assert [change.value for change in changes] == [11, 22]
    assert device.arrived == [11, 22]
    assert device.value == 22
    state = store.state(SUBMODEL, "Setpoint")
    assert state is not None
    assert (type(state.value), state.value) == (datatypes.Int, 22)


# --- RawWrite per protocol -------------------------------------------------------------------------


def test_each_connector_takes_the_raw_write_of_its_protocol_and_the_engine_gives_it() -> None:
    declared = {
        connector.__name__: typing.get_type_hints(connector.write)["raw"]
        for connector in (ModbusConnector, OpcUaClientConnector, MqttConnector, SparkplugConnector)
    }
    assert declared == {
        "ModbusConnector": ModbusWrite,
        "OpcUaClientConnector": ValueWrite,
        "MqttConnector": ValueWrite,
        "SparkplugConnector": ValueWrite,
    }
    document = {
        "devices": [device("plc", 502), {"name": "broker", "protocol": "mqtt", "host": "127.0.0.1"}],
        "points": [
            register_point("Setpoint", "plc", 0, "int16", scale=0.1, access="read-write"),
            {**_coil("Pump"), "access": "read-write"},
            {
                "name": "Valve",
                "device": "broker",
                "topic": "line/valve",
                "write_topic": "line/valve/set",
                "access": "read-write",
                "target": {"submodel": SUBMODEL, "path": "Valve"},
            },
        ],
    }
    engine = MappingEngine(parse_mapping(document, "writes.yaml"))
    assert engine.to_raw("Setpoint", -1.5) == RawWrite("plc", "Setpoint", (0xFFF1,))  # -15 tenths as int16 words
    assert engine.to_raw("Pump", True) == RawWrite("plc", "Pump", (True,))
    assert engine.to_raw("Valve", 42) == RawWrite("broker", "Valve", 42)


# --- one copy of each value ------------------------------------------------------------------------


def test_the_store_keeps_one_copy_of_a_value_the_property_s_own() -> None:
    store = TwinStore()
    submodel = model.Submodel(SUBMODEL, id_short="Line")
    submodel.submodel_element.add(model.Property("Count", model.datatypes.Int, 0))
    store.add(submodel)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # a plain int (as a roll-up or a restore may give it): the Property casts it to xs:int
    assert store.apply(ValueChanged(SUBMODEL, "Count", 5, now, server_time=now, origin="rollup"))
    element = store.element(SUBMODEL, "Count")
    assert isinstance(element, model.Property)
    state = store.state(SUBMODEL, "Count")
    assert state is not None
    assert state.value is element.value
    assert (type(state.value), state.value) == (datatypes.Int, 5)
    # a bad change keeps the last value, in the Property and so in the state
    assert store.apply(ValueChanged(SUBMODEL, "Count", None, now, Quality.BAD, QualityReason.NO_COMMUNICATION))
    assert (element.value, state.value, state.quality) == (5, 5, Quality.BAD)


async def test_a_submodel_replaced_during_a_device_write_takes_the_acknowledged_value() -> None:
    store = TwinStore()

    def line(setpoint: int) -> model.Submodel:
        submodel = model.Submodel(SUBMODEL, id_short="Line")
        submodel.submodel_element.add(model.Property("Setpoint", model.datatypes.Int, setpoint))
        submodel.submodel_element.add(model.Property("Note", model.datatypes.String, "old"))
        return submodel

    store.add(line(0))
    device = PipelinedDevice()
    store.bind(SUBMODEL, "Setpoint", ElementBinding("device:plc", writable=True), device)
    write = asyncio.ensure_future(store.write_value(SUBMODEL, "Setpoint", 11, "rest"))
    await wait_until(lambda: device.arrived == [11], what="the write at the device")

    replacement = line(0)
    replacement.get_referable("Note").value = "new"  # type: ignore[attr-defined]
    # the device has not answered; the model change does not wait for it
    await asyncio.wait_for(store.replace(replacement), timeout=QUICK)
    assert not write.done()
    device.answer_first.set()
    assert (await write).value == 11

    element = store.element(SUBMODEL, "Setpoint")
    assert element is replacement.get_referable("Setpoint")
    assert isinstance(element, model.Property)
    assert element.value == 11
    note = store.element(SUBMODEL, "Note")
    assert isinstance(note, model.Property)
    assert note.value == "new"

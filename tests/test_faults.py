"""Faults the hub rides out by itself: devices that vanish, answer garbage or answer slowly; a broker that
goes away; a disk that is full.

Each fault gives a clear status (REST ``Result`` or ``X-AAS-Quality`` headers, OPC UA status code),
a log line, and clears by itself once its cause is gone. Everything runs for real on loopback:
a Modbus TCP device written on raw asyncio streams that answers as a test tells it to (correctly,
with junk, late, ...), the pymodbus device server, a private Mosquitto broker, whole hubs.

Covered elsewhere and not repeated here:

* a Modbus device that disappears and comes back: ``test_modbus.py``
  (``test_outage_and_recovery_are_reported_once``, ``test_a_device_down_at_start_is_picked_up_when_it_appears``),
  ``test_modbus_scale.py`` (bad within two polls, back within 5 s) and ``test_end_to_end.py`` (REST
  headers and OPC UA ``BadNoCommunication`` through a whole hub, one log line each way);
* a device that never answers: ``test_modbus.py`` (``test_a_silent_device_times_out_without_stalling_another``,
  ``test_write_timeout_is_a_device_timeout_error``);
* an MQTT broker that goes away, connector by connector: ``test_mqtt_ingest.py``
  (``test_broker_outage_and_recovery``: one bad sample and one log line each way) and ``test_events.py``
  (``test_events_produced_during_a_broker_outage_all_arrive_in_order``); here only what they leave out,
  the outage seen through a whole hub (REST quality headers, writes going on, the outbox draining).

Behaviour chosen: garbage answers give ``decode_error`` (OPC UA ``BadDecodingError``; exception
responses ``communication_error``) and keep the connection; answers later than the timeout give
``no_communication`` (``BadNoCommunication``) with the timeout in the log line, and a write that
times out is ``DeviceTimeoutError`` (REST ``504``, OPC UA ``BadTimeout``); a full disk refuses
changes with ``507 Insufficient Storage`` and nothing of them stored, in memory or on disk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import (
    EventSettings,
    HistorySettings,
    HubSettings,
    OpcUaSettings,
    RestSettings,
    SecurityPolicyName,
    SecuritySettings,
)
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import DeviceError, DeviceTimeoutError
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import Table
from aas_server.model.events import Quality, QualityReason
from aas_server.opcua.node_ids import node_id_for
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub
from tests.mqtt_broker import MosquittoBroker
from tests.support import eventually, status_of, wait_until
from tests.test_modbus import CONNECTOR_LOGGER, connector_for, make_mapping, point
from tests.test_mqtt_ingest import send

PERSISTENCE_LOGGER = "aas_server.persistence.sqlite"
MQTT_LOGGER = "aas_server.connectors.mqtt"
EVENTS_LOGGER = "aas_server.events.mqtt"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def submodel_json(identifier: str, note: str) -> dict[str, Any]:
    return {
        "modelType": "Submodel",
        "id": identifier,
        "idShort": identifier.rsplit(":", 1)[-1],
        "submodelElements": [{"modelType": "Property", "idShort": "Note", "valueType": "xs:string", "value": note}],
    }


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger and record.levelno == level and text in record.getMessage()
    ]


# --- a Modbus device that answers as it is told ------------------------------------------------------


def mbap_frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    """A Modbus TCP ADU (MBAP header and PDU)."""
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


class ScriptedDevice:
    """A Modbus TCP device on raw asyncio streams: holding registers, read (3) and written (6), answered as
    ``mode`` says: ``correct``, or one way of being wrong (``ANSWERS``); ``delay`` holds every answer back."""

    def __init__(self) -> None:
        self.registers = [0] * 16
        self.mode = "correct"
        self.delay = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (after a ``stop()`` on the same port)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection, as a device that is switched off."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in self._connections:
                writer.close()
            if self._connections:
                await asyncio.wait(self._connections.values(), timeout=5.0)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while True:
                header = await reader.readexactly(7)
                pdu = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                if self.delay:
                    await asyncio.sleep(self.delay)  # the device's own slowness, not test synchronisation
                writer.write(self._answer(int.from_bytes(header[0:2], "big"), header[6], pdu))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.pop(writer, None)
            writer.close()

    def _answer(self, transaction: int, unit: int, request: bytes) -> bytes:
        function = request[0]
        if function == 3:
            address, count = struct.unpack(">HH", request[1:5])
            words = self.registers[address : address + count]
            if self.mode == "short-read":
                words = words[:-1]
            pdu = bytes([3, 2 * len(words)]) + b"".join(word.to_bytes(2, "big") for word in words)
        elif function == 6:
            address, value = struct.unpack(">HH", request[1:5])
            if self.mode == "correct":
                self.registers[address] = value
            pdu = request if self.mode != "short-read" else request[:-1]
        else:
            pdu = bytes([function | 0x80, 1])
        return ANSWERS[self.mode](transaction, unit, function, pdu)


ANSWERS: dict[str, Callable[[int, int, int, bytes], bytes]] = {
    "correct": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit, pdu),
    "junk": lambda transaction, unit, function, pdu: bytes.fromhex("de ad be ef 13 37 ca fe 00 11 22 33"),
    "wrong-transaction": lambda transaction, unit, function, pdu: mbap_frame(transaction ^ 0x5A5A, unit, pdu),
    "truncated": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit, pdu)[:-2],
    "wrong-unit": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit + 7, pdu),
    "wrong-function": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit, bytes([4]) + pdu[1:]),
    "short-read": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit, pdu),
    "exception": lambda transaction, unit, function, pdu: mbap_frame(transaction, unit, bytes([function | 0x80, 4])),
}

MODBUS_POINTS = (
    point("Speed", "holding_register", 0, "uint16"),
    point("Setpoint", "holding_register", 1, "uint16", access="read-write"),
)


GARBAGE: dict[str, tuple[QualityReason, str, str]] = {
    # mode: (quality reason of the values, what the log line says, what the refused write says)
    "junk": (QualityReason.DECODE_ERROR, "bytes that are no Modbus TCP frame (de ad be ef", "(de ad be ef"),
    "wrong-transaction": (QualityReason.DECODE_ERROR, "transaction id", "transaction id"),
    "truncated": (QualityReason.DECODE_ERROR, "an incomplete frame", "an incomplete frame (10 of 12 bytes)"),
    "wrong-unit": (QualityReason.DECODE_ERROR, "an answer from unit 8 instead of 1", "from unit 8 instead of 1"),
    "wrong-function": (QualityReason.DECODE_ERROR, "function code 4 instead of 3", "function code 4 instead of 6"),
    "short-read": (
        QualityReason.DECODE_ERROR,
        "2 data bytes (byte count 2) instead of 4 for 2 items",
        "4 bytes instead of 5 for function code 6",
    ),
    "exception": (
        QualityReason.COMMUNICATION_ERROR,
        "exception code 4 (server device failure)",
        "refused the write of 'Setpoint' (unit 1): exception code 4 (server device failure)",
    ),
}


@pytest.mark.parametrize("mode", list(GARBAGE))
async def test_a_device_answering_garbage_gives_bad_values_keeps_the_connector_running_and_recovers(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    reason, logged, refused = GARBAGE[mode]
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    async with ScriptedDevice() as device:
        mapping = make_mapping(device.port, *MODBUS_POINTS, timeout=0.2)
        engine = MappingEngine(mapping)
        connector, recorder = connector_for(mapping)
        async with connector:
            device.registers[0:2] = [1450, 7]
            await wait_until(lambda: recorder.value("Speed") == 1450 and recorder.value("Setpoint") == 7)

            device.mode = mode
            bad = (Quality.BAD, reason)
            await wait_until(lambda: recorder.quality("Speed") == bad and recorder.quality("Setpoint") == bad)
            with pytest.raises(DeviceError, match="'plc'") as refusal:
                await connector.write(engine.to_raw("Setpoint", 8))
            assert refused in str(refusal.value)
            assert device.registers[1] == 7
            # It keeps polling, on the same connection, and stays bad with one log line for the whole fault.
            seen = len(recorder.samples)
            await wait_until(lambda: len(recorder.samples) >= seen + 10, what="further polls")
            assert recorder.quality("Speed") == bad
            assert connector.connected

            device.mode = "correct"
            device.registers[0] = 1500
            await wait_until(lambda: recorder.value("Speed") == 1500, within=2.0)
            await connector.write(engine.to_raw("Setpoint", 9))
            assert device.registers[1] == 9

    failures = messages(caplog, CONNECTOR_LOGGER, logging.WARNING, "fails to read holding_register 0..1 of unit 1")
    assert len(failures) == 1, failures
    assert logged in failures[0]
    assert len(messages(caplog, CONNECTOR_LOGGER, logging.INFO, "answers holding_register 0..1 again")) == 1
    assert not messages(caplog, CONNECTOR_LOGGER, logging.WARNING, "unreachable")


async def test_a_device_answering_after_its_timeout_is_bad_until_it_is_quick_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTOR_LOGGER)
    async with ModbusDeviceServer() as server:
        server.set_registers(Table.HOLDING_REGISTER, 0, [1450, 7])
        mapping = make_mapping(server.port, *MODBUS_POINTS, timeout=0.2)
        connector, recorder = connector_for(mapping)
        async with connector:
            await wait_until(lambda: recorder.value("Speed") == 1450)

            server.response_delay = 0.5
            no_answer = (Quality.BAD, QualityReason.NO_COMMUNICATION)
            await wait_until(lambda: recorder.quality("Speed") == no_answer, within=2.0)
            seen = len(recorder.samples)
            await wait_until(lambda: len(recorder.samples) >= seen + 10, within=5.0, what="further polls")
            assert recorder.quality("Speed") == no_answer

            server.response_delay = 0.0
            server.set_registers(Table.HOLDING_REGISTER, 0, [1500])
            await wait_until(lambda: recorder.value("Speed") == 1500, within=3.0)

    slow = messages(caplog, CONNECTOR_LOGGER, logging.WARNING, "unreachable")
    assert len(slow) == 1, slow
    assert "no answer from unit 1 within 0.2 s" in slow[0]
    assert len(messages(caplog, CONNECTOR_LOGGER, logging.INFO, "reachable again")) == 1


async def test_a_write_to_a_device_answering_after_its_timeout_is_a_timeout_and_later_ones_succeed() -> None:
    async with ModbusDeviceServer() as server:
        # Polled once a minute: the writes are the only requests on the connection.
        mapping = make_mapping(
            server.port, point("Setpoint", "holding_register", 1, "uint16", access="read-write", poll_interval=60)
        )
        connector, recorder = connector_for(mapping)
        engine = MappingEngine(mapping)
        async with connector:
            await wait_until(lambda: recorder.value("Setpoint") == 0)
            server.response_delay = 0.6
            with pytest.raises(DeviceTimeoutError, match="no answer to the write of 'Setpoint' within"):
                await connector.write(engine.to_raw("Setpoint", 5))
            server.response_delay = 0.0
            await wait_until(lambda: connector.connected, within=2.0, what="the reconnection")
            await connector.write(engine.to_raw("Setpoint", 6))
            assert server.get_registers(Table.HOLDING_REGISTER, 1, 1) == (6,)


# --- the same device faults seen through a whole hub (REST and OPC UA) -------------------------------

LINE = "urn:test:faults:sm:line"


def device_hub(data_dir: Path, device_port: int) -> HubSettings:
    """A hub with one Modbus device (two Properties), REST, and OPC UA with an anonymous read-only endpoint."""
    twins = data_dir.parent / "line.json"
    twins.write_text(
        json.dumps(
            {
                "assetAdministrationShells": [],
                "submodels": [
                    {
                        "modelType": "Submodel",
                        "id": LINE,
                        "idShort": "Line",
                        "submodelElements": [
                            {"modelType": "Property", "idShort": "Speed", "valueType": "xs:int"},
                            {"modelType": "Property", "idShort": "Setpoint", "valueType": "xs:int"},
                        ],
                    }
                ],
            }
        )
    )
    mapping_file = data_dir.parent / "line-mapping.yaml"
    mapping = make_mapping(device_port, *MODBUS_POINTS, timeout=0.2)
    document = mapping.model_dump(mode="json", exclude_defaults=True)
    for entry in document["points"]:
        entry["target"]["submodel"] = LINE
    mapping_file.write_text(json.dumps(document))
    return HubSettings(
        data_dir=data_dir,
        twins=[twins],
        mappings=[mapping_file],
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], allow_anonymous_read=True),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


@asynccontextmanager
async def anonymous_opcua(url: str) -> AsyncIterator[Client]:
    client = Client(url, timeout=5)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def test_garbage_and_slow_answers_show_on_rest_and_opcua_and_clear_by_themselves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server")
    async with ScriptedDevice() as device:
        device.registers[0:2] = [1450, 7]
        settings = device_hub(tmp_path / "data", device.port)
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.opcua is not None
            assert hub.opcua_url is not None
            speed_url = f"{hub.rest_url}/submodels/{b64(LINE)}/submodel-elements/Speed/$value"
            setpoint_url = f"{hub.rest_url}/submodels/{b64(LINE)}/submodel-elements/Setpoint/$value"

            async def rest_state() -> tuple[Any, str, str | None]:
                async with http.get(speed_url) as response:
                    assert response.status == 200
                    headers = response.headers
                    return (
                        (await response.json())["Speed"],
                        headers["X-AAS-Quality"],
                        headers.get("X-AAS-Quality-Reason"),
                    )

            async with anonymous_opcua(hub.opcua_url) as client:
                speed_node = client.get_node(
                    ua.NodeId(ua.String(node_id_for(LINE, "Speed")), ua.Int16(hub.opcua.namespace_index))
                )

                async def opcua_status() -> int:
                    return status_of(await speed_node.read_data_value(raise_on_bad_status=False))

                await eventually(rest_state, lambda state: state == (1450, "good", None))

                # Garbage: bad with a decoding reason, the last value kept; a write is refused with a Result.
                device.mode = "junk"
                await eventually(rest_state, lambda state: state == (1450, "bad", "decode_error"))
                await eventually(opcua_status, lambda code: code == StatusCodes.BadDecodingError)
                async with http.patch(setpoint_url, json=8) as response:
                    assert response.status == 502
                    (message,) = (await response.json())["messages"]
                    assert message["code"] == "DeviceError"
                    assert "not a valid Modbus response" in message["text"]

                # Slow (beyond the 0.2 s timeout): bad, no communication.
                device.mode, device.delay = "correct", 0.5
                await eventually(rest_state, lambda state: state == (1450, "bad", "no_communication"), within=3.0)
                await eventually(opcua_status, lambda code: code == StatusCodes.BadNoCommunication)

                # Answering correctly and in time again: good, by itself.
                device.delay = 0.0
                device.registers[0] = 1500
                await eventually(rest_state, lambda state: state == (1500, "good", None), within=3.0)
                await eventually(opcua_status, lambda code: code == StatusCodes.Good)
                async with http.patch(setpoint_url, json=9) as response:
                    assert response.status == 204, await response.text()
                assert device.registers[1] == 9

    assert len(messages(caplog, CONNECTOR_LOGGER, logging.WARNING, "not a valid Modbus response")) == 1
    slow = messages(caplog, CONNECTOR_LOGGER, logging.WARNING, "unreachable")
    assert len(slow) == 1, slow
    assert "within 0.2 s" in slow[0]
    assert len(messages(caplog, CONNECTOR_LOGGER, logging.INFO, "reachable again")) == 1


# --- a broker that goes away ------------------------------------------------------------------------

AMBIENT = "urn:test:faults:sm:ambient"


def broker_hub(data_dir: Path, broker: MosquittoBroker) -> HubSettings:
    """A hub fed by an MQTT device and publishing change events, both through ``broker``."""
    twins = data_dir.parent / "ambient.json"
    elements = [
        {"modelType": "Property", "idShort": "Temperature", "valueType": "xs:double"},
        {"modelType": "Property", "idShort": "Note", "valueType": "xs:string", "value": "first"},
    ]
    submodel = {"modelType": "Submodel", "id": AMBIENT, "idShort": "Ambient", "submodelElements": elements}
    twins.write_text(json.dumps({"submodels": [submodel]}))
    mapping_file = data_dir.parent / "ambient-mapping.yaml"
    device = {
        "name": "weather",
        "protocol": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "timeout": 2.0,
        "reconnect_backoff": {"initial": 0.05, "maximum": 0.5},
    }
    temperature = {
        "name": "Temperature",
        "device": "weather",
        "target": {"submodel": AMBIENT, "path": "Temperature"},
        "topic": "faults/ambient/temperature",
    }
    mapping_file.write_text(json.dumps({"devices": [device], "points": [temperature]}))
    return HubSettings(
        data_dir=data_dir,
        twins=[twins],
        mappings=[mapping_file],
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
        events=EventSettings(enabled=True, host=broker.host, port=broker.port, repository_id="faults"),
    )


async def test_a_broker_that_goes_away_turns_mqtt_values_bad_keeps_events_and_recovers(
    tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server")
    broker = mosquitto_factory()
    async with Hub(broker_hub(tmp_path / "data", broker)) as hub, aiohttp.ClientSession() as http:
        events = hub.events
        assert events is not None
        elements = f"{hub.rest_url}/submodels/{b64(AMBIENT)}/submodel-elements"

        async def temperature() -> tuple[Any, str, str | None]:
            async with http.get(f"{elements}/Temperature/$value") as response:
                quality, reason = response.headers["X-AAS-Quality"], response.headers.get("X-AAS-Quality-Reason")
                return (await response.json())["Temperature"], quality, reason

        await wait_until(lambda: events.connected, within=5.0, what="the event publisher to connect")
        await send(broker, "faults/ambient/temperature", 21.5)
        await eventually(temperature, lambda state: state == (21.5, "good", None), within=5.0)

        await asyncio.to_thread(broker.kill)  # gone without a goodbye
        await eventually(temperature, lambda state: state == (21.5, "bad", "no_communication"), within=5.0)
        await wait_until(lambda: not events.connected, within=5.0, what="the event publisher to notice")
        # The hub keeps serving writes; their events wait in the outbox.
        async with http.patch(f"{elements}/Note/$value", json="during the outage") as response:
            assert response.status == 204, await response.text()
        assert events.pending >= 1

        await asyncio.to_thread(broker.start)
        await wait_until(lambda: events.pending == 0, within=10.0, what="the outbox to drain")
        await send(broker, "faults/ambient/temperature", 22.0)
        await eventually(temperature, lambda state: state == (22.0, "good", None), within=10.0)

    for logger, what in ((MQTT_LOGGER, "MQTT broker of device 'weather' at"), (EVENTS_LOGGER, "MQTT event broker at")):
        assert len(messages(caplog, logger, logging.WARNING, what)) == 1, what
        assert len(messages(caplog, logger, logging.INFO, "reachable again")) == 1, logger


# --- a full disk ------------------------------------------------------------------------------------

KEPT = "urn:test:faults:sm:kept"
REFUSED = "urn:test:faults:sm:refused"
LARGE = "x" * 300_000
"""A value that needs new database pages whatever room is left in the existing ones."""


def rest_only_hub(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


async def test_a_full_disk_refuses_changes_with_507_keeps_reading_and_recovers_without_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PERSISTENCE_LOGGER)
    settings = rest_only_hub(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        kept_note = f"{api}/submodels/{b64(KEPT)}/submodel-elements/Note/$value"
        async with http.post(f"{api}/submodels", json=submodel_json(KEPT, "first")) as response:
            assert response.status == 201, await response.text()

        # The disk fills up (SQLite's page limit gives the very SQLITE_FULL error a full disk gives).
        await hub.repository.set_size_limit(0)

        async def refused(method: str, url: str, body: Any) -> None:
            async with http.request(method, url, json=body) as response:
                assert response.status == 507, await response.text()
                (message,) = (await response.json())["messages"]
                assert message["code"] == "InsufficientStorage"
                assert "storage full" in message["text"]
                assert "not stored" in message["text"]

        await refused("POST", f"{api}/submodels", submodel_json(REFUSED, LARGE))
        await refused("PATCH", kept_note, LARGE)
        await refused(
            "PUT",
            f"{api}/submodels/{b64(KEPT)}/submodel-elements/Note",
            {"modelType": "Property", "idShort": "Note", "valueType": "xs:string", "value": LARGE},
        )
        # Nothing half-done in memory, and reads go on.
        async with http.get(f"{api}/submodels/{b64(REFUSED)}") as response:
            assert response.status == 404
        async with http.get(kept_note) as response:
            assert response.status == 200
            assert await response.json() == {"Note": "first"}
        async with http.get(f"{api}/submodels") as response:
            assert [item["id"] for item in (await response.json())["result"]] == [KEPT]

        full = [r for r in caplog.records if r.name == PERSISTENCE_LOGGER and r.levelno == logging.ERROR]
        assert len(full) == 1, [r.getMessage() for r in full]
        assert "is full" in full[0].getMessage()
        assert str(settings.sqlite_path) in full[0].getMessage()

        # Space is freed: the same requests succeed, without a restart.
        await hub.repository.set_size_limit(None)
        async with http.post(f"{api}/submodels", json=submodel_json(REFUSED, LARGE)) as response:
            assert response.status == 201, await response.text()
        async with http.patch(kept_note, json="second") as response:
            assert response.status == 204, await response.text()
        again = [r for r in caplog.records if r.name == PERSISTENCE_LOGGER and "stores changes again" in r.getMessage()]
        assert len(again) == 1

    # What was acknowledged is on disk, what was refused is not, and the database is sound.
    async with SqliteRepository(settings.sqlite_path) as repository:
        assert await repository.integrity_check() == "ok"
        stored = {identifiable.id for identifiable in await repository.load_identifiables()}
        assert stored == {KEPT, REFUSED}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        async with http.get(f"{hub.rest_url}/submodels/{b64(KEPT)}/submodel-elements/Note/$value") as response:
            assert await response.json() == {"Note": "second"}
        async with http.get(f"{hub.rest_url}/submodels/{b64(REFUSED)}/submodel-elements/Note/$value") as response:
            assert await response.json() == {"Note": LARGE}

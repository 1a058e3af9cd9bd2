"""MQTT change events against a real Mosquitto broker: topics, payloads, order, the durable outbox, crashes.

A paho MQTT 5 subscriber records every event with its ``sequence`` user property; duplicates
(QoS 1 is at-least-once) are recognised by that sequence and counted, never mistaken for losses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson
import pytest
from asyncua import ua
from basyx.aas import model
from basyx.aas.model import datatypes
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from aas_server.config import EventSettings, HubSettings
from aas_server.events.mqtt import PublishProperties
from aas_server.mapping.schema import Table
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.opcua.node_ids import node_id_for
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.events import EventPublishing, start_event_publishing
from aas_server.runtime.hub import Hub
from aas_server.store.outbox import OutboxEncoder
from aas_server.store.twin_store import ModelChangeKind, TwinStore
from tests.mqtt_broker import MosquittoBroker, free_port, make_tls_files
from tests.support import ROOT, ClientCertificate, wait_until
from tests.test_end_to_end import FILLER, FILLER_MOTOR, SENSOR, element_url, opcua_node, opcua_session, settings_for

SUBMODEL = "urn:test:events:sm:operational-data"
SHELL = "urn:test:events:aas:pump"
CONCEPT = "urn:test:events:cd:speed"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def repository_id() -> str:
    """A ``{repoId}`` of the test's own, so that tests sharing a broker do not see each other's events."""
    return f"test-{secrets.token_hex(4)}"


def element_topic(repository: str, submodel_id: str, path: str) -> str:
    return f"sm-repository/{repository}/submodels/{b64(submodel_id)}/submodelElements/{path}"


def value_topic(repository: str, submodel_id: str, path: str) -> str:
    return element_topic(repository, submodel_id, path) + "/value/updated"


@dataclass(frozen=True)
class Event:
    topic: str
    payload: bytes
    sequence: int

    def json(self) -> Any:
        return orjson.loads(self.payload)


class EventSubscriber:
    """A paho client recording what arrives on ``topic_filter``, with each message's ``sequence``.

    An MQTT 5 client reading the ``sequence`` user property; with ``persistent`` an MQTT 3.1.1
    client with a persistent session (``clean_session`` 0), which Mosquitto 2.0 keeps across its
    own restart (it does not restore MQTT 5 sessions), reading the sequence from value payloads.
    ``start`` and ``stop`` block briefly.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topic_filter: str,
        *,
        persistent: bool = False,
        ca_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.topic_filter = topic_filter
        self.events: list[Event] = []
        self._broker = broker
        self._persistent = persistent
        self._subscribed = threading.Event()
        client_id = f"test-events-{secrets.token_hex(4)}"
        if persistent:
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
            )
        self._client.reconnect_delay_set(1, 1)
        if ca_file is not None:
            self._client.tls_set(ca_certs=str(ca_file))
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> Self:
        self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(5.0):
            self.stop()
            raise AssertionError(f"no SUBACK for {self.topic_filter!r}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if self._persistent:
            sequence = orjson.loads(payload)["sequence"]
        else:
            sequence = dict(message.properties.UserProperty)["sequence"]  # type: ignore[union-attr]
        self.events.append(Event(message.topic, payload, int(sequence)))

    def unique(self) -> list[Event]:
        """The first arrival of each sequence, in arrival order."""
        seen: set[int] = set()
        result = []
        for event in list(self.events):
            if event.sequence not in seen:
                seen.add(event.sequence)
                result.append(event)
        return result

    @property
    def duplicates(self) -> int:
        return len(self.events) - len(self.unique())

    def on(self, topic: str) -> list[Event]:
        return [event for event in self.unique() if event.topic == topic]


@contextlib.contextmanager
def subscribed(broker: MosquittoBroker, topic_filter: str, **options: Any) -> Iterator[EventSubscriber]:
    subscriber = EventSubscriber(broker, topic_filter, **options).start()
    try:
        yield subscriber
    finally:
        subscriber.stop()


def event_settings(port: int, repository: str, **fields: Any) -> HubSettings:
    return HubSettings(events=EventSettings(enabled=True, port=port, repository_id=repository, **fields))


def submodel() -> model.Submodel:
    return model.Submodel(
        SUBMODEL,
        id_short="OperationalData",
        submodel_element=[
            model.Property("Speed", float, 0.0),
            model.Property("Count", datatypes.Int, 0),
            model.SubmodelElementCollection("Motor", value=[model.Property("Temperature", float, 20.0)]),
        ],
    )


def shell() -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:test:events:asset:pump"),
        SHELL,
        id_short="Pump",
        submodel={model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, SUBMODEL),), model.Submodel)},
    )


def concept() -> model.ConceptDescription:
    return model.ConceptDescription(CONCEPT, id_short="Speed")


@contextlib.asynccontextmanager
async def publishing_store(
    database: Path, settings: HubSettings
) -> AsyncIterator[tuple[TwinStore, SqliteRepository, EventPublishing]]:
    """A store journaling to SQLite, with change events started as the hub starts them."""
    async with contextlib.AsyncExitStack() as stack:
        repository = await stack.enter_async_context(SqliteRepository(database))
        store = TwinStore(journal=repository)
        publishing = await start_event_publishing(stack, settings, store, repository)
        assert publishing is not None
        yield store, repository, publishing


def device_change(path: str, value: Any, quality: Quality = Quality.GOOD) -> ValueChanged:
    reason = QualityReason.NONE if quality is Quality.GOOD else QualityReason.NO_COMMUNICATION
    return ValueChanged(SUBMODEL, path, value, utc_now(), quality, reason, origin="device:plc")


def test_topics_and_payloads_follow_the_repository_scheme() -> None:
    encoder = OutboxEncoder("plant-1")
    sm, aas, cd = submodel(), shell(), concept()
    assert encoder.identifiable_event(ModelChangeKind.CREATED, sm).topic == "sm-repository/plant-1/submodels/created"
    assert (
        encoder.identifiable_event(ModelChangeKind.UPDATED, sm).topic
        == f"sm-repository/plant-1/submodels/{b64(SUBMODEL)}/updated"
    )
    assert (
        encoder.identifiable_event(ModelChangeKind.DELETED, aas).topic
        == f"aas-repository/plant-1/shells/{b64(SHELL)}/deleted"
    )
    assert encoder.identifiable_event(ModelChangeKind.CREATED, aas).topic == "aas-repository/plant-1/shells/created"
    assert (
        encoder.identifiable_event(ModelChangeKind.UPDATED, cd).topic
        == f"cd-repository/plant-1/conceptDescriptions/{b64(CONCEPT)}/updated"
    )
    created = encoder.identifiable_event(ModelChangeKind.CREATED, sm)
    assert orjson.loads(created.payload)["id"] == SUBMODEL
    assert orjson.loads(created.payload)["submodelElements"][0]["idShort"] == "Speed"
    temperature = sm.get_referable("Motor").get_referable("Temperature")  # type: ignore[attr-defined]
    element = encoder.element_event(ModelChangeKind.DELETED, SUBMODEL, "Motor.Temperature", temperature)
    assert element.topic == element_topic("plant-1", SUBMODEL, "Motor.Temperature") + "/deleted"
    assert orjson.loads(element.payload)["modelType"] == "Property"
    value = encoder.value_event(device_change("Motor.Temperature", 21.5))
    assert value is not None
    assert value.topic == value_topic("plant-1", SUBMODEL, "Motor.Temperature")
    assert orjson.loads(value.payload) == {
        "value": 21.5,
        "sourceTimestamp": orjson.loads(value.payload)["sourceTimestamp"],
        "serverTimestamp": orjson.loads(value.payload)["serverTimestamp"],
        "quality": "good",
        "qualityReason": "none",
        "origin": "device:plc",
    }
    assert OutboxEncoder("plant-1", value_events=False).value_event(device_change("Speed", 1.0)) is None


@pytest.mark.parametrize("sequence", [1, 99_999, 10**40])
def test_publish_properties_are_the_bytes_paho_would_pack(sequence: int) -> None:
    expected = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    expected.UserProperty = [("sequence", str(sequence))]
    expected.ContentType = "application/json"
    assert PublishProperties(sequence).pack() == expected.pack()  # type: ignore[no-untyped-call]


async def test_an_acknowledged_change_has_its_event_in_the_outbox_and_sequences_are_never_reused(
    tmp_path: Path,
) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        store.outbox_encoder = OutboxEncoder("plant-1")
        await store.create(submodel())
        await store.write_value(SUBMODEL, "Speed", 12.5, origin="rest")
        stored = await repository.outbox_read(0, 10)
        assert [event.topic for event in stored] == [
            "sm-repository/plant-1/submodels/created",
            value_topic("plant-1", SUBMODEL, "Speed"),
        ]
        value = orjson.loads(stored[1].payload)
        assert (value["value"], value["origin"], value["sequence"]) == (12.5, "rest", stored[1].sequence)
        await repository.outbox_remove([event.sequence for event in stored])
        assert repository.outbox_size == 0
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        store.add_all(await repository.load_identifiables())
        store.outbox_encoder = OutboxEncoder("plant-1")
        await store.write_value(SUBMODEL, "Speed", 13.5, origin="rest")
        (event,) = await repository.outbox_read(0, 10)
        assert event.sequence > stored[-1].sequence  # an emptied outbox does not restart the numbering


async def test_model_and_value_events_reach_a_subscriber_in_order(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    repo = repository_id()
    async with publishing_store(tmp_path / "hub.sqlite", event_settings(mosquitto.port, repo)) as (
        store,
        _,
        publishing,
    ):
        with subscribed(mosquitto, f"+/{repo}/#") as subscriber:
            await store.create(submodel())
            await store.create(shell())
            await store.create(concept())
            await store.create_element(SUBMODEL, None, model.Property("Pressure", float, 1.0))
            await store.replace_element(SUBMODEL, "Pressure", model.Property("Pressure", float, 1.5))
            for speed in (10.0, 11.0, 12.0):
                await store.write_value(SUBMODEL, "Speed", speed, origin="rest")
            for temperature in (20.5, 21.0, 21.5):
                store.apply(device_change("Motor.Temperature", temperature))
            store.apply(device_change("Motor.Temperature", None, Quality.BAD))
            store.apply(ValueChanged(SUBMODEL, "Count", 7, utc_now(), origin="restore"))
            await store.delete_element(SUBMODEL, "Pressure")
            renamed = shell()
            renamed.id_short = "PumpRenamed"
            await store.replace(renamed)
            await store.delete(CONCEPT)

            expected = 8 + 3 + 4  # model events, REST writes, device values
            await wait_until(lambda: len(subscriber.unique()) >= expected, within=5.0, what=f"{expected} events")
            await wait_until(lambda: publishing.pending == 0, within=5.0, what="an empty outbox")

        events = subscriber.unique()
        assert len(events) == expected, [event.topic for event in events]
        model_topics = [event.topic for event in events if "/value/" not in event.topic]
        assert model_topics == [
            f"sm-repository/{repo}/submodels/created",
            f"aas-repository/{repo}/shells/created",
            f"cd-repository/{repo}/conceptDescriptions/created",
            element_topic(repo, SUBMODEL, "Pressure") + "/created",
            element_topic(repo, SUBMODEL, "Pressure") + "/updated",
            element_topic(repo, SUBMODEL, "Pressure") + "/deleted",
            f"aas-repository/{repo}/shells/{b64(SHELL)}/updated",
            f"cd-repository/{repo}/conceptDescriptions/{b64(CONCEPT)}/deleted",
        ]
        by_topic = {event.topic: event.json() for event in events}
        assert by_topic[element_topic(repo, SUBMODEL, "Pressure") + "/updated"]["value"] == "1.5"
        assert by_topic[element_topic(repo, SUBMODEL, "Pressure") + "/deleted"]["idShort"] == "Pressure"
        assert by_topic[f"aas-repository/{repo}/shells/{b64(SHELL)}/updated"]["idShort"] == "PumpRenamed"
        assert by_topic[f"cd-repository/{repo}/conceptDescriptions/{b64(CONCEPT)}/deleted"]["id"] == CONCEPT

        speeds = subscriber.on(value_topic(repo, SUBMODEL, "Speed"))
        assert [event.json()["value"] for event in speeds] == [10.0, 11.0, 12.0]
        assert {event.json()["origin"] for event in speeds} == {"rest"}
        temperatures = [event.json() for event in subscriber.on(value_topic(repo, SUBMODEL, "Motor.Temperature"))]
        assert [(t["value"], t["quality"]) for t in temperatures] == [
            (20.5, "good"),
            (21.0, "good"),
            (21.5, "good"),
            (21.5, "bad"),  # a bad sample keeps the last value
        ]
        assert temperatures[-1]["qualityReason"] == "no_communication"
        assert not subscriber.on(value_topic(repo, SUBMODEL, "Count")), "restored values are not published"
        for topic in {event.topic for event in events}:
            sequences = [event.sequence for event in subscriber.on(topic)]
            assert sequences == sorted(sequences), topic
        for event in events:
            if "/value/" in event.topic:
                assert event.json()["sequence"] == event.sequence
        assert publishing.acknowledged == publishing.published == expected
        assert publishing.dropped == 0


async def test_events_produced_during_a_broker_outage_all_arrive_in_order(
    tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server.events.mqtt")
    broker = mosquitto_factory(persistence=True, extra_config=("max_queued_messages 10000",))
    repo = repository_id()
    async with publishing_store(tmp_path / "hub.sqlite", event_settings(broker.port, repo)) as (
        store,
        _,
        publishing,
    ):
        await store.create(submodel())
        await wait_until(lambda: publishing.pending == 0, within=5.0, what="the first event delivered")
        value_filter = f"sm-repository/{repo}/submodels/+/submodelElements/+/value/updated"
        with subscribed(broker, value_filter, persistent=True) as subscriber:
            await asyncio.to_thread(broker.stop)
            await wait_until(lambda: not publishing.connected, within=5.0, what="the publisher to notice")
            for step in range(100):
                await store.write_value(SUBMODEL, "Speed", 100.0 + step, origin="rest")
                await store.write_value(SUBMODEL, "Count", step + 1, origin="opcua")
                store.apply(device_change("Motor.Temperature", 30.0 + step))
            await wait_until(lambda: publishing.pending == 300, within=5.0, what="300 events in the outbox")
            await asyncio.to_thread(broker.start)
            await wait_until(lambda: len(subscriber.unique()) >= 300, within=15.0, what="300 events after the outage")
            await wait_until(lambda: publishing.pending == 0, within=5.0, what="an empty outbox")

    for path, expected in [
        ("Speed", [100.0 + step for step in range(100)]),
        ("Count", [step + 1 for step in range(100)]),
        ("Motor.Temperature", [30.0 + step for step in range(100)]),
    ]:
        arrived = subscriber.on(value_topic(repo, SUBMODEL, path))
        assert [event.json()["value"] for event in arrived] == expected, path
        assert [event.sequence for event in arrived] == sorted(event.sequence for event in arrived)
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "is unreachable" in m]) == 1, messages
    assert len([m for m in messages if "reachable again" in m]) == 1, messages


async def test_a_full_outbox_drops_new_events_counts_them_and_logs_an_error(
    tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    repo = repository_id()
    settings = event_settings(port, repo, outbox_limit=100)
    with caplog.at_level(logging.INFO, logger="aas_server.store.outbox"):
        async with publishing_store(tmp_path / "hub.sqlite", settings) as (store, repository, publishing):
            await store.create(submodel())
            for step in range(1, 130):
                await store.write_value(SUBMODEL, "Speed", float(step), origin="rest")
            assert publishing.pending == 100
            assert publishing.dropped == 30
            errors = [r for r in caplog.records if r.levelno == logging.ERROR and "outbox is full" in r.getMessage()]
            assert len(errors) == 1, [r.getMessage() for r in errors]  # rate-limited
            assert "(100 events)" in errors[0].getMessage()
            (stored_value,) = await repository.load_values()
            assert stored_value.typed_value(float) == 129.0  # the writes themselves were all kept

            broker = mosquitto_factory(port=port)
            with subscribed(broker, f"sm-repository/{repo}/#") as subscriber:
                await wait_until(lambda: publishing.pending == 0, within=15.0, what="the outbox to drain")
                await store.write_value(SUBMODEL, "Speed", 500.0, origin="rest")
                await wait_until(
                    lambda: any(event.json().get("value") == 500.0 for event in subscriber.unique()),
                    within=5.0,
                    what="a new event once the outbox has room",
                )
    assert any("accepts events again" in record.getMessage() for record in caplog.records)


async def test_an_event_the_broker_refuses_is_dropped_and_does_not_block_the_others(
    tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write sm-repository/#\n", encoding="utf-8")
    broker = mosquitto_factory(extra_config=(f"acl_file {acl}",))
    repo = repository_id()
    with caplog.at_level(logging.ERROR, logger="aas_server.events.mqtt"):
        async with publishing_store(tmp_path / "hub.sqlite", event_settings(broker.port, repo)) as (
            store,
            _,
            publishing,
        ):
            with subscribed(broker, f"+/{repo}/#") as subscriber:
                await store.create(concept())
                await store.create(submodel())
                await store.create(shell())
                await store.write_value(SUBMODEL, "Speed", 3.5, origin="rest")
                await wait_until(lambda: len(subscriber.unique()) >= 2, within=5.0, what="the permitted events")
                await wait_until(lambda: publishing.pending == 0, within=5.0, what="an empty outbox")
    assert [event.topic for event in subscriber.unique()] == [
        f"sm-repository/{repo}/submodels/created",
        value_topic(repo, SUBMODEL, "Speed"),
    ]
    assert publishing.dropped == 2
    refusals = [record.getMessage() for record in caplog.records if "refused event" in record.getMessage()]
    assert len(refusals) == 1, refusals  # rate-limited
    assert "Not authorized" in refusals[0]


async def test_tls_and_credentials_from_the_environment(
    tmp_path: Path,
    mosquitto_factory: Callable[..., MosquittoBroker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = mosquitto_factory(tls=tls, users={"hub": "correct horse", "reader": "reader"})
    monkeypatch.setenv("TEST_EVENTS_PASSWORD", "correct horse")
    repo = repository_id()
    secure = event_settings(
        broker.port, repo, tls=True, ca_file=tls.ca_certificate, username="hub", password_env="TEST_EVENTS_PASSWORD"
    )
    with subscribed(broker, f"+/{repo}/#", ca_file=tls.ca_certificate, username="reader", password="reader") as sub:
        async with publishing_store(tmp_path / "hub.sqlite", secure) as (store, _, publishing):
            await store.create(submodel())
            await wait_until(lambda: len(sub.unique()) == 1, within=5.0, what="the event over TLS")
            assert publishing.connected
        assert sub.unique()[0].topic == f"sm-repository/{repo}/submodels/created"

    monkeypatch.setenv("TEST_EVENTS_PASSWORD", "wrong")
    with caplog.at_level(logging.WARNING, logger="aas_server.events.mqtt"):
        async with publishing_store(tmp_path / "other.sqlite", secure) as (store, _, publishing):
            await store.create(submodel())
            await wait_until(
                lambda: any("refused the connection" in r.getMessage() for r in caplog.records),
                within=5.0,
                what="the refusal to be logged",
            )
            assert not publishing.connected
            assert publishing.pending == 1  # kept for when the credentials are fixed


# --- the whole hub ------------------------------------------------------------------------------


async def test_device_rest_and_opcua_changes_arrive_in_order_per_element(
    tmp_path: Path, mosquitto: MosquittoBroker, opcua_client_certificate: ClientCertificate
) -> None:
    repo = repository_id()
    base = settings_for(tmp_path)
    settings = base.model_copy(update={"events": EventSettings(enabled=True, port=mosquitto.port, repository_id=repo)})
    temperature_topic = value_topic(repo, SENSOR, "Temperature")
    set_point_topic = value_topic(repo, FILLER_MOTOR, "SpeedSetpoint")
    fill_topic = value_topic(repo, FILLER, "FillVolumeSetpoint")
    with subscribed(mosquitto, f"sm-repository/{repo}/#") as subscriber:
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.simulator is not None
            assert hub.opcua is not None
            assert hub.rest_url is not None
            hub.simulator.pause()

            def published(value: float) -> Callable[[], bool]:
                return lambda: any(event.json()["value"] == value for event in subscriber.on(temperature_topic))

            for raw, expected in ((251, 25.1), (252, 25.2), (253, 25.3)):
                hub.simulator.server.set_registers(Table.HOLDING_REGISTER, 20, [raw])
                await wait_until(published(expected), within=3.0, what=f"the device value {expected}")
            set_point_url = f"{element_url(hub.rest_url, FILLER_MOTOR, 'SpeedSetpoint')}/$value"
            for speed in (1200.0, 1300.0, 1400.0):
                async with http.patch(set_point_url, json=speed) as response:
                    assert response.status == 204, await response.text()
            namespace = hub.opcua.namespace_index
            async with opcua_session(
                hub.opcua.endpoint_url, opcua_client_certificate, "operator", "demo-operator"
            ) as c:
                fill_node = opcua_node(c, node_id_for(FILLER, "FillVolumeSetpoint"), namespace)
                for volume in (520.0, 525.0, 530.0):
                    await fill_node.write_value(ua.DataValue(ua.Variant(volume, ua.VariantType.Double)))
            await wait_until(
                lambda: any(event.json()["value"] == 530.0 for event in subscriber.on(fill_topic)),
                within=5.0,
                what="the OPC UA writes' events",
            )

    temperatures = [event.json() for event in subscriber.on(temperature_topic)]
    good = [t["value"] for t in temperatures if t["quality"] == "good"]
    assert good[-3:] == [25.1, 25.2, 25.3]
    assert {t["origin"] for t in temperatures} == {"device:bottling-plc"}
    # Every acknowledged write is announced by its writer; when the device's reading of the new value
    # happens to be applied before the write's answer, that reading is announced as well.
    for topic, origin, written in (
        (set_point_topic, "rest", [1200.0, 1300.0, 1400.0]),
        (fill_topic, "opcua", [520.0, 525.0, 530.0]),
    ):
        arrived = [event.json() for event in subscriber.on(topic)]
        assert [a["value"] for a in arrived if a["origin"] == origin] == written
        values = [a["value"] for a in arrived]
        assert [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]][-3:] == written
    for topic in (temperature_topic, set_point_topic, fill_topic):
        sequences = [event.sequence for event in subscriber.on(topic)]
        assert sequences == sorted(sequences), topic


@dataclass
class HubProcess:
    process: subprocess.Popen[bytes]
    rest_url: str

    def stop(self, signal_number: signal.Signals) -> int:
        """Send ``signal_number`` and wait for the process to end; its exit code."""
        self.process.send_signal(signal_number)
        code = self.process.wait(15)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def start_hub_process(config: Path, log: Path) -> HubProcess:
    """``python -m aas_server serve --config ...`` in a process of its own; returns once REST answers."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "aas_server", "serve", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    for line in process.stdout:
        text = line.decode()
        if text.startswith("REST API:"):
            return HubProcess(process, text.split()[-1])
    process.wait(5)
    process.stdout.close()
    raise AssertionError(f"the hub did not start (exit {process.returncode}): {log.read_text()[-3000:]}")


async def test_no_event_is_lost_when_the_broker_is_away_and_the_hub_is_killed(
    tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]
) -> None:
    broker = mosquitto_factory()
    repo = repository_id()
    config = tmp_path / "hub.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "rest: {host: 127.0.0.1, port: 0}\n"
        "opcua: {enabled: false}\n"
        "security: {enabled: false}\n"
        f"events: {{enabled: true, host: 127.0.0.1, port: {broker.port}, repository_id: {repo}}}\n",
        encoding="utf-8",
    )
    log = tmp_path / "hub.log"
    names = [f"Counter{index}" for index in range(4)]
    document = {
        "modelType": "Submodel",
        "id": SUBMODEL,
        "idShort": "Counters",
        "submodelElements": [
            {"modelType": "Property", "idShort": name, "valueType": "xs:int", "value": "-1"} for name in names
        ],
    }
    await asyncio.to_thread(broker.stop)
    hub = await asyncio.to_thread(start_hub_process, config, log)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{hub.rest_url}/submodels", json=document) as response:
                assert response.status == 201, await response.text()

            async def count(name: str) -> None:
                url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements/{name}/$value"
                for value in range(250):
                    async with http.patch(url, json=value) as answer:
                        assert answer.status == 204, await answer.text()

            await asyncio.gather(*(count(name) for name in names))
    finally:
        killed = await asyncio.to_thread(hub.stop, signal.SIGKILL)
    assert killed == -signal.SIGKILL

    await asyncio.to_thread(broker.start)
    with subscribed(broker, f"sm-repository/{repo}/#") as subscriber:
        hub = await asyncio.to_thread(start_hub_process, config, log)
        try:
            await wait_until(lambda: len(subscriber.unique()) >= 1001, within=30.0, what="1,001 events")
        finally:
            await asyncio.to_thread(hub.stop, signal.SIGTERM)

    assert len(subscriber.on(f"sm-repository/{repo}/submodels/created")) == 1
    for name in names:
        arrived = [event.json()["value"] for event in subscriber.on(value_topic(repo, SUBMODEL, name))]
        assert arrived == list(range(250)), name  # all of them, each once, in the order they were written
    print(f"{subscriber.duplicates} duplicates among {len(subscriber.events)} messages")
    assert len(subscriber.unique()) == 1001

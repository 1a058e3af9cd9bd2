"""The MQTT connector against a real Mosquitto broker: JSON values, timestamps, wildcards, writes, outages."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from aas_server.connectors.mqtt import MqttConnector, parse_timestamp
from aas_server.errors import ConfigurationError, DeviceError, MappingError, NotWritableError
from aas_server.mapping.schema import MqttDevice, MqttPoint, ReconnectBackoff, Target, TimestampFormat, parse_mapping
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, utc_now
from tests.mqtt_broker import MosquittoBroker, MqttListener, free_port, make_tls_files, publish, publish_many
from tests.support import wait_until

DEVICE = "site-broker"
LOGGER = "aas_server.connectors.mqtt"


def device_of(broker: MosquittoBroker, **fields: Any) -> MqttDevice:
    return device_at(broker.host, broker.port, **fields)


def device_at(host: str, port: int, **fields: Any) -> MqttDevice:
    return MqttDevice.model_validate(
        {
            "name": DEVICE,
            "protocol": "mqtt",
            "host": host,
            "port": port,
            "timeout": 2.0,
            "reconnect_backoff": ReconnectBackoff(initial=0.05, maximum=0.5),
            **fields,
        }
    )


def point(name: str, topic: str, **fields: Any) -> MqttPoint:
    return MqttPoint.model_validate(
        {
            "name": name,
            "device": DEVICE,
            "target": Target(submodel="urn:test:submodel:operational-data", path=name),
            "topic": topic,
            **fields,
        }
    )


def prefix() -> str:
    """A topic prefix of the test's own on the shared broker."""
    return f"test-{secrets.token_hex(4)}"


class Samples:
    """The sink: records every sample the connector emits."""

    def __init__(self) -> None:
        self.items: list[RawSample] = []

    def __call__(self, sample: RawSample) -> None:
        self.items.append(sample)

    def of(self, name: str) -> list[RawSample]:
        return [sample for sample in self.items if sample.point == name]

    async def wait_for(
        self, name: str, check: Callable[[RawSample], bool], within: float = 3.0, after: int = 0
    ) -> RawSample:
        """The first sample of point ``name`` (past the first ``after`` of them) that passes ``check``."""

        def found() -> RawSample | None:
            return next((sample for sample in self.of(name)[after:] if check(sample)), None)

        await wait_until(lambda: found() is not None, within=within, what=f"a matching sample of {name!r}")
        sample = found()
        assert sample is not None
        return sample


def good(sample: RawSample) -> bool:
    return sample.quality is Quality.GOOD


def bad(reason: QualityReason) -> Callable[[RawSample], bool]:
    return lambda sample: sample.quality is Quality.BAD and sample.reason is reason


@asynccontextmanager
async def running(
    device: MqttDevice, points: Sequence[MqttPoint], samples: Samples, subscribed: bool = True
) -> AsyncIterator[MqttConnector]:
    """A started connector; with ``subscribed``, once the broker acknowledged all its subscriptions."""
    async with MqttConnector(device, points, samples) as connector:
        if subscribed:
            filters = set(connector.topic_filters)
            await wait_until(lambda: set(connector.granted_qos) == filters, within=5.0, what="SUBACK")
        yield connector


async def send(broker: MosquittoBroker, topic: str, payload: Any) -> None:
    """Publish ``payload`` (bytes as they are, anything else as JSON) at QoS 1 from another client."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await asyncio.to_thread(publish, broker.host, broker.port, topic, data)


# --- timestamps (pure) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "timestamp_format", "expected"),
    [
        ("2024-05-01T12:00:00.250+02:00", TimestampFormat.ISO8601, datetime(2024, 5, 1, 10, 0, 0, 250000, UTC)),
        ("2024-05-01T12:00:00Z", TimestampFormat.ISO8601, datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00", TimestampFormat.ISO8601, datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)),
        (1714564800, TimestampFormat.EPOCH_SECONDS, datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)),
        (1714564800.5, TimestampFormat.EPOCH_SECONDS, datetime(2024, 5, 1, 12, 0, 0, 500000, UTC)),
        (1714564800123, TimestampFormat.EPOCH_MILLISECONDS, datetime(2024, 5, 1, 12, 0, 0, 123000, UTC)),
        ("1714564800123", TimestampFormat.EPOCH_MILLISECONDS, datetime(2024, 5, 1, 12, 0, 0, 123000, UTC)),
    ],
)
def test_timestamps_are_read_as_timezone_aware_utc(
    value: Any, timestamp_format: TimestampFormat, expected: datetime
) -> None:
    parsed = parse_timestamp(value, timestamp_format)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "timestamp_format"),
    [
        (1714564800, TimestampFormat.ISO8601),
        ("yesterday", TimestampFormat.ISO8601),
        ("soon", TimestampFormat.EPOCH_SECONDS),
        (True, TimestampFormat.EPOCH_MILLISECONDS),
        (1e300, TimestampFormat.EPOCH_SECONDS),
        (None, TimestampFormat.EPOCH_SECONDS),
    ],
)
def test_unusable_timestamps_are_rejected(value: Any, timestamp_format: TimestampFormat) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_timestamp(value, timestamp_format)


# --- reading ---------------------------------------------------------------------------------------


async def test_nested_json_value_carries_the_payloads_timestamp(mosquitto: MosquittoBroker) -> None:
    topic = f"{prefix()}/boiler/state"
    temperature = point("BoilerTemperature", topic, value_path="$.data.temperature", timestamp_path="$.ts")
    samples = Samples()
    async with running(device_of(mosquitto), [temperature], samples) as connector:
        assert connector.connected
        await send(
            mosquitto, topic, {"data": {"temperature": 71.25, "pressure": 2.1}, "ts": "2024-05-01T12:00:00+02:00"}
        )
        sample = await samples.wait_for("BoilerTemperature", good)
        assert sample.raw == 71.25
        assert sample.source == DEVICE
        assert sample.source_time == datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

        await send(mosquitto, topic, {"data": {"temperature": 72.0}, "ts": "2024-05-01T12:00:05"})
        naive = await samples.wait_for("BoilerTemperature", lambda sample: sample.raw == 72.0)
        assert naive.source_time == datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)


async def test_without_timestamp_path_the_arrival_time_is_the_source_time(mosquitto: MosquittoBroker) -> None:
    topic = f"{prefix()}/counter"
    counter = point("PartCounter", topic)
    samples = Samples()
    async with running(device_of(mosquitto), [counter], samples):
        before = utc_now()
        await send(mosquitto, topic, 1042)
        sample = await samples.wait_for("PartCounter", good)
        assert sample.raw == 1042
        assert before <= sample.source_time <= utc_now()


async def test_one_wildcard_filter_feeds_two_points_from_several_topics(mosquitto: MosquittoBroker) -> None:
    base = prefix()
    topic_filter = f"{base}/plant/+/temperature"
    value = point("Temperature", topic_filter, value_path="$.value")
    setpoint = point("TemperatureSetpoint", topic_filter, value_path="$.setpoint")
    samples = Samples()
    async with running(device_of(mosquitto), [value, setpoint], samples) as connector:
        assert connector.topic_filters == [topic_filter]
        await asyncio.to_thread(
            publish_many,
            mosquitto.host,
            mosquitto.port,
            [
                (f"{base}/plant/oven/pressure", orjson.dumps({"value": -1, "setpoint": -1})),
                (f"{base}/plant/oven/temperature", orjson.dumps({"value": 180.5, "setpoint": 185})),
                (f"{base}/plant/boiler/temperature", orjson.dumps({"value": 71.0, "setpoint": 70})),
            ],
        )
        await samples.wait_for("Temperature", lambda sample: sample.raw == 71.0)
        await samples.wait_for("TemperatureSetpoint", lambda sample: sample.raw == 70)
        assert [sample.raw for sample in samples.of("Temperature")] == [180.5, 71.0]
        assert [sample.raw for sample in samples.of("TemperatureSetpoint")] == [185, 70]


async def test_epoch_millisecond_timestamps(mosquitto: MosquittoBroker) -> None:
    topic = f"{prefix()}/press/force"
    force = point(
        "PressForce", topic, value_path="$.f", timestamp_path="$.t", timestamp_format=TimestampFormat.EPOCH_MILLISECONDS
    )
    samples = Samples()
    async with running(device_of(mosquitto), [force], samples):
        await send(mosquitto, topic, {"f": 12.5, "t": 1714564800123})
        sample = await samples.wait_for("PressForce", good)
        assert sample.raw == 12.5
        assert sample.source_time == datetime(2024, 5, 1, 12, 0, 0, 123000, UTC)


async def test_undecodable_messages_give_bad_samples_and_later_ones_still_arrive(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{prefix()}/flow"
    flow = point("FlowRate", topic, value_path="$.flow")
    samples = Samples()
    async with running(device_of(mosquitto), [flow], samples) as connector:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            await send(mosquitto, topic, b"flow=12.5 l/min")
            failed = await samples.wait_for("FlowRate", bad(QualityReason.DECODE_ERROR))
            assert failed.raw is None
            await send(mosquitto, topic, {"level": 3})
            await samples.wait_for("FlowRate", bad(QualityReason.DECODE_ERROR), after=1)
        await send(mosquitto, topic, {"flow": 12.5})
        recovered = await samples.wait_for("FlowRate", good)
        assert recovered.raw == 12.5
        assert connector.connected
        reports = [record for record in caplog.records if "FlowRate" in record.getMessage()]
        assert len(reports) == 1, "a recurring decode problem is logged once per interval"
        assert "not JSON" in reports[0].getMessage()


async def test_an_unusable_timestamp_keeps_the_value_with_the_arrival_time(mosquitto: MosquittoBroker) -> None:
    topic = f"{prefix()}/tank"
    level = point("TankLevel", topic, value_path="$.level", timestamp_path="$.at")
    samples = Samples()
    async with running(device_of(mosquitto), [level], samples):
        before = utc_now()
        await send(mosquitto, topic, {"level": 0.75, "at": "half past nine"})
        sample = await samples.wait_for("TankLevel", good)
        assert sample.raw == 0.75
        assert sample.source_time >= before


async def test_subscriptions_are_made_at_qos_1(mosquitto: MosquittoBroker) -> None:
    base = prefix()
    points = [point("Speed", f"{base}/motor/speed"), point("Torque", f"{base}/motor/#")]
    async with running(device_of(mosquitto), points, Samples()) as connector:
        assert connector.granted_qos == {f"{base}/motor/speed": 1, f"{base}/motor/#": 1}


# --- writing ---------------------------------------------------------------------------------------


async def test_a_write_is_published_to_the_write_topic_and_acknowledged(mosquitto: MosquittoBroker) -> None:
    base = prefix()
    setpoint = point(
        "SpeedSetpoint", f"{base}/motor/setpoint", access="read-write", write_topic=f"{base}/motor/setpoint/set"
    )
    listener = MqttListener(mosquitto.host, mosquitto.port, f"{base}/motor/setpoint/set")
    await asyncio.to_thread(listener.start)
    try:
        async with running(device_of(mosquitto), [setpoint], Samples()) as connector:
            await connector.write(RawWrite(DEVICE, "SpeedSetpoint", 1450.5))
            await wait_until(lambda: len(listener.messages) == 1, within=3.0, what="the published write")
    finally:
        await asyncio.to_thread(listener.stop)
    assert listener.payloads() == [{"value": 1450.5}]
    assert listener.messages[0].topic == f"{base}/motor/setpoint/set"
    assert listener.messages[0].qos == 1


async def test_writes_fail_clearly_when_not_possible(mosquitto: MosquittoBroker) -> None:
    base = prefix()
    reading = point("Speed", f"{base}/speed")
    unreachable = device_at("127.0.0.1", free_port())
    writable = point("SpeedSetpoint", f"{base}/setpoint", access="read-write", write_topic=f"{base}/setpoint/set")
    async with running(device_of(mosquitto), [reading], Samples()) as connector:
        with pytest.raises(NotWritableError):
            await connector.write(RawWrite(DEVICE, "Speed", 1.0))
    async with running(unreachable, [writable], Samples(), subscribed=False) as connector:
        with pytest.raises(DeviceError, match="not connected"):
            await connector.write(RawWrite(DEVICE, "SpeedSetpoint", 1.0))


# --- outages and staleness -------------------------------------------------------------------------


async def test_an_unreachable_broker_gives_bad_values_without_failing() -> None:
    samples = Samples()
    device = device_at("127.0.0.1", free_port())
    async with running(device, [point("Speed", "motor/speed")], samples, subscribed=False) as connector:
        sample = await samples.wait_for("Speed", bad(QualityReason.NO_COMMUNICATION))
        assert sample.raw is None
        assert not connector.connected


async def test_broker_outage_and_recovery(
    mosquitto_factory: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_factory()
    points = [point("Speed", "line/motor/speed"), point("Current", "line/motor/current")]
    samples = Samples()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        async with running(device_of(broker), points, samples) as connector:
            await send(broker, "line/motor/speed", 1200)
            await samples.wait_for("Speed", good)

            await asyncio.to_thread(broker.stop)
            for name in ("Speed", "Current"):
                await samples.wait_for(name, bad(QualityReason.NO_COMMUNICATION))
            assert connector.granted_qos == {}
            await wait_until(lambda: not connector.connected, within=1.0, what="the connector to notice")

            seen = len(samples.of("Speed"))
            await asyncio.to_thread(broker.restart)
            await wait_until(lambda: connector.granted_qos.keys() == {"line/motor/speed", "line/motor/current"}, 5.0)
            await send(broker, "line/motor/speed", 1250)
            recovered = await samples.wait_for("Speed", good, after=seen)
            assert recovered.raw == 1250
            assert connector.connected
    for name in ("Speed", "Current"):
        outage = [sample for sample in samples.of(name) if sample.quality is Quality.BAD]
        assert len(outage) == 1, f"{name}: one bad sample per outage, not one per reconnect attempt"
    messages = [record.getMessage() for record in caplog.records]
    assert sum("unreachable" in message for message in messages) == 1
    assert sum("reachable again" in message for message in messages) == 1


async def test_a_silent_point_turns_uncertain_after_stale_after(mosquitto: MosquittoBroker) -> None:
    topic = f"{prefix()}/ambient"
    ambient = point("AmbientTemperature", topic)
    samples = Samples()
    async with running(device_of(mosquitto, stale_after=0.3), [ambient], samples):
        await send(mosquitto, topic, 22.5)
        fresh = await samples.wait_for("AmbientTemperature", good)
        stale = await samples.wait_for("AmbientTemperature", lambda sample: sample.quality is Quality.UNCERTAIN)
        assert stale.reason is QualityReason.LAST_USABLE
        assert stale.raw is None
        assert stale.source_time - fresh.source_time >= timedelta(seconds=0.3)

        await send(mosquitto, topic, 22.75)
        again = await samples.wait_for("AmbientTemperature", lambda sample: sample.raw == 22.75)
        assert again.quality is Quality.GOOD


# --- credentials and TLS ---------------------------------------------------------------------------


async def test_credentials_from_the_environment_are_accepted_and_wrong_ones_refused(
    mosquitto_factory: Callable[..., MosquittoBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = mosquitto_factory(users={"hub": "correct horse"})
    monkeypatch.setenv("AAS_TEST_MQTT_PASSWORD", "correct horse")
    speed = point("Speed", "motor/speed")
    accepted = device_of(broker, username="hub", password_env="AAS_TEST_MQTT_PASSWORD")
    async with running(accepted, [speed], Samples()) as connector:
        assert connector.granted_qos == {"motor/speed": 1}

    samples = Samples()
    refused = device_of(broker, username="hub", password="battery staple")
    async with running(refused, [speed], samples, subscribed=False) as connector:
        await samples.wait_for("Speed", bad(QualityReason.COMMUNICATION_ERROR))
        assert not connector.connected


async def test_tls_with_the_brokers_ca_connects_and_an_untrusted_broker_is_refused(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = mosquitto_factory(tls=tls)
    speed = point("Speed", "motor/speed")
    async with running(device_of(broker, tls=True, ca_file=tls.ca_certificate), [speed], Samples()) as connector:
        assert connector.granted_qos == {"motor/speed": 1}

    samples = Samples()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async with running(device_of(broker, tls=True), [speed], samples, subscribed=False) as connector:
            await samples.wait_for("Speed", bad(QualityReason.NO_COMMUNICATION))
            assert not connector.connected
    assert any("CERTIFICATE_VERIFY_FAILED" in record.getMessage() for record in caplog.records)


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"topic": "plant/#/temperature"}, "points\\[0\\] \\(Speed\\).topic: '#' must be a whole last level"),
        ({"topic": "plant/oven+/temperature"}, "points\\[0\\] \\(Speed\\).topic: '\\+' must be a whole level"),
        ({"value_path": "$.[["}, "points\\[0\\] \\(Speed\\).value_path: invalid JSONPath"),
        ({"timestamp_path": "$..[?("}, "points\\[0\\] \\(Speed\\).timestamp_path: invalid JSONPath"),
    ],
)
def test_invalid_topic_filters_and_paths_are_refused_when_the_mapping_loads(
    fields: dict[str, str], message: str
) -> None:
    document = {
        "devices": [{"name": DEVICE, "protocol": "mqtt", "host": "127.0.0.1"}],
        "points": [
            {
                "name": "Speed",
                "device": DEVICE,
                "target": {"submodel": "urn:test:submodel:operational-data", "path": "Speed"},
                "topic": fields.pop("topic", "motor/speed"),
                **fields,
            }
        ],
    }
    with pytest.raises(MappingError, match=message):
        parse_mapping(document, "line.yaml")


def test_a_missing_password_variable_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AAS_TEST_MQTT_NO_SUCH_PASSWORD", raising=False)
    device = device_at("127.0.0.1", 1883, username="hub", password_env="AAS_TEST_MQTT_NO_SUCH_PASSWORD")
    with pytest.raises(ConfigurationError, match="AAS_TEST_MQTT_NO_SUCH_PASSWORD"):
        MqttConnector(device, [point("Speed", "motor/speed")], Samples())

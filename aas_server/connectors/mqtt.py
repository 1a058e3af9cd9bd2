"""MQTT: the connector for device data published as JSON to a broker (paho, as in ``events.mqtt``).

``MqttConnector`` is an MQTT 3.1.1 client (OASIS MQTT Version 3.1.1) of one broker. It subscribes to
the distinct topic filters of its points at the device's QoS (default 1, section 4.3.2) and turns
every message on a matching topic (``+`` and ``#`` wildcards, section 4.7) into one ``RawSample``
per point: ``raw`` is the JSON value at the point's ``value_path`` (one match: that value; several:
the list of them in document order), ``source_time`` the value at ``timestamp_path`` read as
ISO 8601 (a time without offset is UTC), seconds or milliseconds since the Unix epoch, else the
arrival time. A payload that is not JSON, a ``value_path`` that finds nothing and a JSON ``null``
give a bad sample (``DECODE_ERROR``) for that point; a timestamp that cannot be read keeps the
value good with the arrival time. Both are logged at most once a minute per point, and the
connector keeps running. An empty payload (which clears a retained message, section 3.3.1.3) is
ignored.

Connection. paho's network loop runs in its own thread (``loop_start``); every callback hands its
result to the event loop with ``call_soon_threadsafe``, and decoding runs in that thread, not on the
event loop. The session is clean (``clean_session`` 1, section 3.1.2.4): after every (re)connect the
connector subscribes again, and the broker sends retained messages afresh, so values published as
retained are current again right after an outage. A broker that cannot be reached or drops the
connection makes every point bad (``NO_COMMUNICATION``; a refused CONNECT: ``COMMUNICATION_ERROR``)
once, is logged once when it goes and once when it comes back, and is reconnected by paho with
capped exponential backoff (``reconnect_backoff``). Points stay bad until their next message. A
point without a message for ``stale_after`` seconds gets an uncertain sample (``LAST_USABLE``,
``raw`` ``None``: the store keeps the last value).

Writes publish ``{"value": <value>}`` to the point's ``write_topic`` at the device's QoS and wait
for the broker's acknowledgement (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0: until sent).

Left out: MQTT 5 (properties, message expiry), persistent sessions, client certificates, payloads
other than JSON, and withdrawing a write the broker did not acknowledge: QoS 1 is at-least-once
and paho sends an unacknowledged message again after reconnecting.

The other direction, the hub's change events published to a broker, is the events edge
(``aas_server.events.mqtt``): this module only reads devices.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from jsonpath_ng import JSONPath
from paho.mqtt import client as mqtt

from aas_server.connectors.base import ConnectorContext, SampleSink
from aas_server.connectors.broker import BrokerConnector
from aas_server.errors import (
    NotFoundError,
    NotWritableError,
    TypeMismatchError,
)
from aas_server.mapping.json_paths import compile_json_path
from aas_server.mapping.schema import MqttDevice, MqttPoint, TimestampFormat
from aas_server.model.events import ProtocolValue, Quality, QualityReason, RawSample, RawWrite, utc_now

logger = logging.getLogger(__name__)

PROBLEM_LOG_INTERVAL = 60.0
"""Seconds between two log lines about undecodable messages of the same point."""


def parse_timestamp(value: Any, timestamp_format: TimestampFormat) -> datetime:
    """A source timestamp from a payload, as a timezone-aware UTC ``datetime``; ``ValueError`` if unusable.

    ``iso8601``: a string (ISO 8601 / RFC 3339, ``Z`` or an offset; none means UTC). ``epoch-s`` and
    ``epoch-ms``: a number (or a string of one) of seconds or milliseconds since 1970-01-01T00:00:00Z.
    """
    if timestamp_format is TimestampFormat.ISO8601:
        if not isinstance(value, str):
            raise ValueError(f"expected an ISO 8601 string, got {value!r}")
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    seconds = float(value)
    if timestamp_format is TimestampFormat.EPOCH_MILLISECONDS:
        seconds /= 1000
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite number")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError) as error:
        raise ValueError(f"{value!r} is out of range: {error}") from None


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A sample for one point, and what went wrong (to log) if anything."""

    sample: RawSample
    problem: str | None = None


class _PointDecoder:
    """One point's compiled JSONPaths and how it reads a payload."""

    def __init__(self, device: MqttDevice, point: MqttPoint) -> None:
        self.device = device
        self.point = point
        # the mapping schema checked both paths when the point was made
        self.value_path: JSONPath = compile_json_path(point.value_path)
        self.timestamp_path = compile_json_path(point.timestamp_path) if point.timestamp_path else None

    def bad(self, time: datetime, problem: str) -> _Decoded:
        sample = RawSample(self.device.name, self.point.name, None, time, Quality.BAD, QualityReason.DECODE_ERROR)
        return _Decoded(sample, problem)

    def decode(self, document: Any, topic: str, arrival: datetime) -> _Decoded:
        values = [match.value for match in self.value_path.find(document)]
        if not values:
            return self.bad(arrival, f"value_path {self.point.value_path} finds nothing in the payload on {topic!r}")
        value = values[0] if len(values) == 1 else values
        if value is None:
            return self.bad(arrival, f"value_path {self.point.value_path} is null in the payload on {topic!r}")
        source_time, problem = arrival, None
        if self.timestamp_path is not None:
            stamps = [match.value for match in self.timestamp_path.find(document)]
            if len(stamps) != 1:
                problem = f"timestamp_path {self.point.timestamp_path} finds {len(stamps)} values on {topic!r}"
            else:
                try:
                    source_time = parse_timestamp(stamps[0], self.point.timestamp_format)
                except ValueError as error:
                    problem = f"unusable {self.point.timestamp_format.value} timestamp on {topic!r}: {error}"
            if problem is not None:
                problem += "; the arrival time is used"
        return _Decoded(RawSample(self.device.name, self.point.name, value, source_time), problem)


class _ProblemLog:
    """Logs a recurring problem of a point at most once per interval, and its end once."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def report(self, point: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(point)
        if last is not None and now - last[0] < self._interval:
            self._last[point] = (last[0], last[1] + 1)
            return
        suppressed = f" ({last[1]} more since the last report)" if last is not None and last[1] else ""
        logger.warning("MQTT point %r: %s%s", point, message, suppressed)
        self._last[point] = (now, 0)

    def resolved(self, point: str) -> None:
        if self._last.pop(point, None) is not None:
            logger.info("MQTT point %r: messages decode again", point)


class MqttConnector(BrokerConnector[MqttDevice, MqttPoint]):
    """Subscribes to one broker for its points' values and publishes writes to it; one instance per device.

    ``sink`` receives every ``RawSample`` synchronously on the event loop; it must not block.
    """

    KIND = "MQTT"

    def __init__(self, device: MqttDevice, points: Sequence[MqttPoint], sink: SampleSink) -> None:
        super().__init__(logger, device, points, sink)
        self._decoders_by_filter: dict[str, list[_PointDecoder]] = {}
        for point in points:
            self._decoders_by_filter.setdefault(point.topic, []).append(_PointDecoder(device, point))
        self._filters = list(self._decoders_by_filter)
        self._granted_qos: dict[str, int] = {}
        self._last_message: dict[str, float] = {}
        self._message_arrived = asyncio.Event()
        self._problems = _ProblemLog(PROBLEM_LOG_INTERVAL)

    @property
    def granted_qos(self) -> Mapping[str, int]:
        """Topic filter -> QoS the broker granted in its SUBACK on the current connection (empty until then)."""
        return dict(self._granted_qos)

    async def start(self) -> None:
        """Start connecting and subscribing in the background; does not wait for, nor fail on, an unreachable broker."""
        await super().start()
        device = self.device
        if device.stale_after is not None:
            self._supervisor.spawn(self._watch_staleness(device.stale_after), f"mqtt {device.name} staleness")

    def _on_accepted(self, client: mqtt.Client) -> None:
        if self._filters:
            client.subscribe([(topic_filter, int(self.device.qos)) for topic_filter in self._filters])

    def _forget_connection(self) -> None:
        self._granted_qos.clear()

    def _on_unreachable(self) -> None:
        self._last_message.clear()

    # --- paho's thread ----------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        arrival = utc_now()
        try:
            decoded = self._decode(message.topic, bytes(message.payload), arrival)
        except Exception:
            logger.exception("MQTT device %r: cannot handle a message", self.device.name)
            return
        if decoded:
            self._to_loop(self._deliver, decoded)

    def _decode(self, topic: str, payload: bytes, arrival: datetime) -> list[_Decoded]:
        decoders = [
            decoder
            for topic_filter, decoders in self._decoders_by_filter.items()
            if mqtt.topic_matches_sub(topic_filter, topic)
            for decoder in decoders
        ]
        if not decoders or not payload:
            return []
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            return [decoder.bad(arrival, f"the payload on {topic!r} is not JSON ({error})") for decoder in decoders]
        return [decoder.decode(document, topic, arrival) for decoder in decoders]

    # --- the event loop ---------------------------------------------------------------------------

    def _deliver(self, decoded: list[_Decoded]) -> None:
        if self._supervisor.stopping:
            return
        loop = asyncio.get_running_loop()
        for item in decoded:
            sample = item.sample
            if item.problem is not None:
                self._problems.report(sample.point, item.problem)
            else:
                self._problems.resolved(sample.point)
            if sample.quality is Quality.GOOD:
                self._last_message[sample.point] = loop.time()
                self._message_arrived.set()
            else:
                self._last_message.pop(sample.point, None)
            self._supervisor.emit(sample)

    def _subscribed(self, reason_values: list[int]) -> None:
        if self._supervisor.stopping:
            return
        for topic_filter, value in zip(self._filters, reason_values, strict=False):
            if value >= 0x80:
                logger.warning(
                    "MQTT broker of device %r refused the subscription to %r (reason code %#x)",
                    self.device.name,
                    topic_filter,
                    value,
                )
                self._supervisor.emit_without_value(
                    self.device.name,
                    (decoder.point.name for decoder in self._decoders_by_filter[topic_filter]),
                    QualityReason.COMMUNICATION_ERROR,
                )
                continue
            if value < self.device.qos:
                logger.info(
                    "MQTT broker of device %r granted QoS %d (not %d) for %r",
                    self.device.name,
                    value,
                    self.device.qos,
                    topic_filter,
                )
            self._granted_qos[topic_filter] = value

    async def _watch_staleness(self, stale_after: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._last_message:
                self._message_arrived.clear()
                await self._message_arrived.wait()
                continue
            now = loop.time()
            due = min(self._last_message.values()) + stale_after
            if due > now:
                await asyncio.sleep(due - now)
                continue
            stale = [name for name, last in self._last_message.items() if last + stale_after <= now]
            for name in stale:
                del self._last_message[name]
                logger.debug("MQTT point %r: no message for %g s; its value is uncertain", name, stale_after)
            self._supervisor.emit_without_value(self.device.name, stale, QualityReason.LAST_USABLE, Quality.UNCERTAIN)

    # --- writing ----------------------------------------------------------------------------------

    async def write(self, raw: RawWrite[ProtocolValue]) -> None:
        """Publish ``{"value": raw.raw}`` to the point's ``write_topic``; returns once the broker acknowledged it.

        Raises ``NotFoundError`` for an unknown point, ``NotWritableError`` for a read-only one,
        ``TypeMismatchError`` when the value has no JSON form, ``DeviceError`` when not connected
        (nothing is sent) or the connection is lost before the acknowledgement, and
        ``DeviceTimeoutError`` without an acknowledgement within the device's ``timeout`` (the
        message may still be delivered later).
        """
        point = self._points.get(raw.point)
        if point is None:
            raise NotFoundError(f"device {self.device.name!r} has no point {raw.point!r}")
        if not point.writable or point.write_topic is None:
            raise NotWritableError(f"point {point.name!r} of device {self.device.name!r} is read-only")
        try:
            payload = orjson.dumps({"value": raw.raw})
        except TypeError as error:
            raise TypeMismatchError(f"value {raw.raw!r} of point {point.name!r} has no JSON form: {error}") from None
        late = (
            f"the broker did not acknowledge the write of {point.name!r} within {self.device.timeout:g} s; "
            "it may still be delivered"
        )
        await self._publish(point.write_topic, payload, self.device.qos, late)


# --- the protocol registry's entry points ---------------------------------------------------------


def create_connector(device: MqttDevice, points: Sequence[MqttPoint], context: ConnectorContext) -> MqttConnector:
    """The connector of an MQTT broker of device data (``mapping.schema.PROTOCOLS``)."""
    return MqttConnector(device, points, context.sink)


def with_endpoint(device: MqttDevice, endpoint: str) -> MqttDevice:
    """``device`` at ``host:port``."""
    host, _, port = endpoint.rpartition(":")
    return device.model_copy(update={"host": host, "port": int(port)})

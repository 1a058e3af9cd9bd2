"""A Sparkplug B edge node for tests: paho and the Tahu protobuf classes, publishing to a real broker.

``EdgeNodeSimulator`` plays one edge node (group id, edge node id) and the devices behind it, as
Eclipse Sparkplug 3.0 describes them: NBIRTH with ``bdSeq`` and ``seq`` 0, DBIRTH, NDATA and DDATA
with the following ``seq`` numbers (0..255, wrapping), DDEATH and NDEATH, and an MQTT will that
is the NDEATH of the current session. It records the commands (NCMD, DCMD) the host sends it, and
can publish anything at all (a broken payload, a skipped ``seq``) to play a faulty node::

    with EdgeNodeSimulator(broker.host, broker.port, "plant", "line-1") as node:
        node.node_birth([Metric("Temperature", 21.5, DOUBLE, alias=1)])
        node.node_data([Metric(None, 22.0, alias=1)])
        command = node.wait_for_command(lambda c: c.kind == "NCMD")

It builds payloads itself (not with the hub's connector code), so the tests check the connector
against the protocol, not against itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from leaf_device.proto import sparkplug_b_pb2 as spb
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = 9, 10, 11, 12, 13
DATASET = 16


def milliseconds(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Metric:
    """One metric of a payload: name and/or alias, value, datatype (births need it) and timestamp."""

    name: str | None
    value: Any
    datatype: int | None = None
    alias: int | None = None
    timestamp: datetime | None = None
    is_null: bool = False

    def into(self, payload: Any) -> None:
        metric = payload.metrics.add()
        if self.name is not None:
            metric.name = self.name
        if self.alias is not None:
            metric.alias = self.alias
        if self.timestamp is not None:
            metric.timestamp = milliseconds(self.timestamp)
        if self.datatype is not None:
            metric.datatype = self.datatype
        if self.is_null:
            metric.is_null = True
            return
        value = self.value
        if isinstance(value, bool):
            metric.boolean_value = value
        elif isinstance(value, int):
            if self.datatype in (INT64, UINT64, DATETIME):
                metric.long_value = value % 2**64
            else:
                metric.int_value = value % 2**32
        elif isinstance(value, float):
            if self.datatype == FLOAT:
                metric.float_value = value
            else:
                metric.double_value = value
        elif isinstance(value, str):
            metric.string_value = value
        elif isinstance(value, bytes):
            metric.bytes_value = value


@dataclass(frozen=True)
class Command:
    """An NCMD or DCMD the host sent: its kind, device (DCMD) and metrics by name."""

    kind: str
    device: str | None
    metrics: dict[str, Any]
    """Metric name -> the decoded protobuf metric."""


class EdgeNodeSimulator:
    """One Sparkplug B edge node on a broker; a plain paho client with its network loop in a thread."""

    def __init__(self, host: str, port: int, group: str, node: str, bd_seq: int = 0) -> None:
        self.host, self.port = host, port
        self.group, self.node = group, node
        self.bd_seq = bd_seq
        self.seq = 0
        self.commands: list[Command] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{group}-{node}-{time.monotonic_ns()}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.will_set(self.topic("NDEATH"), self._death_payload(bd_seq), qos=1)

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.node}"
        return base if device is None else f"{base}/{device}"

    # --- connection -------------------------------------------------------------------------------

    def start(self) -> Self:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(5.0):
            raise TimeoutError("the edge node simulator got no SUBACK from the broker")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # paho leaves its wake-up socket pair to the GC

    def vanish(self) -> None:
        """Drop the connection without DISCONNECT, as a node that loses power: the broker publishes the will."""
        self._client.loop_stop()
        # closes the connection without a word, and paho's wake-up socket pair (otherwise left to the GC)
        self._client._reset_sockets()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe([(self.topic("NCMD"), 0), (self.topic("DCMD", "+"), 0)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        levels = message.topic.split("/")
        payload = spb.Payload.FromString(bytes(message.payload))
        command = Command(levels[2], levels[4] if len(levels) == 5 else None, {m.name: m for m in payload.metrics})
        with self._changed:
            self.commands.append(command)
            self._changed.notify_all()

    def wait_for_command(self, check: Callable[[Command], bool], within: float = 5.0) -> Command:
        """The first recorded command that passes ``check``, waiting up to ``within`` seconds (blocking)."""
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                for command in self.commands:
                    if check(command):
                        return command
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching command within {within} s; got {self.commands}")
                self._changed.wait(left)

    # --- publishing -------------------------------------------------------------------------------

    def publish_raw(self, kind: str, payload: bytes, device: str | None = None) -> None:
        """Publish ``payload`` as it is (QoS 0, like Sparkplug data) and wait until it is sent."""
        self._client.publish(self.topic(kind, device), payload, qos=0).wait_for_publish(5.0)

    def _payload(self, metrics: Sequence[Metric], timestamp: datetime | None, seq: int | None) -> bytes:
        payload = spb.Payload()
        payload.timestamp = milliseconds(timestamp) if timestamp is not None else time.time_ns() // 1_000_000
        if seq is not None:
            payload.seq = seq
        for metric in metrics:
            metric.into(payload)
        return bytes(payload.SerializeToString())

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def _death_payload(self, bd_seq: int) -> bytes:
        payload = spb.Payload()
        payload.timestamp = time.time_ns() // 1_000_000
        Metric("bdSeq", bd_seq, INT64).into(payload)
        return bytes(payload.SerializeToString())

    def node_birth(
        self, metrics: Sequence[Metric], timestamp: datetime | None = None, with_bd_seq: bool = True
    ) -> None:
        """NBIRTH of a new session: ``bdSeq`` and ``seq`` 0 (``bd_seq`` is that of the will)."""
        self.seq = 0
        bd_seq = [Metric("bdSeq", self.bd_seq, INT64)] if with_bd_seq else []
        self.publish_raw("NBIRTH", self._payload([*bd_seq, *metrics], timestamp, self._next_seq()))

    def device_birth(self, device: str, metrics: Sequence[Metric], timestamp: datetime | None = None) -> None:
        self.publish_raw("DBIRTH", self._payload(metrics, timestamp, self._next_seq()), device)

    def node_data(self, metrics: Sequence[Metric], timestamp: datetime | None = None) -> None:
        self.publish_raw("NDATA", self._payload(metrics, timestamp, self._next_seq()))

    def device_data(self, device: str, metrics: Sequence[Metric], timestamp: datetime | None = None) -> None:
        self.publish_raw("DDATA", self._payload(metrics, timestamp, self._next_seq()), device)

    def device_death(self, device: str) -> None:
        self.publish_raw("DDEATH", self._payload([], None, self._next_seq()), device)

    def node_death(self, bd_seq: int | None = None) -> None:
        """NDEATH sent by the node itself (of session ``bd_seq``, by default the current one)."""
        self.publish_raw("NDEATH", self._death_payload(self.bd_seq if bd_seq is None else bd_seq))

    def skip(self, count: int = 1) -> None:
        """Lose ``count`` sequence numbers: the next message shows a gap."""
        self.seq = (self.seq + count) % 256

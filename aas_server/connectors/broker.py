"""A connection to an MQTT broker through paho, shared by the MQTT and the Sparkplug B connectors.

``BrokerConnector`` owns the paho client and its thread: it connects in the background with the
device's credentials, TLS and backoff, hands paho's callbacks to the event loop, turns a refused or
lost connection into bad samples once (``ConnectionSupervisor``), and resolves or fails the writes
waiting for the broker. A subclass subscribes after each connect, decodes messages and builds the
payload of a write; it tells what it does through the hooks below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from aas_server.config import secret_from_environment
from aas_server.connectors.base import ConnectionSupervisor, SampleSink, SupervisedConnector
from aas_server.errors import DeviceError, DeviceTimeoutError
from aas_server.mapping.point_base import PointBase
from aas_server.mapping.protocols.mqtt import BrokerDevice
from aas_server.model.events import QualityReason
from aas_server.security.tls import client_context

DeviceT = TypeVar("DeviceT", bound=BrokerDevice)
PointT = TypeVar("PointT", bound=PointBase)


class BrokerConnector(SupervisedConnector, Generic[DeviceT, PointT]):
    """One paho client connected to the broker of ``device``, for ``points``; one instance per device."""

    KIND: ClassVar[str]
    """The protocol as log lines name it (``MQTT``, ``Sparkplug B``)."""
    WRITE: ClassVar[str] = "write"
    """What a write is called in errors (``write``, ``command``)."""
    WRITE_STOPPED: ClassVar[str] = "the connector stopped before the broker acknowledged the write"
    WRITE_LOST: ClassVar[str] = (
        "the connection to the broker was lost before it acknowledged the write; "
        "paho sends it again after reconnecting, so it may still arrive"
    )
    """Why a write still waiting fails when the connector stops, and when the connection is lost."""

    def __init__(self, logger: logging.Logger, device: DeviceT, points: Sequence[PointT], sink: SampleSink) -> None:
        subject = f"{self.KIND} broker of device {device.name!r} at {device.host}:{device.port}"
        # paho waits between attempts itself (reconnect_backoff); the supervisor's backoff goes unused
        self._supervisor = ConnectionSupervisor.of_device(logger, subject, device, points, sink)
        self.device = device
        self._points = {point.name: point for point in points}
        self._filters: list[str] = []
        location = f"device {device.name!r}"
        self._password = secret_from_environment(device.password, device.password_env, location)
        self._tls_context = client_context(device.ca_file, location) if device.tls else None
        self._client_id = device.client_id or f"aas-server-{device.name}-{secrets.token_hex(4)}"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._pending_writes: dict[int, asyncio.Future[None]] = {}

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection (CONNACK) and it is open now."""
        return self._connected

    @property
    def topic_filters(self) -> list[str]:
        """The distinct topic filters subscribed to, in point order."""
        return list(self._filters)

    # --- hooks ------------------------------------------------------------------------------------

    def _before_connect(self, client: mqtt.Client) -> None:
        """In paho's thread or at start, before each connection attempt (a will, for example)."""

    def _on_accepted(self, client: mqtt.Client) -> None:
        """In paho's thread, when the broker accepted a connection: subscribe, announce."""

    async def _before_disconnect(self, client: mqtt.Client) -> None:
        """On the event loop, before a stop disconnects."""

    def _forget_connection(self) -> None:
        """On the event loop, when the connection ends: drop what the broker granted on it."""

    def _on_unreachable(self) -> None:
        """On the event loop, the first time the broker is found unreachable after being reachable."""

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and subscribing in the background; does not wait for, nor fail on, an unreachable broker."""
        self._loop = asyncio.get_running_loop()
        self._supervisor.stopping = False
        device = self.device
        backoff = device.reconnect_backoff
        client = _new_client(
            self._client_id,
            MQTTProtocolVersion.MQTTv311,  # with a clean session: paho's default for 3.1.1
            device.timeout,
            (backoff.initial, backoff.maximum),
            device.username,
            self._password,
            self._tls_context,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._before_connect(client)
        client.connect_async(device.host, device.port, keepalive=device.keepalive)
        self._client = client
        client.loop_start()

    async def stop(self) -> None:
        """Disconnect and stop paho's thread (off the event loop); pending writes fail with ``DeviceError``."""
        await self._supervisor.stop()
        client, self._client = self._client, None
        if client is not None:
            await self._before_disconnect(client)
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        self._connected = False
        self._forget_connection()
        self._fail_pending_writes(self.WRITE_STOPPED)

    # --- paho's thread ----------------------------------------------------------------------------

    def _to_loop(self, callback: Callable[..., None], *arguments: Any) -> None:
        _call_on_loop(self._loop, callback, *arguments)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            self._to_loop(self._connection_refused, str(reason))
            return
        self._on_accepted(client)
        self._to_loop(self._connection_made)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._before_connect(client)
        error = sys.exc_info()[1]  # paho calls this while it handles the OSError of the attempt
        self._to_loop(self._connection_lost, str(error) if error is not None else "connection refused or timed out")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        self._before_connect(client)
        self._to_loop(self._connection_lost, f"connection lost: {reason}")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        self._to_loop(self._subscribed, [reason.value for reason in reasons])

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._to_loop(self._published, mid, None if not reason.is_failure else str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

    # --- the event loop ---------------------------------------------------------------------------

    def _subscribed(self, reason_values: list[int]) -> None:
        """The broker's SUBACK: one reason code per topic filter, in order."""

    def _connection_made(self) -> None:
        if self._supervisor.stopping:
            return
        self._connected = True
        self._supervisor.mark_reachable()

    def _connection_refused(self, reason: str) -> None:
        self._mark_unreachable(f"the broker refused the connection: {reason}", QualityReason.COMMUNICATION_ERROR)

    def _connection_lost(self, reason: str) -> None:
        self._mark_unreachable(reason, QualityReason.NO_COMMUNICATION)

    def _mark_unreachable(self, reason: str, quality_reason: QualityReason) -> None:
        if self._supervisor.stopping:
            return
        self._connected = False
        self._forget_connection()
        self._fail_pending_writes(self.WRITE_LOST)
        if self._supervisor.mark_unreachable(reason):
            self._on_unreachable()
            self._supervisor.emit_without_value(self.device.name, self._points, quality_reason)

    # --- writing ----------------------------------------------------------------------------------

    def _connected_client(self) -> mqtt.Client:
        """The client, if connected; else ``DeviceError`` (nothing is sent)."""
        client = self._client
        if client is None or not self._connected:
            raise DeviceError(f"not connected to the broker; the {self.WRITE} was not sent", device=self.device.name)
        return client

    async def _publish(self, topic: str, payload: bytes, qos: int, late: str) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1 and 2) or paho sent it (QoS 0).

        ``DeviceError`` when not connected or paho cannot publish; ``DeviceTimeoutError`` saying
        ``late`` after the device's ``timeout``.
        """
        client = self._connected_client()
        info = client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # paho keeps a QoS 1 or 2 message for the next connection and drops a QoS 0 one
            later = "paho sends the message after reconnecting, so it may still arrive" if qos else "it was dropped"
            raise DeviceError(
                f"the connection to the broker was lost while publishing to {topic!r}; {later}",
                device=self.device.name,
            )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise DeviceError(f"publishing to {topic!r} failed: {mqtt.error_string(info.rc)}", device=self.device.name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_writes[info.mid] = done
        if info.is_published():
            done.set_result(None)
        try:
            async with asyncio.timeout(self.device.timeout):
                await done
        except TimeoutError:
            raise DeviceTimeoutError(late, device=self.device.name) from None
        finally:
            if self._pending_writes.get(info.mid) is done:
                del self._pending_writes[info.mid]

    def _published(self, mid: int, failure: str | None) -> None:
        done = self._pending_writes.get(mid)
        if done is None or done.done():
            return
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(DeviceError(f"the broker refused the {self.WRITE}: {failure}", device=self.device.name))

    def _fail_pending_writes(self, message: str) -> None:
        for done in self._pending_writes.values():
            if not done.done():
                done.set_exception(DeviceError(message, device=self.device.name))


def _new_client(
    client_id: str,
    protocol: MQTTProtocolVersion,
    timeout: float,
    reconnect_delay: tuple[float, float],
    username: str | None,
    password: str | None,
    tls_context: ssl.SSLContext | None,
) -> mqtt.Client:
    """A paho client with the hub's common settings: own reconnects, exceptions kept in paho's thread."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, reconnect_on_failure=True)
    client.suppress_exceptions = True
    client.connect_timeout = timeout
    # paho computes with these as seconds; fractions work although its signature says int.
    client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]
    if username is not None:
        client.username_pw_set(username, password)
    if tls_context is not None:
        client.tls_set_context(tls_context)
    return client


def _call_on_loop(loop: asyncio.AbstractEventLoop | None, callback: Callable[..., None], *arguments: Any) -> None:
    """Hand ``callback`` from paho's thread to the event loop (dropped once the loop is gone)."""
    if loop is None or loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *arguments)

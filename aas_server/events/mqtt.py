"""MQTT change events: the hub's northbound publisher of its durable outbox (paho, as in ``connectors.mqtt``).

``MqttEventPublisher`` is an MQTT 5 client (OASIS MQTT Version 5.0) that publishes the hub's change
events from the durable outbox (``store.outbox``) in sequence order and removes each event only once
the broker acknowledged it (PUBACK, section 4.3.2; PUBCOMP for QoS 2). See its docstring and
``docs/events.md``. Topics and payloads are built by ``runtime.events``; this module only carries them.

paho has two homes: this edge, which publishes northbound, and ``connectors.mqtt``, which reads
devices southbound. Edges never import each other, so each builds its own paho client; what they
share without paho (the password from the environment, the client TLS context) is in ``config`` and
``security.tls``.

Left out: persistent sessions, MQTT 3.1.1 brokers, client certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from aas_server.config import EventSettings, secret_from_environment
from aas_server.errors import PersistenceError
from aas_server.lifecycle import Service, cancel_and_wait
from aas_server.security.tls import client_context
from aas_server.store.outbox import SEQUENCE_PROPERTY, Outbox, PendingEvent

logger = logging.getLogger(__name__)

REJECTION_LOG_INTERVAL = 60.0
"""Seconds between two log lines about events the broker refused."""


def _variable_byte_integer(value: int) -> bytes:
    """MQTT 5.0, section 1.5.5."""
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _utf8_string(text: str) -> bytes:
    """MQTT 5.0, section 1.5.4: a two-byte length, then the UTF-8 bytes."""
    encoded = text.encode()
    return len(encoded).to_bytes(2, "big") + encoded


_CONTENT_TYPE = b"\x03" + _utf8_string("application/json")
_SEQUENCE_NAME = b"\x26" + _utf8_string(SEQUENCE_PROPERTY)


class PublishProperties:
    """The PUBLISH properties of an event, packed once (MQTT 5.0, section 3.3.2.3): content type and sequence.

    paho's ``Properties`` costs about 0.2 ms per message to build and pack; paho only calls
    ``pack`` on what it is given, so this stands in for it (``tests/test_events.py`` compares the
    bytes with paho's own).
    """

    __slots__ = ("_packed", "sequence")

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        body = _CONTENT_TYPE + _SEQUENCE_NAME + _utf8_string(str(sequence))
        self._packed = _variable_byte_integer(len(body)) + body

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        return f"[ContentType : application/json, UserProperty : [('{SEQUENCE_PROPERTY}', '{self.sequence}')]]"


class MqttEventPublisher(Service):
    """Publishes the events of an ``Outbox`` to one broker, in sequence order, and removes each once acknowledged.

    An MQTT 5 client with a clean start. Events are read from the outbox in sequence order and
    handed to paho at the configured QoS (``EventSettings.qos``), at most ``window`` at a time
    (paho's in-flight limit is the same, so they go out in that order and the broker forwards
    them in that order, MQTT 5.0 section 4.6); every message carries its sequence as the user
    property ``sequence`` (section 3.3.2.3.7) and the content type ``application/json``. When the
    broker acknowledges an event it is removed from the outbox (deletes are batched: those
    acknowledged while the previous delete ran go in the next). Nothing is removed before that:
    if the connection drops, paho sends the unacknowledged messages again after reconnecting
    (duplicates are possible, with the same sequence), and after a restart of the hub the outbox
    is published from its first event. An event the broker refuses (a PUBACK reason code of
    0x80 or above, e.g. not authorised) is counted in ``rejected``, logged as an error (at most
    once a minute, with the count) and removed, since sending it again would not help.

    The broker's absence is logged once when it goes and once when it comes back; paho
    reconnects with capped exponential backoff. Call ``notify`` whenever events were added.
    Counters: ``published`` (messages handed to the client, resends not counted),
    ``acknowledged``, ``rejected``, ``pending`` (events in the outbox).
    """

    def __init__(
        self,
        settings: EventSettings,
        outbox: Outbox,
        *,
        window: int = 100,
        reconnect_delay: tuple[float, float] = (0.25, 5.0),
    ) -> None:
        self.settings = settings
        self._outbox = outbox
        self._window = window
        self._reconnect_delay = reconnect_delay
        secret = settings.password.get_secret_value() if settings.password is not None else None
        self._password = secret_from_environment(secret, settings.password_env, "events.password_env")
        self._tls_context = client_context(settings.ca_file, "events.ca_file") if settings.tls else None
        self._client_id = settings.client_id or f"aas-server-events-{secrets.token_hex(4)}"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._more = True
        """The outbox may hold events after ``_last_sequence``."""
        self._last_sequence = 0
        """The highest sequence handed to paho."""
        self._in_flight: dict[int, int] = {}
        """Message id -> sequence of events handed to paho and not yet acknowledged."""
        self._delivered: list[int] = []
        """Sequences acknowledged (or refused) and not yet removed from the outbox."""
        self._connected = False
        self._reachable: bool | None = None
        self._storage_failing = False
        self._last_rejection_log: float | None = None
        self._unreported_rejections = 0
        self.published = 0
        self.acknowledged = 0
        self.rejected = 0

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection (CONNACK) and it is open now."""
        return self._connected

    @property
    def pending(self) -> int:
        """Events in the outbox: not yet published, or published and not yet acknowledged."""
        return self._outbox.outbox_size

    @property
    def in_flight(self) -> int:
        """Events handed to the client and not yet acknowledged."""
        return len(self._in_flight)

    def notify(self) -> None:
        """New events are in the outbox (call on the event loop)."""
        self._more = True
        self._wake.set()

    async def start(self) -> None:
        """Start connecting and publishing in the background; an unreachable broker is not an error."""
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        client = self._new_client()
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(settings.host, settings.port, keepalive=30, clean_start=True)
        self._client = client
        client.loop_start()
        self._task = asyncio.create_task(self._publish_outbox(), name="mqtt event publisher")
        self.notify()

    async def stop(self) -> None:
        """Stop publishing, remove what was acknowledged, disconnect; the rest stays in the outbox."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        self._connected = False
        if self._delivered:
            with contextlib.suppress(PersistenceError):
                await self._outbox.outbox_remove(self._delivered)
            self._delivered = []

    # --- paho's thread ----------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        """An MQTT 5 paho client that reconnects by itself and keeps its exceptions in its own thread."""
        settings = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=True,
        )
        client.suppress_exceptions = True
        client.connect_timeout = settings.timeout
        client.max_inflight_messages_set(self._window)
        # paho computes with these as seconds; fractions work although its signature says int.
        client.reconnect_delay_set(*self._reconnect_delay)  # type: ignore[arg-type]
        if settings.username is not None:
            client.username_pw_set(settings.username, self._password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        return client

    def _to_loop(self, callback: Callable[..., None], *arguments: Any) -> None:
        """Hand ``callback`` from paho's thread to the event loop (dropped once the loop is gone)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *arguments)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            self._to_loop(self._connection_lost, f"the broker refused the connection: {reason}")
        else:
            self._to_loop(self._connection_made)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = sys.exc_info()[1]  # paho calls this while it handles the OSError of the attempt
        self._to_loop(self._connection_lost, str(error) if error is not None else "connection refused or timed out")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        self._to_loop(self._connection_lost, f"connection lost: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._to_loop(self._acknowledged, mid, str(reason) if reason.is_failure else None)

    # --- the event loop ---------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connection_made(self) -> None:
        if self._client is None:
            return
        self._connected = True
        if self._reachable is False:
            logger.info("MQTT event broker at %s is reachable again; %d events to publish", self._where, self.pending)
        else:
            logger.info("publishing change events to the MQTT broker at %s", self._where)
        self._reachable = True

    def _connection_lost(self, reason: str) -> None:
        if self._client is None:
            return
        self._connected = False
        if self._reachable is False:
            return
        self._reachable = False
        logger.warning(
            "MQTT event broker at %s is unreachable: %s; events are kept in the outbox until it is back",
            self._where,
            reason,
        )

    def _acknowledged(self, mid: int, failure: str | None) -> None:
        sequence = self._in_flight.pop(mid, None)
        if sequence is None:
            return
        if failure is None:
            self.acknowledged += 1
        else:
            self._reject(f"the MQTT event broker refused event {sequence}: {failure}")
        self._delivered.append(sequence)
        self._wake.set()

    def _reject(self, message: str) -> None:
        """Count an event that cannot be delivered; log it, at most once per ``REJECTION_LOG_INTERVAL``."""
        self.rejected += 1
        self._unreported_rejections += 1
        now = time.monotonic()
        if self._last_rejection_log is not None and now - self._last_rejection_log < REJECTION_LOG_INTERVAL:
            return
        logger.error(
            "%s; it is dropped (%d dropped since the last report, %d in total)",
            message,
            self._unreported_rejections,
            self.rejected,
        )
        self._last_rejection_log = now
        self._unreported_rejections = 0

    async def _publish_outbox(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._step()
            except PersistenceError as error:
                if not self._storage_failing:
                    logger.error("event outbox: %s; retrying", error)
                    self._storage_failing = True
                await asyncio.sleep(1.0)  # retry delay of a failing database, not synchronisation
                self._more = True
                self._wake.set()
            else:
                if self._storage_failing:
                    logger.info("event outbox works again")
                    self._storage_failing = False

    async def _step(self) -> None:
        """Hand the next events to paho as far as the window allows, then remove what was acknowledged."""
        refused = False
        room = self._window - len(self._in_flight)
        if self._more and room > 0:
            self._more = False
            events = await self._outbox.outbox_read(self._last_sequence, room)
            if len(events) == room:
                self._more = True
            for event in events:
                if not self._publish(event):
                    self._more = refused = True  # offered again at the next acknowledgement or notification
                    break
        if self._delivered:
            batch, self._delivered = self._delivered, []
            try:
                await self._outbox.outbox_remove(batch)
            except BaseException:
                self._delivered = batch + self._delivered
                raise
        if self._delivered or (self._more and not refused and self._window > len(self._in_flight)):
            self._wake.set()

    def _publish(self, event: PendingEvent) -> bool:
        """Hand one event to paho; ``False`` if it did not take it (it stays in the outbox)."""
        client = self._client
        if client is None:
            return False
        properties = cast(Properties, PublishProperties(event.sequence))
        self._last_sequence = event.sequence
        try:
            info = client.publish(event.topic, event.payload, qos=self.settings.qos, properties=properties)
        except ValueError as error:
            self._reject(f"event {event.sequence} on {event.topic!r} cannot be published ({error})")
            self._delivered.append(event.sequence)
            return True
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho (it keeps NO_CONN messages for the next connection).
            logger.warning("publishing event %d failed: %s", event.sequence, mqtt.error_string(info.rc))
            self._last_sequence = event.sequence - 1
            return False
        self._in_flight[info.mid] = event.sequence
        self.published += 1
        return True

"""MQTT change events through the durable outbox, and the cost of history recording, in one run.

Two figures, each against a baseline measured in the same run (ratios, since machines are noisy):

1. **Events delivered to a broker with the outbox on.** A private Mosquitto (``tests/mqtt_broker.py``,
   with ``max_queued_messages 0``: the broker queues without limit for a slow subscriber) and a
   subscriber in a separate process (a paho client, QoS 1 on ``#``) that counts what
   arrives per ``{repoId}``, the distinct sequences, and sequences out of order. In the driver
   process: a ``TwinStore`` journaled to a ``SqliteRepository`` and the hub's own
   ``start_event_publishing`` (``runtime/events.py``). ``--events`` device value changes
   (origin ``device:bench``, every one a new value) are applied with ``TwinStore.apply`` as fast as
   the store takes them (chunks of 1,000, yielding to the event loop between chunks); the change
   bus hands them to the collector, which appends them to the outbox in batches, and
   ``MqttEventPublisher`` publishes the outbox (QoS 1, its in-flight window) and removes what the
   broker acknowledged. Measured: the time from the first change until the publisher's
   ``acknowledged`` counter reaches N, until the outbox is empty, and until the subscriber process
   received all N (losses must be 0). Baseline: a bare paho client (MQTT 5, the same in-flight
   window, QoS 1) publishing the same N topics and payloads (same sizes, same PUBLISH properties)
   from a list, timed until its last PUBACK; hub and bare rounds alternate. Also printed: the driver
   process's CPU time per event (hub: store, collector, outbox, publisher; bare: paho alone).
   Beside it, client writes: ``--writes`` ``TwinStore.write_value`` calls (as REST ``PATCH
   .../$value`` makes them), ``--writers`` at a time on different submodels, each journaled with
   its event in one durable transaction; baseline: the same writes with events off.
2. **History recording on the ingest sample path.** The sample path of ``benchmarks/ingest.py``
   (pre-built ``RawSample`` objects through ``Hub._bind_points``/``MappingEngine.sink``: engine, store, change
   bus, one subscriber draining like the OPC UA sync) with the hub's ``start_history``
   (``runtime/history.py``) recording every change, against the same path without it;
   alternating rounds on the same store. A round with history counts until the recorder has
   written every sample of the round (``HistoryService.flush``), so its backlog is paid inside
   the round. Printed: samples/s on and off and their ratio, samples recorded, and the CPU time
   per sample of the event loop's thread and of the history database's worker thread. When
   recording costs more than 30 % (or with ``--profile always``) cProfile runs over a round with
   history and the largest costs are printed as ``file:line function`` with their share.

    .venv/bin/python benchmarks/events.py [--events 20000] [--rounds 3] [--writes 1000] [--writers 10]
        [--points 1000] [--history-seconds 2] [--history-rounds 3] [--parts events history]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import inspect
import json
import logging
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import ingest
from basyx.aas import model
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from aas_server.config import EventSettings, HistorySettings, HubSettings
from aas_server.events.mqtt import MqttEventPublisher, PublishProperties
from aas_server.model.events import ValueChanged, utc_now
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.events import EventPublishing, start_event_publishing
from aas_server.runtime.history import HistoryService, start_history
from aas_server.store.outbox import OutboxEncoder, pending_event
from aas_server.store.twin_store import TwinStore

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/mqtt_broker.py: the private Mosquitto of the tests

from tests.mqtt_broker import MosquittoBroker  # noqa: E402

WINDOW: int = inspect.signature(MqttEventPublisher.__init__).parameters["window"].default
"""The publisher's in-flight window (its default, which ``start_event_publishing`` uses); the baseline's too."""
CHUNK = 1000
"""Changes applied between two yields to the event loop."""
DEVICE_ORIGIN = "device:bench"
HISTORY_OVERHEAD_LIMIT = 0.30
"""Recording may cost this share of the sample path's throughput before it is profiled (``--profile auto``)."""
WAIT_STEP = 0.002
"""Seconds between two looks at the publisher's counters (the resolution of the acknowledged time)."""


# --- the model ------------------------------------------------------------------------------------


def submodel_id(index: int) -> str:
    return f"urn:aas-server:benchmark:events:sm:{index}"


def build_submodels(submodels: int, per_submodel: int) -> list[model.Identifiable]:
    """``submodels`` submodels of ``per_submodel`` xs:double Properties ``P000``, ``P001``, ..., all 0.0."""
    return [
        model.Submodel(
            submodel_id(index),
            id_short=f"Machine{index}",
            submodel_element=[model.Property(f"P{number:03d}", float, 0.0) for number in range(per_submodel)],
        )
        for index in range(submodels)
    ]


def device_changes(count: int, submodels: int, per_submodel: int) -> list[ValueChanged]:
    """``count`` device value changes round-robin over all Properties, every one a new value (1.0, 2.0, ...)."""
    points = submodels * per_submodel
    start = utc_now()
    return [
        ValueChanged(
            submodel_id(number % points // per_submodel),
            f"P{number % per_submodel:03d}",
            float(number + 1),
            start + timedelta(microseconds=number),
            server_time=start + timedelta(microseconds=number),
            origin=DEVICE_ORIGIN,
        )
        for number in range(count)
    ]


# --- the subscriber process -----------------------------------------------------------------------


@dataclass
class Arrivals:
    """What the subscriber received under one ``{repoId}`` (the second topic level)."""

    count: int = 0
    sequences: set[int] = field(default_factory=set)
    out_of_order: int = 0
    last_sequence: int = 0
    first: float = 0.0
    last: float = 0.0

    def summary(self, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "count": self.count,
            "distinct": len(self.sequences),
            "out_of_order": self.out_of_order,
            "first": self.first,
            "last": self.last,
        }


def sequence_of(payload: bytes | bytearray) -> int:
    """The ``"sequence": n`` member that ends every value event's payload."""
    start = payload.rfind(b'"sequence":') + len(b'"sequence":')
    return int(payload[start : payload.index(b"}", start)])


def subscribe(host: str, port: int) -> None:
    """The child process: count arrivals per ``{repoId}``; answer ``expect KEY N`` and ``report KEY`` on stdin.

    Prints JSON lines: ``{"ready": true}`` after the SUBACK, ``{"expecting": KEY}`` once an
    expectation is noted, ``{"complete": {...}}`` when N distinct sequences of KEY arrived, and
    ``{"state": {...}}`` in answer to ``report``. Ends when stdin closes.
    """
    lock = threading.Lock()
    arrivals: dict[str, Arrivals] = {}
    expected: dict[str, int] = {}
    subscribed = threading.Event()

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def check(key: str) -> None:
        found = arrivals.get(key)
        wanted = expected.get(key)
        if found is not None and wanted is not None and len(found.sequences) >= wanted:
            del expected[key]
            say({"complete": found.summary(key)})

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        client.subscribe("#", qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        key = message.topic.split("/", 2)[1]
        sequence = sequence_of(message.payload)
        with lock:
            found = arrivals.get(key)
            if found is None:
                found = arrivals[key] = Arrivals(first=now)
            found.count += 1
            found.last = now
            if sequence < found.last_sequence:
                found.out_of_order += 1
            found.last_sequence = max(found.last_sequence, sequence)
            found.sequences.add(sequence)
            check(key)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-subscriber-{secrets.token_hex(4)}")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10.0):
        raise SystemExit("no SUBACK within 10 s")
    say({"ready": True})
    for line in sys.stdin:
        command, key, *rest = line.split()
        with lock:
            if command == "expect":
                expected[key] = int(rest[0])
                say({"expecting": key})
                check(key)
            elif command == "report":
                say({"state": arrivals.get(key, Arrivals()).summary(key)})
    client.disconnect()
    client.loop_stop()


class Subscriber:
    """The subscriber process, seen from the driver: ``expect`` before producing, then ``complete``."""

    def __init__(self, host: str, port: int) -> None:
        self._command = [sys.executable, str(Path(__file__).resolve()), "--subscribe", host, str(port)]
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Subscriber:
        self._process = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        ready = self._future("ready", "")
        self._reader = asyncio.create_task(self._read(), name="subscriber lines")
        await asyncio.wait_for(ready, 20.0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        if process is not None and process.stdin is not None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _future(self, kind: str, key: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(kind, key)] = future
        return future

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            message: dict[str, Any] = json.loads(line)
            if "ready" in message:
                kind, key, body = "ready", "", message
            elif "expecting" in message:
                kind, key, body = "expecting", message["expecting"], message
            else:
                kind = "complete" if "complete" in message else "state"
                body = message[kind]
                key = body["key"]
            future = self._waiting.pop((kind, key), None)
            if future is not None and not future.done():
                future.set_result(body)

    async def _send(self, line: str) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")
        await self._process.stdin.drain()

    async def expect(self, key: str, count: int) -> asyncio.Future[dict[str, Any]]:
        """Note that ``count`` distinct events will arrive under ``key``; the future completes when they have."""
        complete = self._future("complete", key)
        noted = self._future("expecting", key)
        await self._send(f"expect {key} {count}")
        await asyncio.wait_for(noted, 10.0)
        return complete

    async def arrivals(self, key: str, complete: asyncio.Future[dict[str, Any]], within: float) -> dict[str, Any]:
        """The summary once all expected events arrived, or what arrived within ``within`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(complete), within)
        except TimeoutError:
            state = self._future("state", key)
            await self._send(f"report {key}")
            return await asyncio.wait_for(state, 10.0)


# --- 1. events through the outbox, and the bare paho baseline -------------------------------------


@dataclass
class DeliveryRound:
    """One round of N events: seconds from the first change (or the first publish) to each milestone."""

    events: int
    acknowledged: float
    received: float
    received_count: int
    received_distinct: int
    out_of_order: int
    produced: float = 0.0
    """Seconds to apply the changes to the store (hub rounds)."""
    emptied: float = 0.0
    """Seconds until the outbox was empty (hub rounds)."""
    dropped: int = 0
    published: int = 0
    cpu: float = 0.0
    """CPU seconds of the driver process (every thread) from the first change or publish to the last PUBACK."""


@dataclass
class WriteRound:
    writes: int
    seconds: float
    """Until every write returned."""
    acknowledged: float = 0.0
    """Until the broker acknowledged every event (events on)."""
    received: float = 0.0
    received_distinct: int = 0


@dataclass
class DeliveryFigures:
    hub: list[DeliveryRound] = field(default_factory=list)
    bare: list[DeliveryRound] = field(default_factory=list)
    writes_on: list[WriteRound] = field(default_factory=list)
    writes_off: list[WriteRound] = field(default_factory=list)
    payload_bytes: float = 0.0
    topic_bytes: float = 0.0


async def wait_for_condition(condition: Callable[[], bool], within: float, what: str) -> None:
    """Look at ``condition`` every ``WAIT_STEP`` seconds until it holds; ``TimeoutError`` naming ``what``."""
    deadline = time.perf_counter() + within
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not happen within {within} s")
        await asyncio.sleep(WAIT_STEP)


def event_settings(broker: MosquittoBroker, repository_id: str) -> HubSettings:
    return HubSettings(
        log_level="ERROR",
        events=EventSettings(enabled=True, host=broker.host, port=broker.port, repository_id=repository_id),
    )


@contextlib.asynccontextmanager
async def publishing_store(
    directory: Path, broker: MosquittoBroker | None, repository_id: str, submodels: int, per_submodel: int
) -> AsyncIterator[tuple[TwinStore, EventPublishing | None]]:
    """A fresh store journaled to its own SQLite file; with ``broker``, change events on (connected)."""
    async with AsyncExitStack() as stack:
        repository = await stack.enter_async_context(SqliteRepository(directory / f"{repository_id}.sqlite"))
        store = TwinStore(journal=repository)
        store.add_all(build_submodels(submodels, per_submodel))
        publishing: EventPublishing | None = None
        if broker is not None:
            publishing = await start_event_publishing(stack, event_settings(broker, repository_id), store, repository)
            assert publishing is not None
            service = publishing
            await wait_for_condition(lambda: service.connected, 10.0, "the connection to the broker")
        yield store, publishing


async def hub_round(
    directory: Path,
    broker: MosquittoBroker,
    subscriber: Subscriber,
    repository_id: str,
    changes: list[ValueChanged],
    submodels: int,
    per_submodel: int,
    within: float,
) -> DeliveryRound:
    count = len(changes)
    chunks = [changes[offset : offset + CHUNK] for offset in range(0, count, CHUNK)]
    async with publishing_store(directory, broker, repository_id, submodels, per_submodel) as (store, service):
        assert service is not None
        publishing = service
        complete = await subscriber.expect(repository_id, count)
        wall_started, started, cpu_started = time.time(), time.perf_counter(), time.process_time()
        for chunk in chunks:
            for change in chunk:
                store.apply(change)
            await asyncio.sleep(0)
        produced = time.perf_counter() - started
        await wait_for_condition(lambda: publishing.acknowledged >= count, within, f"acknowledgement of {count}")
        acknowledged = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        await wait_for_condition(lambda: publishing.pending == 0, within, "an empty outbox")
        emptied = time.perf_counter() - started
        arrived = await subscriber.arrivals(repository_id, complete, within)
        return DeliveryRound(
            count,
            acknowledged,
            arrived["last"] - wall_started,
            arrived["count"],
            arrived["distinct"],
            arrived["out_of_order"],
            produced,
            emptied,
            publishing.dropped,
            publishing.published,
            cpu,
        )


def bare_messages(repository_id: str, changes: list[ValueChanged]) -> list[tuple[str, bytes, int]]:
    """The topics and payloads the outbox would publish for ``changes`` under ``repository_id``, with sequences."""
    encoder = OutboxEncoder(repository_id)
    messages = []
    for sequence, change in enumerate(changes, start=1):
        event = encoder.value_event(change)
        assert event is not None
        pending = pending_event(sequence, event.topic, event.payload, event.sequenced)
        messages.append((pending.topic, pending.payload, sequence))
    return messages


def bare_publish(
    host: str, port: int, messages: list[tuple[str, bytes, int]], window: int, within: float
) -> tuple[float, float, float]:
    """A bare paho client (MQTT 5, ``window`` in flight, QoS 1): the wall-clock time of the first publish, the
    seconds from it to the last PUBACK, and the process's CPU seconds meanwhile.

    Each message carries the same PUBLISH properties as the hub's (content type, user property
    ``sequence``), packed by the hub's ``PublishProperties`` so that the same bytes go on the wire.
    """
    connected, done = threading.Event(), threading.Event()
    acknowledged = 0

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        connected.set()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        nonlocal acknowledged
        acknowledged += 1
        if acknowledged == len(messages):
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-bare-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, port, keepalive=60, clean_start=True)
    client.loop_start()
    try:
        if not connected.wait(10.0):
            raise TimeoutError("the bare client did not connect within 10 s")
        wall_started, started, cpu_started = time.time(), time.perf_counter(), time.process_time()
        for topic, payload, sequence in messages:
            client.publish(topic, payload, qos=1, properties=cast(Properties, PublishProperties(sequence)))
        if not done.wait(within):
            raise TimeoutError(f"the bare client got {acknowledged} of {len(messages)} PUBACKs within {within} s")
        return wall_started, time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        client.disconnect()
        client.loop_stop()


async def bare_round(
    broker: MosquittoBroker, subscriber: Subscriber, repository_id: str, changes: list[ValueChanged], within: float
) -> DeliveryRound:
    messages = bare_messages(repository_id, changes)
    complete = await subscriber.expect(repository_id, len(messages))
    wall_started, acknowledged, cpu = await asyncio.to_thread(
        bare_publish, broker.host, broker.port, messages, WINDOW, within
    )
    arrived = await subscriber.arrivals(repository_id, complete, within)
    return DeliveryRound(
        len(messages),
        acknowledged,
        arrived["last"] - wall_started,
        arrived["count"],
        arrived["distinct"],
        arrived["out_of_order"],
        cpu=cpu,
    )


async def write_round(
    directory: Path,
    broker: MosquittoBroker | None,
    subscriber: Subscriber,
    repository_id: str,
    writes: int,
    writers: int,
    submodels: int,
    per_submodel: int,
    within: float,
) -> WriteRound:
    """``writes`` client writes (``TwinStore.write_value``, origin ``rest``), ``writers`` at once, one per submodel."""
    async with publishing_store(directory, broker, repository_id, submodels, per_submodel) as (store, publishing):
        complete = await subscriber.expect(repository_id, writes) if publishing is not None else None

        async def writer(number: int) -> None:
            submodel = submodel_id(number % submodels)
            for write in range(number, writes, writers):
                await store.write_value(submodel, f"P{write // writers % per_submodel:03d}", float(write + 1), "rest")

        wall_started, started = time.time(), time.perf_counter()
        await asyncio.gather(*(writer(number) for number in range(writers)))
        result = WriteRound(writes, time.perf_counter() - started)
        if publishing is not None and complete is not None:
            await wait_for_condition(lambda: publishing.acknowledged >= writes, within, f"acknowledgement of {writes}")
            result.acknowledged = time.perf_counter() - started
            arrived = await subscriber.arrivals(repository_id, complete, within)
            result.received = arrived["last"] - wall_started
            result.received_distinct = arrived["distinct"]
        return result


async def measure_delivery(arguments: argparse.Namespace, directory: Path) -> DeliveryFigures:
    figures = DeliveryFigures()
    submodels, per_submodel = arguments.submodels, arguments.points // arguments.submodels
    changes = device_changes(arguments.events, submodels, per_submodel)
    sample = bare_messages("hub-r0", changes[:1000])
    figures.payload_bytes = statistics.fmean(len(payload) for _, payload, _ in sample)
    figures.topic_bytes = statistics.fmean(len(topic) for topic, _, _ in sample)
    within = arguments.timeout
    broker = MosquittoBroker(directory / "broker", extra_config=("max_queued_messages 0",))
    with broker:
        async with Subscriber(broker.host, broker.port) as subscriber:
            # warm-up: one small round of each, not counted
            await hub_round(directory, broker, subscriber, "hub-w0", changes[:2000], submodels, per_submodel, within)
            await bare_round(broker, subscriber, "raw-w0", changes[:2000], within)
            for number in range(1, arguments.rounds + 1):
                print(f"   round {number}: hub ...", end="", flush=True)
                figures.hub.append(
                    await hub_round(
                        directory, broker, subscriber, f"hub-r{number}", changes, submodels, per_submodel, within
                    )
                )
                print(" bare paho ...", end="", flush=True)
                figures.bare.append(await bare_round(broker, subscriber, f"raw-r{number}", changes, within))
                if arguments.writes:
                    print(" writes ...", end="", flush=True)
                    for events_on, rounds in ((True, figures.writes_on), (False, figures.writes_off)):
                        rounds.append(
                            await write_round(
                                directory,
                                broker if events_on else None,
                                subscriber,
                                f"{'wev' if events_on else 'wno'}-r{number}",
                                arguments.writes,
                                arguments.writers,
                                submodels,
                                per_submodel,
                                within,
                            )
                        )
                print(" done", flush=True)
    return figures


# --- 2. history recording on the ingest sample path -----------------------------------------------


@dataclass
class HistoryRound:
    samples: int
    seconds: float
    """Feeding the samples, and with history until the recorder wrote all of them."""
    catch_up: float
    """Of ``seconds``: waiting for the recorder after the last sample (history on)."""
    loop_cpu: float
    """CPU seconds of the event loop's thread."""
    history_cpu: float
    """CPU seconds of the history database's worker thread (history on)."""
    bus_events: int
    recorded: int

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


@dataclass
class HistoryFigures:
    on: list[HistoryRound] = field(default_factory=list)
    off: list[HistoryRound] = field(default_factory=list)
    lost: int = 0
    profile: ingest.Profile | None = None
    """The event loop's thread during a round with history."""
    worker_profile: ingest.Profile | None = None
    """The history database's worker thread, from its start (opening the database included)."""
    profiled_rate: float = 0.0
    profiled_worker_ns: float = 0.0


def thread_cpu_seconds(name_prefix: str) -> float:
    """CPU time (user + system) of the live threads whose name starts with ``name_prefix`` (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if not thread.name.startswith(name_prefix) or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def history_settings(directory: Path, minimum_interval: float) -> HubSettings:
    return HubSettings(
        log_level="ERROR",
        data_dir=directory,
        history=HistorySettings(minimum_interval=minimum_interval, time_series_submodels=False),
    )


def is_recorded(store: TwinStore) -> Callable[[str, str], bool]:
    """The hub's rule (``Hub._is_recorded``): device-fed values and roll-ups are recorded."""

    def recorded(submodel_id: str, id_short_path: str) -> bool:
        binding = store.binding(submodel_id, id_short_path)
        return binding is not None and binding.source.startswith(("device:", "rollup:"))

    return recorded


async def history_round(
    path: ingest.SamplePath,
    drain: ingest.Drain,
    chunks: list[list[Any]],
    seconds: float,
    service: HistoryService | None,
) -> HistoryRound:
    events_before = drain.events
    recorded_before = service.recorded if service is not None else 0
    history_cpu_before = thread_cpu_seconds("history")
    loop_cpu_before = time.thread_time()
    started = time.perf_counter()
    samples, _ = await ingest.feed(path.sink, chunks, seconds)
    fed = time.perf_counter()
    if service is not None:
        await service.flush()
    await asyncio.sleep(0)  # let the drain take the last chunk's events (counted, not timed)
    ended = time.perf_counter()
    return HistoryRound(
        samples,
        ended - started,
        ended - fed,
        time.thread_time() - loop_cpu_before,
        thread_cpu_seconds("history") - history_cpu_before,
        drain.events - events_before,
        (service.recorded - recorded_before) if service is not None else 0,
    )


async def with_history(
    directory: Path, minimum_interval: float, store: TwinStore, run: Callable[[HistoryService], Awaitable[HistoryRound]]
) -> tuple[HistoryRound, int]:
    """``run`` with the hub's ``start_history`` recording into ``directory``; returns its result and samples lost."""
    async with AsyncExitStack() as stack:
        service = await start_history(stack, history_settings(directory, minimum_interval), store, is_recorded(store))
        assert service is not None
        await service.flush()  # the first retention purge starts with the service; let it pass before timing
        result = await run(service)
        return result, service.lost


async def measure_history(arguments: argparse.Namespace, directory: Path) -> HistoryFigures:
    figures = HistoryFigures()
    points = arguments.points
    mapping = ingest.build_mapping(1, points, 502, 1.0)
    chunks = ingest.prebuilt_samples(points)
    store, path = ingest.new_store(1, points, mapping)
    seconds, minimum_interval = arguments.history_seconds, arguments.minimum_interval
    async with ingest.Drain(store) as drain:

        async def round_on(service: HistoryService) -> HistoryRound:
            return await history_round(path, drain, chunks, seconds, service)

        await history_round(path, drain, chunks, 0.0, None)  # warm-up: one pass each
        await with_history(directory, minimum_interval, store, lambda s: history_round(path, drain, chunks, 0.0, s))
        for number in range(arguments.history_rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            for recording in order:
                if recording:
                    result, lost = await with_history(directory, minimum_interval, store, round_on)
                    figures.on.append(result)
                    figures.lost += lost
                else:
                    figures.off.append(await history_round(path, drain, chunks, seconds, None))
        off = statistics.median(result.rate for result in figures.off)
        on = statistics.median(result.rate for result in figures.on)
        if arguments.profile == "always" or (arguments.profile == "auto" and on < (1 - HISTORY_OVERHEAD_LIMIT) * off):
            profiler, worker_profiler = cProfile.Profile(), cProfile.Profile()

            def enable_in_worker(frame: Any, event: str, argument: Any) -> None:
                """Installed in threads started meanwhile: profiles the history database's worker thread."""
                if threading.current_thread().name.startswith("history"):
                    worker_profiler.enable()
                else:
                    sys.setprofile(None)

            async def profiled(service: HistoryService) -> HistoryRound:
                threading.setprofile(None)
                profiler.enable()
                try:
                    return await history_round(path, drain, chunks, seconds, service)
                finally:
                    profiler.disable()

            threading.setprofile(enable_in_worker)
            try:
                result, _ = await with_history(directory, minimum_interval, store, profiled)
            finally:
                threading.setprofile(None)
            figures.profile = profile_of(profiler, result.samples)
            figures.worker_profile = profile_of(worker_profiler, result.samples, IDLE)
            figures.profiled_rate = on
            figures.profiled_worker_ns = _median([r.history_cpu / r.samples * 1e9 for r in figures.on])
    return figures


IDLE = ("<method 'get' of '_queue.SimpleQueue' objects>",)
"""What a worker thread does while it waits for work (left out of its profile's total)."""


def profile_of(profiler: cProfile.Profile, samples: int, idle: tuple[str, ...] = ()) -> ingest.Profile:
    """Shares of a thread's profiled time, as ``benchmarks/ingest.py`` prints them; ``idle`` functions left out.

    cProfile measures wall time: a function's own time includes waiting for the GIL when another
    thread holds it (``executemany``, for instance, takes it back after each row's ``sqlite3_step``).
    """
    # (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers); untyped in typeshed
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = cast(Any, pstats.Stats(profiler)).stats
    entries = {key: entry for key, entry in entries.items() if key[2] not in idle}
    total = sum(entry[2] for entry in entries.values())
    rows = [
        ingest.ProfileRow(ingest._where(file_name, line, function), own / total, cumulative / total, calls / samples)
        for (file_name, line, function), (_, calls, own, cumulative, _) in entries.items()
    ]
    own = sorted(rows, key=lambda row: row.own_share, reverse=True)[:20]
    project = [row for row in rows if row.where.startswith(("aas_server/", "ingest.py:", "events.py:"))]
    cumulative = sorted(project, key=lambda row: row.cumulative_share, reverse=True)[:16]
    return ingest.Profile(own, cumulative)


# --- report ---------------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table: figure, measured, baseline, ratio."""
    rows: list[list[str]] = []
    delivery: DeliveryFigures | None = results.get("events")
    if delivery is not None and delivery.hub:
        events = delivery.hub[0].events
        hub_acknowledged = _median([events / result.acknowledged for result in delivery.hub])
        bare_acknowledged = _median([events / result.acknowledged for result in delivery.bare])
        hub_received = _median([events / result.received for result in delivery.hub])
        bare_received = _median([events / result.received for result in delivery.bare])
        lost = sum(events - result.received_distinct for result in delivery.hub + delivery.bare)
        duplicates = sum(result.received_count - result.received_distinct for result in delivery.hub + delivery.bare)
        disorder = sum(result.out_of_order for result in delivery.hub + delivery.bare)
        rows += [
            [
                f"device events acknowledged (outbox, N={events:,})",
                _rate(hub_acknowledged),
                f"bare paho QoS 1, window {WINDOW}: {_rate(bare_acknowledged)}",
                f"{hub_acknowledged / bare_acknowledged:.2f}",
            ],
            [
                "device events received (subscriber process)",
                _rate(hub_received),
                f"bare paho: {_rate(bare_received)}",
                f"{hub_received / bare_received:.2f}",
            ],
            [
                "  driver process CPU per event",
                f"{_median([result.cpu / events * 1e6 for result in delivery.hub]):.0f} µs",
                f"bare paho: {_median([result.cpu / events * 1e6 for result in delivery.bare]):.0f} µs",
                f"{_median([r.cpu for r in delivery.hub]) / _median([r.cpu for r in delivery.bare]):.2f}",
            ],
            [
                "  outbox empty after (hub)",
                f"{_median([result.emptied for result in delivery.hub]):.2f} s",
                f"changes applied in {_median([result.produced for result in delivery.hub]) * 1000:.0f} ms",
                "",
            ],
            [
                "  lost / duplicates / out of order (all rounds)",
                f"{lost} / {duplicates} / {disorder}",
                f"dropped by the hub: {sum(result.dropped for result in delivery.hub)}",
                "",
            ],
        ]
        if delivery.writes_on:
            writes = delivery.writes_on[0].writes
            on = _median([writes / result.seconds for result in delivery.writes_on])
            off = _median([writes / result.seconds for result in delivery.writes_off])
            acknowledged = _median([writes / result.acknowledged for result in delivery.writes_on])
            write_lost = sum(writes - result.received_distinct for result in delivery.writes_on)
            rows += [
                [
                    f"client writes with events (N={writes:,})",
                    _rate(on),
                    f"events off: {_rate(off)}",
                    f"{on / off:.2f}",
                ],
                [
                    "  their events acknowledged",
                    _rate(acknowledged),
                    f"lost at the subscriber: {write_lost}",
                    "",
                ],
            ]
    history: HistoryFigures | None = results.get("history")
    if history is not None and history.on:
        on = _median([result.rate for result in history.on])
        off = _median([result.rate for result in history.off])
        rows.append(["sample path with history recording", _rate(on), f"history off: {_rate(off)}", f"{on / off:.2f}"])
        loop_on = _median([result.loop_cpu / result.samples * 1e6 for result in history.on])
        loop_off = _median([result.loop_cpu / result.samples * 1e6 for result in history.off])
        worker = _median([result.history_cpu / result.samples * 1e6 for result in history.on])
        rows += [
            [
                "  event loop CPU per sample",
                f"{loop_on:.2f} µs",
                f"history off: {loop_off:.2f} µs",
                f"{loop_on / loop_off:.2f}",
            ],
            ["  history worker thread CPU per sample", f"{worker:.2f} µs", "", ""],
            [
                "  recorded / bus events (all rounds with history)",
                f"{sum(result.recorded for result in history.on):,} / "
                f"{sum(result.bus_events for result in history.on):,}",
                f"lost: {history.lost}",
                "",
            ],
        ]
    return rows


def print_profile(title: str, profile: ingest.Profile, per_sample_ns: float) -> None:
    """Both views of a profile, each row's share turned into ns per sample of the unprofiled time (``ns``)."""
    print(f"\nprofile of {title} (cProfile); {per_sample_ns:,.0f} ns per sample unprofiled; ns = share x that")
    for heading, rows, share in (
        ("largest own time", profile.by_own_time, "own_share"),
        ("project functions by cumulative time", profile.by_cumulative_time, "cumulative_share"),
    ):
        print(f"  {heading}:")
        print(f"  {'own':>6}  {'cumul.':>6}  {'ns':>6}  {'calls':>5}  where")
        for row in rows:
            print(
                f"  {row.own_share:6.1%}  {row.cumulative_share:6.1%}  {getattr(row, share) * per_sample_ns:6.0f}"
                f"  {row.calls_per_sample:5.2f}  {row.where}"
            )


def print_table(rows: list[list[str]]) -> None:
    header = ["figure", "measured", "baseline (same run)", "ratio"]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def figures_json(arguments: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    delivery: DeliveryFigures | None = results.get("events")
    if delivery is not None:

        def delivery_figures(result: DeliveryRound) -> dict[str, Any]:
            return {
                "acknowledged_per_second": round(result.events / result.acknowledged),
                "received_per_second": round(result.events / result.received),
                "received": result.received_count,
                "distinct": result.received_distinct,
                "out_of_order": result.out_of_order,
                "driver_cpu_us_per_event": round(result.cpu / result.events * 1e6, 1),
            }

        figures["events"] = {
            "events_per_round": arguments.events,
            "window": WINDOW,
            "payload_bytes": round(delivery.payload_bytes),
            "topic_bytes": round(delivery.topic_bytes),
            "hub": [
                {
                    **delivery_figures(result),
                    "changes_applied_s": round(result.produced, 3),
                    "acknowledged_s": round(result.acknowledged, 3),
                    "outbox_empty_s": round(result.emptied, 3),
                    "published": result.published,
                    "dropped": result.dropped,
                }
                for result in delivery.hub
            ],
            "bare_paho": [
                {**delivery_figures(result), "acknowledged_s": round(result.acknowledged, 3)}
                for result in delivery.bare
            ],
            "client_writes": {
                "writes_per_round": arguments.writes,
                "writers": arguments.writers,
                "events_on": [
                    {
                        "writes_per_second": round(result.writes / result.seconds),
                        "acknowledged_per_second": round(result.writes / result.acknowledged),
                        "received_distinct": result.received_distinct,
                    }
                    for result in delivery.writes_on
                ],
                "events_off": [
                    {"writes_per_second": round(result.writes / result.seconds)} for result in delivery.writes_off
                ],
            },
        }
    history: HistoryFigures | None = results.get("history")
    if history is not None:

        def history_figures(result: HistoryRound) -> dict[str, Any]:
            return {
                "samples_per_second": round(result.rate),
                "loop_cpu_us_per_sample": round(result.loop_cpu / result.samples * 1e6, 2),
                "bus_events": result.bus_events,
            }

        figures["history"] = {
            "points": arguments.points,
            "minimum_interval_s": arguments.minimum_interval,
            "on": [
                {
                    **history_figures(result),
                    "catch_up_s": round(result.catch_up, 3),
                    "history_thread_cpu_us_per_sample": round(result.history_cpu / result.samples * 1e6, 2),
                    "recorded": result.recorded,
                }
                for result in history.on
            ],
            "off": [history_figures(result) for result in history.off],
            "lost": history.lost,
        }
    return figures


async def run(arguments: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aas-events-bench-") as folder:
        directory = Path(folder)
        if "events" in arguments.parts:
            print(
                f"1. events: {arguments.events:,} device changes per round over {arguments.points:,} Properties, "
                f"{arguments.rounds} rounds (hub, bare paho, {arguments.writes:,} client writes on and off) ...",
                flush=True,
            )
            results["events"] = await measure_delivery(arguments, directory)
        if "history" in arguments.parts:
            print(
                f"2. history: sample path of {arguments.points:,} points, "
                f"{arguments.history_rounds} x {arguments.history_seconds:g} s per variant ...",
                flush=True,
            )
            results["history"] = await measure_history(arguments, directory / "history")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", nargs="+", choices=["events", "history"], default=["events", "history"])
    parser.add_argument("--points", type=int, default=1000, help="Properties changed (both parts)")
    events = parser.add_argument_group("events through the outbox")
    events.add_argument("--events", type=int, default=20_000, help="device value changes per round")
    events.add_argument("--rounds", type=int, default=3, help="rounds of hub and bare paho (alternating)")
    events.add_argument("--submodels", type=int, default=10, help="submodels the Properties are spread over")
    events.add_argument("--writes", type=int, default=1000, help="client writes per round (0: none)")
    events.add_argument("--writers", type=int, default=10, help="concurrent writers, each on its own submodel")
    events.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take before it fails")
    history = parser.add_argument_group("history recording")
    history.add_argument("--history-seconds", type=float, default=2.0, help="length of one measurement")
    history.add_argument("--history-rounds", type=int, default=3, help="measurements per variant (median)")
    history.add_argument("--minimum-interval", type=float, default=0.0, help="history.minimum_interval (downsampling)")
    history.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help=f"profile a round with history (auto: when it costs more than {HISTORY_OVERHEAD_LIMIT:.0%})",
    )
    parser.add_argument("--subscribe", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if arguments.subscribe:
        subscribe(arguments.subscribe[0], int(arguments.subscribe[1]))
        return 0
    if arguments.writers > arguments.submodels:
        parser.error("--writers must not exceed --submodels (one writer per submodel)")

    print(f"events benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)", flush=True)
    results = asyncio.run(run(arguments))
    print(json.dumps(figures_json(arguments, results), indent=2))
    history_results: HistoryFigures | None = results.get("history")
    if history_results is not None and history_results.profile is not None:
        print_profile(
            "the event loop's thread, a round with history (ingest sample path + recorder)",
            history_results.profile,
            1e9 / history_results.profiled_rate,
        )
    if history_results is not None and history_results.worker_profile is not None:
        print_profile(
            "the history database's worker thread (busy time; ns: of its CPU time per sample)",
            history_results.worker_profile,
            history_results.profiled_worker_ns,
        )
    print()
    print_table(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

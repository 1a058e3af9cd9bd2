"""What every southbound connector shares: the ``Connector`` contract and its ``ConnectionSupervisor``.

A connector keeps the connection to one device (a Modbus TCP server, an OPC UA server, an MQTT
broker), turns what the device says into ``RawSample`` objects for a sink, and, for writable
protocols, carries a ``RawWrite`` to the device. ``async with connector:`` starts it without
waiting for, nor failing on, an unreachable device; leaving the block stops every task it started
and closes the connection.

``ConnectionSupervisor`` is the bookkeeping that each connector used to copy (``ARCHITECTURE.md``,
house rules 4 and 5):

* capped exponential backoff between connection attempts (``Backoff``);
* an outage logged once when it begins and its recovery once when it ends (again only when the
  device refuses the hub for a new reason that needs a person, such as wrong credentials);
* a guarded emit: an exception raised by the sink is logged and never ends the connector;
* owned tasks: every task is referenced, and cancelled and awaited when the connector stops;
* periodic work at a fixed rate that skips missed ticks instead of bunching them.

Protocol-specific matters (what "reachable" means, which points turn bad) stay in each connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from aas_server.lifecycle import Service
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, utc_now

SampleSink = Callable[[RawSample], None]
"""Receives every sample synchronously on the event loop; it must not block."""


@runtime_checkable
class Connector(Protocol):
    """One running connection to one device: samples to a sink, writes to the device.

    A ``lifecycle.Service``: ``start()`` and ``stop()``, or ``async with``. ``connected`` tells
    whether the connection is usable now, ``reachable`` whether the device answered last time
    (``None`` before the first attempt ended). ``write`` returns once the device acknowledged the
    raw value and raises the ``aas_server.errors`` tree otherwise (``NotWritableError`` for a
    protocol or point that takes no writes).
    """

    @property
    def connected(self) -> bool: ...

    @property
    def reachable(self) -> bool | None: ...

    async def write(self, raw: RawWrite[Any]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class MethodCaller(Protocol):
    """A connector whose protocol has methods (OPC UA): the outputs of calling a method point."""

    async def call(self, point_name: str, inputs: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the hub hands every connector it creates."""

    sink: SampleSink
    data_dir: Path
    """The hub's data directory (for a connector's own files, such as a generated client certificate)."""


class ConnectorModule(Protocol):
    """What the module a protocol registry entry names (``mapping.schema.Protocol.connector``) provides."""

    def create_connector(self, device: Any, points: Sequence[Any], context: ConnectorContext) -> Connector:
        """The connector of ``device`` for ``points`` (the device's points of this protocol)."""
        ...

    def with_endpoint(self, device: Any, endpoint: str) -> Any:
        """``device`` reached at ``endpoint`` instead (``host:port``, or the protocol's URL)."""
        ...


class SupervisedConnector(Service):
    """A connector whose connection its ``ConnectionSupervisor`` looks after."""

    _supervisor: ConnectionSupervisor

    @property
    def reachable(self) -> bool | None:
        """Whether the device (or broker) answered the last attempt; ``None`` before the first one ended."""
        return self._supervisor.reachable


def quiet_library_logging(logger_name: str) -> None:
    """Silence a protocol library's own log lines (every failed connect, timeout and teardown).

    The connector reports outages once itself. Applied only when nobody configured that logger:
    set its level to see the library's logs.
    """
    library_logger = logging.getLogger(logger_name)
    if library_logger.level == logging.NOTSET:
        library_logger.setLevel(logging.CRITICAL)


class Backoff:
    """Capped exponential backoff: ``initial``, doubling on each attempt up to ``maximum`` seconds."""

    def __init__(self, initial: float, maximum: float) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    @property
    def next_delay(self) -> float:
        """The delay the next ``step`` or ``wait`` takes."""
        return self._next

    def step(self) -> float:
        """The delay before this attempt; the one after it doubles (up to ``maximum``)."""
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """The device answered: the next wait is ``initial`` again."""
        self._next = self.initial

    async def wait(self) -> None:
        """Sleep for the next delay (a retry delay, not synchronisation)."""
        await asyncio.sleep(self.step())


@dataclass(eq=False)
class ConnectionSupervisor:
    """Reachability, backoff, guarded emit and owned tasks of one connector.

    ``subject`` names the device in log lines (``Modbus device 'plc' at 10.0.0.5:502``) and
    ``consequence`` says what an outage means (``its values are bad until it is back``). Log lines
    go to the connector's own ``logger``.
    """

    logger: logging.Logger
    subject: str
    sink: SampleSink
    """The sample sink; replaceable while running."""
    backoff: Backoff
    consequence: str = "its values are bad until it is back"
    reachable: bool | None = field(default=None, init=False)
    """Whether the device answered the last attempt; ``None`` before the first one ended."""
    failure: str | None = field(default=None, init=False)
    """Why the device is unreachable (the reason last logged or noted), ``None`` while it answers."""
    stopping: bool = field(default=False, init=False)
    first_attempt_done: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """Set once the first connection attempt has ended, whatever its outcome."""
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    @classmethod
    def of_device(
        cls, logger: logging.Logger, subject: str, device: Any, points: Iterable[Any], sink: SampleSink
    ) -> ConnectionSupervisor:
        """The supervisor of the connector of ``device`` (its ``reconnect_backoff``).

        ``ValueError`` when a point belongs to another device.
        """
        foreign = [point.name for point in points if point.device != device.name]
        if foreign:
            raise ValueError(f"points {foreign} do not belong to device {device.name!r}")
        backoff = device.reconnect_backoff
        return cls(logger, subject, sink, Backoff(backoff.initial, backoff.maximum))

    # --- reachability ------------------------------------------------------------------------------

    def mark_reachable(self) -> bool:
        """The device answers; logs a recovery once. ``True`` when this ends an outage or is the first answer."""
        if self.reachable is True:
            return False
        self.backoff.reset()
        self.failure = None
        if self.reachable is False:
            self.logger.info("%s is reachable again", self.subject)
        else:
            self.logger.debug("%s answers", self.subject)
        self.reachable = True
        return True

    def mark_unreachable(self, reason: str, *, persistent: bool = False) -> bool:
        """The device cannot be used; logs the outage once. ``True`` when this begins an outage.

        A later failure is logged again only when it is ``persistent`` (the device refuses the hub
        for a reason a person must fix: credentials, certificates) and its reason is new.
        """
        beginning = self.reachable is not False
        if beginning or (persistent and reason != self.failure):
            self.logger.warning("%s is unreachable: %s; %s", self.subject, reason, self.consequence)
        else:
            self.logger.debug("%s is still unreachable: %s", self.subject, reason)
        self.failure = reason
        self.reachable = False
        return beginning

    async def wait_for_first_attempt(self, within: float) -> None:
        """Wait at most ``within`` seconds for the first connection attempt to end (for early writes)."""
        if self.first_attempt_done.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.first_attempt_done.wait()

    # --- samples -----------------------------------------------------------------------------------

    def emit(self, sample: RawSample) -> None:
        """Hand ``sample`` to the sink; an exception in the sink is logged and does not reach the connector."""
        try:
            self.sink(sample)
        except Exception:
            self.logger.exception("sample sink failed for point %r", sample.point)

    def emit_without_value(
        self,
        source: str,
        points: Iterable[str],
        reason: QualityReason,
        quality: Quality = Quality.BAD,
    ) -> None:
        """One sample without a value per point, all with the same time, quality and reason."""
        now = utc_now()
        for name in points:
            self.emit(RawSample(source, name, None, now, quality, reason))

    # --- tasks -------------------------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task owned here: referenced until it ends, cancelled by ``stop``."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The owned tasks still running."""
        return frozenset(self._tasks)

    async def stop(self) -> None:
        """Set ``stopping``, then cancel every owned task until each has ended.

        Cancels again while any is left: Python 3.11's ``asyncio.wait_for`` (used inside pymodbus and
        asyncua) can swallow a cancellation that arrives just as an answer does.
        """
        self.stopping = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in list(self._tasks):
            if task.done():
                self._tasks.discard(task)

    async def every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        """After the first connection attempt, await ``action`` every ``interval`` seconds until stopping.

        A tick that ``action`` overran is not made up for: the next one starts at once, then the
        rate is kept again.
        """
        await self.first_attempt_done.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not self.stopping:
            await action()
            deadline += interval
            now = loop.time()
            if deadline < now:
                deadline = now
            await asyncio.sleep(deadline - now)

"""Recording of mapped values into the history database, and the ``HistorySource`` REST and OPC UA read.

``start_history`` subscribes to the store's change bus at once (nothing published after it returns
is missed) and records every ``ValueChanged`` of a mapped element, device samples and client writes
of mapped set-points alike (restored values at start are not changes and are skipped). Samples are
downsampled per ``history.minimum_interval`` (``store.history.Downsampler``) and written in batches:
one transaction when ``BATCH_PERIOD`` seconds passed since the first pending sample or
``BATCH_SIZE`` samples are pending. Samples older than ``history.retention`` are purged at start and
then every ``purge_period`` seconds.

Reads go through ``HistoryService.source``: it writes what is pending first, so an answer contains
every change published before the request (with downsampling, a value is recorded when its interval
ends). ``time_series`` builds the IDTA 02008 submodels (``model/timeseries.py``) and
``install_time_series`` adds them to the store and refers to them from their shells.

Left out: history of elements added to the mapping while running (the mapping is read at start);
Time Series submodels of shells that no longer have recorded values are not removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from datetime import timedelta

from basyx.aas import model

from aas_server.config import HistorySettings, HubSettings
from aas_server.errors import NotFoundError, PersistenceError
from aas_server.model import paths, values
from aas_server.model.events import ValueChanged, utc_now
from aas_server.model.timeseries import RecordedVariable, TimeSeriesPlacement, plan_time_series
from aas_server.persistence.history import HistoryDatabase, SampleRecord
from aas_server.runtime.bus_service import BusService
from aas_server.runtime.submodels import install_submodel
from aas_server.store.history import (
    AggregatePage,
    AggregateQuery,
    Downsampler,
    RawQuery,
    SamplePage,
    value_type_name,
)
from aas_server.store.twin_store import StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

BATCH_PERIOD = 0.5
"""Seconds a sample may wait for others before its batch is written."""
BATCH_SIZE = 10_000
"""Samples that make a batch full (written at once)."""
SUBSCRIPTION_SIZE = 200_000
"""Events the recorder's bus subscription holds before it drops the oldest (logged by the bus)."""

IsMapped = Callable[[str, str], bool]


def purge_period(retention: float) -> float:
    """Seconds between retention purges: a tenth of the retention, from 1 s to 1 h."""
    return min(max(retention / 10, 1.0), 3600.0)


class RecordedHistory:
    """The ``HistorySource`` over the history database; every read writes the pending samples first."""

    def __init__(self, service: HistoryService) -> None:
        self._service = service

    def is_recorded(self, submodel_id: str, id_short_path: str) -> bool:
        return self._service.is_mapped(submodel_id, id_short_path)

    async def read_raw(self, query: RawQuery) -> SamplePage:
        await self._service.flush()
        return await self._service.database.read_raw(query)

    async def read_aggregates(self, query: AggregateQuery) -> AggregatePage:
        await self._service.flush()
        database = self._service.database
        series = (query.submodel_id, query.id_short_path)
        start = query.start if query.start is not None else await database.first_time(*series)
        if start is None:
            return AggregatePage([])
        end = query.end if query.end is not None else utc_now()
        return await database.read_aggregates(*series, start, end, query.interval, query.aggregates, limit=query.limit)


class HistoryService(BusService):
    """Records the mapped values of ``store`` into ``database``. Use as an async context manager."""

    def __init__(
        self,
        database: HistoryDatabase,
        store: TwinStore,
        is_mapped: IsMapped,
        settings: HistorySettings,
        *,
        batch_period: float = BATCH_PERIOD,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.database = database
        self.settings = settings
        self.is_mapped = is_mapped
        self._store = store
        self._batch_period = batch_period
        self._batch_size = batch_size
        self._downsampler = Downsampler(settings.minimum_interval)
        self._downsampling = settings.minimum_interval > 0
        self._pending: list[SampleRecord] = []
        self._pending_since: float | None = None
        self._value_types: dict[tuple[str, str], str] = {}
        self._write_lock = asyncio.Lock()
        self._failing = False
        self.source = RecordedHistory(self)
        """What REST (``create_app(history=...)``) and OPC UA (``OpcUaProjection(history=...)``) read."""
        self.recorded = 0
        """Samples written so far."""
        self.lost = 0
        """Samples that could not be written (database errors, logged)."""

    async def start(self) -> None:
        self._subscription = self._store.bus.subscribe("history", maxsize=SUBSCRIPTION_SIZE)
        self._tasks = [
            asyncio.create_task(self._record(), name="history-record"),
            asyncio.create_task(self._purge_periodically(), name="history-purge"),
        ]

    async def stop(self) -> None:
        """Stop recording, then write what the subscription and the downsampler still hold."""
        await self._end_tasks()
        self._drain()
        self._close_subscription()
        self._queue(self._downsampler.flush_all())
        await self._write()

    # --- recording -----------------------------------------------------------------------------

    def _value_type(self, change: ValueChanged) -> str:
        key = (change.submodel_id, change.id_short_path)
        name = self._value_types.get(key)
        if name is None:
            state = self._store.state(*key)
            element = state.element if state is not None else None
            if element is None:
                try:
                    found = self._store.element(*key)
                except NotFoundError:
                    found = None
                element = found if isinstance(found, model.Property) else None
            name = values.xsd_name(element.value_type) if element is not None else value_type_name(change.value)
            self._value_types[key] = name
        return name

    def _queue(self, changes: Iterable[ValueChanged]) -> None:
        for change in changes:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(
                SampleRecord(
                    change.submodel_id,
                    change.id_short_path,
                    self._value_type(change),
                    change.value,
                    change.source_time,
                    change.server_time,
                    change.quality,
                    change.reason,
                )
            )

    def _accept(self, event: StoreEvent) -> None:
        if (
            isinstance(event, ValueChanged)
            and event.origin != "restore"
            and self.is_mapped(event.submodel_id, event.id_short_path)
        ):
            if self._downsampling:
                self._queue(self._downsampler.offer(event, time.monotonic()))
            else:
                self._queue((event,))

    def _drain(self) -> None:
        if self._subscription is not None:
            for event in self._subscription.get_nowait_all():
                self._accept(event)

    async def _write(self) -> None:
        async with self._write_lock:
            batch, self._pending, self._pending_since = self._pending, [], None
            if not batch:
                return
            try:
                await self.database.record(batch)
            except PersistenceError as error:
                self.lost += len(batch)
                if not self._failing:
                    self._failing = True
                    _LOG.error("history: could not record %d samples (%s); recording goes on", len(batch), error)
                return
            self.recorded += len(batch)
            if self._failing:
                self._failing = False
                _LOG.info("history: recording works again (%d samples lost meanwhile)", self.lost)

    async def flush(self) -> None:
        """Write every sample of changes published so far (except those held by downsampling)."""
        self._drain()
        self._queue(self._downsampler.due(time.monotonic()))
        await self._write()

    def _wake_in(self) -> float | None:
        moments = []
        if self._pending_since is not None:
            moments.append(self._pending_since + self._batch_period)
        held = self._downsampler.next_due()
        if held is not None:
            moments.append(held)
        return max(0.0, min(moments) - time.monotonic()) if moments else None

    async def _record(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        while True:
            event: StoreEvent | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wake_in()):
                    event = await subscription.get()
            try:
                if event is not None:
                    self._accept(event)
                self._drain()
                now = time.monotonic()
                self._queue(self._downsampler.due(now))
                if self._pending and (
                    len(self._pending) >= self._batch_size
                    or (self._pending_since is not None and now >= self._pending_since + self._batch_period)
                ):
                    await self._write()
            except Exception:
                _LOG.exception("history: recording failed; going on with the next changes")

    # --- retention -------------------------------------------------------------------------------

    async def purge(self) -> int:
        """Delete the samples older than the retention; return how many."""
        await self.flush()
        removed = await self.database.purge(utc_now() - timedelta(seconds=self.settings.retention))
        if removed:
            _LOG.info("history: purged %d samples older than %s s", removed, self.settings.retention)
        return removed

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except PersistenceError as error:
                _LOG.error("history: retention purge failed: %s", error)
            await asyncio.sleep(purge_period(self.settings.retention))

    # --- Time Series submodels ---------------------------------------------------------------------

    def recorded_variables(self) -> list[RecordedVariable]:
        """Every Property of the store whose changes are recorded, in store order."""
        found: list[RecordedVariable] = []
        for submodel in self._store.submodels():
            for path, element in paths.walk(submodel):
                if isinstance(element, model.Property) and self.is_mapped(submodel.id, path):
                    found.append(RecordedVariable(submodel.id, path, element))
        return found

    def time_series(self, api_base: str) -> list[TimeSeriesPlacement]:
        """The IDTA 02008 Time Series submodel of each shell with recorded values, its segments linked to
        ``api_base`` (the REST API's base URL, ``http://host:port/api/v3.0``)."""
        return plan_time_series(self._store.shells(), self._store.submodels(), self.recorded_variables(), api_base)


async def install_time_series(store: TwinStore, placements: Iterable[TimeSeriesPlacement]) -> None:
    """Create (or replace) each Time Series submodel in ``store`` and refer to it from its shell."""
    for placement in placements:
        await install_submodel(store, placement.shell_id, placement.submodel, missing_shell_ok=True)


async def start_history(
    stack: AsyncExitStack, settings: HubSettings, store: TwinStore, is_mapped: IsMapped
) -> HistoryService | None:
    """Open the history database (``settings.history_path``) and start recording; ``None`` when disabled.

    Both are entered into ``stack``: leaving it writes what is pending and closes the database.
    """
    if not settings.history.enabled:
        return None
    database = await stack.enter_async_context(HistoryDatabase(settings.history_path))
    service = await stack.enter_async_context(HistoryService(database, store, is_mapped, settings.history))
    _LOG.info("history: recording mapped values into %s", settings.history_path)
    return service

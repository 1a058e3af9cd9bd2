"""OEE and ISO 22400-2 KPIs in the twin: the machine-state models of ``analytics.kpi_files``, fed from the change bus.

``start_kpis`` reads the KPI files (YAML or JSON: ``assets``, a list of
``aas_server.analytics.states.MachineStateModel``), checks every signal against the store's model (a
missing one stops the start with its place), and gives each asset's shell a ``KPIs`` submodel (id
``<shell id>/kpi``, created or replaced at start and referenced from the shell). The submodel has
one collection per window (``CurrentShift``, ``LastHour``, ``Last24Hours``) of read-only Properties
(source ``kpi:iso22400``) with ISO 22400-2 semanticIds (``KPI_SEMANTIC_IDS``).

The service follows the change bus: each ``ValueChanged`` of a declared signal goes to the asset's
``StateRecorder`` with its source time and quality. Every ``analytics.kpi_interval`` seconds the KPIs
of each window are computed (``aas_server.analytics.kpi.compute``) and written through
``TwinStore.apply`` with origin ``kpi``, so they reach REST, OPC UA, MQTT events and history like any
value. A KPI that has no value (its denominator is 0, or no shift is running) is written with bad
quality (``not_yet_read``), keeping its last value, as a device value that is not known.

A KPI file's ``rollups`` (``shell``: a process or plant shell, ``parts``: asset or roll-up shells
listed before it) give those shells a KPIs submodel too, from ``analytics.kpi.roll_up``: times and
quantities summed, ratios recomputed. A window whose parts differ (current shifts of other
calendars) is written with bad quality.

Left out: state kept across restarts (the windows start empty at each start), KPI files changed while running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import yaml
from basyx.aas import model
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aas_server.analytics.kpi import Kpis, WindowKind, compute, roll_up, window
from aas_server.analytics.states import MachineState, MachineStateModel, Sample, SignalRef, StateRecorder
from aas_server.config import HubSettings
from aas_server.errors import ConfigurationError, NotFoundError
from aas_server.model import paths
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.units import UNITS_BY_CODE, EngineeringUnit
from aas_server.runtime.analytics import install_alarm_submodels
from aas_server.runtime.bus_service import BusService
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import ElementBinding, StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

ORIGIN = "kpi"
"""The ``origin`` of the ``ValueChanged`` events the service applies."""
SOURCE = "kpi:iso22400"
KPI_SUBMODEL_SEMANTIC_ID = "urn:aas-server:analytics:KPIs:1:0"

_ISO = "urn:iso:std:iso:22400:-2:ed-1:kpi:"
KPI_SEMANTIC_IDS: dict[str, str] = {
    "Availability": _ISO + "availability",
    "Performance": _ISO + "effectiveness",
    "QualityRatio": _ISO + "quality-ratio",
    "OEE": _ISO + "oee-index",
    "MTBF": _ISO + "mean-operating-time-between-failures",
    "MTTR": _ISO + "mean-time-to-repair",
    "ActualProductionTime": _ISO + "actual-production-time",
    "ActualDowntime": _ISO + "actual-unit-down-time",
    "ProducedQuantity": _ISO + "produced-quantity",
    "GoodQuantity": _ISO + "good-quantity",
    "FailureEvents": _ISO + "failure-events",
    "Coverage": "urn:aas-server:analytics:kpi:coverage",
    "DowntimeByReason": "urn:aas-server:analytics:kpi:downtime-by-reason",
}
"""idShort of each KPI Property -> its semanticId (ISO 22400-2 names; times in seconds)."""

STATE_SEMANTIC_IDS: dict[str, str] = {
    "MachineState": "urn:aas-server:analytics:kpi:machine-state",
    "MachineStateReason": "urn:aas-server:analytics:kpi:machine-state-reason",
}
"""idShort -> semanticId of an asset's current state (running, idle, down, planned_stop, unknown) and
its reason (the fault's reason text, the break's name, ``no data``), beside the windows."""

WINDOWS: dict[WindowKind, str] = {
    WindowKind.CURRENT_SHIFT: "CurrentShift",
    WindowKind.LAST_HOUR: "LastHour",
    WindowKind.LAST_24_HOURS: "Last24Hours",
}

_TYPES: dict[str, Any] = {
    "ProducedQuantity": model.datatypes.Long,
    "GoodQuantity": model.datatypes.Long,
    "FailureEvents": model.datatypes.Long,
    "DowntimeByReason": model.datatypes.String,
}


_SECONDS = {"MTBF", "MTTR", "ActualProductionTime", "ActualDowntime"}
_RATIOS = {"Availability", "Performance", "QualityRatio", "OEE", "Coverage"}
"""Ratios (1.0 is 100 %): OPC UA shows them with the dimensionless unit ``one`` (UNECE C62)."""


def _unit_of(id_short: str) -> EngineeringUnit | None:
    if id_short in _SECONDS:
        return UNITS_BY_CODE["SEC"]
    return UNITS_BY_CODE["C62"] if id_short in _RATIOS else None


class KpiRollup(BaseModel):
    """The KPIs of a process or plant shell, rolled up from its parts' (ISO 22400-2 work centre)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shell: Annotated[str, Field(min_length=1)]
    parts: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class KpiFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assets: Annotated[list[MachineStateModel], Field(min_length=1)]
    rollups: list[KpiRollup] = Field(default_factory=list)


def load_kpi_file(path: Path) -> KpiFile:
    """The machine-state models and roll-ups of one KPI file; ``ConfigurationError`` names the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
        data = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return KpiFile.model_validate(data)
    except OSError as error:
        raise ConfigurationError(f"cannot read the KPI file: {error}", str(path)) from error
    except (yaml.YAMLError, orjson.JSONDecodeError) as error:
        raise ConfigurationError(f"not valid YAML/JSON: {error}", str(path)) from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(first["msg"], f"{path}: {where}") from error


def kpi_values(kpis: Kpis) -> dict[str, Any]:
    """The Property values of one window (None: no value)."""

    def seconds(value: timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    reasons = {reason: length.total_seconds() for reason, length in sorted(kpis.downtime_by_reason.items())}
    return {
        "Availability": kpis.availability,
        "Performance": kpis.effectiveness,
        "QualityRatio": kpis.quality_ratio,
        "OEE": kpis.oee,
        "MTBF": seconds(kpis.mtbf),
        "MTTR": seconds(kpis.mttr),
        "ActualProductionTime": kpis.actual_production_time.total_seconds(),
        "ActualDowntime": kpis.actual_downtime.total_seconds(),
        "ProducedQuantity": kpis.produced_quantity,
        "GoodQuantity": kpis.good_quantity,
        "FailureEvents": kpis.failure_events,
        "Coverage": kpis.coverage,
        "DowntimeByReason": orjson.dumps(reasons).decode(),
    }


def current_state(item: MachineStateModel, recorder: StateRecorder, now: datetime) -> tuple[MachineState, str]:
    """The asset's state at ``now``: a break or planned stop of its calendar wins over the device state."""
    for period in item.calendar.periods(now, now + timedelta(microseconds=1)):
        if period.state is MachineState.PLANNED_STOP:
            return MachineState.PLANNED_STOP, period.reason
    return recorder.state


def _reference(semantic_id: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, semantic_id),))


def kpi_submodel(shell_id: str, with_state: bool = False) -> model.Submodel:
    """The empty KPI submodel of one shell: a collection of KPI Properties per window.

    ``with_state`` (an asset, not a roll-up) adds its current ``MachineState`` and ``MachineStateReason``.
    """
    collections: list[model.SubmodelElement] = []
    if with_state:
        collections += [
            model.Property(id_short, model.datatypes.String, semantic_id=_reference(semantic))
            for id_short, semantic in STATE_SEMANTIC_IDS.items()
        ]
    for name in WINDOWS.values():
        properties = [
            model.Property(
                id_short,
                _TYPES.get(id_short, model.datatypes.Double),
                semantic_id=_reference(semantic),
            )
            for id_short, semantic in KPI_SEMANTIC_IDS.items()
        ]
        collections.append(model.SubmodelElementCollection(name, properties))
    return model.Submodel(
        f"{shell_id}/kpi",
        id_short="KPIs",
        semantic_id=_reference(KPI_SUBMODEL_SEMANTIC_ID),
        submodel_element=collections,
    )


def check_rollups(
    store: TwinStore,
    models: Sequence[MachineStateModel],
    rollups: Sequence[KpiRollup],
    where: str,
    earlier: Iterable[str] = (),
) -> None:
    """Each roll-up's shell exists and has no KPIs yet, and its parts come before it (so roll-ups form no
    cycle); ``earlier`` are the shells of roll-ups of KPI files listed before."""
    known = {item.asset for item in models} | set(earlier)
    for index, rollup in enumerate(rollups):
        try:
            store.shell(rollup.shell)
        except NotFoundError as error:
            raise ConfigurationError(
                f"no shell {rollup.shell!r}: {error}", f"{where}: rollups[{index}].shell"
            ) from error
        if rollup.shell in known:
            raise ConfigurationError(
                f"{rollup.shell!r} has its KPIs from an asset or roll-up already", f"{where}: rollups[{index}].shell"
            )
        for position, part in enumerate(rollup.parts):
            if part not in known:
                raise ConfigurationError(
                    f"{part!r} is no asset nor a roll-up listed before", f"{where}: rollups[{index}].parts[{position}]"
                )
        known.add(rollup.shell)


def check_models(store: TwinStore, models: Sequence[MachineStateModel], where: str) -> dict[tuple[str, str], int]:
    """(submodel id, canonical path) of each signal -> index of its model; ``ConfigurationError`` with the place."""
    signals: dict[tuple[str, str], int] = {}
    for index, item in enumerate(models):
        try:
            store.shell(item.asset)
        except NotFoundError as error:
            raise ConfigurationError(f"no shell {item.asset!r}: {error}", f"{where}: assets[{index}].asset") from error
        refs: list[tuple[str, SignalRef]] = [(name, spec.signal) for name, spec in item.counters().items()]
        refs += [("state signal", ref) for ref in item.state_signals()]
        for name, ref in refs:
            try:
                element = store.element(ref.submodel_id, ref.id_short_path)
            except NotFoundError as error:
                raise ConfigurationError(
                    f"{name} {ref.id_short_path!r} in submodel {ref.submodel_id!r}: {error}",
                    f"{where}: assets[{index}]",
                ) from error
            if not isinstance(element, model.Property):
                raise ConfigurationError(
                    f"{name} {ref.id_short_path!r} is a {type(element).__name__}, not a Property",
                    f"{where}: assets[{index}]",
                )
            signals[(ref.submodel_id, paths.path_of(element))] = index
    return signals


class KpiService(BusService):
    """Keeps the KPI submodels of one store up to date. ``async with`` starts and stops it.

    ``clock`` gives the current time (UTC); the windows end at it.
    """

    def __init__(
        self,
        store: TwinStore,
        models: Sequence[MachineStateModel],
        interval: float = 5.0,
        where: str = "analytics.kpi_files",
        clock: Callable[[], datetime] = utc_now,
        rollups: Sequence[KpiRollup] = (),
    ) -> None:
        self.store = store
        self.models = list(models)
        self.rollups = list(rollups)
        self.interval = interval
        self.clock = clock
        self._signals = check_models(store, self.models, where)
        check_rollups(store, self.models, self.rollups, where)
        self._refs: dict[tuple[str, str], dict[int, SignalRef]] = {}
        for index, item in enumerate(self.models):
            refs = [spec.signal for spec in item.counters().values()] + item.state_signals()
            for ref in refs:
                element = store.element(ref.submodel_id, ref.id_short_path)
                assert isinstance(element, model.SubmodelElement)
                self._refs.setdefault((ref.submodel_id, paths.path_of(element)), {})[index] = ref
        self.recorders: list[StateRecorder] = []
        self._failing: set[tuple[int, SignalRef]] = set()
        self._update_failing = False

    async def start(self) -> None:
        """Create the KPI submodels, bind them read-only, take the signals' current values, follow the bus."""
        placed = [(item.asset, kpi_submodel(item.asset, with_state=True)) for item in self.models]
        placed += [(rollup.shell, kpi_submodel(rollup.shell)) for rollup in self.rollups]
        await install_alarm_submodels(self.store, placed)
        for _, submodel in placed:
            for path, element in paths.walk(submodel):
                if isinstance(element, model.Property) and self.store.binding(submodel.id, path) is None:
                    unit = _unit_of(element.id_short)
                    self.store.bind(submodel.id, path, ElementBinding(SOURCE, writable=False, unit=unit))
        now = self.clock()
        self.recorders = [StateRecorder(item, now) for item in self.models]
        self._subscription = self.store.bus.subscribe("kpi")
        for key, refs in self._refs.items():
            state = self.store.state(*key)
            # Only a good value is a counter's baseline: a Property's value before its device first
            # answered (uncertain, not yet read) would count the device's whole counter as production.
            if state is not None and state.quality is Quality.GOOD and state.value is not None:
                for index, ref in refs.items():
                    self.recorders[index].add(Sample(ref, state.value, now, True))
        self.update()
        self._tasks = [
            asyncio.create_task(self._follow(self._subscription), name="kpi-follow"),
            asyncio.create_task(self._tick(), name="kpi-tick"),
        ]
        _LOG.info("KPIs of %d assets computed", len(self.models))

    async def _follow(self, subscription: Subscription[StoreEvent]) -> None:
        while True:
            event = await subscription.get()
            if not isinstance(event, ValueChanged) or event.origin == ORIGIN:
                continue
            refs = self._refs.get((event.submodel_id, event.id_short_path))
            if not refs:
                continue
            for index, ref in refs.items():
                sample = Sample(ref, event.value, event.source_time, event.quality is not Quality.BAD)
                asset = self.models[index].asset
                try:
                    self.recorders[index].add(sample)
                except ValueError as error:
                    # a value the model cannot read (text for a fault code) is no data: unknown time
                    self.recorders[index].add(Sample(ref, None, event.source_time, False))
                    if (index, ref) not in self._failing:  # logged once, and its recovery once
                        self._failing.add((index, ref))
                        _LOG.warning("KPI signal %s of %s: %s; taken as no data", ref.id_short_path, asset, error)
                else:
                    if (index, ref) in self._failing:
                        self._failing.discard((index, ref))
                        _LOG.info("KPI signal %s of %s is taken again", ref.id_short_path, asset)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the computation period, not a synchronisation
            try:
                self.update()
            except Exception:
                if not self._update_failing:  # logged once, and its recovery once
                    self._update_failing = True
                    _LOG.exception("KPI computation failed; the KPIs keep their last values")
            else:
                if self._update_failing:
                    self._update_failing = False
                    _LOG.info("KPI computation works again")

    def update(self) -> None:
        """Compute every window of every asset at ``clock()`` and write the KPIs into the twin."""
        now = self.clock()
        computed: dict[tuple[str, WindowKind], Kpis | None] = {}
        for item, recorder in zip(self.models, self.recorders, strict=True):
            timeline = recorder.timeline(now)
            for kind in WINDOWS:
                span = window(kind, item.calendar, now)
                found = None if span is None else compute(item, timeline, recorder.increments, span)
                computed[(item.asset, kind)] = found
            state, reason = current_state(item, recorder, now)
            self._write(f"{item.asset}/kpi", "MachineState", state.value, now)
            self._write(f"{item.asset}/kpi", "MachineStateReason", reason, now)
            longest_shift = max(shift.length() for shift in item.calendar.shifts)
            recorder.prune(now - timedelta(hours=24) - longest_shift)
        for rollup in self.rollups:
            for kind in WINDOWS:
                parts = [computed[(part, kind)] for part in rollup.parts]
                found = None
                if all(part is not None for part in parts):
                    try:
                        found = roll_up(rollup.shell, [part for part in parts if part is not None])
                    except ValueError:
                        found = None  # the parts' windows differ: no common current shift
                computed[(rollup.shell, kind)] = found
        for (shell, kind), kpis in computed.items():
            values = kpi_values(kpis) if kpis is not None else dict.fromkeys(KPI_SEMANTIC_IDS)
            for id_short, value in values.items():
                self._write(f"{shell}/kpi", f"{WINDOWS[kind]}.{id_short}", value, now)

    def _write(self, submodel_id: str, path: str, value: Any, now: datetime) -> None:
        if value is None:
            change = ValueChanged(submodel_id, path, None, now, Quality.BAD, QualityReason.NOT_YET_READ, now, ORIGIN)
        else:
            change = ValueChanged(submodel_id, path, value, now, Quality.GOOD, QualityReason.NONE, now, ORIGIN)
        try:
            self.store.apply(change)
        except NotFoundError as error:
            _LOG.warning("KPI %s %s is gone: %s", submodel_id, path, error)


async def start_kpis(stack: AsyncExitStack, settings: HubSettings, store: TwinStore) -> KpiService | None:
    """Start the KPIs of ``settings.analytics.kpi_files`` on ``store``; ``None`` without KPI files."""
    files = settings.analytics.kpi_files
    if not files:
        return None
    models: list[MachineStateModel] = []
    rollups: list[KpiRollup] = []
    for path in files:
        loaded = await asyncio.to_thread(load_kpi_file, path)
        # each file's problems named with its path (the service checks the whole again)
        check_models(store, loaded.assets, str(path))
        check_rollups(store, [*models, *loaded.assets], loaded.rollups, str(path), [item.shell for item in rollups])
        models.extend(loaded.assets)
        rollups.extend(loaded.rollups)
    service = KpiService(store, models, settings.analytics.kpi_interval, rollups=rollups)
    return await stack.enter_async_context(service)


def check_kpi_files(files: Sequence[Path], identifiables: Sequence[model.Identifiable]) -> list[model.Submodel]:
    """Check KPI files against a model (``aas-server check``): ``ConfigurationError`` with the place.

    Returns the KPI submodels the hub would add, so that rules on KPIs can be checked against them.
    """
    store = TwinStore()
    store.add_all(list(identifiables))
    models: list[MachineStateModel] = []
    rollups: list[KpiRollup] = []
    for path in files:
        loaded = load_kpi_file(path)
        check_models(store, loaded.assets, str(path))
        check_rollups(store, [*models, *loaded.assets], loaded.rollups, str(path), [item.shell for item in rollups])
        models.extend(loaded.assets)
        rollups.extend(loaded.rollups)
    return [kpi_submodel(item.asset, with_state=True) for item in models] + [
        kpi_submodel(item.shell) for item in rollups
    ]

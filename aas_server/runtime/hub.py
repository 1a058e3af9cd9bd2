"""The composition root: builds the store, loads twins and mappings, and owns every running part.

Start order: database → store (model loaded from the database, or built from the twin files on
first start) → mappings bound to store elements → simulator (if configured) → OPC UA and REST
views → device connectors → persistence of device values. Everything is entered into one
``AsyncExitStack`` so that it is stopped in reverse order, also when starting fails half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.auth import access_middleware
from aas_server.config import HubSettings
from aas_server.connectors.base import Connector, ConnectorContext, MethodCaller
from aas_server.connectors.registry import create_connector
from aas_server.devices.bottling_line import BottlingLineSimulator
from aas_server.errors import (
    ConfigurationError,
    MappingError,
    NotFoundError,
    PackageError,
    PersistenceError,
    StorageFullError,
)
from aas_server.exchange import read_package_file
from aas_server.mapping.aid import mapping_from_aid, mapping_to_aids
from aas_server.mapping.bindings import element_binding
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import (
    MappingFile,
    OpcUaMethodPoint,
    load_mapping,
)
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.model.twins import build_environment, load_twins
from aas_server.opcua.server import OpcUaProjection
from aas_server.persistence.permissions import private_directory
from aas_server.persistence.sqlite import SqliteAttachmentStore, SqlitePackageStore, SqliteRepository
from aas_server.runtime.analytics import AlarmService, start_alarms
from aas_server.runtime.demo_faults import install_fault_operations
from aas_server.runtime.events import EventPublishing, start_event_publishing
from aas_server.runtime.gateway import DeviceGateway
from aas_server.runtime.history import HistoryService, install_time_series, start_history
from aas_server.runtime.kpi import KpiService, start_kpis
from aas_server.runtime.predictive import PredictiveService, start_predictive
from aas_server.runtime.rollups import RollupService, start_rollups
from aas_server.runtime.simulation import SimulationService, simulation_service
from aas_server.runtime.submodels import install_submodel, refers_to
from aas_server.security.access import AccessControl
from aas_server.security.tls import rest_server_context
from aas_server.semantics.concepts import concept_descriptions_for, semantic_conflicts
from aas_server.store.files import claim_unowned_files
from aas_server.store.operations import OperationHandler, OperationRegistry
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)

_PERSIST_PERIOD = 1.0
"""Seconds between batched writes of device values to the database."""


def load_model_files(paths: list[Path]) -> list[model.Identifiable]:
    """Build identifiables from twin definition files (YAML) and AAS packages (AASX, JSON, XML).

    Packages are read leniently; every repair or dropped element is logged with its place.
    """
    result: list[model.Identifiable] = []
    for path in paths:
        if path.suffix.lower() in {".yaml", ".yml"}:
            result.extend(build_environment(load_twins(path)))
            continue
        try:
            imported = read_package_file(path)
        except PackageError as error:
            raise ConfigurationError(str(error), str(path)) from None
        if imported.report.issues:
            _LOG.warning("%s", imported.report.summary())
        result.extend(imported.identifiables)
    return result


_AID_SEMANTIC_PREFIX = "https://admin-shell.io/idta/AssetInterfacesDescription/"
_AIMC_SEMANTIC_PREFIX = "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/"


def load_mapping_source(path: Path) -> MappingFile:
    """A mapping file (YAML), or an AAS package (AASX, JSON, XML) holding an AID submodel and its AIMC.

    ``MappingError`` names the file and, for a package, the idShort path of what is wrong.
    """
    if path.suffix.lower() in {".yaml", ".yml"}:
        return load_mapping(path)
    try:
        imported = read_package_file(path)
    except PackageError as error:
        raise MappingError(str(error), str(path)) from None

    def with_semantic_prefix(prefix: str) -> list[model.Submodel]:
        found = []
        for identifiable in imported.identifiables:
            if isinstance(identifiable, model.Submodel) and identifiable.semantic_id is not None:
                keys = identifiable.semantic_id.key
                if keys and keys[0].value.startswith(prefix):
                    found.append(identifiable)
        return found

    descriptions = with_semantic_prefix(_AID_SEMANTIC_PREFIX)
    configurations = with_semantic_prefix(_AIMC_SEMANTIC_PREFIX)
    if len(descriptions) != 1 or len(configurations) > 1:
        raise MappingError(
            f"a package used as a mapping source needs one Asset Interfaces Description submodel and at most one "
            f"Mapping Configuration; it has {len(descriptions)} and {len(configurations)}",
            str(path),
        )
    try:
        return mapping_from_aid(descriptions[0], configurations[0] if configurations else None)
    except MappingError as error:
        raise MappingError(error.reason, f"{path}: {error.location}" if error.location else str(path)) from None


class Hub:
    """One running twin hub. ``async with Hub(settings) as hub:`` starts it; leaving the block stops it."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._tasks: set[asyncio.Task[None]] = set()
        self._bound: set[tuple[str, str]] = set()
        """The targets of device points (Properties and Operations), by submodel id and idShort path."""
        self._connectors: dict[str, Connector] = {}
        self.gateway = DeviceGateway(self._connectors)
        """Carries client writes of device-bound Properties to their devices (the store's ``DeviceWriter``)."""
        self.store: TwinStore
        self.repository: SqliteRepository
        self.opcua: OpcUaProjection | None = None
        self.simulator: BottlingLineSimulator | None = None
        self.rest_url: str | None = None
        self.rollups: RollupService | None = None
        self.kpis: KpiService | None = None
        """ISO 22400-2 KPIs in the twin (``settings.analytics.kpi_files``); ``None`` without KPI files."""
        self.alarms: AlarmService | None = None
        """Monitoring rules' alarms (``settings.analytics``); ``None`` without rules files."""
        self.predictive: PredictiveService | None = None
        """Anomaly detectors and RUL estimates (``settings.analytics.predictive``); ``None`` without any."""
        self.history: HistoryService | None = None
        self.simulations: SimulationService
        """What-if simulation jobs of process shells (``settings.simulation``), run in worker processes."""
        self.events: EventPublishing | None = None
        """MQTT change events (``settings.events``); ``None`` when they are off."""
        self.access: AccessControl
        """REST access control and the rules behind OPC UA writes (``settings.security``), once started."""
        self.operations = OperationRegistry()
        """Handlers of AAS Operations, shared by REST (``invoke``) and OPC UA (Methods)."""

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def opcua_url(self) -> str | None:
        return self.opcua.endpoint_url if self.opcua else None

    async def _start(self) -> None:
        settings = self.settings
        await asyncio.to_thread(private_directory, settings.data_dir)
        mappings = [load_mapping_source(path) for path in settings.mappings]
        self.access = await asyncio.to_thread(AccessControl.from_settings, settings)
        self._stack.push_async_callback(self.access.aclose)
        self.repository = await self._stack.enter_async_context(SqliteRepository(settings.sqlite_path))
        self.store = TwinStore(journal=self.repository)
        if await self.repository.has_model():
            identifiables = await self.repository.load_identifiables()
            _LOG.info("loaded %d identifiables from %s", len(identifiables), settings.sqlite_path)
            identifiables.extend(await self._rebuild_quarantined(identifiables))
        else:
            identifiables = await asyncio.to_thread(load_model_files, settings.twins)
            await self.repository.save_identifiables(identifiables)
            _LOG.info("built %d identifiables from %d twin files", len(identifiables), len(settings.twins))
        self.store.add_all(identifiables)

        paths = settings.mappings
        engines = [(mapping, self._bind_points(path, mapping)) for path, mapping in zip(paths, mappings, strict=True)]
        await self._describe_mappings(mappings)
        await self._restore_values()
        # before roll-ups, OPC UA and REST: their changes are announced from the first one on
        self.events = await start_event_publishing(self._stack, settings, self.store, self.repository)
        self.history = await start_history(self._stack, settings, self.store, self._is_recorded)
        # before the roll-ups and the alarms: roll-ups may use KPIs, rules may watch them (an OEE under a limit)
        self.kpis = await start_kpis(self._stack, settings, self.store)
        # before OPC UA and REST: targets are bound read-only, and the first read shows computed values
        self.rollups = await start_rollups(self._stack, settings, self.store)
        # before the alarms: rules may watch its PredictiveMaintenance elements (RUL under a horizon)
        self.predictive = await start_predictive(self._stack, settings, self.store)
        # after values and roll-ups, before OPC UA and REST: they show the alarms, restored and evaluated
        outbox = self.repository if self.events is not None else None
        self.alarms = await start_alarms(self._stack, settings, self.store, self.access.audit, outbox)
        # before OPC UA and REST, which submit jobs; its worker pool starts with the first job
        self.simulations = await self._stack.enter_async_context(simulation_service(settings, self.store, outbox))

        endpoints = dict(settings.device_endpoints)
        if settings.simulator.enabled:
            endpoints[settings.simulator.device] = await self._start_simulator(mappings)

        if settings.opcua.enabled:
            self.opcua = await self._stack.enter_async_context(
                OpcUaProjection(
                    self.store,
                    settings.opcua,
                    settings.data_dir,
                    operations=self.operations,
                    history=self.history.source if self.history is not None else None,
                    access=self.access,
                    alarms=self.alarms,
                    simulations=self.simulations,
                )
            )
        if settings.rest.enabled:
            await self._start_rest()
        if self.history is not None and settings.history.time_series_submodels:
            # after REST: the segments' endpoints carry the real base URL; OPC UA follows as a model change
            await install_time_series(self.store, self.history.time_series(self.rest_url or "/api/v3.0"))

        for mapping, engine in engines:
            await self._start_connectors(mapping, engine, endpoints)
        self._spawn(self._persist_device_values(), "persist-device-values")
        self._stack.push_async_callback(self._stop_tasks)

    async def _rebuild_quarantined(self, loaded: list[model.Identifiable]) -> list[model.Identifiable]:
        """The identifiables quarantined at this load that the twin files define, built afresh and stored.

        A stored object that no longer reads back is set aside by the repository; when the twin files
        it came from define it, the hub starts with it as defined there (changes made since through
        REST stay in the quarantine table), so mappings bound to it still find their targets.
        """
        missing = set(self.repository.quarantined_at_load) - {identifiable.id for identifiable in loaded}
        if not missing or not self.settings.twins:
            return []
        defined = await asyncio.to_thread(load_model_files, self.settings.twins)
        rebuilt = [identifiable for identifiable in defined if identifiable.id in missing]
        if rebuilt:
            await self.repository.save_identifiables(rebuilt)
            _LOG.warning(
                "rebuilt %s from the twin files after quarantining the stored copy",
                ", ".join(repr(identifiable.id) for identifiable in rebuilt),
            )
        return rebuilt

    def _bind_points(self, path: Path, mapping: MappingFile) -> MappingEngine:
        """Bind each point of ``mapping`` to its target; the mapping's engine, typed by the targets' valueTypes."""
        conflicts = semantic_conflicts(mapping, self._element_or_none)
        if conflicts:
            (where, message), *others = conflicts
            raise MappingError("; ".join([message, *(f"{w}: {m}" for w, m in others)]), f"{path}: {where}")
        value_types: dict[str, Any] = {}
        writable: list[tuple[str, str, str]] = []
        for index, point in enumerate(mapping.points):
            where = f"{path}: points[{index}] ({point.name}).target"
            submodel_id, id_short_path = point.target.submodel, point.target.path
            try:
                element = self.store.element(submodel_id, id_short_path)
            except NotFoundError as error:
                raise MappingError(str(error), where) from None
            key = (submodel_id, id_short_path)
            if key in self._bound:
                raise MappingError(f"{submodel_id} {id_short_path} is the target of another point already", where)
            if isinstance(point, OpcUaMethodPoint):
                if not isinstance(element, model.Operation):
                    raise MappingError(f"{id_short_path!r} is a {type(element).__name__}, not an Operation", where)
                self._bound.add(key)
                self.operations.register(submodel_id, id_short_path, self._method_handler(element, point))
                continue
            if not isinstance(element, model.Property):
                raise MappingError(f"{id_short_path!r} is a {type(element).__name__}, not a Property", where)
            self._bound.add(key)
            value_types[point.name] = element.value_type
            writer = self.gateway if point.writable else None
            self.store.bind(submodel_id, id_short_path, element_binding(point, mapping), writer)
            if point.writable:
                writable.append((submodel_id, id_short_path, point.name))
        engine = MappingEngine(mapping, value_types)
        for submodel_id, id_short_path, point_name in writable:
            self.gateway.route(submodel_id, id_short_path, engine, point_name)
        return engine

    def _is_recorded(self, submodel_id: str, id_short_path: str) -> bool:
        """History records device-fed values, roll-ups, KPIs and predictive results (not plain model values)."""
        binding = self.store.binding(submodel_id, id_short_path)
        return binding is not None and binding.source.startswith(("device:", "rollup:", "kpi:", "predictive"))

    def _element_or_none(self, submodel_id: str, id_short_path: str) -> model.SubmodelElement | None:
        try:
            return self.store.element(submodel_id, id_short_path)
        except NotFoundError:
            return None

    def _shell_holding(self, submodel_id: str) -> str | None:
        for shell in self.store.shells():
            if refers_to(shell, submodel_id):
                return shell.id
        return None

    async def _describe_mappings(self, mappings: list[MappingFile]) -> None:
        """ConceptDescriptions for mapped semanticIds that have none, and each device's wiring as AID + AIMC.

        The AID and AIMC submodels are rebuilt from the mapping files at every start (journaled like
        any model change) and referenced from the device's shell, so the twin describes its own wiring.
        """
        known = {description.id: description for description in self.store.concept_descriptions()}
        for mapping in mappings:
            value_types: dict[str, str] = {}
            for point in mapping.points:
                element = self._element_or_none(point.target.submodel, point.target.path)
                if isinstance(element, model.Property):
                    value_types[point.name] = model.datatypes.XSD_TYPE_NAMES[element.value_type]
            for description in concept_descriptions_for(mapping, known, value_types):
                known[description.id] = description
                await self.store.create(description)
            shells: dict[str, str] = {}
            for device in mapping.devices:
                first = next((point for point in mapping.points if point.device == device.name), None)
                holder = self._shell_holding(first.target.submodel) if first is not None else None
                if holder is not None:
                    shells[device.name] = holder
            for pair in mapping_to_aids(mapping, shells=shells, resolve=self._element_or_none):
                for submodel in pair:
                    await self._put_description(submodel)

    async def _put_description(self, submodel: model.Submodel) -> None:
        await install_submodel(self.store, submodel.id.rsplit("/", 1)[0], submodel, missing_shell_ok=True)

    def _method_handler(self, operation: model.Operation, point: OpcUaMethodPoint) -> OperationHandler:
        """An Operation carried out by an OPC UA method: inputs in declared order, outputs by declared idShort."""
        input_names = [variable.id_short for variable in operation.input_variable] + [
            variable.id_short for variable in operation.in_output_variable
        ]
        output_names = [variable.id_short for variable in operation.output_variable] + [
            variable.id_short for variable in operation.in_output_variable
        ]

        async def invoke(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
            connector: object = self._connectors.get(point.device)
            if not isinstance(connector, MethodCaller):
                raise NotFoundError(f"device {point.device!r} is not connected")
            outputs = await connector.call(point.name, [arguments.get(name) for name in input_names])
            return dict(zip(output_names, outputs, strict=False))

        return invoke

    async def _restore_values(self) -> None:
        for stored in await self.repository.load_values():
            key = (stored.submodel_id, stored.id_short_path)
            try:
                element = self.store.element(*key)
            except NotFoundError:
                _LOG.warning("stored value of %s %s has no element any more; ignored", *key)
                continue
            if not isinstance(element, model.Property) or stored.lexical_value is None:
                continue
            try:
                value = stored.typed_value(element.value_type)
            except ValueError as error:
                _LOG.warning("stored value of %s %s does not fit its valueType (%s); ignored", *key, error)
                continue
            if key in self._bound:
                quality, reason = Quality.UNCERTAIN, QualityReason.LAST_USABLE
            else:
                quality, reason = stored.quality, stored.reason
            self.store.apply(
                ValueChanged(*key, value, stored.source_time, quality, reason, stored.server_time, "restore")
            )

    async def _start_simulator(self, mappings: list[MappingFile]) -> str:
        simulated = self.settings.simulator
        mapping = next((m for m in mappings if any(d.name == simulated.device for d in m.devices)), None)
        if mapping is None:
            raise ConfigurationError(f"simulator.device {simulated.device!r} is not a device of any mapping file")
        simulator = BottlingLineSimulator(
            mapping,
            device_name=simulated.device,
            host=simulated.host,
            port=simulated.port,
            update_interval=simulated.update_interval,
            seed=simulated.seed,
        )
        for fault in simulated.faults:
            simulator.inject_fault(fault)
        install_fault_operations(self.store, self.operations, simulator, simulated.device)
        await simulator.start()
        self._stack.push_async_callback(simulator.stop)
        self.simulator = simulator
        _LOG.info("simulated device %s on %s:%d", simulated.device, simulated.host, simulator.port)
        return f"{simulated.host}:{simulator.port}"

    async def _start_rest(self) -> None:
        rest = self.settings.rest
        ssl_context = (
            await asyncio.to_thread(rest_server_context, rest.tls, self.settings.data_dir, rest.host)
            if rest.tls is not None
            else None
        )
        attachments = SqliteAttachmentStore(self.repository)
        claimed = await claim_unowned_files(attachments, list(self.store.identifiables()))
        if claimed:
            _LOG.info("%d stored files kept under a bare package path now belong to the elements naming them", claimed)
        app = create_app(
            self.store,
            middlewares=[access_middleware(self.access)],
            attachments=attachments,
            packages=SqlitePackageStore(self.repository),
            operations=self.operations,
            history=self.history.source if self.history is not None else None,
            alarms=self.alarms,
            simulations=self.simulations,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        listener = socket.create_server((rest.host, rest.port), reuse_port=False)
        site = web.SockSite(runner, listener, ssl_context=ssl_context)
        await site.start()
        host, port = listener.getsockname()[:2]
        scheme = "https" if ssl_context is not None else "http"
        self.rest_url = f"{scheme}://{host}:{port}/api/v3.0"
        _LOG.info("REST API on %s", self.rest_url)

    async def _start_connectors(self, mapping: MappingFile, engine: MappingEngine, endpoints: dict[str, str]) -> None:
        """One connector per device, made by its protocol's entry in the registry (``mapping.schema.PROTOCOLS``)."""
        context = ConnectorContext(engine.sink(self.store.apply), self.settings.data_dir)
        for device in mapping.devices:
            connector = create_connector(device, mapping.points_of(device.name), context, endpoints.get(device.name))
            self._connectors[device.name] = await self._stack.enter_async_context(connector)

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _persist_device_values(self) -> None:
        """Batch device values into the database once per period, keeping only the last per Property."""
        subscription = self.store.bus.subscribe("persistence", maxsize=100_000)
        pending: list[Any] = []
        try:
            while True:
                pending.append(await subscription.get())
                await asyncio.sleep(_PERSIST_PERIOD)  # batching window (a rate limit), not synchronisation
                pending.extend(subscription.get_nowait_all())
                batch, pending = pending, []
                await self._flush(batch)
        except asyncio.CancelledError:
            pending.extend(subscription.get_nowait_all())
            await self._flush(pending)
            raise
        finally:
            subscription.close()

    async def _flush(self, events: list[Any]) -> None:
        latest: dict[tuple[str, str], ValueChanged] = {}
        for event in events:
            if isinstance(event, ValueChanged) and event.origin.startswith("device"):
                latest[(event.submodel_id, event.id_short_path)] = event
        if latest:
            try:
                await self.repository.persist_values(list(latest.values()))
            except StorageFullError:
                pass  # the database logs a full disk once, and its recovery once
            except PersistenceError as error:
                _LOG.error("could not persist %d device values: %s", len(latest), error)

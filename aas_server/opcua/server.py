"""The OPC UA projection of the twin store: an asyncua server that owns its address space, sync and writes.

``OpcUaProjection`` is an async context manager (``ARCHITECTURE.md``, house rule 4): entering it
projects the store into the address space (plans from :mod:`aas_server.opcua.projection`, applied
and kept current by :mod:`aas_server.opcua.address_space`), starts the server with secure defaults
(:mod:`aas_server.opcua.security`) and the store sync (:mod:`aas_server.opcua.sync`), which follows
value and model changes live; client writes go through the store (:mod:`aas_server.opcua.writes`).
With a ``history``, HistoryRead of recorded Properties reads it (:mod:`aas_server.opcua.history`).
With ``alarms``, the hub's alarms are OPC UA conditions with events and methods (:mod:`aas_server.opcua.alarms`);
with ``simulations``, process shells have a ``Simulate`` Method (:mod:`aas_server.opcua.simulations`).
Leaving it stops everything. See ``docs/opcua.md``.

Every request passes :class:`~aas_server.opcua.processor.HubProcessor`: a secure channel matching no
offered endpoint may only discover, and unencrypted passwords are refused. With ``access`` (the hub's
``AccessControl``), client writes (:mod:`aas_server.opcua.writes`) and reads, browsing, history,
Method calls and monitored items (:mod:`aas_server.opcua.access`) are checked against the access
rules (``security.rules``) with the user's role as rule role.

Left out for now: per-session ``UserAccessLevel`` and ``UserExecutable`` without access control
(they equal ``AccessLevel`` and ``Executable``; the role checks still refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from asyncua import ua

from aas_server.analytics.source import AlarmSource
from aas_server.config import OpcUaSettings, SecurityPolicyName
from aas_server.lifecycle import Service, cancel_and_wait
from aas_server.opcua.access import SessionAccess
from aas_server.opcua.address_space import ProjectedAddressSpace
from aas_server.opcua.alarms import AlarmConditions
from aas_server.opcua.history import ProjectionHistory
from aas_server.opcua.methods import OperationCallRuleset
from aas_server.opcua.nodeset import import_type_model
from aas_server.opcua.processor import HubServer
from aas_server.opcua.publishing import use_prompt_publishing
from aas_server.opcua.security import (
    ClientCertificateTrust,
    HubUserManager,
    ensure_server_certificate,
    identity_token_types,
    security_policy_types,
)
from aas_server.opcua.simulations import SimulateMethods
from aas_server.opcua.sync import ModelChangeHandler, Resynchronizer, StoreSync
from aas_server.opcua.writes import ProjectionAttributeService, PropertyWriter
from aas_server.opcua_common.certificates import encoding_of
from aas_server.security.access import AccessControl
from aas_server.simulation.jobs import SimulationJobs
from aas_server.store.bus import Subscription
from aas_server.store.history import HistorySource
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

PRODUCT_URI = "urn:aas-server"
_PORT_ATTEMPTS = 5


_Started = TypeVar("_Started")


def _started(value: _Started | None) -> _Started:
    """``value``, set when the projection starts; ``RuntimeError`` before."""
    if value is None:
        raise RuntimeError("the OPC UA projection is not started")
    return value


class OpcUaProjection(Service):
    """The twin store as an OPC UA server (OPC 10000-3 address space, OPC 10000-4 services).

    ``async with OpcUaProjection(store, settings, data_dir) as projection:`` serves the store at
    ``projection.endpoint_url`` until the block ends.
    """

    def __init__(
        self,
        store: TwinStore,
        settings: OpcUaSettings,
        data_dir: Path,
        *,
        write_timeout: float = 30.0,
        operations: OperationRegistry | None = None,
        history: HistorySource | None = None,
        access: AccessControl | None = None,
        alarms: AlarmSource | None = None,
        simulations: SimulationJobs | None = None,
    ) -> None:
        self._store = store
        self._alarms = alarms
        self._simulations = simulations
        self._alarm_conditions: AlarmConditions | None = None
        self._access = access
        self._operations = operations
        self._history = history
        self._projection_history: ProjectionHistory | None = None
        self._types_namespace_index: int | None = None
        self._settings = settings
        self._data_dir = data_dir
        self._write_timeout = write_timeout
        self._server: HubServer | None = None
        self._subscription: Subscription[StoreEvent] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._endpoint_url: str | None = None
        self._certificate_path: Path | None = None
        self._namespace_index: int | None = None
        self._address_space: ProjectedAddressSpace | None = None
        self.client_trust: ClientCertificateTrust | None = None
        """The client certificate trust list (its ``trusted_folder`` and ``rejected_folder``), once started."""

    @property
    def types_namespace_index(self) -> int:
        """The index of the type model's namespace (``urn:aas-server:types:v3``), normally 3."""
        return _started(self._types_namespace_index)

    @property
    def endpoint_url(self) -> str:
        """``opc.tcp://host:port/`` with the port actually listened on."""
        return _started(self._endpoint_url)

    @property
    def server_certificate_path(self) -> Path:
        """The server's certificate (configured, or generated in ``<data_dir>/pki/``)."""
        return _started(self._certificate_path)

    @property
    def namespace_index(self) -> int:
        """The index of ``settings.namespace_uri`` in the server's namespace array."""
        return _started(self._namespace_index)

    async def start(self) -> None:
        """Serve the store; when starting fails, what was started is stopped again."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self._settings
        policies = security_policy_types(settings)
        tokens = identity_token_types(settings)
        certificate_path, key_path = await ensure_server_certificate(settings, self._data_dir)
        certificate, private_key = await asyncio.gather(
            asyncio.to_thread(certificate_path.read_bytes), asyncio.to_thread(key_path.read_bytes)
        )
        self._certificate_path = certificate_path
        trust = ClientCertificateTrust(settings, self._data_dir)
        await trust.load()
        self.client_trust = trust
        self._subscription = self._store.bus.subscribe("opcua")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = settings.port or _free_port(settings.host)
            url = f"opc.tcp://{_host_for_url(settings.host)}:{port}/"
            server = HubServer(
                user_manager=HubUserManager(settings, trust),
                plaintext_passwords=SecurityPolicyName.NONE in settings.security_policies,
            )
            use_prompt_publishing(server.iserver)
            server.set_server_name(settings.server_name)
            server.product_uri = PRODUCT_URI
            server.manufacturer_name = "aas-server"
            await server.init()
            await server.set_application_uri(settings.application_uri)
            server.set_endpoint(url)
            server.allow_remote_admin(False)
            server.set_security_policy(policies, permission_ruleset=OperationCallRuleset())
            server.set_identity_tokens(tokens)
            server.set_certificate_validator(trust.validate)
            await server.load_certificate(certificate, encoding_of(certificate))
            await server.load_private_key(private_key, None, encoding_of(private_key))
            self._namespace_index = await server.register_namespace(settings.namespace_uri)
            self._types_namespace_index = await import_type_model(server)
            address_space = ProjectedAddressSpace(
                server,
                self._store,
                self._namespace_index,
                types_namespace_index=self._types_namespace_index,
                operations=self._operations,
                call_timeout=self._write_timeout,
            )
            with _cyclic_collection_paused():
                await address_space.build()
            await address_space.enable_model_change_events()
            if self._history is not None:
                self._projection_history = ProjectionHistory(server, address_space, self._store, self._history)
                await self._projection_history.mark()
                server.iserver.history_manager = self._projection_history
            writer = PropertyWriter(
                self._store,
                address_space.property_targets,
                server.iserver.aspace.__contains__,
                self._write_timeout,
                self._access,
            )
            server.iserver.attribute_service = ProjectionAttributeService(server.iserver.aspace, writer)
            if self._access is not None and self._access.enabled:
                server.access = SessionAccess(self._access, self._store, self._namespace_index)
                server.access.filter_model_change_events(server.iserver)
                if settings.allow_anonymous_read and self._access.anonymous_role is None and attempt == 1:
                    _LOG.warning(
                        "OPC UA anonymous sessions are allowed but security.anonymous_role is not set: "
                        "under the access rules they may read no shell or submodel"
                    )
            try:
                await server.start()
            except OSError as error:
                if settings.port or error.errno != errno.EADDRINUSE or attempt == _PORT_ATTEMPTS:
                    raise
                _LOG.info("OPC UA port %d was taken meanwhile; trying another", port)
                continue
            self._server = server
            self._address_space = address_space
            self._endpoint_url = url
            break
        assert self._address_space is not None
        if self._alarms is not None:
            assert self._server is not None
            self._alarm_conditions = AlarmConditions(self._server, self._alarms, self.namespace_index)
            await self._alarm_conditions.start()
        simulate: SimulateMethods | None = None
        if self._simulations is not None:
            assert self._server is not None
            simulate = SimulateMethods(self._server, self._simulations, self._store, self.namespace_index)
            await simulate.start()
        apply_model_change: ModelChangeHandler = self._address_space.apply
        resynchronize: Resynchronizer = self._address_space.resynchronize
        if self._projection_history is not None:
            apply_model_change, resynchronize = self._projection_history.following(apply_model_change, resynchronize)
        if self._alarm_conditions is not None:
            apply_model_change, resynchronize = self._alarm_conditions.following(apply_model_change, resynchronize)
        if simulate is not None:
            apply_model_change, resynchronize = simulate.following(apply_model_change, resynchronize)
        sync = StoreSync(
            self._subscription,
            self._address_space.value_nodes,
            self._server_write,
            apply_model_change,
            resynchronize,
        )
        self._sync_task = asyncio.create_task(sync.run(), name="opcua-store-sync")
        _LOG.info(
            "OPC UA server listening at %s (security policies: %s)",
            self._endpoint_url,
            ", ".join(policy.value for policy in dict.fromkeys(settings.security_policies)),
        )

    async def _server_write(self, node_id: ua.NodeId, value: ua.DataValue) -> None:
        assert self._server is not None
        await self._server.write_attribute_value(node_id, value)

    async def stop(self) -> None:
        await cancel_and_wait(self._sync_task)
        self._sync_task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._alarm_conditions is not None:
            await self._alarm_conditions.stop()
            self._alarm_conditions = None
        if self._server is not None:
            await _stop_clock(self._server)
            await self._server.stop()
            self._server = None
        self._endpoint_url = None
        self._address_space = None
        self._projection_history = None


@contextlib.contextmanager
def _cyclic_collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the address space is built, then freeze what exists.

    Building 100,000 properties allocates millions of long-lived objects; each full collection
    walks them all (~1.5 s at that size) and the collector runs several while they are created.
    Afterwards ``gc.freeze()`` moves the objects existing at start (the model, the address space)
    out of the collector's sight, so later full collections do not pause the server for that long.
    Memory is still freed by reference counting; only reference cycles among those startup
    objects, once dropped, stay until the process ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


async def _stop_clock(server: HubServer) -> None:
    """Cancel asyncua's one-second ``CurrentTime`` loop, which ``Server.stop`` would otherwise wait out."""
    clock: asyncio.Task[None] | None = getattr(server.iserver, "time_task", None)
    if clock is None:
        return
    server.iserver.time_task = None
    clock.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await clock


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host

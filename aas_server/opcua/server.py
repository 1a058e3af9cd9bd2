"""The OPC UA projection of the twin store: an asyncua server that owns its address space, sync and writes.

``OpcUaProjection`` is an async context manager (``ARCHITECTURE.md``, house rule 4): entering it
plans the address space from the store (:mod:`aas_server.opcua.projection`), applies the plan,
starts the server with secure defaults (:mod:`aas_server.opcua.security`) and the value sync
(:mod:`aas_server.opcua.sync`); client writes go through the store (:mod:`aas_server.opcua.writes`).
Leaving it stops everything. See ``docs/opcua.md``.

Left out for now: structure changes after start (``ModelChanged`` is skipped), per-session
``UserAccessLevel`` (it equals ``AccessLevel``; the write hook enforces roles).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from aas_server.config import OpcUaSettings
from aas_server.opcua.projection import (
    AddressSpacePlan,
    ElementKey,
    ObjectNode,
    VariableNode,
    plan_address_space,
)
from aas_server.opcua.security import (
    HubUserManager,
    encoding_of,
    ensure_server_certificate,
    identity_token_types,
    security_policy_types,
)
from aas_server.opcua.sync import ValueSync
from aas_server.opcua.writes import ProjectionAttributeService, PropertyTarget, PropertyWriter
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

PRODUCT_URI = "urn:aas-server"
_PORT_ATTEMPTS = 5

_NodeIdFactory = Callable[[str | None], ua.NodeId]


class OpcUaProjection:
    """The twin store as an OPC UA server (OPC 10000-3 address space, OPC 10000-4 services).

    ``async with OpcUaProjection(store, settings, data_dir) as projection:`` serves the store at
    ``projection.endpoint_url`` until the block ends.
    """

    def __init__(
        self, store: TwinStore, settings: OpcUaSettings, data_dir: Path, *, write_timeout: float = 30.0
    ) -> None:
        self._store = store
        self._settings = settings
        self._data_dir = data_dir
        self._write_timeout = write_timeout
        self._server: Server | None = None
        self._subscription: Subscription[StoreEvent] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._endpoint_url: str | None = None
        self._certificate_path: Path | None = None
        self._namespace_index: int | None = None
        self._value_nodes: dict[ElementKey, tuple[ua.NodeId, ua.VariantType]] = {}
        self._property_targets: dict[ua.NodeId, PropertyTarget] = {}

    @property
    def endpoint_url(self) -> str:
        """``opc.tcp://host:port/`` with the port actually listened on."""
        if self._endpoint_url is None:
            raise RuntimeError("the OPC UA projection is not started")
        return self._endpoint_url

    @property
    def server_certificate_path(self) -> Path:
        """The server's certificate (configured, or generated in ``<data_dir>/pki/``)."""
        if self._certificate_path is None:
            raise RuntimeError("the OPC UA projection is not started")
        return self._certificate_path

    @property
    def namespace_index(self) -> int:
        """The index of ``settings.namespace_uri`` in the server's namespace array."""
        if self._namespace_index is None:
            raise RuntimeError("the OPC UA projection is not started")
        return self._namespace_index

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        settings = self._settings
        policies = security_policy_types(settings)
        tokens = identity_token_types(settings)
        certificate_path, key_path = await ensure_server_certificate(settings, self._data_dir)
        certificate, private_key = await asyncio.gather(
            asyncio.to_thread(certificate_path.read_bytes), asyncio.to_thread(key_path.read_bytes)
        )
        self._certificate_path = certificate_path
        self._subscription = self._store.bus.subscribe("opcua")
        plan = plan_address_space(
            self._store.shells(), self._store.submodels(), dict(self._store.states()), self._store.bindings()
        )
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = settings.port or _free_port(settings.host)
            url = f"opc.tcp://{_host_for_url(settings.host)}:{port}/"
            server = Server(user_manager=HubUserManager(settings))
            server.set_server_name(settings.server_name)
            server.product_uri = PRODUCT_URI
            server.manufacturer_name = "aas-server"
            await server.init()
            await server.set_application_uri(settings.application_uri)
            server.set_endpoint(url)
            server.allow_remote_admin(False)
            server.set_security_policy(policies)
            server.set_identity_tokens(tokens)
            await server.load_certificate(certificate, encoding_of(certificate))
            await server.load_private_key(private_key, None, encoding_of(private_key))
            self._namespace_index = await server.register_namespace(settings.namespace_uri)
            await self._apply(server, plan, self._namespace_index)
            writer = PropertyWriter(
                self._store, self._property_targets, server.iserver.aspace.__contains__, self._write_timeout
            )
            server.iserver.attribute_service = ProjectionAttributeService(server.iserver.aspace, writer)
            try:
                await server.start()
            except OSError as error:
                if settings.port or error.errno != errno.EADDRINUSE or attempt == _PORT_ATTEMPTS:
                    raise
                _LOG.info("OPC UA port %d was taken meanwhile; trying another", port)
                continue
            self._server = server
            self._endpoint_url = url
            break
        sync = ValueSync(self._subscription, self._value_nodes, self._server_write)
        self._sync_task = asyncio.create_task(sync.run(), name="opcua-value-sync")
        _LOG.info(
            "OPC UA server listening at %s (security policies: %s)",
            self._endpoint_url,
            ", ".join(policy.value for policy in dict.fromkeys(settings.security_policies)),
        )

    async def _server_write(self, node_id: ua.NodeId, value: ua.DataValue) -> None:
        assert self._server is not None
        await self._server.write_attribute_value(node_id, value)

    async def _apply(self, server: Server, plan: AddressSpacePlan, namespace_index: int) -> None:
        """Add the planned nodes in one AddNodes call, then the extra references and exact initial values."""
        self._value_nodes.clear()
        self._property_targets.clear()

        def node_id(text: str | None) -> ua.NodeId:
            if text is None:
                return _node_id(ObjectIds.ObjectsFolder)
            return _node_id(text, namespace_index)

        items = [_add_nodes_item(spec, node_id, namespace_index) for spec in plan.nodes]
        results = await server.iserver.isession.add_nodes(items)
        for spec, result in zip(plan.nodes, results, strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(f"OPC UA node {spec.node_id!r}: {result.StatusCode.name}")
        references: list[ua.AddReferencesItem] = []
        for extra in plan.references:
            for is_forward in (True, False):
                item = ua.AddReferencesItem()
                item.SourceNodeId = node_id(extra.source_id if is_forward else extra.target_id)
                item.TargetNodeId = node_id(extra.target_id if is_forward else extra.source_id)
                item.ReferenceTypeId = _node_id(extra.reference.value)
                item.IsForward = is_forward
                item.TargetNodeClass = ua.NodeClass.Object
                references.append(item)
        if references:
            for status in await server.iserver.isession.add_references(references):
                status.check()
        for spec in plan.nodes:
            if isinstance(spec, VariableNode) and spec.element is not None:
                variable_id = node_id(spec.node_id)
                self._value_nodes[spec.element] = (variable_id, spec.variant_type)
                self._property_targets[variable_id] = PropertyTarget(
                    spec.element[0], spec.element[1], spec.variant_type, spec.writable
                )
                await server.write_attribute_value(variable_id, spec.value)

    async def _stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._server is not None:
            await _stop_clock(self._server)
            await self._server.stop()
            self._server = None
        self._endpoint_url = None


def _add_nodes_item(spec: ObjectNode | VariableNode, node_id: _NodeIdFactory, namespace_index: int) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id(spec.node_id)
    item.ParentNodeId = node_id(spec.parent_id)
    item.ReferenceTypeId = _node_id(spec.reference.value)
    if isinstance(spec, ObjectNode):
        item.BrowseName = ua.QualifiedName(spec.browse_name, namespace_index)
        item.NodeClass = ua.NodeClass.Object
        item.TypeDefinition = _node_id(ObjectIds.FolderType if spec.is_folder else ObjectIds.BaseObjectType)
        object_attributes = ua.ObjectAttributes()
        object_attributes.DisplayName = ua.LocalizedText(spec.browse_name)
        if spec.description:
            object_attributes.Description = ua.LocalizedText(spec.description)
        object_attributes.EventNotifier = 0
        object_attributes.WriteMask = 0
        object_attributes.UserWriteMask = 0
        item.NodeAttributes = object_attributes
        return item
    item.BrowseName = ua.QualifiedName(spec.browse_name, 0 if spec.standard_browse_name else namespace_index)
    item.NodeClass = ua.NodeClass.Variable
    item.TypeDefinition = _node_id(spec.kind.value)
    access = ua.AccessLevel.CurrentRead.mask
    if spec.writable:
        access |= ua.AccessLevel.CurrentWrite.mask
    attributes = ua.VariableAttributes()
    attributes.DisplayName = ua.LocalizedText(spec.browse_name)
    if spec.description:
        attributes.Description = ua.LocalizedText(spec.description)
    attributes.DataType = _node_id(spec.data_type if spec.data_type is not None else spec.variant_type.value)
    attributes.Value = spec.value.Value
    attributes.ValueRank = ua.ValueRank.Scalar
    attributes.AccessLevel = access
    attributes.UserAccessLevel = access
    attributes.WriteMask = 0
    attributes.UserWriteMask = 0
    attributes.Historizing = False
    item.NodeAttributes = attributes
    return item


def _node_id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


async def _stop_clock(server: Server) -> None:
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

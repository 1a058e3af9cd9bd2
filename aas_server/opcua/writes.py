"""Client writes through the twin store (OPC 10000-4 §5.10.4, Write service).

asyncua's ``AttributeService.write`` is replaced for client sessions: a write of a Property's
``Value`` attribute is awaited through ``TwinStore.write_value`` (type check, device write,
journal, publish) and its outcome returned as the item's status code. The node itself is updated
by the value sync when the store publishes the change, never here. Every other client write is
refused; asyncua's internal session (the server's own set-up writes) keeps the original path.

With an ``AccessControl`` whose access control is enabled, a write must also be allowed by the
access rules (``security.rules``, operation ``write-value`` on the Property, the user's role as rule
role); otherwise it is ``BadUserAccessDenied``. Denials and attempted writes go to the audit log.

Left out for now: ``IndexRange`` writes (``BadWriteNotSupported``) and client-supplied status codes
or timestamps, which are ignored (the store stamps the write).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import AccessOperation
from aas_server.opcua.security import HubUser
from aas_server.opcua_common.status import status, status_code_for_error
from aas_server.security.access import AccessControl
from aas_server.security.audit import AuditRecord
from aas_server.security.scopes import ModelAccess
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PropertyTarget:
    """What a Property variable node writes to."""

    submodel_id: str
    id_short_path: str
    variant_type: ua.VariantType
    writable: bool


class PropertyWriter:
    """Checks and performs one client write of a Property value."""

    def __init__(
        self,
        store: TwinStore,
        targets: Mapping[ua.NodeId, PropertyTarget],
        node_exists: Callable[[ua.NodeId], bool],
        timeout: float,
        access: AccessControl | None = None,
    ) -> None:
        self._store = store
        self._targets = targets
        self._node_exists = node_exists
        self._timeout = timeout
        self._access = access if access is not None and access.enabled else None
        self._model_access = ModelAccess(store, self._access.policy) if self._access is not None else None

    async def write(self, user: HubUser, write_value: ua.WriteValue) -> ua.StatusCode:
        """The status of writing ``write_value`` on behalf of ``user``."""
        return status(await self._write(user, write_value))

    def _audit(self, user: HubUser, node_id: ua.NodeId, target: PropertyTarget | None, code: int, reason: str) -> None:
        if self._access is None:
            return
        principal = AccessControl.opcua_principal(user.name, user.hub_role)
        self._access.audit.record(
            AuditRecord(
                principal=principal.name,
                principal_kind=principal.kind,
                roles=tuple(sorted(principal.roles)),
                method="OPCUA-WRITE",
                path=node_id.to_string(),
                operation=AccessOperation.WRITE_VALUE.value,
                target=f"submodel {target.submodel_id!r} element {target.id_short_path!r}" if target else "-",
                status=status(code).name,
                reason=reason,
            )
        )

    async def _write(self, user: HubUser, write_value: ua.WriteValue) -> int:
        node_id = write_value.NodeId
        if not self._node_exists(node_id):
            return StatusCodes.BadNodeIdUnknown
        target = self._targets.get(node_id)
        if not user.may_write_values:
            self._audit(user, node_id, target, StatusCodes.BadUserAccessDenied, "the session's role may not write")
            return StatusCodes.BadUserAccessDenied
        if target is None or write_value.AttributeId != AttributeIds.Value or not target.writable:
            return StatusCodes.BadNotWritable
        if self._access is not None and self._model_access is not None:
            principal = AccessControl.opcua_principal(user.name, user.hub_role)
            decision = self._access.policy.decide(
                principal.roles,
                AccessOperation.WRITE_VALUE,
                self._model_access.element_target(target.submodel_id, target.id_short_path),
            )
            if not decision.allowed:
                self._audit(user, node_id, target, StatusCodes.BadUserAccessDenied, decision.reason)
                return StatusCodes.BadUserAccessDenied
        code = await self._write_value(user, write_value, target)
        self._audit(user, node_id, target, code, "")
        return code

    async def _write_value(self, user: HubUser, write_value: ua.WriteValue, target: PropertyTarget) -> int:
        if write_value.IndexRange:
            return StatusCodes.BadWriteNotSupported
        variant = write_value.Value.Value if write_value.Value is not None else None
        if variant is None or variant.is_array or variant.VariantType != target.variant_type or variant.Value is None:
            return StatusCodes.BadTypeMismatch
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.write_value(target.submodel_id, target.id_short_path, variant.Value, origin="opcua")
        except Exception as error:
            code = status_code_for_error(error)
            _LOG.info(
                "OPC UA write by %s to %s %s refused: %s (%s)",
                user.name,
                target.submodel_id,
                target.id_short_path,
                status(code).name,
                error,
            )
            return code
        return StatusCodes.Good


class ProjectionAttributeService(AttributeService):
    """asyncua's attribute service with client writes routed through :class:`PropertyWriter`."""

    def __init__(self, address_space: AddressSpace, writer: PropertyWriter) -> None:
        super().__init__(address_space)
        self._writer = writer

    async def write(self, params: ua.WriteParameters, user: User | None = None) -> list[ua.StatusCode]:
        if isinstance(user, HubUser):
            return list(await asyncio.gather(*(self._writer.write(user, item) for item in params.NodesToWrite)))
        if user is None or (user.role is UserRole.Admin and user.name is None):
            return await super().write(params, User(role=UserRole.Admin))
        return [status(StatusCodes.BadUserAccessDenied) for _ in params.NodesToWrite]

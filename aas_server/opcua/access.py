"""The access rules (``security.rules``) for OPC UA sessions: which projected nodes a session may read or call.

A node of the projection's namespace belongs to an AAS object by its node id
(:mod:`aas_server.opcua.node_ids`): ``<shell id>/$shell...`` to a shell, ``<submodel id>/$submodel...``
to a submodel and ``<submodel id>/<idShort path>[$...]`` to a submodel element (the element's
properties and an Operation's ``Invoke`` method belong to the element). Folders, dictionary entries
and the standard and type-model nodes belong to no AAS object and are open to every session.

* Read, Browse, TranslateBrowsePathsToNodeIds, HistoryRead and CreateMonitoredItems need operation
  ``read``. As in REST, a submodel or container partly readable is shown with its readable part: its
  node is visible while anything below it is readable (``ModelAccess.scope``).
* Call of an Operation's ``Invoke`` needs operation ``invoke`` on the Operation.

The session's rule roles are its user's role (``read-only``, ``operator``, ``admin``); an anonymous
session has ``security.anonymous_role`` (none: it may read no AAS object). A denied item is
``BadUserAccessDenied`` and written to the audit log; a Browse result leaves denied nodes out, and a
TranslateBrowsePathsToNodeIds result their targets (``BadNoMatch`` when none is left). A
``GeneralModelChangeEvent`` reaches each subscription with only the changes of nodes its session may
read (none left: not at all), so a session does not learn of changes to what it may not see
(:meth:`SessionAccess.filter_model_change_events`).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import AccessOperation
from aas_server.opcua.node_ids import shell_node_id
from aas_server.opcua.status import status
from aas_server.security.access import AccessControl
from aas_server.security.audit import AuditRecord
from aas_server.security.credentials import Principal
from aas_server.security.rules import Decision
from aas_server.security.scopes import ModelAccess, ScopeKind
from aas_server.store.twin_store import TwinStore

_SIMULATE_SUFFIX = "/$simulate"
"""The node id suffix of a process shell's ``Simulate`` Method (``opcua.simulations.simulate_node_id``)."""

_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
_SHELL_MARK = "$shell"
_SUBMODEL_MARK = "$submodel"


def node_owner(identifier: str) -> tuple[str, str, str] | None:
    """``("shell", id, "")`` or ``("submodel", id, idShort path)`` of a projection node id; ``None``: no AAS object."""
    identifiable, separator, rest = identifier.rpartition("/")
    if not separator:
        return None
    if rest.startswith("$"):
        if rest == _SHELL_MARK or rest.startswith(_SHELL_MARK + "."):
            return ("shell", identifiable, "")
        if rest == _SUBMODEL_MARK or rest.startswith(_SUBMODEL_MARK + "."):
            return ("submodel", identifiable, "")
        return None
    return ("submodel", identifiable, rest.split("$", 1)[0])


class SessionAccess:
    """Decides OPC UA requests item by item with the hub's rules, and audits the denials."""

    def __init__(self, access: AccessControl, store: TwinStore, namespace_index: int) -> None:
        self._access = access
        self._model = ModelAccess(store, access.policy)
        self._namespace_index = namespace_index

    def principal(self, user: Any) -> Principal:
        """The rule principal of a session user (the hub's ``HubUser``)."""
        role = getattr(user, "hub_role", None)
        name = getattr(user, "name", None)
        if role is not None:
            return Principal(name or "anonymous", "opcua-user", frozenset({role.value}))
        anonymous_role = self._access.anonymous_role
        return Principal("anonymous", "anonymous", frozenset({anonymous_role}) if anonymous_role else frozenset())

    def decide(self, roles: frozenset[str], operation: AccessOperation, node_id: ua.NodeId) -> Decision | None:
        """The decision on one node, or ``None`` when the node belongs to no AAS object."""
        if node_id.NamespaceIndex != self._namespace_index or not isinstance(node_id.Identifier, str):
            return None
        owner = node_owner(node_id.Identifier)
        if owner is None:
            return None
        kind, identifier, id_short_path = owner
        if kind == "shell":
            return self._access.policy.decide(roles, operation, ModelAccess.shell_target(identifier))
        if operation is AccessOperation.READ:
            scope = self._model.scope(roles, operation, identifier, id_short_path)
            return Decision(scope.kind is not ScopeKind.NONE, scope.reason)
        return self._access.policy.decide(roles, operation, self._model.element_target(identifier, id_short_path))

    def allowed(
        self,
        user: Any,
        operation: AccessOperation,
        node_ids: Sequence[ua.NodeId],
        service: str,
        *,
        audit_allowed: bool = False,
    ) -> list[bool]:
        """Whether each node may be acted on; denials (and, with ``audit_allowed``, the rest) are audited."""
        principal = self.principal(user)
        result: list[bool] = []
        for node_id in node_ids:
            decision = self.decide(principal.roles, operation, node_id)
            permitted = decision is None or decision.allowed
            result.append(permitted)
            if decision is not None and (audit_allowed or not permitted):
                self._audit(principal, service, node_id, operation, decision, permitted)
        return result

    def visible_references(
        self, user: Any, references: Iterable[ua.ReferenceDescription]
    ) -> list[ua.ReferenceDescription]:
        """The references whose target node the session may read."""
        roles = self.principal(user).roles
        visible: list[ua.ReferenceDescription] = []
        for reference in references:
            decision = self.decide(roles, AccessOperation.READ, _local(reference.NodeId))
            if decision is None or decision.allowed:
                visible.append(reference)
        return visible

    def filter_targets(self, user: Any, result: ua.BrowsePathResult) -> None:
        """Leave out the targets the session may not read (``BadNoMatch`` when none is left)."""
        if not result.Targets:
            return
        roles = self.principal(user).roles
        kept = []
        for target in result.Targets:
            decision = self.decide(roles, AccessOperation.READ, _local(target.TargetId))
            if decision is None or decision.allowed:
                kept.append(target)
        if not kept and result.StatusCode.is_good():
            result.StatusCode = status(StatusCodes.BadNoMatch)
        result.Targets = kept

    def filter_model_change_events(self, internal_server: Any) -> None:
        """Give each subscription the model change events of the nodes its session may read (see the module)."""
        service = internal_server.subscription_service
        deliver: Callable[..., Awaitable[None]] = service.trigger_event

        async def trigger_event(event: Any, subscription_id: int | None = None) -> None:
            changes = getattr(event, "Changes", None)
            if not isinstance(changes, list) or not changes:
                await deliver(event, subscription_id=subscription_id)
                return
            users = {session.session_id: session.user for session in _sessions(internal_server)}
            for number, subscription in list(service.subscriptions.items()):
                if subscription_id is not None and number != subscription_id:
                    continue
                if subscription.session_id not in users:
                    continue
                roles = self.principal(users[subscription.session_id]).roles
                kept = [change for change in changes if self._readable(roles, change.Affected)]
                if not kept:
                    continue
                shown = event
                if len(kept) < len(changes):
                    shown = copy.copy(event)
                    shown.Changes = kept
                    shown.Message = ua.LocalizedText("model changed", "en")
                await subscription.monitored_item_srv.trigger_event(shown)

        service.trigger_event = trigger_event

    def user_attribute(self, user: Any, item: ua.ReadValueId, value: ua.DataValue) -> ua.DataValue:
        """A read ``UserAccessLevel`` or ``UserExecutable`` as the session may use it (any other value as it is).

        ``CurrentWrite`` stays only for a user whose role writes and whom the rules allow ``write-value``
        on the element; ``UserExecutable`` only for one whose role calls and whom they allow ``invoke``.
        The node's own attribute is never changed (asyncua returns the stored ``DataValue``).
        """
        if item.AttributeId not in (ua.AttributeIds.UserAccessLevel, ua.AttributeIds.UserExecutable):
            return value
        variant = value.Value
        if variant is None or variant.Value is None:
            return value
        writing = item.AttributeId == ua.AttributeIds.UserAccessLevel
        operation = AccessOperation.WRITE_VALUE if writing else AccessOperation.INVOKE
        node_id = item.NodeId
        identifier = node_id.Identifier
        if not writing and isinstance(identifier, str) and identifier.endswith(_SIMULATE_SUFFIX):
            # a process shell's Simulate Method (opcua/simulations.py) is the operation simulate on its shell
            operation = AccessOperation.SIMULATE
            shell = shell_node_id(identifier.removesuffix(_SIMULATE_SUFFIX))
            node_id = ua.NodeId(ua.String(shell), ua.Int16(node_id.NamespaceIndex))
        decision = self.decide(self.principal(user).roles, operation, node_id)
        if decision is None or (decision.allowed and bool(getattr(user, "may_write_values", False))):
            return value
        restricted = (
            ua.Variant(int(variant.Value) & ~_CURRENT_WRITE, variant.VariantType)
            if writing
            else ua.Variant(False, variant.VariantType)
        )
        return ua.DataValue(
            restricted,
            StatusCode=value.StatusCode,
            SourceTimestamp=value.SourceTimestamp,
            ServerTimestamp=value.ServerTimestamp,
        )

    def _readable(self, roles: frozenset[str], node_id: ua.NodeId) -> bool:
        decision = self.decide(roles, AccessOperation.READ, node_id)
        return decision is None or decision.allowed

    def _audit(
        self,
        principal: Principal,
        service: str,
        node_id: ua.NodeId,
        operation: AccessOperation,
        decision: Decision,
        permitted: bool,
    ) -> None:
        owner = node_owner(str(node_id.Identifier))
        if owner is None:
            target = "-"
        elif owner[0] == "shell":
            target = f"shell {owner[1]!r}"
        else:
            target = f"submodel {owner[1]!r} element {owner[2]!r}" if owner[2] else f"submodel {owner[1]!r}"
        self._access.audit.record(
            AuditRecord(
                principal=principal.name,
                principal_kind=principal.kind,
                roles=tuple(sorted(principal.roles)),
                method=f"OPCUA-{service}",
                path=node_id.to_string(),
                operation=operation.value,
                target=target,
                status="Good" if permitted else "BadUserAccessDenied",
                reason=decision.reason,
            )
        )


def _sessions(internal_server: Any) -> list[Any]:
    """The activated client sessions of an asyncua ``InternalServer`` (its registry by authentication token)."""
    registry: dict[Any, Any] = getattr(internal_server, "_external_sessions", {})
    return [session for session in registry.values() if session.is_activated()]


def _local(node_id: ua.ExpandedNodeId | ua.NodeId) -> ua.NodeId:
    """An expanded node id of this server as a plain ``NodeId`` (another server's: a null id, open)."""
    if isinstance(node_id, ua.ExpandedNodeId) and (node_id.NamespaceUri or node_id.ServerIndex):
        return ua.NodeId()
    return ua.NodeId(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)

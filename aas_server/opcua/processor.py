"""The one place every OPC UA request passes: secure channel checks and access rules (OPC 10000-4 §5.4-§5.6).

asyncua's ``UaProcessor`` dispatches each request of a connection to its service. :class:`HubProcessor`
checks a request before that dispatch:

* **Channel.** A secure channel whose security policy and mode match no offered endpoint (a
  ``None`` channel when no ``None`` endpoint is configured: asyncua opens one for anybody) may only
  discover (GetEndpoints, FindServers) and close; any other request is answered
  ``BadSecurityPolicyRejected``. So no session exists over such a channel, with or without a client
  certificate.
* **User token.** ActivateSession with a user name token whose password is not encrypted is
  ``BadIdentityTokenRejected`` unless the channel encrypts (SignAndEncrypt) or a ``None`` endpoint
  is configured; so is a password encrypted with an algorithm no offered policy uses (RSA
  PKCS#1 v1.5, which asyncua would decrypt and which is open to padding oracle attacks).
* **Sessions belong to their client.** ActivateSession over a new secure channel (reconnecting to a
  live session by its authentication token) is ``BadSecurityChecksFailed`` unless the channel's client
  certificate is the one the session was created with (OPC 10000-4 §5.6.3): asyncua's tokens are
  sequential numbers, and it would let any trusted client take over any session.
* **One session per channel.** CreateSession on a channel that has a session closes that session
  first (asyncua would keep it open and counted against the server's 1,000 sessions until it timed
  out, while routing the channel's requests to the new one only).
* **Subscriptions belong to their session.** A request naming a subscription of another session
  (CreateMonitoredItems, ModifyMonitoredItems, DeleteMonitoredItems, SetMonitoringMode,
  ModifySubscription, SetPublishingMode, DeleteSubscriptions, Republish, and a Call of a standard
  method taking a subscription id: GetMonitoredItems, ResendData, SetSubscriptionDurable,
  ConditionRefresh, ConditionRefresh2) is ``BadSubscriptionIdInvalid``: asyncua would let any
  session read, change or delete any subscription by its (small, sequential) id. So is, in the
  Publish results, an acknowledgement of another session's notification (asyncua would drop it
  from that session's retransmission queue). TransferSubscriptions moves a subscription only to a
  session of the user who created it (OPC 10000-4 §5.13.7); others get ``BadUserAccessDenied``.
* **Limits.** A request naming more than :data:`MAX_OPERATIONS_PER_REQUEST` items (the
  ``OperationLimits`` asyncua advertises but does not enforce) is ``BadTooManyOperations``. A
  session holding :data:`MAX_SUBSCRIPTIONS_PER_SESSION` subscriptions gets
  ``BadTooManySubscriptions`` (so one session cannot take the whole server's 1,000), and one asking
  for more than :data:`MAX_MONITORED_ITEMS_PER_SESSION` monitored items in all
  ``BadTooManyMonitoredItems``. A client address holding :data:`MAX_CONNECTIONS_PER_ADDRESS`
  connections has further ones closed (so one host cannot take the server's 1,000, e.g. with
  channels that never open a session). A message larger than :data:`MAX_MESSAGE_SIZE` is refused
  by the transport. A publishing interval is revised into
  :data:`MIN_PUBLISHING_INTERVAL`..:data:`MAX_PUBLISHING_INTERVAL`.
* **Access rules.** With a :class:`~aas_server.opcua.access.SessionAccess`, Read, Browse,
  TranslateBrowsePathsToNodeIds, HistoryRead, Call and CreateMonitoredItems follow ``security.rules``
  item by item (:mod:`aas_server.opcua.access`); writes follow them in :mod:`aas_server.opcua.writes`.
  ``UserAccessLevel`` and ``UserExecutable`` are read per session (what it may write and call).

:class:`HubServer` is asyncua's ``Server`` whose connections use :class:`HubProcessor`.

Left out: BrowseNext (asyncua answers ``BadServiceUnsupported``, so no continuation point can
bypass the filter), QueryFirst/QueryNext (unsupported by asyncua).
"""

from __future__ import annotations

import contextvars
import logging
import math
import operator
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from asyncua import ua
from asyncua.common.utils import Buffer, ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyFactory
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from aas_server.config import AccessOperation
from aas_server.opcua.access import SessionAccess
from aas_server.opcua.status import status

_LOG = logging.getLogger(__name__)


def _request(object_id: int) -> ua.NodeId:
    return ua.NodeId(cast(Any, object_id))


DISCOVERY_REQUESTS = frozenset(
    {
        _request(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
        _request(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary),
        _request(ua.ObjectIds.CloseSecureChannelRequest_Encoding_DefaultBinary),
    }
)
"""What a channel matching no offered endpoint may still ask."""

_CREATE_SESSION = _request(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
_CHANNEL_CERTIFICATE = "hub_channel_certificate"
"""The session attribute holding the client certificate of the channel that created it."""
_ACTIVATE_SESSION = _request(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_READ = _request(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary)
_BROWSE = _request(ua.ObjectIds.BrowseRequest_Encoding_DefaultBinary)
_TRANSLATE = _request(ua.ObjectIds.TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary)
_HISTORY_READ = _request(ua.ObjectIds.HistoryReadRequest_Encoding_DefaultBinary)
_CALL = _request(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
_CREATE_MONITORED_ITEMS = _request(ua.ObjectIds.CreateMonitoredItemsRequest_Encoding_DefaultBinary)
_GUARDED = frozenset({_READ, _BROWSE, _TRANSLATE, _HISTORY_READ, _CALL, _CREATE_MONITORED_ITEMS})


@dataclass(frozen=True, slots=True)
class _NodeService:
    """A service on the nodes its items name, each item filtered by the READ rule (Browse, HistoryRead...)."""

    name: str
    """``Browse``: ``ua.BrowseParameters`` in, ``ua.BrowseResponse`` out."""
    field_name: str
    method: str
    """The session's method running the service on the allowed items."""
    result: type
    audit_name: str
    node_of: Callable[[Any], ua.NodeId] = operator.attrgetter("NodeId")

    @property
    def parameters(self) -> type:
        return cast(type, getattr(ua, f"{self.name}Parameters"))

    @property
    def response(self) -> type:
        return cast(type, getattr(ua, f"{self.name}Response"))


_NODE_SERVICES = {
    _BROWSE: _NodeService("Browse", "NodesToBrowse", "browse", ua.BrowseResult, "BROWSE"),
    _HISTORY_READ: _NodeService("HistoryRead", "NodesToRead", "history_read", ua.HistoryReadResult, "HISTORYREAD"),
    _CREATE_MONITORED_ITEMS: _NodeService(
        "CreateMonitoredItems",
        "ItemsToCreate",
        "create_monitored_items",
        ua.MonitoredItemCreateResult,
        "MONITOR",
        operator.attrgetter("ItemToMonitor.NodeId"),
    ),
}
_CREATE_SUBSCRIPTION = _request(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)
_PUBLISH = _request(ua.ObjectIds.PublishRequest_Encoding_DefaultBinary)
_NO_SUBSCRIPTION = 0
"""A subscription id asyncua never gives (its ids start above 0): acknowledging it is ``BadSubscriptionIdInvalid``."""
_SUBSCRIPTION_METHODS = frozenset(
    _request(method)
    for method in (
        ua.ObjectIds.Server_GetMonitoredItems,
        ua.ObjectIds.Server_ResendData,
        ua.ObjectIds.Server_SetSubscriptionDurable,
        ua.ObjectIds.ConditionType_ConditionRefresh,
        ua.ObjectIds.ConditionType_ConditionRefresh2,
    )
)
"""Standard methods whose first input argument is a subscription id (OPC 10000-5 §9.1-9.3, OPC 10000-9 §5.5.7)."""
_TRANSFER_SUBSCRIPTIONS = _request(ua.ObjectIds.TransferSubscriptionsRequest_Encoding_DefaultBinary)


def _service_fields(fields: dict[str, str]) -> dict[ua.NodeId, tuple[type, str]]:
    """``{"Read": "NodesToRead"}`` as ``{ReadRequest encoding id: (ReadParameters, "NodesToRead")}``."""
    return {
        _request(getattr(ua.ObjectIds, f"{service}Request_Encoding_DefaultBinary")): (
            getattr(ua, f"{service}Parameters"),
            field_name,
        )
        for service, field_name in fields.items()
    }


_SUBSCRIPTION_SCOPED = _service_fields(
    {
        "CreateMonitoredItems": "SubscriptionId",
        "ModifyMonitoredItems": "SubscriptionId",
        "DeleteMonitoredItems": "SubscriptionId",
        "SetMonitoringMode": "SubscriptionId",
        "ModifySubscription": "SubscriptionId",
        "SetPublishingMode": "SubscriptionIds",
        "DeleteSubscriptions": "SubscriptionIds",
        "Republish": "SubscriptionId",
    }
)
"""Requests acting on subscriptions of the session, and the field naming them."""


MAX_OPERATIONS_PER_REQUEST = 10_000
"""The items one request may name: the value asyncua advertises as every ``OperationLimits`` (MaxNodesPerRead...)."""
MAX_SUBSCRIPTIONS_PER_SESSION = 50
"""Subscriptions one session may hold (asyncua's only cap, 1,000, is for the whole server)."""
MAX_MONITORED_ITEMS_PER_SESSION = 100_000
"""Monitored items one session may hold over all its subscriptions (asyncua has no cap)."""
MIN_PUBLISHING_INTERVAL = 10.0
"""The shortest publishing interval granted, in ms (asyncua grants any: 0.001 ms is a busy loop on the event loop)."""
MAX_PUBLISHING_INTERVAL = 3_600_000.0
"""The longest publishing interval granted, in ms (one hour)."""
MAX_CONNECTIONS_PER_ADDRESS = 64
"""Connections one client address may hold at once (asyncua's only cap, 1,000, is for the whole server)."""
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""The largest request accepted (asyncua's default is 100 MiB); told to clients in the Acknowledge message."""

_COUNTED = _service_fields(
    {
        "Read": "NodesToRead",
        "Write": "NodesToWrite",
        "Browse": "NodesToBrowse",
        "TranslateBrowsePathsToNodeIds": "BrowsePaths",
        "HistoryRead": "NodesToRead",
        "Call": "MethodsToCall",
        "CreateMonitoredItems": "ItemsToCreate",
        "ModifyMonitoredItems": "ItemsToModify",
        "DeleteMonitoredItems": "MonitoredItemIds",
        "SetMonitoringMode": "MonitoredItemIds",
        "RegisterNodes": "NodesToRegister",
        "UnregisterNodes": "NodesToUnregister",
    }
)
"""Requests naming a list of items, and the field holding it."""


def _identity(user: Any) -> tuple[Any, ...]:
    """Who a session user is, for subscription ownership: user name and hub role (anonymous: both ``None``)."""
    return (getattr(user, "name", None), getattr(user, "hub_role", None))


class SubscriptionOwners:
    """The user who created each subscription (a subscription outlives its session until transferred)."""

    def __init__(self) -> None:
        self._owners: dict[int, tuple[Any, ...]] = {}

    def record(self, subscriptions: dict[int, Any], session_id: ua.NodeId, user: Any) -> None:
        """Note ``user`` as the owner of the session's subscriptions not known yet; forget deleted ones."""
        for subscription_id, subscription in subscriptions.items():
            if subscription.session_id == session_id and subscription_id not in self._owners:
                self._owners[subscription_id] = _identity(user)
        for gone in [subscription_id for subscription_id in self._owners if subscription_id not in subscriptions]:
            del self._owners[gone]

    def owned_by(self, subscription_id: int, user: Any) -> bool:
        return self._owners.get(subscription_id) == _identity(user)


CALLING_SESSION: contextvars.ContextVar[Any] = contextvars.ContextVar("opcua_calling_session", default=None)
"""The session whose Call request is being answered, for method callbacks that act for its user (alarms)."""


def calling_user() -> Any:
    """The user of the session whose Call request is being answered; ``None`` outside one."""
    session = CALLING_SESSION.get()
    return session.user if session is not None else None


def _denied() -> ua.StatusCode:
    return status(StatusCodes.BadUserAccessDenied)


class HubProcessor(UaProcessor):
    """asyncua's request processor with the channel, user token and access rule checks of this module."""

    def __init__(
        self,
        internal_server: Any,
        transport: Any,
        limits: Any,
        *,
        plaintext_passwords: bool,
        access: SessionAccess | None,
        subscription_owners: SubscriptionOwners | None = None,
    ) -> None:
        super().__init__(internal_server, transport, limits)
        self._subscription_owners = subscription_owners if subscription_owners is not None else SubscriptionOwners()
        self._offered: list[SecurityPolicyFactory] = []
        self._password_algorithms: frozenset[str] = frozenset()
        self._plaintext_passwords = plaintext_passwords
        self._access = access
        self._refusal_logged = False

    def set_policies(self, policies: list[SecurityPolicyFactory]) -> None:
        super().set_policies(policies)  # type: ignore[no-untyped-call]
        self._offered = list(policies)
        self._password_algorithms = frozenset(
            factory.cls.AsymmetricEncryptionURI for factory in policies if factory.cls.AsymmetricEncryptionURI
        )

    def channel_matches_an_endpoint(self) -> bool:
        """Whether the secure channel's (security policy URI, security mode) is an offered endpoint's."""
        policy = self._connection.security_policy
        return any(factory.matches(policy.URI, policy.Mode) for factory in self._offered)  # type: ignore[no-untyped-call]

    async def _process_message(self, typeid: ua.NodeId, requesthdr: ua.RequestHeader, seqhdr: Any, body: Buffer) -> Any:
        if typeid not in DISCOVERY_REQUESTS and not self.channel_matches_an_endpoint():
            if not self._refusal_logged:
                policy = self._connection.security_policy
                _LOG.warning(
                    "OPC UA request from %s refused: its secure channel (%s, %s) matches no offered endpoint",
                    self.name,
                    policy.URI,
                    policy.Mode.name,
                )
                self._refusal_logged = True
            raise ServiceError(StatusCodes.BadSecurityPolicyRejected)
        if typeid == _CREATE_SESSION and self.session is not None:
            await self._close_previous_session()
        if typeid == _ACTIVATE_SESSION:
            self._check_user_token(body)
            if self.session is None:
                self._check_reattachment(requesthdr.AuthenticationToken)
        elif self.session is not None and self.session.is_activated():
            if typeid in _COUNTED:
                self._check_operation_count(typeid, body)
            if typeid == _CREATE_SUBSCRIPTION:
                self._check_subscription_count()
                body = _with_revised_publishing_interval(body)
            if typeid in _SUBSCRIPTION_SCOPED:
                self._check_subscriptions_owned(typeid, body)
            if typeid == _CREATE_MONITORED_ITEMS:
                self._check_monitored_item_count(body)
            if typeid == _CALL:
                self._check_method_subscriptions(body)
                CALLING_SESSION.set(self.session)
            if typeid == _PUBLISH:
                body = self._own_acknowledgements(body)
            if typeid == _TRANSFER_SUBSCRIPTIONS:
                return await self._transfer_subscriptions(requesthdr, seqhdr, body)
            if typeid in _GUARDED and self._access is not None:
                return await self._process_guarded(typeid, requesthdr, seqhdr, body)
        answered = await super()._process_message(typeid, requesthdr, seqhdr, body)  # type: ignore[no-untyped-call]
        if typeid == _CREATE_SESSION and self.session is not None:
            setattr(self.session, _CHANNEL_CERTIFICATE, self._connection.security_policy.peer_certificate)
        if typeid == _CREATE_SUBSCRIPTION and self.session is not None:
            subscriptions = self.iserver.subscription_service.subscriptions
            self._subscription_owners.record(subscriptions, self.session.session_id, self.session.user)
        return answered

    def _check_operation_count(self, typeid: ua.NodeId, body: Buffer) -> None:
        """``BadTooManyOperations`` for a request naming more items than :data:`MAX_OPERATIONS_PER_REQUEST`."""
        parameters_type, field_name = _COUNTED[typeid]
        count = len(getattr(struct_from_binary(parameters_type, body.copy()), field_name))
        if count > MAX_OPERATIONS_PER_REQUEST:
            _LOG.warning(
                "OPC UA request from %s refused: %d items, at most %d are allowed",
                self.name,
                count,
                MAX_OPERATIONS_PER_REQUEST,
            )
            raise ServiceError(StatusCodes.BadTooManyOperations)

    def _check_subscription_count(self) -> None:
        """``BadTooManySubscriptions`` once the session holds :data:`MAX_SUBSCRIPTIONS_PER_SESSION` subscriptions."""
        assert self.session is not None
        session_id = self.session.session_id
        held = sum(
            1
            for subscription in self.iserver.subscription_service.subscriptions.values()
            if subscription.session_id == session_id
        )
        if held >= MAX_SUBSCRIPTIONS_PER_SESSION:
            _LOG.warning("OPC UA session of %s refused a subscription: it holds %d already", self.name, held)
            raise ServiceError(StatusCodes.BadTooManySubscriptions)

    def _check_monitored_item_count(self, body: Buffer) -> None:
        """``BadTooManyMonitoredItems`` when the request would take the session past its monitored item cap."""
        assert self.session is not None
        session_id = self.session.session_id
        held = sum(
            len(subscription.monitored_item_srv._monitored_items)
            for subscription in self.iserver.subscription_service.subscriptions.values()
            if subscription.session_id == session_id
        )
        requested = len(struct_from_binary(ua.CreateMonitoredItemsParameters, body.copy()).ItemsToCreate)
        if held + requested > MAX_MONITORED_ITEMS_PER_SESSION:
            _LOG.warning(
                "OPC UA session of %s refused %d monitored items: it holds %d of at most %d",
                self.name,
                requested,
                held,
                MAX_MONITORED_ITEMS_PER_SESSION,
            )
            raise ServiceError(StatusCodes.BadTooManyMonitoredItems)

    async def _close_previous_session(self) -> None:
        """Close the channel's session before CreateSession gives the channel a new one.

        asyncua routes a channel's requests to its latest session only, and would keep the previous
        one open, counted against the server's session limit, until it timed out: a client creating
        sessions again and again on one channel locked everybody out.
        """
        previous = self.session
        assert previous is not None
        _LOG.info("OPC UA client %s creates another session on its channel: its previous one is closed", self.name)
        await previous.close_session(True)

    def _check_reattachment(self, authentication_token: ua.NodeId) -> None:
        """``BadSecurityChecksFailed`` when a new channel names a session created over a channel of another certificate.

        asyncua lets an ActivateSession on a fresh channel take over any live session by its
        authentication token (a small sequential number); OPC 10000-4 §5.6.3 requires the new
        channel's client certificate to be the one the session was created with.
        """
        existing = self.iserver.lookup_external_session(authentication_token)
        if existing is None:
            return
        if getattr(existing, _CHANNEL_CERTIFICATE, None) == self._connection.security_policy.peer_certificate:
            return
        _LOG.warning(
            "OPC UA session of %s refused: ActivateSession for a session created with another client certificate",
            self.name,
        )
        raise ServiceError(StatusCodes.BadSecurityChecksFailed)

    def _check_subscriptions_owned(self, typeid: ua.NodeId, body: Buffer) -> None:
        """``BadSubscriptionIdInvalid`` when the request names a subscription of another session."""
        parameters_type, field_name = _SUBSCRIPTION_SCOPED[typeid]
        named = getattr(struct_from_binary(parameters_type, body.copy()), field_name)
        self._refuse_foreign_subscriptions(named if isinstance(named, list) else [named])

    def _check_method_subscriptions(self, body: Buffer) -> None:
        """``BadSubscriptionIdInvalid`` when a standard method is called with a subscription of another session."""
        parameters = struct_from_binary(ua.CallParameters, body.copy())
        self._refuse_foreign_subscriptions(
            [
                method.InputArguments[0].Value
                for method in parameters.MethodsToCall
                if method.MethodId in _SUBSCRIPTION_METHODS
                and method.InputArguments
                and isinstance(method.InputArguments[0].Value, int)
            ]
        )

    def _refuse_foreign_subscriptions(self, named: Sequence[Any]) -> None:
        assert self.session is not None
        subscriptions = self.iserver.subscription_service.subscriptions
        for subscription_id in named:
            subscription = subscriptions.get(int(subscription_id))
            if subscription is not None and subscription.session_id != self.session.session_id:
                _LOG.warning(
                    "OPC UA session of %s (%s) named subscription %s of another session: refused",
                    self.name,
                    getattr(self.session.user, "name", None) or "anonymous",
                    subscription_id,
                )
                raise ServiceError(StatusCodes.BadSubscriptionIdInvalid)

    def _own_acknowledgements(self, body: Buffer) -> Buffer:
        """The Publish request with acknowledgements of other sessions' subscriptions pointed at no subscription."""
        assert self.session is not None
        parameters = struct_from_binary(ua.PublishParameters, body.copy())
        subscriptions = self.iserver.subscription_service.subscriptions
        foreign = [
            acknowledgement
            for acknowledgement in parameters.SubscriptionAcknowledgements
            if (owned := subscriptions.get(int(acknowledgement.SubscriptionId))) is not None
            and owned.session_id != self.session.session_id
        ]
        if not foreign or _NO_SUBSCRIPTION in subscriptions:
            return body
        for acknowledgement in foreign:
            acknowledgement.SubscriptionId = cast(Any, _NO_SUBSCRIPTION)
        return Buffer(struct_to_binary(parameters))

    async def _transfer_subscriptions(self, requesthdr: ua.RequestHeader, seqhdr: Any, body: Buffer) -> bool:
        """TransferSubscriptions of the subscriptions the session's user created; ``BadUserAccessDenied`` else."""
        session = self.session
        assert session is not None
        self.session_last_activity = time.monotonic()
        session.touch()
        parameters = struct_from_binary(ua.TransferSubscriptionsParameters, body)
        allowed = [
            self._subscription_owners.owned_by(int(subscription_id), session.user)
            or int(subscription_id) not in self.iserver.subscription_service.subscriptions
            for subscription_id in parameters.SubscriptionIds
        ]
        transferred = (
            await session.transfer_subscriptions(
                _subset(parameters, "SubscriptionIds", allowed), self.forward_publish_response
            )
            if any(allowed)
            else []
        )
        response = ua.TransferSubscriptionsResponse()
        response.Parameters.Results = _merge(allowed, transferred, lambda: ua.TransferResult(StatusCode=_denied()))
        self.send_response(requesthdr.RequestHandle, seqhdr, response)  # type: ignore[no-untyped-call]
        return True

    def _check_user_token(self, body: Buffer) -> None:
        parameters = struct_from_binary(ua.ActivateSessionParameters, body.copy())
        token = parameters.UserIdentityToken
        if not isinstance(token, ua.UserNameIdentityToken):
            return
        if token.EncryptionAlgorithm:
            if token.EncryptionAlgorithm in self._password_algorithms:
                return
            _LOG.warning(
                "OPC UA session of %s refused: its password is encrypted with %s, which no endpoint offers",
                self.name,
                token.EncryptionAlgorithm,
            )
            raise ServiceError(StatusCodes.BadIdentityTokenRejected)
        mode = self._connection.security_policy.Mode
        if mode == ua.MessageSecurityMode.SignAndEncrypt or self._plaintext_passwords:
            return
        _LOG.warning(
            "OPC UA session of %s refused: a password was sent unencrypted over a %s channel", self.name, mode.name
        )
        raise ServiceError(StatusCodes.BadIdentityTokenRejected)

    async def _process_guarded(
        self, typeid: ua.NodeId, requesthdr: ua.RequestHeader, seqhdr: Any, body: Buffer
    ) -> bool:
        """Read, Browse, TranslateBrowsePaths, HistoryRead, Call, CreateMonitoredItems under the access rules."""
        session = self.session
        access = self._access
        assert session is not None
        assert access is not None
        user = session.user
        permissions = self._connection.security_policy.permissions
        if permissions is not None and permissions.check_validity(user, typeid, body) is False:  # type: ignore[no-untyped-call]
            raise ua.uaerrors.BadUserAccessDenied
        self.session_last_activity = time.monotonic()
        session.touch()
        response: Any
        if typeid == _READ:
            read = struct_from_binary(ua.ReadParameters, body)
            allowed = access.allowed(user, AccessOperation.READ, [item.NodeId for item in read.NodesToRead], "READ")
            _subset(read, "NodesToRead", allowed)
            values = await session.read(read) if read.NodesToRead else []
            values = [
                access.user_attribute(user, item, value) for item, value in zip(read.NodesToRead, values, strict=True)
            ]
            response = _answer(ua.ReadResponse, allowed, values, ua.DataValue)
        elif typeid == _TRANSLATE:
            translate = struct_from_binary(ua.TranslateBrowsePathsToNodeIdsParameters, body)
            paths = translate.BrowsePaths
            allowed = access.allowed(user, AccessOperation.READ, [path.StartingNode for path in paths], "BROWSE")
            kept = [path for path, permitted in zip(paths, allowed, strict=True) if permitted]
            found = await session.translate_browsepaths_to_nodeids(kept) if kept else []
            for path_result in found:
                access.filter_targets(user, path_result)
            response = _answer(ua.TranslateBrowsePathsToNodeIdsResponse, allowed, found, ua.BrowsePathResult)
        elif typeid == _CALL:
            call = struct_from_binary(ua.CallParameters, body)
            methods = call.MethodsToCall
            allowed = access.allowed(
                user, AccessOperation.INVOKE, [method.MethodId for method in methods], "CALL", audit_allowed=True
            )
            kept_methods = [method for method, permitted in zip(methods, allowed, strict=True) if permitted]
            called = await session.call(kept_methods) if kept_methods else []
            response = _answer(ua.CallResponse, allowed, called, ua.CallMethodResult)
        else:
            service = _NODE_SERVICES[typeid]
            parameters: Any = struct_from_binary(service.parameters, body)
            items = getattr(parameters, service.field_name)
            node_ids = [service.node_of(item) for item in items]
            allowed = access.allowed(user, AccessOperation.READ, node_ids, service.audit_name)
            call = getattr(session, service.method)
            results = await call(_subset(parameters, service.field_name, allowed)) if any(allowed) else []
            if typeid == _BROWSE:
                for result in results:
                    result.References = access.visible_references(user, result.References)
            response = _answer(service.response, allowed, results, service.result)
        self.send_response(requesthdr.RequestHandle, seqhdr, response)  # type: ignore[no-untyped-call]
        return True


def _with_revised_publishing_interval(body: Buffer) -> Buffer:
    """The CreateSubscription request with its publishing interval in the granted range (OPC 10000-4 §5.13.2)."""
    parameters = struct_from_binary(ua.CreateSubscriptionParameters, body.copy())
    requested = float(parameters.RequestedPublishingInterval)
    revised = MIN_PUBLISHING_INTERVAL if math.isnan(requested) else requested
    revised = min(max(revised, MIN_PUBLISHING_INTERVAL), MAX_PUBLISHING_INTERVAL)
    if revised == requested:
        return body
    parameters.RequestedPublishingInterval = cast(Any, revised)
    return Buffer(struct_to_binary(parameters))


def _subset(parameters: Any, field_name: str, allowed: Sequence[bool]) -> Any:
    """``parameters`` with only the allowed items of its list ``field_name`` (the request's own object)."""
    items = getattr(parameters, field_name)
    setattr(parameters, field_name, [item for item, permitted in zip(items, allowed, strict=True) if permitted])
    return parameters


def _merge(allowed: Sequence[bool], results: Sequence[Any], denied: Any) -> list[Any]:
    """The results of the allowed items, in request order, with ``denied()`` for the others."""
    answered = iter(results)
    return [next(answered) if permitted else denied() for permitted in allowed]


def _answer(response_type: type, allowed: Sequence[bool], results: Sequence[Any], result_type: type) -> Any:
    """A ``response_type`` with the results of the allowed items and ``BadUserAccessDenied`` ones for the others."""
    response = response_type()
    response.Results = _merge(allowed, results, lambda: result_type(StatusCode=_denied()))
    return response


def _address(peer_name: Any) -> Any:
    return peer_name[0] if isinstance(peer_name, tuple) and peer_name else None


class _HubProtocol(OPCUAProtocol):
    """asyncua's connection protocol with a :class:`HubProcessor`."""

    plaintext_passwords: bool = False
    access: SessionAccess | None = None
    subscription_owners: SubscriptionOwners | None = None

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        held = sum(1 for client in self.clients if _address(client.peer_name) == address)
        if address is not None and held >= MAX_CONNECTIONS_PER_ADDRESS:
            _LOG.warning("OPC UA connection from %s refused: it holds %d connections already", address, held)
            transport.close()
            return
        super().connection_made(transport)
        if self.processor is not None:
            processor = HubProcessor(
                self.iserver,
                self.transport,
                self.limits,
                plaintext_passwords=self.plaintext_passwords,
                access=self.access,
                subscription_owners=self.subscription_owners,
            )
            processor.set_policies(self.policies)
            self.processor = processor


class _HubBinaryServer(BinaryServer):
    def __init__(self, *arguments: Any, plaintext_passwords: bool, access: SessionAccess | None) -> None:
        super().__init__(*arguments)
        self._plaintext_passwords = plaintext_passwords
        self._access = access
        self._subscription_owners = SubscriptionOwners()

    def _make_protocol(self) -> OPCUAProtocol:
        protocol = _HubProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )
        protocol.plaintext_passwords = self._plaintext_passwords
        protocol.access = self._access
        protocol.subscription_owners = self._subscription_owners
        return protocol


class HubServer(Server):
    """asyncua's ``Server`` whose connections are processed by :class:`HubProcessor`.

    ``plaintext_passwords``: accept unencrypted passwords (only when a ``None`` endpoint is configured).
    ``access`` may be set until :meth:`start`.
    """

    def __init__(self, *, plaintext_passwords: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.limits.max_message_size = MAX_MESSAGE_SIZE
        self.limits.max_chunk_count = -(-MAX_MESSAGE_SIZE // self.limits.max_recv_buffer)
        self.plaintext_passwords = plaintext_passwords
        self.access: SessionAccess | None = None

    def user_name(self, user: Any) -> str:
        """The name recorded for a session user: its principal's under the access rules, else its own or anonymous."""
        if self.access is not None:
            return self.access.principal(user).name
        return str(getattr(user, "name", None) or "anonymous")

    async def start(self) -> None:
        """Asyncua's ``Server.start`` with the hub's binary server."""
        if self.iserver.certificate is not None:
            uacrypto.check_certificate(self.iserver.certificate, self._application_uri, socket.gethostname())
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            address, port = self._get_bind_socket_info()
            self.bserver = _HubBinaryServer(
                self.iserver,
                address,
                port,
                self.limits,
                plaintext_passwords=self.plaintext_passwords,
                access=self.access,
            )
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:
            await self.iserver.stop()
            raise

"""OPC UA client connector: a legacy OPC UA server as a device (the only asyncua client in the hub).

``OpcUaClientConnector`` keeps one session with one server (OPC 10000-4 §5.6). After every connect
it resolves the points' browse paths from the Objects folder (TranslateBrowsePathsToNodeIds,
§5.8.4) and ``nsu=`` namespace URIs, reads the DataType of the writable variables and the
``InputArguments`` of the methods, and creates one subscription (§5.13) with a monitored item per
subscribed variable at that point's sampling interval (§5.12). Polled variables are read with one
Read request (§5.10.2) per poll interval. A point whose path does not resolve, or whose node the
server does not know, gets a bad sample (``COMMUNICATION_ERROR``) and one log line naming the
path; the other points keep working.

Every data change or read result becomes a ``RawSample`` with the value, the source timestamp
(else the server timestamp, else now) and a quality from the status code (§7.39): Good is good,
Uncertain uncertain (``LAST_USABLE`` unless the code says more), Bad bad with the reason the code
names (``BadSensorFailure`` -> ``SENSOR_FAILURE`` ...; others ``COMMUNICATION_ERROR``), the
inverse of the server's codes (both in ``aas_server.opcua_common.status``). A bad sample carries
no value; the store keeps the last one.

Writes go to the Value attribute (§5.10.4) typed as the variable's DataType: an ``int`` written to
an Int16 variable travels as Int16, and a value outside the type's range (or a fraction for an
integer type) raises ``TypeMismatchError`` before anything is sent. Methods are called with the
Call service (§5.11.2), inputs typed as the method's ``InputArguments`` declare. The server's
answers are translated here:

* ``BadNotWritable``, ``BadUserAccessDenied``: ``NotWritableError``, since retrying cannot help
  (the REST API answers 403, as for a read-only element);
* ``BadTypeMismatch``, ``BadOutOfRange``, ``BadInvalidArgument``, ``BadArgumentsMissing``,
  ``BadTooManyArguments``: ``TypeMismatchError``;
* no answer within the device's ``timeout`` (a method point's own ``timeout`` for calls), or
  ``BadTimeout``: ``DeviceTimeoutError``;
* any other Bad code: ``DeviceError`` naming it; so do writes and calls while not connected.

Security (§5.5, §7.41): the device's policy and mode with its configured client certificate,
else a self-signed one generated once into ``pki_dir`` and reused (the server must trust it); a
user name and password (``password``, or the environment variable ``password_env``) or an
anonymous session. A device reached with policy None is warned about at start. asyncua's
keep-alive probe (every ``timeout`` seconds) watches the connection; a lost or refused connection
makes every variable point bad (``NO_COMMUNICATION``) once, is logged once (again only if the
server then refuses this client for a new reason, such as wrong credentials) and its recovery
once, and is retried with capped exponential backoff on a fresh session that resolves, reads and
subscribes anew, so a restarted server is picked up again.

Left out: events and alarms, HistoryRead, reverse connect, X.509 user identity tokens, private keys
with a password, checking the server certificate against a trust list (a configured
``server_certificate`` is pinned; otherwise the endpoint's certificate is accepted), session and
subscription transfer across reconnects, server-side deadband filters (the mapping applies its
own), index ranges, writing structured (ExtensionObject) values, and splitting requests by the
server's operation limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import math
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import (
    SecurityPolicy,
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import secret_from_environment
from aas_server.connectors.base import (
    ConnectionSupervisor,
    ConnectorContext,
    SampleSink,
    SupervisedConnector,
    quiet_library_logging,
)
from aas_server.errors import (
    ConfigurationError,
    DeviceError,
    DeviceTimeoutError,
    HubError,
    MappingError,
    NotFoundError,
    NotWritableError,
    TypeMismatchError,
)
from aas_server.mapping.schema import (
    Acquisition,
    OpcUaDevice,
    OpcUaMethodPoint,
    OpcUaSecurityMode,
    OpcUaSecurityPolicy,
    OpcUaVariablePoint,
)
from aas_server.model.events import ProtocolValue, Quality, QualityReason, RawSample, RawWrite, utc_now
from aas_server.opcua_common.certificates import application_uris, encoding_of, ensure_self_signed, load_certificate
from aas_server.opcua_common.status import quality_of_status, status_name
from aas_server.opcua_common.variants import INTEGER_RANGES

logger = logging.getLogger(__name__)

_Answer = TypeVar("_Answer")
_Resolved = TypeVar("_Resolved")

CLIENT_CERTIFICATE_FILE = "opcua_client_certificate.der"
CLIENT_PRIVATE_KEY_FILE = "opcua_client_private_key.pem"
_KEEP_ALIVE_SECONDS = 5.0
"""A subscription without changes still answers this often, so a dead one is noticed."""
_MAX_QUEUE_SIZE = 100
_SESSION_TIMEOUT_MS = 60_000
"""A session the hub abandons (a crash) is freed by the server after a minute; the keep-alive probe renews it."""
_RESOLVED = 0xFFFFFFFF
"""``RemainingPathIndex`` of a browse path target that matched the whole path (OPC 10000-4, 7.6)."""
_RELATIVE_TOLERANCE = 1e-9
_FLOAT32_MAX = 3.4028234663852886e38
_NULL_TIME = datetime.datetime(1601, 1, 2, tzinfo=datetime.UTC)
"""OPC UA encodes "no timestamp" as 1601-01-01; anything before this counts as absent."""

_POLICIES: dict[OpcUaSecurityPolicy, type[SecurityPolicy]] = {
    OpcUaSecurityPolicy.BASIC256SHA256: SecurityPolicyBasic256Sha256,
    OpcUaSecurityPolicy.AES128_SHA256_RSAOAEP: SecurityPolicyAes128Sha256RsaOaep,
    OpcUaSecurityPolicy.AES256_SHA256_RSAPSS: SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    OpcUaSecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    OpcUaSecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}

_ADDRESS_PROBLEMS = frozenset(
    {
        StatusCodes.BadNodeIdUnknown,
        StatusCodes.BadNodeIdInvalid,
        StatusCodes.BadAttributeIdInvalid,
        StatusCodes.BadNotReadable,
        StatusCodes.BadUserAccessDenied,
    }
)
_NOT_WRITABLE = frozenset({StatusCodes.BadNotWritable, StatusCodes.BadUserAccessDenied})
_TYPE_MISMATCH = frozenset(
    {
        StatusCodes.BadTypeMismatch,
        StatusCodes.BadOutOfRange,
        StatusCodes.BadInvalidArgument,
        StatusCodes.BadArgumentsMissing,
        StatusCodes.BadTooManyArguments,
    }
)
_CREDENTIALS_REJECTED = frozenset(
    {
        StatusCodes.BadUserAccessDenied,
        StatusCodes.BadIdentityTokenInvalid,
        StatusCodes.BadIdentityTokenRejected,
        StatusCodes.BadUserSignatureInvalid,
    }
)
_CERTIFICATE_REJECTED = frozenset(
    {
        StatusCodes.BadSecurityChecksFailed,
        StatusCodes.BadCertificateInvalid,
        StatusCodes.BadCertificateUntrusted,
        StatusCodes.BadCertificateUriInvalid,
        StatusCodes.BadCertificateTimeInvalid,
        StatusCodes.BadCertificateUseNotAllowed,
        StatusCodes.BadSecurityPolicyRejected,
    }
)

_SETUP_PROBLEM_TEXTS = ("No matching endpoints", "certificate mismatch")
"""asyncua's messages (plain ``UaError``) for an endpoint or server certificate that does not fit the configuration."""
_ABSTRACT_TYPES = frozenset({ua.VariantType.Variant, ua.VariantType.Null})


# --- pure helpers ---------------------------------------------------------------------------------


def parse_browse_path(text: str) -> list[ua.QualifiedName]:
    """``2:Boiler/2:Temperature`` as qualified names; an element without ``<ns>:`` is in namespace 0.

    Raises ``ValueError`` for an empty path or element.
    """
    names: list[ua.QualifiedName] = []
    for element in text.strip().strip("/").split("/"):
        prefix, separator, rest = element.partition(":")
        if separator and prefix.isdigit():
            namespace, name = int(prefix), rest
        else:
            namespace, name = 0, element
        if not name:
            raise ValueError(f"empty element in browse path {text!r}")
        names.append(ua.QualifiedName(name, namespace))
    return names


def _relative_path(names: Sequence[ua.QualifiedName], reference_type: int) -> ua.RelativePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(cast(Any, reference_type)),
            IsInverse=cast(Any, False),
            IncludeSubtypes=cast(Any, True),
            TargetName=name,
        )
        for name in names
    ]
    return ua.RelativePath(Elements=elements)


def _integer(value: Any, variant_type: ua.VariantType) -> int:
    name = variant_type.name
    if isinstance(value, bool):
        raise TypeMismatchError(f"{value!r} is a boolean, not an {name}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeMismatchError(f"{value!r} is not an {name}")
        nearest = round(value)
        if abs(value - nearest) > _RELATIVE_TOLERANCE * max(1.0, abs(value)):
            raise TypeMismatchError(f"{value!r} is not an integer ({name}); it would be truncated")
        value = nearest
    if not isinstance(value, int):
        raise TypeMismatchError(f"{value!r} is not an {name}")
    low, high = INTEGER_RANGES[variant_type]
    if not low <= value <= high:
        raise TypeMismatchError(f"{value} is out of range for {name} [{low}, {high}]")
    return value


def _scalar(value: Any, variant_type: ua.VariantType) -> Any:
    """``value`` as the Python value asyncua encodes as ``variant_type``; ``TypeMismatchError`` if it does not fit."""
    name = variant_type.name
    if variant_type in INTEGER_RANGES:
        return _integer(value, variant_type)
    if variant_type is ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeMismatchError(f"{value!r} is not a Boolean")
    if variant_type in (ua.VariantType.Float, ua.VariantType.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeMismatchError(f"{value!r} is not a number ({name})")
        number = float(value)
        if variant_type is ua.VariantType.Float and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise TypeMismatchError(f"{value} is out of range for Float [-{_FLOAT32_MAX:.7g}, {_FLOAT32_MAX:.7g}]")
        return number
    if variant_type is ua.VariantType.String and isinstance(value, str):
        return value
    if variant_type is ua.VariantType.LocalizedText and isinstance(value, str):
        return ua.LocalizedText(value)
    if variant_type is ua.VariantType.DateTime and isinstance(value, datetime.datetime):
        return value
    if variant_type is ua.VariantType.ByteString and isinstance(value, bytes | bytearray):
        return bytes(value)
    if variant_type is ua.VariantType.Guid and isinstance(value, uuid.UUID | str):
        try:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
        except ValueError:
            raise TypeMismatchError(f"{value!r} is not a Guid") from None
    if variant_type is ua.VariantType.NodeId and isinstance(value, str):
        try:
            return ua.NodeId.from_string(value)
        except (ValueError, ua.UaError):
            raise TypeMismatchError(f"{value!r} is not a NodeId") from None
    if variant_type in (
        ua.VariantType.String,
        ua.VariantType.LocalizedText,
        ua.VariantType.DateTime,
        ua.VariantType.ByteString,
        ua.VariantType.Guid,
        ua.VariantType.NodeId,
    ):
        raise TypeMismatchError(f"{value!r} is not a {name}")
    raise TypeMismatchError(f"writing {name} values is not supported")


def _inferred_type(value: Any) -> ua.VariantType:
    """The variant type for a value written to a variable of an abstract type (BaseDataType, Number)."""
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        for candidate in (ua.VariantType.Int32, ua.VariantType.Int64, ua.VariantType.UInt64):
            low, high = INTEGER_RANGES[candidate]
            if low <= value <= high:
                return candidate
        raise TypeMismatchError(f"{value} does not fit any OPC UA integer type")
    if isinstance(value, float):
        return ua.VariantType.Double
    if isinstance(value, str):
        return ua.VariantType.String
    if isinstance(value, datetime.datetime):
        return ua.VariantType.DateTime
    if isinstance(value, bytes | bytearray):
        return ua.VariantType.ByteString
    raise TypeMismatchError(f"{value!r} ({type(value).__name__}) cannot be written to an OPC UA variable")


def to_variant(value: Any, variant_type: ua.VariantType | None) -> ua.Variant:
    """``value`` as a Variant of ``variant_type`` (lists as arrays); ``None`` or an abstract type infers it.

    Integers must lie in the type's range; a float written to an integer type must be integral
    within a relative 1e-9 (as the Modbus inverse mapping demands). Raises ``TypeMismatchError``.
    """
    if isinstance(value, list | tuple):
        if not value:
            if variant_type is None or variant_type in _ABSTRACT_TYPES:
                raise TypeMismatchError("an empty list has no OPC UA type here")
            return ua.Variant([], variant_type, is_array=True)
        element_type = variant_type
        if element_type is None or element_type in _ABSTRACT_TYPES:
            element_type = _inferred_type(value[0])
        return ua.Variant([_scalar(element, element_type) for element in value], element_type, is_array=True)
    if value is None:
        raise TypeMismatchError("no value (None) was given")
    if variant_type is None or variant_type in _ABSTRACT_TYPES:
        variant_type = _inferred_type(value)
    return ua.Variant(_scalar(value, variant_type), variant_type)


def _plain(value: Any) -> Any:
    """A decoded OPC UA value as plain Python data: text of a LocalizedText, ints of enumerations, lists."""
    if isinstance(value, list):
        return [_plain(element) for element in value]
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, enum.IntEnum | enum.IntFlag):
        return int(value)
    return value


def _timestamp(data_value: ua.DataValue) -> datetime.datetime:
    for candidate in (data_value.SourceTimestamp, data_value.ServerTimestamp):
        if candidate is None:
            continue
        moment = candidate if candidate.tzinfo is not None else candidate.replace(tzinfo=datetime.UTC)
        if moment >= _NULL_TIME:
            return moment
    return utc_now()


def _without_user_info(endpoint: str) -> str:
    """The endpoint URL for log lines, without a ``user:password@`` part."""
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _node_id(target: ua.NodeId) -> ua.NodeId:
    """A plain NodeId from a (possibly expanded) one."""
    return ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)


# --- client certificate -----------------------------------------------------------------------------


def default_application_uri() -> str:
    """The application URI of the hub as an OPC UA client on this host."""
    return f"urn:{socket.gethostname()}:aas-server:opcua-client"


def ensure_client_certificate(pki_dir: Path, application_uri: str) -> tuple[Path, Path]:
    """The hub's self-signed client certificate (DER) and key (PEM) in ``pki_dir``, generated once.

    Regenerated (logged) when expired or naming another application URI. Blocking: run in a thread.
    """
    certificate_path, key_path = pki_dir / CLIENT_CERTIFICATE_FILE, pki_dir / CLIENT_PRIVATE_KEY_FILE
    generated = ensure_self_signed(
        certificate_path,
        key_path,
        application_uri=application_uri,
        common_name="aas-server OPC UA client",
        hosts=[],
        server=False,
    )
    if generated:
        logger.info("generated the OPC UA client certificate %s; legacy OPC UA servers must trust it", certificate_path)
    return certificate_path, key_path


@dataclass(frozen=True)
class _Credentials:
    """Certificate, key and server certificate contents for a secure channel, read once."""

    certificate: uacrypto.CertProperties
    private_key: uacrypto.CertProperties
    server_certificate: uacrypto.CertProperties | None
    application_uri: str


def _read_credentials(
    certificate_path: Path, key_path: Path, server_certificate_path: Path | None, fallback_uri: str
) -> _Credentials:
    certificate_content = certificate_path.read_bytes()
    key_content = key_path.read_bytes()
    encoding = encoding_of(certificate_content)
    application_uri = next(iter(application_uris(load_certificate(certificate_content))), fallback_uri)
    server_certificate = None
    if server_certificate_path is not None:
        server_content = server_certificate_path.read_bytes()
        server_certificate = uacrypto.CertProperties(server_content, encoding_of(server_content))
    return _Credentials(
        uacrypto.CertProperties(certificate_content, encoding),
        uacrypto.CertProperties(key_content, encoding_of(key_content)),
        server_certificate,
        application_uri,
    )


# --- the connector ---------------------------------------------------------------------------------


@dataclass
class _Method:
    object_id: ua.NodeId
    method_id: ua.NodeId
    input_types: list[ua.VariantType | None] | None
    """Types of the declared input arguments; ``None`` when the server does not say."""


@dataclass
class _Session:
    """One connection to the server and what was resolved on it."""

    client: Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    loss_reason: str = "connection lost"
    node_ids: dict[str, ua.NodeId] = field(default_factory=dict)
    variant_types: dict[str, ua.VariantType | None] = field(default_factory=dict)
    methods: dict[str, _Method] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)
    type_cache: dict[ua.NodeId, ua.VariantType | None] = field(default_factory=dict)
    monitored: dict[int, str] = field(default_factory=dict)

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.loss_reason = reason
            self.lost.set()

    async def on_connection_lost(self, error: Exception) -> None:
        self.mark_lost(f"connection lost ({error or type(error).__name__})")


class _DataChanges:
    """asyncua subscription handler: data change notifications become samples of the session's points."""

    def __init__(self, connector: OpcUaClientConnector, session: _Session) -> None:
        self._connector = connector
        self._session = session

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        if self._session.lost.is_set() or self._connector._supervisor.stopping:
            return
        point = self._session.monitored.get(int(data.monitored_item.ClientHandle))
        if point is not None:
            self._connector._emit_data_value(point, data.monitored_item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        code = int(status.Status.value)
        if code & 0x80000000:
            self._session.mark_lost(f"the server ended the subscription ({status_name(code)})")


class OpcUaClientConnector(SupervisedConnector):
    """Reads, writes and calls methods of one OPC UA server for the hub; one instance per device.

    ``sink`` receives every ``RawSample`` synchronously on the event loop; it must not block.
    ``pki_dir`` is where a client certificate is generated when the device needs a secure channel
    and configures none; without either, such a device raises ``ConfigurationError`` here, as do a
    ``password_env`` that is not set and a malformed ``node_id`` or browse path (``MappingError``).
    """

    def __init__(
        self,
        device: OpcUaDevice,
        points: Sequence[OpcUaVariablePoint | OpcUaMethodPoint],
        sink: SampleSink,
        *,
        pki_dir: Path | None = None,
    ) -> None:
        self._where = _without_user_info(device.endpoint)
        subject = f"OPC UA device {device.name!r} at {self._where}"
        self._supervisor = ConnectionSupervisor.of_device(logger, subject, device, points, sink)
        self.device = device
        self._pki_dir = pki_dir
        self._variables = {point.name: point for point in points if isinstance(point, OpcUaVariablePoint)}
        self._methods = {point.name: point for point in points if isinstance(point, OpcUaMethodPoint)}
        self._subscribed: list[OpcUaVariablePoint] = []
        self._polled: dict[float, list[OpcUaVariablePoint]] = {}
        for point in self._variables.values():
            if (point.acquisition or device.acquisition) is Acquisition.SUBSCRIBE:
                self._subscribed.append(point)
            else:
                self._polled.setdefault(point.poll_interval, []).append(point)
        self._node_ids: dict[str, ua.NodeId] = {}
        self._browse_paths: dict[str, list[ua.QualifiedName]] = {}
        for point in self._variables.values():
            self._parse_address(point.name, "node_id", point.node_id, "browse_path", point.browse_path)
        for method in self._methods.values():
            self._parse_address(
                method.name, "object_node_id", method.object_node_id, "object_browse_path", method.object_browse_path
            )
            self._parse_address(
                f"{method.name}#method", "method_node_id", method.method_node_id, "method_browse_name", None
            )
            if method.method_browse_name is not None:
                self._browse_paths[f"{method.name}#method"] = self._parsed_path(
                    method.name, "method_browse_name", method.method_browse_name
                )
        self._username = device.username
        self._password = secret_from_environment(device.password, device.password_env, f"device {device.name!r}")
        self._secure_channel = device.security_policy is not OpcUaSecurityPolicy.NONE
        if (device.certificate is None) != (device.private_key is None):
            raise ConfigurationError(f"device {device.name!r}: certificate and private_key must be given together")
        if self._secure_channel and device.certificate is None and pki_dir is None:
            raise ConfigurationError(
                f"device {device.name!r}: security policy {device.security_policy.value} needs a client "
                "certificate: configure certificate and private_key, or give the connector a pki directory"
            )
        self._credentials: _Credentials | None = None
        self._request_timeout = max([device.timeout, *(method.timeout for method in self._methods.values())])
        self._session: _Session | None = None
        self._clients: set[Client] = set()
        self._point_problems: dict[str, str] = {}

    def _parse_address(
        self, name: str, id_field: str, node_id: str | None, path_field: str, browse_path: str | None
    ) -> None:
        if node_id is not None:
            try:
                self._node_ids[name] = ua.NodeId.from_string(node_id)
            except (ValueError, ua.UaError) as error:
                raise MappingError(
                    f"device {self.device.name!r}: point {name.partition('#')[0]!r}: {id_field} {node_id!r} "
                    f"is not a NodeId ({error})"
                ) from None
        if browse_path is not None:
            self._browse_paths[name] = self._parsed_path(name, path_field, browse_path)

    def _parsed_path(self, name: str, path_field: str, text: str) -> list[ua.QualifiedName]:
        try:
            return parse_browse_path(text)
        except ValueError as error:
            raise MappingError(f"device {self.device.name!r}: point {name!r}: {path_field}: {error}") from None

    @property
    def connected(self) -> bool:
        """Whether a session with the server is active and its points are resolved and subscribed."""
        return self._session is not None and not self._session.lost.is_set()

    async def start(self) -> None:
        """Start connecting, subscribing and polling; does not wait for, nor fail on, an unreachable server.

        Raises ``ConfigurationError`` when a configured certificate or key cannot be read.
        """
        quiet_library_logging("asyncua.client")
        if self._secure_channel:
            self._credentials = await asyncio.to_thread(self._load_credentials)
        else:
            logger.warning(
                "OPC UA device %r at %s is reached with security policy None: messages are neither signed "
                "nor encrypted; use it only on a trusted network",
                self.device.name,
                self._where,
            )
        name, supervisor = self.device.name, self._supervisor
        supervisor.spawn(self._maintain_connection(), f"opcua {name} connection")
        for interval, points in sorted(self._polled.items()):
            supervisor.spawn(supervisor.every(interval, self._poller(points)), f"opcua {name} poll {interval:g}s")

    async def stop(self) -> None:
        """Stop polling, close the session (deleting its subscription on the server) and the connection."""
        await self._supervisor.stop()
        self._session = None
        for client in list(self._clients):
            await self._close_client(client)

    def _load_credentials(self) -> _Credentials:
        device = self.device
        try:
            if device.certificate is not None and device.private_key is not None:
                certificate_path, key_path = device.certificate, device.private_key
            else:
                assert self._pki_dir is not None
                certificate_path, key_path = ensure_client_certificate(self._pki_dir, default_application_uri())
            return _read_credentials(certificate_path, key_path, device.server_certificate, default_application_uri())
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"device {device.name!r}: cannot read the client certificate: {error}") from None

    # --- connection ----------------------------------------------------------------------------

    async def _maintain_connection(self) -> None:
        supervisor = self._supervisor
        while True:  # until cancelled by ``supervisor.stop``
            session = await self._open_session()
            supervisor.first_attempt_done.set()
            if session is None:
                await supervisor.backoff.wait()
                continue
            self._session = session
            supervisor.mark_reachable()
            await session.lost.wait()
            self._session = None
            if supervisor.stopping:
                return
            self._mark_unreachable(session.loss_reason)
            await self._close_client(session.client)
            await supervisor.backoff.wait()

    def _new_client(self) -> Client:
        client = Client(self.device.endpoint, timeout=self._request_timeout, watchdog_intervall=self.device.timeout)
        client.session_timeout = _SESSION_TIMEOUT_MS
        client.name = client.description = "aas-server"
        client.application_uri = default_application_uri()
        client.product_uri = "urn:aas-server"
        if self._username is not None:
            client.set_user(self._username)
        if self._password is not None:
            client.set_password(self._password)
        self._clients.add(client)
        return client

    async def _set_up_security(self, client: Client) -> None:
        """Set up the secure channel; without a configured server certificate this asks the server for it."""
        credentials = self._credentials
        if credentials is None:
            return
        client.application_uri = credentials.application_uri
        await client.set_security(
            _POLICIES[self.device.security_policy],
            credentials.certificate,
            credentials.private_key,
            server_certificate=credentials.server_certificate,
            mode=_MODES[self.device.security_mode],
        )

    async def _open_session(self) -> _Session | None:
        """Connect, resolve and subscribe; ``None`` (logged) when the server cannot be used now."""
        client = self._new_client()
        session = _Session(client)
        client.connection_lost_callback = session.on_connection_lost
        try:
            async with asyncio.timeout(self.device.timeout * 4):
                await self._set_up_security(client)
                await client.connect()
                await self._prepare(session)
        except Exception as error:
            logger.debug("OPC UA device %r: connection attempt failed", self.device.name, exc_info=True)
            session.mark_lost("connection attempt failed")
            await self._close_client(client)
            self._mark_unreachable(self._describe_failure(error), persistent=self._is_setup_problem(error))
            return None
        if session.lost.is_set():
            await self._close_client(client)
            self._mark_unreachable(session.loss_reason)
            return None
        return session

    @staticmethod
    def _is_setup_problem(error: BaseException) -> bool:
        """Whether the server refused this client (credentials, certificate, endpoint) rather than being away."""
        if isinstance(error, ua.UaStatusCodeError):
            return int(error.code) & 0xFFFF0000 in _CREDENTIALS_REJECTED | _CERTIFICATE_REJECTED
        return isinstance(error, ua.UaError) and any(text in str(error) for text in _SETUP_PROBLEM_TEXTS)

    def _describe_failure(self, error: BaseException) -> str:
        if isinstance(error, TimeoutError):
            return f"no answer in time (timeout {self.device.timeout:g} s)"
        if isinstance(error, ua.UaStatusCodeError):
            code = int(error.code)
            name = status_name(code)
            if code & 0xFFFF0000 in _CREDENTIALS_REJECTED:
                user = f"user {self._username!r}" if self._username is not None else "an anonymous session"
                return f"the server rejected {user} ({name})"
            if code & 0xFFFF0000 in _CERTIFICATE_REJECTED:
                return f"the server rejected the client certificate or security settings ({name})"
            return f"the server answered {name}"
        if isinstance(error, ua.UaError) and "certificate mismatch" in str(error):
            return "the server's certificate is not the configured server_certificate"
        if isinstance(error, ua.UaError) and "No matching endpoints" in str(error):
            return (
                f"the server offers no endpoint with security policy {self.device.security_policy.value} "
                f"and mode {self.device.security_mode.value}"
            )
        if isinstance(error, OSError):
            return error.strerror or str(error) or type(error).__name__
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

    async def _close_client(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.device.timeout):
                await client.disconnect()
        client.disconnect_socket()
        self._clients.discard(client)

    def _mark_unreachable(self, reason: str, *, persistent: bool = False) -> None:
        """Make every variable point bad once per outage and log the outage once.

        A later attempt is logged again only when the server refuses this client for a new reason
        (``persistent``: wrong credentials, untrusted certificate), which needs a person to act.
        """
        if self._supervisor.mark_unreachable(reason, persistent=persistent):
            self._supervisor.emit_without_value(self.device.name, self._variables, QualityReason.NO_COMMUNICATION)

    # --- after each connect --------------------------------------------------------------------

    async def _prepare(self, session: _Session) -> None:
        await self._resolve(session)
        await self._read_variable_types(session)
        await self._read_method_arguments(session)
        for name, reason in session.unresolved.items():
            self._note_point_problem(name, reason)
        self._supervisor.emit_without_value(
            self.device.name,
            (name for name in session.unresolved if name in self._variables),
            QualityReason.COMMUNICATION_ERROR,
        )
        for name in session.methods:
            self._note_point_ok(name)
        await self._subscribe(session)

    async def _namespace_indexes(self, session: _Session) -> dict[str, int]:
        uris = await session.client.get_namespace_array()
        return {uri: index for index, uri in enumerate(uris)}

    async def _resolve(self, session: _Session) -> None:
        """NodeIds of every point: given ones (``nsu=`` mapped to the server's index) and browse paths."""
        namespaces: dict[str, int] | None = None
        for name, node_id in self._node_ids.items():
            uri = getattr(node_id, "NamespaceUri", None)
            if uri:
                if namespaces is None:
                    namespaces = await self._namespace_indexes(session)
                if uri not in namespaces:
                    session.unresolved[name.partition("#")[0]] = f"the server has no namespace {uri!r}"
                    continue
                node_id = ua.NodeId(node_id.Identifier, cast(Any, namespaces[uri]), node_id.NodeIdType)
            session.node_ids[name] = _node_id(node_id)
        objects = ua.NodeId(cast(Any, ua.ObjectIds.ObjectsFolder))
        from_objects = [name for name in self._browse_paths if not name.endswith("#method")]
        await self._translate(session, [(name, objects) for name in from_objects], ua.ObjectIds.HierarchicalReferences)
        method_paths = []
        for name in self._browse_paths:
            if name.endswith("#method"):
                owner = name.removesuffix("#method")
                if owner in session.node_ids:
                    method_paths.append((name, session.node_ids[owner]))
        await self._translate(session, method_paths, ua.ObjectIds.HierarchicalReferences)
        for name in self._methods:
            object_id, method_id = session.node_ids.get(name), session.node_ids.get(f"{name}#method")
            if object_id is not None and method_id is not None:
                session.methods[name] = _Method(object_id, method_id, None)

    async def _translate(self, session: _Session, paths: list[tuple[str, ua.NodeId]], reference_type: int) -> None:
        if not paths:
            return
        requests = [
            ua.BrowsePath(StartingNode=start, RelativePath=_relative_path(self._browse_paths[name], reference_type))
            for name, start in paths
        ]
        results = await session.client.uaclient.translate_browsepaths_to_nodeids(requests)
        for (name, _start), result in zip(paths, results, strict=True):
            point = name.partition("#")[0]
            text = "/".join(f"{q.NamespaceIndex}:{q.Name}" for q in self._browse_paths[name])
            what = "method browse name" if name.endswith("#method") else "browse path"
            targets = [target for target in result.Targets if target.RemainingPathIndex == _RESOLVED]
            if not result.StatusCode.is_good() or not targets:
                code = int(result.StatusCode.value) if not result.StatusCode.is_good() else StatusCodes.BadNoMatch
                session.unresolved[point] = f"{what} {text!r} does not resolve ({status_name(code)})"
                continue
            if len(targets) > 1:
                logger.warning(
                    "OPC UA device %r: %s %r of point %r matches %d nodes; using the first",
                    self.device.name,
                    what,
                    text,
                    point,
                    len(targets),
                )
            session.node_ids[name] = _node_id(targets[0].TargetId)

    async def _read_attributes(
        self, session: _Session, node_ids: Sequence[ua.NodeId], attribute: ua.AttributeIds
    ) -> list[ua.DataValue]:
        parameters = ua.ReadParameters(
            NodesToRead=[ua.ReadValueId(NodeId=node_id, AttributeId=attribute) for node_id in node_ids],
            TimestampsToReturn=ua.TimestampsToReturn.Both,
        )
        async with asyncio.timeout(self.device.timeout):
            return await session.client.uaclient.read(parameters)

    async def _variant_type(self, session: _Session, data_type: Any) -> ua.VariantType | None:
        """The built-in type a DataType (a NodeId) is encoded as; ``None`` when the server does not tell."""
        if not isinstance(data_type, ua.NodeId):
            return None
        if data_type in session.type_cache:
            return session.type_cache[data_type]
        variant_type: ua.VariantType | None
        if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int) and data_type.Identifier <= 25:
            variant_type = ua.VariantType(data_type.Identifier)
            if data_type.Identifier in (0, 24):
                variant_type = ua.VariantType.Variant
        else:
            try:
                async with asyncio.timeout(self.device.timeout):
                    variant_type = await data_type_to_variant_type(session.client.get_node(data_type))
            except (ua.UaError, ValueError, AttributeError, TimeoutError):
                variant_type = None
        session.type_cache[data_type] = variant_type
        return variant_type

    async def _read_variable_types(self, session: _Session) -> None:
        writable = [name for name, point in self._variables.items() if point.writable and name in session.node_ids]
        if not writable:
            return
        results = await self._read_attributes(
            session, [session.node_ids[name] for name in writable], ua.AttributeIds.DataType
        )
        for name, result in zip(writable, results, strict=True):
            value = result.Value.Value if result.Value is not None else None
            session.variant_types[name] = await self._variant_type(session, value)

    async def _read_method_arguments(self, session: _Session) -> None:
        names = list(session.methods)
        if not names:
            return
        paths = [
            ua.BrowsePath(
                StartingNode=session.methods[name].method_id,
                RelativePath=_relative_path([ua.QualifiedName("InputArguments", 0)], ua.ObjectIds.HasProperty),
            )
            for name in names
        ]
        results = await session.client.uaclient.translate_browsepaths_to_nodeids(paths)
        with_arguments: list[tuple[str, ua.NodeId]] = []
        for name, result in zip(names, results, strict=True):
            targets = [target for target in result.Targets if target.RemainingPathIndex == _RESOLVED]
            if result.StatusCode.is_good() and targets:
                with_arguments.append((name, _node_id(targets[0].TargetId)))
            elif int(result.StatusCode.value) & 0xFFFF0000 == StatusCodes.BadNoMatch:
                session.methods[name].input_types = []
        if not with_arguments:
            return
        values = await self._read_attributes(session, [node for _, node in with_arguments], ua.AttributeIds.Value)
        for (name, _node), value in zip(with_arguments, values, strict=True):
            arguments = value.Value.Value if value.Value is not None else None
            if not isinstance(arguments, list):
                continue
            session.methods[name].input_types = [
                await self._variant_type(session, getattr(argument, "DataType", None)) for argument in arguments
            ]

    async def _subscribe(self, session: _Session) -> None:
        points = [point for point in self._subscribed if point.name in session.node_ids]
        if not points:
            return
        publishing_ms = self.device.publishing_interval * 1000
        keep_alive = max(3, math.ceil(_KEEP_ALIVE_SECONDS / self.device.publishing_interval))
        parameters = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms,
            RequestedLifetimeCount=keep_alive * 4,
            RequestedMaxKeepAliveCount=keep_alive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        subscription = await session.client.create_subscription(parameters, _DataChanges(self, session))
        requests = []
        for handle, point in enumerate(points, start=1):
            session.monitored[handle] = point.name
            sampling = point.sampling_interval
            queue_size = (
                1
                if sampling <= 0
                else min(_MAX_QUEUE_SIZE, max(1, math.ceil(self.device.publishing_interval / sampling)))
            )
            requests.append(
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(
                        NodeId=session.node_ids[point.name], AttributeId=ua.AttributeIds.Value
                    ),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=handle,
                        SamplingInterval=sampling * 1000,
                        QueueSize=queue_size,
                        DiscardOldest=True,
                    ),
                )
            )
        results = await subscription.create_monitored_items(requests)
        now = utc_now()
        for point, result in zip(points, results, strict=True):
            if isinstance(result, ua.StatusCode):
                code = int(result.value)
                self._note_point_problem(
                    point.name, f"the server does not monitor {self._address_text(point)} ({status_name(code)})"
                )
                self._supervisor.emit(
                    RawSample(self.device.name, point.name, None, now, Quality.BAD, quality_of_status(code)[1])
                )

    def _address_text(self, point: OpcUaVariablePoint) -> str:
        return f"node {point.node_id!r}" if point.node_id is not None else f"browse path {point.browse_path!r}"

    def _note_point_problem(self, name: str, reason: str) -> None:
        if self._point_problems.get(name) != reason:
            logger.warning("OPC UA device %r: point %r: %s; its value is bad", self.device.name, name, reason)
            self._point_problems[name] = reason

    def _note_point_ok(self, name: str) -> None:
        if self._point_problems.pop(name, None) is not None:
            logger.info("OPC UA device %r: point %r works again", self.device.name, name)

    # --- reading -------------------------------------------------------------------------------

    def _emit_data_value(self, name: str, data_value: ua.DataValue) -> None:
        code = 0 if data_value.StatusCode is None else int(data_value.StatusCode.value)
        quality, reason = quality_of_status(code)
        value = data_value.Value.Value if data_value.Value is not None else None
        time, emit = _timestamp(data_value), self._supervisor.emit
        if quality is Quality.BAD:
            emit(RawSample(self.device.name, name, None, time, quality, reason))
        elif value is None:
            emit(RawSample(self.device.name, name, None, time, Quality.BAD, QualityReason.NOT_YET_READ))
        else:
            if name in self._point_problems:
                self._note_point_ok(name)
            emit(RawSample(self.device.name, name, _plain(value), time, quality, reason))

    def _poller(self, points: list[OpcUaVariablePoint]) -> Callable[[], Awaitable[None]]:
        """One poll of a poll group: one Read request while a session is up."""

        async def poll() -> None:
            session = self._session
            if session is not None and not session.lost.is_set():
                await self._read(session, points)

        return poll

    async def _read(self, session: _Session, points: list[OpcUaVariablePoint]) -> None:
        """Read the values of ``points`` in one Read request and emit a sample for each."""
        resolved = [point for point in points if point.name in session.node_ids]
        if not resolved:
            return
        try:
            results = await self._read_attributes(
                session, [session.node_ids[point.name] for point in resolved], ua.AttributeIds.Value
            )
        except TimeoutError:
            session.mark_lost(f"no answer to a read within {self.device.timeout:g} s")
            return
        except ua.UaStatusCodeError as error:
            code = int(error.code)
            now = utc_now()
            for point in resolved:
                self._note_point_problem(point.name, f"the server refuses to read it ({status_name(code)})")
                self._supervisor.emit(
                    RawSample(self.device.name, point.name, None, now, Quality.BAD, quality_of_status(code)[1])
                )
            return
        except (OSError, ua.UaError) as error:
            session.mark_lost(f"connection lost while reading ({self._describe_failure(error)})")
            return
        if session.lost.is_set():
            return
        for point, result in zip(resolved, results, strict=True):
            code = 0 if result.StatusCode is None else int(result.StatusCode.value)
            if code & 0xFFFF0000 in _ADDRESS_PROBLEMS:
                self._note_point_problem(
                    point.name, f"{self._address_text(point)} cannot be read ({status_name(code)})"
                )
            self._emit_data_value(point.name, result)

    # --- writing and calling -------------------------------------------------------------------

    async def _ready_session(self, action: str) -> _Session:
        await self._supervisor.wait_for_first_attempt(self.device.timeout + 0.5)
        session = self._session
        if session is None or session.lost.is_set():
            failure = self._supervisor.failure
            reason = f": {failure}" if failure else ""
            raise DeviceError(f"not connected{reason}; {action} was not sent", device=self.device.name)
        return session

    async def _resolved(
        self, point_name: str, action: str, table: Callable[[_Session], Mapping[str, _Resolved]], kind: str
    ) -> tuple[_Session, _Resolved]:
        """The session and what ``point_name`` resolved to in its ``table``; ``DeviceError`` when there is none."""
        session = await self._ready_session(f"the {action} of {point_name!r}")
        resolved = table(session).get(point_name)
        if resolved is None:
            problem = session.unresolved.get(point_name, f"its {kind} is unknown")
            raise DeviceError(f"point {point_name!r}: {problem}; the {action} was not sent", device=self.device.name)
        return session, resolved

    def _refusal(self, code: int, what: str) -> HubError:
        name = status_name(code)
        specific = code & 0xFFFF0000
        if specific in _NOT_WRITABLE:
            return NotWritableError(f"device {self.device.name!r} refused {what}: {name}")
        if specific in _TYPE_MISMATCH:
            return TypeMismatchError(f"device {self.device.name!r} refused {what}: {name}")
        if specific == StatusCodes.BadTimeout:
            return DeviceTimeoutError(f"{what} timed out in the server ({name})", device=self.device.name)
        return DeviceError(f"the server refused {what}: {name}", device=self.device.name)

    async def _answer(self, what: str, within: float, request: Coroutine[Any, Any, _Answer]) -> _Answer:
        """The server's answer to one service request (``within`` seconds), failures translated into the error tree."""
        try:
            async with asyncio.timeout(within):
                return await request
        except TimeoutError:
            raise DeviceTimeoutError(f"no answer to {what} within {within:g} s", device=self.device.name) from None
        except ua.UaStatusCodeError as error:
            raise self._refusal(int(error.code), what) from None
        except (OSError, ua.UaError) as error:
            raise DeviceError(f"{what} failed: {self._describe_failure(error)}", device=self.device.name) from None

    async def write(self, raw: RawWrite[ProtocolValue]) -> None:
        """Write a variable point's value (in the device's unit) to its Value attribute; returns once accepted.

        The value is typed as the variable's DataType. Raises ``NotFoundError`` for an unknown
        point, ``NotWritableError`` for a read-only point or when the server answers
        ``BadNotWritable``/``BadUserAccessDenied``, ``TypeMismatchError`` when the value does not
        fit the type (checked before sending, or answered by the server), ``DeviceTimeoutError``
        without an answer within the device's ``timeout``, ``DeviceError`` when not connected or
        for any other refusal (naming the status code).
        """
        point = self._variables.get(raw.point)
        if point is None:
            raise NotFoundError(f"device {self.device.name!r} has no variable point {raw.point!r}")
        if not point.writable:
            raise NotWritableError(f"point {point.name!r} is read-only (access: read)")
        what = f"the write of {point.name!r}"
        session, node_id = await self._resolved(point.name, "write", lambda session: session.node_ids, "node")
        try:
            variant = to_variant(raw.raw, session.variant_types.get(point.name))
        except TypeMismatchError as error:
            raise TypeMismatchError(f"point {point.name!r}: {error}") from None
        parameters = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(
                    NodeId=node_id,
                    AttributeId=ua.AttributeIds.Value,
                    Value=ua.DataValue(Value=variant, StatusCode=None),
                )
            ]
        )
        results = await self._answer(what, self.device.timeout, session.client.uaclient.write(parameters))
        status = results[0]
        if status.is_bad():
            raise self._refusal(int(status.value), what)

    async def call(self, point_name: str, inputs: Sequence[Any]) -> list[Any]:
        """Call the method of an ``OpcUaMethodPoint``; the output arguments in order.

        Inputs are typed as the method's ``InputArguments`` declare. Errors as for ``write``; the
        method point's ``timeout`` bounds the wait for the answer.
        """
        point = self._methods.get(point_name)
        if point is None:
            raise NotFoundError(f"device {self.device.name!r} has no method point {point_name!r}")
        what = f"the call of {point.name!r}"
        session, method = await self._resolved(point.name, "call", lambda session: session.methods, "method")
        types: Sequence[ua.VariantType | None] = method.input_types or [None] * len(inputs)
        if method.input_types is not None and len(inputs) != len(method.input_types):
            raise TypeMismatchError(
                f"point {point.name!r}: the method takes {len(method.input_types)} input arguments, got {len(inputs)}"
            )
        arguments = []
        for index, (value, variant_type) in enumerate(zip(inputs, types, strict=True)):
            try:
                arguments.append(to_variant(value, variant_type))
            except TypeMismatchError as error:
                raise TypeMismatchError(f"point {point.name!r}: input argument {index}: {error}") from None
        request = ua.CallMethodRequest(ObjectId=method.object_id, MethodId=method.method_id, InputArguments=arguments)
        results = await self._answer(what, point.timeout, session.client.uaclient.call([request]))
        result = results[0]
        if result.StatusCode.is_bad():
            refused = [
                f"input argument {index}: {status_name(int(status.value))}"
                for index, status in enumerate(result.InputArgumentResults or [])
                if status.is_bad()
            ]
            detail = f" ({'; '.join(refused)})" if refused else ""
            raise self._refusal(int(result.StatusCode.value), what + detail)
        return [_plain(variant.Value) for variant in result.OutputArguments or []]


# --- the protocol registry's entry points ---------------------------------------------------------


def create_connector(
    device: OpcUaDevice, points: Sequence[OpcUaVariablePoint | OpcUaMethodPoint], context: ConnectorContext
) -> OpcUaClientConnector:
    """The connector of an OPC UA server (``mapping.schema.PROTOCOLS``); a generated client
    certificate goes to ``<data_dir>/pki-client/<device>``."""
    return OpcUaClientConnector(device, points, context.sink, pki_dir=context.data_dir / "pki-client" / device.name)


def with_endpoint(device: OpcUaDevice, endpoint: str) -> OpcUaDevice:
    """``device`` at the endpoint URL ``opc.tcp://...``."""
    return device.model_copy(update={"endpoint": endpoint})

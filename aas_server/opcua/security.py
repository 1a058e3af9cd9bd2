"""Secure defaults for the OPC UA server: endpoints, users and the server certificate (OPC 10000-4 §5.6, §6.1).

asyncua's defaults are insecure (a ``NoSecurity`` endpoint, anonymous writes, a user named
``admin`` gets the admin role with any password). This module replaces all three:

* endpoints: ``Sign`` and ``SignAndEncrypt`` for each configured policy; ``None`` only if listed;
* users: username and password checked against the settings in constant time; anonymous sessions
  only with ``allow_anonymous_read`` and then read-only; nobody gets asyncua's admin role, so no
  client can add or delete nodes;
* certificate: the configured one, or a self-signed one generated once into ``<data_dir>/pki/``
  whose URI matches ``application_uri``;
* client certificates (OPC 10000-4 §6.1.3, OPC 10000-12 §7.3 layout): valid now, naming the
  client's application URI, and trusted: the certificate itself or its issuing CA in
  ``<data_dir>/pki/trusted/``, not revoked by a CRL in ``<data_dir>/pki/crl/``. A rejected
  certificate is kept in ``<data_dir>/pki/rejected/``; moving it into ``trusted/`` trusts it, with
  no restart. ``trust_all_client_certificates`` skips the trust list (demo only, warned).

Left out for now: X.509 user identity tokens, and certificate chains sent by the client (an
intermediate CA must itself be in ``trusted/``).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from aas_server.config import OpcUaSettings, Role, SecurityPolicyName
from aas_server.opcua_common.certificates import encoding_of, ensure_self_signed, load_certificate
from aas_server.opcua_common.status import status

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

_LOG = logging.getLogger(__name__)

CERTIFICATE_FILE = "server_certificate.der"
PRIVATE_KEY_FILE = "server_private_key.pem"
_REJECTED_LIMIT = 1000
"""At most this many rejected certificates are kept, so that clients cannot fill the disk."""

_POLICY_TYPES: dict[SecurityPolicyName, list[ua.SecurityPolicyType]] = {
    SecurityPolicyName.NONE: [ua.SecurityPolicyType.NoSecurity],
    SecurityPolicyName.BASIC256SHA256: [
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ],
    SecurityPolicyName.AES128_SHA256_RSAOAEP: [
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ],
    SecurityPolicyName.AES256_SHA256_RSAPSS: [
        ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ],
}


def security_policy_types(settings: OpcUaSettings) -> list[ua.SecurityPolicyType]:
    """The endpoints to offer: Sign and SignAndEncrypt per policy, ``NoSecurity`` only if configured (warned)."""
    types: list[ua.SecurityPolicyType] = []
    for name in dict.fromkeys(settings.security_policies):
        types.extend(_POLICY_TYPES[name])
    if SecurityPolicyName.NONE in settings.security_policies:
        _LOG.warning(
            "OPC UA endpoint with security policy None is enabled: messages are neither signed nor "
            "encrypted; use it only on a trusted network or for benchmarks"
        )
    if not types:
        raise ValueError("opcua.security_policies is empty: the server would offer no endpoint")
    return types


def identity_token_types(settings: OpcUaSettings) -> list[type]:
    """User name tokens always; anonymous tokens only with ``allow_anonymous_read``."""
    tokens: list[type] = [ua.UserNameIdentityToken]
    if settings.allow_anonymous_read:
        _LOG.warning("OPC UA anonymous sessions are allowed (read-only)")
        tokens.append(ua.AnonymousIdentityToken)
    elif not settings.users:
        _LOG.warning("no OPC UA users are configured and anonymous read is off: no client can connect")
    return tokens


@dataclass
class HubUser(User):
    """An authenticated OPC UA session user: asyncua's ``User`` role plus the hub's role.

    ``hub_role`` is ``None`` for anonymous sessions. The asyncua role is always ``User``, never
    ``Admin``: address-space changes (AddNodes, DeleteNodes...) are refused to every client.
    """

    hub_role: Role | None = None

    @property
    def may_write_values(self) -> bool:
        return self.hub_role in (Role.OPERATOR, Role.ADMIN)


class HubUserManager(UserManager):
    """asyncua user manager checking user names and passwords against the settings.

    With ``trust``, it also checks the certificate of the secure channel the session is activated
    on: asyncua validates only the certificate a client names in CreateSession, which need not be
    the one it signs the channel with.
    """

    def __init__(self, settings: OpcUaSettings, trust: ClientCertificateTrust | None = None) -> None:
        self._users = [
            (user.name.encode(), user.password.get_secret_value().encode(), user.role) for user in settings.users
        ]
        self._allow_anonymous_read = settings.allow_anonymous_read
        self._trust = trust

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> HubUser | None:
        """The session's user, or ``None`` to reject the activation with ``BadUserAccessDenied``."""
        if self._trust is not None and certificate and not self._trust.accepts_channel(certificate):
            _LOG.warning("OPC UA session rejected: its secure channel uses an untrusted client certificate")
            return None
        if username is None:
            if self._allow_anonymous_read:
                return HubUser(role=UserRole.User, name=None, hub_role=None)
            _LOG.warning("OPC UA anonymous session rejected")
            return None
        role = self._check(username, password or "")
        if role is None:
            _LOG.warning("OPC UA session rejected: wrong user name or password for %r", username)
            return None
        return HubUser(role=UserRole.User, name=username, hub_role=role)

    def _check(self, username: str, password: str) -> Role | None:
        given_name, given_password = username.encode(), password.encode()
        found: Role | None = None
        for name, secret, role in self._users:
            name_matches = hmac.compare_digest(name, given_name)
            password_matches = hmac.compare_digest(secret, given_password)
            if name_matches and password_matches and found is None:
                found = role
        return found


async def ensure_server_certificate(settings: OpcUaSettings, data_dir: Path) -> tuple[Path, Path]:
    """The server certificate and private key paths: configured, or generated once into ``data_dir/pki``.

    A generated certificate is reused on later starts unless it expired or its URI no longer
    matches ``application_uri``; then it is generated anew (logged).
    """
    if settings.certificate is not None or settings.private_key is not None:
        if settings.certificate is None or settings.private_key is None:
            raise ValueError("opcua.certificate and opcua.private_key must be set together")
        return settings.certificate, settings.private_key
    pki = data_dir / "pki"
    certificate_path, key_path = pki / CERTIFICATE_FILE, pki / PRIVATE_KEY_FILE
    await asyncio.to_thread(_ensure_self_signed, certificate_path, key_path, settings)
    return certificate_path, key_path


def _ensure_self_signed(certificate_path: Path, key_path: Path, settings: OpcUaSettings) -> None:
    generated = ensure_self_signed(
        certificate_path,
        key_path,
        application_uri=settings.application_uri,
        common_name=settings.server_name,
        hosts=[settings.host],
        server=True,
    )
    if generated:
        _LOG.info("generated a self-signed OPC UA server certificate in %s", certificate_path.parent)


class _TrustList(TrustStore):
    """asyncua's trust store, tolerant of unreadable files and empty folders.

    A self-signed certificate in the trust list is trusted as it is (whatever its basic
    constraints); any other certificate needs its issuing CA in the list.
    """

    def __init__(self, trusted: Path, revocation_lists: Path) -> None:
        super().__init__([trusted], [revocation_lists])
        self._fingerprints: frozenset[bytes] = frozenset()

    async def load_trust(self) -> None:
        certificates: list[x509.Certificate] = []
        for location in self.trust_locations:
            certificates.extend(await self._load_trust_location(location))
        self._fingerprints = frozenset(_fingerprint(certificate) for certificate in certificates)
        self._trust_store = x509.verification.Store(certificates) if certificates else None

    async def _load_trust_location(self, location: Path) -> list[x509.Certificate]:
        return await asyncio.to_thread(_read_files, location, load_certificate)

    async def _load_crl_location(self, location: Path) -> list[x509.RevokedCertificate]:
        lists = await asyncio.to_thread(_read_files, location, _load_revocation_list)
        return [revoked for revocation_list in lists for revoked in revocation_list]

    def is_trusted(self, certificate: x509.Certificate) -> bool:
        if _fingerprint(certificate) in self._fingerprints:
            return True
        if self._trust_store is None:
            return False
        verifier = self.policy_builder.store(self._trust_store).build_client_verifier()
        try:
            verifier.verify(certificate, [])
        except x509.verification.VerificationError:
            return False
        return True


class ClientCertificateTrust:
    """Checks OPC UA client application certificates against the trust list (OPC 10000-4 §6.1.3).

    :meth:`validate` is asyncua's certificate validator (called on CreateSession): the certificate
    must be valid now, name the client's ``ApplicationUri`` in its subjectAltName, be trusted and
    not revoked. A certificate refused for not being trusted is written to the rejected folder as
    ``<common name>_<SHA-1 thumbprint>.der``; the trust list is re-read when its folder changes, so
    moving that file into the trusted folder trusts the client at its next connection.
    """

    def __init__(self, settings: OpcUaSettings, data_dir: Path) -> None:
        pki = data_dir / "pki"
        self.trusted_folder = settings.trusted_certificates or pki / "trusted"
        self.rejected_folder = settings.rejected_certificates or pki / "rejected"
        self.revocation_folder = settings.certificate_revocation_lists or pki / "crl"
        self.trust_all = settings.trust_all_client_certificates
        self._trust_list = _TrustList(self.trusted_folder, self.revocation_folder)
        options = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
        if not self.trust_all:
            options |= CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.REVOKED
        self._validator = CertificateValidator(options | CertificateValidatorOptions.PEER_CLIENT, self._trust_list)
        self._loaded_state: object = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Create the folders if missing and read the trust list and the revocation lists."""
        if self.trust_all:
            _LOG.warning(
                "OPC UA accepts every client certificate (trust_all_client_certificates): for demos only; "
                "any client can open a secure channel"
            )
        folders = (self.trusted_folder, self.rejected_folder, self.revocation_folder)
        await asyncio.to_thread(_make_folders, folders)
        await self._reload_if_changed()

    async def validate(self, certificate: x509.Certificate, application: ua.ApplicationDescription) -> None:
        """Raise ``ServiceError`` (``BadCertificateUntrusted``, ``...TimeInvalid``, ``...UriInvalid``...) to refuse."""
        await self._reload_if_changed()
        try:
            await self._validator.validate(certificate, application)
        except ServiceError as error:
            name = status(error.code).name
            if not self.trust_all and not self._trust_list.is_trusted(certificate):
                saved = await asyncio.to_thread(_keep_rejected, self.rejected_folder, certificate)
                _LOG.warning(
                    "OPC UA client certificate %r of %s rejected (%s)%s",
                    _common_name(certificate),
                    application.ApplicationUri,
                    name,
                    f"; kept as {saved}: move it into {self.trusted_folder} to trust it" if saved else "",
                )
            else:
                _LOG.warning(
                    "OPC UA client certificate %r of %s rejected (%s)",
                    _common_name(certificate),
                    application.ApplicationUri,
                    name,
                )
            raise

    def accepts_channel(self, certificate_der: bytes) -> bool:
        """Whether a secure channel's client certificate (DER) is valid now, trusted and not revoked."""
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
        except ValueError:
            return False
        now = datetime.datetime.now(datetime.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return False
        if self.trust_all:
            return True
        return self._trust_list.is_trusted(certificate) and not self._trust_list.is_revoked(certificate)

    async def _reload_if_changed(self) -> None:
        async with self._lock:
            folders = (self.trusted_folder, self.revocation_folder)
            state = await asyncio.to_thread(_folder_state, folders)
            if state != self._loaded_state:
                await self._trust_list.load()
                self._loaded_state = state


def _make_folders(folders: tuple[Path, ...]) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def _folder_state(folders: tuple[Path, ...]) -> object:
    state: list[tuple[str, int, int]] = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_file():
                info = entry.stat()
                state.append((entry.path, info.st_mtime_ns, info.st_size))
    return sorted(state)


def _read_files(folder: Path, load: Any) -> list[Any]:
    loaded: list[Any] = []
    if not folder.is_dir():
        return loaded
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in (".der", ".pem", ".crt", ".cer", ".crl"):
            continue
        try:
            loaded.append(load(path.read_bytes()))
        except (OSError, ValueError) as error:
            _LOG.warning("ignored unreadable file in the OPC UA trust store: %s (%s)", path, error)
    return loaded


def _load_revocation_list(content: bytes) -> x509.CertificateRevocationList:
    if encoding_of(content) == "pem":
        return x509.load_pem_x509_crl(content)
    return x509.load_der_x509_crl(content)


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _keep_rejected(folder: Path, certificate: x509.Certificate) -> Path | None:
    content = certificate.public_bytes(Encoding.DER)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", _common_name(certificate)).strip("-.") or "certificate"
    path = folder / f"{name[:64]}_{hashlib.sha1(content).hexdigest()}.der"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if sum(1 for _ in folder.iterdir()) >= _REJECTED_LIMIT:
        return None
    path.write_bytes(content)
    return path

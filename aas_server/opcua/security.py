"""Secure defaults for the OPC UA server: endpoints, users and the server certificate (OPC 10000-4 §5.6, §6.1).

asyncua's defaults are insecure (a ``NoSecurity`` endpoint, anonymous writes, a user named
``admin`` gets the admin role with any password). This module replaces all three:

* endpoints: ``Sign`` and ``SignAndEncrypt`` for each configured policy; ``None`` only if listed;
* users: username and password checked against the settings in constant time; anonymous sessions
  only with ``allow_anonymous_read`` and then read-only; nobody gets asyncua's admin role, so no
  client can add or delete nodes;
* certificate: the configured one, or a self-signed one generated once into ``<data_dir>/pki/``
  whose URI matches ``application_uri``.

Left out for now: a client certificate trust store (every client certificate is accepted) and
X.509 user identity tokens.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from aas_server.config import OpcUaSettings, Role, SecurityPolicyName

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

_LOG = logging.getLogger(__name__)

CERTIFICATE_FILE = "server_certificate.der"
PRIVATE_KEY_FILE = "server_private_key.pem"
_CERTIFICATE_DAYS = 3650

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
    """asyncua user manager checking user names and passwords against the settings."""

    def __init__(self, settings: OpcUaSettings) -> None:
        self._users = [
            (user.name.encode(), user.password.get_secret_value().encode(), user.role) for user in settings.users
        ]
        self._allow_anonymous_read = settings.allow_anonymous_read

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> HubUser | None:
        """The session's user, or ``None`` to reject the activation with ``BadUserAccessDenied``."""
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
    if certificate_path.is_file() and key_path.is_file():
        certificate = x509.load_der_x509_certificate(certificate_path.read_bytes())
        if certificate_is_usable(certificate, settings.application_uri):
            return
        _LOG.warning(
            "OPC UA server certificate %s is expired or has another URI: generating a new one", certificate_path
        )
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    private_key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(settings.application_uri)]
    for host in dict.fromkeys([socket.gethostname(), "localhost", settings.host]):
        if host and host not in ("0.0.0.0", "::"):
            names.append(x509.DNSName(host))
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key,
        settings.server_name,
        {},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=_CERTIFICATE_DAYS,
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(cert_gen.dump_private_key_as_pem(private_key))
    certificate_path.write_bytes(certificate.public_bytes(Encoding.DER))
    _LOG.info("generated a self-signed OPC UA server certificate in %s", certificate_path.parent)


def certificate_is_usable(certificate: x509.Certificate, application_uri: str) -> bool:
    """Whether a certificate is valid now and names ``application_uri`` in its subjectAltName."""
    now = datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return False
    try:
        alternative_names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return application_uri in alternative_names.value.get_values_for_type(x509.UniformResourceIdentifier)


def encoding_of(content: bytes) -> str:
    """``"pem"`` or ``"der"``, judged by content rather than file name."""
    return "pem" if content.lstrip().startswith(b"-----BEGIN") else "der"

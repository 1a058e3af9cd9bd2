"""OPC UA application instance certificates (OPC 10000-4 §6.1, OPC 10000-6 §6.2.2).

The server's and the client connector's self-signed certificates are generated, reused and
checked the same way: valid now and naming the application URI in their subjectAltName.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

_LOG = logging.getLogger(__name__)

CERTIFICATE_DAYS = 3650


def encoding_of(content: bytes) -> str:
    """``"pem"`` or ``"der"``, judged by content rather than file name."""
    return "pem" if content.lstrip().startswith(b"-----BEGIN") else "der"


def load_certificate(content: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; ``ValueError`` if it is neither."""
    if encoding_of(content) == "pem":
        return x509.load_pem_x509_certificate(content)
    return x509.load_der_x509_certificate(content)


def application_uris(certificate: x509.Certificate) -> list[str]:
    """The URIs in a certificate's subjectAltName (the first is its application URI); none without one."""
    with contextlib.suppress(x509.ExtensionNotFound):
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return list(names.value.get_values_for_type(x509.UniformResourceIdentifier))
    return []


def certificate_is_usable(certificate: x509.Certificate, application_uri: str) -> bool:
    """Whether a certificate is valid now and names ``application_uri`` in its subjectAltName."""
    now = datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return False
    return application_uri in application_uris(certificate)


def ensure_self_signed(
    certificate_path: Path,
    key_path: Path,
    *,
    application_uri: str,
    common_name: str,
    hosts: Iterable[str],
    server: bool,
) -> bool:
    """A self-signed certificate (DER) and its key (PEM, mode 0600) at these paths, generated once.

    An existing pair is kept while it is valid and names ``application_uri``; otherwise a new one
    is generated (logged). ``hosts`` become DNS names beside ``socket.gethostname()`` and
    ``localhost``. A server's certificate may authenticate servers and clients, a client's only
    clients. Returns whether a certificate was generated. Blocking: run in a thread.
    """
    if certificate_path.is_file() and key_path.is_file():
        if certificate_is_usable(x509.load_der_x509_certificate(certificate_path.read_bytes()), application_uri):
            return False
        _LOG.warning("OPC UA certificate %s is expired or has another URI: generating a new one", certificate_path)
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    private_key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in dict.fromkeys([socket.gethostname(), "localhost", *hosts]):
        if host and host not in ("0.0.0.0", "::"):
            names.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key, common_name, {}, names, extended=usages, days=CERTIFICATE_DAYS
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(cert_gen.dump_private_key_as_pem(private_key))
    certificate_path.write_bytes(certificate.public_bytes(Encoding.DER))
    return True

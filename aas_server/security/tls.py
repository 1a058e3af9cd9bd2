"""TLS for the REST API: a server ``ssl.SSLContext`` from PEM files, and a self-signed certificate for the demo.

The context allows TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 §4.1-4.2
recommends 1.2 and 1.3), and on TLS 1.2 only cipher suites with ECDHE key exchange and AEAD
encryption (forward secrecy, RFC 9325 §4.2). Compression and renegotiation are off (OpenSSL and
Python defaults, RFC 9325 §3.3 and §3.5). Certificates and keys are checked when the context is
built, so a wrong file is a ``ConfigurationError`` naming the setting (``rest.tls.private_key: ...``),
not a failure at the first connection.

The self-signed certificate (``rest.tls.self_signed``) is an ECDSA P-256 certificate valid for one
year, whose subject alternative names are the configured REST host, ``localhost``, ``127.0.0.1``
and ``::1`` (and this machine's name when the host is a wildcard address). It is written once to
``<data_dir>/rest-tls/`` (the key readable by its owner only) and reused at every start as long as
it names the host and stays valid for at least ``RENEW_BEFORE``; then it is replaced.

Left out: client certificates (mutual TLS), encrypted private keys, OCSP stapling, reloading a
renewed certificate without a restart, certificates from ACME.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import platform
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aas_server.config import RestTlsSettings
from aas_server.errors import ConfigurationError

_LOG = logging.getLogger(__name__)

CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""OpenSSL cipher list for TLS 1.2: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (TLS 1.3 suites are fixed)."""

SELF_SIGNED_DIRECTORY = "rest-tls"
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
"""A self-signed certificate expiring within this time is replaced at start."""

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate (chain) file and the PEM file of its private key."""

    certificate: Path
    private_key: Path


def server_context(files: CertificateFiles, *, setting: str = "rest.tls") -> ssl.SSLContext:
    """A server-side context for ``files``: TLS 1.2+, ECDHE and AEAD only, no client certificates.

    ``ConfigurationError`` names ``<setting>.certificate`` or ``<setting>.private_key`` when a file
    cannot be read, is not PEM, holds an encrypted key, or the key does not belong to the certificate.
    """
    certificates = _read_certificates(files.certificate, f"{setting}.certificate")
    _read_private_key(files.private_key, f"{setting}.private_key")
    now = datetime.datetime.now(datetime.UTC)
    leaf = certificates[0]
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        _LOG.warning(
            "the REST certificate %s is valid from %s to %s only; clients will refuse it",
            files.certificate,
            leaf.not_valid_before_utc.isoformat(),
            leaf.not_valid_after_utc.isoformat(),
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS_TLS12)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(files.certificate, files.private_key)
    except ssl.SSLError as error:
        raise ConfigurationError(
            f"{files.private_key} does not belong to the certificate in {files.certificate} ({error.reason})",
            f"{setting}.private_key",
        ) from None
    except OSError as error:
        raise ConfigurationError(
            f"cannot read {files.certificate}: {error.strerror}", f"{setting}.certificate"
        ) from None
    return context


def rest_server_context(tls: RestTlsSettings, data_dir: Path, host: str) -> ssl.SSLContext:
    """The REST API's context from its settings; generates (or reuses) the self-signed pair when asked."""
    if tls.self_signed:
        files = self_signed_certificate(data_dir / SELF_SIGNED_DIRECTORY, host)
        _LOG.warning(
            "REST uses a self-signed certificate (%s): for demos only; clients must trust this file explicitly",
            files.certificate,
        )
    else:
        assert tls.certificate is not None  # the settings validator ensures both
        assert tls.private_key is not None
        files = CertificateFiles(tls.certificate, tls.private_key)
    return server_context(files)


def self_signed_certificate(directory: Path, host: str) -> CertificateFiles:
    """``directory/cert.pem`` and ``key.pem``: reused if they name ``host`` and stay valid, created otherwise."""
    files = CertificateFiles(directory / "cert.pem", directory / "key.pem")
    names = _subject_names(host)
    reason = _reuse_problem(files, names)
    if reason is None:
        return files
    if files.certificate.exists():
        _LOG.info("replacing the self-signed REST certificate %s: %s", files.certificate, reason)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, host if host not in _WILDCARD_HOSTS else "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aas-server (self-signed)"),
        ]
    )
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomically(files.private_key, key_pem, mode=0o600)
    _write_atomically(files.certificate, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _LOG.info("created a self-signed REST certificate %s for %s", files.certificate, ", ".join(map(str, names)))
    return files


def _subject_names(host: str) -> list[x509.GeneralName]:
    hosts = [host] if host not in _WILDCARD_HOSTS else [platform.node()]
    names: list[x509.GeneralName] = []
    for name in [*hosts, *_LOOPBACK_NAMES]:
        if not name:
            continue
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            general = x509.DNSName(name)
        if general not in names:
            names.append(general)
    return names


def _reuse_problem(files: CertificateFiles, names: list[x509.GeneralName]) -> str | None:
    """Why the stored self-signed pair cannot be reused, or ``None`` if it can."""
    if not files.certificate.is_file() or not files.private_key.is_file():
        return "not there"
    try:
        certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        key = serialization.load_pem_private_key(files.private_key.read_bytes(), password=None)
        alternative_names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound) as error:
        return f"unreadable ({error})"
    if key.public_key() != certificate.public_key():
        return "the key does not belong to the certificate"
    if certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return f"it expires on {certificate.not_valid_after_utc.isoformat()}"
    missing = [str(name.value) for name in names if name not in alternative_names]
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _read_certificates(path: Path, setting: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}", setting) from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError(f"{path} holds no PEM certificate", setting) from None
    return certificates


def _read_private_key(path: Path, setting: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}", setting) from None
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(f"{path} holds an encrypted private key; give it unencrypted", setting) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigurationError(f"{path} holds no PEM private key", setting) from None


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails; paho 2.x leaves that socket to the garbage collector."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_context(ca_file: Path | None, location: str) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` (else the system's CAs) and its host name.

    For the MQTT brokers the hub connects to (device data and change events).
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"cannot load ca_file {ca_file}: {error}", location) from None
    context.sslsocket_class = _ClosingSSLSocket
    return context

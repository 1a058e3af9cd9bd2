"""Helpers shared by the tests: waiting on conditions, OPC UA client certificates, reference material."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENT_URI = "urn:aas-server:tests:client"


def reference_dir() -> Path:
    """The shared reference material (IDTA templates, Part 2 OpenAPI), from ``AAS_REFERENCE_DIR``."""
    return Path(os.environ.get("AAS_REFERENCE_DIR", ROOT.parent / "shared" / "reference")).resolve()


async def wait_until(condition: Callable[[], bool], within: float = 2.0, what: str = "condition") -> None:
    """Poll ``condition`` on the event loop until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(read: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], within: float = 2.0) -> Any:
    """Call ``read`` until ``check`` accepts its result; return that result or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await read()
        if check(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s; last result: {last!r}")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class ClientCertificate:
    certificate: Path
    private_key: Path


def make_client_certificate(folder: Path) -> ClientCertificate:
    """A self-signed OPC UA client application certificate (DER) and key (PEM) in ``folder``."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    private_key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key,
        "aas-server test client",
        {},
        [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    paths = ClientCertificate(folder / "client.der", folder / "client_key.pem")
    paths.certificate.write_bytes(certificate.public_bytes(Encoding.DER))
    paths.private_key.write_bytes(cert_gen.dump_private_key_as_pem(private_key))
    return paths


def trust_client_certificate(data_dir: Path, certificate: ClientCertificate) -> None:
    """Put a client certificate into the hub's OPC UA trust list, ``<data_dir>/pki/trusted/``."""
    trusted = data_dir / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / "test-client.der").write_bytes(certificate.certificate.read_bytes())


def status_of(data_value: Any) -> int:
    """The numeric status code of an asyncua ``DataValue`` (Good when absent, as OPC UA defines)."""
    return 0 if data_value.StatusCode is None else int(data_value.StatusCode.value)


def value_of(data_value: Any) -> Any:
    """The plain value of an asyncua ``DataValue`` (``None`` when it carries none)."""
    return None if data_value.Value is None else data_value.Value.Value

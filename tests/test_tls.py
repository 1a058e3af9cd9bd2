"""HTTPS for the REST API: the server context, the self-signed demo certificate, settings validation, the hub.

Servers run for real on loopback: the REST application behind aiohttp's ``web.SockSite`` with the
context of ``security.tls``, and a whole ``Hub`` configured with ``rest.tls``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import stat
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from aas_server.api.app import create_app
from aas_server.config import HubSettings, OpcUaSettings, RestSettings, RestTlsSettings, SecuritySettings, load_settings
from aas_server.errors import ConfigurationError
from aas_server.runtime.hub import Hub
from aas_server.security.tls import CertificateFiles, rest_server_context, self_signed_certificate, server_context
from aas_server.store.twin_store import TwinStore

SHELLS = "/api/v3.0/shells"
REFUSED_HANDSHAKE = (ssl.SSLError, ConnectionResetError)
"""How a client sees the server hang up on its ClientHello (an alert, or a reset right after it)."""


@asynccontextmanager
async def rest_over_tls(context: ssl.SSLContext) -> AsyncIterator[int]:
    """The REST application on a loopback port with ``context``; yields the port."""
    runner = web.AppRunner(create_app(TwinStore()), access_log=None)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, listener, ssl_context=context).start()
        yield listener.getsockname()[1]
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def demo_certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return self_signed_certificate(tmp_path_factory.mktemp("rest-tls"), "127.0.0.1")


def trusting(files: CertificateFiles) -> ssl.SSLContext:
    """A client context that trusts exactly the hub's certificate, with Python's default checks."""
    return ssl.create_default_context(cafile=str(files.certificate))


def client_speaking_only(version: ssl.TLSVersion, files: CertificateFiles) -> ssl.SSLContext:
    """A client context that offers one protocol version only (old ones allowed by its security level)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(files.certificate)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # setting TLS 1.1 is deprecated: that is the point
        context.minimum_version = version
        context.maximum_version = version
    return context


async def handshake(port: int, context: ssl.SSLContext) -> str:
    """The protocol version a TLS handshake with the server agrees on."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return str(ssl_object.version())
    finally:
        writer.close()


# --- the REST application over TLS ----------------------------------------------------------------


async def test_a_client_trusting_the_certificate_is_served_over_https(demo_certificate: CertificateFiles) -> None:
    async with rest_over_tls(server_context(demo_certificate)) as port, aiohttp.ClientSession() as http:
        for host in ("127.0.0.1", "localhost"):
            async with http.get(f"https://{host}:{port}{SHELLS}", ssl=trusting(demo_certificate)) as response:
                assert response.status == 200
                assert (await response.json())["result"] == []
        # Without trusting it, the certificate is refused by the client: nothing is served silently.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"https://127.0.0.1:{port}{SHELLS}")


async def test_plain_http_to_the_tls_port_gets_no_answer(demo_certificate: CertificateFiles) -> None:
    async with rest_over_tls(server_context(demo_certificate)) as port, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}{SHELLS}") as response:
                pytest.fail(f"plain HTTP was answered with {response.status}")
        # The server keeps serving HTTPS afterwards.
        async with http.get(f"https://127.0.0.1:{port}{SHELLS}", ssl=trusting(demo_certificate)) as response:
            assert response.status == 200


async def test_tls_1_2_and_1_3_are_accepted_and_1_1_is_refused(demo_certificate: CertificateFiles) -> None:
    old = client_speaking_only(ssl.TLSVersion.TLSv1_1, demo_certificate)

    # Control: this client really speaks TLS 1.1 to a server that allows it.
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lenient.minimum_version = ssl.TLSVersion.TLSv1_1
    lenient.load_cert_chain(demo_certificate.certificate, demo_certificate.private_key)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    control = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=lenient)
    try:
        assert await handshake(control.sockets[0].getsockname()[1], old) == "TLSv1.1"
    finally:
        control.close()
        await control.wait_closed()

    async with rest_over_tls(server_context(demo_certificate)) as port:
        with pytest.raises(REFUSED_HANDSHAKE):
            await handshake(port, old)
        assert await handshake(port, client_speaking_only(ssl.TLSVersion.TLSv1_2, demo_certificate)) == "TLSv1.2"
        assert await handshake(port, client_speaking_only(ssl.TLSVersion.TLSv1_3, demo_certificate)) == "TLSv1.3"


async def test_tls_1_2_offers_only_forward_secret_aead_cipher_suites(demo_certificate: CertificateFiles) -> None:
    context = client_speaking_only(ssl.TLSVersion.TLSv1_2, demo_certificate)
    context.set_ciphers("AES128-SHA:AES256-GCM-SHA384:DHE-RSA-AES128-SHA")  # static RSA, CBC, DHE: none acceptable
    async with rest_over_tls(server_context(demo_certificate)) as port:
        with pytest.raises(REFUSED_HANDSHAKE):
            await handshake(port, context)
        good = client_speaking_only(ssl.TLSVersion.TLSv1_2, demo_certificate)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=good)
        cipher = writer.get_extra_info("cipher")
        writer.close()
        assert cipher[0].startswith("ECDHE-"), cipher
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0], cipher


# --- the self-signed demo certificate -------------------------------------------------------------


def test_the_self_signed_certificate_is_made_once_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "rest-tls"
    first = self_signed_certificate(directory, "hub.example.net")
    certificate_bytes, key_bytes = first.certificate.read_bytes(), first.private_key.read_bytes()
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600

    certificate = x509.load_pem_x509_certificate(certificate_bytes)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"hub.example.net", "localhost"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }

    again = self_signed_certificate(directory, "hub.example.net")
    assert again == first
    assert (again.certificate.read_bytes(), again.private_key.read_bytes()) == (certificate_bytes, key_bytes)

    # Another host name is not covered: a new certificate that names it replaces the old one.
    moved = self_signed_certificate(directory, "10.0.0.7")
    replaced = x509.load_pem_x509_certificate(moved.certificate.read_bytes())
    assert replaced.serial_number != certificate.serial_number
    moved_names = replaced.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.7") in moved_names.get_values_for_type(x509.IPAddress)


def test_a_damaged_self_signed_pair_is_replaced(tmp_path: Path) -> None:
    files = self_signed_certificate(tmp_path, "127.0.0.1")
    files.private_key.write_text("not a key")
    replaced = self_signed_certificate(tmp_path, "127.0.0.1")
    server_context(replaced)  # loads: the new key belongs to the new certificate


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("{certificate: cert.pem}", "rest.tls: .*private_key is missing"),
        ("{private_key: key.pem}", "rest.tls: .*certificate is missing"),
        ("{}", "rest.tls: .*give certificate and private_key, or self_signed: true"),
        ("{self_signed: true, certificate: cert.pem, private_key: key.pem}", "rest.tls: .*not both"),
        ("{self_signed: yes, ciphers: weak}", "rest.tls.ciphers: Extra inputs are not permitted"),
    ],
)
def test_incomplete_tls_settings_are_refused_naming_the_field(tmp_path: Path, tls: str, message: str) -> None:
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text(f"rest:\n  tls: {tls}\n")
    with pytest.raises(ConfigurationError, match=message):
        load_settings(settings_file)


def test_certificate_paths_are_relative_to_the_settings_file(tmp_path: Path) -> None:
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text("rest:\n  tls: {certificate: tls/cert.pem, private_key: tls/key.pem}\n")
    tls = load_settings(settings_file).rest.tls
    assert tls is not None
    assert (tls.certificate, tls.private_key) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")


def test_unusable_certificate_files_are_configuration_errors_naming_the_field(
    tmp_path: Path, demo_certificate: CertificateFiles
) -> None:
    other = self_signed_certificate(tmp_path / "other", "127.0.0.1")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    cases = [
        (CertificateFiles(tmp_path / "missing.pem", demo_certificate.private_key), "rest.tls.certificate: cannot read"),
        (CertificateFiles(demo_certificate.certificate, tmp_path / "missing.pem"), "rest.tls.private_key: cannot read"),
        (CertificateFiles(garbage, demo_certificate.private_key), "rest.tls.certificate: .* no PEM certificate"),
        (CertificateFiles(demo_certificate.certificate, garbage), "rest.tls.private_key: .* no PEM private key"),
        (CertificateFiles(demo_certificate.certificate, other.private_key), "rest.tls.private_key: .* does not belong"),
    ]
    for files, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            server_context(files)
        settings = RestTlsSettings(certificate=files.certificate, private_key=files.private_key)
        with pytest.raises(ConfigurationError, match=message):
            rest_server_context(settings, tmp_path, "127.0.0.1")


# --- the hub --------------------------------------------------------------------------------------


def hub_settings(data_dir: Path, tls: RestTlsSettings) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0, tls=tls),
        opcua=OpcUaSettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


async def test_the_hub_serves_rest_over_https_with_its_self_signed_certificate_across_restarts(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, RestTlsSettings(self_signed=True))
    certificate = tmp_path / "rest-tls" / "cert.pem"
    first_certificate = b""
    for start in range(2):
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.rest_url is not None
            assert hub.rest_url.startswith("https://127.0.0.1:")
            if start == 0:
                first_certificate = certificate.read_bytes()
            else:
                assert certificate.read_bytes() == first_certificate, "the certificate is reused, not made again"
            context = ssl.create_default_context(cafile=str(certificate))
            async with http.get(f"{hub.rest_url}/shells", ssl=context) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(hub.rest_url.replace("https://", "http://") + "/shells") as response:
                    pytest.fail(f"plain HTTP was answered with {response.status}")


async def test_the_hub_refuses_to_start_with_a_key_that_does_not_fit(
    tmp_path: Path, demo_certificate: CertificateFiles
) -> None:
    other = self_signed_certificate(tmp_path / "other", "127.0.0.1")
    tls = RestTlsSettings(certificate=demo_certificate.certificate, private_key=other.private_key)
    with pytest.raises(ConfigurationError, match=r"rest\.tls\.private_key"):
        async with Hub(hub_settings(tmp_path / "data", tls)):
            pytest.fail("the hub started with a private key of another certificate")

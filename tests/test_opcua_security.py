"""OPC UA security over the wire: endpoints, users and roles, and the client certificate trust list."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClient
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import (
    SecurityPolicy,
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
    SecurityPolicyNone,
)
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from aas_server.config import OpcUaSettings, Role, SecurityPolicyName, UserSettings
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.store.twin_store import TwinStore
from tests.support import (
    CLIENT_URI,
    ClientCertificate,
    eventually,
    make_client_certificate,
    trust_client_certificate,
)

SUBMODEL_ID = "urn:aas-server:tests:sm:security"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
ADMIN = UserSettings(name="admin", password=SecretStr("admin-secret"), role=Role.ADMIN)
ANONYMOUS = None

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLICIES: dict[str, type[SecurityPolicy]] = {
    "Basic256Sha256": SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": SecurityPolicyAes256Sha256RsaPss,
}


def _store() -> TwinStore:
    store = TwinStore()
    store.add(model.Submodel(SUBMODEL_ID, id_short="Security", submodel_element=[model.Property("Level", float, 4.5)]))
    return store


def _settings(**changes: Any) -> OpcUaSettings:
    return OpcUaSettings(port=0, users=[OPERATOR, VIEWER, ADMIN]).model_copy(update=changes)


def _level(client: Client, projection: OpcUaProjection) -> Any:
    identifier = node_id_for(SUBMODEL_ID, "Level")
    return client.get_node(ua.NodeId(cast(Any, identifier), cast(Any, projection.namespace_index)))


@asynccontextmanager
async def _session(
    projection: OpcUaProjection,
    certificate: ClientCertificate,
    user: UserSettings | None,
    *,
    password: str | None = None,
    policy: type[SecurityPolicy] = SecurityPolicyBasic256Sha256,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
    application_uri: str = CLIENT_URI,
) -> AsyncIterator[Client]:
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = application_uri
    await client.set_security(policy, str(certificate.certificate), str(certificate.private_key), mode=mode)
    if user is not None:
        client.set_user(user.name)
        client.set_password(password if password is not None else user.password.get_secret_value())
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


def _certificate(folder: Path, *, not_before: datetime, not_after: datetime) -> ClientCertificate:
    """A self-signed client certificate with the given validity (``make_client_certificate`` is valid now)."""
    folder.mkdir(parents=True, exist_ok=True)
    private_key = cert_gen.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aas-server expired test client")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName(socket.gethostname())]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    paths = ClientCertificate(folder / "client.der", folder / "client_key.pem")
    paths.certificate.write_bytes(certificate.public_bytes(Encoding.DER))
    paths.private_key.write_bytes(cert_gen.dump_private_key_as_pem(private_key))
    return paths


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate) -> Path:
    """One data directory for the module (the server certificate is generated once) trusting the test client."""
    directory = tmp_path_factory.mktemp("hub-security")
    trust_client_certificate(directory, opcua_client_certificate)
    return directory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def projection(data_dir: Path) -> AsyncIterator[OpcUaProjection]:
    """One server for the module: asyncua takes about two seconds to start."""
    async with OpcUaProjection(_store(), _settings(allow_anonymous_read=True), data_dir) as running:
        yield running


async def test_anonymous_sessions_read_but_may_not_write(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection, opcua_client_certificate, ANONYMOUS) as client:
        level = _level(client, projection)
        assert await level.read_value() == 4.5
        with pytest.raises(UaStatusCodeError) as denied:
            await level.write_value(ua.DataValue(ua.Variant(5.0, ua.VariantType.Double)))
        assert denied.value.code == StatusCodes.BadUserAccessDenied
        assert await level.read_value() == 4.5


async def test_wrong_passwords_are_rejected_also_for_a_user_named_admin(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    for user, password in [(OPERATOR, "operator-secreT"), (ADMIN, "guess"), (ADMIN, ""), (VIEWER, "admin-secret")]:
        with pytest.raises(UaStatusCodeError) as rejected:
            async with _session(projection, opcua_client_certificate, user, password=password):
                pass
        assert rejected.value.code == StatusCodes.BadUserAccessDenied, (user.name, password)
    async with _session(projection, opcua_client_certificate, OPERATOR) as client:
        level = _level(client, projection)
        await level.write_value(ua.DataValue(ua.Variant(6.0, ua.VariantType.Double)))
        await eventually(level.read_value, lambda value: value == 6.0)
        await level.write_value(ua.DataValue(ua.Variant(4.5, ua.VariantType.Double)))
        await eventually(level.read_value, lambda value: value == 4.5)


async def test_no_none_endpoint_unless_configured(projection: OpcUaProjection) -> None:
    endpoints = await Client(projection.endpoint_url).connect_and_get_server_endpoints()
    offered = {(endpoint.SecurityPolicyUri.rsplit("#", 1)[-1], endpoint.SecurityMode) for endpoint in endpoints}
    assert offered == {
        (policy, mode)
        for policy in POLICIES
        for mode in (ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt)
    }
    client = Client(projection.endpoint_url, timeout=5)
    with pytest.raises(UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == StatusCodes.BadSecurityPolicyRejected


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("mode", [ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt])
async def test_each_policy_connects_with_a_trusted_certificate(
    projection: OpcUaProjection,
    opcua_client_certificate: ClientCertificate,
    policy_name: str,
    mode: ua.MessageSecurityMode,
) -> None:
    async with _session(
        projection, opcua_client_certificate, VIEWER, policy=POLICIES[policy_name], mode=mode
    ) as client:
        assert client.security_policy.URI.endswith(policy_name)
        assert client.security_policy.Mode == mode
        assert await _level(client, projection).read_value() == 4.5


async def test_an_untrusted_certificate_is_rejected_kept_and_trusted_once_moved(
    projection: OpcUaProjection, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = make_client_certificate(tmp_path)
    rejected_folder, trusted_folder = data_dir / "pki" / "rejected", data_dir / "pki" / "trusted"
    with caplog.at_level(logging.WARNING, logger="aas_server.opcua"), pytest.raises(UaStatusCodeError) as untrusted:
        async with _session(projection, stranger, OPERATOR):
            pass
    assert untrusted.value.code == StatusCodes.BadCertificateUntrusted
    kept = [path for path in rejected_folder.iterdir() if path.read_bytes() == stranger.certificate.read_bytes()]
    assert len(kept) == 1
    assert any("move it into" in record.getMessage() for record in caplog.records)

    kept[0].rename(trusted_folder / kept[0].name)
    async with _session(projection, stranger, OPERATOR) as client:
        assert await _level(client, projection).read_value() == 4.5
    (trusted_folder / kept[0].name).unlink()
    with pytest.raises(UaStatusCodeError) as untrusted_again:
        async with _session(projection, stranger, OPERATOR):
            pass
    assert untrusted_again.value.code == StatusCodes.BadCertificateUntrusted


async def test_expired_certificates_and_foreign_application_uris_are_rejected(
    projection: OpcUaProjection, data_dir: Path, tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    now = datetime.now(UTC)
    expired = _certificate(tmp_path, not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    trusted_copy = data_dir / "pki" / "trusted" / "expired.der"
    trusted_copy.write_bytes(expired.certificate.read_bytes())
    try:
        with pytest.raises(UaStatusCodeError) as too_late:
            async with _session(projection, expired, VIEWER):
                pass
        assert too_late.value.code == StatusCodes.BadCertificateTimeInvalid
    finally:
        trusted_copy.unlink()
    with pytest.raises(UaStatusCodeError) as foreign:
        async with _session(projection, opcua_client_certificate, VIEWER, application_uri="urn:someone:else"):
            pass
    assert foreign.value.code == StatusCodes.BadCertificateUriInvalid


async def test_a_channel_signed_with_an_untrusted_certificate_cannot_borrow_a_trusted_one(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    stranger = make_client_certificate(tmp_path)
    trusted_certificate = opcua_client_certificate.certificate.read_bytes()
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(stranger.certificate),
        str(stranger.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(OPERATOR.name)
    client.set_password(OPERATOR.password.get_secret_value())
    create_session = client.uaclient.create_session

    async def create_session_naming_the_trusted_certificate(parameters: ua.CreateSessionParameters) -> Any:
        parameters.ClientCertificate = trusted_certificate
        return await create_session(parameters)

    client.uaclient.create_session = create_session_naming_the_trusted_certificate  # type: ignore[method-assign]
    with pytest.raises(UaStatusCodeError) as denied:
        await client.connect()
    assert denied.value.code == StatusCodes.BadUserAccessDenied


async def test_trust_all_is_warned_and_accepts_an_unknown_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = make_client_certificate(tmp_path)
    settings = _settings(trust_all_client_certificates=True)
    with caplog.at_level(logging.WARNING, logger="aas_server.opcua"):
        async with (
            OpcUaProjection(_store(), settings, tmp_path / "data") as projection,
            _session(projection, stranger, VIEWER) as client,
        ):
            assert await _level(client, projection).read_value() == 4.5
    assert any("trust_all_client_certificates" in record.getMessage() for record in caplog.records)
    assert list((tmp_path / "data" / "pki" / "rejected").iterdir()) == []


async def _raw_none_channel(projection: OpcUaProjection, certificate: ClientCertificate | None) -> UaClient:
    """A secure channel with SecurityPolicy None opened by hand (no endpoint offers it), maybe sending a certificate."""
    address = urlparse(projection.endpoint_url)
    assert address.hostname is not None
    assert address.port is not None
    client = UaClient(timeout=5)
    if certificate is not None:
        host_certificate = x509.load_der_x509_certificate(certificate.certificate.read_bytes())
        client.set_security(SecurityPolicyNone(host_cert=host_certificate))  # type: ignore[no-untyped-call]
    await client.connect_socket(address.hostname, address.port)
    await client.send_hello(projection.endpoint_url)
    parameters = ua.OpenSecureChannelParameters()
    parameters.RequestType = ua.SecurityTokenRequestType.Issue
    parameters.SecurityMode = ua.MessageSecurityMode.None_
    parameters.RequestedLifetime = 600_000
    parameters.ClientNonce = b""
    await client.open_secure_channel(parameters)
    return client


def _session_parameters(
    projection: OpcUaProjection, certificate: ClientCertificate | None
) -> ua.CreateSessionParameters:
    parameters = ua.CreateSessionParameters()
    parameters.ClientDescription = ua.ApplicationDescription(
        ApplicationUri=CLIENT_URI, ApplicationType=ua.ApplicationType.Client
    )
    parameters.EndpointUrl = projection.endpoint_url
    parameters.SessionName = "raw none channel"
    parameters.ClientNonce = bytes(32)
    parameters.ClientCertificate = certificate.certificate.read_bytes() if certificate is not None else None
    parameters.RequestedSessionTimeout = 60_000
    return parameters


def _activation(user: UserSettings | None) -> ua.ActivateSessionParameters:
    parameters = ua.ActivateSessionParameters()
    if user is None:
        parameters.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId="anonymous")
    else:
        parameters.UserIdentityToken = ua.UserNameIdentityToken(
            PolicyId="username", UserName=user.name, Password=user.password.get_secret_value().encode()
        )
    return parameters


def _write_level(projection: OpcUaProjection, value: float) -> ua.WriteParameters:
    item = ua.WriteValue()
    item.NodeId = ua.NodeId(cast(Any, node_id_for(SUBMODEL_ID, "Level")), cast(Any, projection.namespace_index))
    item.AttributeId = ua.AttributeIds.Value
    item.Value = ua.DataValue(ua.Variant(value, ua.VariantType.Double))
    return ua.WriteParameters(NodesToWrite=[item])


@pytest.mark.parametrize("with_certificate", [False, True], ids=["no-certificate", "certificate"])
async def test_a_none_channel_may_only_discover(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate, with_certificate: bool
) -> None:
    certificate = opcua_client_certificate if with_certificate else None
    client = await _raw_none_channel(projection, certificate)
    try:
        endpoints = await client.get_endpoints(ua.GetEndpointsParameters(EndpointUrl=projection.endpoint_url))
        assert endpoints
        assert all(endpoint.SecurityMode != ua.MessageSecurityMode.None_ for endpoint in endpoints)
        assert await client.find_servers(ua.FindServersParameters(EndpointUrl=projection.endpoint_url))
        with pytest.raises(UaStatusCodeError) as no_session:
            await client.create_session(_session_parameters(projection, certificate))
        assert no_session.value.code == StatusCodes.BadSecurityPolicyRejected
        for user in (ANONYMOUS, OPERATOR):
            with pytest.raises(UaStatusCodeError) as no_activation:
                await client.activate_session(_activation(user))
            assert no_activation.value.code == StatusCodes.BadSecurityPolicyRejected
        with pytest.raises(UaStatusCodeError) as no_write:
            await client.write(_write_level(projection, 99.0))
        assert no_write.value.code == StatusCodes.BadSecurityPolicyRejected
        level = ua.ReadValueId(
            NodeId=_write_level(projection, 0).NodesToWrite[0].NodeId, AttributeId=ua.AttributeIds.Value
        )
        with pytest.raises(UaStatusCodeError) as no_read:
            await client.read(ua.ReadParameters(NodesToRead=[level]))
        assert no_read.value.code == StatusCodes.BadSecurityPolicyRejected
    finally:
        await client.close_secure_channel()
        client.disconnect_socket()
    async with _session(projection, opcua_client_certificate, VIEWER) as checker:
        assert await _level(checker, projection).read_value() == 4.5


async def test_a_password_is_never_accepted_unencrypted_over_a_sign_channel(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(opcua_client_certificate.certificate),
        str(opcua_client_certificate.private_key),
        mode=ua.MessageSecurityMode.Sign,
    )
    client.set_user(OPERATOR.name)
    client.set_password(OPERATOR.password.get_secret_value())

    def add_plaintext_password(
        parameters: ua.ActivateSessionParameters, username: str | None, password: str | None
    ) -> None:
        parameters.UserIdentityToken = ua.UserNameIdentityToken(
            PolicyId="username", UserName=username, Password=(password or "").encode()
        )

    client._add_user_auth = add_plaintext_password  # type: ignore[method-assign,assignment]
    with pytest.raises(UaStatusCodeError) as rejected:
        await client.connect()
    assert rejected.value.code == StatusCodes.BadIdentityTokenRejected


async def test_a_password_encrypted_with_rsa15_is_refused(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(opcua_client_certificate.certificate),
        str(opcua_client_certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(OPERATOR.name)
    client.set_password(OPERATOR.password.get_secret_value())

    def add_rsa15_password(
        parameters: ua.ActivateSessionParameters, username: str | None, password: str | None
    ) -> None:
        server_certificate = client.security_policy.peer_certificate
        assert server_certificate is not None
        server_key = x509.load_der_x509_certificate(server_certificate).public_key()
        assert isinstance(server_key, rsa.RSAPublicKey)
        secret = ua.ua_binary.Primitives.Bytes.pack((password or "").encode() + (client._server_nonce or b""))
        parameters.UserIdentityToken = ua.UserNameIdentityToken(
            PolicyId="username",
            UserName=username,
            Password=server_key.encrypt(secret, padding.PKCS1v15()),
            EncryptionAlgorithm="http://www.w3.org/2001/04/xmlenc#rsa-1_5",
        )

    client._add_user_auth = add_rsa15_password  # type: ignore[method-assign,assignment]
    with pytest.raises(UaStatusCodeError) as rejected:
        await client.connect()
    assert rejected.value.code == StatusCodes.BadIdentityTokenRejected


async def test_with_a_none_endpoint_configured_a_none_channel_works_and_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(security_policies=[SecurityPolicyName.NONE, SecurityPolicyName.BASIC256SHA256])
    with caplog.at_level(logging.WARNING, logger="aas_server.opcua"):
        async with OpcUaProjection(_store(), settings, tmp_path / "data") as projection:
            client = await _raw_none_channel(projection, None)
            try:
                await client.create_session(_session_parameters(projection, None))
                await client.activate_session(_activation(OPERATOR))
                assert (await client.write(_write_level(projection, 7.5)))[0].is_good()
            finally:
                await client.close_session(True)
                await client.close_secure_channel()
                client.disconnect_socket()
    assert any("security policy None is enabled" in record.getMessage() for record in caplog.records)

"""The OPC UA projection over the wire: a real asyncua server and client on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from basyx.aas.model import datatypes
from cryptography import x509
from pydantic import SecretStr

from aas_server.config import OpcUaSettings, Role, SecurityPolicyName, UserSettings
from aas_server.errors import (
    AccessDeniedError,
    DeviceError,
    DeviceTimeoutError,
    NotFoundError,
    NotWritableError,
    TypeMismatchError,
)
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.model.units import lookup_unit
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.projection import UNECE_UNITS_NAMESPACE, VariableNode, plan_address_space
from aas_server.opcua_common.status import status_code_for, status_code_for_error
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import CLIENT_URI, ClientCertificate, eventually, trust_client_certificate, wait_until

SUBMODEL_ID = "https://example.com/ids/sm/line1/operational"
SHELL_ID = "https://example.com/ids/aas/machine1"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
ADMIN = UserSettings(name="admin", password=SecretStr("admin-secret"), role=Role.ADMIN)


def _value(data_value: ua.DataValue) -> Any:
    assert data_value.Value is not None
    return data_value.Value.Value


def _status(data_value: ua.DataValue) -> int:
    assert data_value.StatusCode is not None
    return int(data_value.StatusCode.value)


def _node_id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


class _Recorder:
    """A device write handler that records what it was asked to write, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.values: list[Any] = []
        self.error = error

    async def __call__(self, value: Any) -> None:
        if self.error is not None:
            raise self.error
        self.values.append(value)


@dataclass
class _Twin:
    store: TwinStore
    temperature_device: _Recorder = field(default_factory=_Recorder)
    setpoint_device: _Recorder = field(default_factory=lambda: _Recorder(DeviceError("unreachable", "test")))


def _semantic_id(iri: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, iri),))


def _twin() -> _Twin:
    submodel = model.Submodel(
        SUBMODEL_ID,
        id_short="Operational",
        semantic_id=_semantic_id("https://example.com/sm/operational/1/0"),
        submodel_element=[
            model.Property("Temperature", float, 20.0, semantic_id=_semantic_id("0173-1#02-AAV232#002")),
            model.Property("Setpoint", float, 5.0),
            model.Property("Pressure", float, 1.0),
            model.Property("Count", datatypes.Int, 3),
            model.SubmodelElementCollection("Motor", value=[model.Property("Speed", float, 1500.0)]),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="https://example.com/assets/machine1"),
        SHELL_ID,
        id_short="Machine1",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    store = TwinStore()
    store.add_all([submodel, shell])
    twin = _Twin(store)
    store.bind(
        SUBMODEL_ID,
        "Temperature",
        ElementBinding("device:test", writable=True, unit=lookup_unit("CEL")),
        twin.temperature_device,
    )
    store.bind(SUBMODEL_ID, "Setpoint", ElementBinding("device:test", writable=True), twin.setpoint_device)
    store.bind(SUBMODEL_ID, "Pressure", ElementBinding("device:test", writable=False, unit=lookup_unit("BAR")))
    return twin


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate) -> Path:
    """Shared by the servers of this module, so the server certificate is generated once; trusts the client."""
    directory = tmp_path_factory.mktemp("hub-data")
    trust_client_certificate(directory, opcua_client_certificate)
    return directory


def _settings(**changes: Any) -> OpcUaSettings:
    return OpcUaSettings(port=0, users=[OPERATOR, VIEWER, ADMIN]).model_copy(update=changes)


@pytest.fixture
def twin() -> _Twin:
    return _twin()


@pytest.fixture
async def projection(twin: _Twin, data_dir: Path) -> AsyncIterator[OpcUaProjection]:
    async with OpcUaProjection(twin.store, _settings(), data_dir) as running:
        yield running


@asynccontextmanager
async def _session(
    url: str,
    certificate: ClientCertificate | None,
    user: UserSettings | None,
    password: str | None = None,
) -> AsyncIterator[Client]:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_URI
    if certificate is not None:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(certificate.certificate),
            str(certificate.private_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    if user is not None:
        client.set_user(user.name)
        client.set_password(password if password is not None else user.password.get_secret_value())
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


def _node(client: Client, projection: OpcUaProjection, id_short_path: str) -> Node:
    return client.get_node(_node_id(node_id_for(SUBMODEL_ID, id_short_path), projection.namespace_index))


class _DataChanges:
    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.values.append(data.monitored_item.Value)


async def test_browse_and_read_typed_values_with_engineering_units(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        ns = projection.namespace_index
        types = projection.types_namespace_index
        environment = await client.nodes.objects.get_child(f"{ns}:AASEnvironment")
        submodel = await environment.get_child([ua.QualifiedName("Submodels", ns), ua.QualifiedName(SUBMODEL_ID, ns)])
        assert (await submodel.read_display_name()) == ua.LocalizedText("Operational", "en")
        assert await (await submodel.get_child(f"{types}:Id")).read_value() == SUBMODEL_ID
        assert (
            await (await submodel.get_child(f"{types}:SemanticId")).read_value()
            == "https://example.com/sm/operational/1/0"
        )
        temperature = await submodel.get_child(f"{ns}:Temperature")
        assert await temperature.read_data_type_as_variant_type() == ua.VariantType.Double
        initial = await temperature.read_data_value(raise_on_bad_status=False)
        assert _value(initial) == 20.0
        assert _status(initial) == StatusCodes.UncertainInitialValue
        units = await (await temperature.get_child("0:EngineeringUnits")).read_value()
        assert units.NamespaceUri == UNECE_UNITS_NAMESPACE
        assert units.UnitId == lookup_unit("CEL").unit_id
        assert units.DisplayName.Text == "°C"
        assert (await temperature.read_type_definition()) == _node_id(ObjectIds.AnalogUnitType)
        assert await (await temperature.get_child(f"{types}:SemanticId")).read_value() == "0173-1#02-AAV232#002"
        speed = _node(client, projection, "Motor.Speed")
        assert await speed.read_value() == 1500.0
        count = _node(client, projection, "Count")
        assert await count.read_data_type_as_variant_type() == ua.VariantType.Int32
        assert await count.read_value() == 3

        shell = await environment.get_child([ua.QualifiedName("Shells", ns), ua.QualifiedName(SHELL_ID, ns)])
        assert (await shell.read_display_name()).Text == "Machine1"
        assert await (await shell.get_child(f"{types}:Id")).read_value() == SHELL_ID
        organized = await shell.get_referenced_nodes(ObjectIds.Organizes)
        assert submodel.nodeid in [node.nodeid for node in organized]

        read_only = await _node(client, projection, "Pressure").read_attribute(AttributeIds.AccessLevel)
        writable = await temperature.read_attribute(AttributeIds.AccessLevel)
        assert _value(read_only) == ua.AccessLevel.CurrentRead.mask
        assert _value(writable) == ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask


async def test_store_changes_reach_a_subscription_with_source_time_and_status(
    projection: OpcUaProjection, twin: _Twin, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        changes = _DataChanges()
        subscription = await client.create_subscription(20, changes)
        await subscription.subscribe_data_change(_node(client, projection, "Temperature"))
        await wait_until(lambda: len(changes.values) == 1, what="the initial notification")
        initial = changes.values[0]
        assert _status(initial) == StatusCodes.UncertainInitialValue
        assert _value(initial) == 20.0

        source_time = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
        twin.store.apply(ValueChanged(SUBMODEL_ID, "Temperature", 23.5, source_time, origin="device:test"))
        await wait_until(lambda: len(changes.values) == 2, within=1.0, what="the good value")
        good = changes.values[1]
        assert _value(good) == 23.5
        assert _status(good) == StatusCodes.Good
        assert good.SourceTimestamp == source_time

        outage_time = source_time + timedelta(seconds=5)
        twin.store.apply(
            ValueChanged(
                SUBMODEL_ID,
                "Temperature",
                None,
                outage_time,
                Quality.BAD,
                QualityReason.NO_COMMUNICATION,
                origin="device:test",
            )
        )
        await wait_until(lambda: len(changes.values) == 3, within=1.0, what="the outage")
        outage = changes.values[2]
        assert _status(outage) == StatusCodes.BadNoCommunication
        assert outage.SourceTimestamp == outage_time
        state = twin.store.state(SUBMODEL_ID, "Temperature")
        assert state is not None
        assert state.value == 23.5
        read_back = await _node(client, projection, "Temperature").read_data_value(raise_on_bad_status=False)
        assert _status(read_back) == StatusCodes.BadNoCommunication
        await subscription.delete()


async def test_operator_writes_go_through_the_store_and_the_device(
    projection: OpcUaProjection, twin: _Twin, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, OPERATOR) as client:
        temperature = _node(client, projection, "Temperature")
        await temperature.write_value(ua.DataValue(ua.Variant(42.5, ua.VariantType.Double)))
        assert twin.temperature_device.values == [42.5]
        state = twin.store.state(SUBMODEL_ID, "Temperature")
        assert state is not None
        assert (state.value, state.quality) == (42.5, Quality.GOOD)
        await eventually(temperature.read_value, lambda value: value == 42.5)

        with pytest.raises(UaStatusCodeError) as mismatch:
            await temperature.write_value(ua.DataValue(ua.Variant("43.0", ua.VariantType.String)))
        assert mismatch.value.code == StatusCodes.BadTypeMismatch
        assert twin.temperature_device.values == [42.5]
        assert twin.store.state(SUBMODEL_ID, "Temperature") == state

        with pytest.raises(UaStatusCodeError) as unreachable:
            await _node(client, projection, "Setpoint").write_value(
                ua.DataValue(ua.Variant(7.0, ua.VariantType.Double))
            )
        assert unreachable.value.code == StatusCodes.BadNoCommunication
        setpoint = twin.store.state(SUBMODEL_ID, "Setpoint")
        assert setpoint is not None
        assert setpoint.value == 5.0

        with pytest.raises(UaStatusCodeError) as read_only:
            await _node(client, projection, "Pressure").write_value(
                ua.DataValue(ua.Variant(2.0, ua.VariantType.Double))
            )
        assert read_only.value.code == StatusCodes.BadNotWritable

        count = _node(client, projection, "Count")
        await count.write_value(ua.DataValue(ua.Variant(7, ua.VariantType.Int32)))
        count_state = twin.store.state(SUBMODEL_ID, "Count")
        assert count_state is not None
        assert count_state.value == 7
        with pytest.raises(UaStatusCodeError) as wrong_width:
            await count.write_value(ua.DataValue(ua.Variant(8, ua.VariantType.Int64)))
        assert wrong_width.value.code == StatusCodes.BadTypeMismatch

        submodel_id_node = client.get_node(_node_id(f"{SUBMODEL_ID}/$submodel.Id", projection.namespace_index))
        with pytest.raises(UaStatusCodeError) as metadata:
            await submodel_id_node.write_value(ua.DataValue(ua.Variant("urn:other", ua.VariantType.String)))
        assert metadata.value.code == StatusCodes.BadNotWritable

        with pytest.raises(UaStatusCodeError) as add_nodes:
            await client.nodes.objects.add_object(projection.namespace_index, "Intruder")
        assert add_nodes.value.code == StatusCodes.BadUserAccessDenied


async def test_read_only_users_may_not_write(
    projection: OpcUaProjection, twin: _Twin, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        with pytest.raises(UaStatusCodeError) as denied:
            await _node(client, projection, "Temperature").write_value(
                ua.DataValue(ua.Variant(30.0, ua.VariantType.Double))
            )
        assert denied.value.code == StatusCodes.BadUserAccessDenied
        assert twin.temperature_device.values == []


async def test_anonymous_and_wrong_passwords_are_rejected(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    with pytest.raises(UaStatusCodeError) as anonymous:
        async with _session(projection.endpoint_url, opcua_client_certificate, None):
            pass
    assert anonymous.value.code == StatusCodes.BadIdentityTokenRejected
    with pytest.raises(UaStatusCodeError) as wrong_password:
        async with _session(projection.endpoint_url, opcua_client_certificate, ADMIN, password="guess"):
            pass
    assert wrong_password.value.code == StatusCodes.BadUserAccessDenied
    unknown = UserSettings(name="root", password=SecretStr("admin-secret"))
    with pytest.raises(UaStatusCodeError) as unknown_user:
        async with _session(projection.endpoint_url, opcua_client_certificate, unknown):
            pass
    assert unknown_user.value.code == StatusCodes.BadUserAccessDenied

    endpoints = await Client(projection.endpoint_url).connect_and_get_server_endpoints()
    policies = {endpoint.SecurityPolicyUri.rsplit("#", 1)[-1] for endpoint in endpoints}
    modes = {endpoint.SecurityMode for endpoint in endpoints}
    assert policies == {"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}
    assert modes == {ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt}
    for endpoint in endpoints:
        token_types = {token.TokenType for token in endpoint.UserIdentityTokens}
        assert token_types == {ua.UserTokenType.UserName}


async def test_no_security_only_when_configured_with_a_warning(
    twin: _Twin, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(security_policies=[SecurityPolicyName.NONE], allow_anonymous_read=True)
    with caplog.at_level(logging.WARNING, logger="aas_server.opcua"):
        async with OpcUaProjection(twin.store, settings, data_dir) as projection:
            assert any("security policy None" in record.getMessage() for record in caplog.records)
            async with _session(projection.endpoint_url, None, None) as client:
                assert await _node(client, projection, "Motor.Speed").read_value() == 1500.0
                with pytest.raises(UaStatusCodeError) as denied:
                    await _node(client, projection, "Count").write_value(
                        ua.DataValue(ua.Variant(1, ua.VariantType.Int32))
                    )
                assert denied.value.code == StatusCodes.BadUserAccessDenied
            async with _session(projection.endpoint_url, None, OPERATOR) as client:
                await _node(client, projection, "Count").write_value(ua.DataValue(ua.Variant(9, ua.VariantType.Int32)))
            state = twin.store.state(SUBMODEL_ID, "Count")
            assert state is not None
            assert state.value == 9


async def test_server_certificate_is_generated_once_with_the_application_uri(twin: _Twin, tmp_path: Path) -> None:
    settings = _settings(application_uri="urn:aas-server:tests:hub")
    async with OpcUaProjection(twin.store, settings, tmp_path) as first:
        certificate_path = first.server_certificate_path
        generated = certificate_path.read_bytes()
    assert certificate_path.parent == tmp_path / "pki"
    certificate = x509.load_der_x509_certificate(generated)
    alternative_names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "urn:aas-server:tests:hub" in alternative_names.value.get_values_for_type(x509.UniformResourceIdentifier)
    async with OpcUaProjection(twin.store, settings, tmp_path) as second:
        assert second.server_certificate_path.read_bytes() == generated


@pytest.mark.parametrize(
    ("quality", "reason", "expected"),
    [
        (Quality.GOOD, QualityReason.NONE, StatusCodes.Good),
        (Quality.UNCERTAIN, QualityReason.LAST_USABLE, StatusCodes.UncertainLastUsableValue),
        (Quality.UNCERTAIN, QualityReason.NOT_YET_READ, StatusCodes.UncertainInitialValue),
        (Quality.BAD, QualityReason.NOT_YET_READ, StatusCodes.BadWaitingForInitialData),
        (Quality.BAD, QualityReason.NO_COMMUNICATION, StatusCodes.BadNoCommunication),
        (Quality.BAD, QualityReason.COMMUNICATION_ERROR, StatusCodes.BadCommunicationError),
        (Quality.BAD, QualityReason.DECODE_ERROR, StatusCodes.BadDecodingError),
        (Quality.BAD, QualityReason.OUT_OF_RANGE, StatusCodes.BadOutOfRange),
        (Quality.BAD, QualityReason.SENSOR_FAILURE, StatusCodes.BadSensorFailure),
    ],
)
def test_quality_maps_to_the_specific_status_code(quality: Quality, reason: QualityReason, expected: int) -> None:
    assert status_code_for(quality, reason) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TypeMismatchError("x"), StatusCodes.BadTypeMismatch),
        (NotWritableError("x"), StatusCodes.BadNotWritable),
        (AccessDeniedError("x"), StatusCodes.BadUserAccessDenied),
        (DeviceTimeoutError("slow"), StatusCodes.BadTimeout),
        (DeviceError("down"), StatusCodes.BadNoCommunication),
        (NotFoundError("x"), StatusCodes.BadNodeIdUnknown),
        (RuntimeError("bug"), StatusCodes.BadInternalError),
    ],
)
def test_errors_map_to_status_codes(error: Exception, expected: int) -> None:
    assert status_code_for_error(error) == expected


def test_plan_lists_parents_first_with_unique_node_ids() -> None:
    store = _twin().store
    plan = plan_address_space(store.shells(), store.submodels(), dict(store.states()), store.bindings())
    seen: set[str | None] = {None}
    for node in plan.nodes:
        assert node.parent_id in seen, node
        assert node.node_id not in seen, node
        seen.add(node.node_id)
    speed = next(node for node in plan.nodes if node.node_id == node_id_for(SUBMODEL_ID, "Motor.Speed"))
    assert isinstance(speed, VariableNode)
    assert speed.parent_id == node_id_for(SUBMODEL_ID, "Motor")
    assert speed.writable
    pressure = next(node for node in plan.nodes if node.node_id == node_id_for(SUBMODEL_ID, "Pressure"))
    assert isinstance(pressure, VariableNode)
    assert not pressure.writable

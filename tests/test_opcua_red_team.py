"""OPC UA attacks with asyncua's low-level client: service sets, attributes and sessions around the processor checks.

One hub projection with access rules (an operator limited to shell ``line-1``, an admin, anonymous
reading as ``read-only``) is attacked with raw requests that asyncua's high-level client would not
send. Each test names the attack and asserts what the attacker gets: a refusal, and nothing changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from pydantic import SecretStr

from aas_server.config import HubSettings, OpcUaSettings, Role, UserSettings
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import ENVIRONMENT_FOLDER, SUBMODELS_FOLDER, submodel_node_id
from aas_server.security.access import AccessControl
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import (
    CLIENT_URI,
    ClientCertificate,
    make_client_certificate,
    status_of,
    trust_client_certificate,
    value_of,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SHELL_ALLOWED, SHELL_DENIED = "urn:test:aas:red-1", "urn:test:aas:red-2"
ALLOWED, DENIED = "urn:test:sm:red-1:operational", "urn:test:sm:red-2:operational"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
ADMIN = UserSettings(name="ada", password=SecretStr("admin-secret"), role=Role.ADMIN)
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)


def _store() -> TwinStore:
    store = TwinStore()
    for shell_id, submodel_id, id_short in ((SHELL_ALLOWED, ALLOWED, "Red1"), (SHELL_DENIED, DENIED, "Red2")):
        submodel = model.Submodel(
            submodel_id,
            id_short="OperationalData",
            submodel_element=[
                model.Property("Temperature", float, 20.0),
                model.Property("Setpoint", float, 50.0),
                model.Property("Batch", str, "B-1"),
            ],
        )
        shell = model.AssetAdministrationShell(
            model.AssetInformation(global_asset_id=f"https://example.com/assets/{id_short}"),
            shell_id,
            id_short=id_short,
            submodel={model.ModelReference.from_referable(submodel)},
        )
        store.add_all([submodel, shell])
        store.bind(submodel_id, "Temperature", ElementBinding("device:plc", writable=False))
    return store


class Hub:
    def __init__(self, projection: OpcUaProjection, store: TwinStore, data_dir: Path) -> None:
        self.projection = projection
        self.store = store
        self.data_dir = data_dir

    def node(self, identifier: str) -> ua.NodeId:
        return ua.NodeId(cast(Any, identifier), cast(Any, self.projection.namespace_index))

    def element(self, submodel_id: str, id_short: str) -> ua.NodeId:
        return self.node(node_id_for(submodel_id, id_short))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate) -> Path:
    directory = tmp_path_factory.mktemp("hub-red-team")
    trust_client_certificate(directory, opcua_client_certificate)
    return directory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(data_dir: Path) -> AsyncIterator[Hub]:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "security": {
                "anonymous_role": "read-only",
                "rules": [
                    {"roles": ["operator"], "operations": ["read", "write-value"], "shells": [SHELL_ALLOWED]},
                    {"roles": ["read-only"], "operations": ["read"], "shells": [SHELL_ALLOWED]},
                    {"roles": ["admin"], "operations": ["*"]},
                ],
            },
        }
    )
    control = AccessControl.from_settings(settings, {})
    store = _store()
    opcua = OpcUaSettings(port=0, users=[OPERATOR, ADMIN, VIEWER], allow_anonymous_read=True)
    try:
        async with OpcUaProjection(store, opcua, data_dir, access=control) as projection:
            yield Hub(projection, store, data_dir)
    finally:
        await control.aclose()


@asynccontextmanager
async def _session(
    hub: Hub,
    certificate: ClientCertificate,
    user: UserSettings | None,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> AsyncIterator[Client]:
    client = Client(hub.projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(certificate.certificate), str(certificate.private_key), mode=mode
    )
    if user is not None:
        client.set_user(user.name)
        client.set_password(user.password.get_secret_value())
    async with client:
        yield client


async def _read(client: Client, node_id: ua.NodeId, attribute: ua.AttributeIds = ua.AttributeIds.Value) -> Any:
    (value,) = await client.uaclient.read(
        ua.ReadParameters(NodesToRead=[ua.ReadValueId(NodeId=node_id, AttributeId=attribute)])
    )
    return value


async def _send(client: Client, request: Any, response_type: type) -> Any:
    """Send a request asyncua's client has no method for; the decoded response (raises on a bad service result)."""
    data = await client.uaclient.protocol.send_request(request)  # type: ignore[union-attr]
    response: Any = struct_from_binary(response_type, data)
    response.ResponseHeader.ServiceResult.check()
    return response


def _node_management(client: Client, hub: Hub, target: ua.NodeId) -> list[Callable[[], Awaitable[Any]]]:
    """Requests adding a variable, deleting ``target``, and adding and deleting references to it."""
    namespace = cast(Any, hub.projection.namespace_index)
    item = ua.AddNodesItem(
        ParentNodeId=ua.ExpandedNodeId(cast(Any, submodel_node_id(ALLOWED)), namespace),
        ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HasComponent)),
        RequestedNewNodeId=ua.ExpandedNodeId(cast(Any, "injected"), namespace),
        BrowseName=ua.QualifiedName("Injected", hub.projection.namespace_index),
        NodeClass=ua.NodeClass.Variable,
        NodeAttributes=ua.VariableAttributes(DisplayName=ua.LocalizedText("Injected")),
        TypeDefinition=ua.NodeId(cast(Any, ObjectIds.BaseDataVariableType)),
    )
    expanded_target = ua.ExpandedNodeId(target.Identifier, target.NamespaceIndex)
    return [
        lambda: client.uaclient.add_nodes([item]),
        lambda: client.uaclient.delete_nodes(
            ua.DeleteNodesParameters(NodesToDelete=[ua.DeleteNodesItem(NodeId=target)])
        ),
        lambda: client.uaclient.add_references(
            [
                ua.AddReferencesItem(
                    SourceNodeId=hub.node(SUBMODELS_FOLDER),
                    ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.Organizes)),
                    IsForward=True,
                    TargetNodeId=expanded_target,
                    TargetNodeClass=ua.NodeClass.Variable,
                )
            ]
        ),
        lambda: client.uaclient.delete_references(
            [
                ua.DeleteReferencesItem(
                    SourceNodeId=hub.node(submodel_node_id(DENIED)),
                    ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HasComponent)),
                    IsForward=True,
                    TargetNodeId=expanded_target,
                    DeleteBidirectional=True,
                )
            ]
        ),
    ]


async def test_node_management_services_are_refused_for_every_role(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """AddNodes, DeleteNodes, AddReferences, DeleteReferences: the address space is the store's projection only."""
    target = hub.element(DENIED, "Setpoint")
    for user in (OPERATOR, ADMIN):
        async with _session(hub, opcua_client_certificate, user) as client:
            attempts = _node_management(client, hub, target)
            for attempt in attempts:
                with pytest.raises(UaStatusCodeError) as refused:
                    await attempt()
                assert refused.value.code == StatusCodes.BadUserAccessDenied
    async with _session(hub, opcua_client_certificate, ADMIN) as client:
        assert value_of(await _read(client, target)) == 50.0
        injected = ua.NodeId(cast(Any, "injected"), cast(Any, hub.projection.namespace_index))
        assert status_of(await _read(client, injected)) == StatusCodes.BadNodeIdUnknown


async def test_history_update_and_query_are_refused(hub: Hub, opcua_client_certificate: ClientCertificate) -> None:
    """HistoryUpdate (rewrite the past) and QueryFirst (a second way to read) are not open to any session."""
    async with _session(hub, opcua_client_certificate, ADMIN) as client:
        update = ua.HistoryUpdateRequest()
        update.Parameters.HistoryUpdateDetails = [
            ua.UpdateDataDetails(
                NodeId=hub.element(DENIED, "Setpoint"),
                PerformInsertReplace=ua.PerformUpdateType.Insert,
                UpdateValues=[ua.DataValue(ua.Variant(1.0, ua.VariantType.Double))],
            )
        ]
        with pytest.raises(UaStatusCodeError) as no_update:
            await _send(client, update, ua.HistoryUpdateResponse)
        assert no_update.value.code == StatusCodes.BadUserAccessDenied
        query = ua.QueryFirstRequest()
        query.Parameters.NodeTypes = [
            ua.NodeTypeDescription(TypeDefinitionNode=ua.ExpandedNodeId(cast(Any, ObjectIds.BaseDataVariableType)))
        ]
        with pytest.raises(UaStatusCodeError) as no_query:
            await _send(client, query, ua.QueryFirstResponse)
        assert no_query.value.code in (StatusCodes.BadUserAccessDenied, StatusCodes.BadServiceUnsupported)


async def test_registered_and_translated_node_ids_stay_under_the_rules(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """RegisterNodes gives no alias that escapes the rules.

    A browse path through an allowed folder finds no denied node.
    """
    denied = hub.element(DENIED, "Temperature")
    async with _session(hub, opcua_client_certificate, OPERATOR) as client:
        registered = await client.uaclient.register_nodes([denied, hub.element(ALLOWED, "Setpoint")])
        values = await client.uaclient.read(
            ua.ReadParameters(
                NodesToRead=[ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value) for node in registered]
            )
        )
        assert [status_of(value) for value in values] == [StatusCodes.BadUserAccessDenied, StatusCodes.Good]
        assert value_of(values[0]) is None
        folder_names = [
            value_of(await _read(client, hub.node(folder), ua.AttributeIds.BrowseName))
            for folder in (ENVIRONMENT_FOLDER, SUBMODELS_FOLDER)
        ]
        admin_names: list[ua.QualifiedName] = []
        async with _session(hub, opcua_client_certificate, ADMIN) as admin:
            for submodel_id in (ALLOWED, DENIED):
                name = await _read(admin, hub.node(submodel_node_id(submodel_id)), ua.AttributeIds.BrowseName)
                admin_names.append(value_of(name))
        paths = [
            ua.BrowsePath(
                StartingNode=ua.NodeId(cast(Any, ObjectIds.ObjectsFolder)),
                RelativePath=ua.RelativePath(
                    Elements=[
                        ua.RelativePathElement(
                            ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HierarchicalReferences)),
                            IsInverse=cast(Any, False),
                            IncludeSubtypes=cast(Any, True),
                            TargetName=name,
                        )
                        for name in [*folder_names, submodel_name]
                    ]
                ),
            )
            for submodel_name in admin_names
        ]
        allowed_path, denied_path = await client.uaclient.translate_browsepaths_to_nodeids(paths)
        assert [target.TargetId.Identifier for target in allowed_path.Targets] == [submodel_node_id(ALLOWED)]
        assert not denied_path.Targets
        assert not denied_path.StatusCode.is_good()


async def test_standard_methods_cannot_reach_other_sessions(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """Standard methods taking a subscription id (GetMonitoredItems, ResendData, SetSubscriptionDurable,
    ConditionRefresh) cannot name another session's subscription, even though namespace 0 is open to everyone."""
    async with _session(hub, opcua_client_certificate, ADMIN) as owner:
        subscription = await owner.create_subscription(100, None)
        await subscription.subscribe_data_change(owner.get_node(hub.element(DENIED, "Temperature")))
        async with _session(hub, opcua_client_certificate, None) as anonymous:
            for method in (
                ObjectIds.Server_GetMonitoredItems,
                ObjectIds.Server_ResendData,
                ObjectIds.Server_SetSubscriptionDurable,
            ):
                call = ua.CallMethodRequest(
                    ObjectId=ua.NodeId(cast(Any, ObjectIds.Server)),
                    MethodId=ua.NodeId(cast(Any, method)),
                    InputArguments=[ua.Variant(subscription.subscription_id, ua.VariantType.UInt32)],
                )
                with pytest.raises(UaStatusCodeError) as refused:
                    await anonymous.uaclient.call([call])
                assert refused.value.code == StatusCodes.BadSubscriptionIdInvalid, method
            refresh = ua.CallMethodRequest(
                ObjectId=ua.NodeId(cast(Any, ObjectIds.Server)),
                MethodId=ua.NodeId(cast(Any, ObjectIds.ConditionType_ConditionRefresh)),
                InputArguments=[ua.Variant(subscription.subscription_id, ua.VariantType.UInt32)],
            )
            with pytest.raises(UaStatusCodeError) as no_refresh:
                await anonymous.uaclient.call([refresh])
            assert no_refresh.value.code == StatusCodes.BadSubscriptionIdInvalid
            own = await anonymous.create_subscription(100, None)
            (own_result,) = await anonymous.uaclient.call(
                [
                    ua.CallMethodRequest(
                        ObjectId=ua.NodeId(cast(Any, ObjectIds.Server)),
                        MethodId=ua.NodeId(cast(Any, ObjectIds.Server_GetMonitoredItems)),
                        InputArguments=[ua.Variant(own.subscription_id, ua.VariantType.UInt32)],
                    )
                ]
            )
            assert own_result.StatusCode.value != StatusCodes.BadSubscriptionIdInvalid
            await own.delete()
        await subscription.delete()


@pytest.mark.parametrize(
    "attribute",
    [
        ua.AttributeIds.DisplayName,
        ua.AttributeIds.Description,
        ua.AttributeIds.BrowseName,
        ua.AttributeIds.AccessLevel,
        ua.AttributeIds.UserAccessLevel,
        ua.AttributeIds.DataType,
        ua.AttributeIds.ValueRank,
        ua.AttributeIds.MinimumSamplingInterval,
        ua.AttributeIds.Historizing,
    ],
    ids=lambda attribute: attribute.name,
)
async def test_attributes_other_than_value_are_not_writable(
    hub: Hub, opcua_client_certificate: ClientCertificate, attribute: ua.AttributeIds
) -> None:
    """Writing metadata (turning a read-only tag writable, renaming it, changing its type) is ``BadNotWritable``."""
    temperature = hub.element(ALLOWED, "Temperature")
    async with _session(hub, opcua_client_certificate, ADMIN) as client:
        before = await _read(client, temperature, attribute)
        replacement: dict[ua.AttributeIds, ua.Variant] = {
            ua.AttributeIds.DisplayName: ua.Variant(ua.LocalizedText("Hacked"), ua.VariantType.LocalizedText),
            ua.AttributeIds.Description: ua.Variant(ua.LocalizedText("Hacked"), ua.VariantType.LocalizedText),
            ua.AttributeIds.BrowseName: ua.Variant(ua.QualifiedName("Hacked", 1), ua.VariantType.QualifiedName),
            ua.AttributeIds.AccessLevel: ua.Variant(3, ua.VariantType.Byte),
            ua.AttributeIds.UserAccessLevel: ua.Variant(3, ua.VariantType.Byte),
            ua.AttributeIds.DataType: ua.Variant(ua.NodeId(cast(Any, ObjectIds.String)), ua.VariantType.NodeId),
            ua.AttributeIds.ValueRank: ua.Variant(1, ua.VariantType.Int32),
            ua.AttributeIds.MinimumSamplingInterval: ua.Variant(0.0, ua.VariantType.Double),
            ua.AttributeIds.Historizing: ua.Variant(True, ua.VariantType.Boolean),
        }
        (code,) = await client.uaclient.write(
            ua.WriteParameters(
                NodesToWrite=[
                    ua.WriteValue(NodeId=temperature, AttributeId=attribute, Value=ua.DataValue(replacement[attribute]))
                ]
            )
        )
        assert code.value == StatusCodes.BadNotWritable
        after = await _read(client, temperature, attribute)
        assert value_of(after) == value_of(before)
        (written,) = await client.uaclient.write(
            ua.WriteParameters(
                NodesToWrite=[
                    ua.WriteValue(
                        NodeId=temperature,
                        AttributeId=ua.AttributeIds.Value,
                        Value=ua.DataValue(ua.Variant(99.0, ua.VariantType.Double)),
                    )
                ]
            )
        )
        assert written.value == StatusCodes.BadNotWritable


@pytest.mark.parametrize(
    ("element", "variant", "expected"),
    [
        ("Setpoint", ua.Variant("fifty", ua.VariantType.String), StatusCodes.BadTypeMismatch),
        ("Setpoint", ua.Variant(50, ua.VariantType.Int32), StatusCodes.BadTypeMismatch),
        ("Setpoint", ua.Variant([1.0] * 100_000, ua.VariantType.Double), StatusCodes.BadTypeMismatch),
        ("Setpoint", ua.Variant(None, ua.VariantType.Null), StatusCodes.BadTypeMismatch),
        ("Batch", ua.Variant(["B-2"] * 1000, ua.VariantType.String), StatusCodes.BadTypeMismatch),
    ],
    ids=["string-for-double", "int-for-double", "huge-array", "null", "string-array"],
)
async def test_values_of_a_wrong_type_or_shape_are_refused_and_change_nothing(
    hub: Hub, opcua_client_certificate: ClientCertificate, element: str, variant: ua.Variant, expected: int
) -> None:
    node = hub.element(ALLOWED, element)
    before = hub.store.element(ALLOWED, element)
    assert isinstance(before, model.Property)
    value_before = before.value
    async with _session(hub, opcua_client_certificate, OPERATOR) as client:
        (code,) = await client.uaclient.write(
            ua.WriteParameters(
                NodesToWrite=[
                    ua.WriteValue(NodeId=node, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(variant))
                ]
            )
        )
        assert code.value == expected
        assert value_of(await _read(client, node)) == value_before


async def test_a_session_that_was_never_activated_can_do_nothing(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    client = Client(hub.projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(opcua_client_certificate.certificate),
        str(opcua_client_certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()
        write = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(
                    NodeId=hub.element(ALLOWED, "Setpoint"),
                    AttributeId=ua.AttributeIds.Value,
                    Value=ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)),
                )
            ]
        )
        attempts: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.uaclient.write(write),
            lambda: client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[
                        ua.ReadValueId(NodeId=hub.element(ALLOWED, "Setpoint"), AttributeId=ua.AttributeIds.Value)
                    ]
                )
            ),
            lambda: client.uaclient.create_subscription(ua.CreateSubscriptionParameters(), lambda _: None),
        ]
        for attempt in attempts:
            with pytest.raises(UaStatusCodeError) as refused:
                await attempt()
            assert refused.value.code in (StatusCodes.BadSessionNotActivated, StatusCodes.BadUserAccessDenied)
        await client.close_session()
    finally:
        await client.close_secure_channel()
        client.disconnect_socket()
    assert hub.store.element(ALLOWED, "Setpoint").value == 50.0  # type: ignore[attr-defined]


async def _reattach(hub: Hub, certificate: ClientCertificate, victim: Client) -> None:
    """ActivateSession of ``victim``'s session over a new channel signed with ``certificate`` (anonymous token).

    The server nonce is the one ``victim`` got, as anybody on the wire of a Sign-only channel sees it.
    """
    client = Client(hub.projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        protocol = client.uaclient.protocol
        assert protocol is not None
        protocol.authentication_token = victim.uaclient.protocol.authentication_token  # type: ignore[union-attr]
        policy = client.security_policy
        challenge = cast(bytes, policy.peer_certificate) + cast(bytes, victim._server_nonce)
        activation = ua.ActivateSessionRequest()
        activation.Parameters.ClientSignature.Algorithm = policy.AsymmetricSignatureURI
        signature = policy.asymmetric_cryptography.signature(challenge)  # type: ignore[no-untyped-call]
        activation.Parameters.ClientSignature.Signature = signature
        activation.Parameters.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId="anonymous")
        await _send(client, activation, ua.ActivateSessionResponse)
    finally:
        await client.close_secure_channel()
        client.disconnect_socket()


async def test_a_session_cannot_be_taken_over_from_another_certificate(
    hub: Hub, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    """ActivateSession naming another client's session (its sequential authentication token) from a second trusted
    application is refused (OPC 10000-4 §5.6.3: the same client certificate); the session stays its owner's, and
    the owner's own certificate may still reconnect to it."""
    intruder = make_client_certificate(tmp_path)
    (hub.data_dir / "pki" / "trusted" / "intruder.der").write_bytes(intruder.certificate.read_bytes())
    try:
        async with _session(hub, opcua_client_certificate, ADMIN, mode=ua.MessageSecurityMode.Sign) as victim:
            with pytest.raises(UaStatusCodeError) as refused:
                await _reattach(hub, intruder, victim)
            assert refused.value.code == StatusCodes.BadSecurityChecksFailed
            value = await _read(victim, hub.element(DENIED, "Setpoint"))
            assert value_of(value) == 50.0
            await _reattach(hub, opcua_client_certificate, victim)
    finally:
        (hub.data_dir / "pki" / "trusted" / "intruder.der").unlink()


async def test_another_channel_cannot_close_a_session_by_its_token(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """CloseSession (deleting its subscriptions) with a stolen authentication token on a new channel does nothing."""
    async with _session(hub, opcua_client_certificate, ADMIN) as victim:
        subscription = await victim.create_subscription(100, None)
        intruder = Client(hub.projection.endpoint_url, timeout=5)
        intruder.application_uri = CLIENT_URI
        await intruder.set_security(
            SecurityPolicyBasic256Sha256,
            str(opcua_client_certificate.certificate),
            str(opcua_client_certificate.private_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        await intruder.connect_socket()
        try:
            await intruder.send_hello()
            await intruder.open_secure_channel()
            protocol = intruder.uaclient.protocol
            assert protocol is not None
            protocol.authentication_token = victim.uaclient.protocol.authentication_token  # type: ignore[union-attr]
            closing = ua.CloseSessionRequest()
            closing.DeleteSubscriptions = True
            with contextlib.suppress(UaStatusCodeError):  # refused outright is as good as ignored
                await _send(intruder, closing, ua.CloseSessionResponse)
        finally:
            await intruder.close_secure_channel()
            intruder.disconnect_socket()
        assert value_of(await _read(victim, hub.element(DENIED, "Setpoint"))) == 50.0
        handle = await subscription.subscribe_data_change(victim.get_node(hub.element(DENIED, "Setpoint")))
        assert handle
        await subscription.delete()


async def test_malformed_read_and_write_items_get_their_own_bad_status(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """Odd index ranges, attribute ids and encodings are answered item by item, without an internal error; an
    IndexRange write is refused; the session goes on working."""
    setpoint = hub.element(ALLOWED, "Setpoint")
    async with _session(hub, opcua_client_certificate, OPERATOR) as client:
        reads = [
            ua.ReadValueId(NodeId=setpoint, AttributeId=ua.AttributeIds.Value, IndexRange="99999999:999999999"),
            ua.ReadValueId(NodeId=setpoint, AttributeId=ua.AttributeIds.Value, IndexRange="not a range"),
            ua.ReadValueId(NodeId=setpoint, AttributeId=cast(Any, 999)),
            ua.ReadValueId(
                NodeId=setpoint, AttributeId=ua.AttributeIds.Value, DataEncoding=ua.QualifiedName("Default XML", 0)
            ),
            ua.ReadValueId(NodeId=setpoint, AttributeId=ua.AttributeIds.Value),
        ]
        *odd, plain = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads))
        assert all(status_of(value) != StatusCodes.BadInternalError for value in odd), odd
        assert status_of(odd[2]) == StatusCodes.BadAttributeIdInvalid
        # asyncua ignores an IndexRange on a scalar and a DataEncoding when reading (no BadIndexRangeNoData,
        # BadDataEncodingInvalid): the value is the one the session may read anyway, nothing more.
        assert [value_of(value) for value in (odd[0], odd[1], odd[3])] == [50.0, 50.0, 50.0]
        assert value_of(plain) == 50.0
        (ranged,) = await client.uaclient.write(
            ua.WriteParameters(
                NodesToWrite=[
                    ua.WriteValue(
                        NodeId=setpoint,
                        AttributeId=ua.AttributeIds.Value,
                        IndexRange="0:1",
                        Value=ua.DataValue(ua.Variant(51.0, ua.VariantType.Double)),
                    )
                ]
            )
        )
        assert ranged.value == StatusCodes.BadWriteNotSupported
        assert value_of(await _read(client, setpoint)) == 50.0


async def test_server_nodes_of_namespace_0_are_not_writable(
    hub: Hub, opcua_client_certificate: ClientCertificate
) -> None:
    """Rewriting the namespace array or the advertised operation limits would mislead every client: refused."""
    targets = {
        ObjectIds.Server_NamespaceArray: ua.Variant(["urn:evil"], ua.VariantType.String),
        ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead: ua.Variant(1, ua.VariantType.UInt32),
        ObjectIds.Server_ServerStatus_State: ua.Variant(1, ua.VariantType.Int32),
    }
    async with _session(hub, opcua_client_certificate, ADMIN) as client:
        for object_id, variant in targets.items():
            node = ua.NodeId(cast(Any, object_id))
            before = value_of(await _read(client, node))
            (code,) = await client.uaclient.write(
                ua.WriteParameters(
                    NodesToWrite=[
                        ua.WriteValue(NodeId=node, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(variant))
                    ]
                )
            )
            assert code.value == StatusCodes.BadNotWritable, object_id
            assert value_of(await _read(client, node)) == before

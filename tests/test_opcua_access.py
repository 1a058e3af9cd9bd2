"""OPC UA reads, browsing, history, method calls and subscriptions follow the same access rules as REST.

An operator whose rules cover one shell (and so its submodel) sees and uses that submodel over OPC UA
and is refused the other one with ``BadUserAccessDenied``, item by item; an admin sees both. Every
denial is in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
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
from aas_server.model.events import QualityReason, ValueChanged, utc_now
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import SHELLS_FOLDER, SUBMODELS_FOLDER, shell_node_id, submodel_node_id
from aas_server.runtime.history import start_history
from aas_server.security.access import AccessControl
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import CLIENT_URI, ClientCertificate, eventually, status_of, trust_client_certificate, value_of

SHELL_ALLOWED, SHELL_DENIED = "urn:test:aas:line-1", "urn:test:aas:line-2"
ALLOWED, DENIED = "urn:test:sm:line-1:operational", "urn:test:sm:line-2:operational"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
ADMIN = UserSettings(name="ada", password=SecretStr("admin-secret"), role=Role.ADMIN)
DENIED_CODE = StatusCodes.BadUserAccessDenied


def _store() -> TwinStore:
    store = TwinStore()
    for shell_id, submodel_id, id_short in ((SHELL_ALLOWED, ALLOWED, "Line1"), (SHELL_DENIED, DENIED, "Line2")):
        submodel = model.Submodel(
            submodel_id,
            id_short="OperationalData",
            submodel_element=[
                model.Property("Temperature", float, 20.0),
                model.Property("Setpoint", float, 50.0),
                model.Operation("Reset", output_variable=[model.Property("Done", bool)]),
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


def _settings(data_dir: Path) -> HubSettings:
    return HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "security": {
                "rules": [
                    {"roles": ["operator"], "operations": ["read", "invoke"], "shells": [SHELL_ALLOWED]},
                    {"roles": ["admin"], "operations": ["*"]},
                ]
            },
        }
    )


class _Resets:
    """The Reset operations' handler: counts the calls per submodel."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handler(self, submodel_id: str) -> Any:
        async def reset(inputs: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(submodel_id)
            return {"Done": True}

        return reset


def _node(projection: OpcUaProjection, identifier: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, projection.namespace_index))


@asynccontextmanager
async def _session(
    projection: OpcUaProjection, certificate: ClientCertificate, user: UserSettings
) -> AsyncIterator[Client]:
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(user.name)
    client.set_password(user.password.get_secret_value())
    async with client:
        yield client


async def _browse(client: Client, node_id: ua.NodeId) -> ua.BrowseResult:
    description = ua.BrowseDescription(
        NodeId=node_id,
        BrowseDirection=ua.BrowseDirection.Forward,
        ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HierarchicalReferences)),
        IncludeSubtypes=True,
        ResultMask=ua.BrowseResultMask.All,
    )
    (result,) = await client.uaclient.browse(ua.BrowseParameters(NodesToBrowse=[description]))
    return result


def _history_read(node_id: ua.NodeId) -> ua.HistoryReadParameters:
    now = utc_now()
    details = ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=now - timedelta(hours=1), EndTime=now + timedelta(hours=1), NumValuesPerNode=0
    )
    return ua.HistoryReadParameters(
        HistoryReadDetails=details,
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        ReleaseContinuationPoints=False,
        NodesToRead=[ua.HistoryReadValueId(NodeId=node_id)],
    )


async def test_reads_browsing_history_calls_and_subscriptions_follow_the_rules(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    trust_client_certificate(data_dir, opcua_client_certificate)
    control = AccessControl.from_settings(settings, {})
    store = _store()
    resets = _Resets()
    operations = OperationRegistry()
    for submodel_id in (ALLOWED, DENIED):
        operations.register(submodel_id, "Reset", resets.handler(submodel_id))
    opcua = OpcUaSettings(port=0, users=[OPERATOR, ADMIN])
    async with AsyncExitStack() as stack:
        history = await start_history(stack, settings, store, lambda s, p: store.binding(s, p) is not None)
        assert history is not None
        for submodel_id in (ALLOWED, DENIED):
            store.apply(
                ValueChanged(
                    submodel_id, "Temperature", 21.5, utc_now(), origin="device:plc", reason=QualityReason.NONE
                )
            )
        projection = await stack.enter_async_context(
            OpcUaProjection(store, opcua, data_dir, operations=operations, history=history.source, access=control)
        )
        temperature = {sm: _node(projection, node_id_for(sm, "Temperature")) for sm in (ALLOWED, DENIED)}
        reset = {sm: _node(projection, node_id_for(sm, "Reset")) for sm in (ALLOWED, DENIED)}
        invoke = {sm: _node(projection, node_id_for(sm, "Reset") + "$Invoke") for sm in (ALLOWED, DENIED)}
        submodel_node = {sm: _node(projection, submodel_node_id(sm)) for sm in (ALLOWED, DENIED)}

        async with _session(projection, opcua_client_certificate, OPERATOR) as client:
            # Read: item by item.
            reads = [
                ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
                for node in (temperature[ALLOWED], temperature[DENIED])
            ] + [ua.ReadValueId(NodeId=submodel_node[DENIED], AttributeId=ua.AttributeIds.BrowseName)]
            allowed_value, denied_value, denied_name = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads))
            assert status_of(allowed_value) == StatusCodes.Good
            assert allowed_value.Value is not None
            assert allowed_value.Value.Value == 21.5
            assert [status_of(denied_value), status_of(denied_name)] == [DENIED_CODE, DENIED_CODE]
            assert value_of(denied_value) is None

            # Browse: denied nodes are not listed, and cannot be browsed.
            shells = {
                ref.NodeId.Identifier for ref in (await _browse(client, _node(projection, SHELLS_FOLDER))).References
            }
            assert shells == {shell_node_id(SHELL_ALLOWED)}
            submodels = await _browse(client, _node(projection, SUBMODELS_FOLDER))
            assert {ref.NodeId.Identifier for ref in submodels.References} == {submodel_node_id(ALLOWED)}
            denied_browse = await _browse(client, submodel_node[DENIED])
            assert denied_browse.StatusCode.value == DENIED_CODE
            assert not denied_browse.References
            allowed_children = await _browse(client, submodel_node[ALLOWED])
            assert node_id_for(ALLOWED, "Temperature") in {ref.NodeId.Identifier for ref in allowed_children.References}
            (path,) = await client.uaclient.translate_browsepaths_to_nodeids(
                [
                    ua.BrowsePath(
                        StartingNode=submodel_node[DENIED],
                        RelativePath=ua.RelativePath(
                            Elements=[ua.RelativePathElement(TargetName=ua.QualifiedName("Temperature", 1))]
                        ),
                    )
                ]
            )
            assert path.StatusCode.value == DENIED_CODE

            # HistoryRead.
            async def allowed_history() -> ua.HistoryReadResult:
                (result,) = await client.uaclient.history_read(_history_read(temperature[ALLOWED]))
                return result

            found = await eventually(
                allowed_history,
                lambda result: isinstance(result.HistoryData, ua.HistoryData) and bool(result.HistoryData.DataValues),
            )
            assert [value.Value.Value for value in found.HistoryData.DataValues] == [21.5]
            (denied_history,) = await client.uaclient.history_read(_history_read(temperature[DENIED]))
            assert denied_history.StatusCode.value == DENIED_CODE
            assert not isinstance(denied_history.HistoryData, ua.HistoryData)

            # Call.
            (allowed_call,) = await client.uaclient.call(
                [ua.CallMethodRequest(ObjectId=reset[ALLOWED], MethodId=invoke[ALLOWED])]
            )
            assert allowed_call.StatusCode.is_good()
            assert allowed_call.OutputArguments[0].Value is True
            (denied_call,) = await client.uaclient.call(
                [ua.CallMethodRequest(ObjectId=reset[DENIED], MethodId=invoke[DENIED])]
            )
            assert denied_call.StatusCode.value == DENIED_CODE
            assert resets.calls == [ALLOWED]

            # CreateMonitoredItems.
            subscription = await client.create_subscription(50, None)
            try:
                items = [
                    ua.MonitoredItemCreateRequest(
                        ItemToMonitor=ua.ReadValueId(NodeId=temperature[sm], AttributeId=ua.AttributeIds.Value),
                        MonitoringMode=ua.MonitoringMode.Reporting,
                        RequestedParameters=ua.MonitoringParameters(
                            ClientHandle=index, SamplingInterval=50, QueueSize=1
                        ),
                    )
                    for index, sm in enumerate((ALLOWED, DENIED))
                ]
                monitored, refused = await client.uaclient.create_monitored_items(
                    ua.CreateMonitoredItemsParameters(
                        SubscriptionId=subscription.subscription_id,
                        TimestampsToReturn=ua.TimestampsToReturn.Both,
                        ItemsToCreate=items,
                    )
                )
                assert monitored.StatusCode.is_good()
                assert monitored.MonitoredItemId
                assert refused.StatusCode.value == DENIED_CODE
            finally:
                await subscription.delete()

        async with _session(projection, opcua_client_certificate, ADMIN) as client:
            submodels = await _browse(client, _node(projection, SUBMODELS_FOLDER))
            assert {ref.NodeId.Identifier for ref in submodels.References} == {
                submodel_node_id(ALLOWED),
                submodel_node_id(DENIED),
            }
            (value,) = await client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[ua.ReadValueId(NodeId=temperature[DENIED], AttributeId=ua.AttributeIds.Value)]
                )
            )
            assert status_of(value) == StatusCodes.Good
    await control.aclose()

    lines = [json.loads(line) for line in (data_dir / "audit.log").read_text().splitlines()]
    denials = {(line["method"], line["path"]) for line in lines if line["status"] == "BadUserAccessDenied"}
    assert {
        ("OPCUA-READ", temperature[DENIED].to_string()),
        ("OPCUA-READ", submodel_node[DENIED].to_string()),
        ("OPCUA-BROWSE", submodel_node[DENIED].to_string()),
        ("OPCUA-HISTORYREAD", temperature[DENIED].to_string()),
        ("OPCUA-CALL", invoke[DENIED].to_string()),
        ("OPCUA-MONITOR", temperature[DENIED].to_string()),
    } <= denials
    assert all(line["principal"] == "olga" and line["roles"] == ["operator"] for line in lines)
    assert any(
        line["method"] == "OPCUA-CALL" and line["status"] == "Good" and line["path"] == invoke[ALLOWED].to_string()
        for line in lines
    )
    assert all(ALLOWED not in line["target"] for line in lines if line["status"] == "BadUserAccessDenied")


@pytest.mark.parametrize("anonymous_role", [None, "read-only"])
async def test_anonymous_sessions_read_with_the_anonymous_role(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, anonymous_role: str | None
) -> None:
    data_dir = tmp_path / "data"
    settings = HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "security": {
                "anonymous_role": anonymous_role,
                "rules": [{"roles": ["read-only"], "operations": ["read"], "submodels": [ALLOWED]}],
            },
        }
    )
    trust_client_certificate(data_dir, opcua_client_certificate)
    control = AccessControl.from_settings(settings, {})
    opcua = OpcUaSettings(port=0, allow_anonymous_read=True)
    async with OpcUaProjection(_store(), opcua, data_dir, access=control) as projection:
        client = Client(projection.endpoint_url, timeout=5)
        client.application_uri = CLIENT_URI
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(opcua_client_certificate.certificate),
            str(opcua_client_certificate.private_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        async with client:
            reads = [
                ua.ReadValueId(
                    NodeId=_node(projection, node_id_for(sm, "Temperature")), AttributeId=ua.AttributeIds.Value
                )
                for sm in (ALLOWED, DENIED)
            ]
            allowed, denied = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads))
    await control.aclose()
    if anonymous_role:
        assert value_of(allowed) == 20.0
    else:
        assert status_of(allowed) == DENIED_CODE
        assert value_of(allowed) is None
    assert status_of(denied) == DENIED_CODE


class _Changes:
    """asyncua data change handler: the values seen."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.append(value)


async def test_a_session_cannot_use_or_take_the_subscriptions_of_another_user(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    trust_client_certificate(data_dir, opcua_client_certificate)
    control = AccessControl.from_settings(settings, {})
    store = _store()
    opcua = OpcUaSettings(port=0, users=[OPERATOR, ADMIN])
    async with OpcUaProjection(store, opcua, data_dir, access=control) as projection:
        temperature = {sm: _node(projection, node_id_for(sm, "Temperature")) for sm in (ALLOWED, DENIED)}
        async with (
            _session(projection, opcua_client_certificate, ADMIN) as admin,
            _session(projection, opcua_client_certificate, OPERATOR) as operator,
            _session(projection, opcua_client_certificate, OPERATOR) as operator_again,
        ):
            seen = _Changes()
            admin_subscription = await admin.create_subscription(20, seen)
            await admin_subscription.subscribe_data_change(admin.get_node(temperature[DENIED]))
            await eventually(lambda: _returns(seen.values), lambda values: values == [20.0])
            stolen = admin_subscription.subscription_id
            assert stolen is not None

            (transfer,) = await operator.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[stolen], SendInitialValues=True)
            )
            assert transfer.StatusCode.value == DENIED_CODE
            with pytest.raises(UaStatusCodeError) as republish:
                await operator.uaclient.session.republish(stolen, 1)
            assert republish.value.code == StatusCodes.BadSubscriptionIdInvalid
            with pytest.raises(UaStatusCodeError) as delete:
                await operator.uaclient.delete_subscriptions([stolen])
            assert delete.value.code == StatusCodes.BadSubscriptionIdInvalid
            item = ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=temperature[ALLOWED], AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(ClientHandle=1, SamplingInterval=20, QueueSize=1),
            )
            with pytest.raises(UaStatusCodeError) as add_item:
                await operator.uaclient.create_monitored_items(
                    ua.CreateMonitoredItemsParameters(SubscriptionId=stolen, ItemsToCreate=[item])
                )
            assert add_item.value.code == StatusCodes.BadSubscriptionIdInvalid

            # The admin's subscription is untouched and still reports.
            store.apply(ValueChanged(DENIED, "Temperature", 30.0, utc_now(), origin="device:plc"))
            await eventually(lambda: _returns(seen.values), lambda values: values[-1:] == [30.0])

            # The same user may take over a subscription of its own from another session.
            own = await operator.create_subscription(20, _Changes())
            assert own.subscription_id is not None

            # Acknowledging the admin's notifications (dropping them from its retransmission queue) is refused.
            publish = ua.PublishRequest()
            publish.Parameters.SubscriptionAcknowledgements = [
                ua.SubscriptionAcknowledgement(SubscriptionId=stolen, SequenceNumber=1)
            ]
            assert operator.uaclient.protocol is not None
            answer = struct_from_binary(ua.PublishResponse, await operator.uaclient.protocol.send_request(publish))
            assert [result.value for result in answer.Parameters.Results] == [StatusCodes.BadSubscriptionIdInvalid]
            (taken,) = await operator_again.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[own.subscription_id], SendInitialValues=True)
            )
            assert taken.StatusCode.is_good()
    await control.aclose()


async def _returns(value: Any) -> Any:
    return value


class _ModelChanges:
    """asyncua event handler: the affected node ids of each GeneralModelChangeEvent, and its message."""

    def __init__(self) -> None:
        self.events: list[tuple[set[str], str]] = []

    def event_notification(self, event: Any) -> None:
        affected = {str(change.Affected.Identifier) for change in event.Changes or []}
        self.events.append((affected, event.Message.Text or ""))


async def test_model_change_events_tell_a_session_only_of_nodes_it_may_read(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    trust_client_certificate(data_dir, opcua_client_certificate)
    control = AccessControl.from_settings(settings, {})
    store = _store()
    opcua = OpcUaSettings(port=0, users=[OPERATOR, ADMIN])
    async with (
        OpcUaProjection(store, opcua, data_dir, access=control) as projection,
        _session(projection, opcua_client_certificate, ADMIN) as admin,
        _session(projection, opcua_client_certificate, OPERATOR) as operator,
    ):
        seen = {"admin": _ModelChanges(), "operator": _ModelChanges()}
        for name, client in (("admin", admin), ("operator", operator)):
            subscription = await client.create_subscription(10, seen[name])
            await subscription.subscribe_events(client.nodes.server, ObjectIds.GeneralModelChangeEventType)

        await store.create_element(DENIED, None, model.Property("Pressure", float, 1.5))
        await eventually(lambda: _returns(seen["admin"].events), lambda events: len(events) == 1)
        await store.create_element(ALLOWED, None, model.Property("Pressure", float, 2.5))
        await eventually(lambda: _returns(seen["admin"].events), lambda events: len(events) == 2)
        await eventually(lambda: _returns(seen["operator"].events), lambda events: len(events) == 1)

        assert node_id_for(DENIED, "Pressure") in seen["admin"].events[0][0]
        assert DENIED in seen["admin"].events[0][1]
        ((affected, message),) = seen["operator"].events
        assert node_id_for(ALLOWED, "Pressure") in affected
        assert not any(node.startswith(DENIED) for node in affected)
        assert DENIED not in message
    await control.aclose()


async def test_user_access_level_and_user_executable_say_what_the_session_may_do(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    viewer = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
    settings = HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "security": {
                "rules": [
                    {"roles": ["read-only", "operator"], "operations": ["read"]},
                    {"roles": ["operator"], "operations": ["write-value", "invoke"], "shells": [SHELL_ALLOWED]},
                ]
            },
        }
    )
    trust_client_certificate(data_dir, opcua_client_certificate)
    control = AccessControl.from_settings(settings, {})
    opcua = OpcUaSettings(port=0, users=[OPERATOR, viewer])
    async with OpcUaProjection(_store(), opcua, data_dir, access=control) as projection:
        setpoint = {sm: _node(projection, node_id_for(sm, "Setpoint")) for sm in (ALLOWED, DENIED)}
        invoke = {sm: _node(projection, node_id_for(sm, "Reset") + "$Invoke") for sm in (ALLOWED, DENIED)}
        reads = [
            ua.ReadValueId(NodeId=node, AttributeId=attribute)
            for node, attribute in (
                (setpoint[ALLOWED], ua.AttributeIds.AccessLevel),
                (setpoint[ALLOWED], ua.AttributeIds.UserAccessLevel),
                (setpoint[DENIED], ua.AttributeIds.UserAccessLevel),
                (invoke[ALLOWED], ua.AttributeIds.UserExecutable),
                (invoke[DENIED], ua.AttributeIds.UserExecutable),
            )
        ]
        write = ua.AccessLevel.CurrentWrite.mask
        seen: dict[str, list[Any]] = {}
        for user in (OPERATOR, viewer):
            async with _session(projection, opcua_client_certificate, user) as client:
                seen[user.name] = [
                    value_of(value) for value in await client.uaclient.read(ua.ReadParameters(NodesToRead=reads))
                ]
        async with _session(projection, opcua_client_certificate, OPERATOR) as client:
            again = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads[:2]))
    await control.aclose()
    level = seen["olga"][0]
    assert level & write
    assert [bool(seen["olga"][1] & write), bool(seen["olga"][2] & write), seen["olga"][3], seen["olga"][4]] == [
        True,
        False,
        True,
        False,
    ]
    assert [bool(seen["victor"][1] & write), bool(seen["victor"][2] & write), seen["victor"][3], seen["victor"][4]] == [
        False,
        False,
        False,
        False,
    ]
    assert seen["victor"][0] == level
    assert [value_of(value) for value in again] == [level, seen["olga"][1]]

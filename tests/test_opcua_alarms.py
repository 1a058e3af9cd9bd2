"""The hub's alarms as OPC UA Alarms & Conditions, seen by an asyncua client.

A real OPC UA projection with the real alarm service (monitoring engine, alarm database, audit log):
a client subscribed to events of the ``Server`` object sees a limit alarm become active (High) and
inactive, acknowledges it with the event's ``EventId`` and a comment, and sees ``AckedState`` true;
ConditionRefresh replays the retained conditions; a read-only user is refused with
``BadUserAccessDenied`` (and audited), an unknown ``EventId`` with ``BadEventIdUnknown``, a second
acknowledgement with ``BadConditionBranchAlreadyAcked``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.events import get_filter_from_event_type
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model
from pydantic import SecretStr

from aas_server.analytics.rules import parse_rules
from aas_server.config import HubSettings, OpcUaSettings, Role, UserSettings
from aas_server.mapping.schema import Table
from aas_server.model.events import ValueChanged, utc_now
from aas_server.opcua import OpcUaProjection
from aas_server.opcua.alarms import condition_node_id, shelving_node_id
from aas_server.opcua.node_ids import node_id_for, submodel_node_id
from aas_server.persistence.alarms import AlarmDatabase
from aas_server.runtime.analytics import AlarmService
from aas_server.runtime.hub import Hub
from aas_server.security.access import AccessControl
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.node_opcua import NodeOpcua
from tests.support import CLIENT_URI, ClientCertificate, eventually, trust_client_certificate, wait_until
from tests.test_end_to_end import SENSOR as DEMO_SENSOR
from tests.test_end_to_end import opcua_session, settings_for

SUBMODEL = "urn:test:sm:filler:operational"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
VIEWER = UserSettings(name="rita", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
OUTSIDER = UserSettings(name="otto", password=SecretStr("outsider-secret"), role=Role.ADMIN)
"""An admin by role whom the access rules give nothing on the submodel."""
RULES = {
    "rules": [
        {
            "name": "filler-pressure",
            "kind": "limits",
            "element": {"submodel": SUBMODEL, "path": "Pressure"},
            "severity": 700,
            "message": "pressure {level}: {value:.1f} bar (limit {limit})",
            "hi": 6.5,
            "hihi": 8.0,
            "deadband": 0.2,
        },
        {
            "name": "tank-level",
            "kind": "limits",
            "element": {"submodel": SUBMODEL, "path": "Level"},
            "severity": 300,
            "message": "tank level {level}",
            "hi": 90.0,
        },
        {
            "name": "filler-jam",
            "kind": "state",
            "element": {"submodel": SUBMODEL, "path": "Jammed"},
            "severity": 500,
            "message": "filler jammed",
            "confirm": True,
        },
    ]
}
EXTRA_FIELDS = (
    ["LimitState", "CurrentState"],
    ["LimitState", "CurrentState", "Id"],
    ["ConditionName"],
    ["ShelvingState", "CurrentState"],
)


def _store() -> TwinStore:
    store = TwinStore()
    submodel = model.Submodel(
        SUBMODEL,
        id_short="OperationalData",
        submodel_element=[
            model.Property("Pressure", float, 5.0),
            model.Property("Jammed", bool, False),
            model.Property("Level", float, 10.0),
        ],
    )
    store.add_all([submodel])
    for path in ("Pressure", "Jammed"):
        store.bind(SUBMODEL, path, ElementBinding("device:plc", writable=False))
    return store


def _settings(data_dir: Path) -> HubSettings:
    return HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "security": {
                "rules": [
                    {"roles": ["read-only", "operator"], "operations": ["read"]},
                    {"roles": ["operator"], "operations": ["acknowledge"]},
                ]
            },
        }
    )


class _Events:
    """Event notifications of one subscription, awaited by condition."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.monitored_item: Any = None
        """The server's id of the event item."""
        self._changed = asyncio.Condition()

    def event_notification(self, event: Any) -> None:
        self.received.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, check: Any, within: float = 10.0, since: int = 0) -> Any:
        """The first event received from the ``since``-th on (already, or from now on) for which ``check`` holds."""

        def found() -> Any:
            return next((event for event in self.received[since:] if check(event)), None)

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        return found()


def _field(event: Any, name: str) -> Any:
    return getattr(event, name, None)


@asynccontextmanager
async def _session(url: str, certificate: ClientCertificate, user: UserSettings) -> AsyncIterator[Client]:
    client = Client(url, timeout=5)
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


async def _subscribe(client: Client) -> tuple[Any, _Events]:
    events = _Events()
    subscription = await client.create_subscription(20, events)
    event_filter = await get_filter_from_event_type(
        [client.get_node(ObjectIds.AlarmConditionType), client.get_node(ObjectIds.ExclusiveLimitAlarmType)]
    )
    for path in EXTRA_FIELDS:
        event_filter.SelectClauses.append(
            ua.SimpleAttributeOperand(
                TypeDefinitionId=ua.NodeId(cast(Any, ObjectIds.BaseEventType)),
                BrowsePath=[ua.QualifiedName(name, 0) for name in path],
                AttributeId=ua.AttributeIds.Value,
            )
        )
    events.monitored_item = await subscription.subscribe_alarms_and_conditions(
        client.nodes.server, evfilter=event_filter
    )
    return subscription, events


async def _call(client: Client, condition: ua.NodeId, method: int, *arguments: ua.Variant) -> ua.CallMethodResult:
    request = ua.CallMethodRequest(
        ObjectId=condition, MethodId=ua.NodeId(cast(Any, method)), InputArguments=list(arguments)
    )
    (result,) = await client.uaclient.call([request])
    return result


def _acknowledge(event_id: bytes, comment: str) -> tuple[ua.Variant, ua.Variant]:
    return ua.Variant(event_id, ua.VariantType.ByteString), ua.Variant(ua.LocalizedText(comment, "en"))


def _pressure(store: TwinStore, value: float) -> None:
    store.apply(ValueChanged(SUBMODEL, "Pressure", value, utc_now(), origin="device:plc"))


@asynccontextmanager
async def _alarm_hub(
    data_dir: Path, certificate: ClientCertificate
) -> AsyncIterator[tuple[TwinStore, AlarmService, OpcUaProjection]]:
    """The OPC UA projection of a store with the real alarm service on the rules above."""
    settings = _settings(data_dir)
    trust_client_certificate(data_dir, certificate)
    control = AccessControl.from_settings(settings, {})
    store = _store()
    rules = parse_rules(RULES, "rules.yaml").rules
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(AlarmDatabase(data_dir / "alarms.sqlite"))
        service = await stack.enter_async_context(AlarmService(store, rules, database, control.audit, tick=0.05))
        projection = await stack.enter_async_context(
            OpcUaProjection(
                store,
                OpcUaSettings(port=0, users=[OPERATOR, VIEWER, OUTSIDER]),
                data_dir,
                access=control,
                alarms=service,
            )
        )
        yield store, service, projection


async def test_a_limit_alarm_comes_is_acknowledged_and_goes_over_opc_ua(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    async with _alarm_hub(data_dir, opcua_client_certificate) as (store, service, projection):
        namespace = projection.namespace_index
        condition = ua.NodeId(
            cast(Any, condition_node_id(SUBMODEL, "Pressure", "filler-pressure")), cast(Any, namespace)
        )
        element = ua.NodeId(cast(Any, node_id_for(SUBMODEL, "Pressure")), cast(Any, namespace))
        url = projection.endpoint_url

        async with _session(url, opcua_client_certificate, OPERATOR) as client:
            # The condition is a node: an ExclusiveLimitAlarmType with the standard Acknowledge method.
            node = client.get_node(condition)
            assert (await node.read_type_definition()) == ua.NodeId(cast(Any, ObjectIds.ExclusiveLimitAlarmType))
            method_names = {(await child.read_browse_name()).Name for child in await node.get_methods()}
            assert {"Acknowledge", "AddComment"} <= method_names
            conditions = await client.get_node(element).get_referenced_nodes(
                ua.NodeId(cast(Any, ObjectIds.HasCondition))
            )
            assert [found.nodeid for found in conditions] == [condition]

            _, events = await _subscribe(client)
            _pressure(store, 7.0)
            active = await events.wait_for(
                lambda event: _field(event, "ConditionName") == "filler-pressure" and _field(event, "ActiveState/Id")
            )
            assert active.NodeId == condition
            assert active.SourceNode == element
            assert active.SourceName == "Pressure"
            assert active.Severity == 700
            assert active.Retain is True
            assert _field(active, "AckedState/Id") is False
            assert _field(active, "EnabledState/Id") is True
            assert _field(active, "LimitState/CurrentState").Text == "High"
            assert _field(active, "LimitState/CurrentState/Id") == ua.NodeId(
                cast(Any, ObjectIds.ExclusiveLimitStateMachineType_High)
            )
            assert active.Message.Text == "pressure High: 7.0 bar (limit 6.5)"
            assert active.EventType == ua.NodeId(cast(Any, ObjectIds.ExclusiveLimitAlarmType))

            # A read-only user may see the alarm but not acknowledge it; the refusal is audited.
            async with _session(url, opcua_client_certificate, VIEWER) as viewer:
                refused = await _call(
                    viewer,
                    condition,
                    ObjectIds.AcknowledgeableConditionType_Acknowledge,
                    *_acknowledge(active.EventId, "not mine"),
                )
                assert refused.StatusCode.value == StatusCodes.BadUserAccessDenied
            assert not service.engine.alarm("filler-pressure").acknowledged

            unknown = await _call(
                client,
                condition,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                *_acknowledge(b"no such event", "x"),
            )
            assert unknown.StatusCode.value == StatusCodes.BadEventIdUnknown

            acknowledged = await _call(
                client,
                condition,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                *_acknowledge(active.EventId, "valve checked"),
            )
            assert acknowledged.StatusCode.is_good()
            acked = await events.wait_for(lambda event: _field(event, "AckedState/Id") is True)
            assert acked.Comment.Text == "valve checked"
            assert acked.ClientUserId == "olga"
            assert _field(acked, "ActiveState/Id") is True
            assert acked.EventId != active.EventId
            assert service.engine.alarm("filler-pressure").comment == "valve checked"

            again = await _call(
                client,
                condition,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                *_acknowledge(acked.EventId, "twice"),
            )
            assert again.StatusCode.value == StatusCodes.BadConditionBranchAlreadyAcked
            not_confirmable = await _call(
                client, condition, ObjectIds.AcknowledgeableConditionType_Confirm, *_acknowledge(acked.EventId, "ok")
            )
            assert not_confirmable.StatusCode.value == StatusCodes.BadMethodInvalid  # the rule has no confirmation
            missing = await _call(client, condition, ObjectIds.AcknowledgeableConditionType_Acknowledge)
            assert missing.StatusCode.value == StatusCodes.BadArgumentsMissing
            wrong_type = await _call(
                client,
                condition,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                ua.Variant("not bytes"),
                ua.Variant(ua.LocalizedText("x", "en")),
            )
            assert wrong_type.StatusCode.value == StatusCodes.BadInvalidArgument
            assert wrong_type.InputArgumentResults[0].value == StatusCodes.BadTypeMismatch
            commented = await _call(
                client, condition, ObjectIds.ConditionType_AddComment, *_acknowledge(acked.EventId, "pump swapped")
            )
            assert commented.StatusCode.is_good()
            acked = await events.wait_for(
                lambda event: _field(event, "Comment") is not None and event.Comment.Text == "pump swapped"
            )
            assert _field(acked, "AckedState/Id") is True

            # Shelving on the condition's ShelvingState object.
            shelving = ua.NodeId(
                cast(Any, shelving_node_id(SUBMODEL, "Pressure", "filler-pressure")), cast(Any, namespace)
            )
            shelved = await _call(client, shelving, ObjectIds.ShelvedStateMachineType_OneShotShelve)
            assert shelved.StatusCode.is_good()
            event = await events.wait_for(lambda event: _field(event, "SuppressedOrShelved") is True)
            assert _field(event, "ShelvingState/CurrentState").Text == "OneShotShelved"
            too_short = await _call(
                client, shelving, ObjectIds.ShelvedStateMachineType_TimedShelve, ua.Variant(0.0, ua.VariantType.Double)
            )
            assert too_short.StatusCode.value == StatusCodes.BadShelvingTimeOutOfRange
            count = len(events.received)
            unshelved = await _call(client, shelving, ObjectIds.ShelvedStateMachineType_Unshelve)
            assert unshelved.StatusCode.is_good()
            acked = await events.wait_for(lambda event: _field(event, "SuppressedOrShelved") is False, since=count)
            assert _field(acked, "ShelvingState/CurrentState").Text == "Unshelved"
            assert _field(acked, "AckedState/Id") is True
            assert service.engine.alarm("filler-pressure").shelving.value == "Unshelved"

            # ConditionRefresh replays the retained condition (active) between RefreshStart and RefreshEnd.
            subscription, refreshed = await _subscribe(client)
            refresh = await _call(
                client,
                ua.NodeId(cast(Any, ObjectIds.ConditionType)),
                ObjectIds.ConditionType_ConditionRefresh,
                ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
            )
            assert refresh.StatusCode.is_good()
            end = ua.NodeId(cast(Any, ObjectIds.RefreshEndEventType))
            await refreshed.wait_for(lambda event: event.EventType == end)
            types = [event.EventType for event in refreshed.received]
            start = ua.NodeId(cast(Any, ObjectIds.RefreshStartEventType))
            replayed = refreshed.received[types.index(start) + 1 : types.index(end)]
            assert [event.ConditionName for event in replayed] == ["filler-pressure"]
            assert replayed[0].EventId == acked.EventId
            assert _field(replayed[0], "AckedState/Id") is True

            # The value returns below hi - deadband: the alarm is inactive and no longer retained.
            _pressure(store, 6.0)
            cleared = await events.wait_for(
                lambda event: (
                    _field(event, "ConditionName") == "filler-pressure" and _field(event, "ActiveState/Id") is False
                )
            )
            assert cleared.Retain is False
            assert _field(cleared, "LimitState/CurrentState").Text is None

    audit = [json.loads(line) for line in (data_dir / "audit.log").read_text(encoding="utf-8").splitlines()]
    calls = [(r["principal"], r["operation"], r["status"]) for r in audit if r.get("method") == "OPCUA-CALL"]
    assert ("rita", "acknowledge", "BadUserAccessDenied") in calls
    assert ("olga", "acknowledge", "Good") in calls


async def test_node_opcua_sees_a_limit_alarm_come_acknowledges_it_and_sees_it_go(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, node_opcua: NodeOpcua
) -> None:
    data_dir = tmp_path / "data"
    async with _alarm_hub(data_dir, opcua_client_certificate) as (store, service, projection):
        plan = {
            "endpoint": projection.endpoint_url,
            "securityPolicy": "Basic256Sha256",
            "securityMode": "SignAndEncrypt",
            "applicationUri": CLIENT_URI,
            "certificateFile": str(opcua_client_certificate.certificate),
            "privateKeyFile": str(opcua_client_certificate.private_key),
            "pkiDir": str(tmp_path / "pki"),
            "user": {"name": OPERATOR.name, "password": OPERATOR.password.get_secret_value()},
            "condition": "filler-pressure",
            "comment": "seen from node-opcua",
            "timeoutMs": 20000,
        }
        async with node_opcua.start("alarms", plan) as script:
            await script.wait_for("subscribed")
            _pressure(store, 8.5)
            acknowledged = await script.wait_for("acknowledged")
            assert acknowledged["status"] == "Good", acknowledged
            await wait_until(lambda: service.engine.alarm("filler-pressure").acknowledged, within=10, what="acked")
            _pressure(store, 5.0)
            outcome = await script.result()
    assert outcome["error"] is None, outcome
    events = outcome["events"]
    condition = f"ns={projection.namespace_index};s={condition_node_id(SUBMODEL, 'Pressure', 'filler-pressure')}"
    first = events[0]
    assert (first["active"], first["acknowledged"], first["limitState"]) == (True, False, "HighHigh")
    assert first["conditionId"] == condition
    assert first["sourceName"] == "Pressure"
    assert first["severity"] == 700
    acked = next(event for event in events if event["acknowledged"])
    assert acked["comment"] == "seen from node-opcua"
    assert acked["active"] is True
    last = events[-1]
    assert (last["active"], last["acknowledged"], last["retain"]) == (False, True, False)
    alarm = service.engine.alarm("filler-pressure")
    assert (alarm.active, alarm.acknowledged, alarm.comment) == (False, True, "seen from node-opcua")


HUB_RULES = {
    "rules": [
        {
            "name": "filler-temperature",
            "kind": "limits",
            "element": {"submodel": DEMO_SENSOR, "path": "Temperature"},
            "hi": 30.0,
            "deadband": 0.5,
            "severity": 500,
            "message": "Filler temperature {value} is {level} (limit {limit})",
        }
    ]
}


async def test_the_hub_shows_its_alarms_on_opc_ua_and_an_opc_ua_acknowledgement_on_rest(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(HUB_RULES), encoding="utf-8")
    base = settings_for(data_dir)
    settings = base.model_copy(update={"analytics": base.analytics.model_copy(update={"rules_files": [rules_file]})})
    trust_client_certificate(data_dir, opcua_client_certificate)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.opcua is not None
        hub.simulator.pause()
        hub.simulator.server.set_registers(Table.HOLDING_REGISTER, 20, [250])  # int16, 0.1 °C: 25.0
        async with opcua_session(
            hub.opcua.endpoint_url, opcua_client_certificate, "operator", "demo-operator"
        ) as client:
            _, events = await _subscribe(client)
            hub.simulator.server.set_registers(Table.HOLDING_REGISTER, 20, [321])
            active = await events.wait_for(
                lambda event: _field(event, "ConditionName") == "filler-temperature" and _field(event, "ActiveState/Id")
            )
            assert _field(active, "LimitState/CurrentState").Text == "High"
            assert active.SourceNode == ua.NodeId(
                cast(Any, node_id_for(DEMO_SENSOR, "Temperature")), cast(Any, hub.opcua.namespace_index)
            )
            result = await _call(
                client,
                active.NodeId,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                *_acknowledge(active.EventId, "fan restarted"),
            )
            assert result.StatusCode.is_good()
            await events.wait_for(lambda event: _field(event, "AckedState/Id") is True)
        async with http.get(f"{hub.rest_url}/alarms") as response:
            assert response.status == 200, await response.text()
            listed = {alarm["id"]: alarm for alarm in (await response.json())["result"]}
        alarm = listed["filler-temperature"]
        assert (alarm["active"], alarm["acknowledged"]) == (True, True)
        assert alarm["comment"] == "fan restarted"


async def test_a_session_that_may_not_read_the_element_gets_no_alarm_events_nor_refreshed_conditions(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    async with _alarm_hub(data_dir, opcua_client_certificate) as (store, _, projection):
        url = projection.endpoint_url
        async with (
            _session(url, opcua_client_certificate, OPERATOR) as operator,
            _session(url, opcua_client_certificate, OUTSIDER) as outsider,
        ):
            _, seen = await _subscribe(operator)
            subscription, hidden = await _subscribe(outsider)
            _pressure(store, 9.0)
            active = await seen.wait_for(lambda event: _field(event, "ConditionName") == "filler-pressure")
            refused = await _call(
                outsider,
                active.NodeId,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
                *_acknowledge(active.EventId, "not allowed"),
            )
            assert refused.StatusCode.value == StatusCodes.BadUserAccessDenied
            refresh = await _call(
                outsider,
                ua.NodeId(cast(Any, ObjectIds.ConditionType)),
                ObjectIds.ConditionType_ConditionRefresh,
                ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
            )
            assert refresh.StatusCode.is_good()
            end = ua.NodeId(cast(Any, ObjectIds.RefreshEndEventType))
            await hidden.wait_for(lambda event: event.EventType == end)
            assert [_field(event, "ConditionName") for event in hidden.received if _field(event, "ConditionName")] == []


async def test_a_condition_is_linked_again_to_its_element_after_a_model_change_recreates_the_node(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    async with _alarm_hub(data_dir, opcua_client_certificate) as (store, _, projection):
        namespace = cast(Any, projection.namespace_index)
        condition = ua.NodeId(cast(Any, condition_node_id(SUBMODEL, "Level", "tank-level")), namespace)
        element = ua.NodeId(cast(Any, node_id_for(SUBMODEL, "Level")), namespace)
        submodel = ua.NodeId(cast(Any, submodel_node_id(SUBMODEL)), namespace)
        has_condition = ua.NodeId(cast(Any, ObjectIds.HasCondition))
        async with _session(projection.endpoint_url, opcua_client_certificate, OPERATOR) as client:
            before = await client.get_node(element).read_data_type()
            # another valueType: the element's variable is deleted and added again (another DataType)
            await store.replace_element(SUBMODEL, "Level", model.Property("Level", int, 10))

            async def linked() -> list[ua.NodeId]:
                return [node.nodeid for node in await client.get_node(element).get_referenced_nodes(has_condition)]

            assert await eventually(linked, lambda found: found == [condition], within=5.0) == [condition]
            assert await client.get_node(element).read_data_type() != before
            children = [child.nodeid for child in await client.get_node(submodel).get_children()]
            assert condition in children


async def test_a_state_alarm_with_confirmation_is_acknowledged_then_confirmed_over_opc_ua(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    data_dir = tmp_path / "data"
    async with _alarm_hub(data_dir, opcua_client_certificate) as (store, service, projection):
        condition = ua.NodeId(
            cast(Any, condition_node_id(SUBMODEL, "Jammed", "filler-jam")), cast(Any, projection.namespace_index)
        )
        async with _session(projection.endpoint_url, opcua_client_certificate, OPERATOR) as client:
            node = client.get_node(condition)
            assert (await node.read_type_definition()) == ua.NodeId(cast(Any, ObjectIds.AlarmConditionType))
            assert "Confirm" in {(await child.read_browse_name()).Name for child in await node.get_methods()}
            _, events = await _subscribe(client)
            store.apply(ValueChanged(SUBMODEL, "Jammed", True, utc_now(), origin="device:plc"))
            active = await events.wait_for(
                lambda event: _field(event, "ConditionName") == "filler-jam" and _field(event, "ActiveState/Id")
            )
            assert active.EventType == ua.NodeId(cast(Any, ObjectIds.AlarmConditionType))
            assert (_field(active, "AckedState/Id"), _field(active, "ConfirmedState/Id")) == (False, False)
            confirm, acknowledge = (
                ObjectIds.AcknowledgeableConditionType_Confirm,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
            )
            early = await _call(client, condition, confirm, *_acknowledge(active.EventId, "too early"))
            assert early.StatusCode.value == StatusCodes.BadInvalidState
            assert (
                await _call(client, condition, acknowledge, *_acknowledge(active.EventId, "seen"))
            ).StatusCode.is_good()
            acked = await events.wait_for(lambda event: _field(event, "AckedState/Id") is True)
            assert (
                await _call(client, condition, confirm, *_acknowledge(acked.EventId, "cleared"))
            ).StatusCode.is_good()
            confirmed = await events.wait_for(lambda event: _field(event, "ConfirmedState/Id") is True)
            assert confirmed.Comment.Text == "cleared"
            twice = await _call(client, condition, confirm, *_acknowledge(confirmed.EventId, "again"))
            assert twice.StatusCode.value == StatusCodes.BadConditionBranchAlreadyConfirmed

            # ConditionRefresh2 replays to one monitored item; an unknown item is refused.
            subscription, refreshed = await _subscribe(client)
            refresh2 = ObjectIds.ConditionType_ConditionRefresh2
            condition_type = ua.NodeId(cast(Any, ObjectIds.ConditionType))
            unknown_item = await _call(
                client,
                condition_type,
                refresh2,
                ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
                ua.Variant(999_999, ua.VariantType.UInt32),
            )
            assert unknown_item.StatusCode.value == StatusCodes.BadMonitoredItemIdInvalid
            result = await _call(
                client,
                condition_type,
                refresh2,
                ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
                ua.Variant(refreshed.monitored_item, ua.VariantType.UInt32),
            )
            assert result.StatusCode.is_good()
            end = ua.NodeId(cast(Any, ObjectIds.RefreshEndEventType))
            await refreshed.wait_for(lambda event: event.EventType == end)
            replayed = [event for event in refreshed.received if _field(event, "ConditionName") == "filler-jam"]
            assert [event.EventId for event in replayed] == [confirmed.EventId]
        alarm = service.engine.alarm("filler-jam")
        assert (alarm.active, alarm.acknowledged, alarm.confirmed) == (True, True, True)

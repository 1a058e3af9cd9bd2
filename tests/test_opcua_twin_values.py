"""A SCADA engineer's look at the hub's derived twin values over OPC UA (issue 13).

On the live demo hub (examples/bottling-line/hub.yaml), with asyncua and node-opcua: the KPI and
predictive-maintenance variables carry numeric DataTypes (Double, DateTime for times),
EngineeringUnits where a unit is known (ratios as ``one``, MTBF/MTTR and the remaining useful life
in seconds), are read-only (a write is ``BadNotWritable`` even for an operator), read Bad with no
value while unknown instead of a fake 0 (and Good for fixed descriptions), carry the ``en`` locale
on their names, and a subscription sees a KPI change. Alarms: an acknowledgement from node-opcua
shows its comment on REST and survives a restart in ConditionRefresh; SourceNode, SourceName,
Severity, Message and Retain are right in the events and readable on the condition node; Enable and
Disable work. The findings and fixes are listed in docs/opcua.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import HubSettings
from aas_server.model.units import UNITS_BY_CODE
from aas_server.opcua.alarms import condition_node_id
from aas_server.opcua.node_ids import node_id_for
from aas_server.opcua.projection import engineering_units_information
from aas_server.runtime.hub import Hub
from tests.node_opcua import NodeOpcua
from tests.support import CLIENT_URI, ClientCertificate, eventually, status_of, wait_until
from tests.test_demo_kpi_faults import FILLER_KPI, demo_settings_without_breaks
from tests.test_end_to_end import opcua_node, opcua_session
from tests.test_opcua_alarms import _call, _field, _subscribe

PREDICTIVE = "urn:aas-server:demo:aas:filler-motor/predictive-maintenance"
WEAR = "FillerMotorWear"
SECONDS = engineering_units_information(UNITS_BY_CODE["SEC"])
RATIO = engineering_units_information(UNITS_BY_CODE["C62"])
KPI_UNITS = {
    "OEE": RATIO,
    "Availability": RATIO,
    "Performance": RATIO,
    "QualityRatio": RATIO,
    "MTBF": SECONDS,
    "MTTR": SECONDS,
}
RUL_PATHS = (
    f"{WEAR}.RemainingUsefulLifetime.DurationValue",
    f"{WEAR}.RemainingUsefulLifeLower",
    f"{WEAR}.RemainingUsefulLifeUpper",
)
TIME_PATHS = (f"{WEAR}.LastUpdate", f"{WEAR}.RemainingUsfulLifeDateTime")


def _settings(tmp_path: Path) -> HubSettings:
    base = demo_settings_without_breaks(tmp_path)
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": True}),
            "analytics": base.analytics.model_copy(update={"kpi_interval": 3600.0}),
        }
    )


async def _engineering_units(client: Client, node_id: str, namespace: int) -> Any:
    node = opcua_node(client, node_id, namespace)
    child = await node.get_child(ua.QualifiedName("EngineeringUnits", 0))
    return await child.read_value()


async def test_kpi_and_rul_values_are_typed_read_only_with_units_and_bad_while_unknown(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(_settings(tmp_path)) as hub:
        assert hub.opcua is not None
        namespace, url = hub.opcua.namespace_index, hub.opcua.endpoint_url
        async with opcua_session(url, opcua_client_certificate, "operator", "demo-operator") as client:
            for window in ("LastHour", "Last24Hours", "CurrentShift"):
                for name, unit in KPI_UNITS.items():
                    node_id = node_id_for(FILLER_KPI, f"{window}.{name}")
                    node = opcua_node(client, node_id, namespace)
                    assert await node.read_data_type() == ua.NodeId(ua.Int32(ua.ObjectIds.Double)), node_id
                    information = await _engineering_units(client, node_id, namespace)
                    assert (information.UnitId, information.DisplayName.Text) == (
                        unit.UnitId,
                        unit.DisplayName.Text,
                    ), node_id
            for path in RUL_PATHS:
                node_id = node_id_for(PREDICTIVE, path)
                node = opcua_node(client, node_id, namespace)
                assert await node.read_data_type() == ua.NodeId(ua.Int32(ua.ObjectIds.Double)), node_id
                information = await _engineering_units(client, node_id, namespace)
                assert information.UnitId == SECONDS.UnitId, node_id
                # nothing known yet: Bad with no value, not a fake 0
                data = await node.read_data_value(raise_on_bad_status=False)
                assert status_of(data) & 0x80000000, (node_id, data.StatusCode)
                assert data.Value is None or data.Value.Value is None, node_id
            for path in TIME_PATHS:
                node = opcua_node(client, node_id_for(PREDICTIVE, path), namespace)
                assert await node.read_data_type() == ua.NodeId(ua.Int32(ua.ObjectIds.DateTime)), path

            # the OEE of the last 24 h needs a whole day of data: Bad, no value
            oee = opcua_node(client, node_id_for(FILLER_KPI, "Last24Hours.OEE"), namespace)
            data = await oee.read_data_value(raise_on_bad_status=False)
            assert status_of(data) & 0x80000000
            assert data.Value is None or data.Value.Value is None
            assert data.SourceTimestamp is not None

            for node_id in (
                node_id_for(FILLER_KPI, "LastHour.OEE"),
                node_id_for(FILLER_KPI, "LastHour.MTBF"),
                node_id_for(PREDICTIVE, RUL_PATHS[0]),
            ):
                node = opcua_node(client, node_id, namespace)
                access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
                assert access.Value is not None
                assert not access.Value.Value & ua.AccessLevel.CurrentWrite.mask, node_id
                browse_name = await node.read_browse_name()
                display_name = await node.read_display_name()
                assert (browse_name.NamespaceIndex, display_name.Locale) == (namespace, "en"), node_id
                results = await client.uaclient.write_attributes(
                    [node.nodeid], [ua.DataValue(ua.Variant(0.5, ua.VariantType.Double))], ua.AttributeIds.Value
                )
                assert results[0].value == StatusCodes.BadNotWritable, node_id
        # the refused writes changed nothing
        state = hub.store.state(FILLER_KPI, "LastHour.OEE")
        assert state is None or state.value != 0.5


class _Changes:
    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.append(data.monitored_item.Value)


async def test_a_subscription_sees_the_kpis_change_with_good_status_and_source_time(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(_settings(tmp_path)) as hub:
        assert hub.opcua is not None
        assert hub.kpis is not None
        kpis = hub.kpis
        namespace, url = hub.opcua.namespace_index, hub.opcua.endpoint_url
        async with opcua_session(url, opcua_client_certificate, "viewer", "demo-viewer") as client:
            changes = _Changes()
            subscription = await client.create_subscription(50, changes)
            node = opcua_node(client, node_id_for(FILLER_KPI, "LastHour.ActualProductionTime"), namespace)
            await subscription.subscribe_data_change(node)
            await wait_until(lambda: len(changes.values) >= 1, within=5, what="the initial value")
            first = changes.values[-1]
            await wait_until(lambda: len(kpis.recorders[0].increments) >= 2, within=15, what="bottles counted")
            await asyncio.sleep(0)
            kpis.update()
            state = hub.store.state(FILLER_KPI, "LastHour.ActualProductionTime")
            assert state is not None
            last = await eventually(
                lambda: asyncio.sleep(0, changes.values[-1]),
                lambda value: value.Value.Value == state.value,
                within=5,
            )
            assert status_of(last) == StatusCodes.Good
            assert last.SourceTimestamp == state.source_time
            assert first.SourceTimestamp is not None
            assert last.SourceTimestamp > first.SourceTimestamp
            assert last.Value.Value > 0
            await subscription.delete()


FIXED_PATHS = {
    f"{WEAR}.RemainingUsefulLifetime.IndicationType": "time",
    f"{WEAR}.RemainingUsefulLifetime.EngineeringUnit": "s",
    f"{WEAR}.PredictionModelInformation.ModelType": "data-driven methods",
    f"{WEAR}.ListRULBoundaryConditions[0].BoundaryValueRange": 7.1,
}


async def test_the_fixed_descriptions_of_a_prediction_read_good_before_the_first_estimate(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(_settings(tmp_path)) as hub:
        assert hub.opcua is not None
        namespace, url = hub.opcua.namespace_index, hub.opcua.endpoint_url
        async with opcua_session(url, opcua_client_certificate, "viewer", "demo-viewer") as client:
            for path, value in FIXED_PATHS.items():
                node = opcua_node(client, node_id_for(PREDICTIVE, path), namespace)
                data = await node.read_data_value(raise_on_bad_status=False)
                assert data.Value is not None
                assert (data.Value.Value, status_of(data)) == (value, StatusCodes.Good), path
            # a result stays Bad until estimated
            node = opcua_node(client, node_id_for(PREDICTIVE, RUL_PATHS[0]), namespace)
            data = await node.read_data_value(raise_on_bad_status=False)
            assert status_of(data) & 0x80000000


FILLER = "urn:aas-server:demo:sm:filler:operational-data"


def _with_jam(settings: HubSettings) -> HubSettings:
    """The same hub started again with the filler still jammed (the simulator plays the fault from its start)."""
    return settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"faults": ["jam"]})})


async def test_an_alarm_acknowledged_from_node_opcua_shows_its_comment_on_rest_and_stays_acknowledged_after_a_restart(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, node_opcua: NodeOpcua
) -> None:
    settings = _settings(tmp_path)
    async with Hub(settings) as hub:
        assert hub.opcua is not None
        assert hub.simulator is not None
        plan = {
            "endpoint": hub.opcua.endpoint_url,
            "securityPolicy": "Basic256Sha256",
            "securityMode": "SignAndEncrypt",
            "applicationUri": CLIENT_URI,
            "certificateFile": str(opcua_client_certificate.certificate),
            "privateKeyFile": str(opcua_client_certificate.private_key),
            "pkiDir": str(tmp_path / "pki"),
            "user": {"name": "operator", "password": "demo-operator"},
            "condition": "filler-fault",
            "comment": "jam cleared by the night shift",
            "timeoutMs": 20000,
        }
        async with node_opcua.start("alarms", plan) as script:
            await script.wait_for("subscribed")
            hub.simulator.inject_fault("jam")
            acknowledged = await script.wait_for("acknowledged")
            assert acknowledged["status"] == "Good", acknowledged
            seen = await script.wait_for("alarm")
        assert (seen["conditionName"], seen["sourceName"], seen["severity"]) == ("filler-fault", "FaultCode", 700)
        assert seen["message"] == "The filler reports fault code 17"
        async with aiohttp.ClientSession() as http:

            async def listed() -> dict[str, Any]:
                async with http.get(f"{hub.rest_url}/alarms") as response:
                    assert response.status == 200, await response.text()
                    return {alarm["id"]: alarm for alarm in (await response.json())["result"]}

            alarms = await eventually(listed, lambda found: found["filler-fault"]["acknowledged"], within=10)
        assert alarms["filler-fault"]["comment"] == "jam cleared by the night shift"
        assert alarms["filler-fault"]["active"] is True

    async with Hub(_with_jam(settings)) as hub:
        assert hub.opcua is not None
        namespace = hub.opcua.namespace_index
        async with opcua_session(hub.opcua.endpoint_url, opcua_client_certificate, "viewer", "demo-viewer") as client:
            subscription, refreshed = await _subscribe(client)
            refresh = await _call(
                client,
                ua.NodeId(ua.Int32(ua.ObjectIds.ConditionType)),
                ua.ObjectIds.ConditionType_ConditionRefresh,
                ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
            )
            assert refresh.StatusCode.is_good()
            end = ua.NodeId(ua.Int32(ua.ObjectIds.RefreshEndEventType))
            await refreshed.wait_for(lambda event: event.EventType == end)
            replayed = {event.ConditionName: event for event in refreshed.received if _field(event, "ConditionName")}
            fault = replayed["filler-fault"]
            assert (_field(fault, "ActiveState/Id"), _field(fault, "AckedState/Id")) == (True, True)
            assert fault.Retain is True
            assert fault.Severity == 700
            assert fault.SourceName == "FaultCode"
            assert fault.SourceNode == ua.NodeId(ua.String(node_id_for(FILLER, "FaultCode")), ua.Int16(namespace))
            assert fault.Message.Text == "The filler reports fault code 17"
            assert fault.Comment.Text == "jam cleared by the night shift"
            # the alarm's source is a node a client can read: the fault code itself
            source = await client.get_node(fault.SourceNode).read_value()
            assert source == 17
            # a client that reads the condition object (not only its events) sees the same state
            condition = client.get_node(fault.NodeId)
            readable = {}
            for name in ("ConditionName", "Message", "Severity", "Retain"):
                child = await condition.get_child(ua.QualifiedName(name, 0))
                readable[name] = await child.read_value()
                display_name = await child.read_display_name()
                assert display_name.Locale == "en", name
            assert readable["ConditionName"] == "filler-fault"
            assert readable["Message"].Text == "The filler reports fault code 17"
            assert (readable["Severity"], readable["Retain"]) == (700, True)

            # the jam is cleared: inactive and acknowledged, so no longer retained, in the event and on the node
            assert hub.simulator is not None
            hub.simulator.clear_faults()
            cleared = await refreshed.wait_for(
                lambda event: (
                    _field(event, "ConditionName") == "filler-fault" and _field(event, "ActiveState/Id") is False
                )
            )
            assert (_field(cleared, "AckedState/Id"), cleared.Retain) == (True, False)
            retain = await condition.get_child(ua.QualifiedName("Retain", 0))
            assert await eventually(retain.read_value, lambda value: value is False, within=5) is False


async def test_a_scada_client_disables_and_enables_a_condition_with_the_standard_methods(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(_with_jam(_settings(tmp_path))) as hub, aiohttp.ClientSession() as http:
        assert hub.opcua is not None
        url = hub.opcua.endpoint_url
        async with (
            opcua_session(url, opcua_client_certificate, "operator", "demo-operator") as client,
            opcua_session(url, opcua_client_certificate, "viewer", "demo-viewer") as viewer,
        ):
            _, events = await _subscribe(client)
            condition = ua.NodeId(
                ua.String(condition_node_id(FILLER, "FaultCode", "filler-fault")), ua.Int16(hub.opcua.namespace_index)
            )
            methods = {
                (await child.read_browse_name()).Name for child in await client.get_node(condition).get_methods()
            }
            assert {"Enable", "Disable"} <= methods

            refused = await _call(viewer, condition, ua.ObjectIds.ConditionType_Disable)
            assert refused.StatusCode.value == StatusCodes.BadUserAccessDenied

            disabled = await _call(client, condition, ua.ObjectIds.ConditionType_Disable)
            assert disabled.StatusCode.is_good(), disabled.StatusCode
            event = await events.wait_for(
                lambda event: (
                    _field(event, "ConditionName") == "filler-fault" and _field(event, "EnabledState/Id") is False
                )
            )
            assert event.Retain is False
            again = await _call(client, condition, ua.ObjectIds.ConditionType_Disable)
            assert again.StatusCode.value == StatusCodes.BadConditionAlreadyDisabled
            async with http.get(f"{hub.rest_url}/alarms") as response:
                listed = {alarm["id"]: alarm for alarm in (await response.json())["result"]}
            assert listed["filler-fault"]["enabled"] is False

            count = len(events.received)
            enabled = await _call(client, condition, ua.ObjectIds.ConditionType_Enable)
            assert enabled.StatusCode.is_good(), enabled.StatusCode
            # still jammed: enabled again, the alarm is active at once
            active = await events.wait_for(
                lambda event: _field(event, "ConditionName") == "filler-fault" and _field(event, "ActiveState/Id"),
                since=count,
            )
            assert (_field(active, "EnabledState/Id"), active.Retain) == (True, True)


async def test_node_opcua_reads_kpi_and_rul_types_units_and_status_and_may_not_write_them(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, node_opcua: NodeOpcua
) -> None:
    async with Hub(_settings(tmp_path)) as hub:
        assert hub.opcua is not None
        namespace = hub.opcua.namespace_index

        def node(identifier: str) -> str:
            return f"ns={namespace};s={identifier}"

        oee, mtbf = node_id_for(FILLER_KPI, "Last24Hours.OEE"), node_id_for(FILLER_KPI, "LastHour.MTBF")
        rul, update = node_id_for(PREDICTIVE, RUL_PATHS[0]), node_id_for(PREDICTIVE, TIME_PATHS[0])
        steps: list[dict[str, Any]] = [
            {"op": "read", "nodeId": node(oee), "attribute": "DataType"},
            {"op": "read", "nodeId": node(oee)},
            {"op": "read", "nodeId": node(f"{oee}$EngineeringUnits")},
            {"op": "read", "nodeId": node(f"{mtbf}$EngineeringUnits")},
            {"op": "read", "nodeId": node(f"{rul}$EngineeringUnits")},
            {"op": "read", "nodeId": node(update), "attribute": "DataType"},
            {"op": "read", "nodeId": node(oee), "attribute": "DisplayName"},
            {"op": "write", "nodeId": node(oee), "dataType": "Double", "value": 0.99},
        ]
        plan = {
            "endpoint": hub.opcua.endpoint_url,
            "securityPolicy": "Basic256Sha256",
            "securityMode": "SignAndEncrypt",
            "applicationUri": CLIENT_URI,
            "certificateFile": str(opcua_client_certificate.certificate),
            "privateKeyFile": str(opcua_client_certificate.private_key),
            "pkiDir": str(tmp_path / "pki"),
            "user": {"name": "operator", "password": "demo-operator"},
            "steps": steps,
        }
        async with node_opcua.start("session", plan) as script:
            outcome = await script.result()
    assert outcome["error"] is None, outcome
    data_type, unknown, ratio, seconds, rul_unit, time_type, display_name, written = outcome["steps"]
    assert data_type["value"] == "ns=0;i=11"  # Double
    assert (unknown["status"], unknown["value"]) == ("BadWaitingForInitialData", None)
    assert unknown["sourceTimestamp"] is not None
    for information, unit_id, symbol in ((ratio, 4404786, "1"), (seconds, 5457219, "s"), (rul_unit, 5457219, "s")):
        assert information["status"] == "Good"
        assert f": {unit_id}\n" in information["value"]
        # the unit's texts carry their locale like every other text of the hub
        assert f"locale=en text={symbol}\n" in information["value"], information["value"]
    assert time_type["value"] == "ns=0;i=13"  # DateTime
    assert display_name["value"] == "locale=en text=OEE"
    assert written["status"] == "BadNotWritable"

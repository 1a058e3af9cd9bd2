"""The OPC UA address space follows the store's model changes live, with GeneralModelChangeEvents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.model.events import ValueChanged
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import shell_node_id, submodel_node_id
from aas_server.opcua.projection import ObjectNode, VariableNode, plan_element, reference_text
from aas_server.store.twin_store import TwinStore
from tests.support import ClientCertificate, eventually, status_of, trust_client_certificate, value_of, wait_until
from tests.test_opcua import VIEWER, _session, _settings

SHELL_ID = "https://example.com/ids/aas/press7"
LINE_ID = "https://example.com/ids/sm/press7/line"
TOOL_ID = "https://example.com/ids/sm/press7/tool"

NODE_ADDED, NODE_DELETED = 1, 2
REFERENCE_ADDED, REFERENCE_DELETED = 4, 8
DATA_TYPE_CHANGED = 16


def _line() -> model.Submodel:
    return model.Submodel(
        LINE_ID,
        id_short="Line",
        submodel_element=[
            model.Property("Speed", float, 1.5),
            model.Property("Mode", str, "auto"),
            model.SubmodelElementList(
                "Stations",
                model.SubmodelElementCollection,
                value=[
                    model.SubmodelElementCollection(None, value=[model.Property("Name", str, name)])
                    for name in ("cut", "bend", "weld")
                ],
            ),
        ],
    )


def _tool(strokes: int = 120) -> model.Submodel:
    return model.Submodel(
        TOOL_ID,
        id_short="Tool",
        submodel_element=[model.Property("Strokes", datatypes.Int, strokes), model.Property("Wear", float, 0.25)],
    )


def _shell(*submodel_ids: str) -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="https://example.com/assets/press7"),
        SHELL_ID,
        id_short="Press7",
        submodel={
            model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel_id),), model.Submodel)
            for submodel_id in submodel_ids
        },
    )


@pytest.fixture
def store() -> TwinStore:
    store = TwinStore()
    store.add_all([_line(), _shell(LINE_ID, TOOL_ID)])
    return store


@pytest.fixture
async def projection(
    store: TwinStore, tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> AsyncIterator[OpcUaProjection]:
    trust_client_certificate(tmp_path, opcua_client_certificate)
    async with OpcUaProjection(store, _settings(), tmp_path) as running:
        yield running


class _Recorder:
    """Receives data change notifications and GeneralModelChangeEvents of one client subscription."""

    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []
        self.events: list[list[ua.ModelChangeStructureDataType]] = []

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.values.append(data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        self.events.append(list(event.Changes or []))


def _id(projection: OpcUaProjection, text: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, text), cast(Any, projection.namespace_index))


def _element(client: Client, projection: OpcUaProjection, submodel_id: str, path: str) -> Node:
    return client.get_node(_id(projection, node_id_for(submodel_id, path)))


async def _subscribe_model_changes(client: Client, recorder: _Recorder) -> Any:
    subscription = await client.create_subscription(10, recorder)
    await subscription.subscribe_events(client.nodes.server, ObjectIds.GeneralModelChangeEventType)
    return subscription


async def _next_changes(recorder: _Recorder, count: int) -> dict[ua.NodeId, int]:
    await wait_until(lambda: len(recorder.events) >= count, within=2.0, what=f"model change event {count}")
    return {change.Affected: change.Verb for change in recorder.events[count - 1]}


async def _is_gone(node: Node) -> bool:
    try:
        await node.read_browse_name()
    except UaStatusCodeError as error:
        return bool(error.code == StatusCodes.BadNodeIdUnknown)
    return False


async def _organized(client: Client, projection: OpcUaProjection) -> list[ua.NodeId]:
    shell = client.get_node(_id(projection, shell_node_id(SHELL_ID)))
    organized = await shell.get_referenced_nodes(ObjectIds.Organizes, ua.BrowseDirection.Forward)
    return [node.nodeid for node in organized]


async def test_submodels_created_and_deleted_through_the_store_appear_and_vanish(
    projection: OpcUaProjection, store: TwinStore, opcua_client_certificate: ClientCertificate
) -> None:
    ns = projection.namespace_index
    tool_node = _id(projection, submodel_node_id(TOOL_ID))
    shell_node = _id(projection, shell_node_id(SHELL_ID))
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        assert tool_node not in await _organized(client, projection)
        recorder = _Recorder()
        await _subscribe_model_changes(client, recorder)
        submodels = await client.nodes.objects.get_child([f"{ns}:AASEnvironment", f"{ns}:Submodels"])

        await store.create(_tool())
        tool = await eventually(
            lambda: _child(submodels, ua.QualifiedName(TOOL_ID, ns)), lambda node: node is not None, within=1.0
        )
        strokes = await tool.get_child(f"{ns}:Strokes")
        assert await strokes.read_data_type_as_variant_type() == ua.VariantType.Int32
        assert await strokes.read_value() == 120
        assert tool_node in await _organized(client, projection)
        created = await _next_changes(recorder, 1)
        assert created[tool_node] == NODE_ADDED | REFERENCE_ADDED
        assert created[_id(projection, "AASEnvironment.Submodels")] == REFERENCE_ADDED
        assert created[shell_node] == REFERENCE_ADDED

        await store.delete(TOOL_ID)
        await eventually(lambda: _is_gone(strokes), bool, within=1.0)
        assert await _is_gone(tool)
        assert tool_node not in await _organized(client, projection)
        deleted = await _next_changes(recorder, 2)
        assert deleted[tool_node] & NODE_DELETED
        assert deleted[shell_node] == REFERENCE_DELETED

        await store.create(_tool())
        recreated = await _next_changes(recorder, 3)
        assert recreated[tool_node] == NODE_ADDED | REFERENCE_ADDED
        assert tool_node in await _organized(client, projection)

        await store.replace(_shell(LINE_ID))
        unlinked = await _next_changes(recorder, 4)
        assert unlinked == {shell_node: REFERENCE_DELETED, tool_node: REFERENCE_DELETED}
        line_node = _id(projection, submodel_node_id(LINE_ID))
        assert await _organized(client, projection) == [line_node]
        assert await _child(submodels, ua.QualifiedName(TOOL_ID, ns)) is not None


async def _child(parent: Node, browse_name: ua.QualifiedName) -> Node | None:
    try:
        return await parent.get_child(browse_name)
    except UaStatusCodeError:
        return None


async def test_elements_added_replaced_and_deleted_follow_while_values_keep_flowing(
    projection: OpcUaProjection, store: TwinStore, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        recorder = _Recorder()
        subscription = await _subscribe_model_changes(client, recorder)
        speed = _element(client, projection, LINE_ID, "Speed")
        await subscription.subscribe_data_change(speed)
        await wait_until(lambda: len(recorder.values) == 1, what="the initial value of Speed")
        line_node = _id(projection, submodel_node_id(LINE_ID))

        await store.create_element(LINE_ID, None, model.Property("Temperature", datatypes.Short, 21))
        temperature = _element(client, projection, LINE_ID, "Temperature")
        assert await eventually(temperature.read_value, lambda value: value == 21, within=1.0) == 21
        assert await temperature.read_data_type_as_variant_type() == ua.VariantType.Int16
        added = await _next_changes(recorder, 1)
        assert added == {temperature.nodeid: NODE_ADDED, line_node: REFERENCE_ADDED}

        await store.replace_element(LINE_ID, "Mode", model.Property("Mode", datatypes.Int, 3))
        mode = _element(client, projection, LINE_ID, "Mode")
        replaced = await _next_changes(recorder, 2)
        assert replaced == {
            mode.nodeid: NODE_ADDED | NODE_DELETED | DATA_TYPE_CHANGED,
            line_node: REFERENCE_ADDED | REFERENCE_DELETED,
        }
        assert await mode.read_data_type_as_variant_type() == ua.VariantType.Int32
        assert await mode.read_value() == 3

        await store.delete_element(LINE_ID, "Temperature")
        deleted = await _next_changes(recorder, 3)
        assert deleted == {temperature.nodeid: NODE_DELETED, line_node: REFERENCE_DELETED}
        with pytest.raises(UaStatusCodeError) as gone:
            await temperature.read_value()
        assert gone.value.code == StatusCodes.BadNodeIdUnknown

        await store.delete_element(LINE_ID, "Stations[0]")
        await _next_changes(recorder, 4)
        assert await _element(client, projection, LINE_ID, "Stations[0].Name").read_value() == "bend"
        assert await _element(client, projection, LINE_ID, "Stations[1].Name").read_value() == "weld"
        assert await _is_gone(_element(client, projection, LINE_ID, "Stations[2]"))

        source_time = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
        store.apply(ValueChanged(LINE_ID, "Speed", 2.25, source_time, origin="device:test"))
        await wait_until(lambda: len(recorder.values) == 2, within=1.0, what="the new Speed after the changes")
        assert value_of(recorder.values[1]) == 2.25
        assert recorder.values[1].SourceTimestamp == source_time

        changed = _line()
        changed_speed = changed.submodel_element.get_object_by_attribute("id_short", "Speed")
        assert isinstance(changed_speed, model.Property)
        changed_speed.value = 3.5
        await store.replace(changed)
        await wait_until(lambda: len(recorder.values) == 3, within=1.0, what="Speed from the replaced submodel")
        assert value_of(recorder.values[2]) == 3.5
        assert status_of(recorder.values[2]) == StatusCodes.Good, "the monitored item survived the replace"
        assert await _element(client, projection, LINE_ID, "Stations[2].Name").read_value() == "weld"


async def test_range_file_blob_and_references_are_readable(
    projection: OpcUaProjection, store: TwinStore, opcua_client_certificate: ClientCertificate
) -> None:
    target = model.ModelReference(
        (model.Key(model.KeyTypes.SUBMODEL, LINE_ID), model.Key(model.KeyTypes.PROPERTY, "Speed")), model.Property
    )
    elements: list[model.SubmodelElement] = [
        model.Range("SpeedLimits", float, min=0.5, max=4.0),
        model.File("Manual", "application/pdf", "/aasx/files/manual.pdf"),
        model.Blob("Logo", "image/png", b"\x89PNG"),
        model.ReferenceElement("SpeedSource", target),
        model.RelationshipElement("Drives", target, target),
    ]
    for element in elements:
        await store.create_element(LINE_ID, None, element)
    ns = projection.types_namespace_index
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        limits = _element(client, projection, LINE_ID, "SpeedLimits")
        await eventually(lambda: _child(limits, ua.QualifiedName("Max", ns)), lambda node: node is not None, within=1.0)
        maximum = await limits.get_child(f"{ns}:Max")
        assert await maximum.read_data_type_as_variant_type() == ua.VariantType.Double
        assert await maximum.read_value() == 4.0
        assert await (await limits.get_child(f"{ns}:Min")).read_value() == 0.5
        manual = _element(client, projection, LINE_ID, "Manual")
        assert await (await manual.get_child(f"{ns}:Value")).read_value() == "/aasx/files/manual.pdf"
        assert await (await manual.get_child(f"{ns}:ContentType")).read_value() == "application/pdf"
        logo = await eventually(_element(client, projection, LINE_ID, "Logo").read_value, bool, within=1.0)
        assert logo == b"\x89PNG"
        expected = f"[ModelRef](Submodel){LINE_ID}, (Property)Speed"
        assert await _element(client, projection, LINE_ID, "SpeedSource").read_value() == expected
        drives = _element(client, projection, LINE_ID, "Drives")
        assert await (await drives.get_child(f"{ns}:First")).read_value() == expected


def test_planning_an_element_gives_its_subtree_only_parents_first() -> None:
    store = TwinStore()
    store.add(_line())
    nodes = plan_element(LINE_ID, "Stations[1]", store.element(LINE_ID, "Stations[1]"), dict(store.states()), {})
    assert [node.node_id for node in nodes] == [
        node_id_for(LINE_ID, "Stations[1]"),
        node_id_for(LINE_ID, "Stations[1].Name"),
    ]
    assert isinstance(nodes[0], ObjectNode)
    assert nodes[0].parent_id == node_id_for(LINE_ID, "Stations")
    assert isinstance(nodes[1], VariableNode)
    assert nodes[1].element == (LINE_ID, "Stations[1].Name")
    assert reference_text(model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, "urn:x"),))) == (
        "[ExternalRef](GlobalReference)urn:x"
    )


async def test_a_projection_that_fell_behind_resynchronizes_with_the_store(
    projection: OpcUaProjection,
    store: TwinStore,
    opcua_client_certificate: ClientCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _session(projection.endpoint_url, opcua_client_certificate, VIEWER) as client:
        recorder = _Recorder()
        await _subscribe_model_changes(client, recorder)
        await store.create_element(LINE_ID, None, model.Property("Pressure", float, 2.0))
        source_time = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
        for step in range(10_001):
            store.apply(ValueChanged(LINE_ID, "Speed", float(step), source_time, origin="device:test"))
        assert any("opcua falls behind" in record.getMessage() for record in caplog.records), "the creation was dropped"
        pressure = _element(client, projection, LINE_ID, "Pressure")
        assert await eventually(pressure.read_value, lambda value: value == 2.0, within=5.0) == 2.0
        speed = _element(client, projection, LINE_ID, "Speed")
        assert await eventually(speed.read_value, lambda value: value == 10_000.0, within=5.0) == 10_000.0
        resynchronized = await _next_changes(recorder, 1)
        assert resynchronized[pressure.nodeid] == NODE_ADDED

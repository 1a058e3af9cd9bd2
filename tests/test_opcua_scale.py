"""The projection at scale: bulk AddNodes equals asyncua's own, and a flat 10,000-property submodel starts fast."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model

from aas_server.config import OpcUaSettings, SecurityPolicyName
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.bulk_nodes import BulkNodeAdder
from aas_server.store.twin_store import TwinStore

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


def _object(
    prefix: str, name: str, parent: ua.NodeId, reference: int, type_definition: int = ObjectIds.BaseObjectType
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = _id(f"{prefix}.{name}", 2)
    item.ParentNodeId = parent
    item.ReferenceTypeId = _id(reference)
    item.BrowseName = ua.QualifiedName(name, 2)
    item.NodeClass = ua.NodeClass.Object
    item.TypeDefinition = _id(type_definition)
    attributes = ua.ObjectAttributes()
    attributes.DisplayName = ua.LocalizedText(name)
    attributes.Description = ua.LocalizedText(f"the {name}", "en")
    attributes.EventNotifier = 0
    item.NodeAttributes = attributes
    return item


def _variable(
    prefix: str,
    name: str,
    parent: str,
    reference: int,
    value: ua.Variant,
    *,
    type_definition: int = ObjectIds.BaseDataVariableType,
    namespace: int = 2,
    writable: bool = False,
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = _id(f"{prefix}.{parent}.{name}", 2)
    item.ParentNodeId = _id(f"{prefix}.{parent}", 2)
    item.ReferenceTypeId = _id(reference)
    item.BrowseName = ua.QualifiedName(name, namespace)
    item.NodeClass = ua.NodeClass.Variable
    item.TypeDefinition = _id(type_definition)
    attributes = ua.VariableAttributes()
    attributes.DisplayName = ua.LocalizedText(name)
    attributes.Value = value
    attributes.DataType = _id(value.VariantType.value)
    attributes.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if writable else 0)
    attributes.AccessLevel = access
    attributes.UserAccessLevel = access
    item.NodeAttributes = attributes
    return item


def _items(prefix: str) -> list[ua.AddNodesItem]:
    """Every case asyncua's AddNodes distinguishes, with node ids under ``prefix``."""
    folder = _object(prefix, "Folder", _id(ObjectIds.ObjectsFolder), ObjectIds.Organizes, ObjectIds.FolderType)
    method = ua.AddNodesItem()
    method.RequestedNewNodeId = _id(f"{prefix}.Folder.Machine.Start", 2)
    method.ParentNodeId = _id(f"{prefix}.Folder.Machine", 2)
    method.ReferenceTypeId = _id(ObjectIds.HasComponent)
    method.BrowseName = ua.QualifiedName("Start", 2)
    method.NodeClass = ua.NodeClass.Method
    method_attributes = ua.MethodAttributes()
    method_attributes.DisplayName = ua.LocalizedText("Start")
    method_attributes.Executable = True
    method_attributes.UserExecutable = True
    method.NodeAttributes = method_attributes
    machine = _object(prefix, "Machine", folder.RequestedNewNodeId, ObjectIds.Organizes)
    machine.RequestedNewNodeId = _id(f"{prefix}.Folder.Machine", 2)
    orphan = _variable(prefix, "Orphan", "Nowhere", ObjectIds.HasComponent, ua.Variant(1.0, ua.VariantType.Double))
    untyped = _variable(prefix, "Untyped", "Folder", ObjectIds.HasComponent, ua.Variant(1, ua.VariantType.Int32))
    untyped.TypeDefinition = _id("no such type", 2)
    speed = "Folder.Machine"
    clash = _variable(prefix, "SemanticId", speed, ObjectIds.HasComponent, ua.Variant("x", ua.VariantType.String))
    clash.RequestedNewNodeId = _id(f"{prefix}.{speed}.Clash", 2)
    units = ua.EUInformation(UnitId=5457219, DisplayName=ua.LocalizedText("°C"))
    return [
        folder,
        machine,
        _variable(
            prefix, "Speed", speed, ObjectIds.HasComponent, ua.Variant(1.5, ua.VariantType.Double), writable=True
        ),
        _variable(
            prefix,
            "Temperature",
            speed,
            ObjectIds.HasComponent,
            ua.Variant(20.0, ua.VariantType.Double),
            type_definition=ObjectIds.AnalogUnitType,
        ),
        _variable(
            prefix,
            "EngineeringUnits",
            f"{speed}.Temperature",
            ObjectIds.HasProperty,
            ua.Variant(units, ua.VariantType.ExtensionObject),
            type_definition=ObjectIds.PropertyType,
            namespace=0,
        ),
        _variable(
            prefix,
            "SemanticId",
            speed,
            ObjectIds.HasProperty,
            ua.Variant("0173-1#02-AAV232#002", ua.VariantType.String),
            type_definition=ObjectIds.PropertyType,
        ),
        clash,
        _variable(prefix, "Speed", speed, ObjectIds.HasComponent, ua.Variant(2.0, ua.VariantType.Double)),
        method,
        orphan,
        untyped,
        _variable(prefix, "Empty", speed, ObjectIds.HasComponent, ua.Variant(None, ua.VariantType.String)),
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    server = Server()
    await server.init()
    yield server


def _same_node_id(prefix: str) -> Any:
    def translate(value: Any) -> Any:
        if isinstance(value, ua.NodeId) and isinstance(value.Identifier, str):
            return _id(value.Identifier.replace(f"{prefix}.", "asyncua.", 1), value.NamespaceIndex)
        return value

    return translate


def _references(server: Server, node_id: ua.NodeId, translate: Any) -> list[tuple[Any, ...]]:
    return [
        (
            reference.ReferenceTypeId,
            reference.IsForward,
            translate(reference.NodeId),
            reference.BrowseName,
            reference.DisplayName,
            reference.NodeClass,
            reference.TypeDefinition,
        )
        for reference in server.iserver.aspace[node_id].references
    ]


def _attributes(server: Server, node_id: ua.NodeId, translate: Any) -> dict[AttributeIds, Any]:
    attributes: dict[AttributeIds, Any] = {}
    for attribute, attribute_value in server.iserver.aspace[node_id].attributes.items():
        data_value = attribute_value.value
        assert data_value is not None
        variant = data_value.Value
        assert variant is not None
        stamped = (data_value.SourceTimestamp is not None, data_value.ServerTimestamp is not None)
        attributes[attribute] = (variant.VariantType, translate(variant.Value), variant.is_array, stamped)
    return attributes


async def test_bulk_add_nodes_gives_what_asyncua_add_nodes_gives(server: Server) -> None:
    expected = server.iserver.node_mgt_service.add_nodes(_items("asyncua"))
    results = BulkNodeAdder(server.iserver.aspace).add_nodes(_items("bulk"))
    assert [result.StatusCode.value for result in results] == [result.StatusCode.value for result in expected]
    assert {result.StatusCode.value for result in results} == {
        StatusCodes.Good,
        StatusCodes.BadNodeIdExists,
        StatusCodes.BadBrowseNameDuplicated,
        StatusCodes.BadParentNodeIdInvalid,
        StatusCodes.BadTypeDefinitionInvalid,
    }
    translate = _same_node_id("bulk")
    for result, reference_result in zip(results, expected, strict=True):
        if not result.StatusCode.is_good():
            continue
        node_id = result.AddedNodeId
        assert translate(node_id) == reference_result.AddedNodeId
        assert _attributes(server, node_id, translate) == _attributes(server, reference_result.AddedNodeId, translate)
        assert _references(server, node_id, translate) == _references(server, reference_result.AddedNodeId, translate)
    objects = _references(server, _id(ObjectIds.ObjectsFolder), translate)
    assert objects[-1] == objects[-2]

    again = BulkNodeAdder(server.iserver.aspace).add_nodes(_items("bulk")[:1])
    assert again[0].StatusCode.value == StatusCodes.BadNodeIdExists


async def test_a_planned_data_value_is_the_initial_value(server: Server) -> None:
    item = _variable("given", "Level", "Parent", ObjectIds.HasComponent, ua.Variant(0.0, ua.VariantType.Double))
    item.ParentNodeId = _id(ObjectIds.ObjectsFolder)
    planned = ua.DataValue(
        ua.Variant(7.5, ua.VariantType.Double),
        StatusCode=ua.StatusCode(cast(Any, ua.StatusCodes.UncertainInitialValue)),
    )
    (result,) = BulkNodeAdder(server.iserver.aspace).add_nodes([item], [planned])
    assert result.StatusCode.is_good()
    assert server.iserver.aspace.read_attribute_value(item.RequestedNewNodeId, AttributeIds.Value) == planned


async def test_ten_thousand_properties_in_one_submodel_start_quickly(tmp_path: Path) -> None:
    submodel_id = "urn:aas-server:tests:sm:flat"
    store = TwinStore()
    properties = [model.Property(f"P{index:05d}", float, float(index)) for index in range(10_000)]
    store.add(model.Submodel(submodel_id, id_short="Flat", submodel_element=properties))
    settings = OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], allow_anonymous_read=True)
    started = time.perf_counter()
    async with OpcUaProjection(store, settings, tmp_path) as projection:
        elapsed = time.perf_counter() - started
        async with Client(projection.endpoint_url, timeout=5) as client:
            last = client.get_node(_id(node_id_for(submodel_id, "P09999"), projection.namespace_index))
            assert await last.read_value() == 9999.0
            submodel = client.get_node(_id(f"{submodel_id}/$submodel", projection.namespace_index))
            children = await submodel.get_children(refs=ObjectIds.HasComponent)
            assert len(children) == 10_000
    assert elapsed < 8.0, f"start-up took {elapsed:.1f} s (asyncua's own AddNodes: over 30 s)"

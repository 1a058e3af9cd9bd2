"""Relationship elements as OPC UA references (AASRelationshipFirst/Second) to the nodes they relate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.common.node import Node
from basyx.aas import model

from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import shell_node_id, submodel_node_id
from aas_server.opcua.nodeset import export_address_space
from aas_server.opcua.types import TYPES_NAMESPACE_URI
from aas_server.store.twin_store import TwinStore
from tests.support import eventually
from tests.test_opcua_types import VIEWER, _import_into_a_fresh_server, _node, _session, _settings, _type

LINE_ID = "urn:example:sm:line"
SHELL_ID = "urn:example:aas:line"


def _element_reference(*keys: tuple[model.KeyTypes, str]) -> model.ModelReference[Any]:
    return model.ModelReference(
        (model.Key(model.KeyTypes.SUBMODEL, LINE_ID), *(model.Key(kind, value) for kind, value in keys)),
        model.Property,
    )


def _line() -> model.Submodel:
    return model.Submodel(
        LINE_ID,
        id_short="Line",
        submodel_element=[
            model.Property("Filler", float, 1.0),
            model.SubmodelElementList(
                "Stations",
                model.SubmodelElementCollection,
                value=[model.SubmodelElementCollection(None, value=[model.Property("Name", str, "capper")])],
            ),
            model.RelationshipElement(
                "Feeds",
                first=_element_reference((model.KeyTypes.PROPERTY, "Filler")),
                second=_element_reference(
                    (model.KeyTypes.SUBMODEL_ELEMENT_LIST, "Stations"),
                    (model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION, "0"),
                    (model.KeyTypes.PROPERTY, "Name"),
                ),
            ),
            model.AnnotatedRelationshipElement(
                "BelongsTo",
                first=model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, LINE_ID),), model.Submodel),
                second=model.ModelReference(
                    (model.Key(model.KeyTypes.ASSET_ADMINISTRATION_SHELL, SHELL_ID),), model.AssetAdministrationShell
                ),
            ),
            model.RelationshipElement(
                "Outside",
                first=model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, "urn:example:x"),)),
                second=_element_reference((model.KeyTypes.PROPERTY, "Missing")),
            ),
        ],
    )


def _shell() -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="urn:example:asset:line"), SHELL_ID, id_short="LineShell"
    )


@pytest.fixture
def store() -> TwinStore:
    store = TwinStore()
    store.add_all([_line(), _shell()])
    return store


@pytest.fixture
async def projection(store: TwinStore, tmp_path: Path) -> AsyncIterator[OpcUaProjection]:
    async with OpcUaProjection(store, _settings(), tmp_path) as running:
        yield running


async def _targets(node: Node, reference_type: ua.NodeId, *, forward: bool = True) -> set[str]:
    direction = ua.BrowseDirection.Forward if forward else ua.BrowseDirection.Inverse
    references = await node.get_references(reference_type, direction, includesubtypes=False)
    return {cast(str, reference.NodeId.Identifier) for reference in references}


async def test_a_relationship_references_the_nodes_it_relates(projection: OpcUaProjection) -> None:
    first, second = _type(projection, "AASRelationshipFirst"), _type(projection, "AASRelationshipSecond")
    async with _session(projection, VIEWER) as client:
        feeds = _node(client, projection, node_id_for(LINE_ID, "Feeds"))
        assert await _targets(feeds, first) == {node_id_for(LINE_ID, "Filler")}
        assert await _targets(feeds, second) == {node_id_for(LINE_ID, "Stations[0].Name")}
        (station_name,) = await feeds.get_referenced_nodes(second, ua.BrowseDirection.Forward, includesubtypes=False)
        assert await station_name.read_value() == "capper", "the reference reaches the target's own node"
        filler = _node(client, projection, node_id_for(LINE_ID, "Filler"))
        assert await _targets(filler, first, forward=False) == {node_id_for(LINE_ID, "Feeds")}
        belongs = _node(client, projection, node_id_for(LINE_ID, "BelongsTo"))
        assert await _targets(belongs, first) == {submodel_node_id(LINE_ID)}
        assert await _targets(belongs, second) == {shell_node_id(SHELL_ID)}
        outside = _node(client, projection, node_id_for(LINE_ID, "Outside"))
        assert await _targets(outside, first) == set(), "an external reference has no node"
        assert await _targets(outside, second) == set(), "nor has a reference to an element that is not there"
        assert await (await outside.get_child(f"{projection.types_namespace_index}:First")).read_value() == (
            "[ExternalRef](GlobalReference)urn:example:x"
        ), "the key chain stays readable as text"
        inverse_name = (await client.get_node(first).read_attribute(ua.AttributeIds.InverseName)).Value
        assert inverse_name is not None
        assert inverse_name.Value.Text == "AASRelationshipFirstOf"


async def test_the_reference_follows_its_target_and_its_relationship(
    projection: OpcUaProjection, store: TwinStore
) -> None:
    first, second = _type(projection, "AASRelationshipFirst"), _type(projection, "AASRelationshipSecond")
    async with _session(projection, VIEWER) as client:
        feeds = _node(client, projection, node_id_for(LINE_ID, "Feeds"))
        await store.delete_element(LINE_ID, "Filler")
        await eventually(lambda: _targets(feeds, first), lambda targets: targets == set())
        assert await _targets(feeds, second) == {node_id_for(LINE_ID, "Stations[0].Name")}

        await store.create_element(LINE_ID, None, model.Property("Filler", float, 2.0))
        await eventually(lambda: _targets(feeds, first), lambda targets: targets == {node_id_for(LINE_ID, "Filler")})

        retargeted = model.RelationshipElement(
            "Feeds",
            first=_element_reference((model.KeyTypes.PROPERTY, "Filler")),
            second=_element_reference((model.KeyTypes.SUBMODEL_ELEMENT_LIST, "Stations")),
        )
        await store.replace_element(LINE_ID, "Feeds", retargeted)
        await eventually(lambda: _targets(feeds, second), lambda targets: targets == {node_id_for(LINE_ID, "Stations")})
        name = _node(client, projection, node_id_for(LINE_ID, "Stations[0].Name"))
        assert await _targets(name, second, forward=False) == set(), "the old target lost its inverse reference"

        await store.delete_element(LINE_ID, "Feeds")
        filler = _node(client, projection, node_id_for(LINE_ID, "Filler"))
        await eventually(lambda: _targets(filler, first, forward=False), lambda sources: sources == set())


async def test_the_export_carries_the_relationship_references(caplog: pytest.LogCaptureFixture) -> None:
    content = export_address_space([_line(), _shell()], {}, "urn:example:relationships")
    server = await _import_into_a_fresh_server(content, caplog)
    namespaces = await server.get_namespace_array()
    index, types = namespaces.index("urn:example:relationships"), namespaces.index(TYPES_NAMESPACE_URI)

    def node(identifier: str) -> Node:
        return server.get_node(ua.NodeId(cast(Any, identifier), cast(Any, index)))

    first = ua.NodeId(cast(Any, "AASRelationshipFirst"), cast(Any, types))
    second = ua.NodeId(cast(Any, "AASRelationshipSecond"), cast(Any, types))
    feeds = node(node_id_for(LINE_ID, "Feeds"))
    assert await _targets(feeds, first) == {node_id_for(LINE_ID, "Filler")}
    assert await _targets(feeds, second) == {node_id_for(LINE_ID, "Stations[0].Name")}
    assert await _targets(node(node_id_for(LINE_ID, "Filler")), first, forward=False) == {node_id_for(LINE_ID, "Feeds")}
    assert await _targets(node(node_id_for(LINE_ID, "BelongsTo")), second) == {shell_node_id(SHELL_ID)}
    assert await _targets(node(node_id_for(LINE_ID, "Outside")), first) == set()

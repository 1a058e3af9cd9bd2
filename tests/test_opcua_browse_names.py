"""Browse paths of the demo plant name exactly one node each, and variables carry display locale, sampling and range.

SCADA systems and OPC UA clients address tags by browse path (TranslateBrowsePathsToNodeIds). The demo
has seven ``OperationalData`` submodels, seven ``Nameplate`` submodels and more; each path from
``Objects`` to a variable must still lead to that one variable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import yaml
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from basyx.aas import model
from pydantic import SecretStr

from aas_server.cli import demo_settings_path
from aas_server.config import HubSettings, OpcUaSettings, Role, UserSettings, load_settings
from aas_server.opcua import OpcUaProjection
from aas_server.opcua.node_ids import (
    SUBMODELS_FOLDER,
    element_property_node_id,
    node_id_for,
    submodel_node_id,
    submodel_property_node_id,
)
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import TwinStore
from tests.support import CLIENT_URI, ROOT, ClientCertificate, eventually, trust_client_certificate, value_of

MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
SPEED_POINT = "filler-motor.RotationalSpeed"
SPEED_RANGE = {"min": 0.0, "max": 3000.0}
_BATCH = 200


def _demo_settings(data_dir: Path) -> HubSettings:
    """The demo on OS-chosen ports, its mapping with ``limits`` on the filler motor's speed."""
    settings = load_settings(demo_settings_path())
    mapping = yaml.safe_load((ROOT / "mappings" / "bottling-line.yaml").read_text(encoding="utf-8"))
    (speed,) = [point for point in mapping["points"] if point["name"] == SPEED_POINT]
    speed["limits"] = SPEED_RANGE
    mapping_path = data_dir.parent / "bottling-line.yaml"
    mapping_path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "mappings": [mapping_path],
            "rest": settings.rest.model_copy(update={"port": 0}),
            "opcua": settings.opcua.model_copy(update={"port": 0}),
            "simulator": settings.simulator.model_copy(update={"port": 0}),
        }
    )


@asynccontextmanager
async def _viewer(
    url: str, certificate: ClientCertificate, user: str = "viewer", password: str = "demo-viewer"
) -> AsyncIterator[Client]:
    client = Client(url, timeout=10)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(user)
    client.set_password(password)
    async with client:
        yield client


def _browse_description(node_id: ua.NodeId) -> ua.BrowseDescription:
    return ua.BrowseDescription(
        NodeId=node_id,
        BrowseDirection=ua.BrowseDirection.Forward,
        ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HierarchicalReferences)),
        IncludeSubtypes=True,
        NodeClassMask=0,
        ResultMask=ua.BrowseResultMask.All,
    )


async def _walk(client: Client, root: ua.NodeId) -> dict[ua.NodeId, tuple[list[ua.QualifiedName], ua.NodeClass]]:
    """Every node below ``root`` by hierarchical references, with the browse path it was first reached by."""
    found: dict[ua.NodeId, tuple[list[ua.QualifiedName], ua.NodeClass]] = {}
    level: list[tuple[ua.NodeId, list[ua.QualifiedName]]] = [(root, [])]
    while level:
        following: list[tuple[ua.NodeId, list[ua.QualifiedName]]] = []
        for start in range(0, len(level), _BATCH):
            batch = level[start : start + _BATCH]
            results = await client.uaclient.browse(
                ua.BrowseParameters(NodesToBrowse=[_browse_description(node) for node, _ in batch])
            )
            for (_, path), result in zip(batch, results, strict=True):
                assert result.StatusCode.is_good(), result.StatusCode
                assert not result.ContinuationPoint
                for reference in result.References:
                    child = ua.NodeId(reference.NodeId.Identifier, reference.NodeId.NamespaceIndex)
                    if child in found or child == root:
                        continue
                    child_path = [*path, reference.BrowseName]
                    found[child] = (child_path, reference.NodeClass)
                    following.append((child, child_path))
        level = following
    return found


def _browse_path(start: ua.NodeId, names: list[ua.QualifiedName]) -> ua.BrowsePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(cast(Any, ObjectIds.HierarchicalReferences)),
            IsInverse=cast(Any, False),
            IncludeSubtypes=cast(Any, True),
            TargetName=name,
        )
        for name in names
    ]
    return ua.BrowsePath(StartingNode=start, RelativePath=ua.RelativePath(Elements=elements))


async def test_every_variable_path_of_the_demo_plant_names_one_node(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    settings = _demo_settings(tmp_path / "data")
    async with Hub(settings) as hub:
        assert hub.opcua is not None
        namespace = hub.opcua.namespace_index
        submodel_ids = {submodel.id for submodel in hub.store.submodels()}
        async with _viewer(hub.opcua.endpoint_url, opcua_client_certificate) as client:
            objects = ua.NodeId(cast(Any, ObjectIds.ObjectsFolder))
            submodels_folder = ua.NodeId(cast(Any, SUBMODELS_FOLDER), cast(Any, namespace))

            async def projected_submodels() -> set[str]:
                (result,) = await client.uaclient.browse(
                    ua.BrowseParameters(NodesToBrowse=[_browse_description(submodels_folder)])
                )
                return {str(reference.NodeId.Identifier) for reference in result.References}

            await eventually(
                projected_submodels, lambda found: found == {submodel_node_id(i) for i in submodel_ids}, 10.0
            )
            nodes = await _walk(client, objects)
            aas_nodes = {node: found for node, found in nodes.items() if node.NamespaceIndex == namespace}
            variables = [
                (node, path) for node, (path, node_class) in aas_nodes.items() if node_class == ua.NodeClass.Variable
            ]
            assert len(variables) > 500, len(variables)
            operational = [
                node
                for node, (path, _) in aas_nodes.items()
                if len(path) == 3 and str(node.Identifier).endswith(":operational-data/$submodel")
            ]
            assert len(operational) >= 7

            for start in range(0, len(variables), _BATCH):
                batch = variables[start : start + _BATCH]
                results = await client.uaclient.translate_browsepaths_to_nodeids(
                    [_browse_path(objects, path) for _, path in batch]
                )
                for (node, path), result in zip(batch, results, strict=True):
                    shown = "/".join(f"{name.NamespaceIndex}:{name.Name}" for name in path)
                    assert result.StatusCode.is_good(), (shown, result.StatusCode)
                    targets = [
                        (target.TargetId.Identifier, target.TargetId.NamespaceIndex) for target in result.Targets
                    ]
                    assert targets == [(node.Identifier, node.NamespaceIndex)], shown

            # Display names carry a locale; the submodel shows its idShort, its browse name is its id.
            display_names = await client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[
                        ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.DisplayName) for node in list(aas_nodes)
                    ]
                )
            )
            assert all(value_of(name).Locale == "en" for name in display_names)
            motor = ua.NodeId(cast(Any, submodel_node_id(MOTOR)), cast(Any, namespace))
            motor_path, _ = aas_nodes[motor]
            assert motor_path[-1] == ua.QualifiedName(MOTOR, namespace)
            motor_name = value_of((await client.uaclient.read(_read(motor, AttributeIds.DisplayName)))[0])
            assert motor_name.Text == "OperationalData"

            # MinimumSamplingInterval is the poll interval; EURange the mapping's limits.
            speed = ua.NodeId(cast(Any, node_id_for(MOTOR, "RotationalSpeed")), cast(Any, namespace))
            hours = ua.NodeId(cast(Any, node_id_for(MOTOR, "OperatingHours")), cast(Any, namespace))
            nameplate = next(
                node
                for node, (path, _) in aas_nodes.items()
                if str(node.Identifier).endswith(":nameplate/ManufacturerName")
            )
            intervals = await client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[
                        ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.MinimumSamplingInterval)
                        for node in (speed, hours, nameplate)
                    ]
                )
            )
            assert [value_of(interval) for interval in intervals] == [100.0, 1000.0, 0.0]
            speed_node = client.get_node(speed)
            eu_range = await (await speed_node.get_child("0:EURange")).read_value()
            assert (eu_range.Low, eu_range.High) == (SPEED_RANGE["min"], SPEED_RANGE["max"])
            hours_children = await client.get_node(hours).get_children()
            assert "EURange" not in {(await child.read_browse_name()).Name for child in hours_children}


def _read(node: ua.NodeId, attribute: int) -> ua.ReadParameters:
    return ua.ReadParameters(NodesToRead=[ua.ReadValueId(NodeId=node, AttributeId=attribute)])


async def test_elements_named_like_type_members_are_kept_and_told_apart_by_namespace(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    submodel_id = "urn:test:sm:members"
    semantic_id = model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, "urn:test:concept:1"),))
    store = TwinStore()
    store.add(
        model.Submodel(
            submodel_id,
            id_short="Members",
            semantic_id=semantic_id,
            submodel_element=[
                model.Property("Id", str, "element Id"),
                model.Property("SemanticId", str, "element SemanticId"),
                model.SubmodelElementCollection(
                    "Box", semantic_id=semantic_id, value=[model.Property("SemanticId", str, "child SemanticId")]
                ),
            ],
        )
    )
    trust_client_certificate(tmp_path, opcua_client_certificate)
    user = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
    async with (
        OpcUaProjection(store, OpcUaSettings(port=0, users=[user]), tmp_path) as projection,
        _viewer(projection.endpoint_url, opcua_client_certificate, "victor", "viewer-secret") as client,
    ):
        ns, types = projection.namespace_index, projection.types_namespace_index
        root = [ua.QualifiedName("AASEnvironment", ns), ua.QualifiedName("Submodels", ns)]
        submodel = [*root, ua.QualifiedName(submodel_id, ns)]
        cases = {
            submodel_property_node_id(submodel_id, "Id"): [*submodel, ua.QualifiedName("Id", types)],
            node_id_for(submodel_id, "Id"): [*submodel, ua.QualifiedName("Id", ns)],
            submodel_property_node_id(submodel_id, "SemanticId"): [*submodel, ua.QualifiedName("SemanticId", types)],
            node_id_for(submodel_id, "SemanticId"): [*submodel, ua.QualifiedName("SemanticId", ns)],
            element_property_node_id(submodel_id, "Box", "SemanticId"): [
                *submodel,
                ua.QualifiedName("Box", ns),
                ua.QualifiedName("SemanticId", types),
            ],
            node_id_for(submodel_id, "Box.SemanticId"): [
                *submodel,
                ua.QualifiedName("Box", ns),
                ua.QualifiedName("SemanticId", ns),
            ],
        }
        objects = ua.NodeId(cast(Any, ObjectIds.ObjectsFolder))
        results = await client.uaclient.translate_browsepaths_to_nodeids(
            [_browse_path(objects, path) for path in cases.values()]
        )
        for (expected, path), result in zip(cases.items(), results, strict=True):
            assert result.StatusCode.is_good(), (path[-1], result.StatusCode)
            assert [target.TargetId.Identifier for target in result.Targets] == [expected]
        values = await client.uaclient.read(
            ua.ReadParameters(
                NodesToRead=[
                    ua.ReadValueId(NodeId=ua.NodeId(cast(Any, node), cast(Any, ns)), AttributeId=AttributeIds.Value)
                    for node in cases
                ]
            )
        )
        assert [value_of(value) for value in values] == [
            submodel_id,
            "element Id",
            "urn:test:concept:1",
            "element SemanticId",
            "urn:test:concept:1",
            "child SemanticId",
        ]

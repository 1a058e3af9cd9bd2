"""The AAS v3 type model, typed instances, dictionary entries, Operations as Methods and the NodeSet2 export."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from lxml import etree
from pydantic import SecretStr

from aas_server.cli import demo_settings_path, main
from aas_server.config import OpcUaSettings, Role, SecurityPolicyName, UserSettings, load_settings
from aas_server.errors import DeviceTimeoutError
from aas_server.exchange import read_package_file
from aas_server.mapping.schema import load_mapping
from aas_server.model.paths import walk
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import DICTIONARY_FOLDER, shell_node_id, submodel_node_id
from aas_server.opcua.nodeset import committed_types_path, export_address_space, types_nodeset
from aas_server.opcua.types import TYPE_MODEL, TYPES_NAMESPACE_URI, TypeNodeClass
from aas_server.runtime.hub import load_model_files
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import ElementBinding, TwinStore

SUBMODEL_ID = "urn:example:sm:typed"
SHELL_ID = "urn:example:aas:typed"
IRDI = "0173-1#02-AAV232#002"
IRI = "https://example.com/concepts/Motor"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)


def _standard(identifier: int) -> ua.NodeId:
    """A namespace-0 node id."""
    return ua.NodeId(cast(Any, identifier))


def _reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _submodel() -> model.Submodel:
    return model.Submodel(
        SUBMODEL_ID,
        id_short="Typed",
        semantic_id=_reference("https://example.com/sm/typed/1/0"),
        submodel_element=[
            model.Property("Temperature", float, 20.5, semantic_id=_reference(IRDI)),
            model.Property("Inlet", float, 18.0, semantic_id=_reference(IRDI)),
            model.SubmodelElementCollection(
                "Motor", value=[model.Property("Speed", model.datatypes.Int, 1500)], semantic_id=_reference(IRI)
            ),
            model.Range("Limits", float, min=0.0, max=4.0),
            model.Operation(
                "Add",
                input_variable=[
                    model.Property("a", model.datatypes.Int, 0),
                    model.Property("b", model.datatypes.Int, 0),
                ],
                output_variable=[model.Property("sum", model.datatypes.Int, 0)],
            ),
            model.Operation(
                "Scale",
                input_variable=[model.Property("factor", float, 1.0)],
                in_output_variable=[model.Property("value", float, 0.0)],
            ),
            model.Operation("Reboot"),
            model.Operation("Home"),
        ],
    )


async def _add(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"sum": inputs["a"] + inputs["b"]}


async def _scale(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"value": inputs["value"] * inputs["factor"]}


async def _reboot(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    raise DeviceTimeoutError("the controller did not answer")


def _settings() -> OpcUaSettings:
    return OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], users=[OPERATOR, VIEWER])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub-data")


@pytest.fixture
async def projection(data_dir: Path) -> AsyncIterator[OpcUaProjection]:
    submodel = _submodel()
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:example:asset:1"),
        SHELL_ID,
        id_short="Machine",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    store = TwinStore()
    store.add_all([submodel, shell])
    operations = OperationRegistry()
    operations.register(SUBMODEL_ID, "Add", _add)
    operations.register(SUBMODEL_ID, "Scale", _scale)
    operations.register(SUBMODEL_ID, "Reboot", _reboot)
    async with OpcUaProjection(store, _settings(), data_dir, operations=operations) as running:
        yield running


@asynccontextmanager
async def _session(projection: OpcUaProjection, user: UserSettings) -> AsyncIterator[Client]:
    client = Client(projection.endpoint_url, timeout=5)
    client.set_user(user.name)
    client.set_password(user.password.get_secret_value())
    async with client:
        yield client


def _node(client: Client, projection: OpcUaProjection, identifier: str) -> Node:
    return client.get_node(ua.NodeId(cast(Any, identifier), cast(Any, projection.namespace_index)))


def _type(projection: OpcUaProjection, name: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, name), cast(Any, projection.types_namespace_index))


# --- the type model -------------------------------------------------------------------------------


def test_the_committed_type_nodeset_is_what_the_generator_writes() -> None:
    assert committed_types_path().read_bytes() == types_nodeset(), "run: aas-server nodeset types " + str(
        committed_types_path()
    )


def test_the_cli_writes_the_type_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "types.xml"
    assert main(["nodeset", "types", str(output)]) == 0
    assert output.read_bytes() == types_nodeset()
    assert TYPES_NAMESPACE_URI in capsys.readouterr().out


def test_type_names_follow_the_aas_core_v3_nodeset(reference: Path) -> None:
    parsed = etree.parse(str(reference / "nodesets" / "aas-core-opc-ua.v3.nodeset.xml"))
    aas_core = {
        element.get("BrowseName").split(":", 1)[1]
        for element in parsed.getroot().iterchildren("{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}UAObjectType")
    }
    concrete = {
        definition.browse_name
        for definition in TYPE_MODEL
        if not definition.abstract and definition.node_class is TypeNodeClass.OBJECT_TYPE
    }
    assert concrete <= aas_core
    variable_types = {d.browse_name for d in TYPE_MODEL if d.node_class is TypeNodeClass.VARIABLE_TYPE}
    assert variable_types <= aas_core, "the variable-shaped kinds keep aas-core's names too"


def test_every_submodel_element_kind_has_a_type() -> None:
    names = {definition.browse_name for definition in TYPE_MODEL}
    kinds = [
        "Property",
        "MultiLanguageProperty",
        "Range",
        "File",
        "Blob",
        "ReferenceElement",
        "RelationshipElement",
        "AnnotatedRelationshipElement",
        "SubmodelElementCollection",
        "SubmodelElementList",
        "Entity",
        "BasicEventElement",
        "Operation",
        "Capability",
        "AssetAdministrationShell",
        "AssetInformation",
        "Submodel",
        "Reference",
        "Qualifier",
        "ConceptDescription",
    ]
    assert {f"AAS{kind}Type" for kind in kinds} <= names


async def test_instances_are_typed_by_the_type_model(projection: OpcUaProjection) -> None:
    async with _session(projection, VIEWER) as client:
        types = projection.types_namespace_index
        submodel = _node(client, projection, submodel_node_id(SUBMODEL_ID))
        assert await submodel.read_type_definition() == _type(projection, "AASSubmodelType")
        assert await (await submodel.get_child(f"{types}:Id")).read_value() == SUBMODEL_ID
        shell = _node(client, projection, shell_node_id(SHELL_ID))
        assert await shell.read_type_definition() == _type(projection, "AASAssetAdministrationShellType")
        information = await shell.get_child(f"{types}:AssetInformation")
        assert await information.read_type_definition() == _type(projection, "AASAssetInformationType")
        assert await (await information.get_child(f"{types}:AssetKind")).read_value() == "Instance"
        expected = {
            "Temperature": "AASPropertyType",
            "Motor": "AASSubmodelElementCollectionType",
            "Limits": "AASRangeType",
            "Add": "AASOperationType",
        }
        for path, type_name in expected.items():
            node = _node(client, projection, node_id_for(SUBMODEL_ID, path))
            assert await node.read_type_definition() == _type(projection, type_name), path
        temperature = _node(client, projection, node_id_for(SUBMODEL_ID, "Temperature"))
        assert await temperature.read_data_type_as_variant_type() == ua.VariantType.Double
        assert await (await temperature.get_child(f"{types}:SemanticId")).read_value() == IRDI

        property_type = client.get_node(_type(projection, "AASPropertyType"))
        assert await property_type.read_node_class() == ua.NodeClass.VariableType
        supertype = await property_type.get_referenced_nodes(ObjectIds.HasSubtype, ua.BrowseDirection.Inverse)
        assert [node.nodeid for node in supertype] == [_standard(ObjectIds.BaseDataVariableType)]
        declared = await property_type.get_child(f"{types}:SemanticId")
        assert await declared.read_browse_name() == ua.QualifiedName("SemanticId", types)
        chain = []
        current = client.get_node(_type(projection, "AASRangeType"))
        while current.nodeid != _standard(ObjectIds.BaseObjectType):
            chain.append((await current.read_browse_name()).Name)
            (current,) = await current.get_referenced_nodes(ObjectIds.HasSubtype, ua.BrowseDirection.Inverse)
        assert chain == ["AASRangeType", "AASSubmodelElementType", "AASReferableType"]


async def test_semantic_ids_are_dictionary_entries(projection: OpcUaProjection) -> None:
    async with _session(projection, VIEWER) as client:

        async def entry_of(identifier: str) -> Node:
            (entry,) = await _node(client, projection, identifier).get_referenced_nodes(ObjectIds.HasDictionaryEntry)
            return entry

        temperature = await entry_of(node_id_for(SUBMODEL_ID, "Temperature"))
        assert await temperature.read_browse_name() == ua.QualifiedName(IRDI, projection.namespace_index)
        assert await temperature.read_type_definition() == _standard(ObjectIds.IrdiDictionaryEntryType)
        inlet = await entry_of(node_id_for(SUBMODEL_ID, "Inlet"))
        assert inlet.nodeid == temperature.nodeid, "one entry per semanticId"
        motor = await entry_of(node_id_for(SUBMODEL_ID, "Motor"))
        assert await motor.read_type_definition() == _standard(ObjectIds.UriDictionaryEntryType)
        submodel = await entry_of(submodel_node_id(SUBMODEL_ID))
        assert (await submodel.read_browse_name()).Name == "https://example.com/sm/typed/1/0"
        folder = _node(client, projection, DICTIONARY_FOLDER)
        assert await folder.read_type_definition() == _standard(ObjectIds.DictionaryFolderType)
        entries = {node.nodeid for node in await folder.get_children()}
        assert {temperature.nodeid, motor.nodeid, submodel.nodeid} <= entries
        assert not await _node(client, projection, node_id_for(SUBMODEL_ID, "Limits")).get_referenced_nodes(
            ObjectIds.HasDictionaryEntry
        )


# --- Operations as Methods ------------------------------------------------------------------------


def _int32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Int32)


async def _method(client: Client, projection: OpcUaProjection, path: str) -> tuple[Node, Node]:
    operation = _node(client, projection, node_id_for(SUBMODEL_ID, path))
    return operation, await operation.get_child(f"{projection.types_namespace_index}:Invoke")


async def test_an_operation_is_a_method_that_runs_its_handler(projection: OpcUaProjection) -> None:
    async with _session(projection, OPERATOR) as client:
        operation, invoke = await _method(client, projection, "Add")
        inputs = await (await invoke.get_child("0:InputArguments")).read_value()
        assert [(argument.Name, argument.DataType) for argument in inputs] == [
            ("a", _standard(ObjectIds.Int32)),
            ("b", _standard(ObjectIds.Int32)),
        ]
        outputs = await (await invoke.get_child("0:OutputArguments")).read_value()
        assert [argument.Name for argument in outputs] == ["sum"]
        result = await operation.call_method(invoke.nodeid, _int32(2), _int32(40))
        assert result == 42

        scale, scale_invoke = await _method(client, projection, "Scale")
        scaled = await scale.call_method(scale_invoke.nodeid, 2.5, 4.0)
        assert scaled == 10.0, "in-output variables are inputs and outputs"


@pytest.mark.parametrize(
    ("path", "arguments", "expected"),
    [
        (
            "Add",
            [ua.Variant(2, ua.VariantType.Int64), _int32(3)],
            StatusCodes.BadInvalidArgument,
        ),
        ("Add", [_int32(2)], StatusCodes.BadArgumentsMissing),
        ("Home", [], StatusCodes.BadNotImplemented),
        ("Reboot", [], StatusCodes.BadTimeout),
    ],
)
async def test_a_failed_call_answers_a_status_code(
    projection: OpcUaProjection, path: str, arguments: list[ua.Variant], expected: int
) -> None:
    async with _session(projection, OPERATOR) as client:
        operation, invoke = await _method(client, projection, path)
        with pytest.raises(UaStatusCodeError) as raised:
            await operation.call_method(invoke.nodeid, *arguments)
        assert raised.value.code == expected


async def test_a_read_only_session_may_not_call_operations(projection: OpcUaProjection) -> None:
    async with _session(projection, VIEWER) as client:
        operation, invoke = await _method(client, projection, "Add")
        with pytest.raises(UaStatusCodeError) as raised:
            await operation.call_method(invoke.nodeid, _int32(1), _int32(1))
        assert raised.value.code == StatusCodes.BadUserAccessDenied
        standard = ua.CallMethodRequest(
            ObjectId=_standard(ObjectIds.Server),
            MethodId=_standard(ObjectIds.Server_GetMonitoredItems),
            InputArguments=[ua.Variant(1, ua.VariantType.UInt32)],
        )
        (result,) = await client.uaclient.call([standard])
        assert result.StatusCode.value != StatusCodes.BadUserAccessDenied, "standard methods stay open to every session"


# --- the NodeSet2 export -------------------------------------------------------------------------


def _demo() -> tuple[list[model.Identifiable], dict[tuple[str, str], ElementBinding]]:
    settings = load_settings(demo_settings_path())
    bindings = {
        (point.target.submodel, point.target.path): ElementBinding(
            f"device:{point.device}", point.writable, point.engineering_unit
        )
        for path in settings.mappings
        for point in load_mapping(path).points
    }
    return load_model_files(settings.twins), bindings


async def _import_into_a_fresh_server(content: bytes, caplog: pytest.LogCaptureFixture) -> Server:
    server = Server()
    await server.init()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asyncua.common"):
        await server.import_xml(str(committed_types_path()))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "export.xml"
            path.write_bytes(content)
            await server.import_xml(str(path))
    problems = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert not problems, problems[:5]
    return server


async def test_the_exported_demo_plant_imports_into_a_fresh_server(caplog: pytest.LogCaptureFixture) -> None:
    identifiables, bindings = _demo()
    content = export_address_space(identifiables, bindings, "urn:aas-server:twins")
    server = await _import_into_a_fresh_server(content, caplog)
    namespaces = await server.get_namespace_array()
    twins, types = namespaces.index("urn:aas-server:twins"), namespaces.index(TYPES_NAMESPACE_URI)
    operational = "urn:aas-server:demo:sm:plant:operational-data"
    power = server.get_node(ua.NodeId(cast(Any, node_id_for(operational, "ActivePower")), cast(Any, twins)))
    assert await power.read_type_definition() == _standard(ObjectIds.AnalogUnitType)
    assert await power.read_data_type_as_variant_type() == ua.VariantType.Double
    units = await (await power.get_child("0:EngineeringUnits")).read_value()
    assert units.DisplayName.Text == "kW"
    assert ua.AccessLevel.CurrentWrite not in await power.get_access_level(), "a read-only device point"
    submodel = server.get_node(ua.NodeId(cast(Any, submodel_node_id(operational)), cast(Any, twins)))
    assert await submodel.read_type_definition() == ua.NodeId(cast(Any, "AASSubmodelType"), cast(Any, types))
    (entry,) = await power.get_referenced_nodes(ObjectIds.HasDictionaryEntry)
    assert await entry.read_type_definition() in (
        _standard(ObjectIds.UriDictionaryEntryType),
        _standard(ObjectIds.IrdiDictionaryEntryType),
    )


async def test_an_exported_reference_template_imports_into_a_fresh_server(
    reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identifiables = read_package_file(
        reference / "idta-templates" / "IDTA_02003_Sample_TechnicalData.json"
    ).identifiables
    submodel = next(
        item for item in identifiables if isinstance(item, model.Submodel) and item.id_short == "TechnicalData"
    )
    content = export_address_space([*identifiables, _submodel()], {}, "urn:example:export")
    server = await _import_into_a_fresh_server(content, caplog)
    namespaces = await server.get_namespace_array()
    index, types = namespaces.index("urn:example:export"), namespaces.index(TYPES_NAMESPACE_URI)

    def first(kind: type[model.SubmodelElement]) -> Node:
        path = next(path for path, element in walk(submodel) if type(element) is kind)
        return server.get_node(ua.NodeId(cast(Any, node_id_for(submodel.id, path)), cast(Any, index)))

    def typed(name: str) -> ua.NodeId:
        return ua.NodeId(cast(Any, name), cast(Any, types))

    name = first(model.MultiLanguageProperty)
    assert await name.read_type_definition() == typed("AASMultiLanguagePropertyType")
    assert isinstance(await name.read_value(), ua.LocalizedText)
    assert await first(model.SubmodelElementCollection).read_type_definition() == typed(
        "AASSubmodelElementCollectionType"
    )
    assert await first(model.SubmodelElementList).read_type_definition() == typed("AASSubmodelElementListType")
    reference_element = first(model.ReferenceElement)
    assert await reference_element.read_type_definition() == typed("AASReferenceElementType")
    logo = first(model.File)
    assert await logo.read_type_definition() == typed("AASFileType")
    assert await (await logo.get_child(f"{types}:ContentType")).read_value()
    prop = first(model.Property)
    assert await prop.read_type_definition() == typed("AASPropertyType")
    assert ua.AccessLevel.CurrentWrite in await prop.get_access_level(), "an unbound Property is writable"

    add = server.get_node(ua.NodeId(cast(Any, node_id_for(SUBMODEL_ID, "Add")), cast(Any, index)))
    invoke = await add.get_child(f"{types}:Invoke")
    assert await invoke.read_node_class() == ua.NodeClass.Method
    arguments = await (await invoke.get_child("0:InputArguments")).read_value()
    assert [(argument.Name, argument.DataType) for argument in arguments] == [
        ("a", _standard(ObjectIds.Int32)),
        ("b", _standard(ObjectIds.Int32)),
    ]
    limits = server.get_node(ua.NodeId(cast(Any, node_id_for(SUBMODEL_ID, "Limits")), cast(Any, index)))
    assert await (await limits.get_child(f"{types}:Max")).read_value() == 4.0


def test_the_cli_exports_the_address_space_of_the_hub(tmp_path: Path) -> None:
    demo = load_settings(demo_settings_path())
    settings = tmp_path / "hub.yaml"
    settings.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"twins: [{demo.twins[0]}]\n"
        f"mappings: [{demo.mappings[0]}]\n"
        "opcua: {namespace_uri: 'urn:example:plant'}\n",
        encoding="utf-8",
    )
    output = tmp_path / "plant.NodeSet2.xml"
    assert main(["nodeset", "export", "--config", str(settings), str(output)]) == 0
    root = etree.parse(str(output)).getroot()
    namespace = {"ua": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}
    assert [uri.text for uri in root.findall("ua:NamespaceUris/ua:Uri", namespace)] == [
        "urn:example:plant",
        TYPES_NAMESPACE_URI,
    ]
    required = root.findall("ua:Models/ua:Model/ua:RequiredModel", namespace)
    assert TYPES_NAMESPACE_URI in [element.get("ModelUri") for element in required]
    assert len(root.findall("ua:UAVariable", namespace)) > 100

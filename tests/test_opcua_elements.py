"""Every submodel element kind over OPC UA: browse, read, write, subscribe and call through a real asyncua client.

Run on the demo plant (with its device bindings) and on every file of the reference IDTA templates,
each beside a submodel holding one element of every kind (so every run covers every kind, including
the kinds no template uses: Blob, Operation, Capability, BasicEventElement, AnnotatedRelationshipElement).
One server per model file.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model
from basyx.aas.model import datatypes
from pydantic import SecretStr

from aas_server.cli import demo_settings_path
from aas_server.config import OpcUaSettings, Role, SecurityPolicyName, UserSettings, load_settings
from aas_server.exchange import read_package_file
from aas_server.mapping.schema import load_mapping
from aas_server.model.paths import path_of, walk
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua.node_ids import SHELLS_FOLDER, SUBMODELS_FOLDER, element_property_node_id, shell_node_id
from aas_server.runtime.hub import load_model_files
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import reference_dir, wait_until

DEMO = "demo-plant"
EVERY_KIND_ID = "urn:aas-server:test:every-kind"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)


def _cases() -> list[str]:
    templates = reference_dir() / "idta-templates"
    files = sorted(path.name for path in templates.iterdir()) if templates.is_dir() else []
    return [DEMO, *files]


def _standard(identifier: int) -> ua.NodeId:
    """A namespace-0 node id."""
    return ua.NodeId(cast(Any, identifier))


def _reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def every_kind() -> model.Submodel:
    """One element of each of the 14 submodel element kinds, some nested."""
    temperature: model.ModelReference[Any] = model.ModelReference(
        (model.Key(model.KeyTypes.SUBMODEL, EVERY_KIND_ID), model.Key(model.KeyTypes.PROPERTY, "Temperature")),
        model.Property,
    )
    return model.Submodel(
        EVERY_KIND_ID,
        id_short="EveryKind",
        submodel_element=[
            model.Property("Temperature", datatypes.Double, 20.5, semantic_id=_reference("0173-1#02-AAV232#002")),
            model.MultiLanguageProperty("Name", value=model.MultiLanguageTextType({"en": "Press", "de": "Presse"})),
            model.Range("Limits", datatypes.Int, min=0, max=10),
            model.File("Manual", content_type="application/pdf", value="/aasx/manual.pdf"),
            model.Blob("Firmware", content_type="application/octet-stream", value=b"\x01\x02"),
            model.ReferenceElement("Link", value=_reference("urn:example:link")),
            model.RelationshipElement("Feeds", first=temperature, second=_reference("urn:example:b")),
            model.AnnotatedRelationshipElement(
                "Annotated",
                first=_reference("urn:example:a"),
                second=_reference("urn:example:b"),
                annotation=[model.Property("Note", datatypes.String, "checked")],
            ),
            model.Entity(
                "Part",
                model.EntityType.SELF_MANAGED_ENTITY,
                global_asset_id="urn:example:asset:part",
                statement=[model.Property("Mass", datatypes.Float, 1.5)],
            ),
            model.SubmodelElementCollection(
                "Motor",
                value=[
                    model.Property("Running", datatypes.Boolean, False),
                    model.Property(
                        "Started", datatypes.DateTime, datetime.datetime(2025, 6, 1, 8, tzinfo=datetime.UTC)
                    ),
                ],
            ),
            model.SubmodelElementList(
                "Readings",
                type_value_list_element=model.Property,
                value_type_list_element=datatypes.UnsignedShort,
                value=[
                    model.Property(None, datatypes.UnsignedShort, 1),
                    model.Property(None, datatypes.UnsignedShort, 2),
                ],
            ),
            model.BasicEventElement("Alarm", temperature, model.Direction.OUTPUT, model.StateOfEvent.ON),
            model.Operation(
                "Add",
                input_variable=[model.Property("a", datatypes.Int, 0), model.Property("b", datatypes.Int, 0)],
                output_variable=[model.Property("sum", datatypes.Int, 0)],
            ),
            model.Operation("Reboot"),
            model.Capability("CanPress"),
        ],
    )


async def _add(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"sum": inputs["a"] + inputs["b"]}


class _Device:
    """The write handler of a device-bound Property: records what it was asked to write."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    async def __call__(self, value: Any) -> None:
        self.values.append(value)


def _load(case: str, request: pytest.FixtureRequest) -> tuple[TwinStore, _Device]:
    device = _Device()
    store = TwinStore()
    if case == DEMO:
        settings = load_settings(demo_settings_path())
        store.add_all(load_model_files(settings.twins))
        for path in settings.mappings:
            for point in load_mapping(path).points:
                binding = ElementBinding(f"device:{point.device}", point.writable, point.engineering_unit)
                store.bind(point.target.submodel, point.target.path, binding, device if point.writable else None)
    else:
        folder: Path = request.getfixturevalue("reference")
        store.add_all(read_package_file(folder / "idta-templates" / case).identifiables)
    store.add(every_kind())
    return store, device


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub-data")


@asynccontextmanager
async def _served(store: TwinStore, data_dir: Path) -> AsyncIterator[tuple[OpcUaProjection, Client]]:
    operations = OperationRegistry()
    operations.register(EVERY_KIND_ID, "Add", _add)
    settings = OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], users=[OPERATOR])
    async with OpcUaProjection(store, settings, data_dir, operations=operations) as projection:
        client = Client(projection.endpoint_url, timeout=10)
        client.set_user(OPERATOR.name)
        client.set_password(OPERATOR.password.get_secret_value())
        async with client:
            yield projection, client


# --- what each kind must look like -------------------------------------------------------------------

_VARIABLE_TYPES: dict[type, str] = {
    model.Property: "AASPropertyType",
    model.MultiLanguageProperty: "AASMultiLanguagePropertyType",
    model.Blob: "AASBlobType",
    model.ReferenceElement: "AASReferenceElementType",
}
_OBJECT_TYPES: dict[type, str] = {
    model.Range: "AASRangeType",
    model.File: "AASFileType",
    model.RelationshipElement: "AASRelationshipElementType",
    model.AnnotatedRelationshipElement: "AASAnnotatedRelationshipElementType",
    model.SubmodelElementCollection: "AASSubmodelElementCollectionType",
    model.SubmodelElementList: "AASSubmodelElementListType",
    model.Entity: "AASEntityType",
    model.BasicEventElement: "AASBasicEventElementType",
    model.Operation: "AASOperationType",
    model.Capability: "AASCapabilityType",
}
_NATIVE: dict[type, ua.VariantType] = {
    datatypes.Double: ua.VariantType.Double,
    datatypes.Float: ua.VariantType.Float,
    datatypes.Long: ua.VariantType.Int64,
    datatypes.Int: ua.VariantType.Int32,
    datatypes.Short: ua.VariantType.Int16,
    datatypes.Byte: ua.VariantType.SByte,
    datatypes.UnsignedLong: ua.VariantType.UInt64,
    datatypes.UnsignedInt: ua.VariantType.UInt32,
    datatypes.UnsignedShort: ua.VariantType.UInt16,
    datatypes.UnsignedByte: ua.VariantType.Byte,
    datatypes.Boolean: ua.VariantType.Boolean,
    datatypes.String: ua.VariantType.String,
    datatypes.DateTime: ua.VariantType.DateTime,
}


def _native(value_type: type) -> ua.VariantType:
    return _NATIVE.get(value_type, ua.VariantType.String)


def _as_native(value: Any, value_type: type) -> Any:
    """A model value as an OPC UA client reads it: native, or its XSD lexical form."""
    if value is None:
        return None
    if _native(value_type) is ua.VariantType.String:
        return value if isinstance(value, str) else datatypes.xsd_repr(value)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC)
    return value


def _next_value(element: model.Property) -> Any | None:
    """A different value of the Property's type to write, or ``None`` when there is no obvious one."""
    value, value_type = element.value, element.value_type
    if value is None:
        return None
    variant_type = _native(value_type)
    if variant_type is ua.VariantType.Boolean:
        return not value
    if variant_type in (ua.VariantType.Double, ua.VariantType.Float):
        return float(value) + 1.5
    if variant_type is ua.VariantType.DateTime:
        return value + datetime.timedelta(seconds=1)
    if variant_type is ua.VariantType.String:
        return f"{value} (OPC UA)" if value_type is datatypes.String else None
    return int(value) ^ 1


def _node_id(projection: OpcUaProjection, identifier: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, projection.namespace_index))


def _typed(projection: OpcUaProjection, name: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, name), cast(Any, projection.types_namespace_index))


@dataclass
class _Browsed:
    """What one hierarchical browse from the ``Submodels`` folder found, by parent node id."""

    children: dict[ua.NodeId, dict[str, ua.ReferenceDescription]] = field(default_factory=dict)


async def _browse_tree(client: Client, roots: list[ua.NodeId]) -> _Browsed:
    """Browse everything below ``roots`` level by level (one Browse request per level)."""
    browsed = _Browsed()
    level = roots
    while level:
        descriptions = []
        for node_id in level:
            description = ua.BrowseDescription()
            description.NodeId = node_id
            description.BrowseDirection = ua.BrowseDirection.Forward
            description.ReferenceTypeId = _standard(ObjectIds.HierarchicalReferences)
            description.IncludeSubtypes = True
            description.NodeClassMask = 0
            description.ResultMask = ua.BrowseResultMask.All
            descriptions.append(description)
        parameters = ua.BrowseParameters()
        parameters.NodesToBrowse = descriptions
        results = await client.uaclient.browse(parameters)
        next_level: list[ua.NodeId] = []
        for node_id, result in zip(level, results, strict=True):
            assert result.StatusCode.is_good(), result.StatusCode
            assert not result.ContinuationPoint
            children = {reference.BrowseName.Name: reference for reference in result.References}
            browsed.children[node_id] = children
            next_level.extend(
                reference.NodeId
                for reference in result.References
                if reference.NodeClass is ua.NodeClass.Object and reference.NodeId not in browsed.children
            )
        level = next_level
    return browsed


# --- the test ------------------------------------------------------------------------------------------


class _DataChanges:
    def __init__(self) -> None:
        self.latest: dict[ua.NodeId, Any] = {}

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.latest[node.nodeid] = value


@pytest.mark.parametrize("case", _cases())
async def test_every_element_kind_over_opc_ua(case: str, request: pytest.FixtureRequest, data_dir: Path) -> None:
    store, device = _load(case, request)
    elements = [(submodel, path, element) for submodel in store.submodels() for path, element in walk(submodel)]
    assert {type(element) for _, _, element in elements} >= {*_VARIABLE_TYPES, *_OBJECT_TYPES}
    async with _served(store, data_dir) as (projection, client):
        await _check_browse(projection, client, store, elements)
        await _check_reads(projection, client, store, elements)
        await _check_writes_and_subscriptions(projection, client, store, elements, device)
        await _check_calls(projection, client)


async def _check_browse(
    projection: OpcUaProjection,
    client: Client,
    store: TwinStore,
    elements: list[tuple[model.Submodel, str, model.SubmodelElement]],
) -> None:
    """Every element is found by browsing, under its parent, with its node class and type."""
    browsed = await _browse_tree(client, [_node_id(projection, SUBMODELS_FOLDER), _node_id(projection, SHELLS_FOLDER)])
    found = {
        reference.NodeId: (parent, reference)
        for parent, children in browsed.children.items()
        for reference in children.values()
    }
    for submodel in store.submodels():
        _, reference = found[_node_id(projection, f"{submodel.id}/$submodel")]
        assert reference.TypeDefinition == _typed(projection, "AASSubmodelType")
    for shell in store.shells():
        _, reference = found[_node_id(projection, shell_node_id(shell.id))]
        assert reference.TypeDefinition == _typed(projection, "AASAssetAdministrationShellType")
        organized = {
            child.NodeId
            for child in browsed.children[reference.NodeId].values()
            if child.ReferenceTypeId == _standard(ObjectIds.Organizes)
        }
        linked = {ref.key[0].value for ref in shell.submodel} & {submodel.id for submodel in store.submodels()}
        assert organized == {_node_id(projection, f"{submodel_id}/$submodel") for submodel_id in linked}
    for submodel, path, element in elements:
        node_id = _node_id(projection, node_id_for(submodel.id, path))
        assert node_id in found, f"{submodel.id} {path} was not found by browsing"
        parent, reference = found[node_id]
        if isinstance(element, tuple(_VARIABLE_TYPES)):
            assert reference.NodeClass is ua.NodeClass.Variable, path
            bound = store.binding(submodel.id, path)
            expected = (
                _standard(ObjectIds.AnalogUnitType)
                if bound is not None and bound.unit is not None
                else _typed(projection, _VARIABLE_TYPES[type(element)])
            )
        else:
            assert reference.NodeClass is ua.NodeClass.Object, path
            expected = _typed(projection, _OBJECT_TYPES[type(element)])
        assert reference.TypeDefinition == expected, path
        assert reference.ReferenceTypeId == _standard(ObjectIds.HasComponent), path
        container = element.parent
        if isinstance(container, model.SubmodelElementList):
            assert reference.BrowseName.Name == f"[{list(container.value).index(element)}]", path
        else:
            assert reference.BrowseName.Name == element.id_short, path
        if isinstance(container, model.Submodel):
            assert parent == _node_id(projection, f"{submodel.id}/$submodel"), path
        else:
            assert parent == _node_id(projection, node_id_for(submodel.id, path_of(cast(Any, container)))), path


async def _read(client: Client, node_ids: list[ua.NodeId]) -> list[ua.DataValue]:
    return await client.uaclient.read_attributes(node_ids, ua.AttributeIds.Value) if node_ids else []


def _value(data_value: ua.DataValue) -> Any:
    return None if data_value.Value is None else data_value.Value.Value


async def _check_reads(
    projection: OpcUaProjection,
    client: Client,
    store: TwinStore,
    elements: list[tuple[model.Submodel, str, model.SubmodelElement]],
) -> None:
    """Every value-bearing node reads the model's value, in its native type (one batched Read)."""
    expected: list[tuple[str, ua.NodeId, Any]] = []
    for submodel, path, element in elements:
        node = node_id_for(submodel.id, path)

        def member(name: str, submodel_id: str = submodel.id, element_path: str = path) -> ua.NodeId:
            return _node_id(projection, element_property_node_id(submodel_id, element_path, name))

        if isinstance(element, model.Property):
            expected.append((path, _node_id(projection, node), _as_native(element.value, element.value_type)))
        elif isinstance(element, model.MultiLanguageProperty):
            texts = frozenset(dict(element.value).values()) if element.value else frozenset({None})
            expected.append((path, _node_id(projection, node), _OneOf(texts)))
        elif isinstance(element, model.Range):
            expected.append((path, member("Min"), _as_native(element.min, element.value_type)))
            expected.append((path, member("Max"), _as_native(element.max, element.value_type)))
        elif isinstance(element, model.File):
            expected.append((path, member("Value"), element.value))
            expected.append((path, member("ContentType"), element.content_type))
        elif isinstance(element, model.Blob):
            expected.append((path, _node_id(projection, node), None if element.value is None else bytes(element.value)))
            expected.append((path, member("ContentType"), element.content_type))
        elif isinstance(element, model.RelationshipElement):
            expected.append((path, member("First"), _reference_prefix(element.first)))
            expected.append((path, member("Second"), _reference_prefix(element.second)))
        elif isinstance(element, model.ReferenceElement):
            expected.append((path, _node_id(projection, node), _reference_prefix(element.value)))
        elif isinstance(element, model.Entity) and element.global_asset_id:
            expected.append((path, member("GlobalAssetId"), element.global_asset_id))
        elif isinstance(element, model.BasicEventElement):
            expected.append(
                (path, member("Direction"), "Output" if element.direction is model.Direction.OUTPUT else "Input")
            )
        if element.semantic_id is not None and element.semantic_id.key:
            expected.append((path, member("SemanticId"), str(element.semantic_id.key[-1].value)))
    values = await _read(client, [node_id for _, node_id, _ in expected])
    for (path, node_id, wanted), data_value in zip(expected, values, strict=True):
        actual = _value(data_value)
        if isinstance(wanted, _OneOf):
            assert isinstance(actual, ua.LocalizedText), (path, node_id, actual)
            assert actual.Text in wanted.texts, (path, node_id, actual)
        elif isinstance(wanted, _Prefix):
            assert isinstance(actual, str), (path, node_id, actual)
            assert actual.startswith(wanted.text), (path, node_id, actual)
        elif wanted is None:
            assert actual is None, (path, node_id, actual)
        else:
            assert actual == wanted, (path, node_id, actual, wanted)


@dataclass(frozen=True)
class _Prefix:
    """A reference read as text: only its kind marker is checked (the serialization has its own tests)."""

    text: str


@dataclass(frozen=True)
class _OneOf:
    """A MultiLanguageProperty: the text of one of its languages."""

    texts: frozenset[str | None]


def _reference_prefix(reference: model.Reference | None) -> _Prefix | None:
    if reference is None:
        return None
    return _Prefix("[ModelRef]" if isinstance(reference, model.ModelReference) else "[ExternalRef]")


async def _check_writes_and_subscriptions(
    projection: OpcUaProjection,
    client: Client,
    store: TwinStore,
    elements: list[tuple[model.Submodel, str, model.SubmodelElement]],
    device: _Device,
) -> None:
    """Subscribe, write every Property with a new value (one Write), see store and notifications follow."""
    writes: list[tuple[model.Submodel, str, model.Property, Any, bool]] = []
    static: list[ua.NodeId] = []
    seen_kinds: set[type] = set()
    for submodel, path, element in elements:
        if isinstance(element, model.Property):
            new_value = _next_value(element)
            if new_value is not None:
                binding = store.binding(submodel.id, path)
                writes.append((submodel, path, element, new_value, binding is None or binding.writable))
        elif type(element) in _VARIABLE_TYPES and type(element) not in seen_kinds:
            seen_kinds.add(type(element))
            static.append(_node_id(projection, node_id_for(submodel.id, path)))
    assert writes, "every model has writable Properties"
    handler = _DataChanges()
    subscription = await client.create_subscription(20, handler)
    monitored = [_node_id(projection, node_id_for(submodel.id, path)) for submodel, path, *_ in writes] + static
    handles = await subscription.subscribe_data_change([client.get_node(node_id) for node_id in monitored])
    assert all(isinstance(handle, int) for handle in handles)
    await wait_until(lambda: len(handler.latest) == len(set(monitored)), within=5.0, what="initial notifications")

    data_values = [ua.DataValue(ua.Variant(value, _native(element.value_type))) for _, _, element, value, _ in writes]
    not_writable = (
        static
        + [
            _node_id(projection, element_property_node_id(submodel.id, path, "SemanticId"))
            for submodel, path, element in elements
            if element.semantic_id is not None and element.semantic_id.key
        ][:1]
    )
    statuses = await client.uaclient.write_attributes(
        [_node_id(projection, node_id_for(submodel.id, path)) for submodel, path, *_ in writes] + not_writable,
        data_values + [ua.DataValue(ua.Variant("x", ua.VariantType.String)) for _ in not_writable],
    )
    for (submodel, path, _, _, writable), status in zip(writes, statuses, strict=False):
        expected_status = StatusCodes.Good if writable else StatusCodes.BadNotWritable
        assert status.value == expected_status, (submodel.id, path, status)
    assert all(status.value == StatusCodes.BadNotWritable for status in statuses[len(writes) :])

    written = [(submodel, path, element, value) for submodel, path, element, value, writable in writes if writable]
    for submodel, path, _, value in written:
        state = store.state(submodel.id, path)
        assert state is not None
        assert state.value == value, (submodel.id, path)
    bound = [value for submodel, path, _, value in written if store.binding(submodel.id, path) is not None]
    assert device.values == bound, "writes of device-bound Properties reach the device"

    def notified() -> bool:
        return all(
            handler.latest.get(_node_id(projection, node_id_for(submodel.id, path)))
            == _as_native(value, element.value_type)
            for submodel, path, element, value in written
        )

    await wait_until(notified, within=5.0, what="data change notifications of the written values")
    await subscription.delete()


async def _check_calls(projection: OpcUaProjection, client: Client) -> None:
    """The Operations of the every-kind submodel are methods: one runs its handler, one has none."""
    types = projection.types_namespace_index
    add = client.get_node(_node_id(projection, node_id_for(EVERY_KIND_ID, "Add")))
    invoke = await add.get_child(f"{types}:Invoke")
    result = await add.call_method(
        invoke.nodeid, ua.Variant(19, ua.VariantType.Int32), ua.Variant(23, ua.VariantType.Int32)
    )
    assert result == 42
    reboot = client.get_node(_node_id(projection, node_id_for(EVERY_KIND_ID, "Reboot")))
    request = ua.CallMethodRequest(
        ObjectId=reboot.nodeid, MethodId=(await reboot.get_child(f"{types}:Invoke")).nodeid, InputArguments=[]
    )
    (outcome,) = await client.uaclient.call([request])
    assert outcome.StatusCode.value == StatusCodes.BadNotImplemented

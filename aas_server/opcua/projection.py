"""The address-space plan: the twin store's shells and submodels as OPC UA node specifications.

Pure: :func:`plan_address_space` takes basyx objects, value states and bindings and returns plain
node specifications in parent-first order; ``address_space.py`` applies them to an asyncua server and
``nodeset.py`` writes them as NodeSet2 XML. Every node is typed by the hub's AAS type model
(:mod:`aas_server.opcua.types`, ``AASSubmodelType``, ``AASPropertyType``...)::

    Objects/AASEnvironment (Folder)
        Shells (Folder)/<shell id> (AASAssetAdministrationShellType): Id, IdShort, GlobalAssetId,
            AssetInformation; Organizes -> submodels
        Submodels (Folder)/<submodel id> (AASSubmodelType): Id, IdShort, SemanticId
            <element idShort> (a Variable for Property, MultiLanguageProperty, Blob and
                               ReferenceElement; an Object for the others: Range with Min/Max,
                               File with Value/ContentType, relationships with First/Second,
                               Operation with an Invoke method)
        ConceptDictionary (DictionaryFolderType)/<semanticId> (Irdi/UriDictionaryEntryType)

Members declared by the type model (``Id``, ``SemanticId``, ``Min``...) have browse names in the
types namespace; idShorts are in the instance namespace. Sibling browse names are unique, so that a
browse path (TranslateBrowsePathsToNodeIds, a SCADA tag path) names one node: shells and submodels
are named by their id (:func:`identifiable_browse_name`; their idShort is the display name, since
several submodels share ``OperationalData`` or ``Nameplate``), elements by their idShort (unique in
their parent, AASd-022) or ``[index]`` in a list. Display names are in locale ``en``. A mapped
Property's ``MinimumSamplingInterval`` is its device's poll (or sampling) interval and, with the
mapping's ``limits`` (min and max), it has an ``EURange`` property (OPC 10000-8 §5.3.2).

A submodel or element with a semanticId has a ``HasDictionaryEntry`` reference (OPC 10000-19) to
the dictionary entry of that id. A relationship element has ``AASRelationshipFirst``/
``AASRelationshipSecond`` references to the nodes its ModelReferences point to
(:func:`relationship_targets`), when the plan holds them.

The planners are usable on a part of the environment (:func:`plan_shell`, :func:`plan_submodel`,
:func:`plan_element`) so that a model change re-plans only the subtree it touched.

Left out for now: values of Capability and BasicEventElement (objects with their metadata only),
qualifiers, extensions, embedded data specifications and concept descriptions.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model

from aas_server.errors import HubError
from aas_server.model import paths, values
from aas_server.model.events import Quality, utc_now
from aas_server.model.units import EngineeringUnit
from aas_server.opcua import node_ids
from aas_server.opcua.types import RELATIONSHIP_FIRST, RELATIONSHIP_SECOND
from aas_server.opcua_common.status import status
from aas_server.opcua_common.variants import data_value, to_variant, variant_type_for
from aas_server.store.twin_store import ElementBinding, ValueState

UNECE_UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
"""``EUInformation.NamespaceUri`` for UNECE Recommendation 20 units (OPC 10000-8 §5.6.3)."""

ElementKey = tuple[str, str]

DISPLAY_LOCALE = "en"
"""The locale of display names (idShorts and ids are not translated)."""

BROWSE_NAME_LIMIT = 512
"""Longest browse name (OPC 10000-3 §8.3: a QualifiedName's name has at most 512 characters)."""


def identifiable_browse_name(identifier: str) -> str:
    """The browse name of a shell or submodel: its id; beyond 512 characters cut, with a hash of the whole id."""
    if len(identifier) <= BROWSE_NAME_LIMIT:
        return identifier
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:32]
    return f"{identifier[: BROWSE_NAME_LIMIT - len(digest) - 1]}~{digest}"


class ReferenceKind(enum.Enum):
    ORGANIZES = ObjectIds.Organizes
    HAS_COMPONENT = ObjectIds.HasComponent
    HAS_PROPERTY = ObjectIds.HasProperty


class BrowseNamespace(enum.Enum):
    """The namespace of a node's browse name."""

    INSTANCE = "instance"
    """The instance namespace (``opcua.namespace_uri``): idShorts and folders."""
    TYPES = "types"
    """The type model's namespace: members a type declares (``Id``, ``SemanticId``, ``Min``...)."""
    STANDARD = "standard"
    """Namespace 0 (``EngineeringUnits``, ``InputArguments``)."""


TypeId = int | str
"""A type definition: a namespace-0 numeric node id, or the browse name of a type of the hub's type model."""


class VariableKind(enum.Enum):
    """The type definition of a variable node."""

    PROPERTY = ObjectIds.PropertyType
    DATA_VARIABLE = ObjectIds.BaseDataVariableType
    ANALOG_UNIT = ObjectIds.AnalogUnitType
    """``AnalogUnitType`` (OPC 10000-8 §5.3.2.5): ``EngineeringUnits`` mandatory, no ``EURange`` needed."""
    AAS_TYPE = 0
    """A VariableType of the type model, named by the node's ``type_definition``."""


@dataclass(frozen=True, slots=True)
class ObjectNode:
    node_id: str
    parent_id: str | None
    """``None``: the standard ``Objects`` folder."""
    reference: ReferenceKind
    browse_name: str
    description: str | None = None
    is_folder: bool = False
    type_definition: TypeId | None = None
    """``None``: ``FolderType`` for a folder, else ``BaseObjectType``."""
    browse_namespace: BrowseNamespace = BrowseNamespace.INSTANCE
    dictionary_entry: str | None = None
    """The semanticId this node has a ``HasDictionaryEntry`` reference to (see :func:`dictionary_entry_node`)."""
    related: tuple[tuple[str, str], ...] = ()
    """A relationship's ``(reference type, target node id)`` pairs (see :func:`relationship_targets`)."""
    display_name: str | None = None
    """``None``: the browse name."""


@dataclass(frozen=True, slots=True)
class VariableNode:
    node_id: str
    parent_id: str
    reference: ReferenceKind
    browse_name: str
    kind: VariableKind
    variant_type: ua.VariantType
    value: ua.DataValue
    data_type: int | None = None
    """A data type node id (namespace 0) other than the built-in type of ``variant_type``."""
    writable: bool = False
    description: str | None = None
    browse_namespace: BrowseNamespace = BrowseNamespace.INSTANCE
    element: ElementKey | None = None
    """``(submodel id, idShort path)`` of the Property whose live value this variable shows."""
    type_definition: TypeId | None = None
    """``None``: the node id of ``kind``."""
    value_rank: int = ua.ValueRank.Scalar
    dictionary_entry: str | None = None
    """The semanticId this node has a ``HasDictionaryEntry`` reference to (see :func:`dictionary_entry_node`)."""
    display_name: str | None = None
    """``None``: the browse name."""
    minimum_sampling_interval: float = 0.0
    """Milliseconds (OPC 10000-3 §5.6.2); 0: changes are reported as they come."""


@dataclass(frozen=True, slots=True)
class MethodNode:
    """An AAS Operation's ``Invoke`` method (its arguments are ``VariableNode`` children)."""

    node_id: str
    parent_id: str
    browse_name: str
    element: ElementKey
    """``(submodel id, idShort path)`` of the Operation."""
    input_arguments: tuple[ua.Argument, ...]
    output_arguments: tuple[ua.Argument, ...]
    description: str | None = None
    reference: ReferenceKind = ReferenceKind.HAS_COMPONENT
    browse_namespace: BrowseNamespace = BrowseNamespace.TYPES


@dataclass(frozen=True, slots=True)
class ExtraReference:
    """A reference beyond the parent-child tree (a shell organizing its submodels, a relationship's targets)."""

    source_id: str
    target_id: str
    reference: ReferenceKind | str
    """A namespace-0 reference type, or a ReferenceType of the type model by browse name."""


NodeSpec = ObjectNode | VariableNode | MethodNode


@dataclass(frozen=True, slots=True)
class AddressSpacePlan:
    nodes: list[NodeSpec]
    """Parents before their children."""
    references: list[ExtraReference]
    dictionary_entries: list[ObjectNode] = field(default_factory=list)
    """One node per semanticId the other nodes refer to (``HasDictionaryEntry``)."""


def type_definition_of(spec: NodeSpec) -> TypeId | None:
    """The type definition of a planned node (``None`` for a method, which has none)."""
    if isinstance(spec, MethodNode):
        return None
    if spec.type_definition is not None:
        return spec.type_definition
    if isinstance(spec, ObjectNode):
        return ObjectIds.FolderType if spec.is_folder else ObjectIds.BaseObjectType
    return int(spec.kind.value)


def plan_environment_folders() -> list[NodeSpec]:
    """The ``AASEnvironment`` folder with its ``Shells``, ``Submodels`` and ``ConceptDictionary`` folders."""
    return [
        ObjectNode(node_ids.ENVIRONMENT_FOLDER, None, ReferenceKind.ORGANIZES, "AASEnvironment", is_folder=True),
        ObjectNode(
            node_ids.SHELLS_FOLDER, node_ids.ENVIRONMENT_FOLDER, ReferenceKind.ORGANIZES, "Shells", is_folder=True
        ),
        ObjectNode(
            node_ids.SUBMODELS_FOLDER,
            node_ids.ENVIRONMENT_FOLDER,
            ReferenceKind.ORGANIZES,
            "Submodels",
            is_folder=True,
        ),
        ObjectNode(
            node_ids.DICTIONARY_FOLDER,
            node_ids.ENVIRONMENT_FOLDER,
            ReferenceKind.ORGANIZES,
            "ConceptDictionary",
            "Dictionary entries (OPC 10000-19) of the semanticIds, referred to by HasDictionaryEntry",
            is_folder=True,
            type_definition=ObjectIds.DictionaryFolderType,
        ),
    ]


def plan_address_space(
    shells: Iterable[model.AssetAdministrationShell],
    submodels: Iterable[model.Submodel],
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> AddressSpacePlan:
    """Plan the nodes of the whole environment; linear in the number of elements."""
    nodes = plan_environment_folders()
    references: list[ExtraReference] = []
    submodel_ids: set[str] = set()
    for submodel in submodels:
        submodel_ids.add(submodel.id)
        nodes.extend(plan_submodel(submodel, states, bindings))
    for shell in shells:
        nodes.extend(plan_shell(shell))
        for submodel_id in shell_submodel_ids(shell):
            if submodel_id in submodel_ids:
                references.append(
                    ExtraReference(
                        node_ids.shell_node_id(shell.id),
                        node_ids.submodel_node_id(submodel_id),
                        ReferenceKind.ORGANIZES,
                    )
                )
    planned_ids = {spec.node_id for spec in nodes}
    for spec in nodes:
        if isinstance(spec, ObjectNode):
            references.extend(
                ExtraReference(spec.node_id, target, reference_type)
                for reference_type, target in spec.related
                if target in planned_ids
            )
    entries = dict.fromkeys(
        spec.dictionary_entry for spec in nodes if not isinstance(spec, MethodNode) and spec.dictionary_entry
    )
    return AddressSpacePlan(nodes, references, [dictionary_entry_node(entry) for entry in entries if entry])


def model_reference_node_id(reference: model.Reference | None) -> str | None:
    """The node id of what a ModelReference points to, if the projection shows such a node; else ``None``.

    A shell (one ``AssetAdministrationShell`` key), a submodel (one ``Submodel`` key) or a submodel
    element (a ``Submodel`` key, then one key per idShort, an index after a ``SubmodelElementList``
    key). External references, fragments and references to concept descriptions give ``None``.
    """
    if not isinstance(reference, model.ModelReference) or not reference.key:
        return None
    first, *rest = reference.key
    if first.type is model.KeyTypes.ASSET_ADMINISTRATION_SHELL:
        return node_ids.shell_node_id(first.value) if not rest else None
    if first.type is not model.KeyTypes.SUBMODEL:
        return None
    if not rest:
        return node_ids.submodel_node_id(first.value)
    segments: list[paths.Segment] = []
    in_list = False
    for key in rest:
        if key.type in (model.KeyTypes.FRAGMENT_REFERENCE, model.KeyTypes.GLOBAL_REFERENCE):
            return None
        if in_list:
            if not key.value.isdigit():
                return None
            segments.append(int(key.value))
        else:
            segments.append(key.value)
        in_list = key.type is model.KeyTypes.SUBMODEL_ELEMENT_LIST
    id_short_path = paths.format_id_short_path(tuple(segments))
    try:
        paths.parse_id_short_path(id_short_path)
    except HubError:
        return None
    return node_ids.node_id_for(first.value, id_short_path)


def relationship_targets(element: model.RelationshipElement) -> tuple[tuple[str, str], ...]:
    """``(AASRelationshipFirst, node id)`` and ``(AASRelationshipSecond, node id)`` for model references."""
    targets: list[tuple[str, str]] = []
    for reference_type, reference in ((RELATIONSHIP_FIRST, element.first), (RELATIONSHIP_SECOND, element.second)):
        target = model_reference_node_id(reference)
        if target is not None:
            targets.append((reference_type, target))
    return tuple(targets)


def shell_submodel_ids(shell: model.AssetAdministrationShell) -> list[str]:
    """The ids of the submodels a shell refers to (the first key of each submodel reference)."""
    return [str(reference.key[0].value) for reference in shell.submodel if reference.key]


def is_irdi(identifier: str) -> bool:
    """Whether a semanticId is an IRDI (ISO 29002-5, ``0173-1#02-AAV232#002``) rather than an IRI."""
    return "#" in identifier and ":" not in identifier


def dictionary_entry_node(semantic_id: str) -> ObjectNode:
    """The dictionary entry (OPC 10000-19) of a semanticId: an IRDI or a URI entry."""
    return ObjectNode(
        node_ids.dictionary_entry_node_id(semantic_id),
        node_ids.DICTIONARY_FOLDER,
        ReferenceKind.HAS_COMPONENT,
        semantic_id,
        type_definition=ObjectIds.IrdiDictionaryEntryType if is_irdi(semantic_id) else ObjectIds.UriDictionaryEntryType,
    )


def _text_property(node_id: str, parent_id: str, browse_name: str, text: str | None) -> VariableNode:
    """A String property declared by the type model (browse name in the types namespace)."""
    return VariableNode(
        node_id,
        parent_id,
        ReferenceKind.HAS_PROPERTY,
        browse_name,
        VariableKind.PROPERTY,
        ua.VariantType.String,
        _static_value(text, ua.VariantType.String),
        browse_namespace=BrowseNamespace.TYPES,
    )


def _static_value(value: Any, variant_type: ua.VariantType) -> ua.DataValue:
    """The value of a variable that is no Property (no quality, no timestamps); ``None`` is a null value."""
    if value is None:
        return ua.DataValue(ua.Variant(None, ua.VariantType.Null))
    if variant_type is ua.VariantType.ByteString and isinstance(value, bytes):
        return ua.DataValue(ua.Variant(bytes(value), variant_type))
    try:
        return ua.DataValue(to_variant(value, variant_type))
    except (TypeError, ValueError):
        return ua.DataValue(ua.Variant(None, ua.VariantType.Null), StatusCode=status(StatusCodes.BadTypeMismatch))


def plan_shell(shell: model.AssetAdministrationShell) -> list[NodeSpec]:
    """The nodes of one shell, its object first (its Organizes references to submodels are not nodes)."""
    shell_node = node_ids.shell_node_id(shell.id)

    def text(name: str, value: str | None, parent: str = shell_node) -> VariableNode:
        return _text_property(node_ids.shell_property_node_id(shell.id, name), parent, name.rsplit(".", 1)[-1], value)

    nodes: list[NodeSpec] = [
        ObjectNode(
            shell_node,
            node_ids.SHELLS_FOLDER,
            ReferenceKind.ORGANIZES,
            identifiable_browse_name(shell.id),
            _preferred_text(shell.description),
            type_definition="AASAssetAdministrationShellType",
            display_name=shell.id_short or shell.id,
        ),
        text("Id", shell.id),
    ]
    if shell.id_short:
        nodes.append(text("IdShort", shell.id_short))
    information = shell.asset_information
    if information.global_asset_id:
        nodes.append(text("GlobalAssetId", information.global_asset_id))
    information_node = node_ids.shell_property_node_id(shell.id, "AssetInformation")
    nodes.append(
        ObjectNode(
            information_node,
            shell_node,
            ReferenceKind.HAS_COMPONENT,
            "AssetInformation",
            type_definition="AASAssetInformationType",
            browse_namespace=BrowseNamespace.TYPES,
        )
    )
    nodes.append(text("AssetInformation.AssetKind", _enum_text(information.asset_kind), information_node))
    if information.global_asset_id:
        nodes.append(text("AssetInformation.GlobalAssetId", information.global_asset_id, information_node))
    if information.asset_type:
        nodes.append(text("AssetInformation.AssetType", information.asset_type, information_node))
    return nodes


def _enum_text(value: enum.Enum) -> str:
    """An AAS enumeration literal as the metamodel spells it (``SelfManagedEntity``, ``Instance``)."""
    return "".join(part.capitalize() for part in value.name.split("_"))


def plan_submodel(
    submodel: model.Submodel,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    """The nodes of one submodel and all its elements, parents first."""
    submodel_node = node_ids.submodel_node_id(submodel.id)
    semantic_id = semantic_id_text(submodel.semantic_id)
    nodes: list[NodeSpec] = [
        ObjectNode(
            submodel_node,
            node_ids.SUBMODELS_FOLDER,
            ReferenceKind.ORGANIZES,
            identifiable_browse_name(submodel.id),
            _preferred_text(submodel.description),
            type_definition="AASSubmodelType",
            dictionary_entry=semantic_id,
            display_name=submodel.id_short or submodel.id,
        ),
        _text_property(node_ids.submodel_property_node_id(submodel.id, "Id"), submodel_node, "Id", submodel.id),
    ]
    if submodel.id_short:
        nodes.append(
            _text_property(
                node_ids.submodel_property_node_id(submodel.id, "IdShort"),
                submodel_node,
                "IdShort",
                submodel.id_short,
            )
        )
    if semantic_id is not None:
        nodes.append(
            _text_property(
                node_ids.submodel_property_node_id(submodel.id, "SemanticId"),
                submodel_node,
                "SemanticId",
                semantic_id,
            )
        )
    for id_short_path, element in paths.walk(submodel):
        nodes.extend(
            _plan_element_node(
                submodel.id,
                id_short_path,
                element,
                element_parent_node_id(submodel.id, id_short_path),
                states,
                bindings,
            )
        )
    return nodes


def plan_element(
    submodel_id: str,
    id_short_path: str,
    element: model.SubmodelElement,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    """The nodes of one submodel element and everything below it, the element's node first."""
    nodes = _plan_element_node(
        submodel_id, id_short_path, element, element_parent_node_id(submodel_id, id_short_path), states, bindings
    )
    for child_path, child in paths.walk(element, id_short_path):
        nodes.extend(
            _plan_element_node(
                submodel_id, child_path, child, element_parent_node_id(submodel_id, child_path), states, bindings
            )
        )
    return nodes


def element_parent_node_id(submodel_id: str, id_short_path: str) -> str:
    """The node id of the node an element hangs under: its parent element's, or the submodel's."""
    parent = parent_path(id_short_path)
    return node_ids.submodel_node_id(submodel_id) if parent is None else node_ids.node_id_for(submodel_id, parent)


_OBJECT_TYPES: tuple[tuple[type[model.SubmodelElement], str], ...] = (
    (model.AnnotatedRelationshipElement, "AASAnnotatedRelationshipElementType"),
    (model.RelationshipElement, "AASRelationshipElementType"),
    (model.SubmodelElementCollection, "AASSubmodelElementCollectionType"),
    (model.SubmodelElementList, "AASSubmodelElementListType"),
    (model.Entity, "AASEntityType"),
    (model.Range, "AASRangeType"),
    (model.File, "AASFileType"),
    (model.BasicEventElement, "AASBasicEventElementType"),
    (model.Operation, "AASOperationType"),
    (model.Capability, "AASCapabilityType"),
)
"""The type of each element kind shown as an object (subclasses before their superclasses)."""


def _object_type(element: model.SubmodelElement) -> str:
    for kind, type_name in _OBJECT_TYPES:
        if isinstance(element, kind):
            return type_name
    return "AASSubmodelElementType"


def _plan_element_node(
    submodel_id: str,
    id_short_path: str,
    element: model.SubmodelElement,
    parent_id: str,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    """The node of one element with its properties and value variables, without its child elements."""
    node_id = node_ids.node_id_for(submodel_id, id_short_path)
    browse_name = _last_segment(id_short_path)
    description = _preferred_text(element.description)
    semantic_id = semantic_id_text(element.semantic_id)
    nodes: list[NodeSpec] = []

    def member(name: str, reference: ReferenceKind, variant_type: ua.VariantType, value: Any) -> VariableNode:
        kind = VariableKind.PROPERTY if reference is ReferenceKind.HAS_PROPERTY else VariableKind.DATA_VARIABLE
        return VariableNode(
            node_ids.element_property_node_id(submodel_id, id_short_path, name),
            node_id,
            reference,
            name,
            kind,
            variant_type,
            _static_value(value, variant_type),
            browse_namespace=BrowseNamespace.TYPES,
        )

    def text(name: str, value: str | None) -> VariableNode:
        return member(name, ReferenceKind.HAS_PROPERTY, ua.VariantType.String, value)

    def value_variable(variant_type: ua.VariantType, value: ua.DataValue, type_name: str) -> VariableNode:
        return VariableNode(
            node_id,
            parent_id,
            ReferenceKind.HAS_COMPONENT,
            browse_name,
            VariableKind.AAS_TYPE,
            variant_type,
            value,
            description=description,
            type_definition=type_name,
            dictionary_entry=semantic_id,
        )

    if isinstance(element, model.Property):
        key = (submodel_id, id_short_path)
        binding = bindings.get(key)
        unit = binding.unit if binding is not None else None
        variant_type = variant_type_for(element.value_type)
        state = states.get(key)
        if state is None:
            now = utc_now()
            state = ValueState(element.value, now, now, Quality.GOOD)
        nodes.append(
            VariableNode(
                node_id,
                parent_id,
                ReferenceKind.HAS_COMPONENT,
                browse_name,
                VariableKind.ANALOG_UNIT if unit is not None else VariableKind.AAS_TYPE,
                variant_type,
                data_value(
                    state.value, variant_type, state.quality, state.reason, state.source_time, state.server_time
                ),
                writable=binding is None or binding.writable,
                description=description,
                element=key,
                type_definition=None if unit is not None else "AASPropertyType",
                dictionary_entry=semantic_id,
                minimum_sampling_interval=_milliseconds(binding.sampling_interval if binding is not None else None),
            )
        )
        if unit is not None:
            nodes.append(_engineering_units(submodel_id, id_short_path, node_id, unit))
        if binding is not None and binding.value_range is not None:
            nodes.append(_engineering_range(submodel_id, id_short_path, node_id, binding.value_range))
    elif isinstance(element, model.MultiLanguageProperty):
        language, content = _preferred_language_text(element.value)
        nodes.append(
            value_variable(
                ua.VariantType.LocalizedText,
                ua.DataValue(ua.Variant(ua.LocalizedText(content, language), ua.VariantType.LocalizedText)),
                "AASMultiLanguagePropertyType",
            )
        )
    elif isinstance(element, model.Blob):
        nodes.append(
            value_variable(
                ua.VariantType.ByteString, _static_value(element.value, ua.VariantType.ByteString), "AASBlobType"
            )
        )
        nodes.append(text("ContentType", element.content_type))
    elif isinstance(element, model.ReferenceElement):
        nodes.append(
            value_variable(
                ua.VariantType.String,
                _static_value(reference_text(element.value), ua.VariantType.String),
                "AASReferenceElementType",
            )
        )
    else:
        nodes.append(
            ObjectNode(
                node_id,
                parent_id,
                ReferenceKind.HAS_COMPONENT,
                browse_name,
                description,
                type_definition=_object_type(element),
                dictionary_entry=semantic_id,
                related=relationship_targets(element) if isinstance(element, model.RelationshipElement) else (),
            )
        )
        if isinstance(element, model.Range):
            variant_type = variant_type_for(element.value_type)
            nodes.append(member("Min", ReferenceKind.HAS_COMPONENT, variant_type, element.min))
            nodes.append(member("Max", ReferenceKind.HAS_COMPONENT, variant_type, element.max))
        elif isinstance(element, model.File):
            nodes.append(member("Value", ReferenceKind.HAS_COMPONENT, ua.VariantType.String, element.value))
            nodes.append(text("ContentType", element.content_type))
        elif isinstance(element, model.RelationshipElement):
            nodes.append(text("First", reference_text(element.first)))
            nodes.append(text("Second", reference_text(element.second)))
        elif isinstance(element, model.Entity):
            if element.entity_type is not None:
                nodes.append(text("EntityType", _enum_text(element.entity_type)))
            if element.global_asset_id:
                nodes.append(text("GlobalAssetId", element.global_asset_id))
        elif isinstance(element, model.BasicEventElement):
            nodes.append(text("Observed", reference_text(element.observed)))
            nodes.append(text("Direction", _enum_text(element.direction)))
            nodes.append(text("State", _enum_text(element.state)))
        elif isinstance(element, model.Operation):
            nodes.extend(plan_operation_method(submodel_id, id_short_path, element))
    if semantic_id is not None:
        nodes.append(text("SemanticId", semantic_id))
    return nodes


OPERATION_METHOD = "Invoke"
"""Browse name (types namespace) of the method of an Operation object."""


def plan_operation_method(submodel_id: str, id_short_path: str, operation: model.Operation) -> list[NodeSpec]:
    """The ``Invoke`` method of an Operation with its ``InputArguments`` and ``OutputArguments`` (OPC 10000-3 §5.7).

    Inputs are the input variables, then the in-output variables; outputs the output variables, then
    the in-output variables, each named by its idShort. A Property variable's argument has the native
    type of its valueType; any other element's is a String holding its ValueOnly JSON (AAS Part 2).
    """
    node_id = node_ids.element_property_node_id(submodel_id, id_short_path, OPERATION_METHOD)
    inputs = tuple(
        operation_argument(variable) for variable in (*operation.input_variable, *operation.in_output_variable)
    )
    outputs = tuple(
        operation_argument(variable) for variable in (*operation.output_variable, *operation.in_output_variable)
    )
    nodes: list[NodeSpec] = [
        MethodNode(
            node_id,
            node_ids.node_id_for(submodel_id, id_short_path),
            OPERATION_METHOD,
            (submodel_id, id_short_path),
            inputs,
            outputs,
            f"Runs the Operation {operation.id_short}",
        )
    ]
    for name, arguments in (("InputArguments", inputs), ("OutputArguments", outputs)):
        if arguments:
            nodes.append(
                VariableNode(
                    f"{node_id}.{name}",
                    node_id,
                    ReferenceKind.HAS_PROPERTY,
                    name,
                    VariableKind.PROPERTY,
                    ua.VariantType.ExtensionObject,
                    ua.DataValue(ua.Variant(list(arguments), ua.VariantType.ExtensionObject)),
                    data_type=ObjectIds.Argument,
                    browse_namespace=BrowseNamespace.STANDARD,
                    value_rank=ua.ValueRank.OneDimension,
                )
            )
    return nodes


def operation_argument(variable: model.SubmodelElement) -> ua.Argument:
    """The method argument of an operation variable: native for a Property, else ValueOnly JSON text."""
    variant_type = (
        variant_type_for(variable.value_type) if isinstance(variable, model.Property) else ua.VariantType.String
    )
    return ua.Argument(
        Name=variable.id_short or "",
        DataType=ua.NodeId(cast(Any, variant_type.value)),
        ValueRank=ua.ValueRank.Scalar,
        ArrayDimensions=[],
        Description=ua.LocalizedText(_preferred_text(variable.description)),
    )


def argument_to_value(variable: model.SubmodelElement, variant: ua.Variant) -> Any:
    """A method input as the ValueOnly value a handler takes; ``TypeMismatchError`` if it does not fit."""
    if isinstance(variable, model.Property):
        return values.to_json_value(values.coerce(variable.value_type, variant.Value))
    if not isinstance(variant.Value, str):
        raise TypeError(f"{variable.id_short} takes its ValueOnly JSON as a String")
    return json.loads(variant.Value)


def value_to_argument(variable: model.SubmodelElement, value: Any) -> ua.Variant:
    """A handler's ValueOnly output as the method's output argument of ``variable``."""
    if isinstance(variable, model.Property):
        variant_type = variant_type_for(variable.value_type)
        return to_variant(None if value is None else values.coerce(variable.value_type, value), variant_type)
    return ua.Variant(json.dumps(value), ua.VariantType.String)


def reference_text(reference: model.Reference | None) -> str | None:
    """A reference as text (AAS Part 1 §5.3.10.2 serialization): ``[ModelRef](Submodel)urn:x, (Property)Speed``."""
    if reference is None:
        return None
    kind = "ModelRef" if isinstance(reference, model.ModelReference) else "ExternalRef"
    keys = ", ".join(f"({_key_type_name(key.type)}){key.value}" for key in reference.key)
    return f"[{kind}]{keys}"


def _key_type_name(key_type: model.KeyTypes) -> str:
    return "".join(part.capitalize() for part in key_type.name.split("_"))


def engineering_units_information(unit: EngineeringUnit) -> ua.EUInformation:
    """The ``EUInformation`` of a UNECE unit (OPC 10000-8 §5.6.3)."""
    return ua.EUInformation(
        NamespaceUri=UNECE_UNITS_NAMESPACE,
        UnitId=unit.unit_id,
        DisplayName=ua.LocalizedText(unit.symbol, DISPLAY_LOCALE),
        Description=ua.LocalizedText(unit.description, DISPLAY_LOCALE),
    )


def _engineering_units(submodel_id: str, id_short_path: str, parent_id: str, unit: EngineeringUnit) -> VariableNode:
    information = engineering_units_information(unit)
    return _analog_property(
        submodel_id, id_short_path, parent_id, "EngineeringUnits", information, ObjectIds.EUInformation
    )


def _engineering_range(
    submodel_id: str, id_short_path: str, parent_id: str, value_range: tuple[float, float]
) -> VariableNode:
    """The ``EURange`` property (OPC 10000-8 §5.3.2): the range the value is expected in."""
    low, high = value_range
    value_range_structure = ua.Range(Low=float(low), High=float(high))
    return _analog_property(submodel_id, id_short_path, parent_id, "EURange", value_range_structure, ObjectIds.Range)


def _analog_property(
    submodel_id: str, id_short_path: str, parent_id: str, name: str, structure: Any, data_type: int
) -> VariableNode:
    """A standard property of an analog item (OPC 10000-8 §5.3.2) holding a ``structure`` of type ``data_type``."""
    return VariableNode(
        node_ids.element_property_node_id(submodel_id, id_short_path, name),
        parent_id,
        ReferenceKind.HAS_PROPERTY,
        name,
        VariableKind.PROPERTY,
        ua.VariantType.ExtensionObject,
        ua.DataValue(ua.Variant(structure, ua.VariantType.ExtensionObject)),
        data_type=data_type,
        browse_namespace=BrowseNamespace.STANDARD,
    )


def _milliseconds(seconds: float | None) -> float:
    return 0.0 if seconds is None else round(seconds * 1000.0, 3)


def semantic_id_text(reference: model.Reference | None) -> str | None:
    """The identifier a semanticId points to: the value of its last key."""
    if reference is None or not reference.key:
        return None
    return str(reference.key[-1].value)


def parent_path(id_short_path: str) -> str | None:
    """The idShort path of the element's parent element; ``None`` at the top of a submodel."""
    cut = max(id_short_path.rfind("."), id_short_path.rfind("["))
    return id_short_path[:cut] if cut > 0 else None


def _last_segment(id_short_path: str) -> str:
    cut = max(id_short_path.rfind("."), id_short_path.rfind("["))
    if cut < 0:
        return id_short_path
    return id_short_path[cut:] if id_short_path[cut] == "[" else id_short_path[cut + 1 :]


def _preferred_language_text(texts: model.LangStringSet | None) -> tuple[str | None, str | None]:
    if not texts:
        return None, None
    for language in ("en", "en-US", "en-GB"):
        if language in texts:
            return language, texts[language]
    language = next(iter(texts))
    return language, texts[language]


def _preferred_text(texts: model.LangStringSet | None) -> str | None:
    return _preferred_language_text(texts)[1]

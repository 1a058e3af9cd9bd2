"""The address-space plan: the twin store's shells and submodels as OPC UA node specifications.

Pure: :func:`plan_address_space` takes basyx objects, value states and bindings and returns plain
node specifications in parent-first order; ``server.py`` applies them to an asyncua server. The
layout follows the spirit of the OPC UA companion specification for the AAS (OPC 30270) in a
simplified form::

    Objects/AASEnvironment (Folder)
        Shells (Folder)/<shell idShort> (Object): Id, IdShort, GlobalAssetId; Organizes -> submodels
        Submodels (Folder)/<submodel idShort> (Object): Id, IdShort, SemanticId
            <element idShort> (Object for collections, lists, entities, annotated relationships
                               and other elements; Variable for Property and MultiLanguageProperty)

Left out for now: values of Range, File, Blob, ReferenceElement, RelationshipElement, Operation,
Capability and BasicEventElement (they appear as objects without value), qualifiers, extensions,
embedded data specifications and concept descriptions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from basyx.aas import model

from aas_server.model import paths
from aas_server.model.events import Quality, utc_now
from aas_server.model.units import EngineeringUnit
from aas_server.opcua import node_ids
from aas_server.opcua.variants import data_value, variant_type_for
from aas_server.store.twin_store import ElementBinding, ValueState

UNECE_UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
"""``EUInformation.NamespaceUri`` for UNECE Recommendation 20 units (OPC 10000-8 §5.6.3)."""

ElementKey = tuple[str, str]


class ReferenceKind(enum.Enum):
    ORGANIZES = ObjectIds.Organizes
    HAS_COMPONENT = ObjectIds.HasComponent
    HAS_PROPERTY = ObjectIds.HasProperty


class VariableKind(enum.Enum):
    """The type definition of a variable node."""

    PROPERTY = ObjectIds.PropertyType
    DATA_VARIABLE = ObjectIds.BaseDataVariableType
    ANALOG_UNIT = ObjectIds.AnalogUnitType
    """``AnalogUnitType`` (OPC 10000-8 §5.3.2.5): ``EngineeringUnits`` mandatory, no ``EURange`` needed."""


@dataclass(frozen=True, slots=True)
class ObjectNode:
    node_id: str
    parent_id: str | None
    """``None``: the standard ``Objects`` folder."""
    reference: ReferenceKind
    browse_name: str
    description: str | None = None
    is_folder: bool = False


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
    standard_browse_name: bool = False
    """The browse name is in namespace 0 (``EngineeringUnits``)."""
    element: ElementKey | None = None
    """``(submodel id, idShort path)`` of the Property whose live value this variable shows."""


@dataclass(frozen=True, slots=True)
class ExtraReference:
    """A reference beyond the parent-child tree (a shell organizing its submodels)."""

    source_id: str
    target_id: str
    reference: ReferenceKind


NodeSpec = ObjectNode | VariableNode


@dataclass(frozen=True, slots=True)
class AddressSpacePlan:
    nodes: list[NodeSpec]
    """Parents before their children."""
    references: list[ExtraReference]


def plan_address_space(
    shells: Iterable[model.AssetAdministrationShell],
    submodels: Iterable[model.Submodel],
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> AddressSpacePlan:
    """Plan the nodes of the whole environment; linear in the number of elements."""
    nodes: list[NodeSpec] = [
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
    ]
    references: list[ExtraReference] = []
    submodel_ids: set[str] = set()
    for submodel in submodels:
        submodel_ids.add(submodel.id)
        nodes.extend(_plan_submodel(submodel, states, bindings))
    for shell in shells:
        nodes.extend(_plan_shell(shell))
        for reference in shell.submodel:
            submodel_id = reference.key[0].value
            if submodel_id in submodel_ids:
                references.append(
                    ExtraReference(
                        node_ids.shell_node_id(shell.id),
                        node_ids.submodel_node_id(submodel_id),
                        ReferenceKind.ORGANIZES,
                    )
                )
    return AddressSpacePlan(nodes, references)


def _text_property(node_id: str, parent_id: str, browse_name: str, text: str) -> VariableNode:
    return VariableNode(
        node_id,
        parent_id,
        ReferenceKind.HAS_PROPERTY,
        browse_name,
        VariableKind.PROPERTY,
        ua.VariantType.String,
        ua.DataValue(ua.Variant(text, ua.VariantType.String)),
    )


def _plan_shell(shell: model.AssetAdministrationShell) -> list[NodeSpec]:
    shell_node = node_ids.shell_node_id(shell.id)
    nodes: list[NodeSpec] = [
        ObjectNode(
            shell_node,
            node_ids.SHELLS_FOLDER,
            ReferenceKind.ORGANIZES,
            shell.id_short or shell.id,
            _preferred_text(shell.description),
        ),
        _text_property(node_ids.shell_property_node_id(shell.id, "Id"), shell_node, "Id", shell.id),
    ]
    if shell.id_short:
        nodes.append(
            _text_property(node_ids.shell_property_node_id(shell.id, "IdShort"), shell_node, "IdShort", shell.id_short)
        )
    global_asset_id = shell.asset_information.global_asset_id
    if global_asset_id:
        nodes.append(
            _text_property(
                node_ids.shell_property_node_id(shell.id, "GlobalAssetId"),
                shell_node,
                "GlobalAssetId",
                global_asset_id,
            )
        )
    return nodes


def _plan_submodel(
    submodel: model.Submodel,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    submodel_node = node_ids.submodel_node_id(submodel.id)
    nodes: list[NodeSpec] = [
        ObjectNode(
            submodel_node,
            node_ids.SUBMODELS_FOLDER,
            ReferenceKind.ORGANIZES,
            submodel.id_short or submodel.id,
            _preferred_text(submodel.description),
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
    semantic_id = semantic_id_text(submodel.semantic_id)
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
        parent_path = _parent_path(id_short_path)
        parent_id = submodel_node if parent_path is None else node_ids.node_id_for(submodel.id, parent_path)
        nodes.extend(_plan_element(submodel.id, id_short_path, element, parent_id, states, bindings))
    return nodes


def _plan_element(
    submodel_id: str,
    id_short_path: str,
    element: model.SubmodelElement,
    parent_id: str,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    node_id = node_ids.node_id_for(submodel_id, id_short_path)
    browse_name = _last_segment(id_short_path)
    description = _preferred_text(element.description)
    nodes: list[NodeSpec] = []
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
                VariableKind.ANALOG_UNIT if unit is not None else VariableKind.DATA_VARIABLE,
                variant_type,
                data_value(
                    state.value, variant_type, state.quality, state.reason, state.source_time, state.server_time
                ),
                writable=binding is None or binding.writable,
                description=description,
                element=key,
            )
        )
        if unit is not None:
            nodes.append(_engineering_units(submodel_id, id_short_path, node_id, unit))
    elif isinstance(element, model.MultiLanguageProperty):
        text = _preferred_language_text(element.value)
        nodes.append(
            VariableNode(
                node_id,
                parent_id,
                ReferenceKind.HAS_COMPONENT,
                browse_name,
                VariableKind.DATA_VARIABLE,
                ua.VariantType.LocalizedText,
                ua.DataValue(ua.Variant(ua.LocalizedText(text[1], text[0]), ua.VariantType.LocalizedText)),
                description=description,
            )
        )
    else:
        nodes.append(ObjectNode(node_id, parent_id, ReferenceKind.HAS_COMPONENT, browse_name, description))
    semantic_id = semantic_id_text(element.semantic_id)
    if semantic_id is not None:
        nodes.append(
            _text_property(
                node_ids.element_property_node_id(submodel_id, id_short_path, "SemanticId"),
                node_id,
                "SemanticId",
                semantic_id,
            )
        )
    return nodes


def engineering_units_information(unit: EngineeringUnit) -> ua.EUInformation:
    """The ``EUInformation`` of a UNECE unit (OPC 10000-8 §5.6.3)."""
    return ua.EUInformation(
        NamespaceUri=UNECE_UNITS_NAMESPACE,
        UnitId=unit.unit_id,
        DisplayName=ua.LocalizedText(unit.symbol),
        Description=ua.LocalizedText(unit.description),
    )


def _engineering_units(submodel_id: str, id_short_path: str, parent_id: str, unit: EngineeringUnit) -> VariableNode:
    return VariableNode(
        node_ids.element_property_node_id(submodel_id, id_short_path, "EngineeringUnits"),
        parent_id,
        ReferenceKind.HAS_PROPERTY,
        "EngineeringUnits",
        VariableKind.PROPERTY,
        ua.VariantType.ExtensionObject,
        ua.DataValue(ua.Variant(engineering_units_information(unit), ua.VariantType.ExtensionObject)),
        data_type=ObjectIds.EUInformation,
        standard_browse_name=True,
    )


def semantic_id_text(reference: model.Reference | None) -> str | None:
    """The identifier a semanticId points to: the value of its last key."""
    if reference is None or not reference.key:
        return None
    return str(reference.key[-1].value)


def _parent_path(id_short_path: str) -> str | None:
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

"""The address-space plan: the twin store's shells and submodels as OPC UA node specifications.

Pure: :func:`plan_address_space` takes basyx objects, value states and bindings and returns plain
node specifications in parent-first order; ``server.py`` applies them to an asyncua server. The
layout follows the spirit of the OPC UA companion specification for the AAS (OPC 30270) in a
simplified form::

    Objects/AASEnvironment (Folder)
        Shells (Folder)/<shell idShort> (Object): Id, IdShort, GlobalAssetId; Organizes -> submodels
        Submodels (Folder)/<submodel idShort> (Object): Id, IdShort, SemanticId
            <element idShort> (Variable for Property, MultiLanguageProperty, Blob and
                               ReferenceElement; Object for the others: Range with Min/Max,
                               File with Value/ContentType, relationships with First/Second)

The planners are usable on a part of the environment (:func:`plan_shell`, :func:`plan_submodel`,
:func:`plan_element`) so that a model change re-plans only the subtree it touched.

Left out for now: values of Operation, Capability and BasicEventElement (objects without value),
qualifiers, extensions, embedded data specifications and concept descriptions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model

from aas_server.model import paths
from aas_server.model.events import Quality, utc_now
from aas_server.model.units import EngineeringUnit
from aas_server.opcua import node_ids
from aas_server.opcua.status import status
from aas_server.opcua.variants import data_value, to_variant, variant_type_for
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


def plan_environment_folders() -> list[NodeSpec]:
    """The ``AASEnvironment`` folder with its ``Shells`` and ``Submodels`` folders."""
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
    return AddressSpacePlan(nodes, references)


def shell_submodel_ids(shell: model.AssetAdministrationShell) -> list[str]:
    """The ids of the submodels a shell refers to (the first key of each submodel reference)."""
    return [str(reference.key[0].value) for reference in shell.submodel if reference.key]


def _text_property(node_id: str, parent_id: str, browse_name: str, text: str | None) -> VariableNode:
    return VariableNode(
        node_id,
        parent_id,
        ReferenceKind.HAS_PROPERTY,
        browse_name,
        VariableKind.PROPERTY,
        ua.VariantType.String,
        _static_value(text, ua.VariantType.String),
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


def plan_submodel(
    submodel: model.Submodel,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    """The nodes of one submodel and all its elements, parents first."""
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
        )

    def value_variable(variant_type: ua.VariantType, value: ua.DataValue) -> VariableNode:
        return VariableNode(
            node_id,
            parent_id,
            ReferenceKind.HAS_COMPONENT,
            browse_name,
            VariableKind.DATA_VARIABLE,
            variant_type,
            value,
            description=description,
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
            value_variable(
                ua.VariantType.LocalizedText,
                ua.DataValue(ua.Variant(ua.LocalizedText(text[1], text[0]), ua.VariantType.LocalizedText)),
            )
        )
    elif isinstance(element, model.Blob):
        nodes.append(value_variable(ua.VariantType.ByteString, _static_value(element.value, ua.VariantType.ByteString)))
        nodes.append(member("ContentType", ReferenceKind.HAS_PROPERTY, ua.VariantType.String, element.content_type))
    elif isinstance(element, model.ReferenceElement):
        nodes.append(
            value_variable(ua.VariantType.String, _static_value(reference_text(element.value), ua.VariantType.String))
        )
    else:
        nodes.append(ObjectNode(node_id, parent_id, ReferenceKind.HAS_COMPONENT, browse_name, description))
        if isinstance(element, model.Range):
            variant_type = variant_type_for(element.value_type)
            nodes.append(member("Min", ReferenceKind.HAS_COMPONENT, variant_type, element.min))
            nodes.append(member("Max", ReferenceKind.HAS_COMPONENT, variant_type, element.max))
        elif isinstance(element, model.File):
            nodes.append(member("Value", ReferenceKind.HAS_COMPONENT, ua.VariantType.String, element.value))
            nodes.append(member("ContentType", ReferenceKind.HAS_PROPERTY, ua.VariantType.String, element.content_type))
        elif isinstance(element, model.RelationshipElement):
            nodes.append(
                member("First", ReferenceKind.HAS_PROPERTY, ua.VariantType.String, reference_text(element.first))
            )
            nodes.append(
                member("Second", ReferenceKind.HAS_PROPERTY, ua.VariantType.String, reference_text(element.second))
            )
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

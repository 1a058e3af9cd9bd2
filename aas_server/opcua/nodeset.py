"""NodeSet2 XML (OPC 10000-6 Annex F) of the type model and of the instance address space, written with lxml.

* :func:`types_nodeset` turns :data:`aas_server.opcua.types.TYPE_MODEL` into the type nodeset that
  is committed as ``nodesets/aas-server.types.NodeSet2.xml`` and imported by the server at start
  (:func:`import_type_model`).
* :func:`instance_nodeset` writes an :class:`~aas_server.opcua.projection.AddressSpacePlan` (the
  same plan the server applies) as a nodeset that requires the type nodeset (``RequiredModel``),
  for engineering tools that import an address space offline (``aas-server nodeset export``).

Both are pure functions returning bytes; the output is deterministic for the same input.

Left out for now: values of structured types other than ``EUInformation`` and ``Argument``, and
``RolePermissions``/``AccessRestrictions`` attributes.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from basyx.aas import model
from lxml import etree

from aas_server.opcua import node_ids
from aas_server.opcua.projection import (
    DISPLAY_LOCALE,
    AddressSpacePlan,
    BrowseNamespace,
    ElementKey,
    MethodNode,
    NodeSpec,
    ObjectNode,
    ReferenceKind,
    VariableNode,
    plan_address_space,
    type_definition_of,
)
from aas_server.opcua.types import (
    REFERENCE_TYPE_MODEL,
    STANDARD_MODEL_VERSION,
    STANDARD_NAMESPACE_URI,
    STANDARD_PUBLICATION_DATE,
    TYPE_MODEL,
    TYPES_FILE_NAME,
    TYPES_MODEL_VERSION,
    TYPES_NAMESPACE_URI,
    TYPES_PUBLICATION_DATE,
    Member,
    MemberKind,
    ReferenceTypeDefinition,
    TypeDefinition,
    TypeNodeClass,
    is_model_type,
    member_node_id,
    type_node_id,
)
from aas_server.store.twin_store import ElementBinding

UA_NODESET = "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
UA_TYPES = "http://opcfoundation.org/UA/2008/02/Types.xsd"
_NAMESPACES = {None: UA_NODESET, "uax": UA_TYPES, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}

_MODELLING_RULES = {"Mandatory": ObjectIds.ModellingRule_Mandatory, "Optional": ObjectIds.ModellingRule_Optional}


def committed_types_path() -> Path:
    """Where the type nodeset is committed: ``nodesets/aas-server.types.NodeSet2.xml`` beside the package."""
    return Path(__file__).resolve().parent.parent.parent / "nodesets" / TYPES_FILE_NAME


class _Writer:
    """Collects the nodes of one nodeset; namespace 1.. are ``namespace_uris``."""

    def __init__(self, namespace_uris: list[str]) -> None:
        self._namespace_uris = namespace_uris
        self._aliases: dict[str, int] = {}
        self._nodes: list[Any] = []

    def index(self, uri: str) -> int:
        return self._namespace_uris.index(uri) + 1

    def standard(self, identifier: int, *, alias: bool = True) -> str:
        """A namespace-0 node: a data or reference type by its alias (its ``ObjectIds`` name), others as ``i=``."""
        name = ObjectIdNames.get(identifier)
        if not alias or name is None or not name.isidentifier():
            return f"i={identifier}"
        self._aliases[name] = identifier
        return name

    def node(self, tag: str, node_id: str, browse_name: str, **attributes: str) -> Any:
        element = etree.Element(f"{{{UA_NODESET}}}{tag}", nsmap=_NAMESPACES)
        element.set("NodeId", node_id)
        element.set("BrowseName", browse_name)
        for name, value in attributes.items():
            element.set(name, value)
        self._nodes.append(element)
        return element

    def write(self, models: list[tuple[str, str, str, list[tuple[str, str, str]]]]) -> bytes:
        root = etree.Element(f"{{{UA_NODESET}}}UANodeSet", nsmap=_NAMESPACES)
        uris = etree.SubElement(root, f"{{{UA_NODESET}}}NamespaceUris")
        for uri in self._namespace_uris:
            etree.SubElement(uris, f"{{{UA_NODESET}}}Uri").text = uri
        models_element = etree.SubElement(root, f"{{{UA_NODESET}}}Models")
        for uri, version, date, required in models:
            model_element = etree.SubElement(
                models_element, f"{{{UA_NODESET}}}Model", ModelUri=uri, Version=version, PublicationDate=date
            )
            for required_uri, required_version, required_date in required:
                etree.SubElement(
                    model_element,
                    f"{{{UA_NODESET}}}RequiredModel",
                    ModelUri=required_uri,
                    Version=required_version,
                    PublicationDate=required_date,
                )
        aliases = etree.SubElement(root, f"{{{UA_NODESET}}}Aliases")
        for name, identifier in sorted(self._aliases.items(), key=lambda item: item[1]):
            etree.SubElement(aliases, f"{{{UA_NODESET}}}Alias", Alias=name).text = f"i={identifier}"
        root.extend(self._nodes)
        etree.indent(root, space="  ")
        return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True))


def _text(parent: Any, tag: str, text: str | None, namespace: str = UA_NODESET) -> Any:
    element = etree.SubElement(parent, f"{{{namespace}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _names(element: Any, display_name: str, description: str | None, locale: str | None = None) -> None:
    name = _text(element, "DisplayName", display_name)
    if locale is not None:
        name.set("Locale", locale)
    if description:
        _text(element, "Description", description)


def _references(element: Any, references: Iterable[tuple[str, str, bool]]) -> None:
    container = etree.SubElement(element, f"{{{UA_NODESET}}}References")
    for reference_type, target, forward in references:
        reference = _text(container, "Reference", target)
        reference.set("ReferenceType", reference_type)
        if not forward:
            reference.set("IsForward", "false")


# --- the type model ----------------------------------------------------------------------------------


def types_nodeset() -> bytes:
    """The type model as NodeSet2 XML (namespace ``urn:aas-server:types:v3``)."""
    writer = _Writer([TYPES_NAMESPACE_URI])

    def type_reference(name: str) -> str:
        if is_model_type(name):
            return f"ns=1;s={type_node_id(name)}"
        return writer.standard(getattr(ObjectIds, name), alias=False)

    for definition in TYPE_MODEL:
        _write_type(writer, definition, type_reference)
    for reference_type in REFERENCE_TYPE_MODEL:
        _write_reference_type(writer, reference_type)
    return writer.write(
        [
            (
                TYPES_NAMESPACE_URI,
                TYPES_MODEL_VERSION,
                TYPES_PUBLICATION_DATE,
                [(STANDARD_NAMESPACE_URI, STANDARD_MODEL_VERSION, STANDARD_PUBLICATION_DATE)],
            )
        ]
    )


def _write_type(writer: _Writer, definition: TypeDefinition, type_reference: Any) -> None:
    node_id = f"ns=1;s={type_node_id(definition.browse_name)}"
    attributes = {"IsAbstract": "true"} if definition.abstract else {}
    if definition.node_class is TypeNodeClass.VARIABLE_TYPE:
        assert definition.data_type is not None
        attributes.update(DataType=writer.standard(getattr(ObjectIds, definition.data_type)), ValueRank="-1")
    element = writer.node(definition.node_class.value, node_id, f"1:{definition.browse_name}", **attributes)
    _names(element, definition.browse_name, definition.description)
    references = [(writer.standard(ObjectIds.HasSubtype), type_reference(definition.supertype), False)]
    for member in definition.members:
        references.append((_member_reference(writer, member), _member_id(definition, member), True))
    _references(element, references)
    for member in definition.members:
        _write_member(writer, definition, member, node_id, type_reference)


def _write_reference_type(writer: _Writer, definition: ReferenceTypeDefinition) -> None:
    node_id = f"ns=1;s={type_node_id(definition.browse_name)}"
    element = writer.node("UAReferenceType", node_id, f"1:{definition.browse_name}")
    _names(element, definition.browse_name, definition.description)
    supertype = writer.standard(getattr(ObjectIds, definition.supertype), alias=False)
    _references(element, [(writer.standard(ObjectIds.HasSubtype), supertype, False)])
    _text(element, "InverseName", definition.inverse_name)


def _member_id(definition: TypeDefinition, member: Member) -> str:
    return f"ns=1;s={member_node_id(definition.browse_name, member.browse_name)}"


def _member_reference(writer: _Writer, member: Member) -> str:
    return writer.standard(ObjectIds.HasProperty if member.kind is MemberKind.PROPERTY else ObjectIds.HasComponent)


def _write_member(
    writer: _Writer, definition: TypeDefinition, member: Member, parent: str, type_reference: Any
) -> None:
    node_id = _member_id(definition, member)
    browse_name = f"1:{member.browse_name}"
    if member.kind is MemberKind.OBJECT:
        assert member.object_type is not None
        element = writer.node("UAObject", node_id, browse_name, ParentNodeId=parent)
        type_definition = type_reference(member.object_type)
    else:
        assert member.data_type is not None
        element = writer.node(
            "UAVariable",
            node_id,
            browse_name,
            ParentNodeId=parent,
            DataType=writer.standard(getattr(ObjectIds, member.data_type)),
            ValueRank=str(member.value_rank),
        )
        type_definition = writer.standard(
            ObjectIds.PropertyType if member.kind is MemberKind.PROPERTY else ObjectIds.BaseDataVariableType,
            alias=False,
        )
    _names(element, member.browse_name, member.description)
    _references(
        element,
        [
            (writer.standard(ObjectIds.HasTypeDefinition), type_definition, True),
            (
                writer.standard(ObjectIds.HasModellingRule),
                writer.standard(_MODELLING_RULES[member.rule.value], alias=False),
                True,
            ),
            (_member_reference(writer, member), parent, False),
        ],
    )


# --- the instance address space ------------------------------------------------------------------


def instance_nodeset(
    plan: AddressSpacePlan,
    namespace_uri: str,
    *,
    version: str = "1.0.0",
    publication_date: datetime | None = None,
) -> bytes:
    """The nodes of ``plan`` as NodeSet2 XML in ``namespace_uri``, typed by the type nodeset it requires."""
    writer = _Writer([namespace_uri, TYPES_NAMESPACE_URI])
    date = _date_text(publication_date or datetime.now(UTC))
    extra: dict[str, list[tuple[str, str, bool]]] = {}
    for reference in plan.references:
        kind = (
            writer.standard(reference.reference.value)
            if isinstance(reference.reference, ReferenceKind)
            else f"ns=2;s={type_node_id(reference.reference)}"
        )
        extra.setdefault(reference.source_id, []).append((kind, _instance_id(reference.target_id), True))
        extra.setdefault(reference.target_id, []).append((kind, _instance_id(reference.source_id), False))
    for spec in [*plan.nodes, *plan.dictionary_entries]:
        _write_instance_node(writer, spec, extra.get(spec.node_id, []))
    return writer.write(
        [
            (
                namespace_uri,
                version,
                date,
                [
                    (STANDARD_NAMESPACE_URI, STANDARD_MODEL_VERSION, STANDARD_PUBLICATION_DATE),
                    (TYPES_NAMESPACE_URI, TYPES_MODEL_VERSION, TYPES_PUBLICATION_DATE),
                ],
            )
        ]
    )


def _date_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instance_id(node_id: str) -> str:
    return f"ns=1;s={node_id}"


def _browse_name(spec: NodeSpec) -> str:
    if spec.browse_namespace is BrowseNamespace.STANDARD:
        return spec.browse_name
    index = 2 if spec.browse_namespace is BrowseNamespace.TYPES else 1
    return f"{index}:{spec.browse_name}"


def _write_instance_node(writer: _Writer, spec: NodeSpec, extra: list[tuple[str, str, bool]]) -> None:
    node_id = _instance_id(spec.node_id)
    parent = (
        _instance_id(spec.parent_id)
        if spec.parent_id is not None
        else writer.standard(ObjectIds.ObjectsFolder, alias=False)
    )
    browse_name = _browse_name(spec)
    references: list[tuple[str, str, bool]] = []
    type_id = type_definition_of(spec)
    if type_id is not None:
        target = (
            writer.standard(type_id, alias=False) if isinstance(type_id, int) else f"ns=2;s={type_node_id(type_id)}"
        )
        references.append((writer.standard(ObjectIds.HasTypeDefinition), target, True))
    references.append((writer.standard(spec.reference.value), parent, False))
    if not isinstance(spec, MethodNode) and spec.dictionary_entry is not None:
        entry = _instance_id(node_ids.dictionary_entry_node_id(spec.dictionary_entry))
        references.append((writer.standard(ObjectIds.HasDictionaryEntry), entry, True))
    references.extend(extra)
    if isinstance(spec, ObjectNode):
        element = writer.node("UAObject", node_id, browse_name, ParentNodeId=parent)
    elif isinstance(spec, MethodNode):
        element = writer.node("UAMethod", node_id, browse_name, ParentNodeId=parent)
    else:
        access = str(ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if spec.writable else 0))
        data_type = spec.data_type if spec.data_type is not None else spec.variant_type.value
        sampling = (
            {"MinimumSamplingInterval": f"{spec.minimum_sampling_interval:g}"} if spec.minimum_sampling_interval else {}
        )
        element = writer.node(
            "UAVariable",
            node_id,
            browse_name,
            ParentNodeId=parent,
            DataType=writer.standard(data_type),
            ValueRank=str(spec.value_rank),
            AccessLevel=access,
            UserAccessLevel=access,
            **sampling,
        )
    display_name = spec.browse_name if isinstance(spec, MethodNode) else spec.display_name or spec.browse_name
    _names(element, display_name, spec.description, DISPLAY_LOCALE)
    _references(element, references)
    if isinstance(spec, VariableNode) and spec.value.Value is not None:
        _write_value(element, spec.value.Value)


def _write_value(element: Any, variant: ua.Variant) -> None:
    if variant.Value is None or variant.VariantType is ua.VariantType.Null:
        return
    container = etree.SubElement(element, f"{{{UA_NODESET}}}Value")
    if isinstance(variant.Value, list):
        items = _text(container, f"ListOf{variant.VariantType.name}", None, UA_TYPES)
        for item in variant.Value:
            _scalar(items, variant.VariantType, item)
        return
    _scalar(container, variant.VariantType, variant.Value)


def _scalar(parent: Any, variant_type: ua.VariantType, value: Any) -> None:
    """One value as its ``uax:`` element (OPC 10000-6 §5.3)."""
    if variant_type is ua.VariantType.ExtensionObject:
        _extension_object(parent, value)
        return
    if variant_type is ua.VariantType.LocalizedText:
        _localized_text(parent, "LocalizedText", value)
        return
    _text(parent, variant_type.name, _lexical(variant_type, value), UA_TYPES)


def _lexical(variant_type: ua.VariantType, value: Any) -> str:
    if variant_type is ua.VariantType.Boolean:
        return "true" if value else "false"
    if variant_type in (ua.VariantType.Double, ua.VariantType.Float):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "INF" if number > 0 else "-INF"
        return repr(number)
    if variant_type is ua.VariantType.DateTime:
        moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if variant_type is ua.VariantType.ByteString:
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _localized_text(parent: Any, tag: str, text: ua.LocalizedText) -> None:
    element = _text(parent, tag, None, UA_TYPES)
    if text.Locale:
        _text(element, "Locale", text.Locale, UA_TYPES)
    if text.Text is not None:
        _text(element, "Text", text.Text, UA_TYPES)


def _extension_object(parent: Any, value: Any) -> None:
    """``EUInformation`` and ``Argument`` bodies (the only structures the projection uses)."""
    element = _text(parent, "ExtensionObject", None, UA_TYPES)
    type_id = _text(element, "TypeId", None, UA_TYPES)
    body = _text(_text(element, "Body", None, UA_TYPES), type(value).__name__, None, UA_TYPES)
    if isinstance(value, ua.EUInformation):
        _text(type_id, "Identifier", f"i={ObjectIds.EUInformation_Encoding_DefaultXml}", UA_TYPES)
        _text(body, "NamespaceUri", value.NamespaceUri, UA_TYPES)
        _text(body, "UnitId", str(value.UnitId), UA_TYPES)
        _localized_text(body, "DisplayName", value.DisplayName)
        _localized_text(body, "Description", value.Description)
    elif isinstance(value, ua.Argument):
        _text(type_id, "Identifier", f"i={ObjectIds.Argument_Encoding_DefaultXml}", UA_TYPES)
        _text(body, "Name", value.Name, UA_TYPES)
        _text(_text(body, "DataType", None, UA_TYPES), "Identifier", value.DataType.to_string(), UA_TYPES)
        _text(body, "ValueRank", str(value.ValueRank), UA_TYPES)
        if value.Description is not None and value.Description.Text:
            _localized_text(body, "Description", value.Description)
    else:
        raise TypeError(f"no NodeSet2 encoding for {type(value).__name__}")


# --- loading ----------------------------------------------------------------------------------------


async def import_type_model(server: Server) -> int:
    """Import the type nodeset into ``server`` (the committed file, or the generated one) and return its index."""
    path = committed_types_path()
    if path.is_file():
        await server.import_xml(str(path))
    else:
        await server.import_xml(xmlstring=cast(Any, types_nodeset()))
    return int(await server.get_namespace_index(TYPES_NAMESPACE_URI))


def export_address_space(
    identifiables: Iterable[model.Identifiable],
    bindings: Mapping[ElementKey, ElementBinding],
    namespace_uri: str,
    *,
    version: str = "1.0.0",
    publication_date: datetime | None = None,
) -> bytes:
    """The address space the server would build for ``identifiables`` (with the model's values) as NodeSet2 XML.

    ``bindings`` are the device bindings of the mapping files: they decide which Properties are
    writable and carry ``EngineeringUnits``, as in the running server.
    """
    items = list(identifiables)
    plan = plan_address_space(
        [item for item in items if isinstance(item, model.AssetAdministrationShell)],
        [item for item in items if isinstance(item, model.Submodel)],
        {},
        bindings,
    )
    return instance_nodeset(plan, namespace_uri, version=version, publication_date=publication_date)

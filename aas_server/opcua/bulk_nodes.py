"""AddNodes in time linear in the number of nodes (OPC 10000-4 §5.7.2 semantics, asyncua's data structures).

asyncua's ``NodeManagementService._add_node`` scans every reference of the parent twice for each
node it adds (for a ``HasProperty`` browse name clash and for a duplicate reference), and builds
two dozen ``Variant``/``DataValue`` objects per node: adding *n* children to one parent costs
O(n²) (10,000 properties in one submodel took over 30 s) and 100,000 nodes in small folders
still take ~25 s.

:class:`BulkNodeAdder` adds the same ``ua.AddNodesItem`` s to the same ``AddressSpace`` with the
same result: the same attributes, references (in the same order) and status codes
(``BadNodeIdExists``, ``BadParentNodeIdInvalid``, ``BadBrowseNameDuplicated``,
``BadTypeDefinitionInvalid``), checked against asyncua's own AddNodes by
``tests/test_opcua_scale.py``, with one deliberate difference: a browse name clashes with a
``HasProperty`` child's only if both name and namespace are equal (asyncua compares names only),
so an element named like a member its parent's type declares (``SemanticId`` in the instance
namespace beside the ``SemanticId`` property in the types namespace) is added, not refused; browse
paths tell them apart by namespace. It differs in how: each parent's references are scanned once per
call, not once per child; attribute ``DataValue`` s that are equal for many nodes (NodeClass,
AccessLevel, DataType, WriteMask...) are shared, as are a node's inverse reference to its parent
and its ``HasTypeDefinition`` reference (asyncua never mutates them in place; it replaces an
attribute's value on write and renames references consistently); and a variable can be given
its initial ``DataValue`` (status code and timestamps included) instead of being written after.

This is the one module that reaches into asyncua's server internals (``NodeData``,
``AttributeValue``, ``NodeData.references``), which asyncua's XML importer and ``AddressSpace.load``
also rely on; it is used only for nodes the projection adds itself.
"""

from __future__ import annotations

import datetime
import functools
import gc
from collections.abc import Sequence
from typing import Any, cast

from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from aas_server.opcua.status import status

_HAS_PROPERTY = ua.NodeId(cast(Any, ObjectIds.HasProperty))
_HAS_TYPE_DEFINITION = ua.NodeId(cast(Any, ObjectIds.HasTypeDefinition))
_NULL = ua.NodeId()
_INSTANCE_CLASSES = (ua.NodeClass.Object, ua.NodeClass.Variable)

_MASK = ua.NodeAttributesMask
_PLAIN, _TEXT, _UNIQUE = 0, 1, 2
"""How an attribute's ``DataValue`` is shared: by value, by text, or not at all."""
_Attribute = tuple[str, AttributeIds, int, ua.VariantType, bool, int]
_ATTRIBUTES: tuple[_Attribute, ...] = tuple(
    (name, AttributeIds[name], int(getattr(_MASK, name)), variant_type, is_array, sharing)
    for name, variant_type, is_array, sharing in (
        ("AccessLevel", ua.VariantType.Byte, False, _PLAIN),
        ("ArrayDimensions", ua.VariantType.UInt32, True, _PLAIN),
        ("BrowseName", ua.VariantType.QualifiedName, False, _UNIQUE),
        ("ContainsNoLoops", ua.VariantType.Boolean, False, _PLAIN),
        ("DataType", ua.VariantType.NodeId, False, _PLAIN),
        ("Description", ua.VariantType.LocalizedText, False, _TEXT),
        ("DisplayName", ua.VariantType.LocalizedText, False, _UNIQUE),
        ("EventNotifier", ua.VariantType.Byte, False, _PLAIN),
        ("Executable", ua.VariantType.Boolean, False, _PLAIN),
        ("Historizing", ua.VariantType.Boolean, False, _PLAIN),
        ("InverseName", ua.VariantType.LocalizedText, False, _TEXT),
        ("IsAbstract", ua.VariantType.Boolean, False, _PLAIN),
        ("MinimumSamplingInterval", ua.VariantType.Double, False, _PLAIN),
        ("NodeClass", ua.VariantType.Int32, False, _PLAIN),
        ("NodeId", ua.VariantType.NodeId, False, _UNIQUE),
        ("Symmetric", ua.VariantType.Boolean, False, _PLAIN),
        ("UserAccessLevel", ua.VariantType.Byte, False, _PLAIN),
        ("UserExecutable", ua.VariantType.Boolean, False, _PLAIN),
        ("ValueRank", ua.VariantType.Int32, False, _PLAIN),
        ("WriteMask", ua.VariantType.UInt32, False, _PLAIN),
        ("UserWriteMask", ua.VariantType.UInt32, False, _PLAIN),
        ("DataTypeDefinition", ua.VariantType.ExtensionObject, False, _UNIQUE),
    )
)
"""Attributes taken from ``NodeAttributes`` in asyncua's order (``UserWriteMask`` ends up UInt32, as there)."""
_VALUE_MASK = int(_MASK.Value)


class BulkNodeAdder:
    """Adds ``AddNodesItem`` s to an asyncua ``AddressSpace`` in linear time (see the module docstring)."""

    def __init__(self, address_space: AddressSpace) -> None:
        self._address_space = address_space

    def add_nodes(
        self, items: Sequence[ua.AddNodesItem], values: Sequence[ua.DataValue | None] | None = None
    ) -> list[ua.AddNodesResult]:
        """Add ``items`` (parents before children), as the AddNodes service would; one result per item.

        ``values[i]``, when given, is the initial ``DataValue`` of variable ``items[i]`` (instead of
        its ``NodeAttributes.Value`` stamped with the current time).
        """
        return self.session().add_nodes(items, values)

    def session(self) -> AddNodesSession:
        """Several ``add_nodes`` calls in a row sharing their caches: one subtree added in slices, with the
        event loop served between them, in time linear in the whole subtree (not in each slice times the
        parent's references so far)."""
        return AddNodesSession(_Call(self._address_space))


class AddNodesSession:
    """``BulkNodeAdder.add_nodes`` calls sharing one set of caches (see ``BulkNodeAdder.session``).

    The caches hold the browse names and references of the parents seen so far: between two calls,
    nodes below those parents are added by this session only.
    """

    def __init__(self, call: _Call) -> None:
        self._call = call

    def add_nodes(
        self, items: Sequence[ua.AddNodesItem], values: Sequence[ua.DataValue | None] | None = None
    ) -> list[ua.AddNodesResult]:
        """As ``BulkNodeAdder.add_nodes``."""
        call = self._call
        collecting = gc.isenabled()
        gc.disable()
        try:
            return [call.add(item, values[index] if values is not None else None) for index, item in enumerate(items)]
        finally:
            if collecting:
                gc.enable()


class _Call:
    """The caches of one ``add_nodes`` call."""

    def __init__(self, address_space: AddressSpace) -> None:
        self.address_space = address_space
        now = datetime.datetime.now(datetime.UTC)
        self.source_time = now
        self.server_time = now if address_space.force_server_timestamp else None
        self.shared_values: dict[tuple[Any, ...], ua.DataValue] = {}
        self.property_names: dict[ua.NodeId, set[tuple[int, str]]] = {}
        self.referenced: dict[ua.NodeId, set[tuple[ua.NodeId, ua.NodeId]] | None] = {}
        self.inverse_references: dict[tuple[ua.NodeId, ua.NodeId], ua.ReferenceDescription | None] = {}
        self.type_references: dict[ua.NodeId, ua.ReferenceDescription] = {}
        self.added: set[ua.NodeId] = set()

    def add(self, item: ua.AddNodesItem, value: ua.DataValue | None) -> ua.AddNodesResult:
        address_space = self.address_space
        node_id = item.RequestedNewNodeId
        if node_id.has_null_identifier():
            node_id = address_space.generate_nodeid(node_id.NamespaceIndex)
        elif node_id in address_space:
            return _failed(StatusCodes.BadNodeIdExists)
        parent_id = item.ParentNodeId
        parent = None if parent_id.is_null() else address_space.get(parent_id)
        if parent is None:
            return _failed(StatusCodes.BadParentNodeIdInvalid)
        names = self.property_names.get(parent_id)
        if names is None:
            names = {
                (reference.BrowseName.NamespaceIndex, reference.BrowseName.Name)
                for reference in parent.references
                if reference.ReferenceTypeId == _HAS_PROPERTY
            }
            self.property_names[parent_id] = names
        if (item.BrowseName.NamespaceIndex, item.BrowseName.Name) in names:
            return _failed(StatusCodes.BadBrowseNameDuplicated)
        type_definition = item.TypeDefinition
        has_type_definition = not type_definition.is_null()
        if has_type_definition and type_definition not in address_space:
            return _failed(StatusCodes.BadTypeDefinitionInvalid)

        node = NodeData(node_id)
        self._add_attributes(node, item, value)
        address_space[node_id] = node
        self.added.add(node_id)
        attributes = item.NodeAttributes
        if self._not_yet_referenced(parent, node_id, item.ReferenceTypeId):
            parent.references.append(
                ua.ReferenceDescription(
                    ReferenceTypeId=item.ReferenceTypeId,
                    IsForward=True,
                    NodeId=node_id,
                    BrowseName=item.BrowseName,
                    DisplayName=attributes.DisplayName,
                    NodeClass=item.NodeClass,
                    TypeDefinition=item.TypeDefinition,
                )
            )
        if item.ReferenceTypeId == _HAS_PROPERTY:
            names.add((item.BrowseName.NamespaceIndex, item.BrowseName.Name))
        inverse = self._inverse_reference(parent, item.ReferenceTypeId)
        if inverse is not None:
            node.references.append(inverse)
        if has_type_definition:
            node.references.append(self._type_reference(type_definition))
        return ua.AddNodesResult(StatusCode=status(StatusCodes.Good), AddedNodeId=node_id)

    def _add_attributes(self, node: NodeData, item: ua.AddNodesItem, value: ua.DataValue | None) -> None:
        node_attributes = node.attributes
        node_attributes[AttributeIds.NodeId] = AttributeValue(
            ua.DataValue(ua.Variant(node.nodeid, ua.VariantType.NodeId, is_array=False))
        )
        node_attributes[AttributeIds.BrowseName] = AttributeValue(
            ua.DataValue(ua.Variant(item.BrowseName, ua.VariantType.QualifiedName, is_array=False))
        )
        node_attributes[AttributeIds.NodeClass] = AttributeValue(
            self._shared(AttributeIds.NodeClass, (type(item.NodeClass), item.NodeClass), item.NodeClass)
        )
        attributes = item.NodeAttributes
        specified = int(attributes.SpecifiedAttributes)
        for name, attribute_id, _, variant_type, is_array, sharing in _specified(specified):
            attribute = getattr(attributes, name)
            if sharing == _PLAIN and not isinstance(attribute, list):
                data_value = self._shared(attribute_id, (type(attribute), attribute), attribute, variant_type, is_array)
            elif sharing == _TEXT:
                key = (attribute.Locale, attribute.Text)
                data_value = self._shared(attribute_id, key, attribute, variant_type, is_array)
            elif attribute_id == AttributeIds.DataTypeDefinition and not isinstance(attribute, ua.DataTypeDefinition):
                data_value = ua.DataValue(ua.Variant(None, ua.VariantType.Null))
            else:
                data_value = ua.DataValue(ua.Variant(attribute, variant_type, is_array=is_array))
            node_attributes[attribute_id] = AttributeValue(data_value)
        if specified & _VALUE_MASK:
            if value is None:
                value = ua.DataValue(
                    ua.Variant(attributes.Value, is_array=False),
                    SourceTimestamp=cast(Any, self.source_time),
                    ServerTimestamp=cast(Any, self.server_time),
                )
            node_attributes[AttributeIds.Value] = AttributeValue(value)

    def _shared(
        self,
        attribute_id: AttributeIds,
        key: tuple[Any, ...],
        attribute: Any,
        variant_type: ua.VariantType = ua.VariantType.Int32,
        is_array: bool = False,
    ) -> ua.DataValue:
        """One ``DataValue`` per attribute and value, for all the nodes of the call."""
        shared = self.shared_values.get((attribute_id, key))
        if shared is None:
            shared = ua.DataValue(ua.Variant(attribute, variant_type, is_array=is_array))
            self.shared_values[(attribute_id, key)] = shared
        return shared

    def _not_yet_referenced(self, parent: NodeData, target: ua.NodeId, reference_type: ua.NodeId) -> bool:
        """Whether ``parent`` has no reference of this type to ``target`` yet (asyncua's ``_add_unique_reference``)."""
        if parent.nodeid in self.added:
            return True
        existing = self.referenced.get(parent.nodeid)
        if existing is None:
            existing = {(reference.NodeId, reference.ReferenceTypeId) for reference in parent.references}
            self.referenced[parent.nodeid] = existing
        if (target, reference_type) in existing:
            return False
        existing.add((target, reference_type))
        return True

    def _inverse_reference(self, parent: NodeData, reference_type: ua.NodeId) -> ua.ReferenceDescription | None:
        """The child → parent reference (asyncua's ``_add_ref_to_parent``), one object per parent and type."""
        key = (parent.nodeid, reference_type)
        if key in self.inverse_references:
            return self.inverse_references[key]
        node_class = parent.attributes[AttributeIds.NodeClass].value
        if node_class is None or node_class.Value is None:
            self.inverse_references[key] = None
            return None
        reference = self._describe(parent.nodeid, reference_type, False, node_class.Value.Value)
        self.inverse_references[key] = reference
        return reference

    def _type_reference(self, type_definition: ua.NodeId) -> ua.ReferenceDescription:
        reference = self.type_references.get(type_definition)
        if reference is None:
            reference = self._describe(type_definition, _HAS_TYPE_DEFINITION, True, ua.NodeClass.Unspecified)
            self.type_references[type_definition] = reference
        return reference

    def _describe(
        self, target: ua.NodeId, reference_type: ua.NodeId, is_forward: bool, node_class: ua.NodeClass
    ) -> ua.ReferenceDescription:
        """A reference to an existing node as asyncua's ``_add_reference_no_check`` describes it."""
        address_space = self.address_space
        reference = ua.ReferenceDescription()
        reference.ReferenceTypeId = reference_type
        reference.IsForward = is_forward
        reference.NodeId = target
        if node_class == ua.NodeClass.Unspecified:
            found = address_space.read_attribute_value(target, AttributeIds.NodeClass)
            if found.Value is not None:
                reference.NodeClass = found.Value.Value
        else:
            reference.NodeClass = node_class
        browse_name = address_space.read_attribute_value(target, AttributeIds.BrowseName)
        if browse_name.Value is not None and browse_name.Value.Value:
            reference.BrowseName = browse_name.Value.Value
        display_name = address_space.read_attribute_value(target, AttributeIds.DisplayName)
        if display_name.Value is not None and display_name.Value.Value:
            reference.DisplayName = display_name.Value.Value
        if reference.NodeClass in _INSTANCE_CLASSES:
            target_node = address_space.get(target)
            if target_node is not None:
                for target_reference in target_node.references:
                    if target_reference.IsForward and target_reference.ReferenceTypeId == _HAS_TYPE_DEFINITION:
                        reference.TypeDefinition = target_reference.NodeId
                        break
        return reference


@functools.cache
def _specified(mask: int) -> tuple[_Attribute, ...]:
    """The attributes a ``SpecifiedAttributes`` mask names, in asyncua's order."""
    return tuple(attribute for attribute in _ATTRIBUTES if mask & attribute[2])


def _failed(code: int) -> ua.AddNodesResult:
    return ua.AddNodesResult(StatusCode=status(code))

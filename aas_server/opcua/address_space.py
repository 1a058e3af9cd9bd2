"""The projection's nodes inside a running asyncua server, kept equal to the store subtree by subtree.

:class:`ProjectedAddressSpace` applies plans from :mod:`aas_server.opcua.projection` and follows the
store's model changes (``ModelChanged``) without a restart: for a changed shell, submodel or element
it re-plans that subtree only and compares the plan with the nodes it added before. Nodes whose
structure is unchanged stay (so clients' monitored items survive a ``PUT`` that changes values only);
their value and description are updated in place. Nodes whose structure changed (another node class,
``DataType``, type definition, browse name, access level) are deleted with everything below them and
added again with the same node ids. Each change is announced to clients by a ``GeneralModelChangeEvent``
(OPC 10000-3 *ModelChangeEvents*; its ``ModelChangeStructureDataType``: OPC 10000-5 §12.16) from the
``Server`` object.

asyncua scans its whole address space for every node deleted with ``DeleteTargetReferences``; the
projection knows every reference into a subtree (the parent's, and shells' ``Organizes`` links) and
deletes those explicitly instead, so removing a subtree costs time linear in its size. Likewise
nodes are added by :class:`~aas_server.opcua.bulk_nodes.BulkNodeAdder` (asyncua's AddNodes result in
linear rather than quadratic time), each Property variable with its planned value, status and
timestamps at once.

A large subtree (a submodel of 40,000 Properties) must not hold the event loop: the plan of a
submodel of more than ``LARGE_ELEMENT_COUNT`` elements is made in a worker thread under the store's
change lock, and nodes are compared, added, updated and deleted in slices of ``_SLICE`` with a yield
to the loop between them, so other clients are answered meanwhile; they may see the subtree half
built, as they see any AddNodes in progress, and the ``GeneralModelChangeEvent`` follows its end.

Left out for now: the ``NodeVersion`` property (OPC 10000-3) and ``SemanticChangeEvent``;
descendants of an added or deleted node are not listed in the event (the node's verb implies them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from basyx.aas import model

from aas_server.errors import HubError
from aas_server.model import paths
from aas_server.opcua import node_ids
from aas_server.opcua.bulk_nodes import BulkNodeAdder
from aas_server.opcua.methods import OperationInvoker
from aas_server.opcua.projection import (
    DISPLAY_LOCALE,
    BrowseNamespace,
    ElementKey,
    MethodNode,
    NodeSpec,
    ObjectNode,
    TypeId,
    VariableNode,
    dictionary_entry_node,
    element_parent_node_id,
    parent_path,
    plan_element,
    plan_environment_folders,
    plan_shell,
    plan_submodel,
    shell_submodel_ids,
    type_definition_of,
)
from aas_server.opcua.types import is_model_type, type_definition, type_node_id
from aas_server.opcua.writes import PropertyTarget
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import (
    ElementBinding,
    ModelChanged,
    ModelChangeKind,
    TwinStore,
    ValueState,
    collector_paused,
    is_large,
)

_LOG = logging.getLogger(__name__)

_SLICE = 250
"""Nodes added, compared or updated between two yields to the event loop (a few milliseconds of work):
a subtree of 100,000 nodes is re-projected while other clients are still answered."""

_FREEZE_AT = 10_000
"""Nodes added by one change from which the cyclic garbage collector pauses while they are added and
then freezes them (see :func:`~aas_server.store.twin_store.collector_paused`)."""

_NodeIdFactory = Callable[[str | None], ua.NodeId]

NODE_ADDED = ua.ModelChangeStructureVerbMask.NodeAdded.value
NODE_DELETED = ua.ModelChangeStructureVerbMask.NodeDeleted.value
REFERENCE_ADDED = ua.ModelChangeStructureVerbMask.ReferenceAdded.value
REFERENCE_DELETED = ua.ModelChangeStructureVerbMask.ReferenceDeleted.value
DATA_TYPE_CHANGED = ua.ModelChangeStructureVerbMask.DataTypeChanged.value


@dataclass(slots=True)
class ModelChanges:
    """The ``Changes`` of one ``GeneralModelChangeEvent``: affected node id → (type definition, verb bits)."""

    verbs: dict[str, tuple[ua.NodeId, int]] = field(default_factory=dict)

    def add(self, node_id: str, type_definition: ua.NodeId, verb: int) -> None:
        known = self.verbs.get(node_id)
        self.verbs[node_id] = (type_definition, verb | (known[1] if known else 0))

    def __bool__(self) -> bool:
        return bool(self.verbs)


_Value = TypeVar("_Value")


class _StoreView(Mapping[ElementKey, _Value]):
    """What the store keeps per element (value states, bindings) as a mapping, without copying it.

    ``get`` does not raise ``KeyError`` for elements without an entry: the planner asks for every Property.
    """

    def __init__(
        self, lookup: Callable[[str, str], _Value | None], entries: Callable[[], Iterable[ElementKey]]
    ) -> None:
        self._lookup = lookup
        self._entries = entries

    def __getitem__(self, key: ElementKey) -> _Value:
        value = self._lookup(*key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: ElementKey, default: Any = None) -> Any:
        value = self._lookup(*key)
        return default if value is None else value

    def __iter__(self) -> Iterator[ElementKey]:
        return iter(self._entries())

    def __len__(self) -> int:
        return sum(1 for _ in self._entries())


class ProjectedAddressSpace:
    """The store's shells and submodels as nodes of one asyncua server, and the indexes the sync needs.

    ``value_nodes`` maps each Property to its variable (for the value sync), ``property_targets`` each
    such variable back to its Property (for client writes), ``operation_methods`` each Operation's
    ``Invoke`` method to its Operation; all are updated in place on every change. Nodes are typed by
    the type model imported into namespace ``types_namespace_index`` (without it, by the base types).
    """

    def __init__(
        self,
        server: Server,
        store: TwinStore,
        namespace_index: int,
        *,
        types_namespace_index: int | None = None,
        operations: OperationRegistry | None = None,
        call_timeout: float = 30.0,
    ) -> None:
        self._server = server
        self._session = server.iserver.isession
        self._address_space = server.iserver.aspace
        self._bulk = BulkNodeAdder(self._address_space)
        self._type_node_ids: dict[TypeId | None, ua.NodeId] = {}
        self._store = store
        self._states = _StoreView[ValueState](store.state, lambda: (key for key, _ in store.states()))
        self._bindings = _StoreView[ElementBinding](store.binding, store.bindings)
        self._namespace_index = namespace_index
        self._types_namespace_index = types_namespace_index
        self._invoker = OperationInvoker(store, operations, call_timeout)
        self._dictionary_entries: set[str] = set()
        """SemanticIds whose dictionary entry node exists (kept while the server runs)."""
        self._specs: dict[str, NodeSpec] = {}
        self._children: dict[str | None, dict[str, None]] = {}
        self._wanted_links: dict[str, frozenset[str]] = {}
        """Shell id → ids of the submodels it refers to (present in the store or not)."""
        self._wanted_by: dict[str, set[str]] = {}
        """Submodel id → ids of the shells referring to it."""
        self._links: set[tuple[str, str]] = set()
        """``(shell id, submodel id)`` pairs with an ``Organizes`` reference in the address space."""
        self._related: dict[str, tuple[tuple[str, str], ...]] = {}
        """Relationship node id → its ``(reference type, target node id)`` pairs (present or not)."""
        self._related_by_target: dict[str, set[str]] = {}
        """Target node id → the relationship node ids pointing to it."""
        self._related_links: set[tuple[str, str, str]] = set()
        """``(relationship node id, reference type, target node id)`` references in the address space."""
        self._event: Any = None
        self._lock = asyncio.Lock()
        self.value_nodes: dict[ElementKey, tuple[ua.NodeId, ua.VariantType]] = {}
        self.property_targets: dict[ua.NodeId, PropertyTarget] = {}
        self.operation_methods: dict[ua.NodeId, ElementKey] = {}

    def node_id(self, text: str | None) -> ua.NodeId:
        """The ``NodeId`` of a planned node id (``None``: the standard ``Objects`` folder)."""
        if text is None:
            return _node_id(ObjectIds.ObjectsFolder)
        return _node_id(text, self._namespace_index)

    def type_node_id(self, type_id: TypeId | None) -> ua.NodeId:
        """The ``NodeId`` of a planned type definition (a type-model name, or a namespace-0 id)."""
        if type_id is None:
            return ua.NodeId()
        if isinstance(type_id, int):
            return _node_id(type_id)
        if self._types_namespace_index is None or not is_model_type(type_id):
            variable = type_definition(type_id).data_type is not None if is_model_type(type_id) else False
            return _node_id(ObjectIds.BaseDataVariableType if variable else ObjectIds.BaseObjectType)
        return _node_id(type_node_id(type_id), self._types_namespace_index)

    def _type_of(self, spec: NodeSpec | None) -> ua.NodeId:
        type_id = type_definition_of(spec) if spec is not None else ObjectIds.BaseObjectType
        node_id = self._type_node_ids.get(type_id)
        if node_id is None:
            node_id = self._type_node_ids[type_id] = self.type_node_id(type_id)
        return node_id

    def _browse_namespace_index(self, namespace: BrowseNamespace) -> int:
        if namespace is BrowseNamespace.STANDARD:
            return 0
        if namespace is BrowseNamespace.TYPES and self._types_namespace_index is not None:
            return self._types_namespace_index
        return self._namespace_index

    async def build(self) -> None:
        """Add the environment folders and every shell and submodel of the store (no events)."""
        async with self._lock:
            await self._reconcile(node_ids.ENVIRONMENT_FOLDER, plan_environment_folders(), ModelChanges())
            await self._reconcile_all(ModelChanges())

    async def enable_model_change_events(self) -> None:
        """From now on announce each change with a ``GeneralModelChangeEvent`` from the ``Server`` object."""
        generator = await self._server.get_event_generator(ObjectIds.GeneralModelChangeEventType)
        event = generator.event
        event.data_types["Changes"] = ua.VariantType.ExtensionObject
        self._event = generator

    async def apply(self, change: ModelChanged) -> None:
        """Make the subtree ``change`` names equal to the store's current state, and announce it."""
        changes = ModelChanges()
        async with self._lock:
            if change.id_short_path is None:
                await self._reconcile_identifiable(change.identifiable_id, changes)
            else:
                await self._reconcile_element(change.identifiable_id, change.id_short_path, change.kind, changes)
        await self._report(changes, f"{change.kind.value}: {change.identifiable_id} {change.id_short_path or ''}")

    async def resynchronize(self) -> None:
        """Compare the whole projection with the store (after the change bus dropped events)."""
        changes = ModelChanges()
        async with self._lock:
            await self._reconcile_all(changes)
        await self._report(changes, "resynchronized with the store")

    # --- reconciling ---------------------------------------------------------------------------

    async def _reconcile_all(self, changes: ModelChanges) -> None:
        identifiers = dict.fromkeys([shell.id for shell in self._store.shells()])
        identifiers.update(dict.fromkeys(submodel.id for submodel in self._store.submodels()))
        for folder in (node_ids.SHELLS_FOLDER, node_ids.SUBMODELS_FOLDER):
            for child in self._children.get(folder, {}):
                identifiers[child.rsplit("/", 1)[0]] = None
        for identifier in identifiers:
            await self._reconcile_identifiable(identifier, changes)

    async def _reconcile_identifiable(self, identifier: str, changes: ModelChanges) -> None:
        shell = _find(self._store.shell, identifier)
        shell_node = node_ids.shell_node_id(identifier)
        if shell is not None or shell_node in self._specs:
            planned = plan_shell(shell) if shell is not None else []
            await self._reconcile(shell_node, planned, changes, identifiable=True)
            before = self._wanted_links.pop(identifier, frozenset())
            for submodel_id in before:
                self._wanted_by.get(submodel_id, set()).discard(identifier)
            after = frozenset(shell_submodel_ids(shell)) if shell is not None else frozenset()
            if after:
                self._wanted_links[identifier] = after
                for submodel_id in after:
                    self._wanted_by.setdefault(submodel_id, set()).add(identifier)
            await self._sync_links([(identifier, submodel_id) for submodel_id in before | after], changes)
        submodel_node = node_ids.submodel_node_id(identifier)
        if _find(self._store.submodel, identifier) is not None or submodel_node in self._specs:
            await self._reconcile(submodel_node, await self._plan_submodel(identifier), changes, identifiable=True)
            shells = self._wanted_by.get(identifier, set())
            await self._sync_links([(shell_id, identifier) for shell_id in shells], changes)

    async def _plan_submodel(self, submodel_id: str) -> list[NodeSpec]:
        """The plan of the submodel the store holds now (empty: none); a large one's made in a worker thread.

        Planning a large submodel takes seconds of CPU; the store's change lock keeps its structure
        still meanwhile, and the plan is plain data once made.
        """
        submodel = _find(self._store.submodel, submodel_id)
        if submodel is None or not is_large(submodel):
            return [] if submodel is None else plan_submodel(submodel, self._states, self._bindings)
        async with self._store.change_lock(submodel_id):
            submodel = _find(self._store.submodel, submodel_id)
            if submodel is None:
                return []
            return await asyncio.to_thread(plan_submodel, submodel, self._states, self._bindings)

    async def _reconcile_element(
        self, submodel_id: str, id_short_path: str, kind: ModelChangeKind, changes: ModelChanges
    ) -> None:
        target: str | None = id_short_path
        if kind is ModelChangeKind.DELETED and id_short_path.endswith("]"):
            target = parent_path(id_short_path)
        while target is not None and element_parent_node_id(submodel_id, target) not in self._specs:
            target = parent_path(target)
        planned: list[NodeSpec] | None = None
        submodel = _find(self._store.submodel, submodel_id)
        if submodel is not None and node_ids.submodel_node_id(submodel_id) in self._specs and target is not None:
            if not is_large(submodel):
                planned = _plan_element_at(submodel, target, self._states, self._bindings)
            else:
                async with self._store.change_lock(submodel_id):
                    submodel = _find(self._store.submodel, submodel_id)
                    if submodel is not None:
                        planned = await asyncio.to_thread(
                            _plan_element_at, submodel, target, self._states, self._bindings
                        )
        if planned is None or target is None:
            await self._reconcile_identifiable(submodel_id, changes)
            return
        await self._reconcile(node_ids.node_id_for(submodel_id, target), planned, changes)

    async def _reconcile(
        self, root: str, planned: list[NodeSpec], changes: ModelChanges, *, identifiable: bool = False
    ) -> None:
        """Turn the subtree at ``root`` into ``planned`` (parents first, ``root`` first; empty: remove it)."""
        old_ids = self._subtree(root)
        old = set(old_ids)
        rebuilt: set[str] = set()
        to_add: list[NodeSpec] = []
        in_place: list[NodeSpec] = []
        new_ids: set[str] = set()
        for index, spec in enumerate(planned):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
            new_ids.add(spec.node_id)
            previous = self._specs.get(spec.node_id) if spec.node_id in old else None
            if previous is None or spec.parent_id in rebuilt or _structure(previous) != _structure(spec):
                rebuilt.add(spec.node_id)
                to_add.append(spec)
            else:
                in_place.append(spec)
        removed = [node for node in old_ids if node not in new_ids or node in rebuilt]
        removed_specs = await self._remove(removed, changes, identifiable) if removed else {}
        for spec in to_add:
            if spec.parent_id in rebuilt:
                continue
            verb = NODE_ADDED | (NODE_DELETED if spec.node_id in old else 0)
            previous_variable = removed_specs.get(spec.node_id)
            if (
                isinstance(spec, VariableNode)
                and isinstance(previous_variable, VariableNode)
                and (previous_variable.variant_type, previous_variable.data_type) != (spec.variant_type, spec.data_type)
            ):
                verb |= DATA_TYPE_CHANGED
            changes.add(spec.node_id, self._type_of(spec), verb)
            if spec.parent_id is not None and spec.parent_id in self._specs:
                parent = self._specs[spec.parent_id]
                reference_verb = REFERENCE_ADDED | (REFERENCE_DELETED if spec.node_id in old else 0)
                changes.add(spec.parent_id, self._type_of(parent), reference_verb)
        if to_add:
            await self._add(to_add, changes)
        for index, spec in enumerate(in_place):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
            await self._update_in_place(spec)

    def _subtree(self, root: str) -> list[str]:
        if root not in self._specs:
            return []
        result: list[str] = []
        stack = [root]
        while stack:
            node = stack.pop()
            result.append(node)
            stack.extend(reversed(self._children.get(node, {})))
        return result

    async def _remove(self, removed: list[str], changes: ModelChanges, identifiable: bool) -> dict[str, NodeSpec]:
        """Delete the nodes ``removed`` and every reference into them; return their specifications."""
        removed_set = set(removed)
        references: list[ua.DeleteReferencesItem] = []
        for node in removed:
            spec = self._specs[node]
            if spec.parent_id in removed_set:
                continue
            references.append(
                _delete_reference(self.node_id(spec.parent_id), self.node_id(node), spec.reference.value, False)
            )
            parent = self._specs.get(spec.parent_id) if spec.parent_id is not None else None
            if parent is not None:
                changes.add(parent.node_id, self._type_of(parent), REFERENCE_DELETED)
            changes.add(node, self._type_of(spec), NODE_DELETED)
        references.extend(self._unlink_relationships(removed, changes))
        if identifiable:
            for shell_id, submodel_id in list(self._links):
                shell_node = node_ids.shell_node_id(shell_id)
                submodel_node = node_ids.submodel_node_id(submodel_id)
                if shell_node in removed_set or submodel_node in removed_set:
                    references.append(
                        _delete_reference(
                            self.node_id(shell_node), self.node_id(submodel_node), ObjectIds.Organizes, True
                        )
                    )
                    self._links.discard((shell_id, submodel_id))
                    for node in (shell_node, submodel_node):
                        changes.add(node, self._type_of(self._specs.get(node)), REFERENCE_DELETED)
        for status in await self._session.delete_references(references):
            if not status.is_good():
                _LOG.debug("OPC UA reference already gone: %s", status.name)
        for start in range(0, len(removed), _SLICE):
            if start:
                await asyncio.sleep(0)
            items = [
                ua.DeleteNodesItem(NodeId=self.node_id(node), DeleteTargetReferences=False)
                for node in removed[start : start + _SLICE]
            ]
            await self._session.delete_nodes(ua.DeleteNodesParameters(NodesToDelete=items))
        removed_specs: dict[str, NodeSpec] = {}
        for index, node in enumerate(removed):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
            spec = self._specs.pop(node)
            removed_specs[node] = spec
            self._children.pop(node, None)
            siblings = self._children.get(spec.parent_id)
            if siblings is not None:
                siblings.pop(node, None)
            if isinstance(spec, VariableNode) and spec.element is not None:
                self.value_nodes.pop(spec.element, None)
                self.property_targets.pop(self.node_id(node), None)
            elif isinstance(spec, MethodNode):
                self.operation_methods.pop(self.node_id(node), None)
        return removed_specs

    async def _add(self, specs: list[NodeSpec], changes: ModelChanges) -> None:
        """Add ``specs`` (parents first) in slices of ``_SLICE`` nodes, yielding to the loop between."""
        adding = self._bulk.session()
        entries: dict[str, None] = {}
        with collector_paused(len(specs) >= _FREEZE_AT) as keep:
            for start in range(0, len(specs), _SLICE):
                if start:
                    await asyncio.sleep(0)
                batch = specs[start : start + _SLICE]
                results = adding.add_nodes(
                    [
                        _add_nodes_item(
                            spec,
                            self.node_id,
                            self._browse_namespace_index(spec.browse_namespace),
                            self._type_of(spec),
                        )
                        for spec in batch
                    ],
                    [_initial_value(spec) for spec in batch],
                )
                self._register_added(batch, results, entries)
            keep()
        if entries:
            await self._add_dictionary_references([self._specs[node] for node in entries])
        await self._link_relationships(specs, changes)

    def _register_added(
        self, specs: list[NodeSpec], results: list[ua.AddNodesResult], entries: dict[str, None]
    ) -> None:
        """Note the nodes just added (with their values and methods); collect in ``entries`` those with a
        dictionary entry."""
        for spec, result in zip(specs, results, strict=True):
            if not result.StatusCode.is_good():
                _LOG.warning("could not add the OPC UA node %r: %s", spec.node_id, result.StatusCode.name)
                continue
            self._specs[spec.node_id] = spec
            self._children.setdefault(spec.parent_id, {})[spec.node_id] = None
            if isinstance(spec, MethodNode):
                method_id = self.node_id(spec.node_id)
                self.operation_methods[method_id] = spec.element
                self._session.add_method_callback(method_id, self._invoker.callback(*spec.element))
                continue
            if spec.dictionary_entry is not None:
                entries[spec.node_id] = None
            if isinstance(spec, VariableNode) and spec.element is not None:
                variable_id = self.node_id(spec.node_id)
                self.value_nodes[spec.element] = (variable_id, spec.variant_type)
                self.property_targets[variable_id] = PropertyTarget(
                    spec.element[0], spec.element[1], spec.variant_type, spec.writable
                )

    async def _link_relationships(self, added: list[NodeSpec], changes: ModelChanges) -> None:
        """Reference each added relationship's targets, and each added target from its relationships.

        Both directions are added (``AASRelationshipFirst``/``Second`` and their inverse), so that
        deleting a relationship or a target can remove them explicitly (see :meth:`_unlink_relationships`).
        """
        if self._types_namespace_index is None:
            return
        candidates: dict[tuple[str, str, str], None] = {}
        for spec in added:
            if spec.node_id not in self._specs:
                continue
            if isinstance(spec, ObjectNode) and spec.related:
                self._related[spec.node_id] = spec.related
                for reference_type, target in spec.related:
                    self._related_by_target.setdefault(target, set()).add(spec.node_id)
                    candidates[(spec.node_id, reference_type, target)] = None
            for source in self._related_by_target.get(spec.node_id, ()):
                for reference_type, target in self._related.get(source, ()):
                    if target == spec.node_id:
                        candidates[(source, reference_type, target)] = None
        items: list[ua.AddReferencesItem] = []
        for link in candidates:
            source, reference_type, target = link
            if link in self._related_links or source not in self._specs or target not in self._specs:
                continue
            reference_type_id = _node_id(reference_type, self._types_namespace_index)
            for is_forward in (True, False):
                item = ua.AddReferencesItem()
                item.SourceNodeId = self.node_id(source if is_forward else target)
                item.TargetNodeId = self.node_id(target if is_forward else source)
                item.ReferenceTypeId = reference_type_id
                item.IsForward = is_forward
                item.TargetNodeClass = ua.NodeClass.Unspecified
                items.append(item)
            self._related_links.add(link)
            for node in (source, target):
                changes.add(node, self._type_of(self._specs.get(node)), REFERENCE_ADDED)
        if items:
            for status in await self._session.add_references(items):
                if not status.is_good():
                    _LOG.warning("relationship reference not added: %s", status.name)

    def _unlink_relationships(self, removed: list[str], changes: ModelChanges) -> list[ua.DeleteReferencesItem]:
        """The relationship references into or out of the nodes ``removed`` (both directions), forgotten.

        A removed relationship is forgotten; a removed target stays wanted, so that a node added
        again with its id gets the references back.
        """
        if not self._related_links and not self._related:
            return []
        items: list[ua.DeleteReferencesItem] = []
        links: dict[tuple[str, str, str], None] = {}
        for node in removed:
            for reference_type, target in self._related.get(node, ()):
                links[(node, reference_type, target)] = None
            for source in self._related_by_target.get(node, ()):
                for reference_type, target in self._related.get(source, ()):
                    if target == node:
                        links[(source, reference_type, target)] = None
        for link in links:
            if link not in self._related_links:
                continue
            source, reference_type, target = link
            assert self._types_namespace_index is not None
            item = ua.DeleteReferencesItem()
            item.SourceNodeId = self.node_id(source)
            item.TargetNodeId = self.node_id(target)
            item.ReferenceTypeId = _node_id(reference_type, self._types_namespace_index)
            item.IsForward = True
            item.DeleteBidirectional = True
            items.append(item)
            self._related_links.discard(link)
            for node in (source, target):
                changes.add(node, self._type_of(self._specs.get(node)), REFERENCE_DELETED)
        for node in removed:
            for _, target in self._related.pop(node, ()):
                sources = self._related_by_target.get(target)
                if sources is not None:
                    sources.discard(node)
                    if not sources:
                        del self._related_by_target[target]
        return items

    async def _add_dictionary_references(self, specs: list[NodeSpec]) -> None:
        """``HasDictionaryEntry`` from each node to its semanticId's entry, adding entries not there yet.

        Only the forward reference is added, so deleting the node removes it; entries stay.
        """
        references: list[ua.AddReferencesItem] = []
        new_entries: list[ObjectNode] = []
        for spec in specs:
            semantic_id = getattr(spec, "dictionary_entry", None)
            if semantic_id is None:
                continue
            entry = dictionary_entry_node(semantic_id)
            if semantic_id not in self._dictionary_entries:
                self._dictionary_entries.add(semantic_id)
                new_entries.append(entry)
            item = ua.AddReferencesItem()
            item.SourceNodeId = self.node_id(spec.node_id)
            item.TargetNodeId = self.node_id(entry.node_id)
            item.ReferenceTypeId = _node_id(ObjectIds.HasDictionaryEntry)
            item.IsForward = True
            item.TargetNodeClass = ua.NodeClass.Object
            references.append(item)
        if new_entries and node_ids.DICTIONARY_FOLDER in self._specs:
            added = self._bulk.add_nodes(
                [
                    _add_nodes_item(entry, self.node_id, self._namespace_index, self._type_of(entry))
                    for entry in new_entries
                ]
            )
            for entry, result in zip(new_entries, added, strict=True):
                if not result.StatusCode.is_good():
                    _LOG.warning("could not add the dictionary entry %r: %s", entry.browse_name, result.StatusCode.name)
        for start in range(0, len(references), _SLICE):
            if start:
                await asyncio.sleep(0)
            for status in await self._session.add_references(references[start : start + _SLICE]):
                if not status.is_good():
                    _LOG.debug("HasDictionaryEntry not added: %s", status.name)

    async def _update_in_place(self, spec: NodeSpec) -> None:
        previous = self._specs[spec.node_id]
        node = self.node_id(spec.node_id)
        if previous.description != spec.description:
            await self._server.write_attribute_value(
                node,
                ua.DataValue(ua.Variant(ua.LocalizedText(spec.description), ua.VariantType.LocalizedText)),
                AttributeIds.Description,
            )
        if isinstance(spec, VariableNode):
            current = self._address_space.read_attribute_value(node, AttributeIds.Value)
            if not _same_value(current, spec.value, exact=spec.element is not None):
                await self._server.write_attribute_value(node, spec.value)
        self._specs[spec.node_id] = spec

    async def _sync_links(self, pairs: Iterable[tuple[str, str]], changes: ModelChanges) -> None:
        """Add or delete the shell → submodel ``Organizes`` references of ``pairs`` as the store wants them."""
        to_add: list[ua.AddReferencesItem] = []
        to_delete: list[ua.DeleteReferencesItem] = []
        for shell_id, submodel_id in pairs:
            shell_node = node_ids.shell_node_id(shell_id)
            submodel_node = node_ids.submodel_node_id(submodel_id)
            wanted = (
                submodel_id in self._wanted_links.get(shell_id, ())
                and shell_node in self._specs
                and submodel_node in self._specs
            )
            present = (shell_id, submodel_id) in self._links
            if wanted and not present:
                for is_forward in (True, False):
                    item = ua.AddReferencesItem()
                    item.SourceNodeId = self.node_id(shell_node if is_forward else submodel_node)
                    item.TargetNodeId = self.node_id(submodel_node if is_forward else shell_node)
                    item.ReferenceTypeId = _node_id(ObjectIds.Organizes)
                    item.IsForward = is_forward
                    item.TargetNodeClass = ua.NodeClass.Object
                    to_add.append(item)
                self._links.add((shell_id, submodel_id))
                verb = REFERENCE_ADDED
            elif present and not wanted:
                to_delete.append(
                    _delete_reference(self.node_id(shell_node), self.node_id(submodel_node), ObjectIds.Organizes, True)
                )
                self._links.discard((shell_id, submodel_id))
                verb = REFERENCE_DELETED
            else:
                continue
            for node in (shell_node, submodel_node):
                changes.add(node, self._type_of(self._specs.get(node)), verb)
        if to_add:
            for status in await self._session.add_references(to_add):
                status.check()
        if to_delete:
            await self._session.delete_references(to_delete)

    async def _report(self, changes: ModelChanges, message: str) -> None:
        if self._event is None or not changes:
            return
        self._event.event.Changes = [
            ua.ModelChangeStructureDataType(
                Affected=self.node_id(node),
                AffectedType=type_definition,
                Verb=cast(ua.Byte, verb),
            )
            for node, (type_definition, verb) in changes.verbs.items()
        ]
        await self._event.trigger(message=message)


def _plan_element_at(
    submodel: model.Submodel,
    id_short_path: str,
    states: Mapping[ElementKey, ValueState],
    bindings: Mapping[ElementKey, ElementBinding],
) -> list[NodeSpec]:
    """The plan of the element at ``id_short_path`` in ``submodel`` (empty: there is none)."""
    try:
        element = paths.resolve(submodel, id_short_path)
    except HubError:
        return []
    return plan_element(submodel.id, id_short_path, element, states, bindings)


def _find(lookup: Callable[[str], Any], identifier: str) -> Any:
    try:
        return lookup(identifier)
    except HubError:
        return None


def _structure(spec: NodeSpec) -> tuple[Any, ...]:
    """What cannot change without deleting and adding the node again (all but value and description)."""
    if isinstance(spec, MethodNode):
        return ("method", spec.parent_id, spec.browse_name, spec.element, spec.input_arguments, spec.output_arguments)
    if isinstance(spec, ObjectNode):
        return (
            "object",
            spec.parent_id,
            spec.reference,
            spec.browse_name,
            spec.is_folder,
            spec.type_definition,
            spec.browse_namespace,
            spec.dictionary_entry,
            spec.related,
            spec.display_name,
        )
    return (
        "variable",
        spec.parent_id,
        spec.reference,
        spec.browse_name,
        spec.kind,
        spec.variant_type,
        spec.data_type,
        spec.writable,
        spec.browse_namespace,
        spec.element,
        spec.type_definition,
        spec.value_rank,
        spec.dictionary_entry,
        spec.display_name,
        spec.minimum_sampling_interval,
    )


def _initial_value(spec: NodeSpec) -> ua.DataValue | None:
    """A Property variable's planned ``DataValue`` (status and timestamps); ``None``: stamped when added."""
    return spec.value if isinstance(spec, VariableNode) and spec.element is not None else None


def _same_value(current: ua.DataValue, planned: ua.DataValue, *, exact: bool) -> bool:
    """Whether a node already holds ``planned`` (``exact``: status code and source time too)."""
    if current.Value != planned.Value:
        return False
    if not exact:
        return True
    return _status_value(current) == _status_value(planned) and current.SourceTimestamp == planned.SourceTimestamp


def _status_value(data_value: ua.DataValue) -> int:
    return 0 if data_value.StatusCode is None else int(data_value.StatusCode.value)


def _delete_reference(
    source: ua.NodeId, target: ua.NodeId, reference_type: int, bidirectional: bool
) -> ua.DeleteReferencesItem:
    item = ua.DeleteReferencesItem()
    item.SourceNodeId = source
    item.TargetNodeId = target
    item.ReferenceTypeId = _node_id(reference_type)
    item.IsForward = True
    item.DeleteBidirectional = bidirectional
    return item


def _add_nodes_item(
    spec: NodeSpec, node_id: _NodeIdFactory, browse_namespace_index: int, type_definition: ua.NodeId
) -> ua.AddNodesItem:
    """The AddNodes request item of a planned node (keyword construction: ~4x faster at 100,000 nodes)."""
    browse_name = ua.QualifiedName(spec.browse_name, cast(Any, browse_namespace_index))
    if not isinstance(spec, MethodNode):
        common: dict[str, Any] = {
            "RequestedNewNodeId": node_id(spec.node_id),
            "ParentNodeId": node_id(spec.parent_id),
            "ReferenceTypeId": _standard_node_id(spec.reference.value),
            "BrowseName": browse_name,
            "TypeDefinition": type_definition,
        }
        if isinstance(spec, ObjectNode):
            object_attributes = ua.ObjectAttributes(
                DisplayName=ua.LocalizedText(spec.display_name or spec.browse_name, DISPLAY_LOCALE),
                Description=ua.LocalizedText(spec.description),
                WriteMask=0,
                UserWriteMask=0,
                EventNotifier=0,
            )
            return ua.AddNodesItem(NodeClass=ua.NodeClass.Object, NodeAttributes=object_attributes, **common)
        access = _READ | _WRITE if spec.writable else _READ
        attributes = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(spec.display_name or spec.browse_name, DISPLAY_LOCALE),
            Description=ua.LocalizedText(spec.description),
            WriteMask=0,
            UserWriteMask=0,
            Value=spec.value.Value,
            DataType=_standard_node_id(spec.data_type if spec.data_type is not None else spec.variant_type.value),
            ValueRank=spec.value_rank,
            ArrayDimensions=cast(Any, None),
            AccessLevel=access,
            UserAccessLevel=access,
            MinimumSamplingInterval=spec.minimum_sampling_interval,
            Historizing=False,
        )
        return ua.AddNodesItem(NodeClass=ua.NodeClass.Variable, NodeAttributes=attributes, **common)
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id(spec.node_id)
    item.ParentNodeId = node_id(spec.parent_id)
    item.ReferenceTypeId = _node_id(spec.reference.value)
    item.BrowseName = browse_name
    if isinstance(spec, MethodNode):
        item.NodeClass = ua.NodeClass.Method
        method_attributes = ua.MethodAttributes()
        method_attributes.DisplayName = ua.LocalizedText(spec.browse_name, DISPLAY_LOCALE)
        method_attributes.Description = ua.LocalizedText(spec.description)
        method_attributes.Executable = True
        method_attributes.UserExecutable = True
        method_attributes.WriteMask = 0
        method_attributes.UserWriteMask = 0
        item.NodeAttributes = method_attributes
    return item


_READ = ua.AccessLevel.CurrentRead.mask
_WRITE = ua.AccessLevel.CurrentWrite.mask


@functools.cache
def _standard_node_id(identifier: int) -> ua.NodeId:
    """A namespace-0 ``NodeId``, shared (asyncua never changes a ``NodeId`` in place)."""
    return _node_id(identifier)


def _node_id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))

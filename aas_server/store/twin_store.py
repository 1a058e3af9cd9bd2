"""The live AAS environment: basyx objects, the value state beside them, and the write path.

The store is the one truth REST, OPC UA and later MQTT show (``ARCHITECTURE.md``, *One truth*).
It holds the shells, submodels and concept descriptions as basyx-python-sdk objects, keeps for each
Property its source timestamp and quality, applies ``ValueChanged`` events coming from the mapping
engine, and runs client writes: type check, device write through the ``DeviceWriter`` of a
device-bound Property (which awaits the device's acknowledgement, outside the submodel's lock), then,
under the lock, journal, apply, publish.

With an ``outbox_encoder`` set, every client write and model change is also encoded as an
outbound change event (``store.outbox``) before it is journaled, and the journal (an
``OutboxJournal``) stores the event in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import enum
import gc
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, cast

from basyx.aas import model

from aas_server.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    NotWritableError,
    TypeMismatchError,
)
from aas_server.exchange.roundtrip import check_roundtrip
from aas_server.model import paths, values
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.lexical import keep_order
from aas_server.model.units import EngineeringUnit
from aas_server.store.bus import ChangeBus
from aas_server.store.files import StoredPackage
from aas_server.store.outbox import OutboundEvent, OutboxEncoder

WriteHandler = Callable[[Any], Awaitable[None]]
"""A stand-in device for one Property: awaits the device's acknowledgement of a value (tests)."""


class DeviceWriter(Protocol):
    """Carries a client's value of a device-bound Property to its device (implemented by ``runtime.gateway``).

    ``write`` returns once the device acknowledged ``value`` (already of the Property's valueType);
    it raises ``TypeMismatchError`` when the device point cannot hold it (checked before anything is
    sent), ``NotWritableError`` for a read-only point and ``DeviceError`` when the device refuses it
    or cannot be reached. The store calls it without holding the submodel's lock, one write of a
    Property at a time, in the order the writes arrived.
    """

    async def write(self, submodel_id: str, id_short_path: str, value: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class _HandlerWriter:
    """A ``WriteHandler`` of one Property as a ``DeviceWriter``."""

    handler: WriteHandler

    async def write(self, submodel_id: str, id_short_path: str, value: Any) -> None:
        await self.handler(value)


LARGE_ELEMENT_COUNT = 1_000
"""From this many elements on, a submodel is walked, encoded and planned in a worker thread, not on the
event loop (tens of milliseconds of CPU; a submodel of 40,000 elements takes seconds)."""


@contextlib.contextmanager
def collector_paused(large: bool) -> Iterator[Callable[[], None]]:
    """For a ``large`` change: no cyclic garbage collection meanwhile; call what it yields once the change's
    objects are kept, and they are frozen (``gc.freeze``) when the block ends.

    Each full collection walks every tracked object (about 0.3 s of CPU at the 700,000 objects of a
    submodel of 40,000 Properties, 1 s with its OPC UA nodes) and holds the interpreter meanwhile, so
    no client is answered. Frozen objects are out of the collector's sight, as the startup model is
    (``opcua.server``): memory is still freed by reference counting, but reference cycles among frozen
    objects, such as a large submodel's basyx objects once it is replaced or deleted, stay until the
    process ends. Nothing is frozen unless the yielded callable was called (a failed change).
    """
    kept: list[bool] = []
    if not large:
        yield lambda: None
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: kept.append(True)
    finally:
        if kept:
            gc.freeze()
        if enabled:
            gc.enable()


def is_large(identifiable: model.Identifiable | model.SubmodelElement) -> bool:
    """Whether ``identifiable`` holds more than ``LARGE_ELEMENT_COUNT`` elements (shells and concept descriptions
    never do)."""
    if not isinstance(identifiable, model.Submodel | model.SubmodelElement):
        return False
    return paths.has_more_than(identifiable, LARGE_ELEMENT_COUNT)


class ModelChangeKind(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ModelChanged:
    """An identifiable, or the element at ``id_short_path`` in it, was created, updated or deleted."""

    kind: ModelChangeKind
    identifiable_id: str
    id_short_path: str | None = None
    time: datetime = field(default_factory=utc_now)


StoreEvent = ValueChanged | ModelChanged

_BAD = Quality.BAD


class ValueState:
    """The current value of a Property with its source time, server time and quality.

    The value is the Property's own (``element.value``): the store keeps no second copy of it. A
    state without its ``element`` (a projection's stand-in for an element the store has no state for)
    holds the value it was made with.
    """

    __slots__ = ("_value", "element", "quality", "reason", "server_time", "source_time", "submodel_version")

    def __init__(
        self,
        value: Any,
        source_time: datetime,
        server_time: datetime,
        quality: Quality,
        reason: QualityReason = QualityReason.NONE,
        element: model.Property | None = None,
    ) -> None:
        self._value = value
        self.source_time = source_time
        self.server_time = server_time
        self.quality = quality
        self.reason = reason
        self.element = element
        """The Property itself, whose value this is, so that applying a value needs no path resolution."""
        self.submodel_version = [0]
        """The content version of the submodel (``TwinStore.content_version``), shared by its states: a value
        change counts in it without a dict lookup."""

    @property
    def value(self) -> Any:
        element = self.element
        return self._value if element is None else element.value

    def __repr__(self) -> str:
        return (
            f"ValueState(value={self.value!r}, source_time={self.source_time!r}, server_time={self.server_time!r}, "
            f"quality={self.quality}, reason={self.reason})"
        )


@dataclass(frozen=True, slots=True)
class ElementBinding:
    """What the hub knows about an element beyond the metamodel: its device binding and unit."""

    source: str
    writable: bool
    unit: EngineeringUnit | None = None
    sampling_interval: float | None = None
    """Seconds between two reads of the device (poll or sampling interval); ``None``: values are pushed."""
    value_range: tuple[float, float] | None = None
    """The valid range of the value (the mapping's ``limits`` with ``min`` and ``max``)."""


class Journal(Protocol):
    """Durable storage of acknowledged changes: values, and identifiables one by one (see ``persistence``)."""

    async def persist_values(self, changes: Sequence[ValueChanged]) -> None: ...

    async def save_identifiables(self, identifiables: Iterable[model.Identifiable]) -> None: ...

    async def delete_identifiable(self, identifier: str) -> None: ...


class OutboxJournal(Protocol):
    """A ``Journal`` that also stores outbound change events in the transaction of the change they announce."""

    async def persist_values(
        self, changes: Sequence[ValueChanged], *, outbox: Sequence[OutboundEvent] = ()
    ) -> None: ...

    async def save_identifiables(
        self, identifiables: Iterable[model.Identifiable], *, outbox: Sequence[OutboundEvent] = ()
    ) -> None: ...

    async def delete_identifiable(self, identifier: str, *, outbox: Sequence[OutboundEvent] = ()) -> None: ...


class BatchJournal(Protocol):
    """A journal storing several identifiables with the files and the package file they came in, in one transaction."""

    async def save_batch(
        self,
        identifiables: Sequence[model.Identifiable],
        *,
        files: Mapping[str, tuple[bytes, str]],
        package: StoredPackage | None,
        outbox: Sequence[OutboundEvent] = (),
    ) -> None: ...


ObjectCheck = Callable[[model.Identifiable, model.Identifiable | None], None]
"""Called by ``commit_identifiables`` with each new object and the one it replaces (or ``None``); raises to refuse."""


Container = (
    model.Submodel
    | model.SubmodelElementCollection
    | model.SubmodelElementList[Any]
    | model.Entity
    | model.AnnotatedRelationshipElement
)
_CONTAINER_TYPES = (
    model.Submodel,
    model.SubmodelElementCollection,
    model.SubmodelElementList,
    model.Entity,
    model.AnnotatedRelationshipElement,
)
"""``Container`` for ``isinstance`` (a subscripted generic cannot be checked)."""


def _check_annotation(container: object, element: model.SubmodelElement) -> None:
    """Annotations of an AnnotatedRelationshipElement are data elements (Part 1: ``annotation: DataElement[0..*]``)."""
    if isinstance(container, model.AnnotatedRelationshipElement) and not isinstance(element, model.DataElement):
        raise InvalidRequestError(
            f"the annotations of an AnnotatedRelationshipElement are data elements; {type(element).__name__} is not one"
        )


def _check_list_item(container: object, element: model.SubmodelElement) -> None:
    """Items of a SubmodelElementList have no idShort (AASd-120): the stored document would drop it."""
    id_short = element.id_short
    # basyx names an item without one generated_submodel_list_hack_<uuid>
    if (
        isinstance(container, model.SubmodelElementList)
        and id_short is not None
        and not id_short.startswith("generated_submodel_list_hack_")
    ):
        raise InvalidRequestError(
            f"an element in a SubmodelElementList has no idShort (Constraint AASd-120); got {element.id_short!r}"
        )


def _check_roundtrips(identifiables: list[model.Identifiable]) -> None:
    for identifiable in identifiables:
        check_roundtrip(identifiable)


def _children_set(container: Container) -> model.NamespaceSet[Any]:
    if isinstance(container, model.Submodel):
        return container.submodel_element
    if isinstance(container, model.Entity):
        return container.statement
    if isinstance(container, model.AnnotatedRelationshipElement):
        return container.annotation
    return container.value


def _properties(submodel: model.Submodel) -> list[tuple[str, model.Property]]:
    """The Properties of ``submodel`` by idShort path (a walk of the whole tree: seconds at 100,000 elements)."""
    return [(path, element) for path, element in paths.walk(submodel) if isinstance(element, model.Property)]


async def _properties_off_loop(identifiable: model.Identifiable) -> list[tuple[str, model.Property]] | None:
    """``_properties`` of a submodel (in a worker thread if it is large: its lock held or not yet shown); ``None``
    for other identifiables."""
    if not isinstance(identifiable, model.Submodel):
        return None
    if is_large(identifiable):
        return await asyncio.to_thread(_properties, identifiable)
    return _properties(identifiable)


def _is_within(element: model.Referable, submodel: model.Submodel) -> bool:
    """Whether ``element`` is still part of ``submodel`` (its parents lead to it)."""
    node: model.Referable | None = element
    while node is not None:
        if node is submodel:
            return True
        parent = node.parent
        node = parent if isinstance(parent, model.Referable) else None
    return False


def _restore_children(children: model.NamespaceSet[Any], items: list[Any]) -> None:
    children.clear()
    for item in items:
        children.add(item)


@dataclass(slots=True)
class _AppliedChange:
    """A change of a submodel's elements, applied in memory and not yet journaled."""

    undo: Callable[[], None]
    notice: ModelChanged
    element: model.SubmodelElement
    """The new element (the removed one for a deletion)."""
    outbound: Callable[[], list[OutboundEvent]]
    result: str = ""
    events: list[OutboundEvent] = field(default_factory=list)


@dataclass(slots=True)
class _QueuedChange:
    """A change of a submodel's elements waiting for its submodel's next batch: ``apply`` validates and applies it
    (the lock held), raising to refuse it."""

    apply: Callable[[], _AppliedChange]
    future: asyncio.Future[str]


class TwinStore:
    """Shells, submodels and concept descriptions, their live values, and the change bus."""

    def __init__(self, journal: Journal | None = None, *, element_batches: bool = True) -> None:
        self.bus: ChangeBus[StoreEvent] = ChangeBus()
        self.journal = journal
        self.element_batches = element_batches
        """Element changes of one submodel queued together are journaled in one batch (``False``: one at a time,
        each with its own document and commit, as before issue 12; for comparison in ``benchmarks/writes.py``)."""
        self._shells: dict[str, model.AssetAdministrationShell] = {}
        self._submodels: dict[str, model.Submodel] = {}
        self._concept_descriptions: dict[str, model.ConceptDescription] = {}
        self._states: dict[str, dict[str, ValueState]] = {}
        """Value states by submodel id, then idShort path."""
        self._bindings: dict[tuple[str, str], ElementBinding] = {}
        self._bound: dict[str, set[str]] = {}
        """The bound idShort paths of each submodel (a model change checks its own, not every binding of the hub)."""
        self._writers: dict[tuple[str, str], DeviceWriter] = {}
        self._point_locks: dict[tuple[str, str], asyncio.Lock] = {}
        """Orders the client writes of each device-bound Property: device write and queueing in the journal."""
        self._bound_value_types: dict[tuple[str, str], Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._element_queues: dict[str, list[_QueuedChange]] = {}
        """Element changes of each submodel waiting for its next batch (``_element_change``)."""
        self._element_drains: dict[str, asyncio.Future[None]] = {}
        """The task journaling each submodel's batches of element changes, while it has any."""
        self._journaling: dict[str, set[asyncio.Future[None]]] = {}
        """Client value writes of each submodel queued in the journal and not yet applied (group commit)."""
        self._write_sequence: dict[tuple[str, str], int] = {}
        self._applied_sequence: dict[tuple[str, str], int] = {}
        self._unsettled_writes: dict[tuple[str, str], int] = {}
        self._content_versions: dict[str, list[int]] = {}
        """A one-item list per identifier ever stored, never dropped, so that a version never repeats; a
        submodel's is also each of its value states' ``submodel_version``."""
        self.version = 0
        """Structure version: changes when identifiables are created, replaced or deleted (not on value changes)."""
        self.outbox_encoder: OutboxEncoder | None = None
        """Encodes the events of client writes and model changes; the journal must then be an ``OutboxJournal``."""

    # --- identifiables -------------------------------------------------------------------------

    def add(self, identifiable: model.Identifiable) -> None:
        """Add a shell, submodel or concept description; ``ConflictError`` if its id is taken."""
        target = self._table_for(identifiable)
        if identifiable.id in target:
            raise ConflictError(f"an identifiable with id {identifiable.id!r} exists already")
        keep_order(identifiable)
        target[identifiable.id] = identifiable
        if isinstance(identifiable, model.Submodel):
            self._index_submodel(identifiable)
        self.version += 1
        self._touch(identifiable.id)
        self.bus.publish(ModelChanged(ModelChangeKind.CREATED, identifiable.id))

    def add_all(self, identifiables: Iterable[model.Identifiable]) -> None:
        for identifiable in identifiables:
            self.add(identifiable)

    def _table_for(self, identifiable: model.Identifiable) -> dict[str, Any]:
        if isinstance(identifiable, model.AssetAdministrationShell):
            return self._shells
        if isinstance(identifiable, model.Submodel):
            return self._submodels
        if isinstance(identifiable, model.ConceptDescription):
            return self._concept_descriptions
        raise TypeError(f"not a storable identifiable: {type(identifiable).__name__}")

    def _index_submodel(self, submodel: model.Submodel) -> None:
        """(Re)build the value states of a submodel's Properties, keeping those whose value did not change."""
        self._set_states(submodel.id, _properties(submodel))

    def _set_states(self, submodel_id: str, properties: list[tuple[str, model.Property]]) -> None:
        """The value states of a submodel's ``properties`` (from ``_properties``), replacing the current ones."""
        now = utc_now()
        old = self._states.get(submodel_id, {})
        version = self._content_versions.setdefault(submodel_id, [0])
        new: dict[str, ValueState] = {}
        for path, element in properties:
            state = old.get(path)
            if state is not None and state.element is not element and (submodel_id, path) in self._bindings:
                element.value = state.value  # a device value that arrived while the model change was journaled
            if state is None or state.value != element.value:
                state = ValueState(None, now, now, Quality.GOOD)
            state.element = element
            state.submodel_version = version
            new[path] = state
        self._states[submodel_id] = new

    def _touch(self, identifier: str) -> None:
        self._content_versions.setdefault(identifier, [0])[0] += 1

    def content_version(self, identifier: str) -> int:
        """Changes whenever anything in the identifiable changes, values included (for caches)."""
        version = self._content_versions.get(identifier)
        return 0 if version is None else version[0]

    def _lock(self, identifier: str) -> asyncio.Lock:
        return self._locks.setdefault(identifier, asyncio.Lock())

    async def _values_settled(self, identifier: str) -> None:
        """Wait (its lock held) until the client value writes of ``identifier`` in the journal are applied.

        A model change journals the whole document with the values it shows; a value write queued
        before it must be applied first, or the document would carry the older value.
        """
        while journaling := self._journaling.get(identifier):
            await asyncio.wait(list(journaling))

    def change_lock(self, identifier: str) -> asyncio.Lock:
        """The lock every model change of ``identifier`` holds (not reentrant).

        Hold it to read the identifiable off the event loop: its structure does not change meanwhile;
        Property values may (each change is one attribute assignment).
        """
        return self._lock(identifier)

    def shells(self) -> list[model.AssetAdministrationShell]:
        return list(self._shells.values())

    def submodels(self) -> list[model.Submodel]:
        return list(self._submodels.values())

    def concept_descriptions(self) -> list[model.ConceptDescription]:
        return list(self._concept_descriptions.values())

    def identifiables(self) -> Iterator[model.Identifiable]:
        yield from self._shells.values()
        yield from self._submodels.values()
        yield from self._concept_descriptions.values()

    def shell(self, shell_id: str) -> model.AssetAdministrationShell:
        try:
            return self._shells[shell_id]
        except KeyError:
            raise NotFoundError(f"asset administration shell {shell_id!r} not found") from None

    def submodel(self, submodel_id: str) -> model.Submodel:
        try:
            return self._submodels[submodel_id]
        except KeyError:
            raise NotFoundError(f"submodel {submodel_id!r} not found") from None

    def concept_description(self, cd_id: str) -> model.ConceptDescription:
        try:
            return self._concept_descriptions[cd_id]
        except KeyError:
            raise NotFoundError(f"concept description {cd_id!r} not found") from None

    def element(self, submodel_id: str, id_short_path: str) -> model.SubmodelElement:
        return paths.resolve(self.submodel(submodel_id), id_short_path)

    # --- values --------------------------------------------------------------------------------

    def state(self, submodel_id: str, id_short_path: str) -> ValueState | None:
        """Value, times and quality of a Property; ``None`` for elements that carry no such state."""
        states = self._states.get(submodel_id)
        return None if states is None else states.get(id_short_path)

    def states(self) -> Iterator[tuple[tuple[str, str], ValueState]]:
        for submodel_id, states in self._states.items():
            for path, state in states.items():
                yield (submodel_id, path), state

    def bind(
        self,
        submodel_id: str,
        id_short_path: str,
        binding: ElementBinding,
        writer: DeviceWriter | WriteHandler | None = None,
    ) -> model.Property:
        """Attach a device binding to a Property; a writable binding needs a ``writer`` (a ``DeviceWriter``, or a
        ``WriteHandler`` standing in for the device of this one Property)."""
        element = self.element(submodel_id, id_short_path)
        if not isinstance(element, model.Property):
            raise TypeMismatchError(
                f"{submodel_id} {id_short_path}: only a Property can be bound to a device point, "
                f"this is a {type(element).__name__}"
            )
        if binding.writable and writer is None:
            raise ValueError("a writable binding needs a device writer")
        key = (submodel_id, id_short_path)
        self._bindings[key] = binding
        self._bound.setdefault(submodel_id, set()).add(id_short_path)
        self._bound_value_types[key] = element.value_type
        if writer is not None:
            self._writers[key] = _HandlerWriter(writer) if callable(writer) else writer
        state = self._states[submodel_id][id_short_path]
        if state.quality is Quality.GOOD and state.reason is QualityReason.NONE:
            state.quality = Quality.UNCERTAIN
            state.reason = QualityReason.NOT_YET_READ
        return element

    def binding(self, submodel_id: str, id_short_path: str) -> ElementBinding | None:
        return self._bindings.get((submodel_id, id_short_path))

    def bindings(self) -> dict[tuple[str, str], ElementBinding]:
        return dict(self._bindings)

    def apply(self, change: ValueChanged) -> bool:
        """Apply a value change (from a device, or restored); publish it if value or quality changed.

        A bad-quality change keeps the last value: the element's value is not touched.
        Returns whether anything a client would see changed.
        """
        try:
            state = self._states[change.submodel_id][change.id_short_path]
        except KeyError:
            raise NotFoundError(f"no Property {change.id_short_path!r} in submodel {change.submodel_id!r}") from None
        quality, reason = change.quality, change.reason
        changed = state.quality is not quality or state.reason is not reason
        if quality is not _BAD:
            value = change.value
            element = state.element
            if (state._value if element is None else element._value) != value:
                if element is None:
                    found = self.element(change.submodel_id, change.id_short_path)
                    assert isinstance(found, model.Property)
                    element = state.element = found
                if value.__class__ is element.value_type:
                    # Typed once: a value of exactly the valueType (as the engine's plan emits) is what
                    # basyx's setter (``trivial_cast``) would return unchanged; it is assigned without
                    # that check, which is most of a sample's cost here. Anything else goes through it.
                    element._value = value
                else:
                    element.value = value
                state.submodel_version[0] += 1
                changed = True
        if not changed:
            # Times stay those of the last change of value or quality, as OPC UA's SourceTimestamp
            # (OPC 10000-4, 7.7.3): every view shows the same times for the same value.
            return False
        state.source_time = change.source_time
        state.server_time = change.server_time
        state.quality = quality
        state.reason = reason
        if quality is _BAD and change.value != state.value:
            change = replace(change, value=state.value)
        self.bus.publish(change)
        return True

    async def write_value(self, submodel_id: str, id_short_path: str, value: Any, origin: str) -> ValueChanged:
        """Write a Property's value on behalf of a client (REST, OPC UA).

        Type-checks ``value`` against the ``valueType``. For a device-bound Property the value goes to
        the device through its ``DeviceWriter`` first, and the write goes on only once the device
        acknowledged it (or raises ``DeviceError``). The submodel's lock is not held meanwhile: a slow
        device delays no other write or model change of the submodel. Writes of one Property reach
        the device, and then the journal, in the order they arrived; once the device is written the
        write is carried through even if the client goes away. Then, under the lock, the Property must
        still be there with its valueType and device (``ConflictError`` otherwise, the journal
        untouched); the change is journaled (an acknowledged write survives a restart), applied and
        published.
        """
        element = self.element(submodel_id, id_short_path)
        if not isinstance(element, model.Property):
            raise NotWritableError(
                f"{id_short_path!r} is a {type(element).__name__}; only Property values can be written here"
            )
        value_type = element.value_type
        typed = values.coerce(value_type, value)
        if isinstance(typed, decimal.Decimal) and not typed.is_finite():
            raise TypeMismatchError(
                f"{value!r} is not an xs:decimal: its value space has no NaN or infinity (XSD 1.1 Part 2, 3.3.3)"
            )
        key = (submodel_id, id_short_path)
        binding = self._bindings.get(key)
        if binding is not None and not binding.writable:
            raise NotWritableError(f"{id_short_path!r} is read-only: it is fed by {binding.source}")
        writer = self._writers.get(key)
        if writer is None:
            async with self._lock(submodel_id):
                journaled, change = self._queue_write(key, value_type, typed, origin, None, changed=False)
        else:
            journaled, change = await asyncio.shield(self._device_write(writer, key, value_type, typed, origin))
        if journaled is not None:
            # applied (by ``_queue_write``'s callback) before this returns; a cancelled client does not undo it
            await asyncio.shield(journaled)
        return change

    async def _device_write(
        self, writer: DeviceWriter, key: tuple[str, str], value_type: Any, typed: Any, origin: str
    ) -> tuple[asyncio.Future[None] | None, ValueChanged]:
        """The device round trip of a client write, then its queueing in the journal, in the Property's write order."""
        async with self._point_locks.setdefault(key, asyncio.Lock()):
            # announced if it changes what the Property showed before the write (the device may echo it first)
            changed = self._changes_state(*key, typed)
            await writer.write(*key, typed)
            async with self._lock(key[0]):
                return self._queue_write(key, value_type, typed, origin, writer, changed=changed)

    def _queue_write(
        self,
        key: tuple[str, str],
        value_type: Any,
        typed: Any,
        origin: str,
        writer: DeviceWriter | None,
        *,
        changed: bool,
    ) -> tuple[asyncio.Future[None] | None, ValueChanged]:
        """Queue a client write in the journal (the submodel's lock held); applied by a callback once durable.

        Without a journal the change is applied at once (no future). ``changed``: the value differed
        from what the Property showed before the device was written.
        """
        submodel_id, id_short_path = key
        try:
            current: model.SubmodelElement | None = self.element(submodel_id, id_short_path)
        except NotFoundError:
            current = None
        if (
            not isinstance(current, model.Property)
            or current.value_type is not value_type
            or self._writers.get(key) is not writer
        ):
            done = f"the device took {typed!r}, but " if writer is not None else ""
            raise ConflictError(
                f"{done}{id_short_path!r} in {submodel_id!r} was removed or changed by a model change meanwhile; "
                "the write is not recorded"
            )
        # announced if it changes what the Property shows; always while an earlier write of it is still
        # being journaled (a repeated event, never a lost one)
        announced = self.outbox_encoder is not None and (
            changed or self._unsettled_writes.get(key, 0) > 0 or self._changes_state(submodel_id, id_short_path, typed)
        )
        now = utc_now()
        change = ValueChanged(submodel_id, id_short_path, typed, now, Quality.GOOD, QualityReason.NONE, now, origin)
        if self.journal is None:
            self.apply(change)
            return None, change
        encoder = self.outbox_encoder
        event = encoder.value_event(change) if encoder is not None and announced else None
        # queued in the journal in lock order; the lock is not held while the commit is awaited, so
        # concurrent writes share one commit (group commit). Applied in queue order once durable.
        journaled = asyncio.ensure_future(
            self._outbox_journal.persist_values([change], outbox=[event])
            if event is not None
            else self.journal.persist_values([change])
        )
        journaling = self._journaling.setdefault(submodel_id, set())
        sequence = self._write_sequence[key] = self._write_sequence.get(key, 0) + 1
        self._unsettled_writes[key] = self._unsettled_writes.get(key, 0) + 1
        journaling.add(journaled)

        def settled(future: asyncio.Future[None]) -> None:
            journaling.discard(future)
            self._unsettled_writes[key] -= 1
            if future.cancelled() or future.exception() is not None:
                return
            if sequence > self._applied_sequence.get(key, 0):
                self._applied_sequence[key] = sequence
                self.apply(change)

        journaled.add_done_callback(settled)
        return journaled, change

    # --- model changes (REST) ------------------------------------------------------------------
    #
    # Each change is validated, applied in memory, journaled, and only then announced; a journal
    # failure rolls the in-memory change back. Changes to one identifiable are serialised by its lock.

    def _find(self, identifier: str) -> model.Identifiable | None:
        return (
            self._shells.get(identifier)
            or self._submodels.get(identifier)
            or self._concept_descriptions.get(identifier)
        )

    def _bound_paths(self, submodel_id: str, prefix: str | None = None) -> list[str]:
        result = []
        for path in self._bound.get(submodel_id, ()):
            if prefix is None or path == prefix or path.startswith((prefix + ".", prefix + "[")):
                result.append(path)
        return sorted(result)

    def _check_bindings_survive(self, submodel: model.Submodel) -> None:
        """Refuse a ``submodel`` whose device-bound Properties are gone or changed valueType; give those it
        holds anew the live values (W2 in ``docs/security.md``)."""
        for path in self._bound_paths(submodel.id):
            binding = self._bindings[(submodel.id, path)]
            try:
                element = paths.resolve(submodel, path)
            except NotFoundError:
                element = None
            value_type = self._bound_value_types[(submodel.id, path)]
            if not isinstance(element, model.Property) or element.value_type is not value_type:
                raise ConflictError(
                    f"{path!r} in {submodel.id!r} is bound to {binding.source}; it must stay a Property "
                    f"of valueType {values.xsd_name(value_type)} (change the mapping first)"
                )
            state = self.state(submodel.id, path)
            if state is not None and state.element is not None and state.element is not element:
                if _is_within(state.element, submodel):  # moved, as by the deletion of an earlier list item
                    raise ConflictError(
                        f"{path!r} in {submodel.id!r} is bound to {binding.source}; the change would move it and "
                        "give its device values to another element (change the mapping first)"
                    )
                # the device owns the value: a model change keeps the live one (a new value goes through
                # write_value, which reaches the device), or an offline sensor would show a client's number as good
                element.value = state.value

    def _changes_state(self, submodel_id: str, id_short_path: str, value: Any) -> bool:
        """Whether a good ``value`` differs in value or quality from what the Property shows now."""
        state = self.state(submodel_id, id_short_path)
        return (
            state is None
            or state.quality is not Quality.GOOD
            or state.reason is not QualityReason.NONE
            or state.value != value
        )

    @property
    def _outbox_journal(self) -> OutboxJournal:
        """The journal, which must store outbound events when an ``outbox_encoder`` is set."""
        return cast(OutboxJournal, self.journal)

    async def _save(self, identifiable: model.Identifiable, outbound: Callable[[], list[OutboundEvent]] = list) -> None:
        """Journal ``identifiable`` with the events ``outbound`` gives (encoded in a worker thread: they carry
        the whole identifiable or element as JSON)."""
        if self.journal is None:
            return
        if self.outbox_encoder is None:
            events = []
        elif is_large(identifiable):
            events = await asyncio.to_thread(outbound)
        else:
            events = outbound()
        if events:
            await self._outbox_journal.save_identifiables([identifiable], outbox=events)
        else:
            await self.journal.save_identifiables([identifiable])

    def _identifiable_events(self, kind: ModelChangeKind, identifiable: model.Identifiable) -> list[OutboundEvent]:
        encoder = self.outbox_encoder
        return [] if encoder is None else [encoder.identifiable_event(kind, identifiable)]

    def _element_events(
        self, kind: ModelChangeKind, submodel_id: str, id_short_path: str, element: model.SubmodelElement
    ) -> list[OutboundEvent]:
        encoder = self.outbox_encoder
        return [] if encoder is None else [encoder.element_event(kind, submodel_id, id_short_path, element)]

    async def create(self, identifiable: model.Identifiable) -> None:
        """Add a new identifiable (POST); ``ConflictError`` if any identifiable has its id."""
        async with self._lock(identifiable.id):
            if self._find(identifiable.id) is not None:
                raise ConflictError(f"an identifiable with id {identifiable.id!r} exists already")
            table = self._table_for(identifiable)
            keep_order(identifiable)
            # a large new submodel is frozen once stored (no collector pass walks it again): it is new, and
            # nothing frozen before becomes garbage by its creation
            with collector_paused(is_large(identifiable)) as keep:
                properties = await _properties_off_loop(identifiable)
                # shown only once journaled: readers never see a change that may still be rolled back
                await self._save(identifiable, lambda: self._identifiable_events(ModelChangeKind.CREATED, identifiable))
                table[identifiable.id] = identifiable
                if properties is not None:
                    self._set_states(identifiable.id, properties)
                keep()
            self.version += 1
            self._touch(identifiable.id)
        self.bus.publish(ModelChanged(ModelChangeKind.CREATED, identifiable.id))

    async def replace(self, identifiable: model.Identifiable) -> None:
        """Replace an existing identifiable of the same kind by a new one with the same id (PUT)."""
        async with self._lock(identifiable.id):
            await self._values_settled(identifiable.id)
            table = self._table_for(identifiable)
            old = table.get(identifiable.id)
            if old is None:
                raise NotFoundError(f"{type(identifiable).__name__} {identifiable.id!r} not found")
            if isinstance(identifiable, model.Submodel):
                self._check_bindings_survive(identifiable)
            keep_order(identifiable)
            properties = await _properties_off_loop(identifiable)
            # readers see the old identifiable until the new one is journaled, then the new one whole
            await self._save(identifiable, lambda: self._identifiable_events(ModelChangeKind.UPDATED, identifiable))
            table[identifiable.id] = identifiable
            if properties is not None:
                self._set_states(identifiable.id, properties)
            self.version += 1
            self._touch(identifiable.id)
        self.bus.publish(ModelChanged(ModelChangeKind.UPDATED, identifiable.id))

    async def commit_identifiables(
        self,
        identifiables: Sequence[model.Identifiable],
        *,
        replace: bool = False,
        check: ObjectCheck | None = None,
        files: Mapping[str, tuple[bytes, str]] | None = None,
        package: StoredPackage | None = None,
    ) -> list[ModelChangeKind]:
        """Create several identifiables (with ``replace``, replace those whose id exists) as one change: all or none.

        Everything is validated before anything changes: each object reads back from its JSON form as
        itself (``check_roundtrip``, in a worker thread), no id occurs twice, an existing id is a
        ``ConflictError`` without ``replace`` or when its kind differs, replaced submodels keep their
        device-bound Properties, and ``check`` (access rights) allows each object. Then the objects,
        ``files`` and ``package`` are journaled in one transaction (``files`` and ``package`` need a
        ``BatchJournal``), applied and announced. On any error, the journal's included, nothing has
        changed in memory or in the journal. Returns what happened to each object, in order.
        """
        batch = list(identifiables)
        seen: set[str] = set()
        for identifiable in batch:
            self._table_for(identifiable)
            if identifiable.id in seen:
                raise InvalidRequestError(f"the id {identifiable.id!r} occurs more than once in one change")
            seen.add(identifiable.id)
        if (files or package is not None) and self.journal is not None and not hasattr(self.journal, "save_batch"):
            raise TypeError("files and packages are journaled with the identifiables only by a BatchJournal")
        await asyncio.to_thread(_check_roundtrips, batch)
        async with contextlib.AsyncExitStack() as locks:
            for identifier in sorted(seen):
                await locks.enter_async_context(self._lock(identifier))
            for identifier in sorted(seen):
                await self._values_settled(identifier)
            kinds: list[ModelChangeKind] = []
            for identifiable in batch:
                existing = self._find(identifiable.id)
                if check is not None:
                    check(identifiable, existing)
                if existing is None:
                    kinds.append(ModelChangeKind.CREATED)
                    continue
                if not replace:
                    raise ConflictError(f"an identifiable with id {identifiable.id!r} exists already")
                if type(existing) is not type(identifiable):
                    raise ConflictError(
                        f"{identifiable.id!r} is a {type(existing).__name__}; "
                        f"a {type(identifiable).__name__} cannot replace it"
                    )
                if isinstance(identifiable, model.Submodel):
                    self._check_bindings_survive(identifiable)
                kinds.append(ModelChangeKind.UPDATED)
            if self.journal is not None:
                events = [
                    event
                    for kind, identifiable in zip(kinds, batch, strict=True)
                    for event in self._identifiable_events(kind, identifiable)
                ]
                if files or package is not None:
                    await cast(BatchJournal, self.journal).save_batch(
                        batch, files=files or {}, package=package, outbox=events
                    )
                elif events:
                    await self._outbox_journal.save_identifiables(batch, outbox=events)
                else:
                    await self.journal.save_identifiables(batch)
            for identifiable in batch:
                keep_order(identifiable)
                self._table_for(identifiable)[identifiable.id] = identifiable
                if isinstance(identifiable, model.Submodel):
                    self._index_submodel(identifiable)
                self._touch(identifiable.id)
            self.version += 1
        for kind, identifiable in zip(kinds, batch, strict=True):
            self.bus.publish(ModelChanged(kind, identifiable.id))
        return kinds

    async def delete(self, identifier: str) -> None:
        """Delete an identifiable; a submodel with device-bound elements cannot be deleted."""
        async with self._lock(identifier):
            await self._values_settled(identifier)
            identifiable = self._find(identifier)
            if identifiable is None:
                raise NotFoundError(f"no identifiable with id {identifier!r}")
            bound = self._bound_paths(identifier)
            if bound:
                raise ConflictError(
                    f"{identifier!r} has device-bound elements ({', '.join(bound)}); change the mapping first"
                )
            table = self._table_for(identifiable)
            del table[identifier]
            if self.journal is not None:
                events = (
                    await asyncio.to_thread(self._identifiable_events, ModelChangeKind.DELETED, identifiable)
                    if is_large(identifiable)
                    else self._identifiable_events(ModelChangeKind.DELETED, identifiable)
                )
                try:
                    if events:
                        await self._outbox_journal.delete_identifiable(identifier, outbox=events)
                    else:
                        await self.journal.delete_identifiable(identifier)
                except BaseException:
                    table[identifier] = identifiable
                    raise
            self._states.pop(identifier, None)
            self.version += 1
            self._touch(identifier)
        self.bus.publish(ModelChanged(ModelChangeKind.DELETED, identifier))

    def _container(self, submodel: model.Submodel, parent_path: str | None) -> Container:
        if not parent_path:
            return submodel
        parent = paths.resolve(submodel, parent_path)
        if not isinstance(parent, _CONTAINER_TYPES):
            raise InvalidRequestError(
                f"{parent_path!r} is a {type(parent).__name__}; elements can only be added to a submodel, "
                "a collection, a list, an entity or (data elements) an annotated relationship"
            )
        return parent

    def _change_children(
        self, submodel: model.Submodel, container: Container, change: Callable[[model.NamespaceSet[Any]], None]
    ) -> Callable[[], None]:
        """Apply ``change`` to a container's children and check the bindings; return how to undo it.

        On any error the children are restored and the error raised (``InvalidRequestError`` for what
        the metamodel refuses).
        """
        children = _children_set(container)
        before = list(children)
        try:
            try:
                change(children)
            except (KeyError, ValueError, TypeError, model.AASConstraintViolation) as error:
                raise InvalidRequestError(str(error).strip("'\"")) from None
            self._check_bindings_survive(submodel)
        except BaseException:
            _restore_children(children, before)
            raise
        return lambda: _restore_children(children, before)

    async def _element_change(self, submodel_id: str, apply: Callable[[], _AppliedChange]) -> str:
        """Queue a change of a submodel's elements; return its result once it is journaled, applied and announced.

        The changes of one submodel that arrive while one of them is being journaled are applied
        together, in the order they arrived, and journaled as one document in one commit (so 32
        clients changing one submodel pay for one serialisation and one fsync, not 32). Each is
        validated on its own: a refused change fails alone and the others go on. A journal failure
        undoes the whole batch in memory, which is then tried again one change at a time, so only a
        change that cannot be stored fails. A client that goes away does not stop its change.
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._element_queues.setdefault(submodel_id, []).append(_QueuedChange(apply, future))
        if submodel_id not in self._element_drains:
            self._element_drains[submodel_id] = asyncio.ensure_future(self._drain_element_changes(submodel_id))
        return await asyncio.shield(future)

    async def _drain_element_changes(self, submodel_id: str) -> None:
        """Journal and apply the queued element changes of ``submodel_id``, batch by batch, under its lock."""
        queue = self._element_queues[submodel_id]
        try:
            while queue:
                async with self._lock(submodel_id):
                    # taken once the lock is held: what arrived meanwhile joins this batch
                    taken = len(queue) if self.element_batches else 1
                    batch = queue[:taken]
                    del queue[:taken]
                    await self._values_settled(submodel_id)
                    done = await self._commit_element_changes(submodel_id, batch)
                for _, applied in done:
                    self.bus.publish(applied.notice)
                for change, applied in done:
                    if not change.future.done():
                        change.future.set_result(applied.result)
        finally:
            del self._element_drains[submodel_id]
            if not queue:
                del self._element_queues[submodel_id]
            for change in queue:  # the drain was cancelled (shutdown)
                change.future.cancel()
            del queue[:]

    async def _commit_element_changes(
        self, submodel_id: str, batch: list[_QueuedChange]
    ) -> list[tuple[_QueuedChange, _AppliedChange]]:
        """Apply ``batch`` in memory (each refused change fails alone) and journal the submodel once (lock held).

        Returns the changes that were stored, in order; every other change's future has its error.
        """
        applied: list[tuple[_QueuedChange, _AppliedChange]] = []
        # answered only once the batch is stored: a refusal may rest on an earlier change of the batch
        # that a failed commit undoes (a POST refused as a duplicate of a POST that did not fit on the disk)
        refused: list[tuple[_QueuedChange, Exception]] = []
        properties: list[tuple[str, model.Property]] | None = None
        try:
            for change in batch:
                try:
                    outcome = change.apply()
                except Exception as error:  # refused: nothing of it was applied
                    refused.append((change, error))
                    continue
                applied.append((change, outcome))
                if self.outbox_encoder is not None and self.journal is not None:
                    # encoded now, before a later change of the batch may change the element
                    outcome.events = (
                        await asyncio.to_thread(outcome.outbound) if is_large(outcome.element) else outcome.outbound()
                    )
            if applied:
                submodel = self.submodel(submodel_id)
                properties = await _properties_off_loop(submodel)
                events = [event for _, outcome in applied for event in outcome.events]
                await self._save(submodel, lambda: events)
        except BaseException as error:
            for _, outcome in reversed(applied):
                outcome.undo()
            if applied:
                # a body read and cached (by content version) while the batch was journaled shows it: a new
                # version, so that it is never served once the batch is undone
                self._touch(submodel_id)
            if len(batch) > 1 and not isinstance(error, asyncio.CancelledError):
                # as the group committer does: each alone, in order, refused ones too (their refusal may have
                # rested on an undone change), so that only a change that cannot be stored fails
                stored: list[tuple[_QueuedChange, _AppliedChange]] = []
                for change in batch:
                    stored += await self._commit_element_changes(submodel_id, [change])
                return stored
            for change, _ in [*applied, *refused]:
                if change.future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    change.future.cancel()
                else:
                    change.future.set_exception(error)
            if isinstance(error, Exception):
                return []
            raise
        for change, refusal in refused:
            change.future.set_exception(refusal)
        if properties is None:
            return []
        self._set_states(submodel_id, properties)
        self._touch(submodel_id)
        return applied

    async def create_element(self, submodel_id: str, parent_path: str | None, element: model.SubmodelElement) -> str:
        """Add ``element`` under ``parent_path`` (or at the top of the submodel); return its idShort path."""

        def apply() -> _AppliedChange:
            submodel = self.submodel(submodel_id)
            container = self._container(submodel, parent_path)
            _check_annotation(container, element)
            _check_list_item(container, element)
            children = _children_set(container)
            if not isinstance(container, model.SubmodelElementList):
                if element.id_short is None:
                    raise InvalidRequestError("the new element needs an idShort")
                if any(child.id_short == element.id_short for child in children):
                    raise ConflictError(f"an element with idShort {element.id_short!r} exists already there")
            undo = self._change_children(submodel, container, lambda items: items.add(element))
            path = paths.path_of(element)
            return _AppliedChange(
                undo,
                ModelChanged(ModelChangeKind.CREATED, submodel_id, path),
                element,
                lambda: self._element_events(ModelChangeKind.CREATED, submodel_id, path, element),
                path,
            )

        return await self._element_change(submodel_id, apply)

    async def replace_element(self, submodel_id: str, id_short_path: str, element: model.SubmodelElement) -> None:
        """Replace the element at ``id_short_path`` by ``element``, keeping its position (PUT)."""

        def apply() -> _AppliedChange:
            submodel = self.submodel(submodel_id)
            old = paths.resolve(submodel, id_short_path)
            container = old.parent
            if not isinstance(container, _CONTAINER_TYPES):
                raise InvalidRequestError(f"{id_short_path!r} cannot be changed on its own; change its parent")
            _check_annotation(container, element)
            _check_list_item(container, element)
            if not isinstance(container, model.SubmodelElementList) and element.id_short != old.id_short:
                raise InvalidRequestError(
                    f"the idShort in the body ({element.id_short!r}) differs from the path's ({old.id_short!r})"
                )

            def swap(items: model.NamespaceSet[Any]) -> None:
                replaced = [element if item is old else item for item in items]
                _restore_children(items, replaced)

            return _AppliedChange(
                self._change_children(submodel, container, swap),
                ModelChanged(ModelChangeKind.UPDATED, submodel_id, id_short_path),
                element,
                lambda: self._element_events(ModelChangeKind.UPDATED, submodel_id, id_short_path, element),
            )

        await self._element_change(submodel_id, apply)

    async def delete_element(self, submodel_id: str, id_short_path: str) -> None:
        """Delete the element at ``id_short_path``; device-bound elements cannot be deleted."""

        def apply() -> _AppliedChange:
            submodel = self.submodel(submodel_id)
            old = paths.resolve(submodel, id_short_path)
            bound = self._bound_paths(submodel_id, id_short_path)
            if bound:
                raise ConflictError(
                    f"{id_short_path!r} holds device-bound elements ({', '.join(bound)}); change the mapping first"
                )
            container = old.parent
            if not isinstance(container, _CONTAINER_TYPES):
                raise InvalidRequestError(f"{id_short_path!r} cannot be changed on its own; change its parent")
            return _AppliedChange(
                self._change_children(submodel, container, lambda items: items.remove(old)),
                ModelChanged(ModelChangeKind.DELETED, submodel_id, id_short_path),
                old,
                lambda: self._element_events(ModelChangeKind.DELETED, submodel_id, id_short_path, old),
            )

        await self._element_change(submodel_id, apply)

"""The live AAS environment: basyx objects, the value state beside them, and the write path.

The store is the one truth REST, OPC UA and later MQTT show (``ARCHITECTURE.md``, *One truth*).
It holds the shells, submodels and concept descriptions as basyx-python-sdk objects, keeps for each
Property its source timestamp and quality, applies ``ValueChanged`` events coming from the mapping
engine, and runs client writes: type check, device write through the bound handler (which awaits
the device's acknowledgement), journal, apply, publish.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from basyx.aas import model

from aas_server.errors import ConflictError, NotFoundError, NotWritableError, TypeMismatchError
from aas_server.model import paths, values
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.units import EngineeringUnit
from aas_server.store.bus import ChangeBus

WriteHandler = Callable[[Any], Awaitable[None]]


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


@dataclass(slots=True)
class ValueState:
    """The current value of a Property with its source time, server time and quality."""

    value: Any
    source_time: datetime
    server_time: datetime
    quality: Quality
    reason: QualityReason = QualityReason.NONE


@dataclass(frozen=True, slots=True)
class ElementBinding:
    """What the hub knows about an element beyond the metamodel: its device binding and unit."""

    source: str
    writable: bool
    unit: EngineeringUnit | None = None


class ValueJournal(Protocol):
    """Durable storage for acknowledged client writes (implemented in ``persistence``)."""

    async def persist_values(self, changes: Sequence[ValueChanged]) -> None: ...


class TwinStore:
    """Shells, submodels and concept descriptions, their live values, and the change bus."""

    def __init__(self, journal: ValueJournal | None = None) -> None:
        self.bus: ChangeBus[StoreEvent] = ChangeBus()
        self.journal = journal
        self._shells: dict[str, model.AssetAdministrationShell] = {}
        self._submodels: dict[str, model.Submodel] = {}
        self._concept_descriptions: dict[str, model.ConceptDescription] = {}
        self._states: dict[tuple[str, str], ValueState] = {}
        self._bindings: dict[tuple[str, str], ElementBinding] = {}
        self._write_handlers: dict[tuple[str, str], WriteHandler] = {}
        self._write_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.version = 0

    # --- identifiables -------------------------------------------------------------------------

    def add(self, identifiable: model.Identifiable) -> None:
        """Add a shell, submodel or concept description; ``ConflictError`` if its id is taken."""
        target = self._table_for(identifiable)
        if identifiable.id in target:
            raise ConflictError(f"an identifiable with id {identifiable.id!r} exists already")
        target[identifiable.id] = identifiable
        if isinstance(identifiable, model.Submodel):
            self._index_submodel(identifiable)
        self.version += 1
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
        now = utc_now()
        for path, element in paths.walk(submodel):
            if isinstance(element, model.Property):
                self._states[(submodel.id, path)] = ValueState(element.value, now, now, Quality.GOOD)

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
        return self._states.get((submodel_id, id_short_path))

    def states(self) -> Iterator[tuple[tuple[str, str], ValueState]]:
        yield from self._states.items()

    def bind(
        self,
        submodel_id: str,
        id_short_path: str,
        binding: ElementBinding,
        write_handler: WriteHandler | None = None,
    ) -> model.Property:
        """Attach a device binding to a Property; a writable binding needs a ``write_handler``."""
        element = self.element(submodel_id, id_short_path)
        if not isinstance(element, model.Property):
            raise TypeMismatchError(
                f"{submodel_id} {id_short_path}: only a Property can be bound to a device point, "
                f"this is a {type(element).__name__}"
            )
        if binding.writable and write_handler is None:
            raise ValueError("a writable binding needs a write handler")
        key = (submodel_id, id_short_path)
        self._bindings[key] = binding
        if write_handler is not None:
            self._write_handlers[key] = write_handler
        state = self._states[key]
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
        key = (change.submodel_id, change.id_short_path)
        state = self._states.get(key)
        if state is None:
            raise NotFoundError(f"no Property {change.id_short_path!r} in submodel {change.submodel_id!r}")
        changed = state.quality is not change.quality or state.reason is not change.reason
        if change.quality is not Quality.BAD and state.value != change.value:
            element = self.element(*key)
            assert isinstance(element, model.Property)
            element.value = change.value
            state.value = change.value
            changed = True
        if change.quality is not Quality.BAD or changed:
            state.source_time = change.source_time
        state.server_time = change.server_time
        state.quality = change.quality
        state.reason = change.reason
        if changed:
            if change.quality is Quality.BAD and change.value != state.value:
                change = replace(change, value=state.value, source_time=state.source_time)
            self.bus.publish(change)
        return changed

    async def write_value(self, submodel_id: str, id_short_path: str, value: Any, origin: str) -> ValueChanged:
        """Write a Property's value on behalf of a client (REST, OPC UA).

        Type-checks ``value`` against the ``valueType``; for a device-bound Property sends it to the
        device and returns only after the device acknowledged (or raises ``DeviceError``); journals
        the change before it is applied, so an acknowledged write survives a restart.
        """
        element = self.element(submodel_id, id_short_path)
        if not isinstance(element, model.Property):
            raise NotWritableError(
                f"{id_short_path!r} is a {type(element).__name__}; only Property values can be written here"
            )
        typed = values.coerce(element.value_type, value)
        key = (submodel_id, id_short_path)
        binding = self._bindings.get(key)
        if binding is not None and not binding.writable:
            raise NotWritableError(f"{id_short_path!r} is read-only: it is fed by {binding.source}")
        lock = self._write_locks.setdefault(key, asyncio.Lock())
        async with lock:
            handler = self._write_handlers.get(key)
            if handler is not None:
                await handler(typed)
            now = utc_now()
            change = ValueChanged(submodel_id, id_short_path, typed, now, Quality.GOOD, QualityReason.NONE, now, origin)
            if self.journal is not None:
                await self.journal.persist_values([change])
            self.apply(change)
        return change

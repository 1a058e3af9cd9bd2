"""Roll-ups kept up to date: derived values of process and system twins, recomputed when a part changes.

``start_rollups`` validates the hub's ``rollups`` settings against the store, binds each target
read-only (source ``rollup:<function>``: REST and OPC UA writes are refused, the element cannot be
deleted or retyped, and its unit comes from its ConceptDescription), computes every roll-up once, and
then follows the change bus. A burst of part changes is coalesced: each wake-up of the service takes
every event queued so far and recomputes each affected roll-up once, from the store's current
values, so the final state is never missed. Roll-ups of roll-ups are recomputed in dependency order
in the same pass. Results go through ``TwinStore.apply`` with origin ``rollup``, so they reach REST,
OPC UA, MQTT events and history like any device value. The computation itself is in
``aas_server.store.rollups``.

Left out: roll-ups over elements other than Properties, and parts added or removed while running
(the settings are read at start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from basyx.aas import model

from aas_server.config import ElementAddress, HubSettings, RollupFunction, RollupSettings
from aas_server.errors import ConfigurationError, NotFoundError, TypeMismatchError
from aas_server.model import paths
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.units import UNITS_BY_CODE, UNITS_BY_SYMBOL, EngineeringUnit
from aas_server.runtime.bus_service import BusService
from aas_server.store.bus import Subscription
from aas_server.store.rollups import PartValue, evaluation_order, fit_value, part_problem, roll_up, target_problem
from aas_server.store.twin_store import ElementBinding, ModelChanged, StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

ORIGIN = "rollup"
"""The ``origin`` of the ``ValueChanged`` events the service applies."""

ElementKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Rollup:
    """One validated roll-up: element keys are (submodel id, canonical idShort path)."""

    index: int
    target: ElementKey
    function: RollupFunction
    parts: tuple[ElementKey, ...]
    true_above: float | None
    value_type: Any
    unit: EngineeringUnit | None


def _unit_of(store: TwinStore, element: model.Property) -> EngineeringUnit | None:
    """The unit of the element's ConceptDescription (IEC 61360 ``unit``), if the store has one."""
    if element.semantic_id is None or not element.semantic_id.key:
        return None
    try:
        description = store.concept_description(element.semantic_id.key[0].value)
    except NotFoundError:
        return None
    for specification in description.embedded_data_specifications:
        content = specification.data_specification_content
        if isinstance(content, model.DataSpecificationIEC61360) and content.unit:
            return UNITS_BY_SYMBOL.get(content.unit) or UNITS_BY_CODE.get(content.unit)
    return None


class _Problems:
    """Configuration problems, each with its place (``rollups[2].parts[0]``), raised together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, location: str, reason: str) -> None:
        self.items.append((location, reason))

    def raise_any(self) -> None:
        if self.items:
            (location, reason), *rest = self.items
            raise ConfigurationError(reason + "".join(f"\n{where}: {why}" for where, why in rest), location)


def _resolve(store: TwinStore, address: ElementAddress, location: str, problems: _Problems) -> model.Property | None:
    try:
        element = store.element(address.submodel, address.path)
    except NotFoundError as error:
        problems.add(location, f"{address.path!r} in submodel {address.submodel!r}: {error}")
        return None
    if not isinstance(element, model.Property):
        problems.add(location, f"{address.path!r} is a {type(element).__name__}, not a Property")
        return None
    return element


def plan_rollups(store: TwinStore, settings: Sequence[RollupSettings]) -> list[Rollup]:
    """Check the roll-up settings against the store's model; ``ConfigurationError`` names every problem.

    Checked: targets and parts exist and are Properties, targets are not device-bound nor the target
    of two roll-ups, the valueTypes suit the function, no part is listed twice, and no roll-up is
    computed (directly or through others) from itself.
    """
    problems = _Problems()
    rollups: list[Rollup] = []
    targets: dict[ElementKey, int] = {}
    for index, rollup in enumerate(settings):
        where = f"rollups[{index}]"
        if rollup.true_above is not None and rollup.function not in (
            RollupFunction.COUNT_TRUE,
            RollupFunction.FRACTION_TRUE,
        ):
            problems.add(
                f"{where}.true_above", f"applies to count-true and fraction-true only, not {rollup.function.value}"
            )
        target = _resolve(store, rollup.target, f"{where}.target", problems)
        target_key: ElementKey | None = None
        if target is not None:
            target_key = (rollup.target.submodel, paths.path_of(target))
            binding = store.binding(*target_key)
            problem = target_problem(rollup.function, target.value_type)
            if binding is not None and binding.source.startswith(f"{ORIGIN}:"):
                problems.add(f"{where}.target", f"{rollup.target.path!r} is the target of a running roll-up already")
            elif binding is not None:
                problems.add(
                    f"{where}.target",
                    f"{rollup.target.path!r} is fed by {binding.source}; a roll-up target must not be device-bound",
                )
            elif target_key in targets:
                problems.add(
                    f"{where}.target", f"{rollup.target.path!r} is the target of rollups[{targets[target_key]}] already"
                )
            elif problem is not None:
                problems.add(f"{where}.target", f"{rollup.target.path!r} {problem}")
            targets.setdefault(target_key, index)
        part_keys: list[ElementKey] = []
        for position, address in enumerate(rollup.parts):
            part = _resolve(store, address, f"{where}.parts[{position}]", problems)
            if part is None:
                continue
            key = (address.submodel, paths.path_of(part))
            problem = part_problem(rollup.function, part.value_type, rollup.true_above)
            if key in part_keys:
                problems.add(
                    f"{where}.parts[{position}]", f"{address.path!r} is listed twice (parts[{part_keys.index(key)}])"
                )
            elif problem is not None:
                problems.add(f"{where}.parts[{position}]", f"{address.path!r} {problem}")
            part_keys.append(key)
        if target is not None and target_key is not None:
            rollups.append(
                Rollup(
                    index,
                    target_key,
                    rollup.function,
                    tuple(part_keys),
                    rollup.true_above,
                    target.value_type,
                    _unit_of(store, target),
                )
            )
    problems.raise_any()
    order = evaluation_order([rollup.target for rollup in rollups], [rollup.parts for rollup in rollups])
    return [rollups[index] for index in order]


class RollupService(BusService):
    """Keeps the roll-up targets of one store up to date. ``async with`` starts and stops it."""

    def __init__(self, store: TwinStore, settings: Sequence[RollupSettings]) -> None:
        self.store = store
        self.rollups = plan_rollups(store, settings)
        """In evaluation order: every roll-up after those whose targets it uses."""
        self._readers: dict[ElementKey, list[int]] = {}
        self._dependents: dict[int, list[int]] = {}
        producers = {rollup.target: position for position, rollup in enumerate(self.rollups)}
        for position, rollup in enumerate(self.rollups):
            for part in rollup.parts:
                self._readers.setdefault(part, []).append(position)
                if part in producers:
                    self._dependents.setdefault(producers[part], []).append(position)
        self._submodels: dict[str, set[int]] = {}
        for position, rollup in enumerate(self.rollups):
            for submodel_id, _ in (rollup.target, *rollup.parts):
                self._submodels.setdefault(submodel_id, set()).add(position)
        self._failing: set[int] = set()
        self._dropped = 0

    async def start(self) -> None:
        """Bind the targets read-only, compute every roll-up, and follow the change bus."""
        for rollup in self.rollups:
            if self.store.binding(*rollup.target) is None:
                binding = ElementBinding(f"{ORIGIN}:{rollup.function.value}", writable=False, unit=rollup.unit)
                self.store.bind(*rollup.target, binding)
        self._subscription = self.store.bus.subscribe("rollups")
        self.recompute(range(len(self.rollups)))
        self._tasks = [asyncio.create_task(self._follow(self._subscription), name="rollups")]
        _LOG.info("%d roll-ups computed", len(self.rollups))

    async def _follow(self, subscription: Subscription[StoreEvent]) -> None:
        while True:
            events = [await subscription.get()]
            events.extend(subscription.get_nowait_all())
            try:
                if subscription.dropped != self._dropped:
                    self._dropped = subscription.dropped
                    self.recompute(range(len(self.rollups)))
                else:
                    self.recompute(self._affected(events))
            except Exception:
                _LOG.exception("roll-up computation failed")

    def _affected(self, events: Iterable[StoreEvent]) -> set[int]:
        affected: set[int] = set()
        for event in events:
            if isinstance(event, ModelChanged):
                affected.update(self._submodels.get(event.identifiable_id, ()))
            elif event.origin != ORIGIN:
                affected.update(self._readers.get((event.submodel_id, event.id_short_path), ()))
        return affected

    def recompute(self, positions: Iterable[int]) -> None:
        """Recompute the roll-ups at these positions and, after them, every roll-up that uses their targets."""
        pending = set(positions)
        stack = list(pending)
        while stack:
            for dependent in self._dependents.get(stack.pop(), ()):
                if dependent not in pending:
                    pending.add(dependent)
                    stack.append(dependent)
        for position in sorted(pending):
            self._compute(position, self.rollups[position])

    def _part(self, key: ElementKey) -> PartValue:
        state = self.store.state(*key)
        if state is None:
            return PartValue(None, Quality.BAD)
        return PartValue(state.value, state.quality, state.source_time, state.reason)

    def _compute(self, position: int, rollup: Rollup) -> None:
        result = roll_up(rollup.function, [self._part(key) for key in rollup.parts], true_above=rollup.true_above)
        value, quality, reason = result.value, result.quality, result.reason
        if quality is not Quality.BAD:
            try:
                value = fit_value(rollup.value_type, value)
            except TypeMismatchError as error:
                if position not in self._failing:
                    _LOG.warning("roll-up of %s %s: %s; its value is bad", *rollup.target, error)
                self._failing.add(position)
                value, quality, reason = None, Quality.BAD, QualityReason.OUT_OF_RANGE
            else:
                if position in self._failing:
                    self._failing.discard(position)
                    _LOG.info("roll-up of %s %s fits its valueType again", *rollup.target)
        now = utc_now()
        change = ValueChanged(*rollup.target, value, result.source_time or now, quality, reason, now, ORIGIN)
        try:
            self.store.apply(change)
        except NotFoundError as error:
            _LOG.warning("roll-up target %s %s is gone: %s", *rollup.target, error)


async def start_rollups(stack: AsyncExitStack, settings: HubSettings, store: TwinStore) -> RollupService | None:
    """Start the roll-ups of ``settings`` on ``store`` (stopped when ``stack`` closes); ``None`` if there are none.

    Call it after the model is loaded, the mappings are bound and stored values restored, and before
    the OPC UA and REST views start, so that they show the targets read-only and already computed.
    """
    if not settings.rollups:
        return None
    service = RollupService(store, settings.rollups)
    return await stack.enter_async_context(service)

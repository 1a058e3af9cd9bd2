"""Alarms wired into the hub: the monitoring engine fed from the change bus, kept, audited and published.

``AlarmService`` (implements ``analytics.source.AlarmSource``) owns one ``MonitoringEngine`` built
from the rules files of ``settings.analytics`` (checked against the store's model at start: a rule
on a missing element, or on one whose values do not fit, stops the start with its place). It
follows the change bus (``ValueChanged`` of watched elements go to the engine's bound inputs, with
their source time and quality) and ticks the engine's clock every ``analytics.tick`` seconds for
the time-based rules. Every transition, from a value, the clock or an operator, is made durable in
this order before anyone hears of it:

1. the alarm's state (``Alarm.to_dict()``) is written to the alarm database
   (``persistence/alarms.py``; at start the kept states are restored with ``engine.restore``);
2. an audit record (``security/audit.py``): principal = the operator (or ``system``), method
   ``ALARM``, path the alarm's name, operation the transition kind, status the state after it;
3. with MQTT events on, an event in the outbox on
   ``sm-repository/{repoId}/submodels/{submodelId}/submodelElements/{idShortPath}/alarms/{name}/{transition}``
   (payload: ``AlarmTransition.as_dict()`` with the element);
4. the listeners (``subscribe``: the OPC UA conditions) are called, in order, on the event loop.

One lock orders the engine's inputs and their commits, so transitions reach the database, the
audit log, MQTT and the listeners in the order the engine made them. Problems of rules at run time
(a value of the wrong type) are logged once per rule (``engine.take_problems``), and the twin keeps
serving. When the alarm database cannot be written, the transition is logged as an error and still
audited and announced (the state in memory is right; it is kept at the next transition that writes).

With ``analytics.alarm_submodels`` each shell whose submodels hold watched elements gets an
``Alarms`` submodel (id ``<shell id>/alarms``, created or replaced at start and referenced from the
shell): one BasicEventElement per rule, ``observed`` the rule's element, direction output, state on,
``messageTopic`` the alarm's MQTT topic (without the transition; left out when longer than Part 1's 255
characters), description the rule's message; idShorts are cut to 128 characters and kept unique.

Left out: the alarm state inside the AAS model (the BasicEventElements describe the events; the
current state is on REST ``/alarms``, OPC UA and MQTT), rules files changed while running (read at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from basyx.aas import model

from aas_server.analytics.alarms import SYSTEM, Alarm, AlarmTransition, Shelving
from aas_server.analytics.engine import STATE_VERSION, ElementInput, MonitoringEngine
from aas_server.analytics.rules import (
    AnyRule,
    ElementKey,
    ElementKind,
    RulesError,
    element_kind,
    load_rules,
)
from aas_server.analytics.source import AlarmListener
from aas_server.config import HubSettings
from aas_server.errors import NotFoundError, PersistenceError
from aas_server.model import paths
from aas_server.model.events import Quality, ValueChanged, utc_now
from aas_server.model.values import property_value_type
from aas_server.persistence.alarms import AlarmDatabase
from aas_server.runtime.bus_service import BusService
from aas_server.runtime.submodels import install_submodel
from aas_server.security.audit import AuditLog, AuditRecord
from aas_server.store.bus import Subscription
from aas_server.store.outbox import OutboundEvent, Outbox, encode_identifier
from aas_server.store.twin_store import StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)


def known_elements(identifiables: Iterable[model.Identifiable]) -> dict[ElementKey, ElementKind]:
    """Every element of these submodels with the kind of value it holds, for checking rules against them."""
    known: dict[ElementKey, ElementKind] = {}
    for submodel in identifiables:
        if isinstance(submodel, model.Submodel):
            for path, element in paths.walk(submodel):
                known[(submodel.id, path)] = element_kind(property_value_type(element))
    return known


def load_rule_files(files: Sequence[Path], known: dict[ElementKey, ElementKind] | None) -> list[AnyRule]:
    """The rules of all files; ``RulesError`` names the file, item and field of each problem (names unique)."""
    rules: list[AnyRule] = []
    seen: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        try:
            loaded = load_rules(path, known)
        except RulesError as error:
            problems.append(str(error))
            continue
        for index, rule in enumerate(loaded.rules):
            if rule.name in seen:
                problems.append(f"{path}: rules[{index}] ({rule.name}).name: the name is used in {seen[rule.name]} too")
                continue
            seen[rule.name] = path
            rules.append(rule)
    if problems:
        raise RulesError("\n".join(problems))
    return rules


ALARMS_SEMANTIC_ID = "urn:aas-server:analytics:Alarms:1:0"
"""The semanticId of the hub's Alarms submodels (there is no IDTA template for alarms)."""


def alarm_topic(repository_id: str, rule: AnyRule) -> str:
    """The MQTT topic prefix of one alarm's events (a transition kind follows it)."""
    return (
        f"sm-repository/{repository_id}/submodels/{encode_identifier(rule.element.submodel)}"
        f"/submodelElements/{rule.element.path}/alarms/{rule.name}"
    )


_ID_SHORT_LENGTH = 128
"""Part 1 ``NameType``: an idShort has at most 128 characters (a rule name up to 256)."""
_MESSAGE_TOPIC_LENGTH = 255
"""Part 1 ``MessageTopicType``: a messageTopic has at most 255 characters."""


def _id_short(name: str, taken: set[str]) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not text[:1].isalpha():
        text = "Alarm_" + text
    candidate, number = text[:_ID_SHORT_LENGTH], 2
    while candidate in taken:
        suffix = f"_{number}"
        candidate, number = text[: _ID_SHORT_LENGTH - len(suffix)] + suffix, number + 1
    taken.add(candidate)
    return candidate


def alarm_submodels(store: TwinStore, rules: Sequence[AnyRule], repository_id: str) -> list[tuple[str, model.Submodel]]:
    """``(shell id, Alarms submodel)`` for each shell referencing a submodel that a rule watches."""
    placed: list[tuple[str, model.Submodel]] = []
    for shell in store.shells():
        referenced = {reference.key[-1].value for reference in shell.submodel if reference.key}
        watched = [rule for rule in rules if rule.element.submodel in referenced]
        if not watched:
            continue
        taken: set[str] = set()
        elements: list[model.SubmodelElement] = []
        for rule in watched:
            observed = model.ModelReference.from_referable(store.element(rule.element.submodel, rule.element.path))
            topic = alarm_topic(repository_id, rule)
            elements.append(
                model.BasicEventElement(
                    _id_short(rule.name, taken),
                    observed,
                    model.Direction.OUTPUT,
                    model.StateOfEvent.ON,
                    message_topic=topic if len(topic) <= _MESSAGE_TOPIC_LENGTH else None,
                    description=model.MultiLanguageTextType({"en": rule.message[:1023]}),
                    display_name=model.MultiLanguageNameType({"en": rule.name[:64]}),
                )
            )
        submodel = model.Submodel(
            f"{shell.id}/alarms",
            id_short="Alarms",
            semantic_id=model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, ALARMS_SEMANTIC_ID),)),
            submodel_element=elements,
        )
        placed.append((shell.id, submodel))
    return placed


async def install_alarm_submodels(store: TwinStore, placed: Iterable[tuple[str, model.Submodel]]) -> None:
    """Create (or replace) each Alarms submodel in ``store`` and refer to it from its shell."""
    for shell_id, submodel in placed:
        await install_submodel(store, shell_id, submodel)


def _rules_failed(change: ValueChanged, error: Exception) -> None:
    _LOG.error("alarm rules on %s %s failed", change.submodel_id, change.id_short_path, exc_info=error)


def _state_text(alarm: Alarm) -> str:
    return ",".join(
        (
            "active" if alarm.active else "inactive",
            "acknowledged" if alarm.acknowledged else "unacknowledged",
            "confirmed" if alarm.confirmed else "unconfirmed",
            alarm.shelving.value,
            "enabled" if alarm.enabled else "disabled",
        )
    )


class AlarmService(BusService):
    """The hub's alarms (see the module docstring). ``async with`` starts and stops it."""

    def __init__(
        self,
        store: TwinStore,
        rules: Sequence[AnyRule],
        database: AlarmDatabase,
        audit: AuditLog,
        *,
        tick: float = 1.0,
        outbox: Outbox | None = None,
        repository_id: str = "aas-server",
    ) -> None:
        self.store = store
        self.engine = MonitoringEngine(rules)
        self._rules = {rule.name: rule for rule in rules}
        self._database = database
        self._audit = audit
        self._tick = tick
        self._outbox = outbox
        self._repository_id = repository_id
        self._inputs: dict[ElementKey, ElementInput] = {}
        for key in self.engine.watched_elements:
            bound = self.engine.bind(*key)
            if bound is not None:
                self._inputs[key] = bound
        self._listeners: list[AlarmListener] = []
        self._lock = asyncio.Lock()

    # -- AlarmSource ------------------------------------------------------------------------------

    def alarms(self) -> list[Alarm]:
        return list(self.engine.alarms.values())

    def rule_of(self, alarm_id: str) -> AnyRule:
        try:
            return self._rules[alarm_id]
        except KeyError:
            raise NotFoundError(f"no alarm {alarm_id!r}") from None

    def subscribe(self, listener: AlarmListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def _operate(self, operation: Callable[[datetime], AlarmTransition]) -> AlarmTransition:
        """Carry out an operator's ``operation`` (given the time now) and commit its transition."""
        async with self._lock:
            transition = operation(utc_now())
            await self._commit([transition])
        return transition

    async def acknowledge(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition:
        return await self._operate(lambda now: self.engine.acknowledge(alarm_id, user, now, comment))

    async def confirm(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition:
        return await self._operate(lambda now: self.engine.confirm(alarm_id, user, now, comment))

    async def add_comment(self, alarm_id: str, user: str, comment: str) -> AlarmTransition:
        return await self._operate(lambda now: self.engine.add_comment(alarm_id, user, now, comment))

    async def shelve(
        self, alarm_id: str, user: str, kind: Shelving, duration: float | None, comment: str | None
    ) -> AlarmTransition:
        if kind is Shelving.UNSHELVED or (kind is Shelving.TIMED) != (duration is not None):
            raise ValueError(f"shelving {kind.value} with duration {duration!r} does not fit")
        length = timedelta(seconds=duration) if duration is not None else None
        return await self._operate(
            lambda now: self.engine.shelve(alarm_id, user, now, duration=length, comment=comment)
        )

    async def unshelve(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition:
        return await self._operate(lambda now: self.engine.unshelve(alarm_id, user, now, comment))

    async def disable(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition:
        return await self._operate(lambda now: self.engine.disable(alarm_id, user, now, comment))

    async def enable(self, alarm_id: str, user: str, comment: str | None) -> list[AlarmTransition]:
        async with self._lock:
            transitions = self.engine.enable(alarm_id, user, utc_now(), comment)
            await self._commit(transitions)
        return transitions

    # -- running ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the kept states, take the current values of watched elements, follow the bus, tick."""
        kept = await self._database.load()
        if kept:
            try:
                dropped = self.engine.restore({"version": STATE_VERSION, "alarms": kept})
            except ValueError as error:
                _LOG.error("kept alarm states not restored (%s); alarms start inactive", error)
            else:
                _LOG.info("%d alarm states restored", len(kept) - len(dropped))
                if dropped:
                    _LOG.info("kept alarm states without a rule any more: %s", ", ".join(dropped))
        self._subscription = self.store.bus.subscribe("alarms", maxsize=100_000)
        async with self._lock:
            # good values only: a device value restored from the database is uncertain until the device
            # answers, and its old source time would make stuck and bad-quality rules fire at once
            await self._commit(self._feed_current(only_good=True))
        self._tasks = [
            asyncio.create_task(self._follow(self._subscription), name="alarms"),
            asyncio.create_task(self._clock(), name="alarm clock"),
        ]
        _LOG.info("%d alarm rules watch %d elements", len(self._rules), len(self._inputs))

    def _feed_current(self, *, only_good: bool) -> list[AlarmTransition]:
        """Give the engine each watched element's current value, source time and quality."""
        transitions: list[AlarmTransition] = []
        for key, element_input in self._inputs.items():
            state = self.store.state(*key)
            if state is None or (only_good and state.quality is not Quality.GOOD):
                continue
            try:
                transitions.extend(element_input(state.value, state.source_time, state.quality))
            except Exception:
                _LOG.exception("alarm rules on %s %s failed", *key)
        return transitions

    async def _follow(self, subscription: Subscription[StoreEvent]) -> None:
        dropped = subscription.dropped
        changes = self.engine.changes
        while True:
            events = [await subscription.get()]
            events.extend(subscription.get_nowait_all())
            async with self._lock:
                # the whole batch in one engine call (a loop in the engine, not a call per change)
                transitions = list(changes(events, _rules_failed))
                if subscription.dropped != dropped:
                    # the oldest changes were lost while the service fell behind (the bus keeps the newest):
                    # the store's current values stand in for the elements whose changes were all lost
                    dropped = subscription.dropped
                    transitions.extend(self._feed_current(only_good=False))
                await self._commit(transitions)

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            async with self._lock:
                try:
                    transitions = list(self.engine.tick(utc_now()))
                except Exception:
                    _LOG.exception("alarm clock tick failed")
                    continue
                await self._commit(transitions)

    # -- durable transitions ----------------------------------------------------------------------

    async def _commit(self, transitions: Iterable[AlarmTransition]) -> None:
        """Keep, audit and publish ``transitions`` (in order), then tell the listeners."""
        for problem in self.engine.take_problems():
            _LOG.warning("alarm rule %s: %s", problem.rule, problem.reason)
        transitions = list(transitions)
        if not transitions:
            return
        alarms = {transition.alarm: self.engine.alarms[transition.alarm] for transition in transitions}
        try:
            await self._database.save([alarm.to_dict() for alarm in alarms.values()])
        except PersistenceError as error:
            _LOG.error("alarm states of %s not kept: %s", ", ".join(alarms), error)
        for transition in transitions:
            self._audit.record(self._audit_record(transition))
        if self._outbox is not None:
            events = [self._event(transition) for transition in transitions]
            try:
                await self._outbox.outbox_append(events)
            except PersistenceError as error:
                _LOG.error("%d alarm events are lost: %s", len(events), error)
        for transition in transitions:
            alarm = alarms[transition.alarm]
            for listener in list(self._listeners):
                try:
                    listener(alarm, transition)
                except Exception:
                    _LOG.exception("alarm listener %r failed on %s", listener, transition.alarm)

    def _audit_record(self, transition: AlarmTransition) -> AuditRecord:
        rule = self._rules[transition.alarm]
        alarm = self.engine.alarms[transition.alarm]
        reason = transition.message
        if transition.comment:
            reason = f"{reason} (comment: {transition.comment})" if reason else f"comment: {transition.comment}"
        return AuditRecord(
            principal=transition.user,
            principal_kind="system" if transition.user == SYSTEM else "operator",
            roles=(),
            method="ALARM",
            path=transition.alarm,
            operation=transition.kind.value,
            target=f"submodel {rule.element.submodel!r} element {rule.element.path!r}",
            status=_state_text(alarm),
            reason=f"{reason} (at {transition.time.isoformat()})",
        )

    def _event(self, transition: AlarmTransition) -> OutboundEvent:
        rule = self._rules[transition.alarm]
        topic = f"{alarm_topic(self._repository_id, rule)}/{transition.kind.value}"
        payload = transition.as_dict()
        payload["element"] = {"submodel": rule.element.submodel, "path": rule.element.path}
        payload["severity"] = rule.severity
        return OutboundEvent(topic, orjson.dumps(payload))


async def start_alarms(
    stack: AsyncExitStack,
    settings: HubSettings,
    store: TwinStore,
    audit: AuditLog,
    outbox: Outbox | None,
) -> AlarmService | None:
    """Start the alarms of ``settings.analytics`` on ``store`` (stopped when ``stack`` closes); ``None`` without rules.

    Call it after the model is loaded, values restored and event publishing started (``outbox``: the
    repository when MQTT events are on), and before OPC UA and REST, which show the alarms.
    """
    files = settings.analytics.rules_files
    if not files:
        return None
    rules = await asyncio.to_thread(load_rule_files, files, known_elements(store.submodels()))
    if settings.analytics.alarm_submodels:
        await install_alarm_submodels(store, alarm_submodels(store, rules, settings.events.repository_id))
    database = await stack.enter_async_context(AlarmDatabase(settings.alarms_path))
    service = AlarmService(
        store,
        rules,
        database,
        audit,
        tick=settings.analytics.tick,
        outbox=outbox,
        repository_id=settings.events.repository_id,
    )
    return await stack.enter_async_context(service)

"""The hub's alarms as OPC UA Alarms & Conditions (OPC 10000-9): condition nodes, events and methods.

:class:`AlarmConditions` shows the alarms of an :class:`~aas_server.analytics.source.AlarmSource` in a
running projection:

* **Nodes.** One condition object per rule, ``ns=<projection>;s=<submodel id>/<idShort path>$alarm:<name>``
  (so the access rules judge it as the watched element, :func:`~aas_server.opcua.access.node_owner`),
  with browse name ``alarm:<name>``, a component of the element's object (a Property, a Variable,
  hangs its condition under its parent object: the container or the submodel). A limit rule's
  condition is an ``ExclusiveLimitAlarmType``, the others' an ``AlarmConditionType``. The element has
  a ``HasCondition`` reference to it, and the ``Server`` object a ``HasEventSource`` reference to the
  element; the condition's ``Acknowledge``, ``AddComment`` (and, for a rule with ``confirm``,
  ``Confirm``) are the standard methods of the condition types.
* **Events.** Every transition of an alarm is one event from the ``Server`` object (the notifier):
  ``EventId`` (new for each event), ``EventType``, ``ConditionId`` (the condition node), ``SourceNode``
  (the element), ``SourceName`` (its idShort path), ``ConditionName`` (the rule), ``Time`` (the
  transition's), ``ReceiveTime``, ``Message``, ``Severity``, ``LastSeverity``, ``Retain``,
  ``EnabledState``, ``ActiveState``, ``AckedState``, ``ConfirmedState`` (each with ``Id``),
  ``ShelvingState/CurrentState``, ``SuppressedOrShelved``, ``Comment``, ``ClientUserId``, and for limit
  alarms ``LimitState/CurrentState`` (with ``Id``: the state of ``ExclusiveLimitStateMachineType``)
  and the limits. A session receives the events of the alarms whose element it may read.
* **Methods.** ``Acknowledge(EventId, Comment)``, ``Confirm(EventId, Comment)`` and
  ``AddComment(EventId, Comment)`` go to the alarm source with the session's user name. The
  ``EventId`` must be one of the last :data:`KEPT_EVENT_IDS` events of that condition, else
  ``BadEventIdUnknown``. The caller needs a role that may act (operator, admin) and, with access
  control, the rules' operation ``acknowledge`` on the element; else ``BadUserAccessDenied``, audited
  like every allowed call. A refusal of the alarm's state machine maps to its status code
  (:data:`STATUS_OF_REASON`). ``ConditionRefresh(SubscriptionId)`` and
  ``ConditionRefresh2(SubscriptionId, MonitoredItemId)`` send ``RefreshStartEvent``, the last event
  of every retained condition the session may read, and ``RefreshEndEvent`` (OPC 10000-9 §5.5.7).
  Each condition has a ``ShelvingState`` object (``ShelvedStateMachineType``, node id
  ``...$alarm:<name>$ShelvingState``) with ``Unshelve()``, ``OneShotShelve()`` and
  ``TimedShelve(ShelvingTime)`` (milliseconds), under the same rights as Acknowledge.

  ``Enable()`` and ``Disable()`` (no arguments) enable and disable the alarm, with the same rights.
* **Properties.** The condition node has ``ConditionName``, ``Message``, ``Severity`` and ``Retain``
  (read-only, ``...$alarm:<name>$<property>``), kept in step with its events.

Left out: the two-state variables (``ActiveState``, ``AckedState``...) on the condition node (the
state is in the events, and on REST), branches, ``NonExclusiveLimitAlarmType``. A model change that
re-creates an element's node is followed by :meth:`AlarmConditions.relink` (the condition node
itself stays); a condition whose element is deleted stays, with its events naming the gone node.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.server.event_generator import EventGenerator
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from aas_server.analytics.alarms import Alarm, AlarmState, AlarmStateError, AlarmStateReason, AlarmTransition, Shelving
from aas_server.analytics.rules import AnyRule, LimitsRule, LimitState
from aas_server.analytics.source import AlarmSource
from aas_server.config import AccessOperation
from aas_server.errors import NotFoundError
from aas_server.opcua import node_ids
from aas_server.opcua.processor import CALLING_SESSION, HubServer, calling_user
from aas_server.opcua.projection import DISPLAY_LOCALE, element_parent_node_id
from aas_server.opcua.status import status
from aas_server.opcua.sync import ModelChangeHandler, Resynchronizer
from aas_server.store.twin_store import ModelChanged

_LOG = logging.getLogger(__name__)

KEPT_EVENT_IDS = 64
"""Events per condition whose ``EventId`` an Acknowledge, Confirm or AddComment may name."""

STATUS_OF_REASON: dict[AlarmStateReason, int] = {
    AlarmStateReason.DISABLED: StatusCodes.BadConditionDisabled,
    AlarmStateReason.ALREADY_ENABLED: StatusCodes.BadConditionAlreadyEnabled,
    AlarmStateReason.ALREADY_DISABLED: StatusCodes.BadConditionAlreadyDisabled,
    AlarmStateReason.ALREADY_ACKNOWLEDGED: StatusCodes.BadConditionBranchAlreadyAcked,
    AlarmStateReason.NOT_ACKNOWLEDGED: StatusCodes.BadInvalidState,
    AlarmStateReason.ALREADY_CONFIRMED: StatusCodes.BadConditionBranchAlreadyConfirmed,
    AlarmStateReason.NO_CONFIRMATION: StatusCodes.BadMethodInvalid,
    AlarmStateReason.ALREADY_SHELVED: StatusCodes.BadConditionAlreadyShelved,
    AlarmStateReason.NOT_SHELVED: StatusCodes.BadConditionNotShelved,
    AlarmStateReason.SHELVING_TIME: StatusCodes.BadShelvingTimeOutOfRange,
}
"""OPC UA status code of each refusal of the alarm state machine (OPC 10000-9 §5.5.4-§5.8.10)."""

_LIMIT_STATE_IDS = {
    LimitState.HIGH_HIGH: ObjectIds.ExclusiveLimitStateMachineType_HighHigh,
    LimitState.HIGH: ObjectIds.ExclusiveLimitStateMachineType_High,
    LimitState.LOW: ObjectIds.ExclusiveLimitStateMachineType_Low,
    LimitState.LOW_LOW: ObjectIds.ExclusiveLimitStateMachineType_LowLow,
}
_ACKNOWLEDGE = ObjectIds.AcknowledgeableConditionType_Acknowledge
_CONFIRM = ObjectIds.AcknowledgeableConditionType_Confirm
_ADD_COMMENT = ObjectIds.ConditionType_AddComment
_ENABLE = ObjectIds.ConditionType_Enable
_DISABLE = ObjectIds.ConditionType_Disable
_UNSHELVE = ObjectIds.ShelvedStateMachineType_Unshelve
_ONE_SHOT_SHELVE = ObjectIds.ShelvedStateMachineType_OneShotShelve
_TIMED_SHELVE = ObjectIds.ShelvedStateMachineType_TimedShelve
_ALARM_MARK = "$alarm:"


def _node(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


def condition_node_id(submodel_id: str, id_short_path: str, name: str) -> str:
    """The string node id of the condition of rule ``name`` on an element."""
    return f"{node_ids.node_id_for(submodel_id, id_short_path)}{_ALARM_MARK}{name}"


def shelving_node_id(submodel_id: str, id_short_path: str, name: str) -> str:
    """The string node id of the ``ShelvingState`` object of a condition."""
    return f"{condition_node_id(submodel_id, id_short_path, name)}$ShelvingState"


def _text(text: str | None) -> ua.LocalizedText:
    return ua.LocalizedText(text, DISPLAY_LOCALE) if text is not None else ua.LocalizedText()


def _two_state(value: bool, true: str, false: str) -> ua.LocalizedText:
    return _text(true if value else false)


@dataclass(slots=True)
class _Condition:
    name: str
    node_id: ua.NodeId
    source: ua.NodeId
    source_name: str
    limit_alarm: bool
    rule: AnyRule
    parent: ua.NodeId = field(default_factory=ua.NodeId)
    shelving: ua.NodeId = field(default_factory=ua.NodeId)
    event_ids: deque[bytes] = field(default_factory=lambda: deque(maxlen=KEPT_EVENT_IDS))
    last_event: Any = None


class AlarmConditions:
    """The alarms of ``source`` as conditions of ``server`` (see the module docstring).

    ``await start()`` after the projection's nodes exist and before the server serves; ``stop()``
    unsubscribes and ends the event delivery.
    """

    def __init__(self, server: HubServer, source: AlarmSource, namespace_index: int) -> None:
        self._server = server
        self._source = source
        self._namespace_index = namespace_index
        self._conditions: dict[str, _Condition] = {}
        self._by_node: dict[ua.NodeId, _Condition] = {}
        self._by_shelving_node: dict[ua.NodeId, _Condition] = {}
        self._templates: dict[bool, Any] = {}
        self._refresh: dict[int, EventGenerator] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Add the condition nodes, bind the condition methods, and follow the source's transitions."""
        session = self._server.iserver.isession
        for limit_alarm in (False, True):
            generator = EventGenerator(session)
            event_type = ObjectIds.ExclusiveLimitAlarmType if limit_alarm else ObjectIds.AlarmConditionType
            await generator.init(event_type, add_generates_event=False)
            template = generator.event
            for name, variant_type in (
                ("LimitState/CurrentState", ua.VariantType.LocalizedText),
                ("LimitState/CurrentState/Id", ua.VariantType.NodeId),
                ("ShelvingState/CurrentState", ua.VariantType.LocalizedText),
            ):
                template.add_property(name, None, variant_type)
            self._templates[limit_alarm] = template
        for event_type in (ObjectIds.RefreshStartEventType, ObjectIds.RefreshEndEventType):
            generator = EventGenerator(session)
            await generator.init(event_type, add_generates_event=False)
            self._refresh[event_type] = generator
        await self._add_nodes()
        for method, callback in (
            (_ACKNOWLEDGE, self._acknowledge),
            (_CONFIRM, self._confirm),
            (_ADD_COMMENT, self._add_comment),
            (_ENABLE, self._enable),
            (_DISABLE, self._disable),
            (_UNSHELVE, self._unshelve),
            (_ONE_SHOT_SHELVE, self._one_shot_shelve),
            (_TIMED_SHELVE, self._timed_shelve),
            (ObjectIds.ConditionType_ConditionRefresh, self._condition_refresh),
            (ObjectIds.ConditionType_ConditionRefresh2, self._condition_refresh),
        ):
            session.add_method_callback(_node(method), callback)
        for alarm in self._source.alarms():
            condition = self._conditions.get(alarm.name)
            if condition is not None:
                condition.last_event = self._event(condition, alarm, alarm.state, alarm.state, None)
        self._unsubscribe = self._source.subscribe(self._on_transition)
        self._task = asyncio.create_task(self._deliver(), name="opcua-alarm-events")
        _LOG.info("OPC UA: %d alarm conditions", len(self._conditions))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- nodes ------------------------------------------------------------------------------------

    async def _add_nodes(self) -> None:
        session = self._server.iserver.isession
        address_space = self._server.iserver.aspace
        items: list[ua.AddNodesItem] = []
        references: list[ua.AddReferencesItem] = []
        sources: set[ua.NodeId] = set()
        for alarm in self._source.alarms():
            rule = self._source.rule_of(alarm.name)
            submodel_id, path = rule.element.submodel, rule.element.path
            source = _node(node_ids.node_id_for(submodel_id, path), self._namespace_index)
            if source not in address_space:
                _LOG.warning("alarm %s: element %r of %r has no OPC UA node", alarm.name, path, submodel_id)
                continue
            node_class: Any = address_space[source].attributes[ua.AttributeIds.NodeClass].value
            parent = (
                source
                if node_class is not None and node_class.Value.Value == ua.NodeClass.Object
                else _node(element_parent_node_id(submodel_id, path), self._namespace_index)
            )
            limit_alarm = isinstance(rule, LimitsRule)
            condition = _Condition(
                alarm.name,
                _node(condition_node_id(submodel_id, path, alarm.name), self._namespace_index),
                source,
                path,
                limit_alarm,
                rule,
                parent,
                _node(shelving_node_id(submodel_id, path, alarm.name), self._namespace_index),
            )
            self._conditions[alarm.name] = condition
            self._by_node[condition.node_id] = condition
            self._by_shelving_node[condition.shelving] = condition
            attributes = ua.ObjectAttributes()
            attributes.DisplayName = _text(alarm.name)
            attributes.Description = _text(rule.message)
            attributes.EventNotifier = 0
            items.append(
                ua.AddNodesItem(
                    ParentNodeId=parent,
                    ReferenceTypeId=_node(ObjectIds.HasComponent),
                    RequestedNewNodeId=condition.node_id,
                    BrowseName=ua.QualifiedName(f"alarm:{alarm.name}", self._namespace_index),
                    NodeClass=ua.NodeClass.Object,
                    NodeAttributes=attributes,
                    TypeDefinition=_node(
                        ObjectIds.ExclusiveLimitAlarmType if limit_alarm else ObjectIds.AlarmConditionType
                    ),
                )
            )
            shelving_attributes = ua.ObjectAttributes()
            shelving_attributes.DisplayName = _text("ShelvingState")
            items.append(
                ua.AddNodesItem(
                    ParentNodeId=condition.node_id,
                    ReferenceTypeId=_node(ObjectIds.HasComponent),
                    RequestedNewNodeId=condition.shelving,
                    BrowseName=ua.QualifiedName("ShelvingState", 0),
                    NodeClass=ua.NodeClass.Object,
                    NodeAttributes=shelving_attributes,
                    TypeDefinition=_node(ObjectIds.ShelvedStateMachineType),
                )
            )
            items.extend(
                _property_item(condition.node_id, name, variant)
                for name, variant in _condition_properties(condition.name, alarm.message, alarm.state)
            )
            methods = [_ENABLE, _DISABLE, _ACKNOWLEDGE, _ADD_COMMENT] + ([_CONFIRM] if rule.confirm else [])
            links = [(condition.node_id, ObjectIds.HasComponent, _node(method)) for method in methods]
            links.extend(
                (condition.shelving, ObjectIds.HasComponent, _node(method))
                for method in (_UNSHELVE, _ONE_SHOT_SHELVE, _TIMED_SHELVE)
            )
            links.append((source, ObjectIds.HasCondition, condition.node_id))
            if source not in sources:
                sources.add(source)
                links.append((_node(ObjectIds.Server), ObjectIds.HasEventSource, source))
            references.extend(
                ua.AddReferencesItem(
                    SourceNodeId=origin,
                    ReferenceTypeId=_node(reference_type),
                    IsForward=True,
                    TargetNodeId=target,
                )
                for origin, reference_type, target in links
            )
        for result in await session.add_nodes(items):
            result.StatusCode.check()
        for code in await session.add_references(references):
            code.check()

    def following(
        self, apply_model_change: ModelChangeHandler, resynchronize: Resynchronizer
    ) -> tuple[ModelChangeHandler, Resynchronizer]:
        """The store sync's handlers, each linking the conditions again to element nodes it re-created."""

        async def apply(change: ModelChanged) -> None:
            await apply_model_change(change)
            await self.relink()

        async def resynchronize_all() -> None:
            await resynchronize()
            await self.relink()

        return apply, resynchronize_all

    async def relink(self) -> None:
        """Add the references of conditions whose element or parent node was deleted and added again."""
        address_space = self._server.iserver.aspace
        missing: list[ua.AddReferencesItem] = []
        server = _node(ObjectIds.Server)
        for condition in self._conditions.values():
            for origin, reference_type, target in (
                (condition.parent, ObjectIds.HasComponent, condition.node_id),
                (condition.source, ObjectIds.HasCondition, condition.node_id),
                (server, ObjectIds.HasEventSource, condition.source),
            ):
                if origin not in address_space or target not in address_space:
                    continue
                known = address_space[origin].references
                if any(ref.NodeId == target and ref.IsForward for ref in known):
                    continue
                missing.append(
                    ua.AddReferencesItem(
                        SourceNodeId=origin, ReferenceTypeId=_node(reference_type), IsForward=True, TargetNodeId=target
                    )
                )
        if missing:
            for code in await self._server.iserver.isession.add_references(missing):
                if not code.is_good():
                    _LOG.debug("OPC UA alarm condition reference not added again: %s", code.name)

    # -- events -----------------------------------------------------------------------------------

    def _event(
        self,
        condition: _Condition,
        alarm: Alarm,
        before: AlarmState,
        after: AlarmState,
        transition: AlarmTransition | None,
    ) -> Any:
        event = copy.copy(self._templates[condition.limit_alarm])
        event_id = uuid.uuid4().bytes
        condition.event_ids.append(event_id)
        now = datetime.now(UTC)
        event.EventId = event_id
        event.Time = transition.time if transition is not None else (alarm.last_change or now)
        event.ReceiveTime = now
        event.emitting_node = _node(ObjectIds.Server)
        event.SourceNode = condition.source
        event.SourceName = condition.source_name
        event.NodeId = condition.node_id
        event.ConditionName = condition.name
        event.ConditionClassId = _node(ObjectIds.ProcessConditionClassType)
        event.ConditionClassName = _text("ProcessConditionClassType")
        event.BranchId = ua.NodeId()
        event.Message = _text(transition.message if transition is not None else alarm.message)
        event.Severity = after.severity
        event.LastSeverity = before.severity
        event.Retain = after.retain
        event.Quality = status(StatusCodes.Good)
        event.EnabledState = _two_state(after.enabled, "Enabled", "Disabled")
        setattr(event, "EnabledState/Id", after.enabled)
        event.ActiveState = _two_state(after.active, "Active", "Inactive")
        setattr(event, "ActiveState/Id", after.active)
        event.AckedState = _two_state(after.acknowledged, "Acknowledged", "Unacknowledged")
        setattr(event, "AckedState/Id", after.acknowledged)
        event.ConfirmedState = _two_state(after.confirmed, "Confirmed", "Unconfirmed")
        setattr(event, "ConfirmedState/Id", after.confirmed)
        setattr(event, "ShelvingState/CurrentState", _text(after.shelving.value))
        event.SuppressedOrShelved = after.shelving is not Shelving.UNSHELVED
        event.Comment = _text(alarm.comment)
        event.ClientUserId = transition.user if transition is not None else alarm.comment_user
        if condition.limit_alarm and isinstance(condition.rule, LimitsRule):
            limit_state = after.limit_state
            setattr(event, "LimitState/CurrentState", _text(limit_state.value if limit_state else None))
            setattr(
                event,
                "LimitState/CurrentState/Id",
                _node(_LIMIT_STATE_IDS[limit_state]) if limit_state is not None else None,
            )
            rule = condition.rule
            event.HighHighLimit, event.HighLimit = rule.hihi, rule.hi
            event.LowLimit, event.LowLowLimit = rule.lo, rule.lolo
        return event

    def _on_transition(self, alarm: Alarm, transition: AlarmTransition) -> None:
        condition = self._conditions.get(alarm.name)
        if condition is None:
            return
        event = self._event(condition, alarm, transition.before, transition.after, transition)
        condition.last_event = event
        self._queue.put_nowait((condition, event, None, None))

    async def _deliver(self) -> None:
        while True:
            condition, event, subscription_id, monitored_item = await self._queue.get()
            try:
                if condition is not None and subscription_id is None:
                    await self._show_state(condition, event)
                await self._send(condition, event, subscription_id, monitored_item)
            except Exception:
                _LOG.exception("OPC UA alarm event of %s not delivered", getattr(condition, "name", "-"))

    async def _show_state(self, condition: _Condition, event: Any) -> None:
        """The condition node's own properties follow its events (for clients that read rather than subscribe)."""
        for name in _STATE_PROPERTIES:
            variant = ua.Variant(getattr(event, name), _STATE_PROPERTIES[name])
            await self._server.write_attribute_value(_property_node_id(condition.node_id, name), ua.DataValue(variant))

    async def _send(
        self, condition: _Condition | None, event: Any, subscription_id: int | None, monitored_item: int | None
    ) -> None:
        """``event`` to each subscription (or one) whose session may read the condition's element."""
        iserver = self._server.iserver
        access = self._server.access
        users = {session.session_id: session.user for session in _sessions(iserver)}
        for number, subscription in list(iserver.subscription_service.subscriptions.items()):
            if subscription_id is not None and number != subscription_id:
                continue
            if condition is not None and access is not None:
                if subscription.session_id not in users:
                    continue
                roles = access.principal(users[subscription.session_id]).roles
                decision = access.decide(roles, AccessOperation.READ, condition.source)
                if decision is not None and not decision.allowed:
                    continue
            if condition is None:
                await _enqueue_unfiltered(subscription, event, monitored_item)
            else:
                await subscription.monitored_item_srv.trigger_event(event, monitored_item)

    # -- methods ----------------------------------------------------------------------------------

    async def _acknowledge(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._operator_action(object_id, arguments, "acknowledge")

    async def _confirm(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._operator_action(object_id, arguments, "confirm")

    async def _add_comment(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._operator_action(object_id, arguments, "add_comment")

    async def _enable(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._enabling(object_id, arguments, enable=True)

    async def _disable(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._enabling(object_id, arguments, enable=False)

    async def _enabling(
        self, object_id: ua.NodeId, arguments: Sequence[ua.Variant], *, enable: bool
    ) -> ua.CallMethodResult:
        """``Enable()``/``Disable()`` (OPC 10000-9 §5.5.4, 5.5.5): no arguments, the rights of Acknowledge."""
        if arguments:
            return _result(StatusCodes.BadTooManyArguments)

        async def act(alarm: str, user: str) -> None:
            if enable:
                await self._source.enable(alarm, user, None)
            else:
                await self._source.disable(alarm, user, None)

        return await self._run_action(self._by_node.get(object_id), [], "enable" if enable else "disable", act)

    async def _unshelve(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._shelving_action(object_id, arguments, Shelving.UNSHELVED)

    async def _one_shot_shelve(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._shelving_action(object_id, arguments, Shelving.ONE_SHOT)

    async def _timed_shelve(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        return await self._shelving_action(object_id, arguments, Shelving.TIMED)

    async def _shelving_action(
        self, object_id: ua.NodeId, arguments: Sequence[ua.Variant], kind: Shelving
    ) -> ua.CallMethodResult:
        """Unshelve(), OneShotShelve(), TimedShelve(ShelvingTime in ms) on a condition's ``ShelvingState``."""
        wanted = 1 if kind is Shelving.TIMED else 0
        if len(arguments) < wanted:
            return _result(StatusCodes.BadArgumentsMissing)
        if len(arguments) > wanted:
            return _result(StatusCodes.BadTooManyArguments)
        duration: float | None = None
        codes: list[int] = []
        if kind is Shelving.TIMED:
            value = arguments[0].Value
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _result(StatusCodes.BadInvalidArgument, [StatusCodes.BadTypeMismatch])
            duration = float(value) / 1000.0
            codes = [StatusCodes.Good]

        async def shelve(alarm: str, user: str) -> None:
            if kind is Shelving.UNSHELVED:
                await self._source.unshelve(alarm, user, None)
            else:
                await self._source.shelve(alarm, user, kind, duration, None)

        return await self._run_action(
            self._by_shelving_node.get(object_id),
            codes,
            "shelving",
            shelve,
            value_error=StatusCodes.BadShelvingTimeOutOfRange,
        )

    async def _operator_action(
        self, object_id: ua.NodeId, arguments: Sequence[ua.Variant], action: str
    ) -> ua.CallMethodResult:
        if len(arguments) < 2:
            return _result(StatusCodes.BadArgumentsMissing)
        if len(arguments) > 2:
            return _result(StatusCodes.BadTooManyArguments)
        event_id, comment = arguments
        codes = [
            StatusCodes.Good if event_id.VariantType == ua.VariantType.ByteString else StatusCodes.BadTypeMismatch,
            StatusCodes.Good
            if comment.VariantType == ua.VariantType.LocalizedText or comment.Value is None
            else StatusCodes.BadTypeMismatch,
        ]
        if any(code != StatusCodes.Good for code in codes):
            return _result(StatusCodes.BadInvalidArgument, codes)
        text = comment.Value.Text if isinstance(comment.Value, ua.LocalizedText) else None

        async def act(alarm: str, user: str) -> None:
            if action == "acknowledge":
                await self._source.acknowledge(alarm, user, text or None)
            elif action == "confirm":
                await self._source.confirm(alarm, user, text or None)
            else:
                await self._source.add_comment(alarm, user, text or "")

        return await self._run_action(
            self._by_node.get(object_id), codes, action, act, event_id=bytes(event_id.Value or b"")
        )

    async def _run_action(
        self,
        condition: _Condition | None,
        codes: list[int],
        what: str,
        action: Callable[[str, str], Awaitable[None]],
        *,
        event_id: bytes | None = None,
        value_error: int | None = None,
    ) -> ua.CallMethodResult:
        """Run an operator's ``action(alarm name, user name)`` on ``condition`` if the calling user may.

        The outcome as a method result: refusals, unknown conditions or events and failures get their
        status codes (``value_error`` for a ``ValueError``), ``codes`` are the input argument results.
        """
        if condition is None:
            return _result(StatusCodes.BadNodeIdInvalid, codes)
        user = calling_user()
        if not self._may_act(user, condition):
            return _result(StatusCodes.BadUserAccessDenied, codes)
        if event_id is not None and event_id not in condition.event_ids:
            return _result(StatusCodes.BadEventIdUnknown, codes)
        try:
            await action(condition.name, self._server.user_name(user))
        except AlarmStateError as error:
            return _result(STATUS_OF_REASON.get(error.reason, StatusCodes.BadInvalidState), codes)
        except NotFoundError:
            return _result(StatusCodes.BadNodeIdInvalid, codes)
        except Exception as error:
            if isinstance(error, ValueError) and value_error is not None:
                return _result(value_error, codes)
            _LOG.exception("OPC UA %s of alarm %s failed", what, condition.name)
            return _result(StatusCodes.BadInternalError, codes)
        return _result(StatusCodes.Good, codes)

    def _may_act(self, user: Any, condition: _Condition) -> bool:
        """A role that may act (operator, admin) and, with access control, operation ``acknowledge`` on the element."""
        if user is None:
            return False
        role_may_act = bool(getattr(user, "may_write_values", False))
        access = self._server.access
        if access is not None:
            (allowed,) = access.allowed(
                user, AccessOperation.ACKNOWLEDGE, [condition.node_id], "CALL", audit_allowed=role_may_act
            )
            return allowed and role_may_act
        return role_may_act

    async def _condition_refresh(self, object_id: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        """ConditionRefresh(SubscriptionId) and ConditionRefresh2(SubscriptionId, MonitoredItemId)."""
        if not arguments:
            return _result(StatusCodes.BadArgumentsMissing)
        if len(arguments) > 2:
            return _result(StatusCodes.BadTooManyArguments)
        values = [argument.Value for argument in arguments]
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            return _result(StatusCodes.BadInvalidArgument, [StatusCodes.BadTypeMismatch] * len(values))
        subscription_id = int(values[0])
        monitored_item = int(values[1]) if len(values) > 1 else None
        subscriptions = self._server.iserver.subscription_service.subscriptions
        subscription = subscriptions.get(subscription_id)
        if subscription is None:
            return _result(StatusCodes.BadSubscriptionIdInvalid)
        if monitored_item is not None and monitored_item not in subscription.monitored_item_srv._monitored_items:
            return _result(StatusCodes.BadMonitoredItemIdInvalid)
        session = CALLING_SESSION.get()
        if session is not None and subscription.session_id != session.session_id:
            return _result(StatusCodes.BadSubscriptionIdInvalid)
        replay: list[tuple[_Condition | None, Any]] = [(None, self._marker(ObjectIds.RefreshStartEventType))]
        for alarm in self._source.alarms():
            condition = self._conditions.get(alarm.name)
            if condition is not None and condition.last_event is not None and alarm.retain:
                replay.append((condition, condition.last_event))
        replay.append((None, self._marker(ObjectIds.RefreshEndEventType)))
        for condition, event in replay:
            self._queue.put_nowait((condition, event, subscription_id, monitored_item))
        return _result(StatusCodes.Good)

    def _marker(self, event_type: int) -> Any:
        event = copy.copy(self._refresh[event_type].event)
        event.EventId = uuid.uuid4().bytes
        event.Time = event.ReceiveTime = datetime.now(UTC)
        event.Message = _text("ConditionRefresh")
        return event


_STATE_PROPERTIES = {
    "Message": ua.VariantType.LocalizedText,
    "Severity": ua.VariantType.UInt16,
    "Retain": ua.VariantType.Boolean,
}
"""Properties of a condition node that change with its events (``ConditionName`` is fixed)."""


def _property_node_id(condition: ua.NodeId, name: str) -> ua.NodeId:
    return _node(f"{cast(str, condition.Identifier)}${name}", condition.NamespaceIndex)


def _condition_properties(name: str, message: str | None, state: AlarmState) -> list[tuple[str, ua.Variant]]:
    return [
        ("ConditionName", ua.Variant(name, ua.VariantType.String)),
        ("Message", ua.Variant(_text(message), ua.VariantType.LocalizedText)),
        ("Severity", ua.Variant(state.severity, ua.VariantType.UInt16)),
        ("Retain", ua.Variant(state.retain, ua.VariantType.Boolean)),
    ]


def _property_item(condition: ua.NodeId, name: str, value: ua.Variant) -> ua.AddNodesItem:
    """A read-only property of a condition node (OPC 10000-9 §5.5.2: ConditionType's own properties)."""
    attributes = ua.VariableAttributes()
    attributes.DisplayName = _text(name)
    attributes.Value = value
    attributes.DataType = _node(value.VariantType.value)
    attributes.ValueRank = -1
    attributes.AccessLevel = attributes.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    return ua.AddNodesItem(
        ParentNodeId=condition,
        ReferenceTypeId=_node(ObjectIds.HasProperty),
        RequestedNewNodeId=_property_node_id(condition, name),
        BrowseName=ua.QualifiedName(name, 0),
        NodeClass=ua.NodeClass.Variable,
        NodeAttributes=attributes,
        TypeDefinition=_node(ObjectIds.PropertyType),
    )


def _result(code: int, argument_codes: Sequence[int] = ()) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = status(code)
    result.InputArgumentResults = [status(argument_code) for argument_code in argument_codes]
    return result


async def _enqueue_unfiltered(subscription: Any, event: Any, monitored_item: int | None) -> None:
    """``event`` to the subscription's event items on its notifier, past their WhereClause (OPC 10000-9 §5.5.7:
    RefreshStartEvent and RefreshEndEvent reach a refreshed item whatever its filter selects)."""
    service = subscription.monitored_item_srv
    items = service._monitored_events.get(event.emitting_node, [])
    for item in items if monitored_item is None else [monitored_item]:
        data = service._monitored_items.get(item)
        if data is None or data.filter is None:
            continue
        fields = ua.EventFieldList()
        fields.ClientHandle = data.client_handle
        fields.EventFields = event.to_event_fields(data.filter.SelectClauses)
        await subscription.enqueue_event(item, fields, data.queue_size)


def _sessions(internal_server: Any) -> list[Any]:
    registry: dict[Any, Any] = getattr(internal_server, "_external_sessions", {})
    return [session for session in registry.values() if session.is_activated()]

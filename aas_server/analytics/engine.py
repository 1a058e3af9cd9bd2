"""The rule evaluation engine: samples and clock ticks in, alarm transitions out.

``MonitoringEngine`` is pure and deterministic: it is fed ``sample(submodel id, idShort path, value,
source time, quality)`` for every value change and ``tick(now)`` from a clock (for the time-based
rules: stuck value, bad quality for a time, on-/off-delays, shelving expiry), and returns the
``AlarmTransition`` records those caused, in order. It reads no clock, opens nothing and logs nothing;
the caller (``runtime/``) logs the problems it hands out once (``take_problems``).

Evaluation, per rule kind (see ``analytics.rules``): the *condition* of a rule is computed from the
newest sample (with the rule's deadband as hysteresis); the alarm follows the condition after the
rule's ``on_delay`` (when it becomes true) or ``off_delay`` (when it becomes false). A change of the
condition within a delay cancels it. A transition caused by a delay or a duration carries the time
at which it fell due, not the time of the tick that noticed it, so the result does not depend on
the tick rate. A sample whose time lies past a pending deadline first lets that deadline fall due.

* Value rules (limits, rate, state, deviation) skip samples of bad quality, keeping their state,
  and evaluate good and uncertain ones. A value of the wrong type (text on a limit) is skipped and
  reported once as a problem.
* The stuck rule counts only good samples; a sample that is not good ends a stuck condition and
  starts the count again with the next good one.
* The bad-quality rule's condition starts with the first sample that is bad (or uncertain, if the
  rule says so) and ends with the first good one.
* The rate rule keeps the samples of its window; out-of-order samples (older than the newest) are
  skipped.

Cost: a sample costs one dictionary look-up plus O(1) work per rule on its element (amortised: the
rate window pops what it pushed); deadlines live in one heap with at most a few entries per rule,
pushed only when a deadline moves earlier, so a stuck rule on a value that changes every second costs
one push per ``duration``, not one per sample. Nothing is allocated for a sample that changes no
alarm.

Kept across restarts: the alarms' state (``to_dict``/``restore``). Not kept: rate windows, stuck
and bad-quality timers and pending delays; they start again with the first samples after a restart,
and an alarm restored active stays active until its condition is seen to be false.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aas_server.analytics.alarms import Alarm, AlarmTransition, Shelving
from aas_server.analytics.rules import (
    AnyRule,
    BadQualityRule,
    DeviationRule,
    Direction,
    LimitsRule,
    LimitState,
    RateRule,
    RulesFile,
    StateRule,
    StuckRule,
)
from aas_server.errors import NotFoundError
from aas_server.model.events import Quality, ValueChanged

_NO_TRANSITIONS: tuple[AlarmTransition, ...] = ()
_NUMBERS: frozenset[type[Any]] = frozenset({int, float})
_PLAIN: frozenset[type[Any]] = frozenset({int, float, bool, str})
"""Value classes ``changes`` passes on as they are; others (``datatypes.Int``, ``Decimal``) become plain numbers."""
_GOOD = Quality.GOOD
_ONE_SECOND = timedelta(seconds=1)
_BAD = Quality.BAD
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """A sample a rule could not evaluate (reported once per rule, for the log)."""

    rule: str
    time: datetime | None
    reason: str


def _as_number(value: Any) -> int | float | None:
    """A plain number for any ``int`` or ``float`` subclass (basyx ``datatypes.Int``, ``Float``, ...) or
    ``Decimal`` (xs:decimal), as the store holds them; ``None`` for a boolean, NaN or anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        try:
            number = float(value)
        except ValueError:  # a signalling NaN
            return None
        return number if number == number else None
    return None


def _check_time(time: datetime) -> None:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"time must be timezone-aware, got {time.isoformat()}")


class _Timers:
    """One heap of (deadline, sequence, monitor); stale entries are skipped when they come up."""

    __slots__ = ("heap", "sequence")

    def __init__(self) -> None:
        self.heap: list[tuple[datetime, int, _Monitor]] = []
        self.sequence = itertools.count()

    def push(self, time: datetime, monitor: _Monitor) -> None:
        heapq.heappush(self.heap, (time, next(self.sequence), monitor))


class _Monitor:
    """Condition, debouncing (on-/off-delay) and scheduling of one rule; subclasses compute the condition."""

    __slots__ = (
        "alarm",
        "condition_due",
        "due",
        "engine",
        "heap_time",
        "level",
        "off_delay",
        "on_delay",
        "pending",
        "problem_reported",
        "raw",
        "rule",
        "switch_at",
        "timers",
        "value",
    )

    def __init__(self, rule: AnyRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        self.rule = rule
        self.alarm = alarm
        self.timers = timers
        self.engine = engine
        self.on_delay = timedelta(seconds=rule.on_delay)
        self.off_delay = timedelta(seconds=rule.off_delay)
        self.raw = False
        self.level: LimitState | None = None
        self.value: Any = None
        self.pending = False
        self.switch_at: datetime | None = None
        self.condition_due: datetime | None = None
        self.due: datetime | None = None
        self.heap_time: datetime | None = None
        self.problem_reported = False

    # -- scheduling -------------------------------------------------------------------------------

    def _reschedule(self) -> None:
        switch_at, condition_due = self.switch_at, self.condition_due
        if switch_at is None:
            due = condition_due
        elif condition_due is None or switch_at <= condition_due:
            due = switch_at
        else:
            due = condition_due
        self.due = due
        if due is not None and (self.heap_time is None or due < self.heap_time):
            self.heap_time = due
            self.timers.push(due, self)

    def advance(self, now: datetime, out: list[AlarmTransition]) -> None:
        """Let every deadline up to ``now`` fall due, each at its own time, the earliest first."""
        while True:
            condition_due, switch_at = self.condition_due, self.switch_at
            if switch_at is not None and switch_at <= now and (condition_due is None or switch_at <= condition_due):
                self.switch_at = None
                self._apply(self.pending, switch_at, out)
            elif condition_due is not None and condition_due <= now:
                self.condition_due = None
                self.set_condition(True, None, condition_due, out)
            else:
                break
        self._reschedule()

    # -- condition and alarm ----------------------------------------------------------------------

    def set_condition(
        self, condition: bool, level: LimitState | None, time: datetime, out: list[AlarmTransition]
    ) -> None:
        self.raw = condition
        self.level = level
        alarm = self.alarm
        if not alarm.enabled:
            return  # followed again from the condition at enable
        if condition is alarm.active:
            if self.switch_at is not None:
                self.switch_at = None
                self._reschedule()
            if condition and level is not alarm.limit_state:
                self._apply(True, time, out)
            return
        if self.switch_at is not None:
            return
        delay = self.on_delay if condition else self.off_delay
        if delay:
            self.pending = condition
            self.switch_at = time + delay
            self._reschedule()
        else:
            self._apply(condition, time, out)

    def _apply(self, condition: bool, time: datetime, out: list[AlarmTransition]) -> None:
        alarm = self.alarm
        if condition:
            level = self.level
            severity = self._severity(level)
            transition = alarm.activate(
                time, self._message(level), limit_state=level, severity=severity, value=self.value
            )
        else:
            transition = alarm.clear(time, self._message(alarm.limit_state), value=self.value)
        if transition is not None:
            out.append(transition)

    def _severity(self, level: LimitState | None) -> int:
        return self.rule.severity

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        return {}

    def _message(self, level: LimitState | None) -> str:
        fields = {"name": self.rule.name, "value": self.value, "severity": self._severity(level)}
        fields.update(self._fields(level))
        try:
            return self.rule.message.format(**fields)
        except (ValueError, TypeError, KeyError) as error:
            self._problem(self.alarm.last_change, f"message cannot be formatted: {error}")
            return self.rule.message

    def _problem(self, time: datetime | None, reason: str) -> None:
        if not self.problem_reported:
            self.problem_reported = True
            self.engine.problems.append(RuleProblem(self.rule.name, time, reason))

    def _wrong_type(self, value: Any, time: datetime, wanted: str) -> None:
        if not self.problem_reported:
            self._problem(time, f"{wanted} value expected, got {type(value).__name__} {value!r}; sample skipped")

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """After the alarm took over a kept state: assume its condition until samples say otherwise."""
        self.raw = self.alarm.active
        self.level = self.alarm.limit_state


class _LimitsMonitor(_Monitor):
    __slots__ = ("deadband", "hi", "hihi", "lo", "lolo", "normal_high", "normal_low", "severities")

    def __init__(self, rule: LimitsRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.hihi, self.hi, self.lo, self.lolo = rule.hihi, rule.hi, rule.lo, rule.lolo
        self.deadband = rule.deadband
        self.severities = dict(rule.level_severity)
        highs = [limit for limit in (rule.hi, rule.hihi) if limit is not None]
        lows = [limit for limit in (rule.lo, rule.lolo) if limit is not None]
        self.normal_high = min(highs) if highs else math.inf
        """Between ``normal_low`` and ``normal_high`` (exclusive) a value in no level stays in none."""
        self.normal_low = max(lows) if lows else -math.inf

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD:
            return
        if value.__class__ not in _NUMBERS or value != value:
            number = _as_number(value)
            if number is None:
                self._wrong_type(value, time, "a numeric")
                return
            value = number
        self.value = value
        current = self.level
        if current is None and self.normal_low < value < self.normal_high and self.switch_at is None:
            if self.alarm.active:
                self.set_condition(False, None, time, out)
            return
        deadband = self.deadband
        hihi, hi, lo, lolo = self.hihi, self.hi, self.lo, self.lolo
        level: LimitState | None
        if hihi is not None and (value >= hihi or (current is LimitState.HIGH_HIGH and value >= hihi - deadband)):
            level = LimitState.HIGH_HIGH
        elif hi is not None and (
            value >= hi or (value >= hi - deadband and current in (LimitState.HIGH, LimitState.HIGH_HIGH))
        ):
            level = LimitState.HIGH
        elif lolo is not None and (value <= lolo or (current is LimitState.LOW_LOW and value <= lolo + deadband)):
            level = LimitState.LOW_LOW
        elif lo is not None and (
            value <= lo or (value <= lo + deadband and current in (LimitState.LOW, LimitState.LOW_LOW))
        ):
            level = LimitState.LOW
        else:
            level = None
        if level is current and (level is not None) is self.alarm.active and self.switch_at is None:
            return
        self.set_condition(level is not None, level, time, out)

    def _severity(self, level: LimitState | None) -> int:
        if level is None:
            return self.rule.severity
        return self.severities.get(level, self.rule.severity)

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        limit = {
            LimitState.HIGH_HIGH: self.hihi,
            LimitState.HIGH: self.hi,
            LimitState.LOW: self.lo,
            LimitState.LOW_LOW: self.lolo,
            None: None,
        }[level]
        return {"limit": limit, "level": level.value if level else "Normal"}


class _RateMonitor(_Monitor):
    __slots__ = ("deadband", "direction", "limit", "rate", "samples", "window")

    def __init__(self, rule: RateRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.limit = rule.limit
        self.deadband = rule.deadband
        self.direction = rule.direction
        self.window = timedelta(seconds=rule.window)
        self.samples: deque[tuple[datetime, float]] = deque()
        self.rate = 0.0

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD:
            return
        if value.__class__ not in _NUMBERS or value != value:
            number = _as_number(value)
            if number is None:
                self._wrong_type(value, time, "a numeric")
                return
            value = number
        samples = self.samples
        if samples and time <= samples[-1][0]:
            return
        samples.append((time, value))
        start = time - self.window
        while samples[0][0] < start:
            samples.popleft()
        oldest_time, oldest_value = samples[0]
        if oldest_time == time:
            return
        rate = (value - oldest_value) / ((time - oldest_time) / _ONE_SECOND)
        self.rate = rate
        self.value = value
        direction = self.direction
        measure = rate if direction is Direction.RISING else -rate if direction is Direction.FALLING else abs(rate)
        condition = measure >= self.limit or (self.raw and measure >= self.limit - self.deadband)
        if condition is self.raw and condition is self.alarm.active and self.switch_at is None:
            return
        self.set_condition(condition, None, time, out)

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        return {"limit": self.limit, "rate": self.rate}


class _StuckMonitor(_Monitor):
    __slots__ = ("anchor", "anchor_time", "duration", "tolerance")

    def __init__(self, rule: StuckRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.duration = timedelta(seconds=rule.duration)
        self.tolerance = rule.tolerance
        self.anchor: Any = None
        self.anchor_time: datetime | None = None

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is not _GOOD:
            self.anchor_time = None
            if self.condition_due is not None:
                self.condition_due = None
                self._reschedule()
            if self.raw:
                self.set_condition(False, None, time, out)
            return
        if value.__class__ not in _NUMBERS:
            number = _as_number(value)
            if number is not None:
                value = number
        self.value = value
        anchor = self.anchor
        if self.anchor_time is not None and (
            value == anchor
            or (
                self.tolerance
                and value.__class__ in _NUMBERS
                and anchor.__class__ in _NUMBERS
                and abs(value - anchor) <= self.tolerance
            )
        ):
            return
        self.anchor = value
        previous = self.anchor_time
        self.anchor_time = time
        if previous is None:
            if not self.raw:  # else restored active: it stays so until the value moves
                self.condition_due = time + self.duration
                self._reschedule()
            return
        if self.condition_due is not None:
            return  # the queued deadline moves on when it comes up (``advance``): no heap work per change
        self.condition_due = time + self.duration
        self.set_condition(False, None, time, out)
        self._reschedule()

    def advance(self, now: datetime, out: list[AlarmTransition]) -> None:
        anchor_time = self.anchor_time
        if anchor_time is not None and self.condition_due is not None:
            self.condition_due = anchor_time + self.duration
        super().advance(now, out)

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        return {"duration": self.duration.total_seconds()}


class _BadQualityMonitor(_Monitor):
    __slots__ = ("duration", "include_uncertain", "quality", "since")

    def __init__(self, rule: BadQualityRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.duration = timedelta(seconds=rule.duration)
        self.include_uncertain = rule.include_uncertain
        self.since: datetime | None = None
        self.quality = Quality.GOOD

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD or (quality is Quality.UNCERTAIN and self.include_uncertain):
            self.quality = quality
            if self.since is None:
                self.since = time
                if self.duration:
                    self.condition_due = time + self.duration
                    self._reschedule()
                else:
                    self.set_condition(True, None, time, out)
            return
        self.quality = quality
        self.value = value
        if self.since is None and not self.raw:
            return
        self.since = None
        if self.condition_due is not None:
            self.condition_due = None
            self._reschedule()
        self.set_condition(False, None, time, out)

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        return {"duration": self.duration.total_seconds(), "quality": self.quality.value}


class _StateMonitor(_Monitor):
    __slots__ = ("active_when",)

    def __init__(self, rule: StateRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.active_when = rule.active_when

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD:
            return
        if value.__class__ is bool:
            condition = value is self.active_when
        else:
            number = value if value.__class__ in _NUMBERS and value == value else _as_number(value)
            if number is None:
                self._wrong_type(value, time, "a boolean")
                return
            condition = (number != 0) is self.active_when
        self.value = value
        if condition is self.raw and condition is self.alarm.active and self.switch_at is None:
            return
        self.set_condition(condition, None, time, out)


class _DeviationMonitor(_Monitor):
    __slots__ = ("deadband", "deviation", "direction", "limit", "setpoint")

    def __init__(self, rule: DeviationRule, alarm: Alarm, timers: _Timers, engine: MonitoringEngine) -> None:
        super().__init__(rule, alarm, timers, engine)
        self.limit = rule.limit
        self.deadband = rule.deadband
        self.direction = rule.direction
        self.setpoint: float | None = None
        self.deviation = 0.0

    def on_sample(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD:
            return
        if value.__class__ not in _NUMBERS or value != value:
            number = _as_number(value)
            if number is None:
                self._wrong_type(value, time, "a numeric")
                return
            value = number
        self.value = value
        self._evaluate(time, out)

    def on_setpoint(self, value: Any, time: datetime, quality: Quality, out: list[AlarmTransition]) -> None:
        due = self.due
        if due is not None and due <= time:
            self.advance(time, out)
        if quality is _BAD:
            return
        if value.__class__ not in _NUMBERS or value != value:
            number = _as_number(value)
            if number is None:
                self._wrong_type(value, time, "a numeric set-point")
                return
            value = number
        self.setpoint = value
        self._evaluate(time, out)

    def _evaluate(self, time: datetime, out: list[AlarmTransition]) -> None:
        setpoint, value = self.setpoint, self.value
        if setpoint is None or value is None:
            return
        deviation = value - setpoint
        self.deviation = deviation
        direction = self.direction
        if direction is Direction.RISING:
            measure = deviation
        elif direction is Direction.FALLING:
            measure = -deviation
        else:
            measure = abs(deviation)
        condition = measure >= self.limit or (self.raw and measure >= self.limit - self.deadband)
        if condition is self.raw and condition is self.alarm.active and self.switch_at is None:
            return
        self.set_condition(condition, None, time, out)

    def _fields(self, level: LimitState | None) -> dict[str, Any]:
        return {"limit": self.limit, "setpoint": self.setpoint, "deviation": self.deviation}


_Handler = Callable[[Any, datetime, Quality, list[AlarmTransition]], None]


ErrorHandler = Callable[[ValueChanged, Exception], None]
"""``(change, error)``: told of a change whose rules raised (``MonitoringEngine.changes``)."""

ElementInput = Callable[..., Sequence[AlarmTransition]]
"""``(value, time, quality=Quality.GOOD) -> transitions`` of one element (see ``MonitoringEngine.bind``)."""


class MonitoringEngine:
    """Evaluates a set of monitoring rules and owns their alarms (one per rule, named like the rule).

    Inputs: ``sample`` for each value change of a watched element, ``tick`` from a clock (once a
    second is enough: transitions carry the time they fell due), and the operator actions
    (``acknowledge``, ``confirm``, ``add_comment``, ``shelve``, ``unshelve``, ``enable``,
    ``disable``). Output: the ``AlarmTransition`` records, in order. Unknown alarm names raise
    ``NotFoundError``; actions that do not fit an alarm's state raise ``AlarmStateError``.
    """

    def __init__(self, rules: RulesFile | Iterable[AnyRule]) -> None:
        rule_list: Sequence[AnyRule] = rules.rules if isinstance(rules, RulesFile) else list(rules)
        self._timers = _Timers()
        self._out: list[AlarmTransition] = []
        self.problems: list[RuleProblem] = []
        self.alarms: dict[str, Alarm] = {}
        self._timed_shelving: set[Alarm] = set()
        self._monitors: dict[str, _Monitor] = {}
        self._handlers: dict[tuple[str, str], list[_Handler]] = {}
        for rule in rule_list:
            if rule.name in self.alarms:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            alarm = Alarm(
                rule.name,
                rule.severity,
                requires_confirmation=rule.confirm,
                max_shelve_time=timedelta(seconds=rule.max_shelve_time) if rule.max_shelve_time else None,
            )
            monitor = self._monitor(rule, alarm)
            self.alarms[rule.name] = alarm
            self._monitors[rule.name] = monitor
            key = (rule.element.submodel, rule.element.path)
            self._handlers.setdefault(key, []).append(monitor.on_sample)
            if isinstance(rule, DeviationRule) and isinstance(monitor, _DeviationMonitor):
                setpoint_key = (rule.setpoint.submodel, rule.setpoint.path)
                self._handlers.setdefault(setpoint_key, []).append(monitor.on_setpoint)
        self._single: dict[tuple[str, str], _Handler] = {
            key: handlers[0] for key, handlers in self._handlers.items() if len(handlers) == 1
        }
        self._routes: dict[str, dict[str, tuple[_Handler, ...]]] = {}
        """submodel id -> idShort path -> the element's inputs: two string look-ups, no key tuple per change."""
        for (submodel_id, id_short_path), handlers in self._handlers.items():
            self._routes.setdefault(submodel_id, {})[id_short_path] = tuple(handlers)

    def _monitor(self, rule: AnyRule, alarm: Alarm) -> _Monitor:
        timers = self._timers
        if isinstance(rule, LimitsRule):
            return _LimitsMonitor(rule, alarm, timers, self)
        if isinstance(rule, RateRule):
            return _RateMonitor(rule, alarm, timers, self)
        if isinstance(rule, StuckRule):
            return _StuckMonitor(rule, alarm, timers, self)
        if isinstance(rule, BadQualityRule):
            return _BadQualityMonitor(rule, alarm, timers, self)
        if isinstance(rule, StateRule):
            return _StateMonitor(rule, alarm, timers, self)
        return _DeviationMonitor(rule, alarm, timers, self)

    @property
    def watched_elements(self) -> frozenset[tuple[str, str]]:
        """``(submodel id, idShort path)`` of every element a rule reads: what to subscribe to."""
        return frozenset(self._handlers)

    def _take(self) -> Sequence[AlarmTransition]:
        out = self._out
        if not out:
            return _NO_TRANSITIONS
        self._out = []
        return out

    def sample(
        self,
        submodel_id: str,
        id_short_path: str,
        value: Any,
        time: datetime,
        quality: Quality = Quality.GOOD,
    ) -> Sequence[AlarmTransition]:
        """A new value (with its source time and quality) of one element; the transitions it caused."""
        key = (submodel_id, id_short_path)
        out = self._out
        handler = self._single.get(key)
        if handler is not None:
            if time.tzinfo is None:
                _check_time(time)
            handler(value, time, quality, out)
        else:
            handlers = self._handlers.get(key)
            if handlers is None:
                return _NO_TRANSITIONS
            if time.tzinfo is None:
                _check_time(time)
            for each in handlers:
                each(value, time, quality, out)
        if not out:
            return _NO_TRANSITIONS
        self._out = []
        return out

    def changes(self, events: Iterable[object], on_error: ErrorHandler | None = None) -> Sequence[AlarmTransition]:
        """The transitions a batch of change-bus events caused, in order: ``sample`` for each ``ValueChanged``
        of a watched element (its value, source time and quality), other events skipped.

        What the change-bus subscriber calls once per batch it takes from its queue: one Python loop
        over the batch instead of a call, a key tuple and a result list per change. A value of a
        subclass of ``int`` or ``float`` (basyx ``datatypes.Int``...) or a ``Decimal`` is made a plain
        number once here rather than by each rule on the element. When the rules of a change raise
        (a time without zone: ``ValueError``), ``on_error(change, error)`` is told and the batch goes
        on with the next change; without ``on_error`` the error propagates.
        """
        routes = self._routes
        out = self._out
        for event in events:
            if event.__class__ is not ValueChanged and not isinstance(event, ValueChanged):
                continue
            paths = routes.get(event.submodel_id)
            if paths is None:
                continue
            handlers = paths.get(event.id_short_path)
            if handlers is None:
                continue
            value = event.value
            if value.__class__ not in _PLAIN:
                number = _as_number(value)
                if number is not None:
                    value = number
            time = event.source_time
            quality = event.quality
            try:
                if time.tzinfo is None:
                    _check_time(time)
                for handler in handlers:
                    handler(value, time, quality, out)
            except Exception as error:
                if on_error is None:
                    raise
                on_error(event, error)
        if not out:
            return _NO_TRANSITIONS
        self._out = []
        return out

    def bind(self, submodel_id: str, id_short_path: str) -> ElementInput | None:
        """The input of one watched element, resolved once (``None`` if no rule reads it).

        ``bind(...)(value, time, quality)`` is ``sample(submodel_id, id_short_path, ...)`` without the
        look-up: what the change-bus subscriber keeps per element, as the ingest path keeps its sink
        per point.
        """
        handlers = self._handlers.get((submodel_id, id_short_path))
        if handlers is None:
            return None
        engine = self
        first = handlers[0]
        several = tuple(handlers) if len(handlers) > 1 else ()

        def element_input(value: Any, time: datetime, quality: Quality = Quality.GOOD) -> Sequence[AlarmTransition]:
            if time.tzinfo is None:
                _check_time(time)
            out = engine._out
            if several:
                for handler in several:
                    handler(value, time, quality, out)
            else:
                first(value, time, quality, out)
            if not out:
                return _NO_TRANSITIONS
            engine._out = []
            return out

        return element_input

    def tick(self, now: datetime) -> Sequence[AlarmTransition]:
        """Let every deadline up to ``now`` fall due: delays, stuck and bad-quality durations, shelving expiry."""
        _check_time(now)
        out = self._out
        heap = self._timers.heap
        while heap and heap[0][0] <= now:
            time, _, monitor = heapq.heappop(heap)
            if monitor.heap_time != time:
                continue
            monitor.heap_time = None
            monitor.advance(now, out)
        if self._timed_shelving:
            for alarm in list(self._timed_shelving):
                transition = alarm.expire_shelving(now)
                if transition is not None:
                    out.append(transition)
                if alarm.shelving is not Shelving.TIMED:
                    self._timed_shelving.discard(alarm)
        if len(out) > 1:
            out.sort(key=lambda transition: transition.time)
        return self._take()

    def take_problems(self) -> list[RuleProblem]:
        """Problems found since the last call (each rule reports its first one only): for the log."""
        problems, self.problems = self.problems, []
        return problems

    # -- operator actions -------------------------------------------------------------------------

    def alarm(self, name: str) -> Alarm:
        try:
            return self.alarms[name]
        except KeyError:
            raise NotFoundError(f"no alarm {name!r}") from None

    def acknowledge(self, name: str, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        return self.alarm(name).acknowledge(user, time, comment)

    def confirm(self, name: str, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        return self.alarm(name).confirm(user, time, comment)

    def add_comment(self, name: str, user: str, time: datetime, comment: str) -> AlarmTransition:
        return self.alarm(name).add_comment(user, time, comment)

    def shelve(
        self,
        name: str,
        user: str,
        time: datetime,
        *,
        duration: timedelta | None = None,
        comment: str | None = None,
    ) -> AlarmTransition:
        """Timed shelving for ``duration``, one-shot shelving without it."""
        alarm = self.alarm(name)
        transition = alarm.shelve(user, time, duration=duration, comment=comment)
        if alarm.shelving is Shelving.TIMED:
            self._timed_shelving.add(alarm)
        return transition

    def unshelve(self, name: str, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        return self.alarm(name).unshelve(user, time, comment)

    def disable(self, name: str, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        return self.alarm(name).disable(user, time, comment)

    def enable(self, name: str, user: str, time: datetime, comment: str | None = None) -> list[AlarmTransition]:
        """Enable an alarm; if its condition holds already, it becomes active at once (after its on-delay)."""
        alarm = self.alarm(name)
        transitions = [alarm.enable(user, time, comment)]
        monitor = self._monitors[name]
        monitor.switch_at = None
        out: list[AlarmTransition] = []
        if monitor.raw:
            monitor.set_condition(True, monitor.level, time, out)
        monitor._reschedule()
        transitions.extend(out)
        return transitions

    # -- persistence ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The alarms' state as plain JSON data, for the database."""
        return {"version": STATE_VERSION, "alarms": [alarm.to_dict() for alarm in self.alarms.values()]}

    def restore(self, data: dict[str, Any]) -> list[str]:
        """Take over a state kept by ``to_dict``; returns the names of kept alarms no rule has any more.

        All or nothing: kept data that does not fit raises ``ValueError`` naming the alarm before any
        alarm changes.
        """
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ValueError(f"alarm state version {version!r}; this hub reads {STATE_VERSION}")
        alarms = data.get("alarms")
        if not isinstance(alarms, list) or not all(isinstance(item, dict) for item in alarms):
            raise ValueError("kept alarm state has no list of alarms")
        dropped: list[str] = []
        taken: list[tuple[Alarm, dict[str, Any]]] = []
        for alarm_data in alarms:
            name = alarm_data.get("name")
            alarm = self.alarms.get(name) if isinstance(name, str) else None
            if alarm is None:
                dropped.append(str(name))
                continue
            Alarm(alarm.name, alarm.severity, requires_confirmation=alarm.requires_confirmation).restore(alarm_data)
            taken.append((alarm, alarm_data))
        for alarm, alarm_data in taken:
            alarm.restore(alarm_data)
            if alarm.shelving is Shelving.TIMED:
                self._timed_shelving.add(alarm)
            self._monitors[alarm.name].restore()
        return dropped

"""The alarm state machine of OPC UA Part 9 (Alarms & Conditions) and ISA-18.2, for one alarm.

States (OPC UA Part 9): EnabledState (5.5.2), ActiveState (5.8.2), AckedState and ConfirmedState
(5.7.2, 5.7.4), the ShelvedStateMachine with Unshelved, TimedShelved and OneShotShelved (5.8.10),
the exclusive LimitState (5.8.18), Severity, Retain and the last operator Comment (5.5.2).

An ``Alarm`` changes only through its methods; each change returns an ``AlarmTransition`` with who,
when, the comment, and the state before and after: the record for the audit log and for the event
that the edges (OPC UA conditions, REST, MQTT) send. Operator actions that do not fit the state
raise ``AlarmStateError`` with a ``reason`` that the edges map to their own codes (OPC UA
``BadConditionBranchAlreadyAcked``, ``BadConditionAlreadyShelved``, ...; HTTP 409). Times are passed
in (timezone-aware); nothing here reads a clock. ``to_dict``/``from_dict`` keep an alarm across a
restart as plain JSON data.

Rules followed here:

* Activation sets Acked to false and, if the rule wants confirmation, Confirmed to false.
  A change to a more severe limit state (High to HighHigh) does the same; a change back does not.
* Retain is true while the alarm is enabled and active, unacknowledged or unconfirmed.
* A one-shot shelving ends when the alarm becomes inactive; a timed shelving at its expiry
  (``expire_shelving``); a shelved alarm still changes state, and says so (``shelving``).
* A disabled alarm ignores its condition until it is enabled again, and is not retained.

Left out: condition branches (5.5.2 BranchId: one state per alarm, ISA's "return to normal
unacknowledged" is Active false with Acked false), SuppressedState, OutOfServiceState, audio.
"""

from __future__ import annotations

import enum
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aas_server.analytics.rules import LimitState
from aas_server.errors import ConflictError

SYSTEM = "system"
"""The ``user`` of transitions the hub makes itself (condition changes, shelving expiry)."""


class Shelving(enum.StrEnum):
    """OPC UA Part 9, 5.8.10 ShelvedStateMachineType states."""

    UNSHELVED = "Unshelved"
    TIMED = "TimedShelved"
    ONE_SHOT = "OneShotShelved"


class TransitionKind(enum.StrEnum):
    ACTIVATED = "activated"
    LIMIT_CHANGED = "limit-changed"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    CONFIRMED = "confirmed"
    COMMENTED = "commented"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    ENABLED = "enabled"
    DISABLED = "disabled"


class AlarmStateReason(enum.StrEnum):
    """Why an operator action was refused; each maps to one OPC UA status code (Part 9, 5.5.4 ff.)."""

    DISABLED = "disabled"  # BadConditionDisabled
    ALREADY_ENABLED = "already-enabled"  # BadConditionAlreadyEnabled
    ALREADY_DISABLED = "already-disabled"  # BadConditionAlreadyDisabled
    ALREADY_ACKNOWLEDGED = "already-acknowledged"  # BadConditionBranchAlreadyAcked
    NOT_ACKNOWLEDGED = "not-acknowledged"  # BadInvalidState (confirm before acknowledge; Part 9 has no own code)
    ALREADY_CONFIRMED = "already-confirmed"  # BadConditionBranchAlreadyConfirmed
    NO_CONFIRMATION = "no-confirmation"  # BadMethodInvalid: the rule does not use confirmation
    ALREADY_SHELVED = "already-shelved"  # BadConditionAlreadyShelved
    NOT_SHELVED = "not-shelved"  # BadConditionNotShelved
    SHELVING_TIME = "shelving-time"  # BadShelvingTimeOutOfRange


class AlarmStateError(ConflictError):
    """An operator action that does not fit the alarm's state (acknowledging an acknowledged alarm, ...)."""

    def __init__(self, alarm: str, reason: AlarmStateReason, message: str) -> None:
        super().__init__(f"alarm {alarm!r}: {message}")
        self.alarm = alarm
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AlarmState:
    """One alarm's state at one moment (what an OPC UA condition event carries)."""

    enabled: bool
    active: bool
    acknowledged: bool
    confirmed: bool
    shelving: Shelving
    shelving_expires: datetime | None
    limit_state: LimitState | None
    severity: int

    @property
    def retain(self) -> bool:
        """OPC UA Part 9, 5.5.2 Retain: the alarm is of interest to a client."""
        return self.enabled and (self.active or not self.acknowledged or not self.confirmed)

    def as_dict(self) -> dict[str, Any]:
        return {**self.fields_dict(), "retain": self.retain}

    def fields_dict(self) -> dict[str, Any]:
        """The fields as plain JSON data (``retain``, derived, left out)."""
        return {
            "enabled": self.enabled,
            "active": self.active,
            "acknowledged": self.acknowledged,
            "confirmed": self.confirmed,
            "shelving": self.shelving.value,
            "shelvingExpires": _time_text(self.shelving_expires),
            "limitState": self.limit_state.value if self.limit_state else None,
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One change of one alarm: the audit record and the event payload."""

    alarm: str
    kind: TransitionKind
    time: datetime
    user: str
    comment: str | None
    before: AlarmState
    after: AlarmState
    message: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data: for the audit log, MQTT and REST."""
        return {
            "alarm": self.alarm,
            "transition": self.kind.value,
            "time": self.time.isoformat(),
            "user": self.user,
            "comment": self.comment,
            "message": self.message,
            "value": self.value
            if isinstance(self.value, bool | int | float | str) or self.value is None
            else str(self.value),
            "from": self.before.as_dict(),
            "to": self.after.as_dict(),
        }


def _time_text(time: datetime | None) -> str | None:
    return time.isoformat() if time is not None else None


def _aware(time: datetime, what: str) -> datetime:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {time.isoformat()}")
    return time


_LIMIT_RANK = {None: 0, LimitState.HIGH: 1, LimitState.HIGH_HIGH: 2, LimitState.LOW: 1, LimitState.LOW_LOW: 2}


@dataclass(eq=False, slots=True)
class Alarm:
    """One alarm (one rule): its state, changed by its condition and by operators.

    Compared by identity: each is the one live alarm of its rule.
    """

    name: str
    severity: int
    _: KW_ONLY
    requires_confirmation: bool = False
    max_shelve_time: timedelta | None = None
    enabled: bool = field(default=True, init=False)
    active: bool = field(default=False, init=False)
    acknowledged: bool = field(default=True, init=False)
    confirmed: bool = field(default=True, init=False)
    shelving: Shelving = field(default=Shelving.UNSHELVED, init=False)
    shelving_expires: datetime | None = field(default=None, init=False)
    limit_state: LimitState | None = field(default=None, init=False)
    message: str = field(default="", init=False)
    comment: str | None = field(default=None, init=False)
    comment_user: str | None = field(default=None, init=False)
    comment_time: datetime | None = field(default=None, init=False)
    last_change: datetime | None = field(default=None, init=False)

    @property
    def state(self) -> AlarmState:
        return AlarmState(
            enabled=self.enabled,
            active=self.active,
            acknowledged=self.acknowledged,
            confirmed=self.confirmed,
            shelving=self.shelving,
            shelving_expires=self.shelving_expires,
            limit_state=self.limit_state,
            severity=self.severity,
        )

    @property
    def retain(self) -> bool:
        return self.state.retain

    def _record(
        self,
        kind: TransitionKind,
        before: AlarmState,
        time: datetime,
        user: str,
        comment: str | None = None,
        value: Any = None,
    ) -> AlarmTransition:
        self.last_change = time
        return AlarmTransition(self.name, kind, time, user, comment, before, self.state, self.message, value)

    def _refuse(self, reason: AlarmStateReason, message: str) -> AlarmStateError:
        return AlarmStateError(self.name, reason, message)

    def _require_enabled(self, time: datetime) -> None:
        _aware(time, "time")
        if not self.enabled:
            raise self._refuse(AlarmStateReason.DISABLED, "is disabled")

    # -- the condition (the engine) -------------------------------------------------------------

    def activate(
        self,
        time: datetime,
        message: str,
        *,
        limit_state: LimitState | None = None,
        severity: int | None = None,
        value: Any = None,
    ) -> AlarmTransition | None:
        """The condition became true (or, while active, moved to another limit state); ``None``: no change."""
        if not self.enabled:
            return None
        before = self.state
        new_severity = self.severity if severity is None else severity
        if self.active:
            if limit_state == self.limit_state and new_severity == self.severity:
                return None
            if _LIMIT_RANK[limit_state] > _LIMIT_RANK[self.limit_state]:
                self.acknowledged = False
                self.confirmed = not self.requires_confirmation
            self.limit_state = limit_state
            self.severity = new_severity
            self.message = message
            return self._record(TransitionKind.LIMIT_CHANGED, before, _aware(time, "time"), SYSTEM, value=value)
        self.active = True
        self.acknowledged = False
        self.confirmed = not self.requires_confirmation
        self.limit_state = limit_state
        self.severity = new_severity
        self.message = message
        return self._record(TransitionKind.ACTIVATED, before, _aware(time, "time"), SYSTEM, value=value)

    def clear(self, time: datetime, message: str, *, value: Any = None) -> AlarmTransition | None:
        """The condition is gone; a one-shot shelving ends with it. ``None``: it was not active."""
        if not self.enabled or not self.active:
            return None
        before = self.state
        self.active = False
        self.limit_state = None
        self.message = message
        if self.shelving is Shelving.ONE_SHOT:
            self.shelving = Shelving.UNSHELVED
        return self._record(TransitionKind.CLEARED, before, _aware(time, "time"), SYSTEM, value=value)

    # -- operators --------------------------------------------------------------------------------

    def acknowledge(self, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        """OPC UA Part 9, 5.7.3 Acknowledge; an acknowledged alarm refuses it."""
        self._require_enabled(time)
        if self.acknowledged:
            raise self._refuse(AlarmStateReason.ALREADY_ACKNOWLEDGED, "is acknowledged already")
        before = self.state
        self.acknowledged = True
        self._set_comment(user, time, comment)
        return self._record(TransitionKind.ACKNOWLEDGED, before, time, user, comment)

    def confirm(self, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        """OPC UA Part 9, 5.7.4 Confirm: only after Acknowledge, and only for a rule that asks for it."""
        self._require_enabled(time)
        if not self.requires_confirmation:
            raise self._refuse(AlarmStateReason.NO_CONFIRMATION, "does not use confirmation")
        if not self.acknowledged:
            raise self._refuse(AlarmStateReason.NOT_ACKNOWLEDGED, "must be acknowledged before it is confirmed")
        if self.confirmed:
            raise self._refuse(AlarmStateReason.ALREADY_CONFIRMED, "is confirmed already")
        before = self.state
        self.confirmed = True
        self._set_comment(user, time, comment)
        return self._record(TransitionKind.CONFIRMED, before, time, user, comment)

    def add_comment(self, user: str, time: datetime, comment: str) -> AlarmTransition:
        """OPC UA Part 9, 5.5.6 AddComment."""
        self._require_enabled(time)
        before = self.state
        self._set_comment(user, time, comment)
        return self._record(TransitionKind.COMMENTED, before, time, user, comment)

    def shelve(
        self,
        user: str,
        time: datetime,
        *,
        duration: timedelta | None = None,
        comment: str | None = None,
    ) -> AlarmTransition:
        """Timed shelving for ``duration``, or one-shot shelving (until inactive) without it (5.8.10)."""
        self._require_enabled(time)
        if duration is None:
            if self.shelving is Shelving.ONE_SHOT:
                raise self._refuse(AlarmStateReason.ALREADY_SHELVED, "is one-shot shelved already")
            before = self.state
            self.shelving = Shelving.ONE_SHOT
            self.shelving_expires = None
        else:
            if self.shelving is Shelving.TIMED:
                raise self._refuse(AlarmStateReason.ALREADY_SHELVED, "is timed shelved already")
            if duration <= timedelta(0) or (self.max_shelve_time is not None and duration > self.max_shelve_time):
                limit = f" up to {self.max_shelve_time.total_seconds():g} s" if self.max_shelve_time else ""
                raise self._refuse(
                    AlarmStateReason.SHELVING_TIME,
                    f"shelving time {duration.total_seconds():g} s out of range (more than 0 s{limit})",
                )
            before = self.state
            self.shelving = Shelving.TIMED
            self.shelving_expires = time + duration
        self._set_comment(user, time, comment)
        return self._record(TransitionKind.SHELVED, before, time, user, comment)

    def unshelve(self, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        """OPC UA Part 9, 5.8.10 Unshelve."""
        self._require_enabled(time)
        if self.shelving is Shelving.UNSHELVED:
            raise self._refuse(AlarmStateReason.NOT_SHELVED, "is not shelved")
        before = self.state
        self.shelving = Shelving.UNSHELVED
        self.shelving_expires = None
        self._set_comment(user, time, comment)
        return self._record(TransitionKind.UNSHELVED, before, time, user, comment)

    def expire_shelving(self, now: datetime) -> AlarmTransition | None:
        """End a timed shelving whose time is up; the record carries the expiry time, not ``now``."""
        expires = self.shelving_expires
        if self.shelving is not Shelving.TIMED or expires is None or now < expires:
            return None
        before = self.state
        self.shelving = Shelving.UNSHELVED
        self.shelving_expires = None
        return self._record(TransitionKind.UNSHELVED, before, expires, SYSTEM, "shelving time expired")

    def enable(self, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        """OPC UA Part 9, 5.5.4 Enable."""
        _aware(time, "time")
        if self.enabled:
            raise self._refuse(AlarmStateReason.ALREADY_ENABLED, "is enabled already")
        before = self.state
        self.enabled = True
        return self._record(TransitionKind.ENABLED, before, time, user, comment)

    def disable(self, user: str, time: datetime, comment: str | None = None) -> AlarmTransition:
        """OPC UA Part 9, 5.5.4 Disable: the alarm forgets its condition (inactive, acknowledged, unshelved)."""
        _aware(time, "time")
        if not self.enabled:
            raise self._refuse(AlarmStateReason.ALREADY_DISABLED, "is disabled already")
        before = self.state
        self.enabled = False
        self.active = False
        self.acknowledged = True
        self.confirmed = True
        self.limit_state = None
        self.shelving = Shelving.UNSHELVED
        self.shelving_expires = None
        return self._record(TransitionKind.DISABLED, before, time, user, comment)

    def _set_comment(self, user: str, time: datetime, comment: str | None) -> None:
        if comment is not None:
            self.comment = comment
            self.comment_user = user
            self.comment_time = time

    # -- persistence ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data for the database; ``from_dict`` restores it."""
        return {
            "name": self.name,
            **self.state.fields_dict(),
            "message": self.message,
            "comment": self.comment,
            "commentUser": self.comment_user,
            "commentTime": _time_text(self.comment_time),
            "lastChange": _time_text(self.last_change),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take over the state kept by ``to_dict``; the rule's settings (confirmation, shelving limit) stay.

        Kept data that does not fit raises ``ValueError`` naming the alarm, and changes nothing.
        """
        if data.get("name") != self.name:
            raise ValueError(f"alarm state of {data.get('name')!r} given to alarm {self.name!r}")
        try:
            values = {
                "enabled": _flag(data["enabled"]),
                "active": _flag(data["active"]),
                "acknowledged": _flag(data["acknowledged"]),
                "confirmed": _flag(data["confirmed"]) or not self.requires_confirmation,
                "shelving": Shelving(data["shelving"]),
                "shelving_expires": _parse_time(data.get("shelvingExpires")),
                "limit_state": LimitState(data["limitState"]) if data.get("limitState") is not None else None,
                "severity": _severity(data["severity"]),
                "message": _text(data.get("message")) or "",
                "comment": _text(data.get("comment")),
                "comment_user": _text(data.get("commentUser")),
                "comment_time": _parse_time(data.get("commentTime")),
                "last_change": _parse_time(data.get("lastChange")),
            }
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"kept state of alarm {self.name!r} is not valid: {error!r}") from None
        for attribute, value in values.items():
            setattr(self, attribute, value)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        requires_confirmation: bool = False,
        max_shelve_time: timedelta | None = None,
    ) -> Alarm:
        alarm = cls(
            str(data["name"]),
            int(data["severity"]),
            requires_confirmation=requires_confirmation,
            max_shelve_time=max_shelve_time,
        )
        alarm.restore(data)
        return alarm


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not a boolean: {value!r}")
    return value


def _severity(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise ValueError(f"not a severity 1..1000: {value!r}")
    return value


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"not a text: {value!r}")
    return value


def _parse_time(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    return _aware(datetime.fromisoformat(text), "a kept time")

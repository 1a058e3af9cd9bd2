"""The alarms as the edges see them: the interface between the alarm service and its projections.

``runtime.analytics.AlarmService`` implements ``AlarmSource``; the OPC UA Alarms & Conditions
projection (``opcua/alarms.py``), the REST routes (``api/alarms.py``) and the MQTT events read the
alarms and call the operator actions through it, so that none of them imports the runtime.

Contract:

* ``alarms()`` gives every alarm (one per rule, named like the rule) in its current state;
  ``rule_of(name)`` its rule (element binding, kind, limits). Unknown names raise
  ``errors.NotFoundError``.
* ``subscribe(listener)`` calls ``listener(alarm, transition)`` on the event loop after each
  transition is durable (in the database and the audit log), in order; it returns the function that
  unsubscribes. A listener that raises is logged and does not stop the others.
* The operator actions run on the event loop, are durable when they return, and return the
  transition. An action that does not fit the alarm's state raises ``analytics.alarms.AlarmStateError``
  (its ``reason`` maps to OPC UA status codes and HTTP 409); an unknown alarm ``NotFoundError``.
  ``shelve`` with ``duration=None`` (seconds otherwise) is one-shot shelving; ``kind`` must agree
  (``Shelving.ONE_SHOT`` without a duration, ``Shelving.TIMED`` with one), else ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aas_server.analytics.alarms import Alarm, AlarmTransition, Shelving
from aas_server.analytics.rules import AnyRule

AlarmListener = Callable[[Alarm, AlarmTransition], None]


class AlarmSource(Protocol):
    """The alarms and their operator actions (see the module docstring for the contract)."""

    def alarms(self) -> list[Alarm]: ...

    def rule_of(self, alarm_id: str) -> AnyRule: ...

    def subscribe(self, listener: AlarmListener) -> Callable[[], None]: ...

    async def acknowledge(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition: ...

    async def confirm(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition: ...

    async def add_comment(self, alarm_id: str, user: str, comment: str) -> AlarmTransition: ...

    async def shelve(
        self, alarm_id: str, user: str, kind: Shelving, duration: float | None, comment: str | None
    ) -> AlarmTransition: ...

    async def unshelve(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition: ...

    async def disable(self, alarm_id: str, user: str, comment: str | None) -> AlarmTransition: ...

    async def enable(self, alarm_id: str, user: str, comment: str | None) -> list[AlarmTransition]:
        """Enable an alarm; if its condition holds already it becomes active too (a second transition)."""
        ...

"""ISO 22400-2 KPIs of an asset over a window, and their roll-up to process and plant.

Input: the asset's ``MachineStateModel`` (calendar, ideal cycle time), its state timeline and its
counter increments (``aas_server.analytics.states.StateRecorder``), and a window ``[start, end)``.

Times (ISO 22400-2:2014, section 5; ids as in the standard):

* POT, planned operation time: window time inside shifts;
* PDOT, planned downtime: breaks and planned stops inside POT;
* PBT, planned busy time: POT - PDOT;
* APT, actual production time: PBT time in state ``running``;
* ADOT, actual unit downtime: PBT time in state ``down`` (split by reason in ``downtime_by_reason``);
* idle time: PBT time in state ``idle``; unknown time: PBT time in state ``unknown`` (no data).

Quantities: PQ, produced quantity, and GQ, good quantity (PQ - scrap where a scrap counter is
declared), from the counter increments whose time lies in PBT time in a known state and that do
not span a gap of the counter's quality. The others are reported as ``unattributed_quantity``.

KPIs: availability = APT / PBT; effectiveness (performance) = PRI x PQ / APT with PRI the ideal
cycle time; quality ratio = GQ / PQ; OEE = availability x effectiveness x quality ratio;
MTBF = APT / FE and MTTR = ADOT / FE, FE (failure events) the number of down episodes (maximal
runs of ``down``) that overlap PBT in the window. A KPI whose denominator is 0 is None.

Unknown time (the device unreachable) is taken out of PBT for the ratios: the KPIs describe the
observed part of the window, ``coverage`` says how much that is, and the parts counted across the
outage are unattributed. See docs/analytics.md for why.

Left out: setup time (AUST), delay time (ADET), rework, the ISO FE+1 form of MTBF.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aas_server.analytics.states import (
    CountIncrement,
    MachineState,
    MachineStateModel,
    Period,
    ShiftCalendar,
)

ZERO = timedelta(0)


class WindowKind(enum.StrEnum):
    CURRENT_SHIFT = "current_shift"
    LAST_HOUR = "last_hour"
    LAST_24_HOURS = "last_24_hours"


@dataclass(frozen=True, slots=True)
class Window:
    kind: str
    start: datetime
    end: datetime


def window(kind: WindowKind, calendar: ShiftCalendar, now: datetime) -> Window | None:
    """The window of ``kind`` ending at ``now``; the current shift is None between shifts."""
    if kind is WindowKind.LAST_HOUR:
        return Window(kind.value, now - timedelta(hours=1), now)
    if kind is WindowKind.LAST_24_HOURS:
        return Window(kind.value, now - timedelta(hours=24), now)
    shift = calendar.current_shift(now)
    return None if shift is None else Window(f"{kind.value}:{shift.name}", shift.start, now)


@dataclass(frozen=True, slots=True)
class Kpis:
    """Times and quantities of one asset (or a roll-up) over one window, and the KPIs derived from them."""

    name: str
    window: Window
    planned_operation_time: timedelta = ZERO
    planned_downtime: timedelta = ZERO
    actual_production_time: timedelta = ZERO
    actual_downtime: timedelta = ZERO
    idle_time: timedelta = ZERO
    unknown_time: timedelta = ZERO
    ideal_production_time: timedelta = ZERO
    """PRI x PQ summed over assets: what makes effectiveness add up across assets."""
    produced_quantity: int = 0
    good_quantity: int = 0
    unattributed_quantity: int = 0
    failure_events: int = 0
    downtime_by_reason: dict[str, timedelta] = field(default_factory=dict)

    @property
    def planned_busy_time(self) -> timedelta:
        """PBT = POT - PDOT, unknown time included."""
        return self.planned_operation_time - self.planned_downtime

    @property
    def observed_busy_time(self) -> timedelta:
        """PBT without unknown time: the denominator of availability."""
        return self.planned_busy_time - self.unknown_time

    @property
    def coverage(self) -> float | None:
        return _ratio(self.observed_busy_time, self.planned_busy_time)

    @property
    def availability(self) -> float | None:
        return _ratio(self.actual_production_time, self.observed_busy_time)

    @property
    def effectiveness(self) -> float | None:
        return _ratio(self.ideal_production_time, self.actual_production_time)

    @property
    def quality_ratio(self) -> float | None:
        return self.good_quantity / self.produced_quantity if self.produced_quantity else None

    @property
    def oee(self) -> float | None:
        availability, effectiveness, quality_ratio = self.availability, self.effectiveness, self.quality_ratio
        if availability is None or effectiveness is None or quality_ratio is None:
            return None
        return availability * effectiveness * quality_ratio

    @property
    def mtbf(self) -> timedelta | None:
        return self.actual_production_time / self.failure_events if self.failure_events else None

    @property
    def mttr(self) -> timedelta | None:
        return self.actual_downtime / self.failure_events if self.failure_events else None


def compute(
    model: MachineStateModel,
    timeline: Sequence[Period],
    increments: Sequence[CountIncrement],
    span: Window,
) -> Kpis:
    """The KPIs of one asset over ``span`` (definitions in the module docstring).

    ``timeline`` is the device-state timeline (``StateRecorder.timeline``); time it does not cover
    counts as unknown.
    """
    schedule = model.calendar.periods(span.start, span.end)
    busy = [period for period in schedule if period.state is MachineState.RUNNING]
    totals: dict[MachineState, timedelta] = {}
    reasons: dict[str, timedelta] = {}
    known: list[tuple[datetime, datetime]] = []
    covered = ZERO
    for period in timeline:
        for begin, finish in _overlaps(period, busy):
            length = finish - begin
            covered += length
            totals[period.state] = totals.get(period.state, ZERO) + length
            if period.state is MachineState.DOWN:
                reasons[period.reason] = reasons.get(period.reason, ZERO) + length
            if period.state is not MachineState.UNKNOWN:
                known.append((begin, finish))
    busy_time = sum((period.duration for period in busy), ZERO)
    produced = good = scrap = unattributed = 0
    for item in increments:
        if not span.start <= item.time < span.end:
            continue
        counted = not item.across_gap and _inside(known, item.time)
        if not counted:
            unattributed += item.quantity if item.counter == "produced" else 0
        elif item.counter == "produced":
            produced += item.quantity
        elif item.counter == "good":
            good += item.quantity
        else:
            scrap += item.quantity
    if model.good is None:
        good = max(produced - scrap, 0)
    return Kpis(
        name=model.asset,
        window=span,
        planned_operation_time=sum((period.duration for period in schedule), ZERO),
        planned_downtime=sum(
            (period.duration for period in schedule if period.state is MachineState.PLANNED_STOP), ZERO
        ),
        actual_production_time=totals.get(MachineState.RUNNING, ZERO),
        actual_downtime=totals.get(MachineState.DOWN, ZERO),
        idle_time=totals.get(MachineState.IDLE, ZERO),
        unknown_time=totals.get(MachineState.UNKNOWN, ZERO) + (busy_time - covered),
        ideal_production_time=timedelta(seconds=model.ideal_cycle_time) * produced,
        produced_quantity=produced,
        good_quantity=good,
        unattributed_quantity=unattributed,
        failure_events=_failure_events(timeline, busy),
        downtime_by_reason=reasons,
    )


def roll_up(name: str, parts: Sequence[Kpis]) -> Kpis:
    """The KPIs of a process or plant: times and quantities summed, ratios recomputed from the sums.

    Not the average of the parts' ratios: an asset that was planned for longer, or made more parts,
    weighs more, as ISO 22400-2 computes a work centre from its work units' times and quantities.
    """
    if not parts:
        raise ValueError(f"{name}: nothing to roll up")
    windows = {(part.window.start, part.window.end) for part in parts}
    if len(windows) != 1:
        raise ValueError(f"{name}: the parts cover different windows")
    reasons: dict[str, timedelta] = {}
    for part in parts:
        for reason, length in part.downtime_by_reason.items():
            reasons[reason] = reasons.get(reason, ZERO) + length
    return Kpis(
        name=name,
        window=parts[0].window,
        planned_operation_time=sum((part.planned_operation_time for part in parts), ZERO),
        planned_downtime=sum((part.planned_downtime for part in parts), ZERO),
        actual_production_time=sum((part.actual_production_time for part in parts), ZERO),
        actual_downtime=sum((part.actual_downtime for part in parts), ZERO),
        idle_time=sum((part.idle_time for part in parts), ZERO),
        unknown_time=sum((part.unknown_time for part in parts), ZERO),
        ideal_production_time=sum((part.ideal_production_time for part in parts), ZERO),
        produced_quantity=sum(part.produced_quantity for part in parts),
        good_quantity=sum(part.good_quantity for part in parts),
        unattributed_quantity=sum(part.unattributed_quantity for part in parts),
        failure_events=sum(part.failure_events for part in parts),
        downtime_by_reason=reasons,
    )


def _ratio(numerator: timedelta, denominator: timedelta) -> float | None:
    return numerator / denominator if denominator > ZERO else None


def _inside(spans: Sequence[tuple[datetime, datetime]], moment: datetime) -> bool:
    """Whether ``moment`` lies in one of ``spans`` (sorted, not overlapping)."""
    index = bisect.bisect_right(spans, moment, key=lambda span: span[0]) - 1
    return index >= 0 and spans[index][0] <= moment < spans[index][1]


def _overlaps(period: Period, busy: Sequence[Period]) -> list[tuple[datetime, datetime]]:
    found = []
    for slot in busy:
        begin, finish = max(period.start, slot.start), min(period.end, slot.end)
        if begin < finish:
            found.append((begin, finish))
    return found


def _failure_events(timeline: Sequence[Period], busy: Sequence[Period]) -> int:
    count = 0
    in_episode = False
    episode_counted = False
    for period in timeline:
        if period.state is not MachineState.DOWN:
            in_episode = False
            continue
        if not in_episode:
            in_episode, episode_counted = True, False
        if not episode_counted and _overlaps(period, busy):
            count += 1
            episode_counted = True
    return count

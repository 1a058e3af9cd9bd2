"""Machine states of an asset, derived from its mapped signals, and the shift calendar they are read against.

A ``MachineStateModel`` is declared per asset (pydantic, validated once, house rule 3). It names the
signals that say what the machine is doing (a speed above a threshold, a fault word whose codes map
to reason texts, a line-running flag) and the shift calendar that says when it is meant to produce
(shifts that may cross midnight, breaks, one-off planned stops, in a named time zone).

The state at an instant, from the latest sample of each signal (``derive_state``), first match wins:

1. any declared signal never seen or of bad quality: ``unknown`` (reason ``no data``);
2. fault word not equal to its no-fault value: ``down``, reason from the code table
   (``fault code <n>`` for a code the table does not know);
3. speed above its threshold and the line-running flag set (each where declared): ``running``;
4. otherwise ``idle`` (stopped without a fault: starved, blocked, waiting).

``planned stop`` is not derived from signals: it comes from the calendar (breaks, planned stops),
and wins over the device state when KPIs are computed (``aas_server.analytics.kpi``). Time outside
every shift is not planned operation time (ISO 22400-2 POT) and is not counted at all.

``StateRecorder`` turns a time-ordered stream of signal samples into a timeline of state intervals
and counter increments: the input the KPI functions read. It does no I/O.

Left out: ISO 22400-2 setup time (AUST) and delay time (ADET) as their own states; a machine that
produces during a break (its time counts as the planned stop, its parts as unattributed).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NO_DATA = "no data"

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineState(enum.StrEnum):
    """What a machine is doing; ``planned_stop`` comes from the calendar, the others from its signals."""

    RUNNING = "running"
    IDLE = "idle"
    DOWN = "down"
    PLANNED_STOP = "planned_stop"
    UNKNOWN = "unknown"
    """The device is unreachable or a signal's quality is bad: neither running nor down."""


class SignalRef(StrictModel):
    """A submodel element feeding the state model, as the change bus names it (``ValueChanged``)."""

    submodel_id: Annotated[str, Field(min_length=1)]
    id_short_path: Annotated[str, Field(min_length=1)]


class SpeedSignal(StrictModel):
    signal: SignalRef
    running_above: Annotated[float, Field(allow_inf_nan=False)]
    """The machine runs when the speed is strictly above this value."""


class FaultWord(StrictModel):
    signal: SignalRef
    no_fault: int = 0
    reasons: dict[int, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    """Fault code -> reason text (the downtime reason reported by the KPIs)."""

    def reason(self, code: int) -> str:
        return self.reasons.get(code, f"fault code {code}")


class CounterSpec(StrictModel):
    """A cumulative device counter (ISO 22400-2 quantities are taken from its increments).

    A drop of the raw value is a wrap when ``modulus`` is set and the difference across the wrap,
    ``raw + modulus - previous``, is at most ``max_increment``; the increment is that difference.
    Any other drop is a reset: the counter restarted from zero, so the increment is ``raw``.
    """

    signal: SignalRef
    modulus: Annotated[int, Field(ge=2)] | None = None
    """The value at which the counter wraps to 0 (65536 for a 16-bit register)."""
    max_increment: Annotated[int, Field(ge=1)] | None = None
    """The largest plausible increment between two samples; default half the modulus."""

    @model_validator(mode="after")
    def _increment_below_modulus(self) -> CounterSpec:
        if self.max_increment is not None and self.modulus is None:
            raise ValueError("max_increment is only used with modulus")
        if self.max_increment is not None and self.modulus is not None and self.max_increment >= self.modulus:
            raise ValueError(f"max_increment ({self.max_increment}) must be below modulus ({self.modulus})")
        return self

    @property
    def wrap_limit(self) -> int:
        assert self.modulus is not None
        return self.max_increment if self.max_increment is not None else self.modulus // 2


class Break(StrictModel):
    """A recurring planned stop inside a shift, at wall-clock times (a meal break, a cleaning slot)."""

    name: Annotated[str, Field(min_length=1)]
    start: time
    end: time


class Shift(StrictModel):
    """A shift at wall-clock times; ``end`` at or before ``start`` means it ends the next day."""

    name: Annotated[str, Field(min_length=1)]
    start: time
    end: time
    weekdays: frozenset[Annotated[int, Field(ge=0, le=6)]] = frozenset(range(7))
    """The days (Monday 0 ... Sunday 6) on which the shift starts."""
    breaks: tuple[Break, ...] = ()

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give the wall-clock time without offset; the calendar's timezone applies")
        return value

    @model_validator(mode="after")
    def _breaks_inside(self) -> Shift:
        length = _minutes_between(self.start, self.end) or 24 * 60
        for index, item in enumerate(self.breaks):
            offset = _minutes_between(self.start, item.start)
            duration = _minutes_between(item.start, item.end)
            if duration == 0 or offset + duration > length:
                raise ValueError(f"breaks[{index}] ({item.name}) does not lie inside the shift {self.name}")
        return self

    def length(self) -> timedelta:
        return timedelta(minutes=_minutes_between(self.start, self.end) or 24 * 60)


class PlannedStop(StrictModel):
    """A one-off planned stop (maintenance, no orders), at absolute, timezone-aware times."""

    reason: Annotated[str, Field(min_length=1)]
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _aware_and_ordered(self) -> PlannedStop:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a UTC offset")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time span ``[start, end)`` with what the calendar or the device says about it."""

    start: datetime
    end: datetime
    state: MachineState
    reason: str = ""

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ShiftOccurrence:
    name: str
    start: datetime
    end: datetime


class ShiftCalendar(StrictModel):
    """When an asset is meant to produce: ISO 22400-2 planned operation time (POT) and planned downtime (PDOT)."""

    timezone: Annotated[str, Field(min_length=1)] = "UTC"
    shifts: tuple[Shift, ...] = Field(min_length=1)
    planned_stops: tuple[PlannedStop, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {value!r}") from error
        return value

    @field_validator("shifts")
    @classmethod
    def _unique_names(cls, value: tuple[Shift, ...]) -> tuple[Shift, ...]:
        names = [shift.name for shift in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two shifts are named {name!r}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def occurrences(self, start: datetime, end: datetime) -> list[ShiftOccurrence]:
        """Every shift occurrence overlapping ``[start, end)``, in time order (UTC datetimes)."""
        _require_aware(start, end)
        zone = self.zone
        first = start.astimezone(zone).date() - timedelta(days=2)
        last = end.astimezone(zone).date()
        found: list[ShiftOccurrence] = []
        for day in _days(first, last):
            for shift in self.shifts:
                if day.weekday() not in shift.weekdays:
                    continue
                begin = _at(day, shift.start, zone)
                finish = _at(day + timedelta(days=1 if shift.end <= shift.start else 0), shift.end, zone)
                if begin < end and finish > start:
                    found.append(ShiftOccurrence(shift.name, begin, finish))
        return sorted(found, key=lambda item: item.start)

    def current_shift(self, now: datetime) -> ShiftOccurrence | None:
        """The shift occurrence that contains ``now``, or None between shifts."""
        for occurrence in self.occurrences(now, now + timedelta(microseconds=1)):
            if occurrence.start <= now < occurrence.end:
                return occurrence
        return None

    def periods(self, start: datetime, end: datetime) -> list[Period]:
        """``[start, end)`` cut into scheduled (``running`` marks production time) and planned-stop periods.

        Time outside every shift is left out. Overlapping shifts count once.
        """
        zone = self.zone
        scheduled: list[tuple[datetime, datetime]] = []
        stops: list[tuple[datetime, datetime, str]] = []
        for occurrence in self.occurrences(start, end):
            scheduled.append((occurrence.start, occurrence.end))
            shift = next(item for item in self.shifts if item.name == occurrence.name)
            local_start = occurrence.start.astimezone(zone)
            for item in shift.breaks:
                day = local_start.date()
                if item.start < shift.start:
                    day += timedelta(days=1)
                begin = _at(day, item.start, zone)
                finish = _at(day + timedelta(days=1 if item.end <= item.start else 0), item.end, zone)
                stops.append((begin, finish, item.name))
        stops.extend((stop.start, stop.end, stop.reason) for stop in self.planned_stops)
        result: list[Period] = []
        for begin, finish in _union(scheduled):
            begin, finish = max(begin, start), min(finish, end)
            if begin >= finish:
                continue
            for piece_start, piece_end, reason in _split_by_stops(begin, finish, stops):
                state = MachineState.PLANNED_STOP if reason else MachineState.RUNNING
                result.append(Period(piece_start, piece_end, state, reason))
        return result


class MachineStateModel(StrictModel):
    """How one asset's state and production counts are read from its signals (ISO 22400-2 work unit)."""

    asset: Annotated[str, Field(min_length=1)]
    """The asset (shell) id this model belongs to."""
    calendar: ShiftCalendar
    ideal_cycle_time: Seconds
    """Seconds per part at rated speed (ISO 22400-2 PRI, planned runtime per item; from Technical Data)."""
    speed: SpeedSignal | None = None
    line_running: SignalRef | None = None
    """A boolean signal, true while the line runs."""
    fault: FaultWord | None = None
    produced: CounterSpec
    good: CounterSpec | None = None
    scrap: CounterSpec | None = None

    @model_validator(mode="after")
    def _signals_given(self) -> MachineStateModel:
        if self.speed is None and self.line_running is None:
            raise ValueError("give speed, line_running or both: something must say when the machine runs")
        if self.good is not None and self.scrap is not None:
            raise ValueError("give good or scrap, not both")
        return self

    def state_signals(self) -> list[SignalRef]:
        """The signals ``derive_state`` reads."""
        speed = self.speed.signal if self.speed else None
        fault = self.fault.signal if self.fault else None
        found = [speed, self.line_running, fault]
        return [item for item in found if item is not None]

    def counters(self) -> dict[str, CounterSpec]:
        found = {"produced": self.produced, "good": self.good, "scrap": self.scrap}
        return {name: spec for name, spec in found.items() if spec is not None}


@dataclass(frozen=True, slots=True)
class Sample:
    """One signal value as the change bus delivers it."""

    signal: SignalRef
    value: object
    time: datetime
    good: bool = True


def derive_state(model: MachineStateModel, latest: Mapping[SignalRef, Sample]) -> tuple[MachineState, str]:
    """The device state and its reason from the latest sample of each signal (rules in the module docstring)."""
    for signal in model.state_signals():
        sample = latest.get(signal)
        if sample is None or not sample.good or sample.value is None:
            return MachineState.UNKNOWN, NO_DATA
    if model.fault is not None:
        code = _as_int(latest[model.fault.signal].value)
        if code != model.fault.no_fault:
            return MachineState.DOWN, model.fault.reason(code)
    running = True
    if model.speed is not None:
        running = _as_float(latest[model.speed.signal].value) > model.speed.running_above
    if model.line_running is not None:
        running = running and bool(latest[model.line_running].value)
    return (MachineState.RUNNING, "") if running else (MachineState.IDLE, "")


@dataclass(frozen=True, slots=True)
class CountIncrement:
    """Parts counted between two samples of a counter, at the time of the later sample."""

    counter: str
    time: datetime
    quantity: int
    across_gap: bool = False
    """The increment spans a time the counter was of bad quality: when the parts came is not known."""


@dataclass(slots=True)
class CounterState:
    """The running state of one cumulative counter: the last good raw value, and whether a gap followed it."""

    spec: CounterSpec
    previous: int | None = None
    gap: bool = False

    def update(self, raw: object, good: bool) -> int | None:
        """The increment this sample brings (None for the first value, or a bad sample)."""
        if not good or raw is None:
            self.gap = self.previous is not None or self.gap
            return None
        value = _as_int(raw)
        previous, self.previous = self.previous, value
        if previous is None:
            return None
        if value >= previous:
            return value - previous
        if self.spec.modulus is not None and value + self.spec.modulus - previous <= self.spec.wrap_limit:
            return value + self.spec.modulus - previous
        return value


@dataclass(slots=True)
class StateRecorder:
    """Turns an asset's time-ordered samples into state periods and counter increments.

    Samples of signals the model does not name are ignored. The change bus keeps each element's order,
    not the order across devices: a sample older than the latest one seen is taken at that latest
    time (its state change or parts are booked late by the skew, never lost, never rewrite the past)
    and counted in ``late_samples``.
    ``prune`` drops what lies before a time (keep the longest KPI window plus the longest shift).
    """

    model: MachineStateModel
    started: datetime
    periods: list[Period] = field(default_factory=list)
    increments: list[CountIncrement] = field(default_factory=list)
    late_samples: int = 0
    _latest: dict[SignalRef, Sample] = field(default_factory=dict)
    _state: tuple[MachineState, str] = (MachineState.UNKNOWN, NO_DATA)
    _since: datetime | None = None
    _last: datetime | None = None
    _counters: dict[SignalRef, tuple[str, CounterState]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_aware(self.started)
        self._since = self._last = self.started
        self._counters = {spec.signal: (name, CounterState(spec)) for name, spec in self.model.counters().items()}

    def add(self, sample: Sample) -> None:
        _require_aware(sample.time)
        assert self._last is not None
        if sample.time < self._last:
            self.late_samples += 1
            sample = Sample(sample.signal, sample.value, self._last, sample.good)
        self._last = sample.time
        counter = self._counters.get(sample.signal)
        if counter is not None:
            name, state = counter
            gap = state.gap
            quantity = state.update(sample.value, sample.good)
            if quantity is not None:
                state.gap = False
                self.increments.append(CountIncrement(name, sample.time, quantity, across_gap=gap))
        if sample.signal in self.model.state_signals():
            self._latest[sample.signal] = sample
            new = derive_state(self.model, self._latest)
            if new != self._state:
                self._close(sample.time)
                self._state = new

    def timeline(self, until: datetime) -> list[Period]:
        """The recorded periods, with the current state's open period closed at ``until``."""
        assert self._since is not None
        current = [Period(self._since, until, *self._state)] if until > self._since else []
        return [*self.periods, *current]

    @property
    def state(self) -> tuple[MachineState, str]:
        return self._state

    def prune(self, before: datetime) -> None:
        self.periods = [period for period in self.periods if period.end > before]
        self.increments = [item for item in self.increments if item.time >= before]

    def _close(self, at: datetime) -> None:
        assert self._since is not None
        if at > self._since:
            self.periods.append(Period(self._since, at, *self._state))
        self._since = at


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _as_float(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def _minutes_between(start: time, end: time) -> int:
    return ((end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)) % (24 * 60)


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _at(day: date, wall: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def _require_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None:
            raise ValueError(f"{moment} has no UTC offset; the analytics work on timezone-aware times")


def _union(spans: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for begin, finish in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


def _split_by_stops(
    start: datetime, end: datetime, stops: Sequence[tuple[datetime, datetime, str]]
) -> list[tuple[datetime, datetime, str]]:
    """``[start, end)`` cut at the planned stops; a piece inside a stop carries its reason, others ''."""
    cuts = {start, end}
    for begin, finish, _ in stops:
        cuts.update(moment for moment in (begin, finish) if start < moment < end)
    ordered = sorted(cuts)
    pieces: list[tuple[datetime, datetime, str]] = []
    for begin, finish in itertools.pairwise(ordered):
        reason = next((name for stop_start, stop_end, name in stops if stop_start <= begin and finish <= stop_end), "")
        if pieces and pieces[-1][2] == reason and pieces[-1][1] == begin:
            pieces[-1] = (pieces[-1][0], finish, reason)
        else:
            pieces.append((begin, finish, reason))
    return pieces

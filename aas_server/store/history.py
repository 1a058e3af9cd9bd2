"""History of mapped values: what the edges read (``HistorySource``), its plain data, and pure helpers.

Every change of a device-fed (mapped) Property is recorded as a sample: value, source time, server
time, quality and reason. REST (``api/history.py``), OPC UA HistoryRead (``opcua/history.py``) and
the IDTA 02008 Time Series Data submodels (``model/timeseries.py``) read it through
:class:`HistorySource`; ``persistence/history.py`` stores it and ``runtime/history.py`` records it.

Samples are ordered by source time, ties by the order in which they were recorded (``sequence``).
A time range is half-open, ``[start, end)``, as OPC 10000-11 §4.4 reads raw history forwards.
Aggregates (min, max, avg, count, first, last) are taken over the samples of an interval whose
quality is not bad and that carry a value; min, max and avg over numeric (and boolean) values only.

Downsampling (:class:`Downsampler`) keeps the last value of each interval: the first change of an
element opens an interval of ``minimum_interval`` seconds, later changes in it replace the held
sample, and the held sample is recorded when the interval ends; a change of quality is recorded at
once (after the held sample, so no value is lost).
"""

from __future__ import annotations

import decimal
import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from basyx.aas.model import datatypes

from aas_server.errors import InvalidRequestError
from aas_server.model.events import Quality, QualityReason, ValueChanged

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT64 = 2**63


def to_microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of a timezone-aware ``datetime`` (how the history stores times)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return (moment - EPOCH) // _MICROSECOND


def from_microseconds(microseconds: int) -> datetime:
    """The UTC ``datetime`` of microseconds since 1970-01-01."""
    return EPOCH + timedelta(microseconds=microseconds)


class Aggregate(enum.Enum):
    """What is computed per interval (OPC 10000-13 §5.4: Minimum, Maximum, Average, Count, Start, End)."""

    MIN = "min"
    MAX = "max"
    AVG = "avg"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class SampleKey:
    """A sample's place in the order of its series; a cursor points just after it."""

    source_time: int
    """Microseconds since 1970-01-01 UTC."""
    sequence: int

    def to_cursor(self) -> str:
        return f"{self.source_time}:{self.sequence}"

    @classmethod
    def from_cursor(cls, text: str) -> SampleKey:
        """Parse ``<microseconds>:<sequence>``; ``InvalidRequestError`` if it is not one."""
        head, separator, tail = text.partition(":")
        try:
            if not separator:
                raise ValueError(text)
            return cls(int(head), int(tail))
        except ValueError:
            raise InvalidRequestError("the cursor does not name a place in this history") from None


@dataclass(frozen=True, slots=True)
class HistorySample:
    """One recorded value of an element."""

    value: Any
    """The native Python value of the element's ``valueType``; for a bad sample the last value kept."""
    source_time: datetime
    server_time: datetime
    quality: Quality
    reason: QualityReason
    sequence: int

    @property
    def key(self) -> SampleKey:
        return SampleKey(to_microseconds(self.source_time), self.sequence)


@dataclass(frozen=True, slots=True)
class RawQuery:
    """A read of an element's recorded samples: those with ``start <= source time < end`` in time order
    (``reverse``: newest first, then the range is ``end < source time <= start``); at most ``limit``,
    continuing after ``after``. ``None`` bounds are open."""

    submodel_id: str
    id_short_path: str
    start: datetime | None
    end: datetime | None
    limit: int
    after: SampleKey | None = None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """A read of an element's aggregates: one row per interval of ``interval`` from ``start`` (``None``: the
    first sample) to ``end`` (``None``: now), empty intervals included; at most ``limit`` rows."""

    submodel_id: str
    id_short_path: str
    start: datetime | None
    end: datetime | None
    interval: timedelta
    aggregates: Sequence[Aggregate]
    limit: int


@dataclass(frozen=True, slots=True)
class SamplePage:
    """Samples in order and, when more follow, the key of the last one (continue after it)."""

    samples: list[HistorySample]
    next_after: SampleKey | None = None


@dataclass(frozen=True, slots=True)
class IntervalAggregate:
    """The aggregates of one interval ``[start, end)``; a value is ``None`` where no sample contributed."""

    start: datetime
    end: datetime
    count: int
    minimum: Any = None
    maximum: Any = None
    average: float | None = None
    first: Any = None
    last: Any = None

    def value_of(self, aggregate: Aggregate) -> Any:
        return {
            Aggregate.MIN: self.minimum,
            Aggregate.MAX: self.maximum,
            Aggregate.AVG: self.average,
            Aggregate.COUNT: self.count,
            Aggregate.FIRST: self.first,
            Aggregate.LAST: self.last,
        }[aggregate]


@dataclass(frozen=True, slots=True)
class AggregatePage:
    """Intervals in time order and, when more follow, the start of the next one."""

    intervals: list[IntervalAggregate]
    next_start: datetime | None = None


class HistorySource(Protocol):
    """The recorded history as REST and OPC UA read it. Answers include every change published before the call."""

    def is_recorded(self, submodel_id: str, id_short_path: str) -> bool:
        """Whether the element's changes are recorded (a mapped Property)."""
        ...

    async def read_raw(self, query: RawQuery) -> SamplePage:
        """The samples ``query`` asks for (see ``RawQuery``)."""
        ...

    async def read_aggregates(self, query: AggregateQuery) -> AggregatePage:
        """The rows ``query`` asks for (see ``AggregateQuery``)."""
        ...


# --- values as stored ------------------------------------------------------------------------------


def storable_value(value: Any) -> int | float | str | None:
    """A value as the history stores it: numbers and booleans natively (so they aggregate), the rest lexical."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value) if -_INT64 <= value < _INT64 else datatypes.xsd_repr(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else datatypes.xsd_repr(value)
    return datatypes.xsd_repr(value)


def typed_value(stored: Any, value_type: Any) -> Any:
    """The native value of ``value_type`` for a stored value (the inverse of :func:`storable_value`)."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return datatypes.from_xsd(stored, value_type)
    if value_type is bool:
        return bool(stored)
    if issubclass(value_type, decimal.Decimal):
        return decimal.Decimal(str(stored))
    return value_type(stored)


def value_type_name(value: Any, fallback: str = "xs:string") -> str:
    """The XSD name of a value's type (for a series whose element's ``valueType`` is not known)."""
    return datatypes.XSD_TYPE_NAMES.get(type(value), fallback)


def value_type_of(name: str) -> Any:
    """The basyx value type class of an XSD name (``xs:double`` → ``float``); ``str`` for unknown names."""
    return datatypes.XSD_TYPE_CLASSES.get(name, str)


# --- request parameters -------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?!$)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_interval(text: str) -> timedelta:
    """An interval given as seconds (``60``, ``0.5``) or an ISO 8601 duration without years and months
    (``PT1M``, ``P1D``, ``PT0.25S``); ``InvalidRequestError`` unless it is positive."""
    stripped = text.strip()
    seconds: float
    try:
        seconds = float(stripped)
    except ValueError:
        match = _DURATION.match(stripped.upper())
        if match is None:
            raise InvalidRequestError(
                f"interval {text!r} is neither seconds nor an ISO 8601 duration such as PT1M (years and months "
                "are not fixed lengths; use days)"
            ) from None
        parts = {name: float(value) for name, value in match.groupdict().items() if value is not None}
        seconds = (
            parts.get("weeks", 0) * 604_800
            + parts.get("days", 0) * 86_400
            + parts.get("hours", 0) * 3_600
            + parts.get("minutes", 0) * 60
            + parts.get("seconds", 0)
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequestError(f"interval {text!r} must be more than 0 seconds")
    interval = timedelta(seconds=seconds)
    if interval < _MICROSECOND:
        raise InvalidRequestError(f"interval {text!r} is shorter than a microsecond")
    return interval


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 date-time with a time zone (``2025-03-01T12:00:00Z``); ``InvalidRequestError`` otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequestError(
            f"{name}={text!r} is not an RFC 3339 date-time such as 2025-03-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequestError(f"{name}={text!r} has no time zone; add Z or an offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequestError(f"{name}={text!r} is outside the years 0001..9999 in UTC") from None


def parse_aggregates(text: str) -> list[Aggregate]:
    """A comma-separated list of aggregate names (``min,max``); ``InvalidRequestError`` for unknown names."""
    result: list[Aggregate] = []
    for name in text.split(","):
        try:
            aggregate = Aggregate(name.strip().lower())
        except ValueError:
            known = ", ".join(item.value for item in Aggregate)
            raise InvalidRequestError(f"aggregate {name.strip()!r} is not one of {known}") from None
        if aggregate not in result:
            result.append(aggregate)
    return result


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` (``2025-03-01T12:00:00.123456Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- downsampling --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    ends: float
    held: ValueChanged


class Downsampler:
    """At most one sample per element and ``minimum_interval`` (the interval's last), quality changes at once.

    Pure: times are the caller's monotonic clock in seconds. ``offer`` returns the samples to record
    now, ``due`` those whose interval has ended; ``flush_all`` empties it (at shutdown).
    """

    def __init__(self, minimum_interval: float) -> None:
        self.minimum_interval = minimum_interval
        self._windows: dict[tuple[str, str], _Window] = {}
        self._qualities: dict[tuple[str, str], tuple[Quality, QualityReason]] = {}

    def offer(self, change: ValueChanged, now: float) -> list[ValueChanged]:
        key = (change.submodel_id, change.id_short_path)
        quality = (change.quality, change.reason)
        previous_quality = self._qualities.get(key)
        window = self._windows.get(key)
        if self.minimum_interval <= 0:
            self._qualities[key] = quality
            return [change]
        if previous_quality is not None and previous_quality != quality:
            self._qualities[key] = quality
            self._windows.pop(key, None)
            return [window.held, change] if window is not None else [change]
        self._qualities[key] = quality
        if window is not None and now < window.ends:
            window.held = change
            return []
        self._windows[key] = _Window(now + self.minimum_interval, change)
        return [window.held] if window is not None else []

    def due(self, now: float) -> list[ValueChanged]:
        """The held samples whose interval has ended, in the order their intervals end."""
        ended = sorted(
            ((window.ends, key) for key, window in self._windows.items() if window.ends <= now),
            key=lambda item: item[0],
        )
        return [self._windows.pop(key).held for _, key in ended]

    def next_due(self) -> float | None:
        """When the next interval ends (``None``: nothing is held)."""
        return min((window.ends for window in self._windows.values()), default=None)

    def flush_all(self) -> list[ValueChanged]:
        held = [window.held for window in sorted(self._windows.values(), key=lambda window: window.ends)]
        self._windows.clear()
        return held


def interval_starts(start: datetime, end: datetime, interval: timedelta, limit: int) -> list[datetime]:
    """The starts of at most ``limit`` intervals of length ``interval`` from ``start`` before ``end``."""
    starts: list[datetime] = []
    step = 0
    while len(starts) < limit:
        moment = start + interval * step
        if moment >= end:
            break
        starts.append(moment)
        step += 1
    return starts

"""The normalisation chain of one point, both directions, as pure functions over plain data.

A point's declaration (``aas_server.mapping.schema``) is turned once, at load, into a ``Chain``:
plain numbers and flags, with scale, offset and unit conversion folded into one exact ``Affine``
step. The read direction then runs, per decoded device value::

    enum map | (scale and offset -> unit conversion -> limits -> filter) -> deadband -> rate limit

- **enum**: a device integer becomes its name; an integer without a name gives quality ``BAD``,
  reason ``OUT_OF_RANGE``.
- **scale, offset, unit**: ``value * scale + offset`` in the device unit, then pint's factor and
  offset into the target unit (``aas_server.mapping.units``), evaluated as one affine step. When
  they leave the value unchanged (none given, or scale 0.01 with bar to kPa) an integer stays an
  ``int`` (int64 and uint64 values stay exact); otherwise the result is a ``float``.
- **limits** (target unit): outside, ``clamp`` gives the limit with quality ``UNCERTAIN`` (OPC UA
  ``Uncertain_EngineeringUnitsExceeded``), ``bad`` gives no value with quality ``BAD``; both with
  reason ``OUT_OF_RANGE``.
- **filter**: the mean of the last ``window`` values, or a first-order lag
  ``y += (x - y) * (1 - exp(-dt / time_constant))`` with ``dt`` from the source timestamps.
- **deadband**: a value is published when it differs from the last *published* one by more than
  ``absolute``, or ``percent`` of the limits' span (OPC 10000-8, 6.2, AbsoluteDeadband and
  PercentDeadband); a change of quality or reason is always published.
- **rate limit**: at least ``rate_limit`` seconds of source time between two published values; a
  change of quality or reason is always published. A suppressed value is dropped, not sent later.

The write direction is the inverse: enum name -> number, limits check, inverse affine step, and for
integer data types an integral check and the data type's range; every refusal is a
``TypeMismatchError`` that names the point, the value and what it would have needed.

What a point remembers between samples (the last published value, the filter's memory) lives in a
``PointState`` that the engine owns and hands to these functions; they hold no state of their own,
do no I/O and read no clock.

Left out: OPC UA's EURange-based PercentDeadband of the server (the span comes from ``limits``),
a filter over irregular gaps other than through ``dt``, delayed publication of rate-limited values.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from aas_server.errors import TypeMismatchError
from aas_server.mapping import codecs
from aas_server.mapping.schema import (
    AnyPoint,
    BitPoint,
    DataType,
    FirstOrder,
    LimitAction,
    MovingAverage,
    RegisterPoint,
)
from aas_server.mapping.units import exact_conversion
from aas_server.model.events import Quality, QualityReason

Outcome = tuple[Any, Quality, QualityReason]
"""What the read direction gives for one sample: value, quality, reason."""

_GOOD, _UNCERTAIN, _BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
_NO_REASON = QualityReason.NONE
_OUT_OF_RANGE = QualityReason.OUT_OF_RANGE
_RELATIVE_TOLERANCE = 1e-9
_LARGEST_EXACT_DIVISOR = 2**20
_LARGEST_SCALE_DENOMINATOR = 1_000_000
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


# --- the affine step ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Affine:
    """``y = x * factor + offset``, kept exact as fractions and evaluated as ``(x * multiplier + addend) / divisor``.

    With a small common denominator (scale 0.1 is 1/10, °F to °C is 5/9 and -160/9) the multiplier,
    addend and divisor are whole numbers, so integer device values (below 2**53 after multiplying)
    give the correctly rounded result: 235 at scale 0.1 is 23.5, not 23.500000000000004, and
    212 °F is 100 °C exactly.
    """

    factor: Fraction
    offset: Fraction
    multiplier: float
    addend: float
    divisor: float

    @classmethod
    def of(cls, factor: Fraction, offset: Fraction) -> Affine:
        divisor = math.lcm(factor.denominator, offset.denominator)
        if divisor <= _LARGEST_EXACT_DIVISOR:
            try:
                return cls(factor, offset, float(factor * divisor), float(offset * divisor), float(divisor))
            except OverflowError:
                pass
        return cls(factor, offset, float(factor), float(offset), 1.0)

    def __call__(self, value: float) -> float:
        return (value * self.multiplier + self.addend) / self.divisor

    @property
    def is_identity(self) -> bool:
        return self.factor == 1 and self.offset == 0

    def then(self, following: Affine) -> Affine:
        """This step followed by ``following``."""
        return Affine.of(self.factor * following.factor, self.offset * following.factor + following.offset)

    def inverse(self) -> Affine | None:
        """The step that undoes this one; ``None`` when the factor is 0."""
        if self.factor == 0:
            return None
        return Affine.of(1 / self.factor, -self.offset / self.factor)


def _decimal_fraction(number: float) -> Fraction:
    """The fraction a person meant by ``number`` (0.1 -> 1/10) when it rounds back to exactly ``number``."""
    close = Fraction(number).limit_denominator(_LARGEST_SCALE_DENOMINATOR)
    return close if float(close) == number else Fraction(number)


# --- the chain ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chain:
    """One point's normalisation, derived once from its declaration (see ``chain_of``)."""

    point_name: str
    unit: str | None
    """UNECE code of the value after the chain (the target element's unit), for messages."""
    numeric: bool
    """The element value is a number: non-numbers are decoding errors; strings holding numbers are parsed."""
    enum: Mapping[int, str] | None = None
    enum_codes: Mapping[str, int] | None = None
    forward: Affine | None = None
    """Scale, offset and unit conversion; ``None`` when they leave the value unchanged."""
    inverse: Affine | None = None
    """The inverse of ``forward``; ``None`` also when ``forward`` cannot be inverted (scale 0)."""
    lower: float | None = None
    upper: float | None = None
    clamp: bool = True
    window: int = 0
    """Moving-average window; 0 for none."""
    time_constant: float = 0.0
    """First-order time constant in seconds; 0 for none."""
    deadband: float | None = None
    """Absolute deadband in the target unit (a percent deadband is converted at load)."""
    rate_limit: float | None = None
    data_type: DataType | None = None
    """The device's data type, when the protocol states it (Modbus)."""

    @property
    def integer_range(self) -> tuple[int, int] | None:
        return codecs.integer_range(self.data_type) if self.data_type is not None else None

    @property
    def resolution(self) -> float:
        """The step of one device unit in the target unit."""
        return abs(float(self.forward.factor)) if self.forward is not None else 1.0

    def engineering_range(self) -> tuple[float, float] | None:
        """The target-unit values an integer data type can carry, lowest first."""
        bounds = self.integer_range
        if bounds is None:
            return None
        if self.forward is None:
            return (bounds[0], bounds[1])
        low, high = self.forward(bounds[0]), self.forward(bounds[1])
        return (min(low, high), max(low, high))


def _data_type(point: AnyPoint) -> DataType | None:
    if isinstance(point, RegisterPoint):
        return point.data_type
    if isinstance(point, BitPoint):
        return DataType.BOOL
    return None


def _is_numeric(point: AnyPoint, data_type: DataType | None) -> bool:
    if point.enum is not None:
        return False
    if data_type is not None:
        return data_type.is_numeric
    declared = (point.unit, point.target_unit, point.limits, point.deadband, point.filter)
    return not point.is_identity or any(item is not None for item in declared)


def chain_of(point: AnyPoint) -> Chain:
    """Derive the chain of a validated point (the schema has checked the combinations already)."""
    data_type = _data_type(point)
    steps = Affine.of(_decimal_fraction(point.scale), _decimal_fraction(point.offset))
    if point.unit is not None and point.target_unit is not None:
        steps = steps.then(Affine.of(*exact_conversion(point.unit, point.target_unit)))
    forward, inverse = (None, None) if steps.is_identity else (steps, steps.inverse())
    limits = point.limits
    lower = limits.min if limits is not None else None
    upper = limits.max if limits is not None else None
    deadband: float | None = None
    if point.deadband is not None:
        if point.deadband.absolute is not None:
            deadband = point.deadband.absolute
        else:
            assert point.deadband.percent is not None
            assert lower is not None
            assert upper is not None
            deadband = point.deadband.percent / 100 * (upper - lower)
    window, time_constant = 0, 0.0
    if isinstance(point.filter, MovingAverage):
        window = point.filter.window
    elif isinstance(point.filter, FirstOrder):
        time_constant = point.filter.time_constant
    enum = dict(point.enum) if point.enum is not None else None
    return Chain(
        point_name=point.name,
        unit=point.target_unit or point.unit,
        numeric=_is_numeric(point, data_type),
        enum=enum,
        enum_codes={name: code for code, name in enum.items()} if enum is not None else None,
        forward=forward,
        inverse=inverse,
        lower=lower,
        upper=upper,
        clamp=limits is None or limits.action is LimitAction.CLAMP,
        window=window,
        time_constant=time_constant,
        deadband=deadband,
        rate_limit=point.rate_limit,
        data_type=data_type,
    )


@dataclass(slots=True)
class PointState:
    """What one point remembers between samples; owned by the engine, updated by the functions below."""

    value: Any = None
    """The last published value (``None`` before the first and after a bad one)."""
    quality: Quality | None = None
    reason: QualityReason | None = None
    time: datetime | None = None
    """Source time of the last published value."""
    window: deque[float] = field(default_factory=deque)
    window_total: float = 0.0
    window_fresh: int = 0
    """Values added since ``window_total`` was last summed exactly (bounds rounding drift)."""
    filtered: float | None = None
    filtered_time: datetime | None = None


# --- read direction -------------------------------------------------------------------------------


def parse_number(text: str) -> int | float | None:
    """A decimal number written as text (``"21.5"``, ``"-3"``, ``"1e3"``), ``None`` if it is none."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    return None


Reader = Callable[[PointState, Any, Quality, QualityReason, datetime], Outcome | None]
"""The read direction of one chain: ``(state, decoded value, quality, reason, source time) -> outcome``."""


def reader(chain: Chain) -> Reader:
    """The read direction of ``chain`` as one function with its constants bound, for the per-sample path.

    The function takes a decoded device value of usable quality (``GOOD`` or ``UNCERTAIN``) and
    returns the value, quality and reason to publish, or ``None`` when the deadband or the rate
    limit holds the value back. It updates ``state`` and nothing else.
    """
    if chain.enum is not None:

        def read_enum(
            state: PointState, value: Any, quality: Quality, reason: QualityReason, time: datetime
        ) -> Outcome | None:
            return _publish(chain, state, *_enum_name(chain, value, quality, reason), time)

        return read_enum

    numeric = chain.numeric
    forward = chain.forward
    scaled = forward is not None
    multiplier, addend, divisor = (forward.multiplier, forward.addend, forward.divisor) if forward else (1, 0, 1)
    lower, upper, clamp = chain.lower, chain.upper, chain.clamp
    bounded = lower is not None or upper is not None
    low = -math.inf if lower is None else lower
    high = math.inf if upper is None else upper
    window, time_constant = chain.window, chain.time_constant
    deadband, rate_limit = chain.deadband, chain.rate_limit
    gated = deadband is not None or rate_limit is not None

    def read_value(
        state: PointState, value: Any, quality: Quality, reason: QualityReason, time: datetime
    ) -> Outcome | None:
        kind = value.__class__
        if kind is not float and kind is not int:
            if isinstance(value, bool) or not isinstance(value, int | float):
                if numeric:
                    return _publish(chain, state, None, _BAD, QualityReason.DECODE_ERROR, time)
                return _publish(chain, state, value, quality, reason, time)
            value = float(value) if isinstance(value, float) else int(value)
        if scaled:
            try:
                value = (value * multiplier + addend) / divisor
            except OverflowError:
                return _publish(chain, state, None, _BAD, _OUT_OF_RANGE, time)
        if value - value != 0:
            return _publish(chain, state, None, _BAD, QualityReason.SENSOR_FAILURE, time)
        if bounded:
            if value < low:
                if not clamp:
                    return _publish(chain, state, None, _BAD, _OUT_OF_RANGE, time)
                value, quality, reason = _limit(value, low), _UNCERTAIN, _OUT_OF_RANGE
            elif value > high:
                if not clamp:
                    return _publish(chain, state, None, _BAD, _OUT_OF_RANGE, time)
                value, quality, reason = _limit(value, high), _UNCERTAIN, _OUT_OF_RANGE
        if window:
            value = moving_average(state, window, value)
        elif time_constant:
            value = first_order(state, time_constant, value, time)
        if gated and quality is state.quality and reason is state.reason:
            if rate_limit is not None and state.time is not None and (time - state.time).total_seconds() < rate_limit:
                return None
            if deadband is not None and state.value is not None and abs(value - state.value) <= deadband:
                return None
        state.value, state.quality, state.reason, state.time = value, quality, reason, time
        return (value, quality, reason)

    return read_value


def read_failure(
    chain: Chain, state: PointState, quality: Quality, reason: QualityReason, time: datetime
) -> Outcome | None:
    """A sample without a usable value (``raw`` ``None``, or quality ``BAD``).

    ``UNCERTAIN`` without a value republishes the last published value as uncertain (reason
    ``LAST_USABLE`` unless the sample gives one); everything else is ``BAD`` without a value, reason
    ``NO_COMMUNICATION`` unless the sample gives one. A value is never made up.
    """
    if quality is _UNCERTAIN and state.value is not None and state.quality is not _BAD:
        return _publish(chain, state, state.value, _UNCERTAIN, _reason_or(reason, QualityReason.LAST_USABLE), time)
    return _publish(chain, state, None, _BAD, _reason_or(reason, QualityReason.NO_COMMUNICATION), time)


def read_bad(chain: Chain, state: PointState, reason: QualityReason, time: datetime) -> Outcome | None:
    """The engine could not use a sample (``DECODE_ERROR``): ``BAD`` without a value, through the gates."""
    return _publish(chain, state, None, _BAD, reason, time)


def _reason_or(reason: QualityReason, default: QualityReason) -> QualityReason:
    return default if reason is _NO_REASON else reason


def _limit(value: int | float, limit: float) -> int | float:
    """The limit a value is clamped to; an ``int`` for an ``int`` value when the limit is whole."""
    if isinstance(value, int) and limit.is_integer():
        return int(limit)
    return limit


def _enum_name(chain: Chain, value: Any, quality: Quality, reason: QualityReason) -> Outcome:
    assert chain.enum is not None
    assert chain.enum_codes is not None
    if isinstance(value, str):
        if value in chain.enum_codes:
            return (value, quality, reason)
        return (None, _BAD, _OUT_OF_RANGE)
    if isinstance(value, float):
        if not value.is_integer():
            return (None, _BAD, _OUT_OF_RANGE) if math.isfinite(value) else (None, _BAD, QualityReason.SENSOR_FAILURE)
        value = int(value)
    if not isinstance(value, int):
        return (None, _BAD, QualityReason.DECODE_ERROR)
    name = chain.enum.get(int(value))
    if name is None:
        return (None, _BAD, _OUT_OF_RANGE)
    return (name, quality, reason)


def moving_average(state: PointState, window: int, value: float) -> float:
    """The mean of the last ``window`` values including ``value`` (fewer at the start)."""
    values = state.window
    if len(values) >= window:
        state.window_total -= values.popleft()
    values.append(value)
    state.window_total += value
    state.window_fresh += 1
    if state.window_fresh >= window:
        state.window_total = math.fsum(values)
        state.window_fresh = 0
    return state.window_total / len(values)


def first_order(state: PointState, time_constant: float, value: float, time: datetime) -> float:
    """First-order lag: ``y += (x - y) * (1 - exp(-dt / time_constant))``; the first value starts it.

    A sample no later than the previous one (``dt <= 0``) leaves the output unchanged.
    """
    previous, previous_time = state.filtered, state.filtered_time
    if previous is None or previous_time is None:
        output = float(value)
    else:
        elapsed = (time - previous_time).total_seconds()
        if elapsed <= 0:
            return previous
        output = previous - (value - previous) * math.expm1(-elapsed / time_constant)
    state.filtered, state.filtered_time = output, time
    return output


def _publish(
    chain: Chain, state: PointState, value: Any, quality: Quality, reason: QualityReason, time: datetime
) -> Outcome | None:
    """Deadband and rate limit against the last published value; records what is published."""
    if quality is state.quality and reason is state.reason:
        rate_limit = chain.rate_limit
        if rate_limit is not None and state.time is not None and (time - state.time).total_seconds() < rate_limit:
            return None
        deadband = chain.deadband
        if deadband is not None:
            last = state.value
            if value is None or last is None:
                if value is last:
                    return None
            elif abs(value - last) <= deadband:
                return None
    state.value, state.quality, state.reason, state.time = value, quality, reason, time
    return (value, quality, reason)


# --- write direction ------------------------------------------------------------------------------


def _unit_text(chain: Chain) -> str:
    return f" {chain.unit}" if chain.unit else ""


def to_device(chain: Chain, value: Any) -> Any:
    """The device value (in the device unit and type) that reads back as the element value ``value``.

    Raises ``TypeMismatchError`` for an unknown enum name, a non-number for a numeric point, a value
    outside ``limits``, a value finer than an integer data type's resolution or outside its range.
    Points without numeric normalisation pass ``value`` unchanged.
    """
    name = chain.point_name
    if chain.enum_codes is not None:
        code = chain.enum_codes.get(value) if isinstance(value, str) else None
        if code is None:
            allowed = ", ".join(repr(text) for text in chain.enum_codes)
            raise TypeMismatchError(f"point {name!r}: {value!r} is not one of {allowed}")
        _check_range(chain, value, code)
        return code
    if not chain.numeric:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value - value != 0:
        raise TypeMismatchError(f"point {name!r} needs a finite number, got {value!r}")
    lower, upper = chain.lower, chain.upper
    if (lower is not None and value < lower) or (upper is not None and value > upper):
        low = "-inf" if lower is None else f"{lower:g}"
        high = "inf" if upper is None else f"{upper:g}"
        raise TypeMismatchError(f"point {name!r}: {value!r} is outside the limits [{low}, {high}]{_unit_text(chain)}")
    if chain.forward is None:
        raw: int | float = value
    elif chain.inverse is None:
        raise TypeMismatchError(f"point {name!r}: its scale 0 cannot be inverted")
    else:
        raw = chain.inverse(value)
    data_type = chain.data_type
    if data_type is None:
        return raw if chain.forward is None else float(raw)
    if not data_type.is_integer:
        return float(raw)
    if not isinstance(raw, int):
        nearest = round(raw)
        if abs(raw - nearest) > _RELATIVE_TOLERANCE * max(1.0, abs(raw)):
            offset = float(chain.forward.offset) if chain.forward is not None else 0.0
            raise TypeMismatchError(
                f"point {name!r}: {value!r} is not a multiple of the resolution {chain.resolution:g}"
                f"{_unit_text(chain)} (offset {offset:g}); it would be truncated"
            )
        raw = nearest
    _check_range(chain, value, raw)
    return raw


def _check_range(chain: Chain, value: Any, raw: int) -> None:
    bounds = chain.integer_range
    if bounds is None or bounds[0] <= raw <= bounds[1]:
        return
    low, high = chain.engineering_range() or bounds
    assert chain.data_type is not None
    raise TypeMismatchError(
        f"point {chain.point_name!r}: {value!r} is out of range [{low:g}, {high:g}]{_unit_text(chain)} "
        f"({chain.data_type.value} raw range [{bounds[0]}, {bounds[1]}])"
    )


def nearest_device_value(chain: Chain, value: Any) -> Any:
    """The device value closest to ``value``: rounded and clamped to the data type, no checks (simulators)."""
    if chain.enum_codes is not None and isinstance(value, str):
        value = chain.enum_codes.get(value, 0)
    if chain.forward is not None:
        value = chain.inverse(value) if chain.inverse is not None else 0.0
    bounds = chain.integer_range
    if bounds is not None:
        return min(max(round(value), bounds[0]), bounds[1])
    if chain.data_type is DataType.FLOAT32:
        return min(max(float(value), -codecs.FLOAT32_MAX), codecs.FLOAT32_MAX)
    return value

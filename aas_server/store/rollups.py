"""Roll-ups: derived values of process and system twins, computed from their parts (pure).

A roll-up applies one ``RollupFunction`` to the current values and qualities of its parts and
gives a value, a quality and a source time (``roll_up``); ``fit_value`` fits the value to the
target Property's ``valueType``; ``target_problem`` and ``part_problem`` say why a valueType does
not suit a function; ``evaluation_order`` orders roll-ups of roll-ups so that every part is
computed before the roll-ups that use it, and rejects cycles. ``aas_server.runtime.rollups``
applies them to the store.

Quality rules: parts of bad quality (or without a value) are not used. The result is BAD when no
part is usable, UNCERTAIN when some part is bad or uncertain (the value is computed from the usable
parts), GOOD otherwise. ``worst-quality`` uses every part's quality and is itself always GOOD. The
source time is the latest source time of the parts used (of all parts when none is usable).

Left out: time-based functions (rates, moving averages, counters over a window), weights, and
unit conversion between parts: parts are expected to share the target's unit.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from basyx.aas.model import datatypes

from aas_server.config import RollupFunction
from aas_server.errors import ConfigurationError, TypeMismatchError
from aas_server.model import values
from aas_server.model.events import Quality, QualityReason

_SEVERITY = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
_NUMERIC_FUNCTIONS = frozenset(
    {RollupFunction.SUM, RollupFunction.AVERAGE, RollupFunction.MINIMUM, RollupFunction.MAXIMUM}
)
_TRUTH_FUNCTIONS = frozenset({RollupFunction.COUNT_TRUE, RollupFunction.FRACTION_TRUE})


@dataclass(frozen=True, slots=True)
class PartValue:
    """A part's current value, quality and source time (``None``: the part has no value state)."""

    value: Any
    quality: Quality
    source_time: datetime | None = None
    reason: QualityReason = QualityReason.NONE


@dataclass(frozen=True, slots=True)
class RollupResult:
    """What a roll-up gives: ``value`` is ``None`` when the quality is BAD (the target keeps its last value)."""

    value: Any
    quality: Quality
    reason: QualityReason
    source_time: datetime | None


def _numbers(items: Sequence[Any]) -> list[Any]:
    """Numbers that can be added: all ``int``, all ``Decimal`` (with ints), or else all ``float``."""
    if all(isinstance(item, int) for item in items):
        return [int(item) for item in items]
    if not any(isinstance(item, float) for item in items):
        return [decimal.Decimal(item) for item in items]
    return [float(item) for item in items]


def _sum(items: Sequence[Any]) -> Any:
    numbers = _numbers(items)
    return math.fsum(numbers) if numbers and isinstance(numbers[0], float) else sum(numbers)


def _average(items: Sequence[Any]) -> Any:
    numbers = _numbers(items)
    if numbers and isinstance(numbers[0], decimal.Decimal):
        return sum(numbers) / len(numbers)
    return _sum(numbers) / len(numbers)


def _minimum(items: Sequence[Any]) -> Any:
    return min(_numbers(items))


def _maximum(items: Sequence[Any]) -> Any:
    return max(_numbers(items))


def is_true(value: Any, true_above: float | None) -> bool:
    """A boolean part is true when true; a numeric one when it exceeds ``true_above`` (if given)."""
    if isinstance(value, bool):
        return value
    return true_above is not None and value > true_above


_VALUE_FUNCTIONS: dict[RollupFunction, Callable[[Sequence[Any]], Any]] = {
    RollupFunction.SUM: _sum,
    RollupFunction.AVERAGE: _average,
    RollupFunction.MINIMUM: _minimum,
    RollupFunction.MAXIMUM: _maximum,
}


def _usable(part: PartValue, function: RollupFunction, true_above: float | None) -> bool:
    if part.quality is Quality.BAD or part.value is None:
        return False
    if isinstance(part.value, bool):
        return function in _TRUTH_FUNCTIONS
    if isinstance(part.value, int | float | decimal.Decimal):
        return function in _NUMERIC_FUNCTIONS or true_above is not None
    return False


def _latest(parts: Sequence[PartValue]) -> datetime | None:
    return max((part.source_time for part in parts if part.source_time is not None), default=None)


def _common_reason(parts: Sequence[PartValue]) -> QualityReason:
    reasons = {part.reason for part in parts if part.quality is not Quality.GOOD or part.value is None}
    return reasons.pop() if len(reasons) == 1 else QualityReason.NONE


def worst_quality(parts: Sequence[PartValue]) -> Quality:
    """The worst quality of any part (a part without a value state counts as bad)."""
    return max((part.quality for part in parts), key=_SEVERITY.__getitem__, default=Quality.BAD)


def roll_up(function: RollupFunction, parts: Sequence[PartValue], *, true_above: float | None = None) -> RollupResult:
    """Apply ``function`` to ``parts`` with the quality rules of this module.

    ``sum``, ``average``, ``minimum`` and ``maximum`` take numeric parts; ``count-true`` and
    ``fraction-true`` boolean parts, or numeric ones compared with ``true_above``;
    ``worst-quality`` any parts and gives ``"good"``, ``"uncertain"`` or ``"bad"``.
    """
    if function is RollupFunction.WORST_QUALITY:
        return RollupResult(worst_quality(parts).value, Quality.GOOD, QualityReason.NONE, _latest(parts))
    usable = [part for part in parts if _usable(part, function, true_above)]
    if not usable:
        return RollupResult(None, Quality.BAD, _common_reason(parts), _latest(parts))
    items = [part.value for part in usable]
    if function is RollupFunction.COUNT_TRUE:
        value: Any = sum(1 for item in items if is_true(item, true_above))
    elif function is RollupFunction.FRACTION_TRUE:
        value = sum(1 for item in items if is_true(item, true_above)) / len(items)
    else:
        value = _VALUE_FUNCTIONS[function](items)
    if len(usable) == len(parts) and all(part.quality is Quality.GOOD for part in parts):
        return RollupResult(value, Quality.GOOD, QualityReason.NONE, _latest(usable))
    return RollupResult(value, Quality.UNCERTAIN, _common_reason(parts), _latest(usable))


def fit_value(value_type: values.ValueType, value: Any) -> Any:
    """``value`` as an instance of the target's ``valueType``: rounded to the nearest integer for integer
    types; ``TypeMismatchError`` when it is out of the type's range."""
    if issubclass(value_type, int) and value_type is not bool and isinstance(value, float | decimal.Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeMismatchError(f"{value!r} does not fit {values.xsd_name(value_type)}")
        value = round(value)
    return values.coerce(value_type, value)


def _is_integer(value_type: values.ValueType) -> bool:
    return issubclass(value_type, int) and value_type is not bool


def _is_text(value_type: values.ValueType) -> bool:
    return issubclass(value_type, str) and not issubclass(value_type, datatypes.AnyURI)


def target_problem(function: RollupFunction, value_type: values.ValueType) -> str | None:
    """Why a target Property of ``value_type`` cannot hold the results of ``function`` (``None``: it can)."""
    name = values.xsd_name(value_type)
    if function is RollupFunction.WORST_QUALITY:
        return None if _is_text(value_type) else f"is {name}; worst-quality gives text and needs xs:string"
    if not values.is_numeric(value_type):
        return f"is {name}; {function.value} gives a number and needs a numeric valueType"
    if function is RollupFunction.FRACTION_TRUE and _is_integer(value_type):
        return f"is {name}; fraction-true gives a fraction 0..1 and needs xs:double, xs:float or xs:decimal"
    return None


def part_problem(function: RollupFunction, value_type: values.ValueType, true_above: float | None) -> str | None:
    """Why a part of ``value_type`` cannot be an input of ``function`` (``None``: it can)."""
    name = values.xsd_name(value_type)
    if function is RollupFunction.WORST_QUALITY:
        return None
    if function in _NUMERIC_FUNCTIONS:
        return None if values.is_numeric(value_type) else f"is {name}; {function.value} needs numeric parts"
    if value_type is bool or (true_above is not None and values.is_numeric(value_type)):
        return None
    if values.is_numeric(value_type):
        return f"is {name}; {function.value} counts boolean parts, or numeric parts above true_above (not set)"
    return f"is {name}; {function.value} counts boolean parts (or numeric parts above true_above)"


def evaluation_order(targets: Sequence[Hashable], parts: Sequence[Sequence[Hashable]]) -> list[int]:
    """Indexes of the roll-ups, each after every roll-up whose target is one of its parts.

    ``ConfigurationError`` names ``rollups[i].parts[j]`` for the part that closes a cycle (a target
    computed, through other roll-ups or directly, from itself).
    """
    producer = {target: index for index, target in enumerate(targets)}
    inputs: list[list[tuple[int, int]]] = [
        [(producer[part], position) for position, part in enumerate(own) if part in producer] for own in parts
    ]
    order: list[int] = []
    state = [0] * len(targets)  # 0 new, 1 on the current path, 2 done
    path: list[int] = []

    def visit(index: int) -> None:
        state[index] = 1
        path.append(index)
        for upstream, position in inputs[index]:
            if state[upstream] == 1:
                cycle = [*path[path.index(upstream) :], upstream]
                shown = " -> ".join(f"rollups[{step}]" for step in reversed(cycle))
                raise ConfigurationError(
                    f"is the target of rollups[{upstream}]; roll-ups form a cycle: {shown}",
                    f"rollups[{index}].parts[{position}]",
                )
            if state[upstream] == 0:
                visit(upstream)
        path.pop()
        state[index] = 2
        order.append(index)

    for index in range(len(targets)):
        if state[index] == 0:
            visit(index)
    return order

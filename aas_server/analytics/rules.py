"""Monitoring rules files: which submodel element is watched, for what, how severe and with which message.

A rules file is YAML (or JSON) with one list, ``rules``. Each rule is bound to a submodel element by
reference (``element: {submodel: <submodel id>, path: <idShort path>}``, AAS Part 2 *idShortPath*),
carries a ``severity`` (1..1000, as OPC UA Part 9 section 5.5.2 *Severity*) and a ``message`` with
placeholders, and is discriminated by ``kind``:

``limits``
    hi/hihi/lo/lolo with a ``deadband`` (hysteresis); exclusive limit states (OPC UA Part 9, 5.8.18).
``rate``
    rate of change (units per second) over a ``window`` of seconds, rising, falling or both.
``stuck``
    the value changed by no more than ``tolerance`` for ``duration`` seconds.
``bad_quality``
    the quality was bad (optionally: or uncertain) for ``duration`` seconds.
``state``
    a boolean element is in its alarm state (``active_when``).
``deviation``
    a value differs from its set-point, a second element, by ``limit`` or more.

Every kind takes ``on_delay`` and ``off_delay`` (seconds; ISA-18.2 alarm on-/off-delay). Times are
seconds as numbers. The file is validated once, at load (``ARCHITECTURE.md``, house rule 3); problems
are reported one a line as ``file: rules[3] (tank-high).hi: reason``. With the set of known elements
(``known_elements``) the references are checked too: an element that does not exist, or whose value
does not fit the rule kind (a limit on a string), is refused.

Left out: derived (computed) signals; a rule watches one element (a deviation rule: two). With no
derived signals there can be no cycle of them; the loader must check for cycles when they come.
"""

from __future__ import annotations

import enum
import itertools
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from aas_server.config import load_yaml
from aas_server.errors import ConfigurationError
from aas_server.mapping.point_base import (
    NAME_PATTERN,
    StrictModel,
    Target,
    cross_reference_error,
    field_error,
    format_errors,
    repeated_names,
)
from aas_server.model.values import is_numeric

_CROSS_REFERENCE_ERROR = "rules_cross_reference"

Threshold = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A number in the element's unit; a string or a boolean is refused (strict)."""
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=31_536_000)]
PositiveSeconds = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=31_536_000)]
Severity = Annotated[int, Field(strict=True, ge=1, le=1000)]


class RulesError(ConfigurationError):
    """A monitoring rules file is invalid (schema, limits, placeholders, or references to elements)."""


class ElementKind(enum.Enum):
    """What kind of value a known element holds, for checking that a rule fits it."""

    NUMBER = "number"
    BOOLEAN = "boolean"
    TEXT = "text"
    OTHER = "other"
    """Anything: the caller does not know; every rule kind is accepted."""


def element_kind(value_type: type | None) -> ElementKind:
    """The kind of an element with this ``valueType`` (a basyx ``datatypes`` class, as
    ``model.values.property_value_type`` gives it), for ``known_elements``."""
    if value_type is None:
        return ElementKind.OTHER
    if value_type is bool:
        return ElementKind.BOOLEAN
    if is_numeric(value_type):
        return ElementKind.NUMBER
    if issubclass(value_type, str):
        return ElementKind.TEXT
    return ElementKind.OTHER


class LimitState(enum.StrEnum):
    """The exclusive limit states of OPC UA Part 9, 5.8.18 (ExclusiveLimitStateMachineType)."""

    HIGH_HIGH = "HighHigh"
    HIGH = "High"
    LOW = "Low"
    LOW_LOW = "LowLow"


class Direction(enum.StrEnum):
    BOTH = "both"
    RISING = "rising"
    FALLING = "falling"


ElementRef = Target
"""A submodel element: ``submodel`` (the submodel id) and ``path`` (its idShort path)."""

_COMMON_PLACEHOLDERS = frozenset({"name", "value", "severity"})


class RuleBase(StrictModel):
    """What every rule declares: name, watched element, severity, message, delays and confirmation."""

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)]
    """Unique in the file; the alarm's id."""
    element: ElementRef
    severity: Severity
    message: Annotated[str, Field(min_length=1, max_length=1024)]
    """Text of the alarm, with ``{placeholders}`` (Python format syntax): ``name``, ``value``,
    ``severity``, and per kind ``limit``, ``level``, ``rate``, ``setpoint``, ``deviation``, ``duration``."""
    on_delay: Seconds = 0.0
    """The condition must hold this long before the alarm becomes active."""
    off_delay: Seconds = 0.0
    """The condition must be gone this long before the alarm becomes inactive."""
    confirm: bool = False
    """The alarm must be confirmed after it is acknowledged (OPC UA Part 9, 5.7.4 ConfirmedState)."""
    max_shelve_time: PositiveSeconds | None = None
    """The longest timed shelving an operator may ask for (OPC UA Part 9, 5.8.17 MaxTimeShelved)."""

    @model_validator(mode="after")
    def _known_placeholders(self) -> RuleBase:
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(self.message) if field is not None]
        except ValueError as error:
            field_error("message", f"not a valid message template: {error}")
        for field in fields:
            if field not in self.placeholders:
                known = ", ".join(sorted(self.placeholders))
                field_error("message", f"unknown placeholder {{{field}}}; known here: {known}")
        return self


class LimitsRule(RuleBase):
    """Exclusive limit alarm: HighHigh above ``hihi``, High above ``hi``, Low below ``lo``, LowLow below ``lolo``.

    A level is entered at its threshold exactly (``value >= hi``, ``value <= lo``) and left once the
    value is past the threshold by more than ``deadband`` (``value < hi - deadband``).
    """

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS | {"limit", "level"}

    kind: Literal["limits"]
    hihi: Threshold | None = None
    hi: Threshold | None = None
    lo: Threshold | None = None
    lolo: Threshold | None = None
    deadband: NonNegative = 0.0
    level_severity: dict[LimitState, Severity] = Field(default_factory=dict)
    """Severity of a limit state other than ``severity``, for example ``{HighHigh: 900}``."""

    @model_validator(mode="after")
    def _consistent_limits(self) -> LimitsRule:
        given = [(name, getattr(self, name)) for name in ("lolo", "lo", "hi", "hihi")]
        given = [(name, limit) for name, limit in given if limit is not None]
        if not given:
            field_error("hi", "a limits rule needs at least one of hihi, hi, lo, lolo")
        for (lower_name, lower), (upper_name, upper) in itertools.pairwise(given):
            if lower >= upper:
                field_error(upper_name, f"{upper_name} ({upper:g}) must be above {lower_name} ({lower:g})")
        return self


class RateRule(RuleBase):
    """Rate of change over ``window`` seconds: (newest - oldest value in the window) / their time apart."""

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS | {"limit", "rate"}

    kind: Literal["rate"]
    limit: Positive
    """Units per second; the alarm is raised at ``|rate| >= limit`` (in ``direction``)."""
    window: PositiveSeconds
    direction: Direction = Direction.BOTH
    deadband: NonNegative = 0.0

    @model_validator(mode="after")
    def _deadband_below_limit(self) -> RateRule:
        if self.deadband >= self.limit:
            field_error("deadband", f"deadband ({self.deadband:g}) must be below limit ({self.limit:g})")
        return self


class StuckRule(RuleBase):
    """The value moved by no more than ``tolerance`` for ``duration`` seconds (good samples only)."""

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS | {"duration"}

    kind: Literal["stuck"]
    duration: PositiveSeconds
    tolerance: NonNegative = 0.0


class BadQualityRule(RuleBase):
    """The quality was bad (with ``include_uncertain``: or uncertain) for ``duration`` seconds."""

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS | {"duration", "quality"}

    kind: Literal["bad_quality"]
    duration: Seconds
    include_uncertain: bool = False


class StateRule(RuleBase):
    """A boolean element is ``active_when`` (numbers: non-zero is true)."""

    kind: Literal["state"]
    active_when: bool = True


class DeviationRule(RuleBase):
    """``|value - setpoint| >= limit`` (or only above/below), left once below ``limit - deadband``."""

    placeholders: ClassVar[frozenset[str]] = _COMMON_PLACEHOLDERS | {"limit", "setpoint", "deviation"}

    kind: Literal["deviation"]
    setpoint: ElementRef
    limit: Positive
    deadband: NonNegative = 0.0
    direction: Direction = Direction.BOTH
    """``rising``: only value above set-point; ``falling``: only below."""

    @model_validator(mode="after")
    def _deadband_below_limit(self) -> DeviationRule:
        if self.deadband >= self.limit:
            field_error("deadband", f"deadband ({self.deadband:g}) must be below limit ({self.limit:g})")
        return self


Rule = Annotated[
    LimitsRule | RateRule | StuckRule | BadQualityRule | StateRule | DeviationRule,
    Field(discriminator="kind"),
]
AnyRule = LimitsRule | RateRule | StuckRule | BadQualityRule | StateRule | DeviationRule
RULE_KINDS = ("limits", "rate", "stuck", "bad_quality", "state", "deviation")

_KIND_FITS: dict[str, frozenset[ElementKind]] = {
    "limits": frozenset({ElementKind.NUMBER, ElementKind.OTHER}),
    "rate": frozenset({ElementKind.NUMBER, ElementKind.OTHER}),
    "deviation": frozenset({ElementKind.NUMBER, ElementKind.OTHER}),
    "state": frozenset({ElementKind.BOOLEAN, ElementKind.NUMBER, ElementKind.OTHER}),
    "stuck": frozenset(ElementKind),
    "bad_quality": frozenset(ElementKind),
}


class RulesFile(StrictModel):
    """A whole rules file."""

    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> RulesFile:
        problems = [
            (f"{_item(index, self.rules[index])}.name", f"duplicate rule name, also rules[{first}]")
            for index, first in repeated_names(rule.name for rule in self.rules)
        ]
        if problems:
            raise cross_reference_error(_CROSS_REFERENCE_ERROR, problems)
        return self


def _item(index: int, rule: AnyRule) -> str:
    return f"rules[{index}] ({rule.name})"


def _is_rule_kind_tag(part: str, previous: int | str | None) -> bool:
    return isinstance(previous, int) and part in RULE_KINDS


def _unknown_kind(item: ErrorDetails, location: str, message: str) -> tuple[str, str]:
    if item["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        return f"{location}.kind", f"unknown or missing rule kind; expected one of {', '.join(RULE_KINDS)}"
    return location, message


def format_rules_errors(error: ValidationError, source: str, data: object) -> str:
    """One line per problem: ``source: rules[3] (tank-high).hi: message`` (the ``kind`` tag left out)."""
    return format_errors(
        error, source, data, cross_reference=_CROSS_REFERENCE_ERROR, is_tag=_is_rule_kind_tag, adjust=_unknown_kind
    )


ElementKey = tuple[str, str]
"""``(submodel id, idShort path)`` of a submodel element."""


def reference_problems(rules: RulesFile, known_elements: Mapping[ElementKey, ElementKind]) -> list[tuple[str, str]]:
    """Rules on elements that do not exist or whose values do not fit the rule kind: ``(place, reason)``."""
    problems: list[tuple[str, str]] = []
    for index, rule in enumerate(rules.rules):
        references: list[tuple[str, ElementRef]] = [("element", rule.element)]
        if isinstance(rule, DeviationRule):
            references.append(("setpoint", rule.setpoint))
            if (rule.setpoint.submodel, rule.setpoint.path) == (rule.element.submodel, rule.element.path):
                problems.append((f"{_item(index, rule)}.setpoint", "the set-point is the watched element itself"))
        for field, reference in references:
            place = f"{_item(index, rule)}.{field}"
            kind = known_elements.get((reference.submodel, reference.path))
            if kind is None:
                problems.append(
                    (place, f"no element {reference.path!r} in submodel {reference.submodel!r}"),
                )
            elif kind not in _KIND_FITS[rule.kind] or (field == "setpoint" and kind is ElementKind.TEXT):
                problems.append(
                    (place, f"a {rule.kind} rule cannot watch {reference.path!r}, which holds {kind.value} values")
                )
    return problems


def parse_rules(
    data: object,
    source: str = "<rules>",
    known_elements: Mapping[ElementKey, ElementKind] | None = None,
) -> RulesFile:
    """Validate parsed YAML/JSON data; ``RulesError`` names ``source``, the item and the field of each problem.

    With ``known_elements`` every referenced element must be among them and hold a fitting value.
    """
    if data is None:
        data = {}
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as error:
        raise RulesError(format_rules_errors(error, source, data)) from None
    if known_elements is not None:
        problems = reference_problems(rules, known_elements)
        if problems:
            raise RulesError("\n".join(f"{source}: {where}: {what}" for where, what in problems))
    return rules


def load_rules(path: Path, known_elements: Mapping[ElementKey, ElementKind] | None = None) -> RulesFile:
    """Load and validate a rules file (YAML or JSON); YAML syntax errors carry ``file:line:column``."""
    try:
        data = load_yaml(path)
    except ConfigurationError as error:
        raise RulesError(error.reason, error.location) from None
    return parse_rules(data, str(path), known_elements)


def rules_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a rules file, for editors and the ``schema rules`` command."""
    schema = RulesFile.model_json_schema()
    schema["title"] = "AAS server monitoring rules file"
    return schema

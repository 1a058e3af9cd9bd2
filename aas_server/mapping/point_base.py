"""What every mapped point and device shares, whatever its protocol: the base models of a mapping file.

The point base (``PointBase``: target, meaning, unit and normalisation), the strict base of every
model, reconnect backoff and the normalisation settings. Each protocol's device and point models
build on these (``mapping.schema`` for Modbus, OPC UA and MQTT; ``mapping.protocols.*`` for the
others), and ``mapping.schema`` unions them through its protocol registry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from aas_server.errors import InvalidRequestError
from aas_server.mapping.units import check_conversion
from aas_server.model.paths import parse_id_short_path
from aas_server.model.units import EngineeringUnit, UnitCode, lookup_unit

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
Finite = Annotated[float, Field(allow_inf_nan=False)]


FIELD_ERROR = "mapping_field"


def field_error(field: str, message: str) -> NoReturn:
    """Raise a validation error of the model that names ``field`` in its location."""
    raise PydanticCustomError(FIELD_ERROR, "{message}", {"message": message, "field": field})


def cross_reference_error(error_type: str, problems: list[tuple[str, str]]) -> PydanticCustomError:
    """A whole-file validation error listing ``(place, reason)`` problems, which ``format_errors`` expands."""
    return PydanticCustomError(
        error_type,
        "{message}",
        {"message": "; ".join(f"{where}: {what}" for where, what in problems), "problems": problems},
    )


TagTest = Callable[[str, int | str | None], bool]
"""Whether a location part (given the part before it) is a discriminator tag pydantic inserted."""


def repeated_names(names: Iterable[str]) -> Iterator[tuple[int, int]]:
    """``(index, index of its first use)`` for each name of ``names`` that was used before."""
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in first:
            yield index, first[name]
        else:
            first[name] = index


def describe_location(location: Sequence[int | str], data: object, is_tag: TagTest) -> str:
    """``points[3] (filler-motor.speed).data_type``: each list item's ``name`` added, the tags left out."""
    parts: list[str] = []
    current: object = data
    previous: int | str | None = None
    for part in location:
        if isinstance(part, str) and is_tag(part, previous):
            previous = part
            continue
        if isinstance(part, int):
            text = f"[{part}]"
            if isinstance(current, list) and 0 <= part < len(current):
                current = current[part]
                name = current.get("name") if isinstance(current, dict) else None
                if isinstance(name, str) and name:
                    text += f" ({name})"
            else:
                current = None
            parts.append(text)
        else:
            parts.append(f".{part}" if parts else part)
            current = current.get(part) if isinstance(current, dict) else None
        previous = part
    return "".join(parts) or "(top level)"


def format_errors(
    error: ValidationError,
    source: str,
    data: object,
    *,
    cross_reference: str,
    is_tag: TagTest,
    adjust: Callable[[ErrorDetails, str, str], tuple[str, str]] | None = None,
) -> str:
    """One line per problem of a mapping-style file: ``source: points[3] (filler-motor.speed).data_type: message``.

    Problems of the ``cross_reference`` error type are expanded to one line each; ``adjust`` may
    rewrite an item's location and message.
    """
    lines: list[str] = []
    for item in error.errors():
        if item["type"] == cross_reference:
            for where, what in (item.get("ctx") or {}).get("problems", ()):
                lines.append(f"{source}: {where}: {what}")
            continue
        location = describe_location(item["loc"], data, is_tag)
        if item["type"] == FIELD_ERROR:
            location += f".{(item.get('ctx') or {}).get('field', '')}"
        message = item["msg"].removeprefix("Value error, ")
        if adjust is not None:
            location, message = adjust(item, location, message)
        lines.append(f"{source}: {location}: {message}")
    return "\n".join(lines)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Access(enum.StrEnum):
    READ = "read"
    READ_WRITE = "read-write"


class ReconnectBackoff(StrictModel):
    """Capped exponential backoff between connection attempts, in seconds."""

    initial: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.2
    maximum: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 4.0
    """Capped so that a device back after a long outage is good again within 5 s (one attempt, one poll)."""

    @model_validator(mode="after")
    def _maximum_not_below_initial(self) -> ReconnectBackoff:
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum}) must not be below initial ({self.initial})")
        return self


class DeviceBase(StrictModel):
    """What every device of a mapping file has: its name, its shell and how it reconnects."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    shell: Annotated[str | None, Field(min_length=1)] = None
    """Id of the AAS of the device; it gets the AID and AIMC submodels that describe this wiring.

    Defaults to the shell that holds the submodel of the device's first point.
    """
    reconnect_backoff: ReconnectBackoff = ReconnectBackoff()


class CredentialedDevice(DeviceBase):
    """A device the hub may log in to with a user name and a password (given, or from the environment)."""

    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps secrets out of mapping files)."""

    @model_validator(mode="after")
    def _consistent_credentials(self) -> CredentialedDevice:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        return self


# --- normalisation -------------------------------------------------------------------------------


class LimitAction(enum.StrEnum):
    CLAMP = "clamp"
    """Clamp to the limit; quality uncertain, reason out_of_range (OPC UA Uncertain_EngineeringUnitsExceeded)."""
    BAD = "bad"
    """Keep the last value; quality bad, reason out_of_range."""


class Limits(StrictModel):
    """The valid range of the value, in the target unit."""

    min: Finite | None = None
    max: Finite | None = None
    action: LimitAction = LimitAction.CLAMP

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Deadband(StrictModel):
    """Publish a new value only when it moved further than this from the last published one.

    ``absolute`` in the target unit; ``percent`` of the span of ``limits`` (OPC 10000-8, 6.2 PercentDeadband).
    A change of quality is always published.
    """

    absolute: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    percent: Annotated[float | None, Field(gt=0, le=100, allow_inf_nan=False)] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Deadband:
        if (self.absolute is None) == (self.percent is None):
            raise ValueError("give exactly one of absolute or percent")
        return self


class MovingAverage(StrictModel):
    kind: Literal["moving-average"]
    window: Annotated[int, Field(ge=2, le=10_000)]
    """Number of samples averaged."""


class FirstOrder(StrictModel):
    kind: Literal["first-order"]
    time_constant: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
    """Seconds; y += (x - y) * (1 - exp(-dt / time_constant)), dt from the source timestamps."""


Filter = Annotated[MovingAverage | FirstOrder, Field(discriminator="kind")]


class Target(StrictModel):
    """The submodel element a point feeds: submodel id and idShort path (AAS Part 2, *idShortPath*)."""

    submodel: Annotated[str, Field(min_length=1)]
    path: Annotated[str, Field(min_length=1)]

    @field_validator("path")
    @classmethod
    def _valid_path(cls, path: str) -> str:
        try:
            parse_id_short_path(path)
        except InvalidRequestError as error:
            raise ValueError(str(error)) from None
        return path


class PointBase(StrictModel):
    """What every point declares, whatever its protocol: target, meaning, unit and normalisation."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)]
    device: str
    target: Target
    semantic_id: Annotated[str | None, Field(min_length=1)] = None
    """ECLASS IRDI, IEC CDD IRDI or IRI of the value's meaning; must agree with the element's semanticId."""
    unit: UnitCode | None = None
    """UNECE Recommendation 20 code (or symbol) of the value as the device gives it, after scale and offset."""
    target_unit: UnitCode | None = None
    """Unit of the target element; the value is converted from ``unit`` (pint). Defaults to ``unit``."""
    access: Access = Access.READ
    description: str | None = None
    scale: Finite = 1.0
    offset: Finite = 0.0
    enum: dict[int, Annotated[str, Field(min_length=1)]] | None = None
    """Device integers to element strings (an enumeration); excludes scale, offset, units and filters."""
    limits: Limits | None = None
    deadband: Deadband | None = None
    rate_limit: Annotated[float | None, Field(gt=0, le=86_400, allow_inf_nan=False)] = None
    """Least seconds between two published values (a change of quality always passes)."""
    filter: Filter | None = None

    @property
    def engineering_unit(self) -> EngineeringUnit | None:
        """The unit of the target element (``target_unit``, else ``unit``)."""
        code = self.target_unit or self.unit
        return lookup_unit(code) if code else None

    @property
    def source_unit(self) -> EngineeringUnit | None:
        return lookup_unit(self.unit) if self.unit else None

    @property
    def writable(self) -> bool:
        return self.access is Access.READ_WRITE

    @property
    def is_identity(self) -> bool:
        """Whether scale and offset leave the raw value unchanged."""
        return self.scale == 1 and self.offset == 0

    @model_validator(mode="after")
    def _normalisation_consistent(self) -> Any:
        if self.enum is not None:
            extra = [
                field
                for field in ("unit", "target_unit", "limits", "deadband", "filter")
                if getattr(self, field) is not None
            ]
            if not self.is_identity:
                extra[:0] = ["scale/offset"]
            if extra:
                field_error("enum", f"an enum point takes no {', '.join(extra)}")
            if not self.enum:
                field_error("enum", "enum needs at least one entry")
        if self.target_unit is not None and self.unit is None:
            field_error("target_unit", "target_unit needs unit (the unit the device gives)")
        if self.target_unit is not None and self.unit is not None:
            try:
                check_conversion(self.unit, self.target_unit)
            except ValueError as error:
                field_error("target_unit", str(error))
        if (
            self.deadband is not None
            and self.deadband.percent is not None
            and (self.limits is None or self.limits.min is None or self.limits.max is None)
        ):
            field_error("deadband", "a percent deadband needs limits with min and max (its span)")
        if self.writable:
            if self.scale == 0:
                field_error("scale", "scale 0 cannot be inverted, so the point cannot be read-write")
            if self.filter is not None:
                field_error("filter", "a filter cannot be inverted, so the point cannot be read-write")
            if self.enum is not None and len(set(self.enum.values())) != len(self.enum):
                field_error("enum", "the enum maps two numbers to one name and cannot be inverted for read-write")
        return self

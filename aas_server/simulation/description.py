"""The description of a line to simulate, validated once, and scenarios as overrides on it.

A line is stations in flow order, one buffer between each pair of neighbours, and either an
arrival process in front of the first station or an infinite source. Times are in seconds.
Validation errors name the parameter path (``stations[1].cycle_time.mean: must be > 0``).

A scenario is a set of overrides by parameter path on a base description (``stations[filler].
speed_factor: 1.1``, ``buffers[0].capacity: 40``, ``horizon: 28800``); a station or buffer may be
named by index or by name. An override of a path that does not exist is refused with that path.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from aas_server.errors import InvalidRequestError
from aas_server.exchange.repairs import AASD_130_VIOLATION

DEFAULT_MAX_HORIZON = 30 * 24 * 3600.0
"""Seconds: the longest horizon accepted when the caller configures none (30 days)."""
DEFAULT_MAX_REPLICATIONS = 1000
MAX_SERIES_POINTS = 10_000
"""The most time-series intervals a replication records (a bound on its memory)."""
MAX_SERIES_VALUES = 2 * MAX_SERIES_POINTS
"""The most time-series values a replication records in all: the throughput and one level series per buffer."""
MAX_EMPIRICAL_VALUES = 10_000
MAX_STATIONS = 100
"""Bounds on what one line holds: a job keeps its line and its results submodel (``kept_jobs`` of them)."""
DEFAULT_MAX_EVENTS = 20_000_000
"""The most simulated events (station cycles, failures, arrivals) a replication may run (``simulation.max_events``):
a line whose means would need more is refused, and ``model.run_replication`` stops a replication that reaches it."""


def _aas_text(value: str) -> str:
    """Names go into the results submodel: refuse characters AASd-130 forbids (they would break every XML export)."""
    forbidden = AASD_130_VIOLATION.search(value)
    if forbidden is not None:
        raise ValueError(f"holds U+{ord(forbidden.group()):04X}, which AASd-130 does not allow")
    return value


AasText = Annotated[str, AfterValidator(_aas_text)]


class SimulationError(InvalidRequestError):
    """A line description or scenario is invalid; the message names the parameter path and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constant(_Strict):
    """Always the same value."""

    kind: Literal["constant"] = "constant"
    value: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.value


class Exponential(_Strict):
    """Exponentially distributed with this mean."""

    kind: Literal["exponential"] = "exponential"
    mean: float = Field(gt=0)


class Normal(_Strict):
    """Normal with this mean and standard deviation, truncated to values > 0 (redrawn until positive)."""

    kind: Literal["normal"] = "normal"
    mean: float = Field(gt=0)
    std: float = Field(ge=0)


class Lognormal(_Strict):
    """Lognormal with this mean and standard deviation of the value itself (not of its logarithm)."""

    kind: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0)
    std: float = Field(ge=0)


class Empirical(_Strict):
    """Drawn uniformly from recorded values (each > 0)."""

    kind: Literal["empirical"] = "empirical"
    values: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=MAX_EMPIRICAL_VALUES)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)


class Weibull(_Strict):
    """Weibull with this ``shape`` (k) and ``scale`` (λ): the usual law of times to failure (k > 1: wear-out)."""

    kind: Literal["weibull"] = "weibull"
    shape: float = Field(gt=0)
    scale: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1 + 1 / self.shape)


class Gamma(_Strict):
    """Gamma with this ``shape`` (k) and ``scale`` (θ); its mean is k·θ."""

    kind: Literal["gamma"] = "gamma"
    shape: float = Field(gt=0)
    scale: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.shape * self.scale


Distribution = Annotated[
    Union[Constant, Exponential, Normal, Lognormal, Weibull, Gamma, Empirical],  # noqa: UP007
    Field(discriminator="kind"),
]
DISTRIBUTION_KINDS = frozenset({"constant", "exponential", "normal", "lognormal", "weibull", "gamma", "empirical"})


class Station(_Strict):
    """One machine of the line.

    ``cycle_time`` is the time one part takes at speed factor 1; the station runs at
    ``cycle_time / speed_factor`` (the set-point multiplier). Failures come by operating time:
    a time to failure is drawn from ``mtbf`` and runs down only while the station works; a failure
    pre-empts the part in work, which resumes after a repair drawn from ``mttr``. ``scrap_rate`` is
    the share of finished parts that are scrapped. ``ideal_cycle_time`` (default: the mean of
    ``cycle_time``) is the rated cycle that OEE performance is measured against.
    """

    name: AasText = Field(min_length=1)
    cycle_time: Distribution
    speed_factor: float = Field(default=1.0, gt=0)
    mtbf: Distribution | None = None
    mttr: Distribution | None = None
    scrap_rate: float = Field(default=0.0, ge=0, lt=1)
    ideal_cycle_time: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _failures_come_in_pairs(self) -> Station:
        if (self.mtbf is None) != (self.mttr is None):
            missing = "mttr" if self.mttr is None else "mtbf"
            raise ValueError(f"{missing}: needed when {'mtbf' if missing == 'mttr' else 'mttr'} is given")
        return self

    @property
    def rated_cycle_time(self) -> float:
        return self.ideal_cycle_time if self.ideal_cycle_time is not None else self.cycle_time.mean


class Buffer(_Strict):
    """The buffer after a station: ``capacity`` parts wait there for the next station (at least 1)."""

    name: str | None = None
    capacity: int = Field(ge=1)


class Arrivals(_Strict):
    """Parts arrive at the first station with these inter-arrival times.

    They wait in an input queue of ``queue_capacity`` parts (none: unbounded); an arrival that finds
    it full is lost and counted.
    """

    interarrival: Distribution
    queue_capacity: int | None = Field(default=None, ge=1)


class LineDescription(_Strict):
    """A line to simulate: stations in flow order, the buffers between them, and the run parameters.

    ``horizon`` and ``warmup`` are seconds of simulated time (statistics cover ``warmup..horizon``);
    ``series_interval`` is the width of the time-series bins; each of ``replications`` runs has its
    own random streams derived from ``seed``.
    """

    name: AasText = "line"
    stations: list[Station] = Field(min_length=1, max_length=MAX_STATIONS)
    buffers: list[Buffer] = Field(default_factory=list)
    arrivals: Arrivals | None = None
    horizon: float = Field(gt=0)
    warmup: float = Field(default=0.0, ge=0)
    series_interval: float | None = Field(default=None, gt=0)
    replications: int = Field(default=10, ge=1)
    seed: int = Field(default=0, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> LineDescription:
        if len(self.buffers) != len(self.stations) - 1:
            raise ValueError(
                f"buffers: {len(self.stations)} stations need {len(self.stations) - 1} buffers, got {len(self.buffers)}"
            )
        names = [station.name for station in self.stations]
        if len(set(names)) != len(names):
            raise ValueError("stations: station names must be unique")
        if self.warmup >= self.horizon:
            raise ValueError(f"warmup: must be < horizon ({self.horizon:g})")
        intervals = min(MAX_SERIES_POINTS, MAX_SERIES_VALUES // len(self.stations))  # len(buffers) + 1 series
        shortest = (self.horizon - self.warmup) / intervals
        if self.series_interval is not None and self.series_interval < shortest:
            raise ValueError(f"series_interval: must be >= {shortest:g} (at most {intervals} intervals)")
        context = info.context if isinstance(info.context, Mapping) else {}
        max_horizon = float(context.get("max_horizon", DEFAULT_MAX_HORIZON))
        if self.horizon > max_horizon:
            raise ValueError(f"horizon: must be <= {max_horizon:g} (the configured maximum)")
        max_replications = int(context.get("max_replications", DEFAULT_MAX_REPLICATIONS))
        if self.replications > max_replications:
            raise ValueError(f"replications: must be <= {max_replications} (the configured maximum)")
        self._bounded_work(int(context.get("max_events", DEFAULT_MAX_EVENTS)))
        return self

    def _bounded_work(self, max_events: int) -> None:
        """Refuse a line whose means need more than ``max_events`` events in one replication, naming the main cause.

        A tiny cycle time or a huge speed factor would otherwise make a replication that never ends (a cancel
        stops a job only between replications). Heavy tails that pass this check are stopped at run time.
        """
        causes: list[tuple[float, str, str]] = []

        def mean(distribution: Any) -> float:
            try:
                return float(distribution.mean)
            except OverflowError:  # a Weibull shape near 0: Γ(1 + 1/k) overflows, the times are all but infinite
                return math.inf

        for index, station in enumerate(self.stations):
            cycle = mean(station.cycle_time)
            causes.append(
                (
                    station.speed_factor / cycle,
                    f"stations[{index}].cycle_time",
                    f"{cycle:g} s at speed factor {station.speed_factor:g}",
                )
            )
            if station.mtbf is not None:
                failure = mean(station.mtbf)
                causes.append((1 / failure, f"stations[{index}].mtbf", f"a mean of {failure:g} s"))
        if self.arrivals is not None:
            interarrival = mean(self.arrivals.interarrival)
            causes.append((1 / interarrival, "arrivals.interarrival", f"a mean of {interarrival:g} s"))
        events = math.fsum(each[0] for each in causes) * self.horizon
        if events > max_events:
            _, path, what = max(causes)
            raise ValueError(
                f"{path}: {what} needs about {events:.3g} events over the horizon, more than the {max_events} "
                "events a replication may simulate (simulation.max_events)"
            )

    @property
    def interval(self) -> float:
        """The time-series bin width: ``series_interval``, or a twentieth of the observed window."""
        return self.series_interval if self.series_interval is not None else (self.horizon - self.warmup) / 20

    def buffer_name(self, index: int) -> str:
        buffer = self.buffers[index]
        return buffer.name or f"{self.stations[index].name}->{self.stations[index + 1].name}"


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "needs at least {min_length} item(s)",
    "too_long": "has more than {max_length} items",
    "missing": "is required",
    "extra_forbidden": "is not a parameter",
}


def _path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in DISTRIBUTION_KINDS or part.startswith("function-"):
            continue
        else:
            path += f".{part}" if path else part
    return path


def _message(error: Mapping[str, Any]) -> str:
    path = _path(tuple(error["loc"]))
    template = _MESSAGES.get(str(error["type"]))
    if template is not None:
        reason = template.format(**{key: _number(value) for key, value in (error.get("ctx") or {}).items()})
    else:
        reason = str(error["msg"]).removeprefix("Value error, ")
        if ": " in reason and error["type"] == "value_error":
            # A cross-field validator names its own field: ``horizon: must be <= ...``
            field, reason = reason.split(": ", 1)
            path = f"{path}.{field}" if path else field
    return f"{path}: {reason}" if path else reason


def _number(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def parse_line(
    data: Mapping[str, Any],
    *,
    max_horizon: float = DEFAULT_MAX_HORIZON,
    max_replications: int = DEFAULT_MAX_REPLICATIONS,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> LineDescription:
    """Validate plain data into a line description, or raise ``SimulationError`` naming every bad parameter path."""
    try:
        return LineDescription.model_validate(
            data, context={"max_horizon": max_horizon, "max_replications": max_replications, "max_events": max_events}
        )
    except ValidationError as error:
        raise SimulationError("; ".join(_message(item) for item in error.errors())) from None


_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]+\])*)")


def _steps(path: str) -> list[str | int | tuple[str]]:
    """``stations[filler].cycle_time.mean`` -> ``["stations", ("filler",), "cycle_time", "mean"]``."""
    steps: list[str | int | tuple[str]] = []
    for segment in path.split("."):
        match = _STEP.fullmatch(segment)
        if match is None:
            raise SimulationError(f"{path}: not a parameter path")
        steps.append(match.group(1))
        for index in re.findall(r"\[([^\]]+)\]", match.group(2)):
            steps.append(int(index) if index.isdigit() else (index,))
    return steps


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    node: Any = document
    steps = _steps(path)
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        if isinstance(step, str):
            if not isinstance(node, dict) or step not in node:
                raise SimulationError(f"{path}: no such parameter")
            key: Any = step
        elif isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise SimulationError(f"{path}: no such parameter")
            key = step
        else:
            items = node if isinstance(node, list) else []
            names = [item.get("name") if isinstance(item, dict) else None for item in items]
            if step[0] not in names:
                raise SimulationError(f"{path}: no such parameter")
            key = names.index(step[0])
        if last:
            node[key] = value
        else:
            node = node[key]
            if node is None:
                raise SimulationError(f"{path}: no such parameter")


def apply_overrides(
    base: LineDescription,
    overrides: Mapping[str, Any],
    *,
    max_horizon: float = DEFAULT_MAX_HORIZON,
    max_replications: int = DEFAULT_MAX_REPLICATIONS,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> LineDescription:
    """The base description with each parameter path in ``overrides`` set to its value, validated again.

    ``SimulationError`` names a path that does not exist, or the path of a value the line cannot have.
    """
    document = copy.deepcopy(base.model_dump(mode="python"))
    for path, value in overrides.items():
        _set(document, path, value)
    return parse_line(document, max_horizon=max_horizon, max_replications=max_replications, max_events=max_events)


class Scenario(_Strict):
    """A named set of parameter overrides on a base line (horizon, replications and seed are parameters too)."""

    name: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)

    def apply(self, base: LineDescription, **limits: Any) -> LineDescription:
        """The line this scenario describes (see ``apply_overrides``)."""
        return apply_overrides(base, self.overrides, **limits).model_copy(update={"name": self.name})

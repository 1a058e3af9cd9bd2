"""Simulation jobs as the edges see them: scenario requests, job states, results as JSON, and the job service contract.

``runtime.simulation.SimulationService`` implements ``SimulationJobs``; the REST routes
(``api/simulations.py``) and the OPC UA ``Simulate`` Method (``opcua/simulations.py``) submit, read,
cancel and compare jobs through it, so that neither imports the runtime.

Contract:

* ``submit(shell_id, scenarios, user)`` checks every scenario against the process line of the shell
  at once (``SimulationError`` naming the parameter path, ``NotFoundError`` for an unknown shell,
  ``errors.CapacityError`` when ``max_jobs`` jobs are queued or running) and returns the queued job.
  Two scenarios make a comparison job: both run with their own seeds, and the results hold the Welch
  comparison of candidate against baseline.
* ``job(job_id)`` is the job's current view; unknown ids raise ``NotFoundError``; ``jobs()`` every job in
  the table, oldest first.
* ``cancel(job_id, user)`` stops a queued or running job between replications; a finished job is
  left as it is (the view says how it ended).
* ``compare(baseline_id, candidate_id)`` compares two finished jobs of one scenario each
  (``InvalidRequestError`` when either is not done).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aas_server.simulation.description import AasText, SimulationError
from aas_server.simulation.statistics import Difference, Estimate, ScenarioResult

MAX_OVERRIDES = 1000
MAX_PATH_LENGTH = 500
"""Bounds on a scenario's overrides: a job keeps its scenario (``kept_jobs`` of them)."""
RUN_PARAMETERS = ("horizon", "warmup", "replications", "seed", "series_interval", "confidence")
"""Run parameters a scenario may give beside its overrides; they are overrides of the same paths."""


class ScenarioRequest(BaseModel):
    """A scenario as clients send it: a name, overrides by parameter path, and the run parameters.

    ``{"name": "filler +10 %", "overrides": {"stations[Filler].speed_factor": 1.1}, "horizon": 28800,
    "replications": 10, "seed": 1}``
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AasText = Field(default="scenario", min_length=1, max_length=200)
    overrides: dict[str, Any] = Field(default_factory=dict)
    horizon: float | None = None
    warmup: float | None = None
    replications: int | None = None
    seed: int | None = None
    series_interval: float | None = None
    confidence: float | None = None

    @field_validator("overrides")
    @classmethod
    def _bounded(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        if len(overrides) > MAX_OVERRIDES:
            raise ValueError(f"at most {MAX_OVERRIDES} parameter paths, got {len(overrides)}")
        for path in overrides:
            if len(path) > MAX_PATH_LENGTH:
                raise ValueError(f"a parameter path is longer than {MAX_PATH_LENGTH} characters ({path[:40]}...)")
        return overrides

    def all_overrides(self) -> dict[str, Any]:
        """The overrides with the run parameters given beside them."""
        merged = dict(self.overrides)
        for name in RUN_PARAMETERS:
            value = getattr(self, name)
            if value is not None:
                merged[name] = value
        return merged


def parse_scenario(data: object, where: str = "") -> ScenarioRequest:
    """A scenario request from JSON data, or ``SimulationError`` naming each bad member (prefixed by ``where``)."""
    if not isinstance(data, Mapping):
        raise SimulationError(f"{where or 'scenario'}: must be a JSON object")
    try:
        return ScenarioRequest.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            path = ".".join(str(part) for part in item["loc"])
            if where:
                path = f"{where}.{path}"
            reason = (
                "is not a parameter" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{path}: {reason}")
        raise SimulationError("; ".join(problems)) from None


class JobState(enum.Enum):
    """Where a job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobView:
    """A job as its callers see it; ``results`` (one per scenario) and ``comparison`` once it is done."""

    id: str
    shell: str
    scenarios: tuple[ScenarioRequest, ...]
    state: JobState
    user: str
    created: datetime
    replications: int
    completed_replications: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    error: str | None = None
    results: tuple[ScenarioResult, ...] = ()
    comparison: Mapping[str, Difference] | None = None
    results_submodels: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self, results: bool = True) -> dict[str, Any]:
        """The JSON of the job: status, progress, and (with ``results``) the results and comparison when done."""
        data: dict[str, Any] = {
            "id": self.id,
            "shell": self.shell,
            "state": self.state.value,
            "user": self.user,
            "scenarios": [scenario.model_dump(exclude_none=True) for scenario in self.scenarios],
            "replications": self.replications,
            "completedReplications": self.completed_replications,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
        }
        if self.error is not None:
            data["error"] = self.error
        if self.results_submodels:
            data["resultsSubmodels"] = list(self.results_submodels)
        if self.results and results:
            data["results"] = [result_json(result) for result in self.results]
        if self.comparison is not None and results:
            data["comparison"] = comparison_json(self.comparison)
        return data


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def estimate_json(estimate: Estimate) -> dict[str, Any]:
    """An estimate as JSON; the interval bounds are ``null`` when it has none (one replication)."""
    return {
        "mean": estimate.mean,
        "halfWidth": _finite(estimate.half_width),
        "low": _finite(estimate.low),
        "high": _finite(estimate.high),
        "std": _finite(estimate.std),
        "count": estimate.count,
    }


def result_json(result: ScenarioResult) -> dict[str, Any]:
    """A scenario's results as JSON: line figures, stations, buffers, bottleneck and time series."""
    line: dict[str, Any] = {}
    stations: dict[str, dict[str, Any]] = {}
    buffers: dict[str, dict[str, Any]] = {}
    for name, estimate in result.estimates.items():
        if name.startswith("stations."):
            station, figure = name.removeprefix("stations.").rsplit(".", 1)
            stations.setdefault(station, {})[figure] = estimate_json(estimate)
        elif name.startswith("buffers."):
            buffer, figure = name.removeprefix("buffers.").rsplit(".", 1)
            buffers.setdefault(buffer, {})[figure] = estimate_json(estimate)
        else:
            line[name] = estimate_json(estimate)
    return {
        "scenario": result.name,
        "replications": len(result.replications),
        "line": line,
        "stations": stations,
        "buffers": buffers,
        "bottleneck": result.bottleneck,
        "bottleneckShare": result.bottleneck_share,
        "series": {"times": result.series_times, **result.series},
    }


def comparison_json(comparison: Mapping[str, Difference]) -> dict[str, Any]:
    """``candidate - baseline`` of every figure with Welch's interval and whether it is significant."""
    return {
        name: {
            "baseline": difference.baseline,
            "candidate": difference.candidate,
            "difference": difference.difference,
            "halfWidth": _finite(difference.half_width),
            "low": _finite(difference.low),
            "high": _finite(difference.high),
            "significant": difference.significant,
        }
        for name, difference in comparison.items()
    }


class SimulationJobs(Protocol):
    """The hub's simulation jobs (see the module docstring for the contract)."""

    async def submit(self, shell_id: str, scenarios: Sequence[ScenarioRequest], user: str) -> JobView: ...

    def job(self, job_id: str) -> JobView: ...

    def jobs(self) -> list[JobView]: ...

    async def cancel(self, job_id: str, user: str) -> JobView: ...

    def compare(self, baseline_id: str, candidate_id: str) -> dict[str, Any]: ...

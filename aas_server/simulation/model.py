"""The SimPy model of a line and one replication of it: a pure function of (description, replication index).

Each station takes a part from the buffer before it (or from the infinite source, or the arrival
queue), works on it, and puts it into the buffer after it. A station whose upstream buffer is empty
is *starved*; a station that has finished a part and finds the downstream buffer full holds the part
and is *blocked* (blocking after service). Failures come by operating time and pre-empt the part in
work, which resumes after the repair (the station is *down*). Every random draw of a replication
comes from its own stream, derived from ``(seed, replication index, station, purpose)`` with numpy's
``SeedSequence``, so a replication gives the same result in any process and in any order, and two
scenarios run with the same seed share their random numbers (common random numbers).

Left out: batch processing, assembly and splits (the line is serial), set-up times, planned stops,
shift calendars and rework loops.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from aas_server.simulation.description import (
    DEFAULT_MAX_EVENTS,
    Constant,
    Empirical,
    Exponential,
    Gamma,
    LineDescription,
    Lognormal,
    Normal,
    SimulationError,
    Station,
    Weibull,
)

_BLOCK = 512
_ARRIVALS = 0
_CYCLE, _FAILURE, _REPAIR, _SCRAP = range(4)


def _draw(distribution: Any, generator: np.random.Generator, count: int) -> np.ndarray[Any, Any]:
    if isinstance(distribution, Constant):
        return np.full(count, distribution.value)
    if isinstance(distribution, Exponential):
        return generator.exponential(distribution.mean, count)
    if isinstance(distribution, Normal):
        values = generator.normal(distribution.mean, distribution.std, count)
        while (bad := values <= 0).any():
            values[bad] = generator.normal(distribution.mean, distribution.std, int(bad.sum()))
        return values
    if isinstance(distribution, Lognormal):
        sigma_squared = math.log1p((distribution.std / distribution.mean) ** 2)
        mu = math.log(distribution.mean) - sigma_squared / 2
        return generator.lognormal(mu, math.sqrt(sigma_squared), count)
    if isinstance(distribution, Weibull):
        return distribution.scale * generator.weibull(distribution.shape, count)
    if isinstance(distribution, Gamma):
        return generator.gamma(distribution.shape, distribution.scale, count)
    if isinstance(distribution, Empirical):
        return generator.choice(np.asarray(distribution.values, dtype=float), count)
    raise TypeError(f"not a distribution: {distribution!r}")


def _stream(seed: int, replication: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(replication, *key)))


class _Sampler:
    """Draws from one distribution on one random stream, a block at a time."""

    def __init__(self, distribution: Any, generator: np.random.Generator, scale: float = 1.0) -> None:
        self._distribution = distribution
        self._generator = generator
        self._scale = scale
        self._values: Iterator[float] = iter(())

    def __call__(self) -> float:
        value = next(self._values, None)
        if value is None:
            self._values = iter((_draw(self._distribution, self._generator, _BLOCK) * self._scale).tolist())
            value = next(self._values)
        return value


class _Uniform:
    def __init__(self, generator: np.random.Generator) -> None:
        self._generator = generator
        self._values: Iterator[float] = iter(())

    def __call__(self) -> float:
        value = next(self._values, None)
        if value is None:
            self._values = iter(self._generator.random(_BLOCK).tolist())
            value = next(self._values)
        return value


class _Window:
    """Accumulates durations and time integrals inside the observed window ``[start, end]``."""

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end

    def overlap(self, begin: float, finish: float) -> float:
        return max(0.0, min(finish, self.end) - max(begin, self.start))


class _Level:
    """The time-average of a buffer level inside the window."""

    def __init__(self, window: _Window) -> None:
        self._window = window
        self.level = 0
        self._since = 0.0
        self.area = 0.0

    def change(self, now: float, delta: int) -> None:
        self.area += self.level * self._window.overlap(self._since, now)
        self.level += delta
        self._since = now

    def close(self, now: float) -> None:
        self.change(now, 0)


STATES = ("working", "down", "starved", "blocked")


class _StationClock:
    def __init__(self, window: _Window) -> None:
        self._window = window
        self.state = "starved"
        self._since = 0.0
        self.time = dict.fromkeys(STATES, 0.0)

    def enter(self, now: float, state: str) -> None:
        self.time[self.state] += self._window.overlap(self._since, now)
        self.state = state
        self._since = now


@dataclass(frozen=True)
class ReplicationResult:
    """What one replication measured over the observed window (``warmup..horizon``).

    ``metrics`` are flat named figures (``throughput`` in good parts per hour, ``oee``,
    ``availability``, ``performance``, ``quality``, ``stations.<name>.utilisation|down|starved|
    blocked|active``, ``buffers.<name>.mean_level``); ``series`` holds the time series, one value
    per ``interval`` (``throughput`` per hour in each interval, ``buffers.<name>.level`` at its end).
    """

    index: int
    metrics: dict[str, float]
    bottleneck: str
    series: dict[str, list[float]] = field(default_factory=dict)
    series_times: list[float] = field(default_factory=list)


def run_replication(
    description: LineDescription, index: int, max_events: int = DEFAULT_MAX_EVENTS
) -> ReplicationResult:
    """Simulate replication ``index`` of the line; the same (description, index) always gives the same result.

    ``SimulationError`` when it would run more than ``max_events`` station cycles, failures and arrivals (heavy
    tails can pass the check on the means): a replication cannot be stopped from outside once it runs.
    """
    seed = description.seed
    budget = [max_events]

    def spend(where: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise SimulationError(
                f"{where}: replication {index} needs more than the {max_events} events a replication may "
                f"simulate (simulation.max_events); stopped at {environment.now:g} s of {description.horizon:g} s"
            )

    environment = simpy.Environment()
    window = _Window(description.warmup, description.horizon)
    interval = description.interval
    bins = max(1, math.ceil((description.horizon - description.warmup) / interval - 1e-9))
    completions = [0] * bins
    good = [0]
    scrapped = [0]
    lost = [0]

    queues: list[simpy.Container] = []
    levels: list[_Level] = []
    input_queue: simpy.Container | None = None
    input_level: _Level | None = None
    if description.arrivals is not None:
        capacity = description.arrivals.queue_capacity
        input_queue = simpy.Container(environment, capacity=capacity if capacity is not None else float("inf"))
        input_level = _Level(window)
    for buffer in description.buffers:
        queues.append(simpy.Container(environment, capacity=buffer.capacity))
        levels.append(_Level(window))
    clocks = [_StationClock(window) for _ in description.stations]

    def source() -> Generator[simpy.Event, Any, None]:
        assert description.arrivals is not None
        assert input_queue is not None
        assert input_level is not None
        interarrival = _Sampler(description.arrivals.interarrival, _stream(seed, index, _ARRIVALS, 0))
        while True:
            spend("arrivals.interarrival")
            yield environment.timeout(interarrival())
            if input_queue.level >= input_queue.capacity:
                if environment.now >= window.start:
                    lost[0] += 1
                continue
            yield input_queue.put(1)
            input_level.change(environment.now, 1)

    def station(position: int, spec: Station) -> Generator[simpy.Event, Any, None]:
        key = position + 1
        cycle = _Sampler(spec.cycle_time, _stream(seed, index, key, _CYCLE), 1.0 / spec.speed_factor)
        failure = _Sampler(spec.mtbf, _stream(seed, index, key, _FAILURE)) if spec.mtbf is not None else None
        repair = _Sampler(spec.mttr, _stream(seed, index, key, _REPAIR)) if spec.mttr is not None else None
        scrap = _Uniform(_stream(seed, index, key, _SCRAP))
        clock = clocks[position]
        upstream, upstream_level = (
            (queues[position - 1], levels[position - 1]) if position > 0 else (input_queue, input_level)
        )
        downstream, downstream_level = (queues[position], levels[position]) if position < len(queues) else (None, None)
        time_to_failure = failure() if failure is not None else math.inf
        while True:
            if upstream is not None and upstream_level is not None:
                clock.enter(environment.now, "starved")
                yield upstream.get(1)
                upstream_level.change(environment.now, -1)
            clock.enter(environment.now, "working")
            spend(f"stations[{position}].cycle_time")
            remaining = cycle()
            while remaining > 0:
                if time_to_failure <= remaining:
                    yield environment.timeout(time_to_failure)
                    remaining -= time_to_failure
                    assert failure is not None
                    assert repair is not None
                    clock.enter(environment.now, "down")
                    spend(f"stations[{position}].mtbf")
                    yield environment.timeout(repair())
                    clock.enter(environment.now, "working")
                    time_to_failure = failure()
                else:
                    yield environment.timeout(remaining)
                    time_to_failure -= remaining
                    remaining = 0.0
            if spec.scrap_rate and scrap() < spec.scrap_rate:
                if environment.now >= window.start:
                    scrapped[0] += 1
                continue
            if downstream is not None and downstream_level is not None:
                clock.enter(environment.now, "blocked")
                yield downstream.put(1)
                downstream_level.change(environment.now, 1)
            elif window.start <= environment.now <= window.end:
                good[0] += 1
                completions[min(bins - 1, int((environment.now - window.start) / interval))] += 1

    level_series: list[list[float]] = [[] for _ in levels]
    series_times: list[float] = []

    def sampler() -> Generator[simpy.Event, Any, None]:
        yield environment.timeout(window.start)
        for number in range(1, bins + 1):
            yield environment.timeout(min(window.start + number * interval, window.end) - environment.now)
            series_times.append(environment.now)
            for position, queue in enumerate(queues):
                level_series[position].append(float(queue.level))

    if description.arrivals is not None:
        environment.process(source())
    for position, spec in enumerate(description.stations):
        environment.process(station(position, spec))
    environment.process(sampler())
    environment.run(until=description.horizon)
    if len(series_times) < bins:  # the sample due at the horizon itself: ``run(until=...)`` stops before it
        series_times.append(description.horizon)
        for position, queue in enumerate(queues):
            level_series[position].append(float(queue.level))

    length = window.end - window.start
    for clock in clocks:
        clock.enter(description.horizon, clock.state)
    for level in levels:
        level.close(description.horizon)
    if input_level is not None:
        input_level.close(description.horizon)

    metrics: dict[str, float] = {}
    active: dict[str, tuple[float, float]] = {}
    for spec, clock in zip(description.stations, clocks, strict=True):
        shares = {state: clock.time[state] / length for state in STATES}
        prefix = f"stations.{spec.name}"
        metrics[f"{prefix}.utilisation"] = shares["working"]
        metrics[f"{prefix}.down"] = shares["down"]
        metrics[f"{prefix}.starved"] = shares["starved"]
        metrics[f"{prefix}.blocked"] = shares["blocked"]
        metrics[f"{prefix}.active"] = shares["working"] + shares["down"]
        metrics[f"{prefix}.availability"] = 1.0 - shares["down"]
        active[spec.name] = (shares["working"] + shares["down"], -(shares["starved"] + shares["blocked"]))
    for position, level in enumerate(levels):
        metrics[f"buffers.{description.buffer_name(position)}.mean_level"] = level.area / length
    if input_level is not None:
        metrics["arrivals.mean_queue"] = input_level.area / length
        metrics["arrivals.lost"] = float(lost[0])

    # OEE against the line's reference station: the one with the longest rated cycle (its constraint by design).
    reference = max(range(len(description.stations)), key=lambda i: description.stations[i].rated_cycle_time)
    reference_spec = description.stations[reference]
    availability = metrics[f"stations.{reference_spec.name}.availability"]
    total = good[0] + scrapped[0]
    quality = good[0] / total if total else 1.0
    oee = good[0] * reference_spec.rated_cycle_time / length
    metrics["throughput"] = good[0] / length * 3600.0
    metrics["good"] = float(good[0])
    metrics["scrapped"] = float(scrapped[0])
    metrics["availability"] = availability
    metrics["quality"] = quality
    metrics["performance"] = oee / (availability * quality) if availability * quality > 0 else 0.0
    metrics["oee"] = oee

    series = {"throughput": [count / interval * 3600.0 for count in completions]}
    series["throughput"][-1] = completions[-1] / (length - (bins - 1) * interval) * 3600.0
    for position, values in enumerate(level_series):
        series[f"buffers.{description.buffer_name(position)}.level"] = values
    bottleneck = max(active, key=lambda name: active[name])
    return ReplicationResult(index, metrics, bottleneck, series, series_times)

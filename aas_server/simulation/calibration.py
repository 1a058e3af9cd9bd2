"""Calibration: cycle-time, MTBF and MTTR distributions of each station fitted from recorded history.

Input is plain data per station (``StationRecord``): its machine-state timeline as ``(start, end,
state)`` spans in seconds (the states of ``aas_server.analytics.states``: ``running``, ``idle``,
``down``, ``planned_stop``, ``unknown``), the increments of its produced counter as ``(time,
parts)`` at the time of the later counter reading (``StateRecorder.increments``), optionally its
scrap increments, and its Technical Data. Samples:

* **time to failure** (MTBF): the ``running`` time between the end of one down episode (a maximal
  run of ``down``) and the start of the next; failures come by operating time, as in the model.
  The running time before the first failure counts as a complete sample (a failure was seen; exact
  for exponential times and for a record that starts at a repair or an installation), the running
  time after the last one is right-censored (the time to failure was at least that long), and a
  stretch with ``unknown`` time in it is left out. The exponential fit is then the total running
  time over the number of failures: the hub's ISO 22400 MTBF (APT / FE);
* **time to repair** (MTTR): the length of each down episode; one that touches either end of the
  record is right-censored;
* **cycle time**: counters are polled, not read per part, so a sample is the time per part over
  consecutive increments, each wholly inside one ``running`` span and with parts in it, gathered
  until at least ``min_parts`` parts (the counter's rounding then moves a sample by at most
  1/``min_parts``). A sample is an average over parts: the mean is sound, the spread is that of
  those averages, narrower than the spread of single parts. An increment of 0 parts while
  ``running`` (a machine whose state signals cannot tell starved from working) ends the run;
* **scrap rate**: scrapped / produced parts, when a scrap counter is recorded.

Each sample set is fitted by maximum likelihood (``scipy.stats``: exponential, lognormal, Weibull,
gamma with location 0, and normal; censored samples through ``scipy.stats.CensoredData``) and the
family with the lowest AIC is taken; each candidate's Kolmogorov–Smirnov statistic and p-value
(over the complete samples) are reported. The p-values are optimistic, since the
parameters come from the same sample (Lilliefors); read them as a ranking and a warning sign, not
as a test at their nominal level. A parameter with fewer than ``min_samples`` samples falls back to
the Technical Data (``CycleTime`` s or ``NominalSpeed`` parts/h; ``MTBF``, ``MTTR`` s as
exponential; ``ScrapRate``), and the report says so and why.

Left out: time-dependent failures, per-reason failure modes, left truncation (the first stretch is
taken as if the machine had been new, or just repaired, at the start of the record).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aas_server.simulation.description import SimulationError

MIN_SAMPLES = 10
"""Samples a parameter needs to be fitted rather than taken from Technical Data."""
MIN_PARTS = 50
"""Parts per cycle-time sample."""
FAMILIES = ("exponential", "lognormal", "weibull", "gamma", "normal")

StateSpan = tuple[float, float, str]
Increment = tuple[float, int]


@dataclass(frozen=True)
class StationRecord:
    """What the hub recorded of one station (times in seconds, e.g. since 1970), and its Technical Data."""

    name: str
    periods: Sequence[StateSpan]
    counts: Sequence[Increment] = ()
    scrap: Sequence[Increment] | None = None
    technical_data: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """One family fitted to the samples: its parameters (description form), log-likelihood, AIC and KS test."""

    family: str
    parameters: dict[str, float]
    log_likelihood: float
    aic: float
    ks_statistic: float
    ks_p_value: float


@dataclass(frozen=True)
class FittedParameter:
    """One station parameter after calibration.

    ``distribution`` is in the form of the line description (``{"kind": "weibull", "shape": …}``),
    or None when the station goes without it (no failures modelled). ``source`` is ``history`` (fitted,
    ``family`` and KS figures of the chosen candidate), ``technical_data`` or ``none``; ``fallback``
    says why the history was not used.
    """

    parameter: str
    samples: int
    source: str
    distribution: dict[str, Any] | None
    family: str | None = None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    sample_mean: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    fallback: str | None = None
    censored: int = 0
    """Right-censored samples that entered the fit beside the ``samples`` complete ones."""

    @property
    def mean(self) -> float | None:
        """The mean of the distribution (None without one)."""
        if self.distribution is None:
            return None
        return _mean(self.distribution)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"samples": self.samples, "source": self.source}
        if self.censored:
            document["censored_samples"] = self.censored
        if self.distribution is not None:
            document["distribution"] = self.distribution
            document["mean"] = _round(self.mean)
        if self.sample_mean is not None:
            document["sample_mean"] = _round(self.sample_mean)
        if self.family is not None:
            document["family"] = self.family
            document["ks_statistic"] = _round(self.ks_statistic)
            document["ks_p_value"] = _round(self.ks_p_value)
        if self.candidates:
            document["candidates"] = [
                {
                    "family": item.family,
                    "parameters": {key: _round(value) for key, value in item.parameters.items()},
                    "aic": _round(item.aic),
                    "ks_statistic": _round(item.ks_statistic),
                    "ks_p_value": _round(item.ks_p_value),
                }
                for item in self.candidates
            ]
        if self.fallback is not None:
            document["fallback"] = self.fallback
        return document


@dataclass(frozen=True)
class StationCalibration:
    name: str
    cycle_time: FittedParameter
    mtbf: FittedParameter
    mttr: FittedParameter
    scrap_rate: FittedParameter
    ideal_cycle_time: float | None
    """The rated cycle (Technical Data) that OEE performance is measured against."""

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name}
        if self.ideal_cycle_time is not None:
            document["ideal_cycle_time"] = self.ideal_cycle_time
        for item in (self.cycle_time, self.mtbf, self.mttr, self.scrap_rate):
            document[item.parameter] = item.to_dict()
        return document


@dataclass(frozen=True)
class CalibrationReport:
    """Every station's fitted parameters, with the settings they were fitted under."""

    stations: list[StationCalibration]
    min_samples: int
    min_parts: int
    start: float | None = None
    end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_samples": self.min_samples,
            "min_parts_per_cycle_sample": self.min_parts,
            "note": "KS p-values are optimistic: the parameters were estimated from the same samples",
            "stations": [station.to_dict() for station in self.stations],
        }

    def process_data(
        self,
        buffers: Sequence[Mapping[str, Any]],
        run: Mapping[str, Any] | None = None,
        name: str = "line",
    ) -> dict[str, Any]:
        """The input of ``line_from_twin`` for the calibrated line (stations in the order of the report)."""
        stations: list[dict[str, Any]] = []
        for station in self.stations:
            entry: dict[str, Any] = {"name": station.name}
            if station.cycle_time.distribution is None:
                raise SimulationError(f"stations[{station.name}].cycle_time: {station.cycle_time.fallback}")
            entry["cycle_time_distribution"] = station.cycle_time.distribution
            if station.ideal_cycle_time is not None:
                entry["technical_data"] = {"CycleTime": station.ideal_cycle_time}
            if station.mtbf.distribution is not None and station.mttr.distribution is not None:
                entry["mtbf_distribution"] = station.mtbf.distribution
                entry["mttr_distribution"] = station.mttr.distribution
            if station.scrap_rate.distribution is not None:
                entry["failure_statistics"] = {"ScrapRate": station.scrap_rate.distribution["value"]}
            stations.append(entry)
        return {"name": name, "stations": stations, "buffers": list(buffers), "run": dict(run or {})}


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def _mean(distribution: Mapping[str, Any]) -> float:
    kind = distribution["kind"]
    if kind == "constant":
        return float(distribution["value"])
    if kind in {"weibull"}:
        return float(distribution["scale"]) * math.gamma(1 + 1 / float(distribution["shape"]))
    if kind == "gamma":
        return float(distribution["shape"]) * float(distribution["scale"])
    if kind == "empirical":
        return math.fsum(distribution["values"]) / len(distribution["values"])
    return float(distribution["mean"])


# --- samples from the record ---------------------------------------------------------------------


def _episodes(periods: Sequence[StateSpan]) -> list[tuple[int, int]]:
    """Index ranges ``[first, last]`` of the maximal runs of ``down``."""
    found: list[tuple[int, int]] = []
    first: int | None = None
    for position, (_, _, state) in enumerate(periods):
        if state == "down":
            first = position if first is None else first
        elif first is not None:
            found.append((first, position - 1))
            first = None
    if first is not None:
        found.append((first, len(periods) - 1))
    return found


def repair_samples(periods: Sequence[StateSpan]) -> tuple[list[float], list[float]]:
    """Lengths of the down episodes: ``(complete, censored)``; an episode touching an end of the record is censored."""
    complete: list[float] = []
    censored: list[float] = []
    for first, last in _episodes(periods):
        length = periods[last][1] - periods[first][0]
        if length <= 0:
            continue
        (complete if first > 0 and last < len(periods) - 1 else censored).append(length)
    return complete, censored


def repair_times(periods: Sequence[StateSpan]) -> list[float]:
    """The length of each down episode that neither starts the record nor runs to its end."""
    return repair_samples(periods)[0]


def failure_samples(periods: Sequence[StateSpan]) -> tuple[list[float], list[float]]:
    """``running`` time to each failure: ``(complete, censored)``.

    Complete: up to each down episode. Censored: after the last one (or the whole record without one).
    Stretches with ``unknown`` time in them are left out.
    """
    episodes = _episodes(periods)
    bounds = [-1, *(index for episode in episodes for index in episode), len(periods)]
    complete: list[float] = []
    censored: list[float] = []
    for position in range(0, len(bounds), 2):
        begin, finish = bounds[position] + 1, bounds[position + 1]
        between = periods[begin:finish]
        if any(state == "unknown" for _, _, state in between):
            continue
        running = math.fsum(end - start for start, end, state in between if state == "running")
        if running <= 0:
            continue
        is_complete = position < len(bounds) - 2
        (complete if is_complete else censored).append(running)
    return complete, censored


def times_to_failure(periods: Sequence[StateSpan]) -> list[float]:
    """The complete ``running`` times to failure (see ``failure_samples``)."""
    return failure_samples(periods)[0]


def cycle_times(periods: Sequence[StateSpan], counts: Sequence[Increment], min_parts: int = MIN_PARTS) -> list[float]:
    """Seconds per part over runs of at least ``min_parts`` parts (rules in the module docstring)."""
    running = [(start, end) for start, end, state in periods if state == "running"]
    starts = [start for start, _ in running]

    def inside(begin: float, finish: float) -> bool:
        index = bisect.bisect_right(starts, begin) - 1
        return index >= 0 and finish <= running[index][1] and begin >= running[index][0]

    found: list[float] = []
    seconds = 0.0
    parts = 0
    for (previous, _), (moment, quantity) in itertools.pairwise(counts):
        if quantity <= 0 or moment <= previous or not inside(previous, moment):
            seconds, parts = 0.0, 0
            continue
        seconds += moment - previous
        parts += quantity
        if parts >= min_parts:
            found.append(seconds / parts)
            seconds, parts = 0.0, 0
    return found


# --- fitting -------------------------------------------------------------------------------------


def fit_candidates(
    samples: Sequence[float], families: Sequence[str] = FAMILIES, censored: Sequence[float] = ()
) -> list[Candidate]:
    """Each family fitted by maximum likelihood to ``samples`` and the right-censored ``censored``, best AIC first.

    The KS figures compare the complete ``samples`` with the fitted distribution.
    """
    import numpy as np
    from scipy import stats

    data = np.asarray(samples, dtype=float)
    right = np.asarray(censored, dtype=float)
    fitted: Any = stats.CensoredData(uncensored=data, right=right) if len(right) else data
    candidates: list[Candidate] = []
    for family in families:
        if family == "exponential":
            _, scale = stats.expon.fit(fitted, floc=0)
            frozen, parameters, count = stats.expon(scale=scale), {"mean": scale}, 1
        elif family == "lognormal":
            shape, _, scale = stats.lognorm.fit(fitted, floc=0)
            mean = scale * math.exp(shape**2 / 2)
            std = mean * math.sqrt(math.expm1(shape**2))
            frozen, parameters, count = stats.lognorm(shape, scale=scale), {"mean": mean, "std": std}, 2
        elif family == "weibull":
            shape, _, scale = stats.weibull_min.fit(fitted, floc=0)
            frozen, parameters, count = stats.weibull_min(shape, scale=scale), {"shape": shape, "scale": scale}, 2
        elif family == "gamma":
            shape, _, scale = stats.gamma.fit(fitted, floc=0)
            frozen, parameters, count = stats.gamma(shape, scale=scale), {"shape": shape, "scale": scale}, 2
        elif family == "normal":
            mean, std = stats.norm.fit(fitted)
            frozen, parameters, count = stats.norm(mean, std), {"mean": mean, "std": std}, 2
        else:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        log_likelihood = float(np.sum(frozen.logpdf(data)) + np.sum(frozen.logsf(right)))
        if not math.isfinite(log_likelihood) or not all(math.isfinite(value) for value in parameters.values()):
            continue
        test = stats.kstest(data, frozen.cdf)
        candidates.append(
            Candidate(
                family,
                {key: float(value) for key, value in parameters.items()},
                log_likelihood,
                2 * count - 2 * log_likelihood,
                float(test.statistic),
                float(test.pvalue),
            )
        )
    return sorted(candidates, key=lambda item: item.aic)


def fit_parameter(
    parameter: str,
    samples: Sequence[float],
    fallback: dict[str, Any] | None,
    fallback_text: str,
    min_samples: int = MIN_SAMPLES,
    families: Sequence[str] = FAMILIES,
    censored: Sequence[float] = (),
) -> FittedParameter:
    """The best fit of ``samples`` (and right-``censored`` ones), or ``fallback`` (Technical Data) with too few."""
    positive = [value for value in samples if value > 0]
    right = [value for value in censored if value > 0]
    sample_mean = math.fsum(positive) / len(positive) if positive else None
    if len(positive) < min_samples:
        reason = f"{len(positive)} samples in the range, fewer than {min_samples}"
        source = "technical_data" if fallback is not None else "none"
        return FittedParameter(
            parameter, len(positive), source, fallback, sample_mean=sample_mean, fallback=f"{reason}: {fallback_text}"
        )
    spread = max(positive) - min(positive)
    if spread <= 1e-9 * max(positive):
        return FittedParameter(
            parameter,
            len(positive),
            "history",
            {"kind": "constant", "value": positive[0]},
            family="constant",
            sample_mean=sample_mean,
        )
    candidates = fit_candidates(positive, families, right)
    best = candidates[0]
    return FittedParameter(
        parameter,
        len(positive),
        "history",
        {"kind": best.family, **best.parameters},
        family=best.family,
        ks_statistic=best.ks_statistic,
        ks_p_value=best.ks_p_value,
        sample_mean=sample_mean,
        candidates=candidates,
        censored=len(right),
    )


def _technical(record: StationRecord, key: str) -> float | None:
    value = record.technical_data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SimulationError(f"stations[{record.name}].technical_data.{key}: must be a number > 0, got {value!r}")
    return float(value)


def calibrate_station(
    record: StationRecord, min_samples: int = MIN_SAMPLES, min_parts: int = MIN_PARTS
) -> StationCalibration:
    """The calibrated parameters of one station (see the module docstring)."""
    periods = sorted(record.periods, key=lambda span: span[0])
    counts = sorted(record.counts, key=lambda item: item[0])
    cycle_time = _technical(record, "CycleTime")
    speed = _technical(record, "NominalSpeed")
    rated = cycle_time if cycle_time is not None else (3600.0 / speed if speed is not None else None)
    cycle_fallback = {"kind": "constant", "value": rated} if rated is not None else None
    cycle_text = (
        f"Technical Data cycle time {rated:g} s" if rated is not None else "no CycleTime or NominalSpeed either"
    )
    fitted: dict[str, FittedParameter] = {
        "cycle_time": fit_parameter(
            "cycle_time", cycle_times(periods, counts, min_parts), cycle_fallback, cycle_text, min_samples
        )
    }
    for key, (samples, censored) in (("mtbf", failure_samples(periods)), ("mttr", repair_samples(periods))):
        value = _technical(record, key.upper())
        fallback = {"kind": "exponential", "mean": value} if value is not None else None
        text = (
            f"Technical Data {key.upper()} {value:g} s (exponential)"
            if value is not None
            else f"no {key.upper()} in Technical Data either"
        )
        fitted[key] = fit_parameter(key, samples, fallback, text, min_samples, censored=censored)
    if (fitted["mtbf"].distribution is None) != (fitted["mttr"].distribution is None):
        # one of the pair alone cannot make failures: the station goes without them, and says so
        for key in ("mtbf", "mttr"):
            item = fitted[key]
            note = "the other of MTBF and MTTR is missing: the station is modelled without failures"
            fitted[key] = FittedParameter(key, item.samples, "none", None, sample_mean=item.sample_mean, fallback=note)
    fitted["scrap_rate"] = _scrap_rate(record, counts)
    return StationCalibration(
        record.name, fitted["cycle_time"], fitted["mtbf"], fitted["mttr"], fitted["scrap_rate"], rated
    )


def _scrap_rate(record: StationRecord, counts: Sequence[Increment]) -> FittedParameter:
    technical = record.technical_data.get("ScrapRate")
    fallback = {"kind": "constant", "value": float(technical)} if technical is not None else None
    source = "technical_data" if fallback is not None else "none"
    text = f"Technical Data ScrapRate {technical:g}" if technical is not None else "no ScrapRate in Technical Data"
    produced = sum(quantity for _, quantity in counts)
    if record.scrap is None:
        return FittedParameter("scrap_rate", produced, source, fallback, fallback=f"no scrap counter: {text}")
    scrapped = sum(quantity for _, quantity in record.scrap)
    if produced <= 0:
        return FittedParameter("scrap_rate", 0, source, fallback, fallback=f"no parts produced in the range: {text}")
    rate = min(scrapped / produced, 0.999)
    return FittedParameter(
        "scrap_rate", produced, "history", {"kind": "constant", "value": rate}, family="proportion", sample_mean=rate
    )


def calibrate(
    records: Sequence[StationRecord],
    *,
    min_samples: int = MIN_SAMPLES,
    min_parts: int = MIN_PARTS,
    start: float | None = None,
    end: float | None = None,
) -> CalibrationReport:
    """Calibrate every station of a line, in flow order (see the module docstring)."""
    if min_samples < 2:
        raise SimulationError(f"min_samples: must be >= 2, got {min_samples}")
    if min_parts < 1:
        raise SimulationError(f"min_parts: must be >= 1, got {min_parts}")
    stations = [calibrate_station(record, min_samples, min_parts) for record in records]
    return CalibrationReport(stations, min_samples, min_parts, start, end)

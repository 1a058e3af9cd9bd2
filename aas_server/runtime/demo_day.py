"""A recorded demo day: the demo's bottling line stepped through 24 h of simulated time, recorded as the hub records it.

Used to validate the what-if simulation against the twin (issue 14, docs/simulation.md). The demo
device model (``BottlingLineSimulator``, built from ``mappings/bottling-line.yaml`` but never
started: no socket) is advanced with ``step(elapsed)``, without sleeping, while a seeded fault
schedule jams the filler (``inject_fault("jam")``) for lognormal repair times after exponential
running times. Every ``poll`` seconds the signals of the demo KPI file (``examples/bottling-line/
kpi.yaml``) are read back through the mapping engine (``read_point``: the registers decoded as the
hub's Modbus connector decodes them) and fed to each asset's ``StateRecorder``, as the hub's KPI
service does from the change bus. The recorded throughput and OEE then come from the hub's own KPI
functions (``analytics.kpi.compute``), and the records for calibration from the same timelines and
counter increments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from aas_server.analytics.kpi import Kpis, Window, compute
from aas_server.analytics.states import MachineState, MachineStateModel, Sample, SignalRef, StateRecorder
from aas_server.devices.bottling_line import BottlingLineSimulator
from aas_server.mapping.schema import load_mapping
from aas_server.runtime.kpi import load_kpi_file
from aas_server.simulation.calibration import CalibrationReport, StationRecord, calibrate
from aas_server.simulation.runner import run_scenario
from aas_server.simulation.statistics import ScenarioResult
from aas_server.simulation.twin import line_from_twin

_ROOT = Path(__file__).resolve().parent.parent.parent
DEMO_MAPPING = _ROOT / "mappings" / "bottling-line.yaml"
DEMO_KPI_FILE = _ROOT / "examples" / "bottling-line" / "kpi.yaml"
DEMO_DAY_START = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
"""06:00 in Europe/Berlin, the start of the demo calendar's early shift."""
DEMO_BUFFER = 3
"""Bottles between filler and capper in the device model (it keeps ``capped >= filled - 3``)."""
FILLER = "urn:aas-server:demo:aas:filler"
CAPPER = "urn:aas-server:demo:aas:capper"


@dataclass(frozen=True)
class FaultSchedule:
    """Filler jams: running time to a jam ~ exponential(``mtbf``), repair ~ lognormal(``mttr_mean``, ``mttr_std``)."""

    mtbf: float = 1800.0
    mttr_mean: float = 300.0
    mttr_std: float = 150.0
    seed: int = 7

    def jams(self, length: float) -> list[tuple[float, float]]:
        """``(start, end)`` of each jam in ``[0, length)`` seconds, drawn from the seed."""
        generator = np.random.default_rng(self.seed)
        sigma_squared = math.log1p((self.mttr_std / self.mttr_mean) ** 2)
        mu = math.log(self.mttr_mean) - sigma_squared / 2
        found: list[tuple[float, float]] = []
        now = 0.0
        while True:
            start = now + float(generator.exponential(self.mtbf))
            if start >= length:
                return found
            end = start + float(generator.lognormal(mu, math.sqrt(sigma_squared)))
            found.append((start, min(end, length)))
            now = end


@dataclass(frozen=True)
class DemoDay:
    """What the hub recorded of the demo line over a day, and its KPIs by the hub's functions."""

    window: Window
    jams: list[tuple[float, float]]
    models: dict[str, MachineStateModel]
    recorders: dict[str, StateRecorder]
    kpis: dict[str, Kpis]

    @property
    def observed_hours(self) -> float:
        """Planned busy time without unknown time, of the filler (the line's reference station), in hours."""
        return self.kpis[FILLER].observed_busy_time / timedelta(hours=1)

    @property
    def throughput(self) -> float:
        """Bottles per hour out of the line (the capper's good quantity) over the observed planned busy time."""
        return self.kpis[CAPPER].good_quantity / self.observed_hours

    @property
    def oee(self) -> float:
        """The filler's OEE (the line's reference station: its rated cycle is the longest, ties to the first)."""
        value = self.kpis[FILLER].oee
        assert value is not None
        return value

    def station_records(
        self, names: Sequence[tuple[str, str]] = (("Filler", FILLER), ("Capper", CAPPER))
    ) -> list[StationRecord]:
        """The calibration input of each asset, in flow order: state spans and produced increments in seconds."""
        records = []
        for name, asset in names:
            recorder = self.recorders[asset]
            periods = [
                (period.start.timestamp(), period.end.timestamp(), period.state.value)
                for period in recorder.timeline(self.window.end)
                if period.end > self.window.start and period.start < self.window.end
            ]
            counts = [
                (item.time.timestamp(), item.quantity)
                for item in recorder.increments
                if item.counter == "produced"
                and not item.across_gap
                and self.window.start <= item.time < self.window.end
            ]
            technical = {"CycleTime": self.models[asset].ideal_cycle_time}
            records.append(StationRecord(name, periods, counts, technical_data=technical))
        return records


def _signal_points(mapping: Any) -> dict[SignalRef, str]:
    return {
        SignalRef(submodel_id=point.target.submodel, id_short_path=point.target.path): point.name
        for point in mapping.points
        if hasattr(point, "target") and point.target is not None
    }


def record_demo_day(
    schedule: FaultSchedule | None = None,
    hours: float = 24.0,
    poll: float = 1.0,
    start: datetime = DEMO_DAY_START,
    device_seed: int = 11,
    sink: Callable[[Sample], None] | None = None,
) -> DemoDay:
    """Step the demo line through ``hours`` with the fault schedule and record it every ``poll`` seconds.

    ``sink``, when given, receives every sample too (e.g. to write them to a history database).
    """
    schedule = schedule or FaultSchedule()
    mapping = load_mapping(DEMO_MAPPING)
    kpi_file = load_kpi_file(DEMO_KPI_FILE)
    models = {model.asset: model for model in kpi_file.assets}
    device = BottlingLineSimulator(mapping, seed=device_seed)
    points = _signal_points(mapping)
    recorders = {asset: StateRecorder(model, start) for asset, model in models.items()}
    signals: dict[SignalRef, list[StateRecorder]] = {}
    for asset, model in models.items():
        for signal in [*model.state_signals(), *(spec.signal for spec in model.counters().values())]:
            signals.setdefault(signal, []).append(recorders[asset])
    length = hours * 3600.0
    jams = schedule.jams(length)
    events = sorted([(begin, "jam") for begin, _ in jams] + [(end, "clear") for _, end in jams])
    now = 0.0
    event = 0
    polls = int(length // poll)
    for number in range(polls + 1):
        moment = number * poll
        while event < len(events) and events[event][0] <= moment:
            at, kind = events[event]
            device.step(at - now)
            now = max(now, at)
            if kind == "jam":
                device.inject_fault("jam")
            else:
                device.clear_faults()
            event += 1
        device.step(moment - now)
        now = moment
        time = start + timedelta(seconds=moment)
        for signal, listeners in signals.items():
            value = device.read_point(points[signal])
            sample = Sample(signal, value, time, value is not None)
            for recorder in listeners:
                recorder.add(sample)
            if sink is not None:
                sink(sample)
    end = start + timedelta(seconds=length)
    span = Window("demo day", start, end)
    kpis = {
        asset: compute(models[asset], recorders[asset].timeline(end), recorders[asset].increments, span)
        for asset in models
    }
    return DemoDay(span, jams, models, recorders, kpis)


def down_share(day: DemoDay, asset: str = FILLER) -> float:
    """The share of the recorded timeline the asset spent ``down`` (for reports)."""
    timeline = day.recorders[asset].timeline(day.window.end)
    total = sum((period.duration for period in timeline), timedelta(0))
    down = sum((period.duration for period in timeline if period.state is MachineState.DOWN), timedelta(0))
    return down / total if total else 0.0


@dataclass(frozen=True)
class Validation:
    """A recorded demo day, the line calibrated from it, and the simulated baseline of that line."""

    day: DemoDay
    report: CalibrationReport
    baseline: ScenarioResult

    def figures(self) -> dict[str, tuple[float, float, float, float]]:
        """``figure -> (recorded, simulated mean, half-width, simulated / recorded - 1)`` for throughput and OEE."""
        found = {}
        for name, recorded in (("throughput", self.day.throughput), ("oee", self.day.oee)):
            estimate = self.baseline.estimates[name]
            found[name] = (recorded, estimate.mean, estimate.half_width, estimate.mean / recorded - 1)
        return found


def validate_against_demo_day(
    replications: int = 5, workers: int = 1, schedule: FaultSchedule | None = None, seed: int = 1
) -> Validation:
    """Record a demo day, calibrate the line from it, and simulate the baseline over the same day length."""
    day = record_demo_day(schedule)
    report = calibrate(day.station_records(), start=day.window.start.timestamp(), end=day.window.end.timestamp())
    horizon = (day.window.end - day.window.start).total_seconds()
    process = report.process_data(
        [{"name": "FillerToCapper", "capacity": DEMO_BUFFER}],
        {"horizon": horizon, "replications": replications, "seed": seed},
        "bottling (calibrated from a demo day)",
    )
    baseline = run_scenario(line_from_twin(process), workers=workers)
    return Validation(day, report, baseline)

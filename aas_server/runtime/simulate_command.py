"""``aas-server simulate``: calibrate a line from the hub's history, run scenario files, and the what-if demo.

* ``simulate calibrate --config hub.yaml --from T --to T [--process SHELL] [-o report.yaml]`` reads the
  history database read-only, replays each KPI asset's recorded signals into its ``StateRecorder``
  (as the KPI service does from the change bus) and fits the line's distributions
  (``simulation.calibration``). The stations are the parts of the KPI roll-up of ``--process``,
  in their order (else every asset of the KPI files).
* ``simulate run scenario.yaml`` runs a scenario (``name``, ``overrides`` by parameter path,
  ``horizon``, ``replications``, ``seed``…, the REST scenario format) on the line of a ``line`` file,
  optionally with a calibration ``report`` and against the unchanged line (``compare_to_baseline``),
  offline with the pure core, and prints the results.
* ``simulate demo`` runs the bottling line's baseline and "filler +10 %" and prints the comparison.

Bad input raises ``SimulationError`` or ``ConfigurationError`` as ``file: path: reason`` (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from basyx.aas import model

from aas_server.analytics.states import MachineStateModel, Sample, SignalRef, StateRecorder
from aas_server.config import HubSettings, SimulationSettings, load_yaml
from aas_server.errors import ConfigurationError, NotFoundError
from aas_server.model.events import Quality
from aas_server.persistence.history import HISTORY_SCHEMA, HistoryDatabase
from aas_server.persistence.migrations import check_sqlite
from aas_server.runtime.hub import load_model_files
from aas_server.runtime.kpi import load_kpi_file
from aas_server.runtime.simulation import process_data
from aas_server.simulation.calibration import CalibrationReport, StationRecord, calibrate
from aas_server.simulation.description import LineDescription, SimulationError, apply_overrides, parse_line
from aas_server.simulation.jobs import RUN_PARAMETERS, comparison_json, parse_scenario, result_json
from aas_server.simulation.runner import run_scenario
from aas_server.simulation.statistics import Difference, ScenarioResult, compare
from aas_server.simulation.twin import line_from_twin
from aas_server.store.history import RawQuery
from aas_server.store.twin_store import TwinStore

SCENARIO_FILE_KEYS = ("line", "process", "report", "compare_to_baseline")
"""Keys of a scenario file beside the REST scenario's (``name``, ``overrides``, run parameters)."""
PAGE = 10_000


def demo_line_path() -> Path:
    """``examples/bottling-line/line.yaml`` beside the package."""
    path = Path(__file__).resolve().parent.parent.parent / "examples" / "bottling-line" / "line.yaml"
    if not path.is_file():
        raise ConfigurationError("the demo line (examples/bottling-line/line.yaml) was not found; run from a checkout")
    return path


def _limits(settings: SimulationSettings) -> dict[str, Any]:
    return {"max_horizon": settings.max_horizon, "max_replications": settings.max_replications}


def load_line(path: Path, settings: SimulationSettings | None = None) -> LineDescription:
    """A line description file, validated (``file: path: reason``).

    Without ``settings`` the run bounds are the pure core's defaults: a scenario on the line is bounded
    by the configured ones when it is applied.
    """
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise SimulationError(f"{path}: a line description must be a mapping")
    try:
        return parse_line(data, **(_limits(settings) if settings is not None else {}))
    except SimulationError as error:
        raise SimulationError(f"{path}: {error}") from None


def calibrated_overrides(document: Any, where: str) -> dict[str, Any]:
    """Overrides that put a calibration report's distributions into a line, station by station name."""
    stations = document.get("stations") if isinstance(document, Mapping) else None
    if not isinstance(stations, list):
        raise SimulationError(f"{where}: stations: a calibration report needs a list of stations")
    overrides: dict[str, Any] = {}
    for position, station in enumerate(stations):
        if not isinstance(station, Mapping) or not isinstance(station.get("name"), str):
            raise SimulationError(f"{where}: stations[{position}].name: is required")
        name = station["name"]
        for parameter in ("cycle_time", "mtbf", "mttr"):
            item = station.get(parameter)
            if isinstance(item, Mapping) and item.get("distribution") is not None:
                overrides[f"stations[{name}].{parameter}"] = item["distribution"]
        if station.get("ideal_cycle_time") is not None:
            overrides[f"stations[{name}].ideal_cycle_time"] = station["ideal_cycle_time"]
        scrap = station.get("scrap_rate")
        if isinstance(scrap, Mapping) and isinstance(scrap.get("distribution"), Mapping):
            overrides[f"stations[{name}].scrap_rate"] = scrap["distribution"].get("value")
    return overrides


def line_of_process(path: Path, shell_id: Any, hub: HubSettings | None) -> LineDescription:
    """The line the hub builds from a process shell of the settings' twins (offline: no live values, no KPIs)."""
    if not isinstance(shell_id, str):
        raise SimulationError(f"{path}: process: must be a shell id")
    if hub is None:
        raise SimulationError(f"{path}: process: needs --config (the settings whose twins hold the shell)")
    store = TwinStore()
    store.add_all(load_model_files(hub.twins))
    try:
        data = process_data(store, shell_id, hub.simulation.buffer_capacity)
    except NotFoundError:
        raise SimulationError(f"{path}: process: no shell {shell_id!r} in the settings' twins") from None
    except SimulationError as error:
        raise SimulationError(f"{path}: process: {error}") from None
    try:
        return line_from_twin(data)
    except SimulationError as error:
        raise SimulationError(f"{path}: process: {error}") from None


def run_scenario_file(
    path: Path, settings: SimulationSettings, workers: int, hub: HubSettings | None = None
) -> dict[str, Any]:
    """Run a scenario file; the results (and comparison) as JSON, the plain result objects under ``_results``.

    The line is the ``line`` file's, or that of the ``process`` shell in ``hub``'s twins.
    """
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise SimulationError(f"{path}: a scenario must be a mapping")
    document = dict(data)
    extra = {key: document.pop(key) for key in SCENARIO_FILE_KEYS if key in document}
    if ("line" in extra) == ("process" in extra):
        raise SimulationError(
            f"{path}: line: give a line description file (relative to the scenario) or a process shell id, not both"
        )
    if "line" in extra and not isinstance(extra["line"], str):
        raise SimulationError(f"{path}: line: must be a file name")
    try:
        scenario = parse_scenario(document)
    except SimulationError as error:
        raise SimulationError(f"{path}: {error}") from None
    if "line" in extra:
        base = load_line(path.parent / extra["line"])
    else:
        base = line_of_process(path, extra["process"], hub)
    if isinstance(extra.get("report"), str):
        report_path = path.parent / extra["report"]
        try:
            base = apply_overrides(base, calibrated_overrides(load_yaml(report_path), str(report_path)))
        except SimulationError as error:
            message = str(error)
            where = "" if message.startswith(str(report_path)) else f"{report_path}: "
            raise SimulationError(f"{where}{message}") from None
    try:
        run = scenario.all_overrides()
        run_only = {key: value for key, value in run.items() if key in RUN_PARAMETERS}
        baseline_line = apply_overrides(base, run_only, **_limits(settings))
        candidate = apply_overrides(base, run, **_limits(settings)).model_copy(update={"name": scenario.name})
    except SimulationError as error:
        raise SimulationError(f"{path}: {error}") from None
    result = run_scenario(candidate, workers=workers)
    output: dict[str, Any] = {"scenario": scenario.name, "result": result_json(result)}
    results: dict[str, Any] = {"candidate": result}
    if extra.get("compare_to_baseline"):
        baseline = run_scenario(baseline_line.model_copy(update={"name": "baseline"}), workers=workers)
        output["baseline"] = result_json(baseline)
        # the same seed and replications: common random numbers, compared replication by replication
        pair = baseline_line.seed == candidate.seed and baseline_line.replications == candidate.replications
        comparison = compare(baseline, result, candidate.confidence, pair=pair)
        output["paired"] = pair
        output["comparison"] = comparison_json(comparison)
        results.update(baseline=baseline, comparison=comparison)
    output["_results"] = results
    return output


# --- printing ------------------------------------------------------------------------------------

_LINE_FIGURES = ("throughput", "oee", "availability", "performance", "quality")


def _interval(mean: float, half_width: float) -> str:
    if not math.isfinite(half_width):
        return _number(mean)
    return f"{_number(mean)} ± {_number(half_width, scale=mean)}"


def _number(value: float, sign: str = "", scale: float | None = None) -> str:
    """Counts and rates (``scale`` >= 100) with one decimal, shares and levels with four."""
    size = abs(value if scale is None else scale)
    return f"{value:{sign},.1f}" if size >= 100 else f"{value:{sign}.4f}"


def print_result(result: ScenarioResult, out: TextIO | None = None) -> None:
    """The line figures, each station's state shares and each buffer's mean level, with 95 % intervals."""
    count = len(result.replications)
    print(
        f"{result.name}: {count} replications, bottleneck {result.bottleneck} ({result.bottleneck_share:.0%})", file=out
    )
    for name in _LINE_FIGURES:
        estimate = result.estimates[name]
        unit = " parts/h" if name == "throughput" else ""
        print(f"  {name:<13} {_interval(estimate.mean, estimate.half_width)}{unit}", file=out or sys.stdout)
    stations = sorted({key.split(".")[1] for key in result.estimates if key.startswith("stations.")})
    for station in stations:
        shares = "  ".join(
            f"{state} {result.estimates[f'stations.{station}.{state}'].mean:.3f}"
            for state in ("utilisation", "down", "starved", "blocked")
        )
        print(f"  station {station}: {shares}", file=out or sys.stdout)
    for key, estimate in result.estimates.items():
        if key.startswith("buffers."):
            print(
                f"  buffer {key.split('.')[1]}: mean level {_interval(estimate.mean, estimate.half_width)}",
                file=out or sys.stdout,
            )


def print_comparison(
    comparison: Mapping[str, Difference], figures: Sequence[str] | None = None, out: TextIO | None = None
) -> None:
    """``candidate - baseline`` of each figure with its 95 % interval and whether it is significant."""
    names = list(figures) if figures is not None else [name for name in _LINE_FIGURES if name in comparison]
    width = max([12, *(len(name) for name in names)])
    print(
        f"  {'figure':<{width}} {'baseline':>10} {'candidate':>10} {'difference':>11}  "
        f"{'95 % interval':<22} significant",
        file=out or sys.stdout,
    )
    for name in names:
        item = comparison[name]
        scale = max(abs(item.baseline), abs(item.candidate))
        interval = f"[{_number(item.low, '+', scale)}, {_number(item.high, '+', scale)}]"
        print(
            f"  {name:<{width}} {_number(item.baseline):>10} {_number(item.candidate):>10} "
            f"{_number(item.difference, '+', scale):>11}  {interval:<22} "
            f"{'yes' if item.significant else 'no'}",
            file=out or sys.stdout,
        )


# --- calibration from the history database -------------------------------------------------------


class ReadOnlyHistory(HistoryDatabase):
    """The history database opened for reads only (``mode=ro``): calibration never writes beside the hub."""

    def _open(self) -> None:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            check_sqlite(connection, self.path, HISTORY_SCHEMA)  # a newer file's rows may mean something else
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._series = {
            (submodel_id, path): (identifier, value_type)
            for identifier, submodel_id, path, value_type in connection.execute(
                "SELECT id, submodel_id, id_short_path, value_type FROM series"
            )
        }


async def _signal_samples(database: HistoryDatabase, signal: SignalRef, start: datetime, end: datetime) -> list[Sample]:
    """The signal's samples in ``[start, end)``, led by its last sample before ``start`` (taken at ``start``)."""
    found: list[Sample] = []
    before = await database.read_raw(RawQuery(signal.submodel_id, signal.id_short_path, start, None, 1, reverse=True))
    for item in before.samples:
        found.append(Sample(signal, item.value, start, item.quality is not Quality.BAD))
    after = None
    while True:
        page = await database.read_raw(RawQuery(signal.submodel_id, signal.id_short_path, start, end, PAGE, after))
        found.extend(
            Sample(signal, item.value, item.source_time, item.quality is not Quality.BAD) for item in page.samples
        )
        if page.next_after is None:
            return found
        after = page.next_after


async def station_record(
    database: HistoryDatabase, model: MachineStateModel, name: str, start: datetime, end: datetime
) -> StationRecord:
    """One asset's recorded states and produced increments in ``[start, end)``, as calibration reads them."""
    signals = {*model.state_signals(), *(spec.signal for spec in model.counters().values())}
    samples: list[Sample] = []
    for signal in sorted(signals, key=lambda item: (item.submodel_id, item.id_short_path)):
        samples.extend(await _signal_samples(database, signal, start, end))
    samples.sort(key=lambda item: item.time)
    recorder = StateRecorder(model, start)
    for sample in samples:
        recorder.add(sample)
    periods = [
        (period.start.timestamp(), period.end.timestamp(), period.state.value) for period in recorder.timeline(end)
    ]
    counts = [
        (item.time.timestamp(), item.quantity)
        for item in recorder.increments
        if item.counter == "produced" and not item.across_gap
    ]
    scrap = [(item.time.timestamp(), item.quantity) for item in recorder.increments if item.counter == "scrap"]
    return StationRecord(
        name,
        periods,
        counts,
        scrap if model.scrap is not None else None,
        technical_data={"CycleTime": model.ideal_cycle_time},
    )


TECHNICAL_KEYS = ("CycleTime", "NominalSpeed", "NominalCapacity", "MTBF", "MTTR", "ScrapRate")


def _numbers(elements: Any) -> dict[str, float]:
    found: dict[str, float] = {}
    for element in elements:
        if isinstance(element, model.SubmodelElementCollection):
            found.update(_numbers(element.value))
        elif (
            isinstance(element, model.Property)
            and element.id_short in TECHNICAL_KEYS
            and isinstance(element.value, int | float)
            and not isinstance(element.value, bool)
        ):
            found[str(element.id_short)] = float(element.value)
    return found


def technical_data(identifiables: Sequence[model.Identifiable], shell_id: str) -> tuple[str | None, dict[str, float]]:
    """The shell's idShort and the numbers of its Technical Data the calibration falls back to (IDTA 02003).

    ``NominalCapacity`` (parts per hour) counts as ``NominalSpeed`` when that is missing.
    """
    by_id = {identifiable.id: identifiable for identifiable in identifiables}
    shell = by_id.get(shell_id)
    if not isinstance(shell, model.AssetAdministrationShell):
        return None, {}
    values: dict[str, float] = {}
    for reference in shell.submodel:
        submodel = by_id.get(reference.key[-1].value) if reference.key else None
        if not isinstance(submodel, model.Submodel):
            continue
        semantic = "".join(key.value for key in submodel.semantic_id.key) if submodel.semantic_id else ""
        if submodel.id_short == "TechnicalData" or "TechnicalData" in semantic:
            values.update(_numbers(submodel.submodel_element))
    capacity = values.pop("NominalCapacity", None)
    if capacity is not None and "NominalSpeed" not in values:
        values["NominalSpeed"] = capacity
    return shell.id_short, values


def _stations(settings: HubSettings, process: str | None) -> list[tuple[str, MachineStateModel]]:
    models: dict[str, MachineStateModel] = {}
    rollups: dict[str, list[str]] = {}
    for path in settings.analytics.kpi_files:
        kpi_file = load_kpi_file(path)
        models.update((model.asset, model) for model in kpi_file.assets)
        rollups.update((rollup.shell, rollup.parts) for rollup in kpi_file.rollups)
    if not models:
        raise ConfigurationError("analytics.kpi_files: calibration needs the machine-state models of a KPI file")
    if process is None:
        assets = list(models)
    elif process in rollups:
        assets = rollups[process]
        missing = [asset for asset in assets if asset not in models]
        if missing:
            raise ConfigurationError(f"--process: {process!r} has parts that are no KPI assets: {', '.join(missing)}")
    else:
        raise ConfigurationError(f"--process: {process!r} is not the shell of a roll-up in the KPI files")
    return [(asset, models[asset]) for asset in assets]


async def calibrate_from_history(
    settings: HubSettings, start: datetime, end: datetime, process: str | None, min_samples: int
) -> tuple[CalibrationReport, list[str]]:
    """The calibration report of the process's stations over ``[start, end)`` of the hub's history."""
    if end <= start:
        raise ConfigurationError(f"--to: must be after --from ({start.isoformat()})")
    stations = _stations(settings, process)
    path = settings.history_path
    if not path.is_file():
        raise ConfigurationError(f"{path}: no history database (is history recording on in the settings?)")
    identifiables = await asyncio.to_thread(load_model_files, settings.twins) if settings.twins else []
    records = []
    async with ReadOnlyHistory(path) as database:
        for asset, machine in stations:
            id_short, technical = technical_data(identifiables, asset)
            name = id_short or asset.rstrip("/").rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            record = await station_record(database, machine, name, start, end)
            if "CycleTime" in technical or "NominalSpeed" in technical:
                record = replace(record, technical_data=technical)
            else:
                record = replace(record, technical_data={**record.technical_data, **technical})
            records.append(record)
    report = calibrate(records, min_samples=min_samples, start=start.timestamp(), end=end.timestamp())
    return report, [asset for asset, _ in stations]


def report_document(report: CalibrationReport, assets: Sequence[str], start: datetime, end: datetime) -> dict[str, Any]:
    document = {"from": start.isoformat(), "to": end.isoformat(), **report.to_dict()}
    for station, asset in zip(document["stations"], assets, strict=True):
        station["asset"] = asset
    return document


def print_report(report: CalibrationReport, out: TextIO | None = None) -> None:
    for station in report.stations:
        for item in (station.cycle_time, station.mtbf, station.mttr, station.scrap_rate):
            if item.source == "history" and item.family != "proportion":
                ks = f", KS D={item.ks_statistic:.3f} p={item.ks_p_value:.3g}" if item.ks_statistic is not None else ""
                text = f"{item.family} mean {item.mean:.4g} (n={item.samples}{ks})"
            elif item.source == "history":
                text = f"{item.mean:.4g} (n={item.samples} parts)"
            else:
                text = f"{item.source}: {item.fallback}"
            print(f"{station.name}.{item.parameter}: {text}", file=out or sys.stdout)


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time of an option; one without an offset is refused (times are timezone-aware)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{option}: not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigurationError(f"{option}: {text!r} needs a UTC offset (e.g. {text}+00:00 or {text}Z)")
    return moment.astimezone(UTC)


def write_yaml(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True), encoding="utf-8")


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(
        json.dumps({k: v for k, v in document.items() if not k.startswith("_")}, indent=2), encoding="utf-8"
    )


def demo(workers: int, hours: float | None, replications: int | None, out: TextIO | None = None) -> None:
    """The bottling line's baseline and "filler +10 %", and the comparison."""
    base = load_line(demo_line_path(), SimulationSettings())
    run: dict[str, Any] = {}
    if hours is not None:
        run["horizon"] = hours * 3600
    if replications is not None:
        run["replications"] = replications
    base = apply_overrides(base, run) if run else base
    candidate = apply_overrides(base, {"stations[Filler].speed_factor": 1.1}).model_copy(
        update={"name": "filler +10 %"}
    )
    print(
        f"What-if on the bottling line (examples/bottling-line/line.yaml): {base.replications} replications "
        f"of {base.horizon / 3600:g} h, seed {base.seed}, common random numbers",
        file=out or sys.stdout,
    )
    baseline = run_scenario(base.model_copy(update={"name": "baseline"}), workers=workers)
    changed = run_scenario(candidate, workers=workers)
    print_result(baseline, out)
    print_result(changed, out)
    print("filler +10 % against the baseline (paired-t intervals: common random numbers):", file=out or sys.stdout)
    print_comparison(
        compare(baseline, changed, pair=True),
        [
            "throughput",
            "oee",
            "availability",
            "stations.Filler.down",
            "stations.Filler.blocked",
            "stations.Capper.starved",
            "buffers.FillerToCapper.mean_level",
        ],
        out,
    )

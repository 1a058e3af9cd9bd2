"""``aas-server``: serve | demo | check | import | export | nodeset | schema | simulate.

Exit codes: 0 success, 1 runtime failure (a port in use, a database error), 2 invalid input (a
settings, twin, mapping or package file that does not validate, a file or folder that cannot be
read or written), each reported as ``file: item.field: reason`` without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aas_server import __version__
from aas_server.config import HubSettings, load_settings, load_yaml
from aas_server.errors import ConfigurationError, ConflictError, HubError, InvalidRequestError, PackageError
from aas_server.security.logs import configure_logging

if TYPE_CHECKING:
    from basyx.aas import model

    from aas_server.persistence.sqlite import StoredValue

_LOG = logging.getLogger("aas_server")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2

RDF_FORMATS: dict[str, str] = {"turtle": "turtle", "jsonld": "json-ld"}
"""``export --format`` names of the RDF serialisations (``docs/rdf.md``)."""
RDF_EXTENSIONS: dict[str, str] = {".ttl": "turtle", ".jsonld": "jsonld"}


def demo_settings_path() -> Path:
    """The bundled demo plant's settings: ``examples/bottling-line/hub.yaml`` beside the package."""
    candidates = [
        Path(__file__).resolve().parent.parent / "examples" / "bottling-line" / "hub.yaml",
        Path.cwd() / "examples" / "bottling-line" / "hub.yaml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigurationError(
        "the demo plant (examples/bottling-line/hub.yaml) was not found; run from a checkout of the project"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aas-server", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"aas-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub with a settings file")
    serve.add_argument("--config", "-c", type=Path, required=True, help="settings file (YAML)")

    demo = commands.add_parser("demo", help="run the demo bottling plant with a simulated Modbus device")
    demo.add_argument("--data-dir", type=Path, help="where the database and certificates go (default: ./data/demo)")
    demo.add_argument("--rest-port", type=int, help="REST port (default 8081)")
    demo.add_argument("--opcua-port", type=int, help="OPC UA port (default 4840)")
    demo.add_argument("--modbus-port", type=int, help="simulated device's Modbus TCP port (default 5020)")
    demo.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=["bearing-wear", "jam", "temperature-excursion", "sensor-stuck"],
        help="play this fault on the simulated line from the start (repeatable)",
    )

    check = commands.add_parser("check", help="validate settings, twin definition or mapping files")
    check.add_argument("files", type=Path, nargs="+")

    importing = commands.add_parser(
        "import",
        help="read AAS packages (AASX, JSON, XML; v3.0 or v3.1) and report every repair and dropped element; "
        "with --config, add them to the hub's database",
    )
    importing.add_argument("files", type=Path, nargs="+")
    importing.add_argument("--config", "-c", type=Path, help="settings file whose database receives the objects")
    importing.add_argument("--strict", action="store_true", help="reject a package that needs any repair")
    importing.add_argument("--replace", action="store_true", help="replace objects whose id exists already")
    importing.add_argument("--report", type=Path, help="write the import reports as JSON to this file")

    exporting = commands.add_parser(
        "export",
        help="write the hub's model as an AASX, JSON or XML package, or with its last values as RDF (Turtle, JSON-LD)",
    )
    exporting.add_argument(
        "output", type=Path, help="file to write; the format follows its extension (.aasx .json .xml .ttl .jsonld)"
    )
    exporting.add_argument("--config", "-c", type=Path, required=True, help="settings file of the hub")
    exporting.add_argument("--format", choices=["aasx", "json", "xml", *RDF_FORMATS], help="overrides the extension")

    schema = commands.add_parser("schema", help="print the JSON Schema (draft 2020-12) of a file kind, for editors")
    schema.add_argument(
        "kind", choices=["mapping", "settings", "rules"], help="mapping files, hub settings files or monitoring rules"
    )

    simulate = commands.add_parser(
        "simulate", help="what-if simulation of a line: calibrate from history, run scenario files, the demo"
    )
    simulate_commands = simulate.add_subparsers(dest="simulate_command", required=True)
    simulate_run = simulate_commands.add_parser("run", help="run a scenario file offline and print its results")
    simulate_run.add_argument("scenario", type=Path, help="scenario file (YAML): line, overrides, horizon, ...")
    simulate_run.add_argument("--config", "-c", type=Path, help="settings file whose simulation limits apply")
    simulate_run.add_argument("--workers", type=int, default=1, help="worker processes for the replications")
    simulate_run.add_argument("--output", "-o", type=Path, help="write the results as JSON to this file")
    simulate_calibrate = simulate_commands.add_parser(
        "calibrate", help="fit cycle-time, MTBF and MTTR distributions from a time range of the hub's history"
    )
    simulate_calibrate.add_argument("--config", "-c", type=Path, required=True, help="settings file of the hub")
    simulate_calibrate.add_argument("--from", dest="start", required=True, help="start (ISO 8601 with offset)")
    simulate_calibrate.add_argument("--to", dest="end", required=True, help="end (ISO 8601 with offset)")
    simulate_calibrate.add_argument("--process", help="process shell id: its KPI roll-up's parts are the stations")
    simulate_calibrate.add_argument(
        "--min-samples", type=int, default=10, help="samples a parameter needs to be fitted"
    )
    simulate_calibrate.add_argument("--output", "-o", type=Path, help="write the report (YAML) to this file")
    simulate_demo = simulate_commands.add_parser(
        "demo", help='the bottling line\'s baseline against "filler +10 %%", with the comparison'
    )
    simulate_demo.add_argument("--workers", type=int, default=2, help="worker processes for the replications")
    simulate_demo.add_argument("--hours", type=float, help="simulated hours per replication (default 8)")
    simulate_demo.add_argument("--replications", type=int, help="replications per scenario (default 10)")

    nodeset = commands.add_parser("nodeset", help="write OPC UA NodeSet2 XML: the AAS type model or the address space")
    nodeset_commands = nodeset.add_subparsers(dest="nodeset_command", required=True)
    nodeset_types = nodeset_commands.add_parser(
        "types", help="write the hub's AAS v3 type model (nodesets/aas-server.types.NodeSet2.xml)"
    )
    nodeset_types.add_argument("output", type=Path, help="file to write")
    nodeset_export = nodeset_commands.add_parser(
        "export", help="write the OPC UA address space of the hub's current model, for offline engineering tools"
    )
    nodeset_export.add_argument("output", type=Path, help="file to write")
    nodeset_export.add_argument("--config", "-c", type=Path, required=True, help="settings file of the hub")
    return parser


def check_file(path: Path) -> str:
    """Validate one file by its kind (mapping, twins, settings); return a one-line summary or raise."""
    from aas_server.mapping.schema import load_mapping
    from aas_server.model.twins import build_environment, load_twins
    from aas_server.runtime.hub import load_mapping_source
    from aas_server.security.access import check_security

    if path.suffix.lower() in {".aasx", ".json", ".xml"}:
        mapping = load_mapping_source(path)
        return f"{path}: mapping (AID/AIMC) ok ({len(mapping.devices)} devices, {len(mapping.points)} points)"
    data = load_yaml(path)
    if isinstance(data, dict) and "rules" in data and not {"rest", "opcua", "mappings", "points"} & data.keys():
        from aas_server.runtime.analytics import load_rule_files

        rules = load_rule_files([path], None)
        return f"{path}: monitoring rules ok ({len(rules)} rules; elements checked with the settings file)"
    if isinstance(data, dict) and "assets" in data and not {"rest", "opcua", "mappings", "twins"} & data.keys():
        from aas_server.runtime.kpi import load_kpi_file

        kpis = load_kpi_file(path)
        counts = f"{len(kpis.assets)} assets, {len(kpis.rollups)} roll-ups"
        return f"{path}: KPI file ok ({counts}; signals checked with the settings file)"
    if isinstance(data, dict) and ("points" in data or "devices" in data):
        mapping = load_mapping(path)
        return f"{path}: mapping ok ({len(mapping.devices)} devices, {len(mapping.points)} points)"
    if isinstance(data, dict) and "twins" in data and not {"rest", "opcua", "mappings"} & data.keys():
        identifiables = build_environment(load_twins(path))
        return f"{path}: twin definitions ok ({len(identifiables)} identifiables)"
    settings = load_settings(path)
    problems = check_security(settings)
    if problems:
        raise ConfigurationError("\n".join(f"{path}: {problem}" for problem in problems))
    for mapping_path in settings.mappings:
        load_mapping_source(mapping_path)
    for twin_path in settings.twins:
        if twin_path.suffix.lower() != ".json":
            build_environment(load_twins(twin_path))
    analytics = settings.analytics
    predictive = analytics.predictive.detectors or analytics.predictive.wear
    if settings.rollups or analytics.rules_files or analytics.kpi_files or predictive:
        from aas_server.runtime.analytics import known_elements, load_rule_files
        from aas_server.runtime.kpi import check_kpi_files
        from aas_server.runtime.predictive import check_predictive
        from aas_server.runtime.rollups import RollupService
        from aas_server.store.twin_store import TwinStore

        identifiables = _model_from_settings(settings)
        # the submodels the hub adds before its roll-ups and rules: they may use KPIs and predictions
        derived = check_kpi_files(analytics.kpi_files, identifiables) + check_predictive(settings, identifiables)
        if settings.rollups:
            store = TwinStore()
            store.add_all([*identifiables, *derived])
            RollupService(store, settings.rollups)  # refuses unknown parts, type clashes and cycles
        if analytics.rules_files:
            load_rule_files(analytics.rules_files, known_elements([*identifiables, *derived]))
    security = settings.security
    access = (
        f"access control on: {len(security.api_keys)} API keys, tokens {'on' if security.tokens else 'off'}, "
        f"{len(security.rules)} rules"
        if security.enabled
        else "access control OFF"
    )
    return f"{path}: settings ok ({len(settings.twins)} twin files, {len(settings.mappings)} mapping files; {access})"


async def _import(arguments: argparse.Namespace) -> int:
    """Read each package; with ``--config``, store what was taken (skip or replace existing ids).

    All packages are read and checked before anything is stored; then their objects and files are
    stored in one transaction (``TwinStore.commit_identifiables``). If any package cannot be read,
    or the objects cannot be stored, nothing is stored.
    """
    from aas_server.exchange import ImportResult, read_package_file
    from aas_server.persistence.sqlite import SqliteRepository
    from aas_server.store.files import owned_files
    from aas_server.store.twin_store import TwinStore

    results: list[ImportResult] = []
    status = EXIT_OK
    for path in arguments.files:
        try:
            result = await asyncio.to_thread(read_package_file, path, strict=arguments.strict)
        except PackageError as error:
            print(f"{path}: {error}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        print(result.report.summary())
        results.append(result)
    if arguments.report:
        arguments.report.write_text(
            json.dumps([result.report.to_json() for result in results], indent=2), encoding="utf-8"
        )
    if arguments.config is None or not results:
        return status
    settings = load_settings(arguments.config)
    if status != EXIT_OK:
        print(f"nothing stored in {settings.sqlite_path}: not every package could be read", file=sys.stderr)
        return status
    async with SqliteRepository(settings.sqlite_path) as repository:
        store = TwinStore(journal=repository)
        store.add_all(await repository.load_identifiables())
        existing = {identifiable.id for identifiable in store.identifiables()}
        batch: dict[str, model.Identifiable] = {}
        files: dict[str, tuple[bytes, str]] = {}
        for result in results:
            taken = [i for i in result.identifiables if arguments.replace or i.id not in existing | batch.keys()]
            for skipped in sorted({i.id for i in result.identifiables} - {i.id for i in taken}):
                print(f"{result.report.source}: {skipped!r} exists already; skipped (use --replace)", file=sys.stderr)
            batch.update((identifiable.id, identifiable) for identifiable in taken)
            files.update(owned_files(taken, result.supplementary_files))
        try:
            await store.commit_identifiables(list(batch.values()), replace=arguments.replace, files=files)
        except HubError as error:
            print(f"{error}; nothing stored in {settings.sqlite_path}", file=sys.stderr)
            return EXIT_INVALID if isinstance(error, (ConflictError, InvalidRequestError)) else EXIT_FAILURE
        for result in results:
            count = sum(1 for identifiable in result.identifiables if batch.get(identifiable.id) is identifiable)
            print(f"{result.report.source}: {count} identifiables stored in {settings.sqlite_path}")
    return status


async def _export(arguments: argparse.Namespace) -> int:
    from aas_server.exchange import write_package_file
    from aas_server.persistence.sqlite import SqliteRepository
    from aas_server.store.files import stored_package_files

    rdf_format = RDF_FORMATS.get(arguments.format or RDF_EXTENSIONS.get(arguments.output.suffix.lower(), ""))
    settings = load_settings(arguments.config)
    async with SqliteRepository(settings.sqlite_path) as repository:
        identifiables = await repository.load_identifiables()
        if not identifiables:
            identifiables = await asyncio.to_thread(_model_from_settings, settings)
        stored_values = await repository.load_values() if rdf_format else []
        files = {} if rdf_format else stored_package_files(identifiables, await repository.load_files())
    if rdf_format:
        triples = await asyncio.to_thread(_write_rdf, arguments.output, identifiables, stored_values, rdf_format)
        print(f"{arguments.output}: {len(identifiables)} identifiables with their last values, {triples} triples")
        return EXIT_OK
    await asyncio.to_thread(write_package_file, arguments.output, identifiables, files, arguments.format)
    print(f"{arguments.output}: {len(identifiables)} identifiables, {len(files)} supplementary files")
    return EXIT_OK


def _write_rdf(
    output: Path, identifiables: list[model.Identifiable], stored_values: list[StoredValue], rdf_format: str
) -> int:
    """Write the model as RDF with the values last persisted, with the quality and source time they had then
    (Properties without a persisted value get neither: the hub is not running, nothing vouches for them now)."""
    from basyx.aas import model

    from aas_server.model.events import ValueChanged
    from aas_server.semantics import rdf
    from aas_server.store.twin_store import TwinStore

    store = TwinStore()
    store.add_all(identifiables)
    for stored in stored_values:
        state = store.state(stored.submodel_id, stored.id_short_path)
        if state is None or stored.lexical_value is None or not isinstance(state.element, model.Property):
            continue
        try:
            value = stored.typed_value(state.element.value_type)
        except ValueError:
            continue
        store.apply(
            ValueChanged(
                stored.submodel_id,
                stored.id_short_path,
                value,
                stored.source_time,
                stored.quality,
                stored.reason,
                stored.server_time,
                "restore",
            )
        )
    persisted = {(stored.submodel_id, stored.id_short_path) for stored in stored_values}
    values = {key: value for key, value in rdf.live_values(store).items() if key in persisted}
    graph = rdf.build_graph(rdf.take_snapshot(store, values))
    output.write_bytes(graph.serialize(rdf.JSON_LD if rdf_format == rdf.JSON_LD else rdf.TURTLE))
    return len(graph)


async def _nodeset(arguments: argparse.Namespace) -> int:
    """``nodeset types``: the type model; ``nodeset export``: the instance address space of the current model."""
    from aas_server.opcua import nodeset
    from aas_server.opcua.types import TYPES_NAMESPACE_URI

    if arguments.nodeset_command == "types":
        await asyncio.to_thread(arguments.output.write_bytes, nodeset.types_nodeset())
        print(f"{arguments.output}: the AAS type model ({TYPES_NAMESPACE_URI})")
        return EXIT_OK
    from aas_server.mapping.bindings import element_binding
    from aas_server.mapping.schema import OpcUaMethodPoint
    from aas_server.persistence.sqlite import SqliteRepository
    from aas_server.runtime.hub import load_mapping_source
    from aas_server.store.twin_store import ElementBinding

    settings = load_settings(arguments.config)
    bindings: dict[tuple[str, str], ElementBinding] = {}
    for mapping_path in settings.mappings:
        mapping = load_mapping_source(mapping_path)
        for point in mapping.points:
            if isinstance(point, OpcUaMethodPoint):
                continue
            bindings[(point.target.submodel, point.target.path)] = element_binding(point, mapping)
    async with SqliteRepository(settings.sqlite_path) as repository:
        identifiables = await repository.load_identifiables()
    if not identifiables:
        identifiables = await asyncio.to_thread(_model_from_settings, settings)
    content = await asyncio.to_thread(
        nodeset.export_address_space, identifiables, bindings, settings.opcua.namespace_uri, version=__version__
    )
    await asyncio.to_thread(arguments.output.write_bytes, content)
    print(
        f"{arguments.output}: the address space of {len(identifiables)} identifiables ({settings.opcua.namespace_uri})"
    )
    return EXIT_OK


def _model_from_settings(settings: HubSettings) -> list[Any]:
    from aas_server.runtime.hub import load_model_files

    return load_model_files(settings.twins)


async def _serve(settings: HubSettings) -> None:
    from aas_server.runtime.hub import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    async with Hub(settings) as hub:
        print(f"REST API:  {hub.rest_url}", flush=True)
        print(f"OPC UA:    {hub.opcua_url}", flush=True)
        if hub.simulator is not None:
            print(f"Simulated Modbus device on 127.0.0.1:{hub.simulator.port}", flush=True)
        print("Press Ctrl+C to stop.", flush=True)
        await stop.wait()
    _LOG.info("stopped")


def _demo_settings(arguments: argparse.Namespace) -> HubSettings:
    settings = load_settings(demo_settings_path())
    update: dict[str, object] = {"data_dir": (arguments.data_dir or Path("data/demo")).resolve()}
    if arguments.rest_port is not None:
        update["rest"] = settings.rest.model_copy(update={"port": arguments.rest_port})
    if arguments.opcua_port is not None:
        update["opcua"] = settings.opcua.model_copy(update={"port": arguments.opcua_port})
    simulator: dict[str, object] = {}
    if arguments.modbus_port is not None:
        simulator["port"] = arguments.modbus_port
    if arguments.fault:
        simulator["faults"] = list(dict.fromkeys(arguments.fault))
    if simulator:
        update["simulator"] = settings.simulator.model_copy(update=simulator)
    return settings.model_copy(update=update)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of mapping files (``mapping``), settings files (``settings``) or rules files (``rules``)."""
    if kind == "rules":
        from aas_server.analytics.rules import rules_json_schema

        return rules_json_schema()
    if kind == "mapping":
        from aas_server.mapping.schema import mapping_json_schema

        return mapping_json_schema()
    schema = HubSettings.model_json_schema()
    schema["title"] = "AAS server settings file"
    return schema


def refusal(error: HubError | OSError) -> tuple[int, str]:
    """The exit status and the ``file: reason`` line (no traceback) for an error of a command.

    A file or folder that cannot be read or written (``OSError`` naming it) is invalid input, as a
    file that does not validate is; an ``OSError`` without a file (a port in use) is a runtime failure.
    """
    if isinstance(error, ConfigurationError | PackageError):
        return EXIT_INVALID, str(error)
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        if error.filename is not None:
            return EXIT_INVALID, f"{error.filename}: {reason}"
        return EXIT_FAILURE, f"cannot start: {reason}"
    return EXIT_FAILURE, str(error)


def _check(files: Sequence[Path]) -> int:
    status = EXIT_OK
    for path in files:
        try:
            print(check_file(path))
        except (HubError, OSError) as error:
            _, message = refusal(error)
            print(message if message.startswith(str(path)) else f"{path}: {message}", file=sys.stderr)
            status = EXIT_INVALID
    return status


def _simulate(arguments: argparse.Namespace) -> int:
    """``simulate run | calibrate | demo`` (``aas_server.runtime.simulate_command``); bad input: exit 2."""
    from aas_server.config import SimulationSettings
    from aas_server.runtime import simulate_command as command

    try:
        if arguments.simulate_command == "demo":
            command.demo(arguments.workers, arguments.hours, arguments.replications)
            return EXIT_OK
        if arguments.simulate_command == "run":
            hub = load_settings(arguments.config) if arguments.config else None
            limits = hub.simulation if hub is not None else SimulationSettings()
            output = command.run_scenario_file(arguments.scenario, limits, arguments.workers, hub)
            results = output["_results"]
            if "baseline" in results:
                command.print_result(results["baseline"])
            command.print_result(results["candidate"])
            if "comparison" in results:
                how = "paired-t intervals: common random numbers" if output["paired"] else "Welch intervals"
                print(f"{results['candidate'].name} against the baseline ({how}):")
                command.print_comparison(results["comparison"])
            if arguments.output:
                command.write_json(arguments.output, output)
            return EXIT_OK
        settings = load_settings(arguments.config)
        start = command.parse_time(arguments.start, "--from")
        end = command.parse_time(arguments.end, "--to")
        report, assets = asyncio.run(
            command.calibrate_from_history(settings, start, end, arguments.process, arguments.min_samples)
        )
        command.print_report(report)
        if arguments.output:
            command.write_yaml(arguments.output, command.report_document(report, assets, start, end))
        return EXIT_OK
    except (ConfigurationError, InvalidRequestError) as error:
        print(str(error), file=sys.stderr)
        return EXIT_INVALID
    except (HubError, OSError) as error:
        status, message = refusal(error)
        print(message, file=sys.stderr)
        return status


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    configure_logging(logging.WARNING)  # every command's warnings go through the escaping formatter too
    if arguments.command == "schema":
        print(json.dumps(json_schema(arguments.kind), indent=2, ensure_ascii=False))
        return EXIT_OK
    if arguments.command == "check":
        return _check(arguments.files)
    if arguments.command == "simulate":
        return _simulate(arguments)
    if arguments.command in ("import", "export", "nodeset"):
        commands = {"import": _import, "export": _export, "nodeset": _nodeset}
        try:
            return asyncio.run(commands[arguments.command](arguments))
        except (HubError, OSError) as error:
            status, message = refusal(error)
            print(message, file=sys.stderr)
            return status
    try:
        settings = load_settings(arguments.config) if arguments.command == "serve" else _demo_settings(arguments)
    except ConfigurationError as error:
        print(str(error), file=sys.stderr)
        return EXIT_INVALID
    configure_logging(settings.log_level)
    # asyncua logs every node of its standard address space at INFO while starting.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    try:
        asyncio.run(_serve(settings))
    except ConfigurationError as error:
        print(str(error), file=sys.stderr)
        return EXIT_INVALID
    except (HubError, OSError) as error:
        status, message = refusal(error)
        _LOG.error("%s", message)
        return status
    return EXIT_OK

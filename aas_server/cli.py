"""``aas-server``: serve | demo | check.

Exit codes: 0 success, 1 runtime failure, 2 invalid input (a settings, twin or mapping file that
does not validate), each reported as ``file: item.field: reason`` without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aas_server import __version__
from aas_server.config import HubSettings, load_settings, load_yaml
from aas_server.errors import ConfigurationError, HubError

_LOG = logging.getLogger("aas_server")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


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

    check = commands.add_parser("check", help="validate settings, twin definition or mapping files")
    check.add_argument("files", type=Path, nargs="+")
    return parser


def check_file(path: Path) -> str:
    """Validate one file by its kind (mapping, twins, settings); return a one-line summary or raise."""
    from aas_server.mapping.schema import load_mapping
    from aas_server.model.twins import build_environment, load_twins

    data = load_yaml(path)
    if isinstance(data, dict) and ("points" in data or "devices" in data):
        mapping = load_mapping(path)
        return f"{path}: mapping ok ({len(mapping.devices)} devices, {len(mapping.points)} points)"
    if isinstance(data, dict) and "twins" in data and not {"rest", "opcua", "mappings"} & data.keys():
        identifiables = build_environment(load_twins(path))
        return f"{path}: twin definitions ok ({len(identifiables)} identifiables)"
    settings = load_settings(path)
    for mapping_path in settings.mappings:
        load_mapping(mapping_path)
    for twin_path in settings.twins:
        if twin_path.suffix.lower() != ".json":
            build_environment(load_twins(twin_path))
    return f"{path}: settings ok ({len(settings.twins)} twin files, {len(settings.mappings)} mapping files)"


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
    if arguments.modbus_port is not None:
        update["simulator"] = settings.simulator.model_copy(update={"port": arguments.modbus_port})
    return settings.model_copy(update=update)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "check":
        status = EXIT_OK
        for path in arguments.files:
            try:
                print(check_file(path))
            except ConfigurationError as error:
                print(str(error), file=sys.stderr)
                status = EXIT_INVALID
        return status
    try:
        settings = load_settings(arguments.config) if arguments.command == "serve" else _demo_settings(arguments)
    except ConfigurationError as error:
        print(str(error), file=sys.stderr)
        return EXIT_INVALID
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # asyncua logs every node of its standard address space at INFO while starting.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    try:
        asyncio.run(_serve(settings))
    except ConfigurationError as error:
        print(str(error), file=sys.stderr)
        return EXIT_INVALID
    except HubError as error:
        _LOG.error("%s", error)
        return EXIT_FAILURE
    except OSError as error:
        _LOG.error("cannot start: %s", error)
        return EXIT_FAILURE
    return EXIT_OK

"""The dependency rules of ARCHITECTURE.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aas_server"

LAYERS = {
    "model": 0, "config": 0, "errors": 0, "lifecycle": 0,
    "store": 1, "mapping": 1, "semantics": 1, "security": 1, "exchange": 1, "analytics": 1,
    "api": 2, "opcua": 2, "connectors": 2, "persistence": 2, "devices": 2, "events": 2,
    "cli": 3, "runtime": 3, "__main__": 3, "__init__": 0,
}  # fmt: skip
EDGES = {"api", "opcua", "connectors", "persistence", "devices", "events"}
"""``connectors`` reads and writes devices (southbound); ``events`` publishes change events (northbound);
``devices`` are simulated field devices (the demo PLC), which the hub reaches only through a connector."""

# Protocol library -> the modules (relative paths, or package folders ending in "/") allowed to import it.
PROTOCOL_HOMES = {
    # the client connector, and the simulated device server it talks to like any PLC
    "pymodbus": ["connectors/modbus.py", "devices/modbus_server.py"],
    "asyncua": ["opcua/", "connectors/opcua_client.py"],
    "aiohttp": ["api/", "runtime/"],
    # southbound device data, and northbound change events: two edges, which never import each other
    "paho": ["connectors/mqtt.py", "connectors/sparkplug.py", "events/mqtt.py"],
    # Sparkplug B payloads (protobuf classes of the Tahu schema, from leaf-device)
    "leaf_device": ["connectors/sparkplug.py"],
    "google": ["connectors/sparkplug.py"],
    "rdflib": ["semantics/"],
}
LOW_LEVEL_FORBIDDEN = {"socket", "ssl", "sqlite3", "http", "urllib.request", "asyncio.streams"}
LOW_LEVEL_HOMES = {"ssl": ["security/tls.py"]}
"""The one L1 module that may import ``ssl``: it builds TLS contexts from files and opens no socket."""
L0_ALLOWED_THIRD_PARTY = {"pydantic", "basyx", "yaml", "dateutil"}


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py"))


def _top_part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; use absolute aas_server imports")
    return names


def test_the_package_has_the_documented_layout() -> None:
    for folder in (
        "model",
        "store",
        "mapping",
        "semantics",
        "security",
        "connectors",
        "devices",
        "events",
        "opcua",
        "api",
        "persistence",
        "runtime",
    ):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    for module in ("cli.py", "__main__.py", "config.py", "errors.py", "lifecycle.py"):
        assert (PACKAGE / module).is_file(), module


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_module_respects_layers_and_protocol_homes(path: Path) -> None:
    relative = str(path.relative_to(PACKAGE))
    part = _top_part(path)
    layer = LAYERS[part]
    for name in _imports(path):
        root = name.split(".")[0]
        if root == "aas_server" and "." in name:
            target = name.split(".")[1]
            target_layer = LAYERS.get(target, 0)
            assert target_layer <= layer, f"{relative} (L{layer}) imports {name} (L{target_layer})"
            if part in EDGES and target in EDGES:
                assert target == part, f"edge {relative} imports another edge: {name}"
        if root in PROTOCOL_HOMES:
            homes = PROTOCOL_HOMES[root]
            assert any(relative == home or (home.endswith("/") and relative.startswith(home)) for home in homes), (
                f"{relative} imports {name}; {root} belongs only in {homes}"
            )
        if layer <= 1 and relative not in LOW_LEVEL_HOMES.get(root, []):
            assert name not in LOW_LEVEL_FORBIDDEN, f"{relative} (L{layer}) does I/O through {name}"
            assert root not in {"socket", "ssl", "sqlite3"}, f"{relative} (L{layer}) does I/O through {name}"
        if layer == 0 and root not in {"aas_server", "__future__"} and root not in sys.stdlib_module_names:
            assert root in L0_ALLOWED_THIRD_PARTY, f"{relative} (L0) imports third-party {name}"
            if root == "basyx":
                assert name.startswith("basyx.aas.model") or name == "basyx.aas", (
                    f"{relative} (L0) imports {name}; only basyx.aas.model belongs in L0"
                )


def test_connectors_are_southbound_only() -> None:
    """Device servers live in ``devices/`` and the northbound event publisher in ``events/``, not among connectors."""
    northbound_or_serving = ("pymodbus.server", "pymodbus.simulator", "asyncua.server", "aas_server.store.outbox")
    for path in sorted((PACKAGE / "connectors").glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(northbound_or_serving), f"{path.name} imports {name}"

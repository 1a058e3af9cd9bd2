"""The dependency rules of ARCHITECTURE.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aas_server"

LAYERS = {
    "model": 0, "config": 0, "errors": 0, "lifecycle": 0,
    "store": 1, "mapping": 1, "semantics": 1, "security": 1, "exchange": 1, "analytics": 1, "simulation": 1,
    "api": 2, "opcua": 2, "connectors": 2, "persistence": 2, "devices": 2, "events": 2, "opcua_common": 2,
    "cli": 3, "runtime": 3, "__main__": 3, "__init__": 0,
}  # fmt: skip
EDGES = {"api", "opcua", "connectors", "persistence", "devices", "events"}
"""``connectors`` reads and writes devices (southbound); ``events`` publishes change events (northbound);
``devices`` are simulated field devices (the demo PLC), which the hub reaches only through a connector."""
SHARED_BY_EDGES = {"opcua_common": {"opcua", "connectors"}}
"""Layer-2 packages that are not edges: code two edges need alike, which may import no edge itself.
``opcua_common`` holds OPC UA status codes, variants and certificates for both the OPC UA server
(``opcua/``) and the OPC UA client connector, so that this code exists once (issue 12)."""

# Protocol library -> the modules (relative paths, or package folders ending in "/") allowed to import it.
PROTOCOL_HOMES = {
    # the client connector, and the simulated device server it talks to like any PLC
    "pymodbus": ["connectors/modbus.py", "devices/modbus_server.py"],
    "asyncua": ["opcua/", "opcua_common/", "connectors/opcua_client.py"],
    "aiohttp": ["api/", "runtime/"],
    # southbound device data, and northbound change events: two edges, which never import each other
    "paho": ["connectors/broker.py", "connectors/mqtt.py", "connectors/sparkplug.py", "events/mqtt.py"],
    # Sparkplug B payloads (protobuf classes of the Tahu schema, from leaf-device)
    "leaf_device": ["connectors/sparkplug.py"],
    "google": ["connectors/sparkplug.py"],
    "rdflib": ["semantics/"],
}
# Other libraries with one home each: a module outside it that imports the library fails.
LIBRARY_HOMES = {
    # X.509 and keys: TLS contexts and bearer-token keys, OPC UA application certificates and trust lists
    "cryptography": ["security/", "opcua/security.py", "opcua_common/certificates.py"],
    # XML: AAS XML and AASX packages, and the OPC UA NodeSet2 files of the type models
    "lxml": ["exchange/", "opcua/nodeset.py"],
    "pint": ["mapping/units.py"],
}
LOW_LEVEL_FORBIDDEN = {
    "socket",
    "ssl",
    "sqlite3",
    "http",
    "urllib.request",
    "urllib3",
    "httpx",
    "requests",
    "asyncio.streams",
    "asyncio.open_connection",
    "asyncio.open_unix_connection",
    "asyncio.start_server",
    "asyncio.start_unix_server",
    "asyncio.create_connection",
}
"""What opens a socket or file-backed database: no L0 or L1 module imports or calls any of it (a prefix
counts: ``http`` covers ``http.client``), nor ``loop.create_connection`` and the like."""
_LOOP_IO = {"create_connection", "create_server", "create_datagram_endpoint", "sock_connect", "open_connection"}
LOW_LEVEL_HOMES = {"ssl": ["security/tls.py"]}
"""The one L1 module that may import ``ssl``: it builds TLS contexts from files and opens no socket."""
L0_ALLOWED_THIRD_PARTY = {"pydantic", "basyx", "yaml", "dateutil"}


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py"))


def _imports(source: str, filename: str) -> list[str]:
    """Every module a source imports, ``from a import b`` also as ``a.b`` (``b`` may be a module).

    Attribute uses of an imported module (``asyncio.open_connection``) count too, so that a call
    is caught even when only the package is imported.
    """
    tree = ast.parse(source, filename=filename)
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{filename}: relative import; use absolute aas_server imports")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "asyncio":
            names.append(f"asyncio.{node.attr}")
    return names


def _loop_io_calls(source: str) -> list[str]:
    """Event-loop methods that open sockets (``loop.create_connection(...)``), by attribute name."""
    return [
        node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute) and node.attr in _LOOP_IO
    ]


def _in_homes(relative: str, homes: list[str]) -> bool:
    return any(relative == home or (home.endswith("/") and relative.startswith(home)) for home in homes)


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def _violations(relative: str, source: str) -> list[str]:
    """What breaks the rules in the module at ``relative`` (a path inside the package) with this source."""
    part = relative.split("/")[0].removesuffix(".py")
    layer = LAYERS[part]
    found: list[str] = []
    for name in _imports(source, relative):
        root = name.split(".")[0]
        if root == "aas_server" and "." in name:
            target = name.split(".")[1]
            target_layer = LAYERS.get(target, 0)
            if target_layer > layer:
                found.append(f"{relative} (L{layer}) imports {name} (L{target_layer})")
            if part in EDGES and target in EDGES and target != part:
                found.append(f"edge {relative} imports another edge: {name}")
            if part in SHARED_BY_EDGES and target in EDGES:
                found.append(
                    f"{relative} is shared by edges {sorted(SHARED_BY_EDGES[part])} and imports an edge: {name}"
                )
        for homes in (PROTOCOL_HOMES.get(root), LIBRARY_HOMES.get(root)):
            if homes is not None and not _in_homes(relative, homes):
                found.append(f"{relative} imports {name}; {root} belongs only in {homes}")
        low_level = any(prefix in LOW_LEVEL_FORBIDDEN for prefix in _prefixes(name))
        if layer <= 1 and low_level and relative not in LOW_LEVEL_HOMES.get(root, []):
            found.append(f"{relative} (L{layer}) does I/O through {name}")
        if layer == 0 and root not in {"aas_server", "__future__"} and root not in sys.stdlib_module_names:
            if root not in L0_ALLOWED_THIRD_PARTY:
                found.append(f"{relative} (L0) imports third-party {name}")
            elif root == "basyx" and not (name.startswith("basyx.aas.model") or name == "basyx.aas"):
                found.append(f"{relative} (L0) imports {name}; only basyx.aas.model belongs in L0")
    if layer <= 1:
        found.extend(f"{relative} (L{layer}) opens sockets through .{call}()" for call in _loop_io_calls(source))
    return list(dict.fromkeys(found))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


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


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_module_respects_layers_and_protocol_homes(path: Path) -> None:
    assert _violations(_relative(path), path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("relative", "source", "reason"),
    [
        ("store/x.py", "from aas_server import api", "store/x.py (L1) imports aas_server.api (L2)"),
        ("opcua/x.py", "from aas_server import connectors", "edge opcua/x.py imports another edge"),
        ("opcua_common/x.py", "from aas_server import opcua", "is shared by edges"),
        ("mapping/x.py", "import http.client", "does I/O through http.client"),
        ("semantics/x.py", "from urllib import request", "does I/O through urllib.request"),
        ("security/x.py", "import urllib.request", "does I/O through urllib.request"),
        ("exchange/x.py", "import httpx", "does I/O through httpx"),
        ("analytics/x.py", "from asyncio import open_connection", "does I/O through asyncio.open_connection"),
        ("store/x.py", "import asyncio\nasync def f():\n    await asyncio.open_connection('h', 1)", "asyncio.open"),
        ("model/x.py", "async def f(loop):\n    await loop.create_connection(p, 'h', 1)", "create_connection"),
        ("mapping/x.py", "from cryptography import x509", "cryptography belongs only in"),
        ("connectors/opcua_client.py", "from cryptography import x509", "cryptography belongs only in"),
        ("store/x.py", "import lxml.etree", "lxml belongs only in"),
        ("api/x.py", "from lxml import etree", "lxml belongs only in"),
        ("mapping/engine.py", "import pint", "pint belongs only in"),
        ("opcua_common/x.py", "import paho.mqtt.client", "paho belongs only in"),
    ],
)
def test_the_rules_catch(relative: str, source: str, reason: str) -> None:
    """Each rule fails on a module that breaks it, however the import is spelled."""
    found = _violations(relative, source)
    assert any(reason in line for line in found), found


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("opcua/x.py", "from aas_server.opcua_common import status"),
        ("connectors/opcua_client.py", "from aas_server.opcua_common.status import status_name"),
        ("security/tls.py", "import ssl\nfrom cryptography import x509"),
        ("exchange/x.py", "from lxml import etree"),
        ("mapping/units.py", "import pint"),
        ("cli.py", "from aas_server import __version__, api"),
    ],
)
def test_the_rules_allow(relative: str, source: str) -> None:
    assert _violations(relative, source) == []


@pytest.mark.parametrize("library", sorted(PROTOCOL_HOMES.keys() | LIBRARY_HOMES.keys()))
def test_every_home_is_used(library: str) -> None:
    """A home that no longer imports its library is dropped from the list, so that homes do not accumulate."""
    homes = PROTOCOL_HOMES.get(library, []) + LIBRARY_HOMES.get(library, [])
    for home in homes:
        modules = [path for path in _modules() if _in_homes(_relative(path), [home])]
        assert modules, f"{home} does not exist"
        assert any(
            library in {name.split(".")[0] for name in _imports(path.read_text(encoding="utf-8"), str(path))}
            for path in modules
        ), f"no module in {home} imports {library}"


def test_connectors_are_southbound_only() -> None:
    """Device servers live in ``devices/`` and the northbound event publisher in ``events/``, not among connectors."""
    northbound_or_serving = ("pymodbus.server", "pymodbus.simulator", "asyncua.server", "aas_server.store.outbox")
    for path in sorted((PACKAGE / "connectors").glob("*.py")):
        for name in _imports(path.read_text(encoding="utf-8"), str(path)):
            assert not name.startswith(northbound_or_serving), f"{path.name} imports {name}"


def test_simulation_cannot_reach_a_device_or_a_live_value() -> None:
    """``simulation/`` (issue 14) imports no connector, device, OPC UA, REST or runtime code: a run is a sandbox."""
    forbidden = {"connectors", "devices", "opcua", "opcua_common", "api", "runtime", "events", "persistence"}
    modules = sorted((PACKAGE / "simulation").rglob("*.py"))
    assert modules
    for path in modules:
        relative = path.relative_to(PACKAGE).as_posix()
        for name in _imports(path.read_text(encoding="utf-8"), relative):
            parts = name.split(".")
            assert not (parts[0] == "aas_server" and len(parts) > 1 and parts[1] in forbidden), f"{relative}: {name}"

"""What the hub leaves on its machine: log lines nobody can forge, and files only its user can read.

One real hub (``python -m aas_server serve``: the demo plant with its simulated device, REST over
self-signed TLS, OPC UA, history, access control and the audit log, every port chosen by the OS)
is started on a data directory that exists already with mode ``0755`` and holds a ``0644`` history
database. While it runs, the tests send requests whose paths carry a line feed, a carriage return,
U+0085 and U+2028 followed by a forged audit line, and malformed requests (deep SPARQL, deep JSON,
a 5-digit year); they read the modes of every file in the data directory, then stop the hub and
read its standard error.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import ssl
import stat
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier
from aas_server.security.logs import SafeFormatter
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import ROOT

DEMO = ROOT / "examples" / "bottling-line"
FORGED = "2026-12-06 12:00:00,000 INFO    aas_server.audit: DELETE everything by api-key admin (admin): delete 204"
"""A record the attacker would like the log to hold (no ``/``: the path must still match a route)."""
BREAKS = {"line feed": "%0A", "carriage return": "%0D", "next line (U+0085)": "%C2%85", "U+2028": "%E2%80%A8"}
SENSOR = "urn:aas-server:demo:sm:filler-temperature-sensor:operational-data"


@dataclass
class HubRun:
    data_dir: Path
    stderr: str
    modes: dict[str, int]
    """Permission bits of the data directory ("") and of every file in it (relative path), taken while it ran."""
    answers: dict[str, int]
    """HTTP status of each request sent, by what it was."""


def _settings(tmp_path: Path, data_dir: Path) -> Path:
    settings: dict[str, Any] = yaml.safe_load((DEMO / "hub.yaml").read_text(encoding="utf-8"))
    settings["data_dir"] = str(data_dir)
    settings["twins"] = [str(DEMO / "plant.yaml")]
    settings["mappings"] = [str(ROOT / "mappings" / "bottling-line.yaml")]
    settings["analytics"]["rules_files"] = [str(DEMO / "rules.yaml")]
    settings["analytics"]["kpi_files"] = [str(DEMO / "kpi.yaml")]
    settings["simulator"]["port"] = 0
    settings["rest"] = {"host": "127.0.0.1", "port": 0, "tls": {"self_signed": True}}
    settings["opcua"]["port"] = 0
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _modes(data_dir: Path) -> dict[str, int]:
    modes = {"": stat.S_IMODE(data_dir.stat().st_mode)}
    for path in data_dir.rglob("*"):
        if path.is_file():
            modes[str(path.relative_to(data_dir))] = stat.S_IMODE(path.stat().st_mode)
    return modes


def _requests(url: str, certificate: Path) -> dict[str, int]:
    """Send the forging and malformed requests; their statuses."""
    location = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=str(certificate))
    connection = http.client.HTTPSConnection(location.hostname or "", location.port, context=context, timeout=30)
    forged = urllib.parse.quote(FORGED, safe="")
    sparql = "SELECT * WHERE " + "{" * 3000 + "?s ?p ?o" + "}" * 3000
    element = f"/api/v3.0/submodels/{encode_identifier(SENSOR)}/submodel-elements"
    requests: dict[str, tuple[str, str, bytes, dict[str, str]]] = {
        name: ("DELETE", f"/api/v3.0/shells/x{escape}{forged}", b"", {"X-API-Key": "guessed"})
        for name, escape in BREAKS.items()
    }
    operator = {"X-API-Key": "demo-operator-key", "Content-Type": "application/json"}
    requests.update(
        {
            "deep SPARQL": ("POST", "/api/v3.0/sparql", sparql.encode(), {"Content-Type": "application/sparql-query"}),
            "deep JSON": ("PATCH", f"{element}/Temperature/$value", b"[" * 50_000 + b"]" * 50_000, operator),
            "5-digit year": ("PATCH", f"{element}/Temperature/$value", b'"99999-01-01"', operator),
            "malformed JSON": ("PATCH", f"{element}/Temperature/$value", b'{"a":\n 1,', operator),
        }
    )
    answers: dict[str, int] = {}
    try:
        for name, (method, path, body, headers) in requests.items():
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            answers[name] = response.status
    finally:
        connection.close()
    return answers


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> HubRun:
    tmp_path = tmp_path_factory.mktemp("hub-run")
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # whatever the umask: the hub must narrow it
    (data_dir / "history.sqlite").touch(mode=0o644)  # left by an older version: an empty database
    os.chmod(data_dir / "history.sqlite", 0o644)
    config = _settings(tmp_path, data_dir)
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "aas_server", "serve", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    try:
        url = None
        for line in process.stdout:
            text = line.decode()
            if text.startswith("REST API:"):
                url = text.split()[-1]
                break
        assert url is not None, f"the hub did not start: {stderr_path.read_text()[-3000:]}"
        answers = _requests(url, data_dir / "rest-tls" / "cert.pem")
        modes = _modes(data_dir)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
    return HubRun(data_dir, stderr_path.read_text(encoding="utf-8"), modes, answers)


def test_a_path_with_a_line_break_cannot_forge_a_log_or_audit_line(hub_run: HubRun) -> None:
    for name in BREAKS:
        assert hub_run.answers[name] == 401, name
    lines = hub_run.stderr.splitlines()
    assert not [line for line in lines if line.startswith(FORGED[:30])], "a forged record on standard error"
    audit_lines = [line for line in lines if "aas_server.audit:" in line and "DELETE /api/v3.0/shells/x" in line]
    assert len(audit_lines) == len(BREAKS), audit_lines
    for escape in ("\\n", "\\r", "\\x85", "\\u2028"):
        assert any(f"x{escape}{FORGED[:10]}" in line for line in audit_lines), escape
    records = [
        json.loads(line) for line in (hub_run.data_dir / "audit.log").read_text(encoding="utf-8").split("\n")[:-1]
    ]
    paths = [record["path"] for record in records if record["path"].startswith("/api/v3.0/shells/x")]
    assert sorted(paths) == sorted(
        f"/api/v3.0/shells/x{urllib.parse.unquote(escape)}{FORGED}" for escape in BREAKS.values()
    )


def test_malformed_requests_are_refused_without_a_traceback_in_the_log(hub_run: HubRun) -> None:
    assert {name: hub_run.answers[name] for name in ("deep SPARQL", "deep JSON", "5-digit year", "malformed JSON")} == {
        "deep SPARQL": 400,
        "deep JSON": 400,
        "5-digit year": 400,
        "malformed JSON": 400,
    }
    assert "Traceback" not in hub_run.stderr
    assert len(hub_run.stderr.splitlines()) < 100, hub_run.stderr[-3000:]


def test_the_data_directory_databases_wal_files_keys_and_audit_log_are_private(hub_run: HubRun) -> None:
    modes = hub_run.modes
    assert modes[""] == 0o700, oct(modes[""])
    private = {
        "hub.sqlite",
        "hub.sqlite-wal",
        "hub.sqlite-shm",
        "history.sqlite",
        "history.sqlite-wal",
        "history.sqlite-shm",
        "audit.log",
        "rest-tls/key.pem",
        "pki/server_private_key.pem",
    }
    missing = private - modes.keys()
    assert not missing, f"not written by the hub run: {sorted(missing)} (found {sorted(modes)})"
    wider = {name: oct(mode) for name, mode in modes.items() if name in private and mode != 0o600}
    assert not wider, wider


# --- one line per unexpected error, in process ------------------------------------------------------------


async def test_an_unexpected_error_is_one_log_line_with_its_reason_and_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(value: Any) -> None:
        raise RuntimeError("device driver failed\n" + "body line\n" * 3000)

    store = TwinStore()
    await store.create(
        model.Submodel("urn:example:sm:logs", submodel_element=[model.Property("P", model.datatypes.Int, 1)])
    )
    store.bind("urn:example:sm:logs", "P", ElementBinding("device:test", writable=True), failing)
    caplog.set_level(logging.INFO)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(store)))
    async with client:
        url = f"/api/v3.0/submodels/{encode_identifier('urn:example:sm:logs')}/submodel-elements/P/$value"
        response = await client.patch(url, data=b"2")
        assert response.status == 500
        correlation_id = (await response.json())["messages"][0]["correlationId"]
    records = [record for record in caplog.records if correlation_id in record.getMessage()]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.ERROR
    assert record.exc_info is None
    line = SafeFormatter("%(message)s").format(record)
    assert "\n" not in line
    assert "RuntimeError: device driver failed\\nbody line" in line
    assert len(line) < 600


def test_the_formatter_escapes_every_control_character_and_indents_tracebacks() -> None:
    formatter = SafeFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("reason\n" + FORGED)
    except ValueError:
        record = logging.LogRecord(
            "aas_server.audit", logging.ERROR, __file__, 1, "path %s", ("a\r\n\x1b[2J\x85\u2028\x00z",), sys.exc_info()
        )
    first, *rest = formatter.format(record).split("\n")
    assert first == "ERROR aas_server.audit: path a\\r\\n\\x1b[2J\\x85\\u2028\\x00z"
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert f"    {FORGED}" in rest

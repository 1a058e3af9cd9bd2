"""node-opcua, an OPC UA client the project did not write, for interoperability and attack tests.

``tests/nodeopcua/package.json`` pins node-opcua. :func:`node_opcua_modules` installs it once with
``npm install --no-audit --no-fund`` into ``~/.cache/aas-server-tests/nodeopcua/<hash of package.json>``
(outside the repository; ``XDG_CACHE_HOME`` is honoured) and returns its ``node_modules``. The tests
run small Node scripts kept in ``tests/nodeopcua/*.js`` that print one JSON object a line
(:class:`NodeScript`). Without ``npm`` and ``node`` the tests are skipped with the reason, unless
``AAS_REQUIRE_NODEOPCUA=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

SCRIPTS = ROOT / "tests" / "nodeopcua"
PACKAGE = SCRIPTS / "package.json"
_INSTALL_TIMEOUT = 600.0


def _unavailable(reason: str) -> None:
    if os.environ.get("AAS_REQUIRE_NODEOPCUA") == "1":
        pytest.fail(f"node-opcua tests required (AAS_REQUIRE_NODEOPCUA=1) but {reason}")
    pytest.skip(f"node-opcua tests need Node.js and npm: {reason}")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aas-server-tests" / "nodeopcua"


def node_opcua_modules() -> Path:
    """The ``node_modules`` folder holding the pinned node-opcua, installed on first use (skip/fail without npm)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable(f"{'node' if node is None else 'npm'} is not on PATH")
    assert npm is not None
    package = PACKAGE.read_bytes()
    target = _cache_root() / hashlib.sha256(package).hexdigest()[:16]
    modules = target / "node_modules"
    if (modules / "node-opcua" / "package.json").is_file():
        return modules
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=target.parent))
    try:
        (staging / "package.json").write_bytes(package)
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
        if installed.returncode != 0:
            _unavailable(f"npm install of {PACKAGE} failed: {installed.stderr.strip()[-2000:]}")
        with contextlib.suppress(OSError):  # another worker may have installed it meanwhile
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (modules / "node-opcua" / "package.json").is_file():
        _unavailable(f"npm install did not produce {modules / 'node-opcua'}")
    return modules


def node_opcua_version(modules: Path) -> str:
    """The installed node-opcua version (for reports)."""
    return str(json.loads((modules / "node-opcua" / "package.json").read_text(encoding="utf-8"))["version"])


class NodeScript:
    """A running ``tests/nodeopcua/<name>.js``: read its JSON lines as they come, then its last line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.lines: list[dict[str, Any]] = []

    async def next_line(self, within: float = 30.0) -> dict[str, Any]:
        """The next JSON line the script prints (fails on end of output or after ``within`` seconds)."""
        assert self._process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self._process.stdout.readline(), within)
            if not raw:
                stderr = await self._stderr()
                raise AssertionError(f"node script ended without a result; stderr: {stderr}")
            text = raw.decode().strip()
            if text.startswith("{"):
                line: dict[str, Any] = json.loads(text)
                self.lines.append(line)
                return line

    async def wait_for(self, event: str, within: float = 30.0) -> dict[str, Any]:
        """The first line announcing ``event`` (fails if the script finishes first)."""
        while True:
            line = await self.next_line(within)
            if line.get("event") == event:
                return line
            if line.get("done"):
                raise AssertionError(f"node script finished before {event!r}: {line}")

    async def result(self, within: float = 60.0) -> dict[str, Any]:
        """The script's last line (``"done": true``)."""
        for line in self.lines:
            if line.get("done"):
                return line
        while True:
            line = await self.next_line(within)
            if line.get("done"):
                await asyncio.wait_for(self._process.wait(), within)
                return line

    async def _stderr(self) -> str:
        assert self._process.stderr is not None
        return (await self._process.stderr.read()).decode(errors="replace")[-4000:]


class NodeOpcua:
    """Runs the node-opcua scripts with the installed modules."""

    def __init__(self, modules: Path, work_dir: Path) -> None:
        self.modules = modules
        self.version = node_opcua_version(modules)
        self._work_dir = work_dir
        self._count = 0

    @contextlib.asynccontextmanager
    async def start(self, script: str, plan: dict[str, Any]) -> AsyncIterator[NodeScript]:
        """Start ``tests/nodeopcua/<script>.js`` with ``plan`` (a JSON file); kill it if still running at the end."""
        self._count += 1
        plan_file = self._work_dir / f"plan-{self._count}.json"
        plan_file.write_text(json.dumps(plan), encoding="utf-8")
        environment = {**os.environ, "NODE_PATH": str(self.modules), "NODE_NO_WARNINGS": "1"}
        process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPTS / f"{script}.js"),
            str(plan_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            cwd=self._work_dir,
        )
        try:
            yield NodeScript(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def run(self, script: str, plan: dict[str, Any], within: float = 60.0) -> dict[str, Any]:
        """Run a script to its end; its last line."""
        async with self.start(script, plan) as running:
            return await running.result(within)

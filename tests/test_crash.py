"""Crash consistency (issue 7, item 5): acknowledged writes survive SIGKILL of the hub.

Each trial starts the hub on a data directory, drives REST writes from several concurrent
clients that each write one target in order and record every write the hub acknowledged (a 2xx
arrived) and the one in flight, SIGKILLs the hub after a delay drawn from the trial's seed, and
then opens a copy of the database: ``PRAGMA integrity_check`` must say ``ok``, and every target
must hold its last acknowledged value or the value in flight at the kill, never anything older.
The next trial on the same data directory starts the hub on what the kill left and first checks
that REST serves exactly the recovered state, so every trial after the first is also a restart
after a crash.

Each trial has 32 concurrent writers, so writes share group commits (issue 12, item 3): ``PATCH
.../$value`` of 28 counters (journaled values), alternating
``PATCH .../$value`` and ``PUT`` of a whole Property (a model change over a journaled value),
``POST`` and ``DELETE`` of submodel elements and of shells, and ``PUT`` of a whole submodel.

Importing the hub costs ~1.6 s of CPU, so most trials fork the hub from a *zygote* process that
has imported it once and runs ``aas_server.cli.main(["serve", "--config", ...])`` in the child:
the same entry point as ``python -m aas_server serve``, in a process of its own that SIGKILL ends
like any other. Every ``REAL_PROCESS_EVERY``-th trial of a lane starts ``python -m aas_server
serve`` itself. ``AAS_CRASH_TRIALS`` (default 200: about 140 s on two
cores) and ``AAS_CRASH_SEED`` change the run; a failure names the trial's seed and lane.

Not covered here: OPC UA writes (they take the same ``TwinStore.write_value`` path as a REST
``PATCH $value``), power loss (SIGKILL leaves the operating system's page cache intact; durability
across power loss rests on ``synchronous=FULL``), and device values, which no client awaits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.runtime.hub import Hub
from tests.support import ROOT, wait_until

TRIALS = int(os.environ.get("AAS_CRASH_TRIALS", "200"))
"""SIGKILL trials in all, shared by the lanes."""
BASE_SEED = int(os.environ.get("AAS_CRASH_SEED", "7007"))
"""Trial ``n`` draws its kill delay and values from ``random.Random(BASE_SEED + n)``."""
LANES = 4
"""Data directories driven at the same time, each by its own sequence of trials."""
REAL_PROCESS_EVERY = 10
"""Every this many trials of a lane the hub is ``python -m aas_server serve`` itself (not forked)."""
LONGEST_KILL_DELAY = 0.4
"""The kill comes 0 .. this many seconds after the writers started."""

MAIN_SUBMODEL = "urn:test:crash:sm:counters"
CONFIG_SUBMODEL = "urn:test:crash:sm:config"
CLIENTS = 32
"""Concurrent writers per trial (one HTTP client each): the counters, the mixed one, the config, elements, shells."""
COUNTERS = tuple(f"Counter{number}" for number in range(CLIENTS - 4))
MIXED = "Mixed"
SHELL_PREFIX = "urn:test:crash:aas:"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def int_property(id_short: str, value: int) -> dict[str, Any]:
    return {"modelType": "Property", "idShort": id_short, "valueType": "xs:int", "value": str(value)}


def config_submodel(generation: int) -> dict[str, Any]:
    return {
        "modelType": "Submodel",
        "id": CONFIG_SUBMODEL,
        "idShort": "Config",
        "submodelElements": [int_property("Generation", generation)],
    }


# --- the zygote: a process that has imported the hub and forks hub processes ---------------------


def run_zygote() -> None:
    """The zygote's main loop: one JSON request per line on stdin, one JSON answer per line on stdout.

    ``{"argv": [...], "stdout": path, "stderr": path}`` forks a child running ``aas_server.cli.main(argv)``
    with its output in those files and answers ``{"pid": ...}``; ``{"pid": ..., "signal": n}`` sends the
    signal, waits for the child to end and answers ``{"returncode": ...}`` (``-9`` after SIGKILL). Children
    still running when stdin ends are killed.
    """
    import aas_server.cli
    import aas_server.runtime.hub  # the expensive import, done once before any fork

    children: set[int] = set()
    for line in sys.stdin:
        request = json.loads(line)
        if "argv" in request:
            pid = os.fork()
            if pid == 0:
                _run_child(aas_server.cli.main, request)
            children.add(pid)
            answer: dict[str, int] = {"pid": pid}
        else:
            os.kill(request["pid"], request["signal"])
            _, status = os.waitpid(request["pid"], 0)
            children.discard(request["pid"])
            answer = {"returncode": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for pid in children:  # the test ended without stopping them
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _run_child(main: Callable[[list[str]], int], request: dict[str, Any]) -> None:
    code = 70
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND), 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = main(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Zygote:
    """The test's end of the zygote (see ``run_zygote``); requests are served one at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> Zygote:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from tests.test_crash import run_zygote; run_zygote()",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _request(self, message: dict[str, Any]) -> dict[str, int]:
        # shielded: a cancelled caller must not leave its answer in the pipe for the next request
        return await asyncio.shield(self._exchange(message))

    async def _exchange(self, message: dict[str, Any]) -> dict[str, int]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        async with self._lock:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            await self._process.stdin.drain()
            line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if not line:
            raise AssertionError(f"the zygote ended (exit {await self._process.wait()})")
        answer: dict[str, int] = json.loads(line)
        return answer

    async def spawn(self, argv: list[str], stdout: Path, stderr: Path) -> int:
        return (await self._request({"argv": argv, "stdout": str(stdout), "stderr": str(stderr)}))["pid"]

    async def signal(self, pid: int, number: signal.Signals) -> int:
        return (await self._request({"pid": pid, "signal": int(number)}))["returncode"]

    async def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        await asyncio.wait_for(self._process.wait(), 10)


@dataclass
class HubUnderTest:
    """A hub process, forked by the zygote or started as ``python -m aas_server serve``."""

    rest_url: str
    send: Callable[[signal.Signals], Awaitable[int]]
    """Send a signal and wait for the process to end; its return code."""
    how: str


async def start_hub(config: Path, logs: Path, zygote: Zygote | None) -> HubUnderTest:
    """Start the hub on ``config``; returns once it printed its REST URL (fails with its log otherwise)."""
    stdout, stderr = logs.with_suffix(".out"), logs.with_suffix(".log")
    stdout.write_bytes(b"")
    argv = ["serve", "--config", str(config)]
    send: Callable[[signal.Signals], Awaitable[int]]
    if zygote is not None:
        pid = await zygote.spawn(argv, stdout, stderr)

        async def send(number: signal.Signals) -> int:
            return await zygote.signal(pid, number)

        how = f"forked pid {pid}"
    else:
        with stdout.open("ab") as out, stderr.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aas_server", *argv, cwd=ROOT, stdout=out, stderr=err
            )

        async def send(number: signal.Signals) -> int:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(number)
            return await asyncio.wait_for(process.wait(), 15)

        how = f"python -m aas_server, pid {process.pid}"

    def printed_url() -> bool:
        return "REST API:" in stdout.read_text(encoding="utf-8", errors="replace")

    try:
        await wait_until(printed_url, within=30.0, what=f"the hub ({how}) to print its REST URL")
    except AssertionError as error:
        await send(signal.SIGKILL)
        raise AssertionError(f"{error}\n{stderr.read_text(errors='replace')[-3000:]}") from None
    line = next(line for line in stdout.read_text().splitlines() if line.startswith("REST API:"))
    return HubUnderTest(line.split()[-1], send, how)


# --- writers ---------------------------------------------------------------------------------------


@dataclass
class Killed:
    """Set just before SIGKILL; a failed request before that is a finding, after it the expected end."""

    at: float | None = None

    @property
    def is_set(self) -> bool:
        return self.at is not None


@dataclass
class ValueRecord:
    """One target written in order: every acknowledged value, and the one in flight when it ended."""

    name: str
    acknowledged: list[int] = field(default_factory=list)
    in_flight: int | None = None
    unexpected: str | None = None


@dataclass
class SetRecord:
    """Things created and deleted in order (elements, shells): what was acknowledged, what was in flight."""

    name: str
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    in_flight: tuple[str, str] | None = None
    """``("create" | "delete", key)``."""
    unexpected: str | None = None

    @property
    def acknowledged(self) -> int:
        return len(self.created) + len(self.deleted)


Request = Callable[[], Awaitable[int]]


async def _attempt(record: ValueRecord | SetRecord, killed: Killed, request: Request, expected: int) -> bool:
    """Run one request; whether it was acknowledged with ``expected`` (otherwise the writer stops)."""
    try:
        status = await request()
    except (aiohttp.ClientError, TimeoutError) as error:
        if not killed.is_set:
            record.unexpected = f"request failed before the kill: {error!r}"
        return False
    if status != expected:
        record.unexpected = f"answered {status}, expected {expected}"
        return False
    return True


def _status(http: aiohttp.ClientSession, method: str, url: str, body: Any) -> Request:
    async def send() -> int:
        async with http.request(method, url, json=body) as response:
            await response.read()
            return response.status

    return send


async def write_counter(
    http: aiohttp.ClientSession, base: str, record: ValueRecord, first: int, killed: Killed
) -> None:
    url = f"{base}/submodels/{b64(MAIN_SUBMODEL)}/submodel-elements/{record.name}/$value"
    value = first
    while not killed.is_set:
        record.in_flight = value
        if not await _attempt(record, killed, _status(http, "PATCH", url, value), 204):
            return
        record.acknowledged.append(value)
        record.in_flight = None
        value += 1


async def write_mixed(http: aiohttp.ClientSession, base: str, record: ValueRecord, first: int, killed: Killed) -> None:
    """Alternate ``PATCH $value`` and ``PUT`` of the whole Property (a model change after a journaled value)."""
    url = f"{base}/submodels/{b64(MAIN_SUBMODEL)}/submodel-elements/{record.name}"
    value = first
    while not killed.is_set:
        record.in_flight = value
        if value % 2:
            request = _status(http, "PUT", url, int_property(record.name, value))
        else:
            request = _status(http, "PATCH", url + "/$value", value)
        if not await _attempt(record, killed, request, 204):
            return
        record.acknowledged.append(value)
        record.in_flight = None
        value += 1


async def write_generation(
    http: aiohttp.ClientSession, base: str, record: ValueRecord, first: int, killed: Killed
) -> None:
    """``PUT`` of the whole config submodel with a growing Generation."""
    url = f"{base}/submodels/{b64(CONFIG_SUBMODEL)}"
    value = first
    while not killed.is_set:
        record.in_flight = value
        if not await _attempt(record, killed, _status(http, "PUT", url, config_submodel(value)), 204):
            return
        record.acknowledged.append(value)
        record.in_flight = None
        value += 1


async def write_elements(http: aiohttp.ClientSession, base: str, record: SetRecord, trial: int, killed: Killed) -> None:
    """``POST`` element ``E<trial>x<k>`` (value ``k``), then ``DELETE`` the one before it."""
    elements = f"{base}/submodels/{b64(MAIN_SUBMODEL)}/submodel-elements"
    previous: str | None = None
    k = 0
    while not killed.is_set:
        name = f"E{trial}x{k}"
        record.in_flight = ("create", name)
        if not await _attempt(record, killed, _status(http, "POST", elements, int_property(name, k)), 201):
            return
        record.created.append(name)
        if previous is not None:
            record.in_flight = ("delete", previous)
            if not await _attempt(record, killed, _status(http, "DELETE", f"{elements}/{previous}", None), 204):
                return
            record.deleted.append(previous)
        record.in_flight = None
        previous = name
        k += 1


async def write_shells(
    http: aiohttp.ClientSession, base: str, record: SetRecord, lane: int, trial: int, killed: Killed
) -> None:
    """``POST`` a shell, then ``DELETE`` the one before it."""
    previous: str | None = None
    k = 0
    while not killed.is_set:
        identifier = f"{SHELL_PREFIX}{lane}:{trial}:{k}"
        shell = {
            "modelType": "AssetAdministrationShell",
            "id": identifier,
            "idShort": f"Shell{k}",
            "assetInformation": {"assetKind": "Instance", "globalAssetId": f"urn:test:crash:asset:{k}"},
        }
        record.in_flight = ("create", identifier)
        if not await _attempt(record, killed, _status(http, "POST", f"{base}/shells", shell), 201):
            return
        record.created.append(identifier)
        if previous is not None:
            record.in_flight = ("delete", previous)
            if not await _attempt(record, killed, _status(http, "DELETE", f"{base}/shells/{b64(previous)}", None), 204):
                return
            record.deleted.append(previous)
        record.in_flight = None
        previous = identifier
        k += 1


# --- what the database holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovered:
    """The state a restarted hub serves, read from (a copy of) the database."""

    integrity: str
    values: dict[str, int]
    """Top-level Properties of the main submodel: the stored last value over the model's value."""
    generation: int | None
    shells: frozenset[str]


def read_database(database: Path, scratch: Path) -> Recovered:
    """Copy the database with its WAL (the hub's files stay as the kill left them) and read the copy.

    A Property's value is the one a starting hub restores: its row in ``property_values`` when there
    is one, else the value in the stored model.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = database.with_name(database.name + suffix)
        target = scratch / ("copy.sqlite" + suffix)
        target.unlink(missing_ok=True)
        if source.exists():
            shutil.copyfile(source, target)
    (scratch / "copy.sqlite-shm").unlink(missing_ok=True)
    connection = sqlite3.connect(scratch / "copy.sqlite")
    try:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        documents = {
            identifier: json.loads(document)
            for identifier, document in connection.execute("SELECT id, document FROM identifiables")
        }
        rows = dict(
            connection.execute(
                "SELECT id_short_path, value FROM property_values WHERE submodel_id = ? AND value IS NOT NULL",
                (MAIN_SUBMODEL,),
            ).fetchall()
        )
    finally:
        connection.close()
    main = documents.get(MAIN_SUBMODEL, {})
    values = {
        element["idShort"]: int(rows.get(element["idShort"], element.get("value")))
        for element in main.get("submodelElements", [])
        if element["modelType"] == "Property"
    }
    config = documents.get(CONFIG_SUBMODEL, {})
    generations = [int(e["value"]) for e in config.get("submodelElements", []) if e["idShort"] == "Generation"]
    return Recovered(
        str(integrity),
        values,
        generations[0] if generations else None,
        frozenset(identifier for identifier in documents if identifier.startswith(SHELL_PREFIX)),
    )


def value_problems(record: ValueRecord, found: int | None, before: int | None) -> list[str]:
    """The target holds its last acknowledged value or the one in flight (``before``: its value before the trial)."""
    last = record.acknowledged[-1] if record.acknowledged else before
    allowed = {last, record.in_flight} - {None}
    if found in allowed:
        return []
    return [
        f"{record.name}: the database holds {found}, the last acknowledged write was {last} "
        f"({len(record.acknowledged)} acknowledged this trial), in flight {record.in_flight}"
    ]


def set_problems(record: SetRecord, present: Collection[str]) -> list[str]:
    """Acknowledged creations are there unless an acknowledged (or in-flight) deletion followed; deletions stick."""
    problems = []
    maybe = record.in_flight[1] if record.in_flight is not None else None
    for key in set(record.created) - set(record.deleted):
        if key != maybe and key not in present:
            problems.append(f"{record.name}: {key} was created (acknowledged) and is missing")
    for key in record.deleted:
        if key in present:
            problems.append(f"{record.name}: {key} was deleted (acknowledged) and is back")
    return problems


# --- a lane: trials one after another on one data directory -------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    acknowledged: int = 0
    in_flight: int = 0
    """Writes in flight at the kills (each may or may not have been stored)."""
    real_processes: int = 0
    restart_checks: int = 0
    problems: list[str] = field(default_factory=list)


async def check_rest_serves(http: aiohttp.ClientSession, base: str, expected: Recovered) -> list[str]:
    """What a restarted hub serves over REST is exactly what the database holds."""
    problems = []
    async with http.get(f"{base}/submodels/{b64(MAIN_SUBMODEL)}/$value") as response:
        served = await response.json() if response.status == 200 else {"status": response.status}
    if served != expected.values:
        problems.append(f"REST serves {served} after the restart, the database holds {expected.values}")
    async with http.get(f"{base}/submodels/{b64(CONFIG_SUBMODEL)}/$value") as response:
        config = await response.json() if response.status == 200 else {"status": response.status}
    if config != {"Generation": expected.generation}:
        problems.append(f"REST serves config {config}, the database holds Generation {expected.generation}")
    async with http.get(f"{base}/shells") as response:
        page = await response.json()
    shells = {shell["id"] for shell in page["result"] if shell["id"].startswith(SHELL_PREFIX)}
    if shells != expected.shells:
        problems.append(f"REST serves shells {sorted(shells ^ expected.shells)} differently from the database")
    return problems


async def create_model(http: aiohttp.ClientSession, base: str) -> None:
    main = {
        "modelType": "Submodel",
        "id": MAIN_SUBMODEL,
        "idShort": "Counters",
        "submodelElements": [int_property(name, 0) for name in (*COUNTERS, MIXED)],
    }
    for document in (main, config_submodel(0)):
        async with http.post(f"{base}/submodels", json=document) as response:
            assert response.status == 201, await response.text()


def write_lane_settings(directory: Path) -> Path:
    """A settings file for one lane: REST on a free port without access control, no OPC UA, no history."""
    directory.mkdir(parents=True)
    config = directory / "hub.yaml"
    config.write_text(
        f"data_dir: {directory / 'data'}\n"
        "rest: {host: 127.0.0.1, port: 0}\n"
        "opcua: {enabled: false}\n"
        "history: {enabled: false}\n"
        "security: {enabled: false}\n"
        "log_level: WARNING\n",
        encoding="utf-8",
    )
    return config


async def run_lane(lane: int, trials: list[int], directory: Path, zygote: Zygote, tally: Tally) -> None:
    """Run ``trials`` one after another on one data directory, each killing the hub and checking what it left."""
    config = write_lane_settings(directory)
    recovered: Recovered | None = None
    timeout = aiohttp.ClientTimeout(total=15)
    for position, trial in enumerate(trials):
        seed = BASE_SEED + trial
        rng = random.Random(seed)
        real = position % REAL_PROCESS_EVERY == REAL_PROCESS_EVERY - 1
        hub = await start_hub(config, directory / f"trial-{trial}", None if real else zygote)
        tally.real_processes += real
        where = f"trial {trial} (lane {lane}, seed {seed}, hub {hub.how})"
        killed = Killed()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                if recovered is None:
                    await create_model(http, hub.rest_url)
                    before: dict[str, int | None] = dict.fromkeys((*COUNTERS, MIXED, "Generation"), 0)
                else:
                    problems = await check_rest_serves(http, hub.rest_url, recovered)
                    tally.restart_checks += 1
                    tally.problems.extend(f"{where}: {problem}" for problem in problems)
                    before = {**recovered.values, "Generation": recovered.generation}
                first = trial * 1_000_000 + rng.randrange(1000) * 1000
                values = [ValueRecord(name) for name in (*COUNTERS, MIXED)]
                generation = ValueRecord("Generation")
                elements, shells = SetRecord("elements"), SetRecord("shells")
                writers = [
                    *(write_counter(http, hub.rest_url, record, first, killed) for record in values[:-1]),
                    write_mixed(http, hub.rest_url, values[-1], first, killed),
                    write_generation(http, hub.rest_url, generation, first, killed),
                    write_elements(http, hub.rest_url, elements, trial, killed),
                    write_shells(http, hub.rest_url, shells, lane, trial, killed),
                ]
                assert len(writers) == CLIENTS
                tasks = [asyncio.create_task(writer) for writer in writers]
                started = time.monotonic()
                await asyncio.sleep(rng.uniform(0.0, LONGEST_KILL_DELAY))  # the random moment of the kill
                killed.at = time.monotonic() - started
                returncode = await hub.send(signal.SIGKILL)
                await asyncio.wait_for(asyncio.gather(*tasks), 20)
        finally:
            if not killed.is_set:
                await hub.send(signal.SIGKILL)
        assert returncode == -signal.SIGKILL, f"{where}: the hub ended with {returncode} before the kill"
        recovered = await asyncio.to_thread(read_database, directory / "data" / "hub.sqlite", directory / "scratch")
        problems = [] if recovered.integrity == "ok" else [f"integrity_check: {recovered.integrity}"]
        for record in values:
            problems += value_problems(record, recovered.values.get(record.name), before[record.name])
        problems += value_problems(generation, recovered.generation, before["Generation"])
        problems += set_problems(elements, recovered.values.keys())
        problems += set_problems(shells, recovered.shells)
        records: list[ValueRecord | SetRecord] = [*values, generation, elements, shells]
        problems += [f"{record.name}: {record.unexpected}" for record in records if record.unexpected]
        tally.problems.extend(f"{where}, killed after {killed.at:.3f} s: {problem}" for problem in problems)
        tally.trials += 1
        tally.acknowledged += sum(len(record.acknowledged) for record in (*values, generation))
        tally.acknowledged += elements.acknowledged + shells.acknowledged
        tally.in_flight += sum(record.in_flight is not None for record in records)

    # a last restart: REST serves what the last kill left
    assert recovered is not None
    hub = await start_hub(config, directory / "final", zygote)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            tally.problems.extend(
                f"lane {lane}, final restart: {p}" for p in await check_rest_serves(http, hub.rest_url, recovered)
            )
            tally.restart_checks += 1
    finally:
        assert await hub.send(signal.SIGTERM) == 0, f"lane {lane}: the hub did not stop cleanly on SIGTERM"


@contextlib.asynccontextmanager
async def zygote_process() -> AsyncIterator[Zygote]:
    zygote = await Zygote.start()
    try:
        yield zygote
    finally:
        await zygote.close()


@pytest.mark.timeout(900)
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    started = time.monotonic()
    tallies = [Tally() for _ in range(LANES)]
    async with zygote_process() as zygote, asyncio.TaskGroup() as lanes:
        for lane in range(LANES):
            numbers = list(range(lane, TRIALS, LANES))
            lanes.create_task(run_lane(lane, numbers, tmp_path / f"lane-{lane}", zygote, tallies[lane]))
    trials = sum(tally.trials for tally in tallies)
    acknowledged = sum(tally.acknowledged for tally in tallies)
    in_flight = sum(tally.in_flight for tally in tallies)
    problems = [problem for tally in tallies for problem in tally.problems]
    print(
        f"\n{trials} SIGKILL trials ({sum(t.real_processes for t in tallies)} as python -m aas_server), "
        f"{acknowledged} acknowledged writes checked, {in_flight} in flight at the kills, "
        f"{sum(t.restart_checks for t in tallies)} restarts checked over REST, "
        f"{time.monotonic() - started:.1f} s (seeds {BASE_SEED}..{BASE_SEED + TRIALS - 1})"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert trials == TRIALS
    assert acknowledged >= 10 * trials, "too few writes were acknowledged before the kills to tell anything"
    assert in_flight >= trials, "the kills came too seldom while writes were under way"


# --- the finding of the crash trials, pinned down without a crash ----------------------------------------


async def test_a_model_change_after_a_value_write_is_what_a_restart_shows(tmp_path: Path) -> None:
    """A Property written by ``PATCH $value`` and then changed by a model change (its element replaced,
    deleted and re-created, its submodel replaced) shows after a restart the value of the last acknowledged
    change, not the older journaled value; a value written after the model change still wins."""
    settings = HubSettings(
        data_dir=tmp_path,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )
    main = f"/submodels/{b64(MAIN_SUBMODEL)}"
    elements = f"{main}/submodel-elements"
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        base = hub.rest_url
        assert base is not None
        await create_model(http, base)
        for path in (
            *(f"{elements}/{name}" for name in (*COUNTERS, MIXED)),
            f"/submodels/{b64(CONFIG_SUBMODEL)}/submodel-elements/Generation",
        ):
            async with http.patch(f"{base}{path}/$value", json=5) as response:
                assert response.status == 204
        changes = [
            ("PUT", f"{elements}/Counter0", int_property("Counter0", 7), 204),
            ("DELETE", f"{elements}/Counter1", None, 204),
            ("POST", elements, int_property("Counter1", 8), 201),
            ("PUT", f"{elements}/Counter2", int_property("Counter2", 7), 204),
            ("PATCH", f"{elements}/Counter2/$value", 9, 204),
            ("PUT", f"/submodels/{b64(CONFIG_SUBMODEL)}", config_submodel(6), 204),
        ]
        for method, path, body, status in changes:
            async with http.request(method, f"{base}{path}", json=body) as response:
                assert response.status == status, await response.text()
        served = await served_values(http, base)
    assert served == {
        **dict.fromkeys(COUNTERS, 5),
        "Counter0": 7,
        "Counter1": 8,
        "Counter2": 9,
        MIXED: 5,
        "Generation": 6,
    }

    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        assert await served_values(http, hub.rest_url) == served


async def served_values(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for submodel_id in (MAIN_SUBMODEL, CONFIG_SUBMODEL):
        async with http.get(f"{base}/submodels/{b64(submodel_id)}/$value") as response:
            result.update(await response.json())
    return result

"""Durable writes with and without group commit, against this machine's fsync-bound limit (issue 12, item 3).

Two hub processes on loopback, on the same data (``rest.py``'s: small submodels with one Property
each plus one submodel of about 13 KB of JSON), journaled to SQLite (WAL, ``synchronous=FULL``): one
with group commit off (env ``AAS_GROUP_COMMIT=0``: one commit, so one fsync, per write, and each
element change journaled with its own document, ``TwinStore(element_batches=False)``: as before issue
12) and one with it on (concurrent writes share a commit; concurrent element changes of one submodel
also share one document, see ``TwinStore.replace_element``). wrk (Debian package ``wrk``) drives each
target on each hub in turn, with 32 connections, and the whole set is repeated in alternating rounds
so that machine noise hits both hubs alike:

* ``patch_value``: PATCH ``$value`` of one Property (every connection writes the same one);
* ``put_element``: PUT of that Property element (a model change: the submodel's document is journaled);
* ``put_element_spread``: PUT of the Property element of one of 32 submodels, round-robin;
* ``get_value``: GET its ``$value`` (reads must be unchanged).

In every round the fsync-bound limit of the disk holding the databases is measured too: a tight
loop of one-row SQLite commits in WAL mode with ``synchronous=FULL`` (one WAL fsync per commit), and
of ``os.fsync`` after writing 100 bytes into a file (in place, and at its end). One commit per write
cannot go faster than that; group commit goes past it by putting many writes in one commit. Each
request writes a new value: a write of the same bytes again may leave SQLite no page to write and
so no fsync to do, which would flatter the figures. Set ``AAS_BENCH_DIR`` to put the databases on
another disk.

Printed: requests/s, p50/p99 latency, requests per CPU-second of the hub process, the hub's commits
(and so fsyncs), journal units per commit and acknowledged writes per commit (concurrent element changes
of one submodel are one unit: one document for all of them), per target and hub (median over rounds), the
ratios on/off, and the ratio to the fsync-bound limit.

    .venv/bin/python benchmarks/writes.py [--rounds 3] [--duration 5] [--connections 32] [--submodels 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rest import BIG_SUBMODEL, SMALL_SUBMODEL, _big_submodel, _listen, b64, run_wrk, wait_ready

SPREAD = 32
"""Submodels the ``put_element_spread`` target cycles through."""


# --- the fsync-bound limit ------------------------------------------------------------------------


def sqlite_commits_per_second(directory: Path, seconds: float = 3.0) -> float:
    """One-row commits per second in WAL mode with ``synchronous=FULL`` (one WAL fsync each).

    Measured in the steady state of a running hub: the WAL file already has its size and is rewritten
    from its start after a checkpoint, so a commit's fsync does not also grow the file (which costs a
    file-system journal commit: several times slower on this kind of disk).
    """
    path = directory / "fsync-probe.sqlite"
    database = sqlite3.connect(path, isolation_level=None)
    try:
        database.execute("PRAGMA journal_mode=WAL")
        database.execute("PRAGMA synchronous=FULL")
        database.execute("CREATE TABLE IF NOT EXISTS probe (key INTEGER PRIMARY KEY, value REAL)")
        database.execute("CREATE TABLE IF NOT EXISTS ballast (data BLOB)")
        database.execute("INSERT INTO ballast VALUES (zeroblob(4000000))")  # grows the WAL to about 4 MB
        database.execute("DELETE FROM ballast")
        database.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the next commits rewrite the WAL from its start
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            database.execute("BEGIN IMMEDIATE")
            database.execute("INSERT OR REPLACE INTO probe VALUES (?, ?)", (count % 100, float(count)))
            database.execute("COMMIT")
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        database.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def fsyncs_per_second(directory: Path, seconds: float = 3.0, *, append: bool = False) -> float:
    """``os.fsync`` calls per second, each after writing 100 bytes into a file of 1 MB (``append``: at its end)."""
    path = directory / "fsync-probe.bin"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, bytes(1_000_000))
        os.fsync(descriptor)
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            offset = 1_000_000 + count * 100 if append else (count * 4096) % 1_000_000
            os.pwrite(descriptor, b"x" * 100, offset)
            os.fsync(descriptor)
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)


# --- the hub (a child process) --------------------------------------------------------------------


def serve_hub(submodel_count: int, data_dir: str) -> None:
    from aiohttp import web
    from basyx.aas import model

    from aas_server.api.app import create_app
    from aas_server.persistence.sqlite import SqliteRepository
    from aas_server.store.twin_store import TwinStore

    async def main() -> None:
        async with SqliteRepository(Path(data_dir) / "hub.sqlite") as repository:
            # the hub without group commit also journals each element change alone, as before issue 12
            store = TwinStore(journal=repository, element_batches=repository.committer.enabled)
            semantic_id = model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, "urn:bench:semantic"),))
            store.add(_big_submodel())
            for index in range(submodel_count):
                store.add(
                    model.Submodel(
                        SMALL_SUBMODEL.format(index=index),
                        id_short=f"Submodel{index}",
                        semantic_id=semantic_id,
                        submodel_element=[model.Property("Value", float, float(index))],
                    )
                )
            await repository.save_identifiables(
                [store.submodel(BIG_SUBMODEL)]
                + [store.submodel(SMALL_SUBMODEL.format(index=index)) for index in range(min(SPREAD, submodel_count))]
            )

            def report() -> None:
                figures = repository.committer.statistics
                print(f"STATS {figures.commits} {figures.units}", flush=True)

            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
            runner = web.AppRunner(create_app(store), access_log=None)
            await runner.setup()
            await web.SockSite(runner, _listen()).start()
            await asyncio.Event().wait()

    asyncio.run(main())


class Hub:
    def __init__(self, group_commit: bool, submodels: int, data_dir: Path) -> None:
        environment = {**os.environ, "AAS_GROUP_COMMIT": "1" if group_commit else "0"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--submodels", str(submodels), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=Path(__file__).parent.parent,
        )
        self.port = int(self._line("PORT ")[0])

    def _line(self, prefix: str) -> list[str]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line.split()[1:]
        raise RuntimeError(f"the hub ended without printing {prefix!r}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def commits_and_writes(self) -> tuple[int, int]:
        self.process.send_signal(signal.SIGUSR1)
        commits, units = self._line("STATS ")
        return int(commits), int(units)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# --- the driver -----------------------------------------------------------------------------------


def lua_scripts(directory: Path, base: str) -> dict[str, Path]:
    """wrk scripts for the write targets: each request writes a new value (a write of the same bytes again
    may leave SQLite nothing to write, and so nothing to fsync); ``spread`` cycles through ``SPREAD`` submodels."""
    paths = ", ".join(
        json.dumps(f"{base}/submodels/{b64(SMALL_SUBMODEL.format(index=index))}/submodel-elements/Value")
        for index in range(SPREAD)
    )
    common = (
        f"local paths = {{{paths}}}\n"
        "local counter = 0\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "local function property(value)\n"
        '  return \'{"modelType":"Property","idShort":"Value","valueType":"xs:double","value":"\' .. value .. \'"}\'\n'
        "end\n"
    )
    bodies = {
        "patch": 'return wrk.format("PATCH", nil, headers, tostring(counter + 0.5))',
        "put": 'return wrk.format("PUT", nil, headers, property(counter + 0.5))',
        "spread": 'return wrk.format("PUT", paths[(counter % #paths) + 1], headers, property(counter + 0.5))',
    }
    scripts = {}
    for name, body in bodies.items():
        script = directory / f"{name}.lua"
        script.write_text(f"{common}request = function()\n  counter = counter + 1\n  {body}\nend\n", encoding="utf-8")
        scripts[name] = script
    return scripts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--submodels", type=int, default=10_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve_hub(arguments.submodels, arguments.data_dir)
        return 0

    with tempfile.TemporaryDirectory(dir=os.environ.get("AAS_BENCH_DIR")) as temporary:
        root = Path(temporary)
        probes: dict[str, list[float]] = {
            "sqlite_wal_full_commits_per_s": [],
            "fsyncs_per_s": [],
            "fsyncs_per_s_growing_file": [],
        }
        hubs: dict[str, Hub] = {}
        try:
            for name, group_commit in (("off", False), ("on", True)):
                (root / name).mkdir()
                hubs[name] = Hub(group_commit, arguments.submodels, root / name)
            samples: dict[tuple[str, str], list[dict[str, float]]] = {}
            for round_number in range(arguments.rounds):
                # the disk is shared: its fsync rate is measured in every round, next to the hubs' figures
                probes["sqlite_wal_full_commits_per_s"].append(sqlite_commits_per_second(root, 2.0))
                probes["fsyncs_per_s"].append(fsyncs_per_second(root, 1.0))
                probes["fsyncs_per_s_growing_file"].append(fsyncs_per_second(root, 1.0, append=True))
                for name, hub in hubs.items():
                    base = f"http://127.0.0.1:{hub.port}/api/v3.0"
                    if round_number == 0:
                        wait_ready(f"{base}/description", timeout=600)
                    scripts = lua_scripts(root / name, base)
                    element = f"{base}/submodels/{b64(SMALL_SUBMODEL.format(index=0))}/submodel-elements/Value"
                    targets: dict[str, tuple[str, Path | None]] = {
                        "patch_value": (f"{element}/$value", scripts["patch"]),
                        "put_element": (element, scripts["put"]),
                        "put_element_spread": (element, scripts["spread"]),
                        "get_value": (f"{element}/$value", None),
                    }
                    for target, (url, script) in targets.items():
                        cpu, (commits, writes) = hub.cpu_seconds(), hub.commits_and_writes()
                        result = run_wrk(url, arguments.duration, arguments.connections, script)
                        cpu_after, (commits_after, writes_after) = hub.cpu_seconds(), hub.commits_and_writes()
                        result["hub_cpu_s"] = cpu_after - cpu
                        result["requests_per_cpu_s"] = result["rps"] * arguments.duration / max(cpu_after - cpu, 1e-9)
                        result["commits_per_s"] = (commits_after - commits) / arguments.duration
                        # a journal unit may carry several writes (element changes of one submodel share one),
                        # so writes per commit are the acknowledged requests per commit
                        commits_made = max(commits_after - commits, 1)
                        result["units_per_commit"] = (writes_after - writes) / commits_made
                        if script is not None:
                            result["writes_per_commit"] = result["rps"] * arguments.duration / commits_made
                        samples.setdefault((name, target), []).append(result)
                print(f"round {round_number + 1}/{arguments.rounds} done", flush=True)
        finally:
            for hub in hubs.values():
                hub.stop()

    limit = {key: round(statistics.median(runs)) for key, runs in probes.items()}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for (name, target), runs in samples.items():
        figures.setdefault(target, {})[name] = {
            key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]
        }
    fsync_limit = limit["sqlite_wal_full_commits_per_s"]
    for by_hub in figures.values():
        by_hub["ratio_on_to_off"] = {"rps": round(by_hub["on"]["rps"] / max(by_hub["off"]["rps"], 1e-9), 2)}
        by_hub["ratio_to_fsync_limit"] = {name: round(by_hub[name]["rps"] / fsync_limit, 2) for name in ("off", "on")}
    on = {target: by_hub["on"]["rps"] for target, by_hub in figures.items()}
    goals = {
        "PATCH $value >= 8,000 req/s": on["patch_value"] >= 8000,
        "PUT element >= 5,000 req/s": on["put_element"] >= 5000,
        "PUT element (32 submodels) >= 5,000 req/s": on["put_element_spread"] >= 5000,
        "PATCH $value above the fsync-bound limit": on["patch_value"] > fsync_limit,
        "PUT element above the fsync-bound limit": on["put_element"] > fsync_limit,
        "reads unchanged (GET $value on >= 0.9x off)": on["get_value"] >= 0.9 * figures["get_value"]["off"]["rps"],
    }
    print(json.dumps({"fsync_bound_limit": limit, "submodels": arguments.submodels,
                      "connections": arguments.connections, "targets": figures, "goals": goals}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a running simulation job costs the live hub: p99 of REST ``$value`` GETs while 30 replications run.

The demo hub (simulated Modbus PLC feeding values, REST, no OPC UA, access control off) runs in this
process with ``simulation.workers`` worker processes. A separate client process (so that the client
does not share the hub's event loop or its GIL) sends ``GET .../$value`` of a device-fed Property
over ``--connections`` keep-alive connections, back to back, for ``--seconds``:

0. a small job starts the hub's worker pool (kept for the hub's life, so a later job finds it running);
1. idle: ``--rounds`` phases of ``--seconds`` with no job running;
2. loaded: ``--rounds`` phases while a job of ``--replications`` replications of a ``--shift-hours``
   shift of the demo's bottling process runs (submitted over REST, ``POST /simulations``);
3. idle again: ``--rounds`` phases after the job ended (the machine is shared; idle phases on both
   sides of the job keep a drift in background load out of the ratio).

Printed: requests, p50 and p99 of each phase; the medians of the idle and of the loaded p99s and
``p99_ratio`` (loaded / idle, same run; goal <= 1.5); and whether the job was still running when the
last loaded phase ended (it must be, or a phase measured the hub without a job).

    .venv/bin/python benchmarks/simulation_rest.py [--seconds 10] [--replications 30] [--workers 2]
        [--connections 4] [--niceness 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aas_server.config import SimulationSettings, load_settings
from aas_server.runtime.hub import Hub

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "urn:aas-server:demo:aas:bottling-process"
TARGET = "/submodels/{submodel}/submodel-elements/RotationalSpeed/$value"
SUBMODEL = "urn:aas-server:demo:sm:filler-motor:operational-data"


def b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def client(url: str, seconds: float, connections: int) -> dict[str, Any]:
    """GET ``url`` back to back on ``connections`` connections for ``seconds``; latencies in ms."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(loop() for _ in range(connections)))
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def run_client(url: str, seconds: float, connections: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        url,
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the client failed ({process.returncode})")
    result: dict[str, Any] = json.loads(output)
    return result


async def measure(arguments: argparse.Namespace) -> None:
    settings = load_settings(ROOT / "examples" / "bottling-line" / "hub.yaml")
    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings.model_copy(
            update={
                "data_dir": Path(data_dir),
                "rest": settings.rest.model_copy(update={"port": 0}),
                "opcua": settings.opcua.model_copy(update={"enabled": False}),
                "simulator": settings.simulator.model_copy(update={"port": 0}),
                "security": settings.security.model_copy(update={"enabled": False}),
                "simulation": SimulationSettings(
                    workers=arguments.workers,
                    max_replications=max(100, arguments.replications),
                    worker_niceness=arguments.niceness,
                ),
            }
        )
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.rest_url is not None
            url = hub.rest_url + TARGET.format(submodel=b64(SUBMODEL))
            await run_client(url, 1.0, arguments.connections)  # warm-up
            # the hub keeps its worker pool for its life: start it with a small job, as an earlier job would have
            warm = {"shell": PROCESS, "name": "warm-up", "horizon": 60, "replications": arguments.workers}
            async with http.post(f"{hub.rest_url}/simulations", json=warm) as response:
                assert response.status == 202, await response.text()
                warm_id = (await response.json())["id"]
            await hub.simulations.wait(warm_id)
            idle = [await run_client(url, arguments.seconds, arguments.connections) for _ in range(arguments.rounds)]
            scenario = {
                "shell": PROCESS,
                "name": "benchmark",
                "horizon": arguments.shift_hours * 3600,
                "replications": arguments.replications,
            }
            started = time.perf_counter()
            async with http.post(f"{hub.rest_url}/simulations", json=scenario) as response:
                assert response.status == 202, await response.text()
                job_id = (await response.json())["id"]
            loaded = [await run_client(url, arguments.seconds, arguments.connections) for _ in range(arguments.rounds)]
            view = hub.simulations.job(job_id)
            still_running = not view.state.finished
            progress = view.completed_replications
            await hub.simulations.wait(job_id)
            job_seconds = time.perf_counter() - started
            state = hub.simulations.job(job_id).state.value
            idle += [await run_client(url, arguments.seconds, arguments.connections) for _ in range(arguments.rounds)]
    print(f"cpus: {os.cpu_count()}  workers: {arguments.workers}  niceness: {arguments.niceness}")
    print(
        f"job: {arguments.replications} x {arguments.shift_hours:g} h of the bottling process, {state} "
        f"in {job_seconds:.1f} s; {progress} replications done when the loaded phase ended "
        f"(still running: {still_running})"
    )
    for name, phases in (("idle", idle), ("job_running", loaded)):
        for figures in phases:
            print(
                f"{name}: {figures['requests']} requests in {arguments.seconds:g} s, "
                f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, errors {figures['errors']}"
            )
    idle_p99 = statistics.median(figures["p99_ms"] for figures in idle)
    loaded_p99 = statistics.median(figures["p99_ms"] for figures in loaded)
    idle_p50 = statistics.median(figures["p50_ms"] for figures in idle)
    loaded_p50 = statistics.median(figures["p50_ms"] for figures in loaded)
    print(f"p99_idle_median_ms: {idle_p99:.2f}  p99_job_running_median_ms: {loaded_p99:.2f}")
    print(f"p99_ratio: {loaded_p99 / idle_p99:.2f}  (goal <= 1.5)")
    print(f"p50_ratio: {loaded_p50 / idle_p50:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one phase")
    parser.add_argument("--rounds", type=int, default=3, help="phases before, during and after the job")
    parser.add_argument("--replications", type=int, default=30)
    parser.add_argument("--shift-hours", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--niceness", type=int, default=10, help="simulation.worker_niceness")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:
        print(json.dumps(asyncio.run(client(arguments.client, arguments.seconds, arguments.connections))))
        return
    asyncio.run(measure(arguments))


if __name__ == "__main__":
    main()

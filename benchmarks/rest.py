"""REST throughput and latency with wrk, against a bare aiohttp hello-world as the ceiling.

Two server processes on loopback, each single-threaded like the hub: a bare aiohttp "hello world"
and the hub's REST API (``aas_server.api.create_app``) over a ``TwinStore`` journaled to SQLite
(WAL, synchronous=FULL) and loaded with 100,000 small submodels plus one submodel of about 13 KB
of JSON. wrk (Debian package ``wrk``) drives each target in turn, and the whole set of targets is
repeated in alternating rounds so that machine noise hits every target alike:

* ``hello``: GET / on the bare server (the ceiling);
* ``element``: GET one Property (full form);
* ``value``: GET its ``$value``;
* ``submodel_13kb``: GET the 13 KB submodel;
* ``patch_value``: PATCH ``$value`` of an unbound Property (journaled durably before the 204);
* ``page_of_100``: GET ``/submodels?limit=100&cursor=...`` deep inside the 100,000.

Printed: requests/s and p50/p99 latency per target (median over rounds), the ratios to the ceiling,
and whether the goals of issue 3 hold (element and ``$value`` ≥ 0.5× the ceiling; a page of 100 at
p50 ≤ 20 ms).

    .venv/bin/python benchmarks/rest.py [--rounds 3] [--duration 5] [--connections 32] [--submodels 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BIG_SUBMODEL = "urn:aas-server:benchmark:sm:big"
SMALL_SUBMODEL = "urn:aas-server:benchmark:sm:{index}"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


# --- the two servers (run as child processes) -----------------------------------------------------


def _listen() -> socket.socket:
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    return listener


def serve_hello() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, sock=_listen(), print=None, access_log=None)


def _big_submodel() -> Any:
    from basyx.aas import model

    elements = []
    for index in range(44):
        elements.append(
            model.Property(
                f"Property{index:02d}",
                float,
                index * 1.5,
                semantic_id=model.ExternalReference(
                    (model.Key(model.KeyTypes.GLOBAL_REFERENCE, f"0173-1#02-AAA{index:03d}#001"),)
                ),
                description=model.MultiLanguageTextType({"en": f"Technical property number {index}", "de": "Merkmal"}),
            )
        )
    return model.Submodel(BIG_SUBMODEL, id_short="TechnicalData", submodel_element=elements)


def serve_hub(submodel_count: int, data_dir: str) -> None:
    from aiohttp import web
    from basyx.aas import model

    from aas_server.api.app import create_app
    from aas_server.persistence.sqlite import SqliteRepository
    from aas_server.store.twin_store import TwinStore

    async def main() -> None:
        async with SqliteRepository(Path(data_dir) / "hub.sqlite") as repository:
            store = TwinStore(journal=repository)
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
                [store.submodel(BIG_SUBMODEL), store.submodel(SMALL_SUBMODEL.format(index=0))]
            )
            runner = web.AppRunner(create_app(store), access_log=None)
            await runner.setup()
            await web.SockSite(runner, _listen()).start()
            await asyncio.Event().wait()

    asyncio.run(main())


# --- the driver -----------------------------------------------------------------------------------


def start(arguments: list[str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, *arguments], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("PORT "):
            return process, int(line.split()[1])
    raise RuntimeError(f"server {arguments} did not start")


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # readiness poll of a child process, not test synchronisation


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, duration: int, connections: int, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        result[f"p{percentile}_ms"] = float(match.group(1)) * _UNITS[match.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--submodels", type=int, default=100_000)
    parser.add_argument("--serve", choices=["hello", "hub"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve == "hello":
        serve_hello()
        return 0
    if arguments.serve == "hub":
        serve_hub(arguments.submodels, arguments.data_dir)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as temporary:
        hello, hello_port = start(["--serve", "hello"])
        started = time.monotonic()
        hub, hub_port = start(["--serve", "hub", "--submodels", str(arguments.submodels), "--data-dir", temporary])
        try:
            base = f"http://127.0.0.1:{hub_port}/api/v3.0"
            wait_ready(f"http://127.0.0.1:{hello_port}/")
            wait_ready(f"{base}/description", timeout=600)
            print(
                f"hub ready with {arguments.submodels} submodels after {time.monotonic() - started:.1f} s", flush=True
            )
            small = b64(SMALL_SUBMODEL.format(index=0))
            element = f"{base}/submodels/{small}/submodel-elements/Value"
            with urllib.request.urlopen(f"{base}/submodels/{b64(BIG_SUBMODEL)}") as response:
                big_size = len(response.read())
            with urllib.request.urlopen(f"{base}/submodels/$reference?limit={arguments.submodels // 2}") as response:
                cursor = json.load(response)["paging_metadata"]["cursor"]
            patch_script = Path(temporary) / "patch.lua"
            patch_script.write_text(
                'wrk.method = "PATCH"\nwrk.body = "21.5"\nwrk.headers["Content-Type"] = "application/json"\n',
                encoding="utf-8",
            )
            targets: dict[str, tuple[str, Path | None]] = {
                "hello": (f"http://127.0.0.1:{hello_port}/", None),
                "element": (element, None),
                "value": (f"{element}/$value", None),
                "submodel_13kb": (f"{base}/submodels/{b64(BIG_SUBMODEL)}", None),
                "patch_value": (f"{element}/$value", patch_script),
                "page_of_100": (f"{base}/submodels?limit=100&cursor={cursor}", None),
            }
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for round_number in range(arguments.rounds):
                for name, (url, script) in targets.items():
                    samples[name].append(run_wrk(url, arguments.duration, arguments.connections, script))
                print(f"round {round_number + 1}/{arguments.rounds} done", flush=True)
        finally:
            for process in (hello, hub):
                process.terminate()
                process.wait(timeout=30)

    figures: dict[str, Any] = {}
    for name, runs in samples.items():
        figures[name] = {
            key: round(statistics.median(run[key] for run in runs), 2) for key in ("rps", "p50_ms", "p99_ms", "non_2xx")
        }
    ceiling = figures["hello"]["rps"]
    for name in targets:
        figures[name]["ratio_to_hello"] = round(figures[name]["rps"] / ceiling, 3)
    figures["submodel_13kb"]["bytes"] = big_size
    goals = {
        "element >= 0.5x hello": figures["element"]["ratio_to_hello"] >= 0.5,
        "$value >= 0.5x hello": figures["value"]["ratio_to_hello"] >= 0.5,
        "page of 100 of 100,000 p50 <= 20 ms": figures["page_of_100"]["p50_ms"] <= 20.0,
    }
    print(json.dumps({"submodels": arguments.submodels, "connections": arguments.connections, "targets": figures,
                      "goals": goals}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

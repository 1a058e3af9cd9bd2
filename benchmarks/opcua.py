"""The OPC UA projection at scale, against a bare asyncua server of the same size, in one run.

For 10,000 and 100,000 projected properties (submodels of 1,000 xs:double Properties) it measures:

* start-up: the time ``OpcUaProjection`` takes to project the store and listen, and the server
  process's resident memory (RSS) afterwards and at its peak;
* batched reads: Read requests of 1,000 ``Value`` attributes, 4 in flight, over all the nodes;
  values read per second from the hub and from the bare server, interleaved in rounds, and their
  ratio;
* subscription fan-out: a client monitors 10,000 of the variables (publishing interval 50 ms);
  the server process changes them round-robin at a fixed rate (hub: ``TwinStore.apply``, through
  the change bus and the value sync; bare: ``Server.write_attribute_value``); delivered changes
  per second, latency from the change's source timestamp to its arrival (p50, p95) and changes
  lost.

The bare server is asyncua alone: the same number of Double variables (added with asyncua's own
AddNodes in folders of 100, so that its quadratic cost stays small) with source and server
timestamps. Each server runs in its own process; the clients run in this one. Both servers offer
the ``None`` security policy with anonymous read (the hub through its settings
``security_policies: [None]`` and ``allow_anonymous_read: true``): the comparison measures the
servers, not encryption.

    .venv/bin/python benchmarks/opcua.py [--sizes 10000 100000] [--read-seconds 3] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from asyncua import Client, Node, ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aas_server.config import OpcUaSettings, SecurityPolicyName  # noqa: E402
from aas_server.model.events import ValueChanged  # noqa: E402
from aas_server.opcua import OpcUaProjection, node_id_for  # noqa: E402
from aas_server.store.twin_store import TwinStore  # noqa: E402

PER_SUBMODEL = 1000
BARE_FOLDER = 100
READ_BATCH = 1000
READ_CONCURRENCY = 4
MONITORED = 10_000
PUBLISHING_INTERVAL_MS = 50
FIRST_GENERATED = 1_000_000.0
"""Generated values start here, so they are told apart from the initial values (< 100,000)."""


def _node_id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _submodel_id(index: int) -> str:
    return f"urn:aas-server:benchmark:sm:{index:03d}"


def _property_path(index: int) -> str:
    return f"P{index:04d}"


# --- server processes ------------------------------------------------------------------------


async def _serve_hub(properties: int) -> None:
    from basyx.aas import model

    started = time.perf_counter()
    store = TwinStore()
    submodels = properties // PER_SUBMODEL
    store.add_all(
        [
            model.Submodel(
                _submodel_id(index),
                id_short=f"Machine{index:03d}",
                submodel_element=[
                    model.Property(_property_path(item), float, float(index * PER_SUBMODEL + item))
                    for item in range(PER_SUBMODEL)
                ],
            )
            for index in range(submodels)
        ]
    )
    store_seconds = time.perf_counter() - started
    settings = OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], allow_anonymous_read=True)
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        async with OpcUaProjection(store, settings, Path(data_dir)) as projection:
            startup = time.perf_counter() - started
            targets = [
                (_submodel_id(index // PER_SUBMODEL), _property_path(index % PER_SUBMODEL))
                for index in range(min(MONITORED, properties))
            ]

            async def change(position: int, value: float, source_time: datetime.datetime) -> None:
                submodel_id, path = targets[position]
                store.apply(ValueChanged(submodel_id, path, value, source_time, origin="benchmark"))

            ready = {
                "url": projection.endpoint_url,
                "namespace": projection.namespace_index,
                "store_seconds": store_seconds,
                "startup_seconds": startup,
                "rss_mb": _rss_mb(),
                "peak_rss_mb": _peak_rss_mb(),
            }
            await _command_loop(ready, change)


async def _serve_bare(properties: int) -> None:
    server = Server()
    started = time.perf_counter()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{_free_port()}/"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    namespace = await server.register_namespace("urn:aas-server:benchmark:bare")
    items: list[ua.AddNodesItem] = []
    for folder in range(properties // BARE_FOLDER):
        folder_id = _node_id(f"f/{folder}", namespace)
        items.append(_bare_item(folder_id, _node_id(ObjectIds.ObjectsFolder), f"F{folder}", namespace, None))
        for item in range(BARE_FOLDER):
            index = folder * BARE_FOLDER + item
            items.append(_bare_item(_node_id(f"v/{index}", namespace), folder_id, f"V{index}", namespace, index))
    for start in range(0, len(items), 1000):
        for result in await server.iserver.isession.add_nodes(items[start : start + 1000]):
            result.StatusCode.check()
    await server.start()
    startup = time.perf_counter() - started
    nodes = [_node_id(f"v/{index}", namespace) for index in range(min(MONITORED, properties))]

    async def change(position: int, value: float, source_time: datetime.datetime) -> None:
        await server.write_attribute_value(
            nodes[position],
            ua.DataValue(
                ua.Variant(value, ua.VariantType.Double),
                SourceTimestamp=cast(Any, source_time),
                ServerTimestamp=cast(Any, source_time),
            ),
        )

    ready = {
        "url": url,
        "namespace": namespace,
        "startup_seconds": startup,
        "rss_mb": _rss_mb(),
        "peak_rss_mb": _peak_rss_mb(),
    }
    try:
        await _command_loop(ready, change)
    finally:
        await server.stop()


def _bare_item(node_id: ua.NodeId, parent: ua.NodeId, name: str, namespace: int, value: int | None) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.ParentNodeId = parent
    item.BrowseName = ua.QualifiedName(name, cast(Any, namespace))
    if value is None:
        item.ReferenceTypeId = _node_id(ObjectIds.Organizes)
        item.NodeClass = ua.NodeClass.Object
        item.TypeDefinition = _node_id(ObjectIds.FolderType)
        object_attributes = ua.ObjectAttributes()
        object_attributes.DisplayName = ua.LocalizedText(name)
        item.NodeAttributes = object_attributes
        return item
    item.ReferenceTypeId = _node_id(ObjectIds.HasComponent)
    item.NodeClass = ua.NodeClass.Variable
    item.TypeDefinition = _node_id(ObjectIds.BaseDataVariableType)
    attributes = ua.VariableAttributes()
    attributes.DisplayName = ua.LocalizedText(name)
    attributes.Value = ua.Variant(float(value), ua.VariantType.Double)
    attributes.DataType = _node_id(ObjectIds.Double)
    attributes.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask
    attributes.AccessLevel = access
    attributes.UserAccessLevel = access
    item.NodeAttributes = attributes
    return item


async def _command_loop(ready: dict[str, Any], change: Any) -> None:
    """Announce readiness on stdout; then run ``generate <changes> <rate>`` commands from stdin until EOF."""
    print(json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] != "generate":
            continue
        changes, rate, targets = int(line[1]), float(line[2]), int(line[3])
        started = loop.time()
        for count in range(changes):
            await change(count % targets, FIRST_GENERATED + count, datetime.datetime.now(datetime.UTC))
            if count % 100 == 99:
                delay = started + (count + 1) / rate - loop.time()
                await asyncio.sleep(max(0.0, delay))
        elapsed = loop.time() - started
        print(json.dumps({"generated": changes, "seconds": elapsed}), flush=True)


# --- the driver ------------------------------------------------------------------------------


class _ServerProcess:
    def __init__(self, kind: str, properties: int) -> None:
        self.kind = kind
        self.properties = properties
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            self.kind,
            "--properties",
            str(self.properties),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.ready = await self.receive(within=600)

    async def receive(self, within: float) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} server process ended")
        return cast(dict[str, Any], json.loads(line))

    async def send(self, command: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far (from ``/proc``)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def node_ids(self, count: int) -> list[ua.NodeId]:
        namespace = self.ready["namespace"]
        if self.kind == "bare":
            return [_node_id(f"v/{index}", namespace) for index in range(count)]
        return [
            _node_id(node_id_for(_submodel_id(index // PER_SUBMODEL), _property_path(index % PER_SUBMODEL)), namespace)
            for index in range(count)
        ]

    async def stop(self) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def _read_round(
    server: _ServerProcess, client: Client, node_ids: list[ua.NodeId], seconds: float
) -> tuple[float, float]:
    """Values read per second with ``READ_CONCURRENCY`` Read requests of ``READ_BATCH`` nodes in flight,
    and values read per second of the server process's CPU time."""
    requests = []
    for start in range(0, len(node_ids), READ_BATCH):
        parameters = ua.ReadParameters()
        parameters.NodesToRead = [
            ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
            for node_id in node_ids[start : start + READ_BATCH]
        ]
        requests.append(parameters)
    read = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    cpu_started = server.cpu_seconds()

    async def reader(offset: int) -> None:
        nonlocal read
        position = offset
        while time.perf_counter() < deadline:
            results = await client.uaclient.read(requests[position % len(requests)])
            if not all(result.StatusCode is None or result.StatusCode.is_good() for result in results):
                raise RuntimeError("a read returned a bad status")
            read += len(results)
            position += READ_CONCURRENCY

    await asyncio.gather(*(reader(offset) for offset in range(READ_CONCURRENCY)))
    elapsed, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu_started
    return read / elapsed, read / cpu


class _Arrivals:
    """asyncua subscription handler: arrival latencies of generated values."""

    def __init__(self) -> None:
        self.initial = 0
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        data_value = data.monitored_item.Value
        if not isinstance(value, float) or value < FIRST_GENERATED:
            self.initial += 1
            return
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.latencies.append(now - data_value.SourceTimestamp.timestamp())


async def _wait_for(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a client handler's counter
        await asyncio.sleep(0.05)


async def _fan_out(server: _ServerProcess, client: Client, rate: float, seconds: float) -> dict[str, Any]:
    targets = min(MONITORED, server.properties)
    arrivals = _Arrivals()
    subscription = await client.create_subscription(PUBLISHING_INTERVAL_MS, arrivals)
    nodes = [client.get_node(node_id) for node_id in server.node_ids(targets)]
    for start in range(0, targets, 1000):
        await subscription.subscribe_data_change(nodes[start : start + 1000], queuesize=1)
    await _wait_for(lambda: arrivals.initial >= targets, 60)
    changes = int(rate * seconds)
    cpu_started = server.cpu_seconds()
    await server.send(f"generate {changes} {rate} {targets}")
    done = await server.receive(within=seconds * 10 + 60)
    previous = -1
    while len(arrivals.latencies) < changes and len(arrivals.latencies) != previous:
        previous = len(arrivals.latencies)
        await asyncio.sleep(1.0)
    cpu = server.cpu_seconds() - cpu_started
    await subscription.delete()
    latencies = sorted(arrivals.latencies)
    delivered_seconds = (arrivals.last - arrivals.first) if arrivals.first and arrivals.last else float("nan")
    return {
        "changes": changes,
        "generated_per_second": changes / done["seconds"],
        "delivered": len(latencies),
        "delivered_per_second": len(latencies) / delivered_seconds if delivered_seconds else float("nan"),
        "lost": changes - len(latencies),
        "server_cpu_ms_per_1000_changes": 1_000_000 * cpu / changes,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "latency_p95_ms": 1000 * latencies[int(len(latencies) * 0.95)] if latencies else float("nan"),
    }


async def _measure_size(properties: int, read_seconds: float, rounds: int, rate: float) -> dict[str, Any]:
    hub, bare = _ServerProcess("hub", properties), _ServerProcess("bare", properties)
    try:
        await hub.start()
        await bare.start()
        print(
            f"\n{properties:,} properties: hub start-up {hub.ready['startup_seconds']:.2f} s "
            f"(store {hub.ready['store_seconds']:.2f} s before), RSS {hub.ready['rss_mb']:.0f} MB "
            f"(peak {hub.ready['peak_rss_mb']:.0f} MB); bare asyncua start-up {bare.ready['startup_seconds']:.2f} s, "
            f"RSS {bare.ready['rss_mb']:.0f} MB",
            flush=True,
        )
        async with (
            Client(hub.ready["url"], timeout=30) as hub_client,
            Client(bare.ready["url"], timeout=30) as bare_client,
        ):
            hub_nodes, bare_nodes = hub.node_ids(properties), bare.node_ids(properties)
            hub_reads: list[tuple[float, float]] = []
            bare_reads: list[tuple[float, float]] = []
            for _ in range(rounds):
                hub_reads.append(await _read_round(hub, hub_client, hub_nodes, read_seconds))
                bare_reads.append(await _read_round(bare, bare_client, bare_nodes, read_seconds))
            hub_read = statistics.median(rate for rate, _ in hub_reads)
            bare_read = statistics.median(rate for rate, _ in bare_reads)
            hub_read_cpu = statistics.median(rate for _, rate in hub_reads)
            bare_read_cpu = statistics.median(rate for _, rate in bare_reads)
            print(
                f"  batched reads ({READ_BATCH} nodes, {READ_CONCURRENCY} in flight, median of {rounds} rounds): "
                f"hub {hub_read:,.0f} values/s, bare {bare_read:,.0f} values/s, ratio {hub_read / bare_read:.2f}; "
                f"per second of server CPU: hub {hub_read_cpu:,.0f}, bare {bare_read_cpu:,.0f}, "
                f"ratio {hub_read_cpu / bare_read_cpu:.2f}",
                flush=True,
            )
            hub_fan_out = await _fan_out(hub, hub_client, rate, read_seconds * 2)
            bare_fan_out = await _fan_out(bare, bare_client, rate, read_seconds * 2)
        for name, fan_out in (("hub", hub_fan_out), ("bare", bare_fan_out)):
            print(
                f"  fan-out {name}: {fan_out['changes']:,} changes over {min(MONITORED, properties):,} items "
                f"generated at {fan_out['generated_per_second']:,.0f}/s, "
                f"delivered {fan_out['delivered_per_second']:,.0f}/s, "
                f"p50 {fan_out['latency_p50_ms']:.1f} ms, p95 {fan_out['latency_p95_ms']:.1f} ms, "
                f"lost {fan_out['lost']}; "
                f"server CPU {fan_out['server_cpu_ms_per_1000_changes']:.0f} ms per 1,000 changes",
                flush=True,
            )
        return {
            "properties": properties,
            "hub_startup_seconds": hub.ready["startup_seconds"],
            "hub_store_seconds": hub.ready["store_seconds"],
            "hub_rss_mb": hub.ready["rss_mb"],
            "hub_peak_rss_mb": hub.ready["peak_rss_mb"],
            "bare_startup_seconds": bare.ready["startup_seconds"],
            "bare_rss_mb": bare.ready["rss_mb"],
            "hub_read_values_per_second": hub_read,
            "bare_read_values_per_second": bare_read,
            "read_ratio": hub_read / bare_read,
            "hub_read_values_per_server_cpu_second": hub_read_cpu,
            "bare_read_values_per_server_cpu_second": bare_read_cpu,
            "read_server_cpu_ratio": hub_read_cpu / bare_read_cpu,
            "hub_fan_out": hub_fan_out,
            "bare_fan_out": bare_fan_out,
            "fan_out_delivered_ratio": hub_fan_out["delivered_per_second"] / bare_fan_out["delivered_per_second"],
        }
    finally:
        await hub.stop()
        await bare.stop()


async def _drive(arguments: argparse.Namespace) -> list[dict[str, Any]]:
    print(
        f"OPC UA projection benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs); "
        "None security policy and anonymous sessions on both servers",
        flush=True,
    )
    return [
        await _measure_size(size, arguments.read_seconds, arguments.rounds, arguments.rate) for size in arguments.sizes
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--read-seconds", type=float, default=3.0, help="duration of one read round")
    parser.add_argument("--rounds", type=int, default=3, help="read rounds per server (interleaved)")
    parser.add_argument("--rate", type=float, default=5000.0, help="value changes per second in the fan-out")
    parser.add_argument("--serve", choices=["hub", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--properties", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        logging.basicConfig(level=logging.ERROR)
        serve = _serve_hub if arguments.serve == "hub" else _serve_bare
        asyncio.run(serve(arguments.properties))
        return 0
    if any(size % PER_SUBMODEL for size in arguments.sizes):
        parser.error(f"sizes must be multiples of {PER_SUBMODEL}")
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(_drive(arguments))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

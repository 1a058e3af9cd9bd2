"""Ingest throughput and latency: device samples through the mapping engine into the store, in one run.

Three figures, each against a baseline measured in the same run:

1. **Sample path, no network.** Pre-built ``RawSample``s for ``--points`` Properties run through the
   hub's own read path (``Hub._bind_points`` of ``runtime/hub.py``, on a hub that is not started, and
   ``MappingEngine.sink``): ``MappingEngine.on_sample`` (decode, scale, unit conversion, deadband, and
   the fit to the element's valueType bound in the engine's plan), ``TwinStore.apply`` and the change bus, with one
   subscriber draining it the way the OPC UA value sync does. Six in ten points are float32
   holding registers (scale 0.01, bar -> kPa or °C -> K, absolute deadband 0.1), three in ten
   int16 input registers, one in ten coils; every sample carries a new value, so every one is
   published. Baselines: the same loop doing only
   ``codecs.decode`` and a dict update (the floor of any Python loop over the samples), and
   ``MappingEngine.on_sample`` alone. Goal: 300,000 samples/s (issue 12; issue 5 asked 200,000).
   ``--clock cpu`` times the three by this process's CPU time instead of wall time: on a machine
   shared with other work, wall time counts the time other processes hold the cores.
2. **End to end over Modbus TCP.** A ``ModbusDeviceServer`` in a child process (the device is
   another machine in a plant) with ``--units`` unit ids of ``--points-per-unit`` points each, the
   same mix, its values changing every ``--change-period``; one ``ModbusConnector`` per unit id
   polling every ``--poll`` seconds into the same sample path. Measured: points (samples) per
   second into the store over a window. Baseline: bare pymodbus clients, one per unit id, reading
   the same planned register blocks back to back; the points those reads cover per second, and
   registers per second. Hub and bare windows are interleaved. Goal: 20,000 points/s.
3. **Register change -> OPC UA notification latency** through the whole hub: the measurement of
   ``benchmarks/latency.py`` (100 points, Basic256Sha256 session, the client asking a publishing interval of
   0 by default, which the hub revises to its 10 ms minimum) run in this process, against the poll
   period. Goals: p50 <= period/2 + 5 ms, p99 <= period + 20 ms.
   Beside it, the ingest part alone: the same device and mapping polled into the sample path, timed
   from the register change to the change on the store's bus. A change lands anywhere in the poll
   period, so each p50 comes with a 95 % confidence interval (a few ms wide for 300 rounds).

When the sample path misses its goal (or with ``--profile always``), it is profiled with cProfile
and the top costs are printed as ``file:line function`` with their share of the time.

    .venv/bin/python benchmarks/ingest.py [--points 1000] [--units 4 --points-per-unit 2000]
        [--poll 0.01] [--latency-rounds 300 --period 0.1] [--parts engine modbus latency] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import os
import pstats
import random
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import latency
from basyx.aas import model
from basyx.aas.model import datatypes
from pymodbus.client import AsyncModbusTcpClient

from aas_server.config import HubSettings
from aas_server.connectors.modbus import ModbusConnector
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.mapping import codecs
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.planner import ReadRequest, plan_reads
from aas_server.mapping.schema import (
    BitPoint,
    DataType,
    MappingFile,
    ModbusTcpDevice,
    RegisterPoint,
    Table,
    parse_mapping,
)
from aas_server.model.events import Quality, RawSample, ValueChanged, utc_now
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import TwinStore

ROOT = Path(__file__).resolve().parent.parent
SUBMODEL_LATENCY = "urn:aas-server:benchmark:ingest:sm:latency"

ENGINE_GOAL = 300_000.0
"""Samples per second through the sample path (issue 12)."""
END_TO_END_GOAL = 20_000.0
"""Points per second from a Modbus TCP device into the store (issue 5)."""
LATENCY_P50_MARGIN_MS = 5.0
LATENCY_P99_MARGIN_MS = 20.0

FRAMES = 8
"""Distinct value sets the samples and the device cycle through; even, so that coils alternate."""
CHUNK = 1000
"""Samples handled between two yields to the event loop (when the bus subscriber drains)."""

Point = RegisterPoint | BitPoint


# --- the synthetic plant --------------------------------------------------------------------------


def point_kind(index: int) -> DataType:
    """Six in ten points are float32, three int16, one a coil (``bool``)."""
    slot = index % 10
    if slot < 6:
        return DataType.FLOAT32
    return DataType.INT16 if slot < 9 else DataType.BOOL


def addresses(per_unit: int) -> list[int]:
    """Zero-based address of each point of a unit: float32 pairs in holding registers, int16 in input registers."""
    next_address = {DataType.FLOAT32: 0, DataType.INT16: 0, DataType.BOOL: 0}
    result = []
    for index in range(per_unit):
        kind = point_kind(index)
        result.append(next_address[kind])
        next_address[kind] += kind.register_count
    return result


def table_size(per_unit: int) -> int:
    """Items per table of the device server: the largest table, rounded up to a multiple of 16."""
    largest = max(
        sum(point_kind(index).register_count for index in range(per_unit) if point_kind(index) is kind)
        for kind in (DataType.FLOAT32, DataType.INT16, DataType.BOOL)
    )
    return max(16, -(-largest // 16) * 16)


def submodel_id(unit: int) -> str:
    return f"urn:aas-server:benchmark:ingest:sm:{unit}"


def id_short(index: int) -> str:
    return f"P{index:05d}"


def point_name(unit: int, index: int) -> str:
    return f"u{unit}.p{index:05d}"


def device_name(unit: int) -> str:
    return f"unit{unit}"


def build_submodels(units: int, per_unit: int) -> list[model.Identifiable]:
    """One submodel per unit id: xs:double for float32 points, xs:int for int16, xs:boolean for coils."""
    value_types: dict[DataType, Any] = {DataType.FLOAT32: float, DataType.INT16: datatypes.Int, DataType.BOOL: bool}
    initial: dict[DataType, Any] = {DataType.FLOAT32: 0.0, DataType.INT16: 0, DataType.BOOL: False}
    return [
        model.Submodel(
            submodel_id(unit),
            id_short=f"Unit{unit}",
            submodel_element=[
                model.Property(id_short(index), value_types[point_kind(index)], initial[point_kind(index)])
                for index in range(per_unit)
            ],
        )
        for unit in range(1, units + 1)
    ]


def build_mapping(units: int, per_unit: int, port: int, poll: float) -> MappingFile:
    """One Modbus TCP device per unit id (all on one server), validated like a mapping file."""
    points: list[dict[str, Any]] = []
    for unit in range(1, units + 1):
        for index, address in enumerate(addresses(per_unit)):
            point: dict[str, Any] = {
                "name": point_name(unit, index),
                "device": device_name(unit),
                "address": address,
                "target": {"submodel": submodel_id(unit), "path": id_short(index)},
                "poll_interval": poll,
            }
            kind = point_kind(index)
            if kind is DataType.FLOAT32:
                celsius = index % 2 == 0
                point.update(
                    table="holding_register",
                    data_type="float32",
                    scale=0.01,
                    unit="CEL" if celsius else "BAR",
                    target_unit="KEL" if celsius else "KPA",
                    deadband={"absolute": 0.1},
                )
            elif kind is DataType.INT16:
                point.update(table="input_register", data_type="int16")
            else:
                point.update(table="coil")
            points.append(point)
    devices = [
        {
            "name": device_name(unit),
            "protocol": "modbus-tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit,
            "addressing": "zero-based",
            "timeout": 2.0,
        }
        for unit in range(1, units + 1)
    ]
    return parse_mapping({"devices": devices, "points": points}, "<ingest benchmark>")


def raw_value(index: int, frame: int) -> tuple[int, ...] | tuple[bool, ...]:
    """What the device holds for point ``index`` in ``frame``; consecutive frames differ beyond the deadband."""
    kind = point_kind(index)
    if kind is DataType.FLOAT32:
        return codecs.encode(DataType.FLOAT32, 1000.0 + 37.0 * frame + index % 97)
    if kind is DataType.INT16:
        return codecs.encode(DataType.INT16, (index * 13 + frame * 101) % 60_000 - 30_000)
    return ((index + frame) % 2 == 0,)


# --- the hub's sample path ------------------------------------------------------------------------


class SamplePath:
    """The hub's own read path: ``Hub._bind_points`` (``runtime/hub.py``) on a hub not started, ``MappingEngine.sink``.

    The points are bound to their Properties and each sample goes through ``sink``, the hub's own
    function: the engine's change (none when the deadband holds it back), the value fitted to the
    element's valueType, ``TwinStore.apply``. ``on_sample`` adds counters for the Modbus part.
    """

    def __init__(self, store: TwinStore, mapping: MappingFile) -> None:
        hub = Hub(HubSettings(log_level="ERROR"))
        hub.store = store
        self.engine = hub._bind_points(Path("<ingest benchmark>"), mapping)
        self.sink = self.engine.sink(store.apply)
        self.samples = 0
        self.bad_samples = 0

    def on_sample(self, sample: RawSample) -> None:
        self.samples += 1
        if sample.quality is Quality.BAD:
            self.bad_samples += 1
        self.sink(sample)


class Drain:
    """One change bus subscriber that takes events as the OPC UA value sync does (``opcua/sync.py``)."""

    def __init__(self, store: TwinStore) -> None:
        self.subscription = store.bus.subscribe("ingest benchmark", maxsize=100_000)
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await self.subscription.get()
            self.events += 1 + len(self.subscription.get_nowait_all())

    async def __aenter__(self) -> Drain:
        self._task = asyncio.create_task(self._run(), name="ingest benchmark drain")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.subscription.close()


def new_store(units: int, per_unit: int, mapping: MappingFile) -> tuple[TwinStore, SamplePath]:
    store = TwinStore(journal=None)
    store.add_all(build_submodels(units, per_unit))
    return store, SamplePath(store, mapping)


# --- 1. the sample path without network ---------------------------------------------------------------


def prebuilt_samples(points: int) -> list[list[RawSample]]:
    """``FRAMES`` rounds of one sample per point, in chunks of ``CHUNK``; source times one second apart.

    The samples of one round share one source time object, as the samples of one device answer do
    (``ModbusConnector`` stamps an answer once).
    """
    start = utc_now()
    times = [start + timedelta(seconds=frame) for frame in range(FRAMES)]
    samples = [
        RawSample(device_name(1), point_name(1, index), raw_value(index, frame), times[frame])
        for frame in range(FRAMES)
        for index in range(points)
    ]
    return [samples[offset : offset + CHUNK] for offset in range(0, len(samples), CHUNK)]


def decode_only(mapping: MappingFile) -> Callable[[RawSample], None]:
    """The baseline: look the point up, ``codecs.decode`` its words (or take its bit), keep the result in a dict."""
    points: dict[str, Point] = {
        point.name: point for point in mapping.points if isinstance(point, RegisterPoint | BitPoint)
    }
    latest: dict[str, object] = {}

    def handle(sample: RawSample) -> None:
        point = points[sample.point]
        if isinstance(point, RegisterPoint):
            latest[sample.point] = codecs.decode(point.data_type, sample.raw, point.word_order, point.byte_order)
        else:
            latest[sample.point] = sample.raw[0]

    return handle


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall time, or this process's CPU time (which other processes on a shared machine do not inflate)."""


async def feed(
    handle: Callable[[RawSample], object],
    chunks: list[list[RawSample]],
    seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float]:
    """Whole passes over ``chunks`` for at least ``seconds`` of ``clock``, yielding to the loop after each chunk.

    Returns the samples handled and the seconds it took."""
    count = 0
    started = clock()
    while True:
        for chunk in chunks:
            for sample in chunk:
                handle(sample)
            count += len(chunk)
            await asyncio.sleep(0)
        elapsed = clock() - started
        if elapsed >= seconds:
            return count, elapsed


@dataclass
class EngineFigures:
    decode_only: list[float]
    engine_only: list[float]
    sample_path: list[float]
    published_per_sample: float
    dropped: int
    profile: Profile | None


async def measure_engine(
    points: int, seconds: float, rounds: int, profile: str, clock: Callable[[], float] = time.perf_counter
) -> EngineFigures:
    mapping = build_mapping(1, points, 502, 1.0)
    chunks = prebuilt_samples(points)
    store, path = new_store(1, points, mapping)
    engine_alone = MappingEngine(mapping)
    handlers: dict[str, Callable[[RawSample], object]] = {
        "decode_only": decode_only(mapping),
        "engine_only": engine_alone.on_sample,
        "sample_path": path.sink,
    }
    rates: dict[str, list[float]] = {name: [] for name in handlers}
    async with Drain(store) as drain:
        for handle in handlers.values():
            await feed(handle, chunks, 0.0)  # warm-up: one pass
        events_before, path_samples = drain.events, 0
        for _ in range(rounds):
            for name, handle in handlers.items():
                samples, elapsed = await feed(handle, chunks, seconds, clock)
                rates[name].append(samples / elapsed)
                path_samples += samples if name == "sample_path" else 0
        await asyncio.sleep(0)
        published = (drain.events - events_before) / max(1, path_samples)
        dropped = drain.subscription.dropped
        profiled = None
        if profile == "always" or (profile == "auto" and statistics.median(rates["sample_path"]) < ENGINE_GOAL):
            profiled = await profile_sample_path(path, chunks, seconds)
    return EngineFigures(rates["decode_only"], rates["engine_only"], rates["sample_path"], published, dropped, profiled)


def _where(file_name: str, line: int, function: str) -> str:
    """``file:line function`` with the file relative to the project, site-packages or the standard library."""
    path = Path(file_name)
    shown = file_name
    for base in (
        Path(sysconfig.get_paths()["purelib"]),
        Path(sysconfig.get_paths()["stdlib"]),
        ROOT / "benchmarks",
        ROOT,
    ):
        if path.is_relative_to(base):
            shown = str(path.relative_to(base))
            break
    return f"{shown}:{line} {function}" if line else f"{shown} {function}"


@dataclass(frozen=True)
class ProfileRow:
    where: str
    own_share: float
    cumulative_share: float
    calls_per_sample: float


@dataclass(frozen=True)
class Profile:
    """Shares of the sample path's time, from cProfile (its overhead inflates times, not much the shares)."""

    by_own_time: list[ProfileRow]
    by_cumulative_time: list[ProfileRow]
    """Functions of the project only: the stages of the path."""


async def profile_sample_path(path: SamplePath, chunks: list[list[RawSample]], seconds: float) -> Profile:
    """cProfile over the sample path, the drain included."""
    profiler = cProfile.Profile()
    profiler.enable()
    samples, _ = await feed(path.sink, chunks, seconds)
    profiler.disable()
    # (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers); untyped in typeshed
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = cast(Any, pstats.Stats(profiler)).stats
    total = sum(entry[2] for entry in entries.values())
    rows = [
        ProfileRow(_where(file_name, line, function), own / total, cumulative / total, calls / samples)
        for (file_name, line, function), (_, calls, own, cumulative, _) in entries.items()
    ]
    own = sorted(rows, key=lambda row: row.own_share, reverse=True)[:20]
    project = [
        row for row in rows if row.where.startswith(("aas_server/", "ingest.py:")) and row.calls_per_sample >= 0.5
    ]
    cumulative = sorted(project, key=lambda row: row.cumulative_share, reverse=True)[:12]
    return Profile(own, cumulative)


# --- 2. end to end over Modbus TCP --------------------------------------------------------------------


async def serve_device(units: int, per_unit: int, change_period: float) -> None:
    """The child process: a device server whose values move to the next frame every ``change_period``."""
    size = table_size(per_unit)
    point_addresses = addresses(per_unit)
    frames: list[dict[Table, list[int] | list[bool]]] = []
    for frame in range(FRAMES):
        holding, inputs, coils = [0] * size, [0] * size, [False] * size
        for index, address in enumerate(point_addresses):
            raw = raw_value(index, frame)
            kind = point_kind(index)
            if kind is DataType.FLOAT32:
                holding[address : address + 2] = [int(word) for word in raw]
            elif kind is DataType.INT16:
                inputs[address] = int(raw[0])
            else:
                coils[address] = bool(raw[0])
        frames.append({Table.HOLDING_REGISTER: holding, Table.INPUT_REGISTER: inputs, Table.COIL: coils})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def answer_commands(server: ModbusDeviceServer) -> None:
        """``count``: print the requests received so far; end of input: stop."""
        while line := await reader.readline():
            if line.strip() == b"count":
                print(json.dumps({"requests": server.request_count()}), flush=True)

    async with ModbusDeviceServer(port=0, unit_ids=range(1, units + 1), size=size) as server:
        closed = asyncio.create_task(answer_commands(server))
        print(json.dumps({"port": server.port}), flush=True)
        frame = 0
        while not closed.done():
            for unit in range(1, units + 1):
                for table, items in frames[frame % FRAMES].items():
                    if table is Table.COIL:
                        server.set_bits(table, 0, cast(list[bool], items), unit)
                    else:
                        server.set_registers(table, 0, cast(list[int], items), unit)
            frame += 1
            await asyncio.wait([closed], timeout=change_period)  # the device's own update rate


class DeviceProcess:
    """The device server's child process; stopped by closing its stdin."""

    def __init__(self, units: int, per_unit: int, change_period: float) -> None:
        self.arguments = [
            "--serve-device",
            "--units",
            str(units),
            "--points-per-unit",
            str(per_unit),
            "--change-period",
            str(change_period),
        ]
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> DeviceProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *self.arguments, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(60):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the device server process ended")
        self.port = int(json.loads(line)["port"])
        return self

    async def request_count(self) -> int:
        """Requests the device server has received so far (all unit ids and function codes)."""
        assert self.process is not None
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"count\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(10):
            line = await self.process.stdout.readline()
        return int(json.loads(line)["requests"])

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the device process so far (``/proc/<pid>/stat``)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """What one measured window delivered."""

    points_per_second: float
    items_per_second: float
    """Registers plus bits read per second."""
    requests_per_second: float
    """Requests the device server received per second."""
    hub_cpu: float
    """Cores busy in this process (client side) during the window."""
    device_cpu: float
    """Cores busy in the device server process."""
    changes_per_second: float = 0.0
    bad_samples: int = 0


async def measured_window(
    device: DeviceProcess, seconds: float, counters: Callable[[], tuple[int, int, int]]
) -> Window:
    """Counters (points, items, bus events) and the device's request count before and after ``seconds``,
    with both processes' CPU time."""
    requests = await device.request_count()
    points, items, events = counters()
    cpu, device_cpu, started = time.process_time(), device.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)  # the measurement window
    points2, items2, events2 = counters()
    elapsed = time.perf_counter() - started
    requests2 = await device.request_count()
    return Window(
        (points2 - points) / elapsed,
        (items2 - items) / elapsed,
        (requests2 - requests) / elapsed,
        (time.process_time() - cpu) / elapsed,
        (device.cpu_seconds() - device_cpu) / elapsed,
        (events2 - events) / elapsed,
    )


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def hub_window(
    device: DeviceProcess, mapping: MappingFile, path: SamplePath, drain: Drain, seconds: float
) -> Window:
    """Connectors polling into the sample path: two full cycles of warm-up, then the window."""
    devices = [device for device in mapping.devices if isinstance(device, ModbusTcpDevice)]
    requests = {device.name: plan_reads(device, mapping.modbus_points_of(device.name)) for device in devices}
    async with AsyncExitStack() as stack:
        for modbus_device in devices:
            connector = ModbusConnector(modbus_device, mapping.modbus_points_of(modbus_device.name), path.on_sample)
            await stack.enter_async_context(connector)
        start = path.samples
        total = len(mapping.points)
        await wait_for(lambda: path.samples >= start + 2 * total, 60, "two polls of every point")
        items_per_sample = sum(request.count for reads in requests.values() for request in reads) / total
        bad_before = path.bad_samples

        def counters() -> tuple[int, int, int]:
            samples = path.samples
            return samples, round(samples * items_per_sample), drain.events

        window = await measured_window(device, seconds, counters)
    window.bad_samples = path.bad_samples - bad_before
    return window


async def _read(client: AsyncModbusTcpClient, request: ReadRequest) -> Any:
    address, count, unit_id = request.address, request.count, request.unit_id
    if request.table is Table.HOLDING_REGISTER:
        return await client.read_holding_registers(address, count=count, device_id=unit_id)
    if request.table is Table.INPUT_REGISTER:
        return await client.read_input_registers(address, count=count, device_id=unit_id)
    if request.table is Table.COIL:
        return await client.read_coils(address, count=count, device_id=unit_id)
    return await client.read_discrete_inputs(address, count=count, device_id=unit_id)


async def bare_window(device: DeviceProcess, mapping: MappingFile, seconds: float) -> Window:
    """Bare pymodbus clients, one per unit id, reading the planned blocks back to back."""
    devices = [device for device in mapping.devices if isinstance(device, ModbusTcpDevice)]
    counts = {"points": 0, "items": 0, "errors": 0}
    stopping = False

    async def reader(client: AsyncModbusTcpClient, requests: Sequence[ReadRequest]) -> None:
        while not stopping:
            for request in requests:
                response = await _read(client, request)
                if response.isError():
                    counts["errors"] += 1
                    continue
                counts["points"] += len(request.points)
                counts["items"] += len(response.bits if request.table.is_bit_table else response.registers)

    clients = []
    tasks = []
    try:
        for modbus_device in devices:
            client = AsyncModbusTcpClient("127.0.0.1", port=device.port, timeout=2.0, retries=0, reconnect_delay=0)
            if not await client.connect():
                raise RuntimeError("the bare client could not connect to the device server")
            clients.append(client)
            requests = plan_reads(modbus_device, mapping.modbus_points_of(modbus_device.name))
            for request in requests:  # warm-up: one pass
                await _read(client, request)
            tasks.append(asyncio.create_task(reader(client, requests)))
        window = await measured_window(device, seconds, lambda: (counts["points"], counts["items"], 0))
    finally:
        stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            client.close()
    if counts["errors"]:
        raise RuntimeError(f"the device server answered {counts['errors']} bare reads with an exception")
    return window


@dataclass
class EndToEndFigures:
    points: int
    requests_per_poll: int
    hub: list[Window]
    bare: list[Window]


async def measure_end_to_end(
    units: int, per_unit: int, poll: float, change_period: float, seconds: float, rounds: int
) -> EndToEndFigures:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    async with DeviceProcess(units, per_unit, change_period) as device:
        mapping = build_mapping(units, per_unit, device.port, poll)
        store, path = new_store(units, per_unit, mapping)
        planned = sum(
            len(plan_reads(modbus_device, mapping.modbus_points_of(modbus_device.name)))
            for modbus_device in mapping.devices
            if isinstance(modbus_device, ModbusTcpDevice)
        )
        hub: list[Window] = []
        bare: list[Window] = []
        async with Drain(store) as drain:
            for _ in range(rounds):
                bare.append(await bare_window(device, mapping, seconds))
                hub.append(await hub_window(device, mapping, path, drain, seconds))
    return EndToEndFigures(len(mapping.points), planned, hub, bare)


# --- 3. latency --------------------------------------------------------------------------------------


def measure_latency(rounds: int, period: float, publishing_interval: float = 0.0) -> dict[str, list[float]]:
    """``benchmarks/latency.py``'s measurement, and the ingest part of it alone; in milliseconds.

    The client's subscription asks for ``publishing_interval`` ms (the hub grants 10 ms at least). The
    hub sends a change that follows a quiet interval at once (``aas_server.opcua.publishing``), so the
    figure is the hub's latency, not a publishing wait.
    """
    result = asyncio.run(latency.measure(rounds, period, publishing_interval))
    figures = {name: [value * 1000 for value in result[name]] for name in ("full", "floor")}
    figures["store"] = [value * 1000 for value in asyncio.run(register_to_store(rounds, period))]
    return figures


async def register_to_store(rounds: int, period: float) -> list[float]:
    """Register change -> the change on the store's bus: latency.py's device and mapping, without OPC UA.

    An in-process device server with ``latency.POINTS`` holding registers, polled every ``period``
    by a ``ModbusConnector`` into the hub's sample path; each round changes one register and waits
    for the bus event carrying exactly its value.
    """
    points = latency.POINTS
    submodel = model.Submodel(
        SUBMODEL_LATENCY,
        id_short="Latency",
        submodel_element=[model.Property(f"P{index:03d}", float, 0.0) for index in range(points)],
    )
    async with ModbusDeviceServer(port=0, size=128) as device:
        mapping = parse_mapping(
            {
                "devices": [{"name": "bench", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": device.port,
                             "unit_id": 1, "addressing": "zero-based", "timeout": 1.0}],
                "points": [
                    {"name": f"p{index:03d}", "device": "bench", "table": "holding_register", "address": index,
                     "data_type": "uint16", "scale": 0.1, "unit": "CEL", "poll_interval": period,
                     "target": {"submodel": SUBMODEL_LATENCY, "path": f"P{index:03d}"}}
                    for index in range(points)
                ],
            },
            "<ingest benchmark: latency>",
        )  # fmt: skip
        store = TwinStore(journal=None)
        store.add_all([submodel])
        path = SamplePath(store, mapping)
        waiting: dict[tuple[str, float], asyncio.Future[float]] = {}
        subscription = store.bus.subscribe("register to store")

        async def watch() -> None:
            async for event in subscription:
                if isinstance(event, ValueChanged) and isinstance(event.value, float):
                    future = waiting.pop((event.id_short_path, round(event.value, 6)), None)
                    if future is not None and not future.done():
                        future.set_result(time.perf_counter())

        watcher = asyncio.create_task(watch())
        modbus_device = mapping.devices[0]
        assert isinstance(modbus_device, ModbusTcpDevice)
        samples: list[float] = []
        decorrelate = random.Random(7)
        try:
            async with ModbusConnector(modbus_device, mapping.modbus_points_of("bench"), path.on_sample):
                for number in range(rounds):
                    index, raw = number % points, 1000 + number
                    arrived = asyncio.get_running_loop().create_future()
                    waiting[(f"P{index:03d}", round(raw / 10, 6))] = arrived
                    started = time.perf_counter()
                    device.set_registers(Table.HOLDING_REGISTER, index, [raw])
                    samples.append(await asyncio.wait_for(arrived, 5.0) - started)
                    await asyncio.sleep(decorrelate.uniform(0, period))  # decorrelate from the poll phase
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            subscription.close()
    return samples


# --- report --------------------------------------------------------------------------------------


def median_interval(samples: list[float]) -> tuple[float, float]:
    """A 95 % confidence interval of the median, from order statistics (distribution-free).

    With a few hundred rounds it is several milliseconds wide: the change lands anywhere in the poll period.
    """
    ordered = sorted(samples)
    half_width = 1.96 * math.sqrt(len(ordered)) / 2
    low = max(0, math.floor(len(ordered) / 2 - half_width))
    high = min(len(ordered) - 1, math.ceil(len(ordered) / 2 + half_width))
    return ordered[low], ordered[high]


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report(arguments: argparse.Namespace, results: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table: figure, measured, baseline, ratio, goal, verdict."""
    rows: list[list[str]] = []
    engine: EngineFigures | None = results.get("engine")
    if engine is not None:
        path, decode, alone = (
            statistics.median(rates) for rates in (engine.sample_path, engine.decode_only, engine.engine_only)
        )
        rows.append(
            [
                "sample path (engine -> store -> bus)",
                _rate(path),
                f"decode only {_rate(decode)}",
                f"{path / decode:.2f}",
                f">= {_rate(ENGINE_GOAL)}",
                _verdict(path >= ENGINE_GOAL),
            ]
        )
        rows.append(
            ["  engine.on_sample alone", _rate(alone), f"decode only {_rate(decode)}", f"{alone / decode:.2f}", "", ""]
        )
    end_to_end: EndToEndFigures | None = results.get("modbus")
    if end_to_end is not None:
        hub = statistics.median(window.points_per_second for window in end_to_end.hub)
        bare = statistics.median(window.points_per_second for window in end_to_end.bare)
        rows.append(
            [
                f"Modbus TCP -> store, {end_to_end.points:,} points",
                f"{_rate(hub)} points",
                f"bare pymodbus {_rate(bare)} points",
                f"{hub / bare:.2f}",
                f">= {_rate(END_TO_END_GOAL)}",
                _verdict(hub >= END_TO_END_GOAL),
            ]
        )
    measured: dict[str, list[float]] | None = results.get("latency")
    if measured is not None:
        period_ms = arguments.period * 1000
        p50, p99 = latency.percentile(measured["full"], 0.5), latency.percentile(measured["full"], 0.99)
        floor = latency.percentile(measured["floor"], 0.5)
        low, high = median_interval(measured["full"])
        rows.append(
            [
                f"register -> OPC UA p50 (poll {period_ms:.0f} ms)",
                f"{p50:.1f} ms (95% CI {low:.1f}-{high:.1f})",
                f"polling alone {period_ms / 2:.1f} ms",
                f"{p50 / (period_ms / 2):.2f}",
                f"<= {period_ms / 2 + LATENCY_P50_MARGIN_MS:.0f} ms",
                _verdict(p50 <= period_ms / 2 + LATENCY_P50_MARGIN_MS),
            ]
        )
        rows.append(
            [
                f"register -> OPC UA p99 (poll {period_ms:.0f} ms)",
                f"{p99:.1f} ms",
                f"polling alone {0.99 * period_ms:.1f} ms",
                f"{p99 / (0.99 * period_ms):.2f}",
                f"<= {period_ms + LATENCY_P99_MARGIN_MS:.0f} ms",
                _verdict(p99 <= period_ms + LATENCY_P99_MARGIN_MS),
            ]
        )
        rows.append(["  store -> OPC UA p50 (hub floor)", f"{floor:.1f} ms", "", "", "", ""])
        to_store = measured["store"]
        low, high = median_interval(to_store)
        for label, fraction, expectation in (("p50", 0.5, period_ms / 2), ("p99", 0.99, 0.99 * period_ms)):
            value = latency.percentile(to_store, fraction)
            interval = f" (95% CI {low:.1f}-{high:.1f})" if label == "p50" else ""
            rows.append(
                [
                    f"  register -> store {label} (no OPC UA)",
                    f"{value:.1f} ms{interval}",
                    f"polling alone {expectation:.1f} ms",
                    f"{value / expectation:.2f}",
                    "",
                    "",
                ]
            )
    return rows


def print_table(rows: list[list[str]]) -> None:
    header = ["figure", "measured", "baseline (same run)", "ratio", "goal", ""]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def figures_json(arguments: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    engine: EngineFigures | None = results.get("engine")
    if engine is not None:
        figures["engine"] = {
            "points": arguments.points,
            "clock": arguments.clock,
            "samples_per_second": {
                "sample_path": [round(rate) for rate in engine.sample_path],
                "engine_only": [round(rate) for rate in engine.engine_only],
                "decode_only": [round(rate) for rate in engine.decode_only],
            },
            "bus_events_per_sample": round(engine.published_per_sample, 3),
            "bus_events_dropped": engine.dropped,
        }
    end_to_end: EndToEndFigures | None = results.get("modbus")
    if end_to_end is not None:

        def window_figures(window: Window) -> dict[str, Any]:
            return {
                "points_per_second": round(window.points_per_second),
                "registers_and_bits_per_second": round(window.items_per_second),
                "requests_per_second": round(window.requests_per_second),
                "client_process_cores": round(window.hub_cpu, 2),
                "client_cpu_microseconds_per_point": round(window.hub_cpu / window.points_per_second * 1e6, 1),
                "device_process_cores": round(window.device_cpu, 2),
            }

        figures["modbus"] = {
            "points": end_to_end.points,
            "units": arguments.units,
            "read_requests_per_poll": end_to_end.requests_per_poll,
            "poll_interval_s": arguments.poll,
            "device_change_period_s": arguments.change_period,
            "hub": [
                {
                    **window_figures(window),
                    "bus_events_per_second": round(window.changes_per_second),
                    "bad_samples": window.bad_samples,
                }
                for window in end_to_end.hub
            ],
            "bare_pymodbus": [window_figures(window) for window in end_to_end.bare],
        }
    measured: dict[str, list[float]] | None = results.get("latency")
    if measured is not None:
        full, floor = measured["full"], measured["floor"]
        figures["latency"] = {
            "poll_period_ms": arguments.period * 1000,
            "rounds": len(full),
            "register_to_notification_ms": {
                "p50": round(latency.percentile(full, 0.5), 1),
                "p50_95_percent_interval": [round(bound, 1) for bound in median_interval(full)],
                "p99": round(latency.percentile(full, 0.99), 1),
                "mean": round(statistics.fmean(full), 1),
                "max": round(max(full), 1),
            },
            "baseline_store_to_notification_ms": {
                "p50": round(latency.percentile(floor, 0.5), 1),
                "p99": round(latency.percentile(floor, 0.99), 1),
            },
            "register_to_store_ms": {
                "p50": round(latency.percentile(measured["store"], 0.5), 1),
                "p50_95_percent_interval": [round(bound, 1) for bound in median_interval(measured["store"])],
                "p99": round(latency.percentile(measured["store"], 0.99), 1),
                "max": round(max(measured["store"]), 1),
            },
        }
    return figures


def print_profile(profile: Profile, samples_per_second: float) -> None:
    """Both views, with an estimate of each row's real cost: its share of the unprofiled time per sample."""
    per_sample_ns = 1e9 / samples_per_second
    print(f"\nsample path profile (cProfile); {per_sample_ns:,.0f} ns per sample unprofiled; ns = share x that")
    for title, rows, share in (
        ("largest own time", profile.by_own_time, "own_share"),
        ("project functions by cumulative time (the stages)", profile.by_cumulative_time, "cumulative_share"),
    ):
        print(f"  {title}:")
        print(f"  {'own':>6}  {'cumul.':>6}  {'ns':>6}  {'calls':>5}  where")
        for row in rows:
            print(
                f"  {row.own_share:6.1%}  {row.cumulative_share:6.1%}  {getattr(row, share) * per_sample_ns:6.0f}"
                f"  {row.calls_per_sample:5.2f}  {row.where}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--parts", nargs="+", choices=["engine", "modbus", "latency"], default=["engine", "modbus", "latency"]
    )
    engine = parser.add_argument_group("sample path")
    engine.add_argument("--points", type=int, default=1000, help="Properties fed by the pre-built samples")
    engine.add_argument("--engine-seconds", type=float, default=2.0, help="length of one measurement")
    engine.add_argument("--engine-rounds", type=int, default=3, help="measurements per variant (median)")
    engine.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time the sample path by wall time or by this process's CPU time (steadier on a shared machine)",
    )
    engine.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="profile the sample path (auto: when it misses its goal)",
    )
    modbus = parser.add_argument_group("end to end over Modbus TCP")
    modbus.add_argument("--units", type=int, default=4, help="unit ids on the device server, one device each")
    modbus.add_argument("--points-per-unit", type=int, default=2000)
    modbus.add_argument("--poll", type=float, default=0.01, help="poll interval of every point, seconds")
    modbus.add_argument("--change-period", type=float, default=0.05, help="seconds between device value changes")
    modbus.add_argument("--modbus-seconds", type=float, default=5.0, help="length of one measured window")
    modbus.add_argument("--modbus-rounds", type=int, default=2, help="windows each for hub and bare (interleaved)")
    timing = parser.add_argument_group("latency")
    timing.add_argument("--latency-rounds", type=int, default=300)
    timing.add_argument("--period", type=float, default=0.1, help="poll period of the latency hub, seconds")
    timing.add_argument(
        "--publishing-interval",
        type=float,
        default=0.0,
        help="the OPC UA client's requested publishing interval, ms (the hub grants 10 ms at least)",
    )
    parser.add_argument("--serve-device", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if arguments.serve_device:
        asyncio.run(serve_device(arguments.units, arguments.points_per_unit, arguments.change_period))
        return 0

    print(f"ingest benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)", flush=True)
    results: dict[str, Any] = {}
    if "engine" in arguments.parts:
        print(
            f"1. sample path: {arguments.points:,} points, {arguments.engine_rounds} x {arguments.engine_seconds:g} s"
            f" ({arguments.clock} clock) per variant ...",
            flush=True,
        )
        results["engine"] = asyncio.run(
            measure_engine(
                arguments.points,
                arguments.engine_seconds,
                arguments.engine_rounds,
                arguments.profile,
                CLOCKS[arguments.clock],
            )
        )
    if "modbus" in arguments.parts:
        print(
            f"2. Modbus TCP: {arguments.units} x {arguments.points_per_unit:,} points, poll {arguments.poll:g} s, "
            f"{arguments.modbus_rounds} x {arguments.modbus_seconds:g} s windows each ...",
            flush=True,
        )
        results["modbus"] = asyncio.run(
            measure_end_to_end(
                arguments.units,
                arguments.points_per_unit,
                arguments.poll,
                arguments.change_period,
                arguments.modbus_seconds,
                arguments.modbus_rounds,
            )
        )
    if "latency" in arguments.parts:
        print(f"3. latency: {arguments.latency_rounds} rounds, poll {arguments.period * 1000:g} ms ...", flush=True)
        results["latency"] = measure_latency(arguments.latency_rounds, arguments.period, arguments.publishing_interval)

    print(json.dumps(figures_json(arguments, results), indent=2))
    engine_figures: EngineFigures | None = results.get("engine")
    if engine_figures is not None and engine_figures.profile is not None:
        print_profile(engine_figures.profile, statistics.median(engine_figures.sample_path))
    print()
    print_table(report(arguments, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

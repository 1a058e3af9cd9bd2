"""The Modbus connector at scale, against real ``ModbusDeviceServer`` gateways on loopback.

* 500 points over 4 unit ids are read with the fewest requests: the minimum is computed here by
  dynamic programming over the layout (independently of the planner's greedy pass) and compared
  with the requests the *server* received, per unit id and function code.
* A slow device does not slow a fast one down.
* A device server that is stopped turns bad within two poll periods and, restarted on the same port,
  is read again (good samples) within 5 s.
"""

from __future__ import annotations

import itertools
import random
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aas_server.connectors.modbus import ModbusConnector
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.mapping.codecs import decode_register_point, encode_register_point, integer_range
from aas_server.mapping.schema import (
    BitPoint,
    DataType,
    MappingFile,
    ModbusTcpDevice,
    Order,
    RegisterPoint,
    Table,
    parse_mapping,
)
from aas_server.model.events import Quality, RawSample
from tests.support import wait_until

UNIT_IDS = (1, 2, 3, 4)
POINTS_PER_UNIT = 125
MERGE_GAP = 8
SERVER_SIZE = 8192
READ_FUNCTION_CODES = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING_REGISTER: 3, Table.INPUT_REGISTER: 4}
NUMERIC_TYPES = [data_type for data_type in DataType if data_type.is_numeric]
GAPS = (0,) * 12 + (1, 2, MERGE_GAP, MERGE_GAP + 1, 25, 140)


@dataclass
class Layout:
    """A generated gateway: point definitions for the mapping file and the value each point holds."""

    points: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def _value(generator: random.Random, data_type: DataType, length: int = 0) -> Any:
    if data_type is DataType.STRING:
        return "".join(generator.choice(string.ascii_letters) for _ in range(generator.randint(1, 2 * length)))
    if data_type is DataType.FLOAT32:
        return generator.randint(-40000, 40000) / 4  # exactly representable in binary32
    if data_type is DataType.FLOAT64:
        return generator.uniform(-1e12, 1e12)
    low, high = integer_range(data_type) or (0, 0)
    return generator.randint(low, high)


def build_layout(poll_intervals: tuple[float, ...], seed: int = 5) -> Layout:
    """125 points per unit id over all four tables: every data type, strings, bits sharing a register,
    gaps below, at and above ``MERGE_GAP`` and a request limit to respect. One-based addresses."""
    generator = random.Random(seed)
    layout = Layout()
    for unit_id in UNIT_IDS:
        next_free = dict.fromkeys(Table, 1)
        interval = dict.fromkeys(Table, poll_intervals[0])
        made = 0
        while made < POINTS_PER_UNIT:
            kind = generator.choices(["number", "string", "bits", "coil", "discrete"], weights=[12, 2, 3, 2, 2])[0]
            table = {
                "coil": Table.COIL,
                "discrete": Table.DISCRETE_INPUT,
            }.get(kind, generator.choice([Table.HOLDING_REGISTER, Table.INPUT_REGISTER]))
            gap = generator.choice(GAPS) * (16 if table.is_bit_table else 1)
            if generator.random() < 0.1:
                interval[table] = generator.choice(poll_intervals)
            address = next_free[table] + gap
            base = {
                "device": "gateway",
                "unit_id": unit_id,
                "table": table.value,
                "address": address,
                "poll_interval": interval[table],
            }
            entries: list[tuple[dict[str, Any], Any]] = []
            if kind == "number":
                data_type = generator.choice(NUMERIC_TYPES)
                orders = {"word_order": generator.choice(list(Order)), "byte_order": generator.choice(list(Order))}
                entries.append(({**base, "data_type": data_type.value, **orders}, _value(generator, data_type)))
                width = data_type.register_count
            elif kind == "string":
                length = generator.choice([1, 4, 10, 60, 100])
                entry = {**base, "data_type": "string", "length": length, "byte_order": generator.choice(list(Order))}
                entries.append((entry, _value(generator, DataType.STRING, length)))
                width = length
            elif kind == "bits":
                bits = sorted(generator.sample(range(16), generator.randint(2, 5)))
                for bit in bits[: POINTS_PER_UNIT - made]:
                    entries.append(({**base, "data_type": "bool", "bit": bit}, generator.random() < 0.5))
                width = 1
            else:
                entries.append((base, generator.random() < 0.5))
                width = 1
            next_free[table] = address + width
            for entry, value in entries:
                name = f"u{unit_id}.p{made:03d}"
                entry = {**entry, "name": name, "target": {"submodel": f"urn:test:sm:{unit_id}", "path": f"P{made}"}}
                layout.points.append(entry)
                layout.values[name] = value
                made += 1
    return layout


def gateway_mapping(layout: Layout, port: int, **device: Any) -> MappingFile:
    entry = {
        "name": "gateway",
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "addressing": "one-based",
        "merge_gap": MERGE_GAP,
        **device,
    }
    return parse_mapping({"devices": [entry], "points": layout.points}, "gateway.yaml")


def modbus_device(mapping: MappingFile) -> ModbusTcpDevice:
    device = mapping.devices[0]
    assert isinstance(device, ModbusTcpDevice)
    return device


def load_values(server: ModbusDeviceServer, mapping: MappingFile, layout: Layout) -> None:
    """Put every point's value into the server's tables, as the devices behind the gateway would."""
    device = modbus_device(mapping)
    for point in mapping.modbus_points_of(device.name):
        address, unit_id = device.wire_address(point), device.point_unit_id(point)
        value = layout.values[point.name]
        if isinstance(point, BitPoint):
            server.set_bits(point.table, address, [value], unit_id)
        elif point.bit is not None:
            server.set_register_bit(point.table, address, point.bit, value, unit_id)
        else:
            server.set_registers(point.table, address, encode_register_point(point, value), unit_id)


def minimum_reads(spans: list[tuple[int, int]], limit: int, gap: int) -> int:
    """The fewest reads covering ``spans`` (``[start, end)``), each read at most ``limit`` long and
    bridging no gap wider than ``gap``: dynamic programming over the address-ordered spans."""
    spans = sorted(spans)
    best = [0] + [len(spans) + 1] * len(spans)
    for first in range(len(spans)):
        end = spans[first][1]
        for last in range(first, len(spans)):
            start, stop = spans[last]
            if last > first and start - end > gap:
                break
            end = max(end, stop)
            if end - spans[first][0] > limit:
                break
            best[last + 1] = min(best[last + 1], best[first] + 1)
    return best[-1]


def expected_request_counts(mapping: MappingFile) -> Counter[tuple[int, int]]:
    """The minimum number of read requests per (unit id, function code) for one poll of every group."""
    device = modbus_device(mapping)
    groups: dict[tuple[int, Table, float], list[tuple[int, int]]] = {}
    for point in mapping.modbus_points_of(device.name):
        start = device.wire_address(point)
        key = (device.point_unit_id(point), point.table, point.poll_interval)
        groups.setdefault(key, []).append((start, start + point.register_count))
    counts: Counter[tuple[int, int]] = Counter()
    for (unit_id, table, _), spans in groups.items():
        limit = 2000 if table.is_bit_table else 125
        gap = MERGE_GAP * (16 if table.is_bit_table else 1)
        counts[(unit_id, READ_FUNCTION_CODES[table])] += minimum_reads(spans, limit, gap)
    return counts


class Watcher:
    """The sink: latest sample per point, when each point's quality last changed, arrivals per point."""

    def __init__(self, watched: str | None = None) -> None:
        self.latest: dict[str, RawSample] = {}
        self.changed_at: dict[str, float] = {}
        self.watched = watched
        self.arrivals: list[float] = []

    def __call__(self, sample: RawSample) -> None:
        previous = self.latest.get(sample.point)
        if previous is None or previous.quality is not sample.quality:
            self.changed_at[sample.point] = time.monotonic()
        self.latest[sample.point] = sample
        if sample.point == self.watched and sample.quality is Quality.GOOD:
            self.arrivals.append(time.monotonic())

    def all(self, quality: Quality, names: Iterator[str] | list[str]) -> bool:
        return all(name in self.latest and self.latest[name].quality is quality for name in names)


def decoded(point: RegisterPoint | BitPoint, sample: RawSample) -> Any:
    if isinstance(point, BitPoint):
        return sample.raw[0]
    return decode_register_point(point, sample.raw)


async def test_500_points_over_4_unit_ids_are_read_with_the_fewest_requests() -> None:
    layout = build_layout(poll_intervals=(60.0, 120.0))  # long: the test sees exactly the first poll
    assert len(layout.points) == 500
    async with ModbusDeviceServer(unit_ids=UNIT_IDS, size=SERVER_SIZE) as server:
        mapping = gateway_mapping(layout, server.port)
        device = modbus_device(mapping)
        points = mapping.modbus_points_of(device.name)
        load_values(server, mapping, layout)
        expected = expected_request_counts(mapping)
        watcher = Watcher()
        connector = ModbusConnector(device, points, watcher)
        async with connector:
            await wait_until(lambda: watcher.all(Quality.GOOD, list(layout.values)), within=10.0, what="every point")
            received = server.request_counts
        print(f"{len(points)} points read with {sum(received.values())} requests: {sorted(received.items())}")
        assert dict(received) == dict(expected)
        assert sum(received.values()) == len(connector.read_requests)
        assert {unit_id for unit_id, _ in received} == set(UNIT_IDS)
        assert {code for _, code in received} == {1, 2, 3, 4}
        assert sum(received.values()) < len(points) / 4  # coalesced: far fewer requests than points
        wrong = {
            point.name: (decoded(point, watcher.latest[point.name]), layout.values[point.name])
            for point in points
            if decoded(point, watcher.latest[point.name]) != layout.values[point.name]
        }
        assert wrong == {}


def test_the_planner_finds_the_minimum_on_many_layouts() -> None:
    for seed in range(40):
        mapping = gateway_mapping(build_layout(poll_intervals=(1.0, 2.0, 5.0), seed=seed), 502)
        device = modbus_device(mapping)
        requests = ModbusConnector(device, mapping.modbus_points_of(device.name), lambda sample: None).read_requests
        planned = Counter((request.unit_id, request.function_code) for request in requests)
        assert planned == expected_request_counts(mapping), f"seed {seed}"


def test_the_layout_exercises_every_planning_rule() -> None:
    layout = build_layout(poll_intervals=(60.0, 120.0))
    mapping = gateway_mapping(layout, 502)
    device = modbus_device(mapping)
    points = mapping.modbus_points_of(device.name)
    register_points = [point for point in points if isinstance(point, RegisterPoint)]
    assert {point.data_type for point in register_points} == set(DataType)
    assert {(point.word_order, point.byte_order) for point in register_points} == set(itertools.product(Order, Order))
    shared = Counter((point.unit_id, point.table, point.address) for point in register_points if point.bit is not None)
    assert max(shared.values()) >= 3
    assert any(point.register_count >= 60 for point in register_points)
    connector = ModbusConnector(device, points, lambda sample: None)
    requests = connector.read_requests
    assert max(request.count for request in requests if not request.table.is_bit_table) > 100
    assert all(request.count <= 125 for request in requests if not request.table.is_bit_table)


async def test_a_slow_device_does_not_slow_a_fast_one() -> None:
    fast_layout = build_layout(poll_intervals=(0.1,))
    slow_layout = build_layout(poll_intervals=(0.1,), seed=6)
    async with (
        ModbusDeviceServer(unit_ids=UNIT_IDS, size=SERVER_SIZE) as fast_server,
        ModbusDeviceServer(unit_ids=UNIT_IDS, size=SERVER_SIZE, response_delay=0.02) as slow_server,
    ):
        fast_mapping = gateway_mapping(fast_layout, fast_server.port, timeout=1.0)
        slow_mapping = gateway_mapping(slow_layout, slow_server.port, timeout=1.0)
        load_values(fast_server, fast_mapping, fast_layout)
        load_values(slow_server, slow_mapping, slow_layout)
        fast = Watcher(watched="u1.p000")
        slow = Watcher(watched="u1.p000")
        fast_connector = ModbusConnector(modbus_device(fast_mapping), fast_mapping.modbus_points_of("gateway"), fast)
        slow_connector = ModbusConnector(modbus_device(slow_mapping), slow_mapping.modbus_points_of("gateway"), slow)
        async with fast_connector, slow_connector:
            await wait_until(lambda: len(slow.arrivals) >= 1, within=5.0, what="the slow device's first poll")
            window_start = time.monotonic()
            await wait_until(lambda: len(slow.arrivals) >= 3, within=10.0, what="two more slow polls")
            window = time.monotonic() - window_start
        slow_period = (slow.arrivals[-1] - slow.arrivals[0]) / (len(slow.arrivals) - 1)
        fast_in_window = [arrival for arrival in fast.arrivals if arrival >= window_start]
        fast_gaps = [later - earlier for earlier, later in itertools.pairwise(fast_in_window)]
        slow_requests = len(slow_connector.read_requests)
        # The slow gateway needs 0.02 s more per request, so a poll takes more than a second ...
        assert slow_period > 0.02 * slow_requests * 0.9 > 1.0
        # ... while the fast one keeps its 0.1 s poll period all along.
        assert len(fast_in_window) >= 0.8 * window / 0.1
        print(
            f"slow poll {slow_period:.2f} s over {slow_requests} requests; fast: {len(fast_in_window)} polls "
            f"in {window:.2f} s, longest gap {max(fast_gaps):.3f} s"
        )
        assert max(fast_gaps) < 2.5 * 0.1
        assert slow.all(Quality.GOOD, list(slow_layout.values))


async def test_a_stopped_device_goes_bad_within_two_polls_and_is_read_again_within_5_s_of_its_return() -> None:
    poll = 0.2
    layout = build_layout(poll_intervals=(poll,))
    names = list(layout.values)
    async with ModbusDeviceServer(unit_ids=UNIT_IDS, size=SERVER_SIZE) as server:
        mapping = gateway_mapping(layout, server.port)  # default timeout, retries and reconnect backoff
        load_values(server, mapping, layout)
        watcher = Watcher()
        connector = ModbusConnector(modbus_device(mapping), mapping.modbus_points_of("gateway"), watcher)
        port = server.port
        async with connector:
            await wait_until(lambda: watcher.all(Quality.GOOD, names), within=5.0, what="every point good")

            stopped = time.monotonic()
            await server.stop()
            await wait_until(lambda: watcher.all(Quality.BAD, names), within=10 * poll, what="every point bad")
            bad_after = max(watcher.changed_at[name] for name in names) - stopped
            print(f"500 points bad {bad_after:.3f} s after the stop (poll {poll} s)")
            assert bad_after <= 2 * poll, f"bad after {bad_after:.3f} s"

            # Stay down for several reconnect attempts (the backoff grows: 0.2, 0.4, 0.8 s ...).
            down_since = time.monotonic()
            await wait_until(lambda: time.monotonic() - down_since > 1.5, within=3.0)
            assert not connector.connected

            restarted = time.monotonic()
            await server.start()
            assert server.port == port
            await wait_until(lambda: watcher.all(Quality.GOOD, names), within=6.0, what="every point good again")
            good_after = max(watcher.changed_at[name] for name in names) - restarted
            print(f"500 points good {good_after:.3f} s after the restart")
            assert good_after <= 5.0, f"good again after {good_after:.3f} s"
            assert connector.connected

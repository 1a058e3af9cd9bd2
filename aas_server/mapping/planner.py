"""Read planning: which Modbus read requests fetch a device's points (pure).

Points are grouped by unit id, table and poll interval; within a group, neighbouring registers are
read in one request of at most 125 registers or 2000 bits (Modbus Application Protocol V1.1b3,
sections 6.1-6.4, or the device's lower limit). A gap of unmapped addresses is bridged when it is at
most ``merge_gap`` registers (``16 * merge_gap`` bits): reading a few spare registers costs fewer
bytes and less latency than another request/response round trip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from aas_server.mapping.schema import BitPoint, Device, RegisterPoint, Table

Point = RegisterPoint | BitPoint


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """Where one point's words (or bit) sit in a read request's answer."""

    name: str
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read request: ``count`` items of ``table`` from zero-based ``address`` of ``unit_id``."""

    unit_id: int
    table: Table
    address: int
    count: int
    poll_interval: float
    points: tuple[PlannedPoint, ...]


def plan_reads(device: Device, points: Iterable[Point]) -> list[ReadRequest]:
    """The fewest read requests that cover ``points`` of ``device``, in a stable order."""
    groups: dict[tuple[int, Table, float], list[tuple[int, Point]]] = defaultdict(list)
    for point in points:
        key = (device.point_unit_id(point), point.table, point.poll_interval)
        groups[key].append((device.wire_address(point), point))

    requests: list[ReadRequest] = []
    for (unit_id, table, poll_interval), members in sorted(groups.items(), key=lambda item: item[0]):
        members.sort(key=lambda member: (member[0], member[1].name))
        limit = device.max_read_count(table)
        gap = device.merge_gap * (16 if table.is_bit_table else 1)
        batches: list[list[tuple[int, Point]]] = []
        end = 0
        for address, point in members:
            point_end = address + point.register_count
            if batches and address - end <= gap and max(end, point_end) - batches[-1][0][0] <= limit:
                batches[-1].append((address, point))
                end = max(end, point_end)
            else:
                batches.append([(address, point)])
                end = point_end
        for batch in batches:
            start = batch[0][0]
            stop = max(address + point.register_count for address, point in batch)
            planned = tuple(PlannedPoint(point.name, address - start, point.register_count) for address, point in batch)
            requests.append(ReadRequest(unit_id, table, start, stop - start, poll_interval, planned))
    return requests

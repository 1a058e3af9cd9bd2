"""Read planning: which Modbus read requests fetch a device's points (pure).

Points are grouped by unit id, table and poll interval (a *poll group*); within a group,
neighbouring points are read in one request of at most 125 registers or 2000 bits (Modbus
Application Protocol V1.1b3, sections 6.1-6.4), or the device's lower ``max_read_registers`` /
``max_read_bits``. Several ``bool`` points on bits of one register share that register's read; a
string is read whole, never split across requests.

A gap of unmapped addresses between two points is read along (*bridged*) when it is at most the
device's ``merge_gap`` registers (``16 * merge_gap`` bits). Bridging is the cheaper choice there:
each spare register adds two bytes to one response, while another request costs a 12-byte request,
a 9-byte response header, two TCP segments and a round trip. Wider gaps split the read.

Within those rules the plan has the fewest requests: points are taken in address order and each
request is extended while the next point fits. Any request that covers a run of points also covers
every shorter run inside it, so no other partition needs fewer requests.

Left out: read/write multiple registers (23), reading around addresses a device refuses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from aas_server.errors import MappingError
from aas_server.mapping.schema import BitPoint, ModbusTcpDevice, RegisterPoint, Table

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

    @property
    def function_code(self) -> int:
        """The Modbus function code that reads ``table`` (sections 6.1-6.4)."""
        return _READ_FUNCTION_CODES[self.table]


_READ_FUNCTION_CODES = {
    Table.COIL: 1,
    Table.DISCRETE_INPUT: 2,
    Table.HOLDING_REGISTER: 3,
    Table.INPUT_REGISTER: 4,
}


def plan_reads(device: ModbusTcpDevice, points: Iterable[Point]) -> list[ReadRequest]:
    """The fewest read requests that cover ``points`` of ``device``, ordered by unit, table, interval, address.

    Raises ``MappingError`` for a point wider than one request may be.
    """
    groups: dict[tuple[int, Table, float], list[tuple[int, Point]]] = defaultdict(list)
    for point in points:
        limit = device.max_read_count(point.table)
        if point.register_count > limit:
            raise MappingError(
                f"point {point.name!r} needs {point.register_count} registers, but device {device.name!r} "
                f"reads at most {limit} in one request"
            )
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

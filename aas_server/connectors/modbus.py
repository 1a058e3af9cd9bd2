"""Modbus TCP: the polling client connector and a small device server (the only pymodbus user).

``ModbusConnector`` polls one device (Modbus Application Protocol V1.1b3 function codes 1-4) with
the requests ``mapping.planner`` plans, emits a ``RawSample`` per point and poll, and writes single
registers (6), multiple registers (16) and single coils (5). It owns its connection: a lost or
unreachable device gives bad-quality samples (``NO_COMMUNICATION``; an exception response gives
``COMMUNICATION_ERROR``), is logged once when it goes and once when it comes back, and is
reconnected with capped exponential backoff. pymodbus' own reconnect is switched off and its
exceptions are translated into ``aas_server.errors`` here.

``ModbusDeviceServer`` is a Modbus TCP server over plain in-memory tables (holding and input
registers, coils, discrete inputs, per unit id) that the simulator and tests read and write
synchronously, and that sees what Modbus clients write.

Left out: Modbus RTU/ASCII, TLS, mask write (22) and read/write multiple (23) on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimulatorDataType
from pymodbus.simulator import SimData, SimDevice

from aas_server.errors import DeviceError, DeviceTimeoutError, NotFoundError
from aas_server.mapping.planner import ReadRequest, plan_reads
from aas_server.mapping.schema import BitPoint, Device, RegisterPoint, Table
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, utc_now

logger = logging.getLogger(__name__)

Point = RegisterPoint | BitPoint
SampleSink = Callable[[RawSample], None]

_EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


def _quiet_library_logging() -> None:
    """pymodbus logs every failed connect and timeout; the connector reports outages once itself.

    Applied only when nobody configured the ``pymodbus`` logger (set its level to see its logs).
    """
    library_logger = logging.getLogger("pymodbus")
    if library_logger.level == logging.NOTSET:
        library_logger.setLevel(logging.CRITICAL)


def _exception_text(response: Any) -> str:
    code = int(getattr(response, "exception_code", 0) or 0)
    return f"exception code {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"


class ModbusConnector:
    """Polls one Modbus TCP device and writes to it; one instance per device.

    ``sink`` receives every ``RawSample`` synchronously on the event loop; it must not block.
    """

    def __init__(self, device: Device, points: Sequence[Point], sink: SampleSink) -> None:
        foreign = [point.name for point in points if point.device != device.name]
        if foreign:
            raise ValueError(f"points {foreign} do not belong to device {device.name!r}")
        self.device = device
        self._sink = sink
        self._points = {point.name: point for point in points}
        self._requests = plan_reads(device, points)
        self._client: AsyncModbusTcpClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._connection_lost = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._reachable: bool | None = None
        self._failing_requests: set[int] = set()
        self._request_budget = device.timeout * (device.retries + 1) + 0.5
        self._reconnect_delay = device.reconnect_backoff.initial

    @property
    def connected(self) -> bool:
        """Whether a TCP connection to the device is open now."""
        return self._client is not None and self._client.connected

    @property
    def read_requests(self) -> list[ReadRequest]:
        """The planned read requests (for diagnostics)."""
        return list(self._requests)

    async def __aenter__(self) -> Self:
        """Start connecting and polling; does not wait for, nor fail on, an unreachable device."""
        _quiet_library_logging()
        name = self.device.name
        self._tasks.append(asyncio.create_task(self._maintain_connection(), name=f"modbus {name} connection"))
        by_interval: dict[float, list[int]] = {}
        for index, request in enumerate(self._requests):
            by_interval.setdefault(request.poll_interval, []).append(index)
        for interval, indexes in sorted(by_interval.items()):
            self._tasks.append(
                asyncio.create_task(self._poll(interval, indexes), name=f"modbus {name} poll {interval:g}s")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop polling and close the connection.

        Cancels until every task has ended: Python 3.11's ``asyncio.wait_for`` (used inside pymodbus)
        can swallow a cancellation that arrives just as a response does, so one ``cancel`` is not enough.
        """
        self._stopping = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()
        self._close_client()

    # --- connection ----------------------------------------------------------------------------

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _on_library_connection_change(self, connected: bool) -> None:
        if not connected:
            self._connection_lost.set()

    async def _connect(self) -> bool:
        client = AsyncModbusTcpClient(
            self.device.host,
            port=self.device.port,
            name=self.device.name,
            timeout=self.device.timeout,
            retries=self.device.retries,
            reconnect_delay=0,
            trace_connect=self._on_library_connection_change,
        )
        try:
            async with asyncio.timeout(self.device.timeout + 0.5):
                connected = bool(await client.connect())
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected:
            client.close()
            return False
        self._client = client
        return True

    async def _maintain_connection(self) -> None:
        backoff = self.device.reconnect_backoff
        while not self._stopping:
            if not self.connected:
                self._close_client()
                self._connection_lost.clear()
                if not await self._connect():
                    self._mark_unreachable("connection refused or timed out")
                    self._first_attempt_done.set()
                    await self._back_off(backoff.maximum)
                    continue
                self._first_attempt_done.set()
            await self._connection_lost.wait()
            if self._reachable is False:
                await self._back_off(backoff.maximum)

    async def _back_off(self, maximum: float) -> None:
        """Wait before the next connection attempt; the wait doubles until the device answers again."""
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, maximum)
        await asyncio.sleep(delay)

    def _drop_connection(self, reason: str) -> None:
        self._mark_unreachable(reason)
        self._close_client()
        self._connection_lost.set()

    def _mark_reachable(self) -> None:
        if self._reachable is True:
            return
        self._reconnect_delay = self.device.reconnect_backoff.initial
        where = f"{self.device.host}:{self.device.port}"
        if self._reachable is False:
            logger.info("Modbus device %r at %s is reachable again", self.device.name, where)
        else:
            logger.debug("Modbus device %r at %s answers", self.device.name, where)
        self._reachable = True

    def _mark_unreachable(self, reason: str) -> None:
        if self._reachable is not False:
            logger.warning(
                "Modbus device %r at %s:%d is unreachable: %s; its values are bad until it is back",
                self.device.name,
                self.device.host,
                self.device.port,
                reason,
            )
        self._reachable = False

    # --- reading -------------------------------------------------------------------------------

    async def _poll(self, interval: float, indexes: list[int]) -> None:
        await self._first_attempt_done.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not self._stopping:
            for index in indexes:
                await self._read(index)
            deadline += interval
            now = loop.time()
            if deadline < now:
                deadline = now
            await asyncio.sleep(deadline - now)

    async def _read(self, index: int) -> None:
        request = self._requests[index]
        client = self._client
        if client is None or not client.connected:
            self._mark_unreachable("connection lost")
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        try:
            async with asyncio.timeout(self._request_budget):
                response = await self._execute_read(client, request)
        except (TimeoutError, ModbusIOException) as error:
            self._drop_connection(f"no answer ({error or 'timeout'})")
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        except (ConnectionException, OSError) as error:
            self._drop_connection(str(error))
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        except ModbusException as error:
            self._note_request_failure(index, request, str(error))
            self._emit_failure(request, QualityReason.COMMUNICATION_ERROR)
            return
        self._mark_reachable()
        if response.isError():
            self._note_request_failure(index, request, _exception_text(response))
            self._emit_failure(request, QualityReason.COMMUNICATION_ERROR)
            return
        if index in self._failing_requests:
            self._failing_requests.discard(index)
            logger.info(
                "Modbus device %r answers %s %d..%d again",
                self.device.name,
                request.table.value,
                request.address,
                request.address + request.count - 1,
            )
        self._emit_values(request, response)

    async def _execute_read(self, client: AsyncModbusTcpClient, request: ReadRequest) -> Any:
        address, count, unit_id = request.address, request.count, request.unit_id
        if request.table is Table.HOLDING_REGISTER:
            return await client.read_holding_registers(address, count=count, device_id=unit_id)
        if request.table is Table.INPUT_REGISTER:
            return await client.read_input_registers(address, count=count, device_id=unit_id)
        if request.table is Table.COIL:
            return await client.read_coils(address, count=count, device_id=unit_id)
        return await client.read_discrete_inputs(address, count=count, device_id=unit_id)

    def _note_request_failure(self, index: int, request: ReadRequest, reason: str) -> None:
        if index not in self._failing_requests:
            self._failing_requests.add(index)
            logger.warning(
                "Modbus device %r refuses to read %s %d..%d of unit %d: %s",
                self.device.name,
                request.table.value,
                request.address,
                request.address + request.count - 1,
                request.unit_id,
                reason,
            )

    def _emit(self, sample: RawSample) -> None:
        try:
            self._sink(sample)
        except Exception:
            logger.exception("sample sink failed for point %r", sample.point)

    def _emit_failure(self, request: ReadRequest, reason: QualityReason) -> None:
        now = utc_now()
        for planned in request.points:
            self._emit(RawSample(self.device.name, planned.name, None, now, Quality.BAD, reason))

    def _emit_values(self, request: ReadRequest, response: Any) -> None:
        now = utc_now()
        items: list[int] | list[bool]
        if request.table.is_bit_table:
            items = [bool(bit) for bit in response.bits[: request.count]]
        else:
            items = [int(word) for word in response.registers[: request.count]]
        for planned in request.points:
            raw = tuple(items[planned.offset : planned.offset + planned.count])
            if len(raw) != planned.count:
                self._emit(
                    RawSample(self.device.name, planned.name, None, now, Quality.BAD, QualityReason.DECODE_ERROR)
                )
                continue
            self._emit(RawSample(self.device.name, planned.name, raw, now))

    # --- writing -------------------------------------------------------------------------------

    async def write(self, raw: RawWrite) -> None:
        """Write a point's raw value; returns once the device acknowledged it.

        Raises ``DeviceTimeoutError`` when the device does not answer in time, ``DeviceError`` when
        it is not connected or answers with an exception response.
        """
        point = self._points.get(raw.point)
        if point is None:
            raise NotFoundError(f"device {self.device.name!r} has no point {raw.point!r}")
        if len(raw.raw) != point.register_count:
            raise ValueError(f"point {point.name!r} needs {point.register_count} items, got {len(raw.raw)}")
        if not self._first_attempt_done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.device.timeout + 0.5):
                    await self._first_attempt_done.wait()
        client = self._client
        if client is None or not client.connected:
            raise DeviceError("not connected; the write was not sent", device=self.device.name)
        address = self.device.wire_address(point)
        unit_id = self.device.point_unit_id(point)
        try:
            async with asyncio.timeout(self._request_budget):
                if isinstance(point, BitPoint):
                    response = await client.write_coil(address, bool(raw.raw[0]), device_id=unit_id)
                elif len(raw.raw) == 1:
                    response = await client.write_register(address, int(raw.raw[0]), device_id=unit_id)
                else:
                    words = [int(word) for word in raw.raw]
                    response = await client.write_registers(address, words, device_id=unit_id)
        except (TimeoutError, ModbusIOException) as error:
            self._drop_connection(f"no answer ({error or 'timeout'})")
            raise DeviceTimeoutError(
                f"no answer to the write of {point.name!r} within {self._request_budget:g} s",
                device=self.device.name,
            ) from None
        except (ConnectionException, OSError) as error:
            self._drop_connection(str(error))
            raise DeviceError(f"connection lost while writing {point.name!r}", device=self.device.name) from None
        except ModbusException as error:
            raise DeviceError(f"write of {point.name!r} failed: {error}", device=self.device.name) from None
        self._mark_reachable()
        if response.isError():
            raise DeviceError(
                f"device refused the write of {point.name!r}: {_exception_text(response)}", device=self.device.name
            )


# --- device server --------------------------------------------------------------------------------

_TABLE_BY_FUNCTION_CODE = {
    1: Table.COIL,
    5: Table.COIL,
    15: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING_REGISTER,
    6: Table.HOLDING_REGISTER,
    16: Table.HOLDING_REGISTER,
    22: Table.HOLDING_REGISTER,
    23: Table.HOLDING_REGISTER,
    4: Table.INPUT_REGISTER,
}


class _UnitMemory:
    """The four tables of one unit id."""

    def __init__(self, size: int) -> None:
        self.words: dict[Table, list[int]] = {
            Table.HOLDING_REGISTER: [0] * size,
            Table.INPUT_REGISTER: [0] * size,
        }
        self.bits: dict[Table, list[bool]] = {Table.COIL: [False] * size, Table.DISCRETE_INPUT: [False] * size}


class ModbusDeviceServer:
    """A Modbus TCP server over in-memory tables, for the simulator and tests.

    Each unit id has ``size`` holding registers, input registers, coils and discrete inputs at
    zero-based addresses ``0..size-1``; other addresses answer with exception code 2. The tables
    survive ``stop()``/``start()``, and a restart binds the same port again.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, unit_ids: Iterable[int] = (1,), size: int = 1024
    ) -> None:
        if size <= 0 or size % 16 or size > 65536:
            raise ValueError("size must be a positive multiple of 16 up to 65536")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._size = size
        self._memory = {unit_id: _UnitMemory(size) for unit_id in unit_ids}
        if not self._memory:
            raise ValueError("at least one unit id is needed")
        self._server: ModbusTcpServer | None = None

    @property
    def port(self) -> int:
        """The bound port (the OS-chosen one when created with port 0); valid after ``start()``."""
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def unit_ids(self) -> list[int]:
        return list(self._memory)

    async def start(self) -> None:
        """Listen; after a ``stop()`` on the port bound before."""
        if self._server is not None:
            return
        _quiet_library_logging()
        port = self._port if self._port is not None else self._requested_port
        devices = [self._sim_device(unit_id) for unit_id in self._memory]
        server = ModbusTcpServer(devices, address=(self.host, port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as error:
            raise DeviceError(f"cannot listen on {self.host}:{port}: {error}") from None
        sockets = getattr(server.transport, "sockets", None) or ()
        if not sockets:
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise DeviceError(f"cannot listen on {self.host}:{port}")
        self._port = int(sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _sim_device(self, unit_id: int) -> SimDevice:
        memory = self._memory[unit_id]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            table = _TABLE_BY_FUNCTION_CODE.get(function_code)
            if table is None:
                return ExcCodes.ILLEGAL_FUNCTION
            if table.is_bit_table:
                bits = memory.bits[table]
                if set_values is not None:
                    bits[address : address + len(set_values)] = [bool(value) for value in set_values]
                first_word = address // 16
                for word_index in range(first_word, first_word + count):
                    chunk = bits[word_index * 16 : word_index * 16 + 16]
                    current_registers[word_index - start_address] = sum(
                        1 << bit for bit, value in enumerate(chunk) if value
                    )
            else:
                words = memory.words[table]
                if set_values is not None:
                    words[address : address + len(set_values)] = [int(value) for value in set_values]
                offset = address - start_address
                current_registers[offset : offset + count] = words[address : address + count]
            return None

        registers = [0] * self._size
        bits = [False] * self._size
        return SimDevice(
            unit_id,
            simdata=(
                [SimData(0, values=list(bits), datatype=SimulatorDataType.BITS)],
                [SimData(0, values=list(bits), datatype=SimulatorDataType.BITS)],
                [SimData(0, values=list(registers), datatype=SimulatorDataType.REGISTERS)],
                [SimData(0, values=list(registers), datatype=SimulatorDataType.REGISTERS)],
            ),
            action=action,
        )

    def _check(self, table: Table, address: int, count: int, unit_id: int) -> _UnitMemory:
        if unit_id not in self._memory:
            raise KeyError(f"no unit id {unit_id}")
        if address < 0 or count < 0 or address + count > self._size:
            raise IndexError(f"{table.value} {address}..{address + count - 1} is outside 0..{self._size - 1}")
        return self._memory[unit_id]

    def get_registers(self, table: Table, address: int, count: int, unit_id: int = 1) -> tuple[int, ...]:
        """Words of a holding or input register range (zero-based addresses)."""
        if table.is_bit_table:
            raise ValueError(f"{table.value} holds bits; use get_bits")
        memory = self._check(table, address, count, unit_id)
        return tuple(memory.words[table][address : address + count])

    def set_registers(self, table: Table, address: int, values: Sequence[int], unit_id: int = 1) -> None:
        """Set words of a holding or input register range (as the device itself would)."""
        if table.is_bit_table:
            raise ValueError(f"{table.value} holds bits; use set_bits")
        memory = self._check(table, address, len(values), unit_id)
        for value in values:
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"register value {value} is not an unsigned 16-bit word")
        memory.words[table][address : address + len(values)] = [int(value) for value in values]

    def get_bits(self, table: Table, address: int, count: int, unit_id: int = 1) -> tuple[bool, ...]:
        """Coils or discrete inputs."""
        if not table.is_bit_table:
            raise ValueError(f"{table.value} holds registers; use get_registers")
        memory = self._check(table, address, count, unit_id)
        return tuple(memory.bits[table][address : address + count])

    def set_bits(self, table: Table, address: int, values: Sequence[bool], unit_id: int = 1) -> None:
        """Set coils or discrete inputs."""
        if not table.is_bit_table:
            raise ValueError(f"{table.value} holds registers; use set_registers")
        memory = self._check(table, address, len(values), unit_id)
        memory.bits[table][address : address + len(values)] = [bool(value) for value in values]

    def get_raw(self, table: Table, address: int, count: int, unit_id: int = 1) -> tuple[int, ...] | tuple[bool, ...]:
        """Words or bits, whichever ``table`` holds (the form of ``RawSample.raw``)."""
        if table.is_bit_table:
            return self.get_bits(table, address, count, unit_id)
        return self.get_registers(table, address, count, unit_id)

    def set_raw(self, table: Table, address: int, values: tuple[int, ...] | tuple[bool, ...], unit_id: int = 1) -> None:
        """Set words or bits, whichever ``table`` holds (the form of ``RawWrite.raw``)."""
        if table.is_bit_table:
            self.set_bits(table, address, [bool(value) for value in values], unit_id)
        else:
            self.set_registers(table, address, [int(value) for value in values], unit_id)

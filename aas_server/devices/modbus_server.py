"""A Modbus TCP device server over in-memory tables: the simulated PLC of the demo, tests and benchmarks.

``ModbusDeviceServer`` is a Modbus TCP server over plain in-memory tables (holding and input
registers, coils, discrete inputs, per unit id) that the simulator and tests read and write
synchronously, that sees what Modbus clients write (function codes 1-6, 15, 16, 22, 23), counts the
requests it receives per unit id and function code, and can answer late or refuse function codes.

It is a device, not a connector: the hub reaches it through ``aas_server.connectors.modbus`` like
any PLC. pymodbus therefore has two homes, the client connector and this server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType as SimulatorDataType
from pymodbus.simulator import SimData, SimDevice

from aas_server.errors import DeviceError
from aas_server.lifecycle import Service
from aas_server.mapping.codecs import with_register_bit
from aas_server.mapping.schema import Table


def _quiet_library_logging() -> None:
    """pymodbus logs every connection and failed request; applied only when nobody configured its logger."""
    library_logger = logging.getLogger("pymodbus")
    if library_logger.level == logging.NOTSET:
        library_logger.setLevel(logging.CRITICAL)


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


class _RequestHandler(ServerRequestHandler):
    """pymodbus' handler of one client connection, with counting, delays and refusals.

    pymodbus answers with the *newest* request on the connection (``last_pdu``); here each request
    is queued as it arrives and answered with its own transaction id, also after a delay.
    """

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)  # type: ignore[no-untyped-call]
        self._arrived: deque[tuple[Any, Any]] = deque()

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        used = int(super().callback_data(data, addr))
        if self.last_pdu is not None:
            self._arrived.append((self.last_pdu, self.last_addr))
        return used

    async def handle_request(self) -> None:
        if not self._arrived:
            return
        request, address = self._arrived.popleft()
        device_server: ModbusDeviceServer = self.server.device_server
        exception_code = await device_server._admit(int(request.dev_id), int(request.function_code))
        if not self.transport:
            return
        if exception_code is not None:
            response = ExceptionResponse(
                request.function_code, exception_code, device_id=request.dev_id, transaction=request.transaction_id
            )
            self.server_send(response, address)  # type: ignore[no-untyped-call]
            return
        self.last_pdu, self.last_addr = request, address
        await super().handle_request()  # type: ignore[no-untyped-call]


class _TcpServer(ModbusTcpServer):
    def __init__(self, device_server: ModbusDeviceServer, devices: list[SimDevice], address: tuple[str, int]) -> None:
        super().__init__(devices, address=address)
        self.device_server = device_server

    def callback_new_connection(self) -> ServerRequestHandler:
        return _RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusDeviceServer(Service):
    """A Modbus TCP server over in-memory tables, for the simulator, tests and benchmarks.

    Each unit id has ``size`` holding registers, input registers, coils and discrete inputs at
    zero-based addresses ``0..size-1``; other addresses answer with exception code 2, unit ids it
    does not serve with exception code 11 (as a gateway with nothing behind that id). The tables
    survive ``stop()``/``start()``, and a restart binds the same port again.

    ``response_delay`` (seconds, changeable while running; ``unit_response_delays`` per unit id)
    holds every answer back, as a slow device or a slow line behind a gateway would; requests on
    one connection are still processed concurrently. Function codes in ``refused_function_codes``
    are answered with exception code 1 (illegal function). ``request_counts`` tells how many
    requests arrived per unit id and function code.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_ids: Iterable[int] = (1,),
        size: int = 1024,
        response_delay: float = 0.0,
        refused_function_codes: Iterable[int] = (),
    ) -> None:
        if size <= 0 or size % 16 or size > 65536:
            raise ValueError("size must be a positive multiple of 16 up to 65536")
        if response_delay < 0:
            raise ValueError("response_delay must not be negative")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._size = size
        self._memory = {unit_id: _UnitMemory(size) for unit_id in unit_ids}
        if not self._memory:
            raise ValueError("at least one unit id is needed")
        self._server: _TcpServer | None = None
        self.response_delay = response_delay
        """Seconds every answer is held back."""
        self.unit_response_delays: dict[int, float] = {}
        """Seconds the answers of a unit id are held back, instead of ``response_delay``."""
        self.refused_function_codes: set[int] = set(refused_function_codes)
        """Function codes answered with exception code 1 (illegal function)."""
        self._request_counts: Counter[tuple[int, int]] = Counter()
        self._waiting: set[asyncio.Task[Any]] = set()

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

    @property
    def request_counts(self) -> Mapping[tuple[int, int], int]:
        """Requests received since start or ``reset_request_counts()``, by ``(unit id, function code)``."""
        return dict(self._request_counts)

    def request_count(self, unit_id: int | None = None, function_code: int | None = None) -> int:
        """Requests received for ``unit_id`` and ``function_code`` (``None``: any)."""
        return sum(
            count
            for (unit, code), count in self._request_counts.items()
            if (unit_id is None or unit == unit_id) and (function_code is None or code == function_code)
        )

    def reset_request_counts(self) -> None:
        self._request_counts.clear()

    async def start(self) -> None:
        """Listen; after a ``stop()`` on the port bound before."""
        if self._server is not None:
            return
        _quiet_library_logging()
        port = self._port if self._port is not None else self._requested_port
        devices = [self._sim_device(unit_id) for unit_id in self._memory]
        server = _TcpServer(self, devices, (self.host, port))
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
        """Close the listener and every client connection; answers held back are dropped."""
        server, self._server = self._server, None
        waiting, self._waiting = self._waiting, set()
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting)
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _admit(self, unit_id: int, function_code: int) -> int | None:
        """Count a request, hold it back by the unit's delay; the exception code to answer, if any."""
        self._request_counts[(unit_id, function_code)] += 1
        delay = self.unit_response_delays.get(unit_id, self.response_delay)
        if delay > 0:
            task = asyncio.current_task()
            if task is not None:
                self._waiting.add(task)
            try:
                await asyncio.sleep(delay)
            finally:
                if task is not None:
                    self._waiting.discard(task)
        if function_code in self.refused_function_codes:
            return int(ExcCodes.ILLEGAL_FUNCTION)
        if unit_id not in self._memory:
            return int(ExcCodes.GATEWAY_NO_RESPONSE)
        return None

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

    def set_register_bit(self, table: Table, address: int, bit: int, value: bool, unit_id: int = 1) -> None:
        """Set one bit (0 = least significant) of a holding or input register, leaving the others."""
        (word,) = self.get_registers(table, address, 1, unit_id)
        self.set_registers(table, address, [with_register_bit(word, bit, value)], unit_id)

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

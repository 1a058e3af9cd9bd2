"""Modbus TCP: the polling client connector and a small device server (the only pymodbus user).

``ModbusConnector`` polls one device (Modbus Application Protocol V1.1b3: read coils 1, discrete
inputs 2, holding registers 3, input registers 4) with the requests ``mapping.planner`` plans,
emits a ``RawSample`` per point and poll, and writes single coils (5), single registers (6),
multiple registers (16) and single register bits with Mask Write Register (22). A device that
refuses function code 22 (exception 1, illegal function) gets its register bits written by reading
the register (3) and writing it back (6) under a per-register lock instead; that lock orders this
hub's own writes only, so a change another master or the PLC program makes to the *other* bits of
the register between the read and the write is lost. Mask write has no such race.

Raw values (``RawSample.raw``): the register words of a register point as the device returned them
(one word for a ``bool`` on a register bit; the mapping engine picks the bit), ``(bool,)`` for a coil
or discrete input. ``RawWrite.raw``: the words to write, or ``(bool,)`` for a coil or a register bit.

Failures and timing, per device (one connector, one TCP connection and one task per poll interval
each; devices never wait on each other):

* A lost or unreachable device gives bad samples (``NO_COMMUNICATION``), is logged once when it goes
  and once when it comes back, and is reconnected with capped exponential backoff
  (``reconnect_backoff``). pymodbus' own reconnect, and its own disconnect after unanswered
  requests, are switched off; its exceptions are translated into ``aas_server.errors`` here. A
  device server that closes the connection turns the device's values bad at its next poll; a device
  that returns is read again within ``reconnect_backoff.maximum`` plus one poll interval.
* A request waits at most ``timeout`` for an answer and is sent ``retries`` more times before it
  counts as unanswered. An exception response gives ``COMMUNICATION_ERROR`` for the points of that
  request only; the gateway exceptions 10 and 11 (path unavailable, target failed to respond) give
  ``NO_COMMUNICATION`` for the unit id.
* An answer that is not a valid Modbus TCP response to its request (bytes that are no MBAP frame,
  another transaction id, unit id or function code, a wrong length or byte count, a frame still
  incomplete when the timeout runs out) gives ``DECODE_ERROR`` for the points of that request (a
  write fails with ``DeviceError``) and is logged once per request until it reads again. The
  connection is kept: each request starts from an empty receive buffer. Late or repeated answers to
  earlier requests are recognised by their transaction id and skipped.
* Unit ids behind one gateway share its connection, and requests on it are sent one at a time (as
  Modbus TCP servers commonly process them). A unit id that does not answer marks only its own points
  bad and is then probed at most once per backoff step (``reconnect_backoff.initial`` doubling up to
  ``maximum``), so it delays the requests of the other unit ids and poll groups by at most one request
  budget (``timeout * (retries + 1)``) per probe. The connection is dropped only when every unit id
  has stopped answering. A unit id that answers slowly but within ``timeout`` delays the requests
  queued behind it by its response time.

``ModbusDeviceServer`` is a Modbus TCP server over plain in-memory tables (holding and input
registers, coils, discrete inputs, per unit id) that the simulator and tests read and write
synchronously, that sees what Modbus clients write (function codes 1-6, 15, 16, 22, 23), counts the
requests it receives per unit id and function code, and can answer late or refuse function codes.

Left out: Modbus RTU/ASCII and RTU over TCP, TLS (Modbus/TCP Security), read/write multiple (23),
write multiple coils (15) and device identification (43) on the client side, several requests in
flight on one connection, several connections to one gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType as SimulatorDataType
from pymodbus.simulator import SimData, SimDevice

from aas_server.connectors.base import Backoff, ConnectionSupervisor, SampleSink
from aas_server.errors import DeviceError, DeviceTimeoutError, NotFoundError, TypeMismatchError
from aas_server.mapping.codecs import register_bit_masks, with_register_bit
from aas_server.mapping.planner import ReadRequest, plan_reads
from aas_server.mapping.schema import BitPoint, ModbusTcpDevice, RegisterPoint, Table
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, utc_now

logger = logging.getLogger(__name__)

Point = RegisterPoint | BitPoint

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
_ILLEGAL_FUNCTION = 0x01
_GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})


def _quiet_library_logging() -> None:
    """pymodbus logs every failed connect and timeout; the connector reports outages once itself.

    Applied only when nobody configured the ``pymodbus`` logger (set its level to see its logs).
    """
    library_logger = logging.getLogger("pymodbus")
    if library_logger.level == logging.NOTSET:
        library_logger.setLevel(logging.CRITICAL)


def _exception_code(response: Any) -> int:
    return int(getattr(response, "exception_code", 0) or 0)


def _exception_text(response: Any) -> str:
    code = _exception_code(response)
    return f"exception code {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"


class _ConnectionUnusable(DeviceError):
    """The connection is closed or broke; the request got no answer."""


class _GarbledAnswer(DeviceError):
    """The device answered with something that is not a valid Modbus response to the request."""

    def __init__(self, what: str, problem: str, device: str) -> None:
        super().__init__(f"the answer to the {what} is not a valid Modbus response: {problem}", device=device)
        self.problem = problem


class _Garbled(Exception):
    """Raised inside pymodbus' exchange when the bytes received cannot be the answer (``problem`` says why)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


_FIXED_ANSWER_LENGTHS = {5: 5, 6: 5, 15: 5, 16: 5, 22: 7}
"""PDU lengths of the answers to the write function codes (MODBUS Application Protocol V1.1b3 §6)."""
_MAXIMUM_MBAP_LENGTH = 254
"""The MBAP length field counts the unit id and the PDU (at most 253 bytes)."""


def _answer_problem(received: bytes, request: bytes, stale: Collection[int], *, finished: bool) -> str | None:
    """Why ``received`` is no valid answer to ``request`` (both Modbus TCP ADUs), or ``None``.

    MODBUS Messaging on TCP/IP Implementation Guide V1.0b §3.1.3 (MBAP header). Whole frames carrying
    the transaction id of an earlier request (``stale``) are late or repeated answers and skipped. A
    frame not yet complete is a problem only once the wait for it is ``finished``.
    """
    transaction, unit, function = int.from_bytes(request[0:2], "big"), request[6], request[7]
    rest = received
    while rest:
        if len(rest) >= 4 and rest[2:4] != b"\x00\x00":
            return f"bytes that are no Modbus TCP frame ({rest[:12].hex(' ')}...)"
        if len(rest) < 8:
            return f"an incomplete frame ({len(rest)} bytes)" if finished else None
        length = int.from_bytes(rest[4:6], "big")
        if not 2 <= length <= _MAXIMUM_MBAP_LENGTH:
            return f"a frame with the impossible length {length}"
        if len(rest) < 6 + length:
            return f"an incomplete frame ({len(rest)} of {6 + length} bytes)" if finished else None
        frame, rest = rest[: 6 + length], rest[6 + length :]
        answered = int.from_bytes(frame[0:2], "big")
        if answered != transaction and answered in stale:
            continue
        if answered not in (transaction, 0):
            return f"transaction id {answered} instead of {transaction}"
        if unit and frame[6] != unit:
            return f"an answer from unit {frame[6]} instead of {unit}"
        return _pdu_problem(frame[7:], function, request)
    return None


def _pdu_problem(pdu: bytes, function: int, request: bytes) -> str | None:
    if pdu[0] == function | 0x80:
        return None if len(pdu) == 2 else f"an exception response of {len(pdu)} bytes instead of 2"
    if pdu[0] != function:
        return f"function code {pdu[0]} instead of {function}"
    fixed = _FIXED_ANSWER_LENGTHS.get(function)
    if fixed is not None and len(pdu) != fixed:
        return f"{len(pdu)} bytes instead of {fixed} for function code {function}"
    if function in (1, 2, 3, 4):
        count = int.from_bytes(request[10:12], "big")
        expected = 2 * count if function in (3, 4) else (count + 7) // 8
        if len(pdu) < 2 or pdu[1] != expected or len(pdu) != 2 + expected:
            given = pdu[1] if len(pdu) > 1 else 0
            return f"{len(pdu) - 2} data bytes (byte count {given}) instead of {expected} for {count} items"
    return None


@dataclass(slots=True)
class _UnitState:
    """What the connector knows about one unit id behind the device's connection."""

    silent: bool = False
    """No answer (or a gateway exception) to its last request."""
    announced: bool = False
    """Its silence was logged; its next answer is logged too."""
    probe: Backoff | None = None
    """Delays between probes of a silent unit (set when it first falls silent)."""
    next_probe: float = 0.0
    """Loop time before which a silent unit's reads are not sent."""
    mask_write: bool = True
    """Whether it is still assumed to support Mask Write Register (22)."""


class ModbusConnector:
    """Polls one Modbus TCP device and writes to it; one instance per device.

    ``sink`` receives every ``RawSample`` synchronously on the event loop; it must not block.
    """

    def __init__(self, device: ModbusTcpDevice, points: Sequence[Point], sink: SampleSink) -> None:
        foreign = [point.name for point in points if point.device != device.name]
        if foreign:
            raise ValueError(f"points {foreign} do not belong to device {device.name!r}")
        self.device = device
        backoff = device.reconnect_backoff
        self._supervisor = ConnectionSupervisor(
            logger,
            f"Modbus device {device.name!r} at {device.host}:{device.port}",
            sink,
            Backoff(backoff.initial, backoff.maximum),
        )
        self._points = {point.name: point for point in points}
        self._requests = plan_reads(device, points)
        unit_ids = sorted({device.point_unit_id(point) for point in points} or {device.unit_id})
        self._units = {unit_id: _UnitState() for unit_id in unit_ids}
        self._unanswered: set[int] = set()
        self._register_locks: dict[tuple[int, int], asyncio.Lock] = {}
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._client: AsyncModbusTcpClient | None = None
        self._connection_lost = asyncio.Event()
        self._failing_requests: set[int] = set()
        self._request_budget = device.timeout * (device.retries + 1) + 0.5
        self._request_frame: bytes | None = None
        """The last request sent on the connection (its ADU), and what was received since."""
        self._received = b""
        self._sent_transactions: deque[int] = deque(maxlen=64)
        """Transaction ids of the last requests sent on this connection: answers carrying them may still
        come (late, or once per retry)."""

    @property
    def connected(self) -> bool:
        """Whether a TCP connection to the device is open now."""
        return self._client is not None and self._client.connected

    @property
    def reachable(self) -> bool | None:
        """Whether the device answered last time; ``None`` before the first attempt ended."""
        return self._supervisor.reachable

    @property
    def read_requests(self) -> list[ReadRequest]:
        """The planned read requests, one of each per poll (for diagnostics and benchmarks)."""
        return list(self._requests)

    async def __aenter__(self) -> Self:
        """Start connecting and polling; does not wait for, nor fail on, an unreachable device."""
        _quiet_library_logging()
        name, supervisor = self.device.name, self._supervisor
        supervisor.spawn(self._maintain_connection(), f"modbus {name} connection")
        by_interval: dict[float, list[int]] = {}
        for index, request in enumerate(self._requests):
            by_interval.setdefault(request.poll_interval, []).append(index)
        for interval, indexes in sorted(by_interval.items()):
            supervisor.spawn(supervisor.every(interval, self._reader(indexes)), f"modbus {name} poll {interval:g}s")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop polling (every task ended) and close the connection."""
        await self._supervisor.stop()
        self._close_client()

    # --- connection ----------------------------------------------------------------------------

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _on_packet(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus' trace of each request sent and of its receive buffer: garbled answers are caught here.

        Returning no bytes keeps pymodbus from parsing a buffer that is no answer (an undecodable frame
        would make it close the connection); the waiting request fails with ``_Garbled`` at once.
        """
        if sending:
            self._request_frame, self._received = packet, b""
            self._sent_transactions.append(int.from_bytes(packet[0:2], "big"))
            return packet
        request = self._request_frame
        if request is None:
            return b""
        self._received = packet
        problem = _answer_problem(packet, request, self._sent_transactions, finished=False)
        if problem is None:
            return packet
        client = self._client
        if client is not None and not client.ctx.response_future.done():
            client.ctx.response_future.set_exception(_Garbled(problem))
        return b""

    async def _exchange(
        self, client: AsyncModbusTcpClient, call: Callable[[AsyncModbusTcpClient], Awaitable[Any]]
    ) -> Any:
        """``call(client)``; a timeout with an incomplete answer received becomes ``_Garbled`` (judged in the
        exchange's own task, before the next request is sent and resets what was received)."""
        try:
            return await call(client)
        except (TimeoutError, ModbusIOException):
            request = self._request_frame
            if request is not None:
                problem = _answer_problem(self._received, request, self._sent_transactions, finished=True)
                if problem is not None:
                    raise _Garbled(problem) from None
            raise

    def _on_library_connection_change(self, connected: bool) -> None:
        if not connected:
            self._connection_lost.set()
            for exchange in self._in_flight:
                exchange.cancel()

    async def _connect(self) -> bool:
        client = AsyncModbusTcpClient(
            self.device.host,
            port=self.device.port,
            name=self.device.name,
            timeout=self.device.timeout,
            retries=self.device.retries,
            reconnect_delay=0,
            trace_connect=self._on_library_connection_change,
            trace_packet=self._on_packet,
        )
        client.set_max_no_responses(2**31)  # the connector decides when an unanswering device is dropped
        self._request_frame, self._received = None, b""
        self._sent_transactions.clear()
        try:
            async with asyncio.timeout(self.device.timeout + 0.5):
                connected = bool(await client.connect())
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected:
            client.close()
            return False
        self._client = client
        self._unanswered.clear()
        for unit in self._units.values():
            unit.next_probe = 0.0
        return True

    async def _maintain_connection(self) -> None:
        supervisor = self._supervisor
        while not supervisor.stopping:
            if not self.connected:
                self._close_client()
                self._connection_lost.clear()
                if not await self._connect():
                    supervisor.mark_unreachable("connection refused or timed out")
                    supervisor.first_attempt_done.set()
                    await supervisor.backoff.wait()
                    continue
                supervisor.first_attempt_done.set()
            await self._connection_lost.wait()
            if supervisor.reachable is False:
                await supervisor.backoff.wait()

    def _drop_connection(self, reason: str) -> None:
        self._supervisor.mark_unreachable(reason)
        self._close_client()
        self._connection_lost.set()

    # --- unit ids ------------------------------------------------------------------------------

    def _unit(self, unit_id: int) -> _UnitState:
        return self._units.setdefault(unit_id, _UnitState())

    def _unit_answers(self, unit_id: int) -> None:
        unit = self._unit(unit_id)
        if unit.silent:
            unit.silent = False
            if unit.announced:
                unit.announced = False
                logger.info("Modbus device %r: unit %d answers again", self.device.name, unit_id)

    def _unit_silent(self, unit_id: int, reason: str, announce: bool) -> None:
        """Back off from a unit id that did not answer; ``announce`` logs it (once per outage)."""
        unit = self._unit(unit_id)
        if not unit.silent or unit.probe is None:
            unit.silent = True
            backoff = self.device.reconnect_backoff
            unit.probe = Backoff(backoff.initial, backoff.maximum)
        if announce and not unit.announced:
            unit.announced = True
            logger.warning(
                "Modbus device %r: unit %d does not answer (%s); its values are bad until it does",
                self.device.name,
                unit_id,
                reason,
            )
        unit.next_probe = asyncio.get_running_loop().time() + unit.probe.step()

    def _unit_due(self, unit_id: int) -> bool:
        unit = self._unit(unit_id)
        return not unit.silent or asyncio.get_running_loop().time() >= unit.next_probe

    # --- requests ------------------------------------------------------------------------------

    async def _send(self, unit_id: int, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[Any]]) -> Any:
        """Send one request and return the response (an exception response included).

        Raises ``_ConnectionUnusable`` without or after losing the connection, ``DeviceTimeoutError``
        when nothing answered within the request budget, ``DeviceError`` for a garbled exchange.
        """
        client = self._client
        if client is None or not client.connected:
            self._supervisor.mark_unreachable("connection lost")
            raise _ConnectionUnusable(f"not connected; the {what} was not sent", device=self.device.name)
        exchange = asyncio.ensure_future(self._exchange(client, call))
        self._in_flight.add(exchange)
        try:
            async with asyncio.timeout(self._request_budget):
                response = await self._answer(exchange)
        except _Garbled as garbled:
            self._unanswered.clear()
            self._supervisor.mark_reachable()
            raise _GarbledAnswer(what, garbled.problem, self.device.name) from None
        except (TimeoutError, ModbusIOException):
            attempts = self.device.retries + 1
            reason = f"no answer from unit {unit_id} within {self.device.timeout:g} s ({attempts} attempts)"
            self._unit_silent(unit_id, reason, announce=len(self._units) > 1)
            self._unanswered.add(unit_id)
            if self._unanswered.issuperset(self._units):
                self._drop_connection(reason)
            raise DeviceTimeoutError(
                f"no answer to the {what} within {self._request_budget:g} s", device=self.device.name
            ) from None
        except (ConnectionException, OSError) as error:
            self._drop_connection(str(error) or type(error).__name__)
            raise _ConnectionUnusable(f"connection lost during the {what}", device=self.device.name) from None
        except ModbusException as error:
            raise DeviceError(f"{what} failed: {error}", device=self.device.name) from None
        finally:
            self._in_flight.discard(exchange)
        self._unanswered.clear()
        self._supervisor.mark_reachable()
        return response

    @staticmethod
    async def _answer(exchange: asyncio.Future[Any]) -> Any:
        """The answer of ``exchange``; ``ConnectionException`` when the lost connection aborted it.

        pymodbus keeps waiting (and retrying) on a closed connection until its timeout runs out; the
        connector cancels the exchange instead, so that a closed device turns bad at the next poll.
        """
        try:
            return await exchange
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise ConnectionException("the connection closed before the answer came") from None

    # --- reading -------------------------------------------------------------------------------

    def _reader(self, indexes: list[int]) -> Callable[[], Awaitable[None]]:
        """One poll of a poll group: its requests in turn."""

        async def read_all() -> None:
            for index in indexes:
                await self._read(index)

        return read_all

    async def _read(self, index: int) -> None:
        request = self._requests[index]
        if not self.connected:
            self._supervisor.mark_unreachable("connection lost")
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        if not self._unit_due(request.unit_id):
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        what = (
            f"read of {request.table.value} {request.address}..{request.address + request.count - 1} "
            f"of unit {request.unit_id}"
        )
        try:
            response = await self._send(request.unit_id, what, lambda client: self._execute_read(client, request))
        except (_ConnectionUnusable, DeviceTimeoutError):
            self._emit_failure(request, QualityReason.NO_COMMUNICATION)
            return
        except _GarbledAnswer as error:
            self._unit_answers(request.unit_id)
            self._note_request_failure(index, request, f"the answer is not a valid Modbus response: {error.problem}")
            self._emit_failure(request, QualityReason.DECODE_ERROR)
            return
        except DeviceError as error:
            self._note_request_failure(index, request, str(error))
            self._emit_failure(request, QualityReason.COMMUNICATION_ERROR)
            return
        if response.isError():
            if _exception_code(response) in _GATEWAY_EXCEPTIONS:
                self._unit_silent(request.unit_id, f"the gateway answers {_exception_text(response)}", announce=True)
                self._emit_failure(request, QualityReason.NO_COMMUNICATION)
                return
            self._unit_answers(request.unit_id)
            self._note_request_failure(index, request, _exception_text(response))
            self._emit_failure(request, QualityReason.COMMUNICATION_ERROR)
            return
        self._unit_answers(request.unit_id)
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

    @staticmethod
    async def _execute_read(client: AsyncModbusTcpClient, request: ReadRequest) -> Any:
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
                "Modbus device %r fails to read %s %d..%d of unit %d: %s; those values are bad until it reads again",
                self.device.name,
                request.table.value,
                request.address,
                request.address + request.count - 1,
                request.unit_id,
                reason,
            )

    def _emit_failure(self, request: ReadRequest, reason: QualityReason) -> None:
        self._supervisor.emit_without_value(self.device.name, (planned.name for planned in request.points), reason)

    def _emit_values(self, request: ReadRequest, response: Any) -> None:
        now, emit = utc_now(), self._supervisor.emit
        items: list[int] | list[bool]
        if request.table.is_bit_table:
            items = [bool(bit) for bit in response.bits[: request.count]]
        else:
            items = [int(word) for word in response.registers[: request.count]]
        for planned in request.points:
            raw = tuple(items[planned.offset : planned.offset + planned.count])
            if len(raw) != planned.count:
                emit(RawSample(self.device.name, planned.name, None, now, Quality.BAD, QualityReason.DECODE_ERROR))
                continue
            emit(RawSample(self.device.name, planned.name, raw, now))

    # --- writing -------------------------------------------------------------------------------

    async def write(self, raw: RawWrite) -> None:
        """Write a point's raw value; returns once the device acknowledged it.

        Raises ``DeviceTimeoutError`` when the device does not answer in time, ``DeviceError`` when
        it is not connected or answers with an exception response, ``NotFoundError`` for a point of
        another device and ``TypeMismatchError`` for raw items that do not fit the point.
        """
        point = self._points.get(raw.point)
        if point is None:
            raise NotFoundError(f"device {self.device.name!r} has no point {raw.point!r}")
        items = _write_items(point, raw.raw)
        await self._supervisor.wait_for_first_attempt(self.device.timeout + 0.5)
        address = self.device.wire_address(point)
        unit_id = self.device.point_unit_id(point)
        what = f"write of {point.name!r}"
        response: Any
        if isinstance(point, BitPoint):
            response = await self._send(
                unit_id, what, lambda client: client.write_coil(address, bool(items[0]), device_id=unit_id)
            )
        elif point.bit is not None:
            response = await self._write_register_bit(unit_id, address, point.bit, bool(items[0]), what)
        elif len(items) == 1:
            response = await self._send(
                unit_id, what, lambda client: client.write_register(address, int(items[0]), device_id=unit_id)
            )
        else:
            words = [int(word) for word in items]
            response = await self._send(
                unit_id, what, lambda client: client.write_registers(address, words, device_id=unit_id)
            )
        if not (response.isError() and _exception_code(response) in _GATEWAY_EXCEPTIONS):
            self._unit_answers(unit_id)
        if response.isError():
            raise DeviceError(
                f"device refused the {what} (unit {unit_id}): {_exception_text(response)}", device=self.device.name
            )

    async def _write_register_bit(self, unit_id: int, address: int, bit: int, value: bool, what: str) -> Any:
        """Mask Write Register (22); read-modify-write (3 then 6) for a device that refuses it."""
        unit = self._unit(unit_id)
        lock = self._register_locks.setdefault((unit_id, address), asyncio.Lock())
        async with lock:
            if unit.mask_write:
                and_mask, or_mask = register_bit_masks(bit, value)
                response = await self._send(
                    unit_id,
                    what,
                    lambda client: client.mask_write_register(
                        address=address, and_mask=and_mask, or_mask=or_mask, device_id=unit_id
                    ),
                )
                if not (response.isError() and _exception_code(response) == _ILLEGAL_FUNCTION):
                    return response
                unit.mask_write = False
                logger.info(
                    "Modbus device %r unit %d does not support mask write (function code 22); "
                    "its register bits are written by reading and rewriting the register",
                    self.device.name,
                    unit_id,
                )
            current = await self._send(
                unit_id, what, lambda client: client.read_holding_registers(address, count=1, device_id=unit_id)
            )
            if current.isError():
                return current
            if len(current.registers) != 1:
                raise DeviceError(
                    f"{what}: the device returned {len(current.registers)} registers for one", device=self.device.name
                )
            word = with_register_bit(int(current.registers[0]), bit, value)
            return await self._send(
                unit_id, what, lambda client: client.write_register(address, word, device_id=unit_id)
            )


def _write_items(point: Point, raw: Any) -> tuple[int, ...] | tuple[bool, ...]:
    """Check ``RawWrite.raw`` against the point: ``(bool,)`` for a bit, its register count of words otherwise."""
    if not isinstance(raw, tuple | list):
        raise TypeMismatchError(f"point {point.name!r}: raw value {raw!r} is not a sequence")
    if isinstance(point, BitPoint) or point.bit is not None:
        if len(raw) != 1 or raw[0] not in (True, False):
            raise TypeMismatchError(f"point {point.name!r} is one bit: needs (bool,), got {raw!r}")
        return (bool(raw[0]),)
    if len(raw) != point.register_count:
        raise TypeMismatchError(f"point {point.name!r} needs {point.register_count} register words, got {len(raw)}")
    if any(isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF for word in raw):
        raise TypeMismatchError(f"point {point.name!r}: register words must be 0..65535, got {list(raw)!r}")
    return tuple(int(word) for word in raw)


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


class ModbusDeviceServer:
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

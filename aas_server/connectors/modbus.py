"""Modbus TCP: the polling client connector (pymodbus, as in ``aas_server.devices.modbus_server``).

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

The Modbus device server the demo and the tests run lives in ``aas_server.devices.modbus_server``:
this module only speaks to devices.

Left out: Modbus RTU/ASCII and RTU over TCP, TLS (Modbus/TCP Security), read/write multiple (23),
write multiple coils (15) and device identification (43) on the client side, several requests in
flight on one connection, several connections to one gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from aas_server.connectors.base import (
    Backoff,
    ConnectionSupervisor,
    ConnectorContext,
    SampleSink,
    SupervisedConnector,
    quiet_library_logging,
)
from aas_server.errors import DeviceError, DeviceTimeoutError, NotFoundError, TypeMismatchError
from aas_server.mapping.codecs import register_bit_masks, with_register_bit
from aas_server.mapping.planner import ReadRequest, plan_reads
from aas_server.mapping.schema import BitPoint, ModbusTcpDevice, RegisterPoint, Table
from aas_server.model.events import ModbusRaw, Quality, QualityReason, RawSample, RawWrite, utc_now

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


class ModbusConnector(SupervisedConnector):
    """Polls one Modbus TCP device and writes to it; one instance per device.

    ``sink`` receives every ``RawSample`` synchronously on the event loop; it must not block.
    """

    def __init__(self, device: ModbusTcpDevice, points: Sequence[Point], sink: SampleSink) -> None:
        subject = f"Modbus device {device.name!r} at {device.host}:{device.port}"
        self._supervisor = ConnectionSupervisor.of_device(logger, subject, device, points, sink)
        self.device = device
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
    def read_requests(self) -> list[ReadRequest]:
        """The planned read requests, one of each per poll (for diagnostics and benchmarks)."""
        return list(self._requests)

    async def start(self) -> None:
        """Start connecting and polling; does not wait for, nor fail on, an unreachable device."""
        quiet_library_logging("pymodbus")
        name, supervisor = self.device.name, self._supervisor
        supervisor.spawn(self._maintain_connection(), f"modbus {name} connection")
        by_interval: dict[float, list[int]] = {}
        for index, request in enumerate(self._requests):
            by_interval.setdefault(request.poll_interval, []).append(index)
        for interval, indexes in sorted(by_interval.items()):
            supervisor.spawn(supervisor.every(interval, self._reader(indexes)), f"modbus {name} poll {interval:g}s")

    async def stop(self) -> None:
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

    def _connection_gone(self) -> None:
        """A poll or write found no connection: an outage begins unless one is known (then the
        connection task's attempts report it, at most once per backoff step, not once per poll)."""
        if self._supervisor.reachable is not False:
            self._supervisor.mark_unreachable("connection lost")

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
            self._connection_gone()
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
            self._connection_gone()
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

    async def write(self, raw: RawWrite[ModbusRaw]) -> None:
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


# --- the protocol registry's entry points ---------------------------------------------------------


def create_connector(device: ModbusTcpDevice, points: Sequence[Point], context: ConnectorContext) -> ModbusConnector:
    """The connector of a Modbus TCP device (``mapping.schema.PROTOCOLS``)."""
    return ModbusConnector(device, points, context.sink)


def with_endpoint(device: ModbusTcpDevice, endpoint: str) -> ModbusTcpDevice:
    """``device`` at ``host:port``."""
    host, _, port = endpoint.rpartition(":")
    return device.model_copy(update={"host": host, "port": int(port)})

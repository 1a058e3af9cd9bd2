"""The mapping engine: raw device samples to element values, and element values back to raw writes.

Pure (``ARCHITECTURE.md``, house rule 1): no I/O, no clock except the times carried by the samples
(and the server time stamped on each ``ValueChanged``). Per point it derives, once, a decoder and a
normalisation ``Chain`` (``aas_server.mapping.normalize``); the per-sample path is a dictionary
lookup, the decoder, the chain's arithmetic and the ``ValueChanged``.

Decoding by point kind (``RawSample.raw``; the codec each kind names in the protocol registry,
``mapping.protocol_codecs``):

- Modbus register point: the register words, decoded by data type (numbers through ``struct``,
  strings and register bits through ``codecs.decode_register_point``);
- Modbus coil or discrete input: ``(bool,)``;
- OPC UA variable, MQTT: the protocol value. A point with numeric normalisation (scale, offset,
  unit, limits, deadband, filter) takes numbers, and text holding a decimal number (``"21.5"``);
  an enum point also takes its names; other points take any value unchanged.

Typed once: given the valueType of each point's target Property (``value_types``), the plan fits the
chain's value to it (``values.coerce``: an ``xs:int`` gets an ``int``, an ``xs:float`` a
``datatypes.Float``); a value that does not fit (a fraction for an ``xs:int``, 70000 for an
``xs:short``) gives ``BAD``, ``OUT_OF_RANGE``. The change the engine emits is what the store applies.

A frame or value that cannot be decoded gives quality ``BAD``, reason ``DECODE_ERROR``; a non-finite
number (how many devices flag a failed sensor) ``BAD``, ``SENSOR_FAILURE``; a failed read keeps the
sample's quality and reason (``BAD``, ``NO_COMMUNICATION`` unless it says otherwise), and an
``UNCERTAIN`` sample without a value (an MQTT topic gone stale) republishes the last value as
uncertain. A value is never made up: a bad change carries ``value=None`` and the store keeps the
last value.

Left out: OPC UA method points produce no samples and take no writes (they are called, see
``aas_server.opcua.methods``); arrays are passed through only for points without normalisation.
"""

from __future__ import annotations

import decimal
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aas_server.errors import NotFoundError, NotWritableError, TypeMismatchError
from aas_server.mapping import codecs, normalize
from aas_server.mapping.normalize import Chain, PointState
from aas_server.mapping.protocol_codecs import Decoder, codec_of
from aas_server.mapping.schema import (
    AnyDevice,
    AnyPoint,
    BitPoint,
    DataType,
    MappingFile,
    OpcUaMethodPoint,
    RegisterPoint,
)
from aas_server.model import values
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, ValueChanged, utc_now

_LOG = logging.getLogger(__name__)
_BAD = Quality.BAD
_DECODE_ERROR = QualityReason.DECODE_ERROR
_OUT_OF_RANGE = QualityReason.OUT_OF_RANGE
_SENSOR_FAILURE = QualityReason.SENSOR_FAILURE


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the engine derived for one point at construction."""

    point: AnyPoint
    chain: Chain
    state: PointState
    decode: Decoder
    read: normalize.Reader
    submodel_id: str
    id_short_path: str
    origin: str
    value_type: values.ValueType | None = None
    """The target Property's valueType, which every good value is fitted to; ``None``: left as the chain gives it."""


SampleHandler = Callable[[RawSample], ValueChanged | None]


def _whole_range_fits(chain: Chain, value_type: values.ValueType | None) -> bool:
    """Whether every integer the chain can give is a valid ``value_type`` (an integer XSD type).

    Such a point's integers take the valueType's class directly (``int.__new__``), without its range
    check on each sample: the plan made that check once, by basyx's own constructor, at both ends of
    the range of the point's data type (the XSD integer types are intervals). Integers stay integers
    only where no scale, offset or unit conversion applies, so the range is the data type's.
    """
    bounds = chain.integer_range
    if bounds is None or chain.forward is not None or chain.enum is not None or value_type is None:
        return False
    if value_type is bool or not isinstance(value_type, type) or not issubclass(value_type, int):
        return False
    try:
        value_type(bounds[0])
        value_type(bounds[1])
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _is_non_finite(value: Any) -> bool:
    """Whether ``value`` is a NaN or an infinity (a float, or a Decimal, which xs:decimal cannot hold at all)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, decimal.Decimal) and not value.is_finite()


def _sample_handler(plan: _Plan, state: PointState, server_clock: list[Any] | None = None) -> SampleHandler:
    """The whole read path of one point with everything it needs bound: the engine's per-sample code."""
    chain, decode, read = plan.chain, plan.decode, plan.read
    submodel_id, id_short_path, origin = plan.submodel_id, plan.id_short_path, plan.origin
    read_failure, read_bad = normalize.read_failure, normalize.read_bad
    value_type, coerce, point_name = plan.value_type, values.coerce, plan.point.name
    whole_range_fits = _whole_range_fits(chain, value_type)
    new_int = int.__new__
    non_finite = _is_non_finite
    if server_clock is None:
        server_clock = [None, None]

    def handle(sample: RawSample) -> ValueChanged | None:
        raw, quality, time = sample.raw, sample.quality, sample.source_time
        # Samples of one device answer share their source time object: they share one server time too.
        if time is not server_clock[0]:
            server_clock[0], server_clock[1] = time, utc_now()
        if raw is None or quality is _BAD:
            outcome = read_failure(chain, state, quality, sample.reason, time)
        else:
            try:
                value = decode(raw)
            except (codecs.CodecError, TypeError):
                outcome = read_bad(chain, state, _DECODE_ERROR, time)
            else:
                outcome = read(state, value, quality, sample.reason, time)
        if outcome is None:
            return None
        value, quality, reason = outcome
        if value_type is not None and value.__class__ is not value_type and value is not None and quality is not _BAD:
            try:
                if whole_range_fits and value.__class__ is int:
                    value = new_int(value_type, value)
                else:
                    value = coerce(value_type, value)
                    if non_finite(value):  # the text "NaN" or "INF" flags a failed sensor as the float does
                        value, quality, reason = None, _BAD, _SENSOR_FAILURE
            except TypeMismatchError as error:
                _LOG.debug("point %s: %s", point_name, error)
                value, quality, reason = None, _BAD, _OUT_OF_RANGE
        return ValueChanged(submodel_id, id_short_path, value, time, quality, reason, server_clock[1], origin)

    return handle


# --- thin wrappers over normalize (register points) ------------------------------------------------


def to_engineering(point: RegisterPoint, raw: int | float) -> int | float:
    """``raw`` after scale, offset and unit conversion; an ``int`` when they leave it unchanged."""
    forward = normalize.chain_of(point).forward
    if forward is None:
        return raw if point.data_type.is_integer else float(raw)
    return forward(raw)


def to_device(point: RegisterPoint, value: Any) -> Any:
    """The number the registers must hold so that ``point`` reads ``value`` (see ``normalize.to_device``)."""
    return normalize.to_device(normalize.chain_of(point), value)


def engineering_range(point: RegisterPoint) -> tuple[float, float] | None:
    """The range of element values an integer point can carry, lowest first."""
    return normalize.chain_of(point).engineering_range()


# --- the engine -----------------------------------------------------------------------------------


class MappingEngine:
    """Decodes samples and encodes writes for the points of one mapping file, with each point's state.

    ``value_types`` gives, by point name, the valueType of the point's target Property: the values of
    those points come out fitted to it (see the module's *Typed once*); other points' values are left
    as the normalisation chain gives them (simulators, diagnostics).
    """

    def __init__(self, mapping: MappingFile, value_types: Mapping[str, values.ValueType] | None = None) -> None:
        self.mapping = mapping
        self._points: dict[str, AnyPoint] = {point.name: point for point in mapping.points}
        self._devices: dict[str, AnyDevice] = {device.name: device for device in mapping.devices}
        self._plans: dict[str, _Plan] = {}
        for point in mapping.points:
            chain = normalize.chain_of(point)
            self._plans[point.name] = _Plan(
                point=point,
                chain=chain,
                state=PointState(),
                decode=codec_of(point).decoder(point, chain),
                read=normalize.reader(chain),
                submodel_id=point.target.submodel,
                id_short_path=point.target.path,
                origin=f"device:{point.device}",
                value_type=None if value_types is None else value_types.get(point.name),
            )
        server_clock: list[Any] = [None, None]
        """The last source time seen and the server time given to it, shared by every point."""
        self._handlers: dict[str, SampleHandler] = {
            name: _sample_handler(plan, plan.state, server_clock) for name, plan in self._plans.items()
        }

    def points(self) -> Sequence[AnyPoint]:
        """The validated point models, in file order."""
        return list(self._points.values())

    def point(self, point_name: str) -> AnyPoint:
        """The point called ``point_name``; ``NotFoundError`` if the mapping has none."""
        try:
            return self._points[point_name]
        except KeyError:
            raise NotFoundError(f"no point {point_name!r} in the mapping") from None

    def device_of(self, point_name: str) -> AnyDevice:
        return self._devices[self.point(point_name).device]

    def chain(self, point_name: str) -> Chain:
        """The normalisation chain derived for the point."""
        return self._plan(point_name).chain

    def _plan(self, point_name: str) -> _Plan:
        try:
            return self._plans[point_name]
        except KeyError:
            raise NotFoundError(f"no point {point_name!r} in the mapping") from None

    def on_sample(self, sample: RawSample) -> ValueChanged | None:
        """Turn one sample into the value change of the point's target element.

        ``None`` when the point's deadband or rate limit holds the value back. A failed sample gives
        ``value=None`` with its quality and reason kept (the store keeps the last value); an
        undecodable frame gives quality ``BAD`` with reason ``DECODE_ERROR``.
        """
        handle = self._handlers.get(sample.point)
        if handle is None:
            raise NotFoundError(f"no point {sample.point!r} in the mapping")
        return handle(sample)

    def sink(self, apply: Callable[[ValueChanged], object]) -> Callable[[RawSample], None]:
        """A connector's sink: each sample's change (typed, see ``on_sample``) handed to ``apply``, none when
        the deadband or rate limit holds it back."""
        handlers = self._handlers

        def on_sample(sample: RawSample) -> None:
            try:
                change = handlers[sample.point](sample)
            except KeyError:
                if sample.point in handlers:
                    raise
                raise NotFoundError(f"no point {sample.point!r} in the mapping") from None
            if change is not None:
                apply(change)

        return on_sample

    def decode_sample(self, sample: RawSample) -> ValueChanged:
        """What ``sample`` means on its own: decoded and normalised, without filter, deadband or
        rate-limit history, and without touching the point's state (for simulators and diagnostics)."""
        change = _sample_handler(self._plan(sample.point), PointState())(sample)
        assert change is not None
        return change

    def to_raw(self, point_name: str, value: Any) -> RawWrite[Any]:
        """The inverse of ``on_sample``: what to write to the device so that it reads ``value``.

        Modbus register points give register words, coils and register bits ``(bool,)`` (a
        ``ModbusWrite``); OPC UA variables, MQTT and Sparkplug B points a ``ValueWrite`` of the value in
        the device's unit (an ``int`` stays an ``int`` when no scale, offset or unit conversion applies;
        otherwise a ``float``). Raises
        ``NotWritableError`` for a read-only point or an OPC UA method, and ``TypeMismatchError``
        when ``value`` has the wrong type, is outside the limits or the data type's range, or is
        finer than its resolution.
        """
        plan = self._plan(point_name)
        point = plan.point
        if isinstance(point, OpcUaMethodPoint):
            raise NotWritableError(f"point {point.name!r} is an OPC UA method: it is called, not written")
        if not point.writable:
            raise NotWritableError(f"point {point.name!r} is read-only (access: {point.access.value})")
        return RawWrite(source=point.device, point=point.name, raw=codec_of(point).to_raw(point, plan.chain, value))

    def encode_value(self, point_name: str, value: Any) -> tuple[int, ...] | tuple[bool, ...]:
        """Raw words or bits for ``value`` regardless of access, rounded and clamped (for simulators).

        Register bits give ``(bool,)`` like coils (the other bits of the register are not known here);
        a string longer than the registers is cut. Modbus points only (``TypeMismatchError`` otherwise).
        """
        plan = self._plan(point_name)
        point = plan.point
        if isinstance(point, BitPoint) or (isinstance(point, RegisterPoint) and point.data_type is DataType.BOOL):
            return (bool(value),)
        if not isinstance(point, RegisterPoint):
            raise TypeMismatchError(f"point {point.name!r} is not a Modbus point; use device_value")
        if point.data_type is DataType.STRING:
            text = str(value)
            while True:
                try:
                    return codecs.encode_string(text, point.register_count, point.encoding, point.byte_order)
                except codecs.CodecError:
                    if not text:
                        raise
                    text = text[:-1]
        raw = normalize.nearest_device_value(plan.chain, value)
        return codecs.encode(point.data_type, raw, point.word_order, point.byte_order)

    def device_value(self, point_name: str, value: Any) -> Any:
        """The device-unit value that reads back as ``value``, regardless of access, rounded and clamped
        (for simulators of OPC UA and MQTT devices)."""
        return normalize.nearest_device_value(self._plan(point_name).chain, value)

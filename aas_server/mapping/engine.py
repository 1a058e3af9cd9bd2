"""The mapping engine: raw device samples to element values, and element values back to raw writes.

Pure (``ARCHITECTURE.md``, house rule 1): no I/O, no clock except the times carried by the samples.
Read path: ``RawSample`` -> decode (``codecs``) -> ``raw * scale + offset`` -> ``ValueChanged``.
Write path: value -> ``(value - offset) / scale`` -> range and resolution checks -> encode -> ``RawWrite``.

Value types produced: ``bool`` for coils and discrete inputs; ``int`` for integer data types with
scale 1 and offset 0; ``float`` otherwise. The store coerces them to the element's ``valueType``.
A non-finite float read from a device (NaN is how many devices flag a failed sensor) is reported as
bad quality with reason ``SENSOR_FAILURE``; a frame that cannot be decoded as ``DECODE_ERROR``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from aas_server.errors import NotFoundError, NotWritableError, TypeMismatchError
from aas_server.mapping import codecs
from aas_server.mapping.schema import BitPoint, DataType, Device, MappingFile, RegisterPoint
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite, ValueChanged

Point = RegisterPoint | BitPoint

_RELATIVE_TOLERANCE = 1e-9


def _integral_divisor(scale: float) -> int | None:
    """``1/scale`` when it is an integer (scale 0.1 -> 10), so 235 * 0.1 can be computed as 235 / 10."""
    if scale == 0:
        return None
    divisor = 1 / scale
    nearest = round(divisor)
    if nearest != 0 and abs(divisor - nearest) <= _RELATIVE_TOLERANCE * abs(divisor):
        return nearest
    return None


def to_engineering(point: RegisterPoint, raw: int | float) -> int | float:
    """``raw * scale + offset``; an ``int`` for integer data types without scaling."""
    if point.is_identity:
        return raw if point.data_type.is_integer else float(raw)
    divisor = _integral_divisor(point.scale)
    scaled = raw / divisor if divisor is not None else raw * point.scale
    return float(scaled + point.offset)


def to_device(point: RegisterPoint, value: int | float) -> int | float:
    """``(value - offset) / scale`` as the number the registers must hold (not yet range checked).

    For integer data types the result is rounded only when it is integral within a relative 1e-9;
    otherwise ``TypeMismatchError`` names the resolution.
    """
    raw = _unscaled(point, value)
    if not point.data_type.is_integer:
        return float(raw)
    if isinstance(raw, int):
        return raw
    if not math.isfinite(raw):
        raise TypeMismatchError(f"point {point.name!r}: {value!r} cannot be written")
    nearest = round(raw)
    if abs(raw - nearest) > _RELATIVE_TOLERANCE * max(1.0, abs(raw)):
        unit = f" {point.unit}" if point.unit else ""
        raise TypeMismatchError(
            f"point {point.name!r}: {value!r} is not a multiple of the resolution {point.scale:g}{unit} "
            f"(offset {point.offset:g}); it would be truncated"
        )
    return nearest


def _unscaled(point: RegisterPoint, value: int | float) -> int | float:
    if point.is_identity and isinstance(value, int):
        return value
    divisor = _integral_divisor(point.scale)
    shifted = value - point.offset
    return shifted * divisor if divisor is not None else shifted / point.scale


def engineering_range(point: RegisterPoint) -> tuple[float, float] | None:
    """The range of engineering values an integer point can carry, lowest first."""
    bounds = codecs.integer_range(point.data_type)
    if bounds is None:
        return None
    low, high = (to_engineering(point, bound) for bound in bounds)
    return (min(low, high), max(low, high))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class MappingEngine:
    """Decodes samples and encodes writes for the points of one mapping file."""

    def __init__(self, mapping: MappingFile) -> None:
        self.mapping = mapping
        self._points: dict[str, Point] = {point.name: point for point in mapping.points}
        self._devices: dict[str, Device] = {device.name: device for device in mapping.devices}

    def points(self) -> Sequence[Point]:
        """The validated point models, in file order."""
        return list(self._points.values())

    def point(self, point_name: str) -> Point:
        """The point called ``point_name``; ``NotFoundError`` if the mapping has none."""
        try:
            return self._points[point_name]
        except KeyError:
            raise NotFoundError(f"no point {point_name!r} in the mapping") from None

    def device_of(self, point_name: str) -> Device:
        return self._devices[self.point(point_name).device]

    def on_sample(self, sample: RawSample) -> ValueChanged:
        """Turn one sample into the value change of the point's target element.

        A failed sample gives ``value=None`` with its quality and reason kept (the store keeps the
        last value); an undecodable frame gives quality ``BAD`` with reason ``DECODE_ERROR``.
        """
        point = self.point(sample.point)
        origin = f"device:{point.device}"

        def change(value: Any, quality: Quality, reason: QualityReason) -> ValueChanged:
            return ValueChanged(
                submodel_id=point.target.submodel,
                id_short_path=point.target.path,
                value=value,
                source_time=sample.source_time,
                quality=quality,
                reason=reason,
                origin=origin,
            )

        if sample.raw is None or sample.quality is Quality.BAD:
            quality = Quality.BAD if sample.raw is None else sample.quality
            reason = sample.reason
            if reason is QualityReason.NONE:
                reason = QualityReason.NO_COMMUNICATION
            return change(None, quality, reason)
        try:
            value = self._decode(point, sample.raw)
        except codecs.CodecError:
            return change(None, Quality.BAD, QualityReason.DECODE_ERROR)
        if isinstance(value, float) and not math.isfinite(value):
            return change(None, Quality.BAD, QualityReason.SENSOR_FAILURE)
        return change(value, sample.quality, sample.reason)

    @staticmethod
    def _decode(point: Point, raw: tuple[int, ...] | tuple[bool, ...]) -> bool | int | float:
        if isinstance(point, BitPoint):
            if len(raw) != 1 or not isinstance(raw[0], bool | int) or raw[0] not in (0, 1):
                raise codecs.CodecError(f"a bit point needs one bit, got {raw!r}")
            return bool(raw[0])
        if any(isinstance(word, bool) for word in raw):
            raise codecs.CodecError("register points need register words, got bits")
        number = codecs.decode(point.data_type, raw, point.word_order, point.byte_order)
        return to_engineering(point, number)

    def to_raw(self, point_name: str, value: Any) -> RawWrite:
        """The inverse of ``on_sample``: what to write to the device so that it reads ``value``.

        Raises ``NotWritableError`` for a read-only point and ``TypeMismatchError`` when ``value``
        has the wrong type, is out of the data type's range, or is finer than its resolution.
        """
        point = self.point(point_name)
        if not point.writable:
            raise NotWritableError(f"point {point.name!r} is read-only (access: {point.access.value})")
        if isinstance(point, BitPoint):
            if not isinstance(value, bool):
                raise TypeMismatchError(
                    f"point {point.name!r} is a {point.table.value}: needs a boolean, got {value!r}"
                )
            return RawWrite(source=point.device, point=point.name, raw=(value,))
        if not _is_number(value) or not math.isfinite(value):
            raise TypeMismatchError(f"point {point.name!r} needs a finite number, got {value!r}")
        raw = to_device(point, value)
        bounds = codecs.integer_range(point.data_type)
        if bounds is not None and not bounds[0] <= raw <= bounds[1]:
            low, high = engineering_range(point) or bounds
            unit = f" {point.unit}" if point.unit else ""
            raise TypeMismatchError(
                f"point {point.name!r}: {value!r} is out of range [{low:g}, {high:g}]{unit} "
                f"({point.data_type.value} raw range [{bounds[0]}, {bounds[1]}])"
            )
        if point.data_type is DataType.FLOAT32 and abs(raw) > codecs.FLOAT32_MAX:
            raise TypeMismatchError(
                f"point {point.name!r}: {value!r} is out of range for float32 "
                f"[-{codecs.FLOAT32_MAX:.7g}, {codecs.FLOAT32_MAX:.7g}]"
            )
        try:
            words = codecs.encode(point.data_type, raw, point.word_order, point.byte_order)
        except codecs.CodecError as error:
            raise TypeMismatchError(f"point {point.name!r}: {error}") from None
        return RawWrite(source=point.device, point=point.name, raw=words)

    def encode_value(self, point_name: str, value: Any) -> tuple[int, ...] | tuple[bool, ...]:
        """Raw words or bits for ``value`` regardless of access, rounded and clamped (for simulators)."""
        point = self.point(point_name)
        if isinstance(point, BitPoint):
            return (bool(value),)
        raw = _unscaled(point, value)
        bounds = codecs.integer_range(point.data_type)
        if bounds is not None:
            raw = min(max(round(raw), bounds[0]), bounds[1])
        return codecs.encode(point.data_type, raw, point.word_order, point.byte_order)

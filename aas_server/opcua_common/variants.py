"""AAS ``valueType`` ↔ OPC UA built-in types, and store values as OPC UA ``DataValue`` (OPC 10000-6 §5.1.2).

Numeric, boolean, string and dateTime value types get their native OPC UA type; every other XSD
type (``xs:decimal``, ``xs:integer``, ``xs:date``, ``xs:duration``, ``xs:anyURI``...) is shown as a
``String`` in its XSD lexical form.
"""

from __future__ import annotations

import datetime
from typing import Any, cast

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from basyx.aas.model import datatypes

from aas_server.model.events import Quality, QualityReason
from aas_server.opcua_common.status import is_bad, status, status_code_for

_VARIANT_TYPES: dict[type, ua.VariantType] = {
    float: ua.VariantType.Double,
    datatypes.Float: ua.VariantType.Float,
    datatypes.Long: ua.VariantType.Int64,
    datatypes.Int: ua.VariantType.Int32,
    datatypes.Short: ua.VariantType.Int16,
    datatypes.Byte: ua.VariantType.SByte,
    datatypes.UnsignedLong: ua.VariantType.UInt64,
    datatypes.UnsignedInt: ua.VariantType.UInt32,
    datatypes.UnsignedShort: ua.VariantType.UInt16,
    datatypes.UnsignedByte: ua.VariantType.Byte,
    bool: ua.VariantType.Boolean,
    str: ua.VariantType.String,
    datetime.datetime: ua.VariantType.DateTime,
}

INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
"""The OPC UA integer types and the values each holds (OPC 10000-6 §5.1.2)."""


def variant_type_for(value_type: type) -> ua.VariantType:
    """The OPC UA built-in type of a Property's ``valueType`` (``xs:double`` → ``Double``, others → ``String``)."""
    return _VARIANT_TYPES.get(value_type, ua.VariantType.String)


def to_variant(value: Any, variant_type: ua.VariantType) -> ua.Variant:
    """A store value as a ``Variant`` of ``variant_type``; ``None`` becomes a null ``Variant``.

    Raises ``TypeError``/``ValueError`` if the value cannot be represented (the store's coercion
    makes that impossible for Property values).
    """
    if value is None:
        return ua.Variant(None, ua.VariantType.Null)
    if variant_type is ua.VariantType.String:
        return ua.Variant(value if isinstance(value, str) else datatypes.xsd_repr(value), variant_type)
    if variant_type is ua.VariantType.Boolean:
        if not isinstance(value, bool):
            raise TypeError(f"{value!r} is not a boolean")
        return ua.Variant(value, variant_type)
    if variant_type in INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{value!r} is not an integer")
        return ua.Variant(int(value), variant_type)
    if variant_type in (ua.VariantType.Double, ua.VariantType.Float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{value!r} is not a number")
        return ua.Variant(float(value), variant_type)
    if variant_type is ua.VariantType.DateTime:
        if not isinstance(value, datetime.datetime):
            raise TypeError(f"{value!r} is not a dateTime")
        return ua.Variant(value, variant_type)
    raise ValueError(f"no conversion to {variant_type.name}")


def data_value(
    value: Any,
    variant_type: ua.VariantType,
    quality: Quality,
    reason: QualityReason,
    source_time: datetime.datetime | None,
    server_time: datetime.datetime | None,
) -> ua.DataValue:
    """The ``DataValue`` of a Property: value, status code from quality, source and server timestamps.

    A value without data (``None``) and a good or uncertain quality reads as
    ``BadWaitingForInitialData``; OPC 10000-4 §7.7.1 has the server drop the value of any bad
    ``DataValue``, so a bad quality carries a null value (the last value stays in the store).
    """
    code = status_code_for(quality, reason)
    try:
        variant = to_variant(value, variant_type)
    except (TypeError, ValueError):
        variant, code = ua.Variant(None, ua.VariantType.Null), StatusCodes.BadTypeMismatch
    if variant.VariantType is ua.VariantType.Null and not is_bad(code):
        code = StatusCodes.BadWaitingForInitialData
    if is_bad(code):
        variant = ua.Variant(None, ua.VariantType.Null)
    return ua.DataValue(
        Value=variant,
        StatusCode=status(code),
        SourceTimestamp=cast("ua.DateTime | None", source_time),
        ServerTimestamp=cast("ua.DateTime | None", server_time),
    )

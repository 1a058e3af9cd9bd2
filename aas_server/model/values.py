"""Typed values of Properties: coercion from client input and the Part 2 value-only JSON form.

Coercion never truncates or guesses: ``3.5`` is not an ``xs:int``, ``70000`` is not an
``xs:short``, ``True`` is not a number. Strings are parsed with the XSD lexical rules.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any

from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.errors import TypeMismatchError
from aas_server.model import lexical

ValueType = Any
"""A basyx XSD value type class such as ``float`` or ``datatypes.Int`` (mypy cannot express the union)."""

_INTEGER_TYPES: tuple[type, ...] = (int,)
_FLOAT_TYPES: tuple[type, ...] = (float, datatypes.Float)


XSD_VALUE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    OverflowError,
    decimal.InvalidOperation,
    NotImplementedError,
)
"""What parsing or converting an XSD value raises on input that does not fit; basyx raises
``NotImplementedError`` for an ``xs:date``/``xs:dateTime`` year above 9999 or below 1."""

_AASD_130_VIOLATION = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character that Constraint AASd-130 does not allow in a string (as ``exchange.repairs.AASD_130_VIOLATION``)."""

YEAR_RANGE = "years outside 0001..9999 cannot be stored as xs:date or xs:dateTime (they are refused)"


def value_error_reason(error: BaseException) -> str:
    """The reason to give a client for one of ``XSD_VALUE_ERRORS``, without basyx's bug-report hints."""
    if isinstance(error, NotImplementedError):
        return YEAR_RANGE
    return str(error) or type(error).__name__


def xsd_name(value_type: ValueType) -> str:
    """``xs:double`` for ``float`` and so on."""
    return datatypes.XSD_TYPE_NAMES[value_type]


def is_numeric(value_type: ValueType) -> bool:
    return issubclass(value_type, (int, float, decimal.Decimal)) and value_type is not bool


_FLOAT32_MAX = 3.4028234663852886e38


def _single_precision(result: Any, value: Any) -> Any:
    """``result`` unless it is an xs:float beyond single precision (basyx's ``Float`` is a double; an OPC UA
    Float, IEEE 754 binary32, cannot hold it and the node would read ``BadInternalError``)."""
    if result.__class__ is datatypes.Float and math.isfinite(result) and abs(result) > _FLOAT32_MAX:
        raise TypeMismatchError(f"{value!r} is out of range for xs:float (single precision, |x| <= 3.4028235e+38)")
    return result


def coerce(value_type: ValueType, value: Any) -> Any:
    """Turn ``value`` (JSON value, OPC UA value or XSD string) into an instance of ``value_type``.

    Raises ``TypeMismatchError`` with the reason when it does not fit exactly.
    """
    name = xsd_name(value_type)
    try:
        if isinstance(value, str) and value_type is not str and not issubclass(value_type, str):
            return _single_precision(datatypes.from_xsd(value, value_type), value)
        if value_type is bool:
            if isinstance(value, bool):
                return value
            raise TypeMismatchError(f"{value!r} is not an {name}")
        if isinstance(value, bool):
            raise TypeMismatchError(f"{value!r} is a boolean, not an {name}")
        if issubclass(value_type, _FLOAT_TYPES):
            if isinstance(value, int | float | decimal.Decimal):
                result = value_type(value)
                if math.isinf(result) and not math.isinf(float(value)):
                    raise TypeMismatchError(f"{value!r} is out of range for {name}")
                return _single_precision(result, value)
            raise TypeMismatchError(f"{value!r} is not an {name}")
        if issubclass(value_type, decimal.Decimal):
            if isinstance(value, int | float | decimal.Decimal):
                return decimal.Decimal(str(value))
            raise TypeMismatchError(f"{value!r} is not an {name}")
        if issubclass(value_type, _INTEGER_TYPES):
            if isinstance(value, float | decimal.Decimal):
                if value != int(value):
                    raise TypeMismatchError(f"{value!r} is not an integer ({name}); it would be truncated")
                value = int(value)
            if isinstance(value, int):
                return value_type(value)
            raise TypeMismatchError(f"{value!r} is not an {name}")
        if issubclass(value_type, str):  # xs:string, xs:anyURI, xs:normalizedString
            if isinstance(value, str):
                forbidden = _AASD_130_VIOLATION.search(value)
                if forbidden is not None:  # a model body is refused for it; XML and AASX could not hold it
                    raise TypeMismatchError(
                        f"the string holds U+{ord(forbidden.group()):04X}, which AASd-130 does not allow in an {name}"
                    )
                return value_type(value)
            raise TypeMismatchError(f"{value!r} is not an {name}")
        return datatypes.trivial_cast(value, value_type)
    except TypeMismatchError:
        raise
    except XSD_VALUE_ERRORS as error:
        raise TypeMismatchError(f"{value!r} does not fit {name}: {value_error_reason(error)}") from None


def to_json_value(value: Any) -> Any:
    """The value-only JSON form (Part 2, *ValueOnly*): numbers and booleans native, the rest lexical."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else datatypes.xsd_repr(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value == value.to_integral_value() or abs(value) < 2**53 else str(value)
    return datatypes.xsd_repr(value)


_INTEGER_LITERAL = re.compile(r"[+-]?[0-9]+")


def given_json_value(obj: object, attribute: str) -> Any:
    """``to_json_value`` of ``obj.<attribute>`` in the lexical form it was given, where JSON can hold it.

    A number given as an integer literal (``1007`` of an ``xs:double``) is a JSON integer, any other
    value not a number or boolean is its given string (``2024-01-01T00:00:00Z``); otherwise, and
    once the value changed, it is ``to_json_value`` of the value (``aas_server.model.lexical``).
    """
    value = getattr(obj, attribute)
    text = lexical.given_form(obj, attribute)
    if text is None or value is None or isinstance(value, bool):
        return to_json_value(value)
    if isinstance(value, int | float | decimal.Decimal):
        if _INTEGER_LITERAL.fullmatch(text) and value == int(text):
            return int(text)
        return to_json_value(value)
    return text


def property_value_type(element: model.SubmodelElement) -> ValueType | None:
    """The ``valueType`` of a Property or Range, else ``None``."""
    if isinstance(element, model.Property | model.Range):
        return element.value_type
    return None

"""Unit conversion between UNECE Recommendation 20 codes, computed once with pint.

pint knows units by its own names (``degF``, ``kPa``) and has no UNECE common codes, so
``PINT_EXPRESSIONS`` translates each code of ``aas_server.model.units`` into a pint expression.
Every conversion the hub needs is linear or affine, ``target = source * factor + offset``; pint
computes the factor and the offset once, when a mapping is loaded (its offset units, ``degC`` and
``degF``, are converted as absolute temperatures, not as differences), and the hot path is plain
arithmetic. Factors and offsets that are close to a fraction with a small denominator (5/9, 160/9,
1/60, 5463/20 for 273.15) are returned as that fraction, so that 212 °F gives exactly 100 °C.

Decisions:

- A revolution is one cycle, a dimensionless count: 1 r/min = 1/60 s⁻¹ = 1/60 Hz. pint's own
  ``revolution`` is 2π radian and would give 60 r/min = 2π s⁻¹; angular units (rad/s) are therefore
  left out, because both readings cannot hold at once.
- A piece (``H87``, ``E32``) is its own dimension, so counts of things do not convert to percent
  or to frequencies.
- Torque (``NU``, newton metre) and energy share pint's dimensions but are different quantities;
  they do not convert into each other.

Left out: logarithmic units (dB), angular units, currencies, conversions that are not affine.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import TYPE_CHECKING

from aas_server.errors import ConfigurationError
from aas_server.model.units import EngineeringUnit, lookup_unit

if TYPE_CHECKING:
    import pint

PINT_EXPRESSIONS: dict[str, str] = {
    "CEL": "degC",
    "KEL": "kelvin",
    "FAH": "degF",
    "RPM": "1 / minute",
    "RPS": "1 / second",
    "C97": "1 / second",
    "HTZ": "hertz",
    "KHZ": "kilohertz",
    "KMH": "kilometer / hour",
    "MTS": "meter / second",
    "MMS": "millimeter / second",
    "MMT": "millimeter",
    "CMT": "centimeter",
    "MTR": "meter",
    "AMP": "ampere",
    "4K": "milliampere",
    "VLT": "volt",
    "WTT": "watt",
    "KWT": "kilowatt",
    "MAW": "megawatt",
    "KWH": "kilowatt * hour",
    "MWH": "megawatt * hour",
    "BAR": "bar",
    "MBR": "millibar",
    "PAL": "pascal",
    "KPA": "kilopascal",
    "MPA": "megapascal",
    "PS": "psi",
    "P1": "percent",
    "C62": "dimensionless",
    "H87": "piece",
    "E32": "piece / hour",
    "HUR": "hour",
    "SEC": "second",
    "MIN": "minute",
    "LTR": "liter",
    "MLT": "milliliter",
    "MTQ": "meter ** 3",
    "MQH": "meter ** 3 / hour",
    "L2": "liter / minute",
    "NEW": "newton",
    "NU": "newton * meter",
    "KGM": "kilogram",
    "GRM": "gram",
}
"""UNECE common code -> pint expression (pint has no UNECE codes)."""

_QUANTITY_KINDS = {"NU": "torque", "KWH": "energy", "MWH": "energy"}
"""Quantities pint cannot tell apart by dimension (N·m and J): units of different kinds do not convert."""

_LARGEST_DENOMINATOR = 100_000
_RATIONAL_TOLERANCE = 1e-12


@functools.cache
def _registry() -> pint.UnitRegistry[float]:
    import pint  # here, not at the top: loading pint and its definitions takes about half a second

    registry: pint.UnitRegistry[float] = pint.UnitRegistry()
    registry.define("piece = [piece]")
    return registry


def _unit(name: str) -> EngineeringUnit:
    try:
        return lookup_unit(name)
    except ConfigurationError as error:
        raise ValueError(error.reason) from None


def _describe(unit: EngineeringUnit) -> str:
    return f"{unit.unece_code!r} ({unit.description})"


def _pint_unit(unit: EngineeringUnit) -> pint.Unit:
    expression = PINT_EXPRESSIONS.get(unit.unece_code)
    if expression is None:
        raise ValueError(f"no conversion is known for unit {_describe(unit)}")
    return _registry().Unit(expression)


def _nearby_fraction(number: float) -> Fraction:
    """``number`` as a fraction with a small denominator if one lies within rounding noise of it."""
    close = Fraction(number).limit_denominator(_LARGEST_DENOMINATOR)
    if abs(float(close) - number) <= _RATIONAL_TOLERANCE * max(1.0, abs(number)):
        return close
    return Fraction(number)


@functools.cache
def exact_conversion(source: str, target: str) -> tuple[Fraction, Fraction]:
    """``(factor, offset)`` with ``target = source * factor + offset``, as fractions (see the module docstring).

    ``source`` and ``target`` are UNECE codes or symbols. Raises ``ValueError`` naming both units
    when they cannot be converted into each other.
    """
    check_conversion(source, target)
    source_unit, target_unit = _unit(source), _unit(target)
    if source_unit == target_unit:
        return Fraction(1), Fraction(0)
    registry = _registry()
    from_unit, to_unit = _pint_unit(source_unit), _pint_unit(target_unit)
    zero = float(registry.Quantity(0.0, from_unit).to(to_unit).magnitude)
    one = float(registry.Quantity(1.0, from_unit).to(to_unit).magnitude)
    return _nearby_fraction(one - zero), _nearby_fraction(zero)


def linear_conversion(source: str, target: str) -> tuple[float, float]:
    """``(factor, offset)`` with ``target = source * factor + offset``; computed with pint once, then cached.

    ``linear_conversion("FAH", "CEL") == (5/9, -160/9)``; ``linear_conversion("RPM", "C97") == (1/60, 0)``.
    """
    factor, offset = exact_conversion(source, target)
    return float(factor), float(offset)


@functools.cache
def check_conversion(source: str, target: str) -> None:
    """Raise ``ValueError`` naming both units if ``source`` cannot be converted into ``target``.

    ``cannot convert 'RPM' (revolutions per minute) to 'AMP' (ampere): different dimensions (...)``.
    """
    source_unit, target_unit = _unit(source), _unit(target)
    from_unit, to_unit = _pint_unit(source_unit), _pint_unit(target_unit)
    if source_unit == target_unit:
        return
    prefix = f"cannot convert {_describe(source_unit)} to {_describe(target_unit)}"
    if from_unit.dimensionality != to_unit.dimensionality:
        raise ValueError(f"{prefix}: different dimensions ({from_unit.dimensionality} and {to_unit.dimensionality})")
    source_kind = _QUANTITY_KINDS.get(source_unit.unece_code)
    target_kind = _QUANTITY_KINDS.get(target_unit.unece_code)
    if source_kind != target_kind:
        raise ValueError(
            f"{prefix}: different quantities of the same dimensions "
            f"({source_kind or 'another quantity'} and {target_kind or 'another quantity'})"
        )

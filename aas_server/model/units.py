"""Engineering units: UNECE Recommendation 20 common codes, as OPC UA ``EUInformation`` uses them.

A small hand table of the units the hub's templates and mappings use. ``aas_server.mapping.units``
converts between them with pint; this table only names them, because no maintained Python package
ships the UNECE code list with the OPC UA ``UnitId`` encoding. Every code here needs a pint
expression there (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from aas_server.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class EngineeringUnit:
    """A unit as OPC UA Part 8 ``EUInformation`` carries it."""

    unece_code: str
    symbol: str
    description: str

    @property
    def unit_id(self) -> int:
        """The OPC UA ``UnitId``: the UNECE code's ASCII characters packed into an Int32."""
        result = 0
        for character in self.unece_code:
            result = (result << 8) | ord(character)
        return result


_UNITS = [
    EngineeringUnit("CEL", "°C", "degree Celsius"),
    EngineeringUnit("KEL", "K", "kelvin"),
    EngineeringUnit("FAH", "°F", "degree Fahrenheit"),
    EngineeringUnit("RPM", "r/min", "revolutions per minute"),
    EngineeringUnit("HTZ", "Hz", "hertz"),
    EngineeringUnit("KMH", "km/h", "kilometre per hour"),
    EngineeringUnit("MTS", "m/s", "metre per second"),
    EngineeringUnit("MMT", "mm", "millimetre"),
    EngineeringUnit("MTR", "m", "metre"),
    EngineeringUnit("AMP", "A", "ampere"),
    EngineeringUnit("VLT", "V", "volt"),
    EngineeringUnit("WTT", "W", "watt"),
    EngineeringUnit("KWT", "kW", "kilowatt"),
    EngineeringUnit("KWH", "kW·h", "kilowatt hour"),
    EngineeringUnit("BAR", "bar", "bar"),
    EngineeringUnit("PAL", "Pa", "pascal"),
    EngineeringUnit("KPA", "kPa", "kilopascal"),
    EngineeringUnit("P1", "%", "percent"),
    EngineeringUnit("C62", "1", "one (count)"),
    EngineeringUnit("H87", "piece", "piece"),
    EngineeringUnit("HUR", "h", "hour"),
    EngineeringUnit("SEC", "s", "second"),
    EngineeringUnit("MIN", "min", "minute"),
    EngineeringUnit("LTR", "l", "litre"),
    EngineeringUnit("MLT", "ml", "millilitre"),
    EngineeringUnit("NEW", "N", "newton"),
    EngineeringUnit("NU", "N·m", "newton metre"),
    EngineeringUnit("KGM", "kg", "kilogram"),
    EngineeringUnit("GRM", "g", "gram"),
    EngineeringUnit("MMS", "mm/s", "millimetre per second"),
    EngineeringUnit("E32", "1/h", "piece per hour"),
    EngineeringUnit("C97", "s⁻¹", "reciprocal second"),
    EngineeringUnit("RPS", "r/s", "revolutions per second"),
    EngineeringUnit("KHZ", "kHz", "kilohertz"),
    EngineeringUnit("MBR", "mbar", "millibar"),
    EngineeringUnit("MPA", "MPa", "megapascal"),
    EngineeringUnit("PS", "psi", "pound-force per square inch"),
    EngineeringUnit("CMT", "cm", "centimetre"),
    EngineeringUnit("4K", "mA", "milliampere"),
    EngineeringUnit("MAW", "MW", "megawatt"),
    EngineeringUnit("MWH", "MW·h", "megawatt hour"),
    EngineeringUnit("MTQ", "m³", "cubic metre"),
    EngineeringUnit("MQH", "m³/h", "cubic metre per hour"),
    EngineeringUnit("L2", "l/min", "litre per minute"),
]

UNITS_BY_CODE: dict[str, EngineeringUnit] = {unit.unece_code: unit for unit in _UNITS}
UNITS_BY_SYMBOL: dict[str, EngineeringUnit] = {unit.symbol: unit for unit in _UNITS}


def lookup_unit(name: str) -> EngineeringUnit:
    """Find a unit by UNECE code (``CEL``) or symbol (``°C``); raise ``ConfigurationError`` if unknown."""
    unit = UNITS_BY_CODE.get(name) or UNITS_BY_SYMBOL.get(name)
    if unit is None:
        known = ", ".join(sorted(UNITS_BY_CODE))
        raise ConfigurationError(f"unknown engineering unit {name!r} (UNECE codes known: {known})")
    return unit


def _unit_code(name: str) -> str:
    try:
        return lookup_unit(name).unece_code
    except ConfigurationError as error:
        raise ValueError(error.reason) from None


UnitCode = Annotated[str, AfterValidator(_unit_code)]
"""A pydantic field type: a UNECE code or symbol, validated and stored as the code."""

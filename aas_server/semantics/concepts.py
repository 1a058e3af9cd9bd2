"""ConceptDescriptions for the semanticIds of mapped points, and the semanticId agreement check.

:func:`concept_descriptions_for` gives every ``semantic_id`` of a mapping file that has no
ConceptDescription yet one with an embedded IEC 61360 data specification (AAS Part 3a v3.0,
``DataSpecificationIEC61360``): preferred name, definition, IEC 61360 data type, unit symbol and
``unitId``. The ConceptDescription's id is the semanticId itself (an ECLASS or IEC CDD IRDI such
as ``0173-1#02-AAB381#003``, or an IRI), so that a semanticId resolves to it (AAS Part 1 v3.0 §5.3.7).

``unitId`` is an ExternalReference whose one GlobalReference key is the IRI of the UNECE
Recommendation 20 common code in the UN/CEFACT web vocabulary,
``https://vocabulary.uncefact.org/UnitMeasureCode#<code>`` (see :func:`unit_iri`).

:func:`semantic_conflicts` finds points whose declared ``semantic_id`` differs from the semanticId
of the element they feed; a loaded mapping with such a point is rejected.

Left out: value lists (``valueList``) for enum points, ``shortName``, ``symbol`` and ``levelType``,
languages other than English, and IEC 61360 data types of dates, times, IRIs and files (a point
never produces them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from basyx.aas import model

from aas_server.mapping.schema import AnyPoint, BitPoint, DataType, MappingFile, OpcUaMethodPoint, RegisterPoint
from aas_server.model.paths import parse_id_short_path
from aas_server.model.templates import global_reference
from aas_server.model.twins import IEC61360_DATA_SPECIFICATION
from aas_server.model.units import EngineeringUnit

UNIT_VOCABULARY = "https://vocabulary.uncefact.org/UnitMeasureCode#"
"""Namespace of the UNECE Recommendation 20 common codes in the UN/CEFACT web vocabulary."""

_COUNT_UNITS = frozenset({"H87", "C62"})
_INTEGER_XSD = frozenset(
    {
        "integer",
        "long",
        "int",
        "short",
        "byte",
        "unsignedLong",
        "unsignedInt",
        "unsignedShort",
        "unsignedByte",
        "nonNegativeInteger",
        "nonPositiveInteger",
        "positiveInteger",
        "negativeInteger",
    }
)
_REAL_XSD = frozenset({"double", "float", "decimal"})


def unit_iri(unit: EngineeringUnit) -> str:
    """The IRI of a unit's UNECE common code: ``https://vocabulary.uncefact.org/UnitMeasureCode#CEL``."""
    return UNIT_VOCABULARY + unit.unece_code


def _words(id_short: str) -> str:
    """``RotationalSpeed`` → ``Rotational speed``; acronyms stay upper case."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+|[A-Z]", id_short)
    if not words:
        return id_short
    return " ".join([words[0], *(word if word.isupper() else word.lower() for word in words[1:])])


def _target_id_short(point: AnyPoint) -> str:
    segments = [segment for segment in parse_id_short_path(point.target.path) if isinstance(segment, str)]
    return segments[-1]


def _xsd_local_name(value_type: str) -> str:
    return value_type.split(":", 1)[1] if ":" in value_type else value_type


def iec61360_data_type(point: AnyPoint, value_type: str | None = None) -> model.DataTypeIEC61360 | None:
    """The IEC 61360 data type of the values ``point`` produces (``None`` when it cannot be told).

    ``value_type`` (an XSD type such as ``xs:double``, usually the target element's ``valueType``)
    decides when given. Otherwise the point says: an enum gives ``STRING``, a Modbus bool ``BOOLEAN``,
    a register number that scale, offset, a unit conversion or a filter turns into a fraction
    ``REAL_*``, an integer register ``INTEGER_*``: ``*_MEASURE`` with a unit, ``*_COUNT`` without
    (and ``INTEGER_COUNT`` for pieces), as the twins' own ConceptDescriptions (``model/twins.py``).
    OPC UA and MQTT points with a unit are ``REAL_MEASURE``.
    """
    unit = point.engineering_unit
    counted = unit is None or unit.unece_code in _COUNT_UNITS
    if isinstance(point, OpcUaMethodPoint):
        return None
    if point.enum is not None:
        return model.DataTypeIEC61360.STRING
    if value_type is not None:
        name = _xsd_local_name(value_type)
        if name == "boolean":
            return model.DataTypeIEC61360.BOOLEAN
        if name in _INTEGER_XSD:
            return model.DataTypeIEC61360.INTEGER_COUNT if counted else model.DataTypeIEC61360.INTEGER_MEASURE
        if name in _REAL_XSD:
            return model.DataTypeIEC61360.REAL_MEASURE if unit else model.DataTypeIEC61360.REAL_COUNT
        if name == "dateTime":
            return model.DataTypeIEC61360.TIMESTAMP
        if name == "anyURI":
            return model.DataTypeIEC61360.IRI
        return model.DataTypeIEC61360.STRING
    if isinstance(point, BitPoint) or (isinstance(point, RegisterPoint) and point.data_type is DataType.BOOL):
        return model.DataTypeIEC61360.BOOLEAN
    if isinstance(point, RegisterPoint):
        if point.data_type is DataType.STRING:
            return model.DataTypeIEC61360.STRING
        fractional = (
            point.data_type.is_float
            or not point.is_identity
            or point.target_unit is not None
            or point.filter is not None
        )
        if fractional:
            return model.DataTypeIEC61360.REAL_MEASURE if unit else model.DataTypeIEC61360.REAL_COUNT
        return model.DataTypeIEC61360.INTEGER_COUNT if counted else model.DataTypeIEC61360.INTEGER_MEASURE
    if unit is not None:
        return model.DataTypeIEC61360.REAL_MEASURE
    return None


def concept_description(point: AnyPoint, value_type: str | None = None) -> model.ConceptDescription:
    """The ConceptDescription of ``point.semantic_id``, described from the point and its target.

    Preferred name from the target's idShort (``RotationalSpeed`` → "Rotational speed", English);
    definition from the point's ``description``, else the preferred name (AASc-3a-008 asks for an
    English definition); unit symbol and ``unitId`` from the target unit; data type from
    :func:`iec61360_data_type`. Raises ``ValueError`` for a point without ``semantic_id``.
    """
    if point.semantic_id is None:
        raise ValueError(f"point {point.name!r} has no semantic_id")
    id_short = _target_id_short(point)
    name = _words(id_short)
    unit = point.engineering_unit
    content = model.DataSpecificationIEC61360(
        preferred_name=model.PreferredNameTypeIEC61360({"en": name}),
        data_type=iec61360_data_type(point, value_type),
        definition=model.DefinitionTypeIEC61360({"en": point.description or name}),
        unit=unit.symbol if unit else None,
        unit_id=global_reference(unit_iri(unit)) if unit else None,
    )
    return model.ConceptDescription(
        point.semantic_id,
        id_short=id_short,
        description=model.MultiLanguageTextType({"en": point.description}) if point.description else None,
        embedded_data_specifications=[
            model.EmbeddedDataSpecification(global_reference(IEC61360_DATA_SPECIFICATION), content)
        ],
    )


def concept_descriptions_for(
    mapping: MappingFile,
    existing: Mapping[str, model.ConceptDescription],
    value_types: Mapping[str, str] | None = None,
) -> list[model.ConceptDescription]:
    """New ConceptDescriptions for the semanticIds of ``mapping`` that ``existing`` (by id) lacks.

    One per semanticId, described by the first point that declares it, in file order.
    ``value_types`` maps point names to the XSD ``valueType`` of their target elements
    (``xs:double``); it sharpens the IEC 61360 data type where the point alone cannot tell it.
    """
    types = value_types or {}
    made: dict[str, model.ConceptDescription] = {}
    for point in mapping.points:
        semantic_id = point.semantic_id
        if semantic_id is None or semantic_id in existing or semantic_id in made:
            continue
        made[semantic_id] = concept_description(point, types.get(point.name))
    return list(made.values())


def semantic_id_value(reference: model.Reference | None) -> str | None:
    """The identifier a semanticId names: the value of its first key (``None`` without keys)."""
    if reference is None or not reference.key:
        return None
    return reference.key[0].value


def semantic_conflicts(
    mapping: MappingFile,
    element_at: Callable[[str, str], model.SubmodelElement | None],
) -> list[tuple[str, str]]:
    """Points whose ``semantic_id`` differs from the semanticId of their target element.

    ``element_at(submodel_id, id_short_path)`` returns the target element, or ``None`` when it does
    not exist (reported elsewhere). A point without ``semantic_id`` and an element without semanticId
    never conflict. Each problem is ``("points[3] (filler.Speed).semantic_id", message)``, the form
    ``MappingError`` locations take after the file name.
    """
    problems: list[tuple[str, str]] = []
    for index, point in enumerate(mapping.points):
        declared = point.semantic_id
        if declared is None:
            continue
        element = element_at(point.target.submodel, point.target.path)
        if element is None or element.semantic_id is None:
            continue
        actual = semantic_id_value(element.semantic_id)
        if actual != declared:
            problems.append(
                (
                    f"points[{index}] ({point.name}).semantic_id",
                    f"semanticId {declared!r} conflicts with the semanticId {actual!r} of "
                    f"{point.target.path!r} in {point.target.submodel!r}",
                )
            )
    return problems

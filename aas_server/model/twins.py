"""Twin definitions: a YAML file describing a plant's twins, built into AAS v3 objects.

A twin definition file (``docs/twins.md``) lists twins on four levels (component, asset, process,
system), each with nameplate values, technical data, parts and operational properties.
:func:`load_twins` validates it once (schema, cross-references, units, template cardinalities) and
:func:`build_environment` turns it, purely, into basyx objects:

- one AssetAdministrationShell per twin (AAS Part 1 v3.0 §5.3.3) with its AssetInformation and model
  references to its submodels;
- a Digital Nameplate (IDTA 02006-3-0), Technical Data (IDTA 02003-2-0), Hierarchical Structures
  (IDTA 02011-1-1, archetype ``OneDown``: an EntryNode for the twin, a Node and a HasPart relationship
  per part, whose ``globalAssetId`` leads to the part's shell) and OperationalData submodel;
- one ConceptDescription per semanticId of an operational or technical property, with an IEC 61360
  data specification (AAS Part 3a v3.0) carrying preferred name, data type and unit.

Identifiers derive from ``id_prefix`` and the twin key: ``<prefix>aas:<key>``, ``<prefix>asset:<key>``,
``<prefix>sm:<key>:<kind>``.

Left out: IsPartOf and SameAs relationships, BulkCount, archetypes other than ``OneDown``,
``unitId`` references in concept descriptions, and assets shared by several parents.
"""

from __future__ import annotations

import decimal
import enum
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from basyx.aas import model
from basyx.aas.model import datatypes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aas_server.config import load_yaml
from aas_server.errors import ConfigurationError
from aas_server.model import templates as submodel_templates
from aas_server.model.lexical import OrderedSet
from aas_server.model.templates import (
    ID_SHORT_PATTERN,
    FreeProperty,
    FreeRange,
    SubmodelTemplate,
    global_reference,
)
from aas_server.model.units import EngineeringUnit, UnitCode, lookup_unit

IEC61360_DATA_SPECIFICATION = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIEC61360/3/0"
COMPOSITION_LEVEL_EXTENSION = "CompositionLevel"
COMPOSITION_LEVEL_SEMANTIC_ID = "urn:aas-server:concept:CompositionLevel:1:0"
ARCHETYPE = "OneDown"
ENTRY_NODE = "EntryNode"


class Level(enum.Enum):
    """Where a twin sits in the composition: system → process → asset → component."""

    COMPONENT = "component"
    ASSET = "asset"
    PROCESS = "process"
    SYSTEM = "system"

    @property
    def rank(self) -> int:
        return list(Level).index(self)


class SubmodelKind(enum.Enum):
    """The submodels a twin can have; the value is the last segment of the submodel id."""

    NAMEPLATE = "nameplate"
    TECHNICAL_DATA = "technical-data"
    HIERARCHICAL_STRUCTURES = "hierarchical-structures"
    OPERATIONAL_DATA = "operational-data"

    @property
    def template(self) -> str:
        """The template description (``submodels/<name>.yaml``) the submodel follows."""
        return _TEMPLATE_NAMES[self]


_TEMPLATE_NAMES = {
    SubmodelKind.NAMEPLATE: "nameplate-3.0",
    SubmodelKind.TECHNICAL_DATA: "technical-data-2.0",
    SubmodelKind.HIERARCHICAL_STRUCTURES: "hierarchical-structures-1.1",
    SubmodelKind.OPERATIONAL_DATA: "operational-data-1.0",
}

_ASSET_KINDS = {
    "Instance": model.AssetKind.INSTANCE,
    "Type": model.AssetKind.TYPE,
    "NotApplicable": model.AssetKind.NOT_APPLICABLE,
}

IdShort = Annotated[str, Field(pattern=ID_SHORT_PATTERN, max_length=128)]
LangText = dict[str, Annotated[str, Field(min_length=1)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PropertyDefinition(_Strict):
    """A Property whose idShort, valueType, unit and semanticId the twin definition gives."""

    id_short: IdShort
    value_type: str
    """XSD name, e.g. ``xs:double``."""
    semantic_id: Annotated[str, Field(min_length=1, max_length=2000)]
    unit: UnitCode | None = None
    """UNECE Recommendation 20 code (``RPM``) or symbol; stored as the code."""
    preferred_name: LangText | None = None
    """For the concept description; defaults to the idShort split into words."""
    description: LangText | None = None
    value: Any = None
    """Initial value."""

    @field_validator("value_type")
    @classmethod
    def _check_value_type(cls, value_type: str) -> str:
        if value_type not in datatypes.XSD_TYPE_CLASSES:
            raise ValueError(f"unknown valueType {value_type!r} (expected an XSD name such as 'xs:double')")
        return value_type

    @property
    def engineering_unit(self) -> EngineeringUnit | None:
        return lookup_unit(self.unit) if self.unit else None


class OperationalPropertyDefinition(PropertyDefinition):
    """A live value of the twin, in its OperationalData submodel."""


class TechnicalPropertyDefinition(PropertyDefinition):
    """A technical property (IDTA 02003-2-0 *TechnicalPropertyAreas*); a Range when min or max is given."""

    min: Any = None
    max: Any = None

    @model_validator(mode="after")
    def _check_range(self) -> TechnicalPropertyDefinition:
        if (self.min is not None or self.max is not None) and self.value is not None:
            raise ValueError("give either value (a Property) or min/max (a Range), not both")
        return self

    @property
    def is_range(self) -> bool:
        return self.min is not None or self.max is not None


class TechnicalDataDefinition(_Strict):
    """Values of the Technical Data submodel; keys are the template's idShorts, plus ``properties``."""

    general_information: dict[str, Any] | None = Field(default=None, alias="GeneralInformation")
    """Defaults to values taken from the nameplate (name, designation, article number, order code)."""
    product_classifications: list[dict[str, Any]] | None = Field(default=None, alias="ProductClassifications")
    further_information: dict[str, Any] | None = Field(default=None, alias="FurtherInformation")
    properties: tuple[TechnicalPropertyDefinition, ...] = ()
    """The one technical property area."""


class AssetDefinition(_Strict):
    """The shell's AssetInformation (AAS Part 1 v3.0 §5.3.4)."""

    kind: Literal["Instance", "Type", "NotApplicable"] = "Instance"
    type: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    """``assetType``: the identifier of the asset's type."""


class TwinDefinition(_Strict):
    """One twin: a shell and its submodels."""

    key: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100)]
    id_short: IdShort
    level: Level
    asset: AssetDefinition = AssetDefinition()
    description: LangText | None = None
    nameplate: dict[str, Any] = Field(default_factory=dict)
    """Values by nameplate idShort; MultiLanguageProperty values as ``{lang: text}``."""
    technical_data: TechnicalDataDefinition | None = None
    parts: tuple[str, ...] = ()
    """Keys of the twins this one is made of."""
    operational_data: tuple[OperationalPropertyDefinition, ...] = ()


class DefaultsDefinition(_Strict):
    nameplate: dict[str, Any] = Field(default_factory=dict)
    """Nameplate values every twin gets unless it gives the same key itself."""


class TwinDefinitionFile(_Strict):
    """The whole file."""

    version: Literal[1] = 1
    id_prefix: Annotated[str, Field(min_length=1, pattern=r"[:/#]$")]
    defaults: DefaultsDefinition = DefaultsDefinition()
    twins: Annotated[list[TwinDefinition], Field(min_length=1)]


@dataclass(frozen=True)
class TwinDefinitionSet:
    """The validated twins of one file, with the templates they are built from."""

    source: Path
    id_prefix: str
    twins: tuple[TwinDefinition, ...]
    """Nameplate defaults are already merged in."""
    templates: Mapping[str, SubmodelTemplate]

    def __iter__(self) -> Iterator[TwinDefinition]:
        return iter(self.twins)

    def twin(self, key: str) -> TwinDefinition:
        for twin in self.twins:
            if twin.key == key:
                return twin
        raise KeyError(key)

    def shell_id(self, key: str) -> str:
        return f"{self.id_prefix}aas:{key}"

    def asset_id(self, key: str) -> str:
        return f"{self.id_prefix}asset:{key}"

    def submodel_id(self, key: str, kind: SubmodelKind) -> str:
        return f"{self.id_prefix}sm:{key}:{kind.value}"

    def location(self, key: str, field: str) -> str:
        """``file: twins[key].field`` for error messages."""
        return f"{self.source}: twins[{key}].{field}"


def load_twins(path: Path, templates: Mapping[str, SubmodelTemplate] | None = None) -> TwinDefinitionSet:
    """Read and validate a twin definition file.

    ``templates`` defaults to the descriptions in ``submodels/``. Every problem raises
    ``ConfigurationError`` naming the file, the twin key and the field
    (``plant.yaml: twins[filler].nameplate.ManufacturerName: mandatory element missing ...``).
    """
    data = load_yaml(path)
    try:
        document = TwinDefinitionFile.model_validate(data)
    except ValidationError as error:
        raise ConfigurationError(_format_errors(error, data, path)) from None
    if templates is None:
        templates = submodel_templates.load_templates(submodel_templates.DEFAULT_TEMPLATES_DIRECTORY)
    missing = [name for name in _TEMPLATE_NAMES.values() if name not in templates]
    if missing:
        raise ConfigurationError(f"template descriptions missing: {', '.join(missing)}", str(path))
    twins = tuple(
        twin.model_copy(update={"nameplate": {**document.defaults.nameplate, **twin.nameplate}})
        for twin in document.twins
    )
    definitions = TwinDefinitionSet(path, document.id_prefix, twins, dict(templates))
    problems = _cross_check(definitions)
    if problems:
        raise ConfigurationError("\n".join(problems))
    build_environment(definitions)
    return definitions


def _format_errors(error: ValidationError, data: object, path: Path) -> str:
    lines = []
    for item in error.errors():
        field_path = ""
        node: object = data
        for part in item["loc"]:
            label: object = part
            if isinstance(part, int) and isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict):
                    label = node.get("key") or node.get("id_short") or part
                field_path += f"[{label}]"
                continue
            node = node.get(part) if isinstance(node, dict) else None
            field_path += f".{part}" if field_path else str(part)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {field_path or '(top level)'}: {message}")
    return "\n".join(lines)


def _cross_check(definitions: TwinDefinitionSet) -> list[str]:
    problems: list[str] = []
    by_key: dict[str, TwinDefinition] = {}
    id_shorts: dict[str, str] = {}
    parent_of: dict[str, str] = {}
    for twin in definitions:
        if twin.key in by_key:
            problems.append(f"{definitions.location(twin.key, 'key')}: twin key used twice")
        by_key[twin.key] = twin
        if twin.id_short in id_shorts:
            problems.append(
                f"{definitions.location(twin.key, 'id_short')}: {twin.id_short!r} is also the idShort "
                f"of twin {id_shorts[twin.id_short]!r}"
            )
        id_shorts.setdefault(twin.id_short, twin.key)
        for field, properties in (
            ("operational_data", twin.operational_data),
            ("technical_data.properties", twin.technical_data.properties if twin.technical_data else ()),
        ):
            seen: set[str] = set()
            for definition in properties:
                if definition.id_short in seen:
                    problems.append(
                        f"{definitions.location(twin.key, f'{field}[{definition.id_short}]')}: idShort used twice"
                    )
                seen.add(definition.id_short)
    for twin in definitions:
        for index, part in enumerate(twin.parts):
            where = definitions.location(twin.key, f"parts[{index}]")
            if part not in by_key:
                problems.append(f"{where}: unknown twin {part!r} (known: {', '.join(sorted(by_key))})")
            elif part == twin.key:
                problems.append(f"{where}: a twin cannot be a part of itself")
            elif part in parent_of:
                problems.append(f"{where}: {part!r} is already a part of {parent_of[part]!r}")
            elif by_key[part].level.rank > twin.level.rank:
                problems.append(f"{where}: a {by_key[part].level.value} cannot be a part of a {twin.level.value}")
            else:
                parent_of[part] = twin.key
    if not problems:
        problems.extend(_check_cycles(definitions, by_key))
        problems.extend(_check_concepts(definitions))
    return problems


def _check_cycles(definitions: TwinDefinitionSet, by_key: Mapping[str, TwinDefinition]) -> list[str]:
    for twin in definitions:
        chain = [twin.key]
        pending = list(twin.parts)
        while pending:
            part = pending.pop()
            if part == twin.key:
                return [f"{definitions.location(twin.key, 'parts')}: the composition has a cycle through {part!r}"]
            if part not in chain:
                chain.append(part)
                pending.extend(by_key[part].parts)
    return []


@dataclass(frozen=True, slots=True)
class _Concept:
    definition: PropertyDefinition
    twin_key: str
    field: str


def _concepts(definitions: TwinDefinitionSet) -> Iterator[_Concept]:
    for twin in definitions:
        for definition in twin.operational_data:
            yield _Concept(definition, twin.key, f"operational_data[{definition.id_short}]")
        if twin.technical_data:
            for technical in twin.technical_data.properties:
                yield _Concept(technical, twin.key, f"technical_data.properties[{technical.id_short}]")


def _check_concepts(definitions: TwinDefinitionSet) -> list[str]:
    problems = []
    first: dict[str, _Concept] = {}
    for concept in _concepts(definitions):
        semantic_id = concept.definition.semantic_id
        earlier = first.setdefault(semantic_id, concept)
        mismatch = [
            name
            for name in ("value_type", "unit")
            if getattr(earlier.definition, name) != getattr(concept.definition, name)
        ]
        if mismatch:
            problems.append(
                f"{definitions.location(concept.twin_key, concept.field)}: semanticId {semantic_id!r} "
                f"has a different {' and '.join(mismatch)} in twins[{earlier.twin_key}].{earlier.field}"
            )
    return problems


def composition(definitions: TwinDefinitionSet) -> dict[str, list[str]]:
    """Twin key → keys of its parts, for every twin (components map to ``[]``)."""
    return {twin.key: list(twin.parts) for twin in definitions}


def operational_units(definitions: TwinDefinitionSet) -> dict[tuple[str, str], EngineeringUnit]:
    """``(submodel id, idShort)`` → unit of every operational property that has one."""
    return {
        (definitions.submodel_id(twin.key, SubmodelKind.OPERATIONAL_DATA), definition.id_short): unit
        for twin in definitions
        for definition in twin.operational_data
        if (unit := definition.engineering_unit) is not None
    }


def build_environment(definitions: TwinDefinitionSet) -> list[model.Identifiable]:
    """Shells, submodels and concept descriptions of all twins, in file order, concept descriptions last.

    Pure: the same definitions give equal objects. Raises ``ConfigurationError`` naming the file, the
    twin key and the field for values a template or the metamodel rejects.
    """
    result: list[model.Identifiable] = []
    for twin in definitions:
        submodels = _submodels(definitions, twin)
        result.extend(submodels)
        result.append(_shell(definitions, twin, submodels))
    result.extend(_concept_descriptions(definitions))
    return result


def _submodels(definitions: TwinDefinitionSet, twin: TwinDefinition) -> list[model.Submodel]:
    templates = definitions.templates
    submodels = [
        _instantiate(definitions, twin, SubmodelKind.NAMEPLATE, "nameplate", twin.nameplate),
    ]
    if twin.technical_data is not None:
        submodels.append(
            _instantiate(
                definitions,
                twin,
                SubmodelKind.TECHNICAL_DATA,
                "technical_data",
                _technical_values(twin, twin.technical_data),
            )
        )
    if twin.parts:
        template = templates[SubmodelKind.HIERARCHICAL_STRUCTURES.template]
        try:
            submodels.append(_hierarchical_structures(definitions, twin, template))
        except (ValueError, model.AASConstraintViolation) as error:
            raise ConfigurationError(str(error), definitions.location(twin.key, "parts")) from None
    if twin.operational_data:
        values = {definition.id_short: _free(definition) for definition in twin.operational_data}
        submodels.append(_instantiate(definitions, twin, SubmodelKind.OPERATIONAL_DATA, "operational_data", values))
    return submodels


def _instantiate(
    definitions: TwinDefinitionSet,
    twin: TwinDefinition,
    kind: SubmodelKind,
    field: str,
    values: Mapping[str, object],
) -> model.Submodel:
    template = definitions.templates[kind.template]
    try:
        return submodel_templates.instantiate(template, definitions.submodel_id(twin.key, kind), values)
    except ConfigurationError as error:
        location = error.location or template.id_short
        if kind is SubmodelKind.OPERATIONAL_DATA:
            first, _, rest = location.partition(".")
            location = f"[{first}]" + (f".{rest}" if rest else "")
        else:
            location = f".{location}"
        raise ConfigurationError(error.reason, definitions.location(twin.key, field + location)) from None


def _free(definition: PropertyDefinition) -> FreeProperty | FreeRange:
    if isinstance(definition, TechnicalPropertyDefinition) and definition.is_range:
        return FreeRange(
            definition.id_short,
            definition.value_type,
            definition.semantic_id,
            definition.min,
            definition.max,
            definition.description,
        )
    return FreeProperty(
        definition.id_short,
        definition.value_type,
        definition.semantic_id,
        definition.value,
        definition.description,
    )


def _first_text(value: object) -> object:
    if isinstance(value, Mapping) and value:
        text = value.get("en", next(iter(value.values())))
        return text
    return value


def _technical_values(twin: TwinDefinition, technical_data: TechnicalDataDefinition) -> dict[str, object]:
    nameplate = twin.nameplate
    derived = {
        "ManufacturerName": _first_text(nameplate.get("ManufacturerName")),
        "ManufacturerProductDesignation": nameplate.get("ManufacturerProductDesignation"),
        "ManufacturerArticleNumber": nameplate.get("ProductArticleNumberOfManufacturer"),
        "ManufacturerOrderCode": nameplate.get("OrderCodeOfManufacturer"),
    }
    general_information = {
        **{key: value for key, value in derived.items() if value is not None},
        **(technical_data.general_information or {}),
    }
    values: dict[str, object] = {"GeneralInformation": general_information}
    if technical_data.product_classifications is not None:
        values["ProductClassifications"] = technical_data.product_classifications
    if technical_data.properties:
        values["TechnicalPropertyAreas"] = [
            {definition.id_short: _free(definition) for definition in technical_data.properties}
        ]
    if technical_data.further_information is not None:
        values["FurtherInformation"] = technical_data.further_information
    return values


def _hierarchical_structures(
    definitions: TwinDefinitionSet, twin: TwinDefinition, template: SubmodelTemplate
) -> model.Submodel:
    submodel_id = definitions.submodel_id(twin.key, SubmodelKind.HIERARCHICAL_STRUCTURES)
    entry_node_template = template.element(ENTRY_NODE)
    node_template = template.element(f"{ENTRY_NODE}.Node")
    has_part_template = template.element(f"{ENTRY_NODE}.HasPart")
    archetype_template = template.element("ArcheType")
    submodel_key = model.Key(model.KeyTypes.SUBMODEL, submodel_id)
    entry_node_key = model.Key(model.KeyTypes.ENTITY, ENTRY_NODE)
    entry_node_reference = model.ModelReference((submodel_key, entry_node_key), model.Entity)
    nodes: list[model.SubmodelElement] = []
    relationships: list[model.SubmodelElement] = []
    for part_key in twin.parts:
        part = definitions.twin(part_key)
        nodes.append(
            model.Entity(
                part.id_short,
                model.EntityType.SELF_MANAGED_ENTITY,
                global_asset_id=definitions.asset_id(part_key),
                **submodel_templates.element_semantics(node_template),
            )
        )
        node_reference = model.ModelReference(
            (submodel_key, entry_node_key, model.Key(model.KeyTypes.ENTITY, part.id_short)), model.Entity
        )
        relationships.append(
            model.RelationshipElement(
                f"HasPart_{part.id_short}",
                first=entry_node_reference,
                second=node_reference,
                **submodel_templates.element_semantics(has_part_template),
            )
        )
    entry_node = model.Entity(
        ENTRY_NODE,
        model.EntityType.SELF_MANAGED_ENTITY,
        statement=nodes + relationships,
        global_asset_id=definitions.asset_id(twin.key),
        **submodel_templates.element_semantics(entry_node_template),
    )
    archetype = model.Property(
        "ArcheType",
        str,
        ARCHETYPE,
        **submodel_templates.element_semantics(archetype_template),
    )
    return model.Submodel(
        submodel_id,
        id_short=template.id_short,
        semantic_id=global_reference(template.semantic_id),
        submodel_element=[entry_node, archetype],
    )


def _shell(
    definitions: TwinDefinitionSet, twin: TwinDefinition, submodels: Sequence[model.Submodel]
) -> model.AssetAdministrationShell:
    try:
        asset_information = model.AssetInformation(
            asset_kind=_ASSET_KINDS[twin.asset.kind],
            global_asset_id=definitions.asset_id(twin.key),
            asset_type=twin.asset.type,
        )
        return model.AssetAdministrationShell(
            asset_information,
            definitions.shell_id(twin.key),
            id_short=twin.id_short,
            description=model.MultiLanguageTextType(dict(twin.description)) if twin.description else None,
            submodel=OrderedSet(  # type: ignore[arg-type]
                model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel.id),), model.Submodel)
                for submodel in submodels
            ),
            extension=[
                model.Extension(
                    COMPOSITION_LEVEL_EXTENSION,
                    value_type=str,
                    value=twin.level.value,
                    semantic_id=global_reference(COMPOSITION_LEVEL_SEMANTIC_ID),
                )
            ],
        )
    except (ValueError, model.AASConstraintViolation) as error:
        raise ConfigurationError(str(error), definitions.location(twin.key, "asset")) from None


def _words(id_short: str) -> str:
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+|[A-Z]", id_short)
    if not words:
        return id_short
    return " ".join([words[0], *(word if word.isupper() else word.lower() for word in words[1:])])


def _data_type(value_type: type, unit: EngineeringUnit | None) -> model.DataTypeIEC61360:
    if value_type is bool:
        return model.DataTypeIEC61360.BOOLEAN
    if issubclass(value_type, int):
        counted = unit is None or unit.unece_code in ("H87", "C62")
        return model.DataTypeIEC61360.INTEGER_COUNT if counted else model.DataTypeIEC61360.INTEGER_MEASURE
    if issubclass(value_type, float | decimal.Decimal):
        return model.DataTypeIEC61360.REAL_MEASURE if unit else model.DataTypeIEC61360.REAL_COUNT
    if issubclass(value_type, datatypes.DateTime):
        return model.DataTypeIEC61360.TIMESTAMP
    if issubclass(value_type, datatypes.Date):
        return model.DataTypeIEC61360.DATE
    if issubclass(value_type, datatypes.AnyURI):
        return model.DataTypeIEC61360.IRI
    return model.DataTypeIEC61360.STRING


def _concept_descriptions(definitions: TwinDefinitionSet) -> list[model.ConceptDescription]:
    result: dict[str, model.ConceptDescription] = {}
    for concept in _concepts(definitions):
        definition = concept.definition
        if definition.semantic_id in result:
            continue
        unit = definition.engineering_unit
        try:
            content = model.DataSpecificationIEC61360(
                preferred_name=model.PreferredNameTypeIEC61360(
                    dict(definition.preferred_name or {"en": _words(definition.id_short)})
                ),
                data_type=_data_type(datatypes.XSD_TYPE_CLASSES[definition.value_type], unit),
                # AASc-3a-008: an IEC 61360 definition is mandatory, at least in English.
                definition=model.DefinitionTypeIEC61360(
                    dict(definition.description or {"en": _words(definition.id_short)})
                ),
                unit=unit.symbol if unit else None,
            )
            result[definition.semantic_id] = model.ConceptDescription(
                definition.semantic_id,
                id_short=definition.id_short,
                description=model.MultiLanguageTextType(dict(definition.description))
                if definition.description
                else None,
                embedded_data_specifications=[
                    model.EmbeddedDataSpecification(global_reference(IEC61360_DATA_SPECIFICATION), content)
                ],
            )
        except (ValueError, model.AASConstraintViolation) as error:
            raise ConfigurationError(str(error), definitions.location(concept.twin_key, concept.field)) from None
    return list(result.values())

"""Submodel templates: our compact descriptions of IDTA templates, and their instantiation.

A *template description* (``submodels/*.yaml``) lists, for one submodel template, the submodel's
idShort and semanticId and, for each element the hub uses, its idShort, model type, valueType,
semanticId and cardinality (the ``SMT/Cardinality`` qualifier of IDTA *Specification of Submodel
Templates*, IDTA 01001-3-0 §5). :func:`load_template` reads one; :func:`instantiate` turns one plus
values into a ``model.Submodel`` (AAS Part 1 v3.0 §5.3.8) and rejects missing mandatory values.

Values are plain data as they come from a YAML twin definition: a scalar for a Property, ``{lang: text}``
for a MultiLanguageProperty, ``{"min": .., "max": ..}`` for a Range, ``{"path": .., "content_type": ..}``
for a File, a mapping for a SubmodelElementCollection and a list of item values for a
SubmodelElementList. Containers marked ``free_elements`` also take :class:`FreeProperty` and
:class:`FreeRange` values, whose idShort, valueType and semanticId come from the twin definition.

Left out: Blob, Operation, Capability, events and AnnotatedRelationshipElement; elements with
cardinality ``*ToMany`` inside a collection (only list items repeat); Entity, RelationshipElement and
ReferenceElement are described (their semanticIds are used by the hub's own builders) but are not
instantiated from values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from basyx.aas import model
from basyx.aas.model import datatypes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aas_server.config import format_validation_error, load_yaml
from aas_server.errors import ConfigurationError, TypeMismatchError
from aas_server.model import values as typed_values

ID_SHORT_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*[A-Za-z0-9_]$|^[A-Za-z]$"
"""idShort syntax (AAS Part 1 v3.0 §5.3.11.2, *NameType*)."""

ModelTypeName = Literal[
    "Property",
    "MultiLanguageProperty",
    "Range",
    "File",
    "ReferenceElement",
    "SubmodelElementCollection",
    "SubmodelElementList",
    "Entity",
    "RelationshipElement",
]

_VALUE_TYPED: frozenset[str] = frozenset({"Property", "Range"})
_CONTAINERS: frozenset[str] = frozenset({"SubmodelElementCollection", "Entity"})
_BUILT_BY_HUB: frozenset[str] = frozenset({"Entity", "RelationshipElement", "ReferenceElement"})
_LIST_ITEM_CLASSES: dict[str, type[model.SubmodelElement]] = {
    "Property": model.Property,
    "MultiLanguageProperty": model.MultiLanguageProperty,
    "Range": model.Range,
    "File": model.File,
    "SubmodelElementCollection": model.SubmodelElementCollection,
}


class Cardinality(enum.Enum):
    """How often an element occurs in an instance (IDTA 01001-3-0 §5, ``SMT/Cardinality``)."""

    ONE = "One"
    ZERO_TO_ONE = "ZeroToOne"
    ZERO_TO_MANY = "ZeroToMany"
    ONE_TO_MANY = "OneToMany"

    @property
    def mandatory(self) -> bool:
        return self in (Cardinality.ONE, Cardinality.ONE_TO_MANY)

    @property
    def repeatable(self) -> bool:
        return self in (Cardinality.ZERO_TO_MANY, Cardinality.ONE_TO_MANY)


class ElementTemplate(BaseModel):
    """One submodel element of a template description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_short: Annotated[str, Field(pattern=ID_SHORT_PATTERN, max_length=128)] | None = None
    """``None`` only for the item of a SubmodelElementList (AASd-120)."""
    model_type: ModelTypeName
    semantic_id: Annotated[str, Field(min_length=1, max_length=2000)]
    supplemental_semantic_ids: tuple[str, ...] = ()
    value_type: str | None = None
    """XSD name, for Property and Range."""
    cardinality: Cardinality = Cardinality.ZERO_TO_ONE
    choices: tuple[str, ...] | None = None
    """Allowed values of a Property (the template's ``FormChoices`` qualifier)."""
    elements: tuple[ElementTemplate, ...] = ()
    """Children of a SubmodelElementCollection or statements of an Entity."""
    item: ElementTemplate | None = None
    """The item of a SubmodelElementList."""
    free_elements: bool = False
    """The collection also takes properties defined by the twin definition."""

    @field_validator("value_type")
    @classmethod
    def _check_value_type(cls, value_type: str | None) -> str | None:
        if value_type is not None and value_type not in datatypes.XSD_TYPE_CLASSES:
            raise ValueError(f"unknown valueType {value_type!r} (expected an XSD name such as 'xs:double')")
        return value_type

    @model_validator(mode="after")
    def _check_shape(self) -> ElementTemplate:
        if self.model_type in _VALUE_TYPED and self.value_type is None:
            raise ValueError(f"a {self.model_type} needs a value_type")
        if self.model_type not in _VALUE_TYPED and self.value_type is not None:
            raise ValueError(f"a {self.model_type} has no value_type")
        if self.elements and self.model_type not in _CONTAINERS:
            raise ValueError(f"a {self.model_type} has no elements")
        if self.free_elements and self.model_type != "SubmodelElementCollection":
            raise ValueError("only a SubmodelElementCollection can take free elements")
        if self.choices is not None and self.model_type != "Property":
            raise ValueError("only a Property has choices")
        if self.model_type == "SubmodelElementList":
            if self.item is None:
                raise ValueError("a SubmodelElementList needs an item")
            if self.item.id_short is not None:
                raise ValueError("the item of a SubmodelElementList has no id_short (AASd-120)")
            if self.item.model_type not in _LIST_ITEM_CLASSES:
                raise ValueError(f"a SubmodelElementList of {self.item.model_type} is not supported")
        elif self.item is not None:
            raise ValueError(f"a {self.model_type} has no item")
        _check_unique_children(self.elements)
        for child in self.elements:
            if child.id_short is None:
                raise ValueError("every element of a collection needs an id_short")
        return self

    def child(self, id_short: str) -> ElementTemplate:
        """The child element (collection element or entity statement) called ``id_short``."""
        for element in self.elements:
            if element.id_short == id_short:
                return element
        raise KeyError(id_short)


def _check_unique_children(elements: Sequence[ElementTemplate]) -> None:
    seen: set[str] = set()
    for element in elements:
        if element.id_short is not None:
            if element.id_short in seen:
                raise ValueError(f"id_short {element.id_short!r} is used twice")
            seen.add(element.id_short)


class SubmodelTemplate(BaseModel):
    """A template description: one file in ``submodels/``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")]
    """The name other files use for it, e.g. ``nameplate-3.0``."""
    idta_number: Annotated[str, Field(pattern=r"^[0-9]{5}$")] | None = None
    """IDTA number, e.g. ``02006``; ``None`` for the hub's own templates."""
    version: str
    title: str
    id_short: Annotated[str, Field(pattern=ID_SHORT_PATTERN, max_length=128)]
    semantic_id: Annotated[str, Field(min_length=1, max_length=2000)]
    supplemental_semantic_ids: tuple[str, ...] = ()
    free_elements: bool = False
    elements: tuple[ElementTemplate, ...] = ()
    source: str = ""
    """The file it was loaded from (set by :func:`load_template`)."""

    @model_validator(mode="after")
    def _check_elements(self) -> SubmodelTemplate:
        _check_unique_children(self.elements)
        for element in self.elements:
            if element.id_short is None:
                raise ValueError("every element of a submodel needs an id_short")
        return self

    @property
    def label(self) -> str:
        """``IDTA 02006-3-0 Digital Nameplate ...`` for messages."""
        if self.idta_number:
            return f"IDTA {self.idta_number}-{self.version.replace('.', '-')} {self.title}"
        return f"{self.title} {self.version}"

    def element(self, id_short_path: str) -> ElementTemplate:
        """The element at a dot-separated idShort path (``EntryNode.Node``); ``KeyError`` if absent."""
        first, *rest = id_short_path.split(".")
        found = next((element for element in self.elements if element.id_short == first), None)
        if found is None:
            raise KeyError(id_short_path)
        for id_short in rest:
            found = found.child(id_short)
        return found


def load_template(path: Path) -> SubmodelTemplate:
    """Read and validate one template description; errors name ``file: field``."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigurationError("a template description must be a mapping", str(path))
    try:
        template = SubmodelTemplate.model_validate({**data, "source": str(path)})
    except ValidationError as error:
        raise ConfigurationError(format_validation_error(error, str(path))) from None
    return template


def load_templates(directory: Path) -> dict[str, SubmodelTemplate]:
    """All template descriptions (``*.yaml``) in ``directory``, by template name."""
    templates: dict[str, SubmodelTemplate] = {}
    for path in sorted(directory.glob("*.yaml")):
        template = load_template(path)
        if template.template in templates:
            raise ConfigurationError(
                f"template {template.template!r} is also described in {templates[template.template].source}",
                str(path),
            )
        templates[template.template] = template
    return templates


DEFAULT_TEMPLATES_DIRECTORY = Path(__file__).resolve().parents[2] / "submodels"
"""``submodels/`` of a source checkout."""


@dataclass(frozen=True, slots=True)
class FreeProperty:
    """A Property a twin definition adds to a ``free_elements`` container."""

    id_short: str
    value_type: str
    semantic_id: str
    value: object = None
    description: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FreeRange:
    """A Range a twin definition adds to a ``free_elements`` container."""

    id_short: str
    value_type: str
    semantic_id: str
    min: object = None
    max: object = None
    description: Mapping[str, str] | None = None


FreeElement = FreeProperty | FreeRange


def global_reference(identifier: str) -> model.ExternalReference:
    """An ExternalReference with one GlobalReference key (AAS Part 1 v3.0 §5.3.10), as used for semanticIds."""
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, identifier),))


def instantiate(
    template: SubmodelTemplate,
    submodel_id: str,
    values: Mapping[str, object],
    *,
    description: Mapping[str, str] | None = None,
) -> model.Submodel:
    """Build a ``model.Submodel`` of ``template`` from ``values``.

    Optional elements without a value are left out. Raises ``ConfigurationError`` whose ``location``
    is the idShort path of the offending value (``AddressInformation.Street``) for a missing
    mandatory value, an unknown element, or a value that does not fit.
    """
    builder = _Builder(template)
    elements = builder.children(template.elements, template.free_elements, values, "")
    try:
        return model.Submodel(
            submodel_id,
            id_short=template.id_short,
            description=model.MultiLanguageTextType(dict(description)) if description else None,
            semantic_id=global_reference(template.semantic_id),
            supplemental_semantic_id=[global_reference(item) for item in template.supplemental_semantic_ids],
            submodel_element=elements,
        )
    except (ValueError, model.AASConstraintViolation) as error:
        raise ConfigurationError(str(error), template.id_short) from None


def element_semantics(element: ElementTemplate) -> dict[str, Any]:
    """``semantic_id`` and ``supplemental_semantic_id`` keyword arguments for a basyx constructor."""
    return {
        "semantic_id": global_reference(element.semantic_id),
        "supplemental_semantic_id": [global_reference(item) for item in element.supplemental_semantic_ids],
    }


def _join(prefix: str, id_short: str) -> str:
    return f"{prefix}.{id_short}" if prefix else id_short


class _Builder:
    def __init__(self, template: SubmodelTemplate) -> None:
        self.template = template

    def fail(self, message: str, path: str) -> ConfigurationError:
        return ConfigurationError(message, path or self.template.id_short)

    def children(
        self,
        elements: Sequence[ElementTemplate],
        free_elements: bool,
        values: object,
        path: str,
    ) -> list[model.SubmodelElement]:
        if not isinstance(values, Mapping):
            raise self.fail(f"expected a mapping of idShort to value, got {type(values).__name__}", path)
        known = {element.id_short: element for element in elements}
        built: list[model.SubmodelElement] = []
        for element in elements:
            assert element.id_short is not None
            value = values.get(element.id_short)
            element_path = _join(path, element.id_short)
            if value is None:
                if element.cardinality.mandatory and element.model_type not in _BUILT_BY_HUB:
                    raise self.fail(
                        f"mandatory element missing (cardinality {element.cardinality.value} in {self.template.label})",
                        element_path,
                    )
                continue
            built.append(self.element(element, value, element_path))
        for key, value in values.items():
            if key in known:
                continue
            element_path = _join(path, str(key))
            if isinstance(value, FreeProperty | FreeRange):
                if not free_elements:
                    raise self.fail("this container takes no free elements", element_path)
                built.append(self.free(value, element_path))
            else:
                names = ", ".join(str(name) for name in known) or "none"
                raise self.fail(
                    f"not an element of {self.template.label} here (known: {names})",
                    element_path,
                )
        return built

    def element(self, element: ElementTemplate, value: object, path: str) -> model.SubmodelElement:
        if element.model_type in _BUILT_BY_HUB:
            raise self.fail(f"a {element.model_type} is built by the hub, not taken from values", path)
        try:
            return self._construct(element, value, path)
        except (ValueError, TypeError, model.AASConstraintViolation) as error:
            raise self.fail(str(error), path) from None

    def _construct(self, element: ElementTemplate, value: object, path: str) -> model.SubmodelElement:
        semantics = element_semantics(element)
        id_short = element.id_short
        match element.model_type:
            case "Property":
                assert element.value_type is not None
                scalar = self.scalar(element.value_type, value, path)
                if element.choices is not None and scalar not in element.choices:
                    raise self.fail(f"{value!r} is not one of {', '.join(element.choices)}", path)
                value_type = datatypes.XSD_TYPE_CLASSES[element.value_type]
                return model.Property(id_short, value_type, scalar, **semantics)
            case "MultiLanguageProperty":
                return model.MultiLanguageProperty(id_short, self.text(value, path), **semantics)
            case "Range":
                assert element.value_type is not None
                if not isinstance(value, Mapping) or not set(value) <= {"min", "max"}:
                    raise self.fail("a Range value is a mapping with 'min' and/or 'max'", path)
                value_type = datatypes.XSD_TYPE_CLASSES[element.value_type]
                minimum = self.scalar(element.value_type, value.get("min"), f"{path}.min")
                maximum = self.scalar(element.value_type, value.get("max"), f"{path}.max")
                return model.Range(id_short, value_type, minimum, maximum, **semantics)
            case "File":
                if not isinstance(value, Mapping) or set(value) != {"path", "content_type"}:
                    raise self.fail("a File value is a mapping with 'path' and 'content_type'", path)
                return model.File(id_short, str(value["content_type"]), str(value["path"]), **semantics)
            case "SubmodelElementCollection":
                children = self.children(element.elements, element.free_elements, value, path)
                return model.SubmodelElementCollection(id_short, children, **semantics)
            case "SubmodelElementList":
                assert element.item is not None
                return self.list(element, element.item, value, path)
        raise self.fail(f"cannot build a {element.model_type}", path)

    def list(self, element: ElementTemplate, item: ElementTemplate, value: object, path: str) -> model.SubmodelElement:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self.fail("a SubmodelElementList value is a list of item values", path)
        if item.cardinality.mandatory and not value:
            raise self.fail(f"needs at least one item (cardinality {item.cardinality.value})", path)
        items = [self.element(item, entry, f"{path}[{index}]") for index, entry in enumerate(value)]
        item_value_type = datatypes.XSD_TYPE_CLASSES[item.value_type] if item.value_type else None
        return model.SubmodelElementList(
            element.id_short,
            _LIST_ITEM_CLASSES[item.model_type],
            items,
            semantic_id_list_element=global_reference(item.semantic_id),
            value_type_list_element=item_value_type,
            **element_semantics(element),
        )

    def free(self, value: FreeElement, path: str) -> model.SubmodelElement:
        try:
            if value.value_type not in datatypes.XSD_TYPE_CLASSES:
                raise self.fail(f"unknown valueType {value.value_type!r}", path)
            value_type = datatypes.XSD_TYPE_CLASSES[value.value_type]
            description = model.MultiLanguageTextType(dict(value.description)) if value.description else None
            if isinstance(value, FreeProperty):
                return model.Property(
                    value.id_short,
                    value_type,
                    self.scalar(value.value_type, value.value, path),
                    description=description,
                    semantic_id=global_reference(value.semantic_id),
                )
            return model.Range(
                value.id_short,
                value_type,
                self.scalar(value.value_type, value.min, f"{path}.min"),
                self.scalar(value.value_type, value.max, f"{path}.max"),
                description=description,
                semantic_id=global_reference(value.semantic_id),
            )
        except (ValueError, TypeError, model.AASConstraintViolation) as error:
            raise self.fail(str(error), path) from None

    def scalar(self, value_type: str, value: object, path: str) -> Any:
        if value is None:
            return None
        try:
            return typed_values.coerce(datatypes.XSD_TYPE_CLASSES[value_type], value)
        except TypeMismatchError as error:
            raise self.fail(str(error), path) from None

    def text(self, value: object, path: str) -> model.MultiLanguageTextType:
        if not isinstance(value, Mapping) or not value:
            raise self.fail("a MultiLanguageProperty value is a mapping of language to text, e.g. {en: ...}", path)
        if not all(isinstance(key, str) and isinstance(text, str) for key, text in value.items()):
            raise self.fail("language codes and texts must be strings", path)
        return model.MultiLanguageTextType(dict(value))

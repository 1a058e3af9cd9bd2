"""Writing the ValueOnly form (IDTA-01002 Part 2, 11.4.3): ``PATCH .../$value`` for every element kind.

``plan_value_update`` checks a whole ValueOnly body against the current model before anything is
written and returns the writes it implies:

- every Property value becomes a ``PropertyWrite``, applied with ``TwinStore.write_value`` (type
  check, device write and acknowledgement for a device-bound Property, journal);
- every other element whose own value changes (MultiLanguageProperty, Range, File, Blob,
  ReferenceElement, (Annotated)RelationshipElement, BasicEventElement, the attributes of an Entity)
  becomes an ``ElementReplacement``: a copy of the element with the new value, applied with
  ``TwinStore.replace_element``;
- collections, lists, entities (``statements``), annotations and submodels recurse into their
  children: only the children named in the body change (a list takes its items by position).

Operation and Capability have no value (``400``). The plan is validated completely first, so a
malformed part fails the request before anything changed; device writes happen one by one, so a
device refusal part-way leaves the earlier writes applied (the answer names the failing element).
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass, field
from typing import Any, TypeVar

from basyx.aas import model

from aas_server.api.deserialization import check_file_reference, decode_element, decode_reference
from aas_server.api.serialization import plain_json
from aas_server.errors import InvalidRequestError
from aas_server.exchange.repairs import AASD_130_VIOLATION
from aas_server.model import values

ElementT = TypeVar("ElementT", bound=model.SubmodelElement)


@dataclass(frozen=True, slots=True)
class PropertyWrite:
    """Write ``value`` (already type-checked) to the Property at ``id_short_path``."""

    id_short_path: str
    value: Any


@dataclass(frozen=True, slots=True)
class ElementReplacement:
    """Replace the element at ``id_short_path`` by ``element`` (same idShort, new value)."""

    id_short_path: str
    element: model.SubmodelElement


@dataclass(slots=True)
class ValuePlan:
    """The writes a ValueOnly body implies: replacements first (parents before children), then Property writes."""

    replacements: list[ElementReplacement] = field(default_factory=list)
    property_writes: list[PropertyWrite] = field(default_factory=list)


_FileLike = TypeVar("_FileLike", model.Blob, model.File)


def _with_content_type(element: _FileLike, value: Any, path: str) -> tuple[_FileLike, dict[str, Any]]:
    """A copy of a Blob or File with the ``contentType`` of its value-only form (if given), and that form."""
    data = _fields(value, path, {"contentType", "value"})
    replacement = copy_element(element)
    if "contentType" in data:
        replacement.content_type = _expect(data["contentType"], str, path, "a contentType string")
    return replacement, data


def copy_element(element: ElementT) -> ElementT:
    """A deep copy of ``element`` without its parent, ready to replace it (never mutate the original)."""
    return copy.deepcopy(element, {id(element.parent): None})


def _child_path(parent_path: str, child: model.SubmodelElement, index: int | None) -> str:
    if index is not None:
        return f"{parent_path}[{index}]"
    return f"{parent_path}.{child.id_short}" if parent_path else str(child.id_short)


def _expect(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise InvalidRequestError(f"{path or '$'}: expected {what}, found {type(value).__name__}")
    return value


def _typed(value_type: Any, value: Any, path: str) -> Any:
    if value is None:
        return None
    return values.coerce(value_type, value)


def _language_texts(value: Any, path: str) -> model.MultiLanguageTextType | None:
    if value is None:
        return None
    texts: dict[str, str] = {}
    items = [value] if isinstance(value, dict) else _expect(value, list, path, "a list of {language: text}")
    for item in items:
        if isinstance(item, dict) and set(item) == {"language", "text"}:
            item = {item["language"]: item["text"]}
        for language, text in _expect(item, dict, path, "{language: text}").items():
            texts[str(language)] = str(_expect(text, str, path, "a text string"))
    if not texts:
        return None
    try:
        return model.MultiLanguageTextType(texts)
    except (ValueError, KeyError) as error:
        raise InvalidRequestError(f"{path}: {error}") from None


def _reference(value: Any, path: str) -> model.Reference | None:
    if value is None:
        return None
    try:
        return decode_reference(value)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"{path}: {error}") from None


def _fields(value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    data: dict[str, Any] = _expect(value, dict, path, "a JSON object")
    unknown = set(data) - allowed
    if unknown:
        raise InvalidRequestError(f"{path}: unknown attribute(s) {sorted(unknown)}; expected {sorted(allowed)}")
    return data


_ENTITY_TYPES = {
    "CoManagedEntity": model.EntityType.CO_MANAGED_ENTITY,
    "SelfManagedEntity": model.EntityType.SELF_MANAGED_ENTITY,
}


def _specific_asset_ids(value: Any, path: str) -> list[model.SpecificAssetId]:
    result: list[model.SpecificAssetId] = []
    for item in _expect(value, list, path, "a list of {name: value}"):
        item = _expect(item, dict, path, "{name: value}")
        pairs = [(item["name"], item["value"])] if set(item) >= {"name", "value"} else list(item.items())
        for name, asset_id in pairs:
            try:
                result.append(model.SpecificAssetId(str(name), str(_expect(asset_id, str, path, "a string"))))
            except (ValueError, model.AASConstraintViolation) as error:
                raise InvalidRequestError(f"{path}: {error}") from None
    return result


def _children_update(plan: ValuePlan, children: model.NamespaceSet[Any], value: Any, path: str) -> None:
    data: dict[str, Any] = _expect(value, dict, path, "a JSON object {idShort: value}")
    for id_short, child_value in data.items():
        try:
            child = children.get_object_by_attribute("id_short", id_short)
        except KeyError:
            raise InvalidRequestError(f"{path or '$'}: no element {id_short!r} to take a value") from None
        _element_update(plan, child, child_value, _child_path(path, child, None))


def _element_update(plan: ValuePlan, element: model.SubmodelElement, value: Any, path: str) -> None:
    where = path or "$"
    try:
        _element_update_checked(plan, element, value, path)
    except model.AASConstraintViolation as error:
        raise InvalidRequestError(f"{where}: {error}") from None
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(f"{where}: {error}") from None


def _element_update_checked(plan: ValuePlan, element: model.SubmodelElement, value: Any, path: str) -> None:
    if isinstance(element, model.Property):
        if value is None:
            raise InvalidRequestError(f"{path}: a Property value cannot be null")
        plan.property_writes.append(PropertyWrite(path, values.coerce(element.value_type, value)))
    elif isinstance(element, model.MultiLanguageProperty):
        replacement_mlp = copy_element(element)
        replacement_mlp.value = _language_texts(value, path)
        plan.replacements.append(ElementReplacement(path, replacement_mlp))
    elif isinstance(element, model.Range):
        data = _fields(value, path, {"min", "max"})
        replacement_range = copy_element(element)
        if "min" in data:
            replacement_range.min = _typed(element.value_type, data["min"], path)
        if "max" in data:
            replacement_range.max = _typed(element.value_type, data["max"], path)
        plan.replacements.append(ElementReplacement(path, replacement_range))
    elif isinstance(element, model.Blob):
        replacement_blob, data = _with_content_type(element, value, path)
        if "value" in data:
            encoded = data["value"]
            try:
                replacement_blob.value = None if encoded is None else base64.b64decode(encoded, validate=True)
            except (binascii.Error, TypeError):
                raise InvalidRequestError(f"{path}: a Blob value must be base64") from None
        plan.replacements.append(ElementReplacement(path, replacement_blob))
    elif isinstance(element, model.File):
        replacement_file, data = _with_content_type(element, value, path)
        if "value" in data:
            file_value = None if data["value"] is None else _expect(data["value"], str, path, "a path")
            if file_value is not None:
                check_file_reference(file_value, path)
            replacement_file.value = file_value
        plan.replacements.append(ElementReplacement(path, replacement_file))
    elif isinstance(element, model.ReferenceElement):
        replacement_reference = copy_element(element)
        replacement_reference.value = _reference(value, path)
        plan.replacements.append(ElementReplacement(path, replacement_reference))
    elif isinstance(element, model.RelationshipElement):
        allowed = {"first", "second"}
        if isinstance(element, model.AnnotatedRelationshipElement):
            allowed.add("annotations")
        data = _fields(value, path, allowed)
        if "first" in data or "second" in data:
            replacement_relationship = copy_element(element)
            if "first" in data:
                replacement_relationship.first = _expect(
                    _reference(data["first"], path), model.Reference, path, "a Reference"
                )
            if "second" in data:
                replacement_relationship.second = _expect(
                    _reference(data["second"], path), model.Reference, path, "a Reference"
                )
            plan.replacements.append(ElementReplacement(path, replacement_relationship))
        if "annotations" in data and isinstance(element, model.AnnotatedRelationshipElement):
            _children_update(plan, element.annotation, data["annotations"], path)
    elif isinstance(element, model.BasicEventElement):
        data = _fields(value, path, {"observed"})
        replacement_event = copy_element(element)
        if "observed" in data:
            observed = _expect(_reference(data["observed"], path), model.ModelReference, path, "a ModelReference")
            replacement_event.observed = observed
        plan.replacements.append(ElementReplacement(path, replacement_event))
    elif isinstance(element, model.Entity):
        data = _fields(value, path, {"statements", "entityType", "globalAssetId", "specificAssetIds"})
        if {"entityType", "globalAssetId", "specificAssetIds"} & set(data):
            if "entityType" in data and data["entityType"] not in _ENTITY_TYPES:
                raise InvalidRequestError(f"{path}: entityType must be one of {sorted(_ENTITY_TYPES)}")
            document = plain_json(element)
            for key in ("entityType", "globalAssetId"):
                if key in data:
                    document.pop(key, None)
                    if data[key] is not None:
                        document[key] = data[key]
            if "specificAssetIds" in data:
                document.pop("specificAssetIds", None)
                asset_ids = _specific_asset_ids(data["specificAssetIds"], path)
                if asset_ids:
                    document["specificAssetIds"] = [{"name": item.name, "value": item.value} for item in asset_ids]
            try:
                replacement_entity = decode_element(document)
            except InvalidRequestError as error:
                raise InvalidRequestError(f"{path}: {error}") from None
            plan.replacements.append(ElementReplacement(path, replacement_entity))
        if "statements" in data:
            _children_update(plan, element.statement, data["statements"], path)
    elif isinstance(element, model.SubmodelElementCollection):
        _children_update(plan, element.value, value, path)
    elif isinstance(element, model.SubmodelElementList):
        items = list(element.value)
        given = _expect(value, list, path, "a JSON array")
        if len(given) > len(items):
            raise InvalidRequestError(f"{path}: {len(given)} values for a list of {len(items)} elements")
        for index, item_value in enumerate(given):
            _element_update(plan, items[index], item_value, _child_path(path, items[index], index))
    else:
        raise InvalidRequestError(f"{path}: a {type(element).__name__} has no value to write")


def is_wrapped(element: model.SubmodelElement, value: Any) -> bool:
    """Whether ``value`` has the idShort-wrapped shape ``{"<idShort of element>": ...}``."""
    return isinstance(value, dict) and len(value) == 1 and element.id_short is not None and element.id_short in value


def plan_element_value_update(element: model.SubmodelElement, value: Any, id_short_path: str) -> ValuePlan:
    """``plan_value_update`` of an element addressed by path, in either ValueOnly form.

    ``GET .../$value`` answers ``{"<idShort>": value}``; a body of that shape that is not valid as
    the element's bare value (say ``{"Limits": {"Low": 1}}`` for a collection without a child
    ``Limits``) is read as the wrapped form. When both readings are possible the bare one wins.
    """
    try:
        return plan_value_update(element, value, id_short_path)
    except InvalidRequestError:
        if not is_wrapped(element, value):
            raise
    return plan_value_update(element, value[element.id_short], id_short_path)


def plan_value_update(target: model.Submodel | model.SubmodelElement, value: Any, id_short_path: str = "") -> ValuePlan:
    """The writes that set ``target`` (a submodel, or the element at ``id_short_path``) to ``value``."""
    check_strings(value, id_short_path or "$value")
    plan = ValuePlan()
    if isinstance(target, model.Submodel):
        _children_update(plan, target.submodel_element, value, "")
    else:
        _element_update(plan, target, value, id_short_path)
    return plan


def check_strings(value: Any, location: str) -> None:
    """``InvalidRequestError`` naming the place if a string (or a key) anywhere in ``value`` holds a character
    that AASd-130 does not allow: model bodies are refused for it, and a value could not be exported as XML
    or AASX later."""
    stack: list[tuple[Any, str]] = [(value, location)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            forbidden = AASD_130_VIOLATION.search(item)
            if forbidden is not None:
                raise InvalidRequestError(
                    f"{where}: the string holds U+{ord(forbidden.group()):04X}, which AASd-130 does not allow"
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, where))
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))

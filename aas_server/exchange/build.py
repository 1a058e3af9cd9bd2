"""basyx objects from a (repaired) document, one identifiable and one element at a time, and counting.

The document is decoded bottom-up with basyx's strict JSON constructors (the same order
``json.loads(..., cls=StrictAASFromJsonDecoder)`` uses), but each submodel element inside an element
container (``submodelElements``, ``value`` of a collection or list, ``statements``, ``annotations``,
operation variables) and each identifiable is built on its own: one that basyx refuses is dropped
and reported with its path and what it took with it, its siblings are kept. basyx's failsafe mode
is not used (it drops silently).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from basyx.aas import model

from aas_server.exchange.json_codec import FaithfulJsonDecoder
from aas_server.exchange.metamodel import SUBMODEL_ELEMENT_TYPES
from aas_server.exchange.repairs import TOP_LEVEL_KEYS
from aas_server.exchange.report import ImportReport, empty_counts, path_segment
from aas_server.exchange.roundtrip import roundtrip_problem, same_json
from aas_server.model.values import value_error_reason

_ELEMENT_CONTAINERS = {
    "Submodel": "submodelElements",
    "SubmodelElementCollection": "value",
    "SubmodelElementList": "value",
    "Entity": "statements",
    "AnnotatedRelationshipElement": "annotations",
}
_OPERATION_VARIABLES = ("inputVariables", "outputVariables", "inoutputVariables")
_TOP_LEVEL_TYPES: dict[str, type[model.Identifiable]] = {
    "assetAdministrationShells": model.AssetAdministrationShell,
    "submodels": model.Submodel,
    "conceptDescriptions": model.ConceptDescription,
}


class _Refused(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def count_document(document: dict[str, Any]) -> dict[str, int]:
    """Shells, submodels, concept descriptions and submodel elements in a document (JSON form)."""
    counts = empty_counts()
    for key, count_key in TOP_LEVEL_KEYS.items():
        items = document.get(key)
        if isinstance(items, list):
            counts[count_key] = len(items)
            if key == "submodels":
                counts["submodel_elements"] = sum(count_source_elements(item) for item in items)
    return counts


def count_source_elements(node: Any) -> int:
    """Submodel elements (objects whose ``modelType`` is one) anywhere in a part of a document."""
    total = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            model_type = current.get("modelType")
            if isinstance(model_type, str) and model_type in SUBMODEL_ELEMENT_TYPES:
                total += 1
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return total


def child_elements(element: model.Referable) -> Iterator[model.SubmodelElement]:
    """The direct child elements of a submodel or element, including operation variables."""
    if isinstance(element, model.Submodel):
        yield from element.submodel_element
    elif isinstance(element, (model.SubmodelElementCollection, model.SubmodelElementList)):
        yield from element.value
    elif isinstance(element, model.Entity):
        yield from element.statement
    elif isinstance(element, model.AnnotatedRelationshipElement):
        yield from element.annotation
    elif isinstance(element, model.Operation):
        yield from element.input_variable
        yield from element.output_variable
        yield from element.in_output_variable


def count_elements(identifiables: Iterable[model.Identifiable]) -> dict[str, int]:
    """Shells, submodels, concept descriptions and (recursively) submodel elements of basyx objects."""
    counts = empty_counts()
    for identifiable in identifiables:
        if isinstance(identifiable, model.AssetAdministrationShell):
            counts["shells"] += 1
        elif isinstance(identifiable, model.ConceptDescription):
            counts["concept_descriptions"] += 1
        elif isinstance(identifiable, model.Submodel):
            counts["submodels"] += 1
            stack: list[model.Referable] = [identifiable]
            while stack:
                children = list(child_elements(stack.pop()))
                counts["submodel_elements"] += len(children)
                stack.extend(children)
    return counts


class Builder:
    """Builds identifiables from a repaired document, dropping (and reporting) what basyx refuses."""

    decoder = FaithfulJsonDecoder

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        self._lost_below: dict[str, int] = {}
        self._taken: dict[str, model.Identifiable] = {}

    def identifiables(self, document: dict[str, Any], seen: set[str]) -> list[model.Identifiable]:
        result: list[model.Identifiable] = []
        for key, count_key in TOP_LEVEL_KEYS.items():
            items = document.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                self.report.add("dropped", key, f"{key} is not a list", {})
                continue
            for index, item in enumerate(items):
                path = f"{key}[{index}]"
                lost = {count_key: 1, "submodel_elements": count_source_elements(item) if key == "submodels" else 0}
                try:
                    built = self._decode(item, path)
                except _Refused as refused:
                    lost["submodel_elements"] -= self._already_lost(path)
                    self._drop(path, refused, lost)
                    continue
                expected: type[model.Identifiable] = _TOP_LEVEL_TYPES[key]
                if not isinstance(built, expected):
                    lost["submodel_elements"] -= self._already_lost(path)
                    self._drop(path, _Refused(path, f"not a {expected.__name__}"), lost)
                    continue
                problem = roundtrip_problem(built)
                if problem is not None:
                    lost["submodel_elements"] -= self._already_lost(path)
                    self._drop(path, _Refused(path, f"{expected.__name__} {problem}"), lost)
                    continue
                if built.id in seen:
                    lost["submodel_elements"] -= self._already_lost(path)
                    self.report.add("dropped", path, self._duplicate(built), lost)
                    continue
                seen.add(built.id)
                self._taken[built.id] = built
                result.append(built)
        return result

    def _duplicate(self, built: model.Identifiable) -> str:
        """The message for an identifiable whose id occurs earlier (ids are unique across all kinds)."""
        earlier = self._taken.get(built.id)
        if earlier is not None and type(earlier) is not type(built):
            return (
                f"identifier {built.id!r} of this {type(built).__name__} is the id of a {type(earlier).__name__}"
                " earlier in the package (identifiers are unique across kinds); left out"
            )
        if earlier is not None and same_json(earlier, built):
            return f"identifier {built.id!r} occurs earlier with the same content; the copy left out"
        return f"identifier {built.id!r} occurs earlier; duplicate left out"

    def _already_lost(self, path: str) -> int:
        return sum(count for lost_path, count in self._lost_below.items() if lost_path.startswith(path + "."))

    def _drop(self, path: str, refused: _Refused, lost: dict[str, int]) -> None:
        where = refused.path[len(path) :] if refused.path.startswith(path) else refused.path
        detail = f" (at {where.lstrip('.')})" if where else ""
        self.report.add("dropped", path, f"{refused.message}{detail}", lost)
        self._lost_below[path] = lost.get("submodel_elements", 0)

    def _decode(self, node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [self._decode(item, f"{path}[{index}]") for index, item in enumerate(node)]
        if not isinstance(node, dict):
            return node
        model_type = node.get("modelType")
        container = _ELEMENT_CONTAINERS.get(model_type) if isinstance(model_type, str) else None
        decoded: dict[str, Any] = {}
        for key, value in node.items():
            child_path = f"{path}.{path_segment(key)}"
            if key == container and isinstance(value, list):
                decoded[key] = self._elements(value, child_path, unique=model_type != "SubmodelElementList")
            elif model_type == "Operation" and key in _OPERATION_VARIABLES and isinstance(value, list):
                decoded[key] = self._operation_variables(value, child_path)
            else:
                decoded[key] = self._decode(value, child_path)
        if model_type is None:
            return decoded
        try:
            return self.decoder.object_hook(decoded)
        except (KeyError, TypeError, ValueError, NotImplementedError, model.AASConstraintViolation) as error:
            message = value_error_reason(error) if isinstance(error, NotImplementedError) else _message(error)
            if not message.startswith(str(model_type)):
                message = f"{model_type}: {message}"
            raise _Refused(path, message) from None

    def _elements(self, items: list[Any], path: str, unique: bool) -> list[Any]:
        kept: list[Any] = []
        id_shorts: set[str] | None = set() if unique else None
        for index, item in enumerate(items):
            element = self._element(item, f"{path}[{index}]", id_shorts)
            if element is not None:
                kept.append(element)
        return kept

    def _element(self, item: Any, path: str, id_shorts: set[str] | None) -> model.SubmodelElement | None:
        try:
            element = self._decode(item, path)
            if not isinstance(element, model.SubmodelElement):
                raise _Refused(path, "not a submodel element")
            if id_shorts is not None and element.id_short is not None:
                if element.id_short in id_shorts:
                    raise _Refused(path, f"idShort {element.id_short!r} occurs earlier in the same parent (AASd-022)")
                id_shorts.add(element.id_short)
        except _Refused as refused:
            lost = count_source_elements(item) - self._already_lost(path)
            self._drop(path, refused, {"submodel_elements": lost})
            return None
        return element

    def _operation_variables(self, variables: list[Any], path: str) -> list[Any]:
        kept: list[Any] = []
        for index, variable in enumerate(variables):
            variable_path = f"{path}[{index}]"
            if isinstance(variable, dict) and isinstance(variable.get("value"), dict):
                element = self._element(variable["value"], f"{variable_path}.value", None)
                if element is not None:
                    kept.append({**variable, "value": element})
            else:
                lost = count_source_elements(variable)
                self._drop(
                    variable_path,
                    _Refused(variable_path, "operation variable without a value"),
                    {"submodel_elements": lost},
                )
        return kept


def _message(error: BaseException) -> str:
    text = str(error).split(" >>> ")[0]
    prefix = "Error while trying to convert JSON object into "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text

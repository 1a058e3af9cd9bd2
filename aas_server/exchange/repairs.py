"""Repairs on the raw document (the JSON form, also for XML sources) before basyx constructs objects.

Each repair is made only where the result is determined by the source and the metamodel (IDTA-01001
Part 1 v3.1), never by guessing, and each is recorded in the :class:`ImportReport` with its path:

* ``empty-string``: an optional string attribute holding ``""`` (which no string type of the
  metamodel admits, e.g. ``assetType``, ``File/value``, ``contentType``) is removed.
* ``placeholder-reference``: a template placeholder Reference (no keys, or every key value ``""`` or
  ``EMPTY``) in an optional place (``semanticId``, ``first``/``second``, ``valueId``, list items of
  ``supplementalSemanticIds``, ``isCaseOf``, a shell's ``submodels``...) is removed.
* ``empty-lang-string``: a language string with empty text is removed from its set; an optional
  set left empty is removed.
* ``list-item-id-short``: an empty or invalid idShort of a SubmodelElementList item is removed (AASd-120:
  list items shall have no idShort).
* ``value-type-list-element``: a SubmodelElementList of Property or Range without
  ``valueTypeListElement`` gets the valueType that all its items share (AASd-109); with no items
  or differing valueTypes it is left alone (and dropped later).
* ``file-path``: a File value or thumbnail path that is a package path is normalised (``.``, ``..``,
  ``//``; relative paths in an AASX resolved against the part that holds them); one that escapes
  the package root, holds a backslash or NUL, or names a drive is dropped.
* ``identifiable-id-short``: an idShort of a shell, submodel or concept description that violates
  AASd-002 is dropped (it is optional there), reported as ``dropped``.
* ``duplicate-language``: a second language string in a language the set holds already is removed
  (basyx keeps one string per language; it would keep the last one without a word); the first is
  kept and the removed text is quoted in the report.
* ``key-type``: a Key of type ``Identifiable`` or ``Referable`` (v3.0/v3.1 key types basyx lacks) gets
  the type of the identifiable with that id in the same document (``ConceptDescription``, ...); a
  lone unresolved ``Identifiable`` key becomes a ``GlobalReference`` of an ExternalReference (a
  reference by the globally unique id); a ``Referable`` key after the first becomes
  ``SubmodelElement`` (every referable below an identifiable is one).
* ``qualifier-type``: a second Qualifier of a type the object holds already (AASd-021: a type once
  per object) is removed: as ``repaired`` when it is the same qualifier, else set aside as
  ``dropped`` with its value; the object keeps the first one and everything else.
* ``supplemental-semantic-ids``: ``supplementalSemanticIds`` without a ``semanticId`` (AASd-118) are
  removed, reported as ``dropped`` with their keys; the element keeps everything else.
* ``forbidden-characters``: a string attribute holding a character AASd-130 excludes (NUL and the
  other control characters but tab, line feed and carriage return; lone surrogates, U+FFFE, U+FFFF)
  is dropped, reported as ``dropped``; without it a required attribute is missing and its object is
  dropped too. No XML serializer could write such a string back.
"""

from __future__ import annotations

import re
from typing import Any

from basyx.aas import model

from aas_server.exchange.parts import reserved_part_reason
from aas_server.exchange.report import ImportReport, path_segment

IDENTIFIABLE_TYPES = frozenset({"AssetAdministrationShell", "Submodel", "ConceptDescription"})
TOP_LEVEL_KEYS = {
    "assetAdministrationShells": "shells",
    "submodels": "submodels",
    "conceptDescriptions": "concept_descriptions",
}

_OPTIONAL_STRINGS = frozenset(
    {
        "category",
        "assetType",
        "globalAssetId",
        "version",
        "revision",
        "templateId",
        "unit",
        "sourceOfDefinition",
        "symbol",
        "valueFormat",
        "dataType",
        "messageTopic",
        "lastUpdate",
        "minInterval",
        "maxInterval",
        "valueTypeListElement",
        "contentType",
    }
)
_OPTIONAL_STRING_VALUE_OWNERS = frozenset({"File", "DataSpecificationIec61360", "ReferenceElement"})
_OPTIONAL_REFERENCES = frozenset(
    {
        "semanticId",
        "valueId",
        "first",
        "second",
        "semanticIdListElement",
        "externalSubjectId",
        "unitId",
        "derivedFrom",
        "creator",
        "messageBroker",
    }
)
_REFERENCE_LISTS = frozenset({"supplementalSemanticIds", "isCaseOf", "refersTo"})
_OPTIONAL_LANG_STRING_SETS = frozenset({"displayName", "description", "shortName", "definition"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
AASD_130_VIOLATION = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character that Constraint AASd-130 does not allow in an attribute of data type string."""


def is_placeholder_reference(value: Any) -> bool:
    """A Reference with no keys, or whose key values are all empty or ``EMPTY`` (template placeholders)."""
    if not isinstance(value, dict) or "keys" not in value or not isinstance(value["keys"], list):
        return False
    return all(isinstance(key, dict) and key.get("value", "") in ("", "EMPTY") for key in value["keys"])


def _string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def valid_id_short(value: str) -> bool:
    try:
        model.Referable.validate_id_short(value)
    except (ValueError, model.AASConstraintViolation):
        return False
    return True


def normalise_file_reference(value: str, base_part: str | None) -> tuple[str | None, str]:
    """Normalise a File value or thumbnail path; ``(None, reason)`` if it must not be taken.

    URIs with a scheme (``https:``) and network-path references (``//host/x``) are external and
    kept as they are. A path is resolved (``.``, ``..``, empty segments); a relative one against the
    folder of ``base_part`` (the AASX part holding the document) when given. A path that climbs
    above the root, contains a backslash or NUL, starts with a drive letter, or names a part an AASX
    holds itself (``parts.reserved_part_reason``: ``/_rels/.rels``, ``/[Content_Types].xml``, ...) is refused.
    """
    if "\\" in value or "\x00" in value:
        return None, "contains a backslash or NUL character"
    if value.startswith("//"):
        return value, ""
    scheme = _SCHEME.match(value)
    if scheme:
        if len(scheme.group()) == 2:
            return None, "starts with a drive letter"
        return value, ""
    absolute = value.startswith("/")
    segments: list[str] = [] if absolute or base_part is None else base_part.split("/")[1:-1]
    for segment in value.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None, "climbs above the package root"
            segments.pop()
        else:
            segments.append(segment)
    if not segments:
        return None, "names no file"
    reserved = reserved_part_reason("/".join(segments))
    if reserved is not None:
        return None, reserved
    if absolute or base_part is not None:
        return "/" + "/".join(segments), ""
    return "/".join(segments), ""


class Repairer:
    """Runs the repairs over a document in place; ``base_part`` is the AASX part name, if any."""

    def __init__(self, report: ImportReport, base_part: str | None = None) -> None:
        self.report = report
        self.base_part = base_part
        self.identifiable_types: dict[str, str] = {}

    def document(self, document: dict[str, Any]) -> None:
        for key in TOP_LEVEL_KEYS:
            items = document.get(key)
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        model_type = item.get("modelType")
                        if isinstance(model_type, str) and model_type in IDENTIFIABLE_TYPES:
                            self.identifiable_types.setdefault(item["id"], model_type)
        for key in TOP_LEVEL_KEYS:
            items = document.get(key)
            if isinstance(items, list):
                for index, item in enumerate(items):
                    self.node(item, f"{key}[{index}]")

    def node(self, node: Any, path: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                self.node(item, f"{path}[{index}]")
        elif isinstance(node, dict):
            for key, value in list(node.items()):
                if isinstance(value, (dict, list)):
                    self.node(value, f"{path}.{path_segment(key)}")
            self._repair(node, path)

    def _repair(self, node: dict[str, Any], path: str) -> None:
        self._forbidden_characters(node, path)
        model_type = node.get("modelType")
        if not isinstance(model_type, str):
            model_type = None
        self._empty_strings(node, path, model_type)
        self._placeholder_references(node, path, model_type)
        self._key_types(node, path)
        self._supplemental_semantic_ids(node, path)
        self._qualifier_types(node, path)
        self._lang_strings(node, path, model_type)
        if model_type == "File" and isinstance(node.get("value"), str):
            self._file_path(node, "value", path, "value removed")
        thumbnail = node.get("defaultThumbnail")
        if (
            isinstance(thumbnail, dict)
            and isinstance(thumbnail.get("path"), str)
            and not self._file_path(thumbnail, "path", f"{path}.defaultThumbnail", "thumbnail removed")
        ):
            del node["defaultThumbnail"]
        if model_type == "SubmodelElementList":
            self._list_items(node, path)
        if model_type in IDENTIFIABLE_TYPES:
            id_short = node.get("idShort")
            if isinstance(id_short, str) and id_short and not valid_id_short(id_short):
                del node["idShort"]
                self.report.add(
                    "dropped",
                    f"{path}.idShort",
                    f"idShort {id_short!r} violates AASd-002; removed (optional for {model_type})",
                )

    def _forbidden_characters(self, node: dict[str, Any], path: str) -> None:
        for key, value in list(node.items()):
            forbidden = AASD_130_VIOLATION.search(value) if isinstance(value, str) else None
            if forbidden is not None:
                del node[key]
                self.report.add(
                    "dropped",
                    f"{path}.{path_segment(key)}",
                    f"string holds U+{ord(forbidden.group()):04X}, which AASd-130 does not allow; attribute removed",
                )

    def _empty_strings(self, node: dict[str, Any], path: str, model_type: Any) -> None:
        for key in [key for key, value in node.items() if value == ""]:
            optional = (
                key in _OPTIONAL_STRINGS
                or (key == "value" and model_type in _OPTIONAL_STRING_VALUE_OWNERS)
                or (key == "idShort" and model_type in IDENTIFIABLE_TYPES)
            )
            if optional:
                del node[key]
                self.report.add("repaired", f"{path}.{key}", "empty optional string removed")

    def _placeholder_references(self, node: dict[str, Any], path: str, model_type: Any) -> None:
        single = set(_OPTIONAL_REFERENCES)
        if model_type == "ReferenceElement":
            single.add("value")
        for key in [key for key in node if key in single and is_placeholder_reference(node[key])]:
            del node[key]
            self.report.add("repaired", f"{path}.{key}", "template placeholder reference (no real key) removed")
        lists = set(_REFERENCE_LISTS)
        if model_type == "AssetAdministrationShell":
            lists.add("submodels")
        for key in [key for key in node if key in lists and isinstance(node[key], list)]:
            kept = []
            for index, item in enumerate(node[key]):
                if is_placeholder_reference(item):
                    self.report.add(
                        "repaired", f"{path}.{key}[{index}]", "template placeholder reference (no real key) removed"
                    )
                else:
                    kept.append(item)
            if kept:
                node[key] = kept
            else:
                del node[key]

    def _lang_strings(self, node: dict[str, Any], path: str, model_type: Any) -> None:
        keys = set(_OPTIONAL_LANG_STRING_SETS)
        if model_type == "MultiLanguageProperty":
            keys.add("value")
        if model_type == "DataSpecificationIec61360":
            keys.add("preferredName")
        for key in [key for key in node if key in keys and isinstance(node[key], list)]:
            kept = []
            first_texts: dict[str, Any] = {}
            for index, item in enumerate(node[key]):
                language = item.get("language") if isinstance(item, dict) else None
                if isinstance(item, dict) and item.get("text") == "":
                    self.report.add("repaired", f"{path}.{key}[{index}]", "language string with empty text removed")
                elif isinstance(language, str) and language in first_texts:
                    text = item.get("text")
                    self.report.add(
                        "repaired",
                        f"{path}.{key}[{index}]",
                        f"second language string in {language!r} removed: the same text as the first"
                        if text == first_texts[language]
                        else f"second language string in {language!r} ({text!r}) removed; the first"
                        f" ({first_texts[language]!r}) is kept (one string per language)",
                    )
                else:
                    if isinstance(language, str):
                        first_texts[language] = item.get("text")
                    kept.append(item)
            if kept or key == "preferredName":
                node[key] = kept
            else:
                del node[key]
                self.report.add("repaired", f"{path}.{key}", "empty optional language string set removed")

    def _key_types(self, node: dict[str, Any], path: str) -> None:
        keys = node.get("keys")
        if not isinstance(keys, list) or node.get("type") not in ("ModelReference", "ExternalReference"):
            return
        for index, key in enumerate(keys):
            if not isinstance(key, dict) or key.get("type") not in ("Identifiable", "Referable"):
                continue
            old = key["type"]
            value = key.get("value")
            resolved = self.identifiable_types.get(value) if isinstance(value, str) else None
            key_path = f"{path}.keys[{index}].type"
            if index == 0 and resolved is not None:
                key["type"] = resolved
                self.report.add(
                    "repaired",
                    key_path,
                    f"key type {old!r} set to {resolved!r}, the type of the {value!r} in the package",
                )
            elif index == 0 and old == "Identifiable" and len(keys) == 1:
                key["type"] = "GlobalReference"
                node["type"] = "ExternalReference"
                self.report.add(
                    "repaired",
                    key_path,
                    f"key type {old!r} of {value!r} (not in the package) set to 'GlobalReference', and the reference"
                    " made an ExternalReference (a reference by the globally unique id)",
                )
            elif index > 0 and old == "Referable":
                key["type"] = "SubmodelElement"
                self.report.add(
                    "repaired", key_path, f"key type {old!r} set to 'SubmodelElement' (below an identifiable)"
                )

    def _qualifier_types(self, node: dict[str, Any], path: str) -> None:
        qualifiers = node.get("qualifiers")
        if not isinstance(qualifiers, list):
            return
        kept: list[Any] = []
        first: dict[str, Any] = {}
        for index, qualifier in enumerate(qualifiers):
            kind = qualifier.get("type") if isinstance(qualifier, dict) else None
            if not isinstance(kind, str) or kind not in first:
                if isinstance(kind, str):
                    first[kind] = qualifier
                kept.append(qualifier)
            elif qualifier == first[kind]:
                self.report.add(
                    "repaired", f"{path}.qualifiers[{index}]", f"second, identical qualifier of type {kind!r} removed"
                )
            else:
                self.report.add(
                    "dropped",
                    f"{path}.qualifiers[{index}]",
                    f"second qualifier of type {kind!r} (value {qualifier.get('value')!r}) set aside: a type once per"
                    f" object (AASd-021); the first (value {first[kind].get('value')!r}) and the object are kept",
                )
        node["qualifiers"] = kept

    def _supplemental_semantic_ids(self, node: dict[str, Any], path: str) -> None:
        supplemental = node.get("supplementalSemanticIds")
        if supplemental is None or "semanticId" in node:
            return
        del node["supplementalSemanticIds"]
        values = [
            [key.get("value") for key in reference.get("keys", []) if isinstance(key, dict)]
            if isinstance(reference, dict)
            else reference
            for reference in (supplemental if isinstance(supplemental, list) else [supplemental])
        ]
        self.report.add(
            "dropped",
            f"{path}.supplementalSemanticIds",
            f"supplementalSemanticIds {values!r} without a semanticId (AASd-118) set aside; the element is kept",
        )

    def _file_path(self, node: dict[str, Any], key: str, path: str, consequence: str) -> bool:
        original = node[key]
        normalised, reason = normalise_file_reference(original, self.base_part)
        if normalised is None:
            del node[key]
            self.report.add("dropped", f"{path}.{key}", f"file reference {original!r} {reason}; {consequence}")
            return False
        if normalised != original:
            node[key] = normalised
            self.report.add("repaired", f"{path}.{key}", f"file reference {original!r} normalised to {normalised!r}")
        return True

    def _list_items(self, node: dict[str, Any], path: str) -> None:
        items = node.get("value")
        if not isinstance(items, list):
            return
        for index, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("idShort"), str):
                id_short = item["idShort"]
                if not id_short or not valid_id_short(id_short):
                    del item["idShort"]
                    self.report.add(
                        "repaired",
                        f"{path}.value[{index}].idShort",
                        f"idShort {id_short!r} of a list item removed (AASd-120: list items have no idShort)",
                    )
        if node.get("typeValueListElement") in ("Property", "Range") and "valueTypeListElement" not in node:
            value_types = {_string_or_none(item.get("valueType")) if isinstance(item, dict) else None for item in items}
            if items and len(value_types) == 1:
                (value_type,) = value_types
                if isinstance(value_type, str) and value_type:
                    node["valueTypeListElement"] = value_type
                    self.report.add(
                        "repaired",
                        f"{path}.valueTypeListElement",
                        f"missing valueTypeListElement set to {value_type!r}, the valueType of all items (AASd-109)",
                    )

"""Untrusted AAS XML (Part 1, *XML serialization*) parsed safely and turned into the JSON document form.

The XML is parsed with entity resolution, DTD loading and network access off; a document with a
DOCTYPE is rejected, so neither external entities (XXE) nor entity expansion (billion laughs) can
happen. The element tree is then mapped to the same nested dict form the JSON serialization has
(Part 1 defines both from one metamodel: a property element becomes a key, a list property holds
one element per item, a concrete class of an abstract type is named by its element and becomes
``modelType``), so the repairs and the per-element construction are the same for both formats.
An empty ``<value/>`` of a Blob is read as no value: that is how basyx writes a Blob without one.
Namespaces ``https://admin-shell.io/aas/3/0`` and ``.../3/1`` are read; the v3.0 one is reported
as a repair.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from aas_server.errors import PackageError
from aas_server.exchange.metamodel import SUBMODEL_ELEMENT_TYPES
from aas_server.exchange.report import ImportReport, path_segment

NAMESPACE_3_1 = "https://admin-shell.io/aas/3/1"
NAMESPACE_3_0 = "https://admin-shell.io/aas/3/0"
NAMESPACES = {NAMESPACE_3_0: "3.0", NAMESPACE_3_1: "3.1"}

MODEL_TYPES = {
    name[0].lower() + name[1:]: name
    for name in (
        "AssetAdministrationShell",
        "Submodel",
        "ConceptDescription",
        "DataSpecificationIec61360",
        *sorted(SUBMODEL_ELEMENT_TYPES),
    )
}

LIST_PROPERTIES = frozenset(
    {
        "assetAdministrationShells",
        "submodels",
        "conceptDescriptions",
        "submodelElements",
        "keys",
        "displayName",
        "description",
        "supplementalSemanticIds",
        "qualifiers",
        "embeddedDataSpecifications",
        "extensions",
        "specificAssetIds",
        "isCaseOf",
        "refersTo",
        "statements",
        "annotations",
        "inputVariables",
        "outputVariables",
        "inoutputVariables",
        "preferredName",
        "shortName",
        "definition",
        "valueReferencePairs",
    }
)
_LIST_VALUE_OWNERS = frozenset({"SubmodelElementCollection", "SubmodelElementList", "MultiLanguageProperty"})
_BOOLEAN_PROPERTIES = frozenset({"orderRelevant"})
_BOOLEAN_OWNERS = frozenset({"levelType"})
_PROLOG_SCAN = 1024 * 1024
_XML_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def parse_xml(data: bytes, max_depth: int) -> etree._Element:
    """Parse untrusted XML bytes: no entities, no DTD, no network; reject a DOCTYPE or a too deep tree."""
    if _doctype_in_prolog(data[:_PROLOG_SCAN]):
        raise PackageError("XML with a DOCTYPE (DTD, entities) is not accepted in AAS packages")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise PackageError(f"not well-formed XML: {error}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise PackageError("XML with a DOCTYPE (DTD, entities) is not accepted in AAS packages")
    _check_depth(root, max_depth)
    return root


def _doctype_in_prolog(data: bytes) -> bool:
    """Whether a DOCTYPE follows the XML declaration, comments and processing instructions; one linear pass."""
    position = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while position < len(data):
        whitespace = _XML_WHITESPACE.match(data, position)
        if whitespace:
            position = whitespace.end()
        elif data.startswith(b"<?", position):
            end = data.find(b"?>", position + 2)
            if end == -1:
                return False
            position = end + 2
        elif data.startswith(b"<!--", position):
            end = data.find(b"-->", position + 4)
            if end == -1:
                return False
            position = end + 3
        else:
            return data.startswith(b"<!DOCTYPE", position)
    return False


def _check_depth(root: etree._Element, max_depth: int) -> None:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > max_depth:
            raise PackageError(f"XML nested deeper than {max_depth} elements")
        stack.extend((child, depth + 1) for child in element)


def xml_to_document(root: etree._Element, report: ImportReport) -> dict[str, Any]:
    """Map an AAS XML ``environment`` to the JSON document form; set the report's metamodel version."""
    namespace = etree.QName(root).namespace
    if namespace not in NAMESPACES:
        raise PackageError(
            f"XML root element {root.tag!r} is not in an AAS namespace ({NAMESPACE_3_0} or {NAMESPACE_3_1})"
        )
    if etree.QName(root).localname != "environment":
        raise PackageError(f"XML root element is {etree.QName(root).localname!r}, expected 'environment'")
    report.metamodel_version = NAMESPACES[namespace]
    if namespace == NAMESPACE_3_0:
        report.add("repaired", "environment", f"metamodel v3.0 namespace {NAMESPACE_3_0} read as v3.1")
    return _Converter(namespace, report).object(root, "environment", "environment")


class _Converter:
    def __init__(self, namespace: str, report: ImportReport) -> None:
        self.namespace = namespace
        self.report = report

    def _name(self, element: etree._Element, path: str) -> str | None:
        qname = etree.QName(element)
        if qname.namespace != self.namespace:
            self.report.add("dropped", path, f"element {element.tag!r} is not in the document's AAS namespace")
            return None
        return str(qname.localname)

    def object(self, element: etree._Element, owner: str, path: str) -> dict[str, Any]:
        """An object: each child element is a property."""
        result: dict[str, Any] = {}
        model_type = MODEL_TYPES.get(owner)
        for child in element:
            name = self._name(child, f"{path}.{path_segment(etree.QName(child).localname)}")
            if name is None:
                continue
            child_path = f"{path}.{path_segment(name)}"
            if name in result:
                self.report.add("dropped", child_path, f"property {name!r} given twice; the first one was taken")
                continue
            value = self.property(child, name, owner, child_path)
            if model_type == "Blob" and name == "value" and value == "":
                continue
            result[name] = value
        if model_type is not None:
            result["modelType"] = model_type
        return result

    def property(self, element: etree._Element, name: str, owner: str, path: str) -> Any:
        owner_type = MODEL_TYPES.get(owner, owner)
        if name in LIST_PROPERTIES or (name == "value" and owner_type in _LIST_VALUE_OWNERS):
            return self.items(element, path)
        if name == "dataSpecificationContent" or (name == "value" and owner == "operationVariable"):
            children = list(element)
            if len(children) != 1:
                self.report.add("dropped", path, f"{name!r} must hold exactly one object, found {len(children)}")
                return None
            return self.item(children[0], path)
        if len(element):
            return self.object(element, name, path)
        text = element.text or ""
        if name in _BOOLEAN_PROPERTIES or owner in _BOOLEAN_OWNERS:
            return _BOOLEANS.get(text.strip(), text)
        return text

    def items(self, element: etree._Element, path: str) -> list[Any]:
        result = []
        for index, child in enumerate(element):
            item = self.item(child, f"{path}[{index}]")
            if item is not None:
                result.append(item)
        return result

    def item(self, element: etree._Element, path: str) -> Any:
        name = self._name(element, path)
        if name is None:
            return None
        return self.object(element, name, path)

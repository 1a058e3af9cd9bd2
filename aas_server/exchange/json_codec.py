"""The Part 1 JSON codec of the hub: basyx's, keeping list order and lexical value forms (IDTA-01001, 5 and 9).

Every place that turns Part 1 JSON into basyx objects or back (REST bodies and answers, imports
and exports, the database, change events) uses these two classes, so what a client or a package
gave comes back the same, across restarts:

- ``FaithfulJsonDecoder`` builds a shell's ``submodels``, ``isCaseOf``, ``refersTo`` and value
  lists as ``OrderedSet`` in the order given, and ``specificAssetIds`` of asset information and
  entities as given (basyx goes through a ``set`` and loses both order and duplicates), and keeps
  the lexical form of Property, Qualifier and Extension values, Range bounds and the times of a
  BasicEventElement (``aas_server.model.lexical``).
- ``FaithfulJsonEncoder`` writes those lexical forms while the value is unchanged, and writes a
  Qualifier or Extension value that is ``0``, ``false`` or empty (basyx leaves falsy ones out).

``xml_with_lexical_forms`` puts the same lexical forms into an XML tree basyx wrote, and
``aasx_with_lexical_forms`` into the AAS part of an AASX basyx wrote. (Values of value reference
pairs are strings in basyx and kept as they are anyway.)
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from typing import Any

from basyx.aas import model
from basyx.aas.adapter.json import AASToJsonEncoder, StrictAASFromJsonDecoder
from basyx.aas.model import datatypes
from lxml import etree

from aas_server.model.lexical import OrderedSet, given_form, lexical, remember

_VALUE_ATTRIBUTES: dict[type, tuple[tuple[str, str], ...]] = {
    model.Property: (("value", "value"),),
    model.Range: (("min", "min"), ("max", "max")),
    model.Qualifier: (("value", "value"),),
    model.Extension: (("value", "value"),),
    model.BasicEventElement: (
        ("lastUpdate", "last_update"),
        ("minInterval", "min_interval"),
        ("maxInterval", "max_interval"),
    ),
}
"""For each kind with XSD-typed values: (JSON key, basyx attribute) pairs."""


def _list(dct: dict[str, object], key: str) -> list[Any]:
    items = dct.get(key)
    if not isinstance(items, list):
        raise TypeError(f"{key} must be a list, not {type(items).__name__}")
    return items


def _remember_given(obj: object, dct: dict[str, object]) -> None:
    """Keep each lexical value of ``dct`` that differs from basyx's form of the value it parsed to."""
    for key, attribute in _VALUE_ATTRIBUTES.get(type(obj), ()):
        text = dct.get(key)
        value = getattr(obj, attribute)
        given = isinstance(text, str) and value is not None and not isinstance(value, str)
        if given and datatypes.xsd_repr(value) != text:
            remember(obj, attribute, str(text))


class FaithfulJsonDecoder(StrictAASFromJsonDecoder):
    """basyx's strict decoder, keeping list order and lexical value forms (see the module docstring)."""

    @classmethod
    def _construct_asset_administration_shell(
        cls, dct: dict[str, object], object_class: Any = model.AssetAdministrationShell
    ) -> model.AssetAdministrationShell:
        shell: model.AssetAdministrationShell = super()._construct_asset_administration_shell(dct, object_class)
        if not cls.stripped and "submodels" in dct:
            shell.submodel = OrderedSet(  # type: ignore[assignment]
                cls._construct_model_reference(item, model.Submodel) for item in _list(dct, "submodels")
            )
        else:
            shell.submodel = OrderedSet()  # type: ignore[assignment]
        return shell

    @classmethod
    def _construct_asset_information(
        cls, dct: dict[str, object], object_class: Any = model.AssetInformation
    ) -> model.AssetInformation:
        information: model.AssetInformation = super()._construct_asset_information(dct, object_class)
        if "specificAssetIds" in dct:
            information.specific_asset_id = cls._specific_asset_ids(dct)
        return information

    @classmethod
    def _construct_entity(cls, dct: dict[str, object], object_class: Any = model.Entity) -> model.Entity:
        entity: model.Entity = super()._construct_entity(dct, object_class)
        if "specificAssetIds" in dct:
            entity.specific_asset_id = cls._specific_asset_ids(dct)
        return entity

    @classmethod
    def _specific_asset_ids(cls, dct: dict[str, object]) -> list[model.SpecificAssetId]:
        return [
            cls._construct_specific_asset_id(item, model.SpecificAssetId) for item in _list(dct, "specificAssetIds")
        ]

    @classmethod
    def _construct_concept_description(
        cls, dct: dict[str, object], object_class: Any = model.ConceptDescription
    ) -> model.ConceptDescription:
        concept: model.ConceptDescription = super()._construct_concept_description(dct, object_class)
        items = _list(dct, "isCaseOf") if "isCaseOf" in dct else []
        concept.is_case_of = OrderedSet(cls._construct_reference(item) for item in items)  # type: ignore[assignment]
        return concept

    @classmethod
    def _construct_value_list(cls, dct: dict[str, object]) -> model.ValueList:
        return OrderedSet(  # type: ignore[return-value]
            cls._construct_value_reference_pair(item) for item in _list(dct, "valueReferencePairs")
        )

    @classmethod
    def _construct_extension(cls, dct: dict[str, object], object_class: Any = model.Extension) -> model.Extension:
        extension: model.Extension = super()._construct_extension(dct, object_class)
        if "refersTo" in dct:
            extension.refers_to = OrderedSet(  # type: ignore[assignment]
                cls._construct_model_reference(item, model.Referable)  # type: ignore[type-abstract]
                for item in _list(dct, "refersTo")
            )
        _remember_given(extension, dct)
        return extension

    @classmethod
    def _construct_qualifier(cls, dct: dict[str, object], object_class: Any = model.Qualifier) -> model.Qualifier:
        qualifier: model.Qualifier = super()._construct_qualifier(dct, object_class)
        _remember_given(qualifier, dct)
        return qualifier

    @classmethod
    def _construct_property(cls, dct: dict[str, object], object_class: Any = model.Property) -> model.Property:
        element: model.Property = super()._construct_property(dct, object_class)
        _remember_given(element, dct)
        return element

    @classmethod
    def _construct_range(cls, dct: dict[str, object], object_class: Any = model.Range) -> model.Range:
        element: model.Range = super()._construct_range(dct, object_class)
        _remember_given(element, dct)
        return element

    @classmethod
    def _construct_basic_event_element(
        cls, dct: dict[str, object], object_class: Any = model.BasicEventElement
    ) -> model.BasicEventElement:
        element: model.BasicEventElement = super()._construct_basic_event_element(dct, object_class)
        _remember_given(element, dct)
        return element


def _given_values(obj: object, data: dict[str, object]) -> dict[str, object]:
    for key, attribute in _VALUE_ATTRIBUTES.get(type(obj), ()):
        text = given_form(obj, attribute)
        if text is not None:
            data[key] = text
        elif key not in data and getattr(obj, attribute) is not None:
            data[key] = lexical(obj, attribute)
    return data


class FaithfulJsonEncoder(AASToJsonEncoder):
    """basyx's encoder, writing the lexical value forms that were given (see the module docstring)."""

    @classmethod
    def _property_to_json(cls, obj: model.Property) -> dict[str, object]:
        return _given_values(obj, super()._property_to_json(obj))

    @classmethod
    def _range_to_json(cls, obj: model.Range) -> dict[str, object]:
        return _given_values(obj, super()._range_to_json(obj))

    @classmethod
    def _qualifier_to_json(cls, obj: model.Qualifier) -> dict[str, object]:
        return _given_values(obj, super()._qualifier_to_json(obj))

    @classmethod
    def _extension_to_json(cls, obj: model.Extension) -> dict[str, object]:
        return _given_values(obj, super()._extension_to_json(obj))

    @classmethod
    def _basic_event_element_to_json(cls, obj: model.BasicEventElement) -> dict[str, object]:
        return _given_values(obj, super()._basic_event_element_to_json(obj))


# --- XML ------------------------------------------------------------------------------------------

_NAMESPACE = "{https://admin-shell.io/aas/3/1}"
_CHILD_LISTS = ("submodelElements", "value", "statements", "annotations")
_IDENTIFIABLE_LISTS = {
    model.AssetAdministrationShell: "assetAdministrationShells",
    model.Submodel: "submodels",
    model.ConceptDescription: "conceptDescriptions",
}


def _children(node: etree._Element, name: str) -> list[etree._Element]:
    found = node.find(_NAMESPACE + name)
    return [] if found is None else [child for child in found if isinstance(child.tag, str)]


def _set_text(node: etree._Element, name: str, obj: object, attribute: str) -> None:
    """Write the given form of ``obj.<attribute>`` into the child ``name``; add it after ``valueType`` if basyx
    left it out (a Qualifier or Extension value that is ``0``, ``false`` or empty)."""
    target = node.find(_NAMESPACE + name)
    text = given_form(obj, attribute)
    if target is None and getattr(obj, attribute) is not None:
        value_type = node.find(_NAMESPACE + "valueType")
        if value_type is None:
            return
        target = etree.Element(_NAMESPACE + name)
        value_type.addnext(target)
        text = lexical(obj, attribute)
    if target is not None and text is not None:
        target.text = text


def _patch(node: etree._Element, obj: object) -> None:
    if isinstance(obj, model.HasExtension):
        for child, extension in zip(_children(node, "extensions"), obj.extension, strict=False):
            _set_text(child, "value", extension, "value")
    if isinstance(obj, model.Qualifiable):
        for child, qualifier in zip(_children(node, "qualifiers"), obj.qualifier, strict=False):
            _set_text(child, "value", qualifier, "value")
    if isinstance(obj, model.Property):
        _set_text(node, "value", obj, "value")
    elif isinstance(obj, model.Range):
        _set_text(node, "min", obj, "min")
        _set_text(node, "max", obj, "max")
    elif isinstance(obj, model.BasicEventElement):
        for key, attribute in _VALUE_ATTRIBUTES[model.BasicEventElement]:
            _set_text(node, key, obj, attribute)
    elif isinstance(obj, model.Submodel):
        _patch_all(_children(node, "submodelElements"), obj.submodel_element)
    elif isinstance(obj, model.SubmodelElementCollection | model.SubmodelElementList):
        _patch_all(_children(node, "value"), obj.value)
    elif isinstance(obj, model.Entity):
        _patch_all(_children(node, "statements"), obj.statement)
    elif isinstance(obj, model.AnnotatedRelationshipElement):
        _patch_all(_children(node, "annotations"), obj.annotation)
    elif isinstance(obj, model.Operation):
        for name, variables in (
            ("inputVariables", obj.input_variable),
            ("outputVariables", obj.output_variable),
            ("inoutputVariables", obj.in_output_variable),
        ):
            wrapped = [child.find(_NAMESPACE + "value") for child in _children(node, name)]
            _patch_all([next(iter(item)) for item in wrapped if item is not None and len(item)], variables)


def _patch_all(nodes: list[etree._Element], objects: Iterable[object]) -> None:
    for node, obj in zip(nodes, objects, strict=False):
        _patch(node, obj)


def xml_with_lexical_forms(root: etree._Element, identifiables: Iterable[model.Identifiable]) -> etree._Element:
    """Put the given lexical value forms into ``root``, an environment basyx wrote from ``identifiables``.

    basyx writes each kind of identifiable in the order of the store it was given, and each object's
    extensions, qualifiers and child elements in model order; the nodes are matched by that order
    (and by ``id`` for identifiables).
    """
    by_id = {identifiable.id: identifiable for identifiable in identifiables}
    for list_name in _IDENTIFIABLE_LISTS.values():
        for node in _children(root, list_name):
            identifier = node.findtext(_NAMESPACE + "id")
            identifiable = by_id.get(identifier or "")
            if identifiable is not None:
                _patch(node, identifiable)
    return root


def aasx_with_lexical_forms(
    package: bytes,
    part_name: str,
    identifiables: Iterable[model.Identifiable],
    part_format: str,
    encoder: type[json.JSONEncoder] = FaithfulJsonEncoder,
) -> bytes:
    """``package`` (an AASX basyx wrote) with its AAS part ``part_name`` rewritten with the given lexical forms.

    basyx writes the part with its own serializers; a JSON part is written again with ``encoder``, an
    XML part gets ``xml_with_lexical_forms``; every other member is copied as it is.
    """
    objects = list(identifiables)
    member = part_name.lstrip("/")
    source = zipfile.ZipFile(io.BytesIO(package))
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == member:
                if part_format == "json":
                    data = json.dumps(_environment(objects), cls=encoder).encode("utf-8")
                else:
                    # basyx wrote it: large Blob values need huge_tree
                    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
                    root = etree.fromstring(data, parser)
                    data = etree.tostring(xml_with_lexical_forms(root, objects), xml_declaration=True, encoding="utf-8")
            target.writestr(info, data)
    return buffer.getvalue()


def _environment(identifiables: list[model.Identifiable]) -> dict[str, list[model.Identifiable]]:
    environment: dict[str, list[model.Identifiable]] = {}
    for kind, key in _IDENTIFIABLE_LISTS.items():
        items = [item for item in identifiables if isinstance(item, kind)]
        if items:
            environment[key] = items
    return environment

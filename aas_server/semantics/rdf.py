"""The live twin as RDF (AAS Part 1 v3.0 RDF serialisation, ``admin-shell-io/aas-specs`` ``schemas/rdf``).

Pure: :func:`take_snapshot` copies what the graph needs out of a ``TwinStore`` (on the event loop,
where the store changes), :func:`build_graph` turns the snapshot into a :class:`TwinGraph` (anywhere,
typically a worker thread), and a ``TwinGraph`` serialises itself as Turtle or JSON-LD and answers
read-only SPARQL 1.1 queries. rdflib stays inside this module; callers get bytes and plain answers.

Vocabulary: classes and properties of the AAS ontology, namespace ``https://admin-shell.io/aas/3/0/``
(``aas:Submodel``, ``<.../Referable/idShort>``, ``<.../HasSemantics/semanticId>``, ...), enumeration
values as IRIs (``<.../KeyTypes/GlobalReference>``), References, Keys, LangStrings and the other
value objects as blank nodes, literals as ``xs:string`` except where the ontology says otherwise
(``SubmodelElementList/orderRelevant`` and ``LevelType/*`` ``xs:boolean``, ``Blob/value``
``xs:base64Binary``). Strings are written as simple literals (``"Temperature"``), which RDF 1.1
defines as ``xs:string``, so that a query's ``"Temperature"`` matches them (rdflib tells the two
spellings apart in triple patterns). Node IRIs:

- an identifiable: its ``id`` when that is an absolute IRI, else
  ``urn:aas-server:{shells|submodels|concept-descriptions}/{base64url(id)}``;
- a submodel element: ``urn:aas-server:submodels/{base64url(submodel id)}/submodel-elements/{idShortPath}``
  (``[``/``]`` percent-encoded): after ``urn:aas-server:`` it is the element's path in the REST API.

Our own terms (namespace ``urn:aas-server:rdf#``, prefix ``hub``; ``docs/rdf.md``): on every
submodel element ``hub:submodel`` (its submodel's node) and ``hub:idShortPath``; on every Property
with a value ``hub:value`` (the value typed by its ``valueType``, where the ontology's
``Property/value`` is the ``xs:string`` lexical form); on every Property the store keeps a value
state for, ``hub:quality`` (``good``, ``uncertain``, ``bad``), ``hub:qualityReason`` (when not
``none``) and ``hub:sourceTimestamp`` (``xs:dateTime``).

Left out: the ``aas:Environment`` node, ``rdfs:label``/``rdfs:comment`` annotations, the order of
Reference keys and of SubmodelElementList items (RDF has none; list items keep their index in
their IRI and ``hub:idShortPath``), data specification contents other than IEC 61360, and
``xs:normalizedString`` (not a v3.0 ``DataTypeDefXsd``; written as ``DataTypeDefXsd/String``).
SPARQL: no SPARQL Update, no ``SERVICE``, ``FROM``/``FROM NAMED`` or ``GRAPH`` (the twin is one
default graph and a query never leaves it).
"""

from __future__ import annotations

import base64
import enum
import io
import logging
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from typing import Literal as TypingLiteral
from urllib.parse import quote

import orjson
import regex
from basyx.aas import model
from basyx.aas.model import datatypes
from pyparsing import ParseBaseException
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import RDF, XSD
from rdflib.plugins.serializers.turtle import TurtleSerializer
from rdflib.plugins.sparql import operators
from rdflib.plugins.sparql.algebra import translateQuery
from rdflib.plugins.sparql.evaluate import evalQuery
from rdflib.plugins.sparql.parser import parseQuery, parseUpdate
from rdflib.plugins.sparql.parserutils import CompValue, Expr
from rdflib.plugins.sparql.sparql import Query, SPARQLError
from rdflib.term import Identifier, Node

from aas_server.errors import HubError, InvalidRequestError
from aas_server.model import paths
from aas_server.model.events import Quality, QualityReason
from aas_server.model.lexical import given_form, lexical
from aas_server.store.twin_store import TwinStore

AAS = Namespace("https://admin-shell.io/aas/3/0/")
"""The AAS v3.0 RDF namespace (classes, properties and enumeration values)."""

HUB = Namespace("urn:aas-server:rdf#")
"""Our own terms: live value, quality, source timestamp, idShort path (``docs/rdf.md``)."""

NODE_PREFIX = "urn:aas-server:"
"""Prefix of the node IRIs this module makes up; what follows it is a REST API path."""

PREFIXES: Mapping[str, str] = {"aas": str(AAS), "hub": str(HUB), "xs": str(XSD), "rdf": str(RDF)}
"""Prefixes bound in exports and predefined in SPARQL queries."""

RdfFormat = TypingLiteral["turtle", "json-ld"]
TURTLE: RdfFormat = "turtle"
JSON_LD: RdfFormat = "json-ld"
MEDIA_TYPES: Mapping[RdfFormat, str] = {TURTLE: "text/turtle", JSON_LD: "application/ld+json"}
SPARQL_RESULTS_JSON = "application/sparql-results+json"

_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+")
_DATA_TYPE_DEF_XSD_EXCEPTIONS = {"anyURI": "AnyUri", "normalizedString": "String"}
"""``DataTypeDefXsd`` names other than the XSD name capitalised (v3.0 has no ``NormalizedString``)."""
_CHILD_PREDICATES: tuple[tuple[type, URIRef], ...] = (
    (model.Submodel, AAS["Submodel/submodelElements"]),
    (model.SubmodelElementCollection, AAS["SubmodelElementCollection/value"]),
    (model.SubmodelElementList, AAS["SubmodelElementList/value"]),
    (model.Entity, AAS["Entity/statements"]),
    (model.AnnotatedRelationshipElement, AAS["AnnotatedRelationshipElement/annotations"]),
)


# --- snapshot ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveValue:
    """A Property's current value with its quality and source timestamp, as the store holds them."""

    value: Any
    quality: Quality
    reason: QualityReason
    source_time: datetime


@dataclass(frozen=True, slots=True)
class SubmodelSnapshot:
    """A submodel, its elements by idShort path (model order) and its Properties' live values."""

    submodel: model.Submodel
    elements: tuple[tuple[str, model.SubmodelElement], ...]
    values: Mapping[str, LiveValue]


@dataclass(frozen=True, slots=True)
class TwinSnapshot:
    """Everything :func:`build_graph` reads, detached from later changes of the store.

    The store replaces identifiables and elements instead of changing them in place, except for
    Property values and the children of containers; a snapshot therefore keeps the objects
    themselves, each submodel's element list, and copies of the live values.
    """

    shells: tuple[model.AssetAdministrationShell, ...]
    submodels: tuple[SubmodelSnapshot, ...]
    concept_descriptions: tuple[model.ConceptDescription, ...]


def live_values(store: TwinStore) -> dict[tuple[str, str], LiveValue]:
    """Copies of the value states of every Property (call on the store's event loop)."""
    return {
        key: LiveValue(state.value, state.quality, state.reason, state.source_time) for key, state in store.states()
    }


def take_snapshot(store: TwinStore, values: Mapping[tuple[str, str], LiveValue] | None = None) -> TwinSnapshot:
    """What the graph of ``store`` needs, taken at once (call on the store's event loop).

    ``values`` are the live values when the caller copied them already (:func:`live_values`).
    """
    if values is None:
        values = live_values(store)
    by_submodel: dict[str, dict[str, LiveValue]] = {}
    for (submodel_id, path), value in values.items():
        by_submodel.setdefault(submodel_id, {})[path] = value
    return TwinSnapshot(
        tuple(store.shells()),
        tuple(
            SubmodelSnapshot(submodel, tuple(paths.walk(submodel)), by_submodel.get(submodel.id, {}))
            for submodel in store.submodels()
        ),
        tuple(store.concept_descriptions()),
    )


# --- node IRIs -----------------------------------------------------------------------------------


def _base64url(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode("ascii").rstrip("=")


def _collection(identifiable: model.Identifiable) -> str:
    if isinstance(identifiable, model.AssetAdministrationShell):
        return "shells"
    if isinstance(identifiable, model.Submodel):
        return "submodels"
    return "concept-descriptions"


def identifiable_iri(identifiable: model.Identifiable) -> URIRef:
    """The node of an identifiable: its id if that is an absolute IRI, else a stable ``urn:aas-server:`` IRI."""
    if _ABSOLUTE_IRI.fullmatch(identifiable.id):
        return URIRef(identifiable.id)
    return URIRef(f"{NODE_PREFIX}{_collection(identifiable)}/{_base64url(identifiable.id)}")


def element_iri(submodel_id: str, id_short_path: str) -> URIRef:
    """The node of a submodel element: ``urn:aas-server:submodels/{base64url id}/submodel-elements/{path}``."""
    return URIRef(
        f"{NODE_PREFIX}submodels/{_base64url(submodel_id)}/submodel-elements/{quote(id_short_path, safe='.-_')}"
    )


def rest_path(node: str) -> str | None:
    """The REST API path (relative to the API base) of a node this module named, or ``None``."""
    return node[len(NODE_PREFIX) :] if node.startswith(NODE_PREFIX + "submodels/") else None


# --- graph ---------------------------------------------------------------------------------------


def _camel(member: enum.Enum) -> str:
    """``GLOBAL_REFERENCE`` → ``GlobalReference``: the enumeration value's name in the ontology."""
    return "".join(word.capitalize() for word in member.name.split("_"))


def _enumeration(enumeration: str, member: enum.Enum) -> URIRef:
    return AAS[f"{enumeration}/{_camel(member)}"]


def _data_type_def_xsd(value_type: Any) -> URIRef:
    local = datatypes.XSD_TYPE_NAMES[value_type].removeprefix("xs:")
    return AAS["DataTypeDefXsd/" + _DATA_TYPE_DEF_XSD_EXCEPTIONS.get(local, local[0].upper() + local[1:])]


def _string(text: str) -> Literal:
    """A simple literal: RDF 1.1 makes it an ``xs:string``, and rdflib matches it against ``"text"`` in queries."""
    return Literal(text)


def _lexical(value: Any) -> str:
    return str(datatypes.xsd_repr(value))


def _typed(value: Any, value_type: Any, given: str | None = None) -> Literal:
    """``value`` typed by its XSD type, in XSD lexical form (``given``: the form the value was given in; rdflib's
    normalisation would write ``INF`` as ``inf``)."""
    local = datatypes.XSD_TYPE_NAMES[value_type].removeprefix("xs:")
    if local == "string":
        return _string(value)
    return Literal(given or _lexical(value), datatype=XSD[local], normalize=False)


class _GraphBuilder:
    """Adds the triples of identifiables and their parts to one graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.add = graph.add

    def _node(self, kind: str) -> BNode:
        node = BNode()
        self.add((node, RDF.type, AAS[kind]))
        return node

    def _text(self, subject: Node, predicate: str, text: str | None) -> None:
        if text is not None:
            self.add((subject, AAS[predicate], _string(text)))

    def reference(self, reference: model.Reference) -> BNode:
        node = self._node("Reference")
        kind = "ModelReference" if isinstance(reference, model.ModelReference) else "ExternalReference"
        self.add((node, AAS["Reference/type"], AAS[f"ReferenceTypes/{kind}"]))
        for key in reference.key:
            key_node = self._node("Key")
            self.add((node, AAS["Reference/keys"], key_node))
            self.add((key_node, AAS["Key/type"], _enumeration("KeyTypes", key.type)))
            self.add((key_node, AAS["Key/value"], _string(key.value)))
        if reference.referred_semantic_id is not None:
            self.add((node, AAS["Reference/referredSemanticId"], self.reference(reference.referred_semantic_id)))
        return node

    def _references(self, subject: Node, predicate: str, references: Iterable[model.Reference]) -> None:
        for reference in references:
            self.add((subject, AAS[predicate], self.reference(reference)))

    def _optional_reference(self, subject: Node, predicate: str, reference: model.Reference | None) -> None:
        if reference is not None:
            self.add((subject, AAS[predicate], self.reference(reference)))

    def _lang_strings(self, subject: Node, predicate: str, kind: str, texts: Mapping[str, str] | None) -> None:
        for language, text in (texts or {}).items():
            node = self._node(kind)
            self.add((subject, AAS[predicate], node))
            self.add((node, AAS["AbstractLangString/language"], _string(language)))
            self.add((node, AAS["AbstractLangString/text"], _string(text)))

    def _has_semantics(self, subject: Node, item: model.HasSemantics) -> None:
        self._optional_reference(subject, "HasSemantics/semanticId", item.semantic_id)
        self._references(subject, "HasSemantics/supplementalSemanticIds", item.supplemental_semantic_id)

    def _has_data_specification(self, subject: Node, item: model.HasDataSpecification) -> None:
        for embedded in item.embedded_data_specifications:
            node = self._node("EmbeddedDataSpecification")
            self.add((subject, AAS["HasDataSpecification/embeddedDataSpecifications"], node))
            self.add(
                (node, AAS["EmbeddedDataSpecification/dataSpecification"], self.reference(embedded.data_specification))
            )
            content = embedded.data_specification_content
            if isinstance(content, model.DataSpecificationIEC61360):
                self.add((node, AAS["EmbeddedDataSpecification/dataSpecificationContent"], self._iec61360(content)))

    def _iec61360(self, content: model.DataSpecificationIEC61360) -> BNode:
        node = self._node("DataSpecificationIec61360")
        prefix = "DataSpecificationIec61360/"
        self._lang_strings(
            node, prefix + "preferredName", "LangStringPreferredNameTypeIec61360", content.preferred_name
        )
        self._lang_strings(node, prefix + "shortName", "LangStringShortNameTypeIec61360", content.short_name)
        self._text(node, prefix + "unit", content.unit)
        self._optional_reference(node, prefix + "unitId", content.unit_id)
        self._text(node, prefix + "sourceOfDefinition", content.source_of_definition)
        self._text(node, prefix + "symbol", content.symbol)
        if content.data_type is not None:
            self.add((node, AAS[prefix + "dataType"], _enumeration("DataTypeIec61360", content.data_type)))
        self._lang_strings(node, prefix + "definition", "LangStringDefinitionTypeIec61360", content.definition)
        self._text(node, prefix + "valueFormat", content.value_format)
        if content.value_list:
            value_list = self._node("ValueList")
            self.add((node, AAS[prefix + "valueList"], value_list))
            for pair in content.value_list:
                pair_node = self._node("ValueReferencePair")
                self.add((value_list, AAS["ValueList/valueReferencePairs"], pair_node))
                self._text(pair_node, "ValueReferencePair/value", pair.value)
                self._optional_reference(pair_node, "ValueReferencePair/valueId", pair.value_id)
        self._text(node, prefix + "value", content.value)
        if content.level_types:
            level_type = self._node("LevelType")
            self.add((node, AAS[prefix + "levelType"], level_type))
            for level in model.IEC61360LevelType:
                self.add((level_type, AAS[f"LevelType/{level.name.lower()}"], Literal(level in content.level_types)))
        return node

    def _has_extensions(self, subject: Node, item: model.HasExtension) -> None:
        for extension in item.extension:
            node = self._node("Extension")
            self.add((subject, AAS["HasExtensions/extensions"], node))
            self._has_semantics(node, extension)
            self._text(node, "Extension/name", extension.name)
            if extension.value_type is not None:
                self.add((node, AAS["Extension/valueType"], _data_type_def_xsd(extension.value_type)))
            if extension.value is not None:
                self._text(node, "Extension/value", lexical(extension, "value"))
            self._references(node, "Extension/refersTo", extension.refers_to)

    def _qualifiers(self, subject: Node, item: model.Qualifiable) -> None:
        for qualifier in item.qualifier:
            node = self._node("Qualifier")
            self.add((subject, AAS["Qualifiable/qualifiers"], node))
            self._has_semantics(node, qualifier)
            self.add((node, AAS["Qualifier/kind"], _enumeration("QualifierKind", qualifier.kind)))
            self._text(node, "Qualifier/type", qualifier.type)
            self.add((node, AAS["Qualifier/valueType"], _data_type_def_xsd(qualifier.value_type)))
            if qualifier.value is not None:
                self._text(node, "Qualifier/value", lexical(qualifier, "value"))
            self._optional_reference(node, "Qualifier/valueId", qualifier.value_id)

    def _referable(self, subject: Node, item: model.Referable, in_list: bool = False) -> None:
        """``in_list``: an item of a SubmodelElementList has no idShort (AASd-120; basyx invents one on loading)."""
        self._has_extensions(subject, item)
        self._text(subject, "Referable/category", item.category)
        if not in_list:
            self._text(subject, "Referable/idShort", item.id_short)
        self._lang_strings(subject, "Referable/displayName", "LangStringNameType", item.display_name)
        self._lang_strings(subject, "Referable/description", "LangStringTextType", item.description)

    def _identifiable(self, subject: URIRef, item: model.Identifiable, kind: str) -> None:
        self.add((subject, RDF.type, AAS[kind]))
        self._referable(subject, item)
        administration = item.administration
        if administration is not None:
            node = self._node("AdministrativeInformation")
            self.add((subject, AAS["Identifiable/administration"], node))
            self._has_data_specification(node, administration)
            self._text(node, "AdministrativeInformation/version", administration.version)
            self._text(node, "AdministrativeInformation/revision", administration.revision)
            self._optional_reference(node, "AdministrativeInformation/creator", administration.creator)
            self._text(node, "AdministrativeInformation/templateId", administration.template_id)
        self._text(subject, "Identifiable/id", item.id)

    def _specific_asset_ids(self, subject: Node, predicate: str, asset_ids: Iterable[model.SpecificAssetId]) -> None:
        for asset_id in asset_ids:
            node = self._node("SpecificAssetId")
            self.add((subject, AAS[predicate], node))
            self._has_semantics(node, asset_id)
            self._text(node, "SpecificAssetId/name", asset_id.name)
            self._text(node, "SpecificAssetId/value", asset_id.value)
            self._optional_reference(node, "SpecificAssetId/externalSubjectId", asset_id.external_subject_id)

    def shell(self, shell: model.AssetAdministrationShell) -> None:
        subject = identifiable_iri(shell)
        self._identifiable(subject, shell, "AssetAdministrationShell")
        self._has_data_specification(subject, shell)
        self._optional_reference(subject, "AssetAdministrationShell/derivedFrom", shell.derived_from)
        information = shell.asset_information
        node = self._node("AssetInformation")
        self.add((subject, AAS["AssetAdministrationShell/assetInformation"], node))
        self.add((node, AAS["AssetInformation/assetKind"], _enumeration("AssetKind", information.asset_kind)))
        self._text(node, "AssetInformation/globalAssetId", information.global_asset_id)
        self._specific_asset_ids(node, "AssetInformation/specificAssetIds", information.specific_asset_id)
        self._text(node, "AssetInformation/assetType", information.asset_type)
        thumbnail = information.default_thumbnail
        if thumbnail is not None:
            resource = self._node("Resource")
            self.add((node, AAS["AssetInformation/defaultThumbnail"], resource))
            self._text(resource, "Resource/path", thumbnail.path)
            self._text(resource, "Resource/contentType", thumbnail.content_type)
        self._references(subject, "AssetAdministrationShell/submodels", shell.submodel)

    def concept_description(self, concept_description: model.ConceptDescription) -> None:
        subject = identifiable_iri(concept_description)
        self._identifiable(subject, concept_description, "ConceptDescription")
        self._has_data_specification(subject, concept_description)
        self._references(subject, "ConceptDescription/isCaseOf", concept_description.is_case_of)

    def submodel(self, snapshot: SubmodelSnapshot) -> None:
        submodel = snapshot.submodel
        subject = identifiable_iri(submodel)
        self._identifiable(subject, submodel, "Submodel")
        self.add((subject, AAS["HasKind/kind"], _enumeration("ModellingKind", submodel.kind)))
        self._has_semantics(subject, submodel)
        self._qualifiers(subject, submodel)
        self._has_data_specification(subject, submodel)
        containers: dict[str, tuple[Node, model.Submodel | model.SubmodelElement]] = {"": (subject, submodel)}
        for path, element in snapshot.elements:
            node = element_iri(submodel.id, path)
            containers[path] = (node, element)
            parent_node, parent = containers[_parent_path(path)]
            self.add((parent_node, _child_predicate(parent), node))
            self.add((node, HUB.submodel, subject))
            self.add((node, HUB.idShortPath, _string(path)))
            self.element(node, element, snapshot.values.get(path), isinstance(parent, model.SubmodelElementList))

    def element(
        self, subject: Node, element: model.SubmodelElement, live: LiveValue | None, in_list: bool = False
    ) -> None:
        """The element's own triples; its children only for elements outside the store's tree (blank nodes)."""
        self.add((subject, RDF.type, AAS[type(element).__name__]))
        self._referable(subject, element, in_list)
        self._has_semantics(subject, element)
        self._qualifiers(subject, element)
        self._has_data_specification(subject, element)
        if isinstance(element, model.Property):
            self._property(subject, element, live)
        elif isinstance(element, model.MultiLanguageProperty):
            self._lang_strings(subject, "MultiLanguageProperty/value", "LangStringTextType", element.value)
            self._optional_reference(subject, "MultiLanguageProperty/valueId", element.value_id)
        elif isinstance(element, model.Range):
            self.add((subject, AAS["Range/valueType"], _data_type_def_xsd(element.value_type)))
            if element.min is not None:
                self._text(subject, "Range/min", lexical(element, "min"))
            if element.max is not None:
                self._text(subject, "Range/max", lexical(element, "max"))
        elif isinstance(element, model.Blob):
            self._text(subject, "Blob/contentType", element.content_type)
            if element.value is not None:
                encoded = base64.b64encode(element.value).decode("ascii")
                self.add((subject, AAS["Blob/value"], Literal(encoded, datatype=XSD.base64Binary, normalize=False)))
        elif isinstance(element, model.File):
            self._text(subject, "File/contentType", element.content_type)
            self._text(subject, "File/value", element.value)
        elif isinstance(element, model.ReferenceElement):
            self._optional_reference(subject, "ReferenceElement/value", element.value)
        elif isinstance(element, model.RelationshipElement):
            self._optional_reference(subject, "RelationshipElement/first", element.first)
            self._optional_reference(subject, "RelationshipElement/second", element.second)
        elif isinstance(element, model.Entity):
            if element.entity_type is not None:
                self.add((subject, AAS["Entity/entityType"], _enumeration("EntityType", element.entity_type)))
            self._text(subject, "Entity/globalAssetId", element.global_asset_id)
            self._specific_asset_ids(subject, "Entity/specificAssetIds", element.specific_asset_id)
        elif isinstance(element, model.BasicEventElement):
            self._event(subject, element)
        elif isinstance(element, model.Operation):
            self._operation(subject, element)
        elif isinstance(element, model.SubmodelElementList):
            self._list(subject, element)
        if isinstance(subject, BNode):
            for child in paths.children_of(element) or ():
                node = BNode()
                self.add((subject, _child_predicate(element), node))
                self.element(node, child, None, isinstance(element, model.SubmodelElementList))

    def _property(self, subject: Node, element: model.Property, live: LiveValue | None) -> None:
        self.add((subject, AAS["Property/valueType"], _data_type_def_xsd(element.value_type)))
        value = element.value if live is None else live.value
        if value is not None:
            given = given_form(element, "value") if value == element.value else None
            self._text(subject, "Property/value", given or _lexical(value))
            self.add((subject, HUB.value, _typed(value, element.value_type, given)))
        self._optional_reference(subject, "Property/valueId", element.value_id)
        if live is not None:
            self.add((subject, HUB.quality, _string(live.quality.value)))
            if live.reason is not QualityReason.NONE:
                self.add((subject, HUB.qualityReason, _string(live.reason.value)))
            self.add((subject, HUB.sourceTimestamp, Literal(live.source_time, datatype=XSD.dateTime)))

    def _event(self, subject: Node, element: model.BasicEventElement) -> None:
        prefix = "BasicEventElement/"
        self.add((subject, AAS[prefix + "observed"], self.reference(element.observed)))
        self.add((subject, AAS[prefix + "direction"], _enumeration("Direction", element.direction)))
        self.add((subject, AAS[prefix + "state"], _enumeration("StateOfEvent", element.state)))
        self._text(subject, prefix + "messageTopic", element.message_topic)
        self._optional_reference(subject, prefix + "messageBroker", element.message_broker)
        for name, moment in (
            ("lastUpdate", element.last_update),
            ("minInterval", element.min_interval),
            ("maxInterval", element.max_interval),
        ):
            if moment is not None:
                self._text(subject, prefix + name, _lexical(moment))

    def _operation(self, subject: Node, element: model.Operation) -> None:
        for name, variables in (
            ("inputVariables", element.input_variable),
            ("outputVariables", element.output_variable),
            ("inoutputVariables", element.in_output_variable),
        ):
            for variable in variables:
                node = self._node("OperationVariable")
                self.add((subject, AAS[f"Operation/{name}"], node))
                value = BNode()
                self.add((node, AAS["OperationVariable/value"], value))
                self.element(value, variable, None)

    def _list(self, subject: Node, element: model.SubmodelElementList[Any]) -> None:
        prefix = "SubmodelElementList/"
        self.add((subject, AAS[prefix + "orderRelevant"], Literal(element.order_relevant)))
        self._optional_reference(subject, prefix + "semanticIdListElement", element.semantic_id_list_element)
        self.add(
            (
                subject,
                AAS[prefix + "typeValueListElement"],
                AAS[f"AasSubmodelElements/{element.type_value_list_element.__name__}"],
            )
        )
        if element.value_type_list_element is not None:
            self.add(
                (subject, AAS[prefix + "valueTypeListElement"], _data_type_def_xsd(element.value_type_list_element))
            )


def _parent_path(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    dot = path.rfind(".")
    return path[:dot] if dot >= 0 else ""


def _child_predicate(container: object) -> URIRef:
    for kind, predicate in _CHILD_PREDICATES:
        if isinstance(container, kind):
            return predicate
    raise TypeError(f"a {type(container).__name__} has no child elements")


def new_graph() -> Graph:
    """An empty graph with the ``aas``, ``hub``, ``xs`` and ``rdf`` prefixes bound."""
    graph = Graph(bind_namespaces="none")
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace)
    return graph


def build_graph(snapshot: TwinSnapshot) -> TwinGraph:
    """The RDF graph of a snapshot (pure; runs in a worker thread)."""
    graph = new_graph()
    builder = _GraphBuilder(graph)
    for shell in snapshot.shells:
        builder.shell(shell)
    for submodel in snapshot.submodels:
        builder.submodel(submodel)
    for concept_description in snapshot.concept_descriptions:
        builder.concept_description(concept_description)
    return TwinGraph(graph)


# --- SPARQL --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """How far one SPARQL query may go.

    A query runs in a worker thread that cannot be killed. ``time_budget`` (seconds) is checked
    cooperatively, at every triple a triple pattern or property path yields and at every result
    row; past it the query stops with :class:`QueryTimeoutError`. ``REGEX`` and ``REPLACE`` run on
    the ``regex`` engine with the rest of the budget as their timeout and without holding the GIL,
    so a pathological pattern (``^(a|aa)+$``) stalls no other client and stops after at most the
    budget (``regex`` counts its timeout in CPU time: on a loaded machine that ends a little later).
    Other work between two triples (sorting, joining two sub-results already in memory) runs on
    until the next check: it is bounded by the size of the graph, not by the budget, and yields
    the GIL like any Python code. ``max_query_length`` and ``max_nesting`` (brackets, braces and
    parentheses inside each other) bound parsing, ``max_string_length`` every string ``CONCAT`` or
    ``REPLACE`` builds, ``max_rows`` the rows of a SELECT and ``max_triples`` the graph of a
    CONSTRUCT or DESCRIBE.
    """

    time_budget: float = 5.0
    max_query_length: int = 16_384
    max_nesting: int = 16
    max_string_length: int = 1_048_576
    max_rows: int = 10_000
    max_triples: int = 100_000


DEFAULT_LIMITS = QueryLimits()


class QueryTimeoutError(HubError):
    """A SPARQL query used up its time budget."""


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """The serialised answer to a query: SPARQL JSON results (SELECT, ASK) or an RDF graph (CONSTRUCT, DESCRIBE)."""

    form: str
    body: bytes
    content_type: str
    size: int
    """Rows of a SELECT, triples of a CONSTRUCT or DESCRIBE, 1 for ASK."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    budget: float

    def check(self) -> None:
        self.remaining()

    def remaining(self) -> float:
        """Seconds left; :class:`QueryTimeoutError` when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.exhausted()
        return left

    def exhausted(self) -> QueryTimeoutError:
        return QueryTimeoutError(f"the query ran out of its time budget of {self.budget:g} s; narrow it")


class _BudgetedGraph(Graph):
    """A read-only view of a built graph whose triple lookups honour a time budget."""

    def __init__(self, base: Graph, budget: _Budget) -> None:
        super().__init__(store=base.store, identifier=base.identifier, namespace_manager=base.namespace_manager)
        self._budget = budget

    def triples(self, triple: Any) -> Iterator[Any]:  # type: ignore[override]
        check = self._budget.check
        check()
        for found in super().triples(triple):
            check()
            yield found


def _parse_error(error: ParseBaseException) -> str:
    return f"malformed SPARQL query: line {error.lineno}, column {error.col}: {error.msg}"


def _walk_algebra(part: object) -> Iterator[CompValue]:
    if isinstance(part, CompValue):
        yield part
        for value in part.values():
            yield from _walk_algebra(value)
    elif isinstance(part, list | tuple):
        for item in part:
            yield from _walk_algebra(item)


_QUERY_TOKEN = re.compile(
    r"'''(?:[^'\\]|\\.|'(?!''))*(?:'''|\Z)"
    r'|"""(?:[^"\\]|\\.|"(?!""))*(?:"""|\Z)'
    r"|'(?:[^'\\\n]|\\.)*'?"
    r'|"(?:[^"\\\n]|\\.)*"?'
    r'|<[^<>"{}|^`\\\x00-\x20]*>'
    r"|#[^\n]*"
    r"|[^'\"<#(){}\[\]]+"
    r"|.",
    re.DOTALL,
)
"""String literals (an unclosed one runs to the end of its line or of the text, which keeps the scan
linear), IRIs, comments, runs of other characters, or one character: brackets count only alone."""


def check_query_length(text: str, limits: QueryLimits = DEFAULT_LIMITS) -> None:
    """``InvalidRequestError`` for a query longer than ``limits.max_query_length`` characters, or
    whose brackets, braces and parentheses nest deeper than ``limits.max_nesting`` (rdflib's parser
    recurses about 30 Python frames a level and fails with ``RecursionError`` near 30 levels)."""
    if len(text) > limits.max_query_length:
        raise InvalidRequestError(
            f"the query has {len(text)} characters; at most {limits.max_query_length} are accepted"
        )
    depth = 0
    for token in _QUERY_TOKEN.finditer(text):
        character = token.group()
        if character in ("(", "{", "["):
            depth += 1
            if depth > limits.max_nesting:
                start = token.start()
                line, column = text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
                raise InvalidRequestError(
                    f"the query nests brackets, braces and parentheses deeper than {limits.max_nesting} levels "
                    f"(line {line}, column {column}); flatten it"
                )
        elif character in (")", "}", "]"):
            depth = max(depth - 1, 0)


_TOO_DEEP = "the query is nested too deeply to be parsed or evaluated; flatten it"


def prepare_query(text: str, limits: QueryLimits = DEFAULT_LIMITS) -> Query:
    """Parse a read-only query; ``InvalidRequestError`` for updates, malformed and unsupported queries."""
    check_query_length(text, limits)
    try:
        return _prepare_query(text)
    except RecursionError:
        raise InvalidRequestError(_TOO_DEEP) from None


def _prepare_query(text: str) -> Query:
    try:
        parsed = parseQuery(text)
    except ParseBaseException as error:
        try:
            parseUpdate(text)
        except ParseBaseException:
            raise InvalidRequestError(_parse_error(error)) from None
        raise InvalidRequestError(
            "SPARQL Update is not accepted: this endpoint is read-only (SELECT, ASK, CONSTRUCT, DESCRIBE)"
        ) from None
    try:
        query = translateQuery(parsed, initNs=dict(PREFIXES))
    except Exception as error:  # rdflib reports unknown prefixes and the like as plain Exception
        raise InvalidRequestError(f"the query cannot be evaluated: {error}") from None
    if query.algebra.get("datasetClause"):
        raise InvalidRequestError("FROM and FROM NAMED are not supported: a query reads the live twin only")
    for part in _walk_algebra(query.algebra):
        if part.name == "ServiceGraphPattern":
            raise InvalidRequestError("SERVICE is not supported: a query never leaves this server")
        if part.name == "Graph":
            raise InvalidRequestError("GRAPH is not supported: the twin is one default graph")
    return query


def _term_json(term: Identifier) -> dict[str, str]:
    if isinstance(term, URIRef):
        return {"type": "uri", "value": str(term)}
    if isinstance(term, BNode):
        return {"type": "bnode", "value": str(term)}
    if isinstance(term, Literal):
        result = {"type": "literal", "value": str(term)}
        if term.language:
            result["xml:lang"] = term.language
        elif term.datatype is not None:
            result["datatype"] = str(term.datatype)
        return result
    raise TypeError(f"not an RDF term: {term!r}")


@dataclass(slots=True)
class TwinGraph:
    """The RDF graph of one snapshot of the twin; never changed once built, so threads may share it."""

    graph: Graph
    _serialised: dict[RdfFormat, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self.graph)

    def serialize(self, rdf_format: RdfFormat) -> bytes:
        """The graph as Turtle or JSON-LD (UTF-8), built once per format."""
        with self._lock:
            body = self._serialised.get(rdf_format)
            if body is None:
                body = serialize(self.graph, rdf_format)
                self._serialised[rdf_format] = body
            return body

    def query(self, text: str, limits: QueryLimits = DEFAULT_LIMITS, graph_format: RdfFormat = TURTLE) -> QueryAnswer:
        """Answer a read-only SPARQL 1.1 query within ``limits``.

        SELECT and ASK answer SPARQL 1.1 Query Results JSON; CONSTRUCT and DESCRIBE a graph in
        ``graph_format``. Raises ``InvalidRequestError`` (malformed, update, unsupported, result too
        big) or :class:`QueryTimeoutError`.
        """
        budget = _Budget(time.monotonic() + limits.time_budget, limits.time_budget)
        query = prepare_query(text, limits)
        _bound_builtins(query, limits, budget)
        view = _BudgetedGraph(self.graph, budget)
        try:
            outcome = evalQuery(view, query)
            form = str(outcome["type_"])
            if form == "SELECT":
                return _select_answer(outcome, limits, budget)
            if form == "ASK":
                return QueryAnswer(
                    form, orjson.dumps({"head": {}, "boolean": bool(outcome["askAnswer"])}), SPARQL_RESULTS_JSON, 1
                )
            result: Graph = outcome["graph"]
            if len(result) > limits.max_triples:
                raise InvalidRequestError(
                    f"the {form} result has {len(result)} triples; at most {limits.max_triples} are answered; "
                    "narrow the query"
                )
            for prefix, namespace in PREFIXES.items():
                result.bind(prefix, namespace)
            return QueryAnswer(form, serialize(result, graph_format), MEDIA_TYPES[graph_format], len(result))
        except SPARQLError as error:
            raise InvalidRequestError(f"the query failed: {error}") from None
        except RecursionError:
            raise InvalidRequestError(_TOO_DEEP) from None
        except HubError:
            raise
        except Exception as error:  # rdflib's builtins and serialisers fail on odd terms with plain Python errors
            raise InvalidRequestError(_cannot_evaluate(error)) from None


def _cannot_evaluate(error: Exception) -> str:
    """The message of a query that rdflib failed on (``1e308*10`` rounded, ``NaN`` floored, a date past 9999,
    an IRI with a space in a CONSTRUCT, ...): the query's fault, not the server's."""
    reason = str(error) or type(error).__name__
    if len(reason) > 200:
        reason = reason[:200] + "..."
    return f"the query cannot be evaluated: {type(error).__name__}: {reason}"


class _IllTypedLiteralFilter(logging.Filter):
    """Leaves out rdflib's warning, with a traceback, about each literal whose lexical form does not fit its
    datatype (``"a"^^xsd:int``). Such literals are valid RDF and SPARQL treats them as expression errors; a
    query (or a stored value) holding many of them would otherwise write a traceback per literal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to convert Literal lexical form to value")


logging.getLogger("rdflib.term").addFilter(_IllTypedLiteralFilter())


_XPATH_FLAGS = {"i": regex.IGNORECASE, "s": regex.DOTALL, "m": regex.MULTILINE, "x": regex.VERBOSE}
"""XPath ``fn:matches`` flags (XPath and XQuery Functions 3.1, 5.6.1) as ``regex`` flags; ``q`` apart."""


def _compile(pattern: str, flags: Any) -> Any:
    """``pattern`` compiled with the SPARQL ``flags`` argument (``None`` or a string literal)."""
    names = "" if flags is None else str(operators.string(flags))
    unknown = sorted(set(names) - {*_XPATH_FLAGS, "q"})
    if unknown:
        raise InvalidRequestError(f"REGEX/REPLACE flags {names!r}: unknown flag {unknown[0]!r} (i, s, m, x, q)")
    compiled_flags = regex.VERSION0
    for name in names:
        compiled_flags |= _XPATH_FLAGS.get(name, 0)
    try:
        return regex.compile(regex.escape(pattern) if "q" in names else pattern, compiled_flags)
    except regex.error as error:
        raise InvalidRequestError(f"REGEX/REPLACE pattern {pattern[:200]!r} is not valid: {error}") from None


def _bound_builtins(query: Query, limits: QueryLimits, budget: _Budget) -> None:
    """Give ``REGEX``, ``REPLACE`` and ``CONCAT`` in ``query`` the time budget and the string limit.

    rdflib evaluates ``REGEX`` and ``REPLACE`` with ``re``, which holds the GIL for as long as a
    backtracking pattern runs (``^(a+)+$`` doubles its time with each character of the text); here
    they run on ``regex`` with the rest of the budget as timeout and the GIL released.
    """

    def too_long(built: int) -> InvalidRequestError:
        return InvalidRequestError(
            f"the query builds a string of {built} characters; at most {limits.max_string_length} are allowed"
        )

    def search(expr: Expr, context: Any) -> Literal:
        text = operators.string(expr.text)
        compiled = _compile(str(operators.string(expr.pattern)), expr.flags)
        try:
            found = compiled.search(str(text), timeout=budget.remaining(), concurrent=True)
        except TimeoutError:
            raise budget.exhausted() from None
        return Literal(found is not None)

    def replace(expr: Expr, context: Any) -> Literal:
        text = operators.string(expr.arg)
        compiled = _compile(str(operators.string(expr.pattern)), expr.flags)
        replacement = regex.sub(r"\$([0-9]*)", r"\\\1", str(operators.string(expr.replacement)))
        try:
            replaced = compiled.sub(replacement, str(text), timeout=budget.remaining(), concurrent=True)
        except TimeoutError:
            raise budget.exhausted() from None
        except (regex.error, IndexError) as error:
            raise InvalidRequestError(f"REPLACE replacement is not valid: {error}") from None
        if len(replaced) > limits.max_string_length:
            raise too_long(len(replaced))
        return Literal(replaced, datatype=text.datatype, lang=text.language)

    def concat(expr: Expr, context: Any) -> Literal:
        joined: Literal = operators.Builtin_CONCAT(expr, context)
        if len(joined) > limits.max_string_length:
            raise too_long(len(joined))
        return joined

    bounded: dict[str, Callable[[Expr, Any], Literal]] = {
        "Builtin_REGEX": search,
        "Builtin_REPLACE": replace,
        "Builtin_CONCAT": concat,
    }
    for part in _walk_algebra(query.algebra):
        function = bounded.get(part.name)
        if function is not None and isinstance(part, Expr):
            part._evalfn = types.MethodType(function, part)


def _select_answer(outcome: Mapping[str, Any], limits: QueryLimits, budget: _Budget) -> QueryAnswer:
    variables = [str(variable) for variable in outcome["vars_"]]
    bindings: list[dict[str, dict[str, str]]] = []
    for row in outcome["bindings"]:
        budget.check()
        if len(bindings) == limits.max_rows:
            raise InvalidRequestError(
                f"the SELECT result has more than {limits.max_rows} rows; add a LIMIT or narrow the query"
            )
        bindings.append({str(name): _term_json(value) for name, value in row.items() if value is not None})
    body = orjson.dumps({"head": {"vars": variables}, "results": {"bindings": bindings}})
    return QueryAnswer("SELECT", body, SPARQL_RESULTS_JSON, len(bindings))


class _TurtleSerializer(TurtleSerializer):
    """Turtle that writes the ontology's ``<.../Class/property>`` IRIs in full, as the AAS RDF examples do,
    instead of inventing a ``ns1:`` prefix for each class."""

    def get_pname(self, uri: Node, gen_prefix: bool = True) -> str | None:
        if isinstance(uri, URIRef) and uri.startswith(AAS) and "/" in uri[len(AAS) :]:
            return None
        return super().get_pname(uri, gen_prefix)


def serialize(graph: Graph, rdf_format: RdfFormat) -> bytes:
    """``graph`` as Turtle or as JSON-LD with the ``aas``/``hub``/``xs``/``rdf`` prefixes as its context."""
    if rdf_format == JSON_LD:
        return graph.serialize(format="json-ld", context=dict(PREFIXES), encoding="utf-8")
    stream = io.BytesIO()
    _TurtleSerializer(graph).serialize(stream, encoding="utf-8")
    return stream.getvalue()

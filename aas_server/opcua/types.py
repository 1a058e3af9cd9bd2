"""The hub's OPC UA type model of the AAS v3 metamodel, as a declarative table (AAS Part 1, v3.0).

One entry per metamodel class the projection shows: ObjectTypes for the shell, its asset
information, the submodel, the object-shaped submodel elements, Reference, Qualifier and
ConceptDescription; VariableTypes for the elements the projection shows as one variable holding
their value (Property, MultiLanguageProperty, Blob, ReferenceElement), so that a SCADA client reads
and subscribes the element node itself. :mod:`aas_server.opcua.nodeset` turns :data:`TYPE_MODEL`
into ``nodesets/aas-server.types.NodeSet2.xml`` (``aas-server nodeset types``), which the server
imports at start.

Browse names of the types follow the aas-core-works v3 nodeset and OPC 30270 (``AASPropertyType``,
``AASSubmodelType``...). Members keep the projection's capitalised names (``IdShort``,
``SemanticId``, as in OPC 30270) rather than aas-core's camelCase ones, and live in the types
namespace. Every member is optional unless the metamodel makes it mandatory and the projection
always shows it, so instances need not carry the full metamodel.

Node ids in the types namespace are strings: ``s=AASPropertyType`` for a type,
``s=AASPropertyType.SemanticId`` for its members.

:data:`REFERENCE_TYPE_MODEL` adds two ReferenceTypes, ``AASRelationshipFirst`` and
``AASRelationshipSecond``, from a relationship element to the nodes its ``first`` and ``second``
point to.

Left out for now: administrative information, extensions, embedded data specifications,
supplemental semantic ids, the OPC 30270 interfaces (``IAASReferableType``...) and methods in the
types (an Operation instance carries its own ``Invoke`` method).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TYPES_NAMESPACE_URI = "urn:aas-server:types:v3"
TYPES_MODEL_VERSION = "1.0.0"
TYPES_PUBLICATION_DATE = "2025-06-01T00:00:00Z"
STANDARD_NAMESPACE_URI = "http://opcfoundation.org/UA/"
STANDARD_MODEL_VERSION = "1.05.02"
STANDARD_PUBLICATION_DATE = "2022-11-01T00:00:00Z"
"""The oldest OPC UA base model the type model needs (``DictionaryEntryType``, OPC 10000-19)."""

TYPES_FILE_NAME = "aas-server.types.NodeSet2.xml"


class TypeNodeClass(enum.Enum):
    OBJECT_TYPE = "UAObjectType"
    VARIABLE_TYPE = "UAVariableType"


class MemberKind(enum.Enum):
    """How a member hangs under its type: ``HasProperty`` (``PropertyType``), or ``HasComponent``."""

    PROPERTY = "property"
    DATA_VARIABLE = "data variable"
    """``HasComponent``, ``BaseDataVariableType``."""
    OBJECT = "object"
    """``HasComponent``, of a type of this model."""


class ModellingRule(enum.Enum):
    MANDATORY = "Mandatory"
    OPTIONAL = "Optional"


@dataclass(frozen=True, slots=True)
class Member:
    """An instance declaration of a type: a property, a data variable or an object."""

    browse_name: str
    kind: MemberKind
    data_type: str | None = "String"
    """A namespace-0 data type by name; ``None`` for objects."""
    rule: ModellingRule = ModellingRule.OPTIONAL
    value_rank: int = -1
    object_type: str | None = None
    """For ``MemberKind.OBJECT``: the browse name of its type in this model."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class TypeDefinition:
    """One ObjectType or VariableType of the model."""

    browse_name: str
    node_class: TypeNodeClass
    supertype: str
    """A type of this model by browse name, or a namespace-0 type by its ``ObjectIds`` name."""
    description: str
    members: tuple[Member, ...] = ()
    abstract: bool = False
    data_type: str | None = None
    """For a VariableType: the data type of its value (namespace 0, by name)."""


def _property(
    name: str,
    description: str,
    data_type: str = "String",
    *,
    rule: ModellingRule = ModellingRule.OPTIONAL,
    value_rank: int = -1,
) -> Member:
    return Member(name, MemberKind.PROPERTY, data_type, rule, value_rank, description=description)


_SEMANTIC_ID = _property("SemanticId", "semanticId: the value of the reference's last key (AAS Part 1 §5.3.2.10)")
_ID_SHORT = _property("IdShort", "idShort (AAS Part 1 §5.3.2.10, Referable)")
_CATEGORY = _property("Category", "category (Referable)")
_VALUE_TYPE = _property("ValueType", "valueType as an XSD name, e.g. xs:double")
_CONTENT_TYPE = _property("ContentType", "contentType: the MIME type of the value")
_REFERENCE_TEXT = "a reference as text: [ModelRef](Submodel)urn:x, (Property)Speed"

TYPE_MODEL: tuple[TypeDefinition, ...] = (
    TypeDefinition(
        "AASReferableType",
        TypeNodeClass.OBJECT_TYPE,
        "BaseObjectType",
        "Referable (AAS Part 1 §5.3.2.10): an element with an idShort",
        (_ID_SHORT, _CATEGORY),
        abstract=True,
    ),
    TypeDefinition(
        "AASIdentifiableType",
        TypeNodeClass.OBJECT_TYPE,
        "AASReferableType",
        "Identifiable (AAS Part 1 §5.3.2.7): an element with a globally unique id",
        (
            _property("Id", "id: the globally unique identifier", rule=ModellingRule.MANDATORY),
            _property("Version", "administration.version"),
            _property("Revision", "administration.revision"),
        ),
        abstract=True,
    ),
    TypeDefinition(
        "AASAssetAdministrationShellType",
        TypeNodeClass.OBJECT_TYPE,
        "AASIdentifiableType",
        "AssetAdministrationShell (AAS Part 1 §5.3.3); Organizes its submodels",
        (
            _property("GlobalAssetId", "assetInformation.globalAssetId"),
            Member(
                "AssetInformation",
                MemberKind.OBJECT,
                None,
                object_type="AASAssetInformationType",
                description="assetInformation",
            ),
            _property("DerivedFrom", f"derivedFrom, {_REFERENCE_TEXT}"),
        ),
    ),
    TypeDefinition(
        "AASAssetInformationType",
        TypeNodeClass.OBJECT_TYPE,
        "BaseObjectType",
        "AssetInformation (AAS Part 1 §5.3.4)",
        (
            _property("AssetKind", "assetKind: Type, Instance or NotApplicable", rule=ModellingRule.MANDATORY),
            _property("GlobalAssetId", "globalAssetId"),
            _property("AssetType", "assetType"),
        ),
    ),
    TypeDefinition(
        "AASSubmodelType",
        TypeNodeClass.OBJECT_TYPE,
        "AASIdentifiableType",
        "Submodel (AAS Part 1 §5.3.5); its elements are HasComponent children",
        (_SEMANTIC_ID, _property("Kind", "kind: Template or Instance")),
    ),
    TypeDefinition(
        "AASSubmodelElementType",
        TypeNodeClass.OBJECT_TYPE,
        "AASReferableType",
        "SubmodelElement (AAS Part 1 §5.3.7.1) shown as an object",
        (_SEMANTIC_ID,),
        abstract=True,
    ),
    TypeDefinition(
        "AASSubmodelElementCollectionType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "SubmodelElementCollection (AAS Part 1 §5.3.7.14); its elements are HasComponent children",
    ),
    TypeDefinition(
        "AASSubmodelElementListType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "SubmodelElementList (AAS Part 1 §5.3.7.15); its items are HasComponent children named [0], [1]...",
        (
            _property("OrderRelevant", "orderRelevant", "Boolean"),
            _property("TypeValueListElement", "typeValueListElement"),
            _property("ValueTypeListElement", "valueTypeListElement"),
            _property("SemanticIdListElement", "semanticIdListElement"),
        ),
    ),
    TypeDefinition(
        "AASEntityType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "Entity (AAS Part 1 §5.3.7.6); its statements are HasComponent children",
        (
            _property("EntityType", "entityType: SelfManagedEntity or CoManagedEntity"),
            _property("GlobalAssetId", "globalAssetId"),
        ),
    ),
    TypeDefinition(
        "AASRangeType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "Range (AAS Part 1 §5.3.7.12); Min and Max have the native type of the valueType",
        (
            _VALUE_TYPE,
            Member("Min", MemberKind.DATA_VARIABLE, "BaseDataType", description="min"),
            Member("Max", MemberKind.DATA_VARIABLE, "BaseDataType", description="max"),
        ),
    ),
    TypeDefinition(
        "AASFileType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "File (AAS Part 1 §5.3.7.8): a path or URI and its MIME type",
        (Member("Value", MemberKind.DATA_VARIABLE, "String", description="value: path or URI"), _CONTENT_TYPE),
    ),
    TypeDefinition(
        "AASRelationshipElementType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "RelationshipElement (AAS Part 1 §5.3.7.13)",
        (
            _property("First", f"first, {_REFERENCE_TEXT}", rule=ModellingRule.MANDATORY),
            _property("Second", f"second, {_REFERENCE_TEXT}", rule=ModellingRule.MANDATORY),
        ),
    ),
    TypeDefinition(
        "AASAnnotatedRelationshipElementType",
        TypeNodeClass.OBJECT_TYPE,
        "AASRelationshipElementType",
        "AnnotatedRelationshipElement (AAS Part 1 §5.3.7.2); its annotations are HasComponent children",
    ),
    TypeDefinition(
        "AASBasicEventElementType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "BasicEventElement (AAS Part 1 §5.3.7.4)",
        (
            _property("Observed", f"observed, {_REFERENCE_TEXT}", rule=ModellingRule.MANDATORY),
            _property("Direction", "direction: input or output", rule=ModellingRule.MANDATORY),
            _property("State", "state: on or off", rule=ModellingRule.MANDATORY),
            _property("MessageTopic", "messageTopic"),
            _property("LastUpdate", "lastUpdate", "DateTime"),
        ),
    ),
    TypeDefinition(
        "AASOperationType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "Operation (AAS Part 1 §5.3.7.10); an instance has a method Invoke with its variables as arguments",
    ),
    TypeDefinition(
        "AASCapabilityType",
        TypeNodeClass.OBJECT_TYPE,
        "AASSubmodelElementType",
        "Capability (AAS Part 1 §5.3.7.5)",
    ),
    TypeDefinition(
        "AASReferenceType",
        TypeNodeClass.OBJECT_TYPE,
        "BaseObjectType",
        "Reference (AAS Part 1 §5.3.10.2)",
        (
            _property("Type", "type: ModelReference or ExternalReference", rule=ModellingRule.MANDATORY),
            _property("Keys", "keys, each as (KeyType)value", rule=ModellingRule.MANDATORY, value_rank=1),
        ),
    ),
    TypeDefinition(
        "AASQualifierType",
        TypeNodeClass.OBJECT_TYPE,
        "BaseObjectType",
        "Qualifier (AAS Part 1 §5.3.8)",
        (
            _property("Type", "type", rule=ModellingRule.MANDATORY),
            _property("ValueType", "valueType as an XSD name", rule=ModellingRule.MANDATORY),
            _property("Value", "value, of the native type of the valueType", "BaseDataType"),
            _property("Kind", "kind: ValueQualifier, ConceptQualifier or TemplateQualifier"),
            _SEMANTIC_ID,
        ),
    ),
    TypeDefinition(
        "AASConceptDescriptionType",
        TypeNodeClass.OBJECT_TYPE,
        "DictionaryEntryType",
        "ConceptDescription (AAS Part 1 §5.3.11): a dictionary entry (OPC 10000-19) that semanticIds point to",
        (
            _property("Id", "id", rule=ModellingRule.MANDATORY),
            _ID_SHORT,
            _property("IsCaseOf", f"isCaseOf, each {_REFERENCE_TEXT}", value_rank=1),
        ),
    ),
    TypeDefinition(
        "AASPropertyType",
        TypeNodeClass.VARIABLE_TYPE,
        "BaseDataVariableType",
        "Property (AAS Part 1 §5.3.7.11): the variable's value is the Property's, of the valueType's native type",
        (_SEMANTIC_ID, _VALUE_TYPE),
        data_type="BaseDataType",
    ),
    TypeDefinition(
        "AASMultiLanguagePropertyType",
        TypeNodeClass.VARIABLE_TYPE,
        "BaseDataVariableType",
        "MultiLanguageProperty (AAS Part 1 §5.3.7.9): the text in the preferred language",
        (_SEMANTIC_ID,),
        data_type="LocalizedText",
    ),
    TypeDefinition(
        "AASBlobType",
        TypeNodeClass.VARIABLE_TYPE,
        "BaseDataVariableType",
        "Blob (AAS Part 1 §5.3.7.3): the bytes",
        (_SEMANTIC_ID, _CONTENT_TYPE),
        data_type="ByteString",
    ),
    TypeDefinition(
        "AASReferenceElementType",
        TypeNodeClass.VARIABLE_TYPE,
        "BaseDataVariableType",
        f"ReferenceElement (AAS Part 1 §5.3.7.12): {_REFERENCE_TEXT}",
        (_SEMANTIC_ID,),
        data_type="String",
    ),
)
"""The whole type model, supertypes before their subtypes."""


@dataclass(frozen=True, slots=True)
class ReferenceTypeDefinition:
    """A ReferenceType of the model (OPC 10000-3 §5.3), a subtype of a namespace-0 reference type."""

    browse_name: str
    inverse_name: str
    supertype: str
    """A namespace-0 reference type by its ``ObjectIds`` name."""
    description: str


RELATIONSHIP_FIRST = "AASRelationshipFirst"
RELATIONSHIP_SECOND = "AASRelationshipSecond"

REFERENCE_TYPE_MODEL: tuple[ReferenceTypeDefinition, ...] = (
    ReferenceTypeDefinition(
        RELATIONSHIP_FIRST,
        "AASRelationshipFirstOf",
        "NonHierarchicalReferences",
        "From a RelationshipElement (AAS Part 1 §5.3.7.13) to the node its first ModelReference points to",
    ),
    ReferenceTypeDefinition(
        RELATIONSHIP_SECOND,
        "AASRelationshipSecondOf",
        "NonHierarchicalReferences",
        "From a RelationshipElement (AAS Part 1 §5.3.7.13) to the node its second ModelReference points to",
    ),
)
"""The reference types of the model: a relationship's ``first`` and ``second`` as references."""

_BY_NAME = {definition.browse_name: definition for definition in TYPE_MODEL}


def type_definition(browse_name: str) -> TypeDefinition:
    """The type of this model with ``browse_name``; ``KeyError`` if there is none."""
    return _BY_NAME[browse_name]


def is_model_type(name: str) -> bool:
    """Whether ``name`` is a type of this model (else it names a namespace-0 type)."""
    return name in _BY_NAME


def type_node_id(browse_name: str) -> str:
    """The string node id (types namespace) of a type: its browse name."""
    return browse_name


def member_node_id(type_browse_name: str, member_browse_name: str) -> str:
    """The string node id (types namespace) of a type's member: ``AASPropertyType.SemanticId``."""
    return f"{type_browse_name}.{member_browse_name}"

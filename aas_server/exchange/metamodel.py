"""Names of the AAS v3 metamodel classes the exchange layer dispatches on (Part 1, *modelType*)."""

from __future__ import annotations

SUBMODEL_ELEMENT_TYPES = frozenset(
    {
        "Property",
        "MultiLanguageProperty",
        "Range",
        "Blob",
        "File",
        "ReferenceElement",
        "RelationshipElement",
        "AnnotatedRelationshipElement",
        "SubmodelElementCollection",
        "SubmodelElementList",
        "Entity",
        "BasicEventElement",
        "Operation",
        "Capability",
    }
)

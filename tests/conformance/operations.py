"""The Part 2 operations (``entire.yaml``) the server does not serve, each with the reason.

``tests/test_schemathesis.py`` fuzzes every operation that ``create_app`` routes and checks that
every other operation of ``entire.yaml`` is listed here (and none that is served): add a route
and its operation must leave this list; drop one and it must come back with a reason.
``docs/conformance.md`` shows the same list.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    "AAS_SERVICE": (
        "single-shell AAS Service interface (/aas/...): the hub is a repository; the same operations are "
        "served on the repository superpath /shells/{aasIdentifier}/..., where the engines' AAS Service "
        "suite checks them"
    ),
    "SUBMODEL_SERVICE": (
        "single-submodel Submodel Service interface (/submodel/...): the hub is a repository; the same "
        "operations are served on /submodels/{submodelIdentifier}/..., where the engines' Submodel Service "
        "suite checks them"
    ),
    "QUERY": "AAS Query Language (/query/...): not implemented",
    "REGISTRY": "Registry API (shell and submodel descriptors, bulk): the hub is a repository, not a registry",
    "DISCOVERY": "Discovery API (/lookup/...): the hub is a repository; use the assetIds filter of GET /shells",
}
"""Why each group of operations is not served."""

_NOT_SERVED_BY_REASON: dict[str, tuple[str, ...]] = {
    "AAS_SERVICE": (
        "GetAssetAdministrationShell",
        "PutAssetAdministrationShell",
        "GetAssetAdministrationShell-Reference",
        "GetAssetInformation",
        "PutAssetInformation",
        "GetThumbnail",
        "PutThumbnail",
        "DeleteThumbnail",
        "GetAllSubmodelReferences",
        "PostSubmodelReference",
        "DeleteSubmodelReference",
        "GetSubmodelById_AAS",
        "PutSubmodelById_AAS",
        "PatchSubmodelById_AAS",
        "DeleteSubmodelById_AAS",
        "GetSubmodelById-Metadata_AAS",
        "PatchSubmodeByIdMetadata_AAS",
        "GetSubmodelById-ValueOnly_AAS",
        "PatchSubmodelById-ValueOnly_AAS",
        "GetSubmodelById-Reference_AAS",
        "GetSubmodelById-Path_AAS",
        "GetAllSubmodelElements_AAS",
        "PostSubmodelElement_AAS",
        "GetAllSubmodelElements-Metadata_AAS",
        "GetAllSubmodelElements-ValueOnly_AAS",
        "GetAllSubmodelElementsReference_AAS",
        "GetAllSubmodelElementsPath_AAS",
        "GetSubmodelElementByPath_AAS",
        "PostSubmodelElementByPath_AAS",
        "PutSubmodelElementByPath_AAS",
        "PatchSubmodelElementValueByPath_AAS",
        "DeleteSubmodelElementByPath_AAS",
        "GetSubmodelElementByPath-Metadata_AAS",
        "PatchSubmodelElementValueByPath-Metadata_AAS",
        "GetSubmodelElementByPath-ValueOnly_AAS",
        "PatchSubmodelElementValueByPathValueOnly_AAS",
        "GetSubmodelElementByPath-Reference_AAS",
        "GetSubmodelElementByPath-Path_AAS",
        "GetFileByPath_AAS",
        "PutFileByPath_AAS",
        "DeleteFileByPath_AAS",
        "InvokeOperationSync_AAS",
        "InvokeOperationSync-ValueOnly_AAS",
        "InvokeOperationAsync_AAS",
        "InvokeOperationAsync-ValueOnly_AAS",
        "GetOperationAsyncStatus_AAS",
        "GetOperationAsyncResult_AAS",
        "GetOperationAsyncResult-ValueOnly_AAS",
    ),
    "SUBMODEL_SERVICE": (
        "GetSubmodel",
        "PutSubmodel",
        "PatchSubmodel",
        "GetSubmodel-Metadata",
        "PatchSubmodel-Metadata",
        "GetSubmodel-ValueOnly",
        "PatchSubmodel-ValueOnly",
        "GetSubmodel-Reference",
        "GetSubmodel-Path",
        "GetAllSubmodelElements",
        "PostSubmodelElement",
        "GetAllSubmodelElements-Metadata",
        "GetAllSubmodelElements-ValueOnly",
        "GetAllSubmodelElements-Reference",
        "GetAllSubmodelElements-Path",
        "GetSubmodelElementByPath",
        "PostSubmodelElementByPath",
        "PutSubmodelElementByPath",
        "PatchSubmodelElementByPath",
        "DeleteSubmodelElementByPath",
        "GetSubmodelElementByPath-Metadata",
        "PatchSubmodelElementByPath-Metadata",
        "GetSubmodelElementByPath-ValueOnly",
        "PatchSubmodelElementByPath-ValueOnly",
        "GetSubmodelElementByPath-Reference",
        "GetSubmodelElementByPath-Path",
        "GetFileByPath",
        "PutFileByPath",
        "DeleteFileByPath",
        "InvokeOperation",
        "InvokeOperationSync-ValueOnly",
        "InvokeOperationAsync",
        "InvokeOperationAsync-ValueOnly",
        "GetOperationAsyncStatus",
        "GetOperationAsyncResult",
        "GetOperationAsyncResult-ValueOnly",
    ),
    "QUERY": (
        "QueryAssetAdministrationShells",
        "QuerySubmodels",
        "QueryConceptDescriptions",
    ),
    "REGISTRY": (
        "GetAllAssetAdministrationShellDescriptors",
        "PostAssetAdministrationShellDescriptor",
        "GetAssetAdministrationShellDescriptorById",
        "PutAssetAdministrationShellDescriptorById",
        "DeleteAssetAdministrationShellDescriptorById",
        "GetAllSubmodelDescriptorsThroughSuperpath",
        "PostSubmodelDescriptor-ThroughSuperpath",
        "GetSubmodelDescriptorByIdThroughSuperpath",
        "PutSubmodelDescriptorByIdThroughSuperpath",
        "DeleteSubmodelDescriptorByIdThroughSuperpath",
        "QueryAssetAdministrationShellDescriptors",
        "BulkPostAssetAdministrationShellDescriptor",
        "BulkPutAssetAdministrationShellDescriptorById",
        "BulkDeleteAssetAdministrationShellDescriptorById",
        "BulkGetAsyncStatus",
        "BulkGetAsyncResult",
        "GetAllSubmodelDescriptors",
        "PostSubmodelDescriptor",
        "GetSubmodelDescriptorById",
        "PutSubmodelDescriptorById",
        "DeleteSubmodelDescriptorById",
        "QuerySubmodelDescriptors",
        "BulkPostSubmodel",
        "BulkPutSubmodelDescriptorsById",
        "BulkDeleteSubmodelDescriptorsById",
    ),
    "DISCOVERY": (
        "GetAllAssetAdministrationShellIdsByAssetLink",
        "SearchAllAssetAdministrationShellIdsByAssetLink",
        "GetAllAssetLinksById",
        "PostAllAssetLinksById",
        "DeleteAllAssetLinksById",
    ),
}

NOT_SERVED: dict[str, str] = {
    operation: REASONS[reason] for reason, operations in _NOT_SERVED_BY_REASON.items() for operation in operations
}
"""``operationId`` of each ``entire.yaml`` operation the server does not serve, with the reason."""

"""Description API (IDTA-01002 Part 2, *Description Interface*): the service profiles served.

The profiles named (API releases 3.0 and 3.1) are the full (SSP-001) profiles of the four
repository interfaces this server implements, their read profiles (SSP-002) that the IDTA test
engines check, and the read profiles of the AAS Service and Submodel Service, whose operations
are served on ``/shells/{aasIdentifier}/...`` and ``/submodels/{submodelIdentifier}/...``
(``docs/rest.md`` lists the routes and what is left out, ``docs/conformance.md`` how the engines
check the service profiles).
"""

from __future__ import annotations

from aiohttp import web

from aas_server.api.routing import RouteTable
from aas_server.api.serialization import accept_json, json_response

routes = RouteTable()

PROFILES: tuple[str, ...] = tuple(
    f"https://admin-shell.io/aas/API/3/{version}/{specification}"
    for specification in (
        "AssetAdministrationShellRepositoryServiceSpecification/SSP-001",
        "AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
        "SubmodelRepositoryServiceSpecification/SSP-001",
        "SubmodelRepositoryServiceSpecification/SSP-002",
        "ConceptDescriptionRepositoryServiceSpecification/SSP-001",
        "AasxFileServerServiceSpecification/SSP-001",
        "AssetAdministrationShellServiceSpecification/SSP-002",
        "SubmodelServiceSpecification/SSP-002",
    )
    for version in ("0", "1")
)
"""Part 2 service specification profiles (all named in ``ServiceDescription.profiles`` of both releases)."""


@routes.get("/description")
async def get_description(request: web.Request) -> web.Response:
    """GetSelfDescription: ``{"profiles": [...]}``."""
    accept_json(request)
    return json_response({"profiles": list(PROFILES)})

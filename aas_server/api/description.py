"""Description API (IDTA-01002 Part 2, *Description Interface*): the service profiles served.

The profiles named are the full (SSP-001) profiles of the four repository interfaces this server
implements (``docs/rest.md`` lists the routes and what is left out).
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
        "SubmodelRepositoryServiceSpecification/SSP-001",
        "ConceptDescriptionRepositoryServiceSpecification/SSP-001",
        "AasxFileServerServiceSpecification/SSP-001",
    )
    for version in ("0", "1")
)
"""Part 2 service specification profiles: the full profiles of the repositories and the AASX file server."""


@routes.get("/description")
async def get_description(request: web.Request) -> web.Response:
    """GetSelfDescription: ``{"profiles": [...]}``."""
    accept_json(request)
    return json_response({"profiles": list(PROFILES)})

"""Description API (IDTA-01002 Part 2, *Description Interface*): the service profiles served.

The profiles named are the read profiles whose operations this server implements in the spine
subset (``docs/rest.md`` lists what is still missing from each).
"""

from __future__ import annotations

from aiohttp import web

from aas_server.api.serialization import json_response

routes = web.RouteTableDef()

PROFILES: tuple[str, ...] = tuple(
    f"https://admin-shell.io/aas/API/3/{version}/{specification}/SSP-002"
    for specification in (
        "AssetAdministrationShellRepositoryServiceSpecification",
        "SubmodelRepositoryServiceSpecification",
    )
    for version in ("0", "1")
)
"""Part 2 service specification profiles: the read profiles of the shell and submodel repositories."""


@routes.get("/description")
async def get_description(request: web.Request) -> web.Response:
    """GetSelfDescription: ``{"profiles": [...]}``."""
    return json_response({"profiles": list(PROFILES)})

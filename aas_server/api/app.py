"""The AAS HTTP/REST API application (IDTA-01002 Part 2, release 3.1.2), built over a ``TwinStore``.

``create_app(store)`` returns an aiohttp application serving the same routes under each of
``API_PREFIXES`` (``/api/v3.0`` and ``/api/v3.1``): the AAS Repository and AAS interfaces
(``shells.py``), the Submodel Repository and Submodel interfaces (``submodels.py``,
``submodel_elements.py``; the Submodel interface mounted a second time under
``/shells/{aasIdentifier}/submodels/{submodelIdentifier}``), the Concept Description Repository
(``concept_descriptions.py``), the AASX File Server and ``/serialization`` (``file_server.py``),
``/description``, and ``/rdf`` and ``/sparql`` (``rdf.py``); with a ``history``,
``.../submodel-elements/{idShortPath}/history`` under both submodel bases (``history.py``). Routing
is a segment trie per base path (``routing.py``); ``api/errors.py`` maps every error to a ``Result``
body in one place. ``docs/rest.md`` lists routes, codes and gaps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from aas_server.analytics.source import AlarmSource
from aas_server.api import alarms as alarm_routes
from aas_server.api import concept_descriptions, description, file_server, rdf, shells, submodel_elements, submodels
from aas_server.api import simulations as simulation_routes
from aas_server.api.cache import DEFAULT_MAX_ENTRIES, ResponseCache
from aas_server.api.context import (
    ALARMS_KEY,
    API_PREFIXES,
    ATTACHMENTS_KEY,
    CACHE_KEY,
    CATALOG_KEY,
    MAX_BODY_KEY,
    OPERATIONS_KEY,
    PACKAGES_KEY,
    RUNS_KEY,
    SIMULATIONS_KEY,
    STORE_KEY,
)
from aas_server.api.cors import cors_middleware
from aas_server.api.errors import error_middleware
from aas_server.api.history import HISTORY_KEY
from aas_server.api.history import routes as history_routes
from aas_server.api.operations import OperationRegistry, OperationRuns
from aas_server.api.paging import Catalog
from aas_server.api.routing import ApiResource, RouteTable
from aas_server.simulation.jobs import SimulationJobs
from aas_server.store.files import AttachmentStore, MemoryAttachmentStore, MemoryPackageStore, PackageStore
from aas_server.store.history import HistorySource
from aas_server.store.twin_store import TwinStore

DEFAULT_CLIENT_MAX_SIZE = 10 * 1024 * 1024
"""Largest accepted request body in bytes; bigger bodies are answered with ``413``."""

SUBMODEL_BASES: tuple[str, ...] = (
    "/submodels/{submodelIdentifier}",
    "/shells/{aasIdentifier}/submodels/{submodelIdentifier}",
)
"""Where the Submodel interface is mounted: in the repository and under each shell."""

TOP_LEVEL_TABLES: tuple[RouteTable, ...] = (
    shells.routes,
    submodels.repository,
    concept_descriptions.routes,
    file_server.routes,
    description.routes,
    rdf.routes,
)
SUBMODEL_TABLES: tuple[RouteTable, ...] = (submodels.interface, submodel_elements.routes)


PARSER_LIMITS: dict[str, int] = {"max_line_size": 65_536, "max_field_size": 65_536}
"""aiohttp's request parser limits: base64url ids and idShort paths make long request lines; beyond 64 KiB
aiohttp answers 400 itself before the application sees the request."""


def create_app(
    store: TwinStore,
    *,
    middlewares: Sequence[Middleware] = (),
    client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
    cors_origins: Collection[str] = (),
    attachments: AttachmentStore | None = None,
    packages: PackageStore | None = None,
    operations: OperationRegistry | None = None,
    cache_entries: int = DEFAULT_MAX_ENTRIES,
    history: HistorySource | None = None,
    alarms: AlarmSource | None = None,
    simulations: SimulationJobs | None = None,
) -> web.Application:
    """The REST application over ``store``.

    ``middlewares`` (for example authentication) run inside the error middleware, so the errors
    they raise (``AccessDeniedError``) are answered as ``Result`` bodies too. ``cors_origins``
    (empty: CORS off; ``"*"``: any origin) enables browser access from other origins.
    ``attachments`` and ``packages`` keep file contents and AASX packages (in memory unless the
    hub passes durable ones); ``operations`` holds the implementations of Operation elements;
    ``cache_entries`` bounds the response cache (0 disables it); ``history`` (recorded values) adds the
    history routes; ``alarms`` (the hub's alarm service) the alarm routes (``api/alarms.py``);
    ``simulations`` (the hub's simulation jobs) the simulation routes (``api/simulations.py``).
    """
    chain: list[Middleware] = [error_middleware, body_limit_middleware(client_max_size), *middlewares]
    if cors_origins:
        chain.insert(0, cors_middleware(frozenset(cors_origins)))
    app = web.Application(middlewares=chain, client_max_size=client_max_size, handler_args=dict(PARSER_LIMITS))
    app[STORE_KEY] = store
    app[CATALOG_KEY] = Catalog(store)
    app[CACHE_KEY] = ResponseCache(max_entries=cache_entries)
    app[ATTACHMENTS_KEY] = attachments if attachments is not None else MemoryAttachmentStore()
    app[PACKAGES_KEY] = packages if packages is not None else MemoryPackageStore()
    app[OPERATIONS_KEY] = operations if operations is not None else OperationRegistry()
    app[RUNS_KEY] = OperationRuns()
    app[MAX_BODY_KEY] = client_max_size
    rdf.install(app)
    submodel_tables = SUBMODEL_TABLES
    if history is not None:
        app[HISTORY_KEY] = history
        submodel_tables = (*SUBMODEL_TABLES, history_routes)
    top_level_tables = TOP_LEVEL_TABLES
    if alarms is not None:
        app[ALARMS_KEY] = alarms
        top_level_tables = (*top_level_tables, alarm_routes.routes)
    if simulations is not None:
        app[SIMULATIONS_KEY] = simulations
        top_level_tables = (*top_level_tables, simulation_routes.routes)
    for prefix in API_PREFIXES:
        resource = ApiResource(prefix)
        for table in top_level_tables:
            for route in table:
                resource.add(route.method, route.path, route.handler)
        for base in SUBMODEL_BASES:
            for table in submodel_tables:
                for route in table:
                    resource.add(route.method, base + route.path, route.handler)
        app.router.register_resource(resource)
    app.cleanup_ctx.append(_operation_runs)
    return app


def body_limit_middleware(limit: int) -> Middleware:
    """``413`` for a request whose declared ``Content-Length`` is above ``limit``, before any of the body is read.

    Bodies without a length (chunked) are counted as they are read: ``request.read()`` stops at
    ``client_max_size`` and uploads at the same limit (``attachments.read_upload``).
    """

    @web.middleware
    async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        return await handler(request)

    return limit_body


async def _operation_runs(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RUNS_KEY].close()

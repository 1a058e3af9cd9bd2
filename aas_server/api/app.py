"""The AAS HTTP/REST API application (IDTA-01002 Part 2), built over a ``TwinStore``.

``create_app(store)`` returns an aiohttp application serving the same routes under each of
``API_PREFIXES`` (``/api/v3.0`` and ``/api/v3.1``). One module per Part 2 interface contributes a
``routes`` table; ``api/errors.py`` maps every error to a ``Result`` body in one place. What is
served and what is left for the full Part 2 is listed in ``docs/rest.md``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from aas_server.api import concept_descriptions, description, shells, submodels
from aas_server.api.context import CATALOG_KEY, STORE_KEY
from aas_server.api.cors import cors_middleware
from aas_server.api.errors import error_middleware
from aas_server.api.paging import Catalog
from aas_server.store.twin_store import TwinStore

API_PREFIXES: tuple[str, ...] = ("/api/v3.0", "/api/v3.1")
"""Base paths; each serves every route."""

DEFAULT_CLIENT_MAX_SIZE = 10 * 1024 * 1024
"""Largest accepted request body in bytes; bigger bodies are answered with ``413``."""

ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    shells.routes,
    submodels.routes,
    concept_descriptions.routes,
    description.routes,
)


def create_app(
    store: TwinStore,
    *,
    middlewares: Sequence[Middleware] = (),
    client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
    cors_origins: Collection[str] = (),
) -> web.Application:
    """The REST application over ``store``.

    ``middlewares`` (for example authentication) run inside the error middleware, so the errors
    they raise (``AccessDeniedError``) are answered as ``Result`` bodies too. ``cors_origins``
    (empty: CORS off; ``"*"``: any origin) enables browser access from other origins.
    """
    chain: list[Middleware] = [error_middleware, *middlewares]
    if cors_origins:
        chain.insert(0, cors_middleware(frozenset(cors_origins)))
    app = web.Application(middlewares=chain, client_max_size=client_max_size)
    app[STORE_KEY] = store
    app[CATALOG_KEY] = Catalog(store)
    for prefix in API_PREFIXES:
        for table in ROUTE_TABLES:
            for route in table:
                assert isinstance(route, web.RouteDef)
                web.RouteDef(route.method, prefix + route.path, route.handler, route.kwargs).register(app.router)
    return app

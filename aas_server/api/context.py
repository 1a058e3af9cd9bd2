"""Typed application state shared by the route modules (``web.AppKey``, ``ARCHITECTURE.md`` rule 4)."""

from __future__ import annotations

from aiohttp import web

from aas_server.api.paging import Catalog
from aas_server.store.twin_store import TwinStore

STORE_KEY: web.AppKey[TwinStore] = web.AppKey("store", TwinStore)
"""The live twin store every handler reads and writes."""

CATALOG_KEY: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)
"""Ordered indexes over the store's identifiables, for cursor paging and filters."""


def store_of(request: web.Request) -> TwinStore:
    """The twin store of the application serving ``request``."""
    return request.app[STORE_KEY]


def catalog_of(request: web.Request) -> Catalog:
    """The paging catalog of the application serving ``request``."""
    return request.app[CATALOG_KEY]

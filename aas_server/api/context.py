"""Typed application state shared by the route modules (``web.AppKey``, ``ARCHITECTURE.md`` rule 4)."""

from __future__ import annotations

from aiohttp import web

from aas_server.analytics.source import AlarmSource
from aas_server.api.cache import ResponseCache
from aas_server.api.operations import OperationRegistry, OperationRuns
from aas_server.api.paging import Catalog
from aas_server.simulation.jobs import SimulationJobs
from aas_server.store.files import AttachmentStore, PackageStore
from aas_server.store.twin_store import TwinStore

API_3_0_PREFIX = "/api/v3.0"
"""Base path of Part 2 API release 3.0 (the IDTA test engines' release)."""

API_3_1_PREFIX = "/api/v3.1"
"""Base path of Part 2 API release 3.1 (``entire.yaml`` 3.1.2)."""

API_PREFIXES: tuple[str, ...] = (API_3_0_PREFIX, API_3_1_PREFIX)
"""Base paths; each serves every route, and where the releases differ each follows its own."""


def is_release_3_1(request: web.Request) -> bool:
    """Whether ``request`` came in under the release 3.1 base path."""
    return request.path.startswith(API_3_1_PREFIX + "/")


STORE_KEY: web.AppKey[TwinStore] = web.AppKey("store", TwinStore)
"""The live twin store every handler reads and writes."""

CATALOG_KEY: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)
"""Ordered indexes over the store's identifiables, for cursor paging and filters."""

CACHE_KEY: web.AppKey[ResponseCache] = web.AppKey("cache", ResponseCache)
"""Serialised response bodies keyed by content version."""

ATTACHMENTS_KEY: web.AppKey[AttachmentStore] = web.AppKey("attachments")
"""File contents of File elements and thumbnails, by their path in the package (``/aasx/...``)."""

PACKAGES_KEY: web.AppKey[PackageStore] = web.AppKey("packages")
"""AASX packages kept by the AASX File Server interface."""

OPERATIONS_KEY: web.AppKey[OperationRegistry] = web.AppKey("operations", OperationRegistry)
"""Implementations of Operation elements."""

MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body", int)
"""Largest accepted request body in bytes (uploads included)."""

RUNS_KEY: web.AppKey[OperationRuns] = web.AppKey("operation_runs", OperationRuns)
"""Asynchronous operation invocations and their results."""

ALARMS_KEY: web.AppKey[AlarmSource] = web.AppKey("alarms")
"""The hub's alarms (``api/alarms.py``), when it has monitoring rules."""

SIMULATIONS_KEY: web.AppKey[SimulationJobs] = web.AppKey("simulations")
"""The hub's simulation jobs (``api/simulations.py``)."""


def store_of(request: web.Request) -> TwinStore:
    """The twin store of the application serving ``request``."""
    return request.app[STORE_KEY]


def catalog_of(request: web.Request) -> Catalog:
    """The paging catalog of the application serving ``request``."""
    return request.app[CATALOG_KEY]


def cache_of(request: web.Request) -> ResponseCache:
    """The response cache of the application serving ``request``."""
    return request.app[CACHE_KEY]


def attachments_of(request: web.Request) -> AttachmentStore:
    """The attachment store of the application serving ``request``."""
    return request.app[ATTACHMENTS_KEY]


def packages_of(request: web.Request) -> PackageStore:
    """The AASX package store of the application serving ``request``."""
    return request.app[PACKAGES_KEY]

"""A real REST server on a loopback port chosen by the OS, over a store holding a data set.

The server answers under both base paths; the engines target Part 2 API 3.0 (``ENGINE_API``),
``entire.yaml`` is release 3.1 (``OPENAPI_API``), and where the two releases differ (the ``result``
of ``GetAllSubmodelElements-ValueOnly`` is a list in 3.0, an object in 3.1) each is held to its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiohttp import web
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.store.twin_store import TwinStore

ENGINE_API = "/api/v3.0"
"""Base path the test engines (Part 2 API 3.0.3) run against."""

OPENAPI_API = "/api/v3.1"
"""Base path schemathesis runs against: ``entire.yaml`` is the V3.1.2 OpenAPI."""


@asynccontextmanager
async def serve(identifiables: Iterable[model.Identifiable]) -> AsyncIterator[str]:
    """Serve ``create_app`` over a ``TwinStore`` holding ``identifiables``; yield ``http://host:port``."""
    store = TwinStore()
    store.add_all(identifiables)
    runner = web.AppRunner(create_app(store), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()

"""The live twin as RDF, and a read-only SPARQL 1.1 endpoint over it (``docs/rdf.md``).

Served under every API base path (not part of IDTA-01002 Part 2):

- ``GET /rdf``: the whole environment with the current values as Turtle (default) or JSON-LD,
  chosen by ``format=turtle|jsonld`` (or a media type) or else by ``Accept``
  (``text/turtle``, ``application/ld+json``).
- ``GET /sparql?query=...`` and ``POST /sparql`` (body ``application/sparql-query``, or a form
  ``query=...``), SPARQL 1.1 Protocol: SELECT and ASK answer ``application/sparql-results+json``,
  CONSTRUCT and DESCRIBE Turtle or JSON-LD by ``Accept``. Updates, ``SERVICE``, ``FROM`` and
  ``GRAPH`` are refused with ``400``; so is a malformed query, naming line and column.

The graph is built from a snapshot of the store in a worker thread and kept until the store's
structure version, an identifiable's content version or a Property's value, quality or source
timestamp changes. Queries run on a small pool of threads of their own (``QueryLimits``): a query
over its time budget is answered ``503``; its thread cannot be killed and stops at the next triple
it reads (or when the query ends, if it stopped reading triples). A query waits up to the time
budget for a free thread, else it is answered ``503`` with ``Retry-After``.

Left out: the SPARQL XML, CSV and TSV result formats, ``default-graph-uri``/``named-graph-uri``,
and SPARQL Update.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from aas_server.api.context import STORE_KEY
from aas_server.api.errors import result_response
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import negotiate
from aas_server.errors import InvalidRequestError
from aas_server.semantics.rdf import (
    DEFAULT_LIMITS,
    JSON_LD,
    MEDIA_TYPES,
    SPARQL_RESULTS_JSON,
    TURTLE,
    LiveValue,
    QueryAnswer,
    QueryLimits,
    QueryTimeoutError,
    RdfFormat,
    TwinGraph,
    build_graph,
    check_query_length,
    live_values,
    take_snapshot,
)
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)

routes = RouteTable()

FORMAT_NAMES: dict[str, RdfFormat] = {
    "turtle": TURTLE,
    "ttl": TURTLE,
    MEDIA_TYPES[TURTLE]: TURTLE,
    "jsonld": JSON_LD,
    "json-ld": JSON_LD,
    MEDIA_TYPES[JSON_LD]: JSON_LD,
}
"""Values of the ``format`` query parameter of ``GET /rdf``."""

SPARQL_QUERY_TYPE = "application/sparql-query"
FORM_TYPE = "application/x-www-form-urlencoded"
DEFAULT_QUERY_WORKERS = 2
"""Threads that evaluate SPARQL queries; a query that overruns keeps its thread until it stops."""

_GRACE = 1.0
"""Seconds past the time budget after which a query that did not stop by itself is answered ``503``."""


class QueryWorkersBusyError(Exception):
    """No SPARQL worker thread became free within a time budget."""


class RdfService:
    """The graph of the live twin, rebuilt when the twin changed, and the SPARQL query threads."""

    def __init__(
        self, store: TwinStore, limits: QueryLimits = DEFAULT_LIMITS, query_workers: int = DEFAULT_QUERY_WORKERS
    ) -> None:
        self.store = store
        self.limits = limits
        self._lock = asyncio.Lock()
        self._structure: tuple[int, int] | None = None
        self._values: dict[tuple[str, str], LiveValue] | None = None
        self._graph: TwinGraph | None = None
        self._query_workers = query_workers
        self._free_workers = asyncio.Semaphore(query_workers)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.builds = 0
        """How often the graph was built (for tests and diagnostics)."""

    def _structure_key(self) -> tuple[int, int]:
        """``store.version`` and the sum of the content versions: each change of either moves the pair."""
        store = self.store
        return store.version, sum(store.content_version(identifiable.id) for identifiable in store.identifiables())

    async def graph(self) -> TwinGraph:
        """The graph of the store as it is now: the cached one, or a new one built in a worker thread."""
        async with self._lock:
            structure = self._structure_key()
            values = live_values(self.store)
            if self._graph is not None and structure == self._structure and values == self._values:
                return self._graph
            snapshot = take_snapshot(self.store, values)
            graph = await asyncio.to_thread(build_graph, snapshot)
            self._structure, self._values, self._graph = structure, values, graph
            self.builds += 1
            return graph

    async def export(self, rdf_format: RdfFormat) -> bytes:
        """The live twin as Turtle or JSON-LD."""
        graph = await self.graph()
        return await asyncio.to_thread(graph.serialize, rdf_format)

    async def query(self, text: str, graph_format: RdfFormat = TURTLE) -> QueryAnswer:
        """Answer a read-only SPARQL query on a worker thread within ``limits``.

        Raises ``InvalidRequestError``, ``QueryTimeoutError`` or ``QueryWorkersBusyError``.
        """
        check_query_length(text, self.limits)
        graph = await self.graph()
        try:
            await asyncio.wait_for(self._free_workers.acquire(), self.limits.time_budget)
        except TimeoutError:
            raise QueryWorkersBusyError(
                f"all {self._query_workers} SPARQL workers stayed busy for {self.limits.time_budget:g} s "
                "(other queries, or queries that overran their time budget)"
            ) from None
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self._query_workers, thread_name_prefix="sparql")
        loop = asyncio.get_running_loop()

        def release(_: object) -> None:
            """Free the worker when its query ended, on whichever thread that happened (or it was cancelled)."""
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for a worker any more
                loop.call_soon_threadsafe(self._free_workers.release)

        try:
            future = self._executor.submit(graph.query, text, self.limits, graph_format)
        except BaseException:
            self._free_workers.release()
            raise
        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.limits.time_budget + _GRACE)
        except TimeoutError:
            _LOG.warning("a SPARQL query did not stop within its time budget; its thread runs on: %.200s", text)
            raise QueryTimeoutError(
                f"the query ran out of its time budget of {self.limits.time_budget:g} s; narrow it"
            ) from None

    def close(self) -> None:
        """Stop the query threads (a query still running finishes on its own; none is started any more)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


RDF_KEY: web.AppKey[RdfService] = web.AppKey("rdf", RdfService)
"""The RDF graph and SPARQL service of the application."""


def install(app: web.Application) -> None:
    """Give ``app`` (with its store set) an ``RdfService`` that is closed with the application."""
    app[RDF_KEY] = RdfService(app[STORE_KEY])
    app.cleanup_ctx.append(_rdf_service)


async def _rdf_service(app: web.Application) -> AsyncIterator[None]:
    yield
    app[RDF_KEY].close()


def _rdf_format(request: web.Request) -> RdfFormat:
    name = request.query.get("format")
    if name is not None:
        rdf_format = FORMAT_NAMES.get(name.lower())
        if rdf_format is None:
            raise InvalidRequestError(f"format={name!r} is not one of {', '.join(FORMAT_NAMES)}")
        return rdf_format
    chosen = negotiate(request, (MEDIA_TYPES[TURTLE], MEDIA_TYPES[JSON_LD]))
    return TURTLE if chosen == MEDIA_TYPES[TURTLE] else JSON_LD


@routes.get("/rdf")
async def get_rdf(request: web.Request) -> web.Response:
    """The environment and its current values as Turtle or JSON-LD (AAS RDF serialisation)."""
    rdf_format = _rdf_format(request)
    body = await request.app[RDF_KEY].export(rdf_format)
    return web.Response(body=body, content_type=MEDIA_TYPES[rdf_format], charset="utf-8")


async def _query_text(request: web.Request) -> str:
    if "default-graph-uri" in request.query or "named-graph-uri" in request.query:
        raise InvalidRequestError(
            "default-graph-uri and named-graph-uri are not supported: a query reads the live twin"
        )
    if request.method == hdrs.METH_GET:
        if "update" in request.query:
            raise InvalidRequestError("SPARQL Update is not accepted: this endpoint is read-only")
        text = request.query.get("query")
    elif request.content_type == SPARQL_QUERY_TYPE:
        text = await request.text()
    elif request.content_type == FORM_TYPE:
        form = await request.post()
        if "update" in form:
            raise InvalidRequestError("SPARQL Update is not accepted: this endpoint is read-only")
        field = form.get("query")
        text = field if isinstance(field, str) else None
    else:
        raise web.HTTPUnsupportedMediaType(
            text=f"a query is sent as {SPARQL_QUERY_TYPE} or as a form ({FORM_TYPE}) with a query field"
        )
    if not text:
        raise InvalidRequestError("no query: send it as the query parameter, the query form field or the body")
    return text


def _acceptable(request: web.Request, offered: tuple[str, ...]) -> str | None:
    try:
        return negotiate(request, offered)
    except web.HTTPNotAcceptable:
        return None


@routes.get("/sparql")
async def get_sparql(request: web.Request) -> web.Response:
    """SPARQL 1.1 Protocol query via GET."""
    return await _answer(request)


@routes.post("/sparql")
async def post_sparql(request: web.Request) -> web.Response:
    """SPARQL 1.1 Protocol query via POST (directly or URL-encoded); read-only all the same."""
    return await _answer(request)


async def _answer(request: web.Request) -> web.Response:
    text = await _query_text(request)
    graph_type = _acceptable(request, (MEDIA_TYPES[TURTLE], MEDIA_TYPES[JSON_LD]))
    graph_format = JSON_LD if graph_type == MEDIA_TYPES[JSON_LD] else TURTLE
    service = request.app[RDF_KEY]
    try:
        answer = await service.query(text, graph_format)
    except QueryTimeoutError as error:
        return result_response(503, "QueryTimeout", str(error))
    except QueryWorkersBusyError as error:
        retry = str(max(1, round(service.limits.time_budget)))
        return result_response(503, "ServiceUnavailable", f"{error}; try again later", headers={"Retry-After": retry})
    if (
        answer.content_type == SPARQL_RESULTS_JSON
        and _acceptable(request, (SPARQL_RESULTS_JSON, "application/json")) is None
    ):
        raise web.HTTPNotAcceptable(text=f"a {answer.form} query answers {SPARQL_RESULTS_JSON} only")
    if answer.content_type != SPARQL_RESULTS_JSON and graph_type is None:
        raise web.HTTPNotAcceptable(text=f"a {answer.form} query answers {', '.join(MEDIA_TYPES.values())}")
    return web.Response(body=answer.body, content_type=answer.content_type, charset="utf-8")

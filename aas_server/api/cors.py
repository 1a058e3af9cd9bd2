"""Cross-origin resource sharing for browser clients (Fetch standard, *CORS protocol*).

Off unless origins are configured: ``create_app(store, cors_origins=["https://dashboard.example"])``
(or ``["*"]``). Preflight ``OPTIONS`` requests from an allowed origin are answered ``204`` with the
allowed methods and headers; other responses from an allowed origin carry
``Access-Control-Allow-Origin`` and expose the ``X-AAS-*`` quality headers. Credentials
(cookies) are not allowed cross-origin; send tokens in ``Authorization``.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOWED_HEADERS = "Authorization, X-API-Key, Content-Type, Accept"
EXPOSED_HEADERS = "X-AAS-Quality, X-AAS-Quality-Reason, X-AAS-Source-Timestamp, X-AAS-Server-Timestamp, Location"
PREFLIGHT_MAX_AGE = "600"


def cors_middleware(origins: Collection[str]) -> Middleware:
    """A middleware answering preflights and tagging responses for ``origins`` (``"*"``: any)."""
    allow_any = "*" in origins

    def allowed_origin(request: web.Request) -> str | None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return None
        if allow_any:
            return "*"
        return origin if origin in origins else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = allowed_origin(request)
        if origin is None:
            return await handler(request)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return web.Response(
                status=204,
                headers={
                    hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                    hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
                    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
                    hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
                    hdrs.VARY: hdrs.ORIGIN,
                },
            )
        response = await handler(request)
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS
        if origin != "*":
            response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        return response

    return middleware

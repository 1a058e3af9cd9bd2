"""Routing of the Part 2 paths: a segment trie behind one aiohttp resource per base path.

aiohttp's own dispatcher tries the dynamic resources sharing a prefix one regular expression after
the other; with the ~150 Part 2 routes under ``/submodels`` and ``/shells`` that linear scan would
cost more than the rest of a small GET. ``ApiResource`` instead walks the path segments through a
trie (literal segments before ``{parameters}``), so resolving costs O(number of segments).
Handlers keep reading ``request.match_info``; unknown paths raise ``404`` and known paths with
another method ``405`` with an ``Allow`` header, both answered as ``Result`` by ``api/errors.py``.
``HEAD`` is served by the ``GET`` handler (aiohttp sends no body for it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractResource, ResourceRoute, UrlMappingMatchInfo, _InfoDict
from yarl import URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RouteDefinition:
    """One ``method`` on one ``path`` (relative to a base path, ``{name}`` for parameters)."""

    method: str
    path: str
    handler: Handler


class RouteTable:
    """Route definitions collected by decorators, as ``web.RouteTableDef`` does."""

    def __init__(self) -> None:
        self.definitions: list[RouteDefinition] = []

    def _decorator(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.definitions.append(RouteDefinition(method, path, handler))
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator(hdrs.METH_GET, path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator(hdrs.METH_POST, path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator(hdrs.METH_PUT, path)

    def patch(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator(hdrs.METH_PATCH, path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator(hdrs.METH_DELETE, path)

    def __iter__(self) -> Iterator[RouteDefinition]:
        return iter(self.definitions)


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    parameter: tuple[str, _Node] | None = None
    routes: dict[str, ResourceRoute] = field(default_factory=dict)


class ApiResource(AbstractResource):
    """Every route under one base path (``/api/v3.0``), resolved through a segment trie."""

    def __init__(self, prefix: str) -> None:
        super().__init__(name=None)
        self._prefix = prefix.rstrip("/")
        self._root = _Node()
        self._count = 0

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method`` on ``path`` (relative to the prefix) with ``handler``."""
        node = self._root
        for segment in path.strip("/").split("/") if path.strip("/") else []:
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if node.parameter is None:
                    node.parameter = (name, _Node())
                elif node.parameter[0] != name:
                    raise ValueError(f"{path}: parameter {{{name}}} clashes with {{{node.parameter[0]}}}")
                node = node.parameter[1]
            else:
                node = node.literals.setdefault(segment, _Node())
        if method in node.routes:
            raise ValueError(f"{method} {path} is registered twice")
        node.routes[method] = ResourceRoute(method, handler, self)
        self._count += 1

    def _match(self, node: _Node, segments: list[str], index: int, found: dict[str, str]) -> _Node | None:
        if index == len(segments):
            return node if node.routes else None
        segment = segments[index]
        literal = node.literals.get(segment)
        if literal is not None:
            matched = self._match(literal, segments, index + 1, found)
            if matched is not None:
                return matched
        if node.parameter is not None and segment:
            name, child = node.parameter
            matched = self._match(child, segments, index + 1, found)
            if matched is not None:
                found[name] = segment
                return matched
        return None

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        path: str = request.rel_url.path_safe
        if not path.startswith(self._prefix + "/"):
            return None, set()
        found: dict[str, str] = {}
        node = self._match(self._root, path[len(self._prefix) + 1 :].split("/"), 0, found)
        if node is None:
            return None, set()
        route = node.routes.get(request.method)
        if route is None and request.method == hdrs.METH_HEAD:
            route = node.routes.get(hdrs.METH_GET)
        allowed = set(node.routes)
        if hdrs.METH_GET in allowed:
            allowed.add(hdrs.METH_HEAD)
        if route is None:
            return None, allowed
        return UrlMappingMatchInfo(found, route), allowed

    @property
    def canonical(self) -> str:
        return self._prefix

    def url_for(self, **kwargs: str) -> URL:
        return URL.build(path=self._prefix, encoded=True)

    def add_prefix(self, prefix: str) -> None:
        self._prefix = prefix + self._prefix

    def get_info(self) -> _InfoDict:
        return {"prefix": self._prefix}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[ResourceRoute]:
        def walk(node: _Node) -> Iterator[ResourceRoute]:
            yield from node.routes.values()
            for child in node.literals.values():
                yield from walk(child)
            if node.parameter is not None:
                yield from walk(node.parameter[1])

        return walk(self._root)

"""What the route modules share: finding the addressed object, cached bodies, standard answers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from typing import TypeVar

from aiohttp import web
from basyx.aas import model

from aas_server.api.context import cache_of, catalog_of, store_of
from aas_server.api.deserialization import decode_model
from aas_server.api.serialization import bytes_response, decode_identifier, encode_identifier, read_json_body
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.model import paths

_Identifiable = TypeVar("_Identifiable", bound=model.Identifiable)


@functools.lru_cache(maxsize=8192)
def canonical_path(text: str) -> str:
    """The canonical form of an idShort path (the key of the store's value states); 400 if malformed."""
    return paths.format_id_short_path(paths.parse_id_short_path(text))


def shell_id_of(request: web.Request) -> str:
    return decode_identifier(request.match_info["aasIdentifier"], "aasIdentifier")


def references_submodel(shell: model.AssetAdministrationShell, submodel_id: str) -> bool:
    """Whether ``shell`` has a submodel reference whose first key is ``submodel_id``."""
    return any(reference.key and reference.key[0].value == submodel_id for reference in shell.submodel)


def submodel_id_of(request: web.Request) -> str:
    """The submodel addressed by the request; under ``/shells/{aasIdentifier}/submodels/...`` the shell
    must exist and reference it (``404`` otherwise)."""
    submodel_id = decode_identifier(request.match_info["submodelIdentifier"], "submodelIdentifier")
    shell_text = request.match_info.get("aasIdentifier")
    if shell_text is not None:
        shell = store_of(request).shell(decode_identifier(shell_text, "aasIdentifier"))
        if not references_submodel(shell, submodel_id):
            raise NotFoundError(f"shell {shell.id!r} has no reference to submodel {submodel_id!r}")
    return submodel_id


def element_path_of(request: web.Request) -> str:
    return canonical_path(request.match_info["idShortPath"])


def cached_body(request: web.Request, identifier: str, form: Hashable, build: Callable[[], bytes]) -> bytes:
    """The body for ``form`` of ``identifier`` from the response cache, built on a miss.

    The key includes the identifiable's content version, so a cached body is never stale.
    """
    store = store_of(request)
    return cache_of(request).get_or_build((identifier, store.content_version(identifier), form), build)


def no_content() -> web.Response:
    return web.Response(status=204)


def created(request: web.Request, body: bytes, location: str) -> web.Response:
    """``201`` with the created object and its ``Location``."""
    return bytes_response(body, status=201, headers={"Location": location})


def collection_location(request: web.Request, identifier: str) -> str:
    """The URL path of ``identifier`` inside the collection the request addressed (``/shells`` ...)."""
    return f"{request.path.rstrip('/')}/{encode_identifier(identifier)}"


def note_change(request: web.Request, identifier: str, identifiable: model.Identifiable | None) -> None:
    """Tell the paging catalog about a create/replace (``identifiable``) or delete (``None``) just made."""
    catalog_of(request).changed(identifier, identifiable)


async def read_identifiable(request: web.Request, expected: type[_Identifiable]) -> _Identifiable:
    """The request's JSON body as an identifiable of type ``expected`` (named by its modelType); ``400`` otherwise.

    Decoded in a worker thread, so that a large body does not hold the event loop.
    """
    return await asyncio.to_thread(decode_model, await read_json_body(request), expected, expected.__name__)


def check_body_id(identifiable: model.Identifiable, path_id: str) -> None:
    """A PUT's body must carry the identifier of its path (``400`` otherwise)."""
    if identifiable.id != path_id:
        raise InvalidRequestError(f"the id in the body ({identifiable.id!r}) differs from the path's ({path_id!r})")


async def create_identifiable(request: web.Request, identifiable: model.Identifiable) -> None:
    """Create ``identifiable`` in the store (``409`` if its id is taken) and tell the paging catalog."""
    await store_of(request).create(identifiable)
    note_change(request, identifiable.id, identifiable)


async def replace_identifiable(request: web.Request, identifiable: model.Identifiable) -> None:
    """Replace the stored identifiable of ``identifiable.id`` and tell the paging catalog."""
    await store_of(request).replace(identifiable)
    note_change(request, identifiable.id, identifiable)


async def put_identifiable(
    request: web.Request,
    identifiable: model.Identifiable,
    find: Callable[[str], object],
    created_body: Callable[[], bytes],
) -> web.Response:
    """Part 2 Put…ById: replace (``204``), or create (``201`` with ``created_body()``) where ``find`` of the id
    raises ``NotFoundError``."""
    try:
        find(identifiable.id)
    except NotFoundError:
        await create_identifiable(request, identifiable)
        return created(request, created_body(), request.path)
    await replace_identifiable(request, identifiable)
    return no_content()


async def delete_identifiable(request: web.Request, identifier: str, find: Callable[[str], object]) -> None:
    """Part 2 Delete…ById: ``find`` (``404`` for an unknown id, or one of another kind), delete, tell the catalog."""
    find(identifier)
    await store_of(request).delete(identifier)
    note_change(request, identifier, None)

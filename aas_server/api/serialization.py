"""JSON in and out of the AAS HTTP/REST API (IDTA-01002 Part 2, clause 11 *Serialization*).

- Identifiers in paths and query values are UTF-8 base64url (Part 2, 12.2): encoded without padding,
  accepted with or without it.
- The normal form of shells, submodels, elements and concept descriptions is the Part 1 JSON
  serialization produced by basyx-python-sdk's ``AASToJsonEncoder``; ``orjson`` writes the bytes.
- Serialization modifiers (Part 2, 11.3): ``level`` (``deep``, ``core``) and ``extent``
  (``withoutBlobValue`` by default, ``withBlobValue``); content ``$metadata`` and ``$value``
  (ValueOnly, Part 2, 11.4.3).

Also here: request body parsing with the ``415`` check, ``Accept`` negotiation (``406``), and the
plain JSON form PATCH merges into. Operation and Capability have no ValueOnly form (skipped).
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import hdrs, web
from basyx.aas import model

from aas_server.errors import InvalidRequestError
from aas_server.exchange.roundtrip import JsonEncoder
from aas_server.model import values

JSON_CONTENT_TYPE = "application/json"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")

# --- identifiers -------------------------------------------------------------------------------


def encode_identifier(identifier: str) -> str:
    """UTF-8 base64url without padding, as Part 2 (12.2) puts identifiers into paths."""
    return base64.urlsafe_b64encode(identifier.encode()).decode("ascii").rstrip("=")


@functools.lru_cache(maxsize=8192)
def decode_identifier(text: str, what: str = "identifier") -> str:
    """Decode a base64url identifier (padding optional); ``InvalidRequestError`` if it is not one."""
    if not text or not _BASE64URL.fullmatch(text):
        raise InvalidRequestError(f"{what} {text!r} is not base64url-encoded")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise InvalidRequestError(f"{what} {text!r} is not base64url-encoded: impossible length")
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"{what} {text!r} is not base64url-encoded UTF-8: {error}") from None
    if not decoded:
        raise InvalidRequestError(f"{what} is empty")
    return decoded


# --- modifiers ---------------------------------------------------------------------------------


class Level(enum.Enum):
    """Part 2, 11.3.2: ``deep`` returns the whole subtree, ``core`` only the direct children."""

    DEEP = "deep"
    CORE = "core"


class Extent(enum.Enum):
    """Part 2, 11.3.3: whether Blob values are included (the default is without)."""

    WITH_BLOB_VALUE = "withBlobValue"
    WITHOUT_BLOB_VALUE = "withoutBlobValue"


@dataclass(frozen=True, slots=True)
class Modifiers:
    """The serialization modifiers of one request.

    ``key`` is a short string naming the combination, for cache keys (a string hashes once; the
    dataclass and its enums would hash in Python on every lookup).
    """

    level: Level = Level.DEEP
    extent: Extent = Extent.WITHOUT_BLOB_VALUE
    key: str = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.level.value}/{self.extent.value}")

    @property
    def with_blob_value(self) -> bool:
        return self.extent is Extent.WITH_BLOB_VALUE


DEFAULT_MODIFIERS = Modifiers()
_MODIFIERS = {(level.value, extent.value): Modifiers(level, extent) for level in Level for extent in Extent}


def _enum_parameter(query: Mapping[str, str], name: str, kind: type[enum.Enum], default: Any) -> Any:
    text = query.get(name)
    if text is None:
        return default
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in kind)
        raise InvalidRequestError(f"query parameter {name}={text!r}: expected one of {allowed}") from None


def parse_modifiers(query: Mapping[str, str]) -> Modifiers:
    """Read ``level`` and ``extent`` from a query; ``InvalidRequestError`` for unknown values."""
    if not query:
        return DEFAULT_MODIFIERS
    level: Level = _enum_parameter(query, "level", Level, Level.DEEP)
    extent: Extent = _enum_parameter(query, "extent", Extent, Extent.WITHOUT_BLOB_VALUE)
    return _MODIFIERS[(level.value, extent.value)]


# --- normal (Part 1 JSON) form ----------------------------------------------------------------


class _Encoder(JsonEncoder):
    """``JsonEncoder`` (given order and lexical value forms kept) with its type dispatch cached per class and
    Blob values optional.

    Empty lists are left out: every array of the Part 1 JSON schema has ``minItems: 1`` (basyx
    writes ``specificAssetIds: []`` for an Entity without them, for example).
    """

    _serializers: ClassVar[dict[type, Callable[[Any], object]]] = {}

    def __init__(self, with_blob_value: bool) -> None:
        super().__init__()
        self.with_blob_value = with_blob_value

    def default(self, obj: object) -> object:
        serializer = self._serializers.get(type(obj))
        if serializer is None:
            for kind, candidate in self._get_aas_class_serializers().items():
                if isinstance(obj, kind):
                    serializer = self._serializers.setdefault(type(obj), candidate)
                    break
            else:
                return super().default(obj)
        data = serializer(obj)
        if isinstance(data, dict):
            empty = [key for key, value in data.items() if type(value) is list and not value]
            for key in empty:
                del data[key]
            if not self.with_blob_value and isinstance(obj, model.Blob):
                data.pop("value", None)
        return data


_ENCODERS = {True: _Encoder(with_blob_value=True), False: _Encoder(with_blob_value=False)}

_CHILD_KEYS = ("submodelElements", "statements", "annotations")
_CONTAINER_TYPES = frozenset({"SubmodelElementCollection", "SubmodelElementList"})


def _child_keys(data: dict[str, Any]) -> Iterable[str]:
    for key in _CHILD_KEYS:
        if key in data:
            yield key
    if data.get("modelType") in _CONTAINER_TYPES and "value" in data:
        yield "value"


def _without_children(data: dict[str, Any]) -> dict[str, Any]:
    for key in list(_child_keys(data)):
        del data[key]
    return data


def to_json_object(obj: model.Referable | model.Reference, modifiers: Modifiers = Modifiers()) -> Any:
    """The Part 1 JSON form of ``obj`` (nested basyx objects are left for ``dumps`` to encode).

    With ``level=core`` the direct children are kept and their own children dropped.
    """
    encoder = _ENCODERS[modifiers.with_blob_value]
    data = encoder.default(obj)
    if modifiers.level is Level.CORE and isinstance(data, dict):
        for key in list(_child_keys(data)):
            data[key] = [_without_children(encoder.default(child)) for child in data[key]]  # type: ignore[arg-type]
    return data


def dumps(data: object, modifiers: Modifiers = Modifiers()) -> bytes:
    """Serialize ``data`` (plain JSON values and basyx objects mixed) to JSON bytes."""
    return orjson.dumps(data, default=_ENCODERS[modifiers.with_blob_value].default)


def json_response(
    data: object,
    modifiers: Modifiers = Modifiers(),
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A ``200 application/json`` response (or ``status``) with ``data`` serialized by ``dumps``."""
    return web.Response(body=dumps(data, modifiers), status=status, content_type=JSON_CONTENT_TYPE, headers=headers)


# --- $metadata (Part 2, 11.4.2) -----------------------------------------------------------------

METADATA_KEYS = frozenset(
    {
        # Referable, HasExtensions, HasDataSpecification, HasSemantics, Qualifiable, HasKind
        "extensions", "category", "idShort", "displayName", "description", "modelType",
        "embeddedDataSpecifications", "semanticId", "supplementalSemanticIds", "qualifiers", "kind",
        # Identifiable
        "id", "administration",
        # PropertyMetadata, RangeMetadata
        "valueType",
        # SubmodelElementListMetadata
        "orderRelevant", "semanticIdListElement", "typeValueListElement", "valueTypeListElement",
        # BasicEventElementMetadata
        "direction", "state", "messageTopic", "messageBroker", "lastUpdate", "minInterval", "maxInterval",
        # mandatory attributes the IDTA engines require in every form (File/Blob, Entity, relationships, events)
        "contentType", "entityType", "globalAssetId", "specificAssetIds", "first", "second", "observed",
    }
)  # fmt: skip


def metadata(obj: model.Submodel | model.SubmodelElement) -> dict[str, Any]:
    """The ``$metadata`` form: the object's attributes without its value and children."""
    data = _ENCODERS[False].default(obj)
    assert isinstance(data, dict)
    return {key: item for key, item in data.items() if key in METADATA_KEYS}


# --- $value (ValueOnly, Part 2, 11.4.3) ----------------------------------------------------------


def _reference_value(reference: model.Reference | None) -> object:
    return None if reference is None else _ENCODERS[False].default(reference)


def _children_value(children: Iterable[model.SubmodelElement], modifiers: Modifiers, depth: int) -> dict[str, Any]:
    if modifiers.level is Level.CORE and depth > 1:
        return {}
    result: dict[str, Any] = {}
    for child in children:
        if _has_value(child):
            result[str(child.id_short)] = _element_value(child, modifiers, depth)
    return result


def _has_value(element: model.SubmodelElement) -> bool:
    return not isinstance(element, model.Operation | model.Capability)


def _element_value(element: model.SubmodelElement, modifiers: Modifiers, depth: int) -> Any:
    if isinstance(element, model.Property):
        return values.given_json_value(element, "value")
    if isinstance(element, model.MultiLanguageProperty):
        return [{language: text} for language, text in (element.value or {}).items()]
    if isinstance(element, model.Range):
        return {"min": values.given_json_value(element, "min"), "max": values.given_json_value(element, "max")}
    if isinstance(element, model.Blob):
        blob: dict[str, Any] = {"contentType": element.content_type}
        if modifiers.with_blob_value and element.value is not None:
            blob["value"] = base64.b64encode(element.value).decode("ascii")
        return blob
    if isinstance(element, model.File):
        file: dict[str, Any] = {"contentType": element.content_type}
        if element.value is not None:
            file["value"] = element.value
        return file
    if isinstance(element, model.ReferenceElement):
        return _reference_value(element.value)
    if isinstance(element, model.SubmodelElementCollection):
        return _children_value(element.value, modifiers, depth + 1)
    if isinstance(element, model.SubmodelElementList):
        if modifiers.level is Level.CORE and depth + 1 > 1:
            return []
        return [_element_value(item, modifiers, depth + 1) for item in element.value if _has_value(item)]
    if isinstance(element, model.Entity):
        entity: dict[str, Any] = {"statements": _children_value(element.statement, modifiers, depth + 1)}
        if element.entity_type is not None:
            entity["entityType"] = element.entity_type.name.replace("_", " ").title().replace(" ", "")
        if element.global_asset_id is not None:
            entity["globalAssetId"] = element.global_asset_id
        if element.specific_asset_id:
            entity["specificAssetIds"] = [{asset_id.name: asset_id.value} for asset_id in element.specific_asset_id]
        return entity
    if isinstance(element, model.AnnotatedRelationshipElement):
        return {
            "first": _reference_value(element.first),
            "second": _reference_value(element.second),
            "annotations": _children_value(element.annotation, modifiers, depth + 1),
        }
    if isinstance(element, model.RelationshipElement):
        return {"first": _reference_value(element.first), "second": _reference_value(element.second)}
    if isinstance(element, model.BasicEventElement):
        return {"observed": _reference_value(element.observed)}
    return None


def element_value(element: model.SubmodelElement, modifiers: Modifiers = Modifiers()) -> Any:
    """The ValueOnly form of one submodel element (``.../submodel-elements/{idShortPath}/$value``)."""
    return _element_value(element, modifiers, 0)


def submodel_value(submodel: model.Submodel, modifiers: Modifiers = Modifiers()) -> dict[str, Any]:
    """The ValueOnly form of a submodel: ``{idShort: value}`` over its elements (``/$value``)."""
    return _children_value(submodel.submodel_element, modifiers, 1)


# --- request bodies ------------------------------------------------------------------------------


JSON_BODY_TYPES = frozenset({"application/json", "application/octet-stream", "text/plain"})
"""Content types accepted for JSON bodies: JSON itself, and the generic types of raw-body clients (curl, aiohttp)."""


def check_json_content_type(request: web.Request) -> None:
    """``415`` when the request declares a body type that is not JSON (multipart, XML, form data, ...)."""
    if hdrs.CONTENT_TYPE not in request.headers:
        return
    content_type = request.content_type
    if content_type in JSON_BODY_TYPES or content_type.endswith("+json"):
        return
    raise web.HTTPUnsupportedMediaType(text=f"the body must be application/json, not {content_type!r}")


async def read_json_body(request: web.Request) -> Any:
    """Parse the request body as JSON; ``InvalidRequestError`` naming line and column if it is not.

    A declared non-JSON ``Content-Type`` is ``415``; bodies above the application's
    ``client_max_size`` raise ``413`` from aiohttp.
    """
    check_json_content_type(request)
    body = await request.read()
    if not body.strip():
        raise InvalidRequestError("the request body is empty; a JSON value is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(
            f"malformed JSON body at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


async def read_json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request body as a JSON object; ``400`` for any other JSON value."""
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequestError(f"the body must be a JSON object ({what}), not {type(body).__name__}")
    return body


# --- content negotiation (RFC 9110, 12.5.1) -------------------------------------------------------


def _accepted_ranges(header: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for item in header.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_range:
            ranges.append((media_range.lower(), quality))
    return ranges


def _matches(media_range: str, media_type: str) -> bool:
    if media_range in ("*/*", media_type):
        return True
    major, _, minor = media_range.partition("/")
    return minor == "*" and media_type.startswith(major + "/")


def negotiate(request: web.Request, offered: tuple[str, ...]) -> str:
    """The first of ``offered`` media types the ``Accept`` header admits (best quality first); ``406`` if none."""
    header = request.headers.get(hdrs.ACCEPT)
    if not header or header == "*/*" or header == offered[0]:
        return offered[0]
    best: tuple[float, int, str] | None = None
    ranges = _accepted_ranges(header)
    for position, media_type in enumerate(offered):
        quality = max((q for media_range, q in ranges if _matches(media_range, media_type)), default=0.0)
        if quality > 0 and (best is None or (quality, -position) > (best[0], best[1])):
            best = (quality, -position, media_type)
    if best is None:
        raise web.HTTPNotAcceptable(
            text=f"cannot answer with any of {header!r}; this resource offers {', '.join(offered)}"
        )
    return best[2]


def accept_json(request: web.Request) -> None:
    """``406`` unless the client accepts ``application/json``."""
    header = request.headers.get(hdrs.ACCEPT)
    if header and header != "*/*" and header != JSON_CONTENT_TYPE:
        negotiate(request, (JSON_CONTENT_TYPE,))


def plain_json(obj: model.Referable | model.Reference) -> dict[str, Any]:
    """The complete Part 1 JSON of ``obj`` as plain dicts and lists (Blob values included), for merging."""
    data: dict[str, Any] = orjson.loads(dumps(obj, Modifiers(extent=Extent.WITH_BLOB_VALUE)))
    return data


def bytes_response(body: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response from already serialised bytes."""
    return web.Response(body=body, status=status, content_type=JSON_CONTENT_TYPE, headers=headers)

"""Request bodies to basyx objects, validated by the metamodel (IDTA-01001 Part 1 JSON, Part 2 11.x).

Bodies are parsed with orjson (syntax errors name line and column) and then turned into basyx
objects bottom-up, as ``json.loads(..., cls=StrictAASFromJsonDecoder)`` would, while keeping the
JSON location of every object: a constraint violation (``AASConstraintViolation``), a missing or
mistyped attribute or an unknown ``modelType`` becomes ``InvalidRequestError`` (``400``) whose text
says where, e.g. ``$.submodelElements[2].value[0]: Property: ...``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from basyx.aas import model
from basyx.aas.adapter.json import StrictAASFromJsonDecoder

from aas_server.errors import InvalidRequestError

T = TypeVar("T")

_MESSAGE_LIMIT = 600
_DECODE_ERRORS = (LookupError, TypeError, ValueError, AttributeError, model.AASConstraintViolation)
"""What basyx's decoder raises on malformed input (``IndexError`` for an empty ``keys`` list, for one)."""


def _reason(error: BaseException) -> str:
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(cause) or type(cause).__name__
    if isinstance(cause, KeyError):
        text = f"missing attribute {text}"
    elif isinstance(cause, IndexError):
        text = "a list that needs at least one item is empty"
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


MAX_NESTING = 200
"""Deepest JSON nesting (objects and arrays) a body may have: 100 levels of nested elements, far more
than any model needs, and within what the serializer writes back (orjson stops at 255)."""


def _walk(data: Any, location: str, depth: int = 1) -> Any:
    if isinstance(data, list):
        if depth > MAX_NESTING:
            raise InvalidRequestError(f"{location}: JSON nested deeper than {MAX_NESTING} levels")
        return [_walk(item, f"{location}[{index}]", depth + 1) for index, item in enumerate(data)]
    if not isinstance(data, dict):
        return data
    if depth > MAX_NESTING:
        raise InvalidRequestError(f"{location}: JSON nested deeper than {MAX_NESTING} levels")
    converted = {key: _walk(value, f"{location}.{key}", depth + 1) for key, value in data.items()}
    try:
        return StrictAASFromJsonDecoder.object_hook(converted)
    except _DECODE_ERRORS as error:
        model_type = converted.get("modelType")
        raise InvalidRequestError(f"{location}: {model_type}: {_reason(error)}") from None


def decode_model(data: Any, expected: type[T], what: str) -> T:
    """The basyx object of type ``expected`` that the JSON value ``data`` describes; 400 otherwise."""
    decoded = _walk(data, "$")
    if not isinstance(decoded, expected):
        found = data.get("modelType") if isinstance(data, dict) else type(data).__name__
        raise InvalidRequestError(f"the body must be a {what} (with its modelType); found {found!r}")
    return decoded


def decode_element(data: Any) -> model.SubmodelElement:
    """A submodel element (any kind) from its JSON form."""
    element: model.SubmodelElement = decode_model(data, model.SubmodelElement, "SubmodelElement")  # type: ignore[type-abstract]
    return element


def decode_part(data: Any, construct: Any, what: str) -> Any:
    """Decode a JSON object without ``modelType`` (Reference, AssetInformation) with a decoder constructor."""
    if not isinstance(data, dict):
        raise InvalidRequestError(f"the body must be a JSON object ({what})")
    converted = {key: _walk(value, f"$.{key}", 2) for key, value in data.items()}
    try:
        return construct(converted)
    except _DECODE_ERRORS as error:
        raise InvalidRequestError(f"$: {what}: {_reason(error)}") from None


def decode_reference(data: Any) -> model.Reference:
    """A ``Reference`` from its JSON form."""
    reference: model.Reference = decode_part(data, StrictAASFromJsonDecoder._construct_reference, "Reference")
    return reference


def decode_asset_information(data: Any) -> model.AssetInformation:
    """An ``AssetInformation`` from its JSON form."""
    information: model.AssetInformation = decode_part(
        data, StrictAASFromJsonDecoder._construct_asset_information, "AssetInformation"
    )
    return information

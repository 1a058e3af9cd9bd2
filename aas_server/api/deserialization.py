"""Request bodies to basyx objects, validated by the metamodel (IDTA-01001 Part 1 JSON, Part 2 11.x).

Bodies are parsed with orjson (syntax errors name line and column) and then turned into basyx
objects bottom-up, as ``json.loads(..., cls=StrictAASFromJsonDecoder)`` would, while keeping the
JSON location of every object: a constraint violation (``AASConstraintViolation``), a missing or
mistyped attribute or an unknown ``modelType`` becomes ``InvalidRequestError`` (``400``) whose text
says where, e.g. ``$.submodelElements[2].value[0]: Property: ...``.

Every string is checked against AASd-130 (no NUL or other control characters but tab, line feed
and carriage return, no U+FFFE/U+FFFF): such a string could not be written to XML or AASX later.
File values and thumbnail paths are confined as package imports confine them
(``aas_server.exchange.repairs.normalise_file_reference``): a path that climbs above the package
root (``/../etc/passwd``), holds a backslash or NUL, or names a drive is ``400``, and so is one
that is not in its normal form (``/aasx/./a//b.pdf``), with the normal form in the message. URIs
with a scheme (``https:``, ``file:``) are kept as they are: the server never dereferences them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from basyx.aas import model

from aas_server.errors import InvalidRequestError
from aas_server.exchange.json_codec import FaithfulJsonDecoder
from aas_server.exchange.repairs import AASD_130_VIOLATION, normalise_file_reference
from aas_server.exchange.report import path_segment
from aas_server.model.values import value_error_reason

T = TypeVar("T")

_MESSAGE_LIMIT = 600
_DECODE_ERRORS = (
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    NotImplementedError,
    model.AASConstraintViolation,
)
"""What basyx's decoder raises on malformed input (``IndexError`` for an empty ``keys`` list,
``NotImplementedError`` for an ``xs:date`` year above 9999, for two)."""


def _reason(error: BaseException) -> str:
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(cause) or type(cause).__name__
    if isinstance(cause, KeyError):
        text = f"missing attribute {text}"
    elif isinstance(cause, IndexError):
        text = "a list that needs at least one item is empty"
    elif isinstance(cause, NotImplementedError):
        text = value_error_reason(cause)
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


MAX_NESTING = 200
"""Deepest JSON nesting (objects and arrays) a body may have: 100 levels of nested elements, far more
than any model needs, and within what the serializer writes back (orjson stops at 255)."""


def _walk(data: Any, location: str, depth: int = 1) -> Any:
    if isinstance(data, list):
        if depth > MAX_NESTING:
            raise InvalidRequestError(f"{location}: JSON nested deeper than {MAX_NESTING} levels")
        return [_walk(item, f"{location}[{index}]", depth + 1) for index, item in enumerate(data)]
    if isinstance(data, str):
        forbidden = AASD_130_VIOLATION.search(data)
        if forbidden is not None:
            raise InvalidRequestError(
                f"{location}: the string holds U+{ord(forbidden.group()):04X}, which AASd-130 does not allow"
            )
        return data
    if not isinstance(data, dict):
        return data
    if depth > MAX_NESTING:
        raise InvalidRequestError(f"{location}: JSON nested deeper than {MAX_NESTING} levels")
    converted = {key: _walk(value, f"{location}.{path_segment(key)}", depth + 1) for key, value in data.items()}
    try:
        decoded = FaithfulJsonDecoder.object_hook(converted)
    except _DECODE_ERRORS as error:
        model_type = converted.get("modelType")
        raise InvalidRequestError(f"{location}: {model_type}: {_reason(error)}") from None
    if isinstance(decoded, model.File) and decoded.value:
        check_file_reference(decoded.value, f"{location}.value")
    elif isinstance(decoded, model.AssetAdministrationShell):
        _check_thumbnail(decoded.asset_information, f"{location}.assetInformation")
    return decoded


def check_file_reference(value: str, location: str) -> None:
    """``InvalidRequestError`` unless ``value`` (a File value or thumbnail path) is confined and normalised."""
    normalised, reason = normalise_file_reference(value, None)
    if normalised is None:
        raise InvalidRequestError(f"{location}: file reference {_shortened(value)} {reason}")
    if normalised != value:
        raise InvalidRequestError(
            f"{location}: file reference {_shortened(value)} is not in normal form; use {_shortened(normalised)}"
        )


def _check_thumbnail(information: model.AssetInformation, location: str) -> None:
    thumbnail = information.default_thumbnail
    if thumbnail is not None and thumbnail.path:
        check_file_reference(thumbnail.path, f"{location}.defaultThumbnail.path")


def _shortened(value: str) -> str:
    return repr(value) if len(value) <= 200 else f"{value[:200]!r}... ({len(value)} characters)"


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
    reference: model.Reference = decode_part(data, FaithfulJsonDecoder._construct_reference, "Reference")
    return reference


def decode_asset_information(data: Any) -> model.AssetInformation:
    """An ``AssetInformation`` from its JSON form."""
    information: model.AssetInformation = decode_part(
        data, FaithfulJsonDecoder._construct_asset_information, "AssetInformation"
    )
    _check_thumbnail(information, "$")
    return information

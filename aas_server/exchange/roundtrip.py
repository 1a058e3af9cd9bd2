"""The JSON form the hub writes, and the check that an object reads back from it as itself.

Every object the hub stores, serves or exports is written in the Part 1 JSON form by
:class:`JsonEncoder` and must read back with basyx's strict decoder: an object that cannot is
refused on import and set aside (quarantined) when found in storage, so one bad object never stops
an export or a restart.

:class:`JsonEncoder` is basyx's ``AASToJsonEncoder`` with two places where basyx's form differs from
Part 1 (IDTA-01001 v3.1, *JSON serialization*) mended:

* a ValueReferencePair without ``valueId`` (optional since v3.1) is written without it, not as
  ``"valueId": null``, which no reader (basyx's included) accepts;
* the ``value`` of a Qualifier or Extension is written whenever it is set, also when it is ``0``,
  ``false`` or ``""``-like; basyx leaves out every falsy value (mended by ``FaithfulJsonEncoder``,
  which this class extends);
* an empty list (basyx writes ``specificAssetIds: []`` for an Entity without any) is left out:
  every array of the Part 1 JSON schema has ``minItems: 1``.
"""

from __future__ import annotations

import json
from typing import Any

from basyx.aas import model

from aas_server.errors import PackageError
from aas_server.exchange.json_codec import FaithfulJsonDecoder, FaithfulJsonEncoder

SET_LIKE_LISTS = frozenset({"submodels", "isCaseOf", "refersTo", "valueReferencePairs"})
"""Lists basyx keeps in sets: their order is not kept, so comparisons sort them."""


class JsonEncoder(FaithfulJsonEncoder):
    """``FaithfulJsonEncoder`` (given order and lexical forms kept) writing optional attributes as Part 1 does."""

    def default(self, obj: object) -> object:
        data = super().default(obj)
        if isinstance(data, dict):  # every array of the Part 1 JSON schema has minItems 1
            for key in [key for key, value in data.items() if type(value) is list and not value]:
                del data[key]
        return data

    @classmethod
    def _value_reference_pair_to_json(cls, obj: model.ValueReferencePair) -> dict[str, object]:
        data = super()._value_reference_pair_to_json(obj)
        if data.get("valueId") is None:
            data.pop("valueId", None)
        return data


DECODE_ERRORS: tuple[type[BaseException], ...] = (
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    NotImplementedError,
    RecursionError,
    model.AASConstraintViolation,
)
"""What basyx's encoder and decoders raise on an object or document they cannot handle."""


class RoundTripError(PackageError):
    """An object that does not read back from its own JSON form as itself."""


def canonical(document: Any) -> Any:
    """A JSON value with the set-like lists sorted, for comparing two serialisations of one object."""
    if isinstance(document, dict):
        result = {key: canonical(value) for key, value in document.items()}
        for key in SET_LIKE_LISTS & result.keys():
            if isinstance(result[key], list):
                result[key] = sorted(result[key], key=lambda item: json.dumps(item, sort_keys=True))
        return result
    if isinstance(document, list):
        return [canonical(item) for item in document]
    return document


def roundtrip_problem(identifiable: model.Identifiable) -> str | None:
    """Why ``identifiable`` does not write, read back and write again to the same JSON; ``None`` if it does."""
    try:
        written = json.loads(json.dumps(identifiable, cls=JsonEncoder))
    except DECODE_ERRORS as error:
        return f"cannot be serialised: {error or type(error).__name__}"
    try:
        again = json.loads(json.dumps(written), cls=FaithfulJsonDecoder)
    except DECODE_ERRORS as error:
        return f"its JSON form does not read back: {str(error).split(' >>> ')[0] or type(error).__name__}"
    if not isinstance(again, type(identifiable)):
        return f"its JSON form reads back as a {type(again).__name__}"
    try:
        rewritten = json.loads(json.dumps(again, cls=JsonEncoder))
    except DECODE_ERRORS as error:
        return f"its JSON form reads back as an object that cannot be serialised: {error or type(error).__name__}"
    if canonical(rewritten) != canonical(written):
        return "its JSON form reads back as a different object"
    return None


def check_roundtrip(identifiable: model.Identifiable) -> None:
    """Raise :class:`RoundTripError` (a ``PackageError``: REST answers 400) if the object does not read back as itself.

    Call it on every object before it is stored: an object that passes can be served, exported and
    loaded again after a restart.
    """
    problem = roundtrip_problem(identifiable)
    if problem is not None:
        raise RoundTripError(f"{type(identifiable).__name__} {identifiable.id!r}: {problem}")


def same_json(first: model.Identifiable, second: model.Identifiable) -> bool:
    """Whether two objects have the same JSON form (the lists basyx keeps in sets compared in any order)."""
    return bool(
        canonical(json.loads(json.dumps(first, cls=JsonEncoder)))
        == canonical(json.loads(json.dumps(second, cls=JsonEncoder)))
    )

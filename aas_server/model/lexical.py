"""What basyx-python-sdk's objects forget: the given order of set-like lists and lexical value forms.

Part 1 (IDTA-01001) serializes every list as an array and keeps its order; basyx holds some of
them as Python sets (a shell's ``submodels``, ``isCaseOf``, ``refersTo``, value lists) or builds
them through one (``specificAssetIds``), so their order changes from run to run with the string
hash seed. ``OrderedSet`` is a set in insertion order to hold them instead.

basyx turns XSD values into Python objects, so ``1007`` of an ``xs:double`` is written back as
``1007.0`` and ``2024-01-01T00:00:00Z`` as ``...+00:00``. ``remember`` keeps the lexical form
that was given beside the value (Property and Qualifier/Extension ``value``, Range ``min`` and
``max``); ``lexical`` answers it while the attribute still holds the value it denotes, and the
canonical form of the current value otherwise: a later write of another value replaces it. The
typed value is what OPC UA, arithmetic and comparisons use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any, TypeVar

from basyx.aas.model import datatypes

T = TypeVar("T")

_FORMS = "_aas_server_lexical_forms"
"""Instance attribute holding ``{attribute: (typed value, lexical form)}`` (copied with the object)."""


class OrderedSet(MutableSet[T]):
    """A set that iterates in insertion order (basyx's set-valued attributes, in the order given)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._items: dict[T, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: T) -> None:
        self._items[value] = None

    def discard(self, value: T) -> None:
        self._items.pop(value, None)

    def __repr__(self) -> str:
        return f"OrderedSet({list(self._items)!r})"


def keep_order(identifiable: object) -> None:
    """Hold a shell's ``submodel`` and a concept description's ``is_case_of`` in ``OrderedSet`` from now on.

    A plain ``set`` (an object built in code) has no order to keep; it is frozen in its current one,
    and references added later come after it.
    """
    for attribute in ("submodel", "is_case_of"):
        items = getattr(identifiable, attribute, None)
        if isinstance(items, set | frozenset):
            setattr(identifiable, attribute, OrderedSet(items))


def remember(obj: object, attribute: str, text: str) -> None:
    """Keep ``text`` as the lexical form of ``obj.<attribute>`` (which holds the value it denotes)."""
    forms: dict[str, tuple[Any, str]] = vars(obj).setdefault(_FORMS, {})
    forms[attribute] = (getattr(obj, attribute), text)


def given_form(obj: object, attribute: str) -> str | None:
    """The lexical form given for ``obj.<attribute>`` if the attribute still holds that value, else ``None``."""
    forms: dict[str, tuple[Any, str]] | None = vars(obj).get(_FORMS)
    if not forms:
        return None
    entry = forms.get(attribute)
    if entry is None:
        return None
    typed, text = entry
    current = getattr(obj, attribute)
    if current is typed or (type(current) is type(typed) and current == typed):
        return text
    return None


def lexical(obj: object, attribute: str) -> str | None:
    """The lexical form of ``obj.<attribute>``: as given while the value is unchanged, else canonical."""
    text = given_form(obj, attribute)
    if text is not None:
        return text
    value = getattr(obj, attribute)
    return None if value is None else datatypes.xsd_repr(value)

"""Cursor paging of list responses (IDTA-01002 Part 2, 11.5 *Pagination*; ``PagedResult`` schema).

Every list response is ``{"paging_metadata": {"cursor": ...}, "result": [...]}``; ``cursor`` appears
only when more items follow. A cursor is opaque to clients; here it is the base64url of the last
returned item's key, so a page costs O(log n + page size), not a scan of the repository:

- identifiables are held in an ``IdentifiableIndex``: insertion order, a position map by id, and
  posting lists (sorted positions) per filter key (idShort, asset id, semantic id). The ``Catalog``
  rebuilds an index only when ``TwinStore.version`` changes, i.e. once per model change.
- a submodel's elements are paged by position inside the submodel (``islice`` on its namespace).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

from basyx.aas import model

from aas_server.api.serialization import decode_identifier, encode_identifier
from aas_server.errors import InvalidRequestError
from aas_server.store.twin_store import TwinStore

ItemT = TypeVar("ItemT")
FilterKey = tuple[str, ...]


IdentifiableT = TypeVar("IdentifiableT", bound=model.Identifiable)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``limit`` and ``cursor`` of a list request (the cursor already decoded to text)."""

    limit: int | None = None
    cursor: str | None = None


def parse_page_request(query: Mapping[str, str]) -> PageRequest:
    """Read ``limit`` (integer >= 1) and ``cursor`` from a query; ``InvalidRequestError`` when bad."""
    limit: int | None = None
    text = query.get("limit")
    if text is not None:
        try:
            limit = int(text)
        except ValueError:
            raise InvalidRequestError(f"query parameter limit={text!r} is not an integer") from None
        if limit < 1:
            raise InvalidRequestError(f"query parameter limit={limit} must be at least 1")
    cursor_text = query.get("cursor")
    cursor = decode_identifier(cursor_text, "cursor") if cursor_text is not None else None
    return PageRequest(limit, cursor)


@dataclass(slots=True)
class Page(Generic[ItemT]):
    """One page of items and the (raw, not yet encoded) cursor of the next page, if any."""

    items: list[ItemT]
    next_cursor: str | None = None

    def to_json(self, serialize: Callable[[ItemT], Any]) -> dict[str, Any]:
        """The ``PagedResult`` body with each item serialized by ``serialize``."""
        paging_metadata: dict[str, str] = {}
        if self.next_cursor is not None:
            paging_metadata["cursor"] = encode_identifier(self.next_cursor)
        return {"paging_metadata": paging_metadata, "result": [serialize(item) for item in self.items]}


def take_page(candidates: Iterator[ItemT], limit: int | None, cursor_of: Callable[[ItemT], str]) -> Page[ItemT]:
    """Take up to ``limit`` items from ``candidates``; set a cursor when at least one more follows."""
    items: list[ItemT] = []
    for item in candidates:
        if limit is not None and len(items) == limit:
            return Page(items, cursor_of(items[-1]))
        items.append(item)
    return Page(items)


@dataclass(slots=True)
class IdentifiableIndex(Generic[IdentifiableT]):
    """Identifiables in insertion order with a position map and per-key posting lists."""

    items: list[IdentifiableT]
    keys_of: Callable[[IdentifiableT], Iterable[FilterKey]]
    _positions: dict[str, int] = field(default_factory=dict)
    _postings: dict[FilterKey, list[int]] = field(default_factory=dict)
    _item_keys: list[frozenset[FilterKey]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for position, item in enumerate(self.items):
            self._positions[item.id] = position
            keys = frozenset(self.keys_of(item))
            self._item_keys.append(keys)
            for key in keys:
                self._postings.setdefault(key, []).append(position)

    def page(
        self,
        request: PageRequest,
        keys: Sequence[FilterKey] = (),
        predicate: Callable[[IdentifiableT], bool] | None = None,
    ) -> Page[IdentifiableT]:
        """The page after ``request.cursor`` of items having every key in ``keys`` and passing ``predicate``."""
        start = 0
        if request.cursor is not None:
            try:
                start = self._positions[request.cursor] + 1
            except KeyError:
                raise InvalidRequestError("the cursor does not name a position in this listing") from None
        positions: Iterable[int]
        if keys:
            postings = min((self._postings.get(key, []) for key in keys), key=len)
            positions = (postings[index] for index in range(bisect.bisect_left(postings, start), len(postings)))
        else:
            positions = range(start, len(self.items))
        wanted = frozenset(keys)

        def candidates() -> Iterator[IdentifiableT]:
            for position in positions:
                if wanted <= self._item_keys[position]:
                    item = self.items[position]
                    if predicate is None or predicate(item):
                        yield item

        return take_page(candidates(), request.limit, lambda item: str(item.id))


def shell_keys(shell: model.AssetAdministrationShell) -> Iterator[FilterKey]:
    """Filter keys of a shell: its idShort and each asset id (``globalAssetId`` and specific ones)."""
    if shell.id_short:
        yield ("idShort", shell.id_short)
    information = shell.asset_information
    if information.global_asset_id:
        yield ("assetId", "globalAssetId", information.global_asset_id)
    for asset_id in information.specific_asset_id:
        yield ("assetId", asset_id.name, asset_id.value)


def submodel_keys(submodel: model.Submodel) -> Iterator[FilterKey]:
    """Filter keys of a submodel: its idShort and each key value of its semanticId."""
    if submodel.id_short:
        yield ("idShort", submodel.id_short)
    if submodel.semantic_id is not None:
        for key in submodel.semantic_id.key:
            yield ("semanticId", key.value)


def concept_description_keys(concept_description: model.ConceptDescription) -> Iterator[FilterKey]:
    """Filter keys of a concept description: its idShort."""
    if concept_description.id_short:
        yield ("idShort", concept_description.id_short)


class Catalog:
    """Indexes over a store's shells, submodels and concept descriptions, rebuilt per store version."""

    def __init__(self, store: TwinStore) -> None:
        self._store = store
        self._cache: dict[str, tuple[int, Any]] = {}

    def _index(
        self,
        name: str,
        load: Callable[[], list[IdentifiableT]],
        keys_of: Callable[[IdentifiableT], Iterable[FilterKey]],
    ) -> IdentifiableIndex[IdentifiableT]:
        cached = self._cache.get(name)
        if cached is not None and cached[0] == self._store.version:
            index: IdentifiableIndex[IdentifiableT] = cached[1]
            return index
        index = IdentifiableIndex(load(), keys_of)
        self._cache[name] = (self._store.version, index)
        return index

    def shells(self) -> IdentifiableIndex[model.AssetAdministrationShell]:
        return self._index("shells", self._store.shells, shell_keys)

    def submodels(self) -> IdentifiableIndex[model.Submodel]:
        return self._index("submodels", self._store.submodels, submodel_keys)

    def concept_descriptions(self) -> IdentifiableIndex[model.ConceptDescription]:
        return self._index("concept_descriptions", self._store.concept_descriptions, concept_description_keys)


def page_sorted(items: Iterable[ItemT], request: PageRequest, sort_key: Callable[[ItemT], str]) -> Page[ItemT]:
    """Page a small unordered collection (a shell's submodel references) by a string sort key."""
    ordered = sorted(items, key=sort_key)
    start = 0
    if request.cursor is not None:
        start = bisect.bisect_right([sort_key(item) for item in ordered], request.cursor)
    return take_page(iter(ordered[start:]), request.limit, sort_key)


def page_positions(items: Collection[ItemT], request: PageRequest, name_of: Callable[[ItemT], Hashable]) -> Page[ItemT]:
    """Page ordered items (a submodel's elements) by position; the cursor is ``"<position>:<name>"``.

    The name guards against the collection changing between pages: a cursor whose position no
    longer holds that name is ``InvalidRequestError``.
    """
    start = 0
    if request.cursor is not None:
        position_text, _, name = request.cursor.partition(":")
        if not position_text.isdigit():
            raise InvalidRequestError("the cursor does not name a position in this listing")
        start = int(position_text)
        previous = next(islice(items, start - 1, start), None) if start > 0 else None
        if previous is None or str(name_of(previous)) != name:
            raise InvalidRequestError("the listing changed since the cursor was issued; start again")
    tail = islice(items, start, None)
    page: Page[ItemT] = take_page(tail, request.limit, lambda item: "")
    if page.next_cursor is not None:
        page.next_cursor = f"{start + len(page.items)}:{name_of(page.items[-1])}"
    return page

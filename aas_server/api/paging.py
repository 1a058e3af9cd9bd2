"""Cursor paging of list responses (IDTA-01002 Part 2, 11.5 *Pagination*; ``PagedResult`` schema).

Every list response is ``{"paging_metadata": {"cursor": ...}, "result": [...]}``; ``cursor`` appears
only when more items follow. A cursor is opaque to clients; here it is the base64url of the last
returned item's position and key, so a page costs O(log n + page size), not a scan of the repository:

- identifiables are held in an ``IdentifiableIndex``: insertion order, a position map by id, and
  posting lists (sorted positions) per filter key (idShort, asset id, semantic id). The API's own
  creates, replaces and deletes update the indexes in place (``Catalog.changed``; a delete leaves a
  hole, so older cursors stay valid); other changes of ``TwinStore.version`` rebuild them once.
- a submodel's elements are paged by position inside the submodel (``islice`` on its namespace).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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

    def to_bytes(self, item_bytes: Callable[[ItemT], bytes]) -> bytes:
        """The ``PagedResult`` body spliced from each item's (cached) JSON bytes."""
        return self.result_bytes(b"[" + b",".join(map(item_bytes, self.items)) + b"]")

    def result_bytes(self, result: bytes) -> bytes:
        """The ``PagedResult`` body of this page with ``result`` (JSON bytes) as its ``result``."""
        metadata = (
            b"{}" if self.next_cursor is None else b'{"cursor":"' + encode_identifier(self.next_cursor).encode() + b'"}'
        )
        return b'{"paging_metadata":' + metadata + b',"result":' + result + b"}"


def take_page(candidates: Iterator[ItemT], limit: int | None, cursor_of: Callable[[ItemT], str]) -> Page[ItemT]:
    """Take up to ``limit`` items from ``candidates``; set a cursor when at least one more follows."""
    items: list[ItemT] = []
    for item in candidates:
        if limit is not None and len(items) == limit:
            return Page(items, cursor_of(items[-1]))
        items.append(item)
    return Page(items)


class IdentifiableIndex(Generic[IdentifiableT]):
    """Identifiables in insertion order with a position map and per-key posting lists.

    Kept up to date incrementally by the API's own changes (``append``, ``replace``, ``remove``);
    a removed item leaves a hole so that positions, and with them the cursors already handed out,
    stay valid. A cursor is ``"<position>:<id>"`` of the last item returned.
    """

    def __init__(self, items: Iterable[IdentifiableT], keys_of: Callable[[IdentifiableT], Iterable[FilterKey]]) -> None:
        self.keys_of = keys_of
        self.items: list[IdentifiableT | None] = []
        self._positions: dict[str, int] = {}
        self._postings: dict[FilterKey, list[int]] = {}
        self._item_keys: list[frozenset[FilterKey]] = []
        self.holes = 0
        for item in items:
            self.append(item)

    def __len__(self) -> int:
        return len(self._positions)

    def append(self, item: IdentifiableT) -> None:
        position = len(self.items)
        self.items.append(item)
        self._positions[item.id] = position
        keys = frozenset(self.keys_of(item))
        self._item_keys.append(keys)
        for key in keys:
            self._postings.setdefault(key, []).append(position)

    def _unpost(self, position: int) -> None:
        for key in self._item_keys[position]:
            postings = self._postings[key]
            del postings[bisect.bisect_left(postings, position)]
            if not postings:
                del self._postings[key]
        self._item_keys[position] = frozenset()

    def replace(self, item: IdentifiableT) -> None:
        """Put ``item`` at the position of the item with its id (keys recomputed)."""
        position = self._positions[item.id]
        self._unpost(position)
        self.items[position] = item
        keys = frozenset(self.keys_of(item))
        self._item_keys[position] = keys
        for key in keys:
            bisect.insort(self._postings.setdefault(key, []), position)

    def remove(self, identifier: str) -> None:
        position = self._positions.pop(identifier)
        self._unpost(position)
        self.items[position] = None
        self.holes += 1

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._positions

    def _start(self, cursor: str) -> int:
        head, separator, identifier = cursor.partition(":")
        if separator and head.isdigit():
            position = int(head)
            if position < len(self.items):
                item = self.items[position]
                if item is None or item.id == identifier:
                    return position + 1
        else:
            identifier = cursor
        found = self._positions.get(identifier)
        if found is None:
            raise InvalidRequestError("the cursor does not name a position in this listing")
        return found + 1

    def page(
        self,
        request: PageRequest,
        keys: Sequence[FilterKey] = (),
        predicate: Callable[[IdentifiableT], bool] | None = None,
    ) -> Page[IdentifiableT]:
        """The page after ``request.cursor`` of items having every key in ``keys`` and passing ``predicate``."""
        start = 0 if request.cursor is None else self._start(request.cursor)
        positions: Iterable[int]
        if keys:
            postings = min((self._postings.get(key, []) for key in keys), key=len)
            positions = (postings[index] for index in range(bisect.bisect_left(postings, start), len(postings)))
        else:
            positions = range(start, len(self.items))
        wanted = frozenset(keys)
        items = self.items
        item_keys = self._item_keys

        def candidates() -> Iterator[tuple[int, IdentifiableT]]:
            for position in positions:
                item = items[position]
                if item is not None and wanted <= item_keys[position] and (predicate is None or predicate(item)):
                    yield position, item

        page = take_page(candidates(), request.limit, lambda entry: f"{entry[0]}:{entry[1].id}")
        return Page([item for _, item in page.items], page.next_cursor)


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
    """Indexes over a store's shells, submodels and concept descriptions.

    Rebuilt from the store when ``TwinStore.version`` moved on by changes the catalog was not told
    about; the API's own creates, replaces and deletes are applied incrementally (``changed``), so
    a write does not make the next page cost O(repository).
    """

    def __init__(self, store: TwinStore) -> None:
        self._store = store
        self._version = -1
        self._shells: IdentifiableIndex[model.AssetAdministrationShell] = IdentifiableIndex([], shell_keys)
        self._submodels: IdentifiableIndex[model.Submodel] = IdentifiableIndex([], submodel_keys)
        self._concept_descriptions: IdentifiableIndex[model.ConceptDescription] = IdentifiableIndex(
            [], concept_description_keys
        )

    def _sync(self) -> None:
        if self._version == self._store.version:
            return
        self._shells = IdentifiableIndex(self._store.shells(), shell_keys)
        self._submodels = IdentifiableIndex(self._store.submodels(), submodel_keys)
        self._concept_descriptions = IdentifiableIndex(self._store.concept_descriptions(), concept_description_keys)
        self._version = self._store.version

    def _index_for(self, identifiable: model.Identifiable) -> IdentifiableIndex[Any]:
        if isinstance(identifiable, model.AssetAdministrationShell):
            return self._shells
        if isinstance(identifiable, model.Submodel):
            return self._submodels
        return self._concept_descriptions

    def changed(self, identifier: str, identifiable: model.Identifiable | None) -> None:
        """Note that the API just created/replaced (``identifiable``) or deleted (``None``) ``identifier``.

        Applied in place when it is the only change since the catalog last matched the store;
        otherwise the next access rebuilds.
        """
        if self._version + 1 != self._store.version:
            return
        self._version = self._store.version
        indexes: tuple[IdentifiableIndex[Any], ...] = (self._shells, self._submodels, self._concept_descriptions)
        if identifiable is None:
            for index in indexes:
                if identifier in index:
                    index.remove(identifier)
                    if index.holes > max(1024, len(index)):
                        self._version = -1
            return
        index = self._index_for(identifiable)
        if identifier in index:
            index.replace(identifiable)
        else:
            index.append(identifiable)

    def shells(self) -> IdentifiableIndex[model.AssetAdministrationShell]:
        self._sync()
        return self._shells

    def submodels(self) -> IdentifiableIndex[model.Submodel]:
        self._sync()
        return self._submodels

    def concept_descriptions(self) -> IdentifiableIndex[model.ConceptDescription]:
        self._sync()
        return self._concept_descriptions


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

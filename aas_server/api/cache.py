"""A bounded LRU cache of serialised response bodies.

Keys carry the identifiable's ``TwinStore.content_version``, so any change of the identifiable
(values included) makes its old entries unreachable; they age out of the LRU. Nothing is
invalidated explicitly, and a cache hit costs one dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_MAX_ENTRIES = 20_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
LARGEST_CACHED_BODY = 1024 * 1024
"""Bodies above this size are not kept (they would push out thousands of small ones)."""


class ResponseCache:
    """Serialised bodies keyed by ``(identifier, content_version, form, ...)``, least recently used out first."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        body = self._entries.get(key)
        if body is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if self.max_entries <= 0 or len(body) > LARGEST_CACHED_BODY:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        self._entries[key] = body
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def get_or_build(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The cached body for ``key``, built (and kept) on a miss."""
        body = self.get(key)
        if body is None:
            body = build()
            self.put(key, body)
        return body

    def __len__(self) -> int:
        return len(self._entries)

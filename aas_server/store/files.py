"""Files beside the model: attachments of File elements and thumbnails, and uploaded AASX packages.

Small asynchronous protocols with in-memory implementations; ``persistence`` implements them on
SQLite so that files survive a restart like the model does. Keys are package paths
(``/aasx/files/manual.pdf``), as an AASX keeps supplementary files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Attachment:
    """The bytes of one file and their media type."""

    content: bytes
    content_type: str = DEFAULT_CONTENT_TYPE


class AttachmentStore(Protocol):
    """Attachments by package path (``/aasx/files/manual.pdf``)."""

    async def get(self, path: str) -> Attachment | None: ...

    async def put(self, path: str, attachment: Attachment) -> None: ...

    async def delete(self, path: str) -> None: ...


class MemoryAttachmentStore:
    """An ``AttachmentStore`` in memory (lost on restart; see ``docs/rest.md``)."""

    def __init__(self) -> None:
        self._files: dict[str, Attachment] = {}

    async def get(self, path: str) -> Attachment | None:
        return self._files.get(path)

    async def put(self, path: str, attachment: Attachment) -> None:
        self._files[path] = attachment

    async def delete(self, path: str) -> None:
        self._files.pop(path, None)

    def paths(self) -> Iterable[str]:
        return tuple(self._files)


@dataclass(frozen=True, slots=True)
class StoredPackage:
    """One package file as uploaded, with the shells it holds (``PackageDescription``)."""

    package_id: str
    file_name: str
    content: bytes
    aas_ids: tuple[str, ...]


class PackageStore(Protocol):
    """Package files by id, in upload order."""

    async def packages(self) -> Sequence[StoredPackage]: ...

    async def get(self, package_id: str) -> StoredPackage | None: ...

    async def put(self, package: StoredPackage) -> None: ...

    async def delete(self, package_id: str) -> None: ...


class MemoryPackageStore:
    """A ``PackageStore`` in memory (lost on restart; see ``docs/rest.md``)."""

    def __init__(self) -> None:
        self._packages: dict[str, StoredPackage] = {}

    async def packages(self) -> Sequence[StoredPackage]:
        return list(self._packages.values())

    async def get(self, package_id: str) -> StoredPackage | None:
        return self._packages.get(package_id)

    async def put(self, package: StoredPackage) -> None:
        self._packages[package.package_id] = package

    async def delete(self, package_id: str) -> None:
        self._packages.pop(package_id, None)

"""Files beside the model: attachments of File elements and thumbnails, and uploaded AASX packages.

Small asynchronous protocols with in-memory implementations; ``persistence`` implements them on
SQLite so that files survive a restart like the model does.

Stored bytes belong to their owner: the File element (submodel id and idShort path) or the shell
(its thumbnail) whose value names them. The ``AttachmentStore`` key is :func:`owned_key` of owner and
package path (``/aasx/files/manual.pdf``, as an AASX keeps supplementary files), so an element finds
only the bytes stored for itself: pointing a File's value at another element's path reaches nothing,
and two packages with the same supplementary path keep both files, each reachable from its own
element. A package export writes each owner's bytes under its path, renaming a path that two owners
fill with different bytes (:func:`package_files`).

Bytes follow their owner's idShort path: deleting an item of a SubmodelElementList moves the bytes
of the items after it (``api.attachments.list_item_moves``); left out: a File moved otherwise (a
``PUT`` that reorders a list) no longer finds its bytes and needs a new upload.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from basyx.aas import model

from aas_server.model import paths

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


def element_owner(submodel_id: str, id_short_path: str) -> str:
    """The owner name of the bytes behind the File element at ``id_short_path`` of a submodel."""
    return f"element\x00{submodel_id}\x00{id_short_path}"


def thumbnail_owner(shell_id: str) -> str:
    """The owner name of a shell's thumbnail bytes."""
    return f"thumbnail\x00{shell_id}"


def owned_key(owner: str, path: str) -> str:
    """The ``AttachmentStore`` key of the bytes ``owner`` keeps under package path ``path``."""
    return f"/owned/{hashlib.sha256(owner.encode()).hexdigest()[:32]}{path}"


def is_package_path(value: str | None) -> bool:
    """Whether a File value or thumbnail path names a file in the package (not a URI)."""
    return bool(value) and str(value).startswith("/")


@dataclass(frozen=True, slots=True)
class FileReference:
    """A File element or a thumbnail naming a package path; ``holder`` is the object whose value names it."""

    owner: str
    path: str
    holder: model.File | model.Resource


def file_references(identifiables: Iterable[model.Identifiable]) -> list[FileReference]:
    """Every File element and shell thumbnail among ``identifiables`` that names a package path."""
    found: list[FileReference] = []
    for identifiable in identifiables:
        if isinstance(identifiable, model.Submodel):
            for id_short_path, element in paths.walk(identifiable):
                if isinstance(element, model.File) and element.value and is_package_path(element.value):
                    found.append(FileReference(element_owner(identifiable.id, id_short_path), element.value, element))
        elif isinstance(identifiable, model.AssetAdministrationShell):
            thumbnail = identifiable.asset_information.default_thumbnail
            if thumbnail is not None and is_package_path(thumbnail.path):
                found.append(FileReference(thumbnail_owner(identifiable.id), thumbnail.path, thumbnail))
    return found


T = TypeVar("T")


def owned_files(identifiables: Iterable[model.Identifiable], files: Mapping[str, T]) -> dict[str, T]:
    """The supplementary ``files`` of a package (by package path) keyed for the objects that name them.

    A file named by two elements is stored for each; a file no element names is not stored (the
    package file itself keeps it).
    """
    return {
        owned_key(reference.owner, reference.path): files[reference.path]
        for reference in file_references(identifiables)
        if reference.path in files
    }


def package_files(references: Iterable[tuple[FileReference, T | None]]) -> tuple[dict[str, T], dict[str, str]]:
    """The supplementary files of an export by package path, from each reference's stored content.

    Returns the files and the new paths of owners whose path another owner fills with different
    content (``{owner: path}``; apply them to the exported copies with :func:`rename_files`).
    """
    files: dict[str, T] = {}
    renamed: dict[str, str] = {}
    for reference, content in references:
        if content is None:
            continue
        path = reference.path
        if path in files and files[path] != content:
            directory, name = posixpath.split(path)
            path = f"{directory}/{hashlib.sha256(reference.owner.encode()).hexdigest()[:16]}/{name}"
            renamed[reference.owner] = path
        files.setdefault(path, content)
    return files, renamed


def rename_files(identifiables: Iterable[model.Identifiable], renamed: Mapping[str, str]) -> None:
    """Point the File elements and thumbnails of ``renamed`` owners at their new paths (on copies only)."""
    if not renamed:
        return
    for reference in file_references(identifiables):
        path = renamed.get(reference.owner)
        if path is None:
            continue
        if isinstance(reference.holder, model.File):
            reference.holder.value = path
        else:
            reference.holder.path = path


def stored_package_files(identifiables: list[model.Identifiable], stored: Mapping[str, T]) -> dict[str, T]:
    """The supplementary files of an export of ``identifiables`` by package path, from all ``stored`` files by
    key (bytes kept under a bare package path by older versions count for every File naming it); paths that
    two owners fill differently are renamed in ``identifiables`` (:func:`package_files`)."""
    files, renamed = package_files(
        (reference, stored.get(owned_key(reference.owner, reference.path), stored.get(reference.path)))
        for reference in file_references(identifiables)
    )
    rename_files(identifiables, renamed)
    return files


async def claim_unowned_files(attachments: AttachmentStore, identifiables: Iterable[model.Identifiable]) -> int:
    """Store bytes kept under a bare package path (before ownership, or by ``aas-server import`` of old) for the
    File elements and thumbnails naming it; the number of files claimed. Run once at start, before serving."""
    claimed = 0
    for reference in file_references(identifiables):
        key = owned_key(reference.owner, reference.path)
        if await attachments.get(key) is not None:
            continue
        legacy = await attachments.get(reference.path)
        if legacy is not None:
            await attachments.put(key, legacy)
            claimed += 1
    return claimed


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

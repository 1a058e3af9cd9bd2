"""AASX packages (IDTA-01005 Part 5, an OPC/ECMA-376-2 zip): checked before anything is unpacked.

The zip's central directory is checked first: entry count, declared sizes (each part, total),
compression ratio, encryption, and part names (no absolute names, ``..``, backslashes, drive letters,
empty segments or duplicates). The OPC parts basyx's reader parses itself (``[Content_Types].xml``,
``*.rels``) are checked to have no DOCTYPE. Only then is the package opened with basyx's
``AASXReader`` to follow the relationships (aasx-origin, aas-spec, aas-spec-split); the AAS parts
(XML or JSON) go through the same safe parsing and repairs as standalone files. Python's zipfile
stops reading a member at its declared size, so the checked sizes bound the memory used.
"""

from __future__ import annotations

import io
import posixpath
import re
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from basyx.aas import model
from basyx.aas.adapter import aasx

from aas_server.errors import PackageError
from aas_server.exchange.report import ImportReport, PackageLimits
from aas_server.exchange.xml_tree import parse_xml
from aas_server.model import paths

ZIP_MAGIC = b"PK\x03\x04"
_ORIGIN_TYPES = (aasx.RELATIONSHIP_TYPE_AASX_ORIGIN, "http://www.admin-shell.io/aasx/relationships/aasx-origin")
_SPEC_TYPES = (aasx.RELATIONSHIP_TYPE_AAS_SPEC, "http://www.admin-shell.io/aasx/relationships/aas-spec")
_SPLIT_TYPES = (aasx.RELATIONSHIP_TYPE_AAS_SPEC_SPLIT, "http://www.admin-shell.io/aasx/relationships/aas-spec-split")
_DRIVE = re.compile(r"^[A-Za-z]:")
_OPC_XML_PARTS_MAX = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AasPart:
    """An AAS document part of a package: its part name, bytes and content type."""

    name: str
    data: bytes
    content_type: str


def check_archive(data: bytes, limits: PackageLimits) -> zipfile.ZipFile:
    """Check a zip's directory against ``limits`` and its names for traversal; ``PackageError`` if not safe."""
    if len(data) > limits.max_package_bytes:
        raise PackageError(f"package is {len(data)} bytes, more than the limit of {limits.max_package_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as error:
        raise PackageError(f"not a readable zip archive: {error}") from None
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise PackageError(f"package has {len(entries)} entries, more than the limit of {limits.max_entries}")
    total = 0
    names: set[str] = set()
    for entry in entries:
        name = entry.filename
        problem = _name_problem(name)
        if problem:
            raise PackageError(f"package entry {name!r} {problem}; the package is not unpacked")
        if name.lower() in names:
            raise PackageError(f"package entry {name!r} occurs twice")
        names.add(name.lower())
        if entry.flag_bits & 0x1:
            raise PackageError(f"package entry {name!r} is encrypted")
        if entry.file_size > limits.max_part_bytes:
            raise PackageError(
                f"package entry {name!r} unpacks to {entry.file_size} bytes,"
                f" more than the limit of {limits.max_part_bytes}"
            )
        total += entry.file_size
        if total > limits.max_total_uncompressed_bytes:
            raise PackageError(f"package unpacks to more than the limit of {limits.max_total_uncompressed_bytes} bytes")
        if entry.file_size > limits.ratio_check_above:
            ratio = entry.file_size / max(entry.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise PackageError(
                    f"package entry {name!r} has compression ratio {ratio:.0f}, more than the limit of"
                    f" {limits.max_compression_ratio:.0f} (a zip bomb?)"
                )
    for entry in entries:
        lower = entry.filename.lower()
        if lower.endswith(".rels") or lower == "[content_types].xml":
            if entry.file_size > _OPC_XML_PARTS_MAX:
                raise PackageError(f"package entry {entry.filename!r} is too large for an OPC metadata part")
            try:
                parse_xml(archive.read(entry), limits.max_depth)
            except PackageError as error:
                raise PackageError(f"package entry {entry.filename!r}: {error}") from None
    return archive


def _name_problem(name: str) -> str:
    if not name:
        return "has an empty name"
    if "\\" in name or "\x00" in name:
        return "contains a backslash or NUL"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    segments = name.rstrip("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return "contains an empty, '.' or '..' segment"
    return ""


def aas_parts(data: bytes) -> list[AasPart]:
    """The AAS document parts of a checked package, in relationship order (aas-spec, then its splits)."""
    try:
        reader = aasx.AASXReader(io.BytesIO(data))
    except ValueError as error:
        raise PackageError(f"not an AASX (OPC) package: {error}") from None
    with reader:
        package = reader.reader
        try:
            relationships = package.get_related_parts_by_type()
            origins = [part for kind in _ORIGIN_TYPES for part in relationships.get(kind, [])]
            if not origins:
                raise PackageError("not an AASX package: the aasx-origin relationship is missing")
            names: list[str] = []
            for origin in origins:
                for kind in _SPEC_TYPES:
                    for part in package.get_related_parts_by_type(origin).get(kind, []):
                        names.append(part)
                        names.extend(
                            split
                            for split_kind in _SPLIT_TYPES
                            for split in package.get_related_parts_by_type(part).get(split_kind, [])
                        )
            result = []
            for name in dict.fromkeys(names):
                with package.open_part(name) as stream:
                    result.append(AasPart(name, stream.read(), package.get_content_type(name) or ""))
        except (KeyError, ValueError) as error:
            raise PackageError(f"AASX package structure is broken: {error}") from None
    if not result:
        raise PackageError("AASX package holds no AAS part (no aas-spec relationship)")
    return result


def file_references(identifiables: list[model.Identifiable]) -> Iterator[tuple[str, str | None, str]]:
    """``(path, content type, where)`` of every File value and default thumbnail in the objects."""
    for identifiable in identifiables:
        if isinstance(identifiable, model.AssetAdministrationShell):
            thumbnail = identifiable.asset_information.default_thumbnail
            if thumbnail is not None and thumbnail.path:
                yield thumbnail.path, thumbnail.content_type, f"shell {identifiable.id} defaultThumbnail"
        elif isinstance(identifiable, model.Submodel):
            for id_short_path, element in paths.walk(identifiable):
                if isinstance(element, model.File) and element.value:
                    yield element.value, element.content_type, f"submodel {identifiable.id} {id_short_path}"


def supplementary_files(
    archive: zipfile.ZipFile, identifiables: list[model.Identifiable], report: ImportReport
) -> dict[str, tuple[bytes, str]]:
    """The package parts that File elements and thumbnails name, keyed by part name (``/aasx/files/a.png``)."""
    content_types = _content_types(archive)
    files: dict[str, tuple[bytes, str]] = {}
    for path, declared_type, where in file_references(identifiables):
        if not path.startswith("/") or path.startswith("//") or path in files:
            continue
        member = _member(archive, path)
        if member is None:
            report.add("error", where, f"names the package part {path!r}, which the package does not contain")
            continue
        extension = posixpath.splitext(path)[1].lower().lstrip(".")
        content_type = content_types.get(path.lower()) or content_types.get(extension) or declared_type
        files[path] = (archive.read(member), content_type or "application/octet-stream")
    return files


def _member(archive: zipfile.ZipFile, path: str) -> str | None:
    names = {name.lower(): name for name in archive.namelist()}
    for candidate in (path[1:], urllib.parse.unquote(path[1:])):
        if candidate.lower() in names:
            return names[candidate.lower()]
    return None


def _content_types(archive: zipfile.ZipFile) -> dict[str, str]:
    """``[Content_Types].xml``: overrides by lower-case part name, defaults by extension."""
    result: dict[str, str] = {}
    if "[Content_Types].xml" not in archive.namelist():
        return result
    root = parse_xml(archive.read("[Content_Types].xml"), 8)
    for element in root:
        tag = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        content_type = element.get("ContentType") or ""
        if tag == "Default" and element.get("Extension"):
            result[(element.get("Extension") or "").lower()] = content_type
        elif tag == "Override" and element.get("PartName"):
            result[(element.get("PartName") or "").lower()] = content_type
    return result


def write_aasx(
    identifiables: list[model.Identifiable],
    files: dict[str, tuple[bytes, str]],
    part_format: str = "xml",
) -> bytes:
    """An AASX package with the objects in one AAS part and the supplementary files they name."""
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore(identifiables)
    container = aasx.DictSupplementaryFileContainer()  # type: ignore[no-untyped-call]
    referenced = {path for path, _, _ in file_references(identifiables)}
    for name, (content, content_type) in files.items():
        if name in referenced:
            container.add_file(name, io.BytesIO(content), content_type)
    buffer = io.BytesIO()
    writer = aasx.AASXWriter(buffer, failsafe=True)
    try:
        writer.write_all_aas_objects(f"/aasx/data.{part_format}", store, container, write_json=part_format == "json")
    finally:
        writer.close()  # type: ignore[no-untyped-call]
    return buffer.getvalue()

"""AASX packages (IDTA-01005 Part 5, an OPC/ECMA-376-2 zip): checked before anything is unpacked.

The zip's central directory is checked first: entry count (counted in the raw directory before
Python's zipfile builds an object per entry), declared sizes (each part, total), compression ratio
(each part above ``ratio_check_above``, and the whole package), encryption, and part names (no
absolute names, ``..``, backslashes, drive letters, empty segments or duplicates). The OPC parts
basyx's reader parses itself (``[Content_Types].xml``, ``*.rels``) are checked to have no DOCTYPE.
Only then is the package opened with basyx's ``AASXReader`` to follow the relationships
(aasx-origin, aas-spec, aas-spec-split); the AAS parts (XML or JSON) go through the same safe
parsing and repairs as standalone files. Every member is read up to its declared size and no
further (``read_member``), so the checked sizes bound the memory used; a member whose data does not
match its directory entry (CRC, truncation, unknown compression method) is a ``PackageError`` like
any other damage.
"""

from __future__ import annotations

import copy
import io
import posixpath
import re
import struct
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from basyx.aas import model
from basyx.aas.adapter import aasx

from aas_server.errors import PackageError
from aas_server.exchange import parts
from aas_server.exchange.json_codec import aasx_with_lexical_forms
from aas_server.exchange.report import ImportReport, PackageLimits
from aas_server.exchange.roundtrip import JsonEncoder
from aas_server.exchange.xml_tree import parse_xml
from aas_server.model import paths

ZIP_MAGIC = b"PK\x03\x04"
_ORIGIN_TYPES = (aasx.RELATIONSHIP_TYPE_AASX_ORIGIN, "http://www.admin-shell.io/aasx/relationships/aasx-origin")
_SPEC_TYPES = (aasx.RELATIONSHIP_TYPE_AAS_SPEC, "http://www.admin-shell.io/aasx/relationships/aas-spec")
_SPLIT_TYPES = (aasx.RELATIONSHIP_TYPE_AAS_SPEC_SPLIT, "http://www.admin-shell.io/aasx/relationships/aas-spec-split")
_FOLLOWED_TYPES = frozenset((*_ORIGIN_TYPES, *_SPEC_TYPES, *_SPLIT_TYPES))
_DRIVE = re.compile(r"^[A-Za-z]:")
_OPC_XML_PARTS_MAX = 1024 * 1024
_END_OF_DIRECTORY = b"PK\x05\x06"
_END_OF_DIRECTORY_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_END_OF_DIRECTORY = b"PK\x06\x06"
_ZIP64_END_OF_DIRECTORY_SIZE = 56
_DIRECTORY_ENTRY = b"PK\x01\x02"
_DIRECTORY_ENTRY_SIZE = 46
ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
    struct.error,
)
"""What Python's zipfile raises on a damaged archive or member (bad CRC, truncated or corrupt data,
unsupported compression method or version, offsets outside the file)."""
_STRUCTURE_ERRORS: tuple[type[Exception], ...] = (KeyError, *ZIP_ERRORS)


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
    _check_directory_size(data, limits.max_entries)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as error:
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
    if total > limits.ratio_check_above:
        ratio = total / max(len(data), 1)
        if ratio > limits.max_compression_ratio:
            raise PackageError(
                f"package of {len(data)} bytes unpacks to {total} bytes, ratio {ratio:.0f}, more than the limit of"
                f" {limits.max_compression_ratio:.0f} (a zip bomb?)"
            )
    for entry in entries:
        lower = entry.filename.lower()
        if lower.endswith(".rels") or lower == "[content_types].xml":
            if entry.file_size > _OPC_XML_PARTS_MAX:
                raise PackageError(f"package entry {entry.filename!r} is too large for an OPC metadata part")
            content = read_member(archive, entry)
            try:
                parse_xml(content, limits.max_depth)
            except PackageError as error:
                raise PackageError(f"package entry {entry.filename!r}: {error}") from None
    return archive


def read_member(archive: zipfile.ZipFile, member: str | zipfile.ZipInfo) -> bytes:
    """The bytes of one archive member; ``PackageError`` if its data is damaged.

    No more than the declared size is unpacked: ``ZipFile.read`` would inflate the whole member in
    one step, however much less its directory entry declares (a member that declares 100 bytes and
    inflates to 300 MB is a zip bomb past every size check); the checksum then fails.
    """
    try:
        info = member if isinstance(member, zipfile.ZipInfo) else archive.getinfo(member)
        with archive.open(info) as stream:
            return _read_declared(stream, info.file_size, info.filename)
    except ZIP_ERRORS as error:
        name = member.filename if isinstance(member, zipfile.ZipInfo) else member
        raise PackageError(f"package entry {name!r} is damaged: {error or type(error).__name__}") from None


def _read_declared(stream: IO[bytes], size: int, name: str) -> bytes:
    """Exactly ``size`` bytes (a zip member's declared size; reading them checks its CRC), or ``PackageError``."""
    content = stream.read(size)
    if len(content) != size or stream.read(1):
        raise PackageError(f"package entry {name!r} is damaged: its data does not match its declared size {size}")
    return content


def _directory_bounds(data: bytes) -> tuple[int, int] | None:
    """Start and size of the central directory, found as Python's zipfile finds them (APPNOTE 4.3.16, 4.3.14)."""
    end = len(data) - _END_OF_DIRECTORY_SIZE
    if end < 0:
        return None
    if not (data.startswith(_END_OF_DIRECTORY, end) and data.endswith(b"\0\0")):
        end = data.rfind(_END_OF_DIRECTORY, max(len(data) - (1 << 16) - _END_OF_DIRECTORY_SIZE, 0))
        if end < 0 or end + _END_OF_DIRECTORY_SIZE > len(data):
            return None
    (size,) = struct.unpack_from("<I", data, end + 12)
    start = end - size
    locator = end - _ZIP64_LOCATOR_SIZE
    record = locator - _ZIP64_END_OF_DIRECTORY_SIZE
    if record >= 0 and data.startswith(_ZIP64_LOCATOR, locator) and data.startswith(_ZIP64_END_OF_DIRECTORY, record):
        (size,) = struct.unpack_from("<Q", data, record + 40)
        start = record - size
    return start, size


def _check_directory_size(data: bytes, max_entries: int) -> None:
    """Count the central directory's entries without building them; ``PackageError`` above ``max_entries``.

    Python's zipfile reads every entry of the directory (whatever count the end record declares) into
    an object, which for a directory of small entries costs about 600 bytes and 10 µs each.
    """
    bounds = _directory_bounds(data)
    if bounds is None:
        return
    start, size = bounds
    position, count, enough = max(start, 0), 0, 4 * max_entries
    while position < start + size and data.startswith(_DIRECTORY_ENTRY, position) and count <= enough:
        if position + _DIRECTORY_ENTRY_SIZE > len(data):
            return
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        position += _DIRECTORY_ENTRY_SIZE + name_length + extra_length + comment_length
        count += 1
    if count > max_entries:
        counted = f"over {enough}" if count > enough else str(count)
        raise PackageError(f"package has {counted} entries, more than the limit of {max_entries}")


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


def _related_parts(package: Any, source: str = "/", report: ImportReport | None = None) -> dict[str, list[str]]:
    """The parts ``source`` (``/``: the package root) relates to, by relationship type.

    pyecma376_2 resolves a relative target that climbs above the package root with an ``IndexError``.
    A relationship with ``TargetMode="External"`` whose target is a path (no scheme, no host) naming
    a part this package holds is followed as the relationship says, and reported (packages written
    by some tools, e.g. the IDTA Digital Product Passport 1.0 templates, mark their aasx-origin and
    aas-spec relationships so); an external target outside the package is never fetched.
    """
    try:
        related: dict[str, list[str]] = {
            kind: list(parts) for kind, parts in package.get_related_parts_by_type(source).items()
        }
    except IndexError:
        raise PackageError(
            f"AASX package structure is broken: a relationship of {source!r} targets a part above the package root"
        ) from None
    for relationship in package.get_raw_relationships(source):
        if relationship.target_mode.name != "EXTERNAL" or relationship.type not in _FOLLOWED_TYPES:
            continue
        target = relationship.target
        location = urllib.parse.urlsplit(target)
        if location.scheme or location.netloc or not location.path:
            continue
        segments: list[str] = [] if location.path.startswith("/") else source.split("/")[1:-1]
        for segment in urllib.parse.unquote(location.path).split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                if not segments:
                    break
                segments.pop()
            else:
                segments.append(segment)
        else:
            member = _member(package, "/" + "/".join(segments)) if segments else None
            if member is not None:
                part = "/" + member
                related.setdefault(relationship.type, []).append(part)
                if report is not None:
                    report.add(
                        "repaired",
                        f"{part}",
                        f"relationship {relationship.type.rsplit('/', 1)[-1]} from {source!r} marked"
                        f' TargetMode="External" names the package part {part!r}; followed',
                    )
    return related


def aas_parts(data: bytes, max_document_bytes: int, report: ImportReport | None = None) -> list[AasPart]:
    """The AAS document parts of a checked package, in relationship order (aas-spec, then its splits).

    A part that unpacks to more than ``max_document_bytes`` is a ``PackageError``; no more than that is unpacked.
    """
    try:
        reader = aasx.AASXReader(io.BytesIO(data))
    except ZIP_ERRORS as error:
        raise PackageError(f"not an AASX (OPC) package: {error}") from None
    with reader:
        package = reader.reader
        try:
            relationships = _related_parts(package, "/", report)
            origins = [part for kind in _ORIGIN_TYPES for part in relationships.get(kind, [])]
            if not origins:
                raise PackageError("not an AASX package: the aasx-origin relationship is missing")
            names: list[str] = []
            for origin in origins:
                from_origin = _related_parts(package, origin, report)
                for kind in _SPEC_TYPES:
                    for part in from_origin.get(kind, []):
                        names.append(part)
                        from_part = _related_parts(package, part, report)
                        names.extend(split for split_kind in _SPLIT_TYPES for split in from_part.get(split_kind, []))
            result = []
            for name in dict.fromkeys(names):
                with package.open_part(name) as stream:
                    declared = package.getinfo(stream.name).file_size
                    if declared > max_document_bytes:
                        raise PackageError(
                            f"AAS part {name!r} unpacks to {declared} bytes,"
                            f" more than the limit of {max_document_bytes}"
                        )
                    content = _read_declared(stream, declared, name)
                result.append(AasPart(name, content, package.get_content_type(name) or ""))
        except _STRUCTURE_ERRORS as error:
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
        files[path] = (read_member(archive, member), content_type or "application/octet-stream")
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
    root = parse_xml(read_member(archive, "[Content_Types].xml"), 8)
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
    """An AASX package with the objects in one AAS part and the supplementary files they name.

    File values and thumbnails naming a part the package holds itself, or a file named earlier (case
    and percent-encoding aside), are written under new names (``parts.export_names``) in copies of the
    objects, so that the package has no duplicate entries and reads back with ``read_package``.
    """
    local = {path for path, _, _ in file_references(identifiables) if path.startswith("/")}
    renamed = parts.export_names(path for path in local if not path.startswith("//"))
    if renamed:
        identifiables = [_with_renamed_files(identifiable, renamed) for identifiable in identifiables]
        files = {renamed.get(name, name): item for name, item in files.items()}
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
    part = f"/aasx/data.{part_format}"
    return aasx_with_lexical_forms(buffer.getvalue(), part, identifiables, part_format, JsonEncoder)


def _with_renamed_files(identifiable: model.Identifiable, renamed: dict[str, str]) -> model.Identifiable:
    """A copy of ``identifiable`` whose File values and thumbnail path are renamed as ``renamed`` says."""
    if isinstance(identifiable, model.AssetAdministrationShell):
        thumbnail = identifiable.asset_information.default_thumbnail
        if thumbnail is None or thumbnail.path not in renamed:
            return identifiable
        shell = copy.deepcopy(identifiable)
        shell.asset_information.default_thumbnail = model.Resource(renamed[thumbnail.path], thumbnail.content_type)
        return shell
    if isinstance(identifiable, model.Submodel) and any(
        isinstance(element, model.File) and element.value in renamed for _, element in paths.walk(identifiable)
    ):
        submodel = copy.deepcopy(identifiable)
        for _, element in paths.walk(submodel):
            if isinstance(element, model.File) and element.value in renamed:
                element.value = renamed[element.value]
        return submodel
    return identifiable

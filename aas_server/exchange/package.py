"""Read and write AAS packages: AASX, JSON and XML (IDTA-01001 Part 1 v3.0 and v3.1, IDTA-01005 Part 5).

``read_package`` detects the format from the content, parses it safely within
:class:`PackageLimits`, repairs the document where the metamodel determines the result, builds
basyx objects one identifiable and one element at a time, and returns them with the package's
supplementary files and an :class:`ImportReport`. ``write_package`` writes v3.1 JSON, XML or AASX
with every list in its given order (also those basyx keeps in sets: a shell's submodel references,
``isCaseOf``, ``refersTo``, value lists) and, in JSON and XML, the lexical value forms that were
given (``exchange.json_codec``), so that export after import gives back what was imported.

Left out: AASX digital signatures and thumbnails of the package itself (not read), several AAS
parts are read but written back as one, JSON documents carry no version marker (reported as
``3.x``), SubmodelElementLists that break AASd-107/108/114 are dropped whole.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from basyx.aas import model
from basyx.aas.adapter.xml import object_store_to_xml_element
from lxml import etree

from aas_server.errors import PackageError
from aas_server.exchange import archive
from aas_server.exchange.build import Builder, count_document, count_elements
from aas_server.exchange.json_codec import xml_with_lexical_forms
from aas_server.exchange.repairs import IDENTIFIABLE_TYPES, TOP_LEVEL_KEYS, Repairer
from aas_server.exchange.report import COUNT_KEYS, ImportRejected, ImportReport, PackageLimits
from aas_server.exchange.roundtrip import JsonEncoder
from aas_server.exchange.xml_tree import parse_xml, xml_to_document

PackageFormat = Literal["aasx", "json", "xml"]
CONTENT_TYPES: dict[str, str] = {
    "aasx": "application/asset-administration-shell-package+xml",
    "json": "application/json",
    "xml": "application/xml",
}
DEFAULT_LIMITS = PackageLimits()


@dataclass(slots=True)
class ImportResult:
    """What ``read_package`` took: identifiables, supplementary files (by part name) and the report."""

    identifiables: list[model.Identifiable]
    supplementary_files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    report: ImportReport = field(default_factory=lambda: ImportReport("", ""))


def detect_format(data: bytes, filename: str | None = None) -> PackageFormat:
    """``aasx`` (a zip), ``json`` or ``xml`` from the first bytes; the file name's extension as a fallback."""
    if data.startswith(archive.ZIP_MAGIC):
        return "aasx"
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"{", b"[")):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    suffix = Path(filename).suffix.lower().lstrip(".") if filename else ""
    if suffix in ("aasx", "json", "xml"):
        return suffix  # type: ignore[return-value]
    raise PackageError(f"{filename or 'package'}: neither AASX, JSON nor XML")


def read_package(
    data: bytes,
    filename: str | None = None,
    *,
    strict: bool = False,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> ImportResult:
    """Read an AASX, JSON or XML package leniently (or, with ``strict``, reject at the first issue).

    Raises ``PackageError`` for input that cannot be read safely at all (over a limit, traversal in
    an archive, a DTD, malformed syntax) and ``ImportRejected`` (a ``PackageError``) in strict mode.
    """
    source = filename or "package"
    package_format = detect_format(data, filename)
    report = ImportReport(source, package_format, strict=strict)
    try:
        if package_format == "aasx":
            checked = archive.check_archive(data, limits)
            identifiables: list[model.Identifiable] = []
            seen: set[str] = set()
            versions: list[str] = []
            for part in archive.aas_parts(data, limits.max_document_bytes, report):
                part_format = _part_format(part)
                report.path_prefix = f"{part.name}#"
                identifiables.extend(_read_document(part.data, part_format, report, limits, seen, part.name))
                versions.append(report.metamodel_version)
            report.path_prefix = ""
            report.metamodel_version = "+".join(dict.fromkeys(versions))
            files = archive.supplementary_files(checked, identifiables, report)
            return ImportResult(identifiables, files, report)
        if len(data) > limits.max_document_bytes:
            raise PackageError(f"document is {len(data)} bytes, more than the limit of {limits.max_document_bytes}")
        identifiables = _read_document(data, package_format, report, limits, set(), None)
        return ImportResult(identifiables, {}, report)
    except ImportRejected:
        raise
    except PackageError as error:
        raise PackageError(f"{source}: {error}") from None


def read_package_file(path: Path, *, strict: bool = False, limits: PackageLimits = DEFAULT_LIMITS) -> ImportResult:
    """``read_package`` on a file (its name is the report's source)."""
    size = path.stat().st_size
    if size > limits.max_package_bytes:
        raise PackageError(f"{path}: {size} bytes, more than the limit of {limits.max_package_bytes}")
    return read_package(path.read_bytes(), path.name, strict=strict, limits=limits)


def _part_format(part: archive.AasPart) -> PackageFormat:
    content_type = part.content_type.split(";")[0].strip().lower()
    if content_type.endswith("json") or part.name.lower().endswith(".json"):
        return "json"
    if content_type.endswith("xml") or part.name.lower().endswith(".xml"):
        return "xml"
    return detect_format(part.data, part.name)


def _read_document(
    data: bytes,
    package_format: PackageFormat,
    report: ImportReport,
    limits: PackageLimits,
    seen: set[str],
    base_part: str | None,
) -> list[model.Identifiable]:
    if package_format == "xml":
        document = xml_to_document(parse_xml(data, limits.max_depth), report)
    else:
        document = _parse_json(data, limits)
        report.metamodel_version = "3.x"
        document = _as_environment(document, report)
    counts = count_document(document)
    for key in COUNT_KEYS:
        report.counts_in[key] += counts[key]
    Repairer(report, base_part).document(document)
    identifiables = Builder(report).identifiables(document, seen)
    taken = count_elements(identifiables)
    for key in COUNT_KEYS:
        report.counts_taken[key] += taken[key]
    return identifiables


def _parse_json(data: bytes, limits: PackageLimits) -> Any:
    """Strict JSON (RFC 8259: no NaN, no lone surrogates, which no AAS string may hold and no serializer writes)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PackageError(f"JSON is not UTF-8: {error}") from None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if "depth" in error.msg or "recursion" in error.msg:
            raise PackageError("JSON nested too deeply") from None
        raise PackageError(f"not valid JSON: {error}") from None
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise PackageError(f"JSON nested deeper than {limits.max_depth} levels")
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node if isinstance(value, (dict, list)))
    return document


def _as_environment(document: Any, report: ImportReport) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise PackageError("an AAS JSON document must be an object (an environment)")
    model_type = document.get("modelType")
    if isinstance(model_type, str) and model_type in IDENTIFIABLE_TYPES:
        key = _ENVIRONMENT_KEY_OF[model_type]
        report.add("repaired", "", f"a single {model_type} read as an environment holding it")
        return {key: [document]}
    for key in [key for key in document if key not in TOP_LEVEL_KEYS]:
        report.add("dropped", key, f"{key!r} is not part of an AAS environment; ignored")
    return document


_ENVIRONMENT_KEY_OF = {
    "AssetAdministrationShell": "assetAdministrationShells",
    "Submodel": "submodels",
    "ConceptDescription": "conceptDescriptions",
}


def environment_json(identifiables: Iterable[model.Identifiable]) -> dict[str, Any]:
    """The v3.1 JSON environment of the objects, every list in its given order."""
    environment: dict[str, list[model.Identifiable]] = {}
    for identifiable in identifiables:
        for key, kind in (
            ("assetAdministrationShells", model.AssetAdministrationShell),
            ("submodels", model.Submodel),
            ("conceptDescriptions", model.ConceptDescription),
        ):
            if isinstance(identifiable, kind):
                environment.setdefault(key, []).append(identifiable)
    document: dict[str, Any] = json.loads(json.dumps(environment, cls=JsonEncoder))
    return document


def write_package(
    identifiables: Iterable[model.Identifiable],
    supplementary_files: dict[str, tuple[bytes, str]] | None = None,
    format: PackageFormat = "json",
    *,
    metamodel: Literal["3.1"] = "3.1",
    aasx_part_format: Literal["xml", "json"] = "xml",
) -> bytes:
    """Serialise objects as a v3.1 JSON or XML environment, or as an AASX package with the files they name."""
    if metamodel != "3.1":
        raise PackageError(f"metamodel {metamodel} cannot be written; only 3.1")
    objects = list(identifiables)
    if format == "json":
        return json.dumps(environment_json(objects), ensure_ascii=False, indent=2).encode("utf-8")
    if format == "xml":
        store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore(objects)
        root = xml_with_lexical_forms(object_store_to_xml_element(store), objects)
        buffer = io.BytesIO()
        etree.ElementTree(root).write(buffer, xml_declaration=True, encoding="utf-8", pretty_print=True)
        return buffer.getvalue()
    if format == "aasx":
        return archive.write_aasx(objects, supplementary_files or {}, aasx_part_format)
    raise PackageError(f"unknown package format {format!r}; use aasx, json or xml")


def write_package_file(
    path: Path,
    identifiables: Iterable[model.Identifiable],
    supplementary_files: dict[str, tuple[bytes, str]] | None = None,
    format: PackageFormat | None = None,
) -> None:
    """``write_package`` into a file; the format defaults to the file's extension."""
    chosen = format or detect_format(b"", path.name)
    path.write_bytes(write_package(identifiables, supplementary_files, chosen))

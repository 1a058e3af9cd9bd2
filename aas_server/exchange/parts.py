"""Part names an AASX writes itself, and supplementary file names that keep an exported package valid.

An AASX (IDTA-01005 Part 5) is an OPC package (ECMA-376-2): besides the supplementary files that
File elements and thumbnails name, it holds ``[Content_Types].xml``, relationship parts (any
``*.rels``, in ``_rels`` folders), the ``aasx-origin`` part and the AAS spec part. A File value that
names one of those would make the writer put a second zip entry of that name (or make the reader
take the package's own metadata for a supplementary file). :func:`reserved_part_reason` says why a
name is refused; :func:`export_names` renames what would still clash when a package is written.
Part names are compared as the hub's reader compares them: case-insensitively and percent-decoded.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Iterable

from pyecma376_2 import package_model

AASX_ORIGIN_PART = "/aasx/aasx-origin"
SPEC_PART_FOLDER = "/aasx"
SPEC_PART_NAMES = ("/aasx/data.xml", "/aasx/data.json")
"""The AAS spec part names the hub writes (``archive.write_aasx``)."""
RESERVED_PART_NAMES = frozenset({"/[content_types].xml", AASX_ORIGIN_PART, SPEC_PART_FOLDER, *SPEC_PART_NAMES})
RENAMED_FOLDER = "/aasx/files/renamed"
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def _comparable(path: str) -> str:
    absolute = path if path.startswith("/") else "/" + path
    return urllib.parse.unquote(absolute).lower()


def reserved_part_reason(path: str) -> str | None:
    """Why ``path`` (a File value or thumbnail path) cannot name a supplementary file, or ``None`` if it can.

    URIs with a scheme and network-path references are not package parts and are never reserved.
    """
    if path.startswith("//") or ":" in path.split("/")[0]:
        return None
    name = _comparable(path)
    segments = name.split("/")
    folders = {"/".join(segments[:index]) for index in range(2, len(segments))}
    if name in RESERVED_PART_NAMES or not folders.isdisjoint(RESERVED_PART_NAMES - {SPEC_PART_FOLDER}):
        return "names a part that every AASX holds itself (IDTA-01005, ECMA-376-2); use a name under /aasx/files/"
    if "_rels" in segments or name.endswith(".rels"):
        return "names a relationship part (ECMA-376-2 reserves _rels folders and .rels names); use another name"
    return None


def _valid_part_name(path: str) -> bool:
    """Whether the OPC writer takes ``path`` as a part name (ECMA-376-2 9.1.1: ASCII URI segments, no ``#``,
    ``?``, brackets, encoded slashes, or a segment ending in ``.``)."""
    try:
        package_model.check_part_name(path)
    except ValueError:
        return False
    return True


def export_names(paths: Iterable[str]) -> dict[str, str]:
    """For each supplementary file path that would clash in a written package, the name it is written under.

    A path clashes when it is reserved (:func:`reserved_part_reason`), equals an earlier one once
    case and percent-encoding are ignored, or is no valid OPC part name (``ä``, ``#``, ``?``, ``[``,
    a segment ending in ``.``: the writer would refuse it). The new names lie under
    ``/aasx/files/renamed/`` and clash with nothing; paths that do not clash are not in the result.
    """
    taken = set(RESERVED_PART_NAMES)
    ordered = sorted(set(paths))
    clean = [path for path in ordered if reserved_part_reason(path) is None]
    for path in clean:
        taken.add(_comparable(path))
    renamed: dict[str, str] = {}
    seen: set[str] = set()
    for path in ordered:
        comparable = _comparable(path)
        if reserved_part_reason(path) is None and comparable not in seen and _valid_part_name(path):
            seen.add(comparable)
            continue
        base = _UNSAFE_CHARACTERS.sub("_", posixpath.basename(urllib.parse.unquote(path))).rstrip(".") or "file"
        if base.lower().endswith(".rels"):
            base = base[: -len(".rels")] + "_rels"
        number = 1
        candidate = f"{RENAMED_FOLDER}/{number}-{base}"
        while candidate.lower() in taken:
            number += 1
            candidate = f"{RENAMED_FOLDER}/{number}-{base}"
        taken.add(candidate.lower())
        renamed[path] = candidate
    return renamed

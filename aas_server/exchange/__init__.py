"""Package exchange: AASX, JSON and XML in (lenient, with a report, or strict) and out (v3.1).

Layer 1: bytes in, basyx objects and an :class:`ImportReport` out; no sockets, and files only
through the functions that take a path. See ``docs/exchange.md``.
"""

from __future__ import annotations

from aas_server.exchange.build import count_elements
from aas_server.exchange.package import (
    CONTENT_TYPES,
    ImportResult,
    PackageFormat,
    detect_format,
    environment_json,
    read_package,
    read_package_file,
    write_package,
    write_package_file,
)
from aas_server.exchange.report import ImportIssue, ImportRejected, ImportReport, PackageLimits

__all__ = [
    "CONTENT_TYPES",
    "ImportIssue",
    "ImportRejected",
    "ImportReport",
    "ImportResult",
    "PackageFormat",
    "PackageLimits",
    "count_elements",
    "detect_format",
    "environment_json",
    "read_package",
    "read_package_file",
    "write_package",
    "write_package_file",
]

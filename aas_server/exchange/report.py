"""What an import did: every repair, every element not taken, and the counts in and taken.

A lenient import (the default) records each change it makes to the source document and each
object it could not take, with the place in the source (``submodels[3].submodelElements[2].value``).
A strict import raises :class:`ImportRejected` at the first such issue instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aas_server.errors import PackageError

Severity = Literal["repaired", "dropped", "error"]

COUNT_KEYS = ("shells", "submodels", "concept_descriptions", "submodel_elements")
"""The kinds of objects counted in the source and in what was taken."""


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass(frozen=True, slots=True)
class ImportIssue:
    """One repair, drop or error, at ``path`` in the source document.

    ``severity``: ``repaired`` (the source was changed without changing its meaning, or as a
    constraint of the metamodel demands), ``dropped`` (something in the source was not taken:
    an element, an identifiable or an attribute), ``error`` (a problem that changed nothing in
    the model, e.g. a File whose package part is missing). ``lost`` counts the shells, submodels,
    concept descriptions and submodel elements of the source that this issue left out; the sums
    over all issues are exactly ``counts_in - counts_taken``.
    """

    severity: Severity
    path: str
    message: str
    lost: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"severity": self.severity, "path": self.path, "message": self.message}
        if self.lost:
            result["lost"] = dict(self.lost)
        return result

    def __str__(self) -> str:
        return f"{self.severity:8} {self.path}: {self.message}"


@dataclass(slots=True)
class ImportReport:
    """The report of one import: source, format, metamodel version, issues and counts."""

    source: str
    format: str
    metamodel_version: str = "unknown"
    issues: list[ImportIssue] = field(default_factory=list)
    counts_in: dict[str, int] = field(default_factory=empty_counts)
    counts_taken: dict[str, int] = field(default_factory=empty_counts)
    strict: bool = False
    path_prefix: str = field(default="", repr=False)

    def add(self, severity: Severity, path: str, message: str, lost: Mapping[str, int] | None = None) -> None:
        """Record an issue; in strict mode raise :class:`ImportRejected` instead of going on."""
        issue = ImportIssue(
            severity,
            _bounded(self.path_prefix + path),
            _bounded(message),
            {key: count for key, count in (lost or {}).items() if count},
        )
        self.issues.append(issue)
        if self.strict:
            raise ImportRejected(self, issue)

    @property
    def repairs(self) -> list[ImportIssue]:
        return [issue for issue in self.issues if issue.severity == "repaired"]

    @property
    def drops(self) -> list[ImportIssue]:
        return [issue for issue in self.issues if issue.severity == "dropped"]

    @property
    def errors(self) -> list[ImportIssue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    def lost(self) -> dict[str, int]:
        """The sum of ``lost`` over all issues: what the report says was not taken."""
        total = empty_counts()
        for issue in self.issues:
            for key, count in issue.lost.items():
                total[key] = total.get(key, 0) + count
        return total

    def difference(self) -> dict[str, int]:
        """``counts_in - counts_taken`` per kind."""
        return {key: self.counts_in.get(key, 0) - self.counts_taken.get(key, 0) for key in COUNT_KEYS}

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (the form REST and ``aas-server import --report`` show)."""
        return {
            "source": self.source,
            "format": self.format,
            "metamodelVersion": self.metamodel_version,
            "countsIn": dict(self.counts_in),
            "countsTaken": dict(self.counts_taken),
            "repaired": len(self.repairs),
            "dropped": len(self.drops),
            "errors": len(self.errors),
            "issues": [issue.to_json() for issue in self.issues],
        }

    def headline(self) -> str:
        taken, counted = self.counts_taken, self.counts_in
        parts = [f"{taken[key]}/{counted[key]} {key.replace('_', ' ')}" for key in COUNT_KEYS if counted.get(key)]
        return (
            f"{self.source} ({self.format}, metamodel {self.metamodel_version}): taken {', '.join(parts) or 'nothing'};"
            f" {len(self.repairs)} repaired, {len(self.drops)} dropped, {len(self.errors)} errors"
        )

    def summary(self) -> str:
        """A headline with the counts, then one line per issue."""
        return "\n".join([self.headline(), *(f"  {issue}" for issue in self.issues)])


PATH_SEGMENT_LIMIT = 64
"""Longest property name kept whole in an issue path; longer ones (only hostile documents have them) are cut,
so that the paths built while walking a document stay small at every depth."""


def path_segment(name: str) -> str:
    """``name`` for use in a document path: as it is, or cut to ``PATH_SEGMENT_LIMIT`` characters."""
    if len(name) <= PATH_SEGMENT_LIMIT:
        return name
    return f"{name[:PATH_SEGMENT_LIMIT]}...({len(name)})"


ISSUE_TEXT_LIMIT = 1000
"""Longest path or message of an issue in characters; a longer one (quoting a 1 MB identifier) is cut."""


def _bounded(text: str) -> str:
    if len(text) <= ISSUE_TEXT_LIMIT:
        return text
    return f"{text[:ISSUE_TEXT_LIMIT]}... ({len(text)} characters)"


class ImportRejected(PackageError):
    """A strict import met an issue (``issue``); ``report`` holds what was found up to there."""

    def __init__(self, report: ImportReport, issue: ImportIssue) -> None:
        super().__init__(f"{report.source}: strict import rejected: {issue.severity} at {issue.path}: {issue.message}")
        self.report = report
        self.issue = issue


@dataclass(frozen=True, slots=True)
class PackageLimits:
    """Limits checked before anything is unpacked or parsed.

    Sizes are bytes. ``max_compression_ratio`` applies to archive entries larger than
    ``ratio_check_above`` (small entries of repetitive text compress well and are harmless).
    ``max_depth`` is the deepest nesting of JSON arrays/objects or XML elements accepted.
    ``max_document_bytes`` bounds an AAS document (a JSON or XML file, or the AAS part of an AASX
    after unpacking): it is parsed into a tree that takes several times its size in memory, while a
    supplementary file (``max_part_bytes``) is only kept as bytes.
    """

    max_package_bytes: int = 100 * 1024 * 1024
    max_total_uncompressed_bytes: int = 100 * 1024 * 1024
    max_part_bytes: int = 100 * 1024 * 1024
    max_document_bytes: int = 32 * 1024 * 1024
    max_entries: int = 10_000
    max_compression_ratio: float = 100.0
    ratio_check_above: int = 1024 * 1024
    max_depth: int = 200

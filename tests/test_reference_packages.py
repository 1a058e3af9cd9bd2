"""Every IDTA reference package imports with every difference named, re-exports, and round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aas_server.exchange import ImportRejected, count_elements, read_package, write_package
from aas_server.exchange.report import COUNT_KEYS
from tests.support import reference_dir

_TEMPLATES = reference_dir() / "idta-templates"
FILES = sorted(path.name for pattern in ("*.json", "*.aasx") for path in _TEMPLATES.glob(pattern))


def _read(reference: Path, name: str) -> bytes:
    return (reference / "idta-templates" / name).read_bytes()


@pytest.mark.parametrize("name", FILES or ["(no reference files)"])
def test_reference_package_imports_exports_and_round_trips(reference: Path, name: str) -> None:
    data = _read(reference, name)
    result = read_package(data, name)
    report = result.report

    # Every object of the source is taken, or a dropped entry names it (and counts what it took along).
    assert report.counts_in["submodels"] >= 1
    assert report.difference() == report.lost(), report.summary()
    assert all(issue.severity == "dropped" for issue in report.issues if issue.lost), report.summary()
    assert count_elements(result.identifiables) == report.counts_taken

    # Served as taken: the exported JSON holds exactly the counts taken, and reads back without any issue.
    exported = write_package(result.identifiables, result.supplementary_files, "json")
    again = read_package(exported, "exported.json")
    assert again.report.issues == []
    assert again.report.counts_in == again.report.counts_taken == report.counts_taken

    # JSON -> AASX -> JSON gives the same document as JSON -> JSON, supplementary files included.
    package = write_package(result.identifiables, result.supplementary_files, "aasx")
    from_package = read_package(package, "exported.aasx")
    assert json.loads(write_package(from_package.identifiables, None, "json")) == json.loads(exported)
    assert from_package.supplementary_files == result.supplementary_files
    assert [issue for issue in from_package.report.issues if issue.severity != "error"] == []

    # XML export reads back to the same document too.
    from_xml = read_package(write_package(result.identifiables, None, "xml"), "exported.xml")
    assert from_xml.report.issues == []
    assert write_package(from_xml.identifiables, None, "json") == exported

    # Strict mode rejects a package that needed any repair, naming the first issue's path.
    if report.issues:
        with pytest.raises(ImportRejected) as rejected:
            read_package(data, name, strict=True)
        assert rejected.value.issue.path == report.issues[0].path
        assert report.issues[0].path in str(rejected.value)
    else:
        strict = read_package(data, name, strict=True)
        assert strict.report.counts_taken == report.counts_taken


def test_known_failure_classes_of_the_reference_set_are_handled(reference: Path) -> None:
    """The classes of defects the published templates have are each repaired (or named when dropped)."""
    messages: list[str] = []
    for name in FILES:
        messages.extend(str(issue) for issue in read_package(_read(reference, name), name).report.issues)
    text = "\n".join(messages)
    for expected in (
        "metamodel v3.0 namespace",  # v3.0 AASX that basyx alone reads nothing from
        "empty optional string removed",  # assetType "", File value ""
        "template placeholder reference",  # EMPTY first/second in HSEBoM
        "AASd-120",  # empty or invalid idShorts of list items
        "(AASd-109)",  # valueTypeListElement derived from the items
        "violates AASd-002",  # concept descriptions with idShorts such as 'IEC CDD'
        "second language string in 'en' ('Sensor Reichweite') removed",  # TechnicalData: two "en" strings
    ):
        assert expected in text, expected
    totals = {key: 0 for key in COUNT_KEYS}
    for name in FILES:
        report = read_package(_read(reference, name), name).report
        for key in COUNT_KEYS:
            totals[key] += report.counts_taken[key]
    assert totals["shells"] == len(FILES)

"""Package exchange: hostile input rejected before unpacking or expansion, each repair kind, v3.0 input, AASX."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import zipfile
from pathlib import Path

import pytest
from basyx.aas import model
from basyx.aas.adapter import aasx

from aas_server.errors import InvalidRequestError, PackageError
from aas_server.exchange import (
    ImportRejected,
    PackageLimits,
    count_elements,
    read_package,
    read_package_file,
    write_package,
)
from aas_server.model.lexical import OrderedSet

PACKAGES = Path(__file__).parent / "data" / "packages"


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return buffer.getvalue()


def _rewrite_part(package: bytes, replace: dict[str, bytes]) -> bytes:
    """A copy of a zip with ``replace`` (old text to new bytes) applied to every XML entry."""
    source = zipfile.ZipFile(io.BytesIO(package))
    entries = {}
    for name in source.namelist():
        content = source.read(name)
        if name.endswith(".xml"):
            for old, new in replace.items():
                content = content.replace(old.encode(), new)
        entries[name] = content
    return _zip(entries)


def _v30_objects() -> list[model.Identifiable]:
    return read_package((PACKAGES / "v30_environment.xml").read_bytes(), "v30_environment.xml").identifiables


# --- XML: entities, DTDs, network -----------------------------------------------------------------


def test_xxe_is_rejected_without_reading_the_file() -> None:
    with pytest.raises(PackageError, match="DOCTYPE") as rejected:
        read_package((PACKAGES / "xxe.xml").read_bytes(), "xxe.xml")
    assert "root:" not in str(rejected.value)
    assert isinstance(rejected.value, InvalidRequestError)  # the REST layer answers 400


def test_billion_laughs_is_rejected_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(PackageError, match="DOCTYPE"):
        read_package((PACKAGES / "billion_laughs.xml").read_bytes(), "billion_laughs.xml")
    assert time.monotonic() - started < 1.0


def test_external_dtd_is_rejected_without_network_access() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        document = (
            f'<?xml version="1.0"?>\n<!-- a comment first -->\n<!DOCTYPE environment SYSTEM "http://127.0.0.1:{port}/aas.dtd">\n'
            '<environment xmlns="https://admin-shell.io/aas/3/1"/>'
        ).encode()
        with pytest.raises(PackageError, match="DOCTYPE"):
            read_package(document, "external.xml")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_doctype_in_an_aasx_metadata_part_is_rejected() -> None:
    package = write_package(_v30_objects(), None, "aasx")
    hostile = _rewrite_part(
        package, {"<?xml version='1.0' encoding='UTF-8'?>": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]>'}
    )
    with pytest.raises(PackageError, match=r"Content_Types|\.rels"):
        read_package(hostile, "hostile.aasx")


def test_xml_outside_the_aas_namespaces_is_rejected() -> None:
    with pytest.raises(PackageError, match="not in an AAS namespace"):
        read_package(b'<environment xmlns="urn:other"/>', "other.xml")


# --- archives: checked before unpacking -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", r"'\.\.' segment"),
        ("aasx/../../x", r"'\.\.' segment"),
        ("/etc/cron.d/x", "absolute path"),
        ("aasx\\..\\x", "backslash"),
        ("C:/Windows/x", "drive letter"),
    ],
)
def test_traversal_in_part_names_is_rejected_before_unpacking(name: str, reason: str) -> None:
    package = _zip({"[Content_Types].xml": b"<Types/>", name: b"payload"})
    with pytest.raises(PackageError, match=reason) as rejected:
        read_package(package, "evil.aasx")
    assert "not unpacked" in str(rejected.value)


def test_zip_bomb_is_rejected_by_compression_ratio() -> None:
    package = _zip({"aasx/bomb.xml": b"\0" * (20 * 1024 * 1024)})
    assert len(package) < 100_000
    started = time.monotonic()
    with pytest.raises(PackageError, match="compression ratio"):
        read_package(package, "bomb.aasx")
    assert time.monotonic() - started < 1.0


def test_too_many_entries_and_too_large_content_are_rejected() -> None:
    package = _zip({f"aasx/files/{index}.txt": b"x" for index in range(20)})
    with pytest.raises(PackageError, match="20 entries"):
        read_package(package, "many.aasx", limits=PackageLimits(max_entries=10))
    with pytest.raises(PackageError, match="unpacks to more than"):
        read_package(package, "many.aasx", limits=PackageLimits(max_total_uncompressed_bytes=10))
    with pytest.raises(PackageError, match="more than the limit of 5"):
        read_package(_zip({"aasx/a.txt": b"123456"}), "big.aasx", limits=PackageLimits(max_part_bytes=5))


def test_a_zip_that_is_not_an_aasx_is_rejected() -> None:
    with pytest.raises(PackageError, match=r"aasx-origin|OPC"):
        read_package(_zip({"[Content_Types].xml": b'<Types xmlns="x"/>', "a.txt": b"x"}), "plain.aasx")


def test_file_value_escaping_the_package_is_dropped_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    submodel = model.Submodel(
        "urn:test:files",
        id_short="Files",
        submodel_element=[
            model.File("Escape", "text/plain", value="/aasx/files/placeholder.txt"),
            model.File("Manual", "application/pdf", value="/aasx/files/manual.pdf"),
        ],
    )
    files = {
        "/aasx/files/manual.pdf": (b"%PDF-1.7 manual", "application/pdf"),
        "/aasx/files/placeholder.txt": (b"x", "text/plain"),
    }
    package = _rewrite_part(
        write_package([submodel], files, "aasx"), {"/aasx/files/placeholder.txt": b"/../../etc/passwd"}
    )
    result = read_package(package, "escape.aasx")
    (issue,) = [issue for issue in result.report.issues if "passwd" in issue.message]
    assert issue.severity == "dropped"
    assert issue.path.endswith("submodels[0].submodelElements[0].value")
    assert "climbs above the package root" in issue.message
    escape = result.identifiables[0].get_referable("Escape")  # type: ignore[attr-defined]
    assert isinstance(escape, model.File)
    assert escape.value is None
    assert result.supplementary_files == {"/aasx/files/manual.pdf": (b"%PDF-1.7 manual", "application/pdf")}


def test_missing_supplementary_file_is_an_error_entry() -> None:
    submodel = model.Submodel(
        "urn:test:files", submodel_element=[model.File("Manual", "application/pdf", value="/aasx/files/m.pdf")]
    )
    logging.getLogger("basyx").setLevel(logging.CRITICAL)
    try:
        package = write_package([submodel], {}, "aasx")
    finally:
        logging.getLogger("basyx").setLevel(logging.NOTSET)
    report = read_package(package, "missing.aasx").report
    (issue,) = report.errors
    assert issue.path == "submodel urn:test:files Manual"
    assert "/aasx/files/m.pdf" in issue.message


# --- JSON: depth --------------------------------------------------------------------------------


def test_deeply_nested_json_is_rejected_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(PackageError, match="nested"):
        read_package(b"[" * 100_000 + b"]" * 100_000, "deep.json")
    with pytest.raises(PackageError, match="nested deeper than 200"):
        read_package(b'{"submodels": ' + b"[" * 500 + b"]" * 500 + b"}", "deep.json")
    assert time.monotonic() - started < 2.0


def test_not_a_package_is_rejected() -> None:
    with pytest.raises(PackageError, match="neither AASX, JSON nor XML"):
        read_package(b"hello", "hello.txt")
    with pytest.raises(PackageError, match="not valid JSON"):
        read_package(b"{oops", "broken.json")


# --- v3.0 input -----------------------------------------------------------------------------------


def test_v30_xml_is_read_fully() -> None:
    result = read_package_file(PACKAGES / "v30_environment.xml")
    report = result.report
    assert report.metamodel_version == "3.0"
    assert (
        report.counts_in
        == report.counts_taken
        == {
            "shells": 1,
            "submodels": 1,
            "concept_descriptions": 0,
            "submodel_elements": 8,
        }
    )
    assert [issue.message for issue in report.issues] == [
        "metamodel v3.0 namespace https://admin-shell.io/aas/3/0 read as v3.1"
    ]
    submodel = next(item for item in result.identifiables if isinstance(item, model.Submodel))
    speed = submodel.get_referable("Speed")
    assert isinstance(speed, model.Property)
    assert speed.value == 1450.5
    readings = submodel.get_referable("Readings")
    assert isinstance(readings, model.SubmodelElementList)
    assert [item.value for item in readings.value] == [1, 2]


def test_v30_aasx_is_read_fully_where_basyx_alone_reads_nothing() -> None:
    files = {"/aasx/files/manual.pdf": (b"%PDF manual", "application/pdf")}
    package = _rewrite_part(
        write_package(_v30_objects(), files, "aasx"),
        {"https://admin-shell.io/aas/3/1": b"https://admin-shell.io/aas/3/0"},
    )
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
    files_found = aasx.DictSupplementaryFileContainer()  # type: ignore[no-untyped-call]
    logging.getLogger("basyx").setLevel(logging.CRITICAL)
    try:
        with aasx.AASXReader(io.BytesIO(package)) as reader:
            reader.read_into(store, files_found)
    finally:
        logging.getLogger("basyx").setLevel(logging.NOTSET)
    assert len(store) == 0  # the bug this layer beats

    result = read_package(package, "v30.aasx")
    assert result.report.metamodel_version == "3.0"
    assert result.report.counts_taken == result.report.counts_in
    assert result.report.counts_taken["submodel_elements"] == 8
    assert result.supplementary_files == files


def test_aasx_with_a_json_part_reads_back() -> None:
    objects = _v30_objects()
    files = {"/aasx/files/manual.pdf": (b"%PDF manual", "application/pdf")}
    package = write_package(objects, files, "aasx", aasx_part_format="json")
    assert any(name.endswith(".json") for name in zipfile.ZipFile(io.BytesIO(package)).namelist())
    result = read_package(package, "json-part.aasx")
    assert result.report.issues == []
    assert result.supplementary_files == files
    assert write_package(result.identifiables, None, "json") == write_package(objects, None, "json")


# --- repairs --------------------------------------------------------------------------------------


def _repairs() -> dict[str, tuple[str, str]]:
    report = read_package((PACKAGES / "needs_repairs.json").read_bytes(), "needs_repairs.json").report
    return {issue.path: (issue.severity, issue.message) for issue in report.issues}


@pytest.mark.parametrize(
    ("path", "severity", "message"),
    [
        ("assetAdministrationShells[0].assetInformation.assetType", "repaired", "empty optional string removed"),
        ("submodels[0].submodelElements[5].value", "repaired", "empty optional string removed"),
        ("assetAdministrationShells[0].submodels[1]", "repaired", "template placeholder reference"),
        ("submodels[0].semanticId", "repaired", "template placeholder reference"),
        ("submodels[0].submodelElements[2].first", "repaired", "template placeholder reference"),
        ("submodels[0].submodelElements[0].description[0]", "repaired", "language string with empty text removed"),
        ("submodels[0].submodelElements[0].description", "repaired", "empty optional language string set removed"),
        ("submodels[0].submodelElements[3].value[0].idShort", "repaired", "AASd-120"),
        ("submodels[0].submodelElements[3].value[1].idShort", "repaired", "'not valid' of a list item removed"),
        ("submodels[0].submodelElements[3].valueTypeListElement", "repaired", "set to 'xs:string'"),
        ("submodels[0].submodelElements[7].value", "repaired", "normalised to '/aasx/files/manual.pdf'"),
        ("submodels[0].submodelElements[6].value", "dropped", "climbs above the package root"),
        ("conceptDescriptions[0].idShort", "dropped", "'IEC CDD' violates AASd-002"),
        ("submodels[0].submodelElements[1]", "dropped", "Property: invalid literal for int()"),
        ("submodels[0].submodelElements[4]", "dropped", "AASd-109"),
        ("submodels[0].submodelElements[8].value[0]", "dropped", "XSD bool"),
        ("submodels[0].submodelElements[9]", "dropped", "'Good' occurs earlier in the same parent"),
    ],
)
def test_each_repair_and_drop_kind_is_reported_with_its_path(path: str, severity: str, message: str) -> None:
    found = _repairs()
    assert path in found, sorted(found)
    assert found[path][0] == severity
    assert message in found[path][1]


def test_dropped_entries_account_for_exactly_the_elements_not_taken() -> None:
    result = read_package((PACKAGES / "needs_repairs.json").read_bytes(), "needs_repairs.json")
    report = result.report
    assert report.counts_in["submodel_elements"] == 14
    assert report.counts_taken["submodel_elements"] == 10 == count_elements(result.identifiables)["submodel_elements"]
    assert report.lost() == report.difference()
    document = report.to_json()
    assert document["countsIn"]["submodel_elements"] == 14
    assert document["dropped"] == len(report.drops) == 6
    assert {"severity", "path", "message"} <= document["issues"][0].keys()
    assert report.summary().splitlines()[0].endswith("12 repaired, 6 dropped, 0 errors")
    json.dumps(document)


def test_a_dropped_container_counts_its_whole_subtree_once() -> None:
    document = {
        "submodels": [
            {
                "modelType": "Submodel",
                "id": "urn:test:nested",
                "submodelElements": [
                    {
                        "modelType": "SubmodelElementCollection",
                        "idShort": "Outer",
                        "category": "NOT-A-CATEGORY-" * 20,
                        "value": [
                            {"modelType": "Property", "idShort": "Bad", "valueType": "xs:int", "value": "x"},
                            {"modelType": "Property", "idShort": "Fine", "valueType": "xs:int", "value": "1"},
                        ],
                    }
                ],
            }
        ]
    }
    report = read_package(json.dumps(document).encode(), "nested.json").report
    assert [issue.path for issue in report.drops] == [
        "submodels[0].submodelElements[0].value[0]",
        "submodels[0].submodelElements[0]",
    ]
    assert [issue.lost["submodel_elements"] for issue in report.drops] == [1, 2]
    assert (
        report.lost()
        == report.difference()
        == {"shells": 0, "submodels": 0, "concept_descriptions": 0, "submodel_elements": 3}
    )


def test_strict_mode_rejects_at_the_first_issue() -> None:
    data = (PACKAGES / "needs_repairs.json").read_bytes()
    with pytest.raises(ImportRejected) as rejected:
        read_package(data, "needs_repairs.json", strict=True)
    assert rejected.value.issue.path == "assetAdministrationShells[0].assetInformation.assetType"
    assert "strict import rejected" in str(rejected.value)
    assert read_package(write_package(_v30_objects(), None, "json"), "clean.json", strict=True).report.issues == []


def test_single_identifiable_documents_and_duplicates() -> None:
    submodel = {"modelType": "Submodel", "id": "urn:test:single", "idShort": "Single"}
    result = read_package(json.dumps(submodel).encode(), "single.json")
    assert [item.id for item in result.identifiables] == ["urn:test:single"]
    assert "read as an environment" in result.report.issues[0].message

    twice = {"submodels": [submodel, submodel], "extra": 1}
    report = read_package(json.dumps(twice).encode(), "twice.json").report
    assert {issue.path: issue.severity for issue in report.issues} == {"extra": "dropped", "submodels[1]": "dropped"}
    assert (
        report.lost()
        == report.difference()
        == {"shells": 0, "submodels": 1, "concept_descriptions": 0, "submodel_elements": 0}
    )


def test_export_keeps_the_given_order_of_set_like_references() -> None:
    shell = model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="urn:test:asset"),
        "urn:test:shell",
        submodel=OrderedSet(  # type: ignore[arg-type]
            model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, f"urn:test:sm:{name}"),), model.Submodel)
            for name in ("c", "a", "b")
        ),
    )
    document = json.loads(write_package([shell], None, "json"))
    values = [reference["keys"][0]["value"] for reference in document["assetAdministrationShells"][0]["submodels"]]
    assert values == ["urn:test:sm:c", "urn:test:sm:a", "urn:test:sm:b"]
    xml = write_package([shell], None, "xml").decode()
    assert xml.index("urn:test:sm:c") < xml.index("urn:test:sm:a") < xml.index("urn:test:sm:b")

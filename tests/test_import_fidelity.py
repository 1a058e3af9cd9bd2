"""Vendors' packages: every repair yields an object that round-trips, nothing is lost without a word,
and one bad stored object never stops the hub (it is quarantined at start).

Each input reproduces, in miniature, the shape found in a published IDTA template (named per test).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from basyx.aas import model

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.errors import PackageError
from aas_server.exchange import read_package, write_package
from aas_server.exchange.roundtrip import RoundTripError, check_roundtrip
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub

PERSISTENCE_LOGGER = "aas_server.persistence.sqlite"
SHELL_ID = "urn:example:aas:fidelity"
SUBMODEL_ID = "urn:example:sm:fidelity"
CONCEPT_ID = "urn:example:cd:digital-files"
KEY_CONCEPT_ID = "urn:example:cd:basic-maintenance-information"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def placeholder() -> dict[str, Any]:
    return {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": ""}]}


def global_reference(value: str) -> dict[str, Any]:
    return {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": value}]}


def concept_with_placeholder_value_id() -> dict[str, Any]:
    """Handover Documentation 2.0 example, ``0173-1#02-ABK126#002``: a value list item with a placeholder valueId."""
    return {
        "modelType": "ConceptDescription",
        "id": CONCEPT_ID,
        "idShort": "DigitalFiles",
        "embeddedDataSpecifications": [
            {
                "dataSpecification": global_reference(
                    "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3/0"
                ),
                "dataSpecificationContent": {
                    "modelType": "DataSpecificationIec61360",
                    "preferredName": [{"language": "en", "text": "Digital files"}],
                    "dataType": "STRING",
                    "valueList": {"valueReferencePairs": [{"value": "File", "valueId": placeholder()}]},
                },
            }
        ],
    }


def environment(*submodel_elements: dict[str, Any], concepts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "assetAdministrationShells": [
            {
                "modelType": "AssetAdministrationShell",
                "id": SHELL_ID,
                "idShort": "Fidelity",
                "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:example:asset:fidelity"},
                "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": SUBMODEL_ID}]}],
            }
        ],
        "submodels": [
            {
                "modelType": "Submodel",
                "id": SUBMODEL_ID,
                "idShort": "Fidelity",
                "submodelElements": list(submodel_elements),
            }
        ],
        "conceptDescriptions": concepts if concepts is not None else [concept_with_placeholder_value_id()],
    }


def property_json(id_short: str, value: str = "1", **extra: Any) -> dict[str, Any]:
    return {"modelType": "Property", "idShort": id_short, "valueType": "xs:int", "value": value, **extra}


def document(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def rest_only_hub(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


def package_form(content: bytes, file_name: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("fileName", file_name)
    form.add_field("file", content, filename=file_name, content_type="application/json")
    return form


def nulls(node: Any, path: str = "$") -> list[str]:
    """JSON paths holding ``null`` (Part 1 JSON has none: an absent optional attribute is left out)."""
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in nulls(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [found for index, value in enumerate(node) for found in nulls(value, f"{path}[{index}]")]
    return []


# --- finding 8: one upload must not brick the hub -----------------------------------------------------


def test_a_removed_placeholder_value_id_leaves_a_value_list_item_that_round_trips() -> None:
    result = read_package(document(environment()), "handover.json")
    (issue,) = [issue for issue in result.report.issues if issue.path.endswith(".valueId")]
    assert issue.severity == "repaired"
    assert "template placeholder" in issue.message

    exported = write_package(result.identifiables, None, "json")
    assert nulls(json.loads(exported)) == []
    again = read_package(exported, "exported.json")
    assert again.report.issues == []
    assert again.report.counts_taken == result.report.counts_taken
    (concept,) = [item for item in again.identifiables if isinstance(item, model.ConceptDescription)]
    content = concept.embedded_data_specifications[0].data_specification_content
    assert isinstance(content, model.DataSpecificationIEC61360)
    assert content.value_list is not None
    assert [(pair.value, pair.value_id) for pair in content.value_list] == [("File", None)]
    for identifiable in result.identifiables:
        check_roundtrip(identifiable)


def test_check_roundtrip_names_an_object_that_does_not_read_back() -> None:
    submodel = model.Submodel(SUBMODEL_ID, id_short="Broken")
    submodel._id_short = "not valid"  # past basyx's setter, as a faulty writer could
    with pytest.raises(RoundTripError, match=r"Submodel 'urn:example:sm:fidelity'.*does not read back"):
        check_roundtrip(submodel)


async def test_the_handover_shape_uploads_serves_without_null_exports_and_survives_a_restart(tmp_path: Path) -> None:
    settings = rest_only_hub(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        async with http.post(f"{api}/packages", data=package_form(document(environment()), "handover.json")) as reply:
            assert reply.status == 201, await reply.text()
        async with http.get(f"{api}/concept-descriptions/{b64(CONCEPT_ID)}") as reply:
            assert reply.status == 200, await reply.text()
            served = await reply.json()
        assert nulls(served) == []
        pairs = served["embeddedDataSpecifications"][0]["dataSpecificationContent"]["valueList"]["valueReferencePairs"]
        assert pairs == [{"value": "File"}]
        async with http.get(f"{api}/serialization", headers={"Accept": "application/json"}) as reply:
            assert reply.status == 200, await reply.text()
            exported = await reply.read()
        again = read_package(exported, "exported.json")
        assert again.report.issues == []
        assert again.report.counts_taken["concept_descriptions"] == 1
    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/concept-descriptions/{b64(CONCEPT_ID)}") as reply,
    ):
        assert reply.status == 200, await reply.text()
        assert await reply.json() == served


async def test_a_stored_object_that_does_not_read_back_is_quarantined_and_the_rest_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = rest_only_hub(tmp_path)
    good = {
        "modelType": "Submodel",
        "id": "urn:example:sm:good",
        "idShort": "Good",
        "submodelElements": [property_json("Count", "7")],
    }
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        async with http.post(f"{hub.rest_url}/submodels", json=good) as reply:
            assert reply.status == 201, await reply.text()
        async with http.post(
            f"{hub.rest_url}/concept-descriptions", json={"modelType": "ConceptDescription", "id": CONCEPT_ID}
        ) as reply:
            assert reply.status == 201, await reply.text()

    # What a hub before the fix wrote for the Handover example: a value list item with "valueId": null.
    broken = concept_with_placeholder_value_id()
    content = broken["embeddedDataSpecifications"][0]["dataSpecificationContent"]
    content["valueList"]["valueReferencePairs"][0]["valueId"] = None
    with sqlite3.connect(settings.sqlite_path) as database:
        changed = database.execute(
            "UPDATE identifiables SET document = ? WHERE id = ?", (json.dumps(broken), CONCEPT_ID)
        ).rowcount
    assert changed == 1

    caplog.set_level(logging.ERROR, logger=PERSISTENCE_LOGGER)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        async with http.get(f"{api}/submodels/{b64('urn:example:sm:good')}/submodel-elements/Count/$value") as reply:
            assert reply.status == 200
            assert await reply.json() == {"Count": 7}
        async with http.get(f"{api}/concept-descriptions/{b64(CONCEPT_ID)}") as reply:
            assert reply.status == 404
        async with http.get(f"{api}/serialization", headers={"Accept": "application/json"}) as reply:
            assert reply.status == 200, await reply.text()
        # The id is free again: a good object of that id can be created.
        async with http.post(
            f"{api}/concept-descriptions", json={"modelType": "ConceptDescription", "id": CONCEPT_ID}
        ) as reply:
            assert reply.status == 201, await reply.text()
    (logged,) = [record.getMessage() for record in caplog.records if "quarantined" in record.getMessage()]
    assert CONCEPT_ID in logged
    assert "valueId" in logged

    with sqlite3.connect(settings.sqlite_path) as database:
        rows = database.execute("SELECT id, kind, document, reason FROM quarantined_identifiables").fetchall()
    ((identifier, kind, kept, reason),) = rows
    assert (identifier, kind) == (CONCEPT_ID, "concept_description")
    assert json.loads(kept) == broken  # kept as it was stored, not deleted
    assert "valueId" in reason
    async with SqliteRepository(settings.sqlite_path) as repository:
        assert await repository.quarantined_identifiables() == [(CONCEPT_ID, "concept_description", reason)]


async def test_a_quarantined_object_the_twin_files_define_is_rebuilt_from_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    twins = tmp_path / "line.json"
    twins.write_text(json.dumps(environment(property_json("Count", "3"), concepts=[])), encoding="utf-8")
    settings = rest_only_hub(tmp_path / "data").model_copy(update={"twins": [twins]})
    element = f"/submodels/{b64(SUBMODEL_ID)}/submodel-elements/Count/$value"
    async with Hub(settings) as hub:  # the first start builds the model from the twin file and stores it
        assert hub.store.submodel(SUBMODEL_ID).id_short == "Fidelity"
    with sqlite3.connect(settings.sqlite_path) as database:
        database.execute("UPDATE identifiables SET document = '{broken' WHERE id = ?", (SUBMODEL_ID,))

    caplog.set_level(logging.WARNING)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        async with http.get(f"{hub.rest_url}{element}") as reply:
            assert reply.status == 200, await reply.text()
            assert await reply.json() == {"Count": 3}
        async with http.get(f"{hub.rest_url}/shells/{b64(SHELL_ID)}") as reply:
            assert reply.status == 200
    assert any("rebuilt" in record.getMessage() and SUBMODEL_ID in record.getMessage() for record in caplog.records)
    async with SqliteRepository(settings.sqlite_path) as repository:
        ((identifier, kind, _),) = await repository.quarantined_identifiables()
        assert (identifier, kind) == (SUBMODEL_ID, "submodel")
        assert SUBMODEL_ID in {item.id for item in await repository.load_identifiables()}
        assert repository.quarantined_at_load == []


@pytest.mark.parametrize(
    "document",
    [
        "{not json",
        "[]",
        json.dumps({"modelType": "Property", "idShort": "Loose", "valueType": "xs:int", "value": "1"}),
        json.dumps({"modelType": "Submodel", "id": "urn:example:sm:bad", "idShort": "no spaces allowed"}),
        json.dumps({"modelType": "Submodel", "id": "urn:example:sm:bad", "submodelElements": "not a list"}),
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["not-json", "array", "element", "bad-id-short", "bad-container", "deep"],
)
async def test_any_unreadable_stored_document_is_quarantined_and_the_others_load(tmp_path: Path, document: str) -> None:
    good = model.Submodel("urn:example:sm:good", id_short="Good", submodel_element=[model.Property("Count", int, 7)])
    bad = model.Submodel("urn:example:sm:bad", id_short="Bad")
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        await repository.save_identifiables([good, bad])
    with sqlite3.connect(tmp_path / "hub.sqlite") as database:
        database.execute("UPDATE identifiables SET document = ? WHERE id = ?", (document, "urn:example:sm:bad"))
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        assert [item.id for item in await repository.load_identifiables()] == ["urn:example:sm:good"]
        ((identifier, kind, reason),) = await repository.quarantined_identifiables()
        assert (identifier, kind) == ("urn:example:sm:bad", "submodel")
        assert reason
        assert [item.id for item in await repository.load_identifiables()] == ["urn:example:sm:good"]


async def test_a_qualifier_value_zero_or_false_is_served_and_kept(tmp_path: Path) -> None:
    qualified = property_json(
        "Count",
        qualifiers=[
            {"type": "Minimum", "valueType": "xs:int", "value": "0"},
            {"type": "Required", "valueType": "xs:boolean", "value": "false"},
        ],
    )
    submodel = {"modelType": "Submodel", "id": SUBMODEL_ID, "idShort": "Qualified", "submodelElements": [qualified]}
    settings = rest_only_hub(tmp_path)
    element = f"/submodels/{b64(SUBMODEL_ID)}/submodel-elements/Count"
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as reply:
            assert reply.status == 201, await reply.text()
        async with http.get(f"{hub.rest_url}{element}") as reply:
            served = await reply.json()
    assert {(item["type"], item.get("value")) for item in served["qualifiers"]} == {
        ("Minimum", "0"),
        ("Required", "false"),
    }
    async with Hub(settings) as hub, aiohttp.ClientSession() as http, http.get(f"{hub.rest_url}{element}") as reply:
        assert await reply.json() == served


# --- finding 17: language strings dropped without a word ---------------------------------------------


def test_a_second_string_in_the_same_language_is_reported_and_the_first_kept() -> None:
    """TechnicalData 2.0.1 sample: displayName en "Sensor range" and en "Sensor Reichweite"."""
    element = property_json(
        "SensorRange",
        displayName=[
            {"language": "en", "text": "Sensor range"},
            {"language": "en", "text": "Sensor Reichweite"},
            {"language": "de", "text": "Sensorreichweite"},
            {"language": "de", "text": "Sensorreichweite"},
        ],
    )
    data = document(environment(element, concepts=[]))
    for source in (data, write_xml_with_duplicates(data)):
        result = read_package(source, "sensor.json" if source is data else "sensor.xml")
        messages = {issue.path.split("#")[-1]: (issue.severity, issue.message) for issue in result.report.issues}
        differing = messages["submodels[0].submodelElements[0].displayName[1]"]
        assert differing[0] == "repaired"
        assert "'Sensor Reichweite'" in differing[1]
        assert "'Sensor range'" in differing[1]
        same = messages["submodels[0].submodelElements[0].displayName[3]"]
        assert same == ("repaired", "second language string in 'de' removed: the same text as the first")
        (submodel,) = [item for item in result.identifiables if isinstance(item, model.Submodel)]
        taken = submodel.get_referable("SensorRange")
        assert taken.display_name is not None
        assert dict(taken.display_name) == {"en": "Sensor range", "de": "Sensorreichweite"}


def write_xml_with_duplicates(data: bytes) -> bytes:
    """The same submodel as an XML environment (the language strings as ``langStringNameType`` items)."""
    del data
    names = "".join(
        f"<langStringNameType><language>{language}</language><text>{text}</text></langStringNameType>"
        for language, text in (
            ("en", "Sensor range"),
            ("en", "Sensor Reichweite"),
            ("de", "Sensorreichweite"),
            ("de", "Sensorreichweite"),
        )
    )
    return (
        '<environment xmlns="https://admin-shell.io/aas/3/1"><submodels><submodel>'
        f"<id>{SUBMODEL_ID}</id><submodelElements><property><idShort>SensorRange</idShort>"
        f"<displayName>{names}</displayName><valueType>xs:int</valueType><value>1</value></property>"
        "</submodelElements></submodel></submodels></environment>"
    ).encode()


# --- finding 18: loss where no library limit forces it ---------------------------------------------------


def test_a_key_of_type_identifiable_is_mapped_and_its_collection_kept() -> None:
    """Maintenance Instructions 1.0: a collection's semanticId is a ModelReference with a key of type Identifiable."""
    collection = {
        "modelType": "SubmodelElementCollection",
        "idShort": "BasicMaintenanceInformation",
        "semanticId": {"type": "ModelReference", "keys": [{"type": "Identifiable", "value": KEY_CONCEPT_ID}]},
        "value": [property_json(f"Item{index}") for index in range(42)],
    }
    elsewhere = property_json(
        "Elsewhere",
        semanticId={"type": "ModelReference", "keys": [{"type": "Identifiable", "value": "urn:example:cd:elsewhere"}]},
    )
    concept = {"modelType": "ConceptDescription", "id": KEY_CONCEPT_ID, "idShort": "BasicMaintenanceInformation"}
    result = read_package(document(environment(collection, elsewhere, concepts=[concept])), "maintenance.json")
    assert result.report.drops == []
    assert result.report.counts_taken == result.report.counts_in
    (submodel,) = [item for item in result.identifiables if isinstance(item, model.Submodel)]
    taken = submodel.get_referable("BasicMaintenanceInformation")
    assert isinstance(taken, model.SubmodelElementCollection)
    assert len(taken.value) == 42
    assert taken.semantic_id == model.ModelReference(
        (model.Key(model.KeyTypes.CONCEPT_DESCRIPTION, KEY_CONCEPT_ID),), model.ConceptDescription
    )
    elsewhere_taken = submodel.get_referable("Elsewhere")
    assert isinstance(elsewhere_taken, model.Property)
    assert elsewhere_taken.semantic_id == model.ExternalReference(
        (model.Key(model.KeyTypes.GLOBAL_REFERENCE, "urn:example:cd:elsewhere"),)
    )
    repairs = [issue for issue in result.report.repairs if issue.path.endswith("keys[0].type")]
    assert len(repairs) == 2
    assert "'ConceptDescription'" in repairs[0].message
    assert "'GlobalReference'" in repairs[1].message


def entries(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(package: bytes, names: set[str], old: bytes, new: bytes) -> bytes:
    """A copy of a zip with ``old`` replaced by ``new`` in the entries ``names``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name, content in entries(package).items():
            target.writestr(name, content.replace(old, new) if name in names else content)
    return buffer.getvalue()


def test_an_external_target_mode_origin_naming_a_package_part_is_followed() -> None:
    """Digital Product Passport 1.0: aasx-origin and aas-spec relationships with TargetMode="External"."""
    package = write_package(read_package(document(environment()), "x.json").identifiables, None, "aasx")
    external = rewrite(
        package, {"_rels/.rels", "aasx/_rels/aasx-origin.rels"}, b'TargetMode="Internal"', b'TargetMode="External"'
    )
    marked = [name for name, content in entries(external).items() if b'TargetMode="External"' in content]
    assert sorted(marked) == ["_rels/.rels", "aasx/_rels/aasx-origin.rels"]

    result = read_package(external, "dpp.aasx")
    assert result.report.counts_taken == result.report.counts_in
    assert {item.id for item in result.identifiables} == {SHELL_ID, SUBMODEL_ID, CONCEPT_ID}
    followed = [issue for issue in result.report.issues if 'TargetMode="External"' in issue.message]
    assert [issue.severity for issue in followed] == ["repaired", "repaired"]
    assert "aasx-origin" in followed[0].message
    assert "aas-spec" in followed[1].message


def test_an_external_target_outside_the_package_is_not_fetched() -> None:
    package = write_package(read_package(document(environment()), "x.json").identifiables, None, "aasx")
    origin = entries(package)["_rels/.rels"]
    assert b'Target="/aasx/aasx-origin"' in origin
    outside = rewrite(
        rewrite(package, {"_rels/.rels"}, b'TargetMode="Internal"', b'TargetMode="External"'),
        {"_rels/.rels"},
        b'Target="/aasx/aasx-origin"',
        b'Target="http://127.0.0.1:9/aasx/aasx-origin"',
    )
    with pytest.raises(PackageError, match="aasx-origin relationship is missing"):
        read_package(outside, "outside.aasx")


def test_supplemental_semantic_ids_without_a_semantic_id_are_set_aside_and_the_element_kept() -> None:
    """Handover Documentation 2.0 example and BoM IEC 81346: supplementalSemanticIds with no semanticId (AASd-118)."""
    supplemental = [global_reference("https://api.eclass-cdp.com/0173-1-07-AAS045")]
    element = property_json("Street", "5", supplementalSemanticIds=supplemental)
    data = environment(element)
    data["submodels"][0]["supplementalSemanticIds"] = copy.deepcopy(supplemental)
    data["submodels"][0]["submodelElements"].append(
        {
            "modelType": "SubmodelElementCollection",
            "idShort": "Group",
            "value": [property_json(f"P{n}") for n in range(19)],
        }
    )
    result = read_package(document(data), "bom.json")
    assert result.report.counts_taken == result.report.counts_in
    set_aside = {issue.path: issue for issue in result.report.issues if "AASd-118" in issue.message}
    assert set(set_aside) == {
        "submodels[0].supplementalSemanticIds",
        "submodels[0].submodelElements[0].supplementalSemanticIds",
    }
    for issue in set_aside.values():
        assert issue.severity == "dropped"
        assert "0173-1-07-AAS045" in issue.message
        assert not issue.lost
    (submodel,) = [item for item in result.identifiables if isinstance(item, model.Submodel)]
    street, group = submodel.get_referable("Street"), submodel.get_referable("Group")
    assert isinstance(street, model.Property)
    assert street.value == 5
    assert street.supplemental_semantic_id == []
    assert isinstance(group, model.SubmodelElementCollection)
    assert len(group.value) == 19


async def test_a_package_whose_concept_descriptions_exist_is_taken_and_only_shell_or_submodel_clashes_refused(
    tmp_path: Path,
) -> None:
    shared = {"modelType": "ConceptDescription", "id": "urn:example:cd:shared", "idShort": "Shared"}
    differing = {"modelType": "ConceptDescription", "id": "urn:example:cd:differing", "idShort": "Stored"}
    first = environment(property_json("A"), concepts=[shared, differing])
    second = environment(property_json("B"), concepts=[dict(shared), {**differing, "idShort": "Incoming"}])
    second["assetAdministrationShells"][0]["id"] = "urn:example:aas:second"
    second["submodels"][0]["id"] = "urn:example:sm:second"
    second["assetAdministrationShells"][0]["submodels"][0]["keys"][0]["value"] = "urn:example:sm:second"
    settings = rest_only_hub(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        async with http.post(f"{api}/packages", data=package_form(document(first), "first.json")) as reply:
            assert reply.status == 201, await reply.text()
        async with http.post(f"{api}/packages", data=package_form(document(second), "second.json")) as reply:
            assert reply.status == 201, await reply.text()
        async with http.get(f"{api}/submodels/{b64('urn:example:sm:second')}/submodel-elements/B/$value") as reply:
            assert reply.status == 200
        async with http.get(f"{api}/concept-descriptions/{b64('urn:example:cd:differing')}") as reply:
            assert (await reply.json())["idShort"] == "Stored"
        async with http.get(f"{api}/concept-descriptions") as reply:
            ids = sorted(item["id"] for item in (await reply.json())["result"])
        assert ids == ["urn:example:cd:differing", "urn:example:cd:shared"]
        # A submodel or shell that exists is still a conflict.
        async with http.post(f"{api}/packages", data=package_form(document(first), "again.json")) as reply:
            assert reply.status == 409, await reply.text()


def test_a_copy_of_an_identifiable_in_the_same_package_is_told_apart_from_a_differing_duplicate() -> None:
    """Purchase Order 1.0 and others list some concept descriptions twice, the same or different."""
    concepts = [
        {"modelType": "ConceptDescription", "id": "urn:example:cd:twice", "idShort": "Twice"},
        {"modelType": "ConceptDescription", "id": "urn:example:cd:twice", "idShort": "Twice"},
        {"modelType": "ConceptDescription", "id": "urn:example:cd:clash", "idShort": "First"},
        {"modelType": "ConceptDescription", "id": "urn:example:cd:clash", "idShort": "Second"},
        {"modelType": "ConceptDescription", "id": SUBMODEL_ID, "idShort": "SameIdAsTheSubmodel"},
    ]
    result = read_package(document(environment(concepts=concepts)), "order.json")
    duplicates = {issue.path: issue.message for issue in result.report.drops}
    assert duplicates == {
        "conceptDescriptions[1]": (
            "identifier 'urn:example:cd:twice' occurs earlier with the same content; the copy left out"
        ),
        "conceptDescriptions[3]": "identifier 'urn:example:cd:clash' occurs earlier; duplicate left out",
        "conceptDescriptions[4]": (
            f"identifier {SUBMODEL_ID!r} of this ConceptDescription is the id of a Submodel earlier in the package"
            " (identifiers are unique across kinds); left out"
        ),
    }
    taken = {item.id: item.id_short for item in result.identifiables if isinstance(item, model.ConceptDescription)}
    assert taken == {"urn:example:cd:twice": "Twice", "urn:example:cd:clash": "First"}


def test_a_second_qualifier_of_one_type_is_set_aside_and_its_element_kept() -> None:
    """Technical Data 2.0 template: a Property with three SMT/ExampleValue qualifiers (AASd-021) was dropped whole."""
    example = {"type": "SMT/ExampleValue", "valueType": "xs:string", "kind": "TemplateQualifier"}
    element = {
        "modelType": "Property",
        "idShort": "ClassificationSystem",
        "valueType": "xs:string",
        "qualifiers": [{**example, "value": "ECLASS"}, {**example, "value": "ECLASS"}, {**example, "value": "IEC CDD"}],
    }
    result = read_package(document(environment(element)), "technical-data.json")
    assert result.report.counts_taken == result.report.counts_in
    issues = {
        issue.path: (issue.severity, issue.message) for issue in result.report.issues if "qualifier" in issue.message
    }
    assert issues == {
        "submodels[0].submodelElements[0].qualifiers[1]": (
            "repaired",
            "second, identical qualifier of type 'SMT/ExampleValue' removed",
        ),
        "submodels[0].submodelElements[0].qualifiers[2]": (
            "dropped",
            "second qualifier of type 'SMT/ExampleValue' (value 'IEC CDD') set aside: a type once per object"
            " (AASd-021); the first (value 'ECLASS') and the object are kept",
        ),
    }
    (submodel,) = [item for item in result.identifiables if isinstance(item, model.Submodel)]
    kept = submodel.get_referable("ClassificationSystem")
    assert isinstance(kept, model.Property)
    assert [(qualifier.type, qualifier.value) for qualifier in kept.qualifier] == [("SMT/ExampleValue", "ECLASS")]

"""What a client gave comes back as given: list order and lexical value forms (issue 11, findings 10, 16, 19).

A real hub (REST on a loopback port, SQLite in a temporary directory) takes a shell, a submodel and
a concept description whose set-like lists (a shell's submodel references, specific asset ids,
``isCaseOf``, ``refersTo``, value lists) are deliberately not in sorted order, and whose values
are written in lexical forms basyx would change (``1007`` of an ``xs:double``, ``...Z``, ``1`` of
an ``xs:boolean``). Every view must give them back as given: the normal and ValueOnly forms, the
paged submodel references, the JSON, XML and AASX exports, and all of these again after a restart.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from basyx.aas import model

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.exchange import read_package, write_package
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import TwinStore
from tests.conformance.server import serve

SHELL_ID = "urn:example:aas:order"
SUBMODEL_ID = "urn:example:sm:order"
CONCEPT_ID = "urn:example:cd:order"
OTHER_SUBMODELS = [f"urn:example:sm:order-{letter}" for letter in "qxcjmbzfa"]
"""Submodel ids in an order no sorting and (with nine) almost surely no set iteration gives."""

GIVEN_VALUES = {
    "Power": ("xs:double", "1007"),
    "Stamp": ("xs:dateTime", "2024-05-01T12:00:00Z"),
    "Enabled": ("xs:boolean", "1"),
    "Ratio": ("xs:float", "1.5E2"),
    "Amount": ("xs:decimal", "10.50"),
    "Count": ("xs:int", "+07"),
    "Day": ("xs:date", "2024-05-01Z"),
}
"""idShort -> (valueType, lexical form); each differs from the form basyx writes for its value."""


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def reference(key_type: str, value: str, kind: str = "ModelReference") -> dict[str, Any]:
    return {"type": kind, "keys": [{"type": key_type, "value": value}]}


def global_reference(value: str) -> dict[str, Any]:
    return reference("GlobalReference", value, "ExternalReference")


def shell_document() -> dict[str, Any]:
    return {
        "modelType": "AssetAdministrationShell",
        "id": SHELL_ID,
        "idShort": "OrderShell",
        "assetInformation": {
            "assetKind": "Instance",
            "globalAssetId": "urn:example:asset:order",
            "specificAssetIds": [
                {"name": "serialNumber", "value": "S-9"},
                {"name": "batch", "value": "B-1"},
                {"name": "orderCode", "value": "O-5"},
                {"name": "article", "value": "A-2"},
            ],
        },
        "submodels": [reference("Submodel", identifier) for identifier in [*OTHER_SUBMODELS, SUBMODEL_ID]],
    }


def submodel_document() -> dict[str, Any]:
    properties = [
        {"modelType": "Property", "idShort": id_short, "valueType": value_type, "value": value}
        for id_short, (value_type, value) in GIVEN_VALUES.items()
    ]
    return {
        "modelType": "Submodel",
        "id": SUBMODEL_ID,
        "idShort": "Order",
        "semanticId": global_reference("urn:example:semantic:order"),
        "supplementalSemanticIds": [global_reference(f"urn:example:supplemental:{n}") for n in (3, 1, 2)],
        "extensions": [
            {
                "name": "Weight",
                "valueType": "xs:double",
                "value": "2",
                "refersTo": [reference("Submodel", identifier) for identifier in OTHER_SUBMODELS[:5]],
            }
        ],
        "qualifiers": [
            {"type": "Zeta", "kind": "ConceptQualifier", "valueType": "xs:boolean", "value": "0"},
            {"type": "Alpha", "kind": "ConceptQualifier", "valueType": "xs:int", "value": "0"},
        ],
        "submodelElements": [
            *properties,
            {"modelType": "Range", "idShort": "Limits", "valueType": "xs:double", "min": "0", "max": "1E3"},
            {
                "modelType": "BasicEventElement",
                "idShort": "Changed",
                "observed": reference("Submodel", SUBMODEL_ID),
                "direction": "output",
                "state": "on",
                "lastUpdate": "2024-05-01T12:00:00Z",
            },
            {
                "modelType": "Entity",
                "idShort": "Thing",
                "entityType": "SelfManagedEntity",
                "globalAssetId": "urn:example:asset:thing",
                "specificAssetIds": [{"name": name, "value": f"{name}-1"} for name in ("zeta", "alpha", "mu", "beta")],
            },
            {
                "modelType": "SubmodelElementCollection",
                "idShort": "Nested",
                "value": [
                    {"modelType": "Property", "idShort": name, "valueType": "xs:string", "value": name}
                    for name in ("Zulu", "Alpha", "Mike", "Bravo")
                ],
            },
        ],
    }


def concept_document() -> dict[str, Any]:
    return {
        "modelType": "ConceptDescription",
        "id": CONCEPT_ID,
        "idShort": "OrderConcept",
        "isCaseOf": [global_reference(f"urn:example:case:{letter}") for letter in "tkdwa"],
        "embeddedDataSpecifications": [
            {
                "dataSpecification": global_reference(
                    "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3"
                ),
                "dataSpecificationContent": {
                    "modelType": "DataSpecificationIec61360",
                    "preferredName": [{"language": "en", "text": "Order"}],
                    "definition": [{"language": "en", "text": "An order."}],
                    "valueList": {
                        "valueReferencePairs": [
                            {"value": value, "valueId": global_reference(f"urn:example:value:{value}")}
                            for value in ("red", "amber", "green", "blue")
                        ]
                    },
                },
            }
        ],
    }


def settings(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


def given_lists(document: Any) -> Iterator[tuple[str, Any]]:
    """Every list in a JSON document with the path it is at (to compare order)."""
    stack: list[tuple[str, Any]] = [("$", document)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{where}.{key}", value) for key, value in node.items())
        elif isinstance(node, list):
            yield where, node
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(node))


def assert_as_given(served: dict[str, Any], given: dict[str, Any]) -> None:
    """Every list of ``given`` is in ``served`` in the same order; every lexical value is the same string."""
    served_lists = dict(given_lists(served))
    for where, items in given_lists(given):
        assert where in served_lists, f"{where} is missing"
        assert served_lists[where] == items, f"{where}: served {served_lists[where]}, given {items}"


def values_of(document: dict[str, Any]) -> dict[str, str]:
    return {
        element["idShort"]: element["value"]
        for element in document["submodelElements"]
        if element["modelType"] == "Property" and element["idShort"] in GIVEN_VALUES
    }


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def submodel_reference_pages(http: aiohttp.ClientSession, base: str) -> list[str]:
    """The shell's submodel references through ``limit=2`` pages, following the cursors."""
    found: list[str] = []
    cursor = ""
    while True:
        page = await get_json(http, f"{base}/shells/{b64(SHELL_ID)}/submodel-refs?limit=2{cursor}")
        assert len(page["result"]) <= 2
        found.extend(item["keys"][0]["value"] for item in page["result"])
        if "cursor" not in page["paging_metadata"]:
            return found
        cursor = f"&cursor={page['paging_metadata']['cursor']}"


async def check_everything_as_given(http: aiohttp.ClientSession, base: str) -> None:
    """The views a client has: normal form, ValueOnly, paged references, the three export formats."""
    shell = await get_json(http, f"{base}/shells/{b64(SHELL_ID)}")
    assert_as_given(shell, shell_document())
    submodel = await get_json(http, f"{base}/submodels/{b64(SUBMODEL_ID)}")
    assert_as_given(submodel, submodel_document())
    assert values_of(submodel) == {id_short: value for id_short, (_, value) in GIVEN_VALUES.items()}
    limits = next(element for element in submodel["submodelElements"] if element["idShort"] == "Limits")
    assert (limits["min"], limits["max"]) == ("0", "1E3")
    changed = next(element for element in submodel["submodelElements"] if element["idShort"] == "Changed")
    assert changed["lastUpdate"] == "2024-05-01T12:00:00Z"
    assert [qualifier.get("value") for qualifier in submodel["qualifiers"]] == ["0", "0"]
    assert submodel["extensions"][0]["value"] == "2"
    concept = await get_json(http, f"{base}/concept-descriptions/{b64(CONCEPT_ID)}")
    assert_as_given(concept, concept_document())

    value_only = await get_json(http, f"{base}/submodels/{b64(SUBMODEL_ID)}/$value")
    assert {key: value_only[key] for key in GIVEN_VALUES} == {
        "Power": 1007,
        "Stamp": "2024-05-01T12:00:00Z",
        "Enabled": True,
        "Ratio": 150.0,
        "Amount": 10.5,
        "Count": 7,
        "Day": "2024-05-01Z",
    }
    assert json.dumps(value_only["Power"]) == "1007"
    assert value_only["Limits"] == {"min": 0, "max": 1000.0}

    assert await submodel_reference_pages(http, base) == [*OTHER_SUBMODELS, SUBMODEL_ID]

    async with http.get(f"{base}/rdf") as response:
        assert response.status == 200, await response.text()
        turtle = await response.text()
    for _, value in GIVEN_VALUES.values():
        assert f'"{value}"' in turtle, value

    query = f"aasIds={b64(SHELL_ID)}&submodelIds={b64(SUBMODEL_ID)}&includeConceptDescriptions=true"
    exported = await get_json(http, f"{base}/serialization?{query}")
    assert_as_given(exported["assetAdministrationShells"][0], shell_document())
    assert_as_given(exported["submodels"][0], submodel_document())
    assert_as_given(exported["conceptDescriptions"][0], concept_document())
    for accept, name in (
        ("application/xml", "export.xml"),
        ("application/asset-administration-shell-package+xml", "export.aasx"),
    ):
        async with http.get(f"{base}/serialization?{query}", headers={"Accept": accept}) as response:
            assert response.status == 200, await response.text()
            package = await response.read()
        check_package_as_given(package, name)


def check_package_as_given(package: bytes, name: str) -> None:
    """An exported package, read back by the hub's importer, holds the lists and lexical forms as given."""
    documents = json.loads(write_package(read_package(package, name).identifiables, None, "json"))
    assert_as_given(documents["assetAdministrationShells"][0], shell_document())
    assert_as_given(documents["submodels"][0], submodel_document())
    assert_as_given(documents["conceptDescriptions"][0], concept_document())
    assert values_of(documents["submodels"][0]) == {id_short: value for id_short, (_, value) in GIVEN_VALUES.items()}
    changed = next(
        element for element in documents["submodels"][0]["submodelElements"] if element["idShort"] == "Changed"
    )
    assert changed["lastUpdate"] == "2024-05-01T12:00:00Z"
    if name.endswith(".xml"):
        assert b"<aas:value>1007</aas:value>" in package
        assert b"<aas:value>2024-05-01T12:00:00Z</aas:value>" in package
    if name.endswith(".aasx"):
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            part = next(member for member in archive.namelist() if member.startswith("aasx/data."))
            assert b"<aas:value>1007</aas:value>" in archive.read(part)


async def test_order_and_lexical_forms_survive_rest_exports_and_a_restart(tmp_path: Path) -> None:
    async with Hub(settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        base = hub.rest_url
        assert base is not None
        for collection, document in (
            ("concept-descriptions", concept_document()),
            ("submodels", submodel_document()),
            ("shells", shell_document()),
        ):
            async with http.post(f"{base}/{collection}", json=document) as response:
                assert response.status == 201, await response.text()
                assert_as_given(await response.json(), document)
        await check_everything_as_given(http, base)

    async with Hub(settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        await check_everything_as_given(http, hub.rest_url)


async def test_a_new_value_replaces_the_given_form_and_an_equal_one_keeps_it(tmp_path: Path) -> None:
    elements = f"/submodels/{b64(SUBMODEL_ID)}/submodel-elements"
    async with Hub(settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        base = hub.rest_url
        assert base is not None
        async with http.post(f"{base}/submodels", json=submodel_document()) as response:
            assert response.status == 201, await response.text()
        async with http.patch(f"{base}{elements}/Power/$value", json=12.5) as response:
            assert response.status == 204, await response.text()
        async with http.patch(f"{base}{elements}/Stamp/$value", json="2024-05-01T12:00:00+00:00") as response:
            assert response.status == 204, await response.text()
        power = await get_json(http, f"{base}{elements}/Power")
        stamp = await get_json(http, f"{base}{elements}/Stamp")
        assert (power["value"], stamp["value"]) == ("12.5", "2024-05-01T12:00:00Z")

    async with Hub(settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        submodel = await get_json(http, f"{hub.rest_url}/submodels/{b64(SUBMODEL_ID)}")
        assert values_of(submodel) == {
            **{id_short: value for id_short, (_, value) in GIVEN_VALUES.items()},
            "Power": "12.5",
        }


def test_exports_keep_the_order_and_forms_of_an_imported_document() -> None:
    """JSON -> objects -> JSON, XML and AASX: each reads back with lists and lexical forms as in the source."""
    source = {
        "assetAdministrationShells": [shell_document()],
        "submodels": [submodel_document()],
        "conceptDescriptions": [concept_document()],
    }
    imported = read_package(json.dumps(source).encode(), "source.json")
    assert imported.report.issues == []
    for package_format in ("json", "xml", "aasx"):
        check_package_as_given(write_package(imported.identifiables, None, package_format), f"export.{package_format}")


async def test_path_listing_limit_counts_the_paths_returned() -> None:
    """``$path?limit=1`` answers one path; the pages together hold every path once, in model order."""
    submodel = model.Submodel(
        "urn:example:sm:paths",
        submodel_element=[
            model.SubmodelElementCollection(
                "Outer",
                [model.SubmodelElementCollection("Inner", [model.Property("Leaf", str, "x")])],
            ),
            model.Property("Second", str, "y"),
        ],
    )
    expected = ["Outer", "Outer.Inner", "Outer.Inner.Leaf", "Second"]
    async with serve([submodel]) as origin, aiohttp.ClientSession() as http:
        url = f"{origin}/api/v3.0/submodels/{b64(submodel.id)}/submodel-elements/$path"
        whole = await get_json(http, url)
        assert whole["result"] == expected
        found: list[str] = []
        cursor = ""
        while True:
            page = await get_json(http, f"{url}?limit=1{cursor}")
            assert len(page["result"]) == 1, page
            found.extend(page["result"])
            if "cursor" not in page["paging_metadata"]:
                break
            cursor = f"&cursor={page['paging_metadata']['cursor']}"
        assert found == expected
        core = await get_json(http, f"{url}?level=core&limit=5")
        assert core["result"] == ["Outer", "Second"]


def test_a_shell_built_in_code_keeps_its_reference_order_from_the_store_on() -> None:
    """A shell built with a plain ``set`` is frozen in one order when stored; references added later come last."""
    references = [
        model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, identifier),), model.Submodel)
        for identifier in OTHER_SUBMODELS
    ]
    shell = model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="urn:example:asset:built"),
        "urn:example:aas:built",
        submodel=set(references),
    )
    store = TwinStore()
    store.add(shell)
    first = list(store.shell(shell.id).submodel)
    added = [
        model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, f"urn:example:sm:added-{n}"),), model.Submodel)
        for n in range(20)
    ]
    for reference in added:
        store.shell(shell.id).submodel.add(reference)
    assert list(store.shell(shell.id).submodel) == [*first, *added]

"""Model changes over the AAS REST API (Part 2 repositories): shells, submodels, elements, concept descriptions.

Real server on loopback; each change is checked in a later GET and on the store's change bus.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier
from aas_server.store.twin_store import ModelChanged, ModelChangeKind, TwinStore
from tests.test_api import (
    API,
    CONCEPT_ID,
    NAMEPLATE_ID,
    OPERATIONAL_ID,
    PRESS_SHELL_ID,
    PUMP_SHELL_ID,
    RecordingDevice,
    assert_result,
    build_store,
    get_json,
    get_value,
)

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def device() -> RecordingDevice:
    return RecordingDevice()


@pytest.fixture
def store(device: RecordingDevice) -> TwinStore:
    return build_store(device)


@pytest.fixture
async def client(store: TwinStore) -> AsyncIterator[Client]:
    test_client: Client = TestClient(TestServer(create_app(store)))
    async with test_client:
        yield test_client


def b64(text: str) -> str:
    return encode_identifier(text)


def sm(path: str = "", submodel_id: str = OPERATIONAL_ID) -> str:
    return f"{API}/submodels/{b64(submodel_id)}{path}"


def nested(path: str = "", shell_id: str = PRESS_SHELL_ID, submodel_id: str = OPERATIONAL_ID) -> str:
    return f"{API}/shells/{b64(shell_id)}/submodels/{b64(submodel_id)}{path}"


def submodel_json(
    identifier: str, elements: list[dict[str, Any]] | None = None, id_short: str = "New"
) -> dict[str, Any]:
    return {"modelType": "Submodel", "id": identifier, "idShort": id_short, "submodelElements": elements or []}


def property_json(id_short: str, value: str = "1", value_type: str = "xs:int") -> dict[str, Any]:
    return {"modelType": "Property", "idShort": id_short, "valueType": value_type, "value": value}


def shell_json(identifier: str, id_short: str = "NewShell") -> dict[str, Any]:
    return {
        "modelType": "AssetAdministrationShell",
        "id": identifier,
        "idShort": id_short,
        "assetInformation": {"assetKind": "Instance", "globalAssetId": f"{identifier}/asset"},
    }


def drain(subscription: Any) -> list[ModelChanged]:
    return [event for event in subscription.get_nowait_all() if isinstance(event, ModelChanged)]


# --- submodels -----------------------------------------------------------------------------------


async def test_post_submodel_is_served_listed_and_announced(client: Client, store: TwinStore) -> None:
    events = store.bus.subscribe("test")
    response = await client.post(f"{API}/submodels", json=submodel_json("urn:new:1", [property_json("Count")]))
    assert response.status == 201, await response.text()
    assert response.headers["Location"].endswith(f"/submodels/{b64('urn:new:1')}")
    assert (await response.json())["id"] == "urn:new:1"
    assert (await get_value(client, sm("/submodel-elements/Count/$value", "urn:new:1"))) == 1
    listed = await get_json(client, f"{API}/submodels")
    assert [item["id"] for item in listed["result"]][-1] == "urn:new:1"
    assert [(event.kind, event.identifiable_id) for event in drain(events)] == [(ModelChangeKind.CREATED, "urn:new:1")]


async def test_post_existing_submodel_is_409(client: Client) -> None:
    response = await client.post(f"{API}/submodels", json=submodel_json(OPERATIONAL_ID))
    await assert_result(response, 409, "Conflict")


async def test_constraint_violation_is_400_naming_where(client: Client) -> None:
    bad = submodel_json("urn:new:bad", [property_json("ok"), property_json("1bad")])
    message = await assert_result(await client.post(f"{API}/submodels", json=bad), 400, "BadRequest")
    assert "$.submodelElements[1]" in message["text"]
    assert "AASd-002" in message["text"]
    duplicate = submodel_json("urn:new:dup", [property_json("same"), property_json("same")])
    message = await assert_result(await client.post(f"{API}/submodels", json=duplicate), 400)
    assert "AASd-022" in message["text"]
    wrong_kind = await client.post(f"{API}/submodels", json=shell_json("urn:new:shell"))
    await assert_result(wrong_kind, 400)
    await assert_result(await client.get(sm("", "urn:new:bad")), 404)


async def test_reference_without_keys_and_deeply_nested_bodies_are_400(client: Client) -> None:
    keyless = {**property_json("Keyless"), "semanticId": {"type": "ModelReference", "keys": []}}
    message = await assert_result(await client.post(sm("/submodel-elements"), json=keyless), 400, "BadRequest")
    assert "empty" in message["text"]
    for depth in (300, 1000):
        nested_lists = b"[" * depth + b"]" * depth
        message = await assert_result(await client.post(sm("/submodel-elements"), data=nested_lists), 400)
        assert "nested deeper than 200 levels" in message["text"]
    await assert_result(await client.get(sm("/submodel-elements/Keyless")), 404)


async def test_put_submodel_replaces_creates_and_checks_the_id(client: Client, store: TwinStore) -> None:
    replacement = submodel_json(NAMEPLATE_ID, [property_json("SerialNumber", "SN-2", "xs:string")], "Nameplate")
    response = await client.put(sm("", NAMEPLATE_ID), json=replacement)
    assert response.status == 204, await response.text()
    assert await get_json(client, sm("/$value", NAMEPLATE_ID)) == {"SerialNumber": "SN-2"}
    created = await client.put(sm("", "urn:new:put"), json=submodel_json("urn:new:put"))
    assert created.status == 201
    assert store.submodel("urn:new:put").id_short == "New"
    mismatch = await client.put(sm("", NAMEPLATE_ID), json=submodel_json("urn:other"))
    message = await assert_result(mismatch, 400, "BadRequest")
    assert "differs" in message["text"]


async def test_patch_submodel_and_metadata_merge_attributes(client: Client) -> None:
    response = await client.patch(sm("", NAMEPLATE_ID), json={"idShort": "Plate"})
    assert response.status == 204, await response.text()
    body = await get_json(client, sm("", NAMEPLATE_ID))
    assert body["idShort"] == "Plate"
    assert body["submodelElements"][0]["idShort"] == "SerialNumber"
    response = await client.patch(sm("/$metadata", NAMEPLATE_ID), json={"category": "PARAMETER"})
    assert response.status == 204, await response.text()
    assert (await get_json(client, sm("/$metadata", NAMEPLATE_ID)))["category"] == "PARAMETER"
    not_metadata = await client.patch(sm("/$metadata", NAMEPLATE_ID), json={"submodelElements": []})
    await assert_result(not_metadata, 400)
    other_id = await client.patch(sm("", NAMEPLATE_ID), json={"id": "urn:other"})
    await assert_result(other_id, 400)


async def test_delete_submodel_and_bound_submodel_conflict(client: Client, store: TwinStore) -> None:
    response = await client.delete(sm("", NAMEPLATE_ID))
    assert response.status == 204
    await assert_result(await client.get(sm("", NAMEPLATE_ID)), 404)
    await assert_result(await client.delete(sm("", NAMEPLATE_ID)), 404)
    message = await assert_result(await client.delete(sm()), 409, "Conflict")
    assert "device-bound" in message["text"]
    await assert_result(await client.delete(sm("", PRESS_SHELL_ID)), 404)
    assert store.shell(PRESS_SHELL_ID).id_short == "Press1"


async def test_paging_after_deletes_continues_after_the_cursor(client: Client, store: TwinStore) -> None:
    for index in range(6):
        await store.create(model.Submodel(f"urn:page:{index}", id_short=f"P{index}"))
    first = await get_json(client, f"{API}/submodels?limit=4")
    assert [item["id"] for item in first["result"]] == [OPERATIONAL_ID, NAMEPLATE_ID, "urn:page:0", "urn:page:1"]
    cursor = first["paging_metadata"]["cursor"]
    for deleted in ("urn:page:1", "urn:page:2"):
        assert (await client.delete(sm("", deleted))).status == 204
    rest = await get_json(client, f"{API}/submodels?limit=4&cursor={cursor}")
    assert [item["id"] for item in rest["result"]] == ["urn:page:3", "urn:page:4", "urn:page:5"]
    assert rest["paging_metadata"] == {}
    again = await client.post(f"{API}/submodels", json=submodel_json("urn:page:1"))
    assert again.status == 201
    everything = await get_json(client, f"{API}/submodels?idShort=New")
    assert [item["id"] for item in everything["result"]] == ["urn:page:1"]


async def test_submodel_listings_in_every_form(client: Client) -> None:
    metadata = await get_json(client, f"{API}/submodels/$metadata")
    assert [item["id"] for item in metadata["result"]] == [OPERATIONAL_ID, NAMEPLATE_ID]
    assert all("submodelElements" not in item for item in metadata["result"])
    values = await get_json(client, f"{API}/submodels/$value?idShort=Nameplate")
    assert values["result"] == [{"SerialNumber": "SN-1"}]
    references = await get_json(client, f"{API}/submodels/$reference?limit=1")
    assert references["result"] == [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": OPERATIONAL_ID}]}]
    assert references["paging_metadata"]["cursor"]
    paths = await get_json(client, f"{API}/submodels/$path?idShort=Nameplate")
    assert paths["result"] == ["Nameplate"]


# --- submodel references and the nested interface -------------------------------------------------


async def test_submodel_reference_post_delete_and_nested_access(client: Client) -> None:
    assert (await get_value(client, nested("/submodel-elements/Temperature/$value"))) == 21.5
    await assert_result(await client.get(nested("", PUMP_SHELL_ID)), 404, "NotFound")
    reference = {"type": "ModelReference", "keys": [{"type": "Submodel", "value": OPERATIONAL_ID}]}
    refs = f"{API}/shells/{b64(PUMP_SHELL_ID)}/submodel-refs"
    response = await client.post(refs, json=reference)
    assert response.status == 201, await response.text()
    await assert_result(await client.post(refs, json=reference), 409, "Conflict")
    assert (await get_json(client, nested("/$value", PUMP_SHELL_ID)))["Counter"] == 7
    response = await client.patch(nested("/submodel-elements/Temperature/$value", PUMP_SHELL_ID), json=25.0)
    assert response.status == 204
    assert await get_value(client, sm("/submodel-elements/Temperature/$value")) == 25.0
    assert (await client.delete(f"{refs}/{b64(OPERATIONAL_ID)}")).status == 204
    await assert_result(await client.get(nested("", PUMP_SHELL_ID)), 404)
    await assert_result(await client.delete(f"{refs}/{b64(OPERATIONAL_ID)}"), 404)
    external = {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": "x"}]}
    await assert_result(await client.post(refs, json=external), 400)


async def test_delete_through_shell_removes_submodel_and_reference(client: Client) -> None:
    assert (await client.delete(nested("", submodel_id=NAMEPLATE_ID))).status == 204
    await assert_result(await client.get(sm("", NAMEPLATE_ID)), 404)
    references = await get_json(client, f"{API}/shells/{b64(PRESS_SHELL_ID)}/submodel-refs")
    assert [reference["keys"][0]["value"] for reference in references["result"]] == [OPERATIONAL_ID]


# --- shells -------------------------------------------------------------------------------------------


async def test_shell_create_replace_delete(client: Client, store: TwinStore) -> None:
    response = await client.post(f"{API}/shells", json=shell_json("urn:new:aas"))
    assert response.status == 201, await response.text()
    assert response.headers["Location"].endswith(b64("urn:new:aas"))
    await assert_result(await client.post(f"{API}/shells", json=shell_json("urn:new:aas")), 409)
    assert (await get_json(client, f"{API}/shells?idShort=NewShell"))["result"][0]["id"] == "urn:new:aas"
    replaced = await client.put(f"{API}/shells/{b64('urn:new:aas')}", json=shell_json("urn:new:aas", "Renamed"))
    assert replaced.status == 204
    assert (await get_json(client, f"{API}/shells?idShort=NewShell"))["result"] == []
    assert (await get_json(client, f"{API}/shells?idShort=Renamed"))["result"][0]["id"] == "urn:new:aas"
    await assert_result(await client.put(f"{API}/shells/{b64('urn:new:aas')}", json=shell_json("urn:x")), 400)
    assert (await client.delete(f"{API}/shells/{b64('urn:new:aas')}")).status == 204
    await assert_result(await client.get(f"{API}/shells/{b64('urn:new:aas')}"), 404)
    await assert_result(await client.delete(f"{API}/shells/{b64('urn:new:aas')}"), 404)


async def test_shell_references_and_asset_information(client: Client) -> None:
    reference = await get_json(client, f"{API}/shells/{b64(PRESS_SHELL_ID)}/$reference")
    assert reference == {
        "type": "ModelReference",
        "keys": [{"type": "AssetAdministrationShell", "value": PRESS_SHELL_ID}],
    }
    listed = await get_json(client, f"{API}/shells/$reference?limit=2")
    assert len(listed["result"]) == 2
    information_url = f"{API}/shells/{b64(PUMP_SHELL_ID)}/asset-information"
    information = await get_json(client, information_url)
    assert information["globalAssetId"] == "urn:example:asset:pump2"
    information["globalAssetId"] = "urn:example:asset:pump2b"
    assert (await client.put(information_url, json=information)).status == 204
    assert (await get_json(client, information_url))["globalAssetId"] == "urn:example:asset:pump2b"
    asset = b64(json.dumps({"name": "globalAssetId", "value": "urn:example:asset:pump2b"}))
    assert [shell["id"] for shell in (await get_json(client, f"{API}/shells?assetIds={asset}"))["result"]] == [
        PUMP_SHELL_ID
    ]
    await assert_result(await client.put(information_url, json={"assetKind": "Nonsense"}), 400)


# --- concept descriptions ---------------------------------------------------------------------------


async def test_concept_description_crud(client: Client) -> None:
    body = {"modelType": "ConceptDescription", "id": "urn:cd:new", "idShort": "Speed"}
    response = await client.post(f"{API}/concept-descriptions", json=body)
    assert response.status == 201
    await assert_result(await client.post(f"{API}/concept-descriptions", json=body), 409)
    url = f"{API}/concept-descriptions/{b64('urn:cd:new')}"
    assert (await client.put(url, json={**body, "idShort": "Velocity"})).status == 204
    assert (await get_json(client, url))["idShort"] == "Velocity"
    assert (await get_json(client, f"{API}/concept-descriptions?idShort=Velocity"))["result"][0]["id"] == "urn:cd:new"
    await assert_result(await client.put(url, json={**body, "id": "urn:cd:other"}), 400)
    assert (await client.delete(url)).status == 204
    await assert_result(await client.get(url), 404)
    assert [cd["id"] for cd in (await get_json(client, f"{API}/concept-descriptions"))["result"]] == [CONCEPT_ID]


# --- content negotiation ------------------------------------------------------------------------------


async def test_accept_and_content_type_are_checked(client: Client) -> None:
    response = await client.get(sm(), headers={"Accept": "application/xml"})
    await assert_result(response, 406, "NotAcceptable")
    assert (await client.get(sm(), headers={"Accept": "application/*;q=0.5, text/html"})).status == 200
    response = await client.post(f"{API}/submodels", data=b"<submodel/>", headers={"Content-Type": "application/xml"})
    await assert_result(response, 415, "UnsupportedMediaType")

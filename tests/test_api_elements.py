"""Submodel elements over the AAS REST API: CRUD, every ValueOnly kind, $reference/$path/$metadata,
attachments and operations, on a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.operations import OperationRegistry
from aas_server.api.serialization import encode_identifier
from aas_server.store.twin_store import ElementBinding, ModelChanged, ModelChangeKind, TwinStore
from tests.support import eventually
from tests.test_api import API, assert_result, get_json, get_value

Client = TestClient[web.Request, web.Application]

SUBMODEL_ID = "urn:example:sm:every-kind"


def _reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _model_reference(submodel_id: str, id_short: str) -> model.ModelReference[Any]:
    return model.ModelReference(
        (model.Key(model.KeyTypes.SUBMODEL, submodel_id), model.Key(model.KeyTypes.PROPERTY, id_short)),
        model.Property,
    )


def every_kind() -> model.Submodel:
    return model.Submodel(
        SUBMODEL_ID,
        id_short="EveryKind",
        submodel_element=[
            model.Property("Temperature", model.datatypes.Double, 20.0),
            model.MultiLanguageProperty("Name", value=model.MultiLanguageTextType({"en": "Press"})),
            model.Range("Limits", model.datatypes.Int, min=0, max=10),
            model.File("Manual", content_type="application/pdf"),
            model.Blob("Firmware", content_type="application/octet-stream", value=b"\x01"),
            model.ReferenceElement("Link", value=_reference("urn:a")),
            model.RelationshipElement("Feeds", first=_reference("urn:a"), second=_reference("urn:b")),
            model.AnnotatedRelationshipElement(
                "Annotated",
                first=_reference("urn:a"),
                second=_reference("urn:b"),
                annotation=[model.Property("Note", model.datatypes.String, "n")],
            ),
            model.Entity(
                "Part",
                model.EntityType.SELF_MANAGED_ENTITY,
                global_asset_id="urn:asset:part",
                statement=[model.Property("Mass", model.datatypes.Double, 1.5)],
            ),
            model.SubmodelElementCollection("Motor", value=[model.Property("Current", model.datatypes.Double, 3.0)]),
            model.SubmodelElementList(
                "Readings",
                type_value_list_element=model.Property,
                value_type_list_element=model.datatypes.Double,
                value=[
                    model.Property(None, model.datatypes.Double, 1.0),
                    model.Property(None, model.datatypes.Double, 2.0),
                ],
            ),
            model.BasicEventElement(
                "Alarm",
                _model_reference(SUBMODEL_ID, "Temperature"),
                model.Direction.OUTPUT,
                model.StateOfEvent.ON,
            ),
            model.Operation(
                "Add",
                input_variable=[
                    model.Property("a", model.datatypes.Int, 0),
                    model.Property("b", model.datatypes.Int, 0),
                ],
                output_variable=[model.Property("sum", model.datatypes.Int, 0)],
            ),
            model.Operation("Reboot"),
            model.Capability("CanPress"),
        ],
    )


async def add(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"sum": inputs["a"] + inputs["b"]}


@pytest.fixture
def store() -> TwinStore:
    store = TwinStore()
    store.add(every_kind())
    return store


@pytest.fixture
async def client(store: TwinStore) -> AsyncIterator[Client]:
    operations = OperationRegistry()
    operations.register(SUBMODEL_ID, "Add", add)
    test_client: Client = TestClient(TestServer(create_app(store, operations=operations)))
    async with test_client:
        yield test_client


def el(path: str = "") -> str:
    return f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/submodel-elements{'/' + path if path else ''}"


async def patch_value(client: Client, path: str, body: Any, status: int = 204) -> None:
    response = await client.patch(el(f"{path}/$value"), json=body)
    assert response.status == status, await response.text()


# --- $value, read and write, for every kind ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "new_value", "expected"),
    [
        ("Temperature", 21.5, 21.5),
        ("Name", [{"en": "Presse"}, {"de": "Presse"}], [{"en": "Presse"}, {"de": "Presse"}]),
        ("Limits", {"min": 1, "max": 5}, {"min": 1, "max": 5}),
        (
            "Manual",
            {"contentType": "text/plain", "value": "/aasx/m.txt"},
            {"contentType": "text/plain", "value": "/aasx/m.txt"},
        ),
        ("Link", {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": "urn:z"}]}, None),
        (
            "Feeds",
            {"first": {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": "urn:c"}]}},
            None,
        ),
        ("Annotated", {"annotations": {"Note": "changed"}}, None),
        ("Part", {"globalAssetId": "urn:asset:other", "statements": {"Mass": 2.5}}, None),
        ("Motor", {"Current": 4.5}, {"Current": 4.5}),
        ("Readings", [7.0, 8.0], [7.0, 8.0]),
        ("Alarm", {"observed": {"type": "ModelReference", "keys": [{"type": "Submodel", "value": SUBMODEL_ID}]}}, None),
    ],
)
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
async def test_patch_value_of_every_kind_is_read_back(
    client: Client, path: str, new_value: Any, expected: Any, wrapped: bool
) -> None:
    await patch_value(client, path, {path: new_value} if wrapped else new_value)
    read = await get_value(client, el(f"{path}/$value"))
    if expected is not None:
        assert read == expected
    else:
        for key, value in new_value.items() if isinstance(new_value, dict) and "keys" not in new_value else []:
            if key in ("statements", "annotations"):
                assert read[key] == {**read[key], **value}
            else:
                assert read[key] == value
        if isinstance(new_value, dict) and "keys" in new_value:
            assert read == new_value


async def test_every_value_read_can_be_written_back_unchanged(client: Client) -> None:
    submodel_url = f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$value"
    before = await get_json(client, submodel_url)
    for path in ("Temperature", "Name", "Limits", "Manual", "Link", "Feeds", "Annotated", "Part", "Motor", "Alarm"):
        response = await client.get(el(f"{path}/$value"))
        answered = await response.json()
        assert list(answered) == [path]
        await patch_value(client, path, answered)
    await patch_value(client, "Readings[1]", await get_json(client, el("Readings[1]/$value")))
    assert await get_json(client, submodel_url) == before


async def test_blob_value_round_trip_and_entity_value_form(client: Client) -> None:
    await patch_value(client, "Firmware", {"contentType": "application/x-bin", "value": "AAEC"})
    assert await get_value(client, el("Firmware/$value?extent=withBlobValue")) == {
        "contentType": "application/x-bin",
        "value": "AAEC",
    }
    entity = await get_value(client, el("Part/$value"))
    assert entity == {"statements": {"Mass": 1.5}, "entityType": "SelfManagedEntity", "globalAssetId": "urn:asset:part"}


async def test_patch_submodel_value_changes_several_kinds_at_once(client: Client, store: TwinStore) -> None:
    url = f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$value"
    response = await client.patch(
        url, json={"Temperature": 30, "Motor": {"Current": 1.0}, "Limits": {"min": 2, "max": 3}}
    )
    assert response.status == 204, await response.text()
    values = await get_json(client, url)
    assert (values["Temperature"], values["Motor"], values["Limits"]) == (30.0, {"Current": 1.0}, {"min": 2, "max": 3})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("Temperature", "hot"),
        ("Limits", {"min": "low"}),
        ("Limits", {"minimum": 1}),
        ("Readings", [1.0, 2.0, 3.0]),
        ("Motor", {"Nothing": 1}),
        ("Firmware", {"value": "***"}),
        ("Add", {}),
        ("CanPress", {}),
        ("Part", {"entityType": "Unknown"}),
    ],
)
async def test_bad_values_are_400_and_change_nothing(client: Client, path: str, body: Any) -> None:
    before = await get_json(client, f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$value")
    response = await client.patch(el(f"{path}/$value"), json=body)
    await assert_result(response, 400)
    assert await get_json(client, f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$value") == before


# --- $reference, $path, $metadata -------------------------------------------------------------------------


async def test_reference_path_and_metadata_forms(client: Client) -> None:
    reference = await get_json(client, el("Motor.Current/$reference"))
    assert reference == {
        "type": "ModelReference",
        "keys": [
            {"type": "Submodel", "value": SUBMODEL_ID},
            {"type": "SubmodelElementCollection", "value": "Motor"},
            {"type": "Property", "value": "Current"},
        ],
    }
    listed = await get_json(client, el("Readings[1]/$reference"))
    assert listed["keys"][-1] == {"type": "Property", "value": "1"}
    assert await get_json(client, el("Motor/$path")) == ["Motor", "Motor.Current"]
    assert await get_json(client, el("Readings/$path")) == ["Readings", "Readings[0]", "Readings[1]"]
    submodel_paths = await get_json(client, f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$path?level=core")
    assert "Motor" in submodel_paths
    assert "Motor.Current" not in submodel_paths
    deep = await get_json(client, f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$path")
    assert "Motor.Current" in deep
    assert "Part.Mass" in deep
    assert "Annotated.Note" in deep
    metadata = await get_json(client, el("Readings/$metadata"))
    assert metadata["typeValueListElement"] == "Property"
    assert "value" not in metadata
    paged = await get_json(client, el("$path") + "?limit=2")
    assert paged["result"] == ["Temperature", "Name"]
    references = await get_json(client, el("$reference") + "?limit=1")
    assert references["result"][0]["keys"][-1] == {"type": "Property", "value": "Temperature"}
    values = await get_json(client, el("$value") + "?limit=3")
    assert values["result"] == [{"Temperature": 20.0}, {"Name": [{"en": "Press"}]}, {"Limits": {"min": 0, "max": 10}}]
    for form in ("$value", "$metadata"):
        await assert_result(await client.get(el(f"Add/{form}")), 400)
        await assert_result(await client.get(el(f"CanPress/{form}")), 400)
    await assert_result(await client.get(el("Temperature/$path")), 400)
    part = await get_json(client, el("Part"))
    assert "specificAssetIds" not in part
    metadata_page = await get_json(client, el("$metadata") + "?limit=2")
    assert [item["idShort"] for item in metadata_page["result"]] == ["Temperature", "Name"]


async def test_patch_element_metadata_and_element(client: Client) -> None:
    response = await client.patch(el("Temperature/$metadata"), json={"category": "VARIABLE"})
    assert response.status == 204, await response.text()
    element = await get_json(client, el("Temperature"))
    assert (element["category"], element["value"]) == ("VARIABLE", "20.0")
    await assert_result(await client.patch(el("Temperature/$metadata"), json={"value": "1"}), 400)
    response = await client.patch(el("Temperature"), json={"value": "22.5"})
    assert response.status == 204
    assert await get_value(client, el("Temperature/$value")) == 22.5
    await assert_result(await client.patch(el("Temperature"), json={"modelType": "Range"}), 400)


# --- element create / replace / delete ------------------------------------------------------------------------


async def test_element_post_put_delete_with_events(client: Client, store: TwinStore) -> None:
    events = store.bus.subscribe("test")
    new = {"modelType": "Property", "idShort": "Pressure", "valueType": "xs:double", "value": "1.5"}
    response = await client.post(el(), json=new)
    assert response.status == 201, await response.text()
    assert response.headers["Location"].endswith("/submodel-elements/Pressure")
    await assert_result(await client.post(el(), json=new), 409, "Conflict")
    child = {"modelType": "Property", "idShort": "Voltage", "valueType": "xs:double", "value": "230"}
    response = await client.post(el("Motor"), json=child)
    assert response.status == 201
    assert response.headers["Location"].endswith("/submodel-elements/Motor.Voltage")
    assert await get_value(client, el("Motor/$value")) == {"Current": 3.0, "Voltage": 230.0}
    item = {"modelType": "Property", "valueType": "xs:double", "value": "3"}
    assert (await client.post(el("Readings"), json=item)).status == 201
    assert await get_value(client, el("Readings/$value")) == [1.0, 2.0, 3.0]
    replaced = {**new, "value": "9"}
    assert (await client.put(el("Pressure"), json=replaced)).status == 204
    assert await get_value(client, el("Pressure/$value")) == 9.0
    await assert_result(await client.put(el("Pressure"), json={**new, "idShort": "Other"}), 400)
    created = await client.put(el("Motor.Speed"), json={**new, "idShort": "Speed"})
    assert created.status == 201
    assert (await client.delete(el("Motor.Speed"))).status == 204
    await assert_result(await client.get(el("Motor.Speed")), 404)
    assert (await client.delete(el("Readings[0]"))).status == 204
    assert await get_value(client, el("Readings/$value")) == [2.0, 3.0]
    kinds = [(event.kind, event.id_short_path) for event in events.get_nowait_all() if isinstance(event, ModelChanged)]
    assert (ModelChangeKind.CREATED, "Pressure") in kinds
    assert (ModelChangeKind.UPDATED, "Pressure") in kinds
    assert (ModelChangeKind.DELETED, "Motor.Speed") in kinds
    await assert_result(await client.post(el("Temperature"), json=child), 400)


# --- attachments -----------------------------------------------------------------------------------------------


def upload(content: bytes, file_name: str, content_type: str = "application/octet-stream") -> FormData:
    form = FormData()
    form.add_field("fileName", file_name)
    form.add_field("file", content, filename=file_name, content_type=content_type)
    return form


async def test_file_attachment_round_trip(client: Client) -> None:
    await assert_result(await client.get(el("Manual/attachment")), 404)
    response = await client.put(el("Manual/attachment"), data=upload(b"%PDF-1.7 manual", "manual.pdf"))
    assert response.status == 204, await response.text()
    download = await client.get(el("Manual/attachment"))
    assert download.status == 200
    assert await download.read() == b"%PDF-1.7 manual"
    assert download.content_type == "application/pdf"
    assert 'filename="manual.pdf"' in download.headers["Content-Disposition"]
    value = await get_value(client, el("Manual/$value"))
    assert value["value"].endswith("/manual.pdf")
    assert value["value"].startswith("/aasx/files/")
    deleted = await client.delete(el("Manual/attachment"))
    assert deleted.status == 200
    await assert_result(await client.get(el("Manual/attachment")), 404)
    assert "value" not in await get_value(client, el("Manual/$value"))


async def test_blob_attachment_and_wrong_kinds(client: Client) -> None:
    assert await (await client.get(el("Firmware/attachment"))).read() == b"\x01"
    assert (await client.put(el("Firmware/attachment"), data=upload(b"\x09\x08", "fw.bin"))).status == 204
    assert await (await client.get(el("Firmware/attachment"))).read() == b"\x09\x08"
    response = await client.get(el("Temperature/attachment"))
    await assert_result(response, 405, "MethodNotAllowed")
    await assert_result(await client.put(el("Manual/attachment"), json={"not": "multipart"}), 415)


# --- operations --------------------------------------------------------------------------------------------------


async def test_invoke_sync_full_and_value_only(client: Client) -> None:
    request = {
        "inputArguments": [
            {"value": {"modelType": "Property", "idShort": "a", "valueType": "xs:int", "value": "2"}},
            {"value": {"modelType": "Property", "idShort": "b", "valueType": "xs:int", "value": "3"}},
        ]
    }
    response = await client.post(el("Add/invoke"), json=request)
    assert response.status == 200, await response.text()
    result = await response.json()
    assert (result["executionState"], result["success"]) == ("Completed", True)
    assert result["outputArguments"][0]["value"]["value"] == "5"
    value_only = await client.post(el("Add/invoke/$value"), json={"inputArguments": {"a": 4, "b": 5}})
    assert (await value_only.json())["outputArguments"] == {"sum": 9}
    await assert_result(await client.post(el("Add/invoke/$value"), json={"inputArguments": {"c": 1}}), 400)


async def test_operation_without_implementation_is_not_executable(client: Client) -> None:
    response = await client.post(el("Reboot/invoke"), json={})
    assert response.status == 200
    result = await response.json()
    assert (result["executionState"], result["success"]) == ("Failed", False)
    assert result["messages"][0]["code"] == "NotExecutable"
    await assert_result(await client.post(el("Temperature/invoke"), json={}), 405)


async def test_invoke_async_status_and_result(client: Client) -> None:
    response = await client.post(
        el("Add/invoke-async/$value"), json={"inputArguments": {"a": 1, "b": 2}, "clientTimeoutDuration": "PT5S"}
    )
    assert response.status == 202, await response.text()
    status_url = response.headers["Location"]
    assert "/operation-status/" in status_url

    async def status() -> Any:
        return await client.get(status_url, allow_redirects=False)

    finished = await eventually(status, lambda answer: answer.status == 302)
    result_url = finished.headers["Location"]
    assert "/operation-results/" in result_url
    result = await get_json(client, result_url + "/$value")
    assert (result["executionState"], result["outputArguments"]) == ("Completed", {"sum": 3})
    await assert_result(await client.get(el("Add/operation-status/unknown")), 404)


async def test_read_only_binding_still_protected_through_submodel_value(store: TwinStore) -> None:
    store.bind(SUBMODEL_ID, "Temperature", ElementBinding("device:x", writable=False))
    test_client: Client = TestClient(TestServer(create_app(store)))
    async with test_client:
        url = f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/$value"
        await assert_result(await test_client.patch(url, json={"Temperature": 1}), 403, "NotWritable")
        assert (await get_value(test_client, el("Temperature/$value"))) == 20.0

"""The AAS HTTP/REST API (Part 2 spine subset) over a real loopback socket."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier
from aas_server.errors import DeviceError, DeviceTimeoutError
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.store.twin_store import ElementBinding, TwinStore

Client = TestClient[web.Request, web.Application]

API = "/api/v3.0"
PRESS_SHELL_ID = "https://example.com/ids/aas/press:1/a"
PUMP_SHELL_ID = "urn:example:aas:pump/2"
THIRD_SHELL_ID = "urn:example:aas:conveyor:3"
OPERATIONAL_ID = "https://example.com/ids/sm/operational-data/1"
NAMEPLATE_ID = "urn:example:sm:nameplate"
OPERATIONAL_SEMANTIC_ID = "https://example.com/semantics/OperationalData"
CONCEPT_ID = "https://example.com/cd/temperature"
PRESS_ASSET_ID = "https://example.com/assets/press1"

# Message.timestamp pattern of part2.yaml, UTC forms only.
TIMESTAMP = re.compile(
    r"^-?(([1-9][0-9][0-9][0-9]+)|(0[0-9][0-9][0-9]))-((0[1-9])|(1[0-2]))-((0[1-9])|([12][0-9])|(3[01]))"
    r"T(((([01][0-9])|(2[0-3])):[0-5][0-9]:([0-5][0-9])(\.[0-9]+)?)|24:00:00(\.0+)?)(Z|\+00:00|-00:00)$"
)


class RecordingDevice:
    """A write handler that records what it was asked to write, as a device connector would."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    async def write(self, value: Any) -> None:
        self.written.append(value)


async def refusing_device(value: Any) -> None:
    raise DeviceError("illegal data value (Modbus exception 3)", device="press-plc")


async def silent_device(value: Any) -> None:
    raise DeviceTimeoutError("no answer within 1.0 s", device="press-plc")


async def broken_device(value: Any) -> None:
    raise RuntimeError("secret internal detail")


def _double(id_short: str | None, value: float) -> model.Property:
    return model.Property(id_short, model.datatypes.Double, value)


def _global_reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def build_store(device: RecordingDevice) -> TwinStore:
    operational = model.Submodel(
        OPERATIONAL_ID,
        id_short="OperationalData",
        semantic_id=_global_reference(OPERATIONAL_SEMANTIC_ID),
        submodel_element=[
            _double("Temperature", 21.5),
            _double("Setpoint", 50.0),
            model.Property("Counter", model.datatypes.Int, 7),
            model.Property("Running", model.datatypes.Boolean, True),
            _double("Speed", 1200.0),
            _double("Valve", 10.0),
            _double("Pressure", 2.5),
            model.MultiLanguageProperty("Name", value=model.MultiLanguageTextType({"en": "Press", "de": "Presse"})),
            model.SubmodelElementCollection("Motor", value=[_double("Current", 3.2)]),
            model.SubmodelElementList(
                "Readings",
                type_value_list_element=model.Property,
                value_type_list_element=model.datatypes.Double,
                value=[_double(None, 1.0), _double(None, 2.0)],
            ),
            model.Range("Limits", model.datatypes.Double, min=0.0, max=100.0),
            model.File("Manual", content_type="application/pdf", value="/aasx/manual.pdf"),
            model.Blob("Firmware", content_type="application/octet-stream", value=b"\x01\x02"),
        ],
    )
    nameplate = model.Submodel(
        NAMEPLATE_ID,
        id_short="Nameplate",
        semantic_id=_global_reference("https://admin-shell.io/zvei/nameplate/2/0/Nameplate"),
        submodel_element=[model.Property("SerialNumber", model.datatypes.String, "SN-1")],
    )
    press = model.AssetAdministrationShell(
        model.AssetInformation(
            model.AssetKind.INSTANCE,
            global_asset_id=PRESS_ASSET_ID,
            specific_asset_id=[model.SpecificAssetId("serialNumber", "SN-1")],
        ),
        PRESS_SHELL_ID,
        id_short="Press1",
        submodel={model.ModelReference.from_referable(operational), model.ModelReference.from_referable(nameplate)},
    )
    pump = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:example:asset:pump2"),
        PUMP_SHELL_ID,
        id_short="Pump2",
    )
    conveyor = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.TYPE, global_asset_id="urn:example:asset:conveyor3"),
        THIRD_SHELL_ID,
        id_short="Conveyor3",
    )
    concept = model.ConceptDescription(
        CONCEPT_ID, id_short="Temperature", is_case_of={_global_reference("0173-1#02-AAA123#001")}
    )
    store = TwinStore()
    store.add_all([press, pump, conveyor, operational, nameplate, concept])
    store.bind(OPERATIONAL_ID, "Setpoint", ElementBinding("device:test", writable=True), device.write)
    store.bind(OPERATIONAL_ID, "Counter", ElementBinding("device:test", writable=False))
    store.bind(OPERATIONAL_ID, "Speed", ElementBinding("device:test", writable=True), refusing_device)
    store.bind(OPERATIONAL_ID, "Valve", ElementBinding("device:test", writable=True), silent_device)
    store.bind(OPERATIONAL_ID, "Pressure", ElementBinding("device:test", writable=True), broken_device)
    return store


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


def sm(path: str = "", submodel_id: str = OPERATIONAL_ID) -> str:
    return f"{API}/submodels/{encode_identifier(submodel_id)}{path}"


def b64(text: str) -> str:
    return encode_identifier(text)


async def assert_result(response: ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"messages"}
    message = body["messages"][0]
    assert message["messageType"] in ("Error", "Exception")
    assert message["text"]
    assert TIMESTAMP.match(message["timestamp"]), message["timestamp"]
    if code is not None:
        assert message["code"] == code
    result: dict[str, Any] = message
    return result


async def get_json(client: Client, url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def get_value(client: Client, url: str) -> Any:
    """The value in an element's ``$value`` answer at ``url``: ``{"<idShort>": value}``, bare for list items."""
    body = await get_json(client, url)
    path = url.split("/submodel-elements/", 1)[1].rsplit("/$value", 1)[0]
    if path.endswith("]"):
        return body
    id_short = path.rpartition(".")[2]
    assert isinstance(body, dict), body
    assert list(body) == [id_short], body
    return body[id_short]


# --- shells ------------------------------------------------------------------------------------


async def test_get_all_shells_returns_paged_result_of_shells(client: Client) -> None:
    body = await get_json(client, f"{API}/shells")
    assert body["paging_metadata"] == {}
    assert [shell["id"] for shell in body["result"]] == [PRESS_SHELL_ID, PUMP_SHELL_ID, THIRD_SHELL_ID]
    press = body["result"][0]
    assert press["modelType"] == "AssetAdministrationShell"
    assert press["assetInformation"]["globalAssetId"] == PRESS_ASSET_ID
    assert press["assetInformation"]["assetKind"] == "Instance"


async def test_paging_with_limit_one_walks_every_shell_and_stops(client: Client) -> None:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        query = "limit=1" + (f"&cursor={cursor}" if cursor else "")
        body = await get_json(client, f"{API}/shells?{query}")
        assert len(body["result"]) == 1
        seen.append(body["result"][0]["id"])
        cursor = body["paging_metadata"].get("cursor")
        if cursor is None:
            break
    assert seen == [PRESS_SHELL_ID, PUMP_SHELL_ID, THIRD_SHELL_ID]


async def test_page_larger_than_the_rest_has_no_cursor(client: Client) -> None:
    first = await get_json(client, f"{API}/shells?limit=2")
    assert len(first["result"]) == 2
    rest = await get_json(client, f"{API}/shells?limit=2&cursor={first['paging_metadata']['cursor']}")
    assert [shell["id"] for shell in rest["result"]] == [THIRD_SHELL_ID]
    assert rest["paging_metadata"] == {}


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "cursor=***", f"cursor={b64('urn:unknown')}"])
async def test_bad_paging_parameters_are_400(client: Client, query: str) -> None:
    await assert_result(await client.get(f"{API}/shells?{query}"), 400, "BadRequest")


async def test_shells_filtered_by_id_short(client: Client) -> None:
    body = await get_json(client, f"{API}/shells?idShort=Pump2")
    assert [shell["id"] for shell in body["result"]] == [PUMP_SHELL_ID]
    assert (await get_json(client, f"{API}/shells?idShort=Nothing"))["result"] == []


async def test_shells_filtered_by_asset_ids(client: Client) -> None:
    global_asset = b64(json.dumps({"name": "globalAssetId", "value": PRESS_ASSET_ID}))
    body = await get_json(client, f"{API}/shells?assetIds={global_asset}")
    assert [shell["id"] for shell in body["result"]] == [PRESS_SHELL_ID]
    serial = b64(json.dumps({"name": "serialNumber", "value": "SN-1"}))
    both = await get_json(client, f"{API}/shells?assetIds={global_asset}&assetIds={serial}")
    assert [shell["id"] for shell in both["result"]] == [PRESS_SHELL_ID]
    other = b64(json.dumps({"name": "serialNumber", "value": "SN-9"}))
    assert (await get_json(client, f"{API}/shells?assetIds={global_asset}&assetIds={other}"))["result"] == []
    await assert_result(await client.get(f"{API}/shells?assetIds={b64('not json')}"), 400)


async def test_get_shell_by_id_round_trips_base64url_with_and_without_padding(client: Client) -> None:
    unpadded = encode_identifier(PRESS_SHELL_ID)
    padded = base64.urlsafe_b64encode(PRESS_SHELL_ID.encode()).decode()
    assert padded != unpadded
    assert "=" not in unpadded
    for encoded in (unpadded, padded):
        shell = await get_json(client, f"{API}/shells/{encoded}")
        assert shell["id"] == PRESS_SHELL_ID
        assert shell["idShort"] == "Press1"


@pytest.mark.parametrize("encoded", ["not*base64", "A", "%2B%2F", "____"])
async def test_bad_identifier_encoding_is_400(client: Client, encoded: str) -> None:
    await assert_result(await client.get(f"{API}/shells/{encoded}"), 400, "BadRequest")


async def test_unknown_shell_is_404_result(client: Client) -> None:
    message = await assert_result(await client.get(f"{API}/shells/{b64('urn:nothing')}"), 404, "NotFound")
    assert "urn:nothing" in message["text"]


async def test_submodel_references_are_paged(client: Client) -> None:
    body = await get_json(client, f"{API}/shells/{b64(PRESS_SHELL_ID)}/submodel-refs")
    assert body["paging_metadata"] == {}
    references = body["result"]
    assert {reference["keys"][0]["value"] for reference in references} == {OPERATIONAL_ID, NAMEPLATE_ID}
    assert all(reference["type"] == "ModelReference" for reference in references)
    assert references[0]["keys"][0]["type"] == "Submodel"
    first = await get_json(client, f"{API}/shells/{b64(PRESS_SHELL_ID)}/submodel-refs?limit=1")
    second = await get_json(
        client,
        f"{API}/shells/{b64(PRESS_SHELL_ID)}/submodel-refs?limit=1&cursor={first['paging_metadata']['cursor']}",
    )
    assert first["result"] + second["result"] == references
    assert second["paging_metadata"] == {}


# --- submodels ---------------------------------------------------------------------------------


async def test_get_all_submodels_and_filters(client: Client) -> None:
    body = await get_json(client, f"{API}/submodels")
    assert [submodel["id"] for submodel in body["result"]] == [OPERATIONAL_ID, NAMEPLATE_ID]
    assert all(submodel["modelType"] == "Submodel" for submodel in body["result"])
    by_semantic_id = await get_json(client, f"{API}/submodels?semanticId={b64(OPERATIONAL_SEMANTIC_ID)}")
    assert [submodel["id"] for submodel in by_semantic_id["result"]] == [OPERATIONAL_ID]
    by_id_short = await get_json(client, f"{API}/submodels?idShort=Nameplate")
    assert [submodel["id"] for submodel in by_id_short["result"]] == [NAMEPLATE_ID]


async def test_get_submodel_normal_form(client: Client) -> None:
    submodel = await get_json(client, sm())
    assert submodel["id"] == OPERATIONAL_ID
    assert submodel["modelType"] == "Submodel"
    assert submodel["semanticId"]["keys"][0]["value"] == OPERATIONAL_SEMANTIC_ID
    elements = {element["idShort"]: element for element in submodel["submodelElements"]}
    assert elements["Temperature"] == {
        "idShort": "Temperature",
        "modelType": "Property",
        "value": "21.5",
        "valueType": "xs:double",
    }
    assert elements["Motor"]["value"][0]["idShort"] == "Current"
    assert "value" not in elements["Firmware"]
    assert elements["Firmware"]["contentType"] == "application/octet-stream"


async def test_level_core_keeps_direct_children_only(client: Client) -> None:
    core = await get_json(client, sm("?level=core"))
    elements = {element["idShort"]: element for element in core["submodelElements"]}
    assert "value" not in elements["Motor"]
    assert "value" not in elements["Readings"]
    assert elements["Temperature"]["value"] == "21.5"
    motor = await get_json(client, sm("/submodel-elements/Motor?level=core"))
    assert motor["value"][0]["idShort"] == "Current"
    core_values = await get_json(client, sm("/$value?level=core"))
    assert core_values["Motor"] == {}
    assert core_values["Temperature"] == 21.5


async def test_extent_with_blob_value_includes_blob(client: Client) -> None:
    blob = await get_json(client, sm("/submodel-elements/Firmware?extent=withBlobValue"))
    assert blob["value"] == "AQI="
    assert (await get_value(client, sm("/submodel-elements/Firmware/$value?extent=withBlobValue"))) == {
        "contentType": "application/octet-stream",
        "value": "AQI=",
    }
    await assert_result(await client.get(sm("?extent=everything")), 400, "BadRequest")
    await assert_result(await client.get(sm("?level=shallow")), 400, "BadRequest")


async def test_submodel_value_only_form(client: Client) -> None:
    assert await get_json(client, sm("/$value")) == {
        "Temperature": 21.5,
        "Setpoint": 50.0,
        "Counter": 7,
        "Running": True,
        "Speed": 1200.0,
        "Valve": 10.0,
        "Pressure": 2.5,
        "Name": [{"en": "Press"}, {"de": "Presse"}],
        "Motor": {"Current": 3.2},
        "Readings": [1.0, 2.0],
        "Limits": {"min": 0.0, "max": 100.0},
        "Manual": {"contentType": "application/pdf", "value": "/aasx/manual.pdf"},
        "Firmware": {"contentType": "application/octet-stream"},
    }


async def test_submodel_metadata_has_no_elements(client: Client) -> None:
    body = await get_json(client, sm("/$metadata"))
    assert body["id"] == OPERATIONAL_ID
    assert body["modelType"] == "Submodel"
    assert "submodelElements" not in body
    element = await get_json(client, sm("/submodel-elements/Temperature/$metadata"))
    assert element == {"idShort": "Temperature", "modelType": "Property", "valueType": "xs:double"}


async def test_submodel_elements_are_paged_in_model_order(client: Client) -> None:
    everything = await get_json(client, sm("/submodel-elements"))
    all_names = [element["idShort"] for element in everything["result"]]
    assert all_names[:3] == ["Temperature", "Setpoint", "Counter"]
    walked: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        body = await get_json(client, sm("/submodel-elements?limit=4" + (f"&cursor={cursor}" if cursor else "")))
        walked.extend(element["idShort"] for element in body["result"])
        cursor = body["paging_metadata"].get("cursor")
        if cursor is None:
            break
    assert walked == all_names


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Temperature", {"Temperature": 21.5}),
        ("Counter", {"Counter": 7}),
        ("Running", {"Running": True}),
        ("Name", {"Name": [{"en": "Press"}, {"de": "Presse"}]}),
        ("Motor", {"Motor": {"Current": 3.2}}),
        ("Motor.Current", {"Current": 3.2}),
        ("Readings", {"Readings": [1.0, 2.0]}),
        ("Readings[1]", 2.0),
        ("Limits", {"Limits": {"min": 0.0, "max": 100.0}}),
        ("Manual", {"Manual": {"contentType": "application/pdf", "value": "/aasx/manual.pdf"}}),
    ],
)
async def test_element_value_only_forms_are_wrapped_in_the_idshort(client: Client, path: str, expected: Any) -> None:
    for api in ("/api/v3.0", "/api/v3.1"):
        url = f"{api}/submodels/{encode_identifier(OPERATIONAL_ID)}/submodel-elements/{path}/$value"
        assert await get_json(client, url) == expected


async def test_nested_element_normal_form(client: Client) -> None:
    element = await get_json(client, sm("/submodel-elements/Motor.Current"))
    assert element["modelType"] == "Property"
    assert element["idShort"] == "Current"
    listed = await get_json(client, sm("/submodel-elements/Readings"))
    assert listed["modelType"] == "SubmodelElementList"
    assert [item["value"] for item in listed["value"]] == ["1.0", "2.0"]


async def test_unknown_element_and_submodel_are_404_bad_path_is_400(client: Client) -> None:
    await assert_result(await client.get(sm("/submodel-elements/Nothing")), 404, "NotFound")
    await assert_result(await client.get(sm("/submodel-elements/Readings[9]/$value")), 404, "NotFound")
    await assert_result(await client.get(sm("", submodel_id="urn:nothing")), 404, "NotFound")
    await assert_result(await client.get(sm("/submodel-elements/Motor..Current")), 400, "BadRequest")


# --- quality headers ----------------------------------------------------------------------------


async def test_quality_headers_on_property_gets(client: Client, store: TwinStore) -> None:
    response = await client.get(sm("/submodel-elements/Temperature"))
    assert response.headers["X-AAS-Quality"] == "good"
    assert "X-AAS-Quality-Reason" not in response.headers
    source_time = datetime.fromisoformat(response.headers["X-AAS-Source-Timestamp"])
    assert source_time.tzinfo is not None
    assert response.headers["X-AAS-Source-Timestamp"].endswith("Z")
    assert "X-AAS-Server-Timestamp" in response.headers
    bound = await client.get(sm("/submodel-elements/Setpoint/$value"))
    assert bound.headers["X-AAS-Quality"] == "uncertain"
    assert bound.headers["X-AAS-Quality-Reason"] == "not_yet_read"
    collection = await client.get(sm("/submodel-elements/Motor"))
    assert "X-AAS-Quality" not in collection.headers

    outage = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    store.apply(ValueChanged(OPERATIONAL_ID, "Temperature", 0.0, outage, Quality.BAD, QualityReason.NO_COMMUNICATION))
    for path in ("/submodel-elements/Temperature", "/submodel-elements/Temperature/$value"):
        response = await client.get(sm(path))
        assert response.headers["X-AAS-Quality"] == "bad"
        assert response.headers["X-AAS-Quality-Reason"] == "no_communication"
    assert await (await client.get(sm("/submodel-elements/Temperature/$value"))).json() == {"Temperature": 21.5}


# --- PATCH $value -------------------------------------------------------------------------------


async def test_patch_value_writes_through_the_device(client: Client, store: TwinStore, device: RecordingDevice) -> None:
    response = await client.patch(sm("/submodel-elements/Setpoint/$value"), data=b"42.5")
    assert response.status == 204, await response.text()
    assert device.written == [42.5]
    assert await get_value(client, sm("/submodel-elements/Setpoint/$value")) == 42.5
    state = store.state(OPERATIONAL_ID, "Setpoint")
    assert state is not None
    assert state.quality is Quality.GOOD
    headers = (await client.get(sm("/submodel-elements/Setpoint"))).headers
    assert headers["X-AAS-Quality"] == "good"


async def test_patch_unbound_properties_of_each_type(client: Client) -> None:
    for path, body, expected in (
        ("Running", b"false", False),
        ("Temperature", b'"19.25"', 19.25),
        ("Motor.Current", b"4", 4.0),
        ("Readings[0]", b"-1.5", -1.5),
        ("Temperature", b'{"Temperature": 18}', 18.0),
    ):
        response = await client.patch(sm(f"/submodel-elements/{path}/$value"), data=body)
        assert response.status == 204, await response.text()
        assert await get_value(client, sm(f"/submodel-elements/{path}/$value")) == expected


@pytest.mark.parametrize("body", [b"true", b'"hot"', b"[1]", b"{}"])
async def test_patch_wrong_type_is_400_and_keeps_value(client: Client, device: RecordingDevice, body: bytes) -> None:
    response = await client.patch(sm("/submodel-elements/Setpoint/$value"), data=body)
    await assert_result(response, 400, "TypeMismatch")
    assert device.written == []
    assert await get_value(client, sm("/submodel-elements/Setpoint/$value")) == 50.0


async def test_patch_fraction_into_int_is_400(client: Client) -> None:
    store_value = await get_value(client, sm("/submodel-elements/Counter/$value"))
    await assert_result(await client.patch(sm("/submodel-elements/Counter/$value"), data=b"3.5"), 400)
    assert await get_value(client, sm("/submodel-elements/Counter/$value")) == store_value


async def test_patch_read_only_binding_is_403(client: Client) -> None:
    message = await assert_result(
        await client.patch(sm("/submodel-elements/Counter/$value"), data=b"8"), 403, "NotWritable"
    )
    assert "read-only" in message["text"]
    assert await get_value(client, sm("/submodel-elements/Counter/$value")) == 7


async def test_patch_range_value_replaces_the_range(client: Client) -> None:
    response = await client.patch(sm("/submodel-elements/Limits/$value"), data=b'{"min": 1, "max": 2}')
    assert response.status == 204, await response.text()
    assert await get_value(client, sm("/submodel-elements/Limits/$value")) == {"min": 1.0, "max": 2.0}


async def test_device_refusal_is_502_and_keeps_value(client: Client) -> None:
    message = await assert_result(
        await client.patch(sm("/submodel-elements/Speed/$value"), data=b"1500"), 502, "DeviceError"
    )
    assert "press-plc" in message["text"]
    assert await get_value(client, sm("/submodel-elements/Speed/$value")) == 1200.0


async def test_device_timeout_is_504(client: Client) -> None:
    await assert_result(await client.patch(sm("/submodel-elements/Valve/$value"), data=b"20"), 504, "DeviceTimeout")
    assert await get_value(client, sm("/submodel-elements/Valve/$value")) == 10.0


async def test_unexpected_error_is_generic_500(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    response = await client.patch(sm("/submodel-elements/Pressure/$value"), data=b"3")
    message = await assert_result(response, 500, "InternalServerError")
    assert "secret" not in message["text"]
    assert message["correlationId"] in caplog.text
    assert "secret internal detail" in caplog.text


async def test_malformed_json_is_400_naming_the_position(client: Client) -> None:
    message = await assert_result(
        await client.patch(sm("/submodel-elements/Setpoint/$value"), data=b'{"a":\n  42,'), 400, "BadRequest"
    )
    assert "line 2 column" in message["text"]
    empty = await assert_result(await client.patch(sm("/submodel-elements/Setpoint/$value"), data=b""), 400)
    assert "empty" in empty["text"]


async def test_body_above_the_limit_is_413_result(store: TwinStore) -> None:
    small: Client = TestClient(TestServer(create_app(store, client_max_size=64)))
    async with small:
        response = await small.patch(sm("/submodel-elements/Setpoint/$value"), data=b'"' + b"9" * 200 + b'"')
        await assert_result(response, 413, "RequestEntityTooLarge")


# --- routing, description, concept descriptions -------------------------------------------------


async def test_unknown_route_and_wrong_method_answer_in_result_form(client: Client) -> None:
    await assert_result(await client.get(f"{API}/nothing-here"), 404, "NotFound")
    await assert_result(await client.get("/shells"), 404)
    response = await client.delete(f"{API}/shells")
    await assert_result(response, 405, "MethodNotAllowed")
    assert "GET" in response.headers["Allow"]


async def test_head_answers_like_get_without_body(client: Client) -> None:
    response = await client.head(sm("/submodel-elements/Temperature"))
    assert response.status == 200
    assert response.headers["X-AAS-Quality"] == "good"
    assert await response.read() == b""


async def test_element_value_listing_is_a_list_in_v3_0_and_one_object_in_v3_1(client: Client) -> None:
    path = f"/submodels/{b64(OPERATIONAL_ID)}/submodel-elements/$value?limit=2"
    release_3_0 = await get_json(client, f"/api/v3.0{path}")
    release_3_1 = await get_json(client, f"/api/v3.1{path}")
    assert release_3_0["result"] == [{"Temperature": 21.5}, {"Setpoint": 50.0}]
    assert release_3_1["result"] == {"Temperature": 21.5, "Setpoint": 50.0}
    assert release_3_0["paging_metadata"] == release_3_1["paging_metadata"]
    cursor = release_3_1["paging_metadata"]["cursor"]
    following = await get_json(client, f"/api/v3.1{path}&cursor={cursor}")
    assert following["result"] == {"Counter": 7, "Running": True}


async def test_v3_1_serves_the_same(client: Client) -> None:
    for path in ("/shells", f"/submodels/{b64(OPERATIONAL_ID)}/$value", "/description"):
        assert await get_json(client, f"/api/v3.1{path}") == await get_json(client, f"{API}{path}")
    response = await client.patch(
        f"/api/v3.1/submodels/{b64(OPERATIONAL_ID)}/submodel-elements/Temperature/$value", data=b"30"
    )
    assert response.status == 204
    assert await get_value(client, sm("/submodel-elements/Temperature/$value")) == 30.0


async def test_description_lists_profiles(client: Client) -> None:
    body = await get_json(client, f"{API}/description")
    assert body["profiles"]
    assert all(profile.startswith("https://admin-shell.io/aas/API/3/") for profile in body["profiles"])
    for version in ("0", "1"):
        for specification in ("AssetAdministrationShellServiceSpecification", "SubmodelServiceSpecification"):
            assert f"https://admin-shell.io/aas/API/3/{version}/{specification}/SSP-002" in body["profiles"]


async def test_concept_descriptions(client: Client) -> None:
    body = await get_json(client, f"{API}/concept-descriptions")
    assert body["paging_metadata"] == {}
    assert [cd["id"] for cd in body["result"]] == [CONCEPT_ID]
    assert body["result"][0]["modelType"] == "ConceptDescription"
    single = await get_json(client, f"{API}/concept-descriptions/{b64(CONCEPT_ID)}")
    assert single["idShort"] == "Temperature"
    case = b64(
        json.dumps(
            {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": "0173-1#02-AAA123#001"}]}
        )
    )
    assert len((await get_json(client, f"{API}/concept-descriptions?isCaseOf={case}"))["result"]) == 1
    other = b64(json.dumps({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": "x"}]}))
    assert (await get_json(client, f"{API}/concept-descriptions?isCaseOf={other}"))["result"] == []
    assert (await get_json(client, f"{API}/concept-descriptions?idShort=Nope"))["result"] == []
    await assert_result(await client.get(f"{API}/concept-descriptions/{b64('urn:none')}"), 404, "NotFound")


async def test_new_identifiables_appear_in_listings(client: Client, store: TwinStore) -> None:
    first = await get_json(client, f"{API}/shells?limit=3")
    assert "cursor" not in first["paging_metadata"]
    store.add(
        model.AssetAdministrationShell(
            model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:example:asset:new"),
            "urn:example:aas:new",
            id_short="New",
        )
    )
    body = await get_json(client, f"{API}/shells?limit=3")
    assert body["paging_metadata"]["cursor"]
    rest = await get_json(client, f"{API}/shells?limit=3&cursor={body['paging_metadata']['cursor']}")
    assert [shell["id"] for shell in rest["result"]] == ["urn:example:aas:new"]


async def test_cors_is_off_by_default_and_answers_preflight_when_configured(client: Client, store: TwinStore) -> None:
    plain = await client.get(f"{API}/description", headers={"Origin": "https://dashboard.example"})
    assert "Access-Control-Allow-Origin" not in plain.headers
    browser: Client = TestClient(TestServer(create_app(store, cors_origins=["https://dashboard.example"])))
    async with browser:
        preflight = await browser.options(
            sm("/submodel-elements/Setpoint/$value"),
            headers={"Origin": "https://dashboard.example", "Access-Control-Request-Method": "PATCH"},
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://dashboard.example"
        assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
        response = await browser.get(
            sm("/submodel-elements/Temperature"), headers={"Origin": "https://dashboard.example"}
        )
        assert response.headers["Access-Control-Allow-Origin"] == "https://dashboard.example"
        assert "X-AAS-Quality" in response.headers["Access-Control-Expose-Headers"]
        missing = await browser.get(f"{API}/nothing", headers={"Origin": "https://dashboard.example"})
        assert missing.status == 404
        assert missing.headers["Access-Control-Allow-Origin"] == "https://dashboard.example"
        stranger = await browser.get(f"{API}/description", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in stranger.headers

"""AASX File Server, /serialization and thumbnails over the AAS REST API on a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier, to_json_object
from aas_server.exchange import read_package, write_package
from aas_server.store.twin_store import TwinStore
from tests.test_api import API, assert_result, get_json, get_value

Client = TestClient[web.Request, web.Application]

SHELL_ID = "urn:example:aas:packaged"
SUBMODEL_ID = "urn:example:sm:packaged"
CONCEPT_ID = "urn:example:cd:packaged"
MANUAL = "/aasx/files/manual.pdf"
MANUAL_BYTES = b"%PDF-1.7 packaged manual"


def packaged_objects() -> list[model.Identifiable]:
    submodel = model.Submodel(
        SUBMODEL_ID,
        id_short="Documentation",
        submodel_element=[
            model.File("Manual", content_type="application/pdf", value=MANUAL),
            model.Property("Pages", model.datatypes.Int, 12),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:example:asset:packaged"),
        SHELL_ID,
        id_short="Packaged",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    concept = model.ConceptDescription(CONCEPT_ID, id_short="Pages")
    return [shell, submodel, concept]


def aasx() -> bytes:
    return write_package(packaged_objects(), {MANUAL: (MANUAL_BYTES, "application/pdf")}, "aasx")


def package_form(content: bytes, file_name: str = "packaged.aasx") -> FormData:
    form = FormData()
    form.add_field("aasIds", SHELL_ID)
    form.add_field("fileName", file_name)
    form.add_field("file", content, filename=file_name, content_type="application/asset-administration-shell-package")
    return form


def canonical(identifiables: list[model.Identifiable]) -> dict[str, Any]:
    return {item.id: orjson.loads(orjson.dumps(to_json_object(item), default=str)) for item in identifiables}


@pytest.fixture
def store() -> TwinStore:
    return TwinStore()


@pytest.fixture
async def client(store: TwinStore) -> AsyncIterator[Client]:
    test_client: Client = TestClient(TestServer(create_app(store)))
    async with test_client:
        yield test_client


async def test_aasx_upload_serves_objects_and_downloads_as_the_same_objects(client: Client) -> None:
    uploaded = aasx()
    response = await client.post(f"{API}/packages", data=package_form(uploaded))
    assert response.status == 201, await response.text()
    description = await response.json()
    assert description["aasIds"] == [SHELL_ID]
    package_url = f"{API}/packages/{encode_identifier(description['packageId'])}"
    assert response.headers["Location"].endswith(package_url)

    shell = await get_json(client, f"{API}/shells/{encode_identifier(SHELL_ID)}")
    assert shell["idShort"] == "Packaged"
    elements = (
        f"{API}/shells/{encode_identifier(SHELL_ID)}/submodels/{encode_identifier(SUBMODEL_ID)}/submodel-elements"
    )
    assert await get_value(client, f"{elements}/Pages/$value") == 12
    manual = await client.get(f"{elements}/Manual/attachment")
    assert (manual.status, await manual.read()) == (200, MANUAL_BYTES)

    listed = await get_json(client, f"{API}/packages?aasId={encode_identifier(SHELL_ID)}")
    assert listed["result"] == [description]
    assert (await get_json(client, f"{API}/packages?aasId={encode_identifier('urn:none')}"))["result"] == []
    stored = await client.get(package_url)
    assert (await stored.read(), stored.headers["X-FileName"]) == (uploaded, "packaged.aasx")

    query = f"aasIds={encode_identifier(SHELL_ID)}&submodelIds={encode_identifier(SUBMODEL_ID)}"
    download = await client.get(
        f"{API}/serialization?{query}", headers={"Accept": "application/asset-administration-shell-package+xml"}
    )
    assert download.status == 200, await download.text()
    result = read_package(await download.read(), "download.aasx", strict=True)
    assert canonical(result.identifiables) == canonical(packaged_objects())
    assert result.supplementary_files[MANUAL][0] == MANUAL_BYTES

    xml = await client.get(f"{API}/serialization?{query}", headers={"Accept": "application/xml"})
    assert xml.content_type == "application/xml"
    assert canonical(read_package(await xml.read(), "download.xml").identifiables) == canonical(packaged_objects())
    environment = await get_json(client, f"{API}/serialization?{query}&includeConceptDescriptions=false")
    assert set(environment) == {"assetAdministrationShells", "submodels"}
    await assert_result(await client.get(f"{API}/serialization", headers={"Accept": "text/html"}), 406)
    await assert_result(await client.get(f"{API}/serialization?aasIds={encode_identifier('urn:none')}"), 404)


async def test_package_conflict_replace_and_delete(client: Client, store: TwinStore) -> None:
    first = await client.post(f"{API}/packages", data=package_form(aasx()))
    package_id = (await first.json())["packageId"]
    await assert_result(await client.post(f"{API}/packages", data=package_form(aasx())), 409, "Conflict")
    package_url = f"{API}/packages/{encode_identifier(package_id)}"
    assert (await client.put(package_url, data=package_form(aasx()))).status == 204
    new_url = f"{API}/packages/{encode_identifier('my-package')}"
    assert (await client.put(new_url, data=package_form(aasx()))).status == 201
    assert len((await get_json(client, f"{API}/packages"))["result"]) == 2
    assert (await client.delete(package_url)).status == 204
    await assert_result(await client.get(package_url), 404)
    await assert_result(await client.delete(package_url), 404)
    assert store.shell(SHELL_ID).id_short == "Packaged"
    await assert_result(await client.post(f"{API}/packages", data=package_form(b"not a package", "x.bin")), 400)
    await assert_result(await client.post(f"{API}/packages", json={"file": "x"}), 415)


async def test_thumbnail_round_trip(client: Client, store: TwinStore) -> None:
    for item in packaged_objects():
        await store.create(item)
    url = f"{API}/shells/{encode_identifier(SHELL_ID)}/asset-information/thumbnail"
    await assert_result(await client.get(url), 404)
    form = FormData()
    form.add_field("fileName", "pump.png")
    form.add_field("file", b"\x89PNG thumbnail", filename="pump.png")
    assert (await client.put(url, data=form)).status == 204
    thumbnail = await client.get(url)
    assert (await thumbnail.read(), thumbnail.content_type) == (b"\x89PNG thumbnail", "image/png")
    information = await get_json(client, f"{API}/shells/{encode_identifier(SHELL_ID)}/asset-information")
    assert information["defaultThumbnail"]["path"].endswith("/pump.png")
    download = await client.get(
        f"{API}/serialization?aasIds={encode_identifier(SHELL_ID)}",
        headers={"Accept": "application/asset-administration-shell-package+xml"},
    )
    files = read_package(await download.read(), "d.aasx").supplementary_files
    assert files[information["defaultThumbnail"]["path"]][0] == b"\x89PNG thumbnail"
    assert (await client.delete(url)).status == 200
    await assert_result(await client.get(url), 404)

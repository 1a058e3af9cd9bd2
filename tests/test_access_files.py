"""Attachments belong to their element, over the hub's real REST endpoint on loopback (issue 11, finding 6).

Stored bytes are kept for the File element (or the shell, for a thumbnail) that names them: a
download finds only its own element's bytes, a write cannot point a File or thumbnail at bytes
another element owns, and two packages with the same supplementary path keep both files.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from basyx.aas import model

from aas_server.config import HubSettings
from aas_server.exchange import read_package, write_package
from tests.test_access import (
    API,
    MANUAL_PATH,
    PRINCIPALS,
    RULES,
    SHELL_A,
    SHELL_B,
    SM_A,
    SM_B,
    Served,
    _refused,
    _serve,
    _sha256,
    b64,
    element,
    security_section,
)

FILLER = {"X-API-Key": "filler-key"}
ADMIN = PRINCIPALS["admin"]
DRAWING = b"%PDF shell B's confidential drawing"
PACKAGE_TYPE = "application/asset-administration-shell-package"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    section = security_section(tmp_path)
    section["api_keys"] = [
        *section["api_keys"],
        {"name": "filler", "roles": ["filler"], "sha256": _sha256("filler-key")},
    ]
    section["rules"] = [*RULES, {"roles": ["filler"], "operations": ["*"], "shells": ["urn:test:aas:A*"]}]
    settings = HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section})
    async for running in _serve(tmp_path, settings):
        yield running


def _form(name: str, content: bytes, content_type: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=name, content_type=content_type)
    form.add_field("fileName", name)
    return form


async def _ok(response: aiohttp.ClientResponse, *statuses: int) -> bytes:
    body = await response.read()
    assert response.status in statuses, body
    return body


async def _drawing_path(served: Served) -> str:
    """Put a File ``Drawing`` with stored bytes into shell B's submodel (as the admin); its stored path."""
    client = served.client
    drawing = {"modelType": "File", "idShort": "Drawing", "contentType": "application/pdf"}
    await _ok(await client.post(f"{API}/submodels/{b64(SM_B)}/submodel-elements", json=drawing, headers=ADMIN()), 201)
    upload = _form("drawing.pdf", DRAWING, "application/pdf")
    await _ok(await client.put(element(SM_B, "Drawing", "/attachment"), data=upload, headers=ADMIN()), 204)
    value = served.store.element(SM_B, "Drawing").value  # type: ignore[attr-defined]
    assert isinstance(value, str)
    assert value.startswith("/aasx/files/")
    return value


async def _download(served: Served, submodel_id: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    response = await served.client.get(element(submodel_id, path, "/attachment"), headers=headers)
    return response.status, await response.read()


async def test_a_file_value_cannot_be_pointed_at_another_elements_stored_bytes(served: Served) -> None:
    client = served.client
    stolen = await _drawing_path(served)
    assert (await _download(served, SM_B, "Drawing", FILLER))[0] == 403
    manual = element(SM_A, "Manual")
    attempts: list[Callable[[], Any]] = [
        lambda: client.patch(
            manual + "/$value", json={"contentType": "application/pdf", "value": stolen}, headers=FILLER
        ),
        lambda: client.put(
            manual,
            json={"modelType": "File", "idShort": "Manual", "contentType": "application/pdf", "value": stolen},
            headers=FILLER,
        ),
        lambda: client.post(
            f"{API}/submodels/{b64(SM_A)}/submodel-elements",
            json={"modelType": "File", "idShort": "Copy", "contentType": "application/pdf", "value": stolen},
            headers=FILLER,
        ),
        lambda: client.post(
            element(SM_A, "Status"),
            json={"modelType": "File", "idShort": "Copy", "contentType": "application/pdf", "value": stolen},
            headers=FILLER,
        ),
        lambda: client.patch(f"{API}/submodels/{b64(SM_A)}/$value", json={"Manual": {"value": stolen}}, headers=FILLER),
    ]
    for attempt in attempts:
        message = await _refused(await attempt(), 403)
        assert repr(stolen) in message["text"], message["text"]
        assert "another element" in message["text"], message["text"]
    assert served.store.element(SM_A, "Manual").value == MANUAL_PATH  # type: ignore[attr-defined]
    assert await _download(served, SM_A, "Manual", FILLER) == (200, b"%PDF manual")
    assert (await client.get(element(SM_A, "Copy"), headers=ADMIN())).status == 404


async def test_a_file_may_still_name_its_own_bytes_or_a_file_not_stored_yet(served: Served) -> None:
    client = served.client
    manual = element(SM_A, "Manual")
    unstored = {"contentType": "application/pdf", "value": "/aasx/files/not-uploaded-yet.pdf"}
    await _ok(await client.patch(manual + "/$value", json=unstored, headers=FILLER), 204)
    assert (await _download(served, SM_A, "Manual", FILLER))[0] == 404
    back = {"contentType": "application/pdf", "value": MANUAL_PATH}
    await _ok(await client.patch(manual + "/$value", json=back, headers=FILLER), 204)
    assert await _download(served, SM_A, "Manual", FILLER) == (200, b"%PDF manual")
    upload = _form("own.pdf", b"%PDF own upload", "application/pdf")
    await _ok(await client.put(manual + "/attachment", data=upload, headers=FILLER), 204)
    assert await _download(served, SM_A, "Manual", FILLER) == (200, b"%PDF own upload")


async def test_a_thumbnail_cannot_be_pointed_at_another_shells_thumbnail(served: Served) -> None:
    client = served.client
    upload = _form("b.png", b"\x89PNG shell B only", "image/png")
    await _ok(
        await client.put(f"{API}/shells/{b64(SHELL_B)}/asset-information/thumbnail", data=upload, headers=ADMIN()), 204
    )
    path_b = served.store.shell(SHELL_B).asset_information.default_thumbnail.path  # type: ignore[union-attr]
    information = {
        "assetKind": "Instance",
        "globalAssetId": f"{SHELL_A}:asset",
        "defaultThumbnail": {"path": path_b, "contentType": "image/png"},
    }
    url = f"{API}/shells/{b64(SHELL_A)}/asset-information"
    message = await _refused(await client.put(url, json=information, headers=FILLER), 403)
    assert "thumbnail" in message["text"]
    assert repr(path_b) in message["text"]
    thumbnail = await client.get(url + "/thumbnail", headers=FILLER)
    assert (thumbnail.status, await thumbnail.read()) == (200, b"\x89PNG thumbnail")


def _package(submodel_id: str, value: str, files: dict[str, tuple[bytes, str]]) -> bytes:
    submodel = model.Submodel(
        submodel_id, id_short="Documents", submodel_element=[model.File("Manual", "application/pdf", value=value)]
    )
    return write_package([submodel], files, "aasx")


async def _upload_package(served: Served, content: bytes) -> None:
    form = _form("package.aasx", content, PACKAGE_TYPE)
    await _ok(await served.client.post(f"{API}/packages", data=form, headers=ADMIN()), 201)


async def test_a_package_naming_another_elements_stored_path_reaches_only_its_own_bytes(served: Served) -> None:
    stolen = await _drawing_path(served)
    await _upload_package(served, _package("urn:test:sm:pointing", stolen, {}))
    assert (await _download(served, "urn:test:sm:pointing", "Manual", ADMIN()))[0] == 404
    await _upload_package(
        served, _package("urn:test:sm:overwriting", stolen, {stolen: (b"%PDF other", "application/pdf")})
    )
    assert await _download(served, "urn:test:sm:overwriting", "Manual", ADMIN()) == (200, b"%PDF other")
    assert await _download(served, SM_B, "Drawing", ADMIN()) == (200, DRAWING)


async def test_two_packages_with_the_same_supplementary_path_keep_both_files(served: Served) -> None:
    shared = "/aasx/files/manual.pdf"
    await _upload_package(served, _package("urn:test:sm:first", shared, {shared: (b"%PDF first", "application/pdf")}))
    await _upload_package(served, _package("urn:test:sm:second", shared, {shared: (b"%PDF second", "application/pdf")}))
    assert await _download(served, "urn:test:sm:first", "Manual", ADMIN()) == (200, b"%PDF first")
    assert await _download(served, "urn:test:sm:second", "Manual", ADMIN()) == (200, b"%PDF second")
    query = f"submodelIds={b64('urn:test:sm:first')}&submodelIds={b64('urn:test:sm:second')}"
    query += "&includeConceptDescriptions=false"
    headers = {**ADMIN(), "Accept": "application/asset-administration-shell-package+xml"}
    exported = await _ok(await served.client.get(f"{API}/serialization?{query}", headers=headers), 200)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        assert len([name for name in archive.namelist() if name.endswith("manual.pdf")]) == 2
    result = read_package(exported, "export.aasx")
    contents: dict[str, Any] = {}
    for submodel in result.identifiables:
        assert isinstance(submodel, model.Submodel)
        manual = submodel.get_referable("Manual")
        assert isinstance(manual, model.File)
        assert manual.value is not None
        contents[submodel.id] = result.supplementary_files[manual.value][0]
    assert contents == {"urn:test:sm:first": b"%PDF first", "urn:test:sm:second": b"%PDF second"}


async def test_a_new_file_at_the_path_of_a_deleted_one_does_not_inherit_its_bytes(served: Served) -> None:
    client = served.client
    await _ok(await client.delete(element(SM_A, "Manual"), headers=ADMIN()), 204)
    again = {"modelType": "File", "idShort": "Manual", "contentType": "application/pdf", "value": MANUAL_PATH}
    await _ok(await client.post(f"{API}/submodels/{b64(SM_A)}/submodel-elements", json=again, headers=FILLER), 201)
    assert (await _download(served, SM_A, "Manual", FILLER))[0] == 404


async def test_files_in_a_list_keep_their_bytes_when_an_item_before_them_is_deleted(served: Served) -> None:
    client = served.client
    documents = {
        "modelType": "SubmodelElementList",
        "idShort": "Documents",
        "typeValueListElement": "File",
        "value": [{"modelType": "File", "contentType": "text/plain"} for _ in range(3)],
    }
    await _ok(await client.post(f"{API}/submodels/{b64(SM_A)}/submodel-elements", json=documents, headers=FILLER), 201)
    for index in range(3):
        upload = _form(f"document-{index}.txt", f"document {index}".encode(), "text/plain")
        url = element(SM_A, f"Documents[{index}]", "/attachment")
        await _ok(await client.put(url, data=upload, headers=FILLER), 204)
    await _ok(await client.delete(element(SM_A, "Documents[0]"), headers=FILLER), 204)
    assert await _download(served, SM_A, "Documents[0]", FILLER) == (200, b"document 1")
    assert await _download(served, SM_A, "Documents[1]", FILLER) == (200, b"document 2")

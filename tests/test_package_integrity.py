"""Package uploads, imports and exports keep the repository whole (issue 11, findings 5, 7 and 9).

- every object an upload creates or replaces needs *create* or *update* on that very object;
- an upload (REST) or import (CLI) is stored whole or not at all, also when the database fails
  in the middle of the commit, and also as seen after a restart;
- File values naming parts an AASX holds itself are refused when written, and every export
  (``/serialization``, ``/packages/{id}``, ``aas-server export``) reads back with the hub's reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.auth import access_middleware
from aas_server.api.serialization import encode_identifier
from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.errors import PackageError
from aas_server.exchange import read_package, read_package_file, write_package
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub
from aas_server.security.access import AccessControl
from aas_server.store.files import Attachment, MemoryAttachmentStore, MemoryPackageStore, owned_files
from aas_server.store.twin_store import TwinStore

Client = TestClient[web.Request, web.Application]

API = "/api/v3.0"
AASX_TYPE = "application/asset-administration-shell-package+xml"
PLANT = "urn:test:aas:plant"
NAMEPLATE = "urn:test:sm:plant:nameplate"
OPERATION = "urn:test:sm:plant:operation"
NEW_SHELL = "urn:test:aas:new"
OTHER_SHELL = "urn:test:aas:other"
NEW_SUBMODEL = "urn:test:sm:new"
MANUAL = "/aasx/files/manual.pdf"


def b64(identifier: str) -> str:
    return encode_identifier(identifier)


def _submodel(submodel_id: str, id_short: str, serial: str, *, manual: str | None = None) -> model.Submodel:
    elements: list[model.SubmodelElement] = [model.Property("SerialNumber", model.datatypes.String, serial)]
    if manual is not None:
        elements.append(model.File("Manual", content_type="application/pdf", value=manual))
    return model.Submodel(submodel_id, id_short=id_short, submodel_element=elements)


def _shell(shell_id: str, id_short: str, submodels: list[model.Submodel]) -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=f"{shell_id}:asset"),
        shell_id,
        id_short=id_short,
        submodel={model.ModelReference.from_referable(submodel) for submodel in submodels},
    )


def plant(serial: str = "SN-1", id_short: str = "Plant") -> list[model.Identifiable]:
    nameplate = _submodel(NAMEPLATE, "Nameplate", serial, manual=MANUAL)
    operation = _submodel(OPERATION, "Operation", serial)
    return [_shell(PLANT, id_short, [nameplate, operation]), nameplate, operation]


def package(objects: list[model.Identifiable], files: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    return write_package(objects, files or {}, "aasx")


def upload_form(content: bytes, name: str = "upload.aasx") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("fileName", name)
    form.add_field(
        "file", io.BytesIO(content), filename=name, content_type="application/asset-administration-shell-package"
    )
    return form


async def _result_text(response: aiohttp.ClientResponse | Any) -> str:
    body = await response.json()
    return " ".join(message["text"] for message in body["messages"])


# --- finding 5: per-object rights for uploads ------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RULES: list[dict[str, Any]] = [
    {"roles": ["uploader", "packager", "admin"], "operations": ["read", "upload"]},
    {"roles": ["packager"], "operations": ["create", "update"], "shells": [NEW_SHELL]},
    {"roles": ["admin"], "operations": ["*"]},
]
KEYS = {"uploader-key": "uploader", "packager-key": "packager", "admin-key": "admin"}


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[Client, TwinStore, MemoryPackageStore]]:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "security": {
                "api_keys": [
                    {"name": key.removesuffix("-key"), "roles": [role], "sha256": _sha256(key)}
                    for key, role in KEYS.items()
                ],
                "rules": RULES,
            },
        }
    )
    control = AccessControl.from_settings(settings, {})
    store = TwinStore()
    store.add_all(plant())
    packages = MemoryPackageStore()
    app = create_app(
        store, middlewares=[access_middleware(control)], attachments=MemoryAttachmentStore(), packages=packages
    )
    client: Client = TestClient(TestServer(app))
    async with client:
        yield client, store, packages
    await control.aclose()


async def test_upload_rights_alone_cannot_replace_or_create_objects(
    guarded: tuple[Client, TwinStore, MemoryPackageStore],
) -> None:
    client, store, packages = guarded
    uploader = {"X-API-Key": "uploader-key"}
    forged = package(plant(serial="FORGED", id_short="Forged"))
    response = await client.put(f"{API}/packages/{b64('plant-package')}", data=upload_form(forged), headers=uploader)
    assert response.status == 403, await response.text()
    text = await _result_text(response)
    assert "update" in text
    assert PLANT in text
    nameplate = store.submodel(NAMEPLATE)
    assert nameplate.get_referable("SerialNumber").value == "SN-1"  # type: ignore[attr-defined]
    assert store.shell(PLANT).id_short == "Plant"
    assert await packages.packages() == []

    new = _submodel(NEW_SUBMODEL, "New", "SN-9")
    response = await client.post(
        f"{API}/packages", data=upload_form(package([_shell(NEW_SHELL, "New", [new]), new])), headers=uploader
    )
    assert response.status == 403, await response.text()
    assert "create" in await _result_text(response)
    assert [shell.id for shell in store.shells()] == [PLANT]


async def test_a_caller_may_upload_what_its_rules_cover_and_nothing_more(
    guarded: tuple[Client, TwinStore, MemoryPackageStore],
) -> None:
    client, store, packages = guarded
    packager = {"X-API-Key": "packager-key"}
    new = _submodel(NEW_SUBMODEL, "New", "SN-9")
    mixed = package([_shell(NEW_SHELL, "New", [new]), new, *plant(serial="FORGED")[1:2]])
    response = await client.post(f"{API}/packages", data=upload_form(mixed), headers=packager)
    assert response.status == 403, await response.text()
    assert NAMEPLATE in await _result_text(response)
    assert [shell.id for shell in store.shells()] == [PLANT], "nothing of a refused package is stored"
    assert NEW_SUBMODEL not in {submodel.id for submodel in store.submodels()}
    assert store.submodel(NAMEPLATE).get_referable("SerialNumber").value == "SN-1"  # type: ignore[attr-defined]

    response = await client.post(
        f"{API}/packages", data=upload_form(package([_shell(NEW_SHELL, "New", [new]), new])), headers=packager
    )
    assert response.status == 201, await response.text()
    assert store.shell(NEW_SHELL).id_short == "New"
    assert store.submodel(NEW_SUBMODEL).id_short == "New"
    assert [stored.aas_ids for stored in await packages.packages()] == [(NEW_SHELL,)]

    admin = {"X-API-Key": "admin-key"}
    response = await client.put(
        f"{API}/packages/{b64('plant')}", data=upload_form(package(plant(serial="SN-2"))), headers=admin
    )
    assert response.status == 201, await response.text()
    assert store.submodel(NAMEPLATE).get_referable("SerialNumber").value == "SN-2"  # type: ignore[attr-defined]


# --- finding 7: all or nothing, on a real hub with its database ----------------------------------


def hub_settings(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


async def _state(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """What a client sees of everything an upload could change."""
    state: dict[str, Any] = {}
    for listing in ("shells", "submodels", "concept-descriptions", "packages"):
        async with http.get(f"{base}/{listing}") as response:
            assert response.status == 200
            state[listing] = (await response.json())["result"]
    manual = f"{base}/submodels/{b64(NAMEPLATE)}/submodel-elements/Manual/attachment"
    async with http.get(manual) as response:
        state["manual"] = (response.status, await response.read())
    return state


def _changed_plant() -> list[model.Identifiable]:
    """The plant with the shell and both submodels changed, and a new concept description."""
    return [*plant(serial="SN-CHANGED", id_short="Changed"), model.ConceptDescription("urn:test:cd:new")]


async def test_a_package_failing_in_the_middle_changes_nothing_also_after_a_restart(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "data")
    other = _shell(OTHER_SHELL, "Other", [])
    original = package([*plant(), other], {MANUAL: (b"%PDF original manual", "application/pdf")})
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        base = hub.rest_url
        assert base is not None
        async with http.put(f"{base}/packages/{b64('plant')}", data=upload_form(original, "plant.aasx")) as response:
            assert response.status == 201, await response.text()
        before = await _state(http, base)
        assert before["manual"] == (200, b"%PDF original manual")

        # the last object is a submodel with the id of the other shell: a clash found only after 4 good objects
        clash = _submodel(OTHER_SHELL, "Clash", "SN-X")
        clashing = package([*_changed_plant(), clash], {MANUAL: (b"%PDF replaced", "application/pdf")})
        async with http.put(f"{base}/packages/{b64('plant')}", data=upload_form(clashing)) as response:
            assert response.status == 409, await response.text()
            assert OTHER_SHELL in await _result_text(response)
        assert await _state(http, base) == before

        # the database fails in the middle of the commit (after the objects, at the files): disk full
        bulky = random.Random(11).randbytes(1_500_000)
        failing = package(_changed_plant(), {MANUAL: (bulky, "application/pdf")})
        size = (tmp_path / "data" / "hub.sqlite").stat().st_size
        await hub.repository.set_size_limit(size + 64 * 1024)
        async with http.put(f"{base}/packages/{b64('plant')}", data=upload_form(failing)) as response:
            assert response.status == 507, await response.text()
        assert await _state(http, base) == before
        await hub.repository.set_size_limit(None)

    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        base = hub.rest_url
        assert base is not None
        assert await _state(http, base) == before
        async with http.put(f"{base}/packages/{b64('plant')}", data=upload_form(failing)) as response:
            assert response.status == 204, await response.text()
        after = await _state(http, base)
        assert after["manual"] == (200, bulky)
        assert [shell["idShort"] for shell in after["shells"]] == ["Changed", "Other"]


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aas_server", *arguments], capture_output=True, text=True, timeout=120)


async def _stored(settings: HubSettings) -> tuple[list[str], dict[str, tuple[bytes, str]]]:
    async with SqliteRepository(settings.sqlite_path) as repository:
        return [item.id for item in await repository.load_identifiables()], await repository.load_files()


async def test_cli_import_stores_all_files_or_none(tmp_path: Path) -> None:
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    settings = hub_settings(tmp_path / "data")
    good = tmp_path / "plant.aasx"
    good.write_bytes(package(plant(), {MANUAL: (b"%PDF manual", "application/pdf")}))
    broken = tmp_path / "broken.aasx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")

    result = _cli("import", str(good), str(broken), "--config", str(settings_file))
    assert result.returncode == 2
    assert "broken.aasx" in result.stderr
    assert "nothing stored" in result.stderr
    assert "Traceback" not in result.stderr
    assert await _stored(settings) == ([], {})

    result = _cli("import", str(good), "--config", str(settings_file))
    assert result.returncode == 0, result.stderr
    manual = {MANUAL: (b"%PDF manual", "application/pdf")}
    assert await _stored(settings) == ([PLANT, NAMEPLATE, OPERATION], owned_files(plant(), manual))


# --- finding 9: exports are valid packages ---------------------------------------------------------

RESERVED = ["/_rels/.rels", "/[Content_Types].xml", "/aasx/aasx-origin", "/aasx/data.xml", "/aasx/_rels/data.xml.rels"]


@pytest.fixture
async def open_client() -> AsyncIterator[tuple[Client, TwinStore, MemoryAttachmentStore]]:
    store = TwinStore()
    attachments = MemoryAttachmentStore()
    client: Client = TestClient(TestServer(create_app(store, attachments=attachments)))
    async with client:
        yield client, store, attachments


@pytest.mark.parametrize("reserved", RESERVED)
async def test_file_values_naming_package_parts_are_refused_when_written(
    open_client: tuple[Client, TwinStore, MemoryAttachmentStore], reserved: str
) -> None:
    client, store, _ = open_client
    body = {
        "modelType": "Submodel",
        "id": "urn:test:sm:files",
        "submodelElements": [
            {"modelType": "File", "idShort": "Manual", "contentType": "application/pdf", "value": reserved}
        ],
    }
    response = await client.post(f"{API}/submodels", json=body)
    assert response.status == 400, await response.text()
    text = await _result_text(response)
    assert "$.submodelElements[0].value" in text
    assert "part" in text
    assert store.submodels() == []

    body["submodelElements"][0]["value"] = MANUAL  # type: ignore[index]
    assert (await client.post(f"{API}/submodels", json=body)).status == 201
    element = f"{API}/submodels/{b64('urn:test:sm:files')}/submodel-elements/Manual"
    response = await client.patch(f"{element}/$value", json={"contentType": "application/pdf", "value": reserved})
    assert response.status == 400, await response.text()
    assert store.element("urn:test:sm:files", "Manual").value == MANUAL  # type: ignore[attr-defined]


def _legacy_objects() -> list[model.Identifiable]:
    """Objects stored before the check existed: File values that name package parts, and a case clash."""
    values = [*RESERVED, "/aasx/files/Guide.pdf", "/aasx/files/guide.pdf"]
    submodel = model.Submodel(
        "urn:test:sm:legacy",
        id_short="Legacy",
        submodel_element=[
            model.File(f"File{index}", content_type="application/pdf", value=value)
            for index, value in enumerate(values)
        ],
    )
    return [_shell("urn:test:aas:legacy", "Legacy", [submodel]), submodel]


def _legacy_files() -> dict[str, tuple[bytes, str]]:
    values = [*RESERVED, "/aasx/files/Guide.pdf", "/aasx/files/guide.pdf"]
    return {value: (f"content of {value}".encode(), "application/pdf") for value in values}


def _check_reimport(data: bytes) -> None:
    """The export has no duplicate entries, reads back strictly, and every file is there under its File value."""
    names = [name.lower() for name in zipfile.ZipFile(io.BytesIO(data)).namelist()]
    assert len(names) == len(set(names))
    result = read_package(data, "export.aasx", strict=True)
    (submodel,) = [item for item in result.identifiables if isinstance(item, model.Submodel)]
    contents = sorted(result.supplementary_files[element.value][0] for element in submodel.submodel_element)  # type: ignore[attr-defined]
    assert contents == sorted(content for content, _ in _legacy_files().values())


async def test_every_export_route_writes_a_package_the_hub_reads_back(
    open_client: tuple[Client, TwinStore, MemoryAttachmentStore],
) -> None:
    client, store, attachments = open_client
    store.add_all(_legacy_objects())
    # as a hub keeps them after its start: under the bare path (stored before ownership) and for their owner
    stored = {**_legacy_files(), **owned_files(_legacy_objects(), _legacy_files())}
    for key, (content, content_type) in stored.items():
        await attachments.put(key, Attachment(content, content_type))
    response = await client.get(f"{API}/serialization", headers={"Accept": AASX_TYPE})
    assert response.status == 200, await response.text()
    exported = await response.read()
    _check_reimport(exported)

    response = await client.put(f"{API}/packages/{b64('legacy')}", data=upload_form(exported))
    assert response.status == 201, await response.text()
    response = await client.get(f"{API}/packages/{b64('legacy')}")
    assert response.status == 200
    _check_reimport(await response.read())


async def test_cli_export_of_legacy_file_values_reads_back(tmp_path: Path) -> None:
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    async with SqliteRepository(hub_settings(tmp_path / "data").sqlite_path) as repository:
        await repository.save_identifiables(_legacy_objects())
        await repository.save_files({**_legacy_files(), **owned_files(_legacy_objects(), _legacy_files())})
    output = tmp_path / "export.aasx"
    result = _cli("export", str(output), "--config", str(settings_file))
    assert result.returncode == 0, result.stderr
    _check_reimport(output.read_bytes())
    assert read_package_file(output, strict=True).report.counts_taken["submodel_elements"] == 7


async def test_the_commit_refuses_an_object_that_does_not_read_back_and_stores_nothing(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.commit_identifiables(plant())
        changed = plant(serial="SN-2", id_short="Changed")
        unreadable = _submodel("urn:test:sm:unreadable", "Fine", "SN-3")
        unreadable._id_short = "not an idShort"  # what no decoder would build: its JSON form does not read back
        with pytest.raises(PackageError) as refused:
            await store.commit_identifiables([*changed, unreadable], replace=True)
        assert "urn:test:sm:unreadable" in str(refused.value)
        assert "AASd-002" in str(refused.value)
        assert store.shell(PLANT).id_short == "Plant"
        assert [item.id for item in await repository.load_identifiables()] == [PLANT, NAMEPLATE, OPERATION]
        stored_nameplate = (await repository.load_identifiables())[1]
        assert stored_nameplate.get_referable("SerialNumber").value == "SN-1"  # type: ignore[attr-defined]


def test_an_import_drops_file_values_naming_package_parts_and_strict_mode_rejects_them() -> None:
    legacy = package(_legacy_objects(), _legacy_files())  # written with those values renamed
    document = {
        "submodels": [
            {
                "modelType": "Submodel",
                "id": "urn:test:sm:vendor",
                "submodelElements": [
                    {"modelType": "File", "idShort": "Spec", "contentType": "text/xml", "value": "/aasx/data.xml"},
                    {"modelType": "File", "idShort": "Fine", "contentType": "text/xml", "value": MANUAL},
                ],
            }
        ]
    }
    lenient = read_package(json.dumps(document).encode(), "vendor.json")
    (submodel,) = lenient.identifiables
    assert [element.value for element in submodel.submodel_element] == [None, MANUAL]  # type: ignore[attr-defined]
    (issue,) = [issue for issue in lenient.report.issues if issue.severity == "dropped"]
    assert issue.path == "submodels[0].submodelElements[0].value"
    assert "/aasx/data.xml" in issue.message
    with pytest.raises(PackageError):
        read_package(json.dumps(document).encode(), "vendor.json", strict=True)
    assert read_package(legacy, "legacy.aasx", strict=True).report.counts_taken["submodel_elements"] == 7


async def test_an_upload_cannot_pull_another_submodel_into_a_shell_the_caller_may_change(
    guarded: tuple[Client, TwinStore, MemoryPackageStore],
) -> None:
    client, store, packages = guarded
    packager = {"X-API-Key": "packager-key"}
    nameplate = store.submodel(NAMEPLATE)
    grabbing = _shell(NEW_SHELL, "Grab", [nameplate])  # its rules on NEW_SHELL would then cover the nameplate
    response = await client.post(f"{API}/packages", data=upload_form(package([grabbing])), headers=packager)
    assert response.status == 403, await response.text()
    assert NAMEPLATE in await _result_text(response)
    assert [shell.id for shell in store.shells()] == [PLANT]
    assert await packages.packages() == []


async def test_file_values_that_are_no_opc_part_names_are_renamed_on_export(
    open_client: tuple[Client, TwinStore, MemoryAttachmentStore],
) -> None:
    client, store, attachments = open_client
    values = ["/aasx/files/Anleitung-ä.pdf", "/aasx/files/a#b.pdf", "/aasx/files/[x].pdf", "/aasx/files/v1."]
    body = {
        "modelType": "Submodel",
        "id": "urn:test:sm:odd",
        "submodelElements": [
            {"modelType": "File", "idShort": f"File{index}", "contentType": "application/pdf", "value": value}
            for index, value in enumerate(values)
        ],
    }
    response = await client.post(f"{API}/submodels", json=body)
    assert response.status == 201, await response.text()
    contents = {value: (f"content of {value}".encode(), "application/pdf") for value in values}
    for key, (content, content_type) in owned_files(store.submodels(), contents).items():
        await attachments.put(key, Attachment(content, content_type))

    response = await client.get(f"{API}/serialization", headers={"Accept": AASX_TYPE})
    assert response.status == 200, await response.text()
    result = read_package(await response.read(), "export.aasx", strict=True)
    (submodel,) = result.identifiables
    exported = [element.value for element in submodel.submodel_element]  # type: ignore[attr-defined]
    assert all(value.startswith("/aasx/files/renamed/") for value in exported)
    assert [result.supplementary_files[value][0] for value in exported] == [contents[v][0] for v in values]

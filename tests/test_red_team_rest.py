"""Red team of the issue 11 fixes on the REST side, over the hub's real REST endpoint on loopback.

Each test is an attack that got through (or a guard that it must not break), as a caller with a
limited role would try it: a role scoped to one shell glob (``urn:test:aas:A*``) with an API key,
beside the full ``admin``.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import zipfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.auth import access_middleware
from aas_server.api.context import RUNS_KEY
from aas_server.api.operations import OperationRuns
from aas_server.config import HubSettings
from aas_server.exchange import read_package, write_package
from aas_server.security.access import AccessControl
from aas_server.store.operations import OperationRegistry
from tests.support import eventually
from tests.test_access import (
    API,
    HS256_SECRET,
    PRINCIPALS,
    RULES,
    SECRET_ENV,
    SHELL_A,
    SM_A,
    SM_B,
    Client,
    Served,
    _refused,
    _serve,
    _sha256,
    _upload,
    b64,
    build_store,
    security_section,
    sm,
)

LIMITED_GLOB = "urn:test:aas:A*"
KIT_SHELL = "urn:test:aas:A-kit"
KIT_SUBMODEL = "urn:test:sm:kit"
RECIPE_SUBMODEL = "urn:test:sm:secret-recipe"
RECIPE_DESCRIPTION = "urn:test:cd:secret-recipe"
AASX = "application/asset-administration-shell-package"

RED_TEAM_RULES: list[dict[str, Any]] = [
    {"roles": ["limited"], "operations": ["read", "export", "write-value", "upload"], "shells": [LIMITED_GLOB]},
]

LIMITED = {"X-API-Key": "limited-key"}


def _admin() -> dict[str, str]:
    return PRINCIPALS["admin"]()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    section = security_section(tmp_path)
    section["api_keys"] = [
        *section["api_keys"],
        {"name": "limited", "roles": ["limited"], "sha256": _sha256("limited-key")},
    ]
    section["rules"] = [*RULES, *RED_TEAM_RULES]
    settings = HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section})
    async for running in _serve(tmp_path, settings):
        yield running


def _kit_package(*, with_recipe: bool) -> bytes:
    """A package whose only shell is in the limited role's glob; with the recipe, it also holds a submodel and
    a concept description that no shell references, which the limited role may not read."""
    kit = model.Submodel(
        KIT_SUBMODEL, id_short="Kit", submodel_element=[model.Property("Parts", model.datatypes.Int, 4)]
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=f"{KIT_SHELL}:asset"),
        KIT_SHELL,
        id_short="Kit",
        submodel={model.ModelReference.from_referable(kit)},
    )
    identifiables: list[model.Identifiable] = [shell, kit]
    if with_recipe:
        recipe = model.Submodel(
            RECIPE_SUBMODEL,
            id_short="Recipe",
            submodel_element=[model.Property("SecretIngredient", model.datatypes.String, "saffron")],
        )
        identifiables += [recipe, model.ConceptDescription(RECIPE_DESCRIPTION, id_short="Recipe")]
    return write_package(identifiables, {}, "aasx")


async def _upload_as_admin(served: Served, package_id: str, content: bytes) -> None:
    response = await served.client.put(
        f"{API}/packages/{b64(package_id)}", data=_upload("kit.aasx", content, AASX)(), headers=_admin()
    )
    assert response.status == 201, await response.text()


async def _forbidden(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The AAS Result of a ``403`` (the status checked before the body is read as text)."""
    assert response.status == 403, f"{response.status} for {response.url}"
    return await _refused(response, 403)


async def _listed(served: Served, headers: dict[str, str]) -> list[str]:
    response = await served.client.get(f"{API}/packages", headers=headers)
    assert response.status == 200, await response.text()
    return [item["packageId"] for item in (await response.json())["result"]]


# --- packages: the file holds more than its shells -------------------------------------------------


async def test_a_package_download_needs_rights_on_every_submodel_and_concept_description_it_holds(
    served: Served,
) -> None:
    await _upload_as_admin(served, "kit-with-recipe", _kit_package(with_recipe=True))
    # one by one, the limited caller is refused the recipe and its concept description
    await _forbidden(await served.client.get(sm(RECIPE_SUBMODEL), headers=LIMITED))
    await _forbidden(await served.client.get(f"{API}/concept-descriptions/{b64(RECIPE_DESCRIPTION)}", headers=LIMITED))
    # so it must not get them inside the package file of a shell it may export
    response = await served.client.get(f"{API}/packages/{b64('kit-with-recipe')}", headers=LIMITED)
    message = await _forbidden(response)
    assert "kit-with-recipe" in message["text"]
    assert "kit-with-recipe" not in await _listed(served, LIMITED)
    # the operator with every right still downloads the whole file
    response = await served.client.get(f"{API}/packages/{b64('kit-with-recipe')}", headers=_admin())
    assert response.status == 200
    ids = {item.id for item in read_package(await response.read(), "kit.aasx").identifiables}
    assert {RECIPE_SUBMODEL, RECIPE_DESCRIPTION} <= ids
    assert "kit-with-recipe" in await _listed(served, _admin())


async def test_a_package_wholly_in_the_callers_scope_is_still_listed_and_downloaded(served: Served) -> None:
    await _upload_as_admin(served, "kit", _kit_package(with_recipe=False))
    assert "kit" in await _listed(served, LIMITED)
    response = await served.client.get(f"{API}/packages/{b64('kit')}", headers=LIMITED)
    assert response.status == 200, await response.text()
    with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
        assert archive.testzip() is None


async def test_a_package_follows_the_references_of_the_store_not_those_in_its_file(served: Served) -> None:
    """The operator takes the kit submodel out of the limited caller's shell: the package file, whose shell
    still references it, is no way around that."""
    await _upload_as_admin(served, "kit", _kit_package(with_recipe=False))
    assert (await served.client.get(sm(KIT_SUBMODEL), headers=LIMITED)).status == 200
    response = await served.client.delete(
        f"{API}/shells/{b64(KIT_SHELL)}/submodel-refs/{b64(KIT_SUBMODEL)}", headers=_admin()
    )
    assert response.status == 204, await response.text()
    await _forbidden(await served.client.get(sm(KIT_SUBMODEL), headers=LIMITED))
    await _forbidden(await served.client.get(f"{API}/packages/{b64('kit')}", headers=LIMITED))
    assert "kit" not in await _listed(served, LIMITED)


# --- SPARQL: odd but well-formed queries -----------------------------------------------------------

XSD = "PREFIX xsd: <http://www.w3.org/2001/XMLSchema#> "
ODD_QUERIES = [
    # rdflib's builtins fail on such terms with plain Python errors (TypeError, ValueError, decimal, overflow)
    f"SELECT ({'1' * 5000} * {'1' * 5000} AS ?x) WHERE {{}}",
    "SELECT (ROUND(1e308*10) AS ?x) WHERE {}",
    XSD + 'SELECT (FLOOR("NaN"^^xsd:double) AS ?x) WHERE {}',
    XSD + 'SELECT (YEAR("99999-01-01T00:00:00Z"^^xsd:dateTime) AS ?x) WHERE {}',
    XSD + 'SELECT ("9999-12-31"^^xsd:date + "P1D"^^xsd:dayTimeDuration AS ?x) WHERE {}',
    XSD + 'SELECT (SUM(?v) AS ?x) WHERE { VALUES ?v { "a"^^xsd:int 1 } }',
    "SELECT * WHERE { VALUES ?v { 1 2 } } ORDER BY (?v/0)",
    'SELECT (STRLANG("a", "not a language tag") AS ?x) WHERE {}',
    "SELECT * WHERE { ?s ?p ?o } LIMIT 99999999999999999999999",
    'CONSTRUCT { ?s <urn:p> 1 } WHERE { BIND(IRI("no iri>") AS ?s) }',
]


@pytest.mark.parametrize("query", ODD_QUERIES, ids=range(len(ODD_QUERIES)))
async def test_an_odd_sparql_query_is_a_400_naming_why_not_a_500(served: Served, query: str) -> None:
    headers = {**_admin(), "Content-Type": "application/sparql-query"}
    response = await served.client.post(f"{API}/sparql", data=query.encode(), headers=headers)
    text = await response.text()
    assert response.status == 400, text
    message = json.loads(text)["messages"][0]
    assert message["code"] == "BadRequest"
    assert message["text"].startswith("the query cannot be evaluated"), message["text"]
    assert len(message["text"]) < 1000
    response = await served.client.post(f"{API}/sparql", data=b"ASK { ?s ?p ?o }", headers=headers)
    assert response.status == 200
    assert (await response.json())["boolean"] is True


async def test_ill_typed_literals_in_a_query_do_not_flood_the_log_with_tracebacks(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    literals = " ".join(f'"x{index}"^^xsd:int' for index in range(300))
    query = XSD + f"SELECT (COUNT(?v) AS ?n) WHERE {{ VALUES ?v {{ {literals} }} FILTER(?v > 1) }}"
    headers = {**_admin(), "Content-Type": "application/sparql-query"}
    with caplog.at_level(logging.DEBUG):
        response = await served.client.post(f"{API}/sparql", data=query.encode(), headers=headers)
        assert response.status == 200, await response.text()
    lines = sum(record.getMessage().count("\n") + 1 + (20 if record.exc_info else 0) for record in caplog.records)
    assert lines < 20, [record.getMessage()[:200] for record in caplog.records[:3]]


# --- downloads of uploaded bytes -------------------------------------------------------------------

ACTIVE_CONTENT = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.domain)</script></svg>"


def _multipart(file_name: str, content: bytes, content_type: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body written out by hand, so that any part header can be sent as an attacker would."""
    boundary = "red-team-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + content
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="fileName"\r\n\r\n{file_name}\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_an_attachment_whose_content_type_has_parameters_is_served_not_a_500(served: Served) -> None:
    body, headers = _multipart("notes.txt", "Füllstand ok".encode(), "text/plain; charset=utf-8")
    url = sm(SM_A, "/submodel-elements/Manual/attachment")
    response = await served.client.put(url, data=body, headers={**LIMITED, **headers})
    assert response.status == 204, await response.text()
    response = await served.client.get(url, headers=LIMITED)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (await response.read()).decode() == "Füllstand ok"


@pytest.mark.parametrize("where", ["attachment", "thumbnail"])
async def test_uploaded_bytes_are_never_served_as_active_content_of_the_hubs_origin(served: Served, where: str) -> None:
    """A caller with upload rights stores an SVG with a script: whoever opens it from the hub must not run it."""
    body, headers = _multipart("logo.svg", ACTIVE_CONTENT, "image/svg+xml")
    if where == "attachment":
        url = sm(SM_A, "/submodel-elements/Manual/attachment")
    else:
        url = f"{API}/shells/{b64(SHELL_A)}/asset-information/thumbnail"
    response = await served.client.put(url, data=body, headers={**LIMITED, **headers})
    assert response.status == 204, await response.text()
    response = await served.client.get(url, headers=LIMITED)
    assert response.status == 200, await response.text()
    assert await response.read() == ACTIVE_CONTENT
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = response.headers["Content-Security-Policy"]
    assert "sandbox" in policy
    assert "default-src 'none'" in policy


# --- replacing another's package file --------------------------------------------------------------

UPLOADER = {"X-API-Key": "uploader-key"}
UPLOADER_RULES: list[dict[str, Any]] = [
    {"roles": ["uploader"], "operations": ["upload"]},
    {"roles": ["uploader"], "operations": ["read", "export", "create", "update", "delete"], "shells": [LIMITED_GLOB]},
]


@pytest.fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Served]:
    section = security_section(tmp_path)
    section["api_keys"] = [
        *section["api_keys"],
        {"name": "uploader", "roles": ["uploader"], "sha256": _sha256("uploader-key")},
    ]
    section["rules"] = [*RULES, *UPLOADER_RULES]
    settings = HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section})
    async for running in _serve(tmp_path, settings):
        yield running


def _new_shell_package(shell_id: str) -> bytes:
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=f"{shell_id}:asset"), shell_id, id_short="New"
    )
    return write_package([shell], {}, "aasx")


async def test_replacing_a_package_file_needs_the_rights_to_delete_the_one_there(uploads: Served) -> None:
    """A caller that may upload, and create and delete shells of its own, cannot overwrite the operator's
    package file of another shell."""
    await _upload_as_admin(uploads, "plant", _new_shell_package("urn:test:aas:plant"))
    url = f"{API}/packages/{b64('plant')}"
    await _forbidden(await uploads.client.delete(url, headers=UPLOADER))
    before = await uploads.snapshot()
    form = _upload("mine.aasx", _new_shell_package("urn:test:aas:A-mine"), AASX)()
    message = await _forbidden(await uploads.client.put(url, data=form, headers=UPLOADER))
    assert "'plant'" in message["text"]
    assert await uploads.snapshot() == before
    response = await uploads.client.get(url, headers=_admin())
    assert {item.id for item in read_package(await response.read(), "plant.aasx").identifiables} == {
        "urn:test:aas:plant"
    }
    # a package of its own it may still upload, and replace
    own = f"{API}/packages/{b64('mine')}"
    for status in (201, 204):
        form = _upload("mine.aasx", _new_shell_package("urn:test:aas:A-mine"), AASX)()
        response = await uploads.client.put(own, data=form, headers=UPLOADER)
        assert response.status == status, await response.text()


# --- value writes: the strings AASd-130 forbids ----------------------------------------------------

FORBIDDEN_CHARACTERS = {"NUL": "\u0000", "escape": "\u001b[31m", "U+FFFE": "\ufffe"}


@pytest.mark.parametrize("name", FORBIDDEN_CHARACTERS)
async def test_a_value_write_cannot_store_a_character_aasd_130_forbids_and_brick_the_export(
    served: Served, name: str
) -> None:
    """Model bodies refuse such strings; value writes let them in, and every XML and AASX export was a 500."""
    text = f"auto{FORBIDDEN_CHARACTERS[name]}"
    response = await served.client.post(
        sm(SM_A, "/submodel-elements"),
        json={"modelType": "MultiLanguageProperty", "idShort": "Label", "value": [{"language": "en", "text": "x"}]},
        headers=_admin(),
    )
    assert response.status == 201, await response.text()
    writes = [
        (sm(SM_A, "/submodel-elements/Status.Mode/$value"), text),
        (sm(SM_A, "/$value"), {"Status": {"Mode": text}}),
        (sm(SM_A, "/submodel-elements/Label/$value"), [{"en": text}]),
        (sm(SM_A, "/submodel-elements/Manual/$value"), {"contentType": f"text/plain{text}", "value": "/a.pdf"}),
    ]
    for url, body in writes:
        response = await served.client.patch(url, json=body, headers=LIMITED)
        answer = await response.text()
        assert response.status == 400, (url, response.status, answer)
        message = json.loads(answer)["messages"][0]
        assert "AASd-130" in message["text"], message["text"]
    assert served.store.element(SM_A, "Status.Mode").value == "auto"  # type: ignore[attr-defined]
    for accept in ("application/xml", "application/asset-administration-shell-package+xml"):
        response = await served.client.get(f"{API}/serialization", headers={**_admin(), "Accept": accept})
        assert response.status == 200, await response.text()


# --- asynchronous operations: one caller's flood must not cancel another's run ---------------------

MAX_RUNS = 5


async def test_a_flood_of_async_invocations_does_not_cancel_an_operation_another_caller_started(
    tmp_path: Path,
) -> None:
    """The table of asynchronous runs was bounded by cancelling the oldest run, finished or not: whoever may
    invoke anything could cancel the operator's running operation (a device command) by starting others."""
    section = security_section(tmp_path)
    section["api_keys"] = [
        *section["api_keys"],
        {"name": "limited", "roles": ["limited"], "sha256": _sha256("limited-key")},
    ]
    section["rules"] = [*RULES, {"roles": ["limited"], "operations": ["invoke"], "shells": [LIMITED_GLOB]}]
    control = AccessControl.from_settings(
        HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section}),
        {SECRET_ENV: HS256_SECRET},
    )
    release = asyncio.Event()
    cancelled: list[str] = []

    async def start(inputs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(str(inputs.get("Speed")))
            raise
        return {}

    operations = OperationRegistry()
    operations.register(SM_A, "Start", start)
    app = create_app(build_store(), middlewares=[access_middleware(control)], operations=operations)
    app[RUNS_KEY] = OperationRuns(max_runs=MAX_RUNS)
    client: Client = TestClient(TestServer(app))
    url = sm(SM_A, "/submodel-elements/Start/invoke-async/$value")
    async with client:
        response = await client.post(url, json={"inputArguments": {"Speed": 1.0}}, headers=_admin())
        assert response.status == 202, await response.text()
        status_url = response.headers["Location"]
        answers = []
        for _ in range(2 * MAX_RUNS):
            response = await client.post(url, json={"inputArguments": {"Speed": 2.0}}, headers=LIMITED)
            answers.append(response.status)
            await response.read()
        assert cancelled == []
        assert answers.count(202) == MAX_RUNS - 1
        assert set(answers) == {202, 503}
        release.set()

        async def status() -> aiohttp.ClientResponse:
            answer = await client.get(status_url, headers=_admin(), allow_redirects=False)
            await answer.read()
            return answer

        response = await eventually(status, lambda answer: answer.status != 200)  # 200: running until it sees the event
        assert response.status == 302, await response.text()
        response = await client.get(response.headers["Location"], headers=_admin())
        assert (await response.json())["executionState"] == "Completed"
        # finished runs make room again
        response = await client.post(url, json={"inputArguments": {"Speed": 3.0}}, headers=LIMITED)
        assert response.status == 202, await response.text()
    await control.aclose()


# --- an export is a read ---------------------------------------------------------------------------


async def test_what_a_caller_may_not_read_it_cannot_export_either(served: Served) -> None:
    """The viewer may read and export, but a deny rule keeps it from reading ``Status.Secret``: it got the secret
    from ``/serialization``, ``/rdf`` and ``/sparql``."""
    viewer = PRINCIPALS["viewer"]()
    await _forbidden(await served.client.get(sm(SM_A, "/submodel-elements/Status.Secret"), headers=viewer))
    await _forbidden(await served.client.get(f"{API}/serialization?submodelIds={b64(SM_A)}", headers=viewer))
    await _forbidden(await served.client.get(f"{API}/rdf", headers=viewer))
    query = {**viewer, "Content-Type": "application/sparql-query"}
    await _forbidden(await served.client.post(f"{API}/sparql", data=b'ASK { ?s ?p "s3cret" }', headers=query))
    response = await served.client.get(f"{API}/serialization", headers=viewer)
    assert response.status == 200
    environment = await response.json()
    assert b"s3cret" not in json.dumps(environment).encode()
    assert SM_A not in {submodel["id"] for submodel in environment["submodels"]}
    assert SM_B in {submodel["id"] for submodel in environment["submodels"]}
    response = await served.client.get(f"{API}/serialization?submodelIds={b64(SM_B)}", headers=viewer)
    assert response.status == 200, await response.text()
    # the operator without deny rules exports everything
    response = await served.client.get(f"{API}/rdf", headers=_admin())
    assert response.status == 200
    assert "s3cret" in await response.text()


# --- compressed request bodies ---------------------------------------------------------------------


async def test_a_body_that_does_not_decode_as_its_content_encoding_is_a_400_not_a_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    url = sm(SM_A, "/submodel-elements/Setpoint/$value")
    headers = {**LIMITED, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await served.client.patch(url, data=b"\x1f\x8b\x08\x00 not gzip at all", headers=headers)
    answer = await response.text()
    assert response.status == 400, answer
    assert "Content-Encoding" in json.loads(answer)["messages"][0]["text"]
    assert served.store.element(SM_A, "Setpoint").value == 50.0  # type: ignore[attr-defined]
    bomb = gzip.compress(b"1" + b"0" * (40 * 1024 * 1024))  # 40 MiB once inflated, 40 KiB on the wire
    response = await served.client.patch(url, data=bomb, headers=headers)
    assert response.status == 413, await response.text()
    response = await served.client.patch(url, data=gzip.compress(b"42.5"), headers=headers)
    assert response.status == 204, await response.text()
    assert served.store.element(SM_A, "Setpoint").value == 42.5  # type: ignore[attr-defined]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []

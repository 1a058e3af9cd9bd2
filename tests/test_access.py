"""REST access control over a real loopback server: tokens, API keys, rules on every route, filtering, audit.

Also the same rules behind OPC UA users' writes, and ``aas-server check`` on the ``security`` section.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from asyncua import Client as OpcUaClient
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from aas_server.api.app import create_app
from aas_server.api.auth import ROUTE_ACCESS, access_middleware, route_name
from aas_server.api.routing import ApiResource
from aas_server.api.serialization import dumps, encode_identifier, to_json_object
from aas_server.cli import check_file, main
from aas_server.config import (
    AccessOperation,
    AccessRule,
    HubSettings,
    OpcUaSettings,
    Role,
    SecurityPolicyName,
    UserSettings,
    load_settings,
)
from aas_server.errors import ConfigurationError
from aas_server.exchange import write_package
from aas_server.opcua.node_ids import node_id_for
from aas_server.opcua.server import OpcUaProjection
from aas_server.runtime.hub import load_model_files
from aas_server.security.access import AccessControl
from aas_server.security.rules import AccessPolicy, glob_matches
from aas_server.security.scopes import ModelAccess, ScopeKind
from aas_server.store.files import (
    Attachment,
    MemoryAttachmentStore,
    MemoryPackageStore,
    StoredPackage,
    element_owner,
    owned_key,
    thumbnail_owner,
)
from aas_server.store.history import AggregatePage, AggregateQuery, RawQuery, SamplePage
from aas_server.store.twin_store import TwinStore
from tests.support import ROOT

Client = TestClient[web.Request, web.Application]

API = "/api/v3.0"
SHELL_A = "urn:test:aas:A"
SHELL_B = "urn:test:aas:B"
SHELL_NEW = "urn:test:aas:new"
SM_A = "urn:test:sm:A:operational"
SM_A_NAMEPLATE = "urn:test:sm:A:nameplate"
SM_B = "urn:test:sm:B:operational"
CD = "urn:test:cd:temperature"
SEM_OPERATIONAL = "urn:test:sem:OperationalData"
SEM_NAMEPLATE = "urn:test:sem:Nameplate"
SEM_TEMPERATURE = "urn:test:sem:Temperature"
SEM_SECRET = "urn:test:sem:Secret"
PACKAGE_A = "package-a"
THUMBNAIL_PATH = "/aasx/thumbnail.png"
MANUAL_PATH = "/aasx/files/manual.pdf"
THUMBNAIL_KEY = owned_key(thumbnail_owner(SHELL_A), THUMBNAIL_PATH)
MANUAL_KEY = owned_key(element_owner(SM_A, "Manual"), MANUAL_PATH)
"""Where the attachment store keeps the bytes of shell A's thumbnail and of the File ``Manual`` of ``SM_A``."""

ISSUER = "https://idp.example.test/realms/plant"
AUDIENCE = "aas-server-tests"
HS256_SECRET = "an HS256 secret of more than thirty-two bytes"
SECRET_ENV = "AAS_TEST_HS256_SECRET"

KEYS = {"viewer-key": "viewer", "nobody-key": "guest", "semantic-key": "semantic-reader"}


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = _rsa_key()
FORGING_KEY = _rsa_key()

RULES: list[dict[str, Any]] = [
    {"roles": ["viewer"], "operations": ["read", "export"]},
    {"roles": ["operator-a"], "operations": ["read", "write-value", "invoke", "export"], "shells": [SHELL_A]},
    {"roles": ["admin"], "operations": ["*"]},
    {"roles": ["viewer", "operator-a"], "operations": ["read"], "semantic_ids": [SEM_SECRET], "effect": "deny"},
    {"roles": ["semantic-reader"], "operations": ["read"], "semantic_ids": [SEM_TEMPERATURE]},
    {"roles": ["operator"], "operations": ["write-value"], "submodels": [SM_A]},
    {"roles": ["operator"], "operations": ["write-value"], "paths": ["Status*"], "effect": "deny"},
]


# --- the model ------------------------------------------------------------------------------------


def _reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _double(id_short: str | None, value: float, semantic: str | None = None) -> model.Property:
    return model.Property(
        id_short, model.datatypes.Double, value, semantic_id=_reference(semantic) if semantic else None
    )


def _operational(submodel_id: str, full: bool) -> model.Submodel:
    elements: list[model.SubmodelElement] = [
        _double("Temperature", 21.5, SEM_TEMPERATURE),
        _double("Setpoint", 50.0),
    ]
    if full:
        elements += [
            model.SubmodelElementCollection(
                "Status",
                value=[
                    model.Property("Mode", model.datatypes.String, "auto"),
                    model.Property("Secret", model.datatypes.String, "s3cret", semantic_id=_reference(SEM_SECRET)),
                ],
            ),
            model.File("Manual", content_type="application/pdf", value=MANUAL_PATH),
            model.Operation("Start", input_variable=[_double("Speed", 0.0)]),
            model.SubmodelElementList(
                "Readings",
                type_value_list_element=model.Property,
                value_type_list_element=model.datatypes.Double,
                value=[_double(None, 1.0), _double(None, 2.0)],
            ),
        ]
    return model.Submodel(
        submodel_id, id_short="OperationalData", semantic_id=_reference(SEM_OPERATIONAL), submodel_element=elements
    )


def _shell(shell_id: str, id_short: str, submodels: list[model.Submodel]) -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(
            model.AssetKind.INSTANCE,
            global_asset_id=f"{shell_id}:asset",
            default_thumbnail=model.Resource(THUMBNAIL_PATH, "image/png") if shell_id == SHELL_A else None,
        ),
        shell_id,
        id_short=id_short,
        submodel={model.ModelReference.from_referable(submodel) for submodel in submodels},
    )


def build_store() -> TwinStore:
    operational_a = _operational(SM_A, full=True)
    nameplate_a = model.Submodel(
        SM_A_NAMEPLATE,
        id_short="Nameplate",
        semantic_id=_reference(SEM_NAMEPLATE),
        submodel_element=[model.Property("SerialNumber", model.datatypes.String, "SN-1")],
    )
    operational_b = _operational(SM_B, full=False)
    store = TwinStore()
    store.add_all(
        [
            _shell(SHELL_A, "ShellA", [operational_a, nameplate_a]),
            _shell(SHELL_B, "ShellB", [operational_b]),
            operational_a,
            nameplate_a,
            operational_b,
            model.ConceptDescription(CD, id_short="Temperature"),
        ]
    )
    return store


class RecordedTemperature:
    """The history of ``Temperature`` (one sample), as the hub's history database would answer."""

    def is_recorded(self, submodel_id: str, id_short_path: str) -> bool:
        return id_short_path == "Temperature"

    async def read_raw(self, query: RawQuery) -> SamplePage:
        return SamplePage([])

    async def read_aggregates(self, query: AggregateQuery) -> AggregatePage:
        return AggregatePage([])


# --- credentials ----------------------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def security_section(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    public_key = tmp_path / "issuer.pem"
    public_key.write_bytes(
        SIGNING_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    section: dict[str, Any] = {
        "tokens": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "HS256"],
            "rs256_public_key": str(public_key),
            "hs256_secret_env": SECRET_ENV,
            "roles_claim": "realm_access.roles",
        },
        "api_keys": [
            {"name": name.removesuffix("-key"), "roles": [role], "sha256": _sha256(name)} for name, role in KEYS.items()
        ],
        "roles": ["operator-a"],
        "rules": RULES,
    }
    section.update(changes)
    return section


def hub_settings(tmp_path: Path, **changes: Any) -> HubSettings:
    return HubSettings.model_validate(
        {"data_dir": str(tmp_path / "data"), "security": security_section(tmp_path, **changes)}
    )


def make_token(
    roles: list[str],
    *,
    key: Any = SIGNING_KEY,
    algorithm: str = "RS256",
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    expires_in: float = 300,
    subject: str = "alice",
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + int(expires_in),
        "realm_access": {"roles": roles},
    }
    return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned_token(roles: list[str]) -> str:
    """A token with ``"alg": "none"`` and no signature (RFC 7519 §6), which must never be accepted."""

    def part(content: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(content).encode()).decode().rstrip("=")

    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "realm_access": {"roles": roles}}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


PRINCIPALS: dict[str, Callable[[], dict[str, str]]] = {
    "admin": lambda: bearer(make_token(["admin"], key=HS256_SECRET.encode(), algorithm="HS256", subject="root")),
    "operator": lambda: bearer(make_token(["operator-a"])),
    "viewer": lambda: api_key("viewer-key"),
    "nobody": lambda: api_key("nobody-key"),
    "semantic": lambda: api_key("semantic-key"),
}
"""Callers who pass authentication, by the role they have."""

INVALID: dict[str, Callable[[], dict[str, str]]] = {
    "no credentials": dict,
    "expired token": lambda: bearer(make_token(["admin"], expires_in=-3600)),
    "forged token": lambda: bearer(make_token(["admin"], key=FORGING_KEY)),
    "wrong issuer": lambda: bearer(make_token(["admin"], issuer="https://evil.example.test")),
    "wrong audience": lambda: bearer(make_token(["admin"], audience="another-service")),
    "unknown API key": lambda: api_key("guessed-key"),
    "unsigned token": lambda: bearer(_unsigned_token(["admin"])),
}
"""Requests answered 401 whatever the route."""


# --- the server -----------------------------------------------------------------------------------


@dataclass
class Served:
    client: Client
    store: TwinStore
    attachments: MemoryAttachmentStore
    packages: MemoryPackageStore
    control: AccessControl

    async def snapshot(self) -> list[Any]:
        """Everything a request could change: identifiables, stored files and packages."""
        identifiables = sorted((item.id, dumps(to_json_object(item))) for item in self.store.identifiables())
        files = [await self.attachments.get(key) for key in (THUMBNAIL_KEY, MANUAL_KEY)]
        packages = [(package.package_id, package.content) for package in await self.packages.packages()]
        return [identifiables, files, packages]


def _aasx(shell_id: str) -> bytes:
    submodel = model.Submodel(f"{shell_id}:sm", id_short="Extra")
    return write_package([_shell(shell_id, "Packaged", [submodel]), submodel], {}, "aasx")


async def _serve(tmp_path: Path, settings: HubSettings | None = None) -> AsyncIterator[Served]:
    settings = settings or hub_settings(tmp_path)
    control = AccessControl.from_settings(settings, {SECRET_ENV: HS256_SECRET})
    store = build_store()
    attachments = MemoryAttachmentStore()
    await attachments.put(THUMBNAIL_KEY, Attachment(b"\x89PNG thumbnail", "image/png"))
    await attachments.put(MANUAL_KEY, Attachment(b"%PDF manual", "application/pdf"))
    packages = MemoryPackageStore()
    package_a = [store.shell(SHELL_A), store.submodel(SM_A_NAMEPLATE)]  # all of it in the operator's scope
    await packages.put(StoredPackage(PACKAGE_A, "a.aasx", write_package(package_a, {}, "aasx"), (SHELL_A,)))
    app = create_app(
        store,
        middlewares=[access_middleware(control)],
        attachments=attachments,
        packages=packages,
        history=RecordedTemperature(),
    )
    client: Client = TestClient(TestServer(app))
    async with client:
        yield Served(client, store, attachments, packages, control)
    await control.aclose()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for running in _serve(tmp_path):
        yield running


def b64(text: str) -> str:
    return encode_identifier(text)


def sm(submodel_id: str, rest: str = "") -> str:
    return f"{API}/submodels/{b64(submodel_id)}{rest}"


def element(submodel_id: str, path: str, rest: str = "") -> str:
    return sm(submodel_id, f"/submodel-elements/{path}{rest}")


# --- the role x operation matrix ---------------------------------------------------------------


Body = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One route with a request that succeeds for ``allowed`` and one for the same route on shell B."""

    method: str
    url: str
    allowed: str
    statuses: tuple[int, ...]
    json: Body | None = None
    form: Callable[[], aiohttp.FormData] | None = None
    data: Body | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    other_shell_url: str | None = None
    """The same route on a shell-B object: the operator (rules for shell A only) is refused."""
    wrong_role: str | None = None
    """A caller authenticated but without the operation; by default ``nobody`` for reads, ``viewer`` otherwise."""

    @property
    def name(self) -> str:
        return f"{self.method} {self.url.removeprefix(API)}"


def _upload(name: str, content: bytes, content_type: str) -> Callable[[], aiohttp.FormData]:
    def build() -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("file", content, filename=name, content_type=content_type)
        form.add_field("fileName", name)
        return form

    return build


def _new_shell() -> Any:
    return json.loads(dumps(to_json_object(_shell(SHELL_NEW, "NewShell", []))))


def _shell_a_json() -> Any:
    shell = json.loads(dumps(to_json_object(build_store().shell(SHELL_A))))
    return {**shell, "idShort": "ShellA2"}


def _submodel_a_json() -> Any:
    submodel = json.loads(dumps(to_json_object(build_store().submodel(SM_A))))
    return {**submodel, "idShort": "Renamed"}


INVOKE_BODY = {
    "inputArguments": [{"value": {"modelType": "Property", "idShort": "Speed", "valueType": "xs:double", "value": "5"}}]
}

S_A, S_B = b64(SHELL_A), b64(SHELL_B)
OK, CREATED, NO_CONTENT = (200,), (201,), (204,)

CASES: list[Case] = [
    # AAS Repository and AAS interfaces
    Case("GET", f"{API}/shells", "viewer", OK),
    Case("GET", f"{API}/shells/$reference", "viewer", OK),
    Case("POST", f"{API}/shells", "admin", CREATED, json=_new_shell),
    Case("GET", f"{API}/shells/{S_A}", "viewer", OK, other_shell_url=f"{API}/shells/{S_B}"),
    Case("PUT", f"{API}/shells/{S_A}", "admin", NO_CONTENT, json=_shell_a_json),
    Case("PUT", f"{API}/shells/{b64(SHELL_NEW)}", "admin", CREATED, json=_new_shell),
    Case("DELETE", f"{API}/shells/{S_A}", "admin", NO_CONTENT, other_shell_url=f"{API}/shells/{S_B}"),
    Case("GET", f"{API}/shells/{S_A}/$reference", "viewer", OK, other_shell_url=f"{API}/shells/{S_B}/$reference"),
    Case(
        "GET",
        f"{API}/shells/{S_A}/asset-information",
        "operator",
        OK,
        other_shell_url=f"{API}/shells/{S_B}/asset-information",
    ),
    Case(
        "PUT",
        f"{API}/shells/{S_A}/asset-information",
        "admin",
        NO_CONTENT,
        json=lambda: {"assetKind": "Type", "globalAssetId": "urn:test:asset:changed"},
    ),
    Case("GET", f"{API}/shells/{S_A}/asset-information/thumbnail", "viewer", OK),
    Case(
        "PUT",
        f"{API}/shells/{S_A}/asset-information/thumbnail",
        "admin",
        NO_CONTENT,
        form=_upload("new.png", b"\x89PNG new", "image/png"),
    ),
    Case("DELETE", f"{API}/shells/{S_A}/asset-information/thumbnail", "admin", OK),
    Case(
        "GET", f"{API}/shells/{S_A}/submodel-refs", "operator", OK, other_shell_url=f"{API}/shells/{S_B}/submodel-refs"
    ),
    Case(
        "POST",
        f"{API}/shells/{S_A}/submodel-refs",
        "admin",
        CREATED,
        json=lambda: {"type": "ModelReference", "keys": [{"type": "Submodel", "value": SM_B}]},
    ),
    Case("DELETE", f"{API}/shells/{S_A}/submodel-refs/{b64(SM_A_NAMEPLATE)}", "admin", NO_CONTENT),
    # Submodel Repository
    Case("GET", f"{API}/submodels", "viewer", OK),
    Case("GET", f"{API}/submodels/$metadata", "viewer", OK),
    Case("GET", f"{API}/submodels/$value", "viewer", OK),
    Case("GET", f"{API}/submodels/$reference", "viewer", OK),
    Case("GET", f"{API}/submodels/$path", "viewer", OK),
    Case(
        "POST",
        f"{API}/submodels",
        "admin",
        CREATED,
        json=lambda: {"modelType": "Submodel", "id": "urn:test:sm:new", "idShort": "New"},
    ),
    # Submodel interface
    Case("GET", sm(SM_A), "operator", OK, other_shell_url=sm(SM_B)),
    Case(
        "GET",
        f"{API}/shells/{S_A}/submodels/{b64(SM_A)}",
        "operator",
        OK,
        other_shell_url=f"{API}/shells/{S_B}/submodels/{b64(SM_B)}",
    ),
    Case("PUT", sm(SM_A), "admin", NO_CONTENT, json=_submodel_a_json),
    Case("PATCH", sm(SM_A), "admin", NO_CONTENT, json=lambda: {"idShort": "Renamed"}),
    Case("DELETE", sm(SM_A), "admin", NO_CONTENT, other_shell_url=sm(SM_B)),
    Case("GET", sm(SM_A, "/$metadata"), "operator", OK, other_shell_url=sm(SM_B, "/$metadata")),
    Case("PATCH", sm(SM_A, "/$metadata"), "admin", NO_CONTENT, json=lambda: {"category": "PARAMETER"}),
    Case("GET", sm(SM_A, "/$value"), "operator", OK, other_shell_url=sm(SM_B, "/$value")),
    Case(
        "PATCH",
        sm(SM_A, "/$value"),
        "operator",
        NO_CONTENT,
        json=lambda: {"Setpoint": 61.0},
        other_shell_url=sm(SM_B, "/$value"),
    ),
    Case("GET", sm(SM_A, "/$reference"), "viewer", OK, other_shell_url=sm(SM_B, "/$reference")),
    Case("GET", sm(SM_A, "/$path"), "viewer", OK, other_shell_url=sm(SM_B, "/$path")),
    Case("GET", sm(SM_A, "/submodel-elements"), "operator", OK, other_shell_url=sm(SM_B, "/submodel-elements")),
    Case("GET", sm(SM_A, "/submodel-elements/$metadata"), "viewer", OK),
    Case("GET", sm(SM_A, "/submodel-elements/$value"), "viewer", OK),
    Case("GET", sm(SM_A, "/submodel-elements/$reference"), "viewer", OK),
    Case("GET", sm(SM_A, "/submodel-elements/$path"), "viewer", OK),
    Case(
        "POST",
        sm(SM_A, "/submodel-elements"),
        "admin",
        CREATED,
        json=lambda: {"modelType": "Property", "idShort": "Added", "valueType": "xs:int", "value": "1"},
    ),
    # elements
    Case("GET", element(SM_A, "Temperature"), "operator", OK, other_shell_url=element(SM_B, "Temperature")),
    Case(
        "PUT",
        element(SM_A, "Setpoint"),
        "admin",
        NO_CONTENT,
        json=lambda: {"modelType": "Property", "idShort": "Setpoint", "valueType": "xs:double", "value": "1.5"},
    ),
    Case("PATCH", element(SM_A, "Setpoint"), "admin", NO_CONTENT, json=lambda: {"category": "PARAMETER"}),
    Case(
        "POST",
        element(SM_A, "Status"),
        "admin",
        CREATED,
        json=lambda: {"modelType": "Property", "idShort": "Added", "valueType": "xs:int", "value": "1"},
    ),
    Case("DELETE", element(SM_A, "Setpoint"), "admin", NO_CONTENT, other_shell_url=element(SM_B, "Setpoint")),
    Case("GET", element(SM_A, "Temperature", "/$metadata"), "viewer", OK),
    Case(
        "PATCH", element(SM_A, "Temperature", "/$metadata"), "admin", NO_CONTENT, json=lambda: {"category": "PARAMETER"}
    ),
    Case(
        "GET",
        element(SM_A, "Temperature", "/$value"),
        "operator",
        OK,
        other_shell_url=element(SM_B, "Temperature", "/$value"),
    ),
    Case(
        "PATCH",
        element(SM_A, "Setpoint", "/$value"),
        "operator",
        NO_CONTENT,
        json=lambda: 55.5,
        other_shell_url=element(SM_B, "Setpoint", "/$value"),
    ),
    Case("GET", element(SM_A, "Temperature", "/$reference"), "viewer", OK),
    Case("GET", element(SM_A, "Status", "/$path"), "viewer", OK),
    Case("GET", element(SM_A, "Manual", "/attachment"), "viewer", OK),
    Case(
        "PUT",
        element(SM_A, "Manual", "/attachment"),
        "admin",
        NO_CONTENT,
        form=_upload("manual2.pdf", b"%PDF new", "application/pdf"),
    ),
    Case("DELETE", element(SM_A, "Manual", "/attachment"), "admin", OK),
    Case("POST", element(SM_A, "Start", "/invoke"), "operator", OK, json=lambda: INVOKE_BODY),
    Case(
        "POST",
        element(SM_A, "Start", "/invoke/$value"),
        "operator",
        OK,
        json=lambda: {"inputArguments": {"Speed": 5.0}},
    ),
    Case("POST", element(SM_A, "Start", "/invoke-async"), "operator", (202,), json=lambda: INVOKE_BODY),
    Case(
        "POST",
        element(SM_A, "Start", "/invoke-async/$value"),
        "operator",
        (202,),
        json=lambda: {"inputArguments": {"Speed": 5.0}},
    ),
    Case("GET", element(SM_A, "Start", "/operation-status/{handle}"), "operator", (200, 302), wrong_role="viewer"),
    Case("GET", element(SM_A, "Start", "/operation-results/{handle}"), "operator", OK, wrong_role="viewer"),
    Case("GET", element(SM_A, "Start", "/operation-results/{handle}/$value"), "operator", OK, wrong_role="viewer"),
    Case(
        "GET",
        element(SM_A, "Temperature", "/history"),
        "operator",
        OK,
        other_shell_url=element(SM_B, "Temperature", "/history"),
    ),
    # Concept Description Repository
    Case("GET", f"{API}/concept-descriptions", "viewer", OK),
    Case(
        "POST",
        f"{API}/concept-descriptions",
        "admin",
        CREATED,
        json=lambda: {"modelType": "ConceptDescription", "id": "urn:test:cd:new"},
    ),
    Case("GET", f"{API}/concept-descriptions/{b64(CD)}", "viewer", OK),
    Case(
        "PUT",
        f"{API}/concept-descriptions/{b64(CD)}",
        "admin",
        NO_CONTENT,
        json=lambda: {"modelType": "ConceptDescription", "id": CD, "category": "PROPERTY"},
    ),
    Case("DELETE", f"{API}/concept-descriptions/{b64(CD)}", "admin", NO_CONTENT),
    # AASX File Server, serialization, description, RDF
    Case("GET", f"{API}/packages", "viewer", OK),
    Case(
        "POST",
        f"{API}/packages",
        "admin",
        CREATED,
        form=_upload("new.aasx", _aasx("urn:test:aas:uploaded"), "application/asset-administration-shell-package"),
    ),
    Case("GET", f"{API}/packages/{b64(PACKAGE_A)}", "operator", OK),
    Case(
        "PUT",
        f"{API}/packages/{b64(PACKAGE_A)}",
        "admin",
        NO_CONTENT,
        form=_upload("a.aasx", _aasx("urn:test:aas:replaced"), "application/asset-administration-shell-package"),
    ),
    Case("DELETE", f"{API}/packages/{b64(PACKAGE_A)}", "admin", NO_CONTENT),
    Case("GET", f"{API}/serialization", "viewer", OK),
    Case(
        "GET",
        f"{API}/serialization?aasIds={S_A}&submodelIds={b64(SM_A_NAMEPLATE)}",  # SM_A holds what it may not read
        "operator",
        OK,
        other_shell_url=f"{API}/serialization?aasIds={S_B}",
    ),
    # the viewer may not read the secret, so it may not export the whole graph either
    Case("GET", f"{API}/rdf", "admin", OK),
    Case(
        "GET",
        f"{API}/sparql?query=ASK%20%7B%20%3Fs%20%3Fp%20%3Fo%20%7D",
        "admin",
        OK,
        headers={"Accept": "application/sparql-results+json"},
    ),
    Case(
        "POST",
        f"{API}/sparql",
        "admin",
        OK,
        data=lambda: b"ASK { ?s ?p ?o }",
        headers={"Content-Type": "application/sparql-query", "Accept": "application/sparql-results+json"},
        wrong_role="nobody",
    ),
]


async def _send(served: Served, case: Case, url: str, headers: Mapping[str, str]) -> aiohttp.ClientResponse:
    kwargs: dict[str, Any] = {"headers": {**case.headers, **headers}, "allow_redirects": False}
    if case.json is not None:
        kwargs["json"] = case.json()
    if case.form is not None:
        kwargs["data"] = case.form()
    if case.data is not None:
        kwargs["data"] = case.data()
    return await served.client.request(case.method, url, **kwargs)


async def _prepare(served: Served, url: str) -> str:
    """Fill in ``{handle}`` with the handle of an asynchronous invocation made beforehand."""
    if "{handle}" not in url:
        return url
    started = await served.client.post(
        element(SM_A, "Start", "/invoke-async"), json=INVOKE_BODY, headers=PRINCIPALS["admin"]()
    )
    assert started.status == 202, await started.text()
    handle = started.headers["Location"].rsplit("/", 1)[1]
    return url.replace("{handle}", handle)


async def _refused(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    body = json.loads(text)
    message = body["messages"][0]
    assert message["code"] == ("Unauthorized" if status == 401 else "Forbidden")
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for secret in (HS256_SECRET, "viewer-key", "guessed-key"):
        assert secret not in text
    result: dict[str, Any] = message
    return result


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_every_route_refuses_wrong_callers_without_changing_anything_and_serves_the_right_one(
    tmp_path: Path, case: Case
) -> None:
    async for served in _serve(tmp_path):
        url = await _prepare(served, case.url)
        before = await served.snapshot()
        for name, credentials in INVALID.items():
            response = await _send(served, case, url, credentials())
            await _refused(response, 401)
            assert await served.snapshot() == before, f"{name} changed the model"
        wrong_role = case.wrong_role or ("nobody" if case.method == "GET" else "viewer")
        response = await _send(served, case, url, PRINCIPALS[wrong_role]())
        await _refused(response, 403)
        assert await served.snapshot() == before, f"{wrong_role} changed the model"
        if case.other_shell_url is not None:
            response = await _send(served, case, case.other_shell_url, PRINCIPALS["operator"]())
            await _refused(response, 403)
            assert await served.snapshot() == before, "the operator changed shell B"
        response = await _send(served, case, url, PRINCIPALS[case.allowed]())
        assert response.status in case.statuses, await response.text()
        if case.method != "GET" and "/invoke" not in url and "/sparql" not in url:
            assert await served.snapshot() != before, "the allowed write changed nothing"


async def test_the_matrix_covers_every_route_and_every_route_has_exactly_one_operation(tmp_path: Path) -> None:
    app = create_app(TwinStore(), history=RecordedTemperature())
    registered: set[str] = set()
    for resource in app.router.resources():
        if isinstance(resource, ApiResource):
            registered.update(route_name(route.handler) for route in resource)
    # the alarm routes exist only on a hub with monitoring rules; tests/test_alarms_rest.py checks their access
    # (the simulation routes only with a simulation service; tests/test_simulation_rest.py checks theirs)
    alarm_routes = {name for name in ROUTE_ACCESS if name.startswith(("alarms.", "simulations."))}
    assert registered == set(ROUTE_ACCESS) - alarm_routes
    covered: set[str] = set()
    for case in CASES:
        request = make_mocked_request(case.method, case.url.replace("{handle}", "h"), app=app)
        match_info = await app.router.resolve(request)
        assert match_info.http_exception is None, case.name
        covered.add(route_name(match_info.handler))
    assert covered == set(ROUTE_ACCESS) - {"description.get_description"} - alarm_routes


async def test_description_is_public_but_bad_credentials_are_still_refused(served: Served) -> None:
    response = await served.client.get(f"{API}/description")
    assert response.status == 200
    assert "profiles" in await response.json()
    await _refused(await served.client.get(f"{API}/description", headers=INVALID["forged token"]()), 401)


async def test_a_caller_sending_both_a_token_and_a_key_is_refused(served: Served) -> None:
    headers = {**PRINCIPALS["operator"](), **PRINCIPALS["viewer"]()}
    message = await _refused(await served.client.get(f"{API}/shells", headers=headers), 401)
    assert "not both" in message["text"]


async def test_messages_say_which_token_check_failed(served: Served) -> None:
    expected = {
        "expired token": "expired",
        "forged token": "signature",
        "wrong issuer": "issuer",
        "wrong audience": "audience",
        "unknown API key": "API key",
        "unsigned token": "algorithm",
    }
    for name, fragment in expected.items():
        message = await _refused(await served.client.get(f"{API}/shells", headers=INVALID[name]()), 401)
        assert fragment in message["text"], (name, message["text"])


# --- list filtering -------------------------------------------------------------------------------


async def _json(served: Served, url: str, principal: str) -> Any:
    response = await served.client.get(url, headers=PRINCIPALS[principal]())
    assert response.status == 200, await response.text()
    return await response.json()


async def _all_pages(served: Served, url: str, principal: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await _json(served, f"{url}?limit=1" + (f"&cursor={cursor}" if cursor else ""), principal)
        assert len(page["result"]) <= 1
        items.extend(page["result"])
        cursor = page["paging_metadata"].get("cursor")
        if cursor is None:
            return items


async def test_a_caller_limited_to_one_shell_lists_only_that_shell_and_its_submodels(served: Served) -> None:
    shells = await _json(served, f"{API}/shells", "operator")
    assert [shell["id"] for shell in shells["result"]] == [SHELL_A]
    assert [shell["id"] for shell in await _all_pages(served, f"{API}/shells", "operator")] == [SHELL_A]
    submodels = await _all_pages(served, f"{API}/submodels", "operator")
    assert sorted(submodel["id"] for submodel in submodels) == sorted([SM_A, SM_A_NAMEPLATE])
    references = await _json(served, f"{API}/submodels/$reference", "operator")
    assert sorted(reference["keys"][0]["value"] for reference in references["result"]) == sorted([SM_A, SM_A_NAMEPLATE])
    assert (await _json(served, f"{API}/concept-descriptions", "operator"))["result"] == []
    packages = await _json(served, f"{API}/packages", "operator")
    assert [package["packageId"] for package in packages["result"]] == [PACKAGE_A]
    everything = await _json(served, f"{API}/shells", "viewer")
    assert sorted(shell["id"] for shell in everything["result"]) == sorted([SHELL_A, SHELL_B])


async def test_a_caller_limited_to_a_semantic_id_sees_only_those_elements(served: Served) -> None:
    submodels = await _all_pages(served, f"{API}/submodels", "semantic")
    assert sorted(submodel["id"] for submodel in submodels) == sorted([SM_A, SM_B])
    for submodel in submodels:
        assert [item["idShort"] for item in submodel["submodelElements"]] == ["Temperature"]
    values = await _json(served, f"{API}/submodels/$value", "semantic")
    assert values["result"] == [{"Temperature": 21.5}, {"Temperature": 21.5}]
    elements = await _json(served, sm(SM_A, "/submodel-elements"), "semantic")
    assert [item["idShort"] for item in elements["result"]] == ["Temperature"]
    assert await _json(served, sm(SM_A, "/$value"), "semantic") == {"Temperature": 21.5}
    assert await _json(served, sm(SM_A, "/$path"), "semantic") == ["Temperature"]
    assert (await _json(served, f"{API}/shells", "semantic"))["result"] == []
    refused = await served.client.get(element(SM_A, "Setpoint", "/$value"), headers=PRINCIPALS["semantic"]())
    await _refused(refused, 403)


async def test_a_denied_element_is_left_out_of_every_form_that_would_show_it(served: Served) -> None:
    status = await _json(served, element(SM_A, "Status"), "viewer")
    assert [item["idShort"] for item in status["value"]] == ["Mode"]
    assert await _json(served, element(SM_A, "Status", "/$value"), "viewer") == {"Status": {"Mode": "auto"}}
    assert await _json(served, element(SM_A, "Status", "/$path"), "viewer") == ["Status", "Status.Mode"]
    whole = await _json(served, sm(SM_A, "/$value"), "viewer")
    assert whole["Status"] == {"Mode": "auto"}
    assert "s3cret" not in json.dumps(await _json(served, sm(SM_A), "viewer"))
    deep_paths = await _json(served, sm(SM_A, "/submodel-elements/$path") + "?level=deep", "viewer")
    assert "Status.Secret" not in deep_paths["result"]
    assert "Status.Mode" in deep_paths["result"]
    await _refused(await served.client.get(element(SM_A, "Status.Secret"), headers=PRINCIPALS["viewer"]()), 403)
    assert "s3cret" in json.dumps(await _json(served, sm(SM_A), "admin"))


async def test_serialization_holds_only_what_the_caller_may_export(served: Served) -> None:
    environment = await _json(served, f"{API}/serialization", "operator")
    assert [shell["id"] for shell in environment["assetAdministrationShells"]] == [SHELL_A]
    # SM_A holds Status.Secret, which a deny rule keeps the operator from reading: an export is a read too
    assert [submodel["id"] for submodel in environment["submodels"]] == [SM_A_NAMEPLATE]
    assert "s3cret" not in json.dumps(environment)
    assert "conceptDescriptions" not in environment
    await _refused(await served.client.get(f"{API}/rdf", headers=PRINCIPALS["operator"]()), 403)
    full = await _json(served, f"{API}/serialization", "viewer")
    assert len(full["assetAdministrationShells"]) == 2
    assert len(full["conceptDescriptions"]) == 1


# --- audit ----------------------------------------------------------------------------------------


async def test_writes_and_denials_are_in_the_audit_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aas_server.audit")
    async for served in _serve(tmp_path):
        client = served.client
        written = await client.patch(element(SM_A, "Setpoint", "/$value"), json=58.0, headers=PRINCIPALS["operator"]())
        assert written.status == 204
        mismatched = await client.patch(
            element(SM_A, "Setpoint", "/$value"), json="hot", headers=PRINCIPALS["operator"]()
        )
        assert mismatched.status == 400
        denied = await client.delete(sm(SM_B), headers=PRINCIPALS["viewer"]())
        assert denied.status == 403
        anonymous = await client.delete(sm(SM_B))
        assert anonymous.status == 401
        read = await client.get(f"{API}/shells", headers=PRINCIPALS["viewer"]())
        assert read.status == 200
        control = served.control
    await control.aclose()
    lines = [json.loads(line) for line in (tmp_path / "data" / "audit.log").read_text().splitlines()]
    assert [(line["method"], line["status"]) for line in lines] == [
        ("PATCH", 204),
        ("PATCH", 400),
        ("DELETE", 403),
        ("DELETE", 401),
    ]
    first = lines[0]
    assert (first["principal"], first["principalKind"], first["roles"]) == ("alice", "token", ["operator-a"])
    assert first["operation"] == "write-value"
    assert first["target"] == f"submodel {SM_A!r} element 'Setpoint'"
    assert first["path"].endswith("/submodel-elements/Setpoint/$value")
    assert first["time"].endswith("Z")
    assert (lines[2]["principal"], lines[2]["reason"]) == ("viewer", "no rule allows it")
    assert lines[3]["principalKind"] == "anonymous"
    assert any(record.name == "aas_server.audit" and "DELETE" in record.getMessage() for record in caplog.records)


# --- settings: anonymous role, the demo, access control off ------------------------------------


async def test_the_demo_lets_anyone_read_and_the_operator_key_write(tmp_path: Path) -> None:
    demo = load_settings(ROOT / "examples" / "bottling-line" / "hub.yaml")
    control = AccessControl.from_settings(demo.model_copy(update={"data_dir": tmp_path}), {})
    store = TwinStore()
    store.add_all(load_model_files(demo.twins))
    submodel_id = "urn:aas-server:demo:sm:filler-motor:operational-data"
    url = element(submodel_id, "SpeedSetpoint", "/$value")
    client: Client = TestClient(TestServer(create_app(store, middlewares=[access_middleware(control)])))
    async with client:
        assert (await client.get(f"{API}/shells")).status == 200
        assert (await client.get(url)).status == 200
        assert (await client.get(f"{API}/rdf")).status == 200
        await _refused(await client.patch(url, json=1200.0), 401)
        await _refused(await client.delete(sm(submodel_id)), 401)
        operator = api_key("demo-operator-key")
        assert (await client.patch(url, json=1200.0, headers=operator)).status == 204
        await _refused(await client.delete(sm(submodel_id), headers=operator), 403)
    await control.aclose()
    assert store.element(submodel_id, "SpeedSetpoint").value == 1200.0  # type: ignore[attr-defined]


async def test_a_hub_with_access_control_off_warns_serves_everyone_and_audits_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = HubSettings.model_validate({"data_dir": str(tmp_path), "security": {"enabled": False}})
    with caplog.at_level(logging.WARNING, logger="aas_server.security"):
        control = AccessControl.from_settings(settings, {})
    assert any("access control is off" in record.getMessage() for record in caplog.records)
    client: Client = TestClient(TestServer(create_app(build_store(), middlewares=[access_middleware(control)])))
    async with client:
        assert (await client.patch(element(SM_A, "Setpoint", "/$value"), json=1.0)).status == 204
        assert (await client.get(f"{API}/shells")).status == 200
    await control.aclose()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["principalKind"] for line in lines] == ["open"]


async def test_a_hub_without_credentials_answers_401_to_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = HubSettings.model_validate({"data_dir": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="aas_server.security"):
        control = AccessControl.from_settings(settings, {})
    assert any("every REST request is answered 401" in record.getMessage() for record in caplog.records)
    client: Client = TestClient(TestServer(create_app(build_store(), middlewares=[access_middleware(control)])))
    async with client:
        await _refused(await client.get(f"{API}/shells"), 401)
    await control.aclose()


# --- OPC UA users under the same rules -------------------------------------------------------------


OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)


async def test_opcua_writes_follow_the_rules_of_the_users_role(tmp_path: Path) -> None:
    control = AccessControl.from_settings(hub_settings(tmp_path), {SECRET_ENV: HS256_SECRET})
    store = build_store()
    opcua = OpcUaSettings(port=0, users=[OPERATOR, VIEWER], security_policies=[SecurityPolicyName.NONE])
    async with OpcUaProjection(store, opcua, tmp_path / "opcua", access=control) as projection:
        client = OpcUaClient(projection.endpoint_url, timeout=5)
        client.set_user(OPERATOR.name)
        client.set_password(OPERATOR.password.get_secret_value())
        async with client:

            def node(submodel_id: str, path: str) -> Any:
                return client.get_node(
                    ua.NodeId(ua.String(node_id_for(submodel_id, path)), ua.Int16(projection.namespace_index))
                )

            await node(SM_A, "Setpoint").write_value(ua.DataValue(ua.Variant(42.0, ua.VariantType.Double)))
            with pytest.raises(UaStatusCodeError) as other_submodel:
                await node(SM_B, "Setpoint").write_value(ua.DataValue(ua.Variant(43.0, ua.VariantType.Double)))
            assert other_submodel.value.code == StatusCodes.BadUserAccessDenied
            with pytest.raises(UaStatusCodeError) as denied_path:
                await node(SM_A, "Status.Mode").write_value(ua.DataValue(ua.Variant("manual", ua.VariantType.String)))
            assert denied_path.value.code == StatusCodes.BadUserAccessDenied
    await control.aclose()
    assert store.element(SM_A, "Setpoint").value == 42.0  # type: ignore[attr-defined]
    assert store.element(SM_B, "Setpoint").value == 50.0  # type: ignore[attr-defined]
    assert store.element(SM_A, "Status.Mode").value == "auto"  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in (tmp_path / "data" / "audit.log").read_text().splitlines()]
    assert [(line["principal"], line["status"]) for line in lines] == [
        ("olga", "Good"),
        ("olga", "BadUserAccessDenied"),
        ("olga", "BadUserAccessDenied"),
    ]
    assert lines[2]["reason"] == "denied by security.rules[6]"


# --- aas-server check -----------------------------------------------------------------------------


def _write_settings(tmp_path: Path, security: dict[str, Any]) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(json.dumps({"data_dir": "data", "security": security}), encoding="utf-8")
    return path


def test_check_reports_rule_problems_with_their_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AAS_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("AAS_TEST_UNSET_SECRET", raising=False)
    path = _write_settings(
        tmp_path,
        {
            "api_keys": [
                {"name": "ops", "roles": ["operator"], "key_env": "AAS_TEST_UNSET_KEY"},
                {"name": "ops", "roles": ["viewer"], "sha256": _sha256("x")},
            ],
            "tokens": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["HS256", "RS256"],
                "hs256_secret_env": "AAS_TEST_UNSET_SECRET",
                "rs256_public_key": "missing.pem",
            },
            "rules": [
                {"roles": ["viewer"], "operations": ["read"]},
                {"roles": ["operater"], "operations": ["write-value"], "paths": ["Status/*", ""]},
            ],
        },
    )
    with pytest.raises(ConfigurationError) as raised:
        check_file(path)
    text = str(raised.value)
    for expected in (
        "security.rules[1].roles[0]: role 'operater'",
        "security.rules[1].paths[0]: 'Status/*' is not an idShort path glob",
        "security.rules[1].paths[1]: an empty pattern",
        "security.api_keys[1].name: 'ops' is also api_keys[0]",
        "security.api_keys[0].key_env: environment variable AAS_TEST_UNSET_KEY is not set",
        "security.tokens.hs256_secret_env: environment variable AAS_TEST_UNSET_SECRET is not set",
        "security.tokens.rs256_public_key: cannot read",
    ):
        assert expected in text, text
    assert all(line.startswith(f"{path}: security.") for line in text.splitlines())


def test_check_names_an_unknown_operation_and_accepts_good_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_settings(tmp_path, {"rules": [{"roles": ["viewer"], "operations": ["read", "erase"]}]})
    assert main(["check", str(bad)]) == 2
    assert "security.rules[0].operations[1]" in capsys.readouterr().err
    good = _write_settings(
        tmp_path, {"anonymous_role": "viewer", "rules": [{"roles": ["viewer"], "operations": ["*"]}]}
    )
    assert main(["check", str(good)]) == 0
    assert "access control on" in capsys.readouterr().out


# --- the rule engine on its own -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("urn:test:aas:*", "urn:test:aas:A", True),
        ("urn:test:aas:?", "urn:test:aas:AB", False),
        ("Readings[0]", "Readings[0]", True),
        ("Readings[0]", "Readings0", False),
        ("*Temp*", "Status.Temperature", True),
        ("a*a*a*a*a*b", "a" * 2000, False),
        ("", "", True),
    ],
)
def test_globs_know_only_star_and_question_mark(pattern: str, text: str, matches: bool) -> None:
    assert glob_matches(pattern, text) is matches


def test_a_list_with_a_hidden_item_is_left_out_whole_and_a_path_rule_covers_what_lies_below() -> None:
    store = build_store()
    policy = AccessPolicy(
        [
            AccessRule(roles=["reader"], operations=[AccessOperation.READ]),
            AccessRule(roles=["reader"], operations=[AccessOperation.READ], paths=["Readings[1]"], effect="deny"),
            AccessRule(roles=["status"], operations=[AccessOperation.READ], paths=["Status"]),
        ]
    )
    access = ModelAccess(store, policy)
    reader = access.scope(frozenset({"reader"}), AccessOperation.READ, SM_A)
    assert reader.kind is ScopeKind.PARTIAL
    assert not ({"Readings", "Readings[0]", "Readings[1]"} & reader.kept)
    pruned = access.pruned_submodel(SM_A, reader)
    assert [element.id_short for element in pruned.submodel_element] == [
        "Temperature",
        "Setpoint",
        "Status",
        "Manual",
        "Start",
    ]
    assert len(store.submodel(SM_A).submodel_element) == 6
    status = access.scope(frozenset({"status"}), AccessOperation.READ, SM_A)
    assert status.kept == {"Status", "Status.Mode", "Status.Secret"}
    assert access.scope(frozenset({"status"}), AccessOperation.READ, SM_A, "Status.Mode").kind is ScopeKind.ALL
    assert access.scope(frozenset({"status"}), AccessOperation.READ, SM_A, "Setpoint").kind is ScopeKind.NONE
    assert access.scope(frozenset({"status"}), AccessOperation.UPDATE, SM_A, "Status").kind is ScopeKind.NONE

"""No widening of one's own scope, over the hub's real REST endpoint on loopback (issue 11, finding 4).

A role whose rules are scoped by shell covers the submodels those shells reference. Adding or
removing a reference, and creating, replacing or deleting a shell, must not give the caller rights
it does not have on the referenced submodel itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aas_server.config import HubSettings
from tests.test_access import (
    API,
    PRINCIPALS,
    RULES,
    SEM_TEMPERATURE,
    SHELL_A,
    SHELL_B,
    SM_A,
    SM_A_NAMEPLATE,
    SM_B,
    Served,
    _refused,
    _serve,
    _sha256,
    b64,
    element,
    security_section,
    sm,
)

FILLER_GLOB = "urn:test:aas:A*"
SHELL_EVIL = "urn:test:aas:A-evil"
SHELL_A2 = "urn:test:aas:A2"

SCOPE_RULES: list[dict[str, Any]] = [
    # everything, but only on shells urn:test:aas:A* (and the submodels they reference)
    {"roles": ["filler"], "operations": ["*"], "shells": [FILLER_GLOB]},
    # values of every submodel and the shells' references, but no values of shell B's submodels
    {"roles": ["maintainer"], "operations": ["read", "write-value"], "submodels": ["urn:test:sm:*"]},
    {"roles": ["maintainer"], "operations": ["read", "update", "delete"], "shells": ["urn:test:aas:*"]},
    {"roles": ["maintainer"], "operations": ["write-value"], "shells": [SHELL_B], "effect": "deny"},
]

KEYS = {"filler-key": "filler", "maintainer-key": "maintainer"}


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


FILLER = _headers("filler-key")
MAINTAINER = _headers("maintainer-key")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    section = security_section(tmp_path)
    section["api_keys"] = [
        *section["api_keys"],
        *({"name": key.removesuffix("-key"), "roles": [role], "sha256": _sha256(key)} for key, role in KEYS.items()),
    ]
    section["rules"] = [*RULES, *SCOPE_RULES]
    settings = HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section})
    async for running in _serve(tmp_path, settings):
        yield running


def _reference(submodel_id: str) -> dict[str, Any]:
    return {"type": "ModelReference", "keys": [{"type": "Submodel", "value": submodel_id}]}


def _shell(shell_id: str, submodels: list[str]) -> dict[str, Any]:
    return {
        "modelType": "AssetAdministrationShell",
        "id": shell_id,
        "idShort": "Shell",
        "assetInformation": {"assetKind": "Instance", "globalAssetId": f"{shell_id}:asset"},
        "submodels": [_reference(submodel_id) for submodel_id in submodels],
    }


async def _write_setpoint(served: Served, submodel_id: str, headers: dict[str, str], value: float) -> int:
    response = await served.client.patch(element(submodel_id, "Setpoint", "/$value"), json=value, headers=headers)
    await response.read()
    return response.status


def _setpoint(served: Served, submodel_id: str) -> Any:
    return served.store.element(submodel_id, "Setpoint").value  # type: ignore[attr-defined]


async def _denied(response: aiohttp.ClientResponse, *fragments: str) -> None:
    message = await _refused(response, 403)
    for fragment in fragments:
        assert fragment in message["text"], message["text"]


async def test_a_shell_scoped_role_cannot_pull_another_submodel_into_its_shell(served: Served) -> None:
    client = served.client
    assert await _write_setpoint(served, SM_A, FILLER, 61.0) == 204
    assert await _write_setpoint(served, SM_B, FILLER, 62.0) == 403
    added = await client.post(f"{API}/shells/{b64(SHELL_A)}/submodel-refs", json=_reference(SM_B), headers=FILLER)
    await _denied(added, repr(SM_B), "write-value")
    assert SM_B not in json.dumps(await (await client.get(f"{API}/shells/{b64(SHELL_A)}", headers=FILLER)).json())
    assert await _write_setpoint(served, SM_B, FILLER, 62.0) == 403
    assert _setpoint(served, SM_B) == 50.0
    assert _setpoint(served, SM_A) == 61.0


async def test_a_shell_scoped_role_cannot_create_or_replace_a_shell_to_reach_another_submodel(
    served: Served,
) -> None:
    client = served.client
    created = await client.put(f"{API}/shells/{b64(SHELL_EVIL)}", json=_shell(SHELL_EVIL, [SM_B]), headers=FILLER)
    await _denied(created, repr(SM_B))
    assert (await client.get(f"{API}/shells/{b64(SHELL_EVIL)}", headers=PRINCIPALS["admin"]())).status == 404
    replaced = await client.put(
        f"{API}/shells/{b64(SHELL_A)}", json=_shell(SHELL_A, [SM_A, SM_A_NAMEPLATE, SM_B]), headers=FILLER
    )
    await _denied(replaced, repr(SM_B))
    assert await _write_setpoint(served, SM_B, FILLER, 63.0) == 403
    assert _setpoint(served, SM_B) == 50.0
    assert {reference.key[0].value for reference in served.store.shell(SHELL_A).submodel} == {SM_A, SM_A_NAMEPLATE}


async def test_a_reference_to_a_submodel_that_does_not_exist_yet_cannot_claim_it(served: Served) -> None:
    client = served.client
    future = "urn:test:sm:created-later"
    claimed = await client.post(f"{API}/shells/{b64(SHELL_A)}/submodel-refs", json=_reference(future), headers=FILLER)
    await _denied(claimed, repr(future))
    submodel = {"modelType": "Submodel", "id": future, "idShort": "Later"}
    created = await client.put(f"{API}/submodels/{b64(future)}", json=submodel, headers=PRINCIPALS["admin"]())
    assert created.status == 201, await created.text()
    assert (await client.get(f"{API}/submodels/{b64(future)}", headers=FILLER)).status == 403


async def test_references_within_the_callers_own_scope_still_work(served: Served) -> None:
    client = served.client
    created = await client.put(f"{API}/shells/{b64(SHELL_A2)}", json=_shell(SHELL_A2, [SM_A]), headers=FILLER)
    assert created.status == 201, await created.text()
    removed = await client.delete(f"{API}/shells/{b64(SHELL_A)}/submodel-refs/{b64(SM_A)}", headers=FILLER)
    assert removed.status == 204, await removed.text()
    assert await _write_setpoint(served, SM_A, FILLER, 64.0) == 204
    assert (await client.delete(f"{API}/shells/{b64(SHELL_A2)}", headers=FILLER)).status == 204
    assert await _write_setpoint(served, SM_A, FILLER, 65.0) == 403
    assert _setpoint(served, SM_A) == 64.0


async def test_removing_a_reference_or_a_shell_cannot_lift_a_deny_rule_scoped_by_shell(served: Served) -> None:
    client = served.client
    assert await _write_setpoint(served, SM_A, MAINTAINER, 66.0) == 204
    assert await _write_setpoint(served, SM_B, MAINTAINER, 67.0) == 403
    unlinked = await client.delete(f"{API}/shells/{b64(SHELL_B)}/submodel-refs/{b64(SM_B)}", headers=MAINTAINER)
    await _denied(unlinked, "remove the reference", repr(SM_B))
    deleted = await client.delete(f"{API}/shells/{b64(SHELL_B)}", headers=MAINTAINER)
    await _denied(deleted, repr(SM_B))
    assert await _write_setpoint(served, SM_B, MAINTAINER, 67.0) == 403
    assert _setpoint(served, SM_B) == 50.0
    assert served.store.shell(SHELL_B).submodel
    other = await client.delete(f"{API}/shells/{b64(SHELL_A)}/submodel-refs/{b64(SM_A_NAMEPLATE)}", headers=MAINTAINER)
    assert other.status == 204, await other.text()


async def test_a_refused_change_of_references_is_in_the_audit_log(served: Served, tmp_path: Path) -> None:
    added = await served.client.post(
        f"{API}/shells/{b64(SHELL_A)}/submodel-refs", json=_reference(SM_B), headers=FILLER
    )
    assert added.status == 403
    await served.control.aclose()
    lines = [json.loads(line) for line in (tmp_path / "data" / "audit.log").read_text().splitlines()]
    assert [(line["principal"], line["method"], line["status"]) for line in lines] == [("filler", "POST", 403)]


# --- relabelling what one may update ---------------------------------------------------------------


LABELLER_RULES: list[dict[str, Any]] = [
    {"roles": ["labeller"], "operations": ["update"], "submodels": [SM_A]},
    {"roles": ["labeller"], "operations": ["read"], "semantic_ids": [SEM_TEMPERATURE]},
]
LABELLER = _headers("labeller-key")


@pytest.fixture
async def labelled(tmp_path: Path) -> AsyncIterator[Served]:
    section = security_section(tmp_path)
    key = {"name": "labeller", "roles": ["labeller"], "sha256": _sha256("labeller-key")}
    section["api_keys"] = [*section["api_keys"], key]
    section["rules"] = [*RULES, *LABELLER_RULES]
    settings = HubSettings.model_validate({"data_dir": str(tmp_path / "data"), "security": section})
    async for running in _serve(tmp_path, settings):
        yield running


def _semantic_id(value: str) -> dict[str, Any]:
    return {"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": value}]}


async def test_relabelling_what_one_may_update_does_not_open_what_it_holds(labelled: Served) -> None:
    client = labelled.client
    await _refused(await client.get(element(SM_A, "Status.Secret"), headers=LABELLER), 403)
    relabel = {"semanticId": _semantic_id(SEM_TEMPERATURE)}
    for url in (element(SM_A, "Status", "/$metadata"), element(SM_A, "Status"), sm(SM_A, "/$metadata"), sm(SM_A)):
        response = await client.patch(url, json=relabel, headers=LABELLER)
        await _denied(response, "read")
    await _refused(await client.get(element(SM_A, "Status.Secret"), headers=LABELLER), 403)
    assert labelled.store.element(SM_A, "Status").semantic_id is None
    harmless = await client.patch(
        element(SM_A, "Status", "/$metadata"), json={"category": "PARAMETER"}, headers=LABELLER
    )
    assert harmless.status == 204, await harmless.text()


async def test_a_full_replacement_may_carry_a_new_label_as_it_brings_its_own_content(labelled: Served) -> None:
    client = labelled.client
    status = {
        "modelType": "SubmodelElementCollection",
        "idShort": "Status",
        "semanticId": _semantic_id(SEM_TEMPERATURE),
        "value": [{"modelType": "Property", "idShort": "Mode", "valueType": "xs:string", "value": "manual"}],
    }
    replaced = await client.put(element(SM_A, "Status"), json=status, headers=LABELLER)
    assert replaced.status == 204, await replaced.text()
    shown = await client.get(element(SM_A, "Status", "/$value"), headers=LABELLER)
    assert await shown.json() == {"Status": {"Mode": "manual"}}
